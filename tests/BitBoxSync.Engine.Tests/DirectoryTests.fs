/// The key directory in the engine (docs/protocol.md §17): keys created on one device reach the
/// others without being named in their `KeysAsync`, in the same pass that brings the directory.
module BitBoxSync.Engine.Tests.DirectoryTests

open System
open System.Threading
open Expecto
open BitBoxSync
open BitBoxSync.Storage
open BitBoxSync.Server.Tests.Harness
open BitBoxSync.Engine.Tests.EngineTests

/// A device of `label` with a "notes" collection (keeping a key directory or not) whose backend
/// names the keys it holds, or a fixed list.
let private directoryDevice (server: TestServer) (label: string) (directory: bool) (names: string list option) =
    let engine = openWith (new SyncClient(server.BaseAddress)) label (new MemoryStore())
    let ns = engine.DefaultNamespaceAsync() |> await
    let notes = MemoryValueBackend<string>(Codecs.String, null, Option.toObj (names |> Option.map Seq.ofList))

    ns.OpenCollection("notes", CollectionOptions<string>(Codec = Codecs.String, Backend = notes, KeyDirectory = directory))
    |> ignore

    engine, notes

/// An engine of `label` on a fresh store that polls every 10 minutes (so only the long poll brings changes quickly).
let slowPolling (server: TestServer) (label: string) =
    SyncEngine.OpenAsync(
        SyncEngineOptions(
            Client = new SyncClient(server.BaseAddress),
            Identity = BitBoxSync.DummyKeystore.FromLabel label,
            Store = new MemoryStore(),
            PollInterval = TimeSpan.FromMinutes 10.0
        )
    )
    |> await

let private value (notes: MemoryValueBackend<string>) (key: string) =
    let v = notes.GetAsync(key, CancellationToken.None).AsTask() |> await
    if v.Found then Some v.Value else None

