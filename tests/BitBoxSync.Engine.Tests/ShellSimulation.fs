/// The shipped engine (the C# shell and the core it executes) under seeded simulation. Every
/// effect of a pass goes through a seam the scheduler controls: HTTP through an in-process handler
/// in front of the real server (hosted on a test server: no sockets; SQLite underneath), the
/// metadata store through a wrapper over a MemoryStore (a crash loses nothing committed and
/// everything after), the app's backend through a wrapper that the app can also write at any
/// effect. At every effect the scheduler delivers it, fails it, loses its response after the server
/// applied it, fakes a server rollback, or crashes the device right before or after it (the engine
/// instance is dropped and reopened from the store). Time is a manual clock, randomness is seeded.
///
/// Invariants after every step: no row version or head moves backwards; a clean row's base is the
/// server's value at that version and the app's value is that value, a newer server value, or an app
/// write made after the row became clean; every faked rollback fails the pass with
/// RollbackDetectedException; after a complete pass the cached head is the server's. At quiescence:
/// devices converge (or hold a recorded conflict of the server's value), no acknowledged app write is
/// lost (uploaded, resolved by a merge on its device, or held in a conflict), and a quiet pass makes
/// one request and writes nothing. A failure prints the seed and a shrunk trace;
/// `--shell-seed N` replays one seed.
module BitBoxSync.Engine.Tests.ShellSimulation

open System
open System.Collections.Concurrent
open System.Collections.Generic
open System.Net
open System.Net.Http
open System.Threading
open System.Threading.Tasks
open Expecto
open Microsoft.AspNetCore.Hosting
open Microsoft.AspNetCore.Hosting.Server
open Microsoft.AspNetCore.TestHost
open Microsoft.Extensions.DependencyInjection
open Microsoft.Extensions.Logging
open BitBoxSync
open BitBoxSync.Protocol
open BitBoxSync.Protocol.Wire
open BitBoxSync.Storage
open BitBoxSync.Server
open BitBoxSync.Server.Tests.Harness

/// What the scheduler does at one effect.
type Action =
    | Deliver
    /// The effect fails without being applied (a transport or I/O error).
    | Fail
    /// HTTP: the server applied the request, the answer never arrives.
    | LoseResponse
    /// The device dies right before the effect.
    | CrashBefore
    /// The device dies right after the effect was applied.
    | CrashAfter
    /// HTTP reads: the server answers an older state it already answered before.
    | FakeRollback

exception DeviceCrashed of string

/// A hash that is the same in every process (HashCode is randomized per process): FNV-1a.
let stableHash (text: string) =
    let mutable h = 2166136261u

    for c in text do
        h <- (h ^^^ uint32 c) * 16777619u

    int (h &&& 0x7fffffffu)

/// One effect: the device, the step and a label naming what it does (logical keys, not IDs).
type Effect =
    {
        Device: int
        Step: int
        Label: string
        Occurrence: int
    }

/// A scheduled step.
type Step =
    | AppWrite of device: int * key: string * value: string
    | Pass of device: int
    | Restart of device: int
    /// A pass with one fault forced at the first effect with this label.
    | PassWith of device: int * label: string * action: Action

/// How a run decides its faults.
type Mode =
    /// Seeded random faults and interleaved app writes at every effect.
    | Random of seed: int
    /// Exactly one action at the first effect of a step with this label (systematic crash points).
    | Only of step: int * label: string * action: Action
    /// No faults (a baseline run that records the effect boundaries).
    | Quiet

let keyNames = [ "k1"; "k2" ]
let private collection = "notes"

// ---------------------------------------------------------------------------------------------
// The server, hosted in process once for all runs (each run uses identities of its own).

/// One manual clock for the server and every device (advanced a second per pass).
let private clock = ManualClock(DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero))

let private hosted =
    lazy
        (let db = Database.Create Sqlite
         let o = options db clock (TimeSpan.FromSeconds 2.0)
         o.MinimumLogLevel <- LogLevel.Warning

         let server =
             BitBoxSyncServer
                 .StartWithAsync(o, Action<_>(fun b -> b.WebHost.UseTestServer() |> ignore), CancellationToken.None)
                 .GetAwaiter()
                 .GetResult()

         server, (server.Services.GetRequiredService<IServer>() :?> Microsoft.AspNetCore.TestHost.TestServer))

// ---------------------------------------------------------------------------------------------
// The world of one run.

/// One incarnation of a device (a process): dead after a crash, every effect refused from then on.
type Incarnation() =
    member val Dead = false with get, set

/// The app's storage: it survives crashes; writes after a crash are refused; the app may write at
/// any effect (the scheduler decides).
type AppValues() =
    member val Values = Dictionary<string, string>(StringComparer.Ordinal)
    /// Per key: the effect counter of the last app write, and the values written.
    member val LastAppWrite = Dictionary<string, int64>()
    member val LastWrites = Dictionary<string, string>()
    /// Local values a resolving merge on this device was handed (the app's merge decided).
    member val Merged = HashSet<string>()
    /// Per key: every value the backend held, in order (one register: each value replaces, and so
    /// descends from, the ones before it), with the server versions each one covers: the version it
    /// was downloaded as, the remote version a merge combined into it, the version it was accepted as.
    member val Lineage = Dictionary<string, List<string * HashSet<uint64>>>()
    /// Per key: the remote version the last resolving merge combined (for the value written next).
    member val PendingMerge = Dictionary<string, uint64>()

    member a.Record(key: string, value: string, covers: uint64 seq) =
        let list =
            match a.Lineage.TryGetValue key with
            | true, l -> l
            | _ ->
                let l = List()
                a.Lineage[key] <- l
                l

        list.Add((value, HashSet covers))

    /// Whether the newest `value` of `key` descends from server version `version` (0: nothing to see).
    member a.Descends(key: string, value: string, version: uint64) =
        version = 0UL
        || (match a.Lineage.TryGetValue key with
            | true, list ->
                match Seq.tryFindIndexBack (fun (v, _) -> v = value) list with
                | Some last -> list |> Seq.take (last + 1) |> Seq.exists (fun (_, covers) -> covers.Contains version)
                | None -> false
            | _ -> false)

    /// `value` was accepted as `version`: its newest entry covers that version.
    member a.Accepted(key: string, value: string, version: uint64) =
        match a.Lineage.TryGetValue key with
        | true, list ->
            match Seq.tryFindIndexBack (fun (v, _) -> v = value) list with
            | Some last -> (snd list[last]).Add version |> ignore
            | None -> ()
        | _ -> ()

