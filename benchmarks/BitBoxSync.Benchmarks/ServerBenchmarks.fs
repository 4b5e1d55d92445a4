/// Server throughput and the long-poll watch: compare-and-set PUTs per second with 1, 8 and 64
/// concurrent clients on SQLite and PostgreSQL (BenchmarkDotNet), and a load run (`--server-load`)
/// for memory per parked watcher and wake-up latency against a server in its own process.
module BitBoxSync.Benchmarks.ServerBenchmarks

open System
open System.Diagnostics
open System.IO
open System.Net.Http
open System.Security.Cryptography
open System.Threading.Tasks
open BenchmarkDotNet.Attributes
open Microsoft.Extensions.Logging
open Npgsql
open BitBoxSync
open BitBoxSync.Protocol
open BitBoxSync.Protocol.Wire
open BitBoxSync.Server
open BitBoxSync.Benchmarks.Common

let private await (t: Task<'T>) = t.GetAwaiter().GetResult()

/// A logged-in identity with a shared namespace it can write to.
type Writer =
    {
        Token: string
        Namespace: NamespaceId
        Keys: NamespaceKeys
    }

let private keystore = BitBoxSync.DummyKeystore.FromLabel "bench"

/// Logs an identity in and creates a shared namespace.
let setUpWriterAs (keystore: BitBoxSync.DummyKeystore) (client: SyncClient) : Writer =
    let c = client.ChallengeAsync "login" |> await

    let signature: byte[] =
        keystore.SignLoginIntentAsync(Convert.FromBase64String c.Challenge).AsTask()
        |> await

    let login =
        client.LoginAsync
            {
                Kind = "keystore"
                KeyId = keystore.KeyId
                AuthPublicKey = Convert.ToHexStringLower keystore.AuthPublicKey.Span
                WrapPublicKey = Convert.ToHexStringLower keystore.WrapPublicKey.Span
                Challenge = c.Challenge
                IntentSignature = Convert.ToHexStringLower signature
                Attestation = null
            }
        |> await

    let ns = Bin.ofBytes<NamespaceIdKind>(RandomNumberGenerator.GetBytes 16) |> orFail
    let dek = Bin.ofBytes<DekKind>(RandomNumberGenerator.GetBytes 32) |> orFail

    let wrapPk =
        Bin.ofBytes<WrapPublicKeyKind>(keystore.WrapPublicKey.ToArray()) |> orFail

    let wrapped =
        DekWrap.wrap wrapPk ns dek (RandomNumberGenerator.GetBytes 32) |> orFail

    client.CreateSharedNamespaceAsync(
        login.AccessToken,
        { NamespaceId = ns.Wire; WrappedDek = wrapped.Wire }
    )
    |> await
    |> ignore

    {
        Token = login.AccessToken
        Namespace = ns
        Keys = NamespaceKeys.derive dek
    }

/// Logs the bench identity in and creates a shared namespace.
let setUpWriter (client: SyncClient) : Writer = setUpWriterAs keystore client

/// A 1 KiB item sealed for a version.
let sealItem (w: Writer) (item: ItemId) (version: uint64) : PutItemRequest =
    let nonce = Bin.ofBytes<ItemNonceKind>(RandomNumberGenerator.GetBytes 24) |> orFail

    let s =
        ItemCrypto.seal
            w.Keys
            w.Namespace
            item
            version
            nonce
            (ReadOnlySpan(Array.zeroCreate<byte> 1024))
        |> orFail

    {
        Nonce = s.Nonce.Wire
        Aad = s.Aad.Wire
        Ciphertext = s.Ciphertext.Wire
    }

/// `perClient` compare-and-set PUTs by each client on its own item, all clients at once.
let private putConcurrently (clients: SyncClient[]) (writerOf: int -> Writer) (items: ItemId[]) (versions: uint64[]) (perClient: int) =
    let run (i: int) =
        task {
            for _ in 1..perClient do
                let current = versions[i]
                let ifMatch = if current = 0UL then Nullable() else Nullable current
                let w = writerOf i
                let! r = clients[i].PutItemAsync(w.Token, w.Namespace.Wire, items[i].Wire, sealItem w items[i] (current + 1UL), ifMatch)
                versions[i] <- r.Version
        }
        :> Task

    Task.WhenAll(Array.init clients.Length run).GetAwaiter().GetResult()

/// Disposes the clients and the server, deletes the directory.
let private cleanUp (clients: SyncClient[]) (server: BitBoxSyncServer) (dir: string) =
    for c in clients do
        c.Dispose()

    server.DisposeAsync().AsTask().GetAwaiter().GetResult()

    try
        Directory.Delete(dir, true)
    with _ ->
        ()

/// The PostgreSQL server to benchmark against (same variable as the tests).
let postgresAdmin () =
    match Environment.GetEnvironmentVariable "BITBOXSYNC_TEST_POSTGRES" with
    | null
    | "" ->
        failwith
            "set BITBOXSYNC_TEST_POSTGRES (e.g. Host=127.0.0.1;Port=5432;Username=postgres) to benchmark PostgreSQL"
    | s -> s

let private freshPostgres () =
    let admin = postgresAdmin ()
    let name = "bbs_bench_" + Guid.NewGuid().ToString("N").Substring(0, 12)
    use c = new NpgsqlConnection(admin)
    c.Open()
    use cmd = c.CreateCommand()
    cmd.CommandText <- $"CREATE DATABASE {name}"
    cmd.ExecuteNonQuery() |> ignore
    NpgsqlConnectionStringBuilder(admin, Database = name).ConnectionString

/// Compare-and-set PUTs of 1 KiB items; each client updates its own item, all in one namespace
/// (so every write also moves the shared namespace head).
[<MemoryDiagnoser>]
type CasPutBenchmarks() =
    let mutable server: BitBoxSyncServer = Unchecked.defaultof<_>
    let mutable clients: SyncClient[] = [||]
    let mutable writer = Unchecked.defaultof<Writer>
    let mutable items: ItemId[] = [||]
    let mutable versions: uint64[] = [||]
    let mutable dir = ""

    /// Total PUTs per benchmark invocation, spread over the clients.
    static member Puts = 512

    [<Params(1, 8, 64)>]
    member val Clients = 1 with get, set

    [<Params("sqlite", "postgres")>]
    member val Store = "sqlite" with get, set

    [<GlobalSetup>]
    member this.Setup() =
        dir <- Path.Combine(Path.GetTempPath(), "bbs-bench-" + Guid.NewGuid().ToString("N"))
        Directory.CreateDirectory dir |> ignore

        let options =
            ServerOptions(
                Urls = [| "http://127.0.0.1:0" |],
                MinimumLogLevel = LogLevel.Warning,
                SqlitePath = Path.Combine(dir, "server.sqlite")
            )

        if this.Store = "postgres" then
            options.Store <- ServerStoreKind.Postgres
            options.PostgresConnectionString <- freshPostgres ()

        server <- BitBoxSyncServer.StartAsync(options) |> await
        clients <- Array.init this.Clients (fun _ -> new SyncClient(server.BaseAddress))
        writer <- setUpWriter clients[0]
        items <- Array.init this.Clients (fun i -> ItemIds.compute writer.Keys $"bench-{i}")
        versions <- Array.zeroCreate this.Clients

    [<Benchmark(OperationsPerInvoke = 512)>]
    member this.CasPut() =
        putConcurrently clients (fun _ -> writer) items versions (CasPutBenchmarks.Puts / this.Clients)

    [<GlobalCleanup>]
    member _.Cleanup() = cleanUp clients server dir

/// The hardware anchor of the server's write path, measured in the same run: one SQLite
/// transaction of two UPDATEs (an item row and a head row) committed in WAL mode with
/// `synchronous=FULL`, on a file in the same temporary directory the servers use.
type RawSqliteCommitBenchmarks() =
    let mutable connection: Microsoft.Data.Sqlite.SqliteConnection = null
    let mutable dir = ""
    let mutable n = 0L

    [<GlobalSetup>]
    member _.Setup() =
        dir <- Path.Combine(Path.GetTempPath(), "bbs-bench-" + Guid.NewGuid().ToString("N"))
        Directory.CreateDirectory dir |> ignore
        let file = Path.Combine(dir, "raw.sqlite")
        connection <- new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={file};Pooling=false")
        connection.Open()
        use cmd = connection.CreateCommand()

        cmd.CommandText <-
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, b BLOB); INSERT INTO t VALUES (1, 0, zeroblob(1400)), (2, 0, NULL);"

        cmd.ExecuteNonQuery() |> ignore

    [<Benchmark>]
    member _.RawCommit() =
        n <- n + 1L
        use tx = connection.BeginTransaction()
        use cmd = connection.CreateCommand()
        cmd.Transaction <- tx
        cmd.CommandText <- "UPDATE t SET v = $n, b = randomblob(1400) WHERE id = 1; UPDATE t SET v = $n WHERE id = 2"
        cmd.Parameters.AddWithValue("$n", n) |> ignore
        cmd.ExecuteNonQuery() |> ignore
        tx.Commit()

    [<GlobalCleanup>]
    member _.Cleanup() =
        connection.Dispose()
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools()

        try
            Directory.Delete(dir, true)
        with _ ->
            ()

