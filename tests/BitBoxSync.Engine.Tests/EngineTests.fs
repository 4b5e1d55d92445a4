/// The engine end to end on real parts: engines with real stores against a real server on
/// 127.0.0.1 (SQLite, and PostgreSQL when the test command started one).
module BitBoxSync.Engine.Tests.EngineTests

open System
open System.Collections.Generic
open System.Threading.Tasks
open Expecto
open BitBoxSync
open BitBoxSync.Storage
open BitBoxSync.Storage.Sqlite
open BitBoxSync.Server.Tests.Harness

/// One device: an engine over a store, with one string collection "notes" in the default namespace.
type Device =
    {
        Engine: SyncEngine
        Notes: MemoryValueBackend<string>
        Collection: Collection<string>
        Events: List<SyncEvent>
        Client: SyncClient
    }

    member d.Write(key: string, value: string) =
        d.Notes.SetAsync(key, value, Threading.CancellationToken.None).AsTask()
        |> awaitUnit

    member d.Read(key: string) =
        let v = d.Notes.GetAsync(key, Threading.CancellationToken.None).AsTask() |> await
        if v.Found then Some v.Value else None

    member d.Sync() = d.Engine.SyncNowAsync() |> awaitUnit

    /// Events so far (drained from the engine's channel).
    member d.Seen() =
        let mutable e = Unchecked.defaultof<SyncEvent>

        while d.Engine.Events.TryRead(&e) do
            d.Events.Add e

        List.ofSeq d.Events

    interface IDisposable with
        member d.Dispose() =
            d.Engine.DisposeAsync().AsTask() |> awaitUnit
            d.Client.Dispose()

let keys = [ "a"; "b"; "c" ]

/// Opens an engine for an identity label (dummy keystore) through a client, on a store.
let openWith (client: SyncClient) (label: string) (store: IStore) =
    SyncEngine.OpenAsync(
        SyncEngineOptions(
            Client = client,
            Identity = BitBoxSync.DummyKeystore.FromLabel label,
            Store = store
        )
    )
    |> await
    |> withEvents

/// Opens a device with extra engine options.
let deviceWith
    (server: TestServer)
    (label: string)
    (store: IStore)
    (merge: MergeFunction<string>)
    (configure: SyncEngineOptions -> unit)
    : Device =
    let client = new SyncClient(server.BaseAddress)

    let options =
        SyncEngineOptions(
            Client = client,
            Identity = BitBoxSync.DummyKeystore.FromLabel label,
            Store = store
        )

    configure options
    let engine = SyncEngine.OpenAsync options |> await |> withEvents

    let ns = engine.DefaultNamespaceAsync() |> await
    let notes = MemoryValueBackend<string>(Codecs.String, null, keys)

    let collection =
        ns.OpenCollection(
            "notes",
            CollectionOptions<string>(Codec = Codecs.String, Merge = merge, Backend = notes)
        )

    {
        Engine = engine
        Notes = notes
        Collection = collection
        Events = List()
        Client = client
    }

/// Opens a device for an identity label on a server, with its own store and backend.
let device
    (server: TestServer)
    (label: string)
    (store: IStore)
    (merge: MergeFunction<string>)
    : Device =
    deviceWith server label store merge ignore

let private types (d: Device) = d.Seen() |> List.map (fun e -> e.Type)

let private twoDevices backend =
    test $"two devices of one identity sync both ways through the server ({backend})" {
        use server = start backend
        use a = device server "alice" (new MemoryStore()) (Merges.NoMerge())
        use b = device server "alice" (new MemoryStore()) (Merges.NoMerge())
        a.Write("a", "from A")
        a.Sync()
        Expect.contains (types a) SyncEventType.ItemUploaded "uploaded"
        b.Sync()
        Expect.equal (b.Read "a") (Some "from A") "B downloaded A's value"
        Expect.contains (types b) SyncEventType.ItemDownloaded "downloaded event"
        b.Write("a", "edited on B")
        b.Write("b", "new on B")
        b.Sync()
        a.Sync()

        Expect.equal
            (a.Read "a", a.Read "b")
            (Some "edited on B", Some "new on B")
            "A got B's edit and B's new key"
        // A quiet pass writes nothing and uploads nothing.
        let head () =
            let ns = (a.Engine.DefaultNamespaceAsync() |> await).Id
            use probe = new SyncClient(server.BaseAddress)
            let id = BitBoxSync.DummyKeystore.FromLabel "alice"

            let t =
                probe.LoginAsync(BitBoxSync.Server.Tests.Flows.loginRequest probe id) |> await

            (probe.GetNamespaceItemsAsync(t.AccessToken, ns) |> await).NamespaceHead

        let before = head ()
        a.Sync()
        b.Sync()
        Expect.equal (head ()) before "no upload on quiet passes"
    }

