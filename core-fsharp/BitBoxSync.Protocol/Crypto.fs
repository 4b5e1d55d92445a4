/// Cryptographic primitives used by the protocol: SHA-256, HMAC, HKDF (BCL), Ed25519 and X25519
/// (NSec/libsodium), XChaCha20-Poly1305 (HChaCha20 here + BCL ChaCha20-Poly1305).
/// docs/protocol.md §3.
namespace BitBoxSync.Protocol

open System
open System.Buffers.Binary
open System.Security.Cryptography
open NSec.Cryptography

type private BclChaCha = System.Security.Cryptography.ChaCha20Poly1305

/// Why a cryptographic operation failed. `Message` uses the reference client's words.
type CryptoError =
    /// A namespace ID that is not 16 bytes.
    | InvalidNamespaceId
    /// A wrapped DEK that is empty, of the wrong length, or decrypts to the wrong length.
    | InvalidWrappedDek
    /// A wrapped DEK whose first byte is not a known format version.
    | UnsupportedVersion
    /// The HPKE ciphertext of a wrapped DEK failed authentication.
    | OpenWrappedDekFailed
    /// HPKE decapsulation failed (bad `enc`, all-zero DH output).
    | DecapFailed
    /// Encapsulation failed (the recipient key is a low-order point).
    | EncapFailed
    /// A private key that is not 32 bytes.
    | InvalidPrivateKey
    /// The wrapped DEK is bound to another namespace.
    | NamespaceMismatch
    /// An item nonce that is not 24 bytes.
    | InvalidNonce
    /// A key that is not 32 bytes.
    | InvalidKey
    /// The received AAD differs from the one recomputed for (namespace, item, version).
    | AadMismatch
    /// The item failed AEAD authentication.
    | DecryptFailed
    /// A plaintext over the 65 520-byte limit.
    | PlaintextTooLarge of size: int

    /// The error text.
    member e.Message =
        match e with
        | InvalidNamespaceId -> "invalid namespace id"
        | InvalidWrappedDek -> "invalid wrapped dek"
        | UnsupportedVersion -> "unsupported version"
        | OpenWrappedDekFailed -> "open wrapped dek: message authentication failed"
        | DecapFailed -> "construct hpke recipient: decapsulation failed"
        | EncapFailed -> "construct hpke sender: encapsulation failed"
        | InvalidPrivateKey -> "parse wrap private key: must be 32 bytes"
        | NamespaceMismatch -> "namespace mismatch"
        | InvalidNonce -> "item nonce must be 24 bytes"
        | InvalidKey -> "key must be 32 bytes"
        | AadMismatch -> "aad mismatch"
        | DecryptFailed -> "decrypt item: message authentication failed"
        | PlaintextTooLarge size ->
            sprintf
                "item plaintext of %d bytes exceeds maximum %d bytes"
                size
                Limits.MaxItemPlaintextSize

    override e.ToString() = e.Message

/// Byte-string helpers.
module internal Bytes =
    let ascii (s: string) = Text.Encoding.ASCII.GetBytes s

    let concat (parts: byte[] list) = Array.concat parts

    let u16be (v: int) =
        let b = Array.zeroCreate 2
        BinaryPrimitives.WriteUInt16BigEndian(Span b, uint16 v)
        b

    let u32be (v: uint32) =
        let b = Array.zeroCreate 4
        BinaryPrimitives.WriteUInt32BigEndian(Span b, v)
        b

    let u64be (v: uint64) =
        let b = Array.zeroCreate 8
        BinaryPrimitives.WriteUInt64BigEndian(Span b, v)
        b

