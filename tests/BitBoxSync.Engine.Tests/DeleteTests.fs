/// Deletes in key-directory collections (docs/concepts.md, "Deletes") on a real server: a deletion
/// reaches every device, never comes back through a stale peer, and meets an edit made without
/// seeing it by the collection's policy.
module BitBoxSync.Engine.Tests.DeleteTests

open System
open System.Threading
open Expecto
open BitBoxSync
open BitBoxSync.Storage
open BitBoxSync.Storage.Sqlite
open BitBoxSync.Server.Tests.Harness
open BitBoxSync.Engine.Tests.EngineTests

/// A backend that can be made to fail its next removals (a crash between the deletion's two writes).
type private FailingRemovals(inner: MemoryValueBackend<string>) =
    member val FailNext = 0 with get, set

    interface IDeletableValueBackend<string> with
        member _.KeysAsync ct = inner.KeysAsync ct
        member _.SnapshotAsync ct = inner.SnapshotAsync ct
        member _.GetAsync(key, ct) = inner.GetAsync(key, ct)
        member _.SetAsync(key, value, ct) = inner.SetAsync(key, value, ct)

        member this.DeleteIfCurrentAsync(key, current, ct) =
            if this.FailNext > 0 then
                this.FailNext <- this.FailNext - 1
                raise (IO.IOException "the app's storage went away")

            inner.DeleteIfCurrentAsync(key, current, ct)

/// A backend that cannot remove values (no IDeletableValueBackend).
type private BackendWithoutRemoval(inner: MemoryValueBackend<string>) =
    interface IValueBackend<string> with
        member _.KeysAsync ct = inner.KeysAsync ct
        member _.SnapshotAsync ct = inner.SnapshotAsync ct
        member _.GetAsync(key, ct) = inner.GetAsync(key, ct)
        member _.SetAsync(key, value, ct) = inner.SetAsync(key, value, ct)

/// One device of "alice" with a "notes" collection keeping a key directory.
type private Phone =
    {
        Engine: SyncEngine
        Notes: MemoryValueBackend<string>
        Collection: Collection<string>
        Seen: Collections.Generic.List<SyncEvent>
    }

    member p.Sync() = p.Engine.SyncNowAsync() |> awaitUnit

    member p.Write(key, value) =
        p.Notes.SetAsync(key, value, CancellationToken.None).AsTask() |> awaitUnit

    member p.Read key =
        let v = p.Notes.GetAsync(key, CancellationToken.None).AsTask() |> await
        if v.Found then Some v.Value else None

    member p.Delete key = p.Collection.DeleteAsync key |> awaitUnit

    /// The events since the last call.
    member p.Events() =
        p.Seen.Clear()
        let mutable e = Unchecked.defaultof<SyncEvent>

        while p.Engine.Events.TryRead(&e) do
            p.Seen.Add e

        p.Seen |> Seq.filter (fun e -> e.Collection = "notes") |> Seq.map (fun e -> e.Type, e.Key) |> List.ofSeq

    member p.Dispose() = p.Engine.DisposeAsync().AsTask() |> awaitUnit

let private phoneWith (server: TestServer) (store: IStore) (options: CollectionOptions<string>) (notes: MemoryValueBackend<string>) =
    let engine = openWith (new SyncClient(server.BaseAddress)) "alice" store
    let ns = engine.DefaultNamespaceAsync() |> await
    let collection = ns.OpenCollection("notes", options)

    {
        Engine = engine
        Notes = notes
        Collection = collection
        Seen = Collections.Generic.List()
    }

let private phoneOn (server: TestServer) (store: IStore) (policy: DeletePolicy) (notes: MemoryValueBackend<string>) (backend: IValueBackend<string>) =
    phoneWith server store (CollectionOptions<string>(Codec = Codecs.String, Backend = backend, KeyDirectory = true, DeletePolicy = policy)) notes

/// A phone whose deletions overwrite the server's value with "" (OverwriteOnDelete).
let private overwritingPhone server =
    let notes = MemoryValueBackend<string>(Codecs.String)

    phoneWith
        server
        (new MemoryStore())
        (CollectionOptions<string>(Codec = Codecs.String, Backend = notes, KeyDirectory = true, OverwriteOnDelete = true, DeletedValue = ""))
        notes

