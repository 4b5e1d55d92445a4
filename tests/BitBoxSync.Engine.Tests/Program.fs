module BitBoxSync.Engine.Tests.Program

open Expecto

[<EntryPoint>]
let main argv =
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
                ChecklistTests.tests
                ScriptedTests.tests
                FaultTests.tests
                AppBackendTests.tests
                ChangeTrackingTests.tests
            ])
