/// The server as a part of other apps and as an operated service: mounted under a prefix in a host
/// app, options validated at start, Kestrel's own refusals with JSON bodies, forwarded headers only
/// from trusted proxies, metrics, and the command's logs (JSON, dated, with request IDs).
module BitBoxSync.Server.Tests.HostingTests

open System
open System.Collections.Generic
open System.Net.Http
open System.Net.Sockets
open System.Text
open System.Text.Json
open Expecto
open Microsoft.AspNetCore.Builder
open Microsoft.AspNetCore.Hosting
open Microsoft.Extensions.DependencyInjection
open Microsoft.Extensions.Logging
open Microsoft.Extensions.Options
open OpenTelemetry
open OpenTelemetry.Metrics
open BitBoxSync.Server
open BitBoxSync.Server.Tests.Harness
open BitBoxSync.Server.Tests.Flows

/// Sends raw bytes on a fresh connection; returns everything the server wrote before closing (or 5 s).
let private rawExchange (address: Uri) (request: byte[]) =
    use socket = new TcpClient()
    socket.Connect("127.0.0.1", address.Port)
    let stream = socket.GetStream()
    stream.ReadTimeout <- 5000
    stream.Write(request, 0, request.Length)
    use received = new IO.MemoryStream()
    let buffer = Array.zeroCreate<byte> 8192
    let mutable reading = true

    while reading do
        try
            let n = stream.Read(buffer, 0, buffer.Length)
            if n = 0 then reading <- false else received.Write(buffer, 0, n)
        with :? IO.IOException ->
            reading <- false

    Encoding.Latin1.GetString(received.ToArray())

/// Splits one HTTP/1.1 answer into status, headers (lowercase names) and body.
let private parseAnswer (text: string) =
    let split = text.IndexOf "\r\n\r\n"
    Expect.isGreaterThan split 0 $"a complete header block: {text}"
    let lines = text.Substring(0, split).Split "\r\n"
    let status = int (lines[0].Split(' ')[1])

    let headers =
        lines
        |> Array.skip 1
        |> Array.map (fun l ->
            let i = l.IndexOf ':'
            l.Substring(0, i).Trim().ToLowerInvariant(), l.Substring(i + 1).Trim())
        |> Map.ofArray

    status, headers, text.Substring(split + 4)

let private mounted =
    test "mounted under /sync in a host app: the host's endpoint and middleware run beside the server, clients sync through the prefix" {
        use server =
            startMounted (Database.Create Sqlite) (ManualClock DateTimeOffset.UtcNow) (TimeSpan.FromSeconds 2.0) "/sync"

        Expect.stringEnds (string server.BaseAddress) "/sync/" "the client's server URL carries the prefix"
        use http = new HttpClient(BaseAddress = Uri(server.BaseAddress, "/"))
        Expect.equal (http.GetStringAsync "/hello" |> await) "the host's own endpoint" "the host's endpoint"
        use health = http.GetAsync "/sync/healthz" |> await
        Expect.equal (int health.StatusCode) 200 "the server's liveness under the prefix"
        Expect.isTrue (health.Headers.Contains hostMiddlewareHeader) "the host's middleware ran for the server's endpoint"
        Expect.equal (http.GetStringAsync "/sync/readyz" |> await) """{"status":"ok"}""" "readiness under the prefix"
        Expect.equal (int (http.GetAsync "/healthz" |> await).StatusCode) 404 "nothing of the server outside the prefix"
        Expect.equal (int (http.GetAsync "/v1/namespaces/mine" |> await).StatusCode) 404 "nor its API"
        let alice = login server "alice"
        let ns, _ = ensureDefault alice
        put alice ns "greeting" None "hello" |> ignore
        Expect.equal (read alice ns "greeting") (1UL, "hello") "a write and a read through the prefix"
    }

