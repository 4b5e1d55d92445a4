/// Laws of the crypto constructions: sealing and wrapping round-trip, any tampering is detected,
/// our XChaCha20-Poly1305 agrees with libsodium's, and every signed layout has its length
/// (docs/protocol.md §12).
module BitBoxSync.Properties.CryptoProperties

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open NSec.Cryptography
open BitBoxSync.Protocol
open BitBoxSync.Properties.Generators

type private ItemCase =
    {
        Dek: Dek
        Ns: NamespaceId
        Item: ItemId
        Version: uint64
        Nonce: ItemNonce
        Plaintext: byte[]
    }

let private itemCase =
    gen {
        let! dek = binOf<DekKind>
        let! ns = binOf<NamespaceIdKind>
        let! item = binOf<ItemIdKind>
        let! version = Gen.choose64 (1L, Int64.MaxValue) |> Gen.map uint64
        let! nonce = binOf<ItemNonceKind>
        let! plaintext = Gen.oneof [ bytesBetween 0 64; bytesBetween 0 2048 ]

        return
            {
                Dek = dek
                Ns = ns
                Item = item
                Version = version
                Nonce = nonce
                Plaintext = plaintext
            }
    }

let private sealCase (c: ItemCase) =
    ItemCrypto.seal
        (NamespaceKeys.derive c.Dek)
        c.Ns
        c.Item
        c.Version
        c.Nonce
        (ReadOnlySpan c.Plaintext)
    |> Result.defaultWith (fun e -> failwith e.Message)

let private flip (bytes: byte[]) (bit: int) =
    let copy = Array.copy bytes
    let i = (bit / 8) % copy.Length
    copy[i] <- copy[i] ^^^ (1uy <<< (bit % 8))
    copy

type private WrapCase =
    {
        RecipientPrivate: byte[]
        Ephemeral: byte[]
        Ns: NamespaceId
        Other: NamespaceId
        Dek: Dek
    }

let private wrapCase =
    gen {
        let! r = bytesOf 32
        let! e = bytesOf 32
        let! ns = binOf<NamespaceIdKind>
        let! other = binOf<NamespaceIdKind> |> Gen.filter (fun o -> o <> ns)
        let! dek = binOf<DekKind>

        return
            {
                RecipientPrivate = r
                Ephemeral = e
                Ns = ns
                Other = other
                Dek = dek
            }
    }

let private wrapOf (c: WrapCase) =
    let pk =
        X25519.publicKeyOf (ReadOnlySpan c.RecipientPrivate)
        |> Result.defaultWith (fun e -> failwith e.Message)

    DekWrap.wrap pk c.Ns c.Dek c.Ephemeral
    |> Result.defaultWith (fun e -> failwith e.Message)

