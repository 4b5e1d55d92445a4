/// Compare-and-set under real concurrency (one server, and two servers on one PostgreSQL
/// database) and the long-poll watch: woken promptly by a commit, across processes too.
module BitBoxSync.Server.Tests.ConcurrencyTests

open System
open System.Collections.Concurrent
open System.Diagnostics
open System.Threading.Tasks
open Expecto
open BitBoxSync
open BitBoxSync.Protocol
open BitBoxSync.Protocol.Wire
open BitBoxSync.Server.Tests.Harness
open BitBoxSync.Server.Tests.Flows

/// Racers that read the item and try to write the next version, retrying on 412, until each
/// has `wins` accepted writes. Returns every accepted version.
let private race
    (clients: SyncClient list)
    (token: string)
    (ns: Ns)
    (key: string)
    (racers: int)
    (wins: int)
    =
    let item = itemId ns key
    let accepted = ConcurrentBag<uint64 * string>()
    let mutable conflicts = 0

    let racer (i: int) =
        task {
            let client = clients[i % clients.Length]
            let mutable won = 0
            let mutable attempts = 0

            while won < wins do
                attempts <- attempts + 1

                if attempts > 2000 then
                    failwith "racer made no progress"

                let! current =
                    task {
                        try
                            let! r = client.GetItemAsync(token, ns.Id.Wire, item.Wire)
                            return Some r.Version
                        with :? SyncApiException as e when e.StatusCode = 404 ->
                            return None
                    }

                let target = (current |> Option.defaultValue 0UL) + 1UL
                let text = $"racer {i} write {won}"

                try
                    let! r =
                        client.PutItemAsync(
                            token,
                            ns.Id.Wire,
                            item.Wire,
                            sealFor ns item target text,
                            Option.toNullable current
                        )

                    accepted.Add((r.Version, text))
                    won <- won + 1
                with :? SyncApiException as e when e.StatusCode = 412 ->
                    Threading.Interlocked.Increment(&conflicts) |> ignore
        }

    Task.WhenAll([ for i in 0 .. racers - 1 -> racer i :> Task ]) |> awaitUnit
    accepted |> List.ofSeq, conflicts

let private checkRace (primary: TestServer) (others: Uri list) =
    let alice = login primary "alice"
    let ns = createShared alice

    let clients =
        [ for address in primary.BaseAddress :: others -> new SyncClient(address) ]

    let heads = ConcurrentQueue<uint64>()
    let stop = new Threading.CancellationTokenSource()

    // An observer polls the head during the race: it must never go down.
    let observer =
        task {
            while not stop.IsCancellationRequested do
                let! map =
                    clients[clients.Length - 1].GetNamespaceItemsAsync(alice.Token, ns.Id.Wire)

                heads.Enqueue map.NamespaceHead
                do! Task.Delay 5
        }

    let accepted, conflicts = race clients alice.Token ns "contended" 12 4
    stop.Cancel()
    observer.GetAwaiter().GetResult()
    let versions = accepted |> List.map fst |> List.sort
    Expect.equal versions [ 1UL .. uint64 (12 * 4) ] "exactly one winner per version, no gaps"
    Expect.isGreaterThan conflicts 0 "the racers did collide"
    let observed = heads |> List.ofSeq
    Expect.equal observed (List.sort observed) "heads never decrease"
    let map = alice.Client.GetNamespaceItemsAsync(alice.Token, ns.Id.Wire) |> await
    Expect.equal map.NamespaceHead 48UL "one head step per accepted write"
    let lastText = accepted |> List.maxBy fst |> snd

    Expect.equal
        (read alice ns "contended")
        (48UL, lastText)
        "the last accepted write is what is stored"

    // Writers on distinct items: every create accepted, the head counts them all.
    let creates =
        [
            for i in 0..7 ->
                task {
                    for k in 0..9 do
                        let key = $"w{i}-{k}"
                        let item = itemId ns key

                        let! _ =
                            clients[i % clients.Length]
                                .PutItemAsync(
                                    alice.Token,
                                    ns.Id.Wire,
                                    item.Wire,
                                    sealFor ns item 1UL key,
                                    Nullable()
                                )

                        ()
                }
                :> Task
        ]

    Task.WhenAll creates |> awaitUnit
    let map = alice.Client.GetNamespaceItemsAsync(alice.Token, ns.Id.Wire) |> await
    Expect.equal (map.NamespaceHead, map.Items.Count) (128UL, 81) "80 creates after 48 updates"

    for c in clients do
        c.Dispose()

/// A write through `writer` wakes bob's watcher parked on the server at `watcherAddress`.
let private watchWakes (writer: TestServer) (watcherAddress: Uri) (parkedWatchers: unit -> int) =
    // The watcher is parked before the write.
    let alice, ns, watcherClient, watch = parkedWatch writer watcherAddress parkedWatchers
    use _ = watcherClient
    let written = Stopwatch.StartNew()
    put alice ns "note" None "wake up" |> ignore
    let answer = watch |> await
    let latency = written.Elapsed
    Expect.isFalse answer.TimedOut "woken by the write, not by the timeout"

    Expect.equal
        (answer.Namespaces |> Array.map (fun n -> n.NamespaceId, n.NamespaceHead))
        [| ns.Id.Wire, 1UL |]
        "the changed namespace"

    Expect.isLessThan latency (TimeSpan.FromSeconds 5.0) "promptly (the watch timeout is 20 s)"

