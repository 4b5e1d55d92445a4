/// Example tests of the server rules (docs/protocol.md §7, §10): item compare-and-set and heads,
/// quotas, watch, challenges, login, tokens. Every refusal carries the documented status.
module BitBoxSync.Tests.ServerCoreTests

open System
open Expecto
open BitBoxSync.Protocol
open BitBoxSync.Server.Core
open BitBoxSync.Tests.TestData

let private ns =
    Bin.parse<NamespaceIdKind> "00112233445566778899aabbccddeeff" |> ok "ns"

let private item = Bin.parse<ItemIdKind>(String('a', 64)) |> ok "item"
let private now = DateTimeOffset(2026, 11, 24, 12, 0, 0, TimeSpan.Zero)

let private keys =
    NamespaceKeys.derive (Bin.ofBytes<DekKind>(Array.init 32 byte) |> ok "dek")

let private nonce = Bin.ofBytes<ItemNonceKind>(Array.zeroCreate 24) |> ok "nonce"

let private sealedAt version =
    ItemCrypto.seal keys ns item version nonce (ReadOnlySpan "value"B) |> ok "seal"

let private usage head count bytes =
    {
        NamespaceId = ns
        Head = head
        ItemCount = count
        StoredBytes = bytes
    }

let itemTests =
    testList
        "item compare-and-set"
        [
            test
                "create without If-Match is version 1 and moves the head by one; a second create is 412" {
                let accepted =
                    Items.put (usage 7UL 0 0L) item None IfMatch.Absent (sealedAt 1UL) now
                    |> ok "create"

                Expect.equal
                    (accepted.Item.Version, accepted.NewHead, accepted.Usage.ItemCount)
                    (1UL, 8UL, 1)
                    "v1, head 8"

                Expect.equal (Items.putResponse accepted).Version 1UL "response version"

                Expect.equal
                    (status (
                        Items.put
                            accepted.Usage
                            item
                            (Some accepted.Item)
                            IfMatch.Absent
                            (sealedAt 1UL)
                            now
                    ))
                    412
                    "exists: 412, never 409"

                Expect.equal
                    (status (
                        Items.put
                            (usage 0UL 0 0L)
                            item
                            None
                            (IfMatch.Version 0UL)
                            (sealedAt 1UL)
                            now
                    ))
                    200
                    "If-Match \"0\" = must not exist"
            }
            test "If-Match N updates only version N; anything else is 412" {
                let v1 =
                    Items.put (usage 0UL 0 0L) item None IfMatch.Absent (sealedAt 1UL) now
                    |> ok "create"

                let v2 =
                    Items.put v1.Usage item (Some v1.Item) (IfMatch.Version 1UL) (sealedAt 2UL) now
                    |> ok "update"

                Expect.equal
                    (v2.Item.Version, v2.NewHead, v2.Usage.ItemCount)
                    (2UL, 2UL, 1)
                    "v2, head 2, still one item"

                Expect.equal
                    (status (
                        Items.put
                            v2.Usage
                            item
                            (Some v2.Item)
                            (IfMatch.Version 1UL)
                            (sealedAt 2UL)
                            now
                    ))
                    412
                    "stale"

                Expect.equal
                    (status (
                        Items.put
                            (usage 0UL 0 0L)
                            item
                            None
                            (IfMatch.Version 3UL)
                            (sealedAt 4UL)
                            now
                    ))
                    412
                    "missing item"
            }
            test "an AAD that does not bind the target version is refused with 400" {
                Expect.equal
                    (status (Items.put (usage 0UL 0 0L) item None IfMatch.Absent (sealedAt 2UL) now))
                    400
                    "AAD for v2 on a create"
            }
            test "item and byte quotas are 409 on create; updates do not add an item" {
                Expect.equal
                    (status (
                        Items.put (usage 0UL 10000 0L) item None IfMatch.Absent (sealedAt 1UL) now
                    ))
                    409
                    "item count"

                Expect.equal
                    (status (
                        Items.put
                            (usage 0UL 0 (Limits.MaxNamespaceStoredBytes - 10L))
                            item
                            None
                            IfMatch.Absent
                            (sealedAt 1UL)
                            now
                    ))
                    409
                    "bytes"

                let v1 =
                    {
                        NamespaceId = ns
                        ItemId = item
                        Version = 1UL
                        Sealed = sealedAt 1UL
                        UpdatedAt = now
                    }

                let full = usage 1UL 10000 (Items.storedBytes v1.Sealed)

                Expect.equal
                    (status (Items.put full item (Some v1) (IfMatch.Version 1UL) (sealedAt 2UL) now))
                    200
                    "update at the item limit"
            }
            test "quotas at their exact boundaries: the 10 000th item and the last byte are accepted, one more is refused" {
                let size = Items.storedBytes (sealedAt 1UL)

                Expect.equal
                    (status (Items.put (usage 0UL 9999 0L) item None IfMatch.Absent (sealedAt 1UL) now))
                    200
                    "the 10 000th item"

                Expect.equal
                    (status (Items.put (usage 0UL 10000 0L) item None IfMatch.Absent (sealedAt 1UL) now))
                    409
                    "the 10 001st item"

                let filled = Limits.MaxNamespaceStoredBytes - size

                Expect.equal
                    (status (Items.put (usage 0UL 0 filled) item None IfMatch.Absent (sealedAt 1UL) now))
                    200
                    "a write that reaches the byte quota exactly"

                Expect.equal
                    (status (
                        Items.put (usage 0UL 0 (filled + 1L)) item None IfMatch.Absent (sealedAt 1UL) now
                    ))
                    409
                    "one byte more"
            }
            test "a token is refused at exactly its expiry instant, accepted a tick before" {
                let token: StoredToken =
                    {
                        TokenHash = Array.zeroCreate 32
                        KeyId = Bin.parse<KeyIdKind>(String('b', 64)) |> ok "key"
                        IssuedAt = now
                        ExpiresAt = now.AddHours 1.0
                        Revoked = false
                    }

                Expect.isOk (Auth.authenticate (Some token) (token.ExpiresAt.AddTicks -1L)) "a tick before"

                Expect.equal
                    (Auth.authenticate (Some token) token.ExpiresAt |> Result.mapError (fun e -> e.Status))
                    (Error 401)
                    "at the expiry instant"
            }
            test "GET and the item map answer exactly what is stored" {
                let v1 =
                    Items.put (usage 0UL 0 0L) item None IfMatch.Absent (sealedAt 1UL) now
                    |> ok "create"

                let get = Items.getResponse v1.Item

                Expect.equal
                    (get.Version, get.Aad, get.Ciphertext)
                    (1UL, (sealedAt 1UL).Aad.Wire, (sealedAt 1UL).Ciphertext.Wire)
                    "stored bytes"

                let map = Items.mapResponse ns 1UL [ item, 1UL ]
                Expect.equal (map.NamespaceHead, map.Items[item.Wire].Version) (1UL, 1UL) "map"
            }
        ]

