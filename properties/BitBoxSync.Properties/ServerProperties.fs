/// Laws of the server rules: compare-and-set admits exactly one writer per version and moves the
/// head by one per accepted write; request decoding and validation never throw on mutated input
/// (a refusal is always a 4xx, never a crash).
module BitBoxSync.Properties.ServerProperties

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open BitBoxSync.Protocol
open BitBoxSync.Server.Core
open BitBoxSync.Properties.Generators

let private keys =
    NamespaceKeys.derive (
        Bin.ofBytes<DekKind>(Array.init 32 byte)
        |> Result.defaultWith (fun _ -> failwith "dek")
    )

let private ns =
    Bin.ofBytes<NamespaceIdKind>(Array.init 16 byte)
    |> Result.defaultWith (fun _ -> failwith "ns")

let private item =
    Bin.ofBytes<ItemIdKind>(Array.init 32 byte)
    |> Result.defaultWith (fun _ -> failwith "item")

let private nonce =
    Bin.ofBytes<ItemNonceKind>(Array.zeroCreate 24)
    |> Result.defaultWith (fun _ -> failwith "nonce")

let private now = DateTimeOffset.FromUnixTimeSeconds 1000L

let private sealedFor version =
    ItemCrypto.seal keys ns item version nonce (ReadOnlySpan "v"B)
    |> Result.defaultWith (fun e -> failwith e.Message)

/// Valid request bodies of every kind, as JSON text.
let private validBodies =
    use alice = DummyKeystore.FromLabel "alice"

    let challenge =
        Bin.ofBytes<ChallengeKind>(Array.init 32 byte)
        |> Result.defaultWith (fun _ -> failwith "c")

    [
        Wire.Json.serialize (
            {
                Purpose = "login"
                Kind = "keystore"
                Action = null
                ActionFieldsHash = null
            }
            : Wire.ChallengeRequest
        )
        Wire.Json.serialize (
            {
                Kind = "keystore"
                KeyId = alice.KeyId.Wire
                AuthPublicKey = alice.AuthPublicKey.Wire
                WrapPublicKey = alice.WrapPublicKey.Wire
                Challenge = challenge.Wire
                IntentSignature = (alice.SignLoginIntent challenge).Wire
                Attestation = null
            }
            : Wire.LoginRequest
        )
        Wire.Json.serialize (
            {
                Nonce = nonce.Wire
                Aad = (sealedFor 1UL).Aad.Wire
                Ciphertext = (sealedFor 1UL).Ciphertext.Wire
            }
            : Wire.PutItemRequest
        )
        Wire.Json.serialize (
            { KnownHeads = Map.ofList [ ns.Wire, 3UL ] }: Wire.WatchNamespacesRequest
        )
        Wire.Json.serialize ({ ItemIds = [| item.Wire; item.Wire |] }: Wire.BatchGetItemsRequest)
        Wire.Json.serialize (
            {
                Items =
                    [|
                        {
                            ItemId = item.Wire
                            IfMatch = 0UL
                            Nonce = nonce.Wire
                            Aad = (sealedFor 1UL).Aad.Wire
                            Ciphertext = (sealedFor 1UL).Ciphertext.Wire
                        }
                    |]
            }
            : Wire.BatchPutItemsRequest
        )
    ]

