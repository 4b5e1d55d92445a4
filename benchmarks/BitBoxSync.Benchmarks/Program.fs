module BitBoxSync.Benchmarks.Program

open BenchmarkDotNet.Running

[<EntryPoint>]
let main argv =
    BenchmarkSwitcher
        .FromAssembly(typeof<ProtocolBenchmarks.ItemCryptoBenchmarks>.Assembly)
        .Run(argv)
    |> ignore

    0
