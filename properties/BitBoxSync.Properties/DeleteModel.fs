/// Deletes and the key directory, model-checked and simulated (docs/concepts.md, "Deletes"). Clients
/// run the engine's pass on the pure rules (`Snapshot.reconcile`, `Apply`, `Deletes`,
/// `KeyDirectory`) against a server of compare-and-set items: one value item per key and one
/// directory bucket. App writes, app deletions, lost responses and a stale peer (a client restored
/// from an old backup of its metadata and values) are interleaved; from every reachable state a
/// quiet period must converge (values and live key sets), and:
/// - no resurrection without a newer write: a key that ends live has, for every deletion of it
///   the server received, a write made after seeing a deletion of that generation or a later one
///   (concurrent deletions of one generation count as one), or, under EditWins, a write the
///   deletion had not seen;
/// - no lost write (EditWins): a key that ends deleted holds no version its winning deletion did
///   not see.
/// Two known limits of EditWins are excused, and only they (docs/concepts.md, "Deletes"): a deletion
/// made while this device's own upload of the key is unconfirmed (its answer was lost) cannot tell
/// that upload from another device's edit; and when deletions overwrite values, a device whose
/// upload answer was lost cannot confirm its write once it is overwritten. Either way the key comes
/// back with that value (nothing is lost).
/// What a device "had seen" is tracked apart from the rules: every app operation is an event, and
/// event sets travel with uploads and downloads.
module BitBoxSync.Properties.DeleteModel

open System
open System.Collections.Generic
open Expecto
open BitBoxSync.Protocol
open BitBoxSync.Core

let private dek =
    Bin.ofBytes<DekKind>(Array.init 32 (fun i -> byte (i + 7)))
    |> Result.defaultWith (fun _ -> failwith "dek")

let private nsKeys = NamespaceKeys.derive dek

let private ns =
    Bin.ofBytes<NamespaceIdKind>(Array.init 16 byte)
    |> Result.defaultWith (fun _ -> failwith "ns")

let private collection = "notes"
let private t = DateTimeOffset.FromUnixTimeSeconds 1000L
let private bytes (s: string) = Text.Encoding.UTF8.GetBytes s
let private text (b: byte[]) = Text.Encoding.UTF8.GetString b

let private fns =
    {
        Merge = Simulation.maxMerge
        Canonical = Ok
    }

/// The server: each key's item (version, value) and the collection's one directory bucket, with
/// (for the oracle) the app events their uploaders had seen.
type Server =
    {
        Items: Map<string, uint64 * string>
        DirVersion: uint64
        Dir: Map<string, DirEntry>
        ItemKnown: Map<string, Set<int>>
        DirKnown: Set<int>
    }

/// A client: the app's values, the item rows, the synced bucket (version and entries).
type Client =
    {
        Writer: string
        KeyId: KeyId
        Backend: Map<string, string>
        Rows: Map<string, ItemState>
        DirVersion: uint64
        Synced: Map<string, DirEntry>
        /// The app events this client has seen (its own, and those that came with downloads).
        Known: Set<int>
    }

/// An app write or deletion as the oracle keeps it: its event, key, the events its client had seen
/// then, and for a deletion the generation it deleted at.
type Event =
    {
        Id: int
        Key: string
        Known: Set<int>
        DeletedAt: uint64 option
        /// A deletion made while its device's upload of the key was unconfirmed (a lost answer).
        Unconfirmed: bool
        /// For a deletion: the writer tag of its device.
        Writer: string
    }

/// What the oracle remembers: every app event, and each client's uploads whose answer was lost
/// (client, key → the version the server gave it).
type Oracle =
    {
        Events: Event list
        Lost: Map<int * string, uint64>
        /// Every deletion the server's directory held: key, generation, writer.
        Published: Set<string * uint64 * string>
    }

type State =
    {
        /// Deletions overwrite the server's value with "deleted" (OverwriteOnDelete).
        Overwrite: bool
        Clients: Client[]
        /// Each client's backup (metadata and values), for the stale peer.
        Backups: Client[]
        Server: Server
        Oracle: Oracle
    }

