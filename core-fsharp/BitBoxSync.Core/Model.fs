/// The persisted sync records and the item state model they encode.
/// Implements docs/engine.md §2.3 (records), §3.2–§3.3 (logical keys) and §5.1 (states).
namespace BitBoxSync.Core

open System
open System.Buffers.Binary
open BitBoxSync.Protocol

/// One identity's session state (one row per key ID). Storage format — change only with a
/// schema migration.
type IdentityState =
    {
        KeyId: KeyId
        Kind: IdentityKind
        /// Bearer token; None = no token.
        AccessToken: string option
        /// Server-reported token expiry; None = unknown / no token.
        TokenExpiry: DateTimeOffset option
        /// Cached default namespace ID; None = unknown.
        DefaultNamespaceId: NamespaceId option
        UpdatedAt: DateTimeOffset
    }

/// One cached namespace of one identity. Storage format — change only with a schema migration.
type NamespaceState =
    {
        KeyId: KeyId
        NamespaceId: NamespaceId
        /// None only transiently (joined but not yet listed).
        Kind: NamespaceKind option
        /// Highest head reconciled locally.
        Head: uint64
        /// Hash of the active scope reconciled at that head; "" when no collection is registered.
        ActiveScopeHash: string
        /// Unwrapped DEK; None = not cached.
        Dek: Dek option
        UpdatedAt: DateTimeOffset
    }

/// Sync metadata of one item. Storage format — change only with a schema migration.
type ItemState =
    {
        KeyId: KeyId
        NamespaceId: NamespaceId
        Collection: string
        Key: string
        ItemId: ItemId
        /// Highest remote version known locally; the version the next upload must match.
        Version: uint64
        /// The version the base value belongs to.
        BaseVersion: uint64
        /// Encoded bytes of the last clean value; None = no base.
        BaseValue: byte[] option
        /// The local value must be uploaded.
        Dirty: bool
        /// Automatic merge failed; uploads stopped until resolved.
        Conflict: bool
        ConflictRemoteVersion: uint64
        ConflictRemoteValue: byte[] option
        /// Local write time; also the upload order key.
        UpdatedAt: DateTimeOffset
        /// Key-directory collections only (docs/protocol.md §17): the generation of this device's own
        /// directory entry for the key (0 = none: the key was never deleted or revived here).
        DirGeneration: uint64
        /// Key-directory collections only: the key is deleted on this device (at `DirGeneration`); the
        /// base stays the server's last value, nothing is uploaded, the app's value is removed.
        Deleted: bool
        /// Key-directory collections, a deleted key: the highest item version this device knew when
        /// it deleted the key (or the one the adopted deletion had seen); later downloads do not raise it.
        DirSeen: uint64
        /// Key-directory collections, a deleted key: its value is gone from the app's storage (the
        /// engine removed it, or there was none). Until then the deleted value, seen in a snapshot, is
        /// a leftover to remove; after, any value is a write after the deletion.
        Removed: bool
    }

/// The states of docs/engine.md §5.1, derived from an item row's fields.
[<RequireQualifiedAccess>]
type ItemStatus =
    /// Local value never uploaded; the next upload has no If-Match.
    | PendingCreate
    /// The backend value is expected to equal the base.
    | Clean
    /// Local value differs from the base; upload with If-Match: Version.
    | Dirty
    /// Merge unresolved; no uploads; the remote side is kept in ConflictRemote*.
    | Conflict
    /// Deleted on this device (key-directory collections): nothing to upload, no local value.
    | Deleted

/// Logical keys and their derived identifiers.
module LogicalKey =
    /// The length-delimited join of docs/engine.md §3.3: for each part, u64be(UTF-8 length)
    /// then the UTF-8 bytes.
    let join (parts: string list) : byte[] =
        let encoded = parts |> List.map Text.Encoding.UTF8.GetBytes
        let out = Array.zeroCreate (encoded |> List.sumBy (fun b -> 8 + b.Length))
        let mutable offset = 0

        for b in encoded do
            BinaryPrimitives.WriteUInt64BigEndian(Span(out, offset, 8), uint64 b.Length)
            b.CopyTo(out, offset + 8)
            offset <- offset + 8 + b.Length

        out

    /// Item ID of (collection, key) in a namespace: HMAC(mapKey, join [collection; key]).
    let itemId (keys: NamespaceKeys) (collection: string) (key: string) : ItemId =
        ItemIds.ofBytes keys (ReadOnlySpan(join [ collection; key ]))

