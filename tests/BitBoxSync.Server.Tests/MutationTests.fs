/// A property over real servers: take a valid request of any endpoint, mutate it at random
/// (fields, encodings, lengths, path IDs, headers, the body itself) and send it. The server never
/// answers 5xx, and a 4xx never changes its state (full dump before and after).
module BitBoxSync.Server.Tests.MutationTests

open System
open System.Text.Json.Nodes
open Expecto
open FsCheck
open FsCheck.FSharp
open BitBoxSync.Protocol
open BitBoxSync.Protocol.Wire
open BitBoxSync.Server.Tests.Harness
open BitBoxSync.Server.Tests.Flows

/// A request before mutation: method, path, bearer token, JSON body (or none), extra headers.
type Request =
    {
        Method: string
        Path: string
        Token: string
        Body: JsonNode
        Headers: (string * string) list
    }

let private node (dto: 'T) = JsonNode.Parse(Json.serialize dto)

/// Valid requests of every endpoint, built fresh (challenges are single use).
let private templates (f: RuleTests.Fixture) : (unit -> Request) list =
    let alice = f.Alice

    let req m p body =
        {
            Method = m
            Path = p
            Token = alice.Token
            Body = body
            Headers = []
        }

    let unix s =
        f.Server.Clock.Now.ToUnixTimeSeconds() + s

    [
        fun () ->
            let version =
                (alice.Client.GetItemAsync(
                    alice.Token,
                    f.Shared.Id.Wire,
                    (itemId f.Shared "k").Wire
                 )
                 |> await)
                    .Version

            { req
                  "PUT"
                  (Paths.item f.Shared.Id (itemId f.Shared "k"))
                  (node (sealFor f.Shared (itemId f.Shared "k") (version + 1UL) "m")) with
                Headers = [ "If-Match", IfMatch.quote version ]
            }
        fun () ->
            let key = Guid.NewGuid().ToString()

            req
                "PUT"
                (Paths.item f.Shared.Id (itemId f.Shared key))
                (node (sealFor f.Shared (itemId f.Shared key) 1UL "new"))
        fun () ->
            let request, _ = createInviteRequest alice f.Shared (unix 600L) 2
            req "POST" (Paths.invites f.Shared.Id) (node request)
        fun () ->
            let submit = joinRequest f.Carol f.Invite (unix 300L)

            { req "POST" (Paths.submitJoinRequest f.Shared.Id f.Invite.InviteId) (node submit) with
                Token = f.Carol.Token
            }
        fun () ->
            let approval: ApproveNamespaceJoinRequestRequest =
                {
                    InviteServerSecret = f.Invite.ServerSecret.Wire
                    WrappedDek = wrapFor f.Erin.Identity f.Shared
                }

            req
                "PUT"
                $"/v1/namespaces/{f.Shared.Id.Wire}/join-requests/{f.Erin.KeyId}/{f.ErinsHash}/approve"
                (node approval)
        fun () ->
            { req "POST" Paths.Login (node (loginRequest alice.Client alice.Identity)) with
                Token = null
            }
        fun () ->
            let ns = newNamespace ()

            req
                "PUT"
                Paths.DefaultNamespace
                (node (
                    {
                        ProposedNamespaceId = ns.Id.Wire
                        WrappedDek = wrapFor alice.Identity ns
                    }
                    : EnsureDefaultNamespaceRequest
                ))
        fun () ->
            let ns = newNamespace ()

            req
                "POST"
                Paths.Namespaces
                (node (
                    {
                        NamespaceId = ns.Id.Wire
                        WrappedDek = wrapFor alice.Identity ns
                    }
                    : CreateSharedNamespaceRequest
                ))
        fun () -> req "POST" Paths.Watch (JsonNode.Parse """{"knownHeads":{}}""")
        fun () ->
            req
                "DELETE"
                $"/v1/namespaces/{f.Shared.Id.Wire}/join-requests/{f.Erin.KeyId}/{f.ErinsHash}"
                null
        fun () -> req "DELETE" (Paths.invite f.Shared.Id f.Invite.InviteId) null
        fun () -> req "GET" $"/v1/namespaces/{f.Shared.Id.Wire}/wrapped-deks/{alice.KeyId}" null
        fun () -> req "GET" (Paths.items f.Shared.Id) null
        fun () ->
            let version =
                (alice.Client.GetItemAsync(alice.Token, f.Shared.Id.Wire, (itemId f.Shared "k").Wire) |> await).Version

            let key = Guid.NewGuid().ToString()

            req
                "POST"
                (Paths.batchPut f.Shared.Id)
                (node (
                    {
                        Items =
                            [|
                                BatchTests.batchItem f.Shared "k" version "m"
                                BatchTests.batchItem f.Shared key 0UL "new"
                            |]
                    }
                    : BatchPutItemsRequest
                ))
        fun () ->
            req
                "POST"
                (Paths.batchGet f.Shared.Id)
                (node ({ ItemIds = [| (itemId f.Shared "k").Wire; (itemId f.Shared "absent").Wire |] }: BatchGetItemsRequest))
        fun () ->
            req "POST" Paths.Challenge (JsonNode.Parse """{"purpose":"login","kind":"keystore"}""")
    ]

/// Values a mutated field may take.
let private junk (rnd: Random) (original: JsonNode) : JsonNode =
    let text =
        if isNull original then
            ""
        else
            original.ToJsonString().Trim('"')

    match rnd.Next 14 with
    | 0 -> null
    | 1 -> JsonValue.Create ""
    | 2 -> JsonValue.Create(text.ToUpperInvariant())
    | 3 ->
        JsonValue.Create(
            if text.Length > 1 then
                text.Substring(0, text.Length - 1)
            else
                "x"
        )
    | 4 -> JsonValue.Create(text + "a")
    | 5 -> JsonValue.Create(text + "=")
    | 6 -> JsonValue.Create(" " + text)
    | 7 -> JsonValue.Create(-1L)
    | 8 -> JsonValue.Create(Int64.MaxValue)
    | 9 -> JsonValue.Create true
    | 10 -> JsonArray(JsonValue.Create 1)
    | 11 -> JsonObject()
    | 12 -> JsonValue.Create(String('9', 40))
    | _ -> JsonValue.Create("é\u0000" + text)

/// Applies one random mutation.
let private mutate (rnd: Random) (r: Request) : Request * string =
    let hexSegments =
        r.Path.Split('/')
        |> Array.indexed
        |> Array.filter (fun (_, s) -> s.Length >= 32 && s |> Seq.forall Uri.IsHexDigit)

    let fields =
        match r.Body with
        | :? JsonObject as o -> [ for p in o -> p.Key ]
        | _ -> []

    match rnd.Next 8 with
    | 0
    | 1 when not fields.IsEmpty ->
        let body = r.Body.DeepClone().AsObject()
        let field = fields[rnd.Next fields.Length]
        let value = junk rnd body[field]
        body[field] <- value
        let shown = if isNull value then "null" else value.ToJsonString()
        { r with Body = body }, $"field {field} := {shown}"
    | 2 when not fields.IsEmpty ->
        let body = r.Body.DeepClone().AsObject()
        let field = fields[rnd.Next fields.Length]
        body.Remove field |> ignore
        { r with Body = body }, $"field {field} removed"
    | 3 when hexSegments.Length > 0 ->
        let i, s = hexSegments[rnd.Next hexSegments.Length]
        let parts = r.Path.Split('/')

        parts[i] <-
            match rnd.Next 4 with
            | 0 -> s.ToUpperInvariant()
            | 1 -> s.Substring 2
            | 2 -> s + "00"
            | _ -> Convert.ToHexStringLower(random (s.Length / 2))

        { r with Path = String.Join("/", parts) }, $"path segment {i} := {parts[i]}"
    | 4 ->
        match rnd.Next 3 with
        | 0 -> { r with Token = null }, "no bearer"
        | 1 -> { r with Token = "x" + r.Token }, "garbled bearer"
        | _ ->
            { r with
                Headers = [ "If-Match", [| "\"0x1\""; "*"; "\"\""; "1" |][rnd.Next 4] ]
            },
            "bad If-Match"
    | 5 when not (isNull r.Body) ->
        let text = r.Body.ToJsonString()

        { r with
            Body = JsonValue.Create(text.Substring(0, rnd.Next text.Length))
        },
        "truncated body (sent as a JSON string)"
    | 6 ->
        { r with
            Body = JsonValue.Create(Convert.ToBase64String(random (rnd.Next 200)))
        },
        "random body"
    | _ -> { r with Body = JsonNode.Parse "[]" }, "array body"

let private send (f: RuleTests.Fixture) (r: Request) =
    let body = if isNull r.Body then null else r.Body.ToJsonString()
    let headers = r.Headers
    RuleTests.rawStatus f r.Method r.Path r.Token body headers

/// Statuses seen, printed after the run (shows the mutations reach past validation).
let statuses = Collections.Concurrent.ConcurrentDictionary<int, int>()

let private property (fixture: Lazy<RuleTests.Fixture>) =
    fun (template: NonNegativeInt) (seed: int) ->
        let f = fixture.Force()
        let all = templates f
        let rnd = Random seed
        let valid = all[template.Get % all.Length]()
        let mutated, what = mutate rnd valid
        f.SetUpDone()
        let status = send f mutated
        statuses.AddOrUpdate(status, 1, fun _ n -> n + 1) |> ignore
        let unchanged = f.Server.Dump() = f.Baseline

        if status >= 500 then
            failwithf "%s %s (%s): server error %d" mutated.Method mutated.Path what status

        if status >= 400 && not unchanged then
            failwithf
                "%s %s (%s): refused with %d but the state changed"
                mutated.Method
                mutated.Path
                what
                status

        true

let tests =
    testList
        "mutated requests"
        [
            for backend in backends do
                let fixture = lazy (RuleTests.fixtureOf backend)

                testPropertyWithConfig
                    { FsCheckConfig.defaultConfig with maxTest = 300 }
                    $"never a 5xx, never a state change on a 4xx ({backend})"
                    (property fixture)
        ]
