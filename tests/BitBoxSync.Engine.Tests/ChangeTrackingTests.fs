/// Change tracking (`IChangeTrackingBackend`): the stamps of `MemoryValueBackend`, and an engine
/// that reads no value on a quiet pass, reads only written keys after edits, and falls back to a
/// full snapshot whenever the backend cannot tell (or the engine is new).
module BitBoxSync.Engine.Tests.ChangeTrackingTests

open System
open System.Collections.Generic
open System.Threading
open System.Threading.Tasks
open Expecto
open BitBoxSync
open BitBoxSync.Storage
open BitBoxSync.Storage.Sqlite
open BitBoxSync.Server.Tests.Harness

let private none = CancellationToken.None

/// A tracking backend that records what the engine reads. Its scope can grow without a write
/// (the stamp moves, as the contract requires), and it can "forget" its history.
type RecordingBackend(scope: string seq) =
    let gate = obj ()
    let values = Dictionary<string, string>(StringComparer.Ordinal)
    let writtenAt = Dictionary<string, int64>(StringComparer.Ordinal)
    let scope = List<string>(scope)
    let mutable stamp = 0L

    member val Snapshots = 0 with get, set
    member val KeyCalls = 0 with get, set
    member val Reads = List<string>()

    /// GetChangedKeysAsync answers null (history lost).
    member val Forgetful = false with get, set

    member _.Write(key: string, value: string) =
        lock gate (fun () ->
            values[key] <- value
            stamp <- stamp + 1L
            writtenAt[key] <- stamp)

    member _.Value(key: string) =
        lock gate (fun () ->
            match values.TryGetValue key with
            | true, v -> Some v
            | _ -> None)

    /// Adds a key to the scope without writing it.
    member _.Widen(key: string) =
        lock gate (fun () ->
            scope.Add key
            stamp <- stamp + 1L)

    member this.ResetCounters() =
        this.Snapshots <- 0
        this.KeyCalls <- 0
        this.Reads.Clear()

    interface IConditionalValueBackend<string> with
        member this.KeysAsync _ =
            this.KeyCalls <- this.KeyCalls + 1

            lock gate (fun () ->
                ValueTask.FromResult(scope.ToArray() :> IReadOnlyCollection<string>))

        member this.SnapshotAsync _ =
            this.Snapshots <- this.Snapshots + 1

            lock gate (fun () ->
                ValueTask.FromResult(
                    Dictionary<string, string>(values, StringComparer.Ordinal)
                    :> IReadOnlyDictionary<string, string>
                ))

        member this.GetAsync(key, _) =
            this.Reads.Add key

            lock gate (fun () ->
                match values.TryGetValue key with
                | true, v -> ValueTask.FromResult(BackendValue<string>.Of v)
                | _ -> ValueTask.FromResult(BackendValue<string>.Missing))

        member this.SetAsync(key, value, _) =
            this.Write(key, value)
            ValueTask.CompletedTask

        member this.SetIfCurrentAsync(key, current, found, value, _) =
            lock gate (fun () ->
                let ok =
                    match values.TryGetValue key with
                    | true, v -> found && v = current
                    | _ -> not found

                if ok then
                    this.Write(key, value)

                ValueTask.FromResult ok)

    interface IChangeTrackingBackend with
        member _.GetChangeStampAsync _ =
            lock gate (fun () -> ValueTask.FromResult stamp)

        member this.GetChangedKeysAsync(since, _) =
            lock gate (fun () ->
                if this.Forgetful then
                    ValueTask.FromResult<IReadOnlyCollection<string>>(null)
                else
                    let changed =
                        writtenAt
                        |> Seq.filter (fun kv -> kv.Value > since)
                        |> Seq.map _.Key
                        |> Seq.toArray

                    ValueTask.FromResult(changed :> IReadOnlyCollection<string>))

/// An engine on `store` with one collection "notes" over `backend`.
let private openEngine
    (server: TestServer)
    (label: string)
    (store: IStore)
    (backend: IValueBackend<string>)
    =
    let client = new SyncClient(server.BaseAddress)

    let engine = EngineTests.openWith client label store

    let ns = engine.DefaultNamespaceAsync() |> await

    ns.OpenCollection("notes", CollectionOptions<string>(Codec = Codecs.String, Backend = backend))
    |> ignore

    engine

let private sync (engine: SyncEngine) = engine.SyncNowAsync() |> awaitUnit

let private memoryBackendStamps =
    testList
        "MemoryValueBackend change stamps"
        [
            test "every write moves the stamp and is reported after the stamp it followed" {
                let b = MemoryValueBackend<string>(Codecs.String)

                let stamp () =
                    b.GetChangeStampAsync(none).AsTask() |> await

                let changed s =
                    b.GetChangedKeysAsync(s, none).AsTask()
                    |> await
                    |> Option.ofObj
                    |> Option.map Set.ofSeq

                Expect.equal (stamp ()) 0L "a new backend starts at 0"
                b.SetAsync("a", "1", none).AsTask() |> awaitUnit
                let s1 = stamp ()
                b.SetAsync("b", "1", none).AsTask() |> awaitUnit
                b.SetAsync("a", "2", none).AsTask() |> awaitUnit
                Expect.isGreaterThan (stamp ()) s1 "writes move the stamp"
                Expect.equal (changed 0L) (Some(set [ "a"; "b" ])) "everything since the start"
                Expect.equal (changed s1) (Some(set [ "a"; "b" ])) "a was rewritten after s1"
                Expect.equal (changed (stamp ())) (Some Set.empty) "nothing since now"
                Expect.isNone (changed (stamp () + 1L)) "a stamp from the future: unknown"
                Expect.isNone (changed -1L) "a negative stamp: unknown"
            }

            test "a refused conditional write leaves the stamp alone; an accepted one moves it" {
                let b = MemoryValueBackend<string>(Codecs.String)
                b.SetAsync("a", "1", none).AsTask() |> awaitUnit
                let before = b.GetChangeStampAsync(none).AsTask() |> await

                let refused = b.SetIfCurrentAsync("a", "other", true, "x", none).AsTask() |> await

                Expect.isFalse refused "stale expectation refused"

                Expect.equal
                    (b.GetChangeStampAsync(none).AsTask() |> await)
                    before
                    "no write, no move"

                let accepted = b.SetIfCurrentAsync("a", "1", true, "2", none).AsTask() |> await

                Expect.isTrue accepted "current expectation accepted"
                Expect.isGreaterThan (b.GetChangeStampAsync(none).AsTask() |> await) before "moved"
            }
        ]