let tests =
    testList
        "key directory"
        [
            test "under RunAsync with a 10-minute poll, a key created on another device arrives through the long poll in one pass" {
                use server =
                    startOn (Database.Create Sqlite) (ManualClock DateTimeOffset.UtcNow) (TimeSpan.FromSeconds 20.0)

                let a = slowPolling server "alice"

                use subscription = a.Subscribe()
                let seen = Collections.Generic.List<SyncEvent>()

                let events () =
                    let mutable e = Unchecked.defaultof<SyncEvent>

                    while subscription.Reader.TryRead(&e) do
                        seen.Add e

                    List.ofSeq seen
                let nsA = a.DefaultNamespaceAsync() |> await
                let notesA = MemoryValueBackend<string>(Codecs.String)
                nsA.OpenCollection("notes", CollectionOptions<string>(Codec = Codecs.String, Backend = notesA, KeyDirectory = true)) |> ignore
                let b, notesB = directoryDevice server "alice" true None
                use stop = new CancellationTokenSource()
                let run = a.RunAsync stop.Token
                let started = Diagnostics.Stopwatch.StartNew()

                while not (events () |> Seq.exists (fun e -> e.Type = SyncEventType.SyncFinished)) && started.Elapsed < TimeSpan.FromSeconds 10.0 do
                    Thread.Sleep 20

                Thread.Sleep 300 // the watch is parked
                let passesBefore = events () |> Seq.filter (fun e -> e.Type = SyncEventType.SyncStarted) |> Seq.length
                notesB.SetAsync("created-on-b", "hello", CancellationToken.None).AsTask() |> awaitUnit
                b.SyncNowAsync() |> awaitUnit
                let written = Diagnostics.Stopwatch.StartNew()

                while value notesA "created-on-b" <> Some "hello" && written.Elapsed < TimeSpan.FromSeconds 15.0 do
                    Thread.Sleep 10

                let latency = written.Elapsed
                Expect.equal (value notesA "created-on-b") (Some "hello") "arrived"
                let passes = (events () |> Seq.filter (fun e -> e.Type = SyncEventType.SyncStarted) |> Seq.length) - passesBefore
                printfn "key directory: a new key arrived through the long poll in %.0f ms (%d pass)" latency.TotalMilliseconds passes
                Expect.equal passes 1 "in the one pass the watch started"
                Expect.isLessThan latency (TimeSpan.FromSeconds 10.0) "long before the 10-minute poll"
                stop.Cancel()
                let _ = (try run |> awaitUnit with _ -> ())
                a.DisposeAsync().AsTask() |> awaitUnit
                b.DisposeAsync().AsTask() |> awaitUnit
            }

            test "a key created on one device is downloaded by another in one pass, without being named there" {
                use server = start Sqlite
                let a, notesA = directoryDevice server "alice" true None
                let b, notesB = directoryDevice server "alice" true None
                notesA.SetAsync("note-1", "from A", CancellationToken.None).AsTask() |> awaitUnit
                a.SyncNowAsync() |> awaitUnit
                b.SyncNowAsync() |> awaitUnit
                Expect.equal (value notesB "note-1") (Some "from A") "learned and downloaded in B's first pass"
                let mutable ev = Unchecked.defaultof<SyncEvent>
                let seen = Collections.Generic.List<SyncEvent>()

                while b.Events.TryRead(&ev) do
                    seen.Add ev

                Expect.isTrue (seen |> Seq.exists (fun e -> e.Type = SyncEventType.ItemChanged && e.Key = "note-1")) "the app hears of the new key"
                Expect.isFalse (seen |> Seq.exists (fun e -> e.Collection = "bitboxsync.directory")) "and nothing of the directory's own items"

                notesB.SetAsync("note-2", "from B", CancellationToken.None).AsTask() |> awaitUnit
                notesB.SetAsync("note-1", "edited on B", CancellationToken.None).AsTask() |> awaitUnit
                b.SyncNowAsync() |> awaitUnit
                a.SyncNowAsync() |> awaitUnit
                Expect.equal (value notesA "note-2") (Some "from B") "and back"
                Expect.equal (value notesA "note-1") (Some "edited on B") "edits of learned keys sync as usual"

                // Quiet passes change nothing more.
                let head () = a.Status.PendingUploads, b.Status.PendingUploads
                a.SyncNowAsync() |> awaitUnit
                b.SyncNowAsync() |> awaitUnit
                Expect.equal (head ()) (0, 0) "nothing pending"
                a.DisposeAsync().AsTask() |> awaitUnit
                b.DisposeAsync().AsTask() |> awaitUnit
            }

            test "two devices creating keys at once: their directory buckets race (412) and merge, no key is lost, both converge" {
                use server = start Sqlite
                let a, notesA = directoryDevice server "alice" true None
                let b, notesB = directoryDevice server "alice" true None
                // 300 keys each: most of the 256 buckets get keys from both devices.
                for i in 1..300 do
                    notesA.SetAsync($"a{i:D3}", "A", CancellationToken.None).AsTask() |> awaitUnit
                    notesB.SetAsync($"b{i:D3}", "B", CancellationToken.None).AsTask() |> awaitUnit

                a.SyncNowAsync() |> awaitUnit
                b.SyncNowAsync() |> awaitUnit // every shared bucket meets 412, is fetched, joined and written again
                a.SyncNowAsync() |> awaitUnit
                b.SyncNowAsync() |> awaitUnit

                for i in 1..300 do
                    Expect.equal (value notesA $"b{i:D3}") (Some "B") $"b{i:D3} reached A"
                    Expect.equal (value notesB $"a{i:D3}") (Some "A") $"a{i:D3} reached B"

                Expect.equal (a.Status.Conflicts, b.Status.Conflicts) (0, 0) "the directory never conflicts"
                Expect.equal (a.Status.PendingUploads, b.Status.PendingUploads) (0, 0) "nothing pending"
                a.DisposeAsync().AsTask() |> awaitUnit
                b.DisposeAsync().AsTask() |> awaitUnit
            }

            test "a peer without the directory (as a Go client) writes values without touching it: the keys the app names still sync, the directory items are unknown items to the peer" {
                use server = start Sqlite
                let a, notesA = directoryDevice server "alice" true (Some [ "shared" ])
                let peer, notesPeer = directoryDevice server "alice" false (Some [ "shared" ])
                notesPeer.SetAsync("shared", "from the peer", CancellationToken.None).AsTask() |> awaitUnit
                peer.SyncNowAsync() |> awaitUnit
                a.SyncNowAsync() |> awaitUnit
                Expect.equal (value notesA "shared") (Some "from the peer") "named in Keys(): synced"
                notesA.SetAsync("shared", "edited with a directory", CancellationToken.None).AsTask() |> awaitUnit
                a.SyncNowAsync() |> awaitUnit
                peer.SyncNowAsync() |> awaitUnit
                Expect.equal (value notesPeer "shared") (Some "edited with a directory") "and back"
                let mutable ev = Unchecked.defaultof<SyncEvent>
                let mutable unknown = 0

                while peer.Events.TryRead(&ev) do
                    if ev.Type = SyncEventType.UnknownRemoteItem then unknown <- unknown + 1

                Expect.isGreaterThan unknown 0 "the peer sees the directory bucket as an item it does not know, and goes on"
                Expect.equal peer.Status.LastError null "without failing"
                a.DisposeAsync().AsTask() |> awaitUnit
                peer.DisposeAsync().AsTask() |> awaitUnit
            }
        ]
