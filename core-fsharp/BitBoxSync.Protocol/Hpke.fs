/// HPKE (RFC 9180) base mode for the single suite of the protocol: DHKEM(X25519, HKDF-SHA256),
/// HKDF-SHA256, ChaCha20-Poly1305. Implements docs/protocol.md §3.6 (computation: §3.6.1).
module BitBoxSync.Protocol.Hpke

open System
open System.Security.Cryptography

let private suiteKem = Bytes.concat [ Bytes.ascii "KEM"; Bytes.u16be 0x0020 ]

let private suiteHpke =
    Bytes.concat
        [
            Bytes.ascii "HPKE"
            Bytes.u16be 0x0020
            Bytes.u16be 0x0001
            Bytes.u16be 0x0003
        ]

let private version = Bytes.ascii "HPKE-v1"

/// LabeledExtract(suite, salt, label, ikm).
let internal labeledExtract (suite: byte[]) (salt: byte[]) (label: string) (ikm: byte[]) : byte[] =
    let labeled = Bytes.concat [ version; suite; Bytes.ascii label; ikm ]
    Hashing.hkdfExtract (ReadOnlySpan salt) (ReadOnlySpan labeled)

/// LabeledExpand(suite, prk, label, info, L).
let internal labeledExpand
    (suite: byte[])
    (prk: byte[])
    (label: string)
    (info: byte[])
    (length: int)
    : byte[] =
    let labeled =
        Bytes.concat [ Bytes.u16be length; version; suite; Bytes.ascii label; info ]

    Hashing.hkdfExpand (ReadOnlySpan prk) (ReadOnlySpan labeled) length

/// DeriveKeyPair(ikm) for X25519: the private key (RFC 9180 §7.1.3).
let deriveKeyPair (ikm: byte[]) : byte[] =
    let prk = labeledExtract suiteKem [||] "dkp_prk" ikm
    labeledExpand suiteKem prk "sk" [||] 32

/// An HPKE context after the key schedule, with every intermediate value (for test vectors).
type Context =
    {
        /// The encapsulated key (ephemeral public key).
        Enc: byte[]
        /// The KEM shared secret.
        SharedSecret: byte[]
        /// `0x00 ‖ psk_id_hash ‖ info_hash`.
        KeyScheduleContext: byte[]
        /// The key-schedule secret.
        Secret: byte[]
        /// AEAD key.
        Key: byte[]
        /// AEAD base nonce.
        BaseNonce: byte[]
        /// Exporter secret.
        ExporterSecret: byte[]
    }

let private extractAndExpand (dh: byte[]) (kemContext: byte[]) =
    let eaePrk = labeledExtract suiteKem [||] "eae_prk" dh
    labeledExpand suiteKem eaePrk "shared_secret" kemContext 32

let private keySchedule (enc: byte[]) (sharedSecret: byte[]) (info: byte[]) : Context =
    let pskIdHash = labeledExtract suiteHpke [||] "psk_id_hash" [||]
    let infoHash = labeledExtract suiteHpke [||] "info_hash" info
    let ctx = Bytes.concat [ [| 0uy |]; pskIdHash; infoHash ]
    let secret = labeledExtract suiteHpke sharedSecret "secret" [||]

    {
        Enc = enc
        SharedSecret = sharedSecret
        KeyScheduleContext = ctx
        Secret = secret
        Key = labeledExpand suiteHpke secret "key" ctx 32
        BaseNonce = labeledExpand suiteHpke secret "base_nonce" ctx 12
        ExporterSecret = labeledExpand suiteHpke secret "exp" ctx 32
    }

/// SetupBaseS with a caller-supplied ephemeral private key (randomness enters as an argument).
let setupBaseSender
    (ephemeralPrivateKey: byte[])
    (recipientPublicKey: byte[])
    (info: byte[])
    : Result<Context, CryptoError> =
    match X25519.importPrivate (ReadOnlySpan ephemeralPrivateKey) with
    | Error e -> Error e
    | Ok ephemeral ->
        use ephemeral = ephemeral
        let enc = (X25519.publicKey ephemeral).Span.ToArray()

        match X25519.agree ephemeral (ReadOnlySpan recipientPublicKey) with
        | Error() -> Error EncapFailed
        | Ok dh ->
            let shared = extractAndExpand dh (Bytes.concat [ enc; recipientPublicKey ])
            Ok(keySchedule enc shared info)

/// SetupBaseR: decapsulates `enc` with the recipient's private key.
let setupBaseRecipient
    (recipientPrivateKey: byte[])
    (enc: byte[])
    (info: byte[])
    : Result<Context, CryptoError> =
    match X25519.importPrivate (ReadOnlySpan recipientPrivateKey) with
    | Error e -> Error e
    | Ok recipient ->
        use recipient = recipient
        let pkR = (X25519.publicKey recipient).Span.ToArray()

        match X25519.agree recipient (ReadOnlySpan enc) with
        | Error() -> Error DecapFailed
        | Ok dh ->
            let shared = extractAndExpand dh (Bytes.concat [ enc; pkR ])
            Ok(keySchedule enc shared info)

/// The nonce of message `sequence`: base_nonce XOR I2OSP(sequence, 12).
let nonceFor (ctx: Context) (sequence: uint64) : byte[] =
    let n = Array.copy ctx.BaseNonce
    let s = Bytes.u64be sequence

    for i in 0..7 do
        n[4 + i] <- n[4 + i] ^^^ s[i]

    n

/// Seals message `sequence` of the context.
let seal (ctx: Context) (sequence: uint64) (aad: byte[]) (plaintext: byte[]) : byte[] =
    use aead = new System.Security.Cryptography.ChaCha20Poly1305(ctx.Key)
    let out = Array.zeroCreate (plaintext.Length + 16)

    aead.Encrypt(
        nonceFor ctx sequence,
        plaintext,
        Span(out, 0, plaintext.Length),
        Span(out, plaintext.Length, 16),
        aad
    )

    out

/// Opens message `sequence` of the context; Error on authentication failure.
let openMessage
    (ctx: Context)
    (sequence: uint64)
    (aad: byte[])
    (sealedBytes: byte[])
    : Result<byte[], unit> =
    if sealedBytes.Length < 16 then
        Error()
    else
        use aead = new System.Security.Cryptography.ChaCha20Poly1305(ctx.Key)
        let n = sealedBytes.Length - 16
        let out = Array.zeroCreate n

        try
            aead.Decrypt(
                nonceFor ctx sequence,
                ReadOnlySpan(sealedBytes, 0, n),
                ReadOnlySpan(sealedBytes, n, 16),
                Span out,
                ReadOnlySpan aad
            )

            Ok out
        with :? AuthenticationTagMismatchException ->
            Error()
