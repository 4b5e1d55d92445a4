/// Example tests of the server's invite and join-request rules (docs/protocol.md §7.12–§7.18): the
/// whole rendezvous with real signatures, and every refusal with its status.
module BitBoxSync.Tests.SharingTests

open System
open Expecto
open BitBoxSync.Protocol
open BitBoxSync.Server.Core
open BitBoxSync.Tests.TestData

let private ns =
    Bin.parse<NamespaceIdKind> "00112233445566778899aabbccddeeff" |> ok "ns"

let private now = DateTimeOffset(2026, 11, 24, 12, 0, 0, TimeSpan.Zero)
let private unixNow = now.ToUnixTimeSeconds()

let private origin =
    ServerOrigin.parseCanonical "https://sync.example" |> ok "origin"

let private settings = Sharing.settings origin

let private challenge =
    Bin.ofBytes<ChallengeKind>(Array.init 32 byte) |> ok "challenge"

let private inviteId =
    Bin.parse<InviteIdKind> "0f0e0d0c0b0a09080706050403020100" |> ok "invite"

let private secret =
    Bin.ofBytes<InviteSecretKind>(Array.init 32 (fun i -> byte (0x20 + i)))
    |> ok "secret"

let private serverSecret = InviteSecrets.serverSecret secret

let private wrapped =
    Bin.ofBytes<WrappedDekKind>(Array.init 97 (fun i -> if i = 0 then 1uy else 5uy))
    |> ok "wrapped"

type private Fixture =
    {
        Alice: DummyKeystore
        Bob: DummyKeystore
        AliceId: RegisteredIdentity
        Shared: StoredNamespace
        Membership: Membership
        Cmd: CreateInviteCommand
    }

    interface IDisposable with
        member f.Dispose() =
            (f.Alice :> IDisposable).Dispose()
            (f.Bob :> IDisposable).Dispose()

let private setup () =
    let alice = DummyKeystore.FromLabel "alice"
    let bob = DummyKeystore.FromLabel "bob"

    let login: LoginCommand =
        {
            Kind = IdentityKind.Keystore
            KeyId = alice.KeyId
            AuthPublicKey = alice.AuthPublicKey
            WrapPublicKey = alice.WrapPublicKey
            Challenge = challenge
            Signature = alice.SignLoginIntent challenge
            Attestation = None
        }

    let fields: CreateInviteFields =
        {
            NamespaceId = ns
            InviteId = inviteId
            InviteServerSecretHash = InviteSecrets.serverSecretHash serverSecret
            ExpiresAt = unixNow + 600L
            MaxAccepted = 2
        }

    {
        Alice = alice
        Bob = bob
        AliceId = Auth.login Auth.defaults login None now |> ok "alice"
        Shared =
            {
                NamespaceId = ns
                Kind = NamespaceKind.Shared
                Head = 0UL
                CreatedBy = alice.KeyId
                CreatedAt = now
            }
        Membership =
            {
                NamespaceId = ns
                KeyId = alice.KeyId
                Kind = IdentityKind.Keystore
                WrappedDek = wrapped
                JoinedAt = now
            }
        Cmd =
            {
                Kind = IdentityKind.Keystore
                KeyId = alice.KeyId
                InviteId = inviteId
                InviteServerSecretHash = fields.InviteServerSecretHash
                Challenge = challenge
                Signature = alice.SignCreateNamespaceInviteIntent(challenge, fields) |> ok "sign"
                ExpiresAt = fields.ExpiresAt
                MaxAccepted = 2
                MaxPending = None
            }
    }

let private joinRequest (bob: DummyKeystore) (expiresAt: int64) : Wire.NamespaceJoinRequest =
    let f: JoinRequestFields =
        {
            NamespaceId = ns
            InviteId = inviteId
            ServerOrigin = origin
            Kind = IdentityKind.Keystore
            KeyId = bob.KeyId
            AuthPublicKey = bob.AuthPublicKey
            WrapPublicKey = bob.WrapPublicKey
            ExpiresAt = expiresAt
        }

    {
        Version = 1L
        NamespaceId = ns.Wire
        InviteId = inviteId.Wire
        ServerOrigin = origin.Value
        Kind = "keystore"
        KeyId = bob.KeyId.Wire
        AuthPublicKey = bob.AuthPublicKey.Wire
        WrapPublicKey = bob.WrapPublicKey.Wire
        ExpiresAt = expiresAt
        Signature =
            (bob.SignNamespaceJoinRequestIntent(ns, inviteId, origin, expiresAt) |> ok "sign").Wire
        InviteProof = (InviteSecrets.proof secret (JoinRequests.payload f)).Wire
    }

