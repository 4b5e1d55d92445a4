/// Laws of the pure core's first decisions: the scope hash ignores order, snapshot
/// reconciliation never loses a local edit and is idempotent, the schedule stays within bounds.
module BitBoxSync.Properties.CoreProperties

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open BitBoxSync.Protocol
open BitBoxSync.Core
open BitBoxSync.Properties.Generators

let private keys =
    NamespaceKeys.derive (
        Bin.ofBytes<DekKind>(Array.init 32 byte)
        |> Result.defaultWith (fun _ -> failwith "dek")
    )

let private ns =
    Bin.ofBytes<NamespaceIdKind>(Array.zeroCreate 16)
    |> Result.defaultWith (fun _ -> failwith "ns")

let private keyId =
    Bin.ofBytes<KeyIdKind>(Array.zeroCreate 32)
    |> Result.defaultWith (fun _ -> failwith "key id")

let private t0 = DateTimeOffset.FromUnixTimeSeconds 100L
let private t1 = DateTimeOffset.FromUnixTimeSeconds 200L

let private keyGen =
    Gen.elements [ "a"; "b"; "c"; "d"; "e"; "é"; "Ａ"; "\U0001F600"; "a\u001fb" ]

let private valueGen = Gen.elements [ "x"B; "y"B; "z"B; [||] ]

/// A random collection state: per key an optional row (clean/dirty/conflict, base) and an
/// optional snapshot value; some keys are out of scope.
type private Case =
    {
        Rows: Map<string, ItemState>
        Snapshot: (string * byte[]) list
        ActiveKeys: string list
    }

let private caseGen =
    gen {
        let! keysInPlay =
            Gen.subListOf [ "a"; "b"; "c"; "d"; "e"; "é"; "Ａ"; "\U0001F600"; "a\u001fb" ]

        let! active = Gen.subListOf keysInPlay

        let! rows =
            keysInPlay
            |> List.map (fun k ->
                gen {
                    let! present = Gen.elements [ true; false ]
                    let! baseValue = Gen.optionOf valueGen
                    let! version = Gen.choose (0, 3)
                    let! dirty = Gen.elements [ true; false ]
                    let! conflict = Gen.elements [ true; false; false ]

                    let row =
                        { ItemState.template keyId ns "c" k (LogicalKey.itemId keys "c" k) t0 with
                            Version = uint64 version
                            BaseVersion = (if baseValue.IsSome then uint64 version else 0UL)
                            BaseValue = baseValue
                            Dirty = dirty || conflict
                            Conflict = conflict
                        }

                    return if present then Some(k, row) else None
                })
            |> Gen.sequenceToList

        let! snapshot =
            keysInPlay
            |> List.map (fun k -> Gen.optionOf valueGen |> Gen.map (Option.map (fun v -> k, v)))
            |> Gen.sequenceToList

        return
            {
                Rows = rows |> List.choose id |> Map.ofList
                Snapshot = snapshot |> List.choose id
                ActiveKeys = active
            }
    }

let private reconcile (c: Case) (rows: Map<string, ItemState>) =
    Snapshot.reconcile
        {
            KeyId = keyId
            NamespaceId = ns
            Collection = "c"
            Scope = Scope.build keys [ { Collection = "c"; Keys = c.ActiveKeys } ]
            Rows = rows
            Snapshot = c.Snapshot
            ItemIdOf = LogicalKey.itemId keys "c"
            Now = t1
        }

let private applyEffects (rows: Map<string, ItemState>) effects =
    effects
    |> List.fold
        (fun (m: Map<string, ItemState>) e ->
            match e with
            | SnapshotEffect.Queue row -> m.Add(row.Key, row)
            | SnapshotEffect.Lingering _
            | SnapshotEffect.OutsideScope _ -> m)
        rows