/// SHA-256, HMAC-SHA256 and HKDF-SHA256 (BCL).
module Hashing =
    /// SHA-256 of the bytes.
    let sha256 (data: ReadOnlySpan<byte>) : byte[] = SHA256.HashData data

    /// HMAC-SHA256(key, message).
    let hmacSha256 (key: ReadOnlySpan<byte>) (message: ReadOnlySpan<byte>) : byte[] =
        HMACSHA256.HashData(key, message)

    /// HKDF-SHA256 extract (an empty salt means 32 zero bytes, as RFC 5869 says).
    let hkdfExtract (salt: ReadOnlySpan<byte>) (ikm: ReadOnlySpan<byte>) : byte[] =
        let prk = Array.zeroCreate 32
        HKDF.Extract(HashAlgorithmName.SHA256, ikm, salt, Span prk) |> ignore
        prk

    /// HKDF-SHA256 expand.
    let hkdfExpand (prk: ReadOnlySpan<byte>) (info: ReadOnlySpan<byte>) (length: int) : byte[] =
        let okm = Array.zeroCreate length
        HKDF.Expand(HashAlgorithmName.SHA256, prk, Span okm, info)
        okm

    /// HKDF-SHA256 with an empty salt, as every protocol derivation uses it.
    let hkdfNoSalt (ikm: ReadOnlySpan<byte>) (info: string) (length: int) : byte[] =
        let prk = hkdfExtract ReadOnlySpan.Empty ikm
        hkdfExpand (ReadOnlySpan prk) (ReadOnlySpan(Bytes.ascii info)) length

    /// Constant-time equality of two byte strings.
    let fixedTimeEquals (a: ReadOnlySpan<byte>) (b: ReadOnlySpan<byte>) : bool =
        CryptographicOperations.FixedTimeEquals(a, b)

/// Ed25519 (RFC 8032 pure) through NSec / libsodium.
module Ed25519 =
    let private algorithm = SignatureAlgorithm.Ed25519

    /// Imports a 32-byte RFC 8032 seed as a signing key. The caller disposes it.
    let importSeed (seed: ReadOnlySpan<byte>) : Key =
        if seed.Length <> 32 then
            invalidArg "seed" "an Ed25519 seed must be 32 bytes"

        Key.Import(algorithm, seed, KeyBlobFormat.RawPrivateKey)

    /// The public key of a signing key.
    let publicKey (key: Key) : AuthPublicKey =
        Bin.trusted<AuthPublicKeyKind>(key.PublicKey.Export KeyBlobFormat.RawPublicKey)

    /// Signs a message (deterministic).
    let sign (key: Key) (message: ReadOnlySpan<byte>) : Signature =
        Bin.trusted<SignatureKind>(algorithm.Sign(key, message))

    /// Verifies a signature; false for a public key libsodium cannot import.
    let verify
        (publicKey: AuthPublicKey)
        (message: ReadOnlySpan<byte>)
        (signature: Signature)
        : bool =
        let mutable pk = Unchecked.defaultof<PublicKey>

        PublicKey.TryImport(algorithm, publicKey.Span, KeyBlobFormat.RawPublicKey, &pk)
        && algorithm.Verify(pk, message, signature.Span)

