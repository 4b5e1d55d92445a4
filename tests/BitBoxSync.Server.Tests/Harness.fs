/// Real parts for server tests: a BitBoxSync server on Kestrel at http://127.0.0.1:0 over a real
/// SQLite file or a real PostgreSQL database, a settable clock, restarts, and state dumps.
module BitBoxSync.Server.Tests.Harness

open System
open System.IO
open System.Threading.Tasks
open Microsoft.Extensions.Logging
open Npgsql
open BitBoxSync
open BitBoxSync.Server

/// A clock the test moves; timers (watch timeouts) still run in real time.
type ManualClock(start: DateTimeOffset) =
    inherit TimeProvider()
    let mutable now = start
    override _.GetUtcNow() = now
    member _.Advance(by: TimeSpan) = now <- now + by
    member _.Now = now

/// Which database a test server uses.
type Backend =
    | Sqlite
    | Postgres

    override b.ToString() =
        match b with
        | Sqlite -> "sqlite"
        | Postgres -> "postgres"

/// The PostgreSQL server the test command started (connection string without a database), if any.
let postgresAdmin: string option =
    match Environment.GetEnvironmentVariable "BITBOXSYNC_TEST_POSTGRES" with
    | null
    | "" -> None
    | s -> Some s

/// Backends to run the real-parts scenarios against. In CI a missing PostgreSQL is a failure, not a skip.
let backends =
    match postgresAdmin with
    | Some _ -> [ Sqlite; Postgres ]
    | None -> [ Sqlite ]

let private run (t: Task) = t.GetAwaiter().GetResult()

/// A fresh, empty PostgreSQL database; returns its connection string.
let createPostgresDatabase () : string =
    let admin =
        postgresAdmin
        |> Option.defaultWith (fun () -> failwith "BITBOXSYNC_TEST_POSTGRES is not set")

    let name = "bbs_" + Guid.NewGuid().ToString("N").Substring(0, 16)
    use c = new NpgsqlConnection(admin)
    c.Open()
    use cmd = c.CreateCommand()
    cmd.CommandText <- $"CREATE DATABASE {name}"
    cmd.ExecuteNonQuery() |> ignore
    NpgsqlConnectionStringBuilder(admin, Database = name).ConnectionString

/// Where a test server keeps its data: survives restarts of the server.
type Database =
    {
        Backend: Backend
        SqlitePath: string
        Postgres: string
    }

    static member Create(backend: Backend) =
        match backend with
        | Sqlite ->
            let dir =
                Path.Combine(Path.GetTempPath(), "bbs-tests", Guid.NewGuid().ToString("N"))

            Directory.CreateDirectory dir |> ignore

            {
                Backend = backend
                SqlitePath = Path.Combine(dir, "server.sqlite")
                Postgres = null
            }
        | Postgres ->
            {
                Backend = backend
                SqlitePath = null
                Postgres = createPostgresDatabase ()
            }

/// The public origin test servers print in invites.
let origin = "https://sync.test"

/// Options for a test server on an ephemeral loopback port.
let options (db: Database) (clock: ManualClock) (watchTimeout: TimeSpan) =
    let o =
        ServerOptions(
            Urls = [| "http://127.0.0.1:0" |],
            PublicOrigin = origin,
            WatchTimeout = watchTimeout,
            MinimumLogLevel = LogLevel.Warning
        )

    match db.Backend with
    | Sqlite ->
        o.Store <- ServerStoreKind.Sqlite
        o.SqlitePath <- db.SqlitePath
    | Postgres ->
        o.Store <- ServerStoreKind.Postgres
        o.PostgresConnectionString <- db.Postgres

    o.Clock <- clock
    // The suites make thousands of requests from one address: rate limits are tested on their own.
    o.AnonymousRequestsPerMinute <- 0
    o.WritesPerMinutePerToken <- 0
    o

/// A running test server plus a raw client pointed at it.
type TestServer(db: Database, clock: ManualClock, server: BitBoxSyncServer) =
    let client = new SyncClient(server.BaseAddress)
    member _.Db = db
    member _.Clock = clock
    member _.Server = server
    member _.Client = client
    member _.BaseAddress = server.BaseAddress

    /// Every durable row, canonically (challenges excluded: any attempt consumes them).
    member _.Dump() =
        server.Store.ReadAsync(
            (fun tx -> tx.DumpAsync(Threading.CancellationToken.None)),
            Threading.CancellationToken.None
        )
        |> fun t -> t.GetAwaiter().GetResult()

    interface IDisposable with
        member _.Dispose() =
            client.Dispose()
            server.DisposeAsync().AsTask() |> run

