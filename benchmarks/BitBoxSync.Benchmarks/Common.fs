/// Helpers shared by the benchmark suites.
module BitBoxSync.Benchmarks.Common

/// The value of an Ok, or a failure naming the error (benchmark set-up only).
let orFail (r: Result<'a, 'e>) =
    match r with
    | Ok v -> v
    | Error e -> failwithf "%A" e