/// Single-item compare-and-set PUTs of 1 KiB items against the SQLite server (`synchronous=FULL`),
/// each client on a namespace of its own, with group commit on and off: 1 client (the sequential
/// rate) and 64 concurrent clients (what a shared fsync buys).
[<MemoryDiagnoser>]
type GroupCommitBenchmarks() =
    let mutable server: BitBoxSyncServer = Unchecked.defaultof<_>
    let mutable clients: SyncClient[] = [||]
    let mutable writers: Writer[] = [||]
    let mutable items: ItemId[] = [||]
    let mutable versions: uint64[] = [||]
    let mutable dir = ""

    [<Params(1, 64)>]
    member val Clients = 1 with get, set

    [<Params(true, false)>]
    member val GroupCommit = true with get, set

    [<GlobalSetup>]
    member this.Setup() =
        dir <- benchDirectory "bbs-bench-"
        let options = benchServerOptions (Path.Combine(dir, "server.sqlite"))
        options.GroupCommit <- this.GroupCommit

        server <- BitBoxSyncServer.StartAsync(options) |> await
        clients <- Array.init this.Clients (fun _ -> new SyncClient(server.BaseAddress))
        // One identity per client: a key may hold at most 32 namespaces.
        writers <- clients |> Array.mapi (fun i c -> setUpWriterAs (BitBoxSync.DummyKeystore.FromLabel $"bench-{i}") c)
        items <- writers |> Array.map (fun w -> ItemIds.compute w.Keys "bench")
        versions <- Array.zeroCreate this.Clients

    [<Benchmark(OperationsPerInvoke = 512)>]
    member this.Put() =
        putConcurrently clients (fun i -> writers[i]) items versions (512 / this.Clients)

    [<GlobalCleanup>]
    member _.Cleanup() = cleanUp clients server dir

