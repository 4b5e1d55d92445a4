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

/// Drops the response of the first upload (single PUT, or batch PUT when `batch`) after the server
/// handled it (the fault the real server cannot produce).
type LosingHandler(batch: bool) =
    inherit DelegatingHandler(new SocketsHttpHandler())
    let mutable armed = true

    new() = new LosingHandler(false)

    member private _.Forward(request: HttpRequestMessage, ct: CancellationToken) =
        base.SendAsync(request, ct)

    override this.SendAsync(request, ct) =
        task {
            let! response = this.Forward(request, ct)

            if
                armed
                && (if batch then
                        request.RequestUri.AbsolutePath.EndsWith "/items/batch-put"
                    else
                        request.Method = HttpMethod.Put && request.RequestUri.AbsolutePath.StartsWith "/v1/kv/")
            then
                armed <- false
                response.Dispose()
                return raise (HttpRequestException "connection reset (response lost)")
            else
                return response
        }

/// A store that "crashes" the process at the first metadata transaction that marks several uploaded
/// items clean (a pipelined chunk): nothing of it is written and the pass aborts.
type ChunkCrashingStore(inner: IStore) =
    let mutable armed = true
    member _.Crashed = not armed

    interface IStore with
        member _.LoadIdentityAsync(k, ct) = inner.LoadIdentityAsync(k, ct)
        member _.GetNamespaceAsync(k, n, ct) = inner.GetNamespaceAsync(k, n, ct)
        member _.ListNamespacesAsync(k, ct) = inner.ListNamespacesAsync(k, ct)
        member _.GetItemByIdAsync(k, n, i, ct) = inner.GetItemByIdAsync(k, n, i, ct)
        member _.GetItemByLogicalKeyAsync(k, n, c, key, ct) = inner.GetItemByLogicalKeyAsync(k, n, c, key, ct)
        member _.ListNamespaceItemsAsync(k, n, ct) = inner.ListNamespaceItemsAsync(k, n, ct)
        member _.ListDirtyItemsAsync(k, ct) = inner.ListDirtyItemsAsync(k, ct)
        member _.ForgetIdentitySecretsAsync(k, ct) = inner.ForgetIdentitySecretsAsync(k, ct)
        member _.ResetSyncStateAsync(k, ct) = inner.ResetSyncStateAsync(k, ct)
        member _.DisposeAsync() = ValueTask.CompletedTask

        member _.SaveAsync(write, ct) =
            if armed && write.Items.Count >= 3 && write.Items |> Seq.forall (fun i -> not i.Dirty && i.Version > 0UL) then
                armed <- false
                ValueTask(Task.FromException(OperationCanceledException "process killed before the chunk's metadata commit"))
            else
                inner.SaveAsync(write, ct)

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

/// Answers `GET /v1/capabilities` itself with a fixed status and body; passes everything else on.
type CapabilitiesHandler(status: int, body: string) =
    inherit DelegatingHandler(new SocketsHttpHandler())

    override _.SendAsync(request, ct) =
        if request.RequestUri.AbsolutePath = "/v1/capabilities" then
            Task.FromResult(
                new HttpResponseMessage(enum<Net.HttpStatusCode> status, Content = new StringContent(body, Text.Encoding.UTF8, "text/html"))
            )
        else
            base.SendAsync(request, ct)

/// A backend whose read of one value fails once, at the `failAt`-th read (a transient app storage error).
type FailingReadBackend(inner: MemoryValueBackend<string>, failAt: int) =
    let mutable reads = 0

    interface IConditionalValueBackend<string> with
        member _.KeysAsync ct = inner.KeysAsync ct
        member _.SnapshotAsync ct = inner.SnapshotAsync ct

        member _.GetAsync(key, ct) =
            reads <- reads + 1

            if reads = failAt then
                ValueTask<BackendValue<string>>(Task.FromException<BackendValue<string>>(IO.IOException "the app's storage failed once"))
            else
                inner.GetAsync(key, ct)

        member _.SetAsync(key, value, ct) = inner.SetAsync(key, value, ct)
        member _.SetIfCurrentAsync(key, current, found, value, ct) = inner.SetIfCurrentAsync(key, current, found, value, ct)

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

/// A server on a fresh database, offering the batch-items extension or not.
let startWithBatches backend (batches: bool) =
    let db = Database.Create backend
    let clock = ManualClock DateTimeOffset.UtcNow
    let o = options db clock (TimeSpan.FromSeconds 5.0)
    o.BatchItems <- batches
    new TestServer(db, clock, BitBoxSyncServer.StartAsync(o) |> await)