let private submitCmd raw : SubmitJoinRequestCommand =
    Requests.submitJoinRequest
        {
            InviteServerSecret = serverSecret.Wire
            JoinRequest = raw
        }
    |> ok "validate"

let private createInvite (f: Fixture) =
    Sharing.createInvite settings f.AliceId f.Shared (Some f.Membership) f.Cmd false 0 now

let tests =
    testList
        "sharing rules"
        [
            test
                "revoke-all-tokens needs the caller's key, a signature over the empty action fields and the matching challenge" {
                use f = setup ()

                let cmd: RevokeAllTokensCommand =
                    {
                        Kind = IdentityKind.Keystore
                        KeyId = f.Alice.KeyId
                        Challenge = challenge
                        Signature = f.Alice.SignRevokeAllTokensIntent challenge
                    }

                Expect.equal (Auth.revokeAllTokens cmd f.AliceId) (Ok()) "valid"

                Expect.equal
                    (status (Auth.revokeAllTokens { cmd with KeyId = f.Bob.KeyId } f.AliceId))
                    403
                    "other key"

                Expect.equal
                    (status (
                        Auth.revokeAllTokens
                            { cmd with Signature = f.Alice.SignLoginIntent challenge }
                            f.AliceId
                    ))
                    403
                    "other intent"

                let stored, _ =
                    Auth.mint
                        Auth.defaults
                        {
                            Purpose = Auth.revokeAllTokensPurpose
                            Kind = IdentityKind.Keystore
                        }
                        (Array.init 32 byte)
                        now

                Expect.equal
                    (Auth.useChallenge
                        (Some stored)
                        Auth.revokeAllTokensPurpose
                        IdentityKind.Keystore
                        now)
                        .Result
                    (Ok())
                    "challenge for this action"

                Expect.equal
                    (status
                        (Auth.useChallenge
                            (Some stored)
                            (Sharing.createInvitePurpose ns f.Cmd)
                            IdentityKind.Keystore
                            now)
                            .Result)
                    403
                    "not for another action"
            }
            test
                "create-invite binds the challenge to the action fields and checks caller, membership, kind, signature, expiry and limits" {
                use f = setup ()
                let invite = createInvite f |> ok "create"
                let response = Sharing.createInviteResponse invite

                Expect.equal
                    (response.ExpiresAt, response.MaxAccepted)
                    (f.Cmd.ExpiresAt, 2L)
                    "echoed exactly"

                let fieldsHash =
                    ActionFields.hash (
                        ActionFields.createInvite
                            {
                                NamespaceId = ns
                                InviteId = inviteId
                                InviteServerSecretHash = f.Cmd.InviteServerSecretHash
                                ExpiresAt = f.Cmd.ExpiresAt
                                MaxAccepted = 2
                            }
                    )

                Expect.equal
                    (Sharing.createInvitePurpose ns f.Cmd)
                    (ChallengePurpose.SensitiveAction(
                        SensitiveAction.CreateNamespaceInvite,
                        fieldsHash
                    ))
                    "challenge purpose"

                let create id sh m cmd taken active at =
                    Sharing.createInvite settings id sh m cmd taken active at

                Expect.equal
                    (status (
                        create
                            { f.AliceId with KeyId = f.Bob.KeyId }
                            f.Shared
                            (Some f.Membership)
                            f.Cmd
                            false
                            0
                            now
                    ))
                    403
                    "body key is not the caller"

                Expect.equal
                    (status (create f.AliceId f.Shared None f.Cmd false 0 now))
                    403
                    "not a member"

                Expect.equal
                    (status (
                        create
                            f.AliceId
                            { f.Shared with Kind = NamespaceKind.Default }
                            (Some f.Membership)
                            f.Cmd
                            false
                            0
                            now
                    ))
                    403
                    "default namespace"

                Expect.equal
                    (status (
                        create
                            f.AliceId
                            f.Shared
                            (Some f.Membership)
                            { f.Cmd with MaxAccepted = 3 }
                            false
                            0
                            now
                    ))
                    403
                    "signature over other fields"

                Expect.equal
                    (status (
                        create
                            f.AliceId
                            f.Shared
                            (Some f.Membership)
                            f.Cmd
                            false
                            0
                            (now.AddHours 2.0)
                    ))
                    400
                    "expired"

                Expect.equal
                    (status (
                        create
                            f.AliceId
                            f.Shared
                            (Some f.Membership)
                            f.Cmd
                            false
                            0
                            (now.AddHours -1.0)
                    ))
                    400
                    "more than 1 h ahead"

                Expect.equal
                    (status (create f.AliceId f.Shared (Some f.Membership) f.Cmd true 0 now))
                    409
                    "id taken"

                Expect.equal
                    (status (create f.AliceId f.Shared (Some f.Membership) f.Cmd false 5 now))
                    409
                    "5 active invites"
            }
            test
                "rendezvous: submit (idempotent), list verbatim, approve adds the member and counts the acceptance" {
                use f = setup ()
                let invite = createInvite f |> ok "invite"
                let raw = joinRequest f.Bob (unixNow + 300L)

                let submit inv pending =
                    Sharing.submit
                        settings
                        f.Bob.KeyId
                        ns
                        inviteId
                        (submitCmd raw)
                        raw
                        inv
                        false
                        pending
                        0
                        now

                let stored =
                    match submit (Some invite) [] |> ok "submit" with
                    | SubmitOutcome.Store(r, None) -> r
                    | other -> failtestf "%A" other

                let response = Sharing.submitResponse stored

                Expect.equal
                    (response.Status, response.RequesterKeyId)
                    ("pending", f.Bob.KeyId.Wire)
                    "pending"

                let expectedHash =
                    JoinRequests.hash (JoinRequests.payload (submitCmd raw).JoinRequest.Fields)

                Expect.equal
                    (response.JoinRequestHash, response.InviteId)
                    (expectedHash.Wire, inviteId.Wire)
                    "hash of the payload"

                match submit (Some invite) [ stored ] |> ok "again" with
                | SubmitOutcome.Existing r ->
                    Expect.equal r stored "identical resubmission returns the existing entry"
                | other -> failtestf "%A" other

                Expect.equal
                    (Sharing.listRequests ns [ stored ] now).Requests[0].JoinRequest
                    raw
                    "the stored request, verbatim"

                Expect.equal
                    (Sharing.list ns [ invite ] [ stored ] now).Invites[0].ActiveRequestCount
                    1L
                    "one pending request"

                let approval: ApproveJoinRequestCommand =
                    { InviteServerSecret = serverSecret; WrappedDek = wrapped }

                let approve m r i a members =
                    Sharing.approve m r i a false members 0 now

                let approved =
                    approve (Some f.Membership) (Some stored) (Some invite) approval 1
                    |> ok "approve"

                Expect.equal
                    (approved.Membership.KeyId,
                     approved.Request.Status,
                     approved.Invite.AcceptedCount)
                    (f.Bob.KeyId, JoinRequestStatus.Accepted, 1)
                    "member added, accepted counted"

                Expect.equal
                    (status (
                        approve
                            (Some f.Membership)
                            (Some approved.Request)
                            (Some approved.Invite)
                            approval
                            2
                    ))
                    404
                    "no longer pending"

                let wrongSecret =
                    { approval with
                        InviteServerSecret =
                            Bin.ofBytes<InviteServerSecretKind>(Array.zeroCreate 32) |> ok "zero"
                    }

                Expect.equal
                    (status (approve (Some f.Membership) (Some stored) (Some invite) wrongSecret 1))
                    403
                    "approver must hold the invite"

                Expect.equal
                    (status (
                        Sharing.approve
                            (Some f.Membership)
                            (Some stored)
                            (Some invite)
                            approval
                            true
                            1
                            0
                            now
                    ))
                    409
                    "requester already a member (approved through another request)"

                Expect.equal
                    (status (
                        approve
                            (Some f.Membership)
                            (Some stored)
                            (Some { invite with AcceptedCount = 2 })
                            approval
                            1
                    ))
                    409
                    "accepted limit re-checked"

                Expect.equal
                    (status (
                        approve
                            (Some f.Membership)
                            (Some stored)
                            (Some { invite with RevokedAt = Some now })
                            approval
                            1
                    ))
                    410
                    "revoked invite"

                Expect.equal
                    (status (approve (Some f.Membership) (Some stored) (Some invite) approval 32))
                    409
                    "member quota"

                Expect.equal
                    (status (approve None (Some stored) (Some invite) approval 1))
                    403
                    "approver not a member"

                Expect.equal
                    (Sharing.reject (Some f.Membership) (Some stored) |> ok "reject").Status
                    JoinRequestStatus.Rejected
                    "rejected"

                Expect.equal
                    (status (Sharing.reject (Some f.Membership) None))
                    404
                    "unknown request"

                let revoked = Sharing.revoke (Some f.Membership) (Some invite) now |> ok "revoke"

                Expect.equal
                    (Sharing.revoke (Some f.Membership) (Some revoked) (now.AddMinutes 1.0)
                     |> ok "again")
                        .RevokedAt
                    (Some now)
                    "idempotent"
            }
            test
                "submission refuses bad secrets, used-up or gone invites, foreign origins, bad expiries, signatures and members" {
                use f = setup ()
                let invite = createInvite f |> ok "invite"
                let raw = joinRequest f.Bob (unixNow + 300L)
                let good = submitCmd raw

                let submitWith (c: SubmitJoinRequestCommand) r inv isMember =
                    Sharing.submit settings f.Bob.KeyId ns inviteId c r inv isMember [] 0 now

                Expect.equal
                    (status (
                        Sharing.submit
                            settings
                            f.Alice.KeyId
                            ns
                            inviteId
                            good
                            raw
                            (Some invite)
                            false
                            []
                            0
                            now
                    ))
                    403
                    "caller is not the requester"

                let zeroSecret = Bin.ofBytes<InviteServerSecretKind>(Array.zeroCreate 32) |> ok "z"

                Expect.equal
                    (status (
                        submitWith
                            { good with InviteServerSecret = zeroSecret }
                            raw
                            (Some invite)
                            false
                    ))
                    403
                    "wrong server secret"

                Expect.equal (status (submitWith good raw None false)) 404 "unknown invite"

                Expect.equal
                    (status (submitWith good raw (Some { invite with RevokedAt = Some now }) false))
                    410
                    "revoked"

                Expect.equal
                    (status (submitWith good raw (Some { invite with ExpiresAt = unixNow }) false))
                    410
                    "expired invite"

                Expect.equal
                    (status (submitWith good raw (Some { invite with AcceptedCount = 2 }) false))
                    409
                    "used up"

                Expect.equal
                    (status (submitWith good raw (Some invite) true))
                    409
                    "already a member"

                let late = joinRequest f.Bob (unixNow + 700L)

                Expect.equal
                    (status (submitWith (submitCmd late) late (Some invite) false))
                    400
                    "expires after the maximum / invite"

                let other =
                    Sharing.settings (ServerOrigin.parseCanonical "https://other.example" |> ok "o")

                Expect.equal
                    (status (
                        Sharing.submit
                            other
                            f.Bob.KeyId
                            ns
                            inviteId
                            good
                            raw
                            (Some invite)
                            false
                            []
                            0
                            now
                    ))
                    400
                    "another server's origin"

                let forged =
                    { good with
                        JoinRequest =
                            { good.JoinRequest with
                                Signature = f.Alice.SignLoginIntent challenge
                            }
                    }

                Expect.equal
                    (status (submitWith forged raw (Some invite) false))
                    403
                    "bad signature"

                Expect.equal
                    (status (
                        Sharing.submit
                            settings
                            f.Bob.KeyId
                            ns
                            inviteId
                            good
                            raw
                            (Some invite)
                            false
                            []
                            20
                            now
                    ))
                    409
                    "20 pending on the invite"
            }
        ]
