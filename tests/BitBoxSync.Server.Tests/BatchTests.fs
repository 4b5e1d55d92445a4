/// The batch-items extension (docs/protocol.md §15) on real servers, both stores: the offer and its
/// switch, per-item answers equal to the single PUTs', whole-request refusals that change nothing,
/// the response budget, one watch wake-up per batch, write permits per item and racing batches.
module BitBoxSync.Server.Tests.BatchTests

open System
open System.Diagnostics
open System.Net.Http
open System.Text
open System.Text.Json.Nodes
open Expecto
open BitBoxSync
open BitBoxSync.Protocol
open BitBoxSync.Protocol.Wire
open BitBoxSync.Server
open BitBoxSync.Server.Tests.Harness
open BitBoxSync.Server.Tests.Flows

/// A server on a fresh database with some options changed.
let private startWith backend (change: ServerOptions -> unit) =
    let db = Database.Create backend
    let clock = ManualClock DateTimeOffset.UtcNow
    let o = options db clock (TimeSpan.FromSeconds 20.0)
    change o
    new TestServer(db, clock, BitBoxSyncServer.StartAsync(o) |> await)

/// One batch entry writing `plaintext` over version `ifMatch` (0 creates).
let batchItem (ns: Ns) (key: string) (ifMatch: uint64) (plaintext: string) : BatchPutItem =
    let item = itemId ns key
    let body = sealFor ns item (ifMatch + 1UL) plaintext

    {
        ItemId = item.Wire
        IfMatch = ifMatch
        Nonce = body.Nonce
        Aad = body.Aad
        Ciphertext = body.Ciphertext
    }

let private putBatch (s: Session) (ns: Ns) (items: BatchPutItem list) =
    s.Client.PutItemsAsync(s.Token, ns.Id.Wire, List.toArray items) |> await

/// A raw request: status and body.
let private send (http: HttpClient) (methodName: string) (path: string) (token: string) (body: string) =
    use request = new HttpRequestMessage(HttpMethod methodName, path)

    if not (isNull body) then
        request.Content <- new StringContent(body, Encoding.UTF8, "application/json")

    if not (isNull token) then
        request.Headers.TryAddWithoutValidation("Authorization", "Bearer " + token) |> ignore

    // A refusal of a large body may come before the body is sent: wait for it (100-continue).
    request.Headers.ExpectContinue <- not (isNull body) && body.Length > 1_000_000
    use response = http.Send request
    int response.StatusCode, response.Content.ReadAsStringAsync().Result

let private offerAndSwitch backend =
    test $"capabilities offer the extension with its limits; switched off nothing is offered and both endpoints answer 404, changing nothing ({backend})" {
        use on = start backend
        let offer = on.Client.GetCapabilitiesAsync() |> await
        Expect.equal offer.BatchItems { Version = 1; MaxItems = 256; MaxRequestBytes = 4194304; MaxResponseBytes = 4194304 } "offered"

        use off = startWith backend (fun o -> o.BatchItems <- false)
        Expect.isNull (box (off.Client.GetCapabilitiesAsync() |> await).BatchItems) "not offered"
        use http = off.RawHttp()
        Expect.equal (send http "GET" "/v1/capabilities" null null) (200, "{}") "an empty offer"
        let alice = login off "alice"
        let ns, _ = ensureDefault alice
        let before = off.Dump()
        let put = Json.serialize ({ Items = [| batchItem ns "a" 0UL "x" |] }: BatchPutItemsRequest)
        let get = Json.serialize ({ ItemIds = [| (itemId ns "a").Wire |] }: BatchGetItemsRequest)

        Expect.equal
            (send http "POST" (Paths.batchPut ns.Id) alice.Token put)
            (404, """{"error":"the batch-items extension is switched off"}""")
            "batch PUT"

        Expect.equal (fst (send http "POST" (Paths.batchGet ns.Id) alice.Token get)) 404 "batch GET"
        Expect.equal (off.Dump()) before "nothing written"

        use limited = startWith backend (fun o -> o.WritesPerMinutePerToken <- 100)
        Expect.equal (limited.Client.GetCapabilitiesAsync() |> await).BatchItems.MaxItems 100 "a batch fits in one write window"
    }