let private conflicts backend =
    test
        $"concurrent edits: NoMerge records a conflict and keeps the local value; PreferLocal converges ({backend})" {
        use server = start backend
        use a = device server "alice" (new MemoryStore()) (Merges.NoMerge())
        use b = device server "alice" (new MemoryStore()) (Merges.NoMerge())
        a.Write("a", "v1")
        a.Sync()
        b.Sync()
        a.Write("a", "A's edit")
        b.Write("a", "B's edit")
        a.Sync()
        b.Sync()
        Expect.contains (types b) SyncEventType.ConflictDetected "conflict detected"
        Expect.equal (b.Read "a") (Some "B's edit") "the local value is kept in conflict"
        a.Sync()

        Expect.equal
            (a.Read "a")
            (Some "A's edit")
            "the server kept A's edit: a conflicted item is not uploaded"
    }

let private preferLocal backend =
    test
        $"concurrent creation without a base: PreferLocal resolves, the last writer wins everywhere ({backend})" {
        use server = start backend
        use a = device server "alice" (new MemoryStore()) (Merges.PreferLocal())
        use b = device server "alice" (new MemoryStore()) (Merges.PreferLocal())
        a.Write("c", "A created")
        b.Write("c", "B created")
        a.Sync()
        b.Sync() // 412 → fetch → merge (no base) → PreferLocal → upload B's value
        a.Sync()
        Expect.equal (a.Read "c", b.Read "c") (Some "B created", Some "B created") "converged"
    }

let private restartFromFile backend =
    test $"a device reopened from its SQLite file resumes without re-uploading ({backend})" {
        use server = start backend
        let path = StoreTests.tempFile ()

        do
            use a =
                device server "alice" (SqliteStore.OpenAsync path |> await) (Merges.NoMerge())

            a.Write("a", "persisted")
            a.Sync()

        use reopened =
            device server "alice" (SqliteStore.OpenAsync path |> await) (Merges.NoMerge())

        reopened.Write("a", "persisted")
        reopened.Sync()
        let seen = types reopened

        Expect.isFalse
            (List.contains SyncEventType.ItemUploaded seen)
            "nothing to upload: the base survived"

        Expect.isFalse (List.contains SyncEventType.ItemQueued seen) "and nothing was queued"
    }

let private resolveConflicts backend =
    test $"conflicts are listed with base, local and remote, and resolved three ways ({backend})" {
        use server = start backend
        use a = device server "alice" (new MemoryStore()) (Merges.NoMerge())
        use b = device server "alice" (new MemoryStore()) (Merges.NoMerge())

        for k in keys do
            a.Write(k, "base " + k)

        a.Sync()
        b.Sync()

        for k in keys do
            a.Write(k, "A " + k)
            b.Write(k, "B " + k)

        a.Sync()
        b.Sync()

        let listed =
            b.Collection.ConflictsAsync()
            |> await
            |> List.ofSeq
            |> List.sortBy (fun c -> c.Key)

        Expect.equal (listed |> List.map (fun c -> c.Key)) keys "every key in conflict"
        let first = listed.Head

        Expect.equal
            (first.HasBase, first.Base, first.Local.Value, first.Remote)
            (true, "base a", "B a", "A a")
            "base, local, remote"

        Expect.equal b.Engine.Status.Conflicts 3 "three conflicts in the status"
        b.Collection.TakeRemoteAsync "a" |> awaitUnit
        Expect.equal b.Engine.Status.Conflicts 2 "the status follows a resolution at once"
        b.Collection.KeepLocalAsync "b" |> awaitUnit
        b.Collection.ResolveWithValueAsync("c", "merged c") |> awaitUnit
        Expect.isEmpty (b.Collection.ConflictsAsync() |> await) "nothing left"
        Expect.equal (b.Read "a") (Some "A a") "remote taken"
        Expect.contains (types b) SyncEventType.ConflictResolved "resolution events"
        b.Sync()
        a.Sync()

        Expect.equal
            [ a.Read "a"; a.Read "b"; a.Read "c" ]
            [ Some "A a"; Some "B b"; Some "merged c" ]
            "A sees every resolution"

        Expect.throwsT<KeyNotFoundException>
            (fun () -> b.Collection.TakeRemoteAsync "unknown" |> awaitUnit)
            "no metadata"
    }