let tests =
    testList
        "crypto"
        [
            testPropertyWithConfig config "item seal then open returns the plaintext"
            <| forAll itemCase (fun c ->
                let s = sealCase c

                s.Ciphertext.Length = c.Plaintext.Length + 16
                && ItemCrypto.openItem (NamespaceKeys.derive c.Dek) c.Ns c.Item c.Version s =
                    Ok c.Plaintext)

            testPropertyWithConfig config "any flipped bit in the nonce fails to open"
            <| forAll (Gen.zip itemCase (Gen.choose (0, 24 * 8 - 1))) (fun (c, bit) ->
                let s = sealCase c

                let nonce =
                    Bin.ofBytes<ItemNonceKind>(flip (Bin.toArray s.Nonce) bit)
                    |> Result.defaultWith (fun _ -> failwith "nonce")

                ItemCrypto.openItem
                    (NamespaceKeys.derive c.Dek)
                    c.Ns
                    c.Item
                    c.Version
                    { s with Nonce = nonce }
                    =
                    Error DecryptFailed)

            testPropertyWithConfig
                config
                "any flipped bit in the AAD fails: as an AAD mismatch, and under AEAD alone"
            <| forAll (Gen.zip itemCase (Gen.choose (0, 76 * 8 - 1))) (fun (c, bit) ->
                let s = sealCase c
                let aadBytes = flip (Bin.toArray s.Aad) bit

                let aad =
                    Bin.ofBytes<ItemAadKind> aadBytes
                    |> Result.defaultWith (fun _ -> failwith "aad")

                let keys = NamespaceKeys.derive c.Dek

                ItemCrypto.openItem keys c.Ns c.Item c.Version { s with Aad = aad } =
                    Error AadMismatch
                && ItemCrypto.decryptRaw
                    keys
                    (Bin.toArray s.Nonce)
                    aadBytes
                    (Bin.toArray s.Ciphertext)
                    =
                    Error DecryptFailed)

            testPropertyWithConfig config "any flipped bit in the ciphertext or tag fails to open"
            <| forAll (Gen.zip itemCase (Gen.choose (0, Int32.MaxValue))) (fun (c, bit) ->
                let s = sealCase c

                let ct =
                    Bin.ofBytes<CiphertextKind>(
                        flip (Bin.toArray s.Ciphertext) (bit % (s.Ciphertext.Length * 8))
                    )
                    |> Result.defaultWith (fun _ -> failwith "ct")

                ItemCrypto.openItem
                    (NamespaceKeys.derive c.Dek)
                    c.Ns
                    c.Item
                    c.Version
                    { s with Ciphertext = ct }
                    =
                    Error DecryptFailed)

            testPropertyWithConfig
                config
                "an item opened under another version is refused (AAD binds the version)"
            <| forAll itemCase (fun c ->
                let s = sealCase c

                ItemCrypto.openItem (NamespaceKeys.derive c.Dek) c.Ns c.Item (c.Version - 1UL) s =
                    Error AadMismatch)

            testPropertyWithConfig config "our XChaCha20-Poly1305 equals libsodium's byte for byte"
            <| forAll
                (Gen.zip
                    (Gen.zip (bytesOf 32) (bytesOf 24))
                    (Gen.zip (bytesBetween 0 300) (bytesBetween 0 80)))
                (fun ((key, nonce), (pt, aad)) ->
                    let ours =
                        XChaCha20Poly1305.encrypt key nonce pt aad
                        |> Result.defaultWith (fun e -> failwith e.Message)

                    let algorithm = AeadAlgorithm.XChaCha20Poly1305
                    use k = Key.Import(algorithm, ReadOnlySpan key, KeyBlobFormat.RawSymmetricKey)

                    let theirs =
                        algorithm.Encrypt(k, ReadOnlySpan nonce, ReadOnlySpan aad, ReadOnlySpan pt)

                    ours = theirs && XChaCha20Poly1305.decrypt key nonce theirs aad = Ok pt)

            testPropertyWithConfig
                config
                "item sealing uses libsodium for small and the BCL for large items, with identical bytes"
            <| forAll
                (Gen.zip
                    itemCase
                    (Gen.oneof
                        [
                            Gen.choose (0, 64)
                            Gen.choose (
                                ItemCrypto.SmallItemThreshold - 2,
                                ItemCrypto.SmallItemThreshold + 2
                            )
                            Gen.choose (4097, 9000)
                        ]))
                (fun (c, size) ->
                    let plaintext = Array.init size (fun i -> byte (i * 31))
                    let keys = NamespaceKeys.derive c.Dek

                    let s =
                        ItemCrypto.seal keys c.Ns c.Item c.Version c.Nonce (ReadOnlySpan plaintext)
                        |> Result.defaultWith (fun e -> failwith e.Message)

                    let bcl =
                        XChaCha20Poly1305.encrypt
                            (NamespaceKeys.blobKey keys)
                            (Bin.toArray c.Nonce)
                            plaintext
                            (Bin.toArray s.Aad)
                        |> Result.defaultWith (fun e -> failwith e.Message)

                    Bin.toArray s.Ciphertext = bcl
                    && ItemCrypto.openItem keys c.Ns c.Item c.Version s = Ok plaintext)

            testPropertyWithConfig config "DEK wrap then unwrap returns the DEK"
            <| forAll wrapCase (fun c ->
                let w = wrapOf c

                w.Length = Limits.WrappedDekLengthV1
                && DekWrap.unwrap c.RecipientPrivate c.Ns w = Ok c.Dek)

            testPropertyWithConfig config "a wrapped DEK is refused under another namespace id"
            <| forAll wrapCase (fun c ->
                DekWrap.unwrap c.RecipientPrivate c.Other (wrapOf c) = Error NamespaceMismatch)

            testPropertyWithConfig config "a wrapped DEK does not open for another recipient"
            <| forAll (Gen.zip wrapCase (bytesOf 32)) (fun (c, otherKey) ->
                otherKey = c.RecipientPrivate
                || DekWrap.unwrap otherKey c.Ns (wrapOf c) |> Result.isError)

            testPropertyWithConfig config "any flipped bit of a wrapped DEK is detected"
            <| forAll (Gen.zip wrapCase (Gen.choose (0, 97 * 8 - 1))) (fun (c, bit) ->
                let tampered = flip (Bin.toArray (wrapOf c)) bit

                match DekWrap.unwrapRaw c.RecipientPrivate (Bin.toArray c.Ns) tampered with
                | Ok _ -> false
                | Error UnsupportedVersion -> bit < 8
                | Error(OpenWrappedDekFailed | DecapFailed) -> bit >= 8
                | Error _ -> false)

            testPropertyWithConfig
                config
                "Ed25519: a signature verifies, and not for any other message"
            <| forAll
                (Gen.zip3 (bytesOf 32) (bytesBetween 1 200) (Gen.choose (0, Int32.MaxValue)))
                (fun (seed, msg, bit) ->
                    use key = Ed25519.importSeed (ReadOnlySpan seed)
                    let pk = Ed25519.publicKey key
                    let signature = Ed25519.sign key (ReadOnlySpan msg)

                    Ed25519.verify pk (ReadOnlySpan msg) signature
                    && not (
                        Ed25519.verify
                            pk
                            (ReadOnlySpan(flip msg (bit % (msg.Length * 8))))
                            signature
                    ))

            testPropertyWithConfig
                config
                "§9 lengths: intents 148/84/85/161, action fields 76, join payload 193, AAD 76"
            <| forAll
                (Gen.zip
                    (Gen.zip binOf<ChallengeKind> binOf<KeyIdKind>)
                    (Gen.zip
                        (Gen.zip binOf<AuthPublicKeyKind> binOf<WrapPublicKeyKind>)
                        (Gen.zip3
                            binOf<NamespaceIdKind>
                            binOf<InviteIdKind>
                            binOf<InviteServerSecretHashKind>)))
                (fun ((challenge, keyId), ((auth, wrap), (ns, invite, hash))) ->
                    let fields: CreateInviteFields =
                        {
                            NamespaceId = ns
                            InviteId = invite
                            InviteServerSecretHash = hash
                            ExpiresAt = 1735689600L
                            MaxAccepted = 10
                        }

                    let origin =
                        ServerOrigin.parseCanonical "https://sync.example"
                        |> Result.defaultWith (fun _ -> failwith "origin")

                    let payload =
                        JoinRequests.payload
                            {
                                NamespaceId = ns
                                InviteId = invite
                                ServerOrigin = origin
                                Kind = IdentityKind.Keystore
                                KeyId = keyId
                                AuthPublicKey = auth
                                WrapPublicKey = wrap
                                ExpiresAt = 1L
                            }

                    let k = IdentityKind.Keystore

                    (Intents.login challenge k keyId auth wrap).Length = Limits.LoginIntentLength
                    && (Intents.refresh challenge k keyId).Length = Limits.RefreshIntentLength
                    && (Intents.sensitiveAction
                            SensitiveAction.RevokeAllTokens
                            challenge
                            k
                            keyId
                            ActionFields.revokeAllTokens)
                        .Length
                        =
                        Limits.RevokeAllTokensIntentLength
                    && (ActionFields.createInvite fields).Length =
                        Limits.CreateInviteActionFieldsLength
                    && (Intents.sensitiveAction
                            SensitiveAction.CreateNamespaceInvite
                            challenge
                            k
                            keyId
                            (ActionFields.createInvite fields))
                        .Length
                        =
                        Limits.CreateInviteIntentLength
                    && payload.Length = Limits.JoinRequestPayloadLength
                    && (Aad.build
                            ns
                            (Bin.ofBytes<ItemIdKind>(Bin.toArray hash)
                             |> Result.defaultWith (fun _ -> failwith "id"))
                            1UL)
                        .Length
                        =
                        Limits.ItemAadLength)
        ]