let private sameAsSingles backend =
    test $"batch PUT: every item answered as the same single PUT one after the other, partial success, the head moved once per accepted item ({backend})" {
        use server = start backend
        let alice = login server "alice"
        let viaBatch = createShared alice
        let viaSingles = createShared alice

        for ns in [ viaBatch; viaSingles ] do
            put alice ns "k" None "k1" |> ignore
            put alice ns "u" None "u1" |> ignore

        let entries (ns: Ns) =
            [
                batchItem ns "a" 0UL "new" // created
                batchItem ns "k" 0UL "again" // exists: 412
                batchItem ns "u" 1UL "u2" // updated
                batchItem ns "s" 3UL "stale" // missing at 3: 412
                { batchItem ns "w" 0UL "w" with Aad = (Aad.build ns.Id (itemId ns "w") 2UL).Wire } // wrong AAD: 400
                { batchItem ns "big" 0UL "x" with Ciphertext = Convert.ToBase64String(Array.zeroCreate 65537) } // 413
                batchItem ns "u" 0UL "dup" |> fun i -> { i with ItemId = (itemId ns "u2").Wire } // AAD of another item: 400
                { batchItem ns "n" 0UL "n" with Nonce = "AAAA" } // malformed nonce: 400
            ]

        let answer = putBatch alice viaBatch (entries viaBatch)

        let singles =
            [
                for e in entries viaSingles ->
                    use http = server.RawHttp()
                    use request = new HttpRequestMessage(HttpMethod.Put, $"/v1/kv/{viaSingles.Id.Wire}/{e.ItemId}")
                    request.Content <- new StringContent(Json.serialize ({ Nonce = e.Nonce; Aad = e.Aad; Ciphertext = e.Ciphertext }: PutItemRequest), Encoding.UTF8, "application/json")
                    request.Headers.TryAddWithoutValidation("Authorization", "Bearer " + alice.Token) |> ignore

                    if e.IfMatch > 0UL then
                        request.Headers.TryAddWithoutValidation("If-Match", IfMatch.quote e.IfMatch) |> ignore

                    use response = http.Send request
                    let text = response.Content.ReadAsStringAsync().Result
                    let status = int response.StatusCode

                    if status = 200 then
                        status, (Json.decodeResponseString<PutItemResponse> text |> Result.defaultWith failwith).Version, null
                    else
                        let error = (JsonNode.Parse text).["error"].GetValue<string>()
                        status, 0UL, error
            ]

        Expect.equal
            (answer.Results |> Array.map (fun r -> r.Status, r.Version, r.Error) |> List.ofArray)
            singles
            "the same statuses, versions and messages as single PUTs"

        Expect.equal (answer.Results |> Array.map (fun r -> r.Status)) [| 200; 412; 200; 412; 400; 413; 400; 400 |] "partial success"
        Expect.equal answer.NamespaceHead 4UL "two set-up writes and two accepted ones"

        let versions (ns: Ns) =
            (alice.Client.GetNamespaceItemsAsync(alice.Token, ns.Id.Wire) |> await).Items
            |> Seq.map (fun kv -> kv.Value.Version)
            |> Seq.sort
            |> List.ofSeq

        Expect.equal (versions viaBatch) (versions viaSingles) "the same items at the same versions"
        Expect.equal (read alice viaBatch "u") (2UL, "u2") "the update landed"
        Expect.equal (read alice viaBatch "a") (1UL, "new") "the create landed"
        Expect.equal (read alice viaBatch "k") (1UL, "k1") "the refused create changed nothing"
    }

