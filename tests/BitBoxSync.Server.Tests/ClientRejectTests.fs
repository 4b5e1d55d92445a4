/// The raw client against a loopback fake server: every `client_rejects_*` vector of
/// tests/data/vectors.json (the answer must be refused, the request path exact), error bodies,
/// decoding like the Go client, base paths, headers, argument checks and timeouts.
module BitBoxSync.Server.Tests.ClientRejectTests

open System
open System.Collections.Concurrent
open System.IO
open System.Net.Http
open System.Text.Json
open System.Threading.Tasks
open Microsoft.AspNetCore.Builder
open Microsoft.AspNetCore.Hosting
open Microsoft.AspNetCore.Http
open Microsoft.Extensions.Logging
open Expecto
open BitBoxSync
open BitBoxSync.Protocol.Wire
open BitBoxSync.Server.Tests.Harness

/// One request as the fake server saw it.
type Seen =
    {
        Method: string
        Path: string
        Body: string
        Headers: Map<string, string>
    }

/// A loopback HTTP server that records requests and answers what the test tells it to.
type FakeServer() =
    let seen = ConcurrentQueue<Seen>()
    let mutable status = 200
    let mutable body = "{}"
    let mutable delay = TimeSpan.Zero
    let mutable extraHeaders: (string * string) list = []

    let app =
        let builder = WebApplication.CreateSlimBuilder()
        builder.Logging.ClearProviders() |> ignore
        builder.WebHost.UseUrls("http://127.0.0.1:0") |> ignore
        let app = builder.Build()

        app.Run(fun (http: HttpContext) ->
            task {
                use reader = new StreamReader(http.Request.Body)
                let! text = reader.ReadToEndAsync()

                seen.Enqueue
                    {
                        Method = http.Request.Method
                        Path = http.Request.Path.Value
                        Body = text
                        Headers =
                            http.Request.Headers
                            |> Seq.map (fun h -> h.Key, h.Value.ToString())
                            |> Map.ofSeq
                    }

                if delay > TimeSpan.Zero then
                    do! Task.Delay(delay, http.RequestAborted)

                http.Response.StatusCode <- status
                http.Response.ContentType <- "application/json"

                for name, value in extraHeaders do
                    http.Response.Headers[name] <- Microsoft.Extensions.Primitives.StringValues value

                do! http.Response.WriteAsync(body)
            }
            :> Task)

        app.StartAsync() |> awaitUnit
        app

    member _.Address = Uri(app.Urls |> Seq.head)

    member _.Answer(s: int, b: string) =
        status <- s
        body <- b

    member _.Delay
        with set v = delay <- v

    /// Headers added to every answer from now on.
    member _.Headers
        with set v = extraHeaders <- v

    member _.Last = seen |> Seq.last
    member _.Count = seen.Count

    interface IDisposable with
        member _.Dispose() =
            app.DisposeAsync().AsTask() |> awaitUnit

let private vectors =
    lazy
        (JsonDocument
            .Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "data", "vectors.json")))
            .RootElement)

let private token = "test-token"

let private sampleJoinRequest (kind: string) (keyId: string) : SubmitNamespaceJoinRequestRequest =
    {
        InviteServerSecret = String('A', 43)
        JoinRequest =
            {
                Version = 1L
                NamespaceId = String('1', 32)
                InviteId = String('2', 32)
                ServerOrigin = "https://sync.test"
                Kind = kind
                KeyId = keyId
                AuthPublicKey = String('a', 64)
                WrapPublicKey = String('b', 64)
                ExpiresAt = 1L
                Signature = String('c', 128)
                InviteProof = String('A', 43)
            }
    }

let private seal: PutItemRequest = { Nonce = ""; Aad = ""; Ciphertext = "" }

