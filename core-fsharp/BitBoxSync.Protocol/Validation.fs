/// Request paths, validation of request DTOs into constrained commands (what a server checks
/// about format), and the response checks of the Go raw client. docs/protocol.md §6.1, §7,
/// §10, §11.
namespace BitBoxSync.Protocol

open System
open FsToolkit.ErrorHandling
open BitBoxSync.Protocol.Wire

/// Request paths, relative to the base URL (docs/protocol.md §7).
module Paths =
    /// `/v1/auth/challenge`
    [<Literal>]
    let Challenge = "/v1/auth/challenge"

    /// `/v1/auth/login`
    [<Literal>]
    let Login = "/v1/auth/login"

    /// `/v1/auth/refresh`
    [<Literal>]
    let Refresh = "/v1/auth/refresh"

    /// `/v1/auth/tokens`
    [<Literal>]
    let Tokens = "/v1/auth/tokens"

    /// `/v1/namespaces/default`
    [<Literal>]
    let DefaultNamespace = "/v1/namespaces/default"

    /// `/v1/namespaces/mine`
    [<Literal>]
    let Mine = "/v1/namespaces/mine"

    /// `/v1/namespaces/watch`
    [<Literal>]
    let Watch = "/v1/namespaces/watch"

    /// `/v1/namespaces`
    [<Literal>]
    let Namespaces = "/v1/namespaces"

    /// `/v1/namespaces/{ns}/members`
    let members (ns: NamespaceId) = $"/v1/namespaces/{ns.Wire}/members"

    /// `/v1/namespaces/{ns}/invites`
    let invites (ns: NamespaceId) = $"/v1/namespaces/{ns.Wire}/invites"

    /// `/v1/namespaces/{ns}/invites/{invite}`
    let invite (ns: NamespaceId) (invite: InviteId) =
        $"/v1/namespaces/{ns.Wire}/invites/{invite.Wire}"

    /// `/v1/namespaces/{ns}/invites/{invite}/join-requests`
    let submitJoinRequest (ns: NamespaceId) (invite: InviteId) =
        $"/v1/namespaces/{ns.Wire}/invites/{invite.Wire}/join-requests"

    /// `/v1/namespaces/{ns}/join-requests`
    let joinRequests (ns: NamespaceId) =
        $"/v1/namespaces/{ns.Wire}/join-requests"

    /// `/v1/namespaces/{ns}/join-requests/{keyId}/{hash}` (reject)
    let joinRequest (ns: NamespaceId) (requester: KeyId) (hash: JoinRequestHash) =
        $"/v1/namespaces/{ns.Wire}/join-requests/{requester.Wire}/{hash.Wire}"

    /// `/v1/namespaces/{ns}/join-requests/{keyId}/{hash}/approve`
    let approveJoinRequest (ns: NamespaceId) (requester: KeyId) (hash: JoinRequestHash) =
        joinRequest ns requester hash + "/approve"

    /// `/v1/namespaces/{ns}/wrapped-deks/{keyId}`
    let wrappedDek (ns: NamespaceId) (keyId: KeyId) =
        $"/v1/namespaces/{ns.Wire}/wrapped-deks/{keyId.Wire}"

    /// `/v1/namespaces/{ns}/items`
    let items (ns: NamespaceId) = $"/v1/namespaces/{ns.Wire}/items"

    /// `/v1/kv/{ns}/{item}`
    let item (ns: NamespaceId) (item: ItemId) = $"/v1/kv/{ns.Wire}/{item.Wire}"

    /// `/v1/capabilities` (extension discovery, docs/protocol.md §15)
    [<Literal>]
    let Capabilities = "/v1/capabilities"

    /// `/v1/namespaces/{ns}/items/batch-get` (batch-items extension)
    let batchGet (ns: NamespaceId) = items ns + "/batch-get"

    /// `/v1/namespaces/{ns}/items/batch-put` (batch-items extension)
    let batchPut (ns: NamespaceId) = items ns + "/batch-put"

