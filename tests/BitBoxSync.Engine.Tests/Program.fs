module BitBoxSync.Engine.Tests.Program

open Expecto

[<EntryPoint>]
let main argv =
    // `--shell-seed N` replays one seed of the shell simulation (printed by a failing run).
    let argv =
        match Array.tryFindIndex ((=) "--shell-seed") argv with
        | Some i when i + 1 < argv.Length ->
            ShellSimulation.replaySeed <- Some(int argv[i + 1])
            Array.append argv[.. i - 1] argv[i + 2 ..]
        | _ -> argv

    // Sequenced: many tests block on real servers and timers; in parallel they starve the
    // thread pool on 2 cores and time-based checks (watch, backoff) become flaky.
    runTestsWithCLIArgs
        [ CLIArguments.Sequenced ]
        argv
        (testList
            "BitBoxSync.Engine.Tests"
            [
                CodecTests.tests
                CoreChecklistTests.tests
                StoreTests.tests
                EngineTests.tests
                GoJsonTests.tests
                EventTests.tests
                ObservabilityTests.tests
                IdentityTests.tests
                ChecklistTests.tests
                ScriptedTests.tests
                FaultTests.tests
                DirectoryTests.tests
                DeleteTests.tests
                ShellSimulation.tests
                AppBackendTests.tests
                ChangeTrackingTests.tests
            ])