/// Calls the client method a vector names, with the IDs of its request path.
let private call (client: SyncClient) (endpoint: string) (request: JsonElement) : Task =
    let str (name: string) = request.GetProperty(name).GetString()

    let seg =
        request.GetProperty("path").GetString().Split('/', StringSplitOptions.RemoveEmptyEntries)

    match endpoint with
    | "GetNamespaceItems" -> client.GetNamespaceItemsAsync(token, seg[2])
    | "Login" ->
        client.LoginAsync
            {
                Kind = str "request_kind"
                KeyId = String('a', 64)
                AuthPublicKey = String('b', 64)
                WrapPublicKey = String('c', 64)
                Challenge = "x"
                IntentSignature = String('d', 128)
                Attestation = null
            }
    | "Refresh" ->
        client.RefreshAsync(
            token,
            {
                Kind = str "request_kind"
                KeyId = String('a', 64)
                Challenge = "x"
                IntentSignature = ""
                Attestation = null
            }
        )
    | "EnsureDefaultNamespace" ->
        client.EnsureDefaultNamespaceAsync(
            token,
            {
                ProposedNamespaceId = str "proposedNamespaceId"
                WrappedDek = ""
            }
        )
    | "CreateSharedNamespace" ->
        client.CreateSharedNamespaceAsync(
            token,
            { NamespaceId = str "namespaceId"; WrappedDek = "" }
        )
    | "GetMembers" -> client.GetMembersAsync(token, seg[2])
    | "CreateNamespaceInvite" ->
        client.CreateNamespaceInviteAsync(
            token,
            seg[2],
            {
                Kind = "keystore"
                KeyId = String('a', 64)
                InviteId = str "inviteId"
                InviteServerSecretHash = String('b', 64)
                Challenge = "x"
                IntentSignature = ""
                ExpiresAt = 1L
                MaxAccepted = 1L
            }
        )
    | "SubmitNamespaceJoinRequest" ->
        let kind, keyId =
            match request.TryGetProperty "joinRequest_keyId" with
            | true, k -> str "joinRequest_kind", k.GetString()
            | _ -> "keystore", String('a', 64)

        client.SubmitNamespaceJoinRequestAsync(token, seg[2], seg[4], sampleJoinRequest kind keyId)
    | "RevokeNamespaceInvite" -> client.RevokeNamespaceInviteAsync(token, seg[2], seg[4])
    | "RejectNamespaceJoinRequest" ->
        client.RejectNamespaceJoinRequestAsync(token, seg[2], seg[4], seg[5])
    | "ApproveNamespaceJoinRequest" ->
        client.ApproveNamespaceJoinRequestAsync(
            token,
            seg[2],
            seg[4],
            seg[5],
            { InviteServerSecret = ""; WrappedDek = "" }
        )
    | "GetWrappedDEK" -> client.GetWrappedDekAsync(token, seg[2], seg[4])
    | "GetItem" -> client.GetItemAsync(token, seg[2], seg[3])
    | "PutItem (no If-Match)" -> client.PutItemAsync(token, seg[2], seg[3], seal, Nullable())
    | other -> failwithf "vector names an endpoint this test does not know: %s" other

let private vectorTests =
    [
        for p in vectors.Force().EnumerateObject() do
            if p.Name.StartsWith "client_rejects_" then
                test p.Name {
                    let v = p.Value
                    let inputs = v.GetProperty "inputs"
                    let expected = v.GetProperty "expected"
                    let request = inputs.GetProperty "request"

                    let endpoint =
                        v
                            .GetProperty("tests")
                            .GetString()
                            .Replace("raw client response validation: ", "")

                    use fake = new FakeServer()

                    fake.Answer(
                        inputs.GetProperty("fake_response_status").GetInt32(),
                        inputs.GetProperty("fake_response_json").GetRawText()
                    )

                    use client = new SyncClient(fake.Address)

                    let error =
                        try
                            call client endpoint request |> awaitUnit
                            failtest "the answer was accepted"
                        with :? SyncProtocolException as e ->
                            e.Message

                    Expect.stringContains
                        error
                        (expected.GetProperty("error_contains").GetString())
                        "the Go client's words"

                    Expect.equal
                        fake.Last.Path
                        (expected.GetProperty("request_path").GetString())
                        "exact request path"

                    Expect.equal
                        fake.Last.Method
                        (request.GetProperty("method").GetString())
                        "method"
                }
    ]