/// Starts a server on a database (new or reused: restarts keep the data).
let startOn (db: Database) (clock: ManualClock) (watchTimeout: TimeSpan) =
    let server =
        BitBoxSyncServer.StartAsync(options db clock watchTimeout).GetAwaiter().GetResult()

    new TestServer(db, clock, server)

/// Starts a server on a fresh database of a backend.
let start (backend: Backend) =
    startOn
        (Database.Create backend)
        (ManualClock(DateTimeOffset.UtcNow))
        (TimeSpan.FromSeconds 2.0)

/// An engine with its default event stream subscribed from the start (tests read every event).
let withEvents (engine: BitBoxSync.SyncEngine) =
    engine.Events |> ignore
    engine

/// A loopback port that was free a moment ago.
let freePort () =
    let l = new Net.Sockets.TcpListener(Net.IPAddress.Loopback, 0)
    l.Start()
    let p = (l.LocalEndpoint :?> Net.IPEndPoint).Port
    l.Stop()
    p

/// Awaits a task from synchronous test code.
let await (t: Task<'T>) = t.GetAwaiter().GetResult()

/// Awaits a unit task.
let awaitUnit (t: Task) = t.GetAwaiter().GetResult()

/// The status of a refused call, or 0 when it succeeded.
let statusOf (f: unit -> Task<'T>) : int =
    try
        f () |> await |> ignore
        0
    with
    | :? SyncApiException as e -> e.StatusCode
    | :? AggregateException as e when (e.InnerException :? SyncApiException) ->
        (e.InnerException :?> SyncApiException).StatusCode

/// The server command (`BitBoxSync.Server`) in a process of its own, configured the way an
/// operator would: listen URL and origin on the command line, the store through environment
/// variables. Disposing kills it.
type ServerProcess(db: Database, watchTimeout: TimeSpan, logLevel: string) =
    let port = freePort ()

    let baseAddress = Uri($"http://127.0.0.1:{port}")
    let output = Text.StringBuilder()

    let proc =
        let dll = typeof<BitBoxSyncServer>.Assembly.Location
        let timeout = watchTimeout.ToString("c")

        let psi =
            Diagnostics.ProcessStartInfo(
                "dotnet",
                $"\"{dll}\" --urls {baseAddress} --public-origin {origin} --watch-timeout {timeout} --log-level {logLevel}",
                RedirectStandardOutput = true,
                RedirectStandardError = true
            )

        match db.Backend with
        | Sqlite -> psi.Environment["BITBOXSYNC_SqlitePath"] <- db.SqlitePath
        | Postgres ->
            psi.Environment["BITBOXSYNC_Store"] <- "Postgres"
            psi.Environment["BITBOXSYNC_PostgresConnectionString"] <- db.Postgres

        let p = Diagnostics.Process.Start psi

        p.OutputDataReceived.Add(fun e ->
            lock output (fun () -> output.AppendLine e.Data |> ignore))

        p.ErrorDataReceived.Add(fun e -> lock output (fun () -> output.AppendLine e.Data |> ignore))
        p.BeginOutputReadLine()
        p.BeginErrorReadLine()
        p

    do
        use probe = new Net.Http.HttpClient(Timeout = TimeSpan.FromSeconds 2.0)
        let sw = Diagnostics.Stopwatch.StartNew()
        let mutable up = false

        while not up && sw.Elapsed < TimeSpan.FromSeconds 30.0 && not proc.HasExited do
            try
                up <-
                    (probe.GetAsync(Uri(baseAddress, "/healthz")).GetAwaiter().GetResult())
                        .IsSuccessStatusCode
            with _ ->
                Threading.Thread.Sleep 100

        if not up then
            (try
                proc.Kill true
             with _ ->
                 ())

            failwithf
                "the server process did not start:\n%s"
                (lock output (fun () -> output.ToString()))

    new(db, watchTimeout) = new ServerProcess(db, watchTimeout, "Warning")
    member _.BaseAddress = baseAddress
    member _.Output = lock output (fun () -> output.ToString())
    member _.ProcessId = proc.Id

    /// The exit code, or None when the process is still running after the timeout.
    member _.WaitForExit(timeout: TimeSpan) =
        if proc.WaitForExit(int timeout.TotalMilliseconds) then
            proc.WaitForExit() // drains the output readers
            Some proc.ExitCode
        else
            None

    interface IDisposable with
        member _.Dispose() =
            (try
                proc.Kill true
             with _ ->
                 ())

            proc.WaitForExit()
            proc.Dispose()