/// X25519 (RFC 7748) with access to the raw shared secret, as HPKE needs.
module X25519 =
    let private algorithm = KeyAgreementAlgorithm.X25519

    /// Imports a 32-byte private key (unclamped bytes are fine: X25519 clamps). Caller disposes.
    let importPrivate (privateKey: ReadOnlySpan<byte>) : Result<Key, CryptoError> =
        if privateKey.Length <> 32 then
            Error InvalidPrivateKey
        else
            Ok(Key.Import(algorithm, privateKey, KeyBlobFormat.RawPrivateKey))

    /// The public key of a private key.
    let publicKey (key: Key) : WrapPublicKey =
        Bin.trusted<WrapPublicKeyKind>(key.PublicKey.Export KeyBlobFormat.RawPublicKey)

    /// The public key of raw private key bytes.
    let publicKeyOf (privateKey: ReadOnlySpan<byte>) : Result<WrapPublicKey, CryptoError> =
        importPrivate privateKey
        |> Result.map (fun key ->
            use key = key
            publicKey key)

    let private agreeRaw (privateKey: Key) (pk: PublicKey) : byte[] =
        let exportable =
            SharedSecretCreationParameters(ExportPolicy = KeyExportPolicies.AllowPlaintextExport)

        let secret = algorithm.Agree(privateKey, pk, &exportable)

        if isNull secret then
            null
        else
            try
                secret.Export SharedSecretBlobFormat.RawSharedSecret
            finally
                secret.Dispose()

    /// Raw X25519(privateKey, publicKey). Fails when the output would be all-zero (low-order
    /// public key) or the public key cannot be imported.
    let agree (privateKey: Key) (peer: ReadOnlySpan<byte>) : Result<byte[], unit> =
        let mutable pk = Unchecked.defaultof<PublicKey>

        if not (PublicKey.TryImport(algorithm, peer, KeyBlobFormat.RawPublicKey, &pk)) then
            Error()
        else
            let raw =
                try
                    agreeRaw privateKey pk
                with :? CryptographicException ->
                    null

            if isNull raw || Array.forall ((=) 0uy) raw then
                Error()
            else
                Ok raw

    let private probe =
        lazy
            // Any clamped scalar is a multiple of the cofactor, so a low-order point always maps
            // to the identity (all-zero output) under it.
            let scalar = Array.init 32 (fun i -> byte (i + 1))
            Key.Import(algorithm, ReadOnlySpan scalar, KeyBlobFormat.RawPrivateKey)

    /// True for the low-order (small-subgroup) points that make every DH output all-zero.
    /// Our server rejects these at registration (docs/protocol.md §3.1).
    let isLowOrder (publicKey: WrapPublicKey) : bool =
        match agree probe.Value publicKey.Span with
        | Ok _ -> false
        | Error() -> true

