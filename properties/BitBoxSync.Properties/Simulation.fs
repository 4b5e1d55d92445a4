/// Deterministic simulation: N clients (pure core + in-memory backend + in-memory metadata store)
/// against an in-memory server that follows the item compare-and-set rules, driven by a seeded
/// scheduler that interleaves app writes, passes, lost responses and crashes between a backend
/// write and the metadata write. A failure prints the seed and the trace; `--sim-seed N` replays.
/// (Items are kept in plaintext here: encryption is covered by the crypto properties.)
module BitBoxSync.Properties.Simulation

open System
open Expecto
open BitBoxSync.Protocol
open BitBoxSync.Core

let private dek =
    Bin.ofBytes<DekKind>(Array.init 32 byte)
    |> Result.defaultWith (fun _ -> failwith "dek")

let private keys = NamespaceKeys.derive dek

let private ns =
    Bin.ofBytes<NamespaceIdKind>(Array.init 16 byte)
    |> Result.defaultWith (fun _ -> failwith "ns")

let private collection = "c"
let keyNames = [ "k1"; "k2" ]
let private itemIdOf = LogicalKey.itemId keys collection
let private t0 = DateTimeOffset.FromUnixTimeSeconds 1000L

/// The server: the stored (encrypted) items under the rules of BitBoxSync.Server.Core, the head,
/// and — as the test's oracle, not something a server knows — every accepted plaintext per item.
type Server =
    {
        Items: Map<ItemId, BitBoxSync.Server.Core.StoredItem>
        Head: uint64
        History: Map<ItemId, byte[] list>
    }

/// How a client's codec writes a value. Every client decodes what any client writes (surrounding
/// spaces are not part of a value), as a JSON decoder reads another encoder's JSON.
type ValueEncoding =
    /// The value's UTF-8 bytes.
    | Plain
    /// A foreign encoder: the same value with a space on each side (as another JSON encoder may
    /// add whitespace or escape differently).
    | Spaced

module ValueEncoding =
    let encode (e: ValueEncoding) (value: string) =
        match e with
        | Plain -> Text.Encoding.UTF8.GetBytes value
        | Spaced -> Text.Encoding.UTF8.GetBytes(" " + value + " ")

    let decode (bytes: byte[]) = (Text.Encoding.UTF8.GetString bytes).Trim(' ')

/// One client: its app values (typed: the backend holds decoded values, as an app does), its
/// metadata rows and namespace row, its last app write per key.
type Client =
    {
        Name: string
        KeyId: KeyId
        Encoding: ValueEncoding
        Backend: Map<string, string>
        Rows: Map<string, ItemState>
        Namespace: NamespaceState
        LastWrites: Map<string, string>
        /// Local values this client handed to a merge that resolved (the app's merge decided).
        Merged: Set<string>
        Clock: int64
    }

/// A fault injected into a pass.
type Fault =
    | NoFault
    /// The first accepted PUT's response is lost (the server applied it).
    | LostResponse
    /// The pass crashes right after its first backend write, before saving the metadata.
    | CrashAfterBackendWrite
    /// The first accepted PUT reaches the server twice (the duplicate must be refused).
    | DuplicatedRequest
    /// The app writes the key between the pass's re-read and its conditional backend write.
    | RacingAppWrite of value: string

exception private Aborted of string

/// Items per pipelined flush chunk in the simulation (small, so that chunks hold several items and
/// passes span several chunks).
[<Literal>]
let private FlushChunk = 2

/// The resolving merge used by the simulation: the lexicographically larger value wins
/// (commutative, associative, idempotent, so clients converge).
/// Keep the local value (resolves every collision; the remote side loses).
let preferLocal: ByteMerge = fun _ local _ -> Ok(MergeOutcome.Merged local)

/// Take the remote value (resolves every collision; the local side loses, by the app's choice).
let preferRemote: ByteMerge = fun _ _ remote -> Ok(MergeOutcome.Merged remote)

/// Never resolve: every collision becomes a recorded conflict.
let noMerge: ByteMerge = fun _ _ _ -> Ok MergeOutcome.Unresolved