/// Decodes and validates a body as every request type; true when nothing threw.
let private neverThrows (json: string) =
    try
        let decode f =
            match f json with
            | Ok _
            | Error _ -> ()

        decode (fun j ->
            Wire.Json.decodeRequestString<Wire.ChallengeRequest> j
            |> Result.map Requests.challenge)

        decode (fun j ->
            Wire.Json.decodeRequestString<Wire.LoginRequest> j |> Result.map Requests.login)

        decode (fun j ->
            Wire.Json.decodeRequestString<Wire.PutItemRequest> j
            |> Result.map Requests.putItem)

        decode (fun j ->
            Wire.Json.decodeRequestString<Wire.WatchNamespacesRequest> j
            |> Result.map Requests.watch)

        decode (fun j ->
            Wire.Json.decodeRequestString<Wire.SubmitNamespaceJoinRequestRequest> j
            |> Result.map Requests.submitJoinRequest)

        decode (fun j ->
            Wire.Json.decodeRequestString<Wire.CreateNamespaceInviteRequest> j
            |> Result.map Requests.createInvite)

        decode (fun j ->
            Wire.Json.decodeRequestString<Wire.BatchGetItemsRequest> j
            |> Result.map (BatchRequests.get Limits.MaxBatchItems))

        decode (fun j ->
            Wire.Json.decodeRequestString<Wire.BatchPutItemsRequest> j
            |> Result.map (BatchRequests.put Limits.MaxBatchItems)
            |> Result.map (Result.map (List.map (fun e -> Items.sealedOf e.Body))))

        true
    with e ->
        failwithf "threw on %s: %O" json e