/// Records when each request left (to measure how clients spread their retries).
type RecordingHandler() =
    inherit DelegatingHandler(new SocketsHttpHandler())
    member val Sent = Collections.Concurrent.ConcurrentQueue<TimeSpan * string>()
    member val Clock = Diagnostics.Stopwatch.StartNew()

    override this.SendAsync(request, ct) =
        this.Sent.Enqueue((this.Clock.Elapsed, request.RequestUri.AbsolutePath))
        base.SendAsync(request, ct)

/// A 20-second outage under RunAsync with the default 5-minute poll: the write made during it is
/// uploaded within seconds of the restart, without any ScheduleSync, and the clients' first
/// requests after the restart are spread out (full jitter), not in lockstep.
let private outage =
    test "a 20 s server outage: a write made during it is uploaded within 5 s of the restart; 4 clients do not retry in lockstep" {
        let startAt = restartableServer ()
        let server = startAt ()
        let handlers = Array.init 4 (fun _ -> new RecordingHandler())

        let devices =
            handlers
            |> Array.map (fun h ->
                let client = new SyncClient(server.BaseAddress, new HttpClient(h))
                let engine = openWith client "alice" (new MemoryStore())
                let ns = engine.DefaultNamespaceAsync() |> await
                let notes = MemoryValueBackend<string>(Codecs.String, null, keys)

                ns.OpenCollection("notes", CollectionOptions<string>(Codec = Codecs.String, Backend = notes))
                |> ignore

                engine, notes, client)

        use stop = new CancellationTokenSource()
        let runs = devices |> Array.map (fun (e, _, _) -> e.RunAsync stop.Token)
        let writer, notes, _ = devices[0]

        let waitUntil (what: string) (limit: TimeSpan) (condition: unit -> bool) =
            let sw = Diagnostics.Stopwatch.StartNew()

            while not (condition ()) && sw.Elapsed < limit do
                Thread.Sleep 20

            Expect.isTrue (condition ()) what
            sw.Elapsed

        waitUntil "every device synced once" (TimeSpan.FromSeconds 20.0) (fun () ->
            devices |> Array.forall (fun (e, _, _) -> e.Status.LastSyncedAt.HasValue))
        |> ignore

        (server :> IDisposable).Dispose()
        let outageStarted = handlers[0].Clock.Elapsed
        notes.SetAsync("a", "written during the outage", CancellationToken.None).AsTask() |> awaitUnit
        writer.ScheduleSync() // the app's usual call after a write: this pass fails (server down)

        waitUntil "the failure is visible" (TimeSpan.FromSeconds 10.0) (fun () -> not writer.Status.Connected)
        |> ignore

        Thread.Sleep(TimeSpan.FromSeconds 20.0 - (handlers[0].Clock.Elapsed - outageStarted)) // the outage itself
        use restarted = startAt ()
        let restartedAt = handlers |> Array.map (fun h -> h.Clock.Elapsed)

        let uploaded =
            waitUntil "the write reached the server" (TimeSpan.FromSeconds 60.0) (fun () ->
                writer.Status.PendingUploads = 0 && writer.Status.Connected)

        waitUntil "every client reconnected" (TimeSpan.FromSeconds 30.0) (fun () ->
            handlers |> Array.mapi (fun i h -> h.Sent |> Seq.exists (fun (t, _) -> t >= restartedAt[i])) |> Array.forall id)
        |> ignore

        let firstAfter =
            handlers
            |> Array.mapi (fun i h ->
                h.Sent |> Seq.map fst |> Seq.filter (fun t -> t >= restartedAt[i]) |> Seq.min
                |> fun t -> (t - restartedAt[i]).TotalMilliseconds)

        let attempts =
            handlers
            |> Array.map (fun h ->
                h.Sent |> Seq.filter (fun (t, _) -> t > outageStarted && t < outageStarted + TimeSpan.FromSeconds 20.0) |> Seq.length)

        let spread = Array.max firstAfter - Array.min firstAfter

        printfn
            "outage: write uploaded %.2f s after the restart; first request after it per client (ms): %s (spread %.0f ms); requests during the 20 s outage per client: %s"
            uploaded.TotalSeconds
            (String.Join(", ", firstAfter |> Array.map (sprintf "%.0f")))
            spread
            (String.Join(", ", attempts))

        Expect.isLessThan uploaded (TimeSpan.FromSeconds 5.0) "uploaded within 5 s of the restart"
        Expect.isGreaterThan (serverHead restarted (writer.DefaultNamespaceAsync() |> await).Id) 0UL "on the server"
        Expect.isGreaterThan spread 50.0 "the clients' retries are spread out, not in lockstep"
        Expect.isLessThan (Array.max attempts) 60 "and not hammering: a bounded number of retries per client"
        stop.Cancel()

        for r in runs do
            try
                r |> awaitUnit
            with _ ->
                ()

        for e, _, c in devices do
            e.DisposeAsync().AsTask() |> awaitUnit
            c.Dispose()
    }

