/// Namespace reconciliation: validate the server's namespace list against the cache, with every
/// rollback check, before anything is written. Implements docs/engine.md §4.4 and §4.11 (list rows).
namespace BitBoxSync.Core

open System
open BitBoxSync.Protocol

/// A namespace as the server lists it, parsed.
type ListedNamespace =
    {
        NamespaceId: NamespaceId
        Kind: NamespaceKind
        Head: uint64
    }

/// What the pass does with one listed namespace, in server order.
type NamespacePlan =
    {
        Listed: ListedNamespace
        /// The row to continue with: the cached row with the listed kind, or a fresh row at head 0.
        Row: NamespaceState
        /// No DEK is cached: join first (fetch and unwrap the wrapped DEK, listed kind as hint).
        NeedsJoin: bool
        /// The server head moved past the local checkpoint.
        RemoteChanged: bool
        /// The row is new or its kind changed: it must be saved even when nothing else moved.
        RowChanged: bool
    }

/// The whole list's plan.
type NamespacesPlan =
    {
        Namespaces: NamespacePlan list
        /// A default namespace ID to adopt and persist in the identity state.
        AdoptDefault: NamespaceId option
    }

/// After the scope is known: fetch the item map, or just advance the checkpoint.
[<RequireQualifiedAccess>]
type NamespaceAction =
    /// Reconcile the item map (docs/engine.md §4.6) expecting at least this head.
    | FetchItemMap of expectedHead: uint64
    /// Nothing moved: save the row (head, scope hash, kind) without an item-map request.
    | Save of NamespaceState
    /// Nothing moved and nothing to save: a quiet pass writes nothing.
    | UpToDate

/// The namespace decisions.
module Namespaces =
    /// Parses the wire list: valid IDs and known kinds (errors are not rollbacks).
    let parseListed
        (summaries: Wire.NamespaceSummary list)
        : Result<ListedNamespace list, SyncError> =
        let summaries = if isNull (box summaries) then [] else summaries

        summaries
        |> List.fold
            (fun acc s ->
                acc
                |> Result.bind (fun parsed ->
                    match Bin.parseAs<NamespaceIdKind> "namespaceId" s.NamespaceId with
                    | Error e -> Error(SyncError.InvalidResponse e.Message)
                    | Ok ns ->
                        match NamespaceKind.parse "kind" s.Kind with
                        | Error _ ->
                            Error(SyncError.UnsupportedNamespaceKind(s.NamespaceId, s.Kind))
                        | Ok kind ->
                            Ok(
                                { NamespaceId = ns; Kind = kind; Head = s.NamespaceHead }
                                :: parsed
                            )))
            (Ok [])
        |> Result.map List.rev

    /// docs/engine.md §4.4 steps 3–7c for every listed namespace, all checked before any write:
    /// default kind, single default, default unchanged and still listed, every cached namespace
    /// still listed, no head below the cached head.
    let check
        (identity: IdentityState)
        (cached: NamespaceState list)
        (listed: ListedNamespace list)
        (now: DateTimeOffset)
        : Result<NamespacesPlan, SyncError> =
        let byId = listed |> List.map (fun l -> l.NamespaceId, l) |> Map.ofList
        let cachedById = cached |> List.map (fun c -> c.NamespaceId, c) |> Map.ofList

        let defaults =
            listed
            |> List.filter (fun l -> l.Kind = NamespaceKind.Default)
            |> List.map (fun l -> l.NamespaceId)
            |> List.distinct

        let problem =
            match identity.DefaultNamespaceId with
            | Some d when
                (byId.TryFind d |> Option.exists (fun l -> l.Kind <> NamespaceKind.Default))
                ->
                Some(SyncError.Rollback(RollbackReason.DefaultKindChanged d))
            | _ when defaults.Length > 1 -> Some SyncError.MultipleDefaultNamespaces
            | Some d when
                (match defaults with
                 | [ s ] -> s <> d
                 | _ -> false)
                ->
                Some(SyncError.Rollback(RollbackReason.DefaultNamespaceChanged(d, defaults.Head)))
            | Some d when not (byId.ContainsKey d) ->
                Some(SyncError.Rollback(RollbackReason.DefaultNamespaceDisappeared d))
            | _ ->
                match
                    cached
                    |> List.sortBy (fun c -> c.NamespaceId)
                    |> List.tryFind (fun c -> not (byId.ContainsKey c.NamespaceId))
                with
                | Some gone -> Some(SyncError.NamespaceRemoved gone.NamespaceId)
                | None ->
                    listed
                    |> List.tryPick (fun l ->
                        match cachedById.TryFind l.NamespaceId with
                        | Some c when l.Head < c.Head ->
                            Some(
                                SyncError.Rollback(
                                    RollbackReason.NamespaceHeadDecreased(
                                        l.NamespaceId,
                                        c.Head,
                                        l.Head
                                    )
                                )
                            )
                        | _ -> None)

        match problem with
        | Some e -> Error e
        | None ->
            let plans =
                listed
                |> List.distinctBy (fun l -> l.NamespaceId)
                |> List.map (fun l ->
                    let cachedRow = cachedById.TryFind l.NamespaceId

                    let row =
                        match cachedRow with
                        | Some c -> { c with Kind = Some l.Kind }
                        | None ->
                            {
                                KeyId = identity.KeyId
                                NamespaceId = l.NamespaceId
                                Kind = Some l.Kind
                                Head = 0UL
                                ActiveScopeHash = ""
                                Dek = None
                                UpdatedAt = now
                            }

                    {
                        Listed = l
                        Row = row
                        NeedsJoin = row.Dek.IsNone
                        RemoteChanged = l.Head > row.Head
                        RowChanged =
                            (match cachedRow with
                             | Some c -> c.Kind <> Some l.Kind
                             | None -> true)
                    })

            Ok
                {
                    Namespaces = plans
                    AdoptDefault =
                        (if identity.DefaultNamespaceId.IsNone then
                             List.tryHead defaults
                         else
                             None)
                }

    /// docs/engine.md §4.4 steps 7e–7g: fetch the item map when the head moved or the scope
    /// changed; else save the row if it is new or its kind changed; else nothing (the reference
    /// engine rewrites the row on every pass; a quiet pass here writes nothing).
    let decide (plan: NamespacePlan) (scopeHash: string) (now: DateTimeOffset) : NamespaceAction =
        if plan.RemoteChanged || scopeHash <> plan.Row.ActiveScopeHash then
            NamespaceAction.FetchItemMap plan.Listed.Head
        elif not plan.RowChanged && plan.Listed.Head = plan.Row.Head then
            NamespaceAction.UpToDate
        else
            NamespaceAction.Save
                { plan.Row with
                    Head = plan.Listed.Head
                    ActiveScopeHash = scopeHash
                    UpdatedAt = now
                }

    /// The watch's check of reported heads against the cache (docs/engine.md §6.3): a head below
    /// the cached one is a rollback; an unknown namespace or a higher head needs a pass.
    let needsSync
        (cached: NamespaceState list)
        (reported: ListedNamespace list)
        : Result<bool, SyncError> =
        let cachedById = cached |> List.map (fun c -> c.NamespaceId, c.Head) |> Map.ofList

        reported
        |> List.fold
            (fun acc r ->
                acc
                |> Result.bind (fun needs ->
                    match cachedById.TryFind r.NamespaceId with
                    | Some head when r.Head < head ->
                        Error(
                            SyncError.Rollback(
                                RollbackReason.WatchHeadDecreased(r.NamespaceId, head, r.Head)
                            )
                        )
                    | Some head -> Ok(needs || r.Head > head)
                    | None -> Ok true))
            (Ok false)

    /// The cached head after this client's upload was accepted (+1 per accepted write).
    let afterUpload (row: NamespaceState) (now: DateTimeOffset) : NamespaceState =
        { row with Head = row.Head + 1UL; UpdatedAt = now }