/// XChaCha20-Poly1305 (libsodium / x/crypto `NewX` construction): HChaCha20 subkey from the first
/// 16 nonce bytes, then RFC 8439 ChaCha20-Poly1305 with nonce `0^4 ‖ nonce[16..24]`.
module XChaCha20Poly1305 =
    let inline private rotl (v: uint32) (n: int) = (v <<< n) ||| (v >>> (32 - n))

    /// HChaCha20(key, nonce16): the 32-byte subkey.
    let hchacha20
        (key: ReadOnlySpan<byte>)
        (nonce16: ReadOnlySpan<byte>)
        (subkey: Span<byte>)
        : unit =
        let s = Array.zeroCreate<uint32> 16
        s[0] <- 0x61707865u
        s[1] <- 0x3320646eu
        s[2] <- 0x79622d32u
        s[3] <- 0x6b206574u

        for i in 0..7 do
            s[4 + i] <- BinaryPrimitives.ReadUInt32LittleEndian(key.Slice(4 * i, 4))

        for i in 0..3 do
            s[12 + i] <- BinaryPrimitives.ReadUInt32LittleEndian(nonce16.Slice(4 * i, 4))

        let inline quarter a b c d =
            s[a] <- s[a] + s[b]
            s[d] <- rotl (s[d] ^^^ s[a]) 16
            s[c] <- s[c] + s[d]
            s[b] <- rotl (s[b] ^^^ s[c]) 12
            s[a] <- s[a] + s[b]
            s[d] <- rotl (s[d] ^^^ s[a]) 8
            s[c] <- s[c] + s[d]
            s[b] <- rotl (s[b] ^^^ s[c]) 7

        for _ in 1..10 do
            quarter 0 4 8 12
            quarter 1 5 9 13
            quarter 2 6 10 14
            quarter 3 7 11 15
            quarter 0 5 10 15
            quarter 1 6 11 12
            quarter 2 7 8 13
            quarter 3 4 9 14

        for i in 0..3 do
            BinaryPrimitives.WriteUInt32LittleEndian(subkey.Slice(4 * i, 4), s[i])
            BinaryPrimitives.WriteUInt32LittleEndian(subkey.Slice(16 + 4 * i, 4), s[12 + i])

    /// The RFC 8439 cipher under the HChaCha20 subkey of (key, nonce[0..16]), and the inner
    /// 12-byte nonce `0^4 ‖ nonce[16..24]` written into `inner`. The subkey is wiped.
    let private cipherFor
        (key: ReadOnlySpan<byte>)
        (nonce: ReadOnlySpan<byte>)
        (inner: Span<byte>)
        : BclChaCha =
        let subkey = Span<byte>(Array.zeroCreate 32)
        hchacha20 key (nonce.Slice(0, 16)) subkey
        inner.Slice(0, 4).Clear()
        nonce.Slice(16, 8).CopyTo(inner.Slice 4)
        let aead = new BclChaCha(Span<byte>.op_Implicit subkey)
        CryptographicOperations.ZeroMemory subkey
        aead

    /// Seals `plaintext` into `destination` (plaintext length + 16 bytes: ciphertext ‖ tag).
    let seal
        (key: ReadOnlySpan<byte>)
        (nonce: ReadOnlySpan<byte>)
        (plaintext: ReadOnlySpan<byte>)
        (aad: ReadOnlySpan<byte>)
        (destination: Span<byte>)
        : Result<unit, CryptoError> =
        if key.Length <> 32 then
            Error InvalidKey
        elif nonce.Length <> Limits.ItemNonceLength then
            Error InvalidNonce
        elif destination.Length <> plaintext.Length + Limits.AeadTagLength then
            invalidArg "destination" "destination must be plaintext length + 16"
        else
            let inner = Span<byte>(Array.zeroCreate 12)
            use aead = cipherFor key nonce inner

            aead.Encrypt(
                inner,
                plaintext,
                destination.Slice(0, plaintext.Length),
                destination.Slice plaintext.Length,
                aad
            )

            Ok()

    /// Opens `ciphertext ‖ tag` into `destination` (ciphertext length - 16 bytes).
    let openTo
        (key: ReadOnlySpan<byte>)
        (nonce: ReadOnlySpan<byte>)
        (sealedBytes: ReadOnlySpan<byte>)
        (aad: ReadOnlySpan<byte>)
        (destination: Span<byte>)
        : Result<unit, CryptoError> =
        if key.Length <> 32 then
            Error InvalidKey
        elif nonce.Length <> Limits.ItemNonceLength then
            Error InvalidNonce
        elif sealedBytes.Length < Limits.AeadTagLength then
            Error DecryptFailed
        elif destination.Length <> sealedBytes.Length - Limits.AeadTagLength then
            invalidArg "destination" "destination must be ciphertext length - 16"
        else
            let inner = Span<byte>(Array.zeroCreate 12)
            use aead = cipherFor key nonce inner
            let n = sealedBytes.Length - Limits.AeadTagLength

            try
                aead.Decrypt(inner, sealedBytes.Slice(0, n), sealedBytes.Slice n, destination, aad)
                Ok()
            with :? AuthenticationTagMismatchException ->
                destination.Clear()
                Error DecryptFailed

    /// Seals into a new array.
    let encrypt
        (key: byte[])
        (nonce: byte[])
        (plaintext: byte[])
        (aad: byte[])
        : Result<byte[], CryptoError> =
        let out = Array.zeroCreate (plaintext.Length + Limits.AeadTagLength)

        seal
            (ReadOnlySpan key)
            (ReadOnlySpan nonce)
            (ReadOnlySpan plaintext)
            (ReadOnlySpan aad)
            (Span out)
        |> Result.map (fun () -> out)

    /// Opens into a new array.
    let decrypt
        (key: byte[])
        (nonce: byte[])
        (sealedBytes: byte[])
        (aad: byte[])
        : Result<byte[], CryptoError> =
        if sealedBytes.Length < Limits.AeadTagLength then
            Error DecryptFailed
        else
            let out = Array.zeroCreate (sealedBytes.Length - Limits.AeadTagLength)

            openTo
                (ReadOnlySpan key)
                (ReadOnlySpan nonce)
                (ReadOnlySpan sealedBytes)
                (ReadOnlySpan aad)
                (Span out)
            |> Result.map (fun () -> out)