let private newClient (i: int) =
    let keyId =
        Bin.ofBytes<KeyIdKind>(Array.create 32 (byte (0xa0 + i)))
        |> Result.defaultWith (fun _ -> failwith "key")

    {
        Writer = KeyDirectory.writerOf keyId
        KeyId = keyId
        Backend = Map.empty
        Rows = Map.empty
        DirVersion = 0UL
        Synced = Map.empty
        Known = Set.empty
    }

let initial (overwrite: bool) (clients: int) =
    let cs = Array.init clients newClient

    {
        Overwrite = overwrite
        Clients = cs
        Backups = cs
        Server =
            {
                Items = Map.empty
                DirVersion = 0UL
                Dir = Map.empty
                ItemKnown = Map.empty
                DirKnown = Set.empty
            }
        Oracle =
            {
                Events = []
                Lost = Map.empty
                Published = Set.empty
            }
    }

let private rowOf (c: Client) (key: string) =
    match Map.tryFind key c.Rows with
    | Some r -> r
    | None -> ItemState.template c.KeyId ns collection key (LogicalKey.itemId nsKeys collection key) t

let private localOf (c: Client) (key: string) =
    match Map.tryFind key c.Backend with
    | Some v -> LocalValue.Present(bytes v)
    | None -> LocalValue.Absent

let private save (c: Client) (row: ItemState) = { c with Rows = Map.add row.Key row c.Rows }

let private own (c: Client) =
    c.Rows
    |> Map.toSeq
    |> Seq.filter (fun (_, r) -> Deletes.publishable r)
    |> Seq.choose (fun (k, r) -> Deletes.ownEntry c.Writer r |> Option.map (fun e -> k, e))

/// The bucket this client publishes.
let published (policy: DeletePolicy) (c: Client) =
    Deletes.published policy c.Writer c.Synced (own c) (c.Backend |> Map.keys)

// ------------------------------------------------------------------ app operations

/// The app writes `value` (always a new one) into `key`.
let write (c: Client) (key: string) (value: string) = { c with Backend = Map.add key value c.Backend }

/// The app deletes `key` (Collection.DeleteAsync): the row first, then the value.
let delete (policy: DeletePolicy) (overwrite: bool) (c: Client) (key: string) : Client * (string * uint64) option =
    let row = rowOf c key

    if row.Deleted then
        c, None
    else
        let local = localOf c key

        let current =
            Deletes.publishedEntry policy c.Writer (Map.tryFind key c.Synced) (Deletes.ownEntry c.Writer row) (Map.containsKey key c.Backend)

        let deleted = Deletes.requested c.Writer overwrite current row local t
        { save c (Deletes.removed deleted t) with Backend = Map.remove key c.Backend }, Some(key, row.Version)

// ------------------------------------------------------------------ the pass

/// Faults of one pass.
type Fault =
    | NoFault
    /// The first accepted value PUT's answer is lost.
    | LostValueAnswer
    /// The first accepted directory PUT's answer is lost.
    | LostDirectoryAnswer

let private applyValue (policy: DeletePolicy) (c: Client) (key: string) (version: uint64, value: string) =
    let row = rowOf c key
    let remote = bytes value

    let row, proceed, c =
        if row.Deleted then
            let entry =
                Deletes.publishedEntry policy c.Writer (Map.tryFind key c.Synced) (Deletes.ownEntry c.Writer row) false

            match Deletes.remoteValue policy (Some(bytes "deleted")) entry row version remote t with
            | DeletedRowRemote.StayDeleted o -> o.Row, false, save c o.Row
            | DeletedRowRemote.Revive r -> r, true, c
        else
            row, true, c

    if not proceed then
        c
    else
        let decision =
            match Apply.start row version remote (Some fns) t with
            | ApplyDecision.ReadLocal -> Apply.decide row version remote (localOf c key) (Some fns) t
            | d -> d

        match decision with
        | ApplyDecision.Write w -> { save c w.OnWritten.Row with Backend = Map.add key (text w.Value) c.Backend }
        | ApplyDecision.Save o -> save c o.Row
        | ApplyDecision.Quarantine _
        | ApplyDecision.ReadLocal -> c

