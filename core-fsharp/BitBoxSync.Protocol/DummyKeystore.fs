/// The deterministic dummy keystore: a software identity derived from a label.
/// TEST / DEMO ONLY — anyone who knows the label has the private keys.
/// docs/protocol.md §8, §9.2, §9.3.
namespace BitBoxSync.Protocol

open System
open System.Security.Cryptography

/// The key material derived from a label (exposed so the derivation can be checked against vectors).
type DummyKeyMaterial =
    {
        RootSecret: byte[]
        AuthSeed: byte[]
        AuthPublicKey: AuthPublicKey
        KeyId: KeyId
        WrapPrivateKey: byte[]
        WrapPublicKey: WrapPublicKey
    }

    override m.ToString() =
        sprintf "DummyKeyMaterial(keyId=%s, <private keys redacted>)" m.KeyId.Wire

/// A software identity for tests and demos: signs the protocol's payloads and unwraps DEKs.
/// **Never use it for real data**: the private keys follow from the label alone.
[<Sealed>]
type DummyKeystore private (material: DummyKeyMaterial, signingKey: NSec.Cryptography.Key) =

    /// Derives the key material of a label (docs/protocol.md §9.3).
    static member Derive(label: string) : DummyKeyMaterial =
        if isNull label then
            nullArg "label"

        let root = Hashing.sha256 (ReadOnlySpan(Text.Encoding.UTF8.GetBytes label))
        let authSeed = Hashing.hkdfNoSalt (ReadOnlySpan root) Limits.Labels.DummyAuthSeed 32

        let wrapPrivate =
            Hashing.hkdfNoSalt (ReadOnlySpan root) Limits.Labels.DummyWrapSeed 32

        use key = Ed25519.importSeed (ReadOnlySpan authSeed)
        let authPublic = Ed25519.publicKey key

        let wrapPublic =
            match X25519.publicKeyOf (ReadOnlySpan wrapPrivate) with
            | Ok pk -> pk
            | Error e -> invalidOp e.Message

        {
            RootSecret = root
            AuthSeed = authSeed
            AuthPublicKey = authPublic
            KeyId = KeyIds.ofAuthPublicKey authPublic
            WrapPrivateKey = wrapPrivate
            WrapPublicKey = wrapPublic
        }

    /// A software identity from its two private keys (a 32-byte Ed25519 seed and a 32-byte X25519
    /// private key), signing and unwrapping with exactly the code of the dummy identity. This is
    /// what the client's LocalKeystore holds: random keys, protected at rest. Dispose it when done.
    static member FromSecrets(authSeed: byte[], wrapPrivateKey: byte[]) : DummyKeystore =
        if isNull authSeed || authSeed.Length <> 32 then
            invalidArg "authSeed" "the Ed25519 seed must be 32 bytes"

        if isNull wrapPrivateKey || wrapPrivateKey.Length <> 32 then
            invalidArg "wrapPrivateKey" "the X25519 private key must be 32 bytes"

        let key = Ed25519.importSeed (ReadOnlySpan authSeed)
        let authPublic = Ed25519.publicKey key

        let wrapPublic =
            match X25519.publicKeyOf (ReadOnlySpan wrapPrivateKey) with
            | Ok pk -> pk
            | Error e -> invalidArg "wrapPrivateKey" e.Message

        let material =
            {
                RootSecret = [||]
                AuthSeed = Array.copy authSeed
                AuthPublicKey = authPublic
                KeyId = KeyIds.ofAuthPublicKey authPublic
                WrapPrivateKey = Array.copy wrapPrivateKey
                WrapPublicKey = wrapPublic
            }

        new DummyKeystore(material, key)

    /// Creates the dummy identity of `label` (for example "demo-alice"). Dispose it when done.
    static member FromLabel(label: string) : DummyKeystore =
        let material = DummyKeystore.Derive label
        new DummyKeystore(material, Ed25519.importSeed (ReadOnlySpan material.AuthSeed))

    /// Always `keystore`.
    member _.Kind = IdentityKind.Keystore

    /// Ed25519 auth public key.
    member _.AuthPublicKey = material.AuthPublicKey

    /// X25519 wrap public key.
    member _.WrapPublicKey = material.WrapPublicKey

    /// SHA-256 of the auth public key.
    member _.KeyId = material.KeyId

    /// Signs the login intent for a challenge.
    member _.SignLoginIntent(challenge: Challenge) : Signature =
        Ed25519.sign
            signingKey
            (ReadOnlySpan(
                Intents.login
                    challenge
                    IdentityKind.Keystore
                    material.KeyId
                    material.AuthPublicKey
                    material.WrapPublicKey
            ))

    /// Signs the refresh intent for a challenge.
    member _.SignRefreshIntent(challenge: Challenge) : Signature =
        Ed25519.sign
            signingKey
            (ReadOnlySpan(Intents.refresh challenge IdentityKind.Keystore material.KeyId))

    /// Signs the revoke-all-tokens intent (empty action fields).
    member _.SignRevokeAllTokensIntent(challenge: Challenge) : Signature =
        let intent =
            Intents.sensitiveAction
                SensitiveAction.RevokeAllTokens
                challenge
                IdentityKind.Keystore
                material.KeyId
                ActionFields.revokeAllTokens

        Ed25519.sign signingKey (ReadOnlySpan intent)

    /// Signs the create-namespace-invite intent. Rejects a negative expiry ("namespace invite
    /// expiry before unix epoch") and maxAccepted outside 0..10 ("namespace invite limits are out of range").
    member _.SignCreateNamespaceInviteIntent
        (challenge: Challenge, fields: CreateInviteFields)
        : Result<Signature, string> =
        if fields.ExpiresAt < 0L then
            Error "namespace invite expiry before unix epoch"
        elif
            fields.MaxAccepted < 0
            || fields.MaxAccepted > Limits.MaxAcceptedJoinRequestsPerInvite
        then
            Error "namespace invite limits are out of range"
        else
            let intent =
                Intents.sensitiveAction
                    SensitiveAction.CreateNamespaceInvite
                    challenge
                    IdentityKind.Keystore
                    material.KeyId
                    (ActionFields.createInvite fields)

            Ok(Ed25519.sign signingKey (ReadOnlySpan intent))

    /// Builds the join-request payload with this identity's keys and signs it. Rejects a negative
    /// expiry ("join request expiry before unix epoch").
    member _.SignNamespaceJoinRequestIntent
        (ns: NamespaceId, invite: InviteId, origin: ServerOrigin, expiresAt: int64)
        : Result<Signature, string> =
        if expiresAt < 0L then
            Error "join request expiry before unix epoch"
        else
            let payload =
                JoinRequests.payload
                    {
                        NamespaceId = ns
                        InviteId = invite
                        ServerOrigin = origin
                        Kind = IdentityKind.Keystore
                        KeyId = material.KeyId
                        AuthPublicKey = material.AuthPublicKey
                        WrapPublicKey = material.WrapPublicKey
                        ExpiresAt = expiresAt
                    }

            Ok(Ed25519.sign signingKey (ReadOnlySpan payload))

    /// The 257-byte dummy attestation: 0x00 ‖ H1 ‖ … ‖ H8 with M = SHA-256(challenge ‖ authPk),
    /// H1 = SHA-256(M), H(k+1) = SHA-256(Hk).
    member _.Attest(challenge: Challenge) : Attestation =
        DummyKeystore.AttestationFor(challenge, material.AuthPublicKey)

    /// Unwraps a namespace DEK addressed to this identity, refusing another namespace's binding.
    member _.UnwrapNamespaceDek(ns: NamespaceId, wrapped: WrappedDek) : Result<Dek, CryptoError> =
        DekWrap.unwrap material.WrapPrivateKey ns wrapped

    /// The dummy attestation any identity with `authPublicKey` would produce for `challenge`
    /// (a test-mode server recomputes it to accept dummy attestations).
    static member AttestationFor(challenge: Challenge, authPublicKey: AuthPublicKey) : Attestation =
        let m =
            Hashing.sha256 (
                ReadOnlySpan(Array.append (challenge.Span.ToArray()) (authPublicKey.Span.ToArray()))
            )

        let out = Array.zeroCreate 257
        let mutable h = m

        for k in 0..7 do
            h <- SHA256.HashData h
            h.CopyTo(out, 1 + 32 * k)

        Bin.trusted<AttestationKind> out

    override _.ToString() =
        sprintf "DummyKeystore(keyId=%s)" material.KeyId.Wire

    interface IDisposable with
        member _.Dispose() =
            signingKey.Dispose()
            // The private bytes this object holds are zeroed (the signing key is libsodium's).
            Array.Clear material.AuthSeed
            Array.Clear material.WrapPrivateKey
            Array.Clear material.RootSecret
