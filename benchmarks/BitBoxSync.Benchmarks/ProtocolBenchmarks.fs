/// Benchmarks of the protocol layer's hot operations: item sealing and opening (1 KiB, 64 KiB),
/// item IDs, HPKE DEK wrapping, Ed25519. Targets: 64 KiB seal >= 1 GB/s, 1 KiB seal >= 300 MB/s.
module BitBoxSync.Benchmarks.ProtocolBenchmarks

open System
open BenchmarkDotNet.Attributes
open NSec.Cryptography
open BitBoxSync.Protocol
open BitBoxSync.Benchmarks.Common

/// Item sealing and opening with the production construction, and libsodium's XChaCha20-Poly1305
/// as the baseline it replaces.
[<MemoryDiagnoser>]
type ItemCryptoBenchmarks() =
    let mutable keys = Unchecked.defaultof<NamespaceKeys>
    let mutable ns = Unchecked.defaultof<NamespaceId>
    let mutable item = Unchecked.defaultof<ItemId>
    let mutable nonce = Unchecked.defaultof<ItemNonce>
    let mutable plaintext: byte[] = [||]
    let mutable sealedItem = Unchecked.defaultof<SealedItem>
    let mutable sodiumKey: Key = null
    let mutable nonceBytes: byte[] = [||]
    let mutable aadBytes: byte[] = [||]

    /// Plaintext size in bytes.
    [<Params(1024, 4096, 8192, 65520)>]
    member val Size = 0 with get, set

    [<GlobalSetup>]
    member this.Setup() =
        let dek = Bin.ofBytes<DekKind>(Array.init 32 byte) |> orFail
        keys <- NamespaceKeys.derive dek
        ns <- Bin.ofBytes<NamespaceIdKind>(Array.init 16 byte) |> orFail
        item <- ItemIds.compute keys "account:primary:label"
        nonceBytes <- Array.init 24 (fun i -> byte (i + 0x60))
        nonce <- Bin.ofBytes<ItemNonceKind> nonceBytes |> orFail
        plaintext <- Array.init this.Size (fun i -> byte (i * 7))
        sealedItem <- ItemCrypto.seal keys ns item 1UL nonce (ReadOnlySpan plaintext) |> orFail
        aadBytes <- Bin.toArray sealedItem.Aad

        sodiumKey <-
            Key.Import(
                AeadAlgorithm.XChaCha20Poly1305,
                ReadOnlySpan(NamespaceKeys.blobKey keys),
                KeyBlobFormat.RawSymmetricKey
            )

    [<GlobalCleanup>]
    member _.Cleanup() = sodiumKey.Dispose()

    /// Production seal: AAD + HChaCha20 + BCL ChaCha20-Poly1305.
    [<Benchmark(Baseline = true)>]
    member _.Seal() =
        ItemCrypto.seal keys ns item 1UL nonce (ReadOnlySpan plaintext)

    /// Production open: AAD check + decryption.
    [<Benchmark>]
    member _.Open() =
        ItemCrypto.openItem keys ns item 1UL sealedItem

    /// libsodium (NSec) XChaCha20-Poly1305 encryption of the same input, for comparison.
    [<Benchmark>]
    member _.SealLibsodium() =
        AeadAlgorithm.XChaCha20Poly1305.Encrypt(
            sodiumKey,
            ReadOnlySpan nonceBytes,
            ReadOnlySpan aadBytes,
            ReadOnlySpan plaintext
        )

/// Item IDs, HPKE DEK wrapping and unwrapping, Ed25519 signing and verification.
[<MemoryDiagnoser>]
type KeyBenchmarks() =
    let mutable keys = Unchecked.defaultof<NamespaceKeys>
    let mutable alice: DummyKeystore = Unchecked.defaultof<_>
    let mutable ns = Unchecked.defaultof<NamespaceId>
    let mutable dek = Unchecked.defaultof<Dek>
    let mutable wrapped = Unchecked.defaultof<WrappedDek>
    let mutable signingKey: Key = null
    let mutable message: byte[] = [||]
    let mutable signature = Unchecked.defaultof<Signature>
    let ephemeral = Array.init 32 (fun i -> byte (0x80 + i))

    [<GlobalSetup>]
    member _.Setup() =
        dek <- Bin.ofBytes<DekKind>(Array.init 32 byte) |> orFail
        keys <- NamespaceKeys.derive dek
        alice <- DummyKeystore.FromLabel "alice"
        ns <- Bin.ofBytes<NamespaceIdKind>(Array.init 16 byte) |> orFail
        wrapped <- DekWrap.wrap alice.WrapPublicKey ns dek ephemeral |> orFail
        signingKey <- Ed25519.importSeed (ReadOnlySpan (DummyKeystore.Derive "alice").AuthSeed)
        message <- Array.init Limits.LoginIntentLength byte
        signature <- Ed25519.sign signingKey (ReadOnlySpan message)

    [<GlobalCleanup>]
    member _.Cleanup() =
        (alice :> IDisposable).Dispose()
        signingKey.Dispose()

    /// HMAC-SHA256 item ID of a typical logical key.
    [<Benchmark>]
    member _.ItemId() =
        ItemIds.compute keys "account:primary:label"

    /// HPKE wrap of a DEK to one member (one X25519 + key schedule + seal).
    [<Benchmark>]
    member _.WrapDek() =
        DekWrap.wrap alice.WrapPublicKey ns dek ephemeral

    /// HPKE unwrap with the namespace binding check.
    [<Benchmark>]
    member _.UnwrapDek() = alice.UnwrapNamespaceDek(ns, wrapped)

    /// Ed25519 signature of a login intent (148 bytes).
    [<Benchmark>]
    member _.Ed25519Sign() =
        Ed25519.sign signingKey (ReadOnlySpan message)

    /// Ed25519 verification of a login intent signature.
    [<Benchmark>]
    member _.Ed25519Verify() =
        Ed25519.verify alice.AuthPublicKey (ReadOnlySpan message) signature