let maxMerge: ByteMerge =
    fun _ local remote ->
        Ok(
            MergeOutcome.Merged(
                if ReadOnlySpan(local).SequenceCompareTo(ReadOnlySpan remote) >= 0 then
                    local
                else
                    remote
            )
        )

let newClientWith (encoding: ValueEncoding) (i: int) =
    let keyId =
        Bin.ofBytes<KeyIdKind>(Array.create 32 (byte i))
        |> Result.defaultWith (fun _ -> failwith "key")

    {
        Name = sprintf "client%d" i
        KeyId = keyId
        Encoding = encoding
        Backend = Map.empty
        Rows = Map.empty
        Namespace =
            {
                KeyId = keyId
                NamespaceId = ns
                Kind = Some NamespaceKind.Shared
                Head = 0UL
                ActiveScopeHash = ""
                Dek = Some dek
                UpdatedAt = t0
            }
        LastWrites = Map.empty
        Merged = Set.empty
        Clock = 0L
    }

/// A client with the plain encoding.
let newClient (i: int) = newClientWith Plain i

/// Mutable pass context: the client's state as the pass goes, the server, and the fault budget.
type private Pass(client: Client, server: Server, fault: Fault, appMerge: ByteMerge) =
    let mutable c = client
    let mutable s = server
    let mutable faultLeft = fault <> NoFault

    let encode value = ValueEncoding.encode c.Encoding value
    let plain bytes = ValueEncoding.decode bytes |> ValueEncoding.encode Plain

    /// The app's merge through the client's codec (it sees decoded values, and its result is
    /// encoded by the client), recording the local values it resolved.
    let merge: ByteMerge =
        fun mergeBase local remote ->
            let result = appMerge (Option.map plain mergeBase) (plain local) (plain remote)

            match result with
            | Ok(MergeOutcome.Merged merged) ->
                c <- { c with Merged = c.Merged.Add(ValueEncoding.decode local) }
                Ok(MergeOutcome.Merged(encode (ValueEncoding.decode merged)))
            | other -> other

    let functions =
        {
            Merge = merge
            Canonical = fun remote -> Ok(encode (ValueEncoding.decode remote))
        }

    member _.Client = c
    member _.Server = s

    member _.Now =
        c <- { c with Clock = c.Clock + 1L }
        t0.AddSeconds(float c.Clock)

    member _.Scope = Scope.build keys [ { Collection = collection; Keys = keyNames } ]

    member _.Local(key: string) =
        match c.Backend.TryFind key with
        | Some v -> LocalValue.Present(encode v)
        | None -> LocalValue.Absent

    member _.SaveRow(row: ItemState) =
        c <- { c with Rows = c.Rows.Add(row.Key, row) }

    member _.SaveNamespace(row: NamespaceState) = c <- { c with Namespace = row }

    /// A conditional backend write (no app write can interleave inside a simulated step).
    member this.Write(w: ConditionalWrite, key: string) =
        match fault with
        | RacingAppWrite value when faultLeft ->
            faultLeft <- false

            c <-
                { c with
                    Backend = c.Backend.Add(key, value)
                    LastWrites = c.LastWrites.Add(key, value)
                }
        | _ -> ()

        let current = this.Local key

        let matches =
            match w.Expected, current with
            | Expected.Absent, LocalValue.Absent -> true
            | Expected.Present e, LocalValue.Present v -> e = v
            | _ -> false

        if matches then
            c <- { c with Backend = c.Backend.Add(key, ValueEncoding.decode w.Value) }

            if faultLeft && fault = CrashAfterBackendWrite then
                faultLeft <- false
                raise (Aborted "crash after backend write")

            this.SaveRow w.OnWritten.Row
        else
            this.SaveRow w.OnLostRace.Row

    /// Download-and-apply of the server's current value of `row`'s item.
    member this.Apply(row: ItemState, mapVersion: uint64 option) =
        match s.Items.TryFind row.ItemId with
        | None -> raise (Aborted "404 on fetch")
        | Some stored ->
            let version = stored.Version

            let value =
                match ItemCrypto.openItem keys ns row.ItemId version stored.Sealed with
                | Ok plain -> plain
                | Error e -> raise (Aborted e.Message)

            match Download.checkVersion row mapVersion version with
            | Error e -> raise (Aborted e.Message)
            | Ok() ->
                match Download.rowToApply (c.Rows.TryFind row.Key) row version with
                | None -> ()
                | Some target ->
                    let now = this.Now

                    match Apply.start target version value (Some functions) now with
                    | ApplyDecision.Save o -> this.SaveRow o.Row
                    | ApplyDecision.ReadLocal ->
                        match
                            Apply.decide
                                target
                                version
                                value
                                (this.Local target.Key)
                                (Some functions)
                                now
                        with
                        | ApplyDecision.Save o -> this.SaveRow o.Row
                        | ApplyDecision.Write w -> this.Write(w, target.Key)
                        | ApplyDecision.Quarantine q -> raise (Aborted q.Message)
                        | ApplyDecision.ReadLocal -> raise (Aborted "apply asked to read twice")
                    | other -> raise (Aborted(sprintf "unexpected %A" other))

    /// The server's compare-and-set PUT; Some version when accepted.
    member this.Put(intent: UploadIntent) : uint64 option =
        let current = s.Items.TryFind intent.Row.ItemId

        let usage: BitBoxSync.Server.Core.NamespaceUsage =
            {
                NamespaceId = ns
                Head = s.Head
                ItemCount = s.Items.Count
                StoredBytes =
                    s.Items
                    |> Map.fold
                        (fun acc _ i -> acc + BitBoxSync.Server.Core.Items.storedBytes i.Sealed)
                        0L
            }

        // Deterministic nonces are fine here: only this harness ever sees these keys.
        let nonce =
            Bin.ofBytes<ItemNonceKind>(
                Array.init 24 (fun i -> byte (int intent.TargetVersion * 31 + int s.Head * 7 + i))
            )
            |> Result.defaultWith (fun e -> failwith e.Message)

        let sealedItem =
            ItemCrypto.seal
                keys
                ns
                intent.Row.ItemId
                intent.TargetVersion
                nonce
                (ReadOnlySpan intent.Plaintext)
            |> Result.defaultWith (fun e -> failwith e.Message)

        match
            BitBoxSync.Server.Core.Items.put
                usage
                intent.Row.ItemId
                current
                intent.IfMatch
                sealedItem
                this.Now
        with
        | Error e when e.Status = 412 -> None
        | Error e -> raise (Aborted(sprintf "server refused with %d: %s" e.Status e.Message))
        | Ok accepted ->
            let version = accepted.Item.Version
            let history = s.History.TryFind intent.Row.ItemId |> Option.defaultValue []

            s <-
                {
                    Items = s.Items.Add(intent.Row.ItemId, accepted.Item)
                    Head = accepted.NewHead
                    History = s.History.Add(intent.Row.ItemId, intent.Plaintext :: history)
                }

            if faultLeft && fault = LostResponse then
                faultLeft <- false
                raise (Aborted "response lost")

            if faultLeft && fault = DuplicatedRequest then
                faultLeft <- false
                let replayed = s

                match this.Put intent with
                | Some _ -> raise (Aborted "SERVER BUG: a duplicated PUT was accepted twice")
                | None ->
                    if s <> replayed then
                        raise (Aborted "SERVER BUG: a refused PUT changed state")

            Some version

    /// One full pass: snapshot reconciliation, namespace + item map, flush.
    member this.Run() =
        let scope = this.Scope

        // 1. Snapshot reconciliation.
        Snapshot.reconcile
            {
                KeyId = c.KeyId
                NamespaceId = ns
                Collection = collection
                Scope = scope
                Rows = c.Rows
                Snapshot = c.Backend |> Map.toList |> List.map (fun (k, v) -> k, encode v)
                ItemIdOf = itemIdOf
                Now = this.Now
            }
        |> List.iter (function
            | SnapshotEffect.Queue row -> this.SaveRow row
            | SnapshotEffect.Lingering _
            | SnapshotEffect.OutsideScope _ -> ())

        // 2. Namespace list and item map.
        let identity =
            {
                KeyId = c.KeyId
                Kind = IdentityKind.Keystore
                AccessToken = Some "t"
                TokenExpiry = None
                DefaultNamespaceId = None
                UpdatedAt = t0
            }

        let listed =
            [
                {
                    NamespaceId = ns
                    Kind = NamespaceKind.Shared
                    Head = s.Head
                }
            ]

        match Namespaces.check identity [ c.Namespace ] listed this.Now with
        | Error e -> raise (Aborted e.Message)
        | Ok plan ->
            for p in plan.Namespaces do
                match Namespaces.decide p (Scope.hashOf scope) this.Now with
                | NamespaceAction.Save row -> this.SaveNamespace row
                | NamespaceAction.UpToDate -> ()
                | NamespaceAction.FetchItemMap expected ->
                    let input =
                        {
                            Row = p.Row
                            ExpectedHead = expected
                            MapHead = s.Head
                            MapItems = s.Items |> Map.map (fun _ i -> i.Version)
                            Cached = c.Rows |> Map.values |> List.ofSeq
                            Scope = scope
                            Now = this.Now
                        }

                    match ItemMap.plan input with
                    | Error e -> raise (Aborted e.Message)
                    | Ok itemPlan ->
                        for row, mapVersion in itemPlan.Downloads do
                            this.Apply(row, Some mapVersion)

                        this.SaveNamespace itemPlan.Finish

        // 3. Flush, pipelined as the engine does it (docs/engine.md §4.10 step 9): each chunk's items
        //    are prepared first, all their PUTs are in flight before any answer is used, the accepted
        //    ones are saved together with the head they moved, a lost response still lets the other
        //    PUTs of the chunk land and be saved before the pass ends, and 412s go one at a time.
        let active row =
            Scope.isActive scope row.Collection row.ItemId

        let rec afterRefusal (row: ItemState) n =
            this.Apply(row, None)

            match Flush.afterPreconditionFailure n (c.Rows.TryFind row.Key) (active row) with
            | RetryDecision.Stop -> ()
            | RetryDecision.Retry ->
                match c.Rows.TryFind row.Key with
                | None -> ()
                | Some again ->
                    match Flush.prepare again (active again) (this.Local again.Key) with
                    | FlushStep.Skip _ -> ()
                    | FlushStep.Upload intent ->
                        match this.Put intent with
                        | Some version ->
                            this.SaveRow (Flush.accepted intent version this.Now).Row
                            this.SaveNamespace(Namespaces.afterUpload c.Namespace this.Now)
                        | None -> afterRefusal again (n + 1)

        let dirty =
            c.Rows |> Map.values |> List.ofSeq |> List.filter (fun r -> r.Dirty) |> Flush.order

        for chunk in List.chunkBySize FlushChunk dirty do
            let prepared =
                chunk
                |> List.choose (fun d ->
                    match c.Rows.TryFind d.Key with
                    | None -> None
                    | Some row ->
                        match Flush.prepare row (active row) (this.Local row.Key) with
                        | FlushStep.Skip _ -> None
                        | FlushStep.Upload intent -> Some(row, intent))

            let mutable failure = None

            let answers =
                prepared
                |> List.map (fun (row, intent) ->
                    try
                        row, intent, this.Put intent
                    with Aborted why ->
                        failure <- Some why
                        row, intent, Some 0UL)

            for (_, intent, answer) in answers do
                match answer with
                | Some version when version > 0UL ->
                    this.SaveRow (Flush.accepted intent version this.Now).Row
                    this.SaveNamespace(Namespaces.afterUpload c.Namespace this.Now)
                | _ -> ()

            match failure with
            | Some why -> raise (Aborted why)
            | None -> ()

            for (row, _, answer) in answers do
                if answer.IsNone then afterRefusal row 1

