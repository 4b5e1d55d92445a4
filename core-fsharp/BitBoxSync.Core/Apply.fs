/// Applying one downloaded remote value: clean apply, converge, merge, conflict, and the
/// conditional backend write that never overwrites a newer app write. Implements
/// docs/engine.md §4.7 (A–G), §4.8, §4.9 and transitions 5–15 of §5.2, with per-item
/// quarantine instead of aborting the pass (§12.2, §12.3).
namespace BitBoxSync.Core

open System

/// The app's current value for a key, as the shell read it (get + encode).
[<RequireQualifiedAccess>]
type LocalValue =
    | Present of byte[]
    | Absent

/// What the app's merge answered (through the collection's codec).
[<RequireQualifiedAccess>]
type MergeOutcome =
    | Merged of byte[]
    | Unresolved

/// The byte-level merge a collection provides: base (may be absent), local, remote → outcome,
/// or an error text (codec or merge failure).
type ByteMerge = byte[] option -> byte[] -> byte[] -> Result<MergeOutcome, string>

/// This device's bytes for a downloaded value: the collection's codec decodes the remote bytes
/// and encodes the value again, or an error text. A peer's encoder may write the same value in
/// other bytes (spacing, escapes); keeping this device's bytes as the base means an untouched value
/// still compares equal to its base, so it is never re-uploaded because of its encoding
/// (docs/protocol.md, "JSON values written by Codecs.Json").
type Canonicalize = byte[] -> Result<byte[], string>

/// What a registered collection gives the apply step: its byte-level merge and canonical form.
type CollectionFunctions =
    {
        Merge: ByteMerge
        Canonical: Canonicalize
    }

    /// A collection whose codec writes exactly the bytes it reads (no re-encoding needed).
    static member ofMerge(merge: ByteMerge) =
        { Merge = merge; Canonical = Ok }

/// Item events the shell emits (it adds namespace, collection, key and item ID).
[<RequireQualifiedAccess>]
type ItemEvent =
    | ItemChanged
    | ItemDownloaded
    | ItemQueued
    | ItemUploaded
    | ConflictDetected
    /// Key-directory collections: the key was deleted on this device (its value removed).
    | ItemDeleted
    /// Key-directory collections: a deleted key lives again.
    | ItemRevived
    /// Key-directory collections: a deletion beat an edit made without seeing it (DeleteWins).
    | EditDropped

/// The state the backend must still be in for a conditional write to replace it.
[<RequireQualifiedAccess>]
type Expected =
    | Present of byte[]
    | Absent

/// A row to save and the events to emit after saving it.
type Outcome = { Row: ItemState; Events: ItemEvent list }

/// A compare-and-set write of the backend, with what follows each answer.
type ConditionalWrite =
    {
        Value: byte[]
        Expected: Expected
        /// The backend replaced the value.
        OnWritten: Outcome
        /// An app write won the race: keep the item dirty, versions not advanced.
        OnLostRace: Outcome
    }

/// Why one item is set aside while the pass continues (docs/engine.md §12.2).
[<RequireQualifiedAccess>]
type QuarantineReason =
    /// The app's merge (or its codec) failed.
    | MergeFailed of string
    /// A dirty item's local value vanished from the backend (docs/engine.md §12.3).
    | LocalValueMissing
    /// The downloaded item could not be read: AAD mismatch, decryption or decoding failure.
    | UnreadableRemote of string
    /// The encoded local value exceeds the 65 520-byte item limit (docs/engine.md §12.4).
    | ValueTooLarge of size: int

    /// A readable description.
    member r.Message =
        match r with
        | MergeFailed m -> "merge failed: " + m
        | LocalValueMissing -> "the item is dirty but its value is missing from the backend"
        | UnreadableRemote m -> "the remote value cannot be read: " + m
        | ValueTooLarge size ->
            sprintf
                "the value is %d bytes, over the %d-byte item limit"
                size
                BitBoxSync.Protocol.Limits.MaxItemPlaintextSize

/// What to do with a remote value.
[<RequireQualifiedAccess>]
type ApplyDecision =
    /// Read the app's current value, then call `Apply.decide`.
    | ReadLocal
    /// Save the row (no backend write) and emit the events.
    | Save of Outcome
    /// Write the backend conditionally, then save the matching outcome.
    | Write of ConditionalWrite
    /// Leave the row as it is; report the item with its reason and go on.
    | Quarantine of QuarantineReason

