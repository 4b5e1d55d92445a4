module BitBoxSync.Server.Tests.Program

open System
open Expecto

[<EntryPoint>]
let main argv =
    if Environment.GetEnvironmentVariable "CI" = "true" && Harness.postgresAdmin.IsNone then
        eprintfn "CI run without PostgreSQL (BITBOXSYNC_TEST_POSTGRES unset): the PostgreSQL scenarios cannot be skipped"
        2
    else
        runTestsWithCLIArgs
            [ CLIArguments.Sequenced ]
            argv
            (testList "BitBoxSync.Server.Tests" [ EndpointTests.tests; RuleTests.tests; ConcurrencyTests.tests; ClientRejectTests.tests ])