/// Runs one pass; a fault or abort keeps whatever was saved before it.
let runPass
    (merge: ByteMerge)
    (fault: Fault)
    (client: Client)
    (server: Server)
    : Client * Server * string option =
    let pass = Pass(client, server, fault, merge)

    try
        pass.Run()
        pass.Client, pass.Server, None
    with Aborted why ->
        pass.Client, pass.Server, Some why

/// A scheduled step.
type Step =
    | AppWrite of client: int * key: string * value: string
    | SyncPass of client: int * Fault

/// The invariants checked after every step.
let checkStep (clients: Client[]) (server: Server) : string option =
    let heads =
        server.Items
        |> Map.forall (fun id i ->
            (server.History.TryFind id |> Option.map List.length) = Some(int i.Version))

    if not heads then
        Some "an item version is not the number of accepted writes"
    elif
        server.Head
        <> (server.History |> Map.toSeq |> Seq.sumBy (fun (_, h) -> uint64 h.Length))
    then
        Some "the server head is not the number of accepted writes"
    else
        clients
        |> Array.tryPick (fun c ->
            if c.Namespace.Head > server.Head then
                Some(sprintf "%s has a head above the server's" c.Name)
            else
                c.Rows
                |> Map.tryPick (fun key row ->
                    match server.Items.TryFind row.ItemId |> Option.map (fun i -> i.Version) with
                    | Some v when row.Version > v ->
                        Some(
                            sprintf
                                "%s/%s is at version %d above the server's %d"
                                c.Name
                                key
                                row.Version
                                v
                        )
                    | None when row.Version > 0UL ->
                        Some(
                            sprintf
                                "%s/%s has version %d but the server has no item"
                                c.Name
                                key
                                row.Version
                        )
                    | _ -> None))

