/// LocalKeystore: random keys, sealed at rest by a key protector, moved between devices by export
/// and import; every bit flip of a sealed identity is refused with a typed error, never a wrong key.
module BitBoxSync.Engine.Tests.IdentityTests

open System
open System.IO
open Expecto
open BitBoxSync
open BitBoxSync.Storage
open BitBoxSync.Storage.Sqlite
open BitBoxSync.Server.Tests.Harness
open Microsoft.Data.Sqlite

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

/// Every byte of the store's files (the database and its WAL).
let private fileBytes (path: string) =
    [ path; path + "-wal" ]
    |> List.filter File.Exists
    |> List.map File.ReadAllBytes
    |> Array.concat

let private contains (haystack: byte[]) (needle: byte[]) =
    needle.Length > 0 && haystack.AsSpan().IndexOf(ReadOnlySpan needle) >= 0

/// An engine on a SQLite store opened by `openStore`, synced once (token and default namespace key stored).
let private syncedOn (server: TestServer) (label: string) (openStore: unit -> SqliteStore) =
    let client = new SyncClient(server.BaseAddress)
    let store = openStore ()

    let engine =
        SyncEngine.OpenAsync(SyncEngineOptions(Client = client, Identity = DummyKeystore.FromLabel label, Store = store))
        |> await

    engine.DefaultNamespaceAsync() |> await |> ignore
    engine.SyncNowAsync() |> awaitUnit
    let identity = (store :> IStore).LoadIdentityAsync(engine.KeyId).AsTask() |> await
    let namespaces = (store :> IStore).ListNamespacesAsync(engine.KeyId).AsTask() |> await
    engine, client, identity.AccessToken, namespaces |> Seq.map (fun n -> n.Dek) |> List.ofSeq

let private secretsInFile (path: string) (token: string) (deks: byte[] list) =
    let bytes = fileBytes path

    [
        if contains bytes (Text.Encoding.UTF8.GetBytes token) then "the token"
        for dek in deks do
            if contains bytes dek then "a DEK (raw)"
            if contains bytes (Text.Encoding.ASCII.GetBytes(Convert.ToBase64String dek)) then "a DEK (base64)"
            if contains bytes (Text.Encoding.ASCII.GetBytes(Convert.ToHexStringLower dek)) then "a DEK (hex)"
    ]