/// The keys a pass downloads: the app's, the live ones of the directory, and the ones deleted here
/// whose deletion is not on the server yet.
let private scope (policy: DeletePolicy) (c: Client) =
    let pending =
        c.Rows
        |> Map.toSeq
        |> Seq.choose (fun (k, r) ->
            match Deletes.ownEntry c.Writer r with
            | Some o when r.Deleted && (r.Dirty || Deletes.contributes policy (Map.tryFind k c.Synced) o) -> Some k
            | _ -> None)
        |> Set.ofSeq

    Set.unionMany [ c.Backend |> Map.keys |> Set.ofSeq; KeyDirectory.liveKeys c.Synced |> Set.ofList; pending ]

let private download (policy: DeletePolicy) (s: Server) (c: Client) (keys: Set<string>) =
    keys
    |> Set.fold
        (fun c key ->
            match Map.tryFind key s.Items with
            | Some(v, value) when v > (rowOf c key).Version ->
                let c = applyValue policy c key (v, value)
                { c with Known = Set.union c.Known (Map.find key s.ItemKnown) }
            | _ -> c)
        c

/// The deletes step: every key of the synced directory gets its fate.
let private deletesStep (policy: DeletePolicy) (c: Client) =
        c.Synced
        |> Map.fold
            (fun (c: Client) key entry ->
                match Deletes.decide policy c.Writer true (Some entry) (rowOf c key) (localOf c key) t with
                | KeyAction.Nothing -> c
                | KeyAction.Save o -> save c o.Row
                | KeyAction.Remove r ->
                    if localOf c key = LocalValue.Present r.Expected || localOf c key = LocalValue.Absent then
                        { save c r.OnRemoved.Row with Backend = Map.remove key c.Backend }
                    else
                        c)
            c

/// One pass of client `i`: snapshot, downloads (items, directory, the items it made known), the
/// deletes step, uploads. Returns the client and the server.
let pass (policy: DeletePolicy) (overwrite: bool) (fault: Fault) (c: Client) (s: Server) : Client * Server =
    // 1. Snapshot: queued edits, revivals by a write after the deletion, lingering deleted values.
    let effects =
        Snapshot.reconcile
            {
                KeyId = c.KeyId
                NamespaceId = ns
                Collection = collection
                Scope = Scope.build nsKeys [ { Collection = collection; Keys = Set.toList (scope policy c) } ]
                Rows = c.Rows :> IReadOnlyDictionary<_, _>
                Snapshot = c.Backend |> Map.toList |> List.map (fun (k, v) -> k, bytes v)
                ItemIdOf = LogicalKey.itemId nsKeys collection
                Now = t
            }

    let c =
        effects
        |> List.fold
            (fun c e ->
                match e with
                | SnapshotEffect.Queue row -> save c row
                | SnapshotEffect.Lingering(row, v) when Map.tryFind row.Key c.Backend = Some(text v) ->
                    { save c row with Backend = Map.remove row.Key c.Backend }
                | _ -> c)
            c

    // 2. Downloads: the directory bucket first (the engine applies buckets first), then the items.
    let c =
        if s.DirVersion > c.DirVersion then
            // The downloaded bucket joined with what the client held (the server's only grows, so
            // this is the server's; the join is what the engine runs when a bucket meets a 412).
            { c with
                DirVersion = s.DirVersion
                Synced = KeyDirectory.merge policy c.Synced s.Dir
                Known = Set.union c.Known s.DirKnown
            }
        else
            c

    let c = download policy s c (scope policy c)

    // 3. The deletes step, then the items it made known (a key live again), then the deletes step
    //    once more (as the engine: after the item map, and before the uploads).
    let c = deletesStep policy c
    let c = download policy s c (scope policy c)
    let c = deletesStep policy c

    // 4. Uploads: dirty values (compare-and-set), then the bucket when it changed.
    let mutable lost = fault

    let c, s =
        c.Rows
        |> Map.fold
            (fun (c: Client, s: Server) key row ->
                let value =
                    match Map.tryFind key c.Backend with
                    | Some value when not row.Deleted -> Some value
                    | _ when row.Deleted && overwrite -> Some "deleted" // the value that overwrites a deleted one
                    | _ -> None

                match value, Flush.prepare row true (value |> Option.map (bytes >> LocalValue.Present) |> Option.defaultValue LocalValue.Absent) with
                | Some value, FlushStep.Upload intent ->
                    let current = Map.tryFind key s.Items |> Option.map fst |> Option.defaultValue 0UL

                    if current = row.Version then
                        let accepted = current + 1UL
                        let s =
                            { s with
                                Items = Map.add key (accepted, value) s.Items
                                ItemKnown = Map.add key (Set.union c.Known (Map.tryFind key s.ItemKnown |> Option.defaultValue Set.empty)) s.ItemKnown
                            }

                        if lost = LostValueAnswer then
                            lost <- NoFault
                            c, s
                        else
                            save c (Flush.accepted intent accepted t).Row, s
                    else
                        c, s // 412: the next pass downloads and merges
                | _ -> c, s)
            (c, s)

    let mine = published policy c

    if mine = c.Synced then
        c, s
    elif s.DirVersion = c.DirVersion then
        let s =
            { s with
                DirVersion = s.DirVersion + 1UL
                Dir = mine
                DirKnown = Set.union s.DirKnown c.Known
            }

        if lost = LostDirectoryAnswer then
            c, s
        else
            { c with DirVersion = s.DirVersion; Synced = mine }, s
    else
        c, s // 412: the next pass joins