/// At quiescence: every key is either in agreement with the server and clean, or in a recorded
/// conflict whose remote side is the server's value; and no client's last write was lost — it
/// was accepted by the server, handed to a merge that resolved, or kept in a conflict.
let checkConverged (clients: Client[]) (server: Server) : string option =
    clients
    |> Array.tryPick (fun c ->
        keyNames
        |> List.tryPick (fun key ->
            let id = itemIdOf key

            let serverValue =
                server.History.TryFind id |> Option.map (List.head >> ValueEncoding.decode)

            let history =
                server.History.TryFind id
                |> Option.defaultValue []
                |> List.map ValueEncoding.decode

            let row = c.Rows.TryFind key
            let inConflict = row |> Option.exists (fun r -> r.Conflict)

            if
                inConflict
                && (row
                    |> Option.bind (fun r -> r.ConflictRemoteValue)
                    |> Option.map ValueEncoding.decode)
                   <> serverValue
            then
                Some(
                    sprintf
                        "%s/%s: the conflict does not hold the server's value %A"
                        c.Name
                        key
                        serverValue
                )
            elif not inConflict && c.Backend.TryFind key <> serverValue then
                Some(
                    sprintf
                        "%s/%s = %A but the server has %A"
                        c.Name
                        key
                        (c.Backend.TryFind key)
                        serverValue
                )
            elif not inConflict && row |> Option.exists (fun r -> r.Dirty) then
                Some(sprintf "%s/%s is still dirty at quiescence" c.Name key)
            else
                match c.LastWrites.TryFind key with
                | Some w when
                    not (
                        List.contains w history
                        || c.Merged.Contains w
                        || (inConflict && c.Backend.TryFind key = Some w)
                    )
                    ->
                    Some(sprintf "%s's write %s to %s was lost" c.Name w key)
                | _ -> None))