let private refusals backend =
    test $"whole-request refusals: the documented status and nothing written ({backend})" {
        use server = start backend
        use http = server.RawHttp()
        let alice = login server "alice"
        let bob = login server "bob"
        let ns, _ = ensureDefault alice
        put alice ns "k" None "v" |> ignore
        let putPath = Paths.batchPut ns.Id
        let getPath = Paths.batchGet ns.Id
        let items (list: BatchPutItem list) = Json.serialize ({ Items = List.toArray list }: BatchPutItemsRequest)
        let ids (list: string list) = Json.serialize ({ ItemIds = List.toArray list }: BatchGetItemsRequest)
        let valid = items [ batchItem ns "a" 0UL "x" ]
        let many n = [ for i in 1..n -> batchItem ns $"m{i}" 0UL "x" ]
        let id key = (itemId ns key).Wire

        let cases =
            [
                "no token", "POST", putPath, null, valid, 401
                "another identity's namespace", "POST", putPath, bob.Token, valid, 403
                "a namespace that does not exist", "POST", Paths.batchPut (newNamespace ()).Id, alice.Token, valid, 403
                "malformed JSON", "POST", putPath, alice.Token, "{\"items\":[", 400
                "not an object", "POST", putPath, alice.Token, "[1]", 400
                "no items field", "POST", putPath, alice.Token, "{}", 400
                "no items", "POST", putPath, alice.Token, items [], 400
                "257 items", "POST", putPath, alice.Token, items (many 257), 400
                "an item repeated", "POST", putPath, alice.Token, items [ batchItem ns "a" 0UL "x"; batchItem ns "a" 0UL "y" ], 400
                "an invalid item ID", "POST", putPath, alice.Token, items [ { batchItem ns "a" 0UL "x" with ItemId = "ABC" } ], 400
                "a null item", "POST", putPath, alice.Token, "{\"items\":[null]}", 400
                "an ifMatch that is not a number", "POST", putPath, alice.Token, valid.Replace("\"ifMatch\":0", "\"ifMatch\":\"0\""), 400
                "a body over 4 MiB", "POST", putPath, alice.Token, String('x', 4 * 1024 * 1024 + 1), 413
                "batch GET without a token", "POST", getPath, null, ids [ id "k" ], 401
                "batch GET of another identity's namespace", "POST", getPath, bob.Token, ids [ id "k" ], 403
                "batch GET of no IDs", "POST", getPath, alice.Token, ids [], 400
                "batch GET of 257 IDs", "POST", getPath, alice.Token, ids [ for i in 1..257 -> id $"g{i}" ], 400
                "batch GET of a repeated ID", "POST", getPath, alice.Token, ids [ id "k"; id "k" ], 400
                "batch GET of an invalid ID", "POST", getPath, alice.Token, ids [ "zz" ], 400
                "batch GET with a body over 128 KiB", "POST", getPath, alice.Token, String('x', 140_000), 413
                "batch GET by GET", "GET", getPath, alice.Token, null, 405
            ]

        let failures =
            [
                for name, m, path, token, body, expected in cases do
                    let before = server.Dump()
                    let status, text = send http m path token body

                    if status <> expected || server.Dump() <> before || (status <> 405 && not (text.StartsWith "{\"error\":\"")) then
                        $"{name}: {status} {text} (expected {expected}, nothing written, a JSON error)"
            ]

        Expect.isEmpty failures "every refusal"
    }

let private budget backend =
    test $"batch GET: items in request order, missing ones listed, past 4 MiB of ciphertext the rest omitted and answered when asked again ({backend})" {
        use server = start backend
        let alice = login server "alice"
        let ns, _ = ensureDefault alice
        // 66 items of the largest size (65 520 plaintext bytes seal to 65 536 ciphertext bytes).
        let big = String('b', Limits.MaxItemPlaintextSize)
        let keys = [ for i in 1..66 -> $"big{i}" ]

        for chunk in List.chunkBySize 40 keys do
            let answer = putBatch alice ns [ for k in chunk -> batchItem ns k 0UL big ]
            Expect.isTrue (answer.Results |> Array.forall (fun r -> r.Status = 200)) "stored"

        let requested = (itemId ns "absent").Wire :: [ for k in keys -> (itemId ns k).Wire ]
        let first = alice.Client.GetItemsAsync(alice.Token, ns.Id.Wire, requested) |> await
        Expect.equal first.Missing [| (itemId ns "absent").Wire |] "the absent item"
        Expect.equal (first.Items |> Array.map (fun i -> i.ItemId)) (requested |> List.skip 1 |> List.take 64 |> List.toArray) "64 × 64 KiB fit in 4 MiB, in request order"
        Expect.equal first.Omitted (requested |> List.skip 65 |> List.toArray) "the rest omitted"
        let again = alice.Client.GetItemsAsync(alice.Token, ns.Id.Wire, first.Omitted) |> await
        Expect.equal (again.Items |> Array.map (fun i -> i.ItemId)) first.Omitted "answered when asked again"
        Expect.isEmpty again.Omitted "nothing left"
        let single = alice.Client.GetItemAsync(alice.Token, ns.Id.Wire, (itemId ns "big7").Wire) |> await
        Expect.equal first.Items[6] single "each item exactly as the single GET answers it"
    }

