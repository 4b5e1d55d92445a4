/// `--bulk`: bulk throughput with the real stores, rerunnable: the client's `SqliteStore` on a file,
/// the server on SQLite with `synchronous=FULL` (the batch-items extension on and off, group commit
/// on and off), 10 000 items of 1 KiB.
/// Measures the first upload of 10 000 dirty items, the cold sync of a new device, the uploading
/// process's allocations and peak working set, and, in the same run, the hardware anchors: a raw
/// SQLite commit (WAL, FULL, two UPDATEs) and a bare HTTP round trip to the server.
module BitBoxSync.Benchmarks.BulkBenchmarks

open System
open System.Collections.Generic
open System.Diagnostics
open System.IO
open System.Net.Http
open System.Threading
open Microsoft.Extensions.Logging
open BitBoxSync
open BitBoxSync.Server
open BitBoxSync.Storage
open BitBoxSync.Storage.Sqlite

let private awaitT (t: Threading.Tasks.Task<'T>) = t.GetAwaiter().GetResult()
let private awaitU (t: Threading.Tasks.Task) = t.GetAwaiter().GetResult()

let private items = 10_000
let private value = String('v', 1024)

/// Mean time of one raw commit of two UPDATEs (WAL, FULL), over `n` commits.
let rawCommit (dir: string) (n: int) =
    let file = Path.Combine(dir, "raw.sqlite")
    use c = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={file};Pooling=false")
    c.Open()
    use setup = c.CreateCommand()

    setup.CommandText <-
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, b BLOB); INSERT INTO t VALUES (1, 0, zeroblob(1400)), (2, 0, NULL);"

    setup.ExecuteNonQuery() |> ignore
    let sw = Stopwatch.StartNew()

    for i in 1..n do
        use tx = c.BeginTransaction()
        use cmd = c.CreateCommand()
        cmd.Transaction <- tx
        cmd.CommandText <- "UPDATE t SET v = $n, b = randomblob(1400) WHERE id = 1; UPDATE t SET v = $n WHERE id = 2"
        cmd.Parameters.AddWithValue("$n", i) |> ignore
        cmd.ExecuteNonQuery() |> ignore
        tx.Commit()

    sw.Elapsed.TotalMilliseconds / float n

let private device (server: Uri) (storePath: string) (label: string) =
    let engine =
        SyncEngine.OpenAsync(
            SyncEngineOptions(
                Client = new SyncClient(server),
                Identity = DummyKeystore.FromLabel label,
                Store =
                    (if Environment.GetEnvironmentVariable "BULK_STORE" = "memory" then
                         new MemoryStore() :> IStore
                     else
                         SqliteStore.OpenAsync(storePath) |> awaitT :> IStore)
            )
        )
        |> awaitT

    let ns = engine.DefaultNamespaceAsync() |> awaitT
    engine, ns

