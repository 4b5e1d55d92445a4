/// Quarantined items: one bad item (merge or codec error, unreadable remote value, vanished
/// local value) is set aside with its error while the pass goes on, listed to the app, and
/// retried when its input changes. Implements docs/engine.md §12.2–§12.3 (our improvement).
namespace BitBoxSync.Core

open System
open BitBoxSync.Protocol

/// An item set aside with the reason and the inputs it failed on.
type QuarantinedItem =
    {
        NamespaceId: NamespaceId
        ItemId: ItemId
        Collection: string
        Key: string
        Reason: QuarantineReason
        /// The remote version the failure happened at.
        RemoteVersion: uint64
        /// SHA-256 of the local encoded value at the failure (None when absent).
        LocalFingerprint: byte[] option
    }

/// Quarantine decisions.
module Quarantine =
    let private fingerprint (local: LocalValue) =
        match local with
        | LocalValue.Present v -> Some(Hashing.sha256 (ReadOnlySpan v))
        | LocalValue.Absent -> None

    /// Records the failure of `row` at `remoteVersion` with the local value it saw.
    let create
        (row: ItemState)
        (reason: QuarantineReason)
        (remoteVersion: uint64)
        (local: LocalValue)
        =
        {
            NamespaceId = row.NamespaceId
            ItemId = row.ItemId
            Collection = row.Collection
            Key = row.Key
            Reason = reason
            RemoteVersion = remoteVersion
            LocalFingerprint = fingerprint local
        }

    /// Retry only when an input changed: a newer remote version or a different local value.
    let shouldRetry (q: QuarantinedItem) (remoteVersion: uint64) (local: LocalValue) : bool =
        remoteVersion <> q.RemoteVersion || fingerprint local <> q.LocalFingerprint

    /// The quarantine reason of a flush skip that needs the app's attention (a vanished or an
    /// oversized value); None for skips that are not errors (inactive, in conflict, already clean).
    let ofFlushSkip (skip: FlushSkip) : QuarantineReason option =
        match skip with
        | FlushSkip.ValueMissing -> Some QuarantineReason.LocalValueMissing
        | FlushSkip.TooLarge size -> Some(QuarantineReason.ValueTooLarge size)
        | FlushSkip.Inactive
        | FlushSkip.InConflict
        | FlushSkip.NotDirty -> None