/// A peer without the directory (as a Go client) naming `names`: its backend.
let private plainPeer (server: TestServer) (names: string list) =
    let notes = MemoryValueBackend<string>(Codecs.String, null, names)
    let engine = openWith (new SyncClient(server.BaseAddress)) "alice" (new MemoryStore())
    (engine.DefaultNamespaceAsync() |> await).OpenCollection("notes", CollectionOptions<string>(Codec = Codecs.String, Backend = notes)) |> ignore
    engine, notes

let private phone server policy =
    let notes = MemoryValueBackend<string>(Codecs.String)
    phoneOn server (new MemoryStore()) policy notes notes

let private head (p: Phone) =
    (p.Engine.ListNamespacesAsync() |> await) |> Seq.sumBy (fun n -> n.Head)

/// Passes on every phone until none changes the server (bounded), then one more round that must be quiet.
let private settle (phones: Phone list) =
    let mutable rounds = 0
    let mutable last = UInt64.MaxValue

    while rounds < 6 && (phones |> List.map head |> List.max) <> last do
        last <- phones |> List.map head |> List.max
        phones |> List.iter (fun p -> p.Sync())
        rounds <- rounds + 1

    let before = phones |> List.map head |> List.max
    phones |> List.iter (fun p -> p.Sync())
    Expect.equal (phones |> List.map head |> List.max) before "settled: a quiet round writes nothing"

/// The exception `f` throws (failing the test when it throws none or another).
let private thrown<'E when 'E :> exn> (f: unit -> unit) : 'E =
    try
        f ()
        failtestf "expected %s" typeof<'E>.Name
    with
    | :? 'E as e -> e

