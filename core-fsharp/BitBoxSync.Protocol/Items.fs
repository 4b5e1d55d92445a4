/// Namespace key derivations, item IDs, the item AAD, item sealing and DEK wrapping.
/// Implements docs/protocol.md §3.2–§3.6.
namespace BitBoxSync.Protocol

open System
open System.Buffers.Binary

/// The two keys derived from a namespace DEK (secret; never printed).
[<Sealed>]
type NamespaceKeys internal (blobKey: byte[], mapKey: byte[]) =
    // libsodium's XChaCha20-Poly1305 key, imported once: it is the faster construction for small
    // items (see ItemCrypto.SmallItemThreshold and benchmarks/README.md).
    let sodiumKey =
        lazy
            NSec.Cryptography.Key.Import(
                NSec.Cryptography.AeadAlgorithm.XChaCha20Poly1305,
                ReadOnlySpan blobKey,
                NSec.Cryptography.KeyBlobFormat.RawSymmetricKey
            )

    /// HKDF(DEK, info "bitboxsync-namespace-blob-aead-v1"): the item encryption key.
    member internal _.BlobKey = blobKey
    /// The blob key as a libsodium key.
    member internal _.SodiumBlobKey = sodiumKey.Value
    /// HKDF(DEK, info "bitboxsync-namespace-item-id-v1"): the item-ID HMAC key.
    member internal _.MapKey = mapKey
    override _.ToString() = "NamespaceKeys(<redacted>)"

/// Derivation of namespace keys.
module NamespaceKeys =
    /// Derives the blob key and the map key from a DEK.
    let derive (dek: Dek) : NamespaceKeys =
        NamespaceKeys(
            Hashing.hkdfNoSalt dek.Span Limits.Labels.BlobKey 32,
            Hashing.hkdfNoSalt dek.Span Limits.Labels.MapKey 32
        )

    /// A copy of the blob key (tests and vectors only).
    let blobKey (keys: NamespaceKeys) = Array.copy keys.BlobKey

    /// A copy of the map key (tests and vectors only).
    let mapKey (keys: NamespaceKeys) = Array.copy keys.MapKey

/// Item IDs: HMAC-SHA256(mapKey, UTF-8(logicalKey)).
module ItemIds =
    /// The item ID of a logical key string (the engine passes its own length-delimited encoding).
    let compute (keys: NamespaceKeys) (logicalKey: string) : ItemId =
        let bytes = Text.Encoding.UTF8.GetBytes logicalKey
        Bin.trusted<ItemIdKind>(Hashing.hmacSha256 (ReadOnlySpan keys.MapKey) (ReadOnlySpan bytes))

    /// The item ID of logical key bytes.
    let ofBytes (keys: NamespaceKeys) (logicalKey: ReadOnlySpan<byte>) : ItemId =
        Bin.trusted<ItemIdKind>(Hashing.hmacSha256 (ReadOnlySpan keys.MapKey) logicalKey)

/// The 76-byte item AAD: label ‖ 0x01 ‖ namespace ID ‖ item ID ‖ u64be(version).
module Aad =
    let private label = Bytes.ascii Limits.Labels.ItemAad

    /// Writes the AAD into a 76-byte span.
    let write (ns: NamespaceId) (item: ItemId) (version: uint64) (destination: Span<byte>) : unit =
        label.CopyTo destination
        destination[19] <- 1uy
        ns.Span.CopyTo(destination.Slice 20)
        item.Span.CopyTo(destination.Slice 36)
        BinaryPrimitives.WriteUInt64BigEndian(destination.Slice 68, version)

    /// Builds the AAD for (namespace, item, version).
    let build (ns: NamespaceId) (item: ItemId) (version: uint64) : ItemAad =
        let b = Array.zeroCreate Limits.ItemAadLength
        write ns item version (Span b)
        Bin.trusted<ItemAadKind> b

    /// Builds the AAD from wire strings, with the strict lowercase decoder for both IDs.
    let buildFromHex
        (namespaceId: string)
        (itemId: string)
        (version: uint64)
        : Result<ItemAad, FieldError> =
        Bin.parse<NamespaceIdKind> namespaceId
        |> Result.bind (fun ns ->
            Bin.parse<ItemIdKind> itemId |> Result.map (fun item -> build ns item version))

