/// Helpers shared by the benchmark suites.
module BitBoxSync.Benchmarks.Common

/// The value of an Ok, or a failure naming the error (benchmark set-up only).
let orFail (r: Result<'a, 'e>) =
    match r with
    | Ok v -> v
    | Error e -> failwithf "%A" e

/// A loopback port that was free a moment ago.
let freePort () =
    let l = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0)
    l.Start()
    let p = (l.LocalEndpoint :?> System.Net.IPEndPoint).Port
    l.Stop()
    p

/// Starts the server command (`bitboxsync-server`, copied next to the benchmarks) in a process of
/// its own on a free loopback port with `arguments` (besides `--urls`), and waits up to 30 s until
/// it answers `/readyz`. Kill the process when done.
let startServerProcess (arguments: string) : System.Diagnostics.Process * System.Uri =
    let port = freePort ()
    let serverDll = System.IO.Path.Combine(System.AppContext.BaseDirectory, "bitboxsync-server.dll")

    let psi =
        System.Diagnostics.ProcessStartInfo(
            "dotnet",
            $"\"{serverDll}\" --urls http://127.0.0.1:{port} {arguments}",
            RedirectStandardOutput = true,
            RedirectStandardError = true
        )

    let proc = System.Diagnostics.Process.Start psi
    let baseUri = System.Uri($"http://127.0.0.1:{port}/")
    use probe = new System.Net.Http.HttpClient()
    let sw = System.Diagnostics.Stopwatch.StartNew()
    let mutable up = false

    while not up && sw.Elapsed < System.TimeSpan.FromSeconds 30.0 do
        try
            up <- probe.GetAsync(System.Uri(baseUri, "readyz")).GetAwaiter().GetResult().IsSuccessStatusCode
        with _ ->
            System.Threading.Thread.Sleep 100

    if not up then
        proc.Kill true
        failwith "the server command did not start"

    proc, baseUri

/// A fresh temporary directory for one benchmark's databases.
let benchDirectory (prefix: string) =
    let dir = System.IO.Path.Combine(System.IO.Path.GetTempPath(), prefix + System.Guid.NewGuid().ToString("N"))
    System.IO.Directory.CreateDirectory dir |> ignore
    dir

/// Options of an in-process benchmark server: loopback, SQLite file `sqlite`, warnings only, and no
/// rate limits (one identity writes thousands of items within seconds; the default limits would refuse it).
let benchServerOptions (sqlite: string) =
    BitBoxSync.Server.ServerOptions(
        Urls = [| "http://127.0.0.1:0" |],
        MinimumLogLevel = Microsoft.Extensions.Logging.LogLevel.Warning,
        SqlitePath = sqlite,
        AnonymousRequestsPerMinute = 0,
        WritesPerMinutePerToken = 0
    )