// ------------------------------------------------------------------ checks

/// The step invariant: the server's directory only grows (no entry ever goes back).
let checkStep (policy: DeletePolicy) (before: Server) (after: Server) =
    before.Dir
    |> Map.tryPick (fun key e ->
        match Map.tryFind key after.Dir with
        | Some a when KeyDirectory.compare policy a e >= 0 -> None
        | _ -> Some(sprintf "the server's directory entry of %s went back" key))

/// The checks after a quiet period.
let checkSettled (policy: DeletePolicy) (st: State) : string option =
    let s = st.Server
    let live = KeyDirectory.liveKeys s.Dir |> Set.ofList

    let problems =
        [
            for c in st.Clients do
                if c.Synced <> s.Dir then
                    yield sprintf "%s holds another directory" c.Writer

                if c.Backend |> Map.keys |> Set.ofSeq <> live then
                    yield sprintf "%s holds keys %A, the directory lists %A live" c.Writer (Map.keys c.Backend |> List.ofSeq) (Set.toList live)

                for KeyValue(key, value) in c.Backend do
                    match Map.tryFind key s.Items with
                    | Some(_, v) when v = value -> ()
                    | other -> yield sprintf "%s holds %s=%s, the server %A" c.Writer key value other

                for KeyValue(key, row) in c.Rows do
                    if row.Dirty then
                        yield sprintf "%s still has %s dirty" c.Writer key

            for key in live do
                let writes = st.Oracle.Events |> List.filter (fun e -> e.Key = key && e.DeletedAt.IsNone)
                let deletions = st.Oracle.Events |> List.filter (fun e -> e.Key = key && e.DeletedAt.IsSome)

                for d in deletions do
                    let received = Set.contains (key, Option.get d.DeletedAt, d.Writer) st.Oracle.Published

                    let newerWrite (w: Event) =
                        deletions
                        |> List.exists (fun d2 -> d2.DeletedAt >= d.DeletedAt && Set.contains d2.Id w.Known)

                    let unseenWrite (w: Event) =
                        policy = DeletePolicy.EditWins && not (Set.contains w.Id d.Known)

                    // The known limits (docs/concepts.md, "Deletes"), under EditWins: a deletion made while its
                    // device's own upload of the key was unconfirmed; with overwriting deletions, a write
                    // whose answer was lost (the overwrite replaced the evidence its writer needed).
                    let excused =
                        policy = DeletePolicy.EditWins
                        && (d.Unconfirmed || (st.Overwrite && st.Oracle.Lost |> Map.exists (fun (_, k) _ -> k = key)))

                    if received && not excused && not (writes |> List.exists (fun w -> newerWrite w || unseenWrite w)) then
                        yield sprintf "%s is live although deletion %d (generation %A) met no newer write: resurrected" key d.Id d.DeletedAt

            if policy = DeletePolicy.EditWins then
                for KeyValue(key, e) in s.Dir do
                    match Map.tryFind key s.Items with
                    | Some(version, value) when e.State = KeyState.Deleted && version > e.Seen ->
                        yield sprintf "%s is deleted but version %d (%s), which the deletion did not see, is lost" key version value
                    | _ -> ()
        ]

    List.tryHead problems

