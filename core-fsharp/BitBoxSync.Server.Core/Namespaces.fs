/// Namespace rules: the immutable default namespace (create-or-get), shared namespaces,
/// membership, member lists, wrapped-DEK fetch and the caller's namespace list. Implements
/// docs/protocol.md §7.6–§7.8, §7.10, §7.11, §7.19 and §10.3.
namespace BitBoxSync.Server.Core

open System
open BitBoxSync.Protocol

/// A namespace as stored. Storage format — change only with a schema migration.
type StoredNamespace =
    {
        NamespaceId: NamespaceId
        Kind: NamespaceKind
        Head: uint64
        CreatedBy: KeyId
        CreatedAt: DateTimeOffset
    }

/// One member with the DEK wrapped to it. Membership is permanent in protocol v1.
type Membership =
    {
        NamespaceId: NamespaceId
        KeyId: KeyId
        Kind: IdentityKind
        WrappedDek: WrappedDek
        JoinedAt: DateTimeOffset
    }

/// What creating a namespace writes (one transaction).
type NamespaceCreation = { Namespace: StoredNamespace; Membership: Membership }

/// The outcome of `PUT /v1/namespaces/default` or `POST /v1/namespaces`.
[<RequireQualifiedAccess>]
type CreateOutcome =
    /// Create these rows, then answer `created: true`.
    | Create of NamespaceCreation
    /// Nothing to write: answer `created: false` with the existing namespace.
    | Existing of StoredNamespace * Membership

/// The namespace rules.
module Namespaces =
    let private creation
        (kind: NamespaceKind)
        (caller: KeyId)
        (proposal: NamespaceProposal)
        (now: DateTimeOffset)
        =
        CreateOutcome.Create
            {
                Namespace =
                    {
                        NamespaceId = proposal.NamespaceId
                        Kind = kind
                        Head = 0UL
                        CreatedBy = caller
                        CreatedAt = now
                    }
                Membership =
                    {
                        NamespaceId = proposal.NamespaceId
                        KeyId = caller
                        Kind = IdentityKind.Keystore
                        WrappedDek = proposal.WrappedDek
                        JoinedAt = now
                    }
            }

    /// Create-or-get of the caller's default namespace: an existing default is returned with the
    /// caller's stored wrapped DEK (idempotent, never changes); otherwise the proposed ID must be
    /// free (409) and the caller must be below 32 namespaces (409).
    let ensureDefault
        (caller: KeyId)
        (proposal: NamespaceProposal)
        (existingDefault: (StoredNamespace * Membership) option)
        (proposedIdTaken: bool)
        (callerNamespaceCount: int)
        (now: DateTimeOffset)
        : Result<CreateOutcome, ApiError> =
        match existingDefault with
        | Some(ns, membership) -> Ok(CreateOutcome.Existing(ns, membership))
        | None when proposedIdTaken -> Error(ApiError.conflict "namespace id already taken")
        | None when callerNamespaceCount >= Limits.MaxNamespacesPerKey ->
            Error(
                ApiError.conflict (
                    sprintf "identity is at its limit of %d namespaces" Limits.MaxNamespacesPerKey
                )
            )
        | None -> Ok(creation NamespaceKind.Default caller proposal now)

    /// Creates a shared namespace; a retry by its creator with the same wrapped DEK answers
    /// `created: false`, any other use of a taken ID is 409.
    let createShared
        (caller: KeyId)
        (proposal: NamespaceProposal)
        (existing: (StoredNamespace * Membership option) option)
        (callerNamespaceCount: int)
        (now: DateTimeOffset)
        : Result<CreateOutcome, ApiError> =
        match existing with
        | Some(ns, Some m) when
            ns.CreatedBy = caller
            && ns.Kind = NamespaceKind.Shared
            && m.WrappedDek = proposal.WrappedDek
            ->
            Ok(CreateOutcome.Existing(ns, m))
        | Some _ -> Error(ApiError.conflict "namespace id already taken")
        | None when callerNamespaceCount >= Limits.MaxNamespacesPerKey ->
            Error(
                ApiError.conflict (
                    sprintf "identity is at its limit of %d namespaces" Limits.MaxNamespacesPerKey
                )
            )
        | None -> Ok(creation NamespaceKind.Shared caller proposal now)

    /// Every `{namespaceId}` route but join-request submission: the caller must be a member (403).
    let requireMember (membership: Membership option) : Result<Membership, ApiError> =
        match membership with
        | Some m -> Ok m
        | None -> Error(ApiError.forbidden "not a member of this namespace")

    /// `GET …/wrapped-deks/{keyId}`: members may fetch only their own wrapped DEK
    /// (docs/protocol.md §7.19).
    let wrappedDek
        (caller: Membership option)
        (keyId: KeyId)
        : Result<Wire.GetWrappedDekResponse, ApiError> =
        requireMember caller
        |> Result.bind (fun m ->
            if m.KeyId <> keyId then
                Error(ApiError.forbidden "only the caller's own wrapped DEK can be fetched")
            else
                Ok
                    {
                        NamespaceId = m.NamespaceId.Wire
                        KeyId = m.KeyId.Wire
                        WrappedDek = m.WrappedDek.Wire
                    })

    /// `GET …/members`: every member, caller included, in join order (docs/protocol.md §7.11).
    let members (ns: NamespaceId) (all: Membership list) : Wire.GetNamespaceMembersResponse =
        {
            NamespaceId = ns.Wire
            Members =
                all
                |> List.sortBy (fun m -> m.JoinedAt, m.KeyId)
                |> Array.ofList
                |> Array.map (fun m -> { Kind = m.Kind.Wire; KeyId = m.KeyId.Wire })
        }

    /// `GET /v1/namespaces/mine`: every namespace the caller belongs to, with its head.
    let mine (namespaces: StoredNamespace list) : Wire.ListNamespacesResponse =
        {
            Namespaces =
                namespaces
                |> List.sortBy (fun n -> n.NamespaceId)
                |> Array.ofList
                |> Array.map (fun n ->
                    {
                        NamespaceId = n.NamespaceId.Wire
                        Kind = n.Kind.Wire
                        NamespaceHead = n.Head
                    })
        }

    /// The answer to a create-or-get.
    let ensureDefaultResponse (outcome: CreateOutcome) : Wire.EnsureDefaultNamespaceResponse =
        let ns, m, created =
            match outcome with
            | CreateOutcome.Create c -> c.Namespace, c.Membership, true
            | CreateOutcome.Existing(ns, m) -> ns, m, false

        {
            NamespaceId = ns.NamespaceId.Wire
            Kind = ns.Kind.Wire
            WrappedDek = m.WrappedDek.Wire
            Created = created
        }
