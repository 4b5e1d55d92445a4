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

            test "bad options are refused with a message naming them, and nothing starts" {
                for args, expected in
                    [
                        [ "--store"; "postgres" ], "PostgreSQL connection string is required"
                        [ "--store"; "oracle" ], "oracle"
                        [ "--watch-timeout"; "5x" ], "'5x' is not a duration"
                        [ "--watch-timeout"; "2m" ], "watch timeout must be between"
                        [ "--public-origin"; "http://plain.example" ], "public origin"
                        [ "--token-lifetime"; "1d" ], "token lifetime must exceed"
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