let private waitUntil (what: string) (timeout: TimeSpan) (condition: unit -> bool) =
    let sw = Diagnostics.Stopwatch.StartNew()

    while not (condition ()) && sw.Elapsed < timeout do
        Threading.Thread.Sleep 20

    if not (condition ()) then
        failtestf "%s: not within %O" what timeout

    sw.Elapsed

let private longPoll backend =
    test
        $"TestRunSyncsAfterNamespaceWatchChange: a remote write arrives through the watch long before the poll interval ({backend})" {
        use server =
            startOn
                (Database.Create backend)
                (ManualClock DateTimeOffset.UtcNow)
                (TimeSpan.FromSeconds 20.0)

        use a =
            deviceWith server "alice" (new MemoryStore()) (Merges.NoMerge()) (fun o ->
                o.PollInterval <- TimeSpan.FromMinutes 10.0)

        use b = device server "alice" (new MemoryStore()) (Merges.NoMerge())
        use stop = new Threading.CancellationTokenSource()
        let run = a.Engine.RunAsync stop.Token
        // Let the first pass and the watch start, then write on B.
        waitUntil "first pass" (TimeSpan.FromSeconds 10.0) (fun () ->
            types a |> List.contains SyncEventType.SyncFinished)
        |> ignore

        Threading.Thread.Sleep 300

        Expect.throwsT<InvalidOperationException>
            (fun () -> a.Engine.RunAsync() |> awaitUnit)
            "one RunAsync at a time"

        b.Write("a", "through the watch")
        b.Sync()

        let latency =
            waitUntil "watch delivery" (TimeSpan.FromSeconds 10.0) (fun () ->
                a.Read "a" = Some "through the watch")

        Expect.isLessThan latency (TimeSpan.FromSeconds 10.0) "well before the 10 minute poll"
        // ScheduleSync wakes the loop for an upload.
        a.Write("b", "scheduled")
        a.Engine.ScheduleSync()

        waitUntil "scheduled upload" (TimeSpan.FromSeconds 10.0) (fun () ->
            types a |> List.contains SyncEventType.ItemUploaded)
        |> ignore

        stop.Cancel()

        let ended =
            try
                run |> awaitUnit
                None
            with e ->
                Some e

        Expect.isTrue
            (ended |> Option.exists (fun e -> e :? OperationCanceledException))
            "RunAsync ends with a cancellation when cancelled"
    }

let private disposeStopsRun =
    test "disposing the engine ends RunAsync and completes the event stream" {
        use server = start Sqlite
        let a = device server "alice" (new MemoryStore()) (Merges.NoMerge())
        let run = a.Engine.RunAsync()
        Threading.Thread.Sleep 500
        a.Engine.DisposeAsync().AsTask() |> awaitUnit

        Expect.throwsT<SyncEngineClosedException>
            (fun () -> run.WaitAsync(TimeSpan.FromSeconds 10.0) |> awaitUnit)
            "closed"

        a.Seen() |> ignore // drain: a channel completes once completed and empty
        Expect.isTrue (a.Engine.Events.Completion.Wait(TimeSpan.FromSeconds 5.0)) "events completed"

        Expect.throwsT<SyncEngineClosedException>
            (fun () -> a.Engine.SyncNowAsync() |> awaitUnit)
            "no pass after dispose"

        a.Client.Dispose()
    }

