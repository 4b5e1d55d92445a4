/// docs/engine.md §11 lines that need exact request counts or answers a real server never gives
/// (rollbacks, inconsistent maps): a scripted fake API on 127.0.0.1, a pre-seeded store (a default
/// namespace cached with a known DEK at head 0, a token valid for 48 h), as the upstream tests do.
module BitBoxSync.Engine.Tests.ScriptedTests

open System
open System.Collections.Concurrent
open System.IO
open System.Security.Cryptography
open System.Threading.Tasks
open Microsoft.AspNetCore.Builder
open Microsoft.AspNetCore.Hosting
open Microsoft.AspNetCore.Http
open Microsoft.Extensions.Logging
open Expecto
open BitBoxSync
open BitBoxSync.Protocol
open BitBoxSync.Protocol.Wire
open BitBoxSync.Storage
open BitBoxSync.Server.Tests.Harness

/// A fake API: answers by (method, path) from a script; counts every request.
type FakeApi() =
    let calls = ConcurrentQueue<string * string>()
    let routes = ConcurrentDictionary<string, HttpContext -> (int * string)>()

    let app =
        let builder = WebApplication.CreateSlimBuilder()
        builder.Logging.ClearProviders() |> ignore
        builder.WebHost.UseUrls("http://127.0.0.1:0") |> ignore
        let app = builder.Build()

        app.Run(fun http ->
            task {
                let key = http.Request.Method + " " + http.Request.Path.Value
                calls.Enqueue(http.Request.Method, http.Request.Path.Value)

                let status, body =
                    match routes.TryGetValue key with
                    | true, f -> f http
                    | _ -> 404, """{"error":"not scripted"}"""

                http.Response.StatusCode <- status
                http.Response.ContentType <- "application/json"
                do! http.Response.WriteAsync body
            }
            :> Task)

        app.StartAsync() |> awaitUnit
        app

    member _.Address = Uri(app.Urls |> Seq.head)

    member _.On(methodName: string, path: string, answer: HttpContext -> int * string) =
        routes[methodName + " " + path] <- answer

    member this.Always(methodName, path, status: int, body: string) =
        this.On(methodName, path, (fun _ -> status, body))

    member _.Count(methodName: string, path: string) =
        calls |> Seq.filter (fun (m, p) -> m = methodName && p = path) |> Seq.length

    member _.Calls = List.ofSeq calls

    interface IDisposable with
        member _.Dispose() =
            app.DisposeAsync().AsTask() |> awaitUnit

let private ok what (r: Result<'T, 'E>) =
    match r with
    | Ok v -> v
    | Error e -> failwithf "%s: %A" what e

/// The seeded world: a key, a cached default namespace with a known DEK, a valid token.
type World =
    {
        Api: FakeApi
        Store: MemoryStore
        Engine: SyncEngine
        Client: SyncClient
        KeyId: string
        Ns: NamespaceId
        Dek: Dek
        Keys: NamespaceKeys
        Backend: MemoryValueBackend<string>
    }

    member w.NsWire = w.Ns.Wire

    member w.ItemId(key: string) =
        (Core.LogicalKey.itemId w.Keys "notes" key).Wire

    member w.KvPath(key: string) =
        "/v1/kv/" + w.NsWire + "/" + w.ItemId key

    /// The GET answer of an item at a version.
    member w.ItemJson(key: string, version: uint64, value: string) =
        let item = Core.LogicalKey.itemId w.Keys "notes" key

        let nonce =
            Bin.ofBytes<ItemNonceKind>(RandomNumberGenerator.GetBytes 24) |> ok "nonce"

        let s =
            ItemCrypto.seal
                w.Keys
                w.Ns
                item
                version
                nonce
                (ReadOnlySpan(Text.Encoding.UTF8.GetBytes value))
            |> ok "seal"

        Json.serialize (
            {
                NamespaceId = w.NsWire
                ItemId = item.Wire
                Version = version
                Nonce = s.Nonce.Wire
                Aad = s.Aad.Wire
                Ciphertext = s.Ciphertext.Wire
            }
            : GetItemResponse
        )

    member w.List(heads: (string * string * uint64) list) =
        Json.serialize (
            {
                Namespaces =
                    [|
                        for id, kind, head in heads ->
                            { NamespaceId = id; Kind = kind; NamespaceHead = head }
                    |]
            }
            : ListNamespacesResponse
        )

    member w.Map(head: uint64, items: (string * uint64) list) =
        let d = Collections.Generic.Dictionary<string, ItemVersion>()

        for key, v in items do
            d[w.ItemId key] <- { Version = v }

        Json.serialize (
            { NamespaceId = w.NsWire; NamespaceHead = head; Items = d }: GetNamespaceItemsResponse
        )

    /// Scripts the server's view of the world's namespace: its listed head and its item map.
    member w.Serve(listedHead: uint64, mapHead: uint64, items: (string * uint64) list) =
        w.Api.Always("GET", "/v1/namespaces/mine", 200, w.List [ w.NsWire, "default", listedHead ])
        w.Api.Always("GET", $"/v1/namespaces/{w.NsWire}/items", 200, w.Map(mapHead, items))

    /// Scripts a listed head equal to the item map's head.
    member w.Serve(head: uint64, items: (string * uint64) list) = w.Serve(head, head, items)

    member w.Seed(rows: ItemRecord list) =
        w.Store.SaveAsync(StoreWrite(Items = Array.ofList rows)).AsTask() |> awaitUnit

    member w.Row(key: string) =
        w.Store.GetItemByLogicalKeyAsync(w.KeyId, w.NsWire, "notes", key).AsTask()
        |> await

    member w.Head() =
        (w.Store.GetNamespaceAsync(w.KeyId, w.NsWire).AsTask() |> await).Head

    member w.Sync() = w.Engine.SyncNowAsync() |> awaitUnit

    /// Caches a namespace with the world's DEK (kind may be null: not yet known).
    member w.Cache(ns: string, kind: string, head: uint64) =
        w.Store
            .SaveAsync(
                StoreWrite(
                    Namespaces =
                        [|
                            NamespaceRecord(
                                KeyId = w.KeyId,
                                NamespaceId = ns,
                                Kind = kind,
                                Head = head,
                                Dek = Bin.toArray w.Dek
                            )
                        |]
                )
            )
            .AsTask()
        |> awaitUnit

    interface IDisposable with
        member w.Dispose() =
            w.Engine.DisposeAsync().AsTask() |> awaitUnit
            w.Client.Dispose()
            (w.Api :> IDisposable).Dispose()