let private mountingErrors =
    test "mounting: a missing registration, a bad prefix and invalid options are refused with clear errors" {
        let builder = WebApplication.CreateSlimBuilder(WebApplicationOptions(Args = [||]))
        builder.Logging.ClearProviders() |> ignore
        let app = builder.Build()

        let e = Expect.throwsT<InvalidOperationException> (fun () -> app.MapBitBoxSync("/sync") |> ignore) "no services"
        ignore e

        let withServer (configure: ServerOptions -> unit) =
            let b = WebApplication.CreateSlimBuilder(WebApplicationOptions(Args = [||]))
            b.Logging.ClearProviders() |> ignore
            b.Services.AddBitBoxSyncServer(Action<ServerOptions> configure) |> ignore
            b.Build()

        let dir = IO.Path.Combine(IO.Path.GetTempPath(), "bbs-tests", Guid.NewGuid().ToString "N")
        IO.Directory.CreateDirectory dir |> ignore
        let okApp = withServer (fun o -> o.SqlitePath <- IO.Path.Combine(dir, "s.sqlite"))

        for prefix in [ "sync"; "/sync/"; "/sync/{x}"; "/a?b" ] do
            Expect.throwsT<ArgumentException> (fun () -> okApp.MapBitBoxSync(prefix) |> ignore) $"prefix '{prefix}' refused"

        let bad = withServer (fun o -> o.WatchTimeout <- TimeSpan.Zero)

        let error =
            try
                bad.MapBitBoxSync() |> ignore
                bad.StartAsync().GetAwaiter().GetResult()
                bad.StopAsync().GetAwaiter().GetResult()
                None
            with :? OptionsValidationException as e ->
                Some e.Message

        Expect.isSome error "invalid options stop the host"
        Expect.stringContains error.Value "WatchTimeout" "the message names the option"
        Expect.isFalse (IO.File.Exists(IO.Path.Combine(dir, "bad.sqlite"))) "nothing was created"
    }

/// Kestrel refuses malformed requests before any middleware; the standalone server still answers JSON.
let private kestrelRefusals =
    test "Kestrel's own refusals (NUL in a header, %00 in the path, no Host, a bad request line, oversized headers) carry a JSON body" {
        use server = start Sqlite

        let cases =
            [
                "a NUL byte in a header value", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\000b\r\n\r\n", 400, "bad request"
                "%00 in the path", "GET /v1/kv/%00 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad request"
                "no Host header", "GET /healthz HTTP/1.1\r\n\r\n", 400, "bad request"
                "a malformed request line", "GARBAGE\r\n\r\n", 400, "bad request"
                "oversized headers",
                "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + String('a', 20000) + "\r\n\r\n",
                431,
                "request header fields too large"
            ]

        for name, request, expectedStatus, message in cases do
            let status, headers, body =
                rawExchange server.BaseAddress (Encoding.Latin1.GetBytes request) |> parseAnswer

            Expect.equal status expectedStatus $"{name}: status"
            Expect.equal headers["content-type"] "application/json" $"{name}: JSON"
            Expect.equal body $"{{\"error\":\"{message}\"}}" $"{name}: body"
            Expect.equal headers["content-length"] (string body.Length) $"{name}: the length covers the body"

        // Keep-alive: a good answer, then the refusal on the same connection; the good one is untouched.
        let both =
            rawExchange
                server.BaseAddress
                (Encoding.Latin1.GetBytes "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\000b\r\n\r\n")

        let status, headers, body =
            rawExchange server.BaseAddress (Encoding.Latin1.GetBytes "CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\nConnection: close\r\n\r\n")
            |> parseAnswer

        Expect.equal (status, headers["content-type"]) (404, "application/json") "CONNECT reaches routing: a JSON 404"
        Expect.stringContains body "{\"error\":\"not found\"}" "CONNECT: body (chunked)"

        let first = both.IndexOf "HTTP/1.1 200"
        let second = both.IndexOf "HTTP/1.1 400"
        Expect.isTrue (first = 0 && second > first) $"two answers in order: {both}"
        Expect.stringContains (both.Substring(0, second)) "{\"status\":\"ok\"}" "the first answer is intact"
        Expect.stringEnds both "{\"error\":\"bad request\"}" "the refusal has its JSON body"
    }