/// Paths of the requests a handler recorded, IDs replaced.
let private routes (h: RecordingHandler) =
    h.Sent |> Seq.map (fun (_, p) -> SyncClient.RouteOf p) |> List.ofSeq

let private count (route: string) (h: RecordingHandler) =
    routes h |> List.filter ((=) route) |> List.length

/// An engine with its "notes" collection over `names` on a server through a recording client.
let private notesDevice (server: TestServer) (handler: HttpMessageHandler) (names: string list) =
    let engine = openWith (new SyncClient(server.BaseAddress, new HttpClient(handler))) "alice" (new MemoryStore())
    let ns = engine.DefaultNamespaceAsync() |> await
    let notes = MemoryValueBackend<string>(Codecs.String, null, names)
    ns.OpenCollection("notes", CollectionOptions<string>(Codec = Codecs.String, Backend = notes)) |> ignore
    engine, ns, notes

let private batchUse =
    [
        for offered, name in
            [
                true, "a server offering batch items: 300 uploads in 2 batch PUTs and a new device's downloads in 2 batch GETs"
                false, "a server without batch items: the same sync with single requests"
            ] do
            test name {
                use server = startWithBatches Sqlite offered
                let names = [ for i in 1..300 -> $"n{i:D3}" ]
                let writer = new RecordingHandler()
                let engine, ns, notes = notesDevice server writer names

                for k in names do
                    notes.SetAsync(k, "v-" + k, CancellationToken.None).AsTask() |> awaitUnit

                engine.SyncNowAsync() |> awaitUnit
                Expect.equal (serverHead server ns.Id) 300UL "all uploaded"
                let reader = new RecordingHandler()
                let fresh, _, copy = notesDevice server reader names
                fresh.SyncNowAsync() |> awaitUnit

                for k in names do
                    let v = copy.GetAsync(k, CancellationToken.None).AsTask() |> await
                    Expect.equal v.Value ("v-" + k) $"{k} arrived"

                let batchPuts = count "/v1/namespaces/{id}/items/batch-put" writer
                let singlePuts = count "/v1/kv/{id}/{id}" writer
                let batchGets = count "/v1/namespaces/{id}/items/batch-get" reader
                let singleGets = count "/v1/kv/{id}/{id}" reader

                if offered then
                    Expect.equal (batchPuts, singlePuts) (2, 0) "256 + 44 items in two batch PUTs"
                    Expect.equal (batchGets, singleGets) (2, 0) "and two batch GETs"
                else
                    Expect.equal (batchPuts, singlePuts) (0, 300) "single PUTs"
                    Expect.equal (batchGets, singleGets) (0, 300) "single GETs"

                Expect.equal (count "/v1/capabilities" writer) 1 "the offer asked once"
                engine.SyncNowAsync() |> awaitUnit
                Expect.equal (count "/v1/capabilities" writer) 1 "and remembered"
                engine.DisposeAsync().AsTask() |> awaitUnit
                fresh.DisposeAsync().AsTask() |> awaitUnit
            }

        test "reading the next chunk's values fails while a chunk is on its way: that chunk is still saved, nothing is written twice" {
            use server = startWithBatches Sqlite true
            let names = [ for i in 1..300 -> $"n{i:D3}" ]
            let store = new MemoryStore()
            let engine = openWith (new SyncClient(server.BaseAddress)) "alice" store
            let ns = engine.DefaultNamespaceAsync() |> await
            let values = MemoryValueBackend<string>(Codecs.String, null, names)
            // The 257th read is the first of the second chunk (256 items per batch).
            let failing = FailingReadBackend(values, 257)
            ns.OpenCollection("notes", CollectionOptions<string>(Codec = Codecs.String, Backend = failing)) |> ignore

            for k in names do
                values.SetAsync(k, "v-" + k, CancellationToken.None).AsTask() |> awaitUnit

            Expect.throwsT<IO.IOException> (fun () -> engine.SyncNowAsync() |> awaitUnit) "the read failed"
            Expect.equal (serverHead server ns.Id) 256UL "the first chunk was accepted"
            let clean = (store.ListDirtyItemsAsync(engine.KeyId).AsTask() |> await).Count
            Expect.equal clean 44 "and saved clean: only the second chunk is still dirty"
            engine.SyncNowAsync() |> awaitUnit
            Expect.equal (serverHead server ns.Id) 300UL "the rest uploaded once"
            Expect.equal engine.Status.PendingUploads 0 "nothing pending"
            engine.DisposeAsync().AsTask() |> awaitUnit
        }

        test "items near 64 KiB go in batches cut within the body limit, and every one is accepted" {
            use server = startWithBatches Sqlite true
            let names = [ for i in 1..30 -> $"big{i:D2}" ]
            let writer = new RecordingHandler()
            let engine, ns, notes = notesDevice server writer names
            // Random letters: base64 of their ciphertext holds '+' and '/' like any other.
            let rnd = Random(7)
            let big () = String(Array.init 65_520 (fun _ -> char (rnd.Next(33, 127))))

            for k in names do
                notes.SetAsync(k, big (), CancellationToken.None).AsTask() |> awaitUnit

            engine.SyncNowAsync() |> awaitUnit
            Expect.equal (serverHead server ns.Id) 30UL "all accepted"
            // 30 × ~87.5 KB of JSON: at most 11 per 1 MiB body.
            Expect.equal (count "/v1/namespaces/{id}/items/batch-put" writer) 3 "three batches"
            Expect.equal engine.Status.PendingUploads 0 "nothing pending"
            engine.DisposeAsync().AsTask() |> awaitUnit
        }

        for status, body, name in
            [
                403, """{"error":"forbidden"}""", "a 403"
                200, "<html>a proxy's page</html>", "an HTML page"
                503, """{"error":"busy"}""", "a 503"
            ] do
            test $"capabilities answered with {name}: the engine syncs with single requests" {
                use server = startWithBatches Sqlite true
                let names = [ "a"; "b"; "c" ]
                let engine, ns, notes = notesDevice server (new CapabilitiesHandler(status, body)) names

                for k in names do
                    notes.SetAsync(k, "v-" + k, CancellationToken.None).AsTask() |> awaitUnit

                engine.SyncNowAsync() |> awaitUnit
                Expect.equal (serverHead server ns.Id) 3UL "uploaded"
                engine.DisposeAsync().AsTask() |> awaitUnit
            }

        test "a batch PUT's response lost after the server applied it: converges without a second write" {
            use server = startWithBatches Sqlite true
            let names = [ "a"; "b"; "c" ]
            let engine, ns, notes = notesDevice server (new LosingHandler(true)) names

            for k in names do
                notes.SetAsync(k, "once-" + k, CancellationToken.None).AsTask() |> awaitUnit

            Expect.throwsT<SyncTransportException> (fun () -> engine.SyncNowAsync() |> awaitUnit) "the response was lost"
            Expect.equal (serverHead server ns.Id) 3UL "the server applied the batch"
            engine.SyncNowAsync() |> awaitUnit // each 412 → fetch → equal to local → clean
            Expect.equal (serverHead server ns.Id) 3UL "no second write"
            engine.SyncNowAsync() |> awaitUnit
            Expect.equal (serverHead server ns.Id) 3UL "and no upload loop"
            Expect.equal engine.Status.PendingUploads 0 "nothing pending"
            engine.DisposeAsync().AsTask() |> awaitUnit
        }

        test "a server restarted without batch items: the engine's next batch meets 404 and the same pass falls back to single requests" {
            let db = Database.Create Sqlite
            let clock = ManualClock DateTimeOffset.UtcNow
            let port = freePort ()

            let startServer batches =
                let o = options db clock (TimeSpan.FromSeconds 5.0)
                o.Urls <- [| $"http://127.0.0.1:{port}" |]
                o.BatchItems <- batches
                new TestServer(db, clock, BitBoxSyncServer.StartAsync(o) |> await)

            let names = [ for i in 1..20 -> $"n{i:D2}" ]
            let withBatches = startServer true
            let writer = new RecordingHandler()
            let engine, ns, notes = notesDevice withBatches writer names
            let reader = new RecordingHandler()
            let other, _, copy = notesDevice withBatches reader names

            for k in names do
                notes.SetAsync(k, "v1-" + k, CancellationToken.None).AsTask() |> awaitUnit

            engine.SyncNowAsync() |> awaitUnit
            other.SyncNowAsync() |> awaitUnit // learns the offer (batch GETs)
            Expect.equal (count "/v1/namespaces/{id}/items/batch-put" writer) 1 "uploaded in a batch"
            Expect.equal (count "/v1/namespaces/{id}/items/batch-get" reader) 1 "downloaded in a batch"
            (withBatches :> IDisposable).Dispose()
            use without = startServer false

            for k in names do
                notes.SetAsync(k, "v2-" + k, CancellationToken.None).AsTask() |> awaitUnit

            engine.SyncNowAsync() |> awaitUnit
            other.SyncNowAsync() |> awaitUnit

            for k in names do
                Expect.equal (copy.GetAsync(k, CancellationToken.None).AsTask() |> await).Value ("v2-" + k) $"{k} arrived"

            Expect.equal (count "/v1/namespaces/{id}/items/batch-put" writer) 2 "one batch PUT refused with 404"
            Expect.equal (count "/v1/kv/{id}/{id}" writer) 20 "then single PUTs in the same pass"
            Expect.equal (count "/v1/namespaces/{id}/items/batch-get" reader) 2 "one batch GET refused with 404"
            Expect.equal (count "/v1/kv/{id}/{id}" reader) 20 "then single GETs in the same pass"
            Expect.equal (serverHead without ns.Id) 40UL "every write once"
            engine.DisposeAsync().AsTask() |> awaitUnit
            other.DisposeAsync().AsTask() |> awaitUnit
        }
    ]

