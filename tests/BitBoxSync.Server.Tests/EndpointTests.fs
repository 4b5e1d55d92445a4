/// Every endpoint's success path through the raw client, the full rendezvous flow, and restarts,
/// on a real server over each backend.
module BitBoxSync.Server.Tests.EndpointTests

open System
open System.Net.Http
open Expecto
open BitBoxSync
open BitBoxSync.Protocol
open BitBoxSync.Protocol.Wire
open BitBoxSync.Server.Tests.Harness
open BitBoxSync.Server.Tests.Flows

let private refresh (s: Session) =
    let challenge = s.Client.ChallengeAsync "refresh" |> await

    let signature =
        s.Identity.SignRefreshIntentAsync(Convert.FromBase64String challenge.Challenge).AsTask()
        |> await

    s.Client.RefreshAsync(
        s.Token,
        {
            Kind = "keystore"
            KeyId = s.KeyId
            Challenge = challenge.Challenge
            IntentSignature = Convert.ToHexStringLower(signature: byte[])
            Attestation = null
        }
    )
    |> await

/// Revokes every token of a session's identity.
let revokeAll (s: Session) =
    let challenge =
        s.Client.SensitiveActionChallengeAsync(
            "revoke-all-tokens",
            (ActionFields.hash ActionFields.revokeAllTokens).Wire
        )
        |> await

    let signature =
        s.Identity
            .SignRevokeAllTokensIntentAsync(Convert.FromBase64String challenge.Challenge)
            .AsTask()
        |> await

    s.Client.RevokeAllTokensAsync(
        s.Token,
        {
            Kind = "keystore"
            KeyId = s.KeyId
            Challenge = challenge.Challenge
            IntentSignature = Convert.ToHexStringLower(signature: byte[])
        }
    )
    |> awaitUnit

let private authAndDefault backend =
    test $"auth and the default namespace ({backend})" {
        use server = start backend
        let alice = login server "alice"
        Expect.isNull alice.DefaultNamespaceId "no default namespace before the first ensure"

        Expect.equal
            (statusOf (fun () -> alice.Client.GetDefaultNamespaceAsync alice.Token))
            404
            "no default yet"

        let ns, created = ensureDefault alice
        Expect.isTrue created.Created "created"
        Expect.equal created.NamespaceId ns.Id.Wire "the proposal"
        let _, again = ensureDefault alice
        Expect.isFalse again.Created "create-or-get"

        Expect.equal
            (again.NamespaceId, again.WrappedDek)
            (ns.Id.Wire, created.WrappedDek)
            "the stored default, unchanged"

        let unwrapped =
            alice.Identity
                .UnwrapNamespaceDekAsync(
                    Bin.toArray ns.Id,
                    Convert.FromBase64String again.WrappedDek
                )
                .AsTask()
            |> await

        Expect.equal unwrapped (Bin.toArray ns.Dek) "the caller's own wrapped DEK"
        let byGet = alice.Client.GetDefaultNamespaceAsync alice.Token |> await
        Expect.equal (byGet.NamespaceId, byGet.Kind) (ns.Id.Wire, "default") "GET default"
        let again = login server "alice"
        Expect.equal again.DefaultNamespaceId ns.Id.Wire "login names the default namespace"

        let refreshed = refresh alice
        Expect.notEqual refreshed.AccessToken alice.Token "a new token"
        Expect.equal refreshed.Kind "keystore" "kind echo"

        for token in [ alice.Token; refreshed.AccessToken ] do
            let mine = alice.Client.ListNamespacesAsync token |> await

            Expect.equal
                (mine.Namespaces |> Array.map (fun n -> n.NamespaceId, n.Kind, n.NamespaceHead))
                [| ns.Id.Wire, "default", 0UL |]
                "mine"

        revokeAll alice

        for token in [ alice.Token; refreshed.AccessToken; again.Token ] do
            Expect.equal
                (statusOf (fun () -> alice.Client.ListNamespacesAsync token))
                401
                "every token revoked"
    }

