/// Snapshot reconciliation: which local values became dirty since the last clean base.
/// Implements docs/engine.md §4.3 (transitions 1–4 of §5.2) and reports §12.18 diagnostics.
namespace BitBoxSync.Core

open System
open BitBoxSync.Protocol

/// What snapshot reconciliation asks the shell to do, in order.
[<RequireQualifiedAccess>]
type SnapshotEffect =
    /// Save this row (marked dirty), then emit `item-queued` for it.
    | Queue of ItemState
    /// A key deleted on this device still holds the deleted value, not yet removed (the app removes
    /// it itself, or a crash came between the deletion and the removal): remove it if it is still
    /// this value, then save the row (marked removed).
    | Lingering of row: ItemState * value: byte[]
    /// A snapshot key the collection's `Keys` did not return: ignored, reported so the app bug
    /// is visible (docs/engine.md §12.18).
    | OutsideScope of collection: string * key: string

/// The inputs of one collection's reconciliation.
type SnapshotInput =
    {
        KeyId: KeyId
        NamespaceId: NamespaceId
        Collection: string
        /// The namespace's active scope, taken once for the pass.
        Scope: ActiveScope
        /// Existing rows of this collection by logical key (a hash map in the shell).
        Rows: Collections.Generic.IReadOnlyDictionary<string, ItemState>
        /// The collection's snapshot, every value already encoded.
        Snapshot: (string * byte[]) list
        /// Item ID of a key of this collection (called only for keys without a row).
        ItemIdOf: string -> ItemId
        Now: DateTimeOffset
    }

/// The snapshot-reconciliation decision.
module Snapshot =
    /// Decides, for every snapshot key, in ascending UTF-8 order of the keys it reports: out of
    /// scope → report; deleted on this device → the deleted value not yet removed is lingering, any
    /// other value (or any value once removed) is a write after the deletion (queued, the key live again); conflicted or already dirty → unchanged; has a base equal to the value →
    /// unchanged; otherwise queue (new row at version 0, or the existing row marked dirty with
    /// version and base kept). Unchanged keys cost one hash lookup and one byte comparison and
    /// allocate nothing, so the work beyond the scan is proportional to the changed keys.
    let reconcile (input: SnapshotInput) : SnapshotEffect list =
        let decide (key: string) (encoded: byte[]) : SnapshotEffect option =
            if not (Scope.isActiveKey input.Scope input.Collection key) then
                Some(SnapshotEffect.OutsideScope(input.Collection, key))
            else
                match input.Rows.TryGetValue key with
                | true, row when row.Deleted && not row.Removed && ItemState.equalsBase row encoded ->
                    Some(SnapshotEffect.Lingering({ row with Removed = true; UpdatedAt = input.Now }, encoded))
                | true, row when row.Deleted ->
                    // A write after this device saw the deletion: the key lives again, one generation on.
                    Some(SnapshotEffect.Queue(ItemState.writtenAfterDeletion row input.Now))
                | true, row when row.Conflict || row.Dirty -> None
                | true, row when ItemState.equalsBase row encoded -> None
                | true, row ->
                    Some(SnapshotEffect.Queue { row with Dirty = true; UpdatedAt = input.Now })
                | _ ->
                    let template =
                        ItemState.template
                            input.KeyId
                            input.NamespaceId
                            input.Collection
                            key
                            (input.ItemIdOf key)
                            input.Now

                    Some(SnapshotEffect.Queue { template with Dirty = true })

        let keyOf effect =
            match effect with
            | SnapshotEffect.Queue row -> row.Key
            | SnapshotEffect.Lingering(row, _) -> row.Key
            | SnapshotEffect.OutsideScope(_, key) -> key

        input.Snapshot
        |> List.choose (fun (key, encoded) -> decide key encoded)
        |> List.distinctBy keyOf
        |> List.map (fun e -> Text.Encoding.UTF8.GetBytes(keyOf e), e)
        |> List.sortWith (fun (a, _) (b, _) -> ReadOnlySpan(a).SequenceCompareTo(ReadOnlySpan b))
        |> List.map snd
