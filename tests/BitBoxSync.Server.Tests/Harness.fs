/// Real parts for server tests: a BitBoxSync server on Kestrel at http://127.0.0.1:0 over a real
/// SQLite file or a real PostgreSQL database, a settable clock, restarts, and state dumps.
module BitBoxSync.Server.Tests.Harness

open System
open System.IO
open System.Threading.Tasks
open Microsoft.AspNetCore.Builder
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

/// Sets a test server's options: the database, the clock, the watch timeout, no rate limits.
let configure (db: Database) (clock: ManualClock) (watchTimeout: TimeSpan) (o: ServerOptions) =
    o.PublicOrigin <- origin
    o.WatchTimeout <- watchTimeout
    o.MinimumLogLevel <- LogLevel.Warning

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

/// Options for a test server on an ephemeral loopback port.
let options (db: Database) (clock: ManualClock) (watchTimeout: TimeSpan) =
    let o = ServerOptions(Urls = [| "http://127.0.0.1:0" |])
    configure db clock watchTimeout o
    o

/// Puts every request's absolute path under a prefix (raw HTTP tests written for the root).
type PrefixHandler(prefix: string) =
    inherit Net.Http.DelegatingHandler(new Net.Http.HttpClientHandler())

    override _.SendAsync(request, ct) =
        let b = UriBuilder(request.RequestUri)
        b.Path <- prefix + b.Path
        request.RequestUri <- b.Uri
        base.SendAsync(request, ct)

/// A running test server plus a raw client pointed at it (at <paramref name="baseAddress"/>: the
/// server's root, or the prefix it is mounted under).
type TestServer(db: Database, clock: ManualClock, server: BitBoxSyncServer, baseAddress: Uri) =
    let client = new SyncClient(baseAddress)
    new(db, clock, server: BitBoxSyncServer) = new TestServer(db, clock, server, server.BaseAddress)
    member _.Db = db
    member _.Clock = clock
    member _.Server = server
    member _.Client = client
    member _.BaseAddress = baseAddress

    /// An HttpClient for raw requests with absolute paths (`/v1/…`), sent under the mount prefix.
    member _.RawHttp() =
        let prefix = baseAddress.AbsolutePath.TrimEnd '/'
        let root = Uri(baseAddress, "/")

        if prefix = "" then
            new Net.Http.HttpClient(BaseAddress = root)
        else
            new Net.Http.HttpClient(new PrefixHandler(prefix), BaseAddress = root)

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

/// The header the host app's own middleware adds to every answer (mounted servers).
let hostMiddlewareHeader = "X-Host-Middleware"

/// A host app of its own on 127.0.0.1 (its own endpoint `/hello` and a middleware that stamps
/// every answer) with the BitBoxSync server mounted under <paramref name="prefix"/>.
let startMounted (db: Database) (clock: ManualClock) (watchTimeout: TimeSpan) (prefix: string) =
    let builder =
        Microsoft.AspNetCore.Builder.WebApplication.CreateSlimBuilder(
            Microsoft.AspNetCore.Builder.WebApplicationOptions(Args = [||])
        )

    builder.Logging.ClearProviders() |> ignore
    Microsoft.AspNetCore.Hosting.HostingAbstractionsWebHostBuilderExtensions.UseUrls(builder.WebHost, "http://127.0.0.1:0")
    |> ignore

    builder.Services.AddBitBoxSyncServer(Action<ServerOptions>(configure db clock watchTimeout))
    |> ignore

    let app = builder.Build()

    app.Use(
        Func<Microsoft.AspNetCore.Http.HttpContext, Microsoft.AspNetCore.Http.RequestDelegate, Task>(fun http next ->
            http.Response.Headers[hostMiddlewareHeader] <- Microsoft.Extensions.Primitives.StringValues "ran"
            next.Invoke http)
    )
    |> ignore

    app.MapGet("/hello", Func<string>(fun () -> "the host's own endpoint")) |> ignore
    app.MapBitBoxSync(prefix) |> ignore
    app.StartAsync().GetAwaiter().GetResult()
    let server = new BitBoxSyncServer(app)
    new TestServer(db, clock, server, Uri(server.BaseAddress, prefix.TrimStart('/') + "/"))

/// When set, `start` and `startOn` mount the server under this prefix in a host app
/// (`startMounted`) instead of starting it standalone: the suites run again through the prefix.
let mutable mountPrefix: string option = None

/// Starts a server on a database (new or reused: restarts keep the data).
let startOn (db: Database) (clock: ManualClock) (watchTimeout: TimeSpan) =
    match mountPrefix with
    | Some prefix -> startMounted db clock watchTimeout prefix
    | None ->
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

/// The server command (`bitboxsync-server`, built from server/BitBoxSync.Server.Tool).
let serverCommandDll = Path.Combine(AppContext.BaseDirectory, "bitboxsync-server.dll")

/// The server command in a process of its own, configured the way an operator would: listen URL
/// and origin on the command line, the store (and <paramref name="environment"/>) through
/// environment variables. Disposing kills it.
type ServerProcess(db: Database, watchTimeout: TimeSpan, logLevel: string, environment: (string * string) list) =
    let port = freePort ()

    let baseAddress = Uri($"http://127.0.0.1:{port}")
    let output = Text.StringBuilder()

    let proc =
        let dll = serverCommandDll
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

        for name, value in environment do
            psi.Environment[name] <- value

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

    new(db, watchTimeout, logLevel) = new ServerProcess(db, watchTimeout, logLevel, [])
    new(db, watchTimeout) = new ServerProcess(db, watchTimeout, "Warning", [])
    member _.BaseAddress = baseAddress
    member _.Output = lock output (fun () -> output.ToString())

    /// Kills the process at once (SIGKILL: no graceful stop, no flush).
    member _.Kill() =
        proc.Kill true
        proc.WaitForExit(10000) |> ignore
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
