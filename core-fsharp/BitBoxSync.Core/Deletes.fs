/// Deletes in key-directory collections (docs/protocol.md §17, docs/concepts.md "Deletes"): the row
/// a local deletion leaves, what a merged directory entry means for a row this device holds, what a
/// downloaded value means for a deleted row, and the entries this device publishes. Pure: the shell
/// reads the app's values and runs the conditional backend writes these decisions ask for.
///
/// Each row of a directory collection may carry this device's own entry for its key (generation
/// and live/deleted, see `ItemState.DirGeneration`). The published directory is the synced one
/// joined with the own entries it does not cover yet; a synced entry that beats a row's own entry
/// is that row's fate: a deletion removes the value unless it meets an edit it did not see (then
/// the collection's policy decides), a newer live entry brings a deleted key back.
namespace BitBoxSync.Core

open System

/// A removal of the app's value that happens only if the key still holds `Expected`; when the app
/// changed the value meanwhile nothing is saved and the next pass decides again with the new value.
type ConditionalRemove =
    {
        Expected: byte[]
        /// Saved (with its events) once the value is gone.
        OnRemoved: Outcome
    }

/// What to do for one key of a directory collection.
[<RequireQualifiedAccess>]
type KeyAction =
    | Nothing
    /// Save the row (no backend write) and emit the events.
    | Save of Outcome
    /// Remove the app's value conditionally, then save.
    | Remove of ConditionalRemove

/// A downloaded value for a row deleted on this device.
[<RequireQualifiedAccess>]
type DeletedRowRemote =
    /// An edit the deletion did not see, and the edit wins: the key lives again; apply the value to
    /// this row as to any row (`Apply.start`), and tell the app the key came back.
    | Revive of ItemState
    /// The row follows the server's value (its base) and stays deleted; save it.
    | StayDeleted of Outcome