/// One item of a batch PUT after the batch's structure was checked: its ID, its precondition and
/// its body (the body's fields are checked per item, so one bad item refuses only itself).
type BatchPutEntry =
    {
        ItemId: ItemId
        IfMatch: IfMatch
        Body: PutItemRequest
    }

/// `POST /v1/auth/challenge`, validated.
type ChallengeCommand = { Purpose: ChallengePurpose; Kind: IdentityKind }

/// `POST /v1/auth/login`, validated (format only; key ID, signature and challenge are rules).
type LoginCommand =
    {
        Kind: IdentityKind
        KeyId: KeyId
        AuthPublicKey: AuthPublicKey
        WrapPublicKey: WrapPublicKey
        Challenge: Challenge
        Signature: Signature
        Attestation: Attestation option
    }

/// `POST /v1/auth/refresh`, validated.
type RefreshCommand =
    {
        Kind: IdentityKind
        KeyId: KeyId
        Challenge: Challenge
        Signature: Signature
        Attestation: Attestation option
    }

/// `DELETE /v1/auth/tokens`, validated.
type RevokeAllTokensCommand =
    {
        Kind: IdentityKind
        KeyId: KeyId
        Challenge: Challenge
        Signature: Signature
    }

/// `PUT /v1/namespaces/default` and `POST /v1/namespaces`, validated.
type NamespaceProposal = { NamespaceId: NamespaceId; WrappedDek: WrappedDek }

/// `POST /v1/namespaces/watch`, validated (null `knownHeads` = empty).
type WatchCommand = { KnownHeads: Map<NamespaceId, uint64> }

/// `POST /v1/namespaces/{ns}/invites`, validated.
type CreateInviteCommand =
    {
        Kind: IdentityKind
        KeyId: KeyId
        InviteId: InviteId
        InviteServerSecretHash: InviteServerSecretHash
        Challenge: Challenge
        Signature: Signature
        ExpiresAt: int64
        MaxAccepted: int
        /// Set only by the legacy layout: the signed pending-request limit of the invite.
        MaxPending: int option
    }

/// A join request with every field parsed; `Fields` rebuild the signed payload.
type JoinRequest =
    {
        Fields: JoinRequestFields
        Signature: Signature
        InviteProof: InviteProof
    }

/// `POST …/join-requests`, validated.
type SubmitJoinRequestCommand =
    {
        InviteServerSecret: InviteServerSecret
        JoinRequest: JoinRequest
    }

/// `PUT …/approve`, validated.
type ApproveJoinRequestCommand =
    {
        InviteServerSecret: InviteServerSecret
        WrappedDek: WrappedDek
    }