let watchTests =
    test
        "watch reports visible namespaces whose head differs, missing ones included, and never an empty list without timing out" {
        let other = Bin.parse<NamespaceIdKind>(String('f', 32)) |> ok "other"
        let invisible = Bin.parse<NamespaceIdKind>(String('1', 32)) |> ok "invisible"
        let visible = [ ns, NamespaceKind.Default, 5UL; other, NamespaceKind.Shared, 2UL ]
        let changes = Watch.changed visible (Map.ofList [ ns, 5UL; invisible, 9UL ])

        Expect.equal
            (changes |> Array.map (fun s -> s.NamespaceId, s.NamespaceHead))
            [| other.Wire, 2UL |]
            "only the missing one"

        Expect.equal
            (Watch.changed visible (Map.ofList [ ns, 6UL; other, 2UL ]) |> Array.length)
            1
            "a higher known head also differs"

        Expect.isTrue (Watch.answer [||]).TimedOut "empty means timed out"
        Expect.isFalse (Watch.answer changes).TimedOut "changes"
    }

let authTests =
    let challengeBytes = Array.init 32 byte

    let loginCmd =
        {
            Purpose = ChallengePurpose.Login
            Kind = IdentityKind.Keystore
        }

    let loginCommand (ks: DummyKeystore) (challenge: Challenge) : LoginCommand =
        {
            Kind = IdentityKind.Keystore
            KeyId = ks.KeyId
            AuthPublicKey = ks.AuthPublicKey
            WrapPublicKey = ks.WrapPublicKey
            Challenge = challenge
            Signature = ks.SignLoginIntent challenge
            Attestation = None
        }

    testList
        "auth rules"
        [
            test
                "challenges are single use, expire, and are bound to purpose, action fields and kind" {
                let stored, response = Auth.mint Auth.defaults loginCmd challengeBytes now

                Expect.equal
                    response.Challenge
                    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
                    "base64 of the random bytes"

                Expect.equal response.SpamControl.Kind "none" "no attestation by default"

                let ok' =
                    Auth.useChallenge (Some stored) ChallengePurpose.Login IdentityKind.Keystore now

                Expect.equal ok'.Result (Ok()) "accepted once"
                Expect.isTrue ok'.MarkUsed.Value.Used "then used"

                Expect.equal
                    (status
                        (Auth.useChallenge
                            ok'.MarkUsed
                            ChallengePurpose.Login
                            IdentityKind.Keystore
                            now)
                            .Result)
                    403
                    "reuse"

                Expect.equal
                    (status
                        (Auth.useChallenge
                            (Some stored)
                            ChallengePurpose.Refresh
                            IdentityKind.Keystore
                            now)
                            .Result)
                    403
                    "other purpose"

                Expect.equal
                    (status
                        (Auth.useChallenge
                            (Some stored)
                            ChallengePurpose.Login
                            IdentityKind.Keystore
                            (now.AddMinutes 5.0))
                            .Result)
                    403
                    "expired"

                let failed =
                    Auth.useChallenge
                        (Some stored)
                        ChallengePurpose.Refresh
                        IdentityKind.Keystore
                        now

                Expect.isTrue failed.MarkUsed.Value.Used "consumed on failure too"

                Expect.equal
                    (status
                        (Auth.useChallenge None ChallengePurpose.Login IdentityKind.Keystore now)
                            .Result)
                    403
                    "unknown"

                let hash = ActionFields.hash [||]
                let other = ActionFields.hash [| 1uy |]

                let sensitive, r =
                    Auth.mint
                        { Auth.defaults with RequireAttestation = true }
                        { loginCmd with
                            Purpose =
                                ChallengePurpose.SensitiveAction(
                                    SensitiveAction.RevokeAllTokens,
                                    hash
                                )
                        }
                        challengeBytes
                        now

                Expect.equal r.SpamControl.Kind "none" "sensitive actions never demand attestation"

                Expect.equal
                    (status
                        (Auth.useChallenge
                            (Some sensitive)
                            (ChallengePurpose.SensitiveAction(
                                SensitiveAction.RevokeAllTokens,
                                other
                            ))
                            IdentityKind.Keystore
                            now)
                            .Result)
                    403
                    "other fields hash"
            }
            test "login verifies key id, signature, attestation and keeps the registered wrap key" {
                use alice = DummyKeystore.FromLabel "alice"
                use bob = DummyKeystore.FromLabel "bob"
                let challenge = Bin.ofBytes<ChallengeKind> challengeBytes |> ok "challenge"
                let cmd = loginCommand alice challenge
                let registered = Auth.login Auth.defaults cmd None now |> ok "first login registers"
                Expect.equal registered.KeyId alice.KeyId "registered"

                Expect.equal
                    (status (Auth.login Auth.defaults { cmd with KeyId = bob.KeyId } None now))
                    403
                    "key id mismatch"

                Expect.equal
                    (status (
                        Auth.login
                            Auth.defaults
                            { cmd with Signature = bob.SignLoginIntent challenge }
                            None
                            now
                    ))
                    403
                    "bad signature"

                let moved = { registered with WrapPublicKey = bob.WrapPublicKey }

                Expect.equal
                    (status (Auth.login Auth.defaults cmd (Some moved) now))
                    409
                    "wrap key change"

                let strict = { Auth.defaults with RequireAttestation = true }
                Expect.equal (status (Auth.login strict cmd None now)) 403 "attestation required"

                Expect.equal
                    (status (
                        Auth.login
                            strict
                            { cmd with Attestation = Some(alice.Attest challenge) }
                            None
                            now
                    ))
                    200
                    "dummy attestation accepted in test mode"

                Expect.equal
                    (status (
                        Auth.login
                            strict
                            { cmd with Attestation = Some(bob.Attest challenge) }
                            None
                            now
                    ))
                    403
                    "attestation of another key"
            }
            test "refresh needs the token's identity and a signature by its registered key" {
                use alice = DummyKeystore.FromLabel "alice"
                use bob = DummyKeystore.FromLabel "bob"
                let challenge = Bin.ofBytes<ChallengeKind> challengeBytes |> ok "challenge"

                let caller =
                    Auth.login Auth.defaults (loginCommand alice challenge) None now |> ok "login"

                let cmd: RefreshCommand =
                    {
                        Kind = IdentityKind.Keystore
                        KeyId = alice.KeyId
                        Challenge = challenge
                        Signature = alice.SignRefreshIntent challenge
                        Attestation = None
                    }

                Expect.equal (Auth.refresh Auth.defaults cmd caller) (Ok()) "valid"

                Expect.equal
                    (status (Auth.refresh Auth.defaults { cmd with KeyId = bob.KeyId } caller))
                    403
                    "other identity"

                Expect.equal
                    (status (
                        Auth.refresh
                            Auth.defaults
                            { cmd with Signature = bob.SignRefreshIntent challenge }
                            caller
                    ))
                    403
                    "bad signature"
            }
            test
                "tokens are stored hashed, at most 32 stay active (oldest evicted), and only bad tokens are 401" {
                use alice = DummyKeystore.FromLabel "alice"

                let active =
                    [
                        for i in 0..31 ->
                            {
                                TokenHash = [| byte i |]
                                KeyId = alice.KeyId
                                IssuedAt = now.AddMinutes(float i)
                                ExpiresAt = now.AddDays 1.0
                                Revoked = false
                            }
                    ]

                let token, stored, evicted =
                    Auth.issueToken
                        Auth.defaults
                        alice.KeyId
                        (Array.create 32 7uy)
                        active
                        (now.AddHours 1.0)

                Expect.equal stored.TokenHash (Auth.tokenHash token) "only the hash is kept"

                Expect.equal
                    (evicted |> List.map (fun t -> t.TokenHash, t.Revoked))
                    [ [| 0uy |], true ]
                    "the oldest is revoked"

                Expect.equal (Auth.authenticate (Some stored) now) (Ok alice.KeyId) "valid"
                Expect.equal (status (Auth.authenticate None now)) 401 "unknown"

                Expect.equal
                    (status (Auth.authenticate (Some { stored with Revoked = true }) now))
                    401
                    "revoked"

                Expect.equal
                    (status (Auth.authenticate (Some stored) (now.AddDays 31.0)))
                    401
                    "expired"
            }
        ]