/// Kestrel's request-headers timeout (shortened here) also answers with a JSON body.
let private headersTimeout =
    test "Kestrel's 408 for headers that never finish carries a JSON body" {
        let db = Database.Create Sqlite
        let clock = ManualClock DateTimeOffset.UtcNow
        let o = options db clock (TimeSpan.FromSeconds 2.0)

        let server =
            BitBoxSyncServer
                .StartWithAsync(
                    o,
                    Action<WebApplicationBuilder>(fun b ->
                        b.WebHost.ConfigureKestrel(fun k -> k.Limits.RequestHeadersTimeout <- TimeSpan.FromSeconds 1.0)
                        |> ignore),
                    Threading.CancellationToken.None
                )
            |> await

        use _ = new TestServer(db, clock, server)
        let sw = Diagnostics.Stopwatch.StartNew()
        let status, headers, body = rawExchange server.BaseAddress (Encoding.Latin1.GetBytes "GET /healthz HTTP/1.1\r\nHost: x\r\n") |> parseAnswer
        Expect.equal status 408 "request timeout"
        Expect.equal headers["content-type"] "application/json" "JSON"
        Expect.equal body "{\"error\":\"request timeout\"}" "body"
        Expect.isLessThan sw.Elapsed (TimeSpan.FromSeconds 5.0) "after the shortened timeout"
    }

let private challengeFrom (http: HttpClient) (forwardedFor: string) =
    use request =
        new HttpRequestMessage(
            HttpMethod.Post,
            "/v1/auth/challenge",
            Content = new StringContent("""{"purpose":"login","kind":"keystore"}""", Encoding.UTF8, "application/json")
        )

    request.Headers.Add("X-Forwarded-For", forwardedFor)
    use response = http.Send request
    int response.StatusCode

let private forwardedHeaders =
    test "forwarded client addresses count only from a trusted proxy" {
        let run (trusted: string[]) =
            let db = Database.Create Sqlite
            let clock = ManualClock DateTimeOffset.UtcNow
            let o = options db clock (TimeSpan.FromSeconds 2.0)
            o.AnonymousRequestsPerMinute <- 2
            o.TrustedProxies <- trusted
            use server = new TestServer(db, clock, BitBoxSyncServer.StartAsync(o) |> await)
            use http = server.RawHttp()

            [ "10.0.0.1"; "10.0.0.1"; "10.0.0.1"; "10.0.0.2"; "10.0.0.2"; "10.0.0.3" ]
            |> List.map (challengeFrom http)

        Expect.equal
            (run [| "127.0.0.1" |])
            [ 200; 200; 429; 200; 200; 200 ]
            "behind a trusted proxy each forwarded client has its own limit"

        Expect.equal
            (run [||])
            [ 200; 200; 429; 429; 429; 429 ]
            "without a trusted proxy the header is ignored: one connection address, one limit"

        Expect.equal
            (run [| "10.9.0.0/16" |])
            [ 200; 200; 429; 429; 429; 429 ]
            "a proxy list that does not hold the connection's address changes nothing"

        let bad = ServerOptions(TrustedProxies = [| "proxy.example" |])
        Expect.throwsT<ArgumentException> (fun () -> bad.Validate()) "a proxy must be an address or a network"
    }

/// The points of an exported metric.
let private pointsOf (m: Metric) =
    [
        let mutable e = m.GetMetricPoints().GetEnumerator()

        while e.MoveNext() do
            yield e.Current
    ]

/// The tags of a metric point.
let private tagsOf (p: MetricPoint) =
    [
        let mutable e = p.Tags.GetEnumerator()

        while e.MoveNext() do
            yield e.Current
    ]