let private behaviour =
    [
        test "batch answers the client refuses (extension): every requested item answered once, in order, versions as sent" {
            use fake = new FakeServer()
            use client = new SyncClient(fake.Address)
            let ns = String('1', 32)
            let a, b, c = String('a', 64), String('b', 64), String('c', 64)

            let item (id: string) (version: int) =
                $"{{\"namespaceId\":\"{ns}\",\"itemId\":\"{id}\",\"version\":{version},\"nonce\":\"\",\"aad\":\"\",\"ciphertext\":\"\"}}"

            let get items missing omitted =
                $"{{\"namespaceId\":\"{ns}\",\"items\":[{items}],\"missing\":[{missing}],\"omitted\":[{omitted}]}}"

            let q (id: string) = $"\"{id}\""

            let refusedGet =
                [
                    "another namespace", (get (item a 1) "" "").Replace($"\"namespaceId\":\"{ns}\",\"items\"", $"\"namespaceId\":\"{String('2', 32)}\",\"items\"")
                    "an item of another namespace", get ((item a 1).Replace(ns, String('2', 32))) (q b) ""
                    "an ID not requested", get (item c 1) (q b) ""
                    "an ID answered twice", get (item a 1 + "," + item a 1) (q b) ""
                    "an ID in two lists", get (item a 1) (q a + "," + q b) ""
                    "a requested ID not answered", get (item a 1) "" ""
                    "everything omitted (no progress)", get "" "" (q a + "," + q b)
                ]

            for name, body in refusedGet do
                fake.Answer(200, body)

                try
                    client.GetItemsAsync(token, ns, [| a; b |]) |> await |> ignore
                    failtest $"batch get accepted: {name}"
                with :? SyncProtocolException ->
                    ()

            fake.Answer(200, get (item a 1) (q b) "")
            let ok = client.GetItemsAsync(token, ns, [| a; b |]) |> await
            Expect.equal (ok.Items.Length, ok.Missing, ok.Omitted) (1, [| b |], [||]) "a valid answer"
            Expect.equal fake.Last.Path $"/v1/namespaces/{ns}/items/batch-get" "the path"
            Expect.equal fake.Last.Body $"{{\"itemIds\":[\"{a}\",\"{b}\"]}}" "the body"

            let result (id: string) status version =
                $"{{\"itemId\":\"{id}\",\"status\":{status},\"version\":{version}}}"

            let put results =
                $"{{\"namespaceId\":\"{ns}\",\"namespaceHead\":9,\"results\":[{results}]}}"

            let sent: BatchPutItem[] =
                [|
                    { ItemId = a; IfMatch = 0UL; Nonce = ""; Aad = ""; Ciphertext = "" }
                    { ItemId = b; IfMatch = 4UL; Nonce = ""; Aad = ""; Ciphertext = "" }
                |]

            let refusedPut =
                [
                    "fewer results", put (result a 200 1)
                    "more results", put (result a 200 1 + "," + result b 200 5 + "," + result c 200 1)
                    "results out of order", put (result b 200 5 + "," + result a 200 1)
                    "a created item not at version 1", put (result a 200 2 + "," + result b 200 5)
                    "an updated item not at ifMatch + 1", put (result a 200 1 + "," + result b 200 4)
                    "a status that is neither 200 nor an error", put (result a 302 0 + "," + result b 200 5)
                    "another namespace", (put (result a 200 1 + "," + result b 200 5)).Replace(ns, String('2', 32))
                ]

            for name, body in refusedPut do
                fake.Answer(200, body)

                try
                    client.PutItemsAsync(token, ns, sent) |> await |> ignore
                    failtest $"batch put accepted: {name}"
                with :? SyncProtocolException ->
                    ()

            fake.Answer(200, put (result a 200 1 + "," + result b 412 0))
            let withPlus = [| { sent[0] with Ciphertext = "ab+/cd==" }; sent[1] |]
            let answer = client.PutItemsAsync(token, ns, withPlus) |> await
            Expect.equal (answer.Results |> Array.map (fun r -> r.Status)) [| 200; 412 |] "per-item statuses"

            Expect.equal
                fake.Last.Body
                (Json.serialize ({ Items = withPlus }: BatchPutItemsRequest))
                "the body is the compact JSON, base64 written as is ('+' not escaped)"

            Expect.stringContains fake.Last.Body "\"ab+/cd==\"" "raw base64"
            fake.Answer(404, "")
            Expect.isNull (box (client.GetCapabilitiesAsync() |> await).BatchItems) "a server without capabilities offers nothing"
            Expect.equal fake.Last.Path "/v1/capabilities" "asked"

            for bad in [ [||]; [| "XYZ" |] ] do
                Expect.throwsT<ArgumentException> (fun () -> client.GetItemsAsync(token, ns, bad) |> await |> ignore) "invalid IDs are refused before sending"
        }

        test "error bodies: the error field, else the trimmed body, else no message" {
            use fake = new FakeServer()
            use client = new SyncClient(fake.Address)

            for status, body, message in
                [
                    403, """{"error":"not a member","code":7}""", "not a member"
                    500, "  upstream down \n", "upstream down"
                    404, "", null
                    409, """{"error":""}""", """{"error":""}"""
                ] do
                fake.Answer(status, body)

                let e =
                    try
                        client.ListNamespacesAsync token |> await |> ignore
                        failtest "accepted"
                    with :? SyncApiException as e ->
                        e

                Expect.equal (e.StatusCode, e.ServerMessage) (status, message) body
        }

        test
            "responses decode like Go: first JSON value only, names in any case, empty body is an error" {
            use fake = new FakeServer()
            use client = new SyncClient(fake.Address)

            fake.Answer(
                200,
                """{"NAMESPACES":[{"namespaceId":"n","kind":"shared","namespaceHead":3}]} trailing"""
            )

            let r = client.ListNamespacesAsync token |> await
            Expect.equal r.Namespaces[0].NamespaceHead 3UL "decoded"
            fake.Answer(200, "{}")

            Expect.isEmpty
                (client.ListNamespacesAsync token |> await).Namespaces
                "a missing list is empty, not null"

            fake.Answer(200, "")

            Expect.throwsT<SyncProtocolException>
                (fun () -> client.ListNamespacesAsync token |> await |> ignore)
                "decode response: EOF"
        }

        test "Retry-After of a 429 or 503 answer reaches the caller (seconds or an HTTP date)" {
            use fake = new FakeServer()
            use client = new SyncClient(fake.Address)
            fake.Headers <- [ "Retry-After", "30" ]
            fake.Answer(503, """{"error":"restarting"}""")

            let e =
                Expect.throwsC (fun () -> client.GetDefaultNamespaceAsync(token) |> await |> ignore) id

            Expect.equal ((e :?> SyncApiException).RetryAfter) (Nullable(TimeSpan.FromSeconds 30.0)) "seconds"
            fake.Headers <- [ "Retry-After", DateTimeOffset.UtcNow.AddMinutes(2.0).ToString("R") ]
            fake.Answer(429, """{"error":"rate limited"}""")

            let e =
                Expect.throwsC (fun () -> client.GetDefaultNamespaceAsync(token) |> await |> ignore) id

            let wait = (e :?> SyncApiException).RetryAfter.Value
            Expect.isTrue (wait > TimeSpan.FromSeconds 100.0 && wait <= TimeSpan.FromMinutes 2.0) $"an HTTP date: {wait}"
            fake.Headers <- []
            fake.Answer(503, """{"error":"restarting"}""")

            let e =
                Expect.throwsC (fun () -> client.GetDefaultNamespaceAsync(token) |> await |> ignore) id

            Expect.isFalse (e :?> SyncApiException).RetryAfter.HasValue "none sent"
        }

        test "requests: base path kept, bearer and If-Match headers, JSON body on DELETE tokens" {
            use fake = new FakeServer()
            use client = new SyncClient(Uri(fake.Address, "/api/"))
            let ns, item = String('1', 32), String('2', 64)
            fake.Answer(200, $$"""{"namespaceId":"{{ns}}","itemId":"{{item}}","version":4}""")
            client.PutItemAsync(token, ns, item, seal, Nullable 3UL) |> await |> ignore
            let seen = fake.Last

            Expect.equal
                (seen.Method, seen.Path)
                ("PUT", $"/api/v1/kv/{ns}/{item}")
                "path under the base path"

            Expect.equal seen.Headers["If-Match"] "\"3\"" "quoted version"

            Expect.equal
                seen.Headers["User-Agent"]
                ("BitBoxSync.NET/" + typeof<SyncClient>.Assembly.GetName().Version.ToString 3)
                "User-Agent names the library and its package version"

            Expect.isTrue
                (Text.RegularExpressions.Regex.IsMatch(SyncClient.DefaultUserAgent, @"^BitBoxSync\.NET/\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$"))
                $"default {SyncClient.DefaultUserAgent}"

            use custom =
                new SyncClient(fake.Address, UserAgent = "NotesApp/2.1 " + SyncClient.DefaultUserAgent)

            custom.PutItemAsync(token, ns, item, seal, Nullable 3UL) |> await |> ignore

            Expect.equal
                fake.Last.Headers["User-Agent"]
                ("NotesApp/2.1 " + SyncClient.DefaultUserAgent)
                "the app's User-Agent"

            Expect.throwsT<ArgumentException>
                (fun () -> new SyncClient(fake.Address, UserAgent = "bad\nvalue") |> ignore)
                "an invalid User-Agent is refused"
            Expect.equal seen.Headers["Authorization"] "Bearer test-token" "bearer"
            Expect.equal seen.Headers["Content-Type"] "application/json" "JSON"
            fake.Answer(200, $$"""{"namespaceId":"{{ns}}","itemId":"{{item}}","version":1}""")
            client.PutItemAsync(token, ns, item, seal, Nullable()) |> await |> ignore
            Expect.isFalse (fake.Last.Headers.ContainsKey "If-Match") "no If-Match when creating"
            fake.Answer(204, "")

            client.RevokeAllTokensAsync(
                token,
                {
                    Kind = "keystore"
                    KeyId = String('a', 64)
                    Challenge = "c"
                    IntentSignature = "s"
                }
            )
            |> awaitUnit

            Expect.equal
                (fake.Last.Method, fake.Last.Body)
                ("DELETE",
                 """{"kind":"keystore","keyId":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","challenge":"c","intentSignature":"s"}""")
                "DELETE with its body"
        }

        test "invalid arguments are refused before anything is sent" {
            use fake = new FakeServer()
            use client = new SyncClient(fake.Address)
            let before = fake.Count

            for f in
                [
                    (fun () -> client.GetMembersAsync(token, "ABCDEF" + String('0', 26)) :> Task)
                    (fun () -> client.GetItemAsync(token, String('1', 32), "short") :> Task)
                    (fun () -> client.ListNamespacesAsync("") :> Task)
                    (fun () -> client.ChallengeAsync("sensitive-action") :> Task)
                    (fun () ->
                        client.WatchNamespacesAsync(
                            token,
                            { KnownHeads = Map.ofList [ "x", 1UL ] }
                        )
                        :> Task)
                ] do
                Expect.throwsT<ArgumentException> (fun () -> f () |> awaitUnit) "argument"

            Expect.equal fake.Count before "nothing sent"

            Expect.throwsT<ArgumentException>
                (fun () -> new SyncClient(Uri("ftp://x")) |> ignore)
                "http(s) only"
        }

        test "no answer within the timeout is a transport error; cancellation is cancellation" {
            use fake = new FakeServer()
            fake.Delay <- TimeSpan.FromSeconds 5.0
            use http = new HttpClient(Timeout = TimeSpan.FromMilliseconds 300.0)
            use client = new SyncClient(fake.Address, http)

            Expect.throwsT<SyncTransportException>
                (fun () -> client.ListNamespacesAsync token |> await |> ignore)
                "timeout"

            use cts = new Threading.CancellationTokenSource(TimeSpan.FromMilliseconds 100.0)
            use patient = new SyncClient(fake.Address)

            Expect.throwsT<TaskCanceledException>
                (fun () -> patient.ListNamespacesAsync(token, cts.Token) |> await |> ignore)
                "caller cancellation"

            Expect.equal
                SyncClient.DefaultTimeout
                (TimeSpan.FromSeconds 75.0)
                "the Go client's default"
        }

        test "a closed port is a transport error" {
            let port = freePort ()

            use client = new SyncClient(Uri($"http://127.0.0.1:{port}"))

            Expect.throwsT<SyncTransportException>
                (fun () -> client.ListNamespacesAsync token |> await |> ignore)
                "refused"
        }
    ]

