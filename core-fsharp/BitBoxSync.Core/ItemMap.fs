/// Item-map reconciliation: rollback checks over every cached item, then which items to
/// download (deterministically, by item ID) and which IDs are unknown. Implements
/// docs/engine.md §4.6, §4.12 and the item-map rows of §4.11.
namespace BitBoxSync.Core

open System
open BitBoxSync.Protocol

/// The inputs of one namespace's item-map reconciliation.
type ItemMapInput =
    {
        Row: NamespaceState
        /// The head announced by the namespace list.
        ExpectedHead: uint64
        MapHead: uint64
        /// Every item of the namespace with its current version.
        MapItems: Map<ItemId, uint64>
        /// Every cached item row of the namespace (active or not).
        Cached: ItemState list
        Scope: ActiveScope
        Now: DateTimeOffset
    }

/// The plan: download these (row or scope template, with the map's version), report these
/// unknown IDs, and save `Finish` once the downloads are done.
type ItemMapPlan =
    {
        Downloads: (ItemState * uint64) list
        Unknown: ItemId list
        Finish: NamespaceState
    }

/// The item-map decision.
module ItemMap =
    /// Plans docs/engine.md §4.6 steps 2–6; Error on any rollback, before anything is written.
    let plan (input: ItemMapInput) : Result<ItemMapPlan, SyncError> =
        let ns = input.Row.NamespaceId
        let rollback r = Error(SyncError.Rollback r)

        if input.MapHead < input.Row.Head then
            rollback (RollbackReason.ItemMapHeadBehind(ns, input.MapHead, input.Row.Head))
        elif input.MapHead < input.ExpectedHead then
            rollback (RollbackReason.ItemMapHeadBehind(ns, input.MapHead, input.ExpectedHead))
        else
            let cachedSorted = input.Cached |> List.sortBy (fun i -> i.ItemId)

            let violation =
                cachedSorted
                |> List.tryPick (fun item ->
                    match input.MapItems.TryFind item.ItemId with
                    | Some v when v < item.Version ->
                        Some(RollbackReason.ItemVersionDecreased(ns, item.ItemId, item.Version, v))
                    | None when item.Version > 0UL ->
                        Some(RollbackReason.ItemDisappeared(ns, item.ItemId, item.Version))
                    | _ -> None)

            match violation with
            | Some r -> rollback r
            | None ->
                let activeRows, inactiveRows =
                    cachedSorted
                    |> List.partition (fun i -> Scope.isActive input.Scope i.Collection i.ItemId)

                let activeById = activeRows |> List.map (fun r -> r.ItemId, r) |> dict

                // A cached active row, else a template for an active key with no row yet.
                let known (id: ItemId) : ItemState option =
                    match activeById.TryGetValue id with
                    | true, row -> Some row
                    | _ ->
                        input.Scope.Items.TryFind id
                        |> Option.map (fun (collection, key) ->
                            ItemState.template input.Row.KeyId ns collection key id input.Now)

                let inactive =
                    Collections.Generic.HashSet<ItemId>(
                        inactiveRows |> List.map (fun r -> r.ItemId)
                    )

                let downloads, unknown =
                    input.MapItems
                    |> Map.toList // sorted by item ID: deterministic (docs/engine.md §12.16)
                    |> List.fold
                        (fun (downloads, unknown) (id, version) ->
                            match known id with
                            | Some row when version > row.Version ->
                                (row, version) :: downloads, unknown
                            | Some _ -> downloads, unknown
                            | None when inactive.Contains id -> downloads, unknown
                            | None -> downloads, id :: unknown)
                        ([], [])

                Ok
                    {
                        Downloads = List.rev downloads
                        Unknown = List.rev unknown
                        Finish =
                            { input.Row with
                                Head = max input.MapHead input.ExpectedHead
                                ActiveScopeHash = Scope.hashOf input.Scope
                                UpdatedAt = input.Now
                            }
                    }

/// What an item-map reconciliation saves at its end.
module ItemMapFinish =
    /// `plan.Finish`, unless a download must be retried (a transient failure, such as the app's
    /// backend refusing a write): then the cached head stays at `previous`, so the next pass sees
    /// the listed head ahead of it, fetches the item map again and retries the download. Without
    /// this an item that failed once would wait for some other write to move the head.
    let decide (plan: ItemMapPlan) (previous: NamespaceState) (retryLater: bool) : NamespaceState =
        if retryLater then
            { plan.Finish with Head = previous.Head }
        else
            plan.Finish

/// Checks on one downloaded item (docs/engine.md §4.7 steps 2, 4, 5).
module Download =
    /// The response version must not be below the cached version nor the version the map announced.
    let checkVersion
        (row: ItemState)
        (mapVersion: uint64 option)
        (responseVersion: uint64)
        : Result<unit, SyncError> =
        if responseVersion < row.Version then
            Error(
                SyncError.Rollback(
                    RollbackReason.ItemVersionDecreased(
                        row.NamespaceId,
                        row.ItemId,
                        row.Version,
                        responseVersion
                    )
                )
            )
        else
            match mapVersion with
            | Some m when responseVersion < m ->
                Error(
                    SyncError.Rollback(
                        RollbackReason.ItemVersionDecreased(
                            row.NamespaceId,
                            row.ItemId,
                            m,
                            responseVersion
                        )
                    )
                )
            | _ -> Ok()

    /// After re-reading the row under the item lock: the row to apply to, or None when a
    /// concurrent path already applied this version (or a newer one).
    let rowToApply
        (current: ItemState option)
        (planned: ItemState)
        (responseVersion: uint64)
        : ItemState option =
        match current with
        | Some row when row.Version >= responseVersion -> None
        | Some row -> Some row
        | None -> Some planned
