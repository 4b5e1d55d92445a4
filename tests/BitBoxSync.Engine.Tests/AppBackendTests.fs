/// An app-owned SQLite backend that implements IConditionalValueBackend<T> in the app's own
/// transaction, with app writes racing the engine's remote applies: no app write is ever lost.
module BitBoxSync.Engine.Tests.AppBackendTests

open System
open System.Collections.Generic
open System.Threading
open System.Threading.Tasks
open Microsoft.Data.Sqlite
open Expecto
open BitBoxSync
open BitBoxSync.Storage
open BitBoxSync.Server.Tests.Harness
open BitBoxSync.Engine.Tests.EngineTests

/// The app's notes table; every write (app or engine) is one IMMEDIATE transaction.
type SqliteNotes(path: string, keys: string list) =
    let connect () =
        let c = new SqliteConnection($"Data Source={path};Pooling=False;Default Timeout=30")
        c.Open()
        use pragma = c.CreateCommand()
        pragma.CommandText <- "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 30000"
        pragma.ExecuteNonQuery() |> ignore
        c

    do
        use c = connect ()
        use cmd = c.CreateCommand()

        cmd.CommandText <-
            "CREATE TABLE IF NOT EXISTS notes (key TEXT PRIMARY KEY, value TEXT NOT NULL)"

        cmd.ExecuteNonQuery() |> ignore

    let read (c: SqliteConnection) (tx: SqliteTransaction) (key: string) =
        use cmd = c.CreateCommand()
        cmd.Transaction <- tx
        cmd.CommandText <- "SELECT value FROM notes WHERE key = @k"
        cmd.Parameters.AddWithValue("@k", key) |> ignore

        match cmd.ExecuteScalar() with
        | :? string as v -> Some v
        | _ -> None

    let write (c: SqliteConnection) (tx: SqliteTransaction) (key: string) (value: string) =
        use cmd = c.CreateCommand()
        cmd.Transaction <- tx

        cmd.CommandText <-
            "INSERT INTO notes (key, value) VALUES (@k, @v) ON CONFLICT (key) DO UPDATE SET value = excluded.value"

        cmd.Parameters.AddWithValue("@k", key) |> ignore
        cmd.Parameters.AddWithValue("@v", value) |> ignore
        cmd.ExecuteNonQuery() |> ignore

    /// The app's own write (what the UI does).
    member _.AppWrite(key: string, value: string) =
        use c = connect ()
        use tx = c.BeginTransaction(deferred = false)
        write c tx key value
        tx.Commit()

    member _.Read(key: string) =
        use c = connect ()
        read c null key

    interface IConditionalValueBackend<string> with
        member _.KeysAsync _ =
            ValueTask<IReadOnlyCollection<string>>(List.toArray keys :> IReadOnlyCollection<string>)

        member _.SnapshotAsync _ =
            use c = connect ()
            use cmd = c.CreateCommand()
            cmd.CommandText <- "SELECT key, value FROM notes"
            use r = cmd.ExecuteReader()
            let d = Dictionary<string, string>()

            while r.Read() do
                d[r.GetString 0] <- r.GetString 1

            ValueTask<IReadOnlyDictionary<string, string>>(d :> IReadOnlyDictionary<string, string>)

        member _.GetAsync(key, _) =
            use c = connect ()

            ValueTask<BackendValue<string>>(
                match read c null key with
                | Some v -> BackendValue<string>.Of v
                | None -> BackendValue<string>.Missing
            )

        member _.SetAsync(key, value, _) =
            use c = connect ()
            use tx = c.BeginTransaction(deferred = false)
            write c tx key value
            tx.Commit()
            ValueTask.CompletedTask

        member _.SetIfCurrentAsync(key, current, found, value, _) =
            use c = connect ()
            use tx = c.BeginTransaction(deferred = false)

            let still =
                match read c tx key, found with
                | None, false -> true
                | Some v, true -> v = current
                | _ -> false

            if still then
                write c tx key value
                tx.Commit()

            ValueTask<bool>(still)

let tests =
    testList
        "app-owned backend"
        [
            test "app writes racing remote applies through SetIfCurrent: no app write is lost" {
                use server = start Sqlite
                let dir = IO.Path.GetDirectoryName(StoreTests.tempFile ())
                let notes = SqliteNotes(IO.Path.Combine(dir, "app.sqlite"), keys)
                let client = new SyncClient(server.BaseAddress)

                let engine = openWith client "alice" (new MemoryStore())

                let ns = engine.DefaultNamespaceAsync() |> await

                ns.OpenCollection(
                    "notes",
                    CollectionOptions<string>(
                        Codec = Codecs.String,
                        Merge = Merges.PreferLocal(),
                        Backend = notes
                    )
                )
                |> ignore
                // The other device yields on collisions, so A's app writes must win everywhere: any value
                // of the other device left in A's backend at the end would be a lost app write.
                use other = device server "alice" (new MemoryStore()) (Merges.PreferRemote())
                let lastAppWrite = Dictionary<string, string>()
                use stop = new CancellationTokenSource()
                let mutable written = 0
                let rnd = Random 11

                // The app writes continuously while the engine syncs and the other device writes too.
                let app =
                    Task.Run(fun () ->
                        let mutable i = 0

                        while not stop.IsCancellationRequested do
                            let key = keys[i % keys.Length]
                            let value = $"app {i}"
                            notes.AppWrite(key, value)
                            lock lastAppWrite (fun () -> lastAppWrite[key] <- value)
                            Interlocked.Increment(&written) |> ignore
                            i <- i + 1
                            Thread.Sleep 2)

                for round in 1..15 do
                    other.Write(keys[rnd.Next keys.Length], $"other {round}")
                    other.Sync()
                    engine.SyncNowAsync() |> awaitUnit

                // The other device has stopped writing. The app goes on racing A's passes until it has
                // written every key twice more, so its last write to each key is newer than anything
                // remote and must win (the other device yields).
                let mark = Volatile.Read(&written)
                let sw = Diagnostics.Stopwatch.StartNew()

                while Volatile.Read(&written) < mark + 2 * keys.Length
                      && sw.Elapsed < TimeSpan.FromSeconds 30.0 do
                    engine.SyncNowAsync() |> awaitUnit
                    other.Sync()

                stop.Cancel()
                app.Wait()
                // Quiet period: the app's last writes win locally (PreferLocal) and reach the other device.
                engine.SyncNowAsync() |> awaitUnit
                other.Sync()
                engine.SyncNowAsync() |> awaitUnit

                for KeyValue(key, value) in lastAppWrite do
                    Expect.equal
                        (notes.Read key)
                        (Some value)
                        $"the app's last write to {key} survived"

                    Expect.equal
                        (other.Read key)
                        (Some value)
                        $"and reached the other device ({key})"

                engine.DisposeAsync().AsTask() |> awaitUnit
                client.Dispose()
            }
        ]