/// Everything a run observed, the oracle's view of the server included.
type World(mode: Mode, runId: string, devices: int) =
    let trace = List<string>()
    let occurrences = Dictionary<string, int>()
    let boundaries = HashSet<string>()
    let mutable step = 0
    let mutable effectCounter = 0L
    let mutable ticks = 0L
    let mutable injected = false
    let mutable faults = 0

    /// Accepted server values per key: version → plaintext (the oracle, not something the server knows).
    member val History = Dictionary<string, SortedDictionary<uint64, string>>()
    member val RollbackFaked = false with get, set
    member _.Trace = trace
    member _.Boundaries = boundaries
    member _.RunId = runId
    member _.Devices = devices
    member _.Mode = mode
    member _.Injected = injected

    member _.Step
        with get () = step
        and set v =
            step <- v
            faults <- 0
            occurrences.Clear()

    /// Faults injected in the current step.
    member _.FaultsInStep = faults

    member _.NextEffect() = Interlocked.Increment(&effectCounter)

    /// Logical time for ordering app writes and engine reads (does not count as a change).
    member _.Tick() = Interlocked.Increment(&ticks)
    member _.Effects = effectCounter

    member w.ServerHead =
        w.History.Values |> Seq.sumBy (fun versions -> if versions.Count = 0 then 0UL else Seq.max versions.Keys)

    member w.Latest(key: string) =
        match w.History.TryGetValue key with
        | true, versions when versions.Count > 0 -> Some(versions[Seq.max versions.Keys])
        | _ -> None

    /// A fault the current step forces (label, action), used once.
    member val Forced: (string * Action) option = None with get, set

    /// The namespace the collection syncs in (the identity's default one, or a shared one).
    member val NamespaceId = "" with get, set

    /// While set (opening a device), every effect is delivered.
    member val Calm = false with get, set

    member val private MapVersions = Dictionary<int * string, uint64>()

    /// An item map a device received: the versions its downloads must reach.
    member w.MapSeen(device: int, json: string) =
        use doc = Text.Json.JsonDocument.Parse json

        lock w.MapVersions (fun () ->
            for p in doc.RootElement.GetProperty("items").EnumerateObject() do
                w.MapVersions[(device, p.Name)] <- p.Value.GetProperty("version").GetUInt64())

    /// The version the last item map promised this device for an item (0 when none).
    member w.MapVersion(device: int, itemId: string) =
        lock w.MapVersions (fun () ->
            match w.MapVersions.TryGetValue((device, itemId)) with
            | true, v -> v
            | _ -> 0UL)

    /// The scheduler: what happens at this effect (and whether the app writes first).
    member w.Decide(device: int, label: string, kinds: Action list) : Action * (string * string) option =
        let occurrence =
            lock occurrences (fun () ->
                let key = $"{device}|{label}"
                let n = match occurrences.TryGetValue key with | true, n -> n + 1 | _ -> 1
                occurrences[key] <- n
                n)

        if not w.Calm then
            lock boundaries (fun () -> boundaries.Add label |> ignore)

        match mode with
        | _ when w.Calm -> Deliver, None
        | _ when (match w.Forced with Some(l, a) -> l = label && List.contains a kinds | None -> false) ->
            let _, a = w.Forced.Value
            w.Forced <- None
            a, None
        | Quiet -> Deliver, None
        | Only(s, l, action) when s = step && l = label && occurrence = 1 && List.contains action kinds ->
            injected <- true
            action, None
        | Only _ -> Deliver, None
        | Random seed ->
            let h = stableHash $"{seed}|{step}|{device}|{label}|{occurrence}"
            let rng = System.Random(h)
            let appWrite =
                if rng.Next 100 < 6 then
                    Some(keyNames[rng.Next keyNames.Length], string (char (int 'a' + rng.Next 6)))
                else
                    None

            let roll = rng.Next 1000
            let pick =
                if w.RollbackFaked then Deliver
                elif roll < 25 then Fail
                elif roll < 45 then LoseResponse
                elif roll < 65 then CrashBefore
                elif roll < 85 then CrashAfter
                elif roll < 110 then FakeRollback
                else Deliver

            let action = if List.contains pick kinds then pick else Deliver

            if action <> Deliver then
                Interlocked.Increment(&faults) |> ignore

            action, appWrite

    member _.Log(line: string) = lock trace (fun () -> trace.Add line)

    /// The namespace and its keys, once a device has them.
    member val KeysOf: unit -> (NamespaceId * NamespaceKeys) option = (fun () -> None) with get, set

    /// The logical key of an item ID (the ID itself until the keys are known).
    member w.KeyOf(itemId: string) =
        match w.KeysOf() with
        | Some(_, keys) ->
            keyNames
            |> List.tryFind (fun k -> (BitBoxSync.Core.LogicalKey.itemId keys collection k).Wire = itemId)
            |> Option.defaultValue itemId
        | None -> itemId

    /// The newest server version holding `value` for `key`.
    member w.VersionOf(key: string, value: string) =
        lock w.History (fun () ->
            match w.History.TryGetValue key with
            | true, versions ->
                versions |> Seq.filter (fun kv -> kv.Value = value) |> Seq.tryLast |> Option.map (fun kv -> kv.Key)
            | _ -> None)

    /// Lost updates found at accepted PUTs (reported by the step's invariant check).
    member val LostUpdates = List<string>()

    /// The oracle: a PUT the server accepted (its plaintext, decrypted with the namespace key).
    /// The uploaded value must be based on the version it replaces (an app write made after the
    /// device saw it, or a merge with it): otherwise the upload overwrote a write it never saw.
    member w.Accepted(app: AppValues, device: string, path: string, body: string, answer: string) =
        let request =
            Json.decodeRequestString<PutItemRequest> body |> Result.defaultWith failwith

        let response =
            Json.decodeResponseString<PutItemResponse> answer |> Result.defaultWith failwith

        w.AcceptedItem(app, device, path.Split('/') |> Array.last, request, response.Version)

    /// A batch PUT the server answered: every accepted item goes through the oracle.
    member w.AcceptedBatch(app: AppValues, device: string, body: string, answer: string) =
        let request =
            Json.decodeRequestString<BatchPutItemsRequest> body |> Result.defaultWith failwith

        let response =
            Json.decodeResponseString<BatchPutItemsResponse> answer |> Result.defaultWith failwith

        for item, result in Array.zip request.Items response.Results do
            if result.Status = 200 then
                w.AcceptedItem(
                    app,
                    device,
                    item.ItemId,
                    { Nonce = item.Nonce; Aad = item.Aad; Ciphertext = item.Ciphertext },
                    result.Version
                )

    member private w.AcceptedItem(app: AppValues, device: string, itemId: string, request: PutItemRequest, version: uint64) =
        let ns, keys =
            w.KeysOf() |> Option.defaultWith (fun () -> failwith "a PUT before any namespace key is known")

        let sealedItem: SealedItem =
            {
                Nonce = Bin.parse<ItemNonceKind> request.Nonce |> Result.defaultWith (fun e -> failwith e.Message)
                Aad = Bin.parse<ItemAadKind> request.Aad |> Result.defaultWith (fun e -> failwith e.Message)
                Ciphertext =
                    Bin.parse<CiphertextKind> request.Ciphertext |> Result.defaultWith (fun e -> failwith e.Message)
            }

        let item = Bin.parse<ItemIdKind> itemId |> Result.defaultWith (fun e -> failwith e.Message)

        let plain =
            ItemCrypto.openItem keys ns item version sealedItem
            |> Result.defaultWith (fun e -> failwith e.Message)

        let key = w.KeyOf itemId

        lock w.History (fun () ->
            let versions =
                match w.History.TryGetValue key with
                | true, v -> v
                | _ ->
                    let v = SortedDictionary()
                    w.History[key] <- v
                    v

            versions[version] <- Codecs.String.Decode(ReadOnlySpan plain))

        let value = Codecs.String.Decode(ReadOnlySpan plain)
        w.Log $"  server accepts {key} v{version} = {value} from {device}"

        lock app (fun () ->
            let replaced = version - 1UL

            if not (app.Descends(key, value, replaced)) then
                lock w.LostUpdates (fun () ->
                    w.LostUpdates.Add
                        $"lost update: {device} uploaded {key}={value} over v{replaced}, a version its value does not descend from")

            app.Accepted(key, value, version))