/// The meter's instruments, collected with OpenTelemetry's in-memory exporter.
let private metrics =
    test "metrics: requests by endpoint and status, CAS conflicts, commit latency, parked watchers and wake-ups" {
        let exported = List<Metric>()

        use provider =
            Sdk.CreateMeterProviderBuilder().AddMeter("BitBoxSync.Server").AddInMemoryExporter(exported).Build()

        use server = start Sqlite
        let alice = login server "alice"
        let ns, _ = ensureDefault alice
        put alice ns "k" None "v1" |> ignore
        let conflict = statusOf (fun () -> Threading.Tasks.Task.FromResult(put alice ns "k" None "again"))
        Expect.equal conflict 412 "a stale create is a CAS conflict"
        let known = Dictionary<string, uint64>()
        known[ns.Id.Wire] <- 1UL // the current head: the watch parks
        let watch = alice.Client.WatchNamespacesAsync(alice.Token, { KnownHeads = known })
        let sw = Diagnostics.Stopwatch.StartNew()

        while server.Server.ParkedWatchers = 0 && sw.Elapsed < TimeSpan.FromSeconds 5.0 do
            Threading.Thread.Sleep 10

        provider.ForceFlush() |> ignore
        let parked = exported |> Seq.filter (fun m -> m.Name = "bitboxsync.server.watchers.parked") |> Seq.toList
        let parkedValue =
            [ for m in parked do for p in pointsOf m -> p.GetSumLong() ] |> List.fold max 0L
        Expect.equal parkedValue 1L "one parked watcher observed"
        put alice ns "k" (Some 1UL) "v2" |> ignore
        let answer = watch |> await
        Expect.isFalse answer.TimedOut "the write woke the watcher"
        exported.Clear()
        provider.ForceFlush() |> ignore

        let points name =
            [
                for m in exported do
                    if m.Name = name then
                        for p in pointsOf m do
                            let tags = Dictionary<string, obj>()
                            for t in tagsOf p do
                                tags[t.Key] <- t.Value
                            yield p, tags
            ]

        let requests endpoint status =
            points "bitboxsync.server.requests"
            |> List.filter (fun (_, t) ->
                string t["bitboxsync.endpoint"] = endpoint && Convert.ToInt32 t["http.response.status_code"] = status)
            |> List.sumBy (fun (p, _) -> p.GetSumLong())

        Expect.equal (requests "item.put" 200) 2L "two accepted writes"
        Expect.equal (requests "item.put" 412) 1L "one refused write"
        Expect.equal (requests "auth.login" 200) 1L "one login"
        Expect.equal (requests "namespace.watch" 200) 1L "one answered watch"
        let conflicts = points "bitboxsync.server.cas_conflicts" |> List.sumBy (fun (p, _) -> p.GetSumLong())
        Expect.equal conflicts 1L "one CAS conflict"
        let wakeups = points "bitboxsync.server.watch.wakeups" |> List.sumBy (fun (p, _) -> p.GetSumLong())
        Expect.isGreaterThanOrEqual wakeups 1L "the watcher was woken"

        let commits =
            points "bitboxsync.server.commit.duration"
            |> List.filter (fun (_, t) -> string t["bitboxsync.store"] = "sqlite")
            |> List.sumBy (fun (p, _) -> p.GetHistogramCount())

        Expect.isGreaterThanOrEqual commits 4L "every write transaction's commit is timed"

        for m in exported do
            for p in pointsOf m do
                for t in tagsOf p do
                    Expect.isFalse (string t.Value = ns.Id.Wire || string t.Value = alice.Token) $"{m.Name}: no identifiers in tags"
    }