let tests =
    testList
        "deletes"
        [
            test "a deletion removes the value on every device, raises ItemDeleted, is counted until uploaded, and never comes back" {
                use server = start Sqlite
                let a = phone server DeletePolicy.EditWins
                let b = phone server DeletePolicy.EditWins
                a.Write("note-1", "one")
                a.Write("note-2", "two")
                a.Sync()
                b.Sync()
                Expect.equal (b.Read "note-1") (Some "one") "B holds the note"
                a.Events() |> ignore
                b.Events() |> ignore

                a.Delete "note-1"
                Expect.equal (a.Read "note-1") None "removed at once on A"
                Expect.equal (a.Events()) [ SyncEventType.ItemDeleted, "note-1" ] "A is told"
                Expect.equal a.Engine.Status.PendingDeletions 1 "counted until the server holds it"
                a.Sync()
                Expect.equal a.Engine.Status.PendingDeletions 0 "uploaded"
                b.Sync()
                Expect.equal (b.Read "note-1") None "removed on B in its next pass"
                Expect.equal (b.Read "note-2") (Some "two") "the other note stays"
                Expect.contains (b.Events()) (SyncEventType.ItemDeleted, "note-1") "B is told"
                settle [ a; b ]

                // A device that joins later never sees the deleted note; one that held it loses it.
                let c = phone server DeletePolicy.EditWins
                c.Sync()
                Expect.equal (c.Read "note-1") None "a new device does not get the deleted note"
                Expect.equal (c.Read "note-2") (Some "two") "it gets the live one"
                a.Delete "note-1" // deleting again does nothing
                Expect.equal (a.Events()) [] "no second event"
                settle [ a; b; c ]

                for p in [ a; b; c ] do
                    Expect.equal (p.Engine.Status.LastError) null "no failure"
                    Expect.equal (p.Engine.Status.PendingUploads, p.Engine.Status.PendingDeletions) (0, 0) "nothing pending"
                    p.Dispose()
            }

            test "under RunAsync with a 10-minute poll, a deletion made on another device arrives through the long poll in one pass" {
                use server = startOn (Database.Create Sqlite) (ManualClock DateTimeOffset.UtcNow) (TimeSpan.FromSeconds 20.0)

                let a = DirectoryTests.slowPolling server "alice"

                let notesA = MemoryValueBackend<string>(Codecs.String)

                (a.DefaultNamespaceAsync() |> await)
                    .OpenCollection("notes", CollectionOptions<string>(Codec = Codecs.String, Backend = notesA, KeyDirectory = true))
                |> ignore

                let b = phone server DeletePolicy.EditWins
                b.Write("note", "to be deleted")
                b.Sync()
                a.SyncNowAsync() |> awaitUnit
                Expect.isTrue (notesA.GetAsync("note", CancellationToken.None).AsTask() |> await).Found "A holds the note"
                use subscription = a.Subscribe()
                use stop = new CancellationTokenSource()
                let run = a.RunAsync stop.Token
                let passes () =
                    let mutable e = Unchecked.defaultof<SyncEvent>
                    let mutable n = 0

                    while subscription.Reader.TryRead(&e) do
                        if e.Type = SyncEventType.SyncStarted then n <- n + 1

                    n

                Thread.Sleep 500 // the first pass ran and the watch is parked
                let before = passes ()
                b.Delete "note"
                b.Sync()
                let written = Diagnostics.Stopwatch.StartNew()

                while (notesA.GetAsync("note", CancellationToken.None).AsTask() |> await).Found && written.Elapsed < TimeSpan.FromSeconds 15.0 do
                    Thread.Sleep 10

                let latency = written.Elapsed
                Expect.isFalse (notesA.GetAsync("note", CancellationToken.None).AsTask() |> await).Found "deleted on A"
                Thread.Sleep 200
                let during = passes ()
                printfn "deletes: a deletion arrived through the long poll in %.0f ms (%d pass)" latency.TotalMilliseconds during
                ignore before
                Expect.equal during 1 "in the one pass the watch started"
                Expect.isLessThan latency (TimeSpan.FromSeconds 10.0) "long before the 10-minute poll"
                stop.Cancel()
                let _ = (try run |> awaitUnit with _ -> ())
                a.DisposeAsync().AsTask() |> awaitUnit
                b.Dispose()
            }

            test "an offline device's old edit meets the deletion: under EditWins the key comes back with the edit on every device" {
                use server = start Sqlite
                let a = phone server DeletePolicy.EditWins
                let b = phone server DeletePolicy.EditWins
                a.Write("note", "v1")
                a.Sync()
                b.Sync()
                b.Write("note", "edited offline") // B is offline: it does not see the deletion
                a.Delete "note"
                a.Sync()
                a.Events() |> ignore
                b.Events() |> ignore
                b.Sync()
                Expect.equal (b.Read "note") (Some "edited offline") "B keeps its edit"
                Expect.contains (b.Events()) (SyncEventType.ItemRevived, "note") "B is told the deleted key came back"
                a.Sync()
                Expect.equal (a.Read "note") (Some "edited offline") "A gets the key back, with B's edit"
                Expect.contains (a.Events()) (SyncEventType.ItemRevived, "note") "A is told"
                settle [ a; b ]
                Expect.equal (a.Read "note", b.Read "note") (Some "edited offline", Some "edited offline") "converged"
                a.Dispose()
                b.Dispose()
            }

            test "an edit uploaded before the device saw the deletion also wins under EditWins (the deletion did not see its version)" {
                use server = start Sqlite
                let a = phone server DeletePolicy.EditWins
                let b = phone server DeletePolicy.EditWins
                a.Write("note", "v1")
                a.Sync()
                b.Sync()
                a.Delete "note" // A deletes having seen version 1; not uploaded yet
                b.Write("note", "v2")
                b.Sync() // version 2 on the server
                a.Sync() // the deletion goes up; A does not hold the key any more
                b.Sync() // B's value is clean at version 2 > the version the deletion saw: it lives again
                Expect.equal (b.Read "note") (Some "v2") "B keeps version 2"
                a.Sync()
                Expect.equal (a.Read "note") (Some "v2") "A gets it back"
                settle [ a; b ]
                a.Dispose()
                b.Dispose()
            }

            test "an offline device's old edit meets the deletion: under DeleteWins the edit is dropped (EditDropped) and the key stays deleted" {
                use server = start Sqlite
                let a = phone server DeletePolicy.DeleteWins
                let b = phone server DeletePolicy.DeleteWins
                a.Write("note", "v1")
                a.Write("other", "x")
                a.Sync()
                b.Sync()
                b.Write("note", "edited offline")
                a.Delete "note"
                a.Sync()
                b.Events() |> ignore
                b.Sync()
                Expect.equal (b.Read "note") None "B's edit is dropped"
                let events = b.Events()
                Expect.contains events (SyncEventType.ItemDeleted, "note") "B is told of the deletion"
                Expect.contains events (SyncEventType.EditDropped, "note") "and that its edit was dropped"
                settle [ a; b ]
                Expect.equal (a.Read "note", b.Read "note") (None, None) "deleted everywhere"
                Expect.equal (b.Engine.Status.PendingUploads) 0 "the dropped edit is not uploaded"

                // A write made after seeing the deletion brings the key back, whatever the policy.
                b.Write("note", "written again")
                b.Sync()
                a.Events() |> ignore
                a.Sync()
                Expect.equal (a.Read "note") (Some "written again") "a new write revives the key"
                Expect.contains (a.Events()) (SyncEventType.ItemRevived, "note") "A is told"
                settle [ a; b ]
                a.Dispose()
                b.Dispose()
            }

            test "a stale peer (restored from an old backup) replaying its old directory does not bring a deleted key back" {
                use server = start Sqlite
                let path = StoreTests.tempFile ()
                let notesA = MemoryValueBackend<string>(Codecs.String)
                let a = phoneOn server (SqliteStore.OpenAsync path |> await) DeletePolicy.EditWins notesA notesA
                let b = phone server DeletePolicy.EditWins
                a.Write("note", "v1")
                a.Write("kept", "k")
                a.Sync()
                b.Sync()
                a.Dispose()
                // The backup: the metadata file and the app's values as they were.
                let backup = path + ".backup"
                IO.File.Copy(path, backup)
                let a = phoneOn server (SqliteStore.OpenAsync path |> await) DeletePolicy.EditWins notesA notesA
                b.Delete "note"
                b.Sync()
                a.Sync()
                Expect.equal (a.Read "note") None "deleted on A"
                a.Dispose()

                let restored = MemoryValueBackend<string>(Codecs.String, readOnlyDict [ "note", "v1"; "kept", "k" ])
                let stale = phoneOn server (SqliteStore.OpenAsync backup |> await) DeletePolicy.EditWins restored restored
                stale.Sync()
                Expect.equal (stale.Read "note") None "the restored device adopts the deletion (its value was the one deleted)"
                Expect.equal (stale.Read "kept") (Some "k") "and keeps the rest"
                b.Sync()
                Expect.equal (b.Read "note") None "nothing came back"
                settle [ stale; b ]
                stale.Dispose()
                b.Dispose()
            }

            test "a key deleted and then written again with the same value lives again (it is a new write, not the deleted leftover)" {
                use server = start Sqlite
                let a = phone server DeletePolicy.DeleteWins
                let b = phone server DeletePolicy.DeleteWins
                a.Write("setting", "on")
                a.Sync()
                b.Sync()
                a.Delete "setting"
                a.Sync()
                b.Sync()
                Expect.equal (b.Read "setting") None "deleted on B"
                a.Write("setting", "on") // the app sets it again, to the same value
                a.Sync()
                Expect.equal (a.Read "setting") (Some "on") "kept on A"
                b.Sync()
                Expect.equal (b.Read "setting") (Some "on") "and back on B"
                settle [ a; b ]
                a.Dispose()
                b.Dispose()
            }

            test "deleted, written again and deleted again before any pass: it stays deleted everywhere" {
                use server = start Sqlite
                let a = phone server DeletePolicy.EditWins
                let b = phone server DeletePolicy.EditWins
                a.Write("note", "v1")
                a.Sync()
                b.Sync()
                a.Delete "note"
                a.Write("note", "v2")
                a.Events() |> ignore
                a.Delete "note"
                Expect.equal (a.Read "note") None "removed again"
                Expect.equal (a.Events()) [ SyncEventType.ItemDeleted, "note" ] "the second deletion is told too"
                settle [ a; b ]
                Expect.equal (a.Read "note", b.Read "note") (None, None) "deleted on both"
                a.Dispose()
                b.Dispose()
            }

            test "a crash between keeping the deletion and removing the value: the value is removed by the next pass, the deletion is not lost" {
                use server = start Sqlite
                let notes = MemoryValueBackend<string>(Codecs.String)
                let failing = FailingRemovals(notes)
                let a = phoneOn server (new MemoryStore()) DeletePolicy.EditWins notes failing
                let b = phone server DeletePolicy.EditWins
                a.Write("note", "v1")
                a.Sync()
                b.Sync()
                failing.FailNext <- 1
                Expect.throwsT<IO.IOException> (fun () -> a.Delete "note") "the app's storage failed"
                Expect.equal (a.Read "note") (Some "v1") "the value is still there"
                a.Sync()
                Expect.equal (a.Read "note") None "the next pass removes the deleted value"
                b.Sync()
                Expect.equal (b.Read "note") None "and the deletion reached B"
                settle [ a; b ]
                a.Dispose()
                b.Dispose()
            }

            test "OverwriteOnDelete: the server's value becomes the replacement (a peer without the directory reads it), the key is deleted everywhere, nothing churns" {
                use server = start Sqlite
                let a = overwritingPhone server
                let b = overwritingPhone server
                let go, goNotes = plainPeer server [ "note" ]
                a.Write("note", "secret plan")
                a.Sync()
                b.Sync()
                go.SyncNowAsync() |> awaitUnit
                a.Delete "note"
                Expect.equal (a.Engine.Status.PendingDeletions, a.Engine.Status.PendingUploads) (1, 1) "the deletion and its overwrite are pending"
                a.Sync()
                Expect.equal (a.Engine.Status.PendingDeletions, a.Engine.Status.PendingUploads) (0, 0) "both went up in one pass"
                go.SyncNowAsync() |> awaitUnit
                Expect.equal (goNotes.GetAsync("note", CancellationToken.None).AsTask() |> await).Value "" "the server holds the replacement, not the deleted value"
                b.Sync()
                Expect.equal (b.Read "note") None "B removes the key: the overwrite is a version the deletion saw"
                settle [ a; b ]
                Expect.equal (a.Read "note", b.Read "note") (None, None) "deleted on both"
                go.DisposeAsync().AsTask() |> awaitUnit
                a.Dispose()
                b.Dispose()
            }

            test "OverwriteOnDelete meeting an edit it did not see (412): the edit wins (EditWins) and is not overwritten" {
                use server = start Sqlite
                let a = overwritingPhone server
                let b = overwritingPhone server
                let go, goNotes = plainPeer server [ "note" ]
                a.Write("note", "v1")
                a.Sync()
                b.Sync()
                b.Write("note", "edited")
                b.Sync() // version 2, which A's deletion does not see
                a.Delete "note"
                a.Sync() // the overwrite meets 412: A downloads the edit, which wins
                Expect.equal (a.Read "note") (Some "edited") "A gets the edit back"
                settle [ a; b ]
                go.SyncNowAsync() |> awaitUnit
                Expect.equal (goNotes.GetAsync("note", CancellationToken.None).AsTask() |> await).Value "edited" "the server keeps the edit"
                Expect.equal (b.Read "note") (Some "edited") "B keeps it"
                go.DisposeAsync().AsTask() |> awaitUnit
                a.Dispose()
                b.Dispose()
            }

            test "bad input: clear errors and nothing changed" {
                use server = start Sqlite
                let engine = openWith (new SyncClient(server.BaseAddress)) "alice" (new MemoryStore())
                let ns = engine.DefaultNamespaceAsync() |> await
                let plain = MemoryValueBackend<string>(Codecs.String)
                let noDirectory = ns.OpenCollection("plain", CollectionOptions<string>(Codec = Codecs.String, Backend = plain))
                plain.SetAsync("k", "v", CancellationToken.None).AsTask() |> awaitUnit
                engine.SyncNowAsync() |> awaitUnit

                let e = thrown<InvalidOperationException> (fun () -> noDirectory.DeleteAsync "k" |> awaitUnit)
                Expect.stringContains e.Message "KeyDirectory" "says what is missing"
                Expect.isTrue (plain.GetAsync("k", CancellationToken.None).AsTask() |> await).Found "value untouched"

                let fixedKeys = BackendWithoutRemoval(MemoryValueBackend<string>(Codecs.String))
                let noRemoval =
                    ns.OpenCollection("fixed", CollectionOptions<string>(Codec = Codecs.String, Backend = fixedKeys, KeyDirectory = true))

                let e = thrown<InvalidOperationException> (fun () -> noRemoval.DeleteAsync "k" |> awaitUnit)
                Expect.stringContains e.Message "IDeletableValueBackend" "names the interface"

                let notes = MemoryValueBackend<string>(Codecs.String)
                let withDirectory = ns.OpenCollection("notes", CollectionOptions<string>(Codec = Codecs.String, Backend = notes, KeyDirectory = true))
                Expect.throwsT<ArgumentException> (fun () -> withDirectory.DeleteAsync "" |> awaitUnit) "empty key"
                Expect.throwsT<ArgumentNullException> (fun () -> withDirectory.DeleteAsync null |> awaitUnit) "null key"
                Expect.throwsT<ArgumentException> (fun () -> withDirectory.DeleteAsync(String('x', 513)) |> awaitUnit) "a key over 512 bytes"

                Expect.throwsT<ArgumentException>
                    (fun () ->
                        ns.OpenCollection(
                            "odd",
                            CollectionOptions<string>(Codec = Codecs.String, Backend = notes, KeyDirectory = true, DeletePolicy = enum<DeletePolicy> 7)
                        )
                        |> ignore)
                    "an unknown policy"

                Expect.throwsT<ArgumentException>
                    (fun () ->
                        ns.OpenCollection("ow1", CollectionOptions<string>(Codec = Codecs.String, Backend = notes, KeyDirectory = true, OverwriteOnDelete = true))
                        |> ignore)
                    "OverwriteOnDelete without a DeletedValue"

                Expect.throwsT<ArgumentException>
                    (fun () ->
                        ns.OpenCollection("ow2", CollectionOptions<string>(Codec = Codecs.String, Backend = notes, OverwriteOnDelete = true, DeletedValue = ""))
                        |> ignore)
                    "OverwriteOnDelete without a key directory"

                Expect.equal engine.Status.PendingDeletions 0 "nothing recorded"
                let rows = (engine.ListNamespacesAsync() |> await)
                Expect.isNonEmpty rows "the namespace is there"
                engine.DisposeAsync().AsTask() |> awaitUnit
            }

            test "deleting a key in conflict ends the conflict; the deletion syncs" {
                use server = start Sqlite
                let a = phone server DeletePolicy.EditWins
                let b = phone server DeletePolicy.EditWins
                a.Write("note", "v1")
                a.Sync()
                b.Sync()
                a.Write("note", "A")
                b.Write("note", "B")
                a.Sync()
                b.Sync() // no merge: a conflict on B
                Expect.equal b.Engine.Status.Conflicts 1 "in conflict"
                b.Delete "note"
                Expect.isEmpty (b.Collection.ConflictsAsync() |> await) "the conflict is gone"
                b.Sync()
                Expect.equal b.Engine.Status.Conflicts 0 "no conflict counted"
                a.Sync()
                Expect.equal (a.Read "note") None "A's value followed the deletion (B had seen A's version)"
                settle [ a; b ]
                a.Dispose()
                b.Dispose()
            }

            test "a peer without the directory writes a deleted key both name: under EditWins that unseen write brings the key back" {
                use server = start Sqlite
                let named = MemoryValueBackend<string>(Codecs.String, null, [ "shared" ])
                let a = phoneOn server (new MemoryStore()) DeletePolicy.EditWins named named
                let goNotes = MemoryValueBackend<string>(Codecs.String, null, [ "shared" ])
                let go = openWith (new SyncClient(server.BaseAddress)) "alice" (new MemoryStore())
                (go.DefaultNamespaceAsync() |> await).OpenCollection("notes", CollectionOptions<string>(Codec = Codecs.String, Backend = goNotes))
                |> ignore
                a.Write("shared", "v1")
                a.Sync()
                go.SyncNowAsync() |> awaitUnit
                Expect.equal (goNotes.GetAsync("shared", CancellationToken.None).AsTask() |> await).Value "v1" "the peer holds it"
                a.Delete "shared"
                a.Sync()
                go.SyncNowAsync() |> awaitUnit // the peer knows nothing of deletions: it keeps its value
                goNotes.SetAsync("shared", "from the peer", CancellationToken.None).AsTask() |> awaitUnit
                go.SyncNowAsync() |> awaitUnit
                a.Events() |> ignore
                a.Sync()
                Expect.equal (a.Read "shared") (Some "from the peer") "the peer's write after the deletion is an unseen edit: back"
                Expect.contains (a.Events()) (SyncEventType.ItemRevived, "shared") "told"
                Expect.equal go.Status.LastError null "the peer never fails"
                settle [ a ]
                a.Dispose()
                go.DisposeAsync().AsTask() |> awaitUnit
            }
        ]
