/// Events never leak and reach every subscriber: bounded subscriptions that drop the oldest, nothing
/// kept without a subscriber, the same sequence for every reader.
module BitBoxSync.Engine.Tests.EventTests

open System
open Expecto
open BitBoxSync
open BitBoxSync.Storage
open BitBoxSync.Server.Tests.Harness

/// An engine that never touches the network (events are emitted directly).
let private offline () =
    let client = new SyncClient(Uri "http://127.0.0.1:9/")

    SyncEngine.OpenAsync(
        SyncEngineOptions(Client = client, Identity = DummyKeystore.FromLabel "events", Store = new MemoryStore())
    )
    |> await

let private emit (engine: SyncEngine) (i: int) =
    engine.Emit(SyncEventType.ItemChanged, key = string i)

let private readAll (reader: Threading.Channels.ChannelReader<SyncEvent>) =
    [
        let mutable e = Unchecked.defaultof<SyncEvent>

        while reader.TryRead(&e) do
            e.Key
    ]

let private memory () =
    GC.Collect()
    GC.WaitForPendingFinalizers()
    GC.Collect()
    GC.GetTotalMemory true

let tests =
    testList
        "events"
        [
            test "1 000 000 events with no subscriber keep memory flat; an unread default stream stays bounded" {
                let engine = offline ()
                let before = memory ()

                for i in 1..1_000_000 do
                    emit engine i

                let grown = memory () - before
                Expect.isLessThan grown (1L <<< 20) $"no subscriber: {grown} bytes more"
                let _ = engine.Events // the default stream from now on, never read
                let before = memory ()

                for i in 1..1_000_000 do
                    emit engine i

                let grown = memory () - before
                Expect.isLessThan grown (2L <<< 20) $"unread default stream: {grown} bytes more"
                Expect.equal engine.DroppedEvents (1_000_000L - int64 SyncEngine.DefaultEventCapacity) "oldest dropped, counted"
                Expect.equal (readAll engine.Events |> List.head) (string (1_000_000 - SyncEngine.DefaultEventCapacity + 1)) "the newest kept"
                engine.DisposeAsync().AsTask() |> awaitUnit
            }

            test "two subscribers see the same sequence; a disposed one stops; a slow one drops its oldest" {
                let engine = offline ()
                use first = engine.Subscribe()
                use second = engine.Subscribe()
                use small = engine.Subscribe 10

                for i in 1..100 do
                    emit engine i

                let expected = [ for i in 1..100 -> string i ]
                Expect.equal (readAll first.Reader) expected "first reader: everything, in order"
                Expect.equal (readAll second.Reader) expected "second reader: the same"
                Expect.equal (readAll small.Reader) [ for i in 91..100 -> string i ] "bounded: the newest 10"
                Expect.equal small.Dropped 90L "90 dropped, counted"
                first.Dispose()
                emit engine 101
                Expect.isTrue first.Reader.Completion.IsCompleted "a disposed subscription is completed"
                Expect.equal (readAll second.Reader) [ "101" ] "the other keeps receiving"

                Expect.throwsT<ArgumentOutOfRangeException>
                    (fun () -> engine.Subscribe 0 |> ignore)
                    "a capacity below 1 is refused"

                engine.DisposeAsync().AsTask() |> awaitUnit

                Expect.isTrue
                    (second.Reader.Completion.Wait(TimeSpan.FromSeconds 5.0))
                    "subscriptions complete with the engine"

                Expect.isTrue
                    (engine.Subscribe().Reader.Completion.Wait(TimeSpan.FromSeconds 5.0))
                    "a subscription after disposal is already complete"
            }
        ]
