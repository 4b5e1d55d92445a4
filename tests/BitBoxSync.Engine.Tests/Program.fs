module BitBoxSync.Engine.Tests.Program

open Expecto

[<EntryPoint>]
let main argv =
    runTestsWithCLIArgs
        []
        argv
        (testList
            "BitBoxSync.Engine.Tests"
            [
                CodecTests.tests
                CoreChecklistTests.tests
                StoreTests.tests
                EngineTests.tests
                ChecklistTests.tests
                ScriptedTests.tests
                FaultTests.tests
                AppBackendTests.tests
            ])