/// What a client's state means, without clocks and timestamps (for "nothing changed" and hashing).
let project (c: Client) =
    c.Backend,
    c.Rows |> Map.map (fun _ r -> { r with UpdatedAt = DateTimeOffset.MinValue }),
    { c.Namespace with UpdatedAt = DateTimeOffset.MinValue },
    c.LastWrites,
    c.Merged

let private same (a: Client[], s: Server) (b: Client[], t: Server) =
    s = t && Array.map project a = Array.map project b

/// The empty server.
let emptyServer = { Items = Map.empty; Head = 0UL; History = Map.empty }

/// Executes one step on a copy of the state; returns the new state and a trace line.
let exec
    (merge: ByteMerge)
    (clients: Client[])
    (server: Server)
    (step: Step)
    : Client[] * Server * string =
    let clients = Array.copy clients

    match step with
    | AppWrite(i, key, value) ->
        let c = clients[i]

        clients[i] <-
            { c with
                Backend = c.Backend.Add(key, value)
                LastWrites = c.LastWrites.Add(key, value)
            }

        clients, server, sprintf "%s writes %s=%s" c.Name key value
    | SyncPass(i, fault) ->
        let c, s, aborted = runPass merge fault clients[i] server
        clients[i] <- c

        clients,
        s,
        sprintf
            "%s syncs (%A)%s"
            c.Name
            fault
            (aborted |> Option.map (sprintf " aborted: %s") |> Option.defaultValue "")

