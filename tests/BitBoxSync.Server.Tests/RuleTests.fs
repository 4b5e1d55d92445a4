/// Every server rule of docs/protocol.md §10 broken on purpose: the documented 4xx, and no state
/// change (a full dump of the durable rows before and after is identical). Plus the
/// authorization matrix over every namespace-scoped endpoint.
module BitBoxSync.Server.Tests.RuleTests

open System
open System.Net.Http
open System.Text
open System.Text.Json.Nodes
open Expecto
open BitBoxSync
open BitBoxSync.Protocol
open BitBoxSync.Protocol.Wire
open BitBoxSync.Server.Tests.Harness
open BitBoxSync.Server.Tests.Flows

/// The world the rule cases break rules in.
type Fixture =
    {
        Server: TestServer
        Alice: Session
        Bob: Session
        Carol: Session
        Dave: Session
        Erin: Session
        Shared: Ns
        Default: Ns
        Invite: Invite
        Revoked: Invite
        ErinsHash: string
        Http: HttpClient
        /// The dump a case's outcome is compared with (a case may move it past its own set-up).
        mutable Baseline: string
    }

    /// Marks the end of a case's set-up: only what follows must leave the state unchanged.
    member f.SetUpDone() = f.Baseline <- f.Server.Dump()

let fixtureOf backend =
    let server = start backend
    let alice = login server "alice"
    let bob = login server "bob"
    let carol = login server "carol"
    let dave = login server "dave"
    let erin = login server "erin"
    let defaultNs, _ = ensureDefault alice
    let shared = createShared alice
    let invite = createInvite alice shared
    let revoked = createInvite alice shared

    alice.Client.RevokeNamespaceInviteAsync(alice.Token, shared.Id.Wire, revoked.InviteId.Wire)
    |> await
    |> ignore

    approve alice invite dave (submit dave invite).JoinRequestHash |> ignore
    let erins = submit erin invite
    put alice shared "k" None "v1" |> ignore

    {
        Server = server
        Alice = alice
        Bob = bob
        Carol = carol
        Dave = dave
        Erin = erin
        Shared = shared
        Default = defaultNs
        Invite = invite
        Revoked = revoked
        ErinsHash = erins.JoinRequestHash
        Http = server.RawHttp()
        Baseline = ""
    }

/// Sends a raw request; returns the status.
let rawStatus
    (f: Fixture)
    (methodName: string)
    (path: string)
    (token: string)
    (body: string)
    (headers: (string * string) list)
    =
    use request = new HttpRequestMessage(HttpMethod methodName, path)

    if not (isNull body) then
        request.Content <- new StringContent(body, Encoding.UTF8, "application/json")

    if not (isNull token) then
        request.Headers.TryAddWithoutValidation("Authorization", "Bearer " + token)
        |> ignore

    for name, value in headers do
        request.Headers.TryAddWithoutValidation(name, value) |> ignore

    use response = f.Http.SendAsync request |> await
    let text = response.Content.ReadAsStringAsync() |> await

    if int response.StatusCode >= 400 then
        Expect.stringStarts text "{\"error\":\"" "every refusal has a JSON error body"

    int response.StatusCode