// ---------------------------------------------------------------------------------------------
// Seams

type Device =
    {
        Index: int
        Label: string
        /// The dummy keystore label of the device's identity.
        Identity: string
        App: AppValues
        Store: MemoryStore
        mutable Incarnation: Incarnation
        mutable Engine: SyncEngine
        mutable Client: SyncClient
    }

let private appWrite (world: World) (d: Device) (key: string) (value: string) =
    lock d.App (fun () ->
        d.App.Values[key] <- value
        d.App.LastWrites[key] <- value
        d.App.LastAppWrite[key] <- world.Tick()
        d.App.Record(key, value, [])
        world.NextEffect() |> ignore)

    world.Log $"  {d.Label} app writes {key}={value}"

/// Runs an effect under the scheduler.
let private effect
    (world: World)
    (d: Device)
    (inc: Incarnation)
    (label: string)
    (kinds: Action list)
    (run: Action -> 'T)
    : 'T =
    if inc.Dead then
        raise (DeviceCrashed "dead")

    let action, write = world.Decide(d.Index, label, kinds)

    match write with
    | Some(k, v) -> appWrite world d k v
    | None -> ()

    if action <> Deliver then
        world.Log $"  {d.Label} {label}: {action}"

    match action with
    | CrashBefore ->
        inc.Dead <- true
        raise (DeviceCrashed label)
    | Fail when not (label.StartsWith "http") -> raise (IO.IOException $"simulated failure of {label}")
    | _ ->
        let result = run action

        if action = CrashAfter then
            inc.Dead <- true
            raise (DeviceCrashed label)

        result

/// The engine wrote `value` to the app's backend: a server value (the device now knows that
/// version) or a merge result (based on the newest version the device has merged).
let private engineWrite (world: World) (d: Device) (key: string) (value: string) =
    d.App.Values[key] <- value

    let merged =
        match d.App.PendingMerge.TryGetValue key with
        | true, v ->
            d.App.PendingMerge.Remove key |> ignore
            [ v ]
        | _ -> []

    d.App.Record(key, value, Option.toList (world.VersionOf(key, value)) @ merged)

type private SimBackend(world: World, d: Device, inc: Incarnation) =
    let read (f: unit -> 'T) =
        if inc.Dead then raise (DeviceCrashed "dead")
        lock d.App f

    let kinds = [ Fail; CrashBefore; CrashAfter ]

    interface IConditionalValueBackend<string> with
        member _.KeysAsync _ =
            ValueTask.FromResult(keyNames :> IReadOnlyCollection<string>)

        member _.SnapshotAsync _ =
            ValueTask.FromResult(
                read (fun () -> Dictionary(d.App.Values) :> IReadOnlyDictionary<string, string>)
            )

        member _.GetAsync(key, _) =
            ValueTask.FromResult(
                read (fun () ->
                    match d.App.Values.TryGetValue key with
                    | true, v -> BackendValue<string>.Of v
                    | _ -> BackendValue<string>.Missing)
            )

        member _.SetAsync(key, value, _) =
            effect world d inc $"backend.Set {key}" kinds (fun _ -> lock d.App (fun () -> engineWrite world d key value))
            ValueTask.CompletedTask

        member _.SetIfCurrentAsync(key, current, found, value, _) =
            effect world d inc $"backend.SetIfCurrent {key}" kinds (fun _ ->
                lock d.App (fun () ->
                    let matches =
                        match d.App.Values.TryGetValue key with
                        | true, v -> found && v = current
                        | _ -> not found

                    if matches then engineWrite world d key value
                    matches))
            |> ValueTask.FromResult

type private SimStore(world: World, d: Device, inc: Incarnation) =
    let inner = d.Store :> IStore

    let read (f: unit -> ValueTask<'T>) =
        if inc.Dead then raise (DeviceCrashed "dead")
        f ()

    interface IStore with
        member _.LoadIdentityAsync(k, ct) = read (fun () -> inner.LoadIdentityAsync(k, ct))
        member _.GetNamespaceAsync(k, n, ct) = read (fun () -> inner.GetNamespaceAsync(k, n, ct))
        member _.ListNamespacesAsync(k, ct) = read (fun () -> inner.ListNamespacesAsync(k, ct))
        member _.GetItemByIdAsync(k, n, i, ct) = read (fun () -> inner.GetItemByIdAsync(k, n, i, ct))

        member _.GetItemByLogicalKeyAsync(k, n, c, key, ct) =
            read (fun () -> inner.GetItemByLogicalKeyAsync(k, n, c, key, ct))

        member _.ListNamespaceItemsAsync(k, n, ct) = read (fun () -> inner.ListNamespaceItemsAsync(k, n, ct))
        member _.ListDirtyItemsAsync(k, ct) = read (fun () -> inner.ListDirtyItemsAsync(k, ct))

        member _.SaveAsync(write, ct) =
            let what =
                [
                    if not (isNull (box write.Identity)) then
                        yield "identity"
                    if write.Namespaces.Count > 0 then
                        yield "namespaces"
                    for k in write.Items |> Seq.map (fun i -> i.Key) |> Seq.distinct |> Seq.sort do
                        yield k
                ]

            effect world d inc $"""store.Save {String.Join("+", what)}""" [ Fail; CrashBefore; CrashAfter ] (fun _ ->
                inner.SaveAsync(write, ct).AsTask().GetAwaiter().GetResult()

                if write.Items.Count > 0 then
                    world.NextEffect() |> ignore)

            ValueTask.CompletedTask

        member _.ForgetIdentitySecretsAsync(k, ct) =
            if inc.Dead then raise (DeviceCrashed "dead")
            inner.ForgetIdentitySecretsAsync(k, ct)

        member _.ResetSyncStateAsync(k, ct) =
            if inc.Dead then raise (DeviceCrashed "dead")
            inner.ResetSyncStateAsync(k, ct)
        member _.DisposeAsync() = ValueTask.CompletedTask

/// HTTP through the scheduler to the in-process server; records accepted values (the oracle) and
/// earlier answers (to fake rollbacks with).
type private SimHttp
    (world: World, d: Device, inc: Incarnation, inner: HttpMessageHandler, floor: string -> string -> string -> uint64) =
    inherit HttpMessageHandler()

    let invoker = new HttpMessageInvoker(inner, false)

    static let answered = ConcurrentDictionary<string, List<uint64 * string>>()

    let isRead (request: HttpRequestMessage) (l: string) =
        (request.Method = HttpMethod.Get
         && (l.EndsWith "item map" || l.StartsWith "http GET item" || l = "http GET /v1/namespaces/mine"))
        || l.StartsWith "http GET batch"

    /// Item IDs of a batch request body, in order.
    let batchIds (body: string) =
        use doc = Text.Json.JsonDocument.Parse body
        let root = doc.RootElement

        match root.TryGetProperty "itemIds" with
        | true, ids -> [ for i in ids.EnumerateArray() -> i.GetString() ]
        | _ -> [ for i in root.GetProperty("items").EnumerateArray() -> i.GetProperty("itemId").GetString() ]

    let label (request: HttpRequestMessage) (body: string) =
        let path = request.RequestUri.AbsolutePath
        let parts = path.Split('/', StringSplitOptions.RemoveEmptyEntries)
        // Sorted: item IDs (and so the order within a batch) differ between runs, the keys do not.
        let keys () = batchIds body |> List.map world.KeyOf |> List.sort |> String.concat " "

        match request.Method.Method, parts with
        | m, [| "v1"; "kv"; _; item |] -> $"http {m} item {world.KeyOf item}"
        | m, [| "v1"; "namespaces"; _; "items" |] -> $"http {m} item map"
        | _, [| "v1"; "namespaces"; _; "items"; "batch-get" |] -> $"http GET batch {keys ()}"
        | _, [| "v1"; "namespaces"; _; "items"; "batch-put" |] -> $"http PUT batch {keys ()}"
        | m, _ -> $"http {m} {path}"

    /// The head or version an answer reports (to fake rollbacks with older answers); for a batch
    /// GET, the sum of its items' versions.
    let reported (l: string) (json: string) =
        use doc = Text.Json.JsonDocument.Parse json
        let root = doc.RootElement

        if l.EndsWith "item map" then
            root.GetProperty("namespaceHead").GetUInt64()
        elif l.StartsWith "http GET item" then
            root.GetProperty("version").GetUInt64()
        elif l.StartsWith "http GET batch" then
            root.GetProperty("items").EnumerateArray() |> Seq.sumBy (fun i -> i.GetProperty("version").GetUInt64())
        else
            root.GetProperty("namespaces").EnumerateArray()
            |> Seq.sumBy (fun n -> n.GetProperty("namespaceHead").GetUInt64())

    override _.SendAsync(request, ct) =
        let path = request.RequestUri.AbsolutePath
        let body = if isNull request.Content then null else request.Content.ReadAsStringAsync(ct).Result
        let l = label request body
        // Batch GETs of different item sets share a path: older answers are kept per item set.
        let key = if l.StartsWith "http GET batch" then $"{world.RunId}|{d.Label}|{l}" else $"{world.RunId}|{d.Label}|{path}"
        let kinds =
            if isRead request l then [ Fail; LoseResponse; CrashBefore; CrashAfter; FakeRollback ]
            else [ Fail; LoseResponse; CrashBefore; CrashAfter ]

        let forward () =
            let response = invoker.SendAsync(request, ct).Result
            let text = response.Content.ReadAsStringAsync().Result

            if response.StatusCode = HttpStatusCode.OK && isRead request l then
                let list = answered.GetOrAdd(key, fun _ -> List())
                lock list (fun () -> list.Add((reported l text, text)))

                if l.EndsWith "item map" then
                    world.MapSeen(d.Index, text)

            if response.StatusCode = HttpStatusCode.OK && l.StartsWith "http PUT item" then
                world.Accepted(d.App, d.Label, path, body, text)

            if response.StatusCode = HttpStatusCode.OK && l.StartsWith "http PUT batch" then
                world.AcceptedBatch(d.App, d.Label, body, text)

            let copy =
                new HttpResponseMessage(
                    response.StatusCode,
                    Content = new StringContent(text, Text.Encoding.UTF8, "application/json")
                )

            for h in response.Headers do
                copy.Headers.TryAddWithoutValidation(h.Key, h.Value) |> ignore

            copy

        Task.FromResult(
            effect world d inc l kinds (fun action ->
                match action with
                | Fail -> raise (HttpRequestException "simulated connection failure")
                | FakeRollback ->
                    let least = floor l path body

                    let older =
                        match answered.TryGetValue key with
                        | true, earlier -> lock earlier (fun () -> earlier |> Seq.tryFind (fun (v, _) -> v < least))
                        | _ -> None

                    match older with
                    | Some(v, json) ->
                        world.RollbackFaked <- true
                        world.Log $"  {d.Label} {l}: the server answers an older state ({v} < {least})"

                        new HttpResponseMessage(
                            HttpStatusCode.OK,
                            Content = new StringContent(json, Text.Encoding.UTF8, "application/json")
                        )
                    | None -> forward ()
                | LoseResponse ->
                    (forward ()).Dispose()
                    raise (HttpRequestException "simulated lost response")
                | _ -> forward ())
        )

// ---------------------------------------------------------------------------------------------
// Devices

let private keyIdOf (d: Device) =
    (BitBoxSync.Protocol.DummyKeystore.Derive d.Identity).KeyId.Wire

/// A resolving merge (the larger value wins: commutative, so devices converge), recording the
/// local values it resolved; or no merge at all (every collision is a recorded conflict).
let private mergeFor (world: World) (resolving: bool) (d: Device) : MergeFunction<string> =
    MergeFunction<string>(fun input ->
        if resolving then
            lock d.App (fun () ->
                d.App.Merged.Add input.Local |> ignore

                match world.VersionOf(input.Key, input.Remote) with
                | Some v -> d.App.PendingMerge[input.Key] <- v
                | None -> ())

            MergeResult<string>.Resolved(
                if String.CompareOrdinal(input.Local, input.Remote) >= 0 then input.Local else input.Remote
            )
        else
            MergeResult<string>.Unresolved)

/// The persisted namespace row and item rows of a device (what survives a crash).
let private persisted (world: World) (d: Device) =
    let store = d.Store :> IStore
    let keyId = keyIdOf d

    let ns =
        if world.NamespaceId = "" then
            None
        else
            store.GetNamespaceAsync(keyId, world.NamespaceId).AsTask().Result |> Option.ofObj

    let items =
        match ns with
        | Some n -> store.ListNamespaceItemsAsync(keyId, n.NamespaceId).AsTask().Result |> List.ofSeq
        | None -> []

    ns, items

/// Opens (or reopens after a crash) a device's engine behind the seams; never faulted itself.
let private openEngine (world: World) (d: Device) (incarnations: int) =
    let inc = Incarnation()
    d.Incarnation <- inc
    let _, testServer = hosted.Force()

    let floor (l: string) (path: string) (body: string) =
        let ns, items = persisted world d
        let head = ns |> Option.map (fun n -> n.Head) |> Option.defaultValue 0UL

        let itemFloor itemId =
            let row = items |> List.tryFind (fun i -> i.ItemId = itemId) |> Option.map (fun i -> i.Version)
            max (defaultArg row 0UL) (world.MapVersion(d.Index, itemId))

        if l.StartsWith "http GET item" && not (l.EndsWith "item map") then
            itemFloor (path.Split('/') |> Array.last)
        elif l.StartsWith "http GET batch" then
            // An older answer is one where some item is below what this device already holds.
            use doc = Text.Json.JsonDocument.Parse body
            doc.RootElement.GetProperty("itemIds").EnumerateArray() |> Seq.sumBy (fun i -> itemFloor (i.GetString()))
        else
            head

    let handler = new SimHttp(world, d, inc, testServer.CreateHandler(), floor)
    let client = new SyncClient(Uri("http://localhost/"), new HttpClient(handler))
    // Seeded per run (the run ID keeps namespace IDs unique on the shared server; no decision of
    // the scheduler depends on them: effects are labelled by logical keys).
    let rng = System.Random(stableHash $"{world.RunId}|{d.Index}|{incarnations}")

    let options =
        SyncEngineOptions(
            Client = client,
            Identity = BitBoxSync.DummyKeystore.FromLabel d.Identity,
            Store = new SimStore(world, d, inc)
        )

    options.Clock <- clock

    options.RandomBytes <-
        Func<int, byte[]>(fun n ->
            let b = Array.zeroCreate n
            lock rng (fun () -> rng.NextBytes b)
            b)

    options.RandomSample <- Func<double>(fun () -> lock rng (fun () -> rng.NextDouble()))
    // Half the devices use the batch-items extension, the others single-item requests (by seed and
    // device, so a replay takes the same paths): both executors run under every fault, side by side.
    options.UseBatchItems <-
        (match world.Mode with
         | Random seed -> seed + d.Index
         | _ -> d.Index) % 2 = 0

    let calm = world.Calm
    world.Calm <- true

    try
        SyncEngine.OpenAsync(options).GetAwaiter().GetResult(), client
    finally
        world.Calm <- calm

/// Opens a device and its collection in the run's namespace (the default one when none is set yet).
let private openDevice (world: World) (resolving: bool) (d: Device) (incarnations: int) =
    let engine, client = openEngine world d incarnations
    let inc = d.Incarnation
    world.Calm <- true

    try
        let ns =
            if world.NamespaceId = "" then
                let ns = engine.DefaultNamespaceAsync().GetAwaiter().GetResult()
                world.NamespaceId <- ns.Id
                ns
            else
                engine.NamespaceAsync(world.NamespaceId).GetAwaiter().GetResult()

        ns.OpenCollection(
            collection,
            CollectionOptions<string>(
                Codec = Codecs.String,
                Merge = mergeFor world resolving d,
                Backend = SimBackend(world, d, inc)
            )
        )
        |> ignore

        d.Engine <- engine
        d.Client <- client
    finally
        world.Calm <- false

let private closeDevice (d: Device) =
    if not (isNull (box d.Engine)) then
        (try
            d.Engine.DisposeAsync().AsTask().GetAwaiter().GetResult()
         with _ ->
             ())

    if not (isNull (box d.Client)) then
        d.Client.Dispose()

// ---------------------------------------------------------------------------------------------
// Invariants

exception Violation of string

let private fail (message: string) = raise (Violation message)

/// Row versions and heads never move backwards (per device, across crashes).
let private checkMonotone (world: World) (devices: Device[]) (seen: Dictionary<string, uint64>) =
    for d in devices do
        let ns, items = persisted world d

        let check (name: string) (value: uint64) =
            match seen.TryGetValue name with
            | true, before when value < before -> fail $"{name} moved backwards: {before} → {value}"
            | _ -> seen[name] <- value

        ns |> Option.iter (fun n -> check $"{d.Label} head" n.Head)

        for i in items do
            check $"{d.Label}/{i.Key} version" i.Version

/// A clean row's base is the server's value at its version; the app's value is that value, a newer
/// server value, or an app write made after the row was saved clean.
let private checkClean (world: World) (devices: Device[]) =
    for d in devices do
        let _, items = persisted world d

        for row in items do
            if not row.Dirty && not row.Conflict && row.Version > 0UL then
                let versions =
                    match world.History.TryGetValue row.Key with
                    | true, v -> v
                    | _ -> fail $"{d.Label}/{row.Key} is clean at v{row.Version} but the server has no such item"

                let atVersion =
                    match versions.TryGetValue row.Version with
                    | true, v -> v
                    | _ -> fail $"{d.Label}/{row.Key} is clean at v{row.Version}, which the server never accepted"

                let baseText =
                    if isNull row.BaseValue then "<none>" else Codecs.String.Decode(ReadOnlySpan row.BaseValue)

                if baseText <> atVersion then
                    fail $"{d.Label}/{row.Key} is clean at v{row.Version} with base {baseText}, the server's value is {atVersion}"

                ()

let private checkLostUpdates (world: World) =
    lock world.LostUpdates (fun () ->
        if world.LostUpdates.Count > 0 then
            fail world.LostUpdates[0])

/// At quiescence: converged values, no dirty rows outside conflicts, no lost app write.
let private checkConverged (world: World) (devices: Device[]) =
    for d in devices do
        let _, items = persisted world d

        for key in keyNames do
            let row = items |> List.tryFind (fun r -> r.Key = key)
            let latest = world.Latest key
            let conflict = row |> Option.exists (fun r -> r.Conflict)

            lock d.App (fun () ->
                let app =
                    match d.App.Values.TryGetValue key with
                    | true, v -> Some v
                    | _ -> None

                if conflict then
                    let remote =
                        row
                        |> Option.bind (fun r -> Option.ofObj r.ConflictRemoteValue)
                        |> Option.map (fun b -> Codecs.String.Decode(ReadOnlySpan b))

                    if remote <> latest then
                        fail $"{d.Label}/{key}: the conflict holds {remote}, the server has {latest}"
                elif app <> latest then
                    fail $"{d.Label}/{key} = {app} but the server has {latest} (not converged)"
                elif row |> Option.exists (fun r -> r.Dirty) then
                    fail $"{d.Label}/{key} is still dirty at quiescence"

                match d.App.LastWrites.TryGetValue key with
                | true, w ->
                    let uploaded =
                        match world.History.TryGetValue key with
                        | true, versions -> versions.Values |> Seq.contains w
                        | _ -> false

                    if not (uploaded || d.App.Merged.Contains w || (conflict && app = Some w)) then
                        fail $"{d.Label}'s write {key}={w} was lost: never uploaded, never merged, not in a conflict"
                | _ -> ())

// ---------------------------------------------------------------------------------------------
// Running

/// The outcome of one run.
type Outcome =
    {
        Violation: string option
        Trace: string list
        Boundaries: string list
        Injected: bool
    }

let private runCounter = ref 0

/// Runs steps on `deviceCount` devices of one identity, checking the invariants after every step,
/// then lets every device sync without faults until quiet and checks convergence.
let runWith (shared: bool) (mode: Mode) (resolving: bool) (deviceCount: int) (steps: Step list) : Outcome =
    let runId = $"r{Interlocked.Increment(&runCounter.contents)}-{Guid.NewGuid():N}"
    let world = World(mode, runId, deviceCount)

    let devices =
        Array.init deviceCount (fun i ->
            {
                Index = i
                Label = if shared && i = deviceCount - 1 then $"device{i} (bob)" else $"device{i}"
                Identity = if shared && i = deviceCount - 1 then $"{runId}-bob" else $"{runId}-alice"
                App = AppValues()
                Store = new MemoryStore()
                Incarnation = Incarnation()
                Engine = Unchecked.defaultof<_>
                Client = Unchecked.defaultof<_>
            })

    let incarnations = Array.zeroCreate deviceCount

    let reopen (d: Device) =
        closeDevice d
        incarnations[d.Index] <- incarnations[d.Index] + 1
        openDevice world resolving d incarnations[d.Index]

    world.KeysOf <-
        fun () ->
            devices
            |> Array.tryPick (fun d ->
                match persisted world d with
                | Some n, _ when not (isNull n.Dek) ->
                    Some(
                        Bin.parse<NamespaceIdKind> n.NamespaceId |> Result.defaultWith (fun e -> failwith e.Message),
                        NamespaceKeys.derive (Bin.ofBytes<DekKind> n.Dek |> Result.defaultWith (fun e -> failwith e.Message))
                    )
                | _ -> None)

    let seen = Dictionary<string, uint64>()

    let pass (d: Device) (expectComplete: bool) =
        world.RollbackFaked <- false
        clock.Advance(TimeSpan.FromSeconds 1.0)

        let outcome =
            try
                d.Engine.SyncNowAsync().GetAwaiter().GetResult()
                None
            with e ->
                Some e

        match outcome with
        | Some e -> world.Log $"  {d.Label} pass failed: {e.GetType().Name}: {e.Message}"
        | None -> ()

        if world.RollbackFaked then
            match outcome with
            | Some(:? RollbackDetectedException) -> ()
            | Some _ when world.FaultsInStep > 1 -> () // another fault ended the pass first
            | Some e -> fail $"the server faked a rollback; the pass failed with {e.GetType().Name} instead: {e.Message}"
            | None -> fail "the server faked a rollback and the pass did not detect it"

        if d.Incarnation.Dead then
            world.Log $"  {d.Label} restarts after the crash"
            reopen d
        elif outcome.IsNone && world.FaultsInStep = 0 && d.Engine.QuarantinedItems.Count = 0 then
            let ns, _ = persisted world d
            let head = ns |> Option.map (fun n -> n.Head) |> Option.defaultValue 0UL

            if head <> world.ServerHead then
                fail $"{d.Label} completed a pass with the cached head {head}, the server's is {world.ServerHead}"
        elif expectComplete then
            fail $"a pass without faults failed: {outcome.Value.Message}"

    try
        try
            world.Calm <- true

            if shared then
                // Alice creates a shared namespace and invites Bob; Bob's join request is verified
                // and approved; every device then syncs the collection in it.
                let alice, aliceClient = openEngine world devices[0] 0
                let bob, bobClient = openEngine world devices[deviceCount - 1] 0
                let sharedNs = alice.CreateSharedNamespaceAsync().GetAwaiter().GetResult()
                world.NamespaceId <- sharedNs.Id

                let invite =
                    sharedNs.CreateInviteAsync(InviteOptions(ServerOrigin = origin)).GetAwaiter().GetResult()

                bob.SubmitJoinRequestAsync(invite).GetAwaiter().GetResult() |> ignore
                let entry = sharedNs.JoinRequestsAsync().GetAwaiter().GetResult() |> Seq.exactlyOne
                sharedNs.ApproveJoinRequestAsync(invite, entry).GetAwaiter().GetResult()
                bob.JoinNamespaceAsync(sharedNs.Id).GetAwaiter().GetResult() |> ignore

                for engine in [ alice; bob ] do
                    engine.DisposeAsync().AsTask().GetAwaiter().GetResult()

                aliceClient.Dispose()
                bobClient.Dispose()

            for d in devices do
                openDevice world resolving d 0

            world.Calm <- false

            steps
            |> List.iteri (fun i step ->
                world.Step <- i + 1

                match step with
                | AppWrite(d, key, value) ->
                    world.Log $"step {i + 1}: {devices[d].Label} app writes {key}={value}"
                    appWrite world devices[d] key value
                | Restart d ->
                    world.Log $"step {i + 1}: {devices[d].Label} restarts"
                    reopen devices[d]
                | Pass d ->
                    world.Log $"step {i + 1}: {devices[d].Label} syncs"
                    pass devices[d] false
                | PassWith(d, label, action) ->
                    world.Log $"step {i + 1}: {devices[d].Label} syncs ({action} at {label})"
                    world.Forced <- Some(label, action)
                    pass devices[d] false
                    world.Forced <- None

                checkMonotone world devices seen
                checkClean world devices
                checkLostUpdates world)

            // Quiet period: every device syncs without faults until nothing changes.
            world.Step <- 0
            world.Calm <- true
            world.Log "(then every device syncs until quiet)"
            let mutable rounds = 0
            let mutable changed = true

            while changed && rounds < 6 do
                rounds <- rounds + 1
                let before = world.Effects

                for d in devices do
                    pass d true

                checkMonotone world devices seen
                checkClean world devices
                checkLostUpdates world
                changed <- world.Effects <> before

            if changed then
                fail "devices still write after six quiet rounds"

            checkConverged world devices

            { Violation = None; Trace = List.ofSeq world.Trace; Boundaries = List.ofSeq world.Boundaries; Injected = world.Injected }
        with
        | Violation message ->
            { Violation = Some message; Trace = List.ofSeq world.Trace; Boundaries = List.ofSeq world.Boundaries; Injected = world.Injected }
    finally
        for d in devices do
            closeDevice d

/// A run on devices of one identity syncing its default namespace.
let run mode resolving deviceCount steps = runWith false mode resolving deviceCount steps

/// The steps a seed generates.
let schedule (seed: int) (deviceCount: int) (count: int) : Step list =
    let rng = System.Random(seed)

    [
        for _ in 1..count ->
            let d = rng.Next deviceCount

            match rng.Next 10 with
            | 0
            | 1
            | 2
            | 3 -> AppWrite(d, keyNames[rng.Next keyNames.Length], string (char (int 'a' + rng.Next 6)))
            | 4 -> Restart d
            | _ -> Pass d
    ]

/// Drops steps one at a time while the run still fails, until no single step can be dropped.
let shrink (shared: bool) (mode: Mode) (resolving: bool) (deviceCount: int) (steps: Step list) : Step list =
    let fails s =
        (runWith shared mode resolving deviceCount s).Violation.IsSome

    let rec sweep (kept: Step list) i =
        if i >= kept.Length then
            kept
        else
            let candidate = List.removeAt i kept
            if fails candidate then sweep candidate i else sweep kept (i + 1)

    let rec fixpoint s =
        let next = sweep s 0
        if next.Length = s.Length then s else fixpoint next

    fixpoint steps

/// The seed given on the command line (`--shell-seed N`), if any.
let mutable replaySeed: int option = None

/// Soak mode: `BITBOXSYNC_SHELL_SEEDS=N` runs seeds 1…N in each random test (CI runs 150 and 60).
let private soakSeeds =
    match Environment.GetEnvironmentVariable "BITBOXSYNC_SHELL_SEEDS" with
    | null
    | "" -> None
    | text -> Some(int text)

/// The systematic scenario: creation, download, a collision resolved by the merge, a lost upload
/// answer followed by the 412 path, a conflicting write racing a download. Its baseline run
/// enumerates the effect boundaries; each is then crashed before and after, once.
let scenario =
    [
        AppWrite(0, "k1", "a")
        AppWrite(0, "k2", "b")
        Pass 0
        Pass 1
        AppWrite(0, "k1", "c")
        AppWrite(1, "k1", "d")
        Pass 0
        Pass 1
        AppWrite(1, "k2", "e")
        Pass 1
        AppWrite(0, "k2", "f")
        Pass 0
        Pass 1
        AppWrite(1, "k1", "g")
        PassWith(1, "http PUT item k1", LoseResponse)
        AppWrite(1, "k1", "h")
        Pass 1
        Pass 0
    ]

let private failure (what: string) (o: Outcome) (replay: string) =
    failtestf "%s (%s): %s\n  %s" what replay o.Violation.Value (String.Join("\n  ", o.Trace))

let tests =
    testList
        "shell simulation (the real engine, every effect under the scheduler)"
        [
            for shared, resolving, name in
                [
                    false, true, "resolving merge"
                    false, false, "no merge (conflicts)"
                    true, true, "two identities in a shared namespace, resolving merge"
                ] do
                for deviceCount in [ 2; 3 ] do
                    test $"{deviceCount} devices, {name}: random faults at every effect keep every invariant" {
                        let seeds =
                            match replaySeed, soakSeeds with
                            | Some s, _ -> [ s ]
                            | None, Some n -> [ 1..n ]
                            | None, None -> [ 1..(if shared then 40 elif deviceCount = 2 then 150 else 60) ]

                        for seed in seeds do
                            let steps = schedule seed deviceCount 24
                            let outcome = runWith shared (Random seed) resolving deviceCount steps

                            if outcome.Violation.IsSome then
                                let shrunk = shrink shared (Random seed) resolving deviceCount steps
                                let again = runWith shared (Random seed) resolving deviceCount shrunk
                                let shown = if again.Violation.IsSome then again else outcome

                                failure
                                    $"seed {seed}"
                                    shown
                                    $"replay: dotnet run --project tests/BitBoxSync.Engine.Tests -- --shell-seed {seed} --filter-test-list \"shell simulation\""
                    }

            test "every effect boundary of the scenario crashed before and after, once each" {
                let baseline = run Quiet true 2 scenario

                if baseline.Violation.IsSome then
                    failure "baseline" baseline "the scenario without faults"

                let points = List<int * string>()
                let labels = baseline.Boundaries |> List.sort
                let mutable crashed = 0
                let hit = HashSet<string>()

                for step in 1 .. scenario.Length do
                    for label in labels do
                        for action in [ CrashBefore; CrashAfter ] do
                            let o = run (Only(step, label, action)) true 2 scenario

                            if o.Injected then
                                crashed <- crashed + 1
                                hit.Add label |> ignore
                                points.Add((step, label))

                            if o.Violation.IsSome then
                                failure $"{action} at step {step}, {label}" o "systematic crash point"

                let missed = labels |> List.filter (hit.Contains >> not)
                printfn "shell simulation: %d effect boundaries, %d crash points exercised" labels.Length crashed
                let missedText = String.Join(", ", missed)
                Expect.isEmpty missed $"every boundary was crashed at least once (missed: {missedText})"
                printfn "  boundaries: %s" (String.Join(", ", labels))
                Expect.isGreaterThan labels.Length 8 "the scenario has HTTP, store and backend boundaries"
            }
        ]