/// Validation of request DTOs into commands: the first broken rule, named by field.
module Requests =
    /// Upper bound on `knownHeads` entries in one watch request (ours: docs/protocol.md §7.9).
    [<Literal>]
    let MaxWatchEntries = 1000

    let private optional
        (parse: string -> Result<'a, FieldError>)
        (s: string)
        : Result<'a option, FieldError> =
        if String.IsNullOrEmpty s then
            Ok None
        else
            parse s |> Result.map Some

    let private mustBeAbsent field (s: string) =
        if String.IsNullOrEmpty s then
            Ok()
        else
            FieldError.fail field "must be omitted unless purpose is \"sensitive-action\""

    /// The four parts every signed auth request carries: kind, key ID, challenge, signature.
    let private signedParts kind keyId challenge signature =
        result {
            let! kind = IdentityKind.parse kind
            let! keyId = Bin.parseAs<KeyIdKind> "keyId" keyId
            let! challenge = Bin.parseAs<ChallengeKind> "challenge" challenge
            let! signature = Bin.parseAs<SignatureKind> "intentSignature" signature
            return kind, keyId, challenge, signature
        }

    /// Validates a challenge request: purpose and kind from the enumerations; `action` and
    /// `actionFieldsHash` present exactly for `sensitive-action`.
    let challenge (r: ChallengeRequest) : Result<ChallengeCommand, FieldError> =
        result {
            let! kind = IdentityKind.parse r.Kind

            let! purpose =
                match r.Purpose with
                | "login"
                | "refresh" ->
                    result {
                        do! mustBeAbsent "action" r.Action
                        do! mustBeAbsent "actionFieldsHash" r.ActionFieldsHash

                        return
                            if r.Purpose = "login" then
                                ChallengePurpose.Login
                            else
                                ChallengePurpose.Refresh
                    }
                | "sensitive-action" ->
                    result {
                        let! action = SensitiveAction.parse r.Action

                        let! hash =
                            Bin.parseAs<ActionFieldsHashKind> "actionFieldsHash" r.ActionFieldsHash

                        return ChallengePurpose.SensitiveAction(action, hash)
                    }
                | null -> FieldError.missing "purpose"
                | _ ->
                    FieldError.fail
                        "purpose"
                        "must be \"login\", \"refresh\" or \"sensitive-action\""

            return { Purpose = purpose; Kind = kind }
        }

    /// Validates a login request.
    let login (r: LoginRequest) : Result<LoginCommand, FieldError> =
        result {
            let! kind, keyId, challenge, signature =
                signedParts r.Kind r.KeyId r.Challenge r.IntentSignature

            let! auth = Bin.parseAs<AuthPublicKeyKind> "authPublicKey" r.AuthPublicKey
            let! wrap = Bin.parseAs<WrapPublicKeyKind> "wrapPublicKey" r.WrapPublicKey

            let! attestation =
                optional (Bin.parseAs<AttestationKind> "attestation") r.Attestation

            return
                {
                    Kind = kind
                    KeyId = keyId
                    AuthPublicKey = auth
                    WrapPublicKey = wrap
                    Challenge = challenge
                    Signature = signature
                    Attestation = attestation
                }
        }

    /// Validates a refresh request.
    let refresh (r: RefreshRequest) : Result<RefreshCommand, FieldError> =
        result {
            let! kind, keyId, challenge, signature =
                signedParts r.Kind r.KeyId r.Challenge r.IntentSignature

            let! attestation =
                optional (Bin.parseAs<AttestationKind> "attestation") r.Attestation

            return
                {
                    Kind = kind
                    KeyId = keyId
                    Challenge = challenge
                    Signature = signature
                    Attestation = attestation
                }
        }

    /// Validates a revoke-all-tokens request.
    let revokeAllTokens (r: RevokeAllTokensRequest) : Result<RevokeAllTokensCommand, FieldError> =
        result {
            let! kind, keyId, challenge, signature =
                signedParts r.Kind r.KeyId r.Challenge r.IntentSignature

            return
                {
                    Kind = kind
                    KeyId = keyId
                    Challenge = challenge
                    Signature = signature
                }
        }

    /// Validates `PUT /v1/namespaces/default` (the wrapped DEK passes `ValidateWrappedDEK`).
    let ensureDefaultNamespace
        (r: EnsureDefaultNamespaceRequest)
        : Result<NamespaceProposal, FieldError> =
        result {
            let! ns = Bin.parseAs<NamespaceIdKind> "proposedNamespaceId" r.ProposedNamespaceId
            let! dek = Bin.parseAs<WrappedDekKind> "wrappedDek" r.WrappedDek
            return { NamespaceId = ns; WrappedDek = dek }
        }

    /// Validates `POST /v1/namespaces`.
    let createSharedNamespace
        (r: CreateSharedNamespaceRequest)
        : Result<NamespaceProposal, FieldError> =
        result {
            let! ns = Bin.parseAs<NamespaceIdKind> "namespaceId" r.NamespaceId
            let! dek = Bin.parseAs<WrappedDekKind> "wrappedDek" r.WrappedDek
            return { NamespaceId = ns; WrappedDek = dek }
        }

    /// Validates a watch request: every key a lowercase namespace ID, at most 1 000 entries.
    let watch (r: WatchNamespacesRequest) : Result<WatchCommand, FieldError> =
        let heads =
            if isNull r.KnownHeads then
                Seq.empty
            else
                r.KnownHeads :> seq<_>

        if Seq.length heads > MaxWatchEntries then
            FieldError.fail "knownHeads" (sprintf "must have at most %d entries" MaxWatchEntries)
        else
            heads
            |> Seq.sortWith (fun a b -> String.CompareOrdinal(a.Key, b.Key))
            |> List.ofSeq
            |> List.traverseResultM (fun (KeyValue(k, v)) ->
                Bin.parseAs<NamespaceIdKind> "knownHeads" k |> Result.map (fun ns -> ns, v))
            |> Result.map (fun pairs -> { KnownHeads = Map.ofList pairs })

    /// Validates a create-invite request (format; ranges and signature are rules of the server).
    let createInvite (r: CreateNamespaceInviteRequest) : Result<CreateInviteCommand, FieldError> =
        result {
            let! kind, keyId, challenge, signature =
                signedParts r.Kind r.KeyId r.Challenge r.IntentSignature

            let! invite = Bin.parseAs<InviteIdKind> "inviteId" r.InviteId

            let! hash =
                Bin.parseAs<InviteServerSecretHashKind>
                    "inviteServerSecretHash"
                    r.InviteServerSecretHash

            do!
                if r.ExpiresAt <= 0L then
                    FieldError.fail "expiresAt" "must be a positive Unix time"
                else
                    Ok()

            do!
                if
                    r.MaxAccepted < 1L
                    || r.MaxAccepted > int64 Limits.MaxAcceptedJoinRequestsPerInvite
                then
                    FieldError.fail
                        "maxAccepted"
                        (sprintf "must be between 1 and %d" Limits.MaxAcceptedJoinRequestsPerInvite)
                else
                    Ok()

            return
                {
                    Kind = kind
                    KeyId = keyId
                    InviteId = invite
                    InviteServerSecretHash = hash
                    Challenge = challenge
                    Signature = signature
                    ExpiresAt = r.ExpiresAt
                    MaxAccepted = int r.MaxAccepted
                    MaxPending = None
                }
        }

    /// Validates a create-invite request in the legacy layout: the current fields, and
    /// `maxPending` in 1…`MaxPendingJoinRequestsPerInvite`.
    let createInviteLegacy
        (r: LegacyCreateNamespaceInviteRequest)
        : Result<CreateInviteCommand, FieldError> =
        result {
            let! cmd =
                createInvite
                    {
                        Kind = r.Kind
                        KeyId = r.KeyId
                        InviteId = r.InviteId
                        InviteServerSecretHash = r.InviteServerSecretHash
                        Challenge = r.Challenge
                        IntentSignature = r.IntentSignature
                        ExpiresAt = r.ExpiresAt
                        MaxAccepted = r.MaxAccepted
                    }

            do!
                if
                    r.MaxPending < 1L
                    || r.MaxPending > int64 Limits.MaxPendingJoinRequestsPerInvite
                then
                    FieldError.fail
                        "maxPending"
                        (sprintf "must be between 1 and %d" Limits.MaxPendingJoinRequestsPerInvite)
                else
                    Ok()

            return { cmd with MaxPending = Some(int r.MaxPending) }
        }

    /// Strict parsing of every field of a join request (the approver's and the server's checks):
    /// version 1, canonical origin, kind, lowercase hex IDs and keys, 64-byte signature,
    /// 32-byte base64url proof, non-negative expiry.
    let joinRequest (r: NamespaceJoinRequest) : Result<JoinRequest, FieldError> =
        result {
            do!
                if isNull (box r) then
                    FieldError.missing "joinRequest"
                elif r.Version <> int64 Limits.JoinRequestVersion then
                    FieldError.fail "joinRequest.version" "must be 1 (unsupported version)"
                else
                    Ok()

            let! ns = Bin.parseAs<NamespaceIdKind> "joinRequest.namespaceId" r.NamespaceId
            let! invite = Bin.parseAs<InviteIdKind> "joinRequest.inviteId" r.InviteId

            let! origin =
                ServerOrigin.parseCanonical r.ServerOrigin
                |> Result.mapError (fun e -> FieldError.create "joinRequest.serverOrigin" e.Message)

            let! kind = IdentityKind.parseAs "joinRequest.kind" r.Kind
            let! keyId = Bin.parseAs<KeyIdKind> "joinRequest.keyId" r.KeyId

            let! auth =
                Bin.parseAs<AuthPublicKeyKind> "joinRequest.authPublicKey" r.AuthPublicKey

            let! wrap =
                Bin.parseAs<WrapPublicKeyKind> "joinRequest.wrapPublicKey" r.WrapPublicKey

            do!
                if r.ExpiresAt < 0L then
                    FieldError.fail "joinRequest.expiresAt" "must not be before the Unix epoch"
                else
                    Ok()

            let! signature = Bin.parseAs<SignatureKind> "joinRequest.signature" r.Signature
            let! proof = Bin.parseAs<InviteProofKind> "joinRequest.inviteProof" r.InviteProof

            return
                {
                    Fields =
                        {
                            NamespaceId = ns
                            InviteId = invite
                            ServerOrigin = origin
                            Kind = kind
                            KeyId = keyId
                            AuthPublicKey = auth
                            WrapPublicKey = wrap
                            ExpiresAt = r.ExpiresAt
                        }
                    Signature = signature
                    InviteProof = proof
                }
        }

    /// Validates a join-request submission.
    let submitJoinRequest
        (r: SubmitNamespaceJoinRequestRequest)
        : Result<SubmitJoinRequestCommand, FieldError> =
        result {
            let! secret =
                Bin.parseAs<InviteServerSecretKind> "inviteServerSecret" r.InviteServerSecret

            let! request = joinRequest r.JoinRequest
            return { InviteServerSecret = secret; JoinRequest = request }
        }

    /// Validates an approval.
    let approveJoinRequest
        (r: ApproveNamespaceJoinRequestRequest)
        : Result<ApproveJoinRequestCommand, FieldError> =
        result {
            let! secret =
                Bin.parseAs<InviteServerSecretKind> "inviteServerSecret" r.InviteServerSecret

            let! dek = Bin.parseAs<WrappedDekKind> "wrappedDek" r.WrappedDek
            return { InviteServerSecret = secret; WrappedDek = dek }
        }

    /// Validates an item upload (nonce 24 bytes, AAD 76 bytes, ciphertext 16..65 536 bytes).
    let putItem (r: PutItemRequest) : Result<SealedItem, FieldError> =
        result {
            let! nonce = Bin.parseAs<ItemNonceKind> "nonce" r.Nonce
            let! aad = Bin.parseAs<ItemAadKind> "aad" r.Aad
            let! ciphertext = Bin.parseAs<CiphertextKind> "ciphertext" r.Ciphertext
            return { Nonce = nonce; Aad = aad; Ciphertext = ciphertext }
        }

/// The batch-items extension's request structure (docs/protocol.md §15): checked as a whole, a
/// failure refuses the whole request (400).
module BatchRequests =
    let private count field (maxItems: int) (n: int) =
        if n = 0 then FieldError.fail field "must not be empty"
        elif n > maxItems then FieldError.fail field (sprintf "must hold at most %d entries" maxItems)
        else Ok()

    let private distinct (field: int -> string) (ids: ItemId list) : Result<ItemId list, FieldError> =
        let seen = Collections.Generic.HashSet<string>(StringComparer.Ordinal)

        ids
        |> List.indexed
        |> List.tryFind (fun (_, id) -> not (seen.Add id.Wire))
        |> function
            | Some(i, _) -> FieldError.fail (field i) "repeats an earlier item ID"
            | None -> Ok ids

    /// `batch-get`: 1..`maxItems` valid, distinct item IDs, in request order.
    let get (maxItems: int) (r: BatchGetItemsRequest) : Result<ItemId list, FieldError> =
        if isNull r.ItemIds then
            FieldError.missing "itemIds"
        else
            result {
                do! count "itemIds" maxItems r.ItemIds.Length

                let! ids =
                    r.ItemIds
                    |> Array.toList
                    |> List.mapi (fun i id -> Bin.parseAs<ItemIdKind> (sprintf "itemIds[%d]" i) id)
                    |> List.sequenceResultM

                return! distinct (sprintf "itemIds[%d]") ids
            }

    /// `batch-put`: 1..`maxItems` items with valid, distinct item IDs; `ifMatch` 0 means "must not
    /// exist". The sealed fields are left to the per-item rule.
    let put (maxItems: int) (r: BatchPutItemsRequest) : Result<BatchPutEntry list, FieldError> =
        if isNull r.Items then
            FieldError.missing "items"
        else
            result {
                do! count "items" maxItems r.Items.Length

                let! entries =
                    r.Items
                    |> Array.toList
                    |> List.mapi (fun i item ->
                        if isNull (box item) then
                            FieldError.fail (sprintf "items[%d]" i) "must be an object"
                        else
                            Bin.parseAs<ItemIdKind> (sprintf "items[%d].itemId" i) item.ItemId
                            |> Result.map (fun id ->
                                {
                                    ItemId = id
                                    IfMatch =
                                        if item.IfMatch = 0UL then
                                            IfMatch.Absent
                                        else
                                            IfMatch.Version item.IfMatch
                                    Body =
                                        {
                                            Nonce = item.Nonce
                                            Aad = item.Aad
                                            Ciphertext = item.Ciphertext
                                        }
                                }))
                    |> List.sequenceResultM

                let! _ = distinct (sprintf "items[%d].itemId") (entries |> List.map (fun e -> e.ItemId))
                return entries
            }

/// What the Go raw client rejects in a server answer (docs/protocol.md §11.1). `Message` holds
/// its words.
[<RequireQualifiedAccess>]
type ResponseViolation =
    /// An echoed value differs from the request: "namespace mismatch", "key mismatch", …
    | Mismatch of what: string
    /// A field is not in the required format.
    | InvalidField of FieldError
    /// A flag that must be true is not: "must report revoked", "must report rejected".
    | MustReport of what: string
    /// A field holds a value the client does not accept.
    | Unexpected of field: string * expected: string

    /// The error text.
    member v.Message =
        match v with
        | Mismatch what -> what + " mismatch"
        | InvalidField e -> "response " + e.Message
        | MustReport what -> "response must report " + what
        | Unexpected(field, expected) -> sprintf "response %s must be %s" field expected

    override v.ToString() = v.Message

/// Response checks, one per endpoint, in the Go client's order (first failure wins).
module ResponseChecks =
    let private echo what (expected: string) (actual: string) =
        if String.Equals(expected, actual, StringComparison.Ordinal) then
            Ok()
        else
            Error(ResponseViolation.Mismatch what)

    let private valid<'K when 'K :> IBinaryKind> field (s: string) =
        Bin.parseAs<'K> field s |> Result.mapError ResponseViolation.InvalidField

    let private expect field (expected: string) (actual: string) =
        if actual = expected then
            Ok()
        else
            Error(ResponseViolation.Unexpected(field, "\"" + expected + "\""))

    /// Login: `kind` echo; `defaultNamespaceId` null or a valid namespace ID. Returns it.
    let login
        (requestKind: IdentityKind)
        (r: LoginResponse)
        : Result<NamespaceId option, ResponseViolation> =
        result {
            do! echo "login response kind" requestKind.Wire r.Kind

            if isNull r.DefaultNamespaceId then
                return None
            else
                let! ns = valid<NamespaceIdKind> "defaultNamespaceId" r.DefaultNamespaceId
                return Some ns
        }

    /// Refresh: `kind` echo.
    let refresh (requestKind: IdentityKind) (r: RefreshResponse) : Result<unit, ResponseViolation> =
        echo "refresh response kind" requestKind.Wire r.Kind

    /// Get default namespace: valid ID, kind `default`.
    let defaultNamespace (r: DefaultNamespaceResponse) : Result<NamespaceId, ResponseViolation> =
        result {
            let! ns = valid<NamespaceIdKind> "namespaceId" r.NamespaceId
            do! expect "kind" "default" r.Kind
            return ns
        }

    /// Ensure default namespace: valid ID, kind `default`, `created` ⇒ ID = proposed.
    let ensureDefaultNamespace
        (proposed: NamespaceId)
        (r: EnsureDefaultNamespaceResponse)
        : Result<NamespaceId, ResponseViolation> =
        result {
            let! ns = valid<NamespaceIdKind> "namespaceId" r.NamespaceId
            do! expect "kind" "default" r.Kind

            if r.Created then
                do! echo "namespace" proposed.Wire r.NamespaceId

            return ns
        }

    /// Create shared namespace: valid ID equal to the requested one, kind `shared`.
    let createSharedNamespace
        (requested: NamespaceId)
        (r: CreateSharedNamespaceResponse)
        : Result<unit, ResponseViolation> =
        result {
            let! _ = valid<NamespaceIdKind> "namespaceId" r.NamespaceId
            do! echo "namespace" requested.Wire r.NamespaceId
            do! expect "kind" "shared" r.Kind
        }

    /// Members, list invites, list join requests, items map: `namespaceId` = path namespace.
    let namespaceEcho
        (path: NamespaceId)
        (responseNamespaceId: string)
        : Result<unit, ResponseViolation> =
        echo "namespace" path.Wire responseNamespaceId

    /// Create invite: namespace and invite echo.
    let createInvite
        (ns: NamespaceId)
        (invite: InviteId)
        (r: CreateNamespaceInviteResponse)
        : Result<unit, ResponseViolation> =
        result {
            do! echo "namespace" ns.Wire r.NamespaceId
            do! echo "invite" invite.Wire r.InviteId
        }

    /// Revoke invite: both echoes, `revoked` true.
    let revokeInvite
        (ns: NamespaceId)
        (invite: InviteId)
        (r: RevokeNamespaceInviteResponse)
        : Result<unit, ResponseViolation> =
        result {
            do! echo "namespace" ns.Wire r.NamespaceId
            do! echo "invite" invite.Wire r.InviteId

            if not r.Revoked then
                return! Error(ResponseViolation.MustReport "revoked")
        }

    /// Submit join request: namespace echo; `inviteId` valid (may differ from the path);
    /// `joinRequestHash` valid; requester kind and key echo; status `pending`.
    let submitJoinRequest
        (ns: NamespaceId)
        (requestKind: IdentityKind)
        (requester: KeyId)
        (r: SubmitNamespaceJoinRequestResponse)
        : Result<InviteId * JoinRequestHash, ResponseViolation> =
        result {
            do! echo "namespace" ns.Wire r.NamespaceId
            let! invite = valid<InviteIdKind> "inviteId" r.InviteId
            let! hash = valid<JoinRequestHashKind> "joinRequestHash" r.JoinRequestHash
            do! echo "kind" requestKind.Wire r.RequesterKind
            do! echo "key" requester.Wire r.RequesterKeyId
            do! expect "status" "pending" r.Status
            return invite, hash
        }

    /// Approve: namespace, member key and hash echoes.
    let approveJoinRequest
        (ns: NamespaceId)
        (requester: KeyId)
        (hash: JoinRequestHash)
        (r: ApproveNamespaceJoinRequestResponse)
        : Result<unit, ResponseViolation> =
        result {
            do! echo "namespace" ns.Wire r.NamespaceId
            do! echo "key" requester.Wire r.MemberKeyId
            do! echo "hash" hash.Wire r.JoinRequestHash
        }

    /// Reject: the three echoes and `rejected` true.
    let rejectJoinRequest
        (ns: NamespaceId)
        (requester: KeyId)
        (hash: JoinRequestHash)
        (r: RejectNamespaceJoinRequestResponse)
        : Result<unit, ResponseViolation> =
        result {
            do! echo "namespace" ns.Wire r.NamespaceId
            do! echo "key" requester.Wire r.RequesterKeyId
            do! echo "hash" hash.Wire r.JoinRequestHash

            if not r.Rejected then
                return! Error(ResponseViolation.MustReport "rejected")
        }

    /// Wrapped DEK: namespace and key echoes.
    let wrappedDek
        (ns: NamespaceId)
        (keyId: KeyId)
        (r: GetWrappedDekResponse)
        : Result<unit, ResponseViolation> =
        result {
            do! echo "namespace" ns.Wire r.NamespaceId
            do! echo "key" keyId.Wire r.KeyId
        }

    /// Get item: namespace and item echoes.
    let getItem
        (ns: NamespaceId)
        (item: ItemId)
        (r: GetItemResponse)
        : Result<unit, ResponseViolation> =
        result {
            do! echo "namespace" ns.Wire r.NamespaceId
            do! echo "item" item.Wire r.ItemId
        }

    /// Batch GET (extension): namespace echoes; every requested ID answered exactly once, as an
    /// item, missing or omitted; at least one answered (items or missing), so asking again for the
    /// omitted ones always progresses.
    let batchGet
        (ns: NamespaceId)
        (requested: ItemId list)
        (r: BatchGetItemsResponse)
        : Result<unit, ResponseViolation> =
        let orEmpty (a: 'a[]) = if isNull a then [||] else a
        let wanted = Collections.Generic.HashSet<string>(requested |> Seq.map (fun i -> i.Wire), StringComparer.Ordinal)
        let items = orEmpty r.Items
        let answered = Array.concat [ items |> Array.map (fun i -> if isNull (box i) then null else i.ItemId); orEmpty r.Missing; orEmpty r.Omitted ]

        result {
            do! echo "namespace" ns.Wire r.NamespaceId

            for item in items do
                if isNull (box item) then
                    return! Error(ResponseViolation.Unexpected("items", "objects"))

                do! echo "namespace" ns.Wire item.NamespaceId

            for id in answered do
                if isNull id || not (wanted.Remove id) then
                    return! Error(ResponseViolation.Mismatch "item")

            if wanted.Count > 0 then
                return! Error(ResponseViolation.Unexpected("items", "an answer for every requested item"))

            if items.Length = 0 && (orEmpty r.Missing).Length = 0 then
                return! Error(ResponseViolation.Unexpected("items", "at least one answered item"))
        }

    /// Batch PUT (extension): namespace echo; one result per sent item, in order, with its item ID;
    /// an accepted item's version exactly `ifMatch` + 1 (1 for `ifMatch` 0); any other status an
    /// error status.
    let batchPut
        (ns: NamespaceId)
        (sent: (ItemId * uint64) list)
        (r: BatchPutItemsResponse)
        : Result<unit, ResponseViolation> =
        result {
            do! echo "namespace" ns.Wire r.NamespaceId

            if isNull r.Results || r.Results.Length <> List.length sent then
                return! Error(ResponseViolation.Unexpected("results", sprintf "%d entries" (List.length sent)))

            for (id, ifMatch), answer in List.zip sent (List.ofArray r.Results) do
                if isNull (box answer) then
                    return! Error(ResponseViolation.Unexpected("results", "objects"))

                do! echo "item" id.Wire answer.ItemId

                if answer.Status = 200 then
                    if answer.Version <> ifMatch + 1UL then
                        return! Error(ResponseViolation.Mismatch "version")
                elif answer.Status < 400 || answer.Status > 599 then
                    return! Error(ResponseViolation.Unexpected("status", "200 or an error status"))
        }

    /// Put item: echoes; `version` exactly 1 without If-Match, N+1 with `If-Match: "N"`.
    let putItem
        (ns: NamespaceId)
        (item: ItemId)
        (ifMatch: IfMatch)
        (r: PutItemResponse)
        : Result<uint64, ResponseViolation> =
        result {
            do! echo "namespace" ns.Wire r.NamespaceId
            do! echo "item" item.Wire r.ItemId

            let expected =
                match ifMatch with
                | IfMatch.Absent -> 1UL
                | IfMatch.Version n -> n + 1UL

            if r.Version <> expected then
                return! Error(ResponseViolation.Mismatch "version")
            else
                return r.Version
        }
