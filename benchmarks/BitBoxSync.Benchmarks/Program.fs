module BitBoxSync.Benchmarks.Program

open BenchmarkDotNet.Running

[<EntryPoint>]
let main argv =
    match argv with
    | [| "--server-load" |] -> ServerBenchmarks.runLoad 1000
    | [| "--server-load"; n |] -> ServerBenchmarks.runLoad (int n)
    | [| "--bulk" |] ->
        BulkBenchmarks.run true
        BulkBenchmarks.run false
    | [| "--bulk"; "group-commit" |] -> BulkBenchmarks.run true
    | _ ->
        BenchmarkSwitcher
            .FromAssembly(typeof<ProtocolBenchmarks.ItemCryptoBenchmarks>.Assembly)
            .Run(argv)
        |> ignore

    0
