/// The upload flush: order, per-item upload intent, and the fold of PUT results including the
/// 412 → fetch → merge → one retry rule. Implements docs/engine.md §4.10 and transitions 16–19
/// of §5.2; surfaces skipped items instead of hiding them (§12.3, §12.4).
namespace BitBoxSync.Core

open System
open BitBoxSync.Protocol

/// Why a dirty item is not uploaded now.
[<RequireQualifiedAccess>]
type FlushSkip =
    /// Its collection is not registered this run or its key is not in `Keys`.
    | Inactive
    /// Uploads are stopped until the conflict is resolved.
    | InConflict
    /// Another path already made it clean.
    | NotDirty
    /// Dirty, but the backend has no value: reported, retried every pass (docs/engine.md §12.3).
    | ValueMissing
    /// The encoded value exceeds 65 520 bytes: reported, retried when it changes
    /// (docs/engine.md §12.4).
    | TooLarge of size: int

/// One PUT to perform.
type UploadIntent =
    {
        Row: ItemState
        IfMatch: IfMatch
        TargetVersion: uint64
        /// Exactly the bytes that are encrypted; they become the base on success.
        Plaintext: byte[]
    }

/// What to do with one dirty item.
[<RequireQualifiedAccess>]
type FlushStep =
    | Skip of FlushSkip
    | Upload of UploadIntent

/// After a precondition failure was fetched and applied: try once more, or stop.
[<RequireQualifiedAccess>]
type RetryDecision =
    | Retry
    | Stop

/// The flush decisions.
module Flush =
    /// Upload order: oldest local write first, ties by namespace and item ID (deterministic,
    /// docs/engine.md §12.16).
    let order (dirty: ItemState list) : ItemState list =
        dirty |> List.sortBy (fun i -> i.UpdatedAt, i.NamespaceId, i.ItemId)

    /// Whether a re-read row should be uploaded at all (before reading the backend).
    let eligible (row: ItemState) (active: bool) : FlushSkip option =
        if not active then Some FlushSkip.Inactive
        elif row.Conflict then Some FlushSkip.InConflict
        elif not row.Dirty then Some FlushSkip.NotDirty
        else None

    /// The upload of a row with the app's current value: version 0 creates (no If-Match, target 1),
    /// otherwise If-Match: Version and target Version + 1.
    let prepare (row: ItemState) (active: bool) (local: LocalValue) : FlushStep =
        match eligible row active, local with
        | Some skip, _ -> FlushStep.Skip skip
        | None, LocalValue.Absent -> FlushStep.Skip FlushSkip.ValueMissing
        | None, LocalValue.Present v when v.Length > Limits.MaxItemPlaintextSize ->
            FlushStep.Skip(FlushSkip.TooLarge v.Length)
        | None, LocalValue.Present v ->
            FlushStep.Upload
                {
                    Row = row
                    IfMatch =
                        (if row.Version = 0UL then
                             IfMatch.Absent
                         else
                             IfMatch.Version row.Version)
                    TargetVersion = row.Version + 1UL
                    Plaintext = Array.copy v
                }

    /// The row after the server accepted the upload at `version` (the raw client already checked
    /// that it is the target): clean, base = exactly the uploaded bytes. Emit `item-uploaded` and
    /// add one to the cached namespace head. A deleted row's upload is the value that overwrites the
    /// deleted one (`OverwriteOnDelete`): the deletion has now seen that version.
    let accepted (intent: UploadIntent) (version: uint64) (now: DateTimeOffset) : Outcome =
        let row = ItemState.cleanAt intent.Row version intent.Plaintext now

        {
            Row =
                if row.Deleted then
                    { row with DirSeen = max row.DirSeen version }
                else
                    row
            Events = [ ItemEvent.ItemUploaded ]
        }

    /// After the `attempt`-th precondition failure (1 or 2) was fetched and applied and the row
    /// re-read: retry once after the first, never after the second (no third PUT in a flush).
    let afterPreconditionFailure
        (attempt: int)
        (current: ItemState option)
        (active: bool)
        : RetryDecision =
        match current with
        | Some row when attempt = 1 && (eligible row active).IsNone -> RetryDecision.Retry
        | _ -> RetryDecision.Stop
