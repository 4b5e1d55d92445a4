/// Invite and join-request rules: sensitive-action invite creation, listing and revocation; join
/// request submission (server secret, origin, signature, expiry, limits), listing, approval with
/// the accepted-count re-check, rejection. Implements docs/protocol.md §7.12–§7.18 and §10.6.
namespace BitBoxSync.Server.Core

open System
open BitBoxSync.Protocol

/// Server settings for sharing.
type SharingSettings =
    {
        /// The server's public origin, as printed in invites; join requests must name it.
        ServerOrigin: ServerOrigin
        /// Tolerance on client clocks for expiry upper bounds (default 60 s).
        ClockSkew: TimeSpan
    }

/// An invite as stored (never the invite secret). Storage format — change only with a migration.
type StoredInvite =
    {
        InviteId: InviteId
        NamespaceId: NamespaceId
        CreatedBy: KeyId
        CreatedAt: DateTimeOffset
        /// Unix seconds.
        ExpiresAt: int64
        MaxAccepted: int
        /// The legacy layout's signed limit on pending join requests (None: current layout).
        MaxPending: int option
        ServerSecretHash: InviteServerSecretHash
        AcceptedCount: int
        RevokedAt: DateTimeOffset option
    }

/// Where a join request stands.
[<RequireQualifiedAccess>]
type JoinRequestStatus =
    | Pending
    | Accepted
    | Rejected

/// A join request as stored: the submitted JSON values verbatim (approvers re-verify them).
type StoredJoinRequest =
    {
        NamespaceId: NamespaceId
        InviteId: InviteId
        RequesterKeyId: KeyId
        Hash: JoinRequestHash
        Request: Wire.NamespaceJoinRequest
        /// Unix seconds.
        ExpiresAt: int64
        CreatedAt: DateTimeOffset
        Status: JoinRequestStatus
    }

/// What a submission writes.
[<RequireQualifiedAccess>]
type SubmitOutcome =
    /// Store this request (replacing the requester's other pending request in the namespace, if any).
    | Store of request: StoredJoinRequest * replaces: JoinRequestHash option
    /// The identical request is already pending: answer with it, write nothing.
    | Existing of StoredJoinRequest

/// What an approval writes, in one transaction.
type ApproveOutcome =
    {
        Membership: Membership
        Request: StoredJoinRequest
        Invite: StoredInvite
    }