let private secretsAtRest =
    testList
        "secrets at rest"
        [
            test "with a key protector the SQLite file holds no token and no DEK; without one it does" {
                use server = start Sqlite
                let dir = Directory.CreateTempSubdirectory("bbs-secrets-").FullName
                let plainPath = Path.Combine(dir, "plain.sqlite")
                let sealedPath = Path.Combine(dir, "sealed.sqlite")
                let e1, c1, token1, deks1 = syncedOn server "plain" (fun () -> SqliteStore.OpenAsync plainPath |> await)
                e1.DisposeAsync().AsTask() |> awaitUnit
                c1.Dispose()
                Expect.isNonEmpty (secretsInFile plainPath token1 deks1) "the control: an unprotected store has them in the clear"
                let e2, c2, token2, deks2 = syncedOn server "sealed" (fun () -> SqliteStore.OpenAsync(sealedPath, cheap) |> await)
                Expect.isNonEmpty deks2 "a DEK was stored"
                e2.SyncNowAsync() |> awaitUnit // the decrypted token still works
                e2.DisposeAsync().AsTask() |> awaitUnit
                c2.Dispose()
                Expect.isEmpty (secretsInFile sealedPath token2 deks2) "no secret in the file"

                Expect.throwsT<StoreException>
                    (fun () -> SqliteStore.OpenAsync sealedPath |> await |> ignore)
                    "an encrypted store cannot be opened without its protector"

                Expect.throwsT<KeyProtectionException>
                    (fun () -> SqliteStore.OpenAsync(sealedPath, PassphraseKeyProtector("wrong", 1, 8 * 1024)) |> await |> ignore)
                    "nor with the wrong passphrase"
            }

            test "an unencrypted store is migrated on open: its secrets are encrypted and the old bytes are gone" {
                use server = start Sqlite
                let path = Path.Combine(Directory.CreateTempSubdirectory("bbs-secrets-").FullName, "store.sqlite")
                let e1, c1, token, deks = syncedOn server "migrating" (fun () -> SqliteStore.OpenAsync path |> await)
                e1.DisposeAsync().AsTask() |> awaitUnit
                c1.Dispose()
                let e2, c2, token2, deks2 = syncedOn server "migrating" (fun () -> SqliteStore.OpenAsync(path, cheap) |> await)
                Expect.equal (token2, deks2) (token, deks) "the same secrets, decrypted"
                e2.DisposeAsync().AsTask() |> awaitUnit
                c2.Dispose()
                Expect.isEmpty (secretsInFile path token deks) "migrated: nothing left in the clear"
            }

            test "an encrypted DEK moved to another row, or any bit of it flipped, is refused" {
                use server = start Sqlite
                let path = Path.Combine(Directory.CreateTempSubdirectory("bbs-secrets-").FullName, "store.sqlite")
                let engine, client, _, _ = syncedOn server "swapper" (fun () -> SqliteStore.OpenAsync(path, cheap) |> await)
                engine.CreateSharedNamespaceAsync() |> await |> ignore
                engine.DisposeAsync().AsTask() |> awaitUnit
                client.Dispose()
                use raw = new SqliteConnection($"Data Source={path};Pooling=False")
                raw.Open()

                let rows =
                    use cmd = new SqliteCommand("SELECT namespace_id, dek FROM namespaces ORDER BY namespace_id", raw)
                    use r = cmd.ExecuteReader()
                    [ while r.Read() do r.GetString 0, (r.GetValue 1 :?> byte[]) ]

                Expect.equal rows.Length 2 "default and shared namespace"

                let setDek (ns: string) (dek: byte[]) =
                    use cmd = new SqliteCommand("UPDATE namespaces SET dek = @d WHERE namespace_id = @n", raw)
                    cmd.Parameters.AddWithValue("@d", dek) |> ignore
                    cmd.Parameters.AddWithValue("@n", ns) |> ignore
                    cmd.ExecuteNonQuery() |> ignore

                let (ns1, dek1), (ns2, dek2) = rows[0], rows[1]
                let store = SqliteStore.OpenAsync(path, cheap) |> await
                let keyId = (DummyKeystore.FromLabel "swapper").KeyId
                let read ns = (store :> IStore).GetNamespaceAsync(keyId, ns).AsTask() |> await
                Expect.isNotNull (read ns1).Dek "readable before"
                setDek ns1 dek2
                setDek ns2 dek1
                Expect.throwsT<StoreException> (fun () -> read ns1 |> ignore) "swapped rows are refused"
                setDek ns1 dek1
                setDek ns2 dek2
                Expect.isNotNull (read ns1).Dek "restored"

                for bit in 0 .. dek1.Length * 8 - 1 do
                    let flipped = Array.copy dek1
                    flipped[bit / 8] <- flipped[bit / 8] ^^^ (1uy <<< (bit % 8))
                    setDek ns1 flipped

                    match (try Ok(read ns1) with e -> Error e) with
                    | Error(:? StoreException) -> ()
                    | Ok r when isNull r.Dek -> failtestf "bit %d: the key vanished silently" bit
                    | Ok r when r.Dek = (read ns2).Dek -> failtestf "bit %d: another row's key" bit
                    | Ok _ -> failtestf "bit %d: a changed key was accepted" bit
                    | Error e -> failtestf "bit %d: %s instead of StoreException" bit (e.GetType().Name)

                setDek ns1 dek1
                store.DisposeAsync().AsTask() |> awaitUnit
            }
        ]

let tests =
    testList
        "identity"
        [
            secretsAtRest
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