/// An encrypted item as it travels on the wire.
type SealedItem = { Nonce: ItemNonce; Aad: ItemAad; Ciphertext: Ciphertext }

/// Item encryption (XChaCha20-Poly1305 under the blob key, AAD bound to the target version).
module ItemCrypto =
    /// Up to this many plaintext bytes libsodium's XChaCha20-Poly1305 is used, above it
    /// HChaCha20 + the BCL's (OpenSSL) ChaCha20-Poly1305. Both produce identical bytes (a property
    /// test checks it); the split is where the measured costs cross (benchmarks/README.md).
    [<Literal>]
    let SmallItemThreshold = 4096

    let private sodium = NSec.Cryptography.AeadAlgorithm.XChaCha20Poly1305

    /// XChaCha20-Poly1305 seal under the blob key with the faster construction for the size.
    let internal sealWith
        (keys: NamespaceKeys)
        (nonce: ReadOnlySpan<byte>)
        (plaintext: ReadOnlySpan<byte>)
        (aad: ReadOnlySpan<byte>)
        (destination: Span<byte>)
        =
        if plaintext.Length <= SmallItemThreshold then
            sodium.Encrypt(keys.SodiumBlobKey, nonce, aad, plaintext, destination)
            Ok()
        else
            XChaCha20Poly1305.seal (ReadOnlySpan keys.BlobKey) nonce plaintext aad destination

    /// XChaCha20-Poly1305 open under the blob key with the faster construction for the size.
    let internal openWith
        (keys: NamespaceKeys)
        (nonce: byte[])
        (sealedBytes: byte[])
        (aad: byte[])
        : Result<byte[], CryptoError> =
        if sealedBytes.Length < Limits.AeadTagLength then
            Error DecryptFailed
        elif sealedBytes.Length - Limits.AeadTagLength <= SmallItemThreshold then
            let out = Array.zeroCreate (sealedBytes.Length - Limits.AeadTagLength)

            if
                sodium.Decrypt(
                    keys.SodiumBlobKey,
                    ReadOnlySpan nonce,
                    ReadOnlySpan aad,
                    ReadOnlySpan sealedBytes,
                    Span out
                )
            then
                Ok out
            else
                Error DecryptFailed
        else
            XChaCha20Poly1305.decrypt keys.BlobKey nonce sealedBytes aad

    /// Encrypts `plaintext` for (namespace, item, version) with a caller-supplied fresh nonce.
    /// Rejects plaintexts over 65 520 bytes.
    let seal
        (keys: NamespaceKeys)
        (ns: NamespaceId)
        (item: ItemId)
        (version: uint64)
        (nonce: ItemNonce)
        (plaintext: ReadOnlySpan<byte>)
        : Result<SealedItem, CryptoError> =
        if plaintext.Length > Limits.MaxItemPlaintextSize then
            Error(PlaintextTooLarge plaintext.Length)
        else
            let aad = Aad.build ns item version
            let out = Array.zeroCreate (plaintext.Length + Limits.AeadTagLength)

            sealWith keys nonce.Span plaintext aad.Span (Span out)
            |> Result.map (fun () ->
                {
                    Nonce = nonce
                    Aad = aad
                    Ciphertext = Bin.trusted<CiphertextKind> out
                })

    /// `DecryptItem`: opens with the blob key and the given AAD; the nonce must be 24 bytes.
    let decryptRaw
        (keys: NamespaceKeys)
        (nonce: byte[])
        (aad: byte[])
        (ciphertext: byte[])
        : Result<byte[], CryptoError> =
        if isNull nonce || nonce.Length <> Limits.ItemNonceLength then
            Error InvalidNonce
        elif isNull ciphertext then
            Error DecryptFailed
        else
            openWith keys nonce ciphertext (if isNull aad then [||] else aad)

    /// Opens an item fetched for (namespace, item) at the response `version`: the received AAD
    /// must equal the recomputed one ("aad mismatch"), then AEAD authentication.
    let openItem
        (keys: NamespaceKeys)
        (ns: NamespaceId)
        (item: ItemId)
        (version: uint64)
        (sealedItem: SealedItem)
        : Result<byte[], CryptoError> =
        let expected = Aad.build ns item version

        if not (Hashing.fixedTimeEquals expected.Span sealedItem.Aad.Span) then
            Error AadMismatch
        else
            decryptRaw keys sealedItem.Nonce.Raw sealedItem.Aad.Raw sealedItem.Ciphertext.Raw