/// Types reachable from the public surface of the C# package (signatures and DTO properties).
let private publicSurfaceTypes () =
    let seen = Collections.Generic.HashSet<Type>()

    let flags =
        Reflection.BindingFlags.Public
        ||| Reflection.BindingFlags.Instance
        ||| Reflection.BindingFlags.Static
        ||| Reflection.BindingFlags.DeclaredOnly

    let rec visit (t: Type) =
        if not (isNull t) && seen.Add t then
            if t.IsGenericType then
                t.GetGenericArguments() |> Array.iter visit

            if t.HasElementType then
                visit (t.GetElementType())

            if
                t.Assembly = typeof<SyncClient>.Assembly
                || t.Namespace = "BitBoxSync.Protocol.Wire"
            then
                for m in t.GetMethods flags do
                    visit m.ReturnType
                    m.GetParameters() |> Array.iter (fun p -> visit p.ParameterType)

                for p in t.GetProperties() do
                    visit p.PropertyType

                for c in t.GetConstructors() do
                    c.GetParameters() |> Array.iter (fun p -> visit p.ParameterType)

    typeof<SyncClient>.Assembly.GetExportedTypes() |> Array.iter visit
    List.ofSeq seen

let private surface =
    test
        "no FSharp.Core type in the public surface of the C# package (raw client, DTOs, identities)" {
        let all = publicSurfaceTypes ()

        let fsharp =
            all
            |> List.filter (fun t ->
                not (isNull t.Namespace) && t.Namespace.StartsWith "Microsoft.FSharp")
            |> List.map (fun t -> t.FullName)

        Expect.isEmpty fsharp "F# types leak into C# signatures"
        Expect.contains all typeof<GetNamespaceItemsResponse> "the walk reached the DTOs"
    }

let tests =
    testList
        "raw client"
        [
            surface
            testList "client_rejects vectors" vectorTests
            testList "behaviour" behaviour
        ]