let private rendezvous backend =
    test
        $"rendezvous: shared namespace, invite, join request, approval, both read and write ({backend})" {
        use server = start backend
        let alice = login server "alice"
        let bob = login server "bob"
        let carol = login server "carol"
        let ns = newNamespace ()

        let creation: CreateSharedNamespaceRequest =
            {
                NamespaceId = ns.Id.Wire
                WrappedDek = wrapFor alice.Identity ns
            }

        let first = alice.Client.CreateSharedNamespaceAsync(alice.Token, creation) |> await
        Expect.isTrue first.Created "created"
        let retry = alice.Client.CreateSharedNamespaceAsync(alice.Token, creation) |> await
        Expect.isFalse retry.Created "the creator's identical retry is idempotent"
        let members = alice.Client.GetMembersAsync(alice.Token, ns.Id.Wire) |> await

        Expect.equal
            (members.Members |> Array.map (fun m -> m.KeyId))
            [| alice.KeyId |]
            "the creator is the first member"

        let invite = createInvite alice ns

        let listed =
            alice.Client.ListNamespaceInvitesAsync(alice.Token, ns.Id.Wire) |> await

        Expect.equal
            (listed.Invites
             |> Array.map (fun i -> i.InviteId, i.MaxAccepted, i.AcceptedCount))
            [| invite.InviteId.Wire, 3L, 0L |]
            "listed"

        let submitted = submit bob invite
        Expect.equal (submitted.Status, submitted.RequesterKeyId) ("pending", bob.KeyId) "pending"
        let resubmitted = submit bob invite

        Expect.equal
            resubmitted.JoinRequestHash
            submitted.JoinRequestHash
            "identical resubmission returns the existing entry"

        let requests =
            alice.Client.ListNamespaceJoinRequestsAsync(alice.Token, ns.Id.Wire) |> await

        Expect.equal requests.Requests.Length 1 "one pending request"
        let entry = requests.Requests[0]
        // The approver re-verifies the request: its hash must be recomputable from the stored fields.
        let parsed = Requests.joinRequest entry.JoinRequest

        match parsed with
        | Ok jr ->
            Expect.equal
                (JoinRequests.hash (JoinRequests.payload jr.Fields)).Wire
                entry.JoinRequestHash
                "hash of the stored request"

            Expect.isOk
                (InviteSecrets.verifyProof
                    invite.Secret
                    (JoinRequests.payload jr.Fields)
                    jr.InviteProof.Span)
                "the invite proof survives storage"
        | Error e -> failtestf "stored join request does not parse: %s" e.Message

        let invites =
            alice.Client.ListNamespaceInvitesAsync(alice.Token, ns.Id.Wire) |> await

        Expect.equal invites.Invites[0].ActiveRequestCount 1L "one active request"

        approve alice invite bob submitted.JoinRequestHash |> ignore

        let wrapped =
            bob.Client.GetWrappedDekAsync(bob.Token, ns.Id.Wire, bob.KeyId) |> await

        let dek =
            bob.Identity
                .UnwrapNamespaceDekAsync(
                    Bin.toArray ns.Id,
                    Convert.FromBase64String wrapped.WrappedDek
                )
                .AsTask()
            |> await

        Expect.equal dek (Bin.toArray ns.Dek) "bob joined: he unwraps the namespace DEK"

        let bobsView =
            { ns with
                Dek = Bin.ofBytes<DekKind> dek |> Result.defaultWith (fun _ -> failwith "dek")
            }

        let v1 = put alice ns "note" None "from alice"
        Expect.equal v1.Version 1UL "created at version 1"
        Expect.equal (read bob bobsView "note") (1UL, "from alice") "bob reads alice's write"
        let v2 = put bob bobsView "note" (Some 1UL) "from bob"
        Expect.equal v2.Version 2UL "updated to version 2"
        Expect.equal (read alice ns "note") (2UL, "from bob") "alice reads bob's write"
        let map = alice.Client.GetNamespaceItemsAsync(alice.Token, ns.Id.Wire) |> await
        Expect.equal map.NamespaceHead 2UL "one head step per accepted write"
        Expect.equal map.Items[(itemId ns "note").Wire].Version 2UL "the map"

        let members = bob.Client.GetMembersAsync(bob.Token, ns.Id.Wire) |> await

        Expect.equal
            (members.Members |> Array.map (fun m -> m.KeyId))
            [| alice.KeyId; bob.KeyId |]
            "join order"

        let revoked =
            alice.Client.RevokeNamespaceInviteAsync(alice.Token, ns.Id.Wire, invite.InviteId.Wire)
            |> await

        Expect.isTrue revoked.Revoked "revoked"

        let again =
            bob.Client.RevokeNamespaceInviteAsync(bob.Token, ns.Id.Wire, invite.InviteId.Wire)
            |> await

        Expect.isTrue again.Revoked "revoking twice is fine, by any member"

        let invites =
            alice.Client.ListNamespaceInvitesAsync(alice.Token, ns.Id.Wire) |> await

        Expect.isNotNull invites.Invites[0].RevokedAt "the list shows the revocation"

        Expect.equal
            (statusOf (fun () -> Threading.Tasks.Task.FromResult(submit carol invite)))
            410
            "no submission through a revoked invite"

        let second = createInvite bob bobsView
        let carols = submit carol second

        let rejected =
            bob.Client.RejectNamespaceJoinRequestAsync(
                bob.Token,
                ns.Id.Wire,
                carol.KeyId,
                carols.JoinRequestHash
            )
            |> await

        Expect.isTrue rejected.Rejected "rejected"

        let pending =
            alice.Client.ListNamespaceJoinRequestsAsync(alice.Token, ns.Id.Wire) |> await

        Expect.isEmpty pending.Requests "nothing pending"

        Expect.equal
            (statusOf (fun () ->
                carol.Client.GetWrappedDekAsync(carol.Token, ns.Id.Wire, carol.KeyId)))
            403
            "carol is not a member"

        let mine = bob.Client.ListNamespacesAsync bob.Token |> await

        Expect.equal
            (mine.Namespaces |> Array.map (fun n -> n.NamespaceId, n.Kind, n.NamespaceHead))
            [| ns.Id.Wire, "shared", 2UL |]
            "bob sees the shared namespace"

        let watch =
            bob.Client.WatchNamespacesAsync(bob.Token, { KnownHeads = Map.empty }) |> await

        Expect.equal
            (watch.TimedOut, watch.Namespaces.Length)
            (false, 1)
            "a namespace missing from knownHeads answers at once"
    }

