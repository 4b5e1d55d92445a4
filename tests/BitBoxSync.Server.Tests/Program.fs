module BitBoxSync.Server.Tests.Program

open System
open Expecto

[<EntryPoint>]
let main argv =
    if Environment.GetEnvironmentVariable "CI" = "true" && Harness.postgresAdmin.IsNone then
        eprintfn
            "CI run without PostgreSQL (BITBOXSYNC_TEST_POSTGRES unset): the PostgreSQL scenarios cannot be skipped"

        2
    else
        let result =
            runTestsWithCLIArgs
                [ CLIArguments.Sequenced ]
                argv
                (testList
                    "BitBoxSync.Server.Tests"
                    [
                        EndpointTests.tests
                        RuleTests.tests
                        ConcurrencyTests.tests
                        ClientRejectTests.tests
                        MutationTests.tests
                        CommandTests.tests
                        HostingTests.tests
                        BatchTests.tests
                        HostingTests.throughPrefix [ EndpointTests.tests; RuleTests.suite () ]
                    ])

        if not MutationTests.statuses.IsEmpty then
            printfn
                "mutated requests by status: %s"
                (MutationTests.statuses
                 |> Seq.sortBy (fun kv -> kv.Key)
                 |> Seq.map (fun kv -> $"{kv.Key}: {kv.Value}")
                 |> String.concat ", ")

        result