let private percentile (p: float) (sorted: float[]) =
    sorted[min (sorted.Length - 1) (int (Math.Ceiling(p * float sorted.Length)) - 1)]

/// `--server-load`: 1 000 parked watchers against the server command in its own process.
let runLoad (watchers: int) =
    let dir =
        Path.Combine(Path.GetTempPath(), "bbs-load-" + Guid.NewGuid().ToString("N"))

    Directory.CreateDirectory dir |> ignore
    let sqlite = Path.Combine(dir, "s.sqlite")
    let proc, baseUri = startServerProcess $"--sqlite \"{sqlite}\" --watch-timeout 00:01:00 --log-level Warning"
    use proc = proc

    try
        use handler = new SocketsHttpHandler(MaxConnectionsPerServer = watchers + 10)
        use http = new HttpClient(handler, Timeout = TimeSpan.FromSeconds 75.0)
        use client = new SyncClient(baseUri, http)
        let w = setUpWriter client
        let item = ItemIds.compute w.Keys "wake"
        let mutable version = 0UL

        let write () =
            let ifMatch = if version = 0UL then Nullable() else Nullable version

            let r =
                client.PutItemAsync(
                    w.Token,
                    w.Namespace.Wire,
                    item.Wire,
                    sealItem w item (version + 1UL),
                    ifMatch
                )
                |> await

            version <- r.Version

        // Warm up (JIT, connections), then measure the server's memory before parking.
        for _ in 1..50 do
            write ()

        let known () =
            let d = Collections.Generic.Dictionary<string, uint64>()
            d[w.Namespace.Wire] <- version
            d

        let memory () =
            proc.Refresh()
            proc.WorkingSet64, proc.PrivateMemorySize64

        Threading.Thread.Sleep 1000
        let ws0, priv0 = memory ()
        let k = known ()

        let parked =
            Array.init watchers (fun _ ->
                task {
                    let! r = client.WatchNamespacesAsync(w.Token, { KnownHeads = k })
                    return r, Stopwatch.GetTimestamp()
                })

        Threading.Thread.Sleep 3000
        let ws1, priv1 = memory ()
        let committed = Stopwatch.GetTimestamp()
        write ()
        let answers = Task.WhenAll(parked) |> await

        let latencies =
            answers
            |> Array.map (fun (_, t) -> Stopwatch.GetElapsedTime(committed, t).TotalMilliseconds)
            |> Array.sort

        let timedOut = answers |> Array.filter (fun (r, _) -> r.TimedOut) |> Array.length

        // One watcher at a time: commit-to-answer latency.
        let single =
            [|
                for _ in 1..200 do
                    let pending = client.WatchNamespacesAsync(w.Token, { KnownHeads = known () })
                    Threading.Thread.Sleep 2
                    let t0 = Stopwatch.GetTimestamp()
                    write ()
                    pending |> await |> ignore
                    Stopwatch.GetElapsedTime(t0).TotalMilliseconds
            |]
            |> Array.sort

        printfn "server process: %d watchers parked" watchers

        printfn
            "  working set %.1f MB -> %.1f MB: %.1f KB per parked watcher"
            (float ws0 / 1e6)
            (float ws1 / 1e6)
            (float (ws1 - ws0) / 1024.0 / float watchers)

        printfn
            "  private memory %.1f MB -> %.1f MB: %.1f KB per parked watcher"
            (float priv0 / 1e6)
            (float priv1 / 1e6)
            (float (priv1 - priv0) / 1024.0 / float watchers)

        printfn
            "  one write wakes all %d (timed out: %d): p50 %.1f ms, p99 %.1f ms, max %.1f ms (PUT sent -> watcher answered)"
            watchers
            timedOut
            (percentile 0.5 latencies)
            (percentile 0.99 latencies)
            latencies[latencies.Length - 1]

        printfn
            "  single watcher, 200 writes: p50 %.2f ms, p99 %.2f ms (PUT sent -> watcher answered, includes the PUT)"
            (percentile 0.5 single)
            (percentile 0.99 single)
    finally
        proc.Kill true
        proc.WaitForExit()

        try
            Directory.Delete(dir, true)
        with _ ->
            ()