// ------------------------------------------------------------------ exploration

/// One transition.
type Step =
    | Write of client: int * key: string
    | Delete of client: int * key: string
    | Pass of client: int * fault: Fault
    | Backup of client: int
    | Restore of client: int

/// Runs a step; the oracle records app events.
let exec (policy: DeletePolicy) (st: State) (step: Step) : State =
    let at i (c: Client) =
        let cs = Array.copy st.Clients
        cs[i] <- c
        cs

    let id = st.Oracle.Events.Length + 1

    let record (c: Client) key deletedAt =
        let known = Set.add id c.Known

        { c with Known = known },
        {
            Id = id
            Key = key
            Known = known
            DeletedAt = deletedAt
            Unconfirmed = false
            Writer = c.Writer
        }

    match step with
    | Write(i, key) ->
        let c, event = record (write st.Clients[i] key (sprintf "w%d" id)) key None
        { st with Clients = at i c; Oracle = { st.Oracle with Events = event :: st.Oracle.Events } }
    | Delete(i, key) ->
        let unconfirmed =
            match Map.tryFind (i, key) st.Oracle.Lost with
            | Some version -> (rowOf st.Clients[i] key).Version < version
            | None -> false

        match delete policy st.Overwrite st.Clients[i] key with
        | c, Some _ ->
            let c, event = record c key (Some (rowOf c key).DirGeneration)

            { st with
                Clients = at i c
                Oracle =
                    { st.Oracle with
                        Events = { event with Unconfirmed = unconfirmed } :: st.Oracle.Events
                    }
            }
        | _, None -> st
    | Pass(i, fault) ->
        let c, s = pass policy st.Overwrite fault st.Clients[i] st.Server

        let published =
            s.Dir
            |> Map.fold
                (fun published key (e: DirEntry) ->
                    if e.State = KeyState.Deleted then
                        Set.add (key, e.Generation, e.Writer) published
                    else
                        published)
                st.Oracle.Published

        let lost =
            s.Items
            |> Map.fold
                (fun lost key (version, _) ->
                    let before = Map.tryFind key st.Server.Items |> Option.map fst |> Option.defaultValue 0UL

                    if version > before && (rowOf c key).Version < version then
                        Map.add (i, key) version lost
                    else
                        lost)
                st.Oracle.Lost

        { st with
            Clients = at i c
            Server = s
            Oracle =
                { st.Oracle with
                    Lost = lost
                    Published = published
                }
        }
    | Backup i ->
        let bs = Array.copy st.Backups
        bs[i] <- st.Clients[i]
        { st with Backups = bs }
    | Restore i ->
        // The restored device's unsynced values are writes the others never saw, made without
        // seeing anything that happened after the backup: the oracle records them as such.
        let restored = st.Backups[i]

        let unsynced =
            restored.Backend
            |> Map.toList
            |> List.filter (fun (k, v) ->
                match Map.tryFind k restored.Rows with
                | Some r -> r.Dirty || not (ItemState.equalsBase r (bytes v))
                | None -> true)

        let c, events =
            unsynced
            |> List.indexed
            |> List.fold
                (fun (c: Client, events) (n, (k, _)) ->
                    let id = st.Oracle.Events.Length + 1 + n
                    let known = Set.add id c.Known

                    { c with Known = known },
                    {
                        Id = id
                        Key = k
                        Known = known
                        DeletedAt = None
                        Unconfirmed = false
                        Writer = c.Writer
                    }
                    :: events)
                (restored, [])

        { st with Clients = at i c; Oracle = { st.Oracle with Events = events @ st.Oracle.Events } }

