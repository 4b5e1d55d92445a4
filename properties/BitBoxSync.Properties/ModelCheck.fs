/// Exhaustive model checking of small conflict scenarios: every interleaving of bounded app
/// writes, passes and faults for 2 clients, explored breadth-first with state hashing. After every
/// transition the step invariants hold, and from every reachable state a quiet period converges
/// without losing a write. A violation prints the shortest trace that reaches it.
module BitBoxSync.Properties.ModelCheck

open System
open System.Collections.Generic
open Expecto
open BitBoxSync.Core
open BitBoxSync.Properties.Simulation

/// The scenario bounds.
type Bounds =
    {
        Clients: int
        Keys: string list
        Values: string list
        /// App writes in total.
        Writes: int
        /// Passes in total (each may carry a fault while faults remain).
        Passes: int
        Faults: int
        /// The value an app write racing the conditional backend write stores (a valid encoding for
        /// the merge's codec, distinct from Values so the race is visible).
        RacingValue: string
    }

type private State =
    {
        Clients: Client[]
        Server: Server
        Writes: int
        Passes: int
        Faults: int
    }

/// The hashed projection of a state: timestamps and clocks are abstracted away.
let private project (s: State) =
    let server =
        s.Server.Items |> Map.map (fun _ i -> i.Version, i.Sealed), s.Server.Head, s.Server.History

    (s.Clients |> Array.map Simulation.project |> List.ofArray),
    server,
    s.Writes,
    s.Passes,
    s.Faults

/// Explores every reachable state with client i using `encodingOf i`; returns the number of
/// distinct states or the first violation.
let exploreWith
    (encodingOf: int -> ValueEncoding)
    (merge: ByteMerge)
    (b: Bounds)
    : Result<int, string * string list> =
    let start =
        {
            Clients = Array.init b.Clients (fun i -> newClientWith (encodingOf i) i)
            Server = emptyServer
            Writes = b.Writes
            Passes = b.Passes
            Faults = b.Faults
        }

    let visited = HashSet<_>(HashIdentity.Structural)
    let queue = Queue<State * string list>()
    visited.Add(project start) |> ignore
    queue.Enqueue(start, [])
    let mutable failure = None

    let moves (s: State) =
        [
            if s.Writes > 0 then
                for i in 0 .. b.Clients - 1 do
                    for k in b.Keys do
                        for v in b.Values do
                            AppWrite(i, k, v), { s with Writes = s.Writes - 1 }
            if s.Passes > 0 then
                for i in 0 .. b.Clients - 1 do
                    SyncPass(i, NoFault), { s with Passes = s.Passes - 1 }

                    if s.Faults > 0 then
                        SyncPass(i, LostResponse),
                        { s with Passes = s.Passes - 1; Faults = s.Faults - 1 }

                        SyncPass(i, CrashAfterBackendWrite),
                        { s with Passes = s.Passes - 1; Faults = s.Faults - 1 }

                        SyncPass(i, RacingAppWrite b.RacingValue),
                        { s with Passes = s.Passes - 1; Faults = s.Faults - 1 }
        ]

    while failure.IsNone && queue.Count > 0 do
        let state, trace = queue.Dequeue()

        for step, budget in moves state do
            if failure.IsNone then
                let clients, server, line = exec merge state.Clients state.Server step
                let next = { budget with Clients = clients; Server = server }
                let trace = trace @ [ line ]

                if visited.Add(project next) then
                    let quietClients, quietServer = settle merge 4 clients server

                    match
                        checkStep clients server
                        |> Option.orElse (checkStep quietClients quietServer)
                        |> Option.orElse (checkConverged quietClients quietServer)
                    with
                    | Some v ->
                        failure <- Some(v, trace @ [ "(then every client syncs until quiet)" ])
                    | None -> queue.Enqueue(next, trace)

    match failure with
    | Some f -> Error f
    | None -> Ok visited.Count

/// Explores every reachable state with plain clients.
let explore (merge: ByteMerge) (b: Bounds) = exploreWith (fun _ -> Plain) merge b

/// A model-checking test of `merge` over the scenario `b`, client i using `encodingOf i`.
let checkWith (encodingOf: int -> ValueEncoding) (name: string) (merge: ByteMerge) (b: Bounds) =
    test name {
        match exploreWith encodingOf merge b with
        | Ok states ->
            printfn "model checker: %s — %d distinct states" name states
            Expect.isGreaterThan states 10 "the scenario explores real interleavings"
        | Error(violation, trace) -> failtestf "%s\n  %s" violation (String.Join("\n  ", trace))
    }

/// A model-checking test of `merge` over the scenario `b` with plain clients.
let check (name: string) (merge: ByteMerge) (b: Bounds) = checkWith (fun _ -> Plain) name merge b

/// Two clients, one key, two writes (concurrent creates without a base: docs/engine.md §11.7),
/// four passes and one fault (lost response, crash, duplicated PUT, or an app write racing the
/// conditional backend write: docs/engine.md §11.5).
let smallConflict =
    {
        Clients = 2
        Keys = [ "k1" ]
        Values = [ "a"; "b" ]
        Writes = 2
        Passes = 4
        Faults = 1
        RacingValue = "z"
    }

let tests =
    testList
        "model checker"
        [
            check "max merge, 2 clients, 1 key, 2 writes, 4 passes, 1 fault" maxMerge smallConflict
            check
                "max merge, 2 clients, 2 keys, 3 writes, 3 passes"
                maxMerge
                {
                    Clients = 2
                    Keys = [ "k1"; "k2" ]
                    Values = [ "a"; "b" ]
                    Writes = 3
                    Passes = 3
                    Faults = 0
                    RacingValue = "z"
                }
            check
                "max merge, 3 clients, 1 key, 3 writes, 3 passes, 1 fault"
                maxMerge
                {
                    Clients = 3
                    Keys = [ "k1" ]
                    Values = [ "a"; "b"; "c" ]
                    Writes = 3
                    Passes = 3
                    Faults = 1
                    RacingValue = "z"
                }
            checkWith
                (fun i -> if i = 0 then Spaced else Plain)
                "max merge, 2 clients (one with a foreign encoder), 1 key, 2 writes, 4 passes, 1 fault"
                maxMerge
                smallConflict
            checkWith
                (fun i -> if i = 0 then Spaced else Plain)
                "NoMerge, 2 clients (one with a foreign encoder), 1 key, 2 writes, 4 passes, 1 fault"
                noMerge
                smallConflict
            check
                "PreferLocal, 2 clients, 1 key, 2 writes, 4 passes, 1 fault"
                preferLocal
                smallConflict
            check
                "PreferRemote, 2 clients, 1 key, 2 writes, 4 passes, 1 fault"
                preferRemote
                smallConflict
            check
                "NoMerge (conflicts recorded), 2 clients, 1 key, 2 writes, 4 passes, 1 fault"
                noMerge
                smallConflict
        ]
