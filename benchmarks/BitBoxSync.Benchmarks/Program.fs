module BitBoxSync.Benchmarks.Program

open BenchmarkDotNet.Running

[<EntryPoint>]
let main argv =
    match argv with
    | [| "--server-load" |] -> ServerBenchmarks.runLoad 1000
    | [| "--server-load"; n |] -> ServerBenchmarks.runLoad (int n)
    | [| "--bulk" |] ->
        BulkBenchmarks.run true true
        BulkBenchmarks.run true false
        BulkBenchmarks.run false false
    | [| "--bulk"; "batch" |] -> BulkBenchmarks.run true true
    | [| "--bulk"; "single" |] -> BulkBenchmarks.run true false
    | [| "--bulk"; "remote" |] ->
        BulkBenchmarks.runRemote true
        BulkBenchmarks.runRemote false
    | _ ->
        BenchmarkSwitcher
            .FromAssembly(typeof<ProtocolBenchmarks.ItemCryptoBenchmarks>.Assembly)
            .Run(argv)
        |> ignore

    0