/// Concurrent writers on one store: their commits are shared (fewer commits than accepted writes).
let private groupCommitGroups =
    test "group commit: 64 concurrent writers on 64 namespaces share commits; every write accepted, heads moved by one each" {
        use server = start Sqlite
        let sessions = [ for i in 1..64 -> login server $"writer{i}" ]
        let namespaces = sessions |> List.map (fun s -> s, fst (ensureDefault s))
        let commits = Threading.Channels.Channel.CreateUnbounded<double>()

        use listener = new Diagnostics.Metrics.MeterListener()

        listener.InstrumentPublished <-
            fun instrument l ->
                if instrument.Meter.Name = "BitBoxSync.Server" && instrument.Name = "bitboxsync.server.commit.duration" then
                    l.EnableMeasurementEvents instrument

        listener.SetMeasurementEventCallback<double>(fun _ value _ _ -> commits.Writer.TryWrite value |> ignore)
        listener.Start()

        let writes =
            namespaces
            |> List.map (fun (s, ns) ->
                Threading.Tasks.Task.Run(fun () ->
                    for round in 1..5 do
                        put s ns "k" (if round = 1 then None else Some(uint64 (round - 1))) $"v{round}" |> ignore))
            |> Array.ofList

        Threading.Tasks.Task.WaitAll(writes, TimeSpan.FromSeconds 60.0) |> ignore
        listener.Dispose()
        let mutable count = 0

        while commits.Reader.TryRead() |> fst do
            count <- count + 1

        for s, ns in namespaces do
            Expect.equal (read s ns "k") (5UL, "v5") "every write landed, in order"

        printfn "group commit: %d accepted writes in %d commits" (64 * 5) count
        Expect.isLessThan count (64 * 5) "commits were shared by concurrent writes"
    }

/// kill -9 while many clients write: every acknowledged write is there after the restart.
let private crashDurability =
    test "kill -9 during concurrent writes (group commit, SQLite FULL): no acknowledged write is lost" {
        let db = Database.Create Sqlite
        // Identities, tokens and namespaces first, in process; then the same file under the command.
        let writers =
            use setup = startOn db (ManualClock DateTimeOffset.UtcNow) (TimeSpan.FromSeconds 2.0)
            [ for i in 1..16 -> let s = login setup $"crash{i}" in s.Token, fst (ensureDefault s) ]

        let acknowledged = Collections.Concurrent.ConcurrentDictionary<string, uint64>()
        use proc = new ServerProcess(db, TimeSpan.FromSeconds 2.0)
        use stop = new Threading.CancellationTokenSource()

        let loops =
            writers
            |> List.map (fun (token, ns) ->
                Threading.Tasks.Task.Run(fun () ->
                    use client = new BitBoxSync.SyncClient(proc.BaseAddress)
                    let item = itemId ns "k"
                    let mutable version = 0UL

                    while not stop.IsCancellationRequested do
                        try
                            client.PutItemAsync(token, ns.Id.Wire, item.Wire, sealFor ns item (version + 1UL) "v", (if version = 0UL then Nullable() else Nullable version))
                            |> await
                            |> ignore

                            version <- version + 1UL
                            acknowledged[ns.Id.Wire] <- version
                        with _ ->
                            stop.Cancel()))
            |> Array.ofList

        Threading.Thread.Sleep 1500
        proc.Kill()
        stop.Cancel()
        Threading.Tasks.Task.WaitAll(loops, TimeSpan.FromSeconds 30.0) |> ignore
        let total = acknowledged.Values |> Seq.sumBy int
        Expect.isGreaterThan total 50 "writes were acknowledged before the kill"
        use restarted = startOn db (ManualClock DateTimeOffset.UtcNow) (TimeSpan.FromSeconds 2.0)
        let reader = login restarted "crash1"

        for token, ns in writers do
            match acknowledged.TryGetValue ns.Id.Wire with
            | true, version ->
                let stored =
                    restarted.Client.GetItemAsync(token, ns.Id.Wire, (itemId ns "k").Wire) |> await

                Expect.isGreaterThanOrEqual stored.Version version $"acknowledged version {version} survived"
            | _ -> ()

        ignore reader
        printfn "crash durability: %d acknowledged writes, all present after kill -9" total
    }