/// The apply decisions.
module Apply =
    let private bytesEqual (a: byte[]) (b: byte[]) =
        ReadOnlySpan(a).SequenceEqual(ReadOnlySpan b)

    let private cleanAt = ItemState.cleanAt

    /// Conflict state (docs/engine.md §4.9): remote side refreshed, base and backend untouched.
    let private conflictAt
        (row: ItemState)
        (remoteVersion: uint64)
        (remote: byte[])
        (now: DateTimeOffset)
        =
        ApplyDecision.Save
            {
                Row =
                    { row with
                        Version = remoteVersion
                        Dirty = true
                        Conflict = true
                        ConflictRemoteVersion = remoteVersion
                        ConflictRemoteValue = Some(Array.copy remote)
                        UpdatedAt = now
                    }
                Events = [ ItemEvent.ConflictDetected ]
            }

    let private keepDirty (row: ItemState) (now: DateTimeOffset) =
        {
            Row = { row with Dirty = true; UpdatedAt = now }
            Events = [ ItemEvent.ItemQueued ]
        }

    let private cleanApply row remoteVersion remote expected now =
        ApplyDecision.Write
            {
                Value = remote
                Expected = expected
                OnWritten =
                    {
                        Row = cleanAt row remoteVersion remote now
                        Events = [ ItemEvent.ItemChanged; ItemEvent.ItemDownloaded ]
                    }
                OnLostRace = keepDirty row now
            }

    /// The remote value in this device's bytes; an unregistered collection keeps the remote bytes.
    let private canonical (fns: CollectionFunctions option) (remote: byte[]) =
        match fns with
        | None -> Ok remote
        | Some f ->
            f.Canonical remote
            |> Result.mapError (fun e -> QuarantineReason.UnreadableRemote e)

    let private startWith row remoteVersion remote now =
        if row.Conflict then
            conflictAt row remoteVersion remote now
        else
            ApplyDecision.ReadLocal

    /// Step A, before any backend read: a conflicted item only refreshes its conflict data (in
    /// this device's bytes). `fns` is None for an unregistered collection.
    let start
        (row: ItemState)
        (remoteVersion: uint64)
        (remote: byte[])
        (fns: CollectionFunctions option)
        (now: DateTimeOffset)
        : ApplyDecision =
        match canonical fns remote with
        | Error reason -> ApplyDecision.Quarantine reason
        | Ok remote -> startWith row remoteVersion remote now

    let private decideCanonical
        (row: ItemState)
        (remoteVersion: uint64)
        (remote: byte[])
        (local: LocalValue)
        (merge: ByteMerge option)
        (now: DateTimeOffset)
        : ApplyDecision =
        match startWith row remoteVersion remote now with
        | ApplyDecision.ReadLocal ->
            let localBytes =
                match local, row.Dirty with
                | LocalValue.Absent, false ->
                    Error(cleanApply row remoteVersion remote Expected.Absent now)
                | LocalValue.Absent, true ->
                    Error(ApplyDecision.Quarantine QuarantineReason.LocalValueMissing)
                | LocalValue.Present v, false when ItemState.equalsBase row v ->
                    Error(cleanApply row remoteVersion remote (Expected.Present v) now)
                | LocalValue.Present v, _ -> Ok v // dirty, or a clean row whose value drifted: treat as a local edit

            match localBytes with
            | Error decision -> decision
            | Ok localValue when bytesEqual localValue remote ->
                cleanApply row remoteVersion remote (Expected.Present localValue) now
            | Ok localValue ->
                let mergeBase =
                    if ItemState.hasMergeBase row then
                        Some(row.BaseValue |> Option.defaultValue [||] |> Array.copy)
                    else
                        None

                let outcome =
                    match merge with
                    | None -> Ok MergeOutcome.Unresolved
                    | Some f -> f mergeBase (Array.copy localValue) (Array.copy remote)

                match outcome with
                | Error e -> ApplyDecision.Quarantine(QuarantineReason.MergeFailed e)
                | Ok MergeOutcome.Unresolved -> conflictAt row remoteVersion remote now
                | Ok(MergeOutcome.Merged merged) ->
                    let written =
                        if bytesEqual merged remote then
                            cleanAt row remoteVersion remote now
                        else
                            { cleanAt row remoteVersion remote now with Dirty = true }

                    ApplyDecision.Write
                        {
                            Value = merged
                            Expected = Expected.Present localValue
                            OnWritten = { Row = written; Events = [ ItemEvent.ItemChanged ] }
                            OnLostRace = keepDirty { row with Dirty = true } now
                        }
        | decided -> decided

    /// Steps B–G with the app's current value, on the remote value in this device's bytes. `fns`
    /// is None for an unregistered collection (its merges are treated as unresolved).
    let decide
        (row: ItemState)
        (remoteVersion: uint64)
        (remote: byte[])
        (local: LocalValue)
        (fns: CollectionFunctions option)
        (now: DateTimeOffset)
        : ApplyDecision =
        match canonical fns remote with
        | Error reason -> ApplyDecision.Quarantine reason
        | Ok remote ->
            decideCanonical row remoteVersion remote local (fns |> Option.map (fun f -> f.Merge)) now