/// Every client passes in turn until a full round changes nothing (bounded).
let settle (policy: DeletePolicy) (st: State) : State option =
    let rec go (st: State) rounds =
        if rounds > 12 then
            None
        else
            let next = [ 0 .. st.Clients.Length - 1 ] |> List.fold (fun st i -> exec policy st (Pass(i, NoFault))) st
            if next.Clients = st.Clients && next.Server = st.Server then Some next else go next (rounds + 1)

    go st 0

/// The scenario bounds.
type Bounds =
    {
        Clients: int
        Keys: string list
        Writes: int
        Deletes: int
        Passes: int
        Faults: int
        /// Backups and restores of client 0 (the stale peer).
        Restores: int
        Overwrite: bool
    }

type private Budget = { W: int; D: int; P: int; F: int; R: int }

/// Explores every interleaving within the bounds, breadth-first with state hashing; from every
/// reachable state a quiet period must settle and pass the checks. Returns the number of states or
/// the first violation with the shortest trace.
let explore (policy: DeletePolicy) (b: Bounds) : Result<int, string * Step list> =
    let start = initial b.Overwrite b.Clients, { W = b.Writes; D = b.Deletes; P = b.Passes; F = b.Faults; R = b.Restores }
    let seen = HashSet<State * Budget>(HashIdentity.Structural)
    let queue = Queue<State * Budget * Step list>()
    queue.Enqueue(fst start, snd start, [])
    seen.Add start |> ignore
    let mutable failure = None

    while failure.IsNone && queue.Count > 0 do
        let st, budget, trace = queue.Dequeue()

        match settle policy st with
        | None -> failure <- Some("no quiet state within 12 rounds", List.rev trace)
        | Some settled ->
            match checkSettled policy settled with
            | Some problem -> failure <- Some(problem, List.rev trace)
            | None ->
                let steps =
                    [
                        if budget.W > 0 then
                            for i in 0 .. b.Clients - 1 do
                                for k in b.Keys do
                                    yield Write(i, k), { budget with W = budget.W - 1 }
                        if budget.D > 0 then
                            for i in 0 .. b.Clients - 1 do
                                for k in b.Keys do
                                    yield Delete(i, k), { budget with D = budget.D - 1 }
                        if budget.P > 0 then
                            for i in 0 .. b.Clients - 1 do
                                yield Pass(i, NoFault), { budget with P = budget.P - 1 }

                                if budget.F > 0 then
                                    yield Pass(i, LostValueAnswer), { budget with P = budget.P - 1; F = budget.F - 1 }
                                    yield Pass(i, LostDirectoryAnswer), { budget with P = budget.P - 1; F = budget.F - 1 }
                        if budget.R > 0 then
                            yield Backup 0, { budget with R = budget.R - 1 }
                            yield Restore 0, { budget with R = budget.R - 1 }
                    ]

                for step, left in steps do
                    let next = exec policy st step

                    match checkStep policy st.Server next.Server with
                    | Some problem -> failure <- Some(problem, List.rev (step :: trace))
                    | None ->
                        if seen.Add((next, left)) then
                            queue.Enqueue(next, left, step :: trace)

    match failure with
    | Some f -> Error f
    | None -> Ok seen.Count

/// Runs a schedule from the start, then a quiet period: the violation, or None.
let run (policy: DeletePolicy) (overwrite: bool) (clients: int) (steps: Step list) : string option =
    let rec go (st: State) steps =
        match steps with
        | [] ->
            match settle policy st with
            | None -> Some "no quiet state within 12 rounds"
            | Some settled -> checkSettled policy settled
        | step :: rest ->
            let next = exec policy st step

            match checkStep policy st.Server next.Server with
            | Some problem -> Some problem
            | None -> go next rest

    go (initial overwrite clients) steps

