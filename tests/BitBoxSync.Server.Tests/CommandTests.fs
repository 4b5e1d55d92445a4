/// The server command: every option in --help, options over configuration, clear refusals, and a
/// graceful stop on Ctrl+C (SIGINT) of a real server process.
module BitBoxSync.Server.Tests.CommandTests

open System
open System.Collections.Generic
open System.CommandLine
open System.Diagnostics
open System.IO
open System.Threading.Tasks
open Expecto
open Microsoft.Extensions.Configuration
open Microsoft.AspNetCore.Builder
open BitBoxSync.Server
open BitBoxSync.Server.Tool
open BitBoxSync.Server.Tests.Harness
open BitBoxSync.Server.Tests.Flows

/// A host builder whose configuration is exactly these pairs (no files, no environment).
let private builderWith (config: (string * string) list) () =
    let builder = WebApplication.CreateSlimBuilder(WebApplicationOptions(Args = [||]))
    builder.Configuration.Sources.Clear()

    builder.Configuration.AddInMemoryCollection(config |> List.map (fun (k, v) -> KeyValuePair(k, v)))
    |> ignore

    builder

/// Runs the command line; returns the exit code, what it wrote and the options (and configuration)
/// the server would start with.
let private invokeWith (config: (string * string) list) (args: string list) =
    let mutable seen = None

    let command =
        ServerCommand.Build(
            (fun builder options _ ->
                seen <- Some(options, builder.Configuration :> IConfiguration)
                Task.FromResult 0),
            Func<WebApplicationBuilder>(builderWith config)
        )

    use out = new StringWriter()

    let code =
        command
            .Parse(List.toArray args)
            .InvokeAsync(InvocationConfiguration(Output = out, Error = out))
            .GetAwaiter()
            .GetResult()

    code, out.ToString(), seen

let private invoke config args =
    let code, output, seen = invokeWith config args
    code, output, seen |> Option.map fst

