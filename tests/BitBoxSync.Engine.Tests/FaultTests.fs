/// Faults on real parts: the server stopped and restarted under a running engine, a response lost
/// after the server applied a PUT, and the process dropped between a backend write and its
/// metadata write (reopened from the SQLite file). Nothing lost, convergence, no upload loop.
module BitBoxSync.Engine.Tests.FaultTests

open System
open System.Net.Http
open System.Threading
open System.Threading.Tasks
open Expecto
open BitBoxSync
open BitBoxSync.Storage
open BitBoxSync.Storage.Sqlite
open BitBoxSync.Server
open BitBoxSync.Server.Tests.Harness
open BitBoxSync.Engine.Tests.EngineTests

/// Drops the response of the first PUT after the server handled it (the fault the real server cannot produce).
type LosingHandler() =
    inherit DelegatingHandler(new SocketsHttpHandler())
    let mutable armed = true

    member private _.Forward(request: HttpRequestMessage, ct: CancellationToken) =
        base.SendAsync(request, ct)

    override this.SendAsync(request, ct) =
        task {
            let! response = this.Forward(request, ct)

            if
                armed
                && request.Method = HttpMethod.Put
                && request.RequestUri.AbsolutePath.StartsWith "/v1/kv/"
            then
                armed <- false
                response.Dispose()
                return raise (HttpRequestException "connection reset (response lost)")
            else
                return response
        }

/// A backend whose conditional write succeeds and then "crashes" the process (the pass aborts).
type CrashingBackend(inner: MemoryValueBackend<string>) =
    let mutable armed = true

    interface IConditionalValueBackend<string> with
        member _.KeysAsync ct = inner.KeysAsync ct
        member _.SnapshotAsync ct = inner.SnapshotAsync ct
        member _.GetAsync(key, ct) = inner.GetAsync(key, ct)
        member _.SetAsync(key, value, ct) = inner.SetAsync(key, value, ct)

        member _.SetIfCurrentAsync(key, current, found, value, ct) =
            task {
                let! replaced = inner.SetIfCurrentAsync(key, current, found, value, ct)

                if armed && replaced then
                    armed <- false

                    return
                        raise (OperationCanceledException "process killed after the backend write")
                else
                    return replaced
            }
            |> ValueTask<bool>

let private serverHead (server: TestServer) (ns: string) =
    use probe = new SyncClient(server.BaseAddress)
    let session = BitBoxSync.Server.Tests.Flows.login server "alice"
    let map = probe.GetNamespaceItemsAsync(session.Token, ns) |> await
    map.NamespaceHead

/// Starts a server on a fixed loopback port and SQLite file: each call (re)starts it at the same address.
let private restartableServer () =
    let db = Database.Create Sqlite
    let clock = ManualClock DateTimeOffset.UtcNow
    let port = freePort ()

    fun () ->
        let o = options db clock (TimeSpan.FromSeconds 5.0)
        o.Urls <- [| $"http://127.0.0.1:{port}" |]
        new TestServer(db, clock, BitBoxSyncServer.StartAsync(o) |> await)