/// The command's log: standard logging configuration (JSON console), dated, with request IDs, no secrets.
let private jsonLogs =
    test "the command logs JSON when configured the standard way: dated lines with zone, request IDs and durations, never tokens" {
        let db = Database.Create Sqlite
        use proc =
            new ServerProcess(db, TimeSpan.FromSeconds 2.0, "Information", [ "Logging__Console__FormatterName", "json" ])

        use client = new BitBoxSync.SyncClient(proc.BaseAddress)
        let challenge = client.ChallengeAsync "login" |> await
        Expect.isNotEmpty challenge.Challenge "served"
        let sw = Diagnostics.Stopwatch.StartNew()

        let requestLines () =
            proc.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            |> Array.filter (fun l -> l.Contains "BitBoxSync.Server.Requests" && l.Contains "/v1/auth/challenge")

        while requestLines().Length = 0 && sw.Elapsed < TimeSpan.FromSeconds 10.0 do
            Threading.Thread.Sleep 50

        let line = requestLines () |> Array.tryHead
        Expect.isSome line $"a request line was logged:\n{proc.Output}"
        use doc = JsonDocument.Parse(line.Value)
        let root = doc.RootElement
        let timestamp = root.GetProperty("Timestamp").GetString()
        Expect.isTrue (DateTimeOffset.TryParse(timestamp: string) |> fst) $"a full timestamp: {timestamp}"
        Expect.stringEnds timestamp "+00:00" "with its zone (UTC)"
        Expect.stringContains timestamp "T" "and its date"
        let state = root.GetProperty "State"
        Expect.equal (state.GetProperty("Path").GetString()) "/v1/auth/challenge" "the path"
        Expect.equal (state.GetProperty("Status").GetInt32()) 200 "the status"
        Expect.isNotEmpty (state.GetProperty("RequestId").GetString()) "a request ID"
        Expect.isTrue (state.TryGetProperty("ElapsedMs") |> fst) "the duration"

        for l in proc.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries) do
            if l.TrimStart().StartsWith "{" then
                JsonDocument.Parse(l).Dispose()

        Expect.isFalse (proc.Output.Contains challenge.Challenge) "no challenge (or any body) in the log"
    }

let private textLogs =
    test "the command's default log lines carry a date, a zone and the request ID" {
        let db = Database.Create Sqlite
        use proc = new ServerProcess(db, TimeSpan.FromSeconds 2.0, "Information")
        use http = new HttpClient(BaseAddress = proc.BaseAddress)
        use _answer = http.GetAsync "/version" |> await
        let sw = Diagnostics.Stopwatch.StartNew()

        let line () =
            proc.Output.Split('\n') |> Array.tryFind (fun l -> l.Contains "GET /version 200")

        while (line ()).IsNone && sw.Elapsed < TimeSpan.FromSeconds 10.0 do
            Threading.Thread.Sleep 50

        Expect.isSome (line ()) $"a request line:\n{proc.Output}"
        let l = (line ()).Value
        Expect.isTrue (Text.RegularExpressions.Regex.IsMatch(l, @"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 ")) $"dated with zone: {l}"
        Expect.isTrue (Text.RegularExpressions.Regex.IsMatch(l, @"GET /version 200 \d+\.\d ms \S+:\S+")) $"duration and request ID: {l}"
    }

let tests =
    testList
        "hosting"
        [
            mounted
            mountingErrors
            kestrelRefusals
            headersTimeout
            forwardedHeaders
            metrics
            groupCommitGroups
            crashDurability
            jsonLogs
            textLogs
        ]

/// The endpoint and rule suites again, with every server mounted under /sync in a host app.
let throughPrefix (suites: Test list) =
    let mountedCode (code: TestCode) =
        let around (f: unit -> unit) =
            mountPrefix <- Some "/sync"

            try
                f ()
            finally
                mountPrefix <- None

        match code with
        | Sync f -> Sync(fun () -> around f)
        | SyncWithCancel f -> SyncWithCancel(fun ct -> around (fun () -> f ct))
        | other -> failwithf "unexpected test code %A" other

    let rec mapCode (t: Test) =
        match t with
        | TestCase(code, state) -> TestCase(mountedCode code, state)
        | TestList(tests, state) -> TestList(List.map mapCode tests, state)
        | TestLabel(label, inner, state) -> TestLabel(label, mapCode inner, state)
        | Test.Sequenced(how, inner) -> Test.Sequenced(how, mapCode inner)

    testList "mounted under /sync" suites |> mapCode
