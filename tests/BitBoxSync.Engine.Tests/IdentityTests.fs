/// LocalKeystore: random keys, sealed at rest by a key protector, moved between devices by export
/// and import; every bit flip of a sealed identity is refused with a typed error, never a wrong key.
module BitBoxSync.Engine.Tests.IdentityTests

open System
open System.IO
open Expecto
open BitBoxSync
open BitBoxSync.Storage
open BitBoxSync.Server.Tests.Harness

let private cheap = PassphraseKeyProtector("correct horse battery staple", 1, 8 * 1024)

let private export (k: LocalKeystore) (p: IKeyProtector) = k.ExportAsync(p).AsTask() |> await

let private import (blob: byte[]) (p: IKeyProtector) =
    LocalKeystore.ImportAsync(ReadOnlyMemory blob, p).AsTask() |> await

let private loginSignature (k: IIdentity) =
    k.SignLoginIntentAsync(ReadOnlyMemory(Array.init 32 byte)).AsTask() |> await

/// Flips every bit of `blob` in turn: each must be refused with KeyProtectionException.
let private everyFlipRefused (blob: byte[]) (p: IKeyProtector) =
    for i in 0 .. blob.Length * 8 - 1 do
        let changed = Array.copy blob
        changed[i / 8] <- changed[i / 8] ^^^ (1uy <<< (i % 8))

        match
            (try
                Ok(import changed p)
             with e ->
                 Error e)
        with
        | Error(:? KeyProtectionException) -> ()
        | Error e -> failtestf "bit %d: %s instead of KeyProtectionException" i (e.GetType().Name)
        | Ok k -> failtestf "bit %d: a changed blob opened (key %s)" i k.KeyId

let tests =
    testList
        "identity"
        [
            test "a new identity exported with a passphrase imports to the same keys; a wrong passphrase is refused" {
                use k = LocalKeystore.Create()
                let blob = export k cheap
                use again = import blob cheap
                Expect.equal again.KeyId k.KeyId "same key ID"
                Expect.equal (loginSignature again) (loginSignature k) "same signing key"
                Expect.equal (again.WrapPublicKey.ToArray()) (k.WrapPublicKey.ToArray()) "same wrap key"
                use other = LocalKeystore.Create()
                Expect.notEqual other.KeyId k.KeyId "fresh random keys"

                Expect.throwsT<KeyProtectionException>
                    (fun () -> import blob (PassphraseKeyProtector("wrong", 1, 8 * 1024)) |> ignore)
                    "wrong passphrase"

                Expect.throwsT<KeyProtectionException>
                    (fun () -> import blob (UnprotectedKeyProtectorForDevelopmentOnly()) |> ignore)
                    "another protector's blob"

                Expect.equal (string k) $"LocalKeystore(keyId={k.KeyId})" "ToString names the key ID only"
                Expect.isFalse ((string cheap).Contains "horse") "the protector never shows its passphrase"
            }

            test "every bit flip of a sealed identity is refused with KeyProtectionException (passphrase and unprotected blobs)" {
                use k = LocalKeystore.Create()
                everyFlipRefused (export k cheap) cheap
                let dev = UnprotectedKeyProtectorForDevelopmentOnly()
                everyFlipRefused (export k dev) dev
                Expect.throwsT<KeyProtectionException> (fun () -> import [||] cheap |> ignore) "empty"
                Expect.throwsT<KeyProtectionException> (fun () -> import (Array.zeroCreate 200) cheap |> ignore) "zeros"
            }

            test "an identity file is written atomically, readable by its owner only, and loads back" {
                let dir = Directory.CreateTempSubdirectory("bbs-identity-").FullName
                let path = Path.Combine(dir, "identity.bbs")
                use k = LocalKeystore.Create()
                k.SaveAsync(path, cheap) |> awaitUnit
                use loaded = LocalKeystore.LoadAsync(path, cheap) |> await
                Expect.equal loaded.KeyId k.KeyId "loaded"

                if not (OperatingSystem.IsWindows()) then
                    Expect.equal (File.GetUnixFileMode path) (UnixFileMode.UserRead ||| UnixFileMode.UserWrite) "mode 600"

                Expect.equal (Directory.GetFiles dir).Length 1 "no temporary file left"
                let before = File.ReadAllBytes path

                Expect.throwsT<KeyProtectionException>
                    (fun () -> LocalKeystore.LoadAsync(path, PassphraseKeyProtector("nope", 1, 8 * 1024)) |> await |> ignore)
                    "wrong passphrase"

                Expect.equal (File.ReadAllBytes path) before "nothing overwritten"
            }

            test "Windows DPAPI refuses clearly elsewhere; protector costs are checked" {
                if not (OperatingSystem.IsWindows()) then
                    Expect.throwsT<PlatformNotSupportedException>
                        (fun () -> WindowsDpapiKeyProtector() |> ignore)
                        "not on Linux"

                Expect.throwsT<ArgumentException> (fun () -> PassphraseKeyProtector("") |> ignore) "empty passphrase"
                Expect.throwsT<ArgumentException> (fun () -> PassphraseKeyProtector("x", 0) |> ignore) "0 passes"
                Expect.throwsT<ArgumentException> (fun () -> PassphraseKeyProtector("x", 1, 1024) |> ignore) "1 MiB"
            }

            test "two devices that imported the same identity share its default namespace and sync" {
                use server = start Sqlite
                use original = LocalKeystore.Create()
                let blob = export original cheap
                let open' (identity: IIdentity) =
                    let client = new SyncClient(server.BaseAddress)

                    let engine =
                        SyncEngine.OpenAsync(SyncEngineOptions(Client = client, Identity = identity, Store = new MemoryStore()))
                        |> await

                    let notes = MemoryValueBackend<string>(Codecs.String, null, [ "n" ])
                    let ns = engine.DefaultNamespaceAsync() |> await
                    ns.OpenCollection("notes", CollectionOptions<string>(Codec = Codecs.String, Backend = notes)) |> ignore
                    engine, notes, ns.Id, client

                use imported = import blob cheap
                let a, aNotes, aNs, c1 = open' original
                let b, bNotes, bNs, c2 = open' imported
                Expect.equal bNs aNs "one default namespace"
                aNotes.SetAsync("n", "from the first device", Threading.CancellationToken.None).AsTask() |> awaitUnit
                a.SyncNowAsync() |> awaitUnit
                b.SyncNowAsync() |> awaitUnit
                let v = bNotes.GetAsync("n", Threading.CancellationToken.None).AsTask() |> await
                Expect.equal v.Value "from the first device" "synced"

                for e in [ a; b ] do
                    e.DisposeAsync().AsTask() |> awaitUnit

                c1.Dispose()
                c2.Dispose()
            }

            test "Argon2id at the interactive defaults (measured, printed)" {
                use k = LocalKeystore.Create()
                let p = PassphraseKeyProtector("a passphrase")
                let blob = export k p
                let sw = Diagnostics.Stopwatch.StartNew()
                use _ = import blob p
                printfn "identity unlock with Argon2id (%d passes, %d MiB): %.0f ms" p.Passes (p.MemoryKiB / 1024) sw.Elapsed.TotalMilliseconds
            }
        ]
