/// Snapshot reconciliation: which local values became dirty since the last clean base.
/// Implements spec/ENGINE.md §4.3 (transitions 1–4 of §5.2) and reports §12.18 diagnostics.
namespace BitBoxSync.Core

open System
open BitBoxSync.Protocol

/// What snapshot reconciliation asks the shell to do, in order.
[<RequireQualifiedAccess>]
type SnapshotEffect =
    /// Save this row (marked dirty), then emit `item-queued` for it.
    | Queue of ItemState
    /// A snapshot key the collection's `Keys` did not return: ignored, reported so the app bug
    /// is visible (§12.18).
    | OutsideScope of collection: string * key: string

/// The inputs of one collection's reconciliation.
type SnapshotInput =
    {
        KeyId: KeyId
        NamespaceId: NamespaceId
        Collection: string
        /// The namespace's active scope, taken once for the pass.
        Scope: ActiveScope
        /// Existing rows of this collection by logical key.
        Rows: Map<string, ItemState>
        /// The collection's snapshot, every value already encoded.
        Snapshot: (string * byte[]) list
        /// Item ID of a key of this collection.
        ItemIdOf: string -> ItemId
        Now: DateTimeOffset
    }

/// The snapshot-reconciliation decision.
module Snapshot =
    /// Decides, for every snapshot key in ascending UTF-8 order: out of scope → report; conflicted
    /// or already dirty → unchanged; has a base equal to the value → unchanged; otherwise queue
    /// (new row at version 0, or the existing row marked dirty with version and base kept).
    let reconcile (input: SnapshotInput) : SnapshotEffect list =
        input.Snapshot
        |> List.distinctBy fst
        |> List.map (fun (key, encoded) -> Text.Encoding.UTF8.GetBytes key, key, encoded)
        |> List.sortWith (fun (a, _, _) (b, _, _) ->
            ReadOnlySpan(a).SequenceCompareTo(ReadOnlySpan b))
        |> List.choose (fun (_, key, encoded) ->
            let itemId = input.ItemIdOf key

            if not (Scope.isActive input.Scope input.Collection itemId) then
                Some(SnapshotEffect.OutsideScope(input.Collection, key))
            else
                let row =
                    input.Rows
                    |> Map.tryFind key
                    |> Option.defaultWith (fun () ->
                        ItemState.template
                            input.KeyId
                            input.NamespaceId
                            input.Collection
                            key
                            itemId
                            input.Now)

                if row.Conflict || row.Dirty then
                    None
                elif ItemState.equalsBase row encoded then
                    None
                else
                    Some(SnapshotEffect.Queue { row with Dirty = true; UpdatedAt = input.Now }))