let private healthAndVersion backend =
    test $"health, version, unknown routes ({backend})" {
        use server = start backend
        use http = server.RawHttp()
        let health = http.GetStringAsync "/healthz" |> await
        Expect.equal health """{"status":"ok"}""" "healthz"
        Expect.equal (http.GetStringAsync "/readyz" |> await) """{"status":"ok"}""" "readyz: the database answers"
        let version = http.GetStringAsync "/version" |> await
        Expect.stringStarts version """{"gitCommit":""" "version"
        let missing = http.GetAsync "/v1/nope" |> await
        Expect.equal (int missing.StatusCode) 404 "unknown route"
        let wrongMethod = http.GetAsync "/v1/namespaces/watch" |> await
        Expect.equal (int wrongMethod.StatusCode) 405 "watch is POST only"

        // Routing's own refusals: JSON from the standalone server; a host app that mounts the server
        // answers them with its own pipeline (its status-code pages, if any).
        if mountPrefix.IsNone then
            Expect.equal
                (missing.Content.ReadAsStringAsync() |> await)
                """{"error":"not found"}"""
                "JSON error body"

            Expect.stringContains
                (wrongMethod.Content.ReadAsStringAsync() |> await)
                "\"error\""
                "JSON error body"
    }

let private restart backend =
    test $"restart on the same database: nothing lost, heads unchanged ({backend})" {
        let db = Database.Create backend
        let clock = ManualClock(DateTimeOffset.UtcNow)

        let before, alice, ns =
            use server = startOn db clock (TimeSpan.FromSeconds 2.0)
            let alice = login server "alice"
            let ns, _ = ensureDefault alice

            for i in 1..5 do
                put alice ns $"k{i}" None $"v{i}" |> ignore

            put alice ns "k1" (Some 1UL) "v1'" |> ignore
            server.Dump(), alice, ns

        use server = startOn db clock (TimeSpan.FromSeconds 2.0)
        Expect.equal (server.Dump()) before "every row survives the restart"
        let alice = { alice with Server = server }
        let map = server.Client.GetNamespaceItemsAsync(alice.Token, ns.Id.Wire) |> await
        Expect.equal map.NamespaceHead 6UL "head unchanged; the old token still works"
        Expect.equal (read alice ns "k1") (2UL, "v1'") "item readable after restart"
    }

let private serverCommand backend =
    test
        $"the server command: configured by command line and environment, serves the API ({backend})" {
        let db = Database.Create backend
        use proc = new ServerProcess(db, TimeSpan.FromSeconds 5.0)
        use client = new SyncClient(proc.BaseAddress)
        let id = Keystore.FromLabel "alice"
        let r = client.LoginAsync(loginRequest client id) |> await
        Expect.isNull r.DefaultNamespaceId "logged in through the command's server"
        // The same database seen by an embedded server: the command wrote where it was told to.
        use embedded =
            startOn db (ManualClock DateTimeOffset.UtcNow) (TimeSpan.FromSeconds 2.0)

        Expect.stringContains (embedded.Dump()) id.KeyId "the identity is in the configured store"
    }

let tests =
    testList
        "endpoints"
        [
            for b in backends do
                serverCommand b
                authAndDefault b
                rendezvous b
                healthAndVersion b
                restart b
        ]