let private sharing backend =
    test
        $"sharing: invite, join request, local verification, approval, both sync a shared collection ({backend})" {
        use server = start backend
        use alice = device server "alice" (new MemoryStore()) (Merges.NoMerge())
        use bob = device server "bob" (new MemoryStore()) (Merges.NoMerge())
        let shared = alice.Engine.CreateSharedNamespaceAsync() |> await
        let aliceNotes = MemoryValueBackend<string>(Codecs.String, null, keys)

        shared.OpenCollection(
            "shared-notes",
            CollectionOptions<string>(Codec = Codecs.String, Backend = aliceNotes)
        )
        |> ignore

        let defaultNs = alice.Engine.DefaultNamespaceAsync() |> await

        Expect.throwsT<SyncException>
            (fun () ->
                defaultNs.CreateInviteAsync(InviteOptions(ServerOrigin = origin))
                |> await
                |> ignore)
            "no invites into a default namespace"

        Expect.throwsT<ArgumentException>
            (fun () ->
                shared.CreateInviteAsync(
                    InviteOptions(ServerOrigin = origin, Ttl = TimeSpan.FromHours 2.0)
                )
                |> await
                |> ignore)
            "ttl above 1 hour"

        let invite =
            shared.CreateInviteAsync(InviteOptions(ServerOrigin = origin, MaxAccepted = 2))
            |> await

        let scanned = InviteUri.Parse(InviteUri.Format invite)
        Expect.equal scanned invite "the URI round-trips"
        let submitted = bob.Engine.SubmitJoinRequestAsync scanned |> await
        Expect.equal submitted.Status "pending" "pending"
        let entry = (shared.JoinRequestsAsync() |> await) |> Seq.exactlyOne

        // A tampered entry (another wrap key) is refused locally; nothing is sent.
        let tampered: Protocol.Wire.NamespaceJoinRequestEntry =
            { entry with
                JoinRequest = { entry.JoinRequest with WrapPublicKey = String('1', 64) }
            }

        let refused =
            Expect.throwsT<SyncException>
                (fun () -> shared.ApproveJoinRequestAsync(invite, tampered) |> awaitUnit)
                "tampered"

        ignore refused
        Expect.equal (shared.JoinRequestsAsync() |> await).Count 1 "still pending"
        shared.ApproveJoinRequestAsync(invite, entry) |> awaitUnit
        let bobsShared = bob.Engine.JoinNamespaceAsync shared.Id |> await
        Expect.equal
            bobsShared.Kind
            "shared"
            "a joined namespace knows its kind (docs/engine.md §12.20)"
        // Bob can invite at once, before any pass.
        let bobsInvite =
            bobsShared.CreateInviteAsync(InviteOptions(ServerOrigin = origin)) |> await

        bobsShared.RevokeInviteAsync bobsInvite.InviteId |> awaitUnit

        let bobNotes = MemoryValueBackend<string>(Codecs.String, null, keys)

        bobsShared.OpenCollection(
            "shared-notes",
            CollectionOptions<string>(Codec = Codecs.String, Backend = bobNotes)
        )
        |> ignore

        Expect.equal
            ((shared.MembersAsync() |> await) |> Seq.map (fun m -> m.KeyId) |> List.ofSeq)
            [ alice.Engine.KeyId; bob.Engine.KeyId ]
            "members"

        aliceNotes.SetAsync("a", "hello bob", Threading.CancellationToken.None).AsTask()
        |> awaitUnit

        alice.Sync()
        bob.Sync()
        let got = bobNotes.GetAsync("a", Threading.CancellationToken.None).AsTask() |> await
        Expect.equal got.Value "hello bob" "bob reads alice's shared note"

        bobNotes.SetAsync("b", "hello alice", Threading.CancellationToken.None).AsTask()
        |> awaitUnit

        bob.Sync()
        alice.Sync()

        let back =
            aliceNotes.GetAsync("b", Threading.CancellationToken.None).AsTask() |> await

        Expect.equal back.Value "hello alice" "alice reads bob's shared note"

        // Reject and revoke.
        use carol = device server "carol" (new MemoryStore()) (Merges.NoMerge())
        carol.Engine.SubmitJoinRequestAsync invite |> await |> ignore
        let carols = (shared.JoinRequestsAsync() |> await) |> Seq.exactlyOne
        shared.RejectJoinRequestAsync carols |> awaitUnit
        Expect.isEmpty (shared.JoinRequestsAsync() |> await) "rejected"
        shared.RevokeInviteAsync invite.InviteId |> awaitUnit
        let summaries = shared.InvitesAsync() |> await
        Expect.equal summaries.Count 2 "alice's and bob's invites"

        Expect.equal
            (summaries
             |> Seq.filter (fun s -> isNull s.RevokedAt)
             |> Seq.map (fun s -> s.InviteId)
             |> List.ofSeq)
            []
            $"both revoked (alice's {invite.InviteId}, bob's {bobsInvite.InviteId})"
    }

