module BitBoxSync.Properties.Program

open Expecto

[<EntryPoint>]
let main argv =
    // `--sim-seed N` replays one simulation seed (printed by a failing run).
    let argv =
        match Array.tryFindIndex ((=) "--sim-seed") argv with
        | Some i when i + 1 < argv.Length ->
            Simulation.replaySeed <- Some(int argv[i + 1])
            Array.append argv[.. i - 1] argv[i + 2 ..]
        | _ -> argv

    runTestsWithCLIArgs
        []
        argv
        (testList
            "BitBoxSync.Properties"
            [
                EncodingProperties.tests
                CryptoProperties.tests
                InviteProperties.tests
                CoreProperties.tests
                ServerProperties.tests
                DirectoryProperties.tests
                DirectoryProperties.deleteTests
                DeleteModel.tests
                Simulation.tests
                ModelCheck.tests
                SampleMerges.tests
            ])
