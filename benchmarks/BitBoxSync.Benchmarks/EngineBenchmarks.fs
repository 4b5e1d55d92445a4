/// Engine passes against a real server on loopback (SQLite): a pass with no changes over 10 000
/// items, a cold sync of a fresh device from 10 000 items of 1 KiB, and uploading 10 000 dirty items.
module BitBoxSync.Benchmarks.EngineBenchmarks

open System
open System.Collections.Generic
open System.IO
open System.Net.Http
open System.Threading
open System.Threading.Tasks
open BenchmarkDotNet.Attributes

open Microsoft.Extensions.Logging
open BitBoxSync
open BitBoxSync.Storage
open BitBoxSync.Server

let private await (t: Task<'T>) = t.GetAwaiter().GetResult()
let private awaitUnit (t: Task) = t.GetAwaiter().GetResult()

/// Counts HTTP requests and the time spent waiting for their responses.
type CountingHandler() =
    inherit DelegatingHandler(new SocketsHttpHandler())
    member val Count = 0 with get, set
    member val HttpTicks = 0L with get, set

    member private this.BaseSend(request, ct) = base.SendAsync(request, ct)

    override this.SendAsync(request, ct) =
        this.Count <- this.Count + 1
        let started = Diagnostics.Stopwatch.GetTimestamp()

        task {
            let! response = this.BaseSend(request, ct)
            this.HttpTicks <- this.HttpTicks + Diagnostics.Stopwatch.GetElapsedTime(started).Ticks
            return response
        }

let private items = 10_000
let private keys = [ for i in 0 .. items - 1 -> $"item-{i:D5}" ]
let private value = String('v', 1000)

/// The same values without change tracking: every pass snapshots and compares every value.
type UntrackedBackend(inner: MemoryValueBackend<string>) =
    interface IValueBackend<string> with
        member _.KeysAsync ct = inner.KeysAsync ct
        member _.SnapshotAsync ct = inner.SnapshotAsync ct
        member _.GetAsync(key, ct) = inner.GetAsync(key, ct)
        member _.SetAsync(key, v, ct) = inner.SetAsync(key, v, ct)

/// A device: engine, backend and request counter.
type Device =
    {
        Engine: SyncEngine
        Backend: MemoryValueBackend<string>
        Requests: CountingHandler
    }

let openDeviceWith
    (server: BitBoxSyncServer)
    (initial: IReadOnlyDictionary<string, string>)
    (tracked: bool)
    =
    let counter = new CountingHandler()
    let client = new SyncClient(server.BaseAddress, new HttpClient(counter))

    let engine =
        SyncEngine.OpenAsync(
            SyncEngineOptions(
                Client = client,
                Identity = BitBoxSync.DummyKeystore.FromLabel "bench-engine",
                Store = new MemoryStore()
            )
        )
        |> await

    let ns = engine.DefaultNamespaceAsync() |> await
    let backend = MemoryValueBackend<string>(Codecs.String, initial, keys)

    let visible: IValueBackend<string> =
        if tracked then backend else UntrackedBackend backend

    ns.OpenCollection("items", CollectionOptions<string>(Codec = Codecs.String, Backend = visible))
    |> ignore

    { Engine = engine; Backend = backend; Requests = counter }

let openDevice server initial = openDeviceWith server initial true

let startServer () =
    let dir = Common.benchDirectory "bbs-engine-bench-"
    BitBoxSyncServer.StartAsync(Common.benchServerOptions (Path.Combine(dir, "s.sqlite"))) |> await

let filled () =
    let d = Dictionary<string, string>()

    for k in keys do
        d[k] <- value

    d :> IReadOnlyDictionary<string, string>

[<MemoryDiagnoser>]

type EnginePassBenchmarks() =
    let mutable server = Unchecked.defaultof<BitBoxSyncServer>
    let mutable synced = Unchecked.defaultof<Device>
    let mutable fresh = Unchecked.defaultof<Device>
    let mutable uploader = Unchecked.defaultof<Device>
    let mutable untracked = Unchecked.defaultof<Device>
    let mutable edits = 0

    /// HTTP requests of the last no-change pass (printed after the run).
    static member val LastRequests = 0 with get, set

    /// No-change passes run and their time outside HTTP calls (printed after the run).
    static member val Passes = 0 with get, set

    static member val EngineTicks = 0L with get, set

    [<GlobalSetup>]
    member _.Setup() =
        server <- startServer ()
        synced <- openDevice server (filled ())
        synced.Engine.SyncNowAsync() |> awaitUnit // uploads the 10 000 items once
        untracked <- openDeviceWith server (filled ()) false
        untracked.Engine.SyncNowAsync() |> awaitUnit // downloads them (same values) once

    [<Benchmark(Description = "pass with no changes, 10 000 items")>]
    member _.NoChangePass() =
        let before = synced.Requests.Count
        let httpBefore = synced.Requests.HttpTicks
        let started = Diagnostics.Stopwatch.GetTimestamp()
        synced.Engine.SyncNowAsync() |> awaitUnit
        let total = Diagnostics.Stopwatch.GetElapsedTime(started).Ticks
        EnginePassBenchmarks.LastRequests <- synced.Requests.Count - before
        EnginePassBenchmarks.Passes <- EnginePassBenchmarks.Passes + 1

        EnginePassBenchmarks.EngineTicks <-
            EnginePassBenchmarks.EngineTicks + total
            - (synced.Requests.HttpTicks - httpBefore)

    [<Benchmark(Description = "pass with no changes, 10 000 items, backend without change tracking")>]
    member _.NoChangePassUntracked() =
        untracked.Engine.SyncNowAsync() |> awaitUnit

    [<Benchmark(Description = "pass after one local edit (one upload), 10 000 items")>]
    member _.OneEditPass() =
        edits <- edits + 1

        synced.Backend.SetAsync("item-00042", value + string edits, CancellationToken.None).AsTask()
        |> awaitUnit

        synced.Engine.SyncNowAsync() |> awaitUnit

    [<IterationSetup(Target = "ColdSync")>]
    member _.NewDevice() =
        fresh <- openDevice server (Dictionary<string, string>())

    [<Benchmark(Description = "cold sync of a fresh device, 10 000 items of 1 KiB")>]
    member _.ColdSync() =
        fresh.Engine.SyncNowAsync() |> awaitUnit

    [<IterationCleanup(Target = "ColdSync")>]
    member _.DropDevice() =
        fresh.Engine.DisposeAsync().AsTask() |> awaitUnit

    [<IterationSetup(Target = "Upload")>]
    member _.DirtyDevice() =
        uploader <- openDevice server (Dictionary<string, string>())
        uploader.Engine.SyncNowAsync() |> awaitUnit
        let stamp = Guid.NewGuid().ToString("N")

        for k in keys do
            uploader.Backend.SetAsync(k, value + stamp, CancellationToken.None).AsTask()
            |> awaitUnit

    [<Benchmark(Description = "upload 10 000 dirty items")>]
    member _.Upload() =
        uploader.Engine.SyncNowAsync() |> awaitUnit

    [<IterationCleanup(Target = "Upload")>]
    member _.DropUploader() =
        uploader.Engine.DisposeAsync().AsTask() |> awaitUnit

    [<GlobalCleanup>]
    member _.Cleanup() =
        Console.WriteLine(
            $"// HTTP requests in a no-change pass: {EnginePassBenchmarks.LastRequests}"
        )

        if EnginePassBenchmarks.Passes > 0 then
            let perPass =
                TimeSpan(EnginePassBenchmarks.EngineTicks / int64 EnginePassBenchmarks.Passes)

            Console.WriteLine(
                $"// engine time (outside HTTP) of a no-change pass: {perPass.TotalMilliseconds:F3} ms over {EnginePassBenchmarks.Passes} passes"
            )

        synced.Engine.DisposeAsync().AsTask() |> awaitUnit
        untracked.Engine.DisposeAsync().AsTask() |> awaitUnit
        server.DisposeAsync().AsTask() |> awaitUnit

/// Keys of the directory benchmarks: the namespace's 10 000-item limit counts the directory's
/// buckets too (up to 256), so a directory collection holds at most 9 744 keys.
let private directoryKeys = [ for i in 0..9_699 -> $"item-{i:D5}" ]

/// Every directory key with a 1 KiB value.
let private directoryValues () : IReadOnlyDictionary<string, string> =
    directoryKeys |> List.map (fun k -> KeyValuePair(k, value)) |> Dictionary :> _

/// A device of `label` with an "items" collection keeping a key directory, its backend holding
/// `initial` and naming only the keys it holds (the directory names the rest).
let private directoryDevice (server: BitBoxSyncServer) (label: string) (initial: IReadOnlyDictionary<string, string>) =
    let engine =
        SyncEngine.OpenAsync(
            SyncEngineOptions(
                Client = new SyncClient(server.BaseAddress),
                Identity = BitBoxSync.DummyKeystore.FromLabel label,
                Store = new MemoryStore()
            )
        )
        |> await

    let ns = engine.DefaultNamespaceAsync() |> await
    let backend = MemoryValueBackend<string>(Codecs.String, initial)
    let items = ns.OpenCollection("items", CollectionOptions<string>(Codec = Codecs.String, Backend = backend, KeyDirectory = true))
    engine, backend, items

/// The key directory's overhead (docs/protocol.md §17): 9 700 items of 1 KiB in a collection that
/// keeps a directory. A no-change pass derives the 256 buckets again; a fresh
/// device that names no keys learns all 10 000 from the directory and downloads them in its first
/// pass. Compare with `EnginePassBenchmarks` (no directory) from the same run.
[<MemoryDiagnoser>]
type DirectoryBenchmarks() =
    let mutable server = Unchecked.defaultof<BitBoxSyncServer>
    let mutable synced = Unchecked.defaultof<SyncEngine>
    let mutable fresh = Unchecked.defaultof<SyncEngine>

    let openWithDirectory initial =
        let engine, _, _ = directoryDevice server "bench-directory" initial
        engine

    [<GlobalSetup>]
    member _.Setup() =
        server <- startServer ()
        let values = directoryValues ()
        synced <- openWithDirectory values
        synced.SyncNowAsync() |> awaitUnit // uploads the items and the directory once
        synced.SyncNowAsync() |> awaitUnit

    [<Benchmark(Description = "pass with no changes, 9 700 keys, key directory")>]
    member _.NoChangePass() = synced.SyncNowAsync() |> awaitUnit

    [<IterationSetup(Target = "ColdSync")>]
    member _.NewDevice() =
        fresh <- openWithDirectory (Dictionary<string, string>())

    [<Benchmark(Description = "cold sync of a device naming no keys, 9 700 keys learned from the directory")>]
    member _.ColdSync() =
        fresh.SyncNowAsync() |> awaitUnit

        if fresh.Status.Downloaded < directoryKeys.Length then
            failwithf "learned only %d items" fresh.Status.Downloaded

    [<IterationCleanup(Target = "ColdSync")>]
    member _.DropDevice() =
        fresh.DisposeAsync().AsTask() |> awaitUnit

    [<GlobalCleanup>]
    member _.Cleanup() =
        synced.DisposeAsync().AsTask() |> awaitUnit
        server.DisposeAsync().AsTask() |> awaitUnit

/// Deletes in a key-directory collection of 9 700 keys (docs/concepts.md, "Deletes"): 1 000
/// `DeleteAsync` calls on one device (local only: the row, then the backend), and the pass of a
/// second device that applies those 1 000 deletions (the buckets, the deletes step, the removals).
/// Between iterations the keys are written again (a write after the deletion revives them).
[<MemoryDiagnoser>]
type DeleteBenchmarks() =
    let mutable server = Unchecked.defaultof<BitBoxSyncServer>
    let mutable a = Unchecked.defaultof<SyncEngine>
    let mutable b = Unchecked.defaultof<SyncEngine>
    let mutable aNotes = Unchecked.defaultof<MemoryValueBackend<string>>
    let mutable aItems = Unchecked.defaultof<Collection<string>>
    let mutable bNotes = Unchecked.defaultof<MemoryValueBackend<string>>
    let deleted = directoryKeys |> List.take 1_000

    let device initial = directoryDevice server "bench-deletes" initial

    [<GlobalSetup>]
    member _.Setup() =
        server <- startServer ()
        let values = directoryValues ()
        let e, n, c = device values
        a <- e
        aNotes <- n
        aItems <- c
        a.SyncNowAsync() |> awaitUnit
        let e, n, _ = device (Dictionary<string, string>())
        b <- e
        bNotes <- n
        b.SyncNowAsync() |> awaitUnit

    [<IterationSetup(Target = "ApplyDeletions")>]
    member this.Deleted() =
        this.DeleteThousand()
        a.SyncNowAsync() |> awaitUnit

    /// (Makes every iteration a single invocation: a deletion happens once per key.)
    [<IterationSetup(Target = "DeleteThousand")>]
    member _.Live() = ()

    [<Benchmark(Description = "1 000 DeleteAsync calls (local), 9 700 keys")>]
    member _.DeleteThousand() =
        for k in deleted do
            aItems.DeleteAsync k |> awaitUnit

    [<Benchmark(Description = "a pass applying 1 000 deletions made on another device, 9 700 keys")>]
    member _.ApplyDeletions() =
        b.SyncNowAsync() |> awaitUnit

        if (bNotes.GetAsync(deleted.Head, CancellationToken.None).AsTask() |> await).Found then
            failwith "the deletion was not applied"

    /// Brings the deleted keys back (writes after the deletion) on both devices.
    [<IterationCleanup>]
    member _.Revive() =
        for k in deleted do
            aNotes.SetAsync(k, value, CancellationToken.None).AsTask() |> awaitUnit

        a.SyncNowAsync() |> awaitUnit
        b.SyncNowAsync() |> awaitUnit

    [<GlobalCleanup>]
    member _.Cleanup() =
        a.DisposeAsync().AsTask() |> awaitUnit
        b.DisposeAsync().AsTask() |> awaitUnit
        server.DisposeAsync().AsTask() |> awaitUnit