let tests =
    testList
        "faults"
        [
            test "a response lost after the server applied a PUT: converges without a second write" {
                use server = start Sqlite
                let store = new MemoryStore()
                let client = new SyncClient(server.BaseAddress, new HttpClient(new LosingHandler()))

                let engine = openWith client "alice" store

                let ns = engine.DefaultNamespaceAsync() |> await
                let notes = MemoryValueBackend<string>(Codecs.String, null, keys)

                ns.OpenCollection(
                    "notes",
                    CollectionOptions<string>(Codec = Codecs.String, Backend = notes)
                )
                |> ignore

                notes.SetAsync("a", "once", CancellationToken.None).AsTask() |> awaitUnit

                Expect.throwsT<SyncTransportException>
                    (fun () -> engine.SyncNowAsync() |> awaitUnit)
                    "the response was lost"

                engine.SyncNowAsync() |> awaitUnit // 412 → fetch → equal to local → clean

                let row =
                    store.GetItemByLogicalKeyAsync(engine.KeyId, ns.Id, "notes", "a").AsTask()
                    |> await

                Expect.equal
                    (row.Version, row.Dirty, row.Conflict)
                    (1UL, false, false)
                    "clean at the version the server applied"

                Expect.equal (serverHead server ns.Id) 1UL "one accepted write, no duplicate"
                engine.SyncNowAsync() |> awaitUnit
                Expect.equal (serverHead server ns.Id) 1UL "and no upload loop"
                engine.DisposeAsync().AsTask() |> awaitUnit
            }

            test
                "the process dropped between the backend write and the metadata write: reopened from SQLite, converges" {
                use server = start Sqlite
                use a = device server "alice" (new MemoryStore()) (Merges.NoMerge())
                a.Write("a", "remote value")
                a.Sync()
                let path = StoreTests.tempFile ()
                let appData = MemoryValueBackend<string>(Codecs.String, null, keys)

                let open' () =
                    let client = new SyncClient(server.BaseAddress)
                    let store = SqliteStore.OpenAsync path |> await

                    let engine = openWith client "alice" store

                    engine, client

                let engine, client = open' ()
                let ns = engine.DefaultNamespaceAsync() |> await

                ns.OpenCollection(
                    "notes",
                    CollectionOptions<string>(
                        Codec = Codecs.String,
                        Backend = CrashingBackend appData
                    )
                )
                |> ignore

                Expect.throwsT<OperationCanceledException>
                    (fun () -> engine.SyncNowAsync() |> awaitUnit)
                    "crash after the backend write"

                engine.DisposeAsync().AsTask() |> awaitUnit
                client.Dispose()
                // The app's storage kept the value; the metadata did not record it.
                Expect.equal
                    (appData.GetAsync("a", CancellationToken.None).AsTask() |> await).Value
                    "remote value"
                    "backend written"

                let head = serverHead server ns.Id
                let engine, client = open' ()
                let ns = engine.DefaultNamespaceAsync() |> await

                ns.OpenCollection(
                    "notes",
                    CollectionOptions<string>(Codec = Codecs.String, Backend = appData)
                )
                |> ignore

                engine.SyncNowAsync() |> awaitUnit
                engine.SyncNowAsync() |> awaitUnit
                Expect.equal (serverHead server ns.Id) head "nothing re-uploaded"
                engine.DisposeAsync().AsTask() |> awaitUnit
                client.Dispose()
                let reopened = SqliteStore.OpenAsync path |> await

                let row =
                    reopened
                        .GetItemByLogicalKeyAsync(
                            (BitBoxSync.DummyKeystore.FromLabel "alice").KeyId,
                            ns.Id,
                            "notes",
                            "a"
                        )
                        .AsTask()
                    |> await

                Expect.equal
                    (row.Version, row.Dirty, row.Conflict)
                    (1UL, false, false)
                    "clean at version 1"

                reopened.DisposeAsync().AsTask() |> awaitUnit
            }

            test "the server stopped and restarted under RunAsync: writes made meanwhile arrive" {
                let startAt = restartableServer ()

                let server = startAt ()
                use a = device server "alice" (new MemoryStore()) (Merges.NoMerge())
                use stop = new CancellationTokenSource()
                let run = a.Engine.RunAsync stop.Token
                a.Write("a", "before the outage")
                a.Engine.ScheduleSync()
                Thread.Sleep 500
                (server :> IDisposable).Dispose()
                a.Write("b", "during the outage")
                a.Engine.ScheduleSync()
                let down = Diagnostics.Stopwatch.StartNew()

                while a.Engine.Status.Connected && down.Elapsed < TimeSpan.FromSeconds 10.0 do
                    a.Engine.ScheduleSync()
                    Thread.Sleep 50

                Expect.isFalse a.Engine.Status.Connected "the failure is visible"
                use restarted = startAt ()
                a.Engine.ScheduleSync()
                let sw = Diagnostics.Stopwatch.StartNew()

                while a.Engine.Status.PendingUploads <> 0 || not a.Engine.Status.Connected do
                    if sw.Elapsed > TimeSpan.FromSeconds 20.0 then
                        failtest "did not recover"

                    Thread.Sleep 50

                use b = device restarted "alice" (new MemoryStore()) (Merges.NoMerge())
                b.Sync()

                Expect.equal
                    (b.Read "a", b.Read "b")
                    (Some "before the outage", Some "during the outage")
                    "nothing lost"

                stop.Cancel()

                let _ =
                    try
                        run |> awaitUnit
                    with _ ->
                        ()

                ()
            }

            test
                "the server stopped mid-pass (after the snapshot, before pull and push) and restarted: converges, nothing lost" {
                let startAt = restartableServer ()

                let mutable server = startAt ()
                use other = device server "alice" (new MemoryStore()) (Merges.NoMerge())
                other.Write("b", "remote before the outage")
                other.Sync()
                let inner = MemoryValueBackend<string>(Codecs.String, null, keys)
                let hooked = ChecklistTests.HookedBackend inner
                let client = new SyncClient(server.BaseAddress)
                let store = new MemoryStore()

                let engine = openWith client "alice" store

                let ns = engine.DefaultNamespaceAsync() |> await

                ns.OpenCollection(
                    "notes",
                    CollectionOptions<string>(Codec = Codecs.String, Backend = hooked)
                )
                |> ignore

                inner.SetAsync("a", "local during the outage", CancellationToken.None).AsTask()
                |> awaitUnit

                hooked.AfterSnapshot <- Some(fun () -> (server :> IDisposable).Dispose())

                Expect.throwsT<SyncTransportException>
                    (fun () -> engine.SyncNowAsync() |> awaitUnit)
                    "the pass fails half-way"

                Expect.isTrue
                    (store.GetItemByLogicalKeyAsync(engine.KeyId, ns.Id, "notes", "a").AsTask()
                     |> await)
                        .Dirty
                    "the local change is queued, not lost"

                server <- startAt ()
                engine.SyncNowAsync() |> awaitUnit

                Expect.equal
                    (inner.GetAsync("b", CancellationToken.None).AsTask() |> await).Value
                    "remote before the outage"
                    "pulled after the restart"

                other.Sync()

                Expect.equal
                    (other.Read "a")
                    (Some "local during the outage")
                    "pushed after the restart"

                engine.DisposeAsync().AsTask() |> awaitUnit
                client.Dispose()
                (server :> IDisposable).Dispose()
            }
        ]