/// The sharing rules.
module Sharing =
    /// The documented defaults for an origin.
    let settings (origin: ServerOrigin) =
        {
            ServerOrigin = origin
            ClockSkew = TimeSpan.FromSeconds 60.0
        }

    let private unix (t: DateTimeOffset) = t.ToUnixTimeSeconds()

    let private check condition error = if condition then Ok() else Error error

    let private fieldsOf (ns: NamespaceId) (cmd: CreateInviteCommand) : CreateInviteFields =
        {
            NamespaceId = ns
            InviteId = cmd.InviteId
            InviteServerSecretHash = cmd.InviteServerSecretHash
            ExpiresAt = cmd.ExpiresAt
            MaxAccepted = cmd.MaxAccepted
        }

    /// The signed action fields rebuilt from the path namespace and the body: 76 bytes, or the
    /// legacy 80 bytes when the request carried `maxPending`.
    let private actionFieldsOf (ns: NamespaceId) (cmd: CreateInviteCommand) =
        match cmd.MaxPending with
        | None -> ActionFields.createInvite (fieldsOf ns cmd)
        | Some maxPending -> ActionFields.createInviteLegacy (fieldsOf ns cmd) maxPending

    /// The purpose the create-invite challenge must have been minted for: bound to the hash of
    /// the action fields rebuilt from the path namespace and the body.
    let createInvitePurpose (ns: NamespaceId) (cmd: CreateInviteCommand) : ChallengePurpose =
        ChallengePurpose.SensitiveAction(
            SensitiveAction.CreateNamespaceInvite,
            ActionFields.hash (actionFieldsOf ns cmd)
        )

    /// Whether an invite can still be used: not revoked, not expired.
    let isActive (invite: StoredInvite) (now: DateTimeOffset) =
        invite.RevokedAt.IsNone && invite.ExpiresAt > unix now

    /// `POST …/invites` after the challenge passed: the body's key is the caller, a member of a
    /// shared namespace, the signature covers the rebuilt action fields, the expiry is in
    /// (now, now + 1 h + skew], the ID is unused and fewer than 5 invites are active.
    let createInvite
        (settings: SharingSettings)
        (caller: RegisteredIdentity)
        (ns: StoredNamespace)
        (membership: Membership option)
        (cmd: CreateInviteCommand)
        (inviteIdTaken: bool)
        (activeInvites: int)
        (now: DateTimeOffset)
        : Result<StoredInvite, ApiError> =
        let intent =
            Intents.sensitiveAction
                SensitiveAction.CreateNamespaceInvite
                cmd.Challenge
                cmd.Kind
                cmd.KeyId
                (actionFieldsOf ns.NamespaceId cmd)

        let maxExpiry = unix (now + settings.ClockSkew) + Limits.MaxInviteTtlSeconds

        check (cmd.KeyId = caller.KeyId) (ApiError.forbidden "keyId is not the token's identity")
        |> Result.bind (fun () -> Namespaces.requireMember membership |> Result.map ignore)
        |> Result.bind (fun () ->
            check
                (ns.Kind = NamespaceKind.Shared)
                (ApiError.forbidden "invites exist only for shared namespaces"))
        |> Result.bind (fun () ->
            check
                (Ed25519.verify caller.AuthPublicKey (ReadOnlySpan intent) cmd.Signature)
                (ApiError.forbidden "invalid intent signature"))
        |> Result.bind (fun () ->
            check
                (cmd.ExpiresAt > unix now)
                (ApiError.badRequest "expiresAt must be in the future"))
        |> Result.bind (fun () ->
            check
                (cmd.ExpiresAt <= maxExpiry)
                (ApiError.badRequest "expiresAt exceeds the maximum invite lifetime of 1 hour"))
        |> Result.bind (fun () ->
            check (not inviteIdTaken) (ApiError.conflict "invite id already taken"))
        |> Result.bind (fun () ->
            check
                (activeInvites < Limits.MaxActiveInvitesPerNamespace)
                (ApiError.conflict (
                    sprintf
                        "namespace already has %d active invites"
                        Limits.MaxActiveInvitesPerNamespace
                )))
        |> Result.map (fun () ->
            {
                InviteId = cmd.InviteId
                NamespaceId = ns.NamespaceId
                CreatedBy = caller.KeyId
                CreatedAt = now
                ExpiresAt = cmd.ExpiresAt
                MaxAccepted = cmd.MaxAccepted
                MaxPending = cmd.MaxPending
                ServerSecretHash = cmd.InviteServerSecretHash
                AcceptedCount = 0
                RevokedAt = None
            })

    let private pendingLimitOnWire (invite: StoredInvite) =
        match invite.MaxPending with
        | Some p -> Nullable(int64 p)
        | None -> Nullable()

    /// The create-invite answer: the stored values exactly (the client checks the echoes).
    let createInviteResponse (invite: StoredInvite) : Wire.CreateNamespaceInviteResponse =
        {
            NamespaceId = invite.NamespaceId.Wire
            InviteId = invite.InviteId.Wire
            ExpiresAt = invite.ExpiresAt
            MaxPending = pendingLimitOnWire invite
            MaxAccepted = int64 invite.MaxAccepted
        }

    /// `DELETE …/invites/{invite}` by any member; revoking twice keeps the first time (idempotent).
    let revoke
        (membership: Membership option)
        (invite: StoredInvite option)
        (now: DateTimeOffset)
        : Result<StoredInvite, ApiError> =
        Namespaces.requireMember membership
        |> Result.bind (fun _ ->
            match invite with
            | None -> Error(ApiError.notFound "unknown invite")
            | Some i ->
                Ok
                    { i with
                        RevokedAt = i.RevokedAt |> Option.orElse (Some now)
                    })

    /// `GET …/invites`: active invites plus those revoked or expired within the last 24 h.
    let list
        (ns: NamespaceId)
        (invites: StoredInvite list)
        (pending: StoredJoinRequest list)
        (now: DateTimeOffset)
        : Wire.ListNamespaceInvitesResponse =
        let recent = now.AddHours -24.0

        let visible (i: StoredInvite) =
            isActive i now
            || (match i.RevokedAt with
                | Some r -> r > recent
                | None -> i.ExpiresAt > unix recent)

        {
            NamespaceId = ns.Wire
            Invites =
                invites
                |> List.filter visible
                |> List.sortBy (fun i -> i.CreatedAt, i.InviteId)
                |> Array.ofList
                |> Array.map (fun i ->
                    {
                        InviteId = i.InviteId.Wire
                        CreatedByKeyId = i.CreatedBy.Wire
                        CreatedAt = Rfc3339.format i.CreatedAt
                        ExpiresAt = i.ExpiresAt
                        MaxPending = pendingLimitOnWire i
                        MaxAccepted = int64 i.MaxAccepted
                        ActiveRequestCount =
                            pending
                            |> List.filter (fun r ->
                                r.InviteId = i.InviteId
                                && r.Status = JoinRequestStatus.Pending
                                && r.ExpiresAt > unix now)
                            |> List.length
                            |> int64
                        AcceptedCount = int64 i.AcceptedCount
                        RevokedAt = i.RevokedAt |> Option.map Rfc3339.format |> Option.toObj
                    })
        }

    /// `POST …/invites/{invite}/join-requests` by the prospective member.
    let submit
        (settings: SharingSettings)
        (caller: KeyId)
        (pathNamespace: NamespaceId)
        (pathInvite: InviteId)
        (cmd: SubmitJoinRequestCommand)
        (raw: Wire.NamespaceJoinRequest)
        (invite: StoredInvite option)
        (callerIsMember: bool)
        (callerPending: StoredJoinRequest list)
        (pendingForInvite: int)
        (now: DateTimeOffset)
        : Result<SubmitOutcome, ApiError> =
        let f = cmd.JoinRequest.Fields
        let payload = JoinRequests.payload f
        let hash = JoinRequests.hash payload
        let nowUnix = unix now

        check
            (f.KeyId = caller)
            (ApiError.forbidden "joinRequest.keyId is not the token's identity")
        |> Result.bind (fun () ->
            check
                (f.NamespaceId = pathNamespace && f.InviteId = pathInvite)
                (ApiError.badRequest "joinRequest IDs must match the path"))
        |> Result.bind (fun () ->
            match invite with
            | Some i when i.NamespaceId = pathNamespace -> Ok i
            | _ -> Error(ApiError.notFound "unknown invite"))
        |> Result.bind (fun i ->
            check i.RevokedAt.IsNone (ApiError.gone "invite revoked")
            |> Result.bind (fun () ->
                check (i.ExpiresAt > nowUnix) (ApiError.gone "invite expired"))
            |> Result.bind (fun () ->
                check
                    (InviteSecrets.matchesHash cmd.InviteServerSecret i.ServerSecretHash)
                    (ApiError.forbidden "invalid invite server secret"))
            |> Result.bind (fun () ->
                check
                    (f.ServerOrigin = settings.ServerOrigin)
                    (ApiError.badRequest "joinRequest.serverOrigin is not this server's origin"))
            |> Result.bind (fun () ->
                check
                    (KeyIds.ofAuthPublicKey f.AuthPublicKey = f.KeyId)
                    (ApiError.forbidden "key id does not match auth public key"))
            |> Result.bind (fun () ->
                check (f.ExpiresAt > nowUnix) (ApiError.gone "join request expired"))
            |> Result.bind (fun () ->
                check
                    (f.ExpiresAt
                     <= unix (now + settings.ClockSkew) + Limits.MaxJoinRequestTtlSeconds)
                    (ApiError.badRequest "join request expiry exceeds maximum"))
            |> Result.bind (fun () ->
                check
                    (f.ExpiresAt <= i.ExpiresAt)
                    (ApiError.badRequest "join request expires after invite"))
            |> Result.bind (fun () ->
                check
                    (Ed25519.verify
                        f.AuthPublicKey
                        (ReadOnlySpan payload)
                        cmd.JoinRequest.Signature)
                    (ApiError.forbidden "invalid join request signature"))
            |> Result.bind (fun () ->
                check (not callerIsMember) (ApiError.conflict "already a member"))
            |> Result.bind (fun () ->
                check
                    (i.AcceptedCount < i.MaxAccepted)
                    (ApiError.conflict "invite has reached its accepted limit"))
            |> Result.bind (fun () ->
                let live =
                    callerPending
                    |> List.filter (fun r ->
                        r.Status = JoinRequestStatus.Pending && r.ExpiresAt > nowUnix)

                match live |> List.tryFind (fun r -> r.Hash = hash) with
                | Some same -> Ok(SubmitOutcome.Existing same)
                | None ->
                    let replaced = live |> List.tryFind (fun r -> r.NamespaceId = pathNamespace)
                    let requesterPending = live.Length - (if replaced.IsSome then 1 else 0)

                    let inviteLimit =
                        min
                            (i.MaxPending |> Option.defaultValue Limits.MaxPendingJoinRequestsPerInvite)
                            Limits.MaxPendingJoinRequestsPerInvite

                    if pendingForInvite >= inviteLimit then
                        Error(ApiError.conflict "invite has too many pending join requests")
                    elif requesterPending >= Limits.MaxPendingJoinRequestsPerRequester then
                        Error(ApiError.conflict "requester has too many pending join requests")
                    else
                        Ok(
                            SubmitOutcome.Store(
                                {
                                    NamespaceId = pathNamespace
                                    InviteId = pathInvite
                                    RequesterKeyId = caller
                                    Hash = hash
                                    Request = raw
                                    ExpiresAt = f.ExpiresAt
                                    CreatedAt = now
                                    Status = JoinRequestStatus.Pending
                                },
                                replaced |> Option.map (fun r -> r.Hash)
                            )
                        )))

    /// The submit answer (also for an existing identical request).
    let submitResponse (request: StoredJoinRequest) : Wire.SubmitNamespaceJoinRequestResponse =
        {
            NamespaceId = request.NamespaceId.Wire
            InviteId = request.InviteId.Wire
            RequesterKind = IdentityKind.Keystore.Wire
            RequesterKeyId = request.RequesterKeyId.Wire
            JoinRequestHash = request.Hash.Wire
            Status = "pending"
        }

    /// `GET …/join-requests`: pending, unexpired requests with the submitted JSON verbatim.
    let listRequests
        (ns: NamespaceId)
        (requests: StoredJoinRequest list)
        (now: DateTimeOffset)
        : Wire.ListNamespaceJoinRequestsResponse =
        {
            NamespaceId = ns.Wire
            Requests =
                requests
                |> List.filter (fun r ->
                    r.Status = JoinRequestStatus.Pending && r.ExpiresAt > unix now)
                |> List.sortBy (fun r -> r.CreatedAt, r.Hash)
                |> Array.ofList
                |> Array.map (fun r ->
                    {
                        InviteId = r.InviteId.Wire
                        JoinRequestHash = r.Hash.Wire
                        CreatedAt = Rfc3339.format r.CreatedAt
                        Status = "pending"
                        JoinRequest = r.Request
                    })
        }

    /// `PUT …/approve` by any member holding the invite's server secret: the request is pending and
    /// unexpired, the invite unrevoked and below its accepted limit (re-checked here, inside the
    /// transaction), the requester is not yet a member, member and namespace quotas hold. Adds the member with the given wrapped DEK.
    let approve
        (approver: Membership option)
        (request: StoredJoinRequest option)
        (invite: StoredInvite option)
        (cmd: ApproveJoinRequestCommand)
        (requesterIsMember: bool)
        (memberCount: int)
        (requesterNamespaceCount: int)
        (now: DateTimeOffset)
        : Result<ApproveOutcome, ApiError> =
        Namespaces.requireMember approver
        |> Result.bind (fun _ ->
            match request, invite with
            | Some r, Some i when r.Status = JoinRequestStatus.Pending -> Ok(r, i)
            | _ -> Error(ApiError.notFound "unknown join request"))
        |> Result.bind (fun (r, i) ->
            check (r.ExpiresAt > unix now) (ApiError.gone "join request expired")
            |> Result.bind (fun () ->
                check
                    (InviteSecrets.matchesHash cmd.InviteServerSecret i.ServerSecretHash)
                    (ApiError.forbidden "invalid invite server secret"))
            |> Result.bind (fun () -> check i.RevokedAt.IsNone (ApiError.gone "invite revoked"))
            |> Result.bind (fun () ->
                check (not requesterIsMember) (ApiError.conflict "requester is already a member"))
            |> Result.bind (fun () ->
                check
                    (i.AcceptedCount < i.MaxAccepted)
                    (ApiError.conflict "invite has reached its accepted limit"))
            |> Result.bind (fun () ->
                check
                    (memberCount < Limits.MaxMembersPerNamespace)
                    (ApiError.conflict (
                        sprintf "namespace has %d members" Limits.MaxMembersPerNamespace
                    )))
            |> Result.bind (fun () ->
                check
                    (requesterNamespaceCount < Limits.MaxNamespacesPerKey)
                    (ApiError.conflict "requester is at its namespace limit"))
            |> Result.map (fun () ->
                {
                    Membership =
                        {
                            NamespaceId = r.NamespaceId
                            KeyId = r.RequesterKeyId
                            Kind = IdentityKind.Keystore
                            WrappedDek = cmd.WrappedDek
                            JoinedAt = now
                        }
                    Request = { r with Status = JoinRequestStatus.Accepted }
                    Invite = { i with AcceptedCount = i.AcceptedCount + 1 }
                }))

    /// `DELETE …/join-requests/{keyId}/{hash}` by any member.
    let reject
        (membership: Membership option)
        (request: StoredJoinRequest option)
        : Result<StoredJoinRequest, ApiError> =
        Namespaces.requireMember membership
        |> Result.bind (fun _ ->
            match request with
            | Some r when r.Status = JoinRequestStatus.Pending ->
                Ok { r with Status = JoinRequestStatus.Rejected }
            | _ -> Error(ApiError.notFound "unknown join request"))