/// Quiet: every client syncs without faults until nothing changes (at most `rounds` rounds).
let settle
    (merge: ByteMerge)
    (rounds: int)
    (clients: Client[])
    (server: Server)
    : Client[] * Server =
    let rec go round (clients: Client[]) server =
        let next, nextServer =
            Seq.init clients.Length id
            |> Seq.fold
                (fun (cs, s) i -> let cs, s, _ = exec merge cs s (SyncPass(i, NoFault)) in cs, s)
                (clients, server)

        if same (next, nextServer) (clients, server) || round >= rounds then
            next, nextServer
        else
            go (round + 1) next nextServer

    go 1 clients server

/// Runs a seeded scenario: `steps` random steps, then quiet passes until everyone converged.
/// The steps a seed generates (the scheduler).
let schedule (seed: int) (clientCount: int) (steps: int) : Step list =
    let rng = Random(seed)

    let letter () = string (char (int 'a' + rng.Next 6))

    [
        for _ in 1..steps ->
            let i = rng.Next clientCount

            match rng.Next 10 with
            | 0
            | 1
            | 2
            | 3 -> AppWrite(i, keyNames[rng.Next keyNames.Length], letter ())
            | 4 -> SyncPass(i, LostResponse)
            | 5 -> SyncPass(i, CrashAfterBackendWrite)
            | 6 ->
                SyncPass(
                    i,
                    (if rng.Next 2 = 0 then
                         DuplicatedRequest
                     else
                         RacingAppWrite(letter ()))
                )
            | _ -> SyncPass(i, NoFault)
    ]

/// Per item, the versions whose value equals the previous version's (uploads that changed nothing).
let repeats (server: Server) : Map<ItemId, int> =
    server.History
    |> Map.map (fun _ history ->
        history
        |> List.map ValueEncoding.decode
        |> List.pairwise
        |> List.filter (fun (newer, older) -> newer = older)
        |> List.length)

/// Runs explicit steps with one client per encoding, checking the step invariants after each
/// one, then a quiet period and the convergence invariants. Ok carries the final server and trace.
let private runOnce
    (encodings: ValueEncoding[])
    (merge: ByteMerge)
    (steps: Step list)
    : Result<Server * string list, string * string list> =
    let trace = Collections.Generic.List<string>()

    let rec go steps clients server =
        match steps with
        | [] -> Ok(clients, server)
        | step :: rest ->
            let clients, server, line = exec merge clients server step
            trace.Add line

            match checkStep clients server with
            | Some violation -> Error violation
            | None -> go rest clients server

    let start = encodings |> Array.mapi (fun i e -> newClientWith e i)

    match go steps start emptyServer with
    | Error v -> Error(v, List.ofSeq trace)
    | Ok(clients, server) ->
        let clients, server = settle merge 4 clients server
        let again, againServer = settle merge 1 clients server

        let quiet =
            if same (again, againServer) (clients, server) then
                None
            else
                Some "a pass with no change anywhere still changed state"

        let trace = List.ofSeq trace @ [ "(then every client syncs until quiet)" ]

        match
            checkStep clients server
            |> Option.orElse (checkConverged clients server)
            |> Option.orElse quiet
        with
        | Some v -> Error(v, trace)
        | None -> Ok(server, trace)