let private t100 = DateTimeOffset.FromUnixTimeSeconds 100L

/// A challenge answer (spam control none).
let challengeJson (challenge: string) =
    sprintf
        """{"challenge":"%s","expiresAt":"2030-01-01T00:00:00Z","spamControl":{"kind":"none"}}"""
        challenge

let worldWith
    (configure: SyncEngineOptions -> unit)
    (keys: string list)
    (merge: MergeFunction<string>)
    (initial: (string * string) list)
    =
    let api = new FakeApi()
    let store = new MemoryStore()
    let id = BitBoxSync.DummyKeystore.FromLabel "scripted"
    let ns = Bin.ofBytes<NamespaceIdKind>(RandomNumberGenerator.GetBytes 16) |> ok "ns"
    let dek = Bin.ofBytes<DekKind>(RandomNumberGenerator.GetBytes 32) |> ok "dek"

    store.SaveAsync(
        StoreWrite(
            Identity =
                IdentityRecord(
                    KeyId = id.KeyId,
                    AccessToken = "valid-token",
                    TokenExpiry = Nullable(DateTimeOffset.UtcNow.AddHours 48.0),
                    DefaultNamespaceId = ns.Wire
                ),
            Namespaces =
                [|
                    NamespaceRecord(
                        KeyId = id.KeyId,
                        NamespaceId = ns.Wire,
                        Kind = "default",
                        Head = 0UL,
                        Dek = Bin.toArray dek
                    )
                |]
        )
    )
    |> fun t -> t.AsTask() |> awaitUnit

    let client = new SyncClient(api.Address)
    let options = SyncEngineOptions(Client = client, Identity = id, Store = store)
    configure options

    let engine = SyncEngine.OpenAsync options |> await |> withEvents

    let handle = engine.DefaultNamespaceAsync() |> await
    let values = Collections.Generic.Dictionary<string, string>()

    for k, v in initial do
        values[k] <- v

    let backend = MemoryValueBackend<string>(Codecs.String, values, keys)

    handle.OpenCollection(
        "notes",
        CollectionOptions<string>(Codec = Codecs.String, Merge = merge, Backend = backend)
    )
    |> ignore

    {
        Api = api
        Store = store
        Engine = engine
        Client = client
        KeyId = id.KeyId
        Ns = ns
        Dek = dek
        Keys = NamespaceKeys.derive dek
        Backend = backend
    }

let world keys merge initial = worldWith ignore keys merge initial

let row (w: World) key version baseVersion (baseValue: string) dirty =
    ItemRecord(
        KeyId = w.KeyId,
        NamespaceId = w.NsWire,
        Collection = "notes",
        Key = key,
        ItemId = w.ItemId key,
        Version = version,
        BaseVersion = baseVersion,
        BaseValue =
            (if isNull baseValue then
                 null
             else
                 Text.Encoding.UTF8.GetBytes baseValue),
        Dirty = dirty,
        UpdatedAt = t100
    )

/// Waits for a cancelled RunAsync to end (its cancellation is expected).
let private stopped (run: Task) =
    try
        run.Wait(TimeSpan.FromSeconds 10.0) |> ignore
    with _ ->
        ()

let private messageOf (f: unit -> unit) =
    try
        f ()
        ""
    with e ->
        e.GetType().Name + ": " + e.Message