let private statusAndQuarantine =
    test "status for a UI; a merge that throws quarantines one item while the rest syncs" {
        use server = start Sqlite
        let throwing: MergeFunction<string> = MergeFunction(fun _ -> failwith "merge bug")
        use a = device server "alice" (new MemoryStore()) (Merges.NoMerge())
        use b = device server "alice" (new MemoryStore()) throwing
        let changes = List<SyncStatus>()
        b.Engine.StatusChanged.Add(fun s -> lock changes (fun () -> changes.Add s))
        a.Write("a", "v1")
        a.Write("b", "v1")
        a.Sync()
        b.Sync()
        let st = b.Engine.Status

        Expect.isTrue
            (st.Connected
             && not st.Syncing
             && st.LastSyncedAt.HasValue
             && isNull st.LastError)
            "connected, idle, synced"

        Expect.equal (st.Downloaded, st.DownloadsPlanned) (2, 2) "download progress"

        Expect.isTrue
            (changes |> Seq.exists (fun c -> c.Syncing))
            "a change while syncing was raised"

        a.Write("a", "A's edit")
        a.Sync()
        b.Write("a", "B's edit")
        b.Write("c", "new on B")
        b.Sync() // 412 on "a" → merge throws → quarantined; "c" still uploads; the pass succeeds
        let q = b.Engine.QuarantinedItems |> Seq.exactlyOne
        Expect.equal q.Key "a" "the item set aside"
        Expect.stringContains q.Error "merge bug" "with its error"
        Expect.contains (types b) SyncEventType.ItemQuarantined "event"
        Expect.equal b.Engine.Status.Quarantined 1 "counted"
        a.Sync()
        Expect.equal (a.Read "c") (Some "new on B") "the rest synced"
        (server :> IDisposable).Dispose()
        Expect.throwsT<SyncTransportException> (fun () -> b.Sync()) "server gone"
        Expect.isFalse b.Engine.Status.Connected "disconnected"
        Expect.isNotNull b.Engine.Status.LastError "the error"
    }

let private apiChecks =
    test "options and registrations are validated" {
        let store = new MemoryStore()

        Expect.throwsT<ArgumentException>
            (fun () -> SyncEngine.OpenAsync(SyncEngineOptions(Store = store)) |> await |> ignore)
            "client required"

        let invalid (configure: SyncEngineOptions -> unit) (why: string) =
            use client = new SyncClient(Uri "http://127.0.0.1:9")

            let options =
                SyncEngineOptions(
                    Client = client,
                    Identity = BitBoxSync.DummyKeystore.FromLabel "x",
                    Store = store
                )

            configure options

            Expect.throwsT<ArgumentException>
                (fun () -> SyncEngine.OpenAsync options |> await |> ignore)
                why

        invalid (fun o -> o.PollInterval <- TimeSpan.Zero) "zero poll interval"
        invalid (fun o -> o.RefreshSkew <- TimeSpan.FromSeconds -1.0) "negative refresh skew"

        invalid
            (fun o ->
                o.PollInterval <- TimeSpan.FromMinutes 10.0
                o.MaxPollInterval <- Nullable(TimeSpan.FromMinutes 5.0))
            "maximum below the poll interval"

        use server = start Sqlite
        use a = device server "alice" (new MemoryStore()) (Merges.NoMerge())
        let ns = a.Engine.DefaultNamespaceAsync() |> await

        Expect.throwsT<CollectionAlreadyRegisteredException>
            (fun () ->
                ns.OpenCollection(
                    "notes",
                    CollectionOptions<string>(Codec = Codecs.String, Backend = a.Notes)
                )
                |> ignore)
            "duplicate collection"

        Expect.throwsT<ArgumentException>
            (fun () ->
                ns.OpenCollection("other", CollectionOptions<string>(Codec = Codecs.String))
                |> ignore)
            "backend required"

        for reserved in [ "bitboxsync.directory"; "bitboxsync.anything" ] do
            let e =
                Expect.throwsC
                    (fun () ->
                        ns.OpenCollection(reserved, CollectionOptions<string>(Codec = Codecs.String, Backend = MemoryValueBackend<string>(Codecs.String)))
                        |> ignore)
                    id

            Expect.stringContains e.Message "reserved" $"{reserved} is the engine's"

        ns.OpenCollection("bitboxsyncnotes", CollectionOptions<string>(Codec = Codecs.String, Backend = MemoryValueBackend<string>(Codecs.String)))
        |> ignore
    }

let tests =
    testList
        "engine"
        [
            apiChecks
            disposeStopsRun
            statusAndQuarantine

            for b in backends do
                twoDevices b
                conflicts b
                preferLocal b
                restartFromFile b
                resolveConflicts b
                longPoll b
                sharing b
        ]