/// DEK wrapping to a member's X25519 wrap key (HPKE base mode, info "bitboxsync-wrap-dek-v1",
/// empty AAD, plaintext namespaceId ‖ DEK, output 0x01 ‖ enc ‖ ciphertext).
module DekWrap =
    let private info = Bytes.ascii Limits.Labels.WrapDek

    /// The HPKE context a wrap would use (exposed for test vectors).
    let senderContext
        (recipient: WrapPublicKey)
        (ephemeralPrivateKey: byte[])
        : Result<Hpke.Context, CryptoError> =
        Hpke.setupBaseSender ephemeralPrivateKey (recipient.Span.ToArray()) info

    /// Wraps `dek` for `recipient`, bound to `ns`, with a caller-supplied fresh ephemeral key.
    let wrap
        (recipient: WrapPublicKey)
        (ns: NamespaceId)
        (dek: Dek)
        (ephemeralPrivateKey: byte[])
        : Result<WrappedDek, CryptoError> =
        senderContext recipient ephemeralPrivateKey
        |> Result.map (fun ctx ->
            let ct =
                Hpke.seal ctx 0UL [||] (Bytes.concat [ ns.Span.ToArray(); dek.Span.ToArray() ])

            Bin.trusted<WrappedDekKind>(Bytes.concat [ [| 1uy |]; ctx.Enc; ct ]))

    /// `ValidateWrappedDEK` (steps 2–4): non-empty, version 0x01, exactly 97 bytes.
    let validate (wrapped: byte[]) : Result<unit, CryptoError> =
        if isNull wrapped || wrapped.Length = 0 then
            Error InvalidWrappedDek
        elif wrapped[0] <> 1uy then
            Error UnsupportedVersion
        elif wrapped.Length <> Limits.WrappedDekLengthV1 then
            Error InvalidWrappedDek
        else
            Ok()

    /// `UnwrapNamespaceDEK`, steps 1–8 in order (first failure wins).
    let unwrapRaw
        (recipientPrivateKey: byte[])
        (expectedNamespaceId: byte[])
        (wrapped: byte[])
        : Result<Dek, CryptoError> =
        if
            isNull expectedNamespaceId
            || expectedNamespaceId.Length <> Limits.NamespaceIdLength
        then
            Error InvalidNamespaceId
        else
            match validate wrapped with
            | Error e -> Error e
            | Ok() ->
                if isNull recipientPrivateKey || recipientPrivateKey.Length <> 32 then
                    Error InvalidPrivateKey
                else
                    match Hpke.setupBaseRecipient recipientPrivateKey wrapped[1..32] info with
                    | Error e -> Error e
                    | Ok ctx ->
                        match Hpke.openMessage ctx 0UL [||] wrapped[33..] with
                        | Error() -> Error OpenWrappedDekFailed
                        | Ok plain when plain.Length <> 48 -> Error InvalidWrappedDek
                        | Ok plain when
                            not (
                                Hashing.fixedTimeEquals
                                    (ReadOnlySpan(plain, 0, 16))
                                    (ReadOnlySpan expectedNamespaceId)
                            )
                            ->
                            Error NamespaceMismatch
                        | Ok plain -> Ok(Bin.trusted<DekKind> plain[16..47])

    /// Unwraps a validated wrapped DEK for `ns`.
    let unwrap
        (recipientPrivateKey: byte[])
        (ns: NamespaceId)
        (wrapped: WrappedDek)
        : Result<Dek, CryptoError> =
        unwrapRaw recipientPrivateKey ns.Raw wrapped.Raw