let tests =
    testList
        "checklist docs/engine.md §11 (scripted server)"
        [
            test "TestSyncNamespacesRejectsCachedNamespaceDisappearance" {
                use w = world [ "k" ] (Merges.NoMerge()) []

                w.Cache(w.NsWire, "default", 4UL)

                w.Api.Always("GET", "/v1/namespaces/mine", 200, w.List [])
                Expect.stringStarts (messageOf w.Sync) "RollbackDetectedException" "rollback"
                Expect.equal (w.Head()) 4UL "cached head unchanged"
            }

            test "TestSyncNamespacesRejectsMultipleDefaultNamespaces" {
                use w = world [ "k" ] (Merges.NoMerge()) []
                let other = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes 16)

                w.Api.Always(
                    "GET",
                    "/v1/namespaces/mine",
                    200,
                    w.List [ w.NsWire, "default", 0UL; other, "default", 0UL ]
                )

                Expect.stringContains (messageOf w.Sync) "multiple default namespaces" "refused"
            }

            test "TestSyncNamespacesRejectsDefaultNamespaceMismatch" {
                use w = world [ "k" ] (Merges.NoMerge()) []
                let other = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes 16)

                w.Api.Always(
                    "GET",
                    "/v1/namespaces/mine",
                    200,
                    w.List [ w.NsWire, "shared", 0UL; other, "default", 0UL ]
                )

                Expect.stringStarts
                    (messageOf w.Sync)
                    "RollbackDetectedException"
                    "the default changed: rollback"
            }

            test "TestSyncNamespaceItemsRejectsSnapshotBehindExpectedHead" {
                use w = world [ "k" ] (Merges.NoMerge()) []
                w.Serve(5UL, 4UL, [])

                Expect.stringStarts
                    (messageOf w.Sync)
                    "RollbackDetectedException"
                    "map head below the listed head"

                Expect.equal (w.Head()) 0UL "head unchanged"
            }

            test "TestSyncNamespaceItemsDetectsDisappearedKnownItemAsRollback" {
                use w = world [ "k" ] (Merges.NoMerge()) [ "k", "v" ]
                w.Seed [ row w "k" 2UL 2UL "v" false ]

                w.Cache(w.NsWire, "default", 4UL)

                w.Serve(5UL, [])

                Expect.stringStarts
                    (messageOf w.Sync)
                    "RollbackDetectedException"
                    "a known item vanished"

                Expect.equal (w.Head(), (w.Row "k").Version) (4UL, 2UL) "head and row unchanged"
            }

            test "TestFetchAndApplyRemoteItemUsesFetchedVersion" {
                use w = world [ "k" ] (Merges.NoMerge()) []
                w.Serve(2UL, [ "k", 2UL ])

                w.Api.Always("GET", (w.KvPath "k"), 200, w.ItemJson("k", 3UL, "v3"))
                w.Sync()
                let r = w.Row "k"
                Expect.equal (r.Version, r.BaseVersion) (3UL, 3UL) "stored at the fetched version"

                Expect.equal
                    ((w.Backend.GetAsync("k", Threading.CancellationToken.None).AsTask() |> await)
                        .Value)
                    "v3"
                    "the v3 value applied"
            }

            test "TestUploadConflictRejectsFetchedRollbackVersion" {
                use w = world [ "k" ] (Merges.PreferLocal()) [ "k", "local" ]
                w.Seed [ row w "k" 2UL 2UL "base" true ]
                w.Serve(0UL, [ "k", 2UL ])

                w.Api.Always("PUT", (w.KvPath "k"), 412, """{"error":"version"}""")
                w.Api.Always("GET", w.KvPath "k", 200, w.ItemJson("k", 1UL, "old"))

                Expect.stringStarts
                    (messageOf w.Sync)
                    "RollbackDetectedException"
                    "fetched version below the row's"

                let r = w.Row "k"
                Expect.equal (r.Dirty, r.Version, r.BaseVersion) (true, 2UL, 2UL) "row unchanged"
            }

            test "TestResolvedUploadConflictRefreshesWhenRetryAlsoConflicts" {
                use w = world [ "k" ] (Merges.PreferLocal()) [ "k", "local" ]
                w.Seed [ row w "k" 1UL 1UL "base" true ]
                w.Serve(0UL, [ "k", 1UL ])

                w.Api.Always("PUT", (w.KvPath "k"), 412, """{"error":"version"}""")
                let mutable gets = 0

                w.Api.On(
                    "GET",
                    (w.KvPath "k"),
                    fun _ ->
                        gets <- gets + 1
                        200, w.ItemJson("k", uint64 (gets + 1), $"remote v{gets + 1}")
                )

                w.Sync()
                Expect.equal (w.Api.Count("PUT", (w.KvPath "k"))) 2 "no third PUT"
                Expect.equal gets 2 "two fetches"
                let r = w.Row "k"

                Expect.equal
                    (r.Dirty, r.Conflict, r.Version, r.BaseVersion)
                    (true, false, 3UL, 3UL)
                    "dirty, no conflict, at the second fetch's version"
            }

            test "TestSyncNamespacesSkipsInactiveScopedItemsAndAdvancesHead" {
                use w = world [ "active" ] (Merges.NoMerge()) []
                w.Seed [ row w "inactive" 1UL 1UL "old" false ]
                w.Serve(3UL, [ "inactive", 2UL ])

                w.Sync()

                Expect.equal
                    (w.Api.Count("GET", (w.KvPath "inactive")))
                    0
                    "no GET of an inactive item"

                Expect.equal
                    ((w.Row "inactive").Version, w.Head())
                    (1UL, 3UL)
                    "row unchanged, head advanced"
            }

            test "TestSyncNamespacesRejectsInactiveItemDisappearance" {
                use w = world [ "active" ] (Merges.NoMerge()) []
                w.Seed [ row w "inactive" 1UL 1UL "old" false ]
                w.Serve(3UL, [])

                Expect.stringStarts
                    (messageOf w.Sync)
                    "RollbackDetectedException"
                    "an inactive item still counts"

                Expect.equal
                    (w.Head(), (w.Row "inactive").Version)
                    (0UL, 1UL)
                    "head and row unchanged"
            }

            test "TestFlushDirtyItemsSkipsInactiveScopedItems" {
                use w = world [ "active" ] (Merges.NoMerge()) [ "inactive", "changed" ]
                w.Seed [ row w "inactive" 1UL 1UL "old" true ]
                w.Serve(0UL, [ "inactive", 1UL ])

                w.Sync()
                Expect.equal (w.Api.Count("PUT", (w.KvPath "inactive"))) 0 "not uploaded"

                Expect.equal
                    ((w.Row "inactive").Dirty, (w.Row "inactive").Version)
                    (true, 1UL)
                    "unchanged"
            }

            test "TestFlushDirtyItemsSkipsOversizedValueAndContinues" {
                let big = String('x', 65536)
                use w = world [ "big"; "small" ] (Merges.NoMerge()) [ "big", big; "small", "s" ]
                w.Serve(0UL, [])

                w.Api.On(
                    "PUT",
                    (w.KvPath "small"),
                    fun http ->
                        let createOnly = not (http.Request.Headers.ContainsKey "If-Match")

                        (if createOnly then 200 else 400),
                        Json.serialize (
                            {
                                NamespaceId = w.NsWire
                                ItemId = w.ItemId "small"
                                Version = 1UL
                            }
                            : PutItemResponse
                        )
                )

                w.Sync()

                Expect.equal
                    (w.Api.Count("PUT", (w.KvPath "big")))
                    0
                    "64 KiB of plaintext is not uploaded"

                let b = w.Row "big"
                Expect.equal (b.Dirty, b.Version, b.Conflict) (true, 0UL, false) "stays dirty"

                Expect.equal
                    ((w.Row "small").Version, (w.Row "small").Dirty)
                    (1UL, false)
                    "the next item uploaded without If-Match"

                let q = w.Engine.QuarantinedItems |> Seq.find (fun q -> q.Key = "big")

                Expect.stringContains
                    q.Error
                    "over the 65520-byte item limit"
                    "and the skip is visible, readably"

                let quarantinedEvents () =
                    let mutable e = Unchecked.defaultof<SyncEvent>
                    let mutable n = 0

                    while w.Engine.Events.TryRead(&e) do
                        if e.Type = SyncEventType.ItemQuarantined then
                            n <- n + 1

                    n

                Expect.equal (quarantinedEvents ()) 1 "one event"
                w.Serve(1UL, [ "small", 1UL ])

                w.Sync()
                Expect.equal (quarantinedEvents ()) 0 "not repeated while the error is the same"
            }

            test "TestListNamespacesRelogsInAfterUnauthorizedToken" {
                use w = world [ "k" ] (Merges.NoMerge()) []
                let mutable lists = 0

                w.Api.On(
                    "GET",
                    "/v1/namespaces/mine",
                    fun http ->
                        lists <- lists + 1

                        if http.Request.Headers.Authorization.ToString() = "Bearer valid-token" then
                            401, """{"error":"revoked"}"""
                        else
                            200, w.List [ w.NsWire, "default", 0UL ]
                )

                w.Api.Always("GET", $"/v1/namespaces/{w.NsWire}/items", 200, w.Map(0UL, []))
                let id = BitBoxSync.DummyKeystore.FromLabel "scripted"
                let challenge = Convert.ToBase64String(RandomNumberGenerator.GetBytes 32)

                w.Api.Always("POST", "/v1/auth/challenge", 200, challengeJson challenge)

                w.Api.Always(
                    "POST",
                    "/v1/auth/login",
                    200,
                    sprintf
                        """{"kind":"keystore","accessToken":"fresh-token","expiresAt":"2030-01-01T00:00:00Z","defaultNamespaceId":"%s"}"""
                        w.NsWire
                )

                let listed = w.Engine.ListNamespacesAsync() |> await

                Expect.equal
                    (listed |> Seq.map (fun n -> n.NamespaceId) |> List.ofSeq)
                    [ w.NsWire ]
                    "the namespace"

                Expect.equal
                    (w.Api.Count("POST", "/v1/auth/login"), lists)
                    (1, 2)
                    "one login, the list retried once"

                Expect.equal
                    (w.Store.LoadIdentityAsync(id.KeyId).AsTask() |> await).AccessToken
                    "fresh-token"
                    "new token stored"
            }

            test "TestSyncNamespacesReconcilesActiveScopeChangeAtCurrentHead" {
                use w = world [ "remote-only" ] (Merges.NoMerge()) []

                w.Cache(w.NsWire, "default", 7UL)

                w.Serve(7UL, [ "remote-only", 1UL ])

                w.Api.Always(
                    "GET",
                    w.KvPath "remote-only",
                    200,
                    w.ItemJson("remote-only", 1UL, "from the server")
                )

                w.Sync()

                Expect.equal
                    ((w.Backend.GetAsync("remote-only", Threading.CancellationToken.None).AsTask()
                      |> await)
                        .Value)
                    "from the server"
                    "the scope change fetched the map at the same head"

                Expect.isFalse
                    (String.IsNullOrEmpty
                        (w.Store.GetNamespaceAsync(w.KeyId, w.NsWire).AsTask() |> await)
                            .ActiveScopeHash)
                    "the new scope hash is stored"
            }

            test "TestSyncNamespacesSkipsUnregisteredCachedItems" {
                use w = world [ "k" ] (Merges.NoMerge()) []

                let other =
                    ItemRecord(
                        KeyId = w.KeyId,
                        NamespaceId = w.NsWire,
                        Collection = "not-opened",
                        Key = "x",
                        ItemId = String('e', 64),
                        Version = 1UL,
                        BaseVersion = 1UL,
                        UpdatedAt = t100
                    )

                w.Seed [ other ]
                w.Api.Always("GET", "/v1/namespaces/mine", 200, w.List [ w.NsWire, "default", 2UL ])
                let map = Collections.Generic.Dictionary<string, ItemVersion>()
                map[String('e', 64)] <- { Version = 2UL }

                w.Api.Always(
                    "GET",
                    $"/v1/namespaces/{w.NsWire}/items",
                    200,
                    Json.serialize (
                        { NamespaceId = w.NsWire; NamespaceHead = 2UL; Items = map }
                        : GetNamespaceItemsResponse
                    )
                )

                let events = Collections.Generic.List<SyncEvent>()
                w.Sync()
                let mutable e = Unchecked.defaultof<SyncEvent>

                while w.Engine.Events.TryRead(&e) do
                    events.Add e

                Expect.equal
                    (w.Api.Count("GET", "/v1/kv/" + w.NsWire + "/" + String('e', 64)))
                    0
                    "not downloaded"

                Expect.isFalse
                    (events |> Seq.exists (fun e -> e.Type = SyncEventType.UnknownRemoteItem))
                    "not reported unknown"

                Expect.equal (w.Head()) 2UL "head advanced"
            }

            test "TestFlushDirtyItemsSkipsUnregisteredCollections" {
                use w = world [ "k" ] (Merges.NoMerge()) []

                let other =
                    ItemRecord(
                        KeyId = w.KeyId,
                        NamespaceId = w.NsWire,
                        Collection = "not-opened",
                        Key = "x",
                        ItemId = String('e', 64),
                        Version = 1UL,
                        BaseVersion = 1UL,
                        Dirty = true,
                        UpdatedAt = t100
                    )

                w.Seed [ other ]
                w.Api.Always("GET", "/v1/namespaces/mine", 200, w.List [ w.NsWire, "default", 0UL ])
                let map = Collections.Generic.Dictionary<string, ItemVersion>()
                map[String('e', 64)] <- { Version = 1UL }

                w.Api.Always(
                    "GET",
                    $"/v1/namespaces/{w.NsWire}/items",
                    200,
                    Json.serialize (
                        { NamespaceId = w.NsWire; NamespaceHead = 0UL; Items = map }
                        : GetNamespaceItemsResponse
                    )
                )

                w.Sync()
                Expect.isEmpty (w.Api.Calls |> List.filter (fun (m, _) -> m = "PUT")) "no upload"

                let stored =
                    w.Store.GetItemByIdAsync(w.KeyId, w.NsWire, String('e', 64)).AsTask() |> await

                Expect.equal (stored.Dirty, stored.Version) (true, 1UL) "left untouched"
            }

            test "TestConcurrentCreateWithoutMergeBaseRecordsConflictForStrictCodec" {
                use w = world [ "k" ] (Merges.NoMerge()) [ "k", "local" ]
                w.Serve(0UL, [])

                w.Api.On(
                    "PUT",
                    w.KvPath "k",
                    fun http ->
                        Expect.isFalse
                            (http.Request.Headers.ContainsKey "If-Match")
                            "a create has no If-Match"

                        412, """{"error":"exists"}"""
                )

                w.Api.Always("GET", w.KvPath "k", 200, w.ItemJson("k", 1UL, "remote"))
                w.Sync()
                let r = w.Row "k"

                Expect.equal
                    (r.Conflict, r.ConflictRemoteVersion, r.Version)
                    (true, 1UL, 1UL)
                    "a conflict at remote version 1"

                Expect.isNull r.BaseValue "no base"

                Expect.equal
                    ((w.Backend.GetAsync("k", Threading.CancellationToken.None).AsTask() |> await)
                        .Value)
                    "local"
                    "the local value kept"
            }

            test "TestSubmitJoinRequestAcceptsExistingPendingResponse" {
                use w = world [ "k" ] (Merges.NoMerge()) []
                let nsId = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes 16)
                let inviteId = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes 16)
                let otherInvite = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes 16)
                let otherHash = String('7', 64)

                let invite =
                    Invite(
                        1,
                        "https://sync.test",
                        nsId,
                        inviteId,
                        DateTimeOffset.UtcNow.AddMinutes(30.0).ToUnixTimeSeconds(),
                        Base64Url.encode (RandomNumberGenerator.GetBytes 32)
                    )

                let existing: SubmitNamespaceJoinRequestResponse =
                    {
                        NamespaceId = nsId
                        InviteId = otherInvite
                        RequesterKind = "keystore"
                        RequesterKeyId = w.KeyId
                        JoinRequestHash = otherHash
                        Status = "pending"
                    }

                w.Api.Always(
                    "POST",
                    $"/v1/namespaces/{nsId}/invites/{inviteId}/join-requests",
                    200,
                    Json.serialize existing
                )

                let r = w.Engine.SubmitJoinRequestAsync invite |> await

                Expect.equal
                    (r.InviteId, r.JoinRequestHash)
                    (otherInvite, otherHash)
                    "returned as-is"

                Expect.equal
                    (w.Api.Count("POST", $"/v1/namespaces/{nsId}/invites/{inviteId}/join-requests"))
                    1
                    "one submit"
            }

            test "TestSubmitJoinRequestRejectsNonCanonicalInviteOrigin" {
                use w = world [ "k" ] (Merges.NoMerge()) []

                let invite =
                    Invite(
                        1,
                        "https://sync.example:443",
                        String('1', 32),
                        String('2', 32),
                        DateTimeOffset.UtcNow.AddMinutes(30.0).ToUnixTimeSeconds(),
                        Base64Url.encode (Array.zeroCreate 32)
                    )

                Expect.stringContains
                    (messageOf (fun () -> w.Engine.SubmitJoinRequestAsync invite |> await |> ignore))
                    "canonical"
                    "refused"

                Expect.isEmpty w.Api.Calls "nothing sent"
            }

            test "TestCreateInviteRejectsResponseParameterMismatch" {
                use w = world [ "k" ] (Merges.NoMerge()) []
                let shared = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes 16)

                w.Cache(shared, "shared", 0UL)

                let handle = w.Engine.NamespaceAsync shared |> await
                let challenge = Convert.ToBase64String(RandomNumberGenerator.GetBytes 32)

                w.Api.Always("POST", "/v1/auth/challenge", 200, challengeJson challenge)

                for field, message in
                    [ "expiresAt", "expiry mismatch"; "maxAccepted", "maxAccepted mismatch" ] do
                    w.Api.On(
                        "POST",
                        $"/v1/namespaces/{shared}/invites",
                        fun http ->
                            use reader = new IO.StreamReader(http.Request.Body)

                            let body =
                                Text.Json.Nodes.JsonNode.Parse(
                                    reader.ReadToEndAsync().GetAwaiter().GetResult()
                                )

                            let answer =
                                Text.Json.Nodes.JsonObject(
                                    dict
                                        [
                                            "namespaceId",
                                            (Text.Json.Nodes.JsonValue.Create shared
                                            :> Text.Json.Nodes.JsonNode)
                                            "inviteId", body["inviteId"].DeepClone()
                                            "expiresAt",
                                            (if field = "expiresAt" then
                                                 Text.Json.Nodes.JsonValue.Create(
                                                     body["expiresAt"].GetValue<int64>() + 1L
                                                 )
                                                 :> Text.Json.Nodes.JsonNode
                                             else
                                                 body["expiresAt"].DeepClone())
                                            "maxAccepted",
                                            (if field = "maxAccepted" then
                                                 Text.Json.Nodes.JsonValue.Create 9
                                                 :> Text.Json.Nodes.JsonNode
                                             else
                                                 body["maxAccepted"].DeepClone())
                                        ]
                                )

                            200, answer.ToJsonString()
                    )

                    Expect.stringContains
                        (messageOf (fun () ->
                            handle.CreateInviteAsync(
                                InviteOptions(ServerOrigin = "https://sync.test")
                            )
                            |> await
                            |> ignore))
                        message
                        field
            }

            test "TestCreateInviteRejectsUnknownNamespaceKindBeforeChallenge" {
                use w = world [ "k" ] (Merges.NoMerge()) []
                let unknownKind = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes 16)

                w.Cache(unknownKind, null, 0UL)

                let handle = w.Engine.NamespaceAsync unknownKind |> await

                Expect.stringContains
                    (messageOf (fun () ->
                        handle.CreateInviteAsync(InviteOptions(ServerOrigin = "https://sync.test"))
                        |> await
                        |> ignore))
                    "expected shared"
                    "refused"

                Expect.equal (w.Api.Count("POST", "/v1/auth/challenge")) 0 "before any challenge"
            }

            test "TestJoinNamespaceAuthenticatesBeforeFetchingWrappedDEK" {
                use w = world [ "k" ] (Merges.NoMerge()) []
                w.Store.ForgetIdentitySecretsAsync(w.KeyId).AsTask() |> awaitUnit // no token
                let id = BitBoxSync.DummyKeystore.FromLabel "scripted"

                let joined =
                    Bin.ofBytes<NamespaceIdKind>(RandomNumberGenerator.GetBytes 16) |> ok "ns"

                let wrapKey =
                    Bin.ofBytes<WrapPublicKeyKind>(id.WrapPublicKey.ToArray()) |> ok "wrap"

                let wrapped =
                    DekWrap.wrap wrapKey joined w.Dek (RandomNumberGenerator.GetBytes 32)
                    |> ok "wrapped"

                let challenge = Convert.ToBase64String(RandomNumberGenerator.GetBytes 32)

                w.Api.Always("POST", "/v1/auth/challenge", 200, challengeJson challenge)

                w.Api.Always(
                    "POST",
                    "/v1/auth/login",
                    200,
                    """{"kind":"keystore","accessToken":"fresh-token","expiresAt":"2030-01-01T00:00:00Z","defaultNamespaceId":null}"""
                )

                w.Api.Always(
                    "GET",
                    "/v1/namespaces/mine",
                    200,
                    w.List [ joined.Wire, "shared", 3UL ]
                )

                w.Api.On(
                    "GET",
                    $"/v1/namespaces/{joined.Wire}/wrapped-deks/{w.KeyId}",
                    fun http ->
                        Expect.equal
                            (http.Request.Headers.Authorization.ToString())
                            "Bearer fresh-token"
                            "the fresh token"

                        200,
                        Json.serialize (
                            {
                                NamespaceId = joined.Wire
                                KeyId = w.KeyId
                                WrappedDek = wrapped.Wire
                            }
                            : GetWrappedDekResponse
                        )
                )

                // A fresh engine over the store without a token (the seeded engine keeps its token in memory).
                use client = new SyncClient(w.Api.Address)

                let engine =
                    SyncEngine.OpenAsync(
                        SyncEngineOptions(Client = client, Identity = id, Store = w.Store)
                    )
                    |> await

                let handle = engine.JoinNamespaceAsync joined.Wire |> await
                Expect.equal handle.Id joined.Wire "the namespace"

                Expect.equal
                    handle.Kind
                    "shared"
                    "the kind is known at once (from the namespace list)"

                Expect.equal
                    (w.Api.Calls |> List.map fst |> List.length,
                     w.Api.Count("POST", "/v1/auth/login"))
                    (4, 1)
                    "challenge, login, the namespace list, one DEK fetch"

                let cached = w.Store.GetNamespaceAsync(w.KeyId, joined.Wire).AsTask() |> await
                Expect.equal cached.Dek (Bin.toArray w.Dek) "the unwrapped DEK is cached"
            }

            test "TestUnresolvedMergeDoesNotEncodePlaceholderValue" {
                // A codec that refuses to encode empty strings (the placeholder an unresolved merge carries).
                let strict =
                    { new ICodec<string> with
                        member _.Encode v =
                            if String.IsNullOrEmpty v then
                                failwith "encoded a placeholder"
                            else
                                Codecs.String.Encode v

                        member _.Decode b = Codecs.String.Decode b
                    }

                let api = new FakeApi()
                let store = new MemoryStore()
                let id = BitBoxSync.DummyKeystore.FromLabel "scripted"
                let ns = Bin.ofBytes<NamespaceIdKind>(RandomNumberGenerator.GetBytes 16) |> ok "ns"
                let dek = Bin.ofBytes<DekKind>(RandomNumberGenerator.GetBytes 32) |> ok "dek"

                store
                    .SaveAsync(
                        StoreWrite(
                            Identity =
                                IdentityRecord(
                                    KeyId = id.KeyId,
                                    AccessToken = "valid-token",
                                    TokenExpiry = Nullable(DateTimeOffset.UtcNow.AddHours 48.0),
                                    DefaultNamespaceId = ns.Wire
                                ),
                            Namespaces =
                                [|
                                    NamespaceRecord(
                                        KeyId = id.KeyId,
                                        NamespaceId = ns.Wire,
                                        Kind = "default",
                                        Dek = Bin.toArray dek
                                    )
                                |]
                        )
                    )
                    .AsTask()
                |> awaitUnit

                use client = new SyncClient(api.Address)

                let engine =
                    SyncEngine.OpenAsync(
                        SyncEngineOptions(Client = client, Identity = id, Store = store)
                    )
                    |> await

                let handle = engine.DefaultNamespaceAsync() |> await
                let values = Collections.Generic.Dictionary<string, string>()
                values["k"] <- "local"

                handle.OpenCollection(
                    "notes",
                    CollectionOptions<string>(
                        Codec = strict,
                        Merge = Merges.NoMerge(),
                        Backend = MemoryValueBackend<string>(Codecs.String, values, [ "k" ])
                    )
                )
                |> ignore

                let w =
                    {
                        Api = api
                        Store = store
                        Engine = engine
                        Client = client
                        KeyId = id.KeyId
                        Ns = ns
                        Dek = dek
                        Keys = NamespaceKeys.derive dek
                        Backend = null
                    }

                api.Always("GET", "/v1/namespaces/mine", 200, w.List [ ns.Wire, "default", 0UL ])
                api.Always("GET", $"/v1/namespaces/{ns.Wire}/items", 200, w.Map(0UL, []))
                api.Always("PUT", w.KvPath "k", 412, """{"error":"exists"}""")
                api.Always("GET", w.KvPath "k", 200, w.ItemJson("k", 1UL, "remote"))
                engine.SyncNowAsync() |> awaitUnit

                Expect.isTrue
                    (w.Row "k").Conflict
                    "unresolved: a conflict, no encode of the placeholder"

                engine.DisposeAsync().AsTask() |> awaitUnit
                (api :> IDisposable).Dispose()
            }

            test "TestCreateInviteReturnsTokenAndSubmitsAction" {
                use w = world [ "k" ] (Merges.NoMerge()) []
                let shared = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes 16)

                w.Cache(shared, "shared", 0UL)

                let handle = w.Engine.NamespaceAsync shared |> await
                let inviteId = String('a', 32)
                let secret = Base64Url.encode (Array.init 32 byte)
                let challenge = Convert.ToBase64String(RandomNumberGenerator.GetBytes 32)
                let mutable challengeBody = ""
                let mutable inviteBody = ""

                w.Api.On(
                    "POST",
                    "/v1/auth/challenge",
                    fun http ->
                        use reader = new IO.StreamReader(http.Request.Body)
                        challengeBody <- reader.ReadToEndAsync().GetAwaiter().GetResult()

                        200, challengeJson challenge
                )

                w.Api.On(
                    "POST",
                    $"/v1/namespaces/{shared}/invites",
                    fun http ->
                        use reader = new IO.StreamReader(http.Request.Body)
                        inviteBody <- reader.ReadToEndAsync().GetAwaiter().GetResult()
                        let b = Text.Json.Nodes.JsonNode.Parse inviteBody

                        200,
                        sprintf
                            """{"namespaceId":"%s","inviteId":"%s","expiresAt":%d,"maxAccepted":%d}"""
                            shared
                            inviteId
                            (b["expiresAt"].GetValue<int64>())
                            (b["maxAccepted"].GetValue<int64>())
                )

                let invite =
                    handle.CreateInviteAsync(
                        InviteOptions(
                            ServerOrigin = "https://sync.example:443",
                            InviteId = inviteId,
                            InviteSecret = secret
                        )
                    )
                    |> await

                Expect.equal (w.Api.Count("POST", "/v1/auth/challenge")) 1 "exactly one challenge"
                let c = Text.Json.Nodes.JsonNode.Parse challengeBody

                Expect.equal
                    (c["purpose"].GetValue<string>(), c["action"].GetValue<string>())
                    ("sensitive-action", "create-namespace-invite")
                    "purpose and action"

                let serverHash =
                    InviteSecrets.serverSecretHash (
                        InviteSecrets.serverSecret (
                            Bin.parse<InviteSecretKind> secret |> ok "secret"
                        )
                    )

                let b = Text.Json.Nodes.JsonNode.Parse inviteBody

                Expect.equal
                    (b["inviteServerSecretHash"].GetValue<string>(),
                     b["challenge"].GetValue<string>(),
                     b["maxAccepted"].GetValue<int>())
                    (serverHash.Wire, challenge, 10)
                    "the body"

                let fields =
                    ActionFields.createInvite
                        {
                            NamespaceId = Bin.parse<NamespaceIdKind> shared |> ok "ns"
                            InviteId = Bin.parse<InviteIdKind> inviteId |> ok "i"
                            InviteServerSecretHash = serverHash
                            ExpiresAt = b["expiresAt"].GetValue<int64>()
                            MaxAccepted = 10
                        }

                Expect.equal
                    (c["actionFieldsHash"].GetValue<string>())
                    (ActionFields.hash fields).Wire
                    "the action-fields hash"

                Expect.equal
                    (invite.Version,
                     invite.ServerOrigin,
                     invite.NamespaceId,
                     invite.InviteId,
                     invite.InviteSecret)
                    (1, "https://sync.example", shared, inviteId, secret)
                    "the token (origin canonicalised)"
            }

            test "TestApproveJoinRequestSubmitsWrappedDEK" {
                use w = world [ "k" ] (Merges.NoMerge()) []

                let shared =
                    Bin.ofBytes<NamespaceIdKind>(RandomNumberGenerator.GetBytes 16) |> ok "ns"

                w.Cache(shared.Wire, "shared", 0UL)

                let handle = w.Engine.NamespaceAsync shared.Wire |> await
                use bob = Protocol.DummyKeystore.FromLabel "bob"
                let origin = ServerOrigin.parseCanonical "https://sync.example" |> ok "origin"

                let inviteIdBin =
                    Bin.ofBytes<InviteIdKind>(RandomNumberGenerator.GetBytes 16) |> ok "i"

                let secret =
                    Bin.ofBytes<InviteSecretKind>(RandomNumberGenerator.GetBytes 32) |> ok "s"

                let expiresAt = DateTimeOffset.UtcNow.AddMinutes(5.0).ToUnixTimeSeconds()

                let invite =
                    Invite(
                        1,
                        origin.Value,
                        shared.Wire,
                        inviteIdBin.Wire,
                        expiresAt + 60L,
                        secret.Wire
                    )

                let fields: JoinRequestFields =
                    {
                        NamespaceId = shared
                        InviteId = inviteIdBin
                        ServerOrigin = origin
                        Kind = IdentityKind.Keystore
                        KeyId = bob.KeyId
                        AuthPublicKey = bob.AuthPublicKey
                        WrapPublicKey = bob.WrapPublicKey
                        ExpiresAt = expiresAt
                    }

                let payload = JoinRequests.payload fields

                let signature =
                    bob.SignNamespaceJoinRequestIntent(shared, inviteIdBin, origin, expiresAt)
                    |> ok "sign"

                let hash = (JoinRequests.hash payload).Wire

                let entry: NamespaceJoinRequestEntry =
                    {
                        InviteId = inviteIdBin.Wire
                        JoinRequestHash = hash
                        CreatedAt = "2026-11-24T12:00:00Z"
                        Status = "pending"
                        JoinRequest =
                            {
                                Version = 1L
                                NamespaceId = shared.Wire
                                InviteId = inviteIdBin.Wire
                                ServerOrigin = origin.Value
                                Kind = "keystore"
                                KeyId = bob.KeyId.Wire
                                AuthPublicKey = bob.AuthPublicKey.Wire
                                WrapPublicKey = bob.WrapPublicKey.Wire
                                ExpiresAt = expiresAt
                                Signature = signature.Wire
                                InviteProof = (InviteSecrets.proof secret payload).Wire
                            }
                    }

                let path =
                    $"/v1/namespaces/{shared.Wire}/join-requests/{bob.KeyId.Wire}/{hash}/approve"

                let mutable body = ""

                w.Api.On(
                    "PUT",
                    path,
                    fun http ->
                        Expect.equal
                            (http.Request.Headers.Authorization.ToString())
                            "Bearer valid-token"
                            "bearer"

                        use reader = new IO.StreamReader(http.Request.Body)
                        body <- reader.ReadToEndAsync().GetAwaiter().GetResult()

                        200,
                        sprintf
                            """{"namespaceId":"%s","memberKind":"keystore","memberKeyId":"%s","joinRequestHash":"%s"}"""
                            shared.Wire
                            bob.KeyId.Wire
                            hash
                )

                handle.ApproveJoinRequestAsync(invite, entry) |> awaitUnit
                let b = Text.Json.Nodes.JsonNode.Parse body

                Expect.equal
                    (b["inviteServerSecret"].GetValue<string>())
                    (InviteSecrets.serverSecret secret).Wire
                    "the derived invite server secret"

                let wrapped =
                    Bin.parse<WrappedDekKind>(b["wrappedDek"].GetValue<string>()) |> ok "wrapped"

                Expect.equal
                    (bob.UnwrapNamespaceDek(shared, wrapped) |> ok "unwrap")
                    w.Dek
                    "bob unwraps the namespace DEK"
            }

            test "TestRunSkipsQueuedWatchSyncForAlreadyObservedHeads" {
                use w = world [ "k" ] (Merges.NoMerge()) []
                w.Serve(0UL, [])
                let mutable watches = 0
                use firstPass = new Threading.ManualResetEventSlim()
                use rewatched = new Threading.ManualResetEventSlim()
                let mutable listsAtRewatch = -1

                w.Api.On(
                    "GET",
                    "/v1/namespaces/mine",
                    fun _ ->
                        firstPass.Set()
                        200, w.List [ w.NsWire, "default", 0UL ]
                )

                w.Api.On(
                    "POST",
                    "/v1/namespaces/watch",
                    fun http ->
                        watches <- watches + 1

                        if watches = 1 then
                            // Answer only once the run's first pass listed (head 0 is then known).
                            firstPass.Wait(TimeSpan.FromSeconds 10.0) |> ignore

                            200,
                            sprintf
                                """{"namespaces":[{"namespaceId":"%s","kind":"default","namespaceHead":0}],"timedOut":false}"""
                                w.NsWire
                        else
                            // A pass the answer triggered would run before this re-watch.
                            listsAtRewatch <- w.Api.Count("GET", "/v1/namespaces/mine")
                            rewatched.Set()
                            http.RequestAborted.WaitHandle.WaitOne(TimeSpan.FromSeconds 10.0) |> ignore
                            200, """{"namespaces":[],"timedOut":true}"""
                )

                use stop = new Threading.CancellationTokenSource()
                let run = w.Engine.RunAsync stop.Token
                Expect.isTrue (rewatched.Wait(TimeSpan.FromSeconds 10.0)) "the watch answered and reconnected"
                Expect.equal listsAtRewatch 1 "no pass for a head already reflected locally"
                stop.Cancel()
                stopped run
            }

            test "TestRunNamespaceWatchWaitsForTriggeredSyncBeforeRewatch" {
                use w = world [ "k" ] (Merges.NoMerge()) []
                let log = ConcurrentQueue<string>()
                let mutable lists = 0

                w.Api.On(
                    "GET",
                    "/v1/namespaces/mine",
                    fun _ ->
                        lists <- lists + 1
                        let head = if lists = 1 then 0UL else 1UL

                        if lists = 2 then
                            log.Enqueue "pass started"
                            Threading.Thread.Sleep 300
                            log.Enqueue "pass list answered"

                        200, w.List [ w.NsWire, "default", head ]
                )

                w.Api.On(
                    "GET",
                    $"/v1/namespaces/{w.NsWire}/items",
                    fun _ -> 200, w.Map((if lists >= 2 then 1UL else 0UL), [])
                )

                let mutable watches = 0

                w.Api.On(
                    "POST",
                    "/v1/namespaces/watch",
                    fun _ ->
                        watches <- watches + 1
                        log.Enqueue(sprintf "watch %d" watches)

                        if watches = 1 then
                            200,
                            sprintf
                                """{"namespaces":[{"namespaceId":"%s","kind":"default","namespaceHead":1}],"timedOut":false}"""
                                w.NsWire
                        else
                            Threading.Thread.Sleep 1000
                            200, """{"namespaces":[],"timedOut":true}"""
                )

                use stop = new Threading.CancellationTokenSource()
                let run = w.Engine.RunAsync stop.Token
                let sw = Diagnostics.Stopwatch.StartNew()

                // Bounded wait for the second watch (signals, not a guess at timing).
                while not (Seq.contains "watch 2" log) && sw.Elapsed < TimeSpan.FromSeconds 10.0 do
                    Threading.Thread.Sleep 5

                stop.Cancel()
                stopped run
                let order = List.ofSeq log
                let index (x: string) = order |> List.findIndex ((=) x)

                Expect.isLessThan
                    (index "pass list answered")
                    (index "watch 2")
                    "the watch re-opened only after its pass"

                Expect.equal lists 2 "exactly two namespace-list calls"
            }

            test "TestRunLoginResetsFailureBackoff" {
                // The engine waits on a fake clock: time moves only when the test advances it.
                let clock = Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow)

                use w =
                    worldWith
                        (fun o ->
                            o.PollInterval <- TimeSpan.FromSeconds 20.0
                            o.DisableNamespaceWatch <- true
                            o.Clock <- clock)
                        [ "k" ]
                        (Merges.NoMerge())
                        []

                let mutable failing = true
                let calls = ConcurrentQueue<int>()

                w.Api.On(
                    "GET",
                    "/v1/namespaces/mine",
                    fun _ ->
                        calls.Enqueue calls.Count

                        if failing then
                            500, """{"error":"down"}"""
                        else
                            200, w.List [ w.NsWire, "default", 0UL ]
                )

                w.Api.Always("GET", $"/v1/namespaces/{w.NsWire}/items", 200, w.Map(0UL, []))

                let waitForCalls n =
                    let sw = Diagnostics.Stopwatch.StartNew()

                    while calls.Count < n && sw.Elapsed < TimeSpan.FromSeconds 10.0 do
                        Threading.Thread.Sleep 5

                    Expect.isGreaterThanOrEqual calls.Count n $"{n} passes"

                use stop = new Threading.CancellationTokenSource()
                let run = w.Engine.RunAsync stop.Token

                // Three failed passes, each after the test moved the clock past the backoff (at
                // most an hour: the cap).
                waitForCalls 1

                for n in 2..3 do
                    let sw = Diagnostics.Stopwatch.StartNew()

                    while calls.Count < n && sw.Elapsed < TimeSpan.FromSeconds 10.0 do
                        clock.Advance(TimeSpan.FromMinutes 61.0)
                        Threading.Thread.Sleep 5

                    waitForCalls n

                failing <- false
                let before = calls.Count
                w.Engine.LoginAsync() |> awaitUnit
                // No clock advance: only a reset backoff lets the next pass run.
                waitForCalls (before + 1)
                stop.Cancel()
                stopped run
            }

            test "TestNamespaceWatchLoginReconnectsAfterBackoff" {
                let clock = Microsoft.Extensions.Time.Testing.FakeTimeProvider(DateTimeOffset.UtcNow)

                use w =
                    worldWith
                        (fun o ->
                            o.PollInterval <- TimeSpan.FromSeconds 10.0
                            o.Clock <- clock)
                        [ "k" ]
                        (Merges.NoMerge())
                        []

                w.Serve(0UL, [])
                let calls = ConcurrentQueue<DateTime>()

                w.Api.On(
                    "POST",
                    "/v1/namespaces/watch",
                    fun _ ->
                        calls.Enqueue DateTime.UtcNow
                        500, """{"error":"watch broken"}"""
                )

                use stop = new Threading.CancellationTokenSource()
                let run = w.Engine.RunAsync stop.Token
                let sw = Diagnostics.Stopwatch.StartNew()

                while calls.IsEmpty && sw.Elapsed < TimeSpan.FromSeconds 5.0 do
                    Threading.Thread.Sleep 10

                // Now in a failure backoff on the fake clock, which the test does not advance.
                let before = calls.Count
                w.Engine.LoginAsync() |> awaitUnit
                let sw = Diagnostics.Stopwatch.StartNew()

                while calls.Count = before && sw.Elapsed < TimeSpan.FromSeconds 10.0 do
                    Threading.Thread.Sleep 5

                Expect.isGreaterThan calls.Count before "the watch reconnected right after the login"

                stop.Cancel()
                stopped run
            }

            test
                "a quarantined item is retried only when the remote version or the local value changes" {
                let mutable merges = 0

                let throwing =
                    MergeFunction<string>(fun _ ->
                        merges <- merges + 1
                        failwith "merge bug")

                use w = world [ "k" ] throwing [ "k", "local" ]
                w.Seed [ row w "k" 1UL 1UL "base" true ]
                w.Serve(0UL, [ "k", 1UL ])

                w.Api.Always("PUT", w.KvPath "k", 412, """{"error":"version"}""")
                w.Api.Always("GET", w.KvPath "k", 200, w.ItemJson("k", 2UL, "remote"))
                w.Sync()
                Expect.equal merges 1 "the merge ran and threw"
                Expect.exists w.Engine.QuarantinedItems (fun q -> q.Key = "k") "quarantined"
                w.Sync()
                Expect.equal merges 1 "same remote version, same local value: not retried"

                w.Backend.SetAsync("k", "edited", Threading.CancellationToken.None).AsTask()
                |> awaitUnit

                w.Sync()
                Expect.equal merges 2 "the local value changed: retried"
            }
        ]