let tests =
    testList
        "server rules"
        [
            testPropertyWithConfig
                config
                "compare-and-set: one writer per version, versions and head move by exactly one"
            <| forAll (Gen.listOf (Gen.choose (0, 4))) (fun attempts ->
                // Each attempt is If-Match n (0 = create); apply them in order to one item.
                let folder
                    (usage: NamespaceUsage, current: StoredItem option, accepted: int, ok: bool)
                    (n: int)
                    =
                    let ifMatch = if n = 0 then IfMatch.Absent else IfMatch.Version(uint64 n)
                    let target = uint64 n + 1UL

                    match Items.put usage item current ifMatch (sealedFor target) now with
                    | Ok a ->
                        let expectedVersion =
                            (current |> Option.map (fun i -> i.Version) |> Option.defaultValue 0UL)
                            + 1UL

                        a.Usage,
                        Some a.Item,
                        accepted + 1,
                        ok && a.Item.Version = expectedVersion && a.NewHead = usage.Head + 1UL
                    | Error e ->
                        let stale =
                            current |> Option.map (fun i -> i.Version)
                            <> (if n = 0 then None else Some(uint64 n))

                        usage, current, accepted, ok && e.Status = 412 && stale

                let usage, current, accepted, ok =
                    attempts
                    |> List.fold
                        folder
                        ({
                            NamespaceId = ns
                            Head = 0UL
                            ItemCount = 0
                            StoredBytes = 0L
                         },
                         None,
                         0,
                         true)

                ok
                && usage.Head = uint64 accepted
                && (current |> Option.map (fun i -> i.Version) |> Option.defaultValue 0UL) =
                    uint64 accepted)

            testPropertyWithConfig
                config
                "mutated request bodies are refused with a field error, never an exception"
            <| forAll
                (Gen.oneof
                    [
                        Gen.elements validBodies |> Gen.bind mutate
                        Gen.elements validBodies
                        |> Gen.bind mutate
                        |> Gen.bind mutate
                        |> Gen.bind mutate
                        anyString
                    ])
                neverThrows

            testPropertyWithConfig
                config
                "group commit: every member is acknowledged, failed or retried, exactly one of them; nothing is answered without a commit"
            <| forAll
                (Gen.listOf (
                    Gen.elements
                        [ MemberOutcome.Done; MemberOutcome.Refused; MemberOutcome.LostRace; MemberOutcome.NotRun ]
                ))
                (fun outcomes ->
                    let d = GroupCommit.decide outcomes
                    let all = d.Acknowledge @ d.Fail @ d.Retry |> List.sort
                    let lost = outcomes |> List.contains MemberOutcome.LostRace

                    all = List.init outcomes.Length id
                    && d.Commit = not lost
                    && (d.Commit || (d.Acknowledge.IsEmpty && d.Fail.IsEmpty))
                    && d.Acknowledge |> List.forall (fun i -> outcomes[i] = MemberOutcome.Done))

            testPropertyWithConfig
                config
                "group commit: compare-and-set writes grouped (with lost races and retries) answer and end exactly as one at a time"
            <| forAll
                (Gen.zip
                    (Gen.listOf (Gen.zip (Gen.choose (0, 2)) (Gen.choose (0, 3))))
                    (Gen.listOf (Gen.choose (0, 80))))
                (fun (writes, splits) ->
                    // A write is (item, expected version); it is accepted when the item is at that
                    // version and moves it (and the head) by one.
                    let apply (versions: Map<int, int>, head) (item, expected) =
                        let current = versions.TryFind item |> Option.defaultValue 0

                        if current = expected then
                            (versions.Add(item, current + 1), head + 1), true
                        else
                            (versions, head), false

                    let serial =
                        writes
                        |> List.mapFold (fun state w -> let s', ok = apply state w in ok, s') (Map.empty, 0)

                    // Grouped: arrival order cut into groups; a split value below 20 makes that
                    // member lose a race on the group's first attempt.
                    let rec groups (ws: ((int * int) * int) list) =
                        match ws with
                        | [] -> []
                        | _ ->
                            let n = GroupCommit.take (1 + (List.length ws % 5))
                            List.truncate n ws :: groups (List.skip (min n ws.Length) ws)

                    let loses = writes |> List.mapi (fun i _ -> List.tryItem i splits |> Option.exists (fun v -> v < 20))

                    let rec runGroup state (members: ((int * int) * bool) list) attempt =
                        let outcomes, tentative, _ =
                            members
                            |> List.fold
                                (fun (acc, st, stopped) (w, lose) ->
                                    if stopped then (acc @ [ MemberOutcome.NotRun, false ], st, true)
                                    elif lose && attempt = 1 then (acc @ [ MemberOutcome.LostRace, false ], st, true)
                                    else
                                        let st', ok = apply st w
                                        (acc @ [ (if ok then MemberOutcome.Done else MemberOutcome.Refused), ok ], st', false))
                                ([], state, false)

                        let d = GroupCommit.decide (List.map fst outcomes)

                        if d.Commit then
                            List.map snd outcomes, tentative
                        else
                            runGroup state members (attempt + 1)

                    let grouped, finalState =
                        groups (List.zip writes (List.mapi (fun i _ -> i) writes))
                        |> List.fold
                            (fun (answers, state) g ->
                                let members = g |> List.map (fun (w, i) -> w, loses[i])
                                let a, s' = runGroup state members 1
                                answers @ a, s')
                            ([], (Map.empty, 0))

                    grouped = fst serial && finalState = snd serial)

            testPropertyWithConfig
                config
                "batch PUT: each item answered and the namespace left exactly as by the same single PUTs one after the other"
            <| forAll
                (Gen.zip3
                    (Gen.choose (0, 3)) // items below the count limit when the batch starts
                    (Gen.listOf (Gen.zip3 (Gen.choose (0, 2)) (Gen.choose (0, 3)) (Gen.choose (0, 3))))
                    (Gen.listOf (Gen.choose (0, 3))))
                (fun (room, entries, stored) ->
                    // Entry i writes item i: stored at version `stored[i]` (0 = absent), If-Match
                    // `ifMatch` (0 = create), a body that is valid (0, 1), bound to the wrong
                    // version (2) or too large (3).
                    let itemAt i =
                        Bin.ofBytes<ItemIdKind>(Array.init 32 (fun b -> byte (b + i)))
                        |> Result.defaultWith (fun _ -> failwith "item")

                    let storedAt i = List.tryItem i stored |> Option.defaultValue 0

                    let current i =
                        match storedAt i with
                        | 0 -> None
                        | v ->
                            Some
                                {
                                    NamespaceId = ns
                                    ItemId = itemAt i
                                    Version = uint64 v
                                    Sealed = sealedFor (uint64 v)
                                    UpdatedAt = now
                                }

                    let usage =
                        {
                            NamespaceId = ns
                            Head = 10UL
                            ItemCount = Limits.MaxItemsPerNamespace - room
                            StoredBytes = 0L
                        }

                    let input =
                        entries
                        |> List.mapi (fun i (kind, ifMatch, _) ->
                            let id = itemAt i
                            let target = uint64 ifMatch + 1UL

                            let body: Result<SealedItem, ApiError> =
                                match kind with
                                | 3 -> Error(ApiError.tooLarge "too large")
                                | 2 ->
                                    let s = ItemCrypto.seal keys ns id (target + 1UL) nonce (ReadOnlySpan "v"B)
                                    s |> Result.mapError (fun e -> ApiError.badRequest e.Message)
                                | _ ->
                                    ItemCrypto.seal keys ns id target nonce (ReadOnlySpan "v"B)
                                    |> Result.mapError (fun e -> ApiError.badRequest e.Message)

                            id, current i, (if ifMatch = 0 then IfMatch.Absent else IfMatch.Version(uint64 ifMatch)), body)

                    let outcome = Items.putBatch usage input now

                    let serial, final =
                        input
                        |> List.mapFold
                            (fun u (id, cur, ifMatch, body) ->
                                match body |> Result.bind (fun b -> Items.put u id cur ifMatch b now) with
                                | Ok a -> (id, Ok a), a.Usage
                                | Error e -> (id, Error e), u)
                            usage

                    let accepted = outcome.Results |> List.filter (snd >> Result.isOk) |> List.length

                    outcome.Results = serial
                    && outcome.Usage = final
                    && outcome.Usage.Head = usage.Head + uint64 accepted
                    && (List.zip outcome.Results entries
                        |> List.forall (fun ((_, r), (_, ifMatch, _)) ->
                            match r with
                            | Ok a -> a.Item.Version = uint64 ifMatch + 1UL
                            | Error e -> List.contains e.Status [ 400; 409; 412; 413 ])))

            testPropertyWithConfig
                config
                "batch GET: every requested ID answered once, items in request order within the budget, the first found one always, omitted ones a suffix"
            <| forAll
                (Gen.zip3
                    (Gen.listOf (Gen.choose (0, 4))) // per requested ID: 0 = missing, else size class
                    (Gen.choose (1, 5))
                    (Gen.choose (0, 200_000)))
                (fun (classes, _, budget) ->
                    let ids =
                        classes
                        |> List.mapi (fun i _ ->
                            Bin.ofBytes<ItemIdKind>(Array.init 32 (fun b -> byte (b * 7 + i)))
                            |> Result.defaultWith (fun _ -> failwith "item"))

                    let sizeOf c = [| 0; 16; 1000; 40_000; 65_536 |][c]

                    let stored =
                        List.zip ids classes
                        |> List.choose (fun (id, c) ->
                            if c = 0 then
                                None
                            else
                                let ct =
                                    Bin.ofBytes<CiphertextKind>(Array.zeroCreate (sizeOf c))
                                    |> Result.defaultWith (fun _ -> failwith "ct")

                                Some(
                                    id,
                                    {
                                        NamespaceId = ns
                                        ItemId = id
                                        Version = 1UL
                                        Sealed = { sealedFor 1UL with Ciphertext = ct }
                                        UpdatedAt = now
                                    }
                                ))
                        |> Map.ofList

                    let plan = Items.getBatch ids (fun id -> Map.tryFind id stored) (int64 budget)
                    let answered = (plan.Items |> List.map (fun i -> i.ItemId)) @ plan.Missing @ plan.Omitted
                    let spent = plan.Items |> List.sumBy (fun i -> int64 i.Sealed.Ciphertext.Length)
                    let cut = ids.Length - plan.Omitted.Length

                    List.sort answered = List.sort ids
                    && plan.Omitted = List.skip cut ids
                    && (plan.Items |> List.map (fun i -> i.ItemId)) = (List.truncate cut ids |> List.filter stored.ContainsKey)
                    && plan.Missing = (List.truncate cut ids |> List.filter (stored.ContainsKey >> not))
                    && (spent <= int64 budget || plan.Items.Length = 1)
                    && (plan.Omitted.IsEmpty || not plan.Items.IsEmpty)
                    && (match plan.Omitted with
                        | first :: _ -> spent + int64 stored[first].Sealed.Ciphertext.Length > int64 budget
                        | [] -> true))
        ]