let tests =
    testList
        "server command"
        [
            test "--help lists an option for every setting of ServerOptions" {
                let settable =
                    typeof<ServerOptions>.GetProperties()
                    |> Array.filter (fun p -> p.CanWrite && p.SetMethod.IsPublic)
                    |> Array.map (fun p -> p.Name)

                Expect.isGreaterThanOrEqual settable.Length 10 "the options are found"
                let code, help, started = invoke [] [ "--help" ]
                Expect.equal code 0 "help exits 0"
                Expect.isNone started "help starts nothing"

                for name in settable do
                    let option =
                        match ServerCommand.OptionFor.TryGetValue name with
                        | true, o -> o
                        | _ -> failtest $"ServerOptions.{name} has no command-line option"

                    Expect.stringContains help option $"--help shows {option}"
            }

            test "options override the configuration; the configuration fills the rest" {
                let code, _, started =
                    invokeWith
                        [
                            "BitBoxSync:SqlitePath", "from-config.sqlite"
                            "BitBoxSync:PublicOrigin", "https://config.example"
                        ]
                        [
                            "--public-origin"
                            "https://sync.example"
                            "--watch-timeout"
                            "30s"
                            "--token-lifetime"
                            "7d"
                            "--challenge-lifetime"
                            "00:02:00"
                            "--urls"
                            "http://127.0.0.1:0"
                            "--require-attestation"
                            "--log-level"
                            "Warning"
                        ]

                Expect.equal code 0 "accepted"
                let o, configuration = started.Value
                Expect.equal o.SqlitePath "from-config.sqlite" "from the configuration"
                Expect.equal o.PublicOrigin "https://sync.example" "the option wins"
                Expect.equal o.WatchTimeout (TimeSpan.FromSeconds 30.0) "30s"
                Expect.equal o.TokenLifetime (TimeSpan.FromDays 7.0) "7d"
                Expect.equal o.ChallengeLifetime (TimeSpan.FromMinutes 2.0) "hh:mm:ss"
                Expect.equal o.Urls [||] "the listen URLs go to the standard setting"
                Expect.equal configuration["urls"] "http://127.0.0.1:0" "--urls is the standard urls setting"
                Expect.equal configuration["Logging:LogLevel:Default"] "Warning" "--log-level sets the default level"
                Expect.isTrue o.RequireAttestation "flag"

                Expect.equal
                    o.MinimumLogLevel
                    Microsoft.Extensions.Logging.LogLevel.Warning
                    "log level"
            }

            test "BITBOXSYNC_ variables address the BitBoxSync section; a listen array replaces the default" {
                let env = Collections.Hashtable()
                env["BITBOXSYNC_Store"] <- "Postgres"
                env["BITBOXSYNC_Urls__0"] <- "http://127.0.0.1:18092"
                env["PATH"] <- "/bin"

                let mapped =
                    ServerCommand.SectionVariables env |> Seq.map (fun kv -> kv.Key, kv.Value) |> Set.ofSeq

                Expect.equal
                    mapped
                    (set [ "BitBoxSync:Store", "Postgres"; "BitBoxSync:Urls:0", "http://127.0.0.1:18092" ])
                    "prefixed variables only, __ as the separator"

                let code, _, started =
                    invoke [ "BitBoxSync:Urls:0", "http://127.0.0.1:18092"; "BitBoxSync:SqlitePath", "x.sqlite" ] []

                Expect.equal code 0 "accepted"
                Expect.equal started.Value.Urls [| "http://127.0.0.1:18092" |] "exactly the configured address (nothing appended)"
            }

            test "check-health: the readiness URL follows the listen settings; a bad --url is refused" {
                let url (pairs: (string * string) list) =
                    let c =
                        ConfigurationBuilder()
                            .AddInMemoryCollection(pairs |> List.map (fun (k, v) -> KeyValuePair(k, v)))
                            .Build()

                    string (HealthCommand.ReadinessUrl c)

                Expect.equal (url []) "http://127.0.0.1:8090/readyz" "the default address"
                Expect.equal (url [ "http_ports", "8080" ]) "http://127.0.0.1:8080/readyz" "the container's HTTP_PORTS"
                Expect.equal (url [ "urls", "http://+:9000;http://127.0.0.1:9001" ]) "http://127.0.0.1:9000/readyz" "a wildcard host is loopback"
                Expect.equal (url [ "urls", "http://0.0.0.0:9000" ]) "http://127.0.0.1:9000/readyz" "so is 0.0.0.0"

                Expect.equal
                    (url [ "urls", "http://x:1"; "BitBoxSync:Urls:0", "http://127.0.0.1:7000/base/" ])
                    "http://127.0.0.1:7000/base/readyz"
                    "the server's own Urls win"

                let command = RootCommand()
                command.Add(HealthCommand.Build(fun () -> ConfigurationBuilder().Build() :> IConfiguration))
                use out = new StringWriter()

                let code =
                    command
                        .Parse([| "check-health"; "--url"; "not a url" |])
                        .InvokeAsync(InvocationConfiguration(Output = out, Error = out))
                        .GetAwaiter()
                        .GetResult()

                Expect.notEqual code 0 "refused"
                Expect.stringContains (out.ToString()) "not an absolute http or https URL" "with a message"

                let port = freePort ()
                use out2 = new StringWriter()

                let down =
                    command
                        .Parse([| "check-health"; "--url"; $"http://127.0.0.1:{port}/readyz"; "--timeout"; "2" |])
                        .InvokeAsync(InvocationConfiguration(Output = out2, Error = out2))
                        .GetAwaiter()
                        .GetResult()

                Expect.equal down 1 "nothing listening: unhealthy"
            }

            test "bad options are refused with a message naming them, and nothing starts" {
                for args, expected in
                    [
                        [ "--store"; "postgres" ], "PostgreSQL connection string is required"
                        [ "--store"; "oracle" ], "oracle"
                        [ "--watch-timeout"; "5x" ], "'5x' is not a duration"
                        [ "--watch-timeout"; "2m" ], "watch timeout must be between"
                        [ "--public-origin"; "http://plain.example" ], "public origin"
                        [ "--token-lifetime"; "1d" ], "token lifetime must exceed"
                        [ "--trusted-proxy"; "proxy.example" ], "neither an IP address nor a CIDR network"
                    ] do
                    let code, output, started = invoke [] args
                    Expect.notEqual code 0 $"{args} refused"
                    Expect.isNone started $"{args}: nothing starts"
                    Expect.stringContains output expected $"{args}: the message"
            }

            test
                "Ctrl+C (SIGINT) stops the server process gracefully: a parked watcher is answered, exit code 0" {
                let db = Database.Create Sqlite
                // State first (in process), then the same file served by the server command.
                let token, nsId =
                    use setup =
                        startOn db (ManualClock DateTimeOffset.UtcNow) (TimeSpan.FromSeconds 20.0)

                    let alice = login setup "alice"
                    let ns, _ = ensureDefault alice
                    alice.Token, ns.Id.Wire

                use proc = new ServerProcess(db, TimeSpan.FromSeconds 60.0, "Information")
                use client = new BitBoxSync.SyncClient(proc.BaseAddress)
                let known = Dictionary<string, uint64>()
                known[nsId] <- 0UL
                let watch = client.WatchNamespacesAsync(token, { KnownHeads = known })
                // The watch cannot be observed from outside the process: give it time to park.
                Threading.Thread.Sleep 500
                Expect.isFalse watch.IsCompleted "the watch is parked (nothing changed)"
                let sw = Stopwatch.StartNew()
                use kill = Process.Start("kill", $"-INT {proc.ProcessId}")
                kill.WaitForExit()
                let answer = watch |> await

                Expect.isTrue
                    answer.TimedOut
                    "answered as a timeout: the client reconnects elsewhere"

                Expect.equal (proc.WaitForExit(TimeSpan.FromSeconds 15.0)) (Some 0) "exit code 0"

                Expect.isLessThan
                    sw.Elapsed
                    (TimeSpan.FromSeconds 15.0)
                    "promptly, not after the 60 s watch timeout"

                Expect.stringContains proc.Output "listening on" "it logged where it listens"
                Expect.stringContains proc.Output "SQLite" "and which store"
            }
        ]
