module BitBoxSync.Properties.Program

open Expecto

[<EntryPoint>]
let main argv =
    runTestsWithCLIArgs
        []
        argv
        (testList
            "BitBoxSync.Properties"
            [ EncodingProperties.tests; CryptoProperties.tests; InviteProperties.tests; CoreProperties.tests ])