/// Item row helpers.
module ItemState =
    /// "Has a merge base": BaseVersion ≠ 0 or a non-empty base value.
    let hasMergeBase (item: ItemState) =
        item.BaseVersion <> 0UL
        || (match item.BaseValue with
            | Some b -> b.Length > 0
            | None -> false)

    /// The state of a row (docs/engine.md §5.1).
    let status (item: ItemState) : ItemStatus =
        if item.Deleted then
            ItemStatus.Deleted
        elif item.Conflict then
            ItemStatus.Conflict
        elif item.Dirty && item.Version = 0UL then
            ItemStatus.PendingCreate
        elif item.Dirty then
            ItemStatus.Dirty
        else
            ItemStatus.Clean

    /// A fresh row for a logical key that has no metadata yet (version 0, no base, clean).
    let template
        (keyId: KeyId)
        (ns: NamespaceId)
        (collection: string)
        (key: string)
        (itemId: ItemId)
        (now: DateTimeOffset)
        : ItemState =
        {
            KeyId = keyId
            NamespaceId = ns
            Collection = collection
            Key = key
            ItemId = itemId
            Version = 0UL
            BaseVersion = 0UL
            BaseValue = None
            Dirty = false
            Conflict = false
            ConflictRemoteVersion = 0UL
            ConflictRemoteValue = None
            UpdatedAt = now
            DirGeneration = 0UL
            Deleted = false
            DirSeen = 0UL
            Removed = false
        }

    /// The row made clean at `version` with `value` as its base (after a download, an accepted
    /// upload, or taking the remote side of a conflict).
    let cleanAt
        (row: ItemState)
        (version: uint64)
        (value: byte[])
        (now: DateTimeOffset)
        : ItemState =
        { row with
            Version = version
            BaseVersion = version
            BaseValue = Some(Array.copy value)
            Dirty = false
            Conflict = false
            ConflictRemoteVersion = 0UL
            ConflictRemoteValue = None
            UpdatedAt = now
        }

    /// Key-directory collections: a deleted row after the app wrote the key again (a write after the
    /// deletion): live one generation on, about an app write (2^64 − 1, no deletion saw it), dirty.
    let writtenAfterDeletion (row: ItemState) (now: DateTimeOffset) : ItemState =
        { row with
            Deleted = false
            Removed = false
            DirGeneration = row.DirGeneration + 1UL
            DirSeen = UInt64.MaxValue
            Dirty = true
            UpdatedAt = now
        }

    /// Byte equality of an encoded value with the base (the only change detection,
    /// docs/engine.md §4.3 step 4e).
    let equalsBase (item: ItemState) (encoded: byte[]) =
        match item.BaseValue with
        | Some b -> hasMergeBase item && ReadOnlySpan(b).SequenceEqual(ReadOnlySpan encoded)
        | None -> false

/// Why the server's answer contradicts what this client has already seen (docs/engine.md
/// §4.11). Every case names the namespace and, where there is one, the item.
[<RequireQualifiedAccess>]
type RollbackReason =
    | NamespaceHeadDecreased of ns: NamespaceId * cached: uint64 * listed: uint64
    | DefaultKindChanged of ns: NamespaceId
    | DefaultNamespaceChanged of cached: NamespaceId * listed: NamespaceId
    | DefaultNamespaceDisappeared of ns: NamespaceId
    | ItemMapHeadBehind of ns: NamespaceId * mapHead: uint64 * expected: uint64
    | ItemVersionDecreased of ns: NamespaceId * item: ItemId * cached: uint64 * server: uint64
    | ItemDisappeared of ns: NamespaceId * item: ItemId * cached: uint64
    | WatchHeadDecreased of ns: NamespaceId * cached: uint64 * reported: uint64

    /// A readable description with the IDs.
    member r.Message =
        match r with
        | NamespaceHeadDecreased(ns, c, l) ->
            sprintf "namespace %s head went back from %d to %d" ns.Wire c l
        | DefaultKindChanged ns ->
            sprintf "default namespace %s is no longer listed as default" ns.Wire
        | DefaultNamespaceChanged(c, l) ->
            sprintf "default namespace changed from %s to %s" c.Wire l.Wire
        | DefaultNamespaceDisappeared ns -> sprintf "default namespace %s disappeared" ns.Wire
        | ItemMapHeadBehind(ns, m, e) ->
            sprintf "namespace %s item map head %d is behind %d" ns.Wire m e
        | ItemVersionDecreased(ns, i, c, s) ->
            sprintf "item %s in namespace %s went back from version %d to %d" i.Wire ns.Wire c s
        | ItemDisappeared(ns, i, c) ->
            sprintf "item %s (version %d) disappeared from namespace %s" i.Wire c ns.Wire
        | WatchHeadDecreased(ns, c, r) ->
            sprintf "watch reported namespace %s at head %d below the cached %d" ns.Wire r c

/// Why a sync step stops. Rollback and namespace removal are distinct outcomes
/// (docs/engine.md §12.5).
[<RequireQualifiedAccess>]
type SyncError =
    /// The server contradicts monotonic state: data considered tampered; no state was written.
    | Rollback of RollbackReason
    /// A namespace this client knew is no longer listed: removed from it, or a rollback.
    | NamespaceRemoved of NamespaceId
    /// The server listed a namespace kind this client does not know (not a rollback).
    | UnsupportedNamespaceKind of ns: string * kind: string
    /// The server listed more than one default namespace (not a rollback).
    | MultipleDefaultNamespaces
    /// A server answer that is malformed (bad ID, echo mismatch, ...); not a rollback.
    | InvalidResponse of string

    /// A readable description.
    member e.Message =
        match e with
        | Rollback r -> "rollback detected: " + r.Message
        | NamespaceRemoved ns ->
            sprintf "namespace %s is no longer listed (removed, or a rollback)" ns.Wire
        | UnsupportedNamespaceKind(ns, k) ->
            sprintf "namespace %s has unsupported namespace kind %A" ns k
        | MultipleDefaultNamespaces -> "server returned multiple default namespaces"
        | InvalidResponse m -> "invalid server response: " + m