/// A random row and a remote value for the apply laws.
let private applyCase =
    gen {
        let! version = Gen.choose (0, 5) |> Gen.map uint64
        let! bump = Gen.choose (1, 3) |> Gen.map uint64
        let! baseValue = Gen.optionOf valueGen
        let! dirty = Gen.elements [ true; false ]
        let! conflict = Gen.elements [ true; false; false; false ]

        let! local =
            Gen.oneof [ valueGen |> Gen.map LocalValue.Present; Gen.constant LocalValue.Absent ]

        let! remote = valueGen
        let! mergeKind = Gen.elements [ "local"; "remote"; "none"; "error"; "concat" ]

        let row =
            { ItemState.template keyId ns "c" "k" (LogicalKey.itemId keys "c" "k") t0 with
                Version = version
                BaseVersion = (if baseValue.IsSome then version else 0UL)
                BaseValue = baseValue
                Dirty = dirty || conflict
                Conflict = conflict
            }

        let merge: ByteMerge =
            match mergeKind with
            | "local" -> fun _ l _ -> Ok(MergeOutcome.Merged l)
            | "remote" -> fun _ _ r -> Ok(MergeOutcome.Merged r)
            | "none" -> fun _ _ _ -> Ok MergeOutcome.Unresolved
            | "error" -> fun _ _ _ -> Error "boom"
            | _ -> fun _ l r -> Ok(MergeOutcome.Merged(Array.append l r))

        return row, version + bump, remote, local, merge
    }

let private isLocalEdit (row: ItemState) (local: LocalValue) =
    match local with
    | LocalValue.Present v -> row.Dirty || not (ItemState.equalsBase row v)
    | LocalValue.Absent -> row.Dirty

