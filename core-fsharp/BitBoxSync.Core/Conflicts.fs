/// Resolving a recorded conflict: with a value, keeping the local value, or taking the remote one.
/// Implements docs/engine.md §2.7 (ResolveConflict*) and transitions 20–23 of §5.2.
namespace BitBoxSync.Core

open System

/// What resolving a conflict asks the shell to do.
[<RequireQualifiedAccess>]
type Resolution =
    /// The item is not in conflict: nothing to do.
    | NotInConflict
    /// Write this value to the backend (plain set), then save the row.
    | WriteAndSave of value: byte[] * row: ItemState
    /// Save the row only (the backend keeps its value).
    | Save of ItemState
    /// The local value must exist to keep it.
    | LocalValueMissing

/// Conflict resolution decisions. After any of them the shell emits an event and schedules a
/// sync (docs/engine.md §12.1); the dirty row uploads with If-Match at the conflict's remote
/// version.
module Conflicts =
    let private cleared (row: ItemState) (now: DateTimeOffset) =
        { row with
            Conflict = false
            ConflictRemoteVersion = 0UL
            ConflictRemoteValue = None
            Dirty = true
            UpdatedAt = now
        }

    /// Transition 20: take `value`; Version stays at the conflict's remote version and the
    /// original base is kept (a 412 later merges against it).
    let resolveWithValue (row: ItemState) (value: byte[]) (now: DateTimeOffset) : Resolution =
        if not row.Conflict then
            Resolution.NotInConflict
        else
            Resolution.WriteAndSave(Array.copy value, cleared row now)

    /// Transition 21: keep the backend's current value (it must exist).
    let preferLocal (row: ItemState) (local: LocalValue) (now: DateTimeOffset) : Resolution =
        match row.Conflict, local with
        | false, _ -> Resolution.NotInConflict
        | true, LocalValue.Absent -> Resolution.LocalValueMissing
        | true, LocalValue.Present _ -> Resolution.Save(cleared row now)

    /// Transition 22: write the conflict's remote value and become clean at its version.
    let preferRemote (row: ItemState) (now: DateTimeOffset) : Resolution =
        match row.Conflict, row.ConflictRemoteValue with
        | false, _ -> Resolution.NotInConflict
        | true, remote ->
            let value = remote |> Option.defaultValue [||]

            Resolution.WriteAndSave(
                Array.copy value,
                ItemState.cleanAt row row.ConflictRemoteVersion value now
            )