/// Whether a namespace can be used without the network (docs/engine.md §4.2).
[<RequireQualifiedAccess>]
type Readiness =
    /// Cached with its DEK (and of the expected kind, when one was asked for).
    | Ready of NamespaceState
    /// No row, or no DEK: join (fetch and unwrap the wrapped DEK) with this kind hint, then re-check.
    | NeedsJoin of kindHint: NamespaceKind option
    /// Cached with another kind than the operation needs (e.g. an invite on a default namespace).
    | WrongKind of actual: NamespaceKind option * expected: NamespaceKind

/// The DEK-availability decision.
module Readiness =
    /// docs/engine.md §4.2 steps 1 and 2: a cached row with a DEK is ready unless its kind
    /// differs from `expected`; otherwise the namespace must be joined first.
    let decide
        (row: NamespaceState option)
        (expected: NamespaceKind option)
        (hint: NamespaceKind option)
        : Readiness =
        match row, expected with
        | Some r, Some e when r.Dek.IsSome && r.Kind <> Some e -> Readiness.WrongKind(r.Kind, e)
        | Some r, _ when r.Dek.IsSome -> Readiness.Ready r
        | Some r, _ -> Readiness.NeedsJoin(r.Kind |> Option.orElse hint)
        | None, _ -> Readiness.NeedsJoin hint

    /// The row after a join stored the unwrapped DEK: head and scope hash are kept, the kind is
    /// filled from the hint only when unknown.
    let afterJoin
        (row: NamespaceState option)
        (keyId: BitBoxSync.Protocol.KeyId)
        (ns: BitBoxSync.Protocol.NamespaceId)
        (hint: NamespaceKind option)
        (dek: BitBoxSync.Protocol.Dek)
        (now: DateTimeOffset)
        : NamespaceState =
        let existing =
            row
            |> Option.defaultValue
                {
                    KeyId = keyId
                    NamespaceId = ns
                    Kind = hint
                    Head = 0UL
                    ActiveScopeHash = ""
                    Dek = None
                    UpdatedAt = now
                }

        { existing with
            Kind = existing.Kind |> Option.orElse hint
            Dek = Some dek
            UpdatedAt = now
        }
