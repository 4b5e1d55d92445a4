/// docs/engine.md §11.8 verification lines, against the pure decision
/// (`Core.Sharing.verifyJoinRequest`).
module BitBoxSync.Engine.Tests.CoreChecklistTests

open System
open Expecto
open BitBoxSync.Protocol
open BitBoxSync.Protocol.Wire

let private ok what (r: Result<'T, 'E>) =
    match r with
    | Ok v -> v
    | Error e -> failwithf "%s: %A" what e

let private now = DateTimeOffset(2026, 11, 24, 12, 0, 0, TimeSpan.Zero)
let private ns = Bin.ofBytes<NamespaceIdKind>(Array.init 16 byte) |> ok "ns"

let private inviteId =
    Bin.ofBytes<InviteIdKind>(Array.init 16 (fun i -> byte (i + 16))) |> ok "invite"

let private secret =
    Bin.ofBytes<InviteSecretKind>(Array.init 32 (fun i -> byte (i + 32)))
    |> ok "secret"

let private origin =
    ServerOrigin.parseCanonical "https://sync.example" |> ok "origin"

let private invite: InviteToken =
    {
        Version = 1
        ServerOrigin = origin
        NamespaceId = ns
        InviteId = inviteId
        ExpiresAt = now.ToUnixTimeSeconds() + 600L
        InviteSecret = secret
    }

/// A valid entry from "bob" for the invite, with its hash.
let private entry (expiresIn: int64) =
    use bob = DummyKeystore.FromLabel "bob"
    let expiresAt = now.ToUnixTimeSeconds() + expiresIn

    let signature =
        bob.SignNamespaceJoinRequestIntent(ns, inviteId, origin, expiresAt) |> ok "sign"

    let fields: JoinRequestFields =
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

    let payload = JoinRequests.payload fields

    let request: NamespaceJoinRequest =
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
            Signature = signature.Wire
            InviteProof = (InviteSecrets.proof secret payload).Wire
        }

    request, (JoinRequests.hash payload).Wire, bob.WrapPublicKey

let private verify (i: InviteToken) (r: NamespaceJoinRequest) (hash: string) =
    BitBoxSync.Core.Sharing.verifyJoinRequest ns i hash r now

let tests =
    testList
        "checklist docs/engine.md §11.8 (verification)"
        [
            test "TestVerifyJoinRequestForApproval" {
                let request, hash, wrap = entry 300L
                let v = verify invite request hash |> ok "verifies"
                Expect.equal v.WrapPublicKey wrap "the requester's wrap key"

                Expect.equal
                    v.ServerSecret
                    (InviteSecrets.serverSecret secret)
                    "the derived invite server secret"

                Expect.equal v.Hash.Wire hash "the entry's hash"
            }

            test "TestVerifyJoinRequestForApprovalRejectsTampering" {
                let request, hash, _ = entry 300L
                let otherKey = DummyKeystore.Derive "mallory"

                let cases: (string * InviteToken * NamespaceJoinRequest * string * string) list =
                    [
                        "invite version",
                        { invite with Version = 2 },
                        request,
                        hash,
                        "unsupported version"
                        "invite expired",
                        { invite with ExpiresAt = now.ToUnixTimeSeconds() - 1L },
                        request,
                        hash,
                        "invite has expired"
                        "request outlives the invite",
                        { invite with ExpiresAt = now.ToUnixTimeSeconds() + 100L },
                        request,
                        hash,
                        "join request expires after invite"
                        "another namespace",
                        invite,
                        { request with NamespaceId = String('f', 32) },
                        hash,
                        "join request namespace mismatch"
                        "another invite",
                        invite,
                        { request with InviteId = String('f', 32) },
                        hash,
                        "join request invite mismatch"
                        "another origin",
                        invite,
                        { request with ServerOrigin = "https://other.example" },
                        hash,
                        "join request server origin mismatch"
                        "request version",
                        invite,
                        { request with Version = 2L },
                        hash,
                        "unsupported version"
                        "request kind",
                        invite,
                        { request with Kind = "other" },
                        hash,
                        "invalid kind"
                        "request expired",
                        invite,
                        { request with ExpiresAt = now.ToUnixTimeSeconds() - 1L },
                        hash,
                        "join request has expired"
                        "uppercase key ID",
                        invite,
                        { request with KeyId = request.KeyId.ToUpperInvariant() },
                        hash,
                        "lowercase hex"
                        "key ID of another auth key",
                        invite,
                        { request with AuthPublicKey = otherKey.AuthPublicKey.Wire },
                        hash,
                        "key id does not match auth public key"
                        "another wrap key (hash)",
                        invite,
                        { request with WrapPublicKey = otherKey.WrapPublicKey.Wire },
                        hash,
                        "join request hash mismatch"
                        "hash of something else",
                        invite,
                        request,
                        String('0', 64),
                        "join request hash mismatch"
                        "bad signature",
                        invite,
                        { request with Signature = String('0', 128) },
                        hash,
                        "invalid join request signature"
                        "proof under another secret",
                        invite,
                        { request with
                            InviteProof =
                                (InviteSecrets.proof
                                    (Bin.ofBytes<InviteSecretKind>(Array.zeroCreate 32) |> ok "s")
                                    [||])
                                    .Wire
                        },
                        hash,
                        "invalid invite proof"
                    ]

                for name, i, r, h, reason in cases do
                    match verify i r h with
                    | Ok _ -> failtestf "%s: accepted" name
                    | Error e -> Expect.stringContains e reason name
            }
        ]