let private quietPassReadsNothing =
    test
        "a quiet pass reads no value and no key; an edit is read alone and reaches the other device" {
        use server = start Sqlite
        let backend = RecordingBackend [ "a"; "b"; "c" ]
        backend.Write("a", "one")
        backend.Write("b", "two")
        let engine = openEngine server "tracker" (new MemoryStore()) backend

        try
            sync engine
            Expect.equal backend.Snapshots 1 "the first pass of an engine takes a full snapshot"
            backend.ResetCounters()
            sync engine
            sync engine

            Expect.equal
                (backend.Snapshots, backend.KeyCalls, backend.Reads.Count)
                (0, 0, 0)
                "quiet passes read nothing"

            backend.Write("b", "two, edited")
            backend.ResetCounters()
            sync engine
            Expect.equal backend.Snapshots 0 "no snapshot after one edit"

            Expect.equal
                (backend.Reads |> Seq.distinct |> List.ofSeq)
                [ "b" ]
                "only the written key is read"

            let other = RecordingBackend [ "a"; "b"; "c" ]
            let second = openEngine server "tracker" (new MemoryStore()) other

            try
                sync second

                Expect.equal
                    (other.Value "a", other.Value "b")
                    (Some "one", Some "two, edited")
                    "the edit arrived"
                // The other device's own downloads are not local edits: nothing is uploaded back.
                other.ResetCounters()
                sync second
                Expect.equal other.Snapshots 0 "applied downloads need no snapshot"
            finally
                second.DisposeAsync().AsTask() |> awaitUnit
        finally
            engine.DisposeAsync().AsTask() |> awaitUnit
    }

let private forgetfulBackend =
    test "a backend that cannot tell what changed gets a full snapshot, and its edits still sync" {
        use server = start Sqlite
        let backend = RecordingBackend [ "a"; "b" ]
        backend.Write("a", "one")
        let engine = openEngine server "forgetful" (new MemoryStore()) backend

        try
            sync engine
            backend.Forgetful <- true
            backend.Write("a", "one, edited")
            backend.ResetCounters()
            sync engine
            Expect.equal backend.Snapshots 1 "full snapshot when the history is unknown"
            let other = RecordingBackend [ "a"; "b" ]
            let second = openEngine server "forgetful" (new MemoryStore()) other

            try
                sync second
                Expect.equal (other.Value "a") (Some "one, edited") "the edit arrived"
            finally
                second.DisposeAsync().AsTask() |> awaitUnit
        finally
            engine.DisposeAsync().AsTask() |> awaitUnit
    }

let private keyEntersScope =
    test "a value that enters the scope without being written is uploaded" {
        use server = start Sqlite
        let backend = RecordingBackend [ "a" ]
        backend.Write("a", "in scope")
        backend.Write("late", "written while out of scope")
        let engine = openEngine server "widening" (new MemoryStore()) backend

        let outside () =
            let mutable e = Unchecked.defaultof<SyncEvent>
            let keys = List<string>()

            while engine.Events.TryRead(&e) do
                if e.Type = SyncEventType.KeyOutsideScope then
                    keys.Add e.Key

            List.ofSeq keys

        try
            sync engine

            Expect.equal
                (outside ())
                [ "late" ]
                "the snapshot key outside the scope is reported (docs/engine.md §12.18)"

            backend.Write("late", "written again while out of scope")
            sync engine
            Expect.equal (outside ()) [] "once per key"
            backend.Widen "late"
            sync engine
            let other = RecordingBackend [ "a"; "late" ]
            let second = openEngine server "widening" (new MemoryStore()) other

            try
                sync second

                Expect.equal
                    (other.Value "late")
                    (Some "written again while out of scope")
                    "uploaded once in scope"
            finally
                second.DisposeAsync().AsTask() |> awaitUnit
        finally
            engine.DisposeAsync().AsTask() |> awaitUnit
    }

let private editsWhileClosed =
    test "edits made while no engine ran are found by the next engine on the same store" {
        use server = start Sqlite
        let path = StoreTests.tempFile ()
        let backend = RecordingBackend [ "a" ]
        backend.Write("a", "before")

        let run () =
            let store = SqliteStore.OpenAsync(path) |> await
            let engine = openEngine server "closed" store backend

            try
                sync engine
            finally
                engine.DisposeAsync().AsTask() |> awaitUnit

        run ()
        backend.Write("a", "while closed")
        run ()
        let other = RecordingBackend [ "a" ]
        let second = openEngine server "closed" (new MemoryStore()) other

        try
            sync second
            Expect.equal (other.Value "a") (Some "while closed") "the edit made offline arrived"
        finally
            second.DisposeAsync().AsTask() |> awaitUnit
    }

let tests =
    testList
        "change tracking"
        [
            memoryBackendStamps
            quietPassReadsNothing
            forgetfulBackend
            keyEntersScope
            editsWhileClosed
        ]