let tests =
    testList
        "core"
        [
            testPropertyWithConfig
                config
                "batching: uploads cut into batches in order, each within the offered limits, a new one only when the next item would not fit"
            <| forAll
                (Gen.zip3 (Gen.choose (2, 300)) (Gen.choose (Batching.MinRequestBytes, 600_000)) (Gen.listOf (Gen.choose (180, 87_600))))
                (fun (maxItems, maxBytes, sizes) ->
                    let limits = { MaxItems = maxItems; MaxRequestBytes = maxBytes }
                    let cuts = Batching.cut limits sizes

                    let rec batches (rest: int list) (counts: int list) =
                        match counts with
                        | [] -> []
                        | n :: more -> List.truncate n rest :: batches (List.skip n rest) more

                    let bs = batches sizes cuts
                    let bytes (b: int list) = Batching.PutEnvelopeBytes + List.sum b

                    List.sum cuts = sizes.Length
                    && List.concat bs = sizes
                    && bs |> List.forall (fun b -> b.Length >= 1 && b.Length <= maxItems && bytes b <= maxBytes)
                    && (List.pairwise bs
                        |> List.forall (fun (b, next) -> b.Length = maxItems || bytes b + List.head next > maxBytes)))

            test "batching: an offer is used only in version 1, for batches of two or more, with room for any single item; clamped to the engine's limits" {
                let offer v n bytes : Wire.BatchItemsCapability =
                    { Version = v; MaxItems = n; MaxRequestBytes = bytes; MaxResponseBytes = 1 }

                Expect.equal (Batching.ofCapability (offer 1 100 200_000)) (Some { MaxItems = 100; MaxRequestBytes = 200_000 }) "usable"
                Expect.equal (Batching.ofCapability (offer 1 10_000 100_000_000)) (Some { MaxItems = Limits.MaxBatchItems; MaxRequestBytes = Batching.MaxRequestBytes }) "clamped"
                Expect.isNone (Batching.ofCapability (offer 2 100 200_000)) "another version"
                Expect.isNone (Batching.ofCapability (offer 1 1 200_000)) "one item per batch"
                Expect.isNone (Batching.ofCapability (offer 1 100 (Batching.MinRequestBytes - 1))) "too small for a 64 KiB item"
                Expect.isNone (Batching.ofCapability (Unchecked.defaultof<Wire.BatchItemsCapability>)) "not offered"
            }

            testPropertyWithConfig
                config
                "apply never overwrites a local edit with a value the merge did not produce"
            <| forAll applyCase (fun (row, remoteVersion, remote, local, merge) ->
                let merged =
                    match local with
                    | LocalValue.Present l ->
                        merge (if ItemState.hasMergeBase row then row.BaseValue else None) l remote
                    | LocalValue.Absent -> Error "no local"

                match Apply.decide row remoteVersion remote local (Some(CollectionFunctions.ofMerge merge)) t1 with
                | ApplyDecision.Write w when isLocalEdit row local ->
                    // Only the converge case (local = remote) or the merge's own answer may be written.
                    (match local with
                     | LocalValue.Present l -> l = remote && w.Value = remote
                     | LocalValue.Absent -> false)
                    || merged = Ok(MergeOutcome.Merged w.Value)
                | ApplyDecision.Write w -> w.Value = remote
                | ApplyDecision.Save o ->
                    o.Row.Conflict
                    && o.Row.ConflictRemoteValue = Some remote
                    && o.Row.Version = remoteVersion
                | ApplyDecision.Quarantine _ -> isLocalEdit row local
                | ApplyDecision.ReadLocal -> false)

            testPropertyWithConfig
                config
                "a lost race keeps the item dirty without advancing its version or base"
            <| forAll applyCase (fun (row, remoteVersion, remote, local, merge) ->
                match Apply.decide row remoteVersion remote local (Some(CollectionFunctions.ofMerge merge)) t1 with
                | ApplyDecision.Write w ->
                    w.OnLostRace.Row.Dirty
                    && w.OnLostRace.Row.Version = row.Version
                    && w.OnLostRace.Row.BaseValue = row.BaseValue
                    && w.OnLostRace.Events = [ ItemEvent.ItemQueued ]
                | _ -> true)

            testPropertyWithConfig
                config
                "applying the same remote version twice changes nothing the second time"
            <| forAll applyCase (fun (row, remoteVersion, remote, local, merge) ->
                let saved =
                    match Apply.decide row remoteVersion remote local (Some(CollectionFunctions.ofMerge merge)) t1 with
                    | ApplyDecision.Write w -> Some w.OnWritten.Row
                    | ApplyDecision.Save o -> Some o.Row
                    | _ -> None

                match saved with
                | Some r ->
                    Download.rowToApply (Some r) row remoteVersion = None
                    && r.Version = remoteVersion
                | None -> true)

            testPropertyWithConfig
                config
                "any server version below what this client has seen is a rollback"
            <| forAll
                (Gen.zip3
                    (Gen.choose (0, 10))
                    (Gen.choose (0, 10))
                    (Gen.optionOf (Gen.choose (0, 10))))
                (fun (cached, response, mapVersion) ->
                    let row =
                        { ItemState.template keyId ns "c" "k" (LogicalKey.itemId keys "c" "k") t0 with
                            Version = uint64 cached
                        }

                    match
                        Download.checkVersion
                            row
                            (mapVersion |> Option.map uint64)
                            (uint64 response)
                    with
                    | Error(SyncError.Rollback _) ->
                        response < cached || mapVersion |> Option.exists (fun m -> response < m)
                    | Error _ -> false
                    | Ok() ->
                        response >= cached && mapVersion |> Option.forall (fun m -> response >= m))

            testPropertyWithConfig
                config
                "a namespace list below any cached head is a rollback and plans nothing"
            <| forAll
                (Gen.zip (Gen.choose (0, 5)) (Gen.choose (0, 5)))
                (fun (cachedHead, listedHead) ->
                    let identity =
                        {
                            KeyId = keyId
                            Kind = IdentityKind.Keystore
                            AccessToken = None
                            TokenExpiry = None
                            DefaultNamespaceId = Some ns
                            UpdatedAt = t0
                        }

                    let cached =
                        {
                            KeyId = keyId
                            NamespaceId = ns
                            Kind = Some NamespaceKind.Default
                            Head = uint64 cachedHead
                            ActiveScopeHash = ""
                            Dek = None
                            UpdatedAt = t0
                        }

                    let listed =
                        [
                            {
                                NamespaceId = ns
                                Kind = NamespaceKind.Default
                                Head = uint64 listedHead
                            }
                        ]

                    match Namespaces.check identity [ cached ] listed t1 with
                    | Error(SyncError.Rollback(RollbackReason.NamespaceHeadDecreased _)) ->
                        listedHead < cachedHead
                    | Error _ -> false
                    | Ok plan ->
                        listedHead >= cachedHead
                        && plan.Namespaces.Head.RemoteChanged = (listedHead > cachedHead))

            testPropertyWithConfig
                config
                "an item map never plans work when it contradicts the cache; otherwise downloads only newer versions"
            <| forAll
                (Gen.zip
                    (Gen.listOf (Gen.zip keyGen (Gen.choose (0, 4))))
                    (Gen.listOf (Gen.zip keyGen (Gen.choose (0, 4)))))
                (fun (cachedVersions, serverVersions) ->
                    let cached =
                        cachedVersions
                        |> List.distinctBy fst
                        |> List.map (fun (k, v) ->
                            { ItemState.template keyId ns "c" k (LogicalKey.itemId keys "c" k) t0 with
                                Version = uint64 v
                            })

                    let server =
                        serverVersions
                        |> List.distinctBy fst
                        |> List.map (fun (k, v) -> LogicalKey.itemId keys "c" k, uint64 v)
                        |> Map.ofList

                    let scope =
                        Scope.build
                            keys
                            [ { Collection = "c"; Keys = cachedVersions |> List.map fst } ]

                    let row =
                        {
                            KeyId = keyId
                            NamespaceId = ns
                            Kind = None
                            Head = 0UL
                            ActiveScopeHash = ""
                            Dek = None
                            UpdatedAt = t0
                        }

                    let contradiction =
                        cached
                        |> List.exists (fun c ->
                            match server.TryFind c.ItemId with
                            | Some v -> v < c.Version
                            | None -> c.Version > 0UL)

                    match
                        ItemMap.plan
                            {
                                Row = row
                                ExpectedHead = 0UL
                                MapHead = 0UL
                                MapItems = server
                                Cached = cached
                                Scope = scope
                                Now = t1
                            }
                    with
                    | Error(SyncError.Rollback _) -> contradiction
                    | Error _ -> false
                    | Ok plan ->
                        not contradiction
                        && plan.Downloads
                           |> List.forall (fun (r, v) -> v > r.Version && server[r.ItemId] = v))

            testPropertyWithConfig
                config
                "scope hash is independent of collection and key order (and of duplicates)"
            <| forAll (Gen.zip (Gen.listOf keyGen) (Gen.listOf keyGen)) (fun (names, itemKeys) ->
                let ids = itemKeys |> List.map (LogicalKey.itemId keys "c")
                let shuffledNames = List.rev names @ names
                let shuffledIds = List.rev ids @ ids

                Scope.hash names ids = Scope.hash shuffledNames shuffledIds
                && (Scope.hash names ids = "") = List.isEmpty names)

            testPropertyWithConfig
                config
                "a local edit is never lost: every in-scope value that differs from its base ends up dirty"
            <| forAll caseGen (fun c ->
                let after = applyEffects c.Rows (reconcile c c.Rows)

                c.Snapshot
                |> List.forall (fun (k, v) ->
                    if not (List.contains k c.ActiveKeys) then
                        after.TryFind k = c.Rows.TryFind k
                    else
                        match after.TryFind k with
                        | None -> false
                        | Some row -> row.Dirty || ItemState.equalsBase row v))

            testPropertyWithConfig
                config
                "reconciliation touches only queued rows and is idempotent"
            <| forAll caseGen (fun c ->
                let effects = reconcile c c.Rows
                let after = applyEffects c.Rows effects

                let queuedKeys =
                    effects
                    |> List.choose (function
                        | SnapshotEffect.Queue r -> Some r.Key
                        | _ -> None)

                (reconcile c after
                 |> List.forall (function
                     | SnapshotEffect.OutsideScope _ -> true
                     | _ -> false))
                && (c.Rows
                    |> Map.forall (fun k row -> List.contains k queuedKeys || after[k] = row))
                && (effects
                    |> List.forall (function
                        | SnapshotEffect.Queue r ->
                            not (
                                c.Rows.TryFind r.Key
                                |> Option.exists (fun o -> o.Conflict || o.Dirty)
                            )
                        | _ -> true)))

            testPropertyWithConfig
                config
                "backoff is within [base, max] and never decreases with more failures"
            <| forAll
                (Gen.zip3 (Gen.choose (1, 100000)) (Gen.choose (0, 200000)) (Gen.choose (1, 40)))
                (fun (b, m, f) ->
                    let s =
                        Schedule.settings
                            (TimeSpan.FromSeconds(float b))
                            (TimeSpan.FromSeconds(float m))

                    let x = Schedule.failureBackoff s f
                    let y = Schedule.failureBackoff s (f + 1)
                    x >= s.Base && x <= s.Max && y >= x && Schedule.idleInterval s (3 * f) <= s.Max)

            testPropertyWithConfig
                config
                "transient retries: the wait is within [Retry-After, ceiling], the ceiling stays ≤ 4 s in the fast lane then doubles up to the poll interval, success resets"
            <| forAll
                (Gen.zip3 (Gen.choose (1, 100000)) (Gen.choose (1, 40)) (Gen.zip (Gen.choose (0, 1000000)) (Gen.choose (-1, 100000))))
                (fun (b, n, (sample, retry)) ->
                    let s = Schedule.settings (TimeSpan.FromSeconds(float b)) TimeSpan.Zero
                    let retryAfter = if retry < 0 then None else Some(TimeSpan.FromSeconds(float retry))

                    let failing =
                        {
                            Failure = Some(FailureKind.Transient retryAfter)
                            Activity = false
                            Requested = false
                        }

                    let after k =
                        Seq.fold (fun st _ -> Schedule.record s false st failing) (Schedule.initial s) (Seq.init k id)

                    let st = after n
                    let wait = Schedule.nextWait st (float sample / 1000001.0)
                    let floor = retryAfter |> Option.map (fun r -> min r s.Max) |> Option.defaultValue TimeSpan.Zero
                    let ceiling = Schedule.transientCeiling s n

                    let succeeded =
                        Schedule.record s false st { failing with Failure = None }

                    wait >= floor
                    && wait <= max floor ceiling
                    && ceiling <= s.Base
                    && Schedule.transientCeiling s (n + 1) >= ceiling
                    && (n >= Schedule.FastLaneRetries || ceiling <= Schedule.FastLaneCap)
                    && (let next = Schedule.transientCeiling s (n + 1) in
                        next = ceiling + ceiling || next = s.Base || (n < Schedule.FastLaneRetries && next = ceiling))
                    && succeeded = Schedule.initial s)

            testPropertyWithConfig config "jitter stays within 0.9x..1.1x of the interval"
            <| forAll
                (Gen.zip (Gen.choose (1, Int32.MaxValue)) (Gen.choose (0, 1000000)))
                (fun (ticks, n) ->
                    let interval = TimeSpan(int64 ticks * 10L)
                    let j = Schedule.jitter interval (float n / 1000001.0)
                    let tenth = interval.Ticks / 10L
                    j.Ticks >= interval.Ticks - tenth && j.Ticks <= interval.Ticks + tenth)
        ]
