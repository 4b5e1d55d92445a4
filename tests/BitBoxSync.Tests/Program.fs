module BitBoxSync.Tests.Program

open Expecto

[<EntryPoint>]
let main argv =
    runTestsWithCLIArgs
        []
        argv
        (testList
            "BitBoxSync.Tests"
            [
                VectorTests.tests
                ProtocolTests.tests
                CoreTests.tests
                ServerCoreTests.tests
                SharingTests.tests
            ])