let private watchTimesOut backend =
    test $"watch: the timeout answers timedOut with an empty list ({backend})" {
        use server =
            startOn
                (Database.Create backend)
                (ManualClock DateTimeOffset.UtcNow)
                (TimeSpan.FromSeconds 1.0)

        let alice = login server "alice"
        let ns, _ = ensureDefault alice
        let known = Collections.Generic.Dictionary<string, uint64>()
        known[ns.Id.Wire] <- 0UL
        let sw = Stopwatch.StartNew()

        let answer =
            alice.Client.WatchNamespacesAsync(alice.Token, { KnownHeads = known }) |> await

        Expect.isTrue answer.TimedOut "timed out"
        Expect.isEmpty answer.Namespaces "nothing changed"

        Expect.isGreaterThanOrEqual
            sw.Elapsed
            (TimeSpan.FromSeconds 0.85)
            "waited (90-100 % of the timeout)"

        Expect.equal server.Server.ParkedWatchers 0 "the waiter is gone"
        let stale = Collections.Generic.Dictionary<string, uint64>(known)
        stale[String('f', 32)] <- 3UL

        let answer =
            alice.Client.WatchNamespacesAsync(alice.Token, { KnownHeads = stale }) |> await

        Expect.isTrue
            answer.TimedOut
            "an invisible namespace in knownHeads is ignored, not an error"
    }

let private watchSeesNewMembership backend =
    test $"watch: an approval wakes the new member's watcher ({backend})" {
        use server =
            startOn
                (Database.Create backend)
                (ManualClock DateTimeOffset.UtcNow)
                (TimeSpan.FromSeconds 20.0)

        let alice = login server "alice"
        let bob = login server "bob"
        let ns = createShared alice
        let invite = createInvite alice ns
        let hash = (submit bob invite).JoinRequestHash

        let watch =
            bob.Client.WatchNamespacesAsync(
                bob.Token,
                { KnownHeads = Collections.Generic.Dictionary() }
            )

        let sw = Stopwatch.StartNew()

        while server.Server.ParkedWatchers = 0 && sw.Elapsed < TimeSpan.FromSeconds 5.0 do
            Threading.Thread.Sleep 10

        approve alice invite bob hash |> ignore
        let answer = watch |> await

        Expect.equal
            (answer.TimedOut, answer.Namespaces |> Array.map (fun n -> n.NamespaceId))
            (false, [| ns.Id.Wire |])
            "the new namespace"
    }

let private shutdownAnswersWatchers backend =
    test $"graceful stop: a parked watcher is answered, not dropped ({backend})" {
        let server =
            startOn
                (Database.Create backend)
                (ManualClock DateTimeOffset.UtcNow)
                (TimeSpan.FromSeconds 30.0)

        let alice = login server "alice"
        let ns, _ = ensureDefault alice
        let known = Collections.Generic.Dictionary<string, uint64>()
        known[ns.Id.Wire] <- 0UL
        let watch = alice.Client.WatchNamespacesAsync(alice.Token, { KnownHeads = known })
        let sw = Stopwatch.StartNew()

        while server.Server.ParkedWatchers = 0 && sw.Elapsed < TimeSpan.FromSeconds 5.0 do
            Threading.Thread.Sleep 10

        let stopping = server.Server.StopAsync()
        let answer = watch |> await
        stopping |> awaitUnit
        Expect.isTrue answer.TimedOut "answered as a timeout: the client reconnects"

        Expect.isLessThan
            sw.Elapsed
            (TimeSpan.FromSeconds 10.0)
            "at once, not after the 30 s watch timeout"

        (server :> IDisposable).Dispose()
    }

let tests =
    testList
        "concurrency"
        [
            for backend in backends do
                test $"CAS race: one winner per version, heads increase, nothing lost ({backend})" {
                    use server = start backend
                    checkRace server []
                }

                test $"watch: a write wakes a parked watcher promptly ({backend})" {
                    use server =
                        startOn
                            (Database.Create backend)
                            (ManualClock DateTimeOffset.UtcNow)
                            (TimeSpan.FromSeconds 20.0)

                    watchWakes server server.BaseAddress (fun () -> server.Server.ParkedWatchers)
                }

                watchTimesOut backend
                watchSeesNewMembership backend
                shutdownAnswersWatchers backend

            if postgresAdmin.IsSome then
                test "CAS race across two server processes on one PostgreSQL database" {
                    let db = Database.Create Postgres

                    use a =
                        startOn db (ManualClock DateTimeOffset.UtcNow) (TimeSpan.FromSeconds 20.0)

                    use b = new ServerProcess(db, TimeSpan.FromSeconds 20.0)
                    checkRace a [ b.BaseAddress ]
                }

                test
                    "watch: a write in one server process wakes a watcher in another (LISTEN/NOTIFY)" {
                    let db = Database.Create Postgres

                    use a =
                        startOn db (ManualClock DateTimeOffset.UtcNow) (TimeSpan.FromSeconds 20.0)

                    use b = new ServerProcess(db, TimeSpan.FromSeconds 20.0)
                    // The other process's hub is out of reach: give the watch request time to park.
                    let started = Stopwatch.StartNew()

                    watchWakes a b.BaseAddress (fun () ->
                        if started.ElapsedMilliseconds > 500L then 1 else 0)
                }
        ]