let private json (dto: 'T) =
    JsonNode.Parse(Json.serialize dto).AsObject()

let private unix (f: Fixture) (seconds: int64) =
    f.Server.Clock.Now.ToUnixTimeSeconds() + seconds

/// A rule case: what to break and the status it must get.
type Case = { Name: string; Status: int; Run: Fixture -> int }

let private case name status run =
    { Name = name; Status = status; Run = run }

let private withClock (f: Fixture) (by: TimeSpan) (run: unit -> int) =
    f.Server.Clock.Advance by

    try
        run ()
    finally
        f.Server.Clock.Advance(-by)

let private putPath (ns: Ns) (key: string) = Paths.item ns.Id (itemId ns key)

let private sealedJson (ns: Ns) (key: string) (version: uint64) =
    json (sealFor ns (itemId ns key) version "x")

let private loginWith (f: Fixture) (change: LoginRequest -> LoginRequest) =
    statusOf (fun () ->
        f.Alice.Client.LoginAsync(change (loginRequest f.Alice.Client f.Alice.Identity)))

let private submitWith
    (f: Fixture)
    (requester: Session)
    (invite: Invite)
    (expiresIn: int64)
    (change: SubmitNamespaceJoinRequestRequest -> SubmitNamespaceJoinRequestRequest)
    =
    let request = change (joinRequest requester invite (unix f expiresIn))

    statusOf (fun () ->
        requester.Client.SubmitNamespaceJoinRequestAsync(
            requester.Token,
            invite.Namespace.Id.Wire,
            invite.InviteId.Wire,
            request
        ))

let private createInviteWith
    (f: Fixture)
    (ns: Ns)
    (expiresIn: int64)
    (maxAccepted: int)
    (change: CreateNamespaceInviteRequest -> CreateNamespaceInviteRequest)
    =
    let request, _ = createInviteRequest f.Alice ns (unix f expiresIn) maxAccepted

    statusOf (fun () ->
        f.Alice.Client.CreateNamespaceInviteAsync(f.Alice.Token, ns.Id.Wire, change request))

/// The login request alice would send with another wrap key, correctly signed by her auth key.
let private loginWithOtherWrapKey (f: Fixture) =
    let material = Protocol.DummyKeystore.Derive "alice"
    let other = Protocol.DummyKeystore.Derive "someone-else"
    let challenge = f.Alice.Client.ChallengeAsync "login" |> await

    let c =
        Bin.parse<ChallengeKind> challenge.Challenge
        |> Result.defaultWith (fun _ -> failwith "challenge")

    let intent =
        Intents.login
            c
            IdentityKind.Keystore
            material.KeyId
            material.AuthPublicKey
            other.WrapPublicKey

    use key = Ed25519.importSeed (ReadOnlySpan material.AuthSeed)

    let request: LoginRequest =
        {
            Kind = "keystore"
            KeyId = material.KeyId.Wire
            AuthPublicKey = material.AuthPublicKey.Wire
            WrapPublicKey = other.WrapPublicKey.Wire
            Challenge = challenge.Challenge
            IntentSignature = (Ed25519.sign key (ReadOnlySpan intent)).Wire
            Attestation = null
        }

    statusOf (fun () -> f.Alice.Client.LoginAsync request)

let private cases: Case list =
    [
        // ---- transport and encoding
        case "malformed JSON" 400 (fun f ->
            rawStatus f "PUT" (putPath f.Shared "k") f.Alice.Token "{" [ "If-Match", "\"1\"" ])
        case "JSON that is not an object" 400 (fun f ->
            rawStatus f "PUT" (putPath f.Shared "k") f.Alice.Token "[1]" [])
        case "uppercase namespace ID in the path" 400 (fun f ->
            rawStatus
                f
                "GET"
                ($"/v1/namespaces/{f.Shared.Id.Wire.ToUpperInvariant()}/items")
                f.Alice.Token
                null
                [])
        case "item ID of the wrong length in the path" 400 (fun f ->
            rawStatus
                f
                "PUT"
                ($"/v1/kv/{f.Shared.Id.Wire}/abcd")
                f.Alice.Token
                (Json.serialize (sealFor f.Shared (itemId f.Shared "z") 1UL "x"))
                [])
        case "nonce of 23 bytes" 400 (fun f ->
            let body = sealedJson f.Shared "n" 1UL
            body["nonce"] <- JsonValue.Create(Convert.ToBase64String(Array.zeroCreate 23))
            rawStatus f "PUT" (putPath f.Shared "n") f.Alice.Token (body.ToJsonString()) [])
        case "non-canonical base64 ciphertext" 400 (fun f ->
            let body = sealedJson f.Shared "n" 1UL
            body["ciphertext"] <- JsonValue.Create("AAAAAAAAAAAAAAAAAAAAAB==")
            rawStatus f "PUT" (putPath f.Shared "n") f.Alice.Token (body.ToJsonString()) [])
        case "ciphertext over 64 KiB" 413 (fun f ->
            let body = sealedJson f.Shared "n" 1UL
            body["ciphertext"] <- JsonValue.Create(Convert.ToBase64String(Array.zeroCreate 65537))
            rawStatus f "PUT" (putPath f.Shared "n") f.Alice.Token (body.ToJsonString()) [])
        case "request body over 128 KiB" 413 (fun f ->
            rawStatus f "PUT" (putPath f.Shared "n") f.Alice.Token (String('x', 140_000)) [])
        case "AAD bound to another version" 400 (fun f ->
            let body = sealedJson f.Shared "n" 1UL
            body["aad"] <- JsonValue.Create((Aad.build f.Shared.Id (itemId f.Shared "n") 2UL).Wire)
            rawStatus f "PUT" (putPath f.Shared "n") f.Alice.Token (body.ToJsonString()) [])
        case "AAD bound to another item" 400 (fun f ->
            let body = sealedJson f.Shared "n" 1UL

            body["aad"] <-
                JsonValue.Create((Aad.build f.Shared.Id (itemId f.Shared "other") 1UL).Wire)

            rawStatus f "PUT" (putPath f.Shared "n") f.Alice.Token (body.ToJsonString()) [])
        case "If-Match with a leading zero" 400 (fun f ->
            rawStatus
                f
                "PUT"
                (putPath f.Shared "k")
                f.Alice.Token
                ((sealedJson f.Shared "k" 2UL).ToJsonString())
                [ "If-Match", "\"01\"" ])
        case "weak If-Match" 400 (fun f ->
            rawStatus
                f
                "PUT"
                (putPath f.Shared "k")
                f.Alice.Token
                ((sealedJson f.Shared "k" 2UL).ToJsonString())
                [ "If-Match", "W/\"1\"" ])
        case "unknown challenge purpose" 400 (fun f ->
            rawStatus f "POST" Paths.Challenge null """{"purpose":"admin","kind":"keystore"}""" [])
        case "sensitive-action challenge without its fields hash" 400 (fun f ->
            rawStatus
                f
                "POST"
                Paths.Challenge
                null
                """{"purpose":"sensitive-action","kind":"keystore","action":"revoke-all-tokens"}"""
                [])
        case "watch with 1001 known heads" 400 (fun f ->
            let heads = JsonObject()

            for i in 0..1000 do
                heads[i.ToString("x32")] <- JsonValue.Create 1

            rawStatus
                f
                "POST"
                Paths.Watch
                f.Alice.Token
                ((JsonObject(dict [ "knownHeads", (heads :> JsonNode) ])).ToJsonString())
                [])

        // ---- authentication
        case "no bearer token" 401 (fun f -> rawStatus f "GET" Paths.Mine null null [])
        case "unknown bearer token" 401 (fun f ->
            rawStatus f "GET" Paths.Mine "not-a-token" null [])
        case "login: a used challenge" 403 (fun f ->
            let request = loginRequest f.Alice.Client f.Alice.Identity
            // Outside the comparison: the first use succeeds (and issues a token).
            f.Alice.Client.LoginAsync request |> await |> ignore
            f.SetUpDone()
            statusOf (fun () -> f.Alice.Client.LoginAsync request))
        case "login: a refresh challenge" 403 (fun f ->
            loginWith f (fun r ->
                let c = f.Alice.Client.ChallengeAsync "refresh" |> await

                let signature: byte[] =
                    f.Alice.Identity
                        .SignLoginIntentAsync(Convert.FromBase64String c.Challenge)
                        .AsTask()
                    |> await

                { r with
                    Challenge = c.Challenge
                    IntentSignature = Convert.ToHexStringLower signature
                }))
        case "login: key ID is not SHA-256 of the auth key" 403 (fun f ->
            loginWith f (fun r -> { r with KeyId = f.Bob.KeyId }))
        case "login: bad signature" 403 (fun f ->
            loginWith f (fun r ->
                { r with
                    IntentSignature =
                        (if r.IntentSignature[0] = 'a' then "b" else "a")
                        + r.IntentSignature.Substring 1
                }))
        case "login: expired challenge" 403 (fun f ->
            let request = loginRequest f.Alice.Client f.Alice.Identity

            withClock f (TimeSpan.FromMinutes 6.0) (fun () ->
                statusOf (fun () -> f.Alice.Client.LoginAsync request)))
        case "login: another wrap key for a registered key" 409 loginWithOtherWrapKey
        case "refresh: key ID of another identity" 403 (fun f ->
            let c = f.Bob.Client.ChallengeAsync "refresh" |> await

            let signature: byte[] =
                f.Bob.Identity
                    .SignRefreshIntentAsync(Convert.FromBase64String c.Challenge)
                    .AsTask()
                |> await

            statusOf (fun () ->
                f.Alice.Client.RefreshAsync(
                    f.Alice.Token,
                    {
                        Kind = "keystore"
                        KeyId = f.Bob.KeyId
                        Challenge = c.Challenge
                        IntentSignature = Convert.ToHexStringLower signature
                        Attestation = null
                    }
                )))
        case "revoke all tokens: a challenge bound to another action" 403 (fun f ->
            let c =
                f.Alice.Client.SensitiveActionChallengeAsync(
                    "create-namespace-invite",
                    (ActionFields.hash ActionFields.revokeAllTokens).Wire
                )
                |> await

            let signature: byte[] =
                f.Alice.Identity
                    .SignRevokeAllTokensIntentAsync(Convert.FromBase64String c.Challenge)
                    .AsTask()
                |> await

            statusOf (fun () ->
                f.Alice.Client.RevokeAllTokensAsync(
                    f.Alice.Token,
                    {
                        Kind = "keystore"
                        KeyId = f.Alice.KeyId
                        Challenge = c.Challenge
                        IntentSignature = Convert.ToHexStringLower signature
                    }
                )
                |> fun t ->
                    t.ContinueWith(fun (t: Threading.Tasks.Task) ->
                        t.GetAwaiter().GetResult()
                        0)))
        case "create invite: body differs from the fields the challenge was bound to" 403 (fun f ->
            createInviteWith f f.Shared 600L 3 (fun r -> { r with MaxAccepted = 4L }))

        // ---- namespaces and membership
        case "members of a namespace the caller is not in" 403 (fun f ->
            statusOf (fun () -> f.Bob.Client.GetMembersAsync(f.Bob.Token, f.Shared.Id.Wire)))
        case "another member's wrapped DEK" 403 (fun f ->
            statusOf (fun () ->
                f.Alice.Client.GetWrappedDekAsync(f.Alice.Token, f.Shared.Id.Wire, f.Dave.KeyId)))
        case "default namespace with a taken ID" 409 (fun f ->
            statusOf (fun () ->
                f.Bob.Client.EnsureDefaultNamespaceAsync(
                    f.Bob.Token,
                    {
                        ProposedNamespaceId = f.Shared.Id.Wire
                        WrappedDek = wrapFor f.Bob.Identity f.Shared
                    }
                )))
        case "shared namespace with a taken ID" 409 (fun f ->
            statusOf (fun () ->
                f.Bob.Client.CreateSharedNamespaceAsync(
                    f.Bob.Token,
                    {
                        NamespaceId = f.Shared.Id.Wire
                        WrappedDek = wrapFor f.Bob.Identity f.Shared
                    }
                )))
        case "wrapped DEK of an unknown format version" 400 (fun f ->
            let ns = newNamespace ()
            let wrapped = Convert.FromBase64String(wrapFor f.Bob.Identity ns)
            wrapped[0] <- 2uy

            statusOf (fun () ->
                f.Bob.Client.CreateSharedNamespaceAsync(
                    f.Bob.Token,
                    {
                        NamespaceId = ns.Id.Wire
                        WrappedDek = Convert.ToBase64String wrapped
                    }
                )))

        // ---- items
        case "create over an existing item" 412 (fun f ->
            statusOf (fun () ->
                Threading.Tasks.Task.FromResult(put f.Alice f.Shared "k" None "again")))
        case "update from a stale version" 412 (fun f ->
            statusOf (fun () ->
                Threading.Tasks.Task.FromResult(put f.Alice f.Shared "k" (Some 5UL) "stale")))
        case "update of a missing item" 412 (fun f ->
            statusOf (fun () ->
                Threading.Tasks.Task.FromResult(put f.Alice f.Shared "missing" (Some 1UL) "x")))
        case "write by a non-member" 403 (fun f ->
            rawStatus
                f
                "PUT"
                (putPath f.Shared "b")
                f.Bob.Token
                ((sealedJson f.Shared "b" 1UL).ToJsonString())
                [])

        // ---- invites
        case "invite expiring after more than an hour" 400 (fun f ->
            createInviteWith f f.Shared 3800L 3 id)
        case "invite already expired" 400 (fun f -> createInviteWith f f.Shared -10L 3 id)
        case "invite for a default namespace" 403 (fun f -> createInviteWith f f.Default 600L 3 id)
        case "invite with an accepted limit of 11" 400 (fun f ->
            let request, _ = createInviteRequest f.Alice f.Shared (unix f 600L) 10
            let body = json { request with MaxAccepted = 11L }
            rawStatus f "POST" (Paths.invites f.Shared.Id) f.Alice.Token (body.ToJsonString()) [])
        case "invite in the current layout with a maxPending added after signing" 403 (fun f ->
            let request, _ = createInviteRequest f.Alice f.Shared (unix f 600L) 3
            let body = json request
            body["maxPending"] <- JsonValue.Create 20
            rawStatus f "POST" (Paths.invites f.Shared.Id) f.Alice.Token (body.ToJsonString()) [])
        case "legacy invite with a bad signature" 403 (fun f ->
            let body, _ =
                legacyCreateInviteBody f.Alice "alice" f.Shared (unix f 600L) 20 3 (fun r ->
                    { r with
                        IntentSignature = String('0', 128)
                    })

            rawStatus f "POST" (Paths.invites f.Shared.Id) f.Alice.Token body [])
        case "legacy invite whose maxPending differs from the signed one" 403 (fun f ->
            let body, _ =
                legacyCreateInviteBody f.Alice "alice" f.Shared (unix f 600L) 20 3 (fun r ->
                    { r with MaxPending = 19L })

            rawStatus f "POST" (Paths.invites f.Shared.Id) f.Alice.Token body [])
        case "legacy invite with maxPending 21" 400 (fun f ->
            let body, _ = legacyCreateInviteBody f.Alice "alice" f.Shared (unix f 600L) 21 3 id
            rawStatus f "POST" (Paths.invites f.Shared.Id) f.Alice.Token body [])
        case "legacy invite with maxPending 0" 400 (fun f ->
            let body, _ = legacyCreateInviteBody f.Alice "alice" f.Shared (unix f 600L) 0 3 id
            rawStatus f "POST" (Paths.invites f.Shared.Id) f.Alice.Token body [])
        case "legacy invite with a string maxPending" 400 (fun f ->
            let body, _ = legacyCreateInviteBody f.Alice "alice" f.Shared (unix f 600L) 20 3 id
            let node = JsonNode.Parse(body).AsObject()
            node["maxPending"] <- JsonValue.Create "20"
            rawStatus f "POST" (Paths.invites f.Shared.Id) f.Alice.Token (node.ToJsonString()) [])
        case "invite ID already taken" 409 (fun f ->
            let request, _ =
                createInviteRequestFor f.Alice f.Shared f.Invite.InviteId (unix f 600L) 3

            statusOf (fun () ->
                f.Alice.Client.CreateNamespaceInviteAsync(
                    f.Alice.Token,
                    f.Shared.Id.Wire,
                    request
                )))
        case "a sixth active invite" 409 (fun f ->
            let ns = createShared f.Alice

            for _ in 1..5 do
                createInvite f.Alice ns |> ignore

            f.SetUpDone()
            createInviteWith f ns 600L 3 id)

        // ---- join requests
        case "join: wrong invite server secret" 403 (fun f ->
            submitWith f f.Carol f.Invite 300L (fun r ->
                { r with
                    InviteServerSecret = (bin<InviteServerSecretKind>(random 32)).Wire
                }))
        case "join: another server's origin" 400 (fun f ->
            let other = { f.Invite with Secret = f.Invite.Secret }
            let request = joinRequest f.Carol other (unix f 300L)

            let signature: byte[] =
                f.Carol.Identity
                    .SignNamespaceJoinRequestIntentAsync(
                        Bin.toArray f.Shared.Id,
                        Bin.toArray f.Invite.InviteId,
                        "https://other.test",
                        unix f 300L
                    )
                    .AsTask()
                |> await

            let changed =
                { request with
                    JoinRequest =
                        { request.JoinRequest with
                            ServerOrigin = "https://other.test"
                            Signature = Convert.ToHexStringLower signature
                        }
                }

            statusOf (fun () ->
                f.Carol.Client.SubmitNamespaceJoinRequestAsync(
                    f.Carol.Token,
                    f.Shared.Id.Wire,
                    f.Invite.InviteId.Wire,
                    changed
                )))
        case "join: request living longer than 10 minutes" 400 (fun f ->
            submitWith f f.Carol f.Invite 900L id)
        case "join: expired invite" 410 (fun f ->
            let request = joinRequest f.Carol f.Invite (unix f 300L)

            withClock f (TimeSpan.FromMinutes 11.0) (fun () ->
                statusOf (fun () ->
                    f.Carol.Client.SubmitNamespaceJoinRequestAsync(
                        f.Carol.Token,
                        f.Shared.Id.Wire,
                        f.Invite.InviteId.Wire,
                        request
                    ))))
        case "join: revoked invite" 410 (fun f -> submitWith f f.Carol f.Revoked 300L id)
        case "join: request of another identity" 403 (fun f ->
            let request = joinRequest f.Carol f.Invite (unix f 300L)

            statusOf (fun () ->
                f.Bob.Client.SubmitNamespaceJoinRequestAsync(
                    f.Bob.Token,
                    f.Shared.Id.Wire,
                    f.Invite.InviteId.Wire,
                    request
                )))
        case "join: already a member" 409 (fun f -> submitWith f f.Dave f.Invite 300L id)
        case "join: body IDs differ from the path" 400 (fun f ->
            let request = joinRequest f.Carol f.Invite (unix f 300L)

            statusOf (fun () ->
                f.Carol.Client.SubmitNamespaceJoinRequestAsync(
                    f.Carol.Token,
                    f.Shared.Id.Wire,
                    f.Revoked.InviteId.Wire,
                    request
                )))
        case "join: unknown invite" 404 (fun f ->
            let ghost = { f.Invite with InviteId = bin<InviteIdKind>(random 16) }
            submitWith f f.Carol ghost 300L id)
        case "join: bad signature" 403 (fun f ->
            submitWith f f.Carol f.Invite 300L (fun r ->
                { r with
                    JoinRequest = { r.JoinRequest with Signature = String('0', 128) }
                }))

        // ---- approve, reject, revoke
        case "approve: wrong invite server secret" 403 (fun f ->
            statusOf (fun () ->
                f.Alice.Client.ApproveNamespaceJoinRequestAsync(
                    f.Alice.Token,
                    f.Shared.Id.Wire,
                    f.Erin.KeyId,
                    f.ErinsHash,
                    {
                        InviteServerSecret = f.Revoked.ServerSecret.Wire
                        WrappedDek = wrapFor f.Erin.Identity f.Shared
                    }
                )))
        case "approve: unknown request" 404 (fun f ->
            statusOf (fun () ->
                f.Alice.Client.ApproveNamespaceJoinRequestAsync(
                    f.Alice.Token,
                    f.Shared.Id.Wire,
                    f.Erin.KeyId,
                    String('0', 64),
                    {
                        InviteServerSecret = f.Invite.ServerSecret.Wire
                        WrappedDek = wrapFor f.Erin.Identity f.Shared
                    }
                )))
        case "approve: by a non-member" 403 (fun f ->
            statusOf (fun () ->
                f.Bob.Client.ApproveNamespaceJoinRequestAsync(
                    f.Bob.Token,
                    f.Shared.Id.Wire,
                    f.Erin.KeyId,
                    f.ErinsHash,
                    {
                        InviteServerSecret = f.Invite.ServerSecret.Wire
                        WrappedDek = wrapFor f.Erin.Identity f.Shared
                    }
                )))
        case "approve: wrapped DEK of 96 bytes" 400 (fun f ->
            let text =
                sprintf
                    """{"inviteServerSecret":"%s","wrappedDek":"%s"}"""
                    f.Invite.ServerSecret.Wire
                    (Convert.ToBase64String(Array.zeroCreate 96))

            rawStatus
                f
                "PUT"
                (Paths.approveJoinRequest
                    f.Shared.Id
                    (bin<KeyIdKind>(Convert.FromHexString f.Erin.KeyId))
                    (bin<JoinRequestHashKind>(Convert.FromHexString f.ErinsHash)))
                f.Alice.Token
                text
                [])
        case "reject: by a non-member" 403 (fun f ->
            statusOf (fun () ->
                f.Bob.Client.RejectNamespaceJoinRequestAsync(
                    f.Bob.Token,
                    f.Shared.Id.Wire,
                    f.Erin.KeyId,
                    f.ErinsHash
                )))
        case "revoke invite: by a non-member" 403 (fun f ->
            statusOf (fun () ->
                f.Bob.Client.RevokeNamespaceInviteAsync(
                    f.Bob.Token,
                    f.Shared.Id.Wire,
                    f.Invite.InviteId.Wire
                )))
        case "revoke invite: unknown invite" 404 (fun f ->
            statusOf (fun () ->
                f.Alice.Client.RevokeNamespaceInviteAsync(
                    f.Alice.Token,
                    f.Shared.Id.Wire,
                    (bin<InviteIdKind>(random 16)).Wire
                )))
    ]

/// The namespace-scoped endpoints, each called with a token.
let private scoped (f: Fixture) : (string * (string -> int)) list =
    let ns = f.Shared.Id.Wire

    let call g =
        fun token -> statusOf (fun () -> g token)

    [
        "members", call (fun t -> f.Alice.Client.GetMembersAsync(t, ns))
        "create invite",
        (fun t ->
            let request, _ = createInviteRequest f.Alice f.Shared (unix f 600L) 3
            statusOf (fun () -> f.Alice.Client.CreateNamespaceInviteAsync(t, ns, request)))
        "list invites", call (fun t -> f.Alice.Client.ListNamespaceInvitesAsync(t, ns))
        "revoke invite",
        call (fun t -> f.Alice.Client.RevokeNamespaceInviteAsync(t, ns, f.Invite.InviteId.Wire))
        "list join requests", call (fun t -> f.Alice.Client.ListNamespaceJoinRequestsAsync(t, ns))
        "approve",
        call (fun t ->
            f.Alice.Client.ApproveNamespaceJoinRequestAsync(
                t,
                ns,
                f.Erin.KeyId,
                f.ErinsHash,
                {
                    InviteServerSecret = f.Invite.ServerSecret.Wire
                    WrappedDek = wrapFor f.Erin.Identity f.Shared
                }
            ))
        "reject",
        call (fun t ->
            f.Alice.Client.RejectNamespaceJoinRequestAsync(t, ns, f.Erin.KeyId, f.ErinsHash))
        "wrapped DEK", call (fun t -> f.Alice.Client.GetWrappedDekAsync(t, ns, f.Alice.KeyId))
        "items map", call (fun t -> f.Alice.Client.GetNamespaceItemsAsync(t, ns))
        "get item", call (fun t -> f.Alice.Client.GetItemAsync(t, ns, (itemId f.Shared "k").Wire))
        "put item",
        call (fun t ->
            let item = itemId f.Shared "k"

            f.Alice.Client.PutItemAsync(
                t,
                ns,
                item.Wire,
                sealFor f.Shared item 2UL "x",
                Nullable 1UL
            ))
        "batch get", call (fun t -> f.Alice.Client.GetItemsAsync(t, ns, [| (itemId f.Shared "k").Wire |]))
        "batch put",
        call (fun t ->
            let item = itemId f.Shared "k"
            let body = sealFor f.Shared item 2UL "x"

            f.Alice.Client.PutItemsAsync(
                t,
                ns,
                [|
                    {
                        ItemId = item.Wire
                        IfMatch = 1UL
                        Nonce = body.Nonce
                        Aad = body.Aad
                        Ciphertext = body.Ciphertext
                    }
                |]
            ))
    ]

let private matrix (fixture: Lazy<Fixture>) =
    let principals: (string * (Fixture -> string) * int * TimeSpan) list =
        [
            "a non-member", (fun f -> f.Bob.Token), 403, TimeSpan.Zero
            "an expired token", (fun f -> f.Alice.Token), 401, TimeSpan.FromDays 31.0
            "a revoked token",
            (fun f ->
                let frank = login f.Server "frank"
                EndpointTests.revokeAll frank
                frank.Token),
            401,
            TimeSpan.Zero
            "a token this server never issued",
            (fun _ -> Base64Url.encode (random 32)),
            401,
            TimeSpan.Zero
        ]

    [
        for who, tokenOf, expected, age in principals do
            test who {
                let f = fixture.Force()
                let token = tokenOf f

                let failures =
                    [
                        for endpoint, call in scoped f do
                            let before = f.Server.Dump()
                            let status = withClock f age (fun () -> call token)
                            let changed = f.Server.Dump() <> before

                            if status <> expected || changed then
                                sprintf
                                    "%s: status %d (expected %d)%s"
                                    endpoint
                                    status
                                    expected
                                    (if changed then ", state changed" else "")
                    ]

                Expect.isEmpty failures "every namespace-scoped endpoint refuses, changing nothing"
            }
    ]

/// Older Go clients (the create-invite layout with `maxPending`) create invites; the limit is
/// stored, echoed, listed and enforced; current-layout invites stay without it.
let private legacyInvites backend =
    test $"an invite in the legacy layout is accepted, listed with maxPending and its pending limit enforced ({backend})" {
        use server = start backend
        let alice = login server "alice"
        let bob = login server "bob"
        let carol = login server "carol"
        let shared = createShared alice
        let current = createInvite alice shared
        use http = server.RawHttp()
        let expiresAt = server.Clock.Now.ToUnixTimeSeconds() + 600L
        let body, invite = legacyCreateInviteBody alice "alice" shared expiresAt 1 3 id
        use request = new HttpRequestMessage(HttpMethod.Post, Paths.invites shared.Id)
        request.Content <- new StringContent(body, Encoding.UTF8, "application/json")
        request.Headers.TryAddWithoutValidation("Authorization", "Bearer " + alice.Token) |> ignore
        use response = http.SendAsync request |> await
        let answer = response.Content.ReadAsStringAsync() |> await
        Expect.equal (int response.StatusCode) 200 $"accepted: {answer}"
        let created = JsonNode.Parse(answer).AsObject()
        Expect.equal (created["maxPending"].GetValue<int64>()) 1L "maxPending echoed"
        Expect.equal (created["maxAccepted"].GetValue<int64>()) 3L "maxAccepted echoed"
        Expect.equal (created["inviteId"].GetValue<string>()) invite.InviteId.Wire "invite echoed"

        let listed =
            alice.Client.ListNamespaceInvitesAsync(alice.Token, shared.Id.Wire) |> await

        let byId id =
            listed.Invites |> Array.find (fun i -> i.InviteId = id)

        Expect.equal (byId invite.InviteId.Wire).MaxPending (Nullable 1L) "listed with maxPending"
        Expect.isFalse (byId current.InviteId.Wire).MaxPending.HasValue "current layout: none"

        submit bob invite |> ignore
        let before = server.Dump()

        let refused =
            statusOf (fun () ->
                carol.Client.SubmitNamespaceJoinRequestAsync(
                    carol.Token,
                    shared.Id.Wire,
                    invite.InviteId.Wire,
                    joinRequest carol invite (expiresAt - 60L)
                ))

        Expect.equal refused 409 "the signed pending limit of 1 is enforced"
        Expect.equal (server.Dump()) before "no state change"
        submit carol current |> ignore
    }

/// The rate limiter: a burst of logins from one address and of writes with one token is answered
/// 429 with Retry-After and a JSON error; a refused write changes nothing; reads go on.
let private rateLimits backend =
    test $"rate limits: bursts are refused with 429 and Retry-After, state unchanged, reads unaffected ({backend})" {
        let db = Database.Create backend
        let clock = ManualClock DateTimeOffset.UtcNow
        let o = options db clock (TimeSpan.FromSeconds 2.0)
        o.AnonymousRequestsPerMinute <- 10
        o.WritesPerMinutePerToken <- 5
        use server = new TestServer(db, clock, BitBoxSync.Server.BitBoxSyncServer.StartAsync(o) |> await)
        use http = server.RawHttp()

        let send (request: HttpRequestMessage) =
            use response = http.Send request
            int response.StatusCode, response.Headers.RetryAfter, response.Content.ReadAsStringAsync().Result

        let alice = login server "alice" // 2 anonymous requests (challenge, login)
        let ns, _ = ensureDefault alice // 1 write

        let challenges =
            [
                for _ in 1..20 ->
                    send (new HttpRequestMessage(HttpMethod.Post, "/v1/auth/challenge", Content = new StringContent("""{"purpose":"login","kind":"keystore"}""", Text.Encoding.UTF8, "application/json")))
            ]

        let accepted = challenges |> List.filter (fun (s, _, _) -> s = 200) |> List.length
        Expect.equal accepted 8 "10 per minute per address: 2 used by the login, 8 more accepted"

        for status, retryAfter, body in challenges |> List.filter (fun (s, _, _) -> s <> 200) do
            Expect.equal status 429 "the rest are rate limited"
            Expect.isTrue (not (isNull retryAfter) && retryAfter.Delta.HasValue && retryAfter.Delta.Value > TimeSpan.Zero) "with Retry-After"
            Expect.equal body """{"error":"rate limited"}""" "and a JSON error"

        for i in 1..4 do
            put alice ns $"k{i}" None "v" |> ignore // writes 2 to 5

        let before = server.Dump()
        let status = statusOf (fun () -> Threading.Tasks.Task.FromResult(put alice ns "k5" None "v"))
        Expect.equal status 429 "the sixth write in a minute"
        Expect.equal (server.Dump()) before "a refused write changes nothing"
        let map = alice.Client.GetNamespaceItemsAsync(alice.Token, ns.Id.Wire) |> await
        Expect.equal map.Items.Count 4 "reads are not limited"
    }

/// The sweep removes rows nothing can use again, and only those (on the server's clock).
let private sweep backend =
    test $"the sweep deletes used and expired challenges, expired tokens and expired pending join requests, and nothing else ({backend})" {
        use server = start backend
        let count table =
            server.Server.Store.ReadAsync((fun tx -> tx.CountAsync(table, Threading.CancellationToken.None)), Threading.CancellationToken.None)
            |> await

        let alice = login server "alice"
        let bob = login server "bob"
        let shared = createShared alice
        let invite = createInvite alice shared
        submit bob invite |> ignore
        server.Clock.Advance(TimeSpan.FromSeconds 1.0)
        let unusedChallenge = server.Client.ChallengeAsync "login" |> await
        ignore unusedChallenge
        Expect.isGreaterThan (count "challenges") 1L "used challenges are kept until the sweep"
        let deleted = server.Server.SweepNowAsync() |> await
        Expect.isGreaterThan deleted 0 "the used challenges went"
        Expect.equal (count "challenges") 1L "the unused, unexpired challenge stays"
        Expect.equal (count "tokens") 2L "live tokens stay"
        Expect.equal (count "join_requests") 1L "a live pending request stays"
        let before = server.Dump()
        server.Clock.Advance(TimeSpan.FromDays 31.0) // past the tokens, the challenge and the request
        server.Server.SweepNowAsync() |> await |> ignore
        Expect.equal (count "challenges", count "tokens", count "join_requests") (0L, 0L, 0L) "everything expired went"
        Expect.equal (count "members") 1L "membership stays"
        Expect.equal (count "invites") 1L "invites stay (listed for a while after expiry)"
        Expect.notEqual (server.Dump()) before "the dump saw the deletions"
        let again = login server "alice"
        Expect.isNotEmpty again.Token "a new session works after the sweep"
    }

/// Readiness follows the database, liveness does not: PostgreSQL's database dropped under a running server.
let private readinessWithoutDatabase =
    test "readiness: /readyz answers 503 with a JSON error when the database is gone, /healthz stays 200 (postgres)" {
        let db = Database.Create Postgres
        use server = startOn db (ManualClock DateTimeOffset.UtcNow) (TimeSpan.FromSeconds 2.0)
        use http = server.RawHttp()
        Expect.equal (int (http.GetAsync "/readyz" |> await).StatusCode) 200 "ready while the database answers"
        let name = Npgsql.NpgsqlConnectionStringBuilder(db.Postgres).Database

        do
            use admin = new Npgsql.NpgsqlConnection(postgresAdmin.Value)
            admin.Open()
            use cmd = admin.CreateCommand()
            cmd.CommandText <- $"DROP DATABASE {name} WITH (FORCE)"
            cmd.ExecuteNonQuery() |> ignore

        use ready = http.GetAsync "/readyz" |> await
        Expect.equal (int ready.StatusCode) 503 "not ready without its database"
        Expect.equal (ready.Content.ReadAsStringAsync() |> await) """{"error":"database unavailable"}""" "a JSON error"
        Expect.equal (int (http.GetAsync "/healthz" |> await).StatusCode) 200 "but alive: no restart loop"
    }

/// The suite (built afresh on each call: its fixtures are per run).
let suite () =
    testList
        "rules"
        [
            if postgresAdmin.IsSome then
                readinessWithoutDatabase

            for backend in backends do
                legacyInvites backend
                rateLimits backend
                sweep backend

            for backend in backends do
                let f = lazy (fixtureOf backend)

                testList
                    (string backend)
                    [
                        for c in cases do
                            test c.Name {
                                let f = f.Force()
                                f.SetUpDone()
                                let status = c.Run f
                                Expect.equal status c.Status "status"
                                Expect.equal (f.Server.Dump()) f.Baseline "no state change"
                            }

                        testList "authorization matrix" (matrix f)

                        test "cleanup" {
                            let f = f.Force()
                            f.Http.Dispose()
                            (f.Server :> IDisposable).Dispose()
                        }
                    ]
        ]

let tests = suite ()