/// Runs explicit steps with one client per encoding (see `runOnce`). With a foreign encoding the
/// same steps also run with plain clients, and each item may repeat its previous value at most
/// once more than there (a foreign encoding costs at most one extra version per key, never a
/// ping-pong). Error carries the violation and the trace.
let runStepsWith
    (encodings: ValueEncoding[])
    (merge: ByteMerge)
    (steps: Step list)
    : Result<unit, string * string list> =
    match runOnce encodings merge steps with
    | Error e -> Error e
    | Ok _ when Array.forall ((=) Plain) encodings -> Ok()
    | Ok(server, trace) ->
        match runOnce (Array.map (fun _ -> Plain) encodings) merge steps with
        | Error(v, t) -> Error("with plain clients only: " + v, t)
        | Ok(baseline, _) ->
            let plain = repeats baseline

            repeats server
            |> Map.tryPick (fun id n ->
                let allowed = (plain.TryFind id |> Option.defaultValue 0) + 1

                if n > allowed then
                    Some(
                        sprintf
                            "item %s repeats its previous value in %d versions, %d with plain clients only (churn)"
                            id.Wire
                            n
                            (allowed - 1)
                    )
                else
                    None)
            |> function
                | Some v -> Error(v, trace)
                | None -> Ok()

/// `runStepsWith` with plain clients.
let runSteps merge (clientCount: int) steps =
    runStepsWith (Array.create clientCount Plain) merge steps

/// Shrinks a failing step list: drops steps one at a time while the run still fails (with any
/// violation), until no single step can be dropped. The result is a 1-minimal counterexample.
let shrinkWith (encodings: ValueEncoding[]) (merge: ByteMerge) (steps: Step list) : Step list =
    let fails s =
        runStepsWith encodings merge s |> Result.isError

    let rec pass (kept: Step list) (i: int) =
        if i >= kept.Length then
            kept
        else
            let candidate = kept |> List.removeAt i

            if fails candidate then
                pass candidate i
            else
                pass kept (i + 1)

    let rec fixpoint s =
        let next = pass s 0
        if next.Length = s.Length then s else fixpoint next

    fixpoint steps

/// Runs one seed with one client per encoding; on failure the trace is the shrunk (minimal) one.
let runWith
    (encodings: ValueEncoding[])
    (seed: int)
    (steps: int)
    : Result<unit, string * string list> =
    let steps = schedule seed encodings.Length steps

    match runStepsWith encodings maxMerge steps with
    | Ok() -> Ok()
    | Error _ -> runStepsWith encodings maxMerge (shrinkWith encodings maxMerge steps)

/// Runs one seed with plain clients.
let run (seed: int) (clientCount: int) (steps: int) =
    runWith (Array.create clientCount Plain) seed steps

/// The seed given on the command line (`--sim-seed N`), if any.
let mutable replaySeed: int option = None

let private seedsTest (name: string) (seeds: int list) (encodings: ValueEncoding[]) =
    test name {
        let seeds =
            match replaySeed with
            | Some s -> [ s ]
            | None -> seeds

        for seed in seeds do
            match runWith encodings seed 40 with
            | Ok() -> ()
            | Error(violation, trace) ->
                failtestf
                    "seed %d (replay: dotnet run --project properties/BitBoxSync.Properties -- --sim-seed %d): %s\n  %s"
                    seed
                    seed
                    violation
                    (String.Join("\n  ", trace))
    }

let tests =
    testList
        "simulation"
        [
            for clients in [ 2; 3 ] do
                seedsTest
                    (sprintf
                        "%d clients converge with a resolving merge and never lose a write, under lost responses and crashes"
                        clients)
                    [ 1..5000 ]
                    (Array.create clients Plain)

                seedsTest
                    (sprintf
                        "%d clients, one with a foreign encoder, converge with at most one repeated version per key and quiet passes upload nothing"
                        clients)
                    [ 1..2000 ]
                    (Array.init clients (fun i -> if i = 0 then Spaced else Plain))
        ]