let private oneWakeUp backend =
    test $"a parked watcher wakes once, with the head after the whole batch ({backend})" {
        use server = start backend
        let alice, ns, watcher, watch = parkedWatch server server.BaseAddress (fun () -> server.Server.ParkedWatchers)
        use _ = watcher
        putBatch alice ns [ for i in 1..10 -> batchItem ns $"k{i}" 0UL "v" ] |> ignore
        let answer = watch |> await
        Expect.isFalse answer.TimedOut "woken by the batch"
        Expect.equal (answer.Namespaces |> Array.map (fun n -> n.NamespaceId, n.NamespaceHead)) [| ns.Id.Wire, 10UL |] "the head after all ten"
    }

let private permits backend =
    test $"each write of a batch takes a write permit: a batch that does not fit in the window is refused whole ({backend})" {
        use server = startWith backend (fun o -> o.WritesPerMinutePerToken <- 10)
        use http = server.RawHttp()
        let alice = login server "alice"
        let ns, _ = ensureDefault alice // 1 write
        let items (list: BatchPutItem list) = Json.serialize ({ Items = List.toArray list }: BatchPutItemsRequest)
        let status list = fst (send http "POST" (Paths.batchPut ns.Id) alice.Token (items list))
        Expect.equal (status [ for i in 1..11 -> batchItem ns $"x{i}" 0UL "v" ]) 400 "more than the offered 10 per batch (counts as one write)"
        Expect.equal (status [ for i in 1..7 -> batchItem ns $"a{i}" 0UL "v" ]) 200 "7 of the 8 left"
        let before = server.Dump()
        Expect.equal (status [ for i in 1..2 -> batchItem ns $"b{i}" 0UL "v" ]) 429 "2 more do not fit"
        Expect.equal (server.Dump()) before "refused whole"
        Expect.equal (status [ batchItem ns "c" 0UL "v" ]) 200 "1 does"
        Expect.equal (statusOf (fun () -> Threading.Tasks.Task.FromResult(put alice ns "d" None "v"))) 429 "and the window is full"
    }

let private racing backend =
    test $"racing batches over the same items: each item accepted by exactly one writer, the head moved once per accepted item ({backend})" {
        use server = start backend
        let alice = login server "alice"
        let ns, _ = ensureDefault alice
        let keys = [ for i in 1..40 -> $"r{i}" ]

        let writers =
            [
                for w in 1..6 ->
                    Threading.Tasks.Task.Run(fun () ->
                        // Each writer takes the keys in its own order, in batches of 10.
                        let order = keys |> List.sortBy (fun k -> (k.GetHashCode() * w) % 97)

                        [
                            for chunk in List.chunkBySize 10 order do
                                let answer = putBatch alice ns [ for k in chunk -> batchItem ns k 0UL $"w{w}" ]
                                yield! answer.Results |> Array.map (fun r -> r.ItemId, r.Status)
                        ])
            ]

        let results = writers |> List.collect (fun t -> t.Result)
        let accepted = results |> List.filter (fun (_, s) -> s = 200)
        Expect.equal (accepted |> List.map fst |> List.sort) (keys |> List.map (fun k -> (itemId ns k).Wire) |> List.sort) "each item created exactly once"
        Expect.isTrue (results |> List.forall (fun (_, s) -> s = 200 || s = 412)) "the others lost with 412"
        let map = alice.Client.GetNamespaceItemsAsync(alice.Token, ns.Id.Wire) |> await
        Expect.equal map.NamespaceHead 40UL "the head moved once per accepted item"
    }

let tests =
    testList
        "batch items"
        [
            for backend in backends do
                offerAndSwitch backend
                sameAsSingles backend
                refusals backend
                budget backend
                oneWakeUp backend
                permits backend
                racing backend
        ]