/// The delete rules.
module Deletes =
    /// This device's own directory entry for a row, if it has one (`ItemState.DirGeneration`,
    /// `Deleted` and `DirSeen`). A deletion whose overwriting value is not uploaded yet (a deleted
    /// row still dirty) is this device's entry but not published: `publishable`.
    let ownEntry (writer: string) (row: ItemState) : DirEntry option =
        if row.DirGeneration = 0UL then
            None
        else
            Some
                {
                    Generation = row.DirGeneration
                    State = if row.Deleted then KeyState.Deleted else KeyState.Live
                    Seen = row.DirSeen
                    Writer = writer
                }

    /// Whether a row's own entry may be published now: not while the value overwriting a deleted one
    /// waits for its upload (the deletion must have seen that version before others read it).
    let publishable (row: ItemState) = not (row.Deleted && row.Dirty)

    /// Whether an own entry still has to be published: the synced directory has nothing for the
    /// key, or an entry the own one supersedes. A device that adopted a synced entry publishes
    /// nothing more (no rewrite because its writer differs).
    let contributes (policy: DeletePolicy) (synced: DirEntry option) (own: DirEntry) =
        match synced with
        | None -> true
        | Some s -> KeyDirectory.supersedes policy own s

    let private strictUtf8 = Text.UTF8Encoding(false, true)

    /// Whether a key can be listed: valid text (no lone surrogate) of at most `MaxKeyBytes` bytes.
    let private fits (key: string) =
        try
            strictUtf8.GetByteCount key <= KeyDirectory.MaxKeyBytes
        with :? ArgumentException ->
            false

    /// The entry this device publishes for one key (see `published`).
    let publishedEntry
        (policy: DeletePolicy)
        (writer: string)
        (synced: DirEntry option)
        (own: DirEntry option)
        (appHoldsKey: bool)
        : DirEntry option =
        match synced, own with
        | s, Some o when contributes policy s o ->
            match s with
            | Some s -> Some(KeyDirectory.join policy s o)
            | None -> Some o
        | Some s, _ -> Some s
        | None, _ when appHoldsKey -> Some(KeyDirectory.written writer None)
        | None, _ -> None

    /// The directory of one collection this device publishes: the synced entries, joined with the
    /// own entries of its rows they do not cover yet, and a first live entry for every key the app
    /// holds that the directory does not list at all. A key the app holds that the directory lists
    /// as deleted is not made live here: that is the deletion's fate (`decide`). Keys longer than
    /// `KeyDirectory.MaxKeyBytes` or that are not valid text are left out (they sync through the
    /// app's keys only), so one such key never keeps a bucket from being published.
    let published
        (policy: DeletePolicy)
        (writer: string)
        (synced: Map<string, DirEntry>)
        (own: (string * DirEntry) seq)
        (appKeys: string seq)
        : Map<string, DirEntry> =
        let withOwn =
            own
            |> Seq.filter (fun (k, _) -> fits k)
            |> Seq.fold
                (fun acc (k, o) ->
                    match publishedEntry policy writer (Map.tryFind k synced) (Some o) false with
                    | Some e -> Map.add k e acc
                    | None -> acc)
                synced

        appKeys
        |> Seq.fold
            (fun acc k ->
                if Map.containsKey k acc || not (fits k) then
                    acc
                else
                    Map.add k (KeyDirectory.written writer None) acc)
            withOwn

    let private gone (row: ItemState) (generation: uint64) (seen: uint64) (now: DateTimeOffset) =
        { row with
            Deleted = true
            Removed = true
            DirGeneration = generation
            DirSeen = seen
            Dirty = false
            Conflict = false
            ConflictRemoteVersion = 0UL
            ConflictRemoteValue = None
            UpdatedAt = now
        }

    /// The row after the app deletes its key on this device, given the entry the device publishes
    /// for it (`current`) and the app's value (`local`): deleted at the generation after a live
    /// entry, having seen the row's version. An unsynced edit or an open conflict ends with it. The
    /// deleted value becomes the row's base, so that it is recognised as the deleted one and not as
    /// a new write: in the backend (a crash came before its removal), or on the server (an upload
    /// of it whose answer was lost).
    /// With `overwrite` (`OverwriteOnDelete`) the row stays dirty: the flush uploads the collection's
    /// replacement value over the deleted one, and the deletion is published once that is accepted.
    let requested
        (writer: string)
        (overwrite: bool)
        (current: DirEntry option)
        (row: ItemState)
        (local: LocalValue)
        (now: DateTimeOffset)
        : ItemState =
        if row.Deleted then
            row
        else
            let entry = KeyDirectory.deleted writer row.Version current
            // Nothing to overwrite when nothing of the key can be on the server.
            let onServer = row.Version > 0UL || ItemState.hasMergeBase row || local <> LocalValue.Absent
            let deleted = { gone row entry.Generation row.Version now with Dirty = overwrite && onServer }

            // The removal comes next (`removed` then): until it is done, the deleted value is a leftover.
            match local with
            | LocalValue.Present v ->
                { deleted with
                    BaseValue = Some(Array.copy v)
                    Removed = false
                }
            | LocalValue.Absent -> deleted

    /// A deleted row whose overwrite is no longer wanted (the collection was opened without
    /// `OverwriteOnDelete`): the deletion is published without it.
    let overwriteDropped (row: ItemState) = { row with Dirty = false }

    /// The row once the app's value is gone (after a removal, or none was there).
    let removed (row: ItemState) (now: DateTimeOffset) = { row with Removed = true; UpdatedAt = now }

    /// What the synced entry (`synced`, the server's directory) means for a row of its key, given
    /// the app's value. `canRemove`: the backend can remove values (without it a deletion that
    /// meets an edit cannot drop the edit, so the key lives again whatever the policy).
    ///
    /// - A deleted row whose key the synced directory lists live, beating the row's own deletion:
    ///   the key lives again; the row forgets its version so the server's value is downloaded (the
    ///   deleted value, if still in the backend and not removed yet, is removed first; any other
    ///   value is the app's and stays, to be merged with the download).
    /// - A live row whose key the synced directory lists deleted, beating the row's own entry:
    ///   without a local value the row is marked deleted; a value equal to the base whose version the
    ///   deletion saw is removed; an edit the deletion did not see (an unsynced change, a conflict, a
    ///   value that differs from the base, or an item version above the one the deletion saw) is
    ///   decided by the policy: EditWins keeps it and publishes the key live at the next
    ///   generation, DeleteWins removes it and tells the app its edit was dropped.
    let decide
        (policy: DeletePolicy)
        (writer: string)
        (canRemove: bool)
        (synced: DirEntry option)
        (row: ItemState)
        (local: LocalValue)
        (now: DateTimeOffset)
        : KeyAction =
        let own = ownEntry writer row

        let beatsOwn (s: DirEntry) =
            match own with
            | Some o -> KeyDirectory.supersedes policy s o
            | None -> true

        match synced with
        | Some s when row.Deleted && s.State = KeyState.Live && beatsOwn s ->
            let outcome =
                {
                    Row =
                        { row with
                            Deleted = false
                            Removed = false
                            Dirty = false
                            DirGeneration = s.Generation
                            DirSeen = s.Seen
                            Version = 0UL
                            BaseVersion = 0UL
                            BaseValue = None
                            UpdatedAt = now
                        }
                    Events = [ ItemEvent.ItemRevived ]
                }

            match local with
            | LocalValue.Present v when canRemove && not row.Removed && ItemState.equalsBase row v ->
                KeyAction.Remove { Expected = Array.copy v; OnRemoved = outcome }
            | _ -> KeyAction.Save outcome
        | Some s when row.Deleted && s.State = KeyState.Deleted && s.Generation > row.DirGeneration ->
            // Deleted again elsewhere: adopt the newer deletion (a later write here then revives after it).
            KeyAction.Save
                {
                    Row =
                        { row with
                            DirGeneration = s.Generation
                            DirSeen = s.Seen
                            UpdatedAt = now
                        }
                    Events = []
                }
        | Some s when not row.Deleted && s.State = KeyState.Deleted && beatsOwn s ->
            let deletedRow = gone row s.Generation s.Seen now

            match local with
            | LocalValue.Absent -> KeyAction.Save { Row = deletedRow; Events = [] }
            | LocalValue.Present v ->
                let edited = row.Dirty || row.Conflict || not (ItemState.equalsBase row v)
                let unseen = row.Version > s.Seen

                // The key lives on at the deletion's generation, about what the deletion did not see: an
                // edit here (no deletion saw it) or the version above the one it saw. So it beats this
                // deletion and any concurrent one of that generation that saw less, but not one that
                // saw that version.
                let revive () =
                    KeyAction.Save
                        {
                            Row =
                                { row with
                                    DirGeneration = s.Generation
                                    DirSeen = if edited then KeyDirectory.AppWrite else row.Version
                                    UpdatedAt = now
                                }
                            Events = [ ItemEvent.ItemRevived ]
                        }

                // The backend cannot drop the edit: the app keeps it, as a write after the deletion.
                let keep () =
                    KeyAction.Save
                        {
                            Row =
                                { row with
                                    DirGeneration = s.Generation + 1UL
                                    DirSeen = KeyDirectory.AppWrite
                                    UpdatedAt = now
                                }
                            Events = [ ItemEvent.ItemRevived ]
                        }

                let remove events =
                    if canRemove then
                        KeyAction.Remove { Expected = Array.copy v; OnRemoved = { Row = deletedRow; Events = events } }
                    elif edited then
                        keep ()
                    else
                        // The app removes the value itself on the event; until then it equals the base
                        // and is not taken for a new write.
                        KeyAction.Save { Row = { deletedRow with Removed = false }; Events = events }

                if not edited && not unseen then
                    remove [ ItemEvent.ItemDeleted ]
                else
                    match policy with
                    | DeletePolicy.EditWins -> revive ()
                    | DeletePolicy.DeleteWins ->
                        remove (
                            if edited then
                                [ ItemEvent.ItemDeleted; ItemEvent.EditDropped ]
                            else
                                [ ItemEvent.ItemDeleted ]
                        )
        | _ -> KeyAction.Nothing

    /// A downloaded value (in this device's bytes) at `remoteVersion` for a row deleted on this
    /// device, given the entry this device publishes for the key and the collection's replacement
    /// value (`OverwriteOnDelete`). The deleted value itself (an upload of it whose answer was lost)
    /// was seen by the deletion: its version raises the one the deletion saw. So was the replacement
    /// value (this device's overwrite whose answer was lost, or another device's): the overwrite is
    /// then done. Another value at a version above the one the deletion saw is an edit made
    /// without seeing it: under EditWins the key lives again (at the deletion's generation, about
    /// that version); otherwise the row takes the value as its base and stays deleted.
    let remoteValue
        (policy: DeletePolicy)
        (replacement: byte[] option)
        (entry: DirEntry option)
        (row: ItemState)
        (remoteVersion: uint64)
        (remote: byte[])
        (now: DateTimeOffset)
        : DeletedRowRemote =
        let generation, seen =
            match entry with
            | Some e when e.State = KeyState.Deleted -> max e.Generation row.DirGeneration, max e.Seen row.DirSeen
            | Some e -> max e.Generation row.DirGeneration, row.DirSeen
            | None -> row.DirGeneration, row.DirSeen

        let deletedValue =
            match row.BaseValue with
            | Some b -> ReadOnlySpan(b).SequenceEqual(ReadOnlySpan remote)
            | None -> false

        let replaced =
            match replacement with
            | Some r -> ReadOnlySpan(r).SequenceEqual(ReadOnlySpan remote)
            | None -> false

        // Staying deleted keeps an overwrite pending (it is retried against the new version).
        if replaced then
            DeletedRowRemote.StayDeleted
                {
                    Row =
                        { ItemState.cleanAt row remoteVersion remote now with
                            DirSeen = max row.DirSeen remoteVersion
                        }
                    Events = []
                }
        elif deletedValue then
            DeletedRowRemote.StayDeleted
                {
                    Row =
                        { ItemState.cleanAt row remoteVersion remote now with
                            DirSeen = max row.DirSeen remoteVersion
                            Dirty = row.Dirty
                        }
                    Events = []
                }
        elif policy = DeletePolicy.EditWins && remoteVersion > seen then
            DeletedRowRemote.Revive
                { row with
                    Deleted = false
                    Removed = false
                    Dirty = false
                    DirGeneration = generation
                    DirSeen = remoteVersion
                    UpdatedAt = now
                }
        else
            DeletedRowRemote.StayDeleted
                {
                    Row = { ItemState.cleanAt row remoteVersion remote now with Dirty = row.Dirty }
                    Events = []
                }