let tests =
    testList
        "faults"
        [
            outage
            yield! batchUse
            for batches, how in [ true, "batch PUTs"; false, "pipelined single PUTs" ] do
                test $"uploads in chunks ({how}): a crash after the server accepted a chunk, before its metadata commit: reopened, converges without a second write" {
                    use server = startWithBatches Sqlite batches
                    let inner = new MemoryStore()
                    let crashing = ChunkCrashingStore(inner)
                    let names = [ for i in 1..20 -> $"n{i:D2}" ]
    
                    let openOn (store: IStore) =
                        let engine = openWith (new SyncClient(server.BaseAddress)) "alice" store
                        let ns = engine.DefaultNamespaceAsync() |> await
                        let notes = MemoryValueBackend<string>(Codecs.String, null, names)
                        ns.OpenCollection("notes", CollectionOptions<string>(Codec = Codecs.String, Backend = notes)) |> ignore
                        engine, ns, notes
    
                    let first, ns, notes = openOn crashing
    
                    for k in names do
                        notes.SetAsync(k, "v-" + k, CancellationToken.None).AsTask() |> awaitUnit
    
                    Expect.throwsT<OperationCanceledException> (fun () -> first.SyncNowAsync() |> awaitUnit) "the process died"
                    Expect.isTrue crashing.Crashed "at the chunk's metadata commit"
                    Expect.equal (serverHead server ns.Id) 20UL "the server had accepted all 20 uploads"
                    first.DisposeAsync().AsTask() |> awaitUnit
    
                    // The app restarts on the same metadata (nothing of the chunk was saved) and the same values.
                    let again, ns2, notes2 = openOn inner
    
                    for k in names do
                        notes2.SetAsync(k, "v-" + k, CancellationToken.None).AsTask() |> awaitUnit
    
                    again.SyncNowAsync() |> awaitUnit
    
                    for k in names do
                        let row = inner.GetItemByLogicalKeyAsync(again.KeyId, ns2.Id, "notes", k).AsTask() |> await
                        Expect.equal (row.Version, row.Dirty, row.Conflict) (1UL, false, false) $"{k}: clean at the accepted version"
    
                    Expect.equal (serverHead server ns.Id) 20UL "no second write"
                    again.SyncNowAsync() |> awaitUnit
                    Expect.equal (serverHead server ns.Id) 20UL "and no upload loop"
                    again.DisposeAsync().AsTask() |> awaitUnit
                }

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