let namespaceTests =
    let alice = Bin.parse<KeyIdKind>(String('a', 64)) |> ok "alice"
    let bob = Bin.parse<KeyIdKind>(String('b', 64)) |> ok "bob"

    let wrapped b =
        Bin.ofBytes<WrappedDekKind>(Array.init 97 (fun i -> if i = 0 then 1uy else b))
        |> ok "wrapped"

    let proposal: NamespaceProposal = { NamespaceId = ns; WrappedDek = wrapped 7uy }

    let created outcome =
        match outcome with
        | CreateOutcome.Create c -> c
        | other -> failtestf "expected a creation, got %A" other

    testList
        "namespace rules"
        [
            test
                "the default namespace is created once and then returned with the stored wrapped DEK" {
                let c =
                    Namespaces.ensureDefault alice proposal None false 0 now
                    |> ok "create"
                    |> created

                Expect.equal
                    (c.Namespace.Kind, c.Namespace.Head, c.Membership.KeyId)
                    (NamespaceKind.Default, 0UL, alice)
                    "default at head 0, creator is member"

                Expect.isTrue
                    (Namespaces.ensureDefaultResponse (CreateOutcome.Create c)).Created
                    "created: true"

                let otherProposal =
                    { proposal with
                        NamespaceId = Bin.parse<NamespaceIdKind>(String('9', 32)) |> ok "other"
                    }

                let again =
                    Namespaces.ensureDefault
                        alice
                        otherProposal
                        (Some(c.Namespace, c.Membership))
                        false
                        0
                        now
                    |> ok "get"

                let r = Namespaces.ensureDefaultResponse again

                Expect.equal
                    (r.NamespaceId, r.WrappedDek, r.Created)
                    (ns.Wire, (wrapped 7uy).Wire, false)
                    "existing returned unchanged"

                Expect.equal
                    (status (Namespaces.ensureDefault alice proposal None true 0 now))
                    409
                    "proposed id taken"

                Expect.equal
                    (status (Namespaces.ensureDefault alice proposal None false 32 now))
                    409
                    "namespace quota"
            }
            test "shared creation is idempotent for its creator with the same DEK, 409 otherwise" {
                let c = Namespaces.createShared alice proposal None 0 now |> ok "create" |> created
                Expect.equal c.Namespace.Kind NamespaceKind.Shared "shared"

                match
                    Namespaces.createShared
                        alice
                        proposal
                        (Some(c.Namespace, Some c.Membership))
                        1
                        now
                with
                | Ok(CreateOutcome.Existing _) -> ()
                | other -> failtestf "retry must be created:false, got %A" other

                Expect.equal
                    (status (Namespaces.createShared bob proposal (Some(c.Namespace, None)) 0 now))
                    409
                    "someone else"

                Expect.equal
                    (status (
                        Namespaces.createShared
                            alice
                            { proposal with WrappedDek = wrapped 8uy }
                            (Some(c.Namespace, Some c.Membership))
                            1
                            now
                    ))
                    409
                    "another DEK"
            }
            test "members only; wrapped DEKs only for the caller's own key; lists are ordered" {
                let c = Namespaces.createShared alice proposal None 0 now |> ok "create" |> created
                Expect.equal (status (Namespaces.requireMember None)) 403 "non-member"

                Expect.equal
                    (Namespaces.wrappedDek (Some c.Membership) alice |> ok "own").WrappedDek
                    (wrapped 7uy).Wire
                    "own DEK"

                Expect.equal
                    (status (Namespaces.wrappedDek (Some c.Membership) bob))
                    403
                    "someone else's DEK"

                let bobMember =
                    { c.Membership with
                        KeyId = bob
                        JoinedAt = now.AddMinutes 1.0
                    }

                let listed = Namespaces.members ns [ bobMember; c.Membership ]

                Expect.equal
                    (listed.Members |> Array.map (fun m -> m.KeyId))
                    [| alice.Wire; bob.Wire |]
                    "join order"

                Expect.equal
                    (Namespaces.mine [ c.Namespace ]).Namespaces[0].NamespaceHead
                    0UL
                    "mine lists heads"
            }
        ]

let tests =
    testList "server rules" [ itemTests; watchTests; authTests; namespaceTests ]