/// The workload against a server at `server` (in this process or in its own), printed under `title`.
let private measure (dir: string) (server: Uri) (title: string) =
    let raw = rawCommit dir 300

    // A bare HTTP round trip to the same server (GET /healthz).
    use http = new HttpClient(BaseAddress = server)

    for _ in 1..50 do
        http.GetStringAsync("healthz") |> awaitT |> ignore

    let sw = Stopwatch.StartNew()

    for _ in 1..300 do
        http.GetStringAsync("healthz") |> awaitT |> ignore

    let roundTrip = sw.Elapsed.TotalMilliseconds / 300.0

    // Warm-up (JIT, connection pools): the same workload at 300 items under another identity.
    let warm = Dictionary<string, string>()

    for i in 0..299 do
        warm[$"warm-{i:D3}"] <- value

    let w1, w1ns = device server (Path.Combine(dir, "w1.sqlite")) "warm-up"
    let wb = MemoryValueBackend<string>(Codecs.String, warm)
    w1ns.OpenCollection("items", CollectionOptions<string>(Codec = Codecs.String, Backend = wb)) |> ignore
    w1.SyncNowAsync() |> awaitU

    for k in warm.Keys do
        wb.SetAsync(k, value + "2", CancellationToken.None).AsTask() |> awaitU

    w1.SyncNowAsync() |> awaitU
    let w2, w2ns = device server (Path.Combine(dir, "w2.sqlite")) "warm-up"
    w2ns.OpenCollection("items", CollectionOptions<string>(Codec = Codecs.String, Backend = MemoryValueBackend<string>(Codecs.String, null, warm.Keys))) |> ignore
    w2.SyncNowAsync() |> awaitU
    w1.DisposeAsync().AsTask() |> awaitU
    w2.DisposeAsync().AsTask() |> awaitU

    let values = Dictionary<string, string>()

    for i in 0 .. items - 1 do
        values[$"item-{i:D5}"] <- value

    let engine, ns = device server (Path.Combine(dir, "a.sqlite")) "bulk"
    let backend = MemoryValueBackend<string>(Codecs.String, values)
    ns.OpenCollection("items", CollectionOptions<string>(Codec = Codecs.String, Backend = backend)) |> ignore
    GC.Collect()
    let allocatedBefore = GC.GetTotalAllocatedBytes true
    use proc = Process.GetCurrentProcess()
    let pausedBefore = GC.GetTotalPauseDuration()
    let gcBefore = GC.CollectionCount 0, GC.CollectionCount 1, GC.CollectionCount 2
    let sw = Stopwatch.StartNew()
    engine.SyncNowAsync() |> awaitU
    let upload = sw.Elapsed
    let paused = GC.GetTotalPauseDuration() - pausedBefore
    let g0, g1, g2 = gcBefore
    let gcs = GC.CollectionCount 0 - g0, GC.CollectionCount 1 - g1, GC.CollectionCount 2 - g2
    let allocated = GC.GetTotalAllocatedBytes true - allocatedBefore
    proc.Refresh()
    let peak = proc.PeakWorkingSet64
    let status = engine.Status

    if status.PendingUploads <> 0 then
        failwithf "upload incomplete: %d pending" status.PendingUploads

    // Every value changed again: a flush of 10 000 known, dirty items.
    for k in values.Keys do
        backend.SetAsync(k, value + "2", CancellationToken.None).AsTask() |> awaitU

    let sw = Stopwatch.StartNew()
    engine.SyncNowAsync() |> awaitU
    let reupload = sw.Elapsed

    let fresh, freshNs = device server (Path.Combine(dir, "b.sqlite")) "bulk"
    // The app names its keys (protocol v1 has no key discovery).
    let target = MemoryValueBackend<string>(Codecs.String, null, values.Keys)
    freshNs.OpenCollection("items", CollectionOptions<string>(Codec = Codecs.String, Backend = target)) |> ignore
    let sw = Stopwatch.StartNew()
    fresh.SyncNowAsync() |> awaitU
    let cold = sw.Elapsed
    let got = (target.SnapshotAsync CancellationToken.None |> fun t -> t.AsTask() |> awaitT).Count

    if got <> items then
        failwithf "cold sync incomplete: %d of %d" got items

    printfn "%s" title
    printfn "  raw SQLite commit (WAL, FULL, two UPDATEs): %.3f ms (%.0f commits/s)" raw (1000.0 / raw)
    printfn "  bare HTTP round trip (GET /healthz): %.3f ms" roundTrip
    printfn "  first upload of %d dirty items: %.2f s (%.3f ms per item)" items upload.TotalSeconds (upload.TotalMilliseconds / float items)
    printfn "  upload of %d changed items (known keys): %.2f s (%.3f ms per item)" items reupload.TotalSeconds (reupload.TotalMilliseconds / float items)
    printfn "  allocated in this process during the upload: %.1f KB per item" (float allocated / 1024.0 / float items)
    printfn "  peak working set of this process: %.0f MB" (float peak / 1024.0 / 1024.0)
    let c0, c1, c2 = gcs
    printfn "  garbage collections during the upload: %d gen0, %d gen1, %d gen2, paused %.0f ms (%s GC)" c0 c1 c2 paused.TotalMilliseconds (if Runtime.GCSettings.IsServerGC then "server" else "workstation")
    printfn "  cold sync of a new device: %.2f s (%.3f ms per item)" cold.TotalSeconds (cold.TotalMilliseconds / float items)
    printfn "  machine load (1 min) after the run: %s" (try File.ReadAllText("/proc/loadavg").Split(' ')[0] with _ -> "n/a")
    engine.DisposeAsync().AsTask() |> awaitU
    fresh.DisposeAsync().AsTask() |> awaitU

/// The workload with the server in this process (SQLite `synchronous=FULL`).
let run (groupCommit: bool) (batchItems: bool) =
    let dir = Path.Combine(Path.GetTempPath(), "bbs-bulk-" + Guid.NewGuid().ToString("N"))
    Directory.CreateDirectory dir |> ignore

    let server =
        BitBoxSyncServer.StartAsync(
            ServerOptions(
                Urls = [| "http://127.0.0.1:0" |],
                MinimumLogLevel = LogLevel.Warning,
                SqlitePath = Path.Combine(dir, "server.sqlite"),
                GroupCommit = groupCommit,
                BatchItems = batchItems,
                AnonymousRequestsPerMinute = 0,
                WritesPerMinutePerToken = 0
            )
        )
        |> awaitT

    measure dir server.BaseAddress $"batch items: {batchItems}, group commit: {groupCommit}"
    server.DisposeAsync().AsTask() |> awaitU

/// The workload with the server command in a process of its own on the same machine: the
/// allocations, GC work and peak working set printed are then the uploading process's alone.
let runRemote (batchItems: bool) =
    let dir = Path.Combine(Path.GetTempPath(), "bbs-bulk-" + Guid.NewGuid().ToString("N"))
    Directory.CreateDirectory dir |> ignore
    let sqlite = Path.Combine(dir, "server.sqlite")
    let b = if batchItems then "true" else "false"

    let proc, baseUri =
        Common.startServerProcess $"--sqlite \"{sqlite}\" --anonymous-rate 0 --write-rate 0 --batch-items {b} --log-level Warning"

    use proc = proc

    try
        measure dir baseUri $"server in its own process (batch items: {batchItems}, group commit: true); the uploading process alone:"
    finally
        proc.Kill true
        proc.WaitForExit()