/// The shortest schedule found by dropping steps one at a time while it still fails.
let shrink (policy: DeletePolicy) (overwrite: bool) (clients: int) (steps: Step list) =
    let rec go (steps: Step list) =
        let smaller =
            [ 0 .. steps.Length - 1 ]
            |> List.tryPick (fun i ->
                let candidate = List.removeAt i steps
                run policy overwrite clients candidate |> Option.map (fun _ -> candidate))

        match smaller with
        | Some s -> go s
        | None -> steps

    go steps

/// A seeded random schedule over the same model (more clients, keys and steps than exhaustive
/// exploration can afford).
let schedule (seed: int) (clients: int) (keys: string list) (steps: int) : Step list =
    let rng = Random(seed)

    [
        for _ in 1..steps do
            let i = rng.Next clients
            let key = keys[rng.Next keys.Length]

            match rng.Next 20 with
            | n when n < 6 -> Write(i, key)
            | n when n < 9 -> Delete(i, key)
            | 9 -> Pass(i, LostValueAnswer)
            | 10 -> Pass(i, LostDirectoryAnswer)
            | 11 -> Backup 0
            | 12 -> Restore 0
            | _ -> Pass(i, NoFault)
    ]

let private checkModel (name: string) (policy: DeletePolicy) (b: Bounds) =
    test name {
        match explore policy b with
        | Ok states -> printfn "delete model checker (%A): %s: %d states" policy name states
        | Error(problem, trace) -> failtestf "%s\ntrace: %A" problem trace
    }

let tests =
    testList
        "deletes: model checker and simulation"
        [
            for policy in [ DeletePolicy.EditWins; DeletePolicy.DeleteWins ] do
                checkModel
                    (sprintf "%A: 2 clients, 1 key, 2 writes, 1 delete, 4 passes, 1 lost answer" policy)
                    policy
                    {
                        Clients = 2
                        Keys = [ "k" ]
                        Writes = 2
                        Deletes = 1
                        Passes = 4
                        Faults = 1
                        Restores = 0
                        Overwrite = false
                    }

                checkModel
                    (sprintf "%A: 2 clients, 1 key, 1 write, 2 deletes, 4 passes, a stale peer" policy)
                    policy
                    {
                        Clients = 2
                        Keys = [ "k" ]
                        Writes = 1
                        Deletes = 2
                        Passes = 4
                        Faults = 0
                        Restores = 2
                        Overwrite = false
                    }

                checkModel
                    (sprintf "%A: 3 clients, 1 key, 2 writes, 1 delete, 3 passes" policy)
                    policy
                    {
                        Clients = 3
                        Keys = [ "k" ]
                        Writes = 2
                        Deletes = 1
                        Passes = 3
                        Faults = 0
                        Restores = 0
                        Overwrite = false
                    }

                checkModel
                    (sprintf "%A: 2 clients, 2 keys, 2 writes, 1 delete, 3 passes, 1 lost answer" policy)
                    policy
                    {
                        Clients = 2
                        Keys = [ "k1"; "k2" ]
                        Writes = 2
                        Deletes = 1
                        Passes = 3
                        Faults = 1
                        Restores = 0
                        Overwrite = false
                    }

                checkModel
                    (sprintf "%A, deletions overwrite the value: 2 clients, 1 key, 2 writes, 1 delete, 4 passes, 1 lost answer" policy)
                    policy
                    {
                        Clients = 2
                        Keys = [ "k" ]
                        Writes = 2
                        Deletes = 1
                        Passes = 4
                        Faults = 1
                        Restores = 0
                        Overwrite = true
                    }

                for overwrite in [ false; true ] do
                    test (sprintf "%A%s: 400 seeded schedules of 3 clients, 3 keys, 60 steps (writes, deletes, lost answers, a stale peer)" policy (if overwrite then ", deletions overwrite the value" else "")) {
                        for seed in 1..400 do
                            let steps = schedule seed 3 [ "a"; "b"; "c" ] 60

                            match run policy overwrite 3 steps with
                            | None -> ()
                            | Some _ ->
                                let shortest = shrink policy overwrite 3 steps
                                failtestf "seed %d: %s\nshortest schedule: %A" seed (run policy overwrite 3 shortest |> Option.defaultValue "") shortest
                    }
        ]