/// Batch compare-and-set PUTs (the batch-items extension) of 1 KiB items against the SQLite server
/// (`synchronous=FULL`, group commit on), each client on a namespace of its own updating its own
/// items: 1 client (256 items per batch) and 64 concurrent clients (32 items per batch). Mean per
/// written item, to set next to `RawSqliteCommitBenchmarks` and the single-item PUTs.
[<MemoryDiagnoser>]
type BatchPutBenchmarks() =
    let mutable server: BitBoxSyncServer = Unchecked.defaultof<_>
    let mutable clients: SyncClient[] = [||]
    let mutable writers: Writer[] = [||]
    let mutable items: ItemId[][] = [||]
    let mutable versions: uint64[][] = [||]
    let mutable dir = ""

    /// Items written per benchmark invocation, spread over the clients.
    static member Items = 4096

    [<Params(1, 64)>]
    member val Clients = 1 with get, set

    member this.BatchSize = if this.Clients = 1 then 256 else 32

    [<GlobalSetup>]
    member this.Setup() =
        dir <- benchDirectory "bbs-bench-"
        server <- BitBoxSyncServer.StartAsync(benchServerOptions (Path.Combine(dir, "server.sqlite"))) |> await
        clients <- Array.init this.Clients (fun _ -> new SyncClient(server.BaseAddress))
        writers <- clients |> Array.mapi (fun i c -> setUpWriterAs (BitBoxSync.DummyKeystore.FromLabel $"bench-{i}") c)
        items <- writers |> Array.map (fun w -> Array.init this.BatchSize (fun k -> ItemIds.compute w.Keys $"bench-{k}"))
        versions <- Array.init this.Clients (fun _ -> Array.zeroCreate this.BatchSize)

    [<Benchmark(OperationsPerInvoke = 4096)>]
    member this.BatchPut() =
        let batches = BatchPutBenchmarks.Items / this.Clients / this.BatchSize

        let run (i: int) =
            task {
                let w = writers[i]

                for _ in 1..batches do
                    let entries =
                        Array.init this.BatchSize (fun k ->
                            let current = versions[i][k]
                            let body = sealItem w items.[i].[k] (current + 1UL)

                            {
                                ItemId = items.[i].[k].Wire
                                IfMatch = current
                                Nonce = body.Nonce
                                Aad = body.Aad
                                Ciphertext = body.Ciphertext
                            }
                            : BatchPutItem)

                    let! r = clients[i].PutItemsAsync(w.Token, w.Namespace.Wire, entries)

                    for k in 0 .. r.Results.Length - 1 do
                        if r.Results[k].Status <> 200 then
                            failwithf "item %d refused: %d %s" k r.Results[k].Status r.Results[k].Error

                        versions[i][k] <- r.Results[k].Version
            }
            :> Task

        Task.WhenAll(Array.init clients.Length run).GetAwaiter().GetResult()

    [<GlobalCleanup>]
    member _.Cleanup() = cleanUp clients server dir
