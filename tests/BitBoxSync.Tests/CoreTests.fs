/// Example tests of the pure sync core's decisions (docs/engine.md §3, §4.3, §6.1, §7.2). The
/// engine-level checklist tests of docs/engine.md §11 are ported with the shell (issue "The
/// engine").
module BitBoxSync.Tests.CoreTests

open System
open Expecto
open BitBoxSync.Protocol
open BitBoxSync.Core
open BitBoxSync.Tests.TestData

let private dek =
    Bin.ofBytes<DekKind>(Array.init 32 (fun i -> byte (0x40 + i))) |> ok "dek"

let private keys = NamespaceKeys.derive dek

let private ns =
    Bin.parse<NamespaceIdKind> "00112233445566778899aabbccddeeff" |> ok "ns"

let private keyId = Bin.parse<KeyIdKind>(String('a', 64)) |> ok "key id"
let private t0 = DateTimeOffset.FromUnixTimeSeconds 100L
let private t1 = DateTimeOffset.FromUnixTimeSeconds 200L
let private minutes (m: float) = TimeSpan.FromMinutes m

let private row key version baseValue dirty conflict =
    { ItemState.template keyId ns "notes" key (LogicalKey.itemId keys "notes" key) t0 with
        Version = version
        BaseVersion = version
        BaseValue = baseValue
        Dirty = dirty
        Conflict = conflict
    }

let keyTests =
    testList
        "logical keys and scope hash"
        [
            test
                "TestLogicalKeyCompositionIsLengthDelimited: (a, b\\x1fc) and (a\\x1fb, c) get different item ids" {
                Expect.notEqual
                    (LogicalKey.itemId keys "a" "b\u001fc")
                    (LogicalKey.itemId keys "a\u001fb" "c")
                    "no collision"

                bytesEqual
                    (LogicalKey.join [ "ab"; "" ])
                    (hex "00000000000000026162" |> fun b -> Array.append b (Array.zeroCreate 8))
                    "u64be length then bytes"
            }
            test "item ids hash the length-delimited (collection, key) under the map key" {
                // Independently computed: HMAC-SHA256(HKDF(dek 40..5f, item-id label), join ["notes"; "n1"]).
                Expect.equal
                    (LogicalKey.itemId keys "notes" "n1").Wire
                    "72d222db515388d659a11acf625d928a1975a7727ac55adac1328b6bd0b5a192"
                    "item id"
            }
            test "the scope hash is bit-exact, with names in UTF-8 byte order" {
                let ids =
                    [ "ff"; "00"; "ab" ]
                    |> List.map (fun b -> Bin.parse<ItemIdKind>(String.replicate 32 b) |> ok "id")

                let names = [ "notes"; "accounts"; "é"; "\U0001F600"; "Ａ" ]
                // Independently computed with Python hashlib (UTF-16 ordinal order would put the emoji before Ａ).
                Expect.equal
                    (Scope.hash names ids)
                    "eea3543df98dddaf7c850e7f775c0f405c5d2f02164aa04d801a534337814384"
                    "scope hash"

                Expect.equal (Scope.hash [] ids) "" "no collection registered: empty"
            }
            test "collections without keys still contribute their name" {
                Expect.notEqual
                    (Scope.hash [ "a" ] [])
                    (Scope.hash [ "a"; "b" ] [])
                    "empty collection counts"
            }
        ]

let snapshotTests =
    test
        "TestReconcileLocalSnapshotsQueuesNewAndChangedValues (decision): changed and new are queued in key order, the rest untouched" {
        let rows =
            [
                "changed", row "changed" 1UL (Some "old"B) false false
                "clean", row "clean" 1UL (Some "same"B) false false
                "conflict", row "conflict" 2UL (Some "base"B) true true
                "dirty", row "dirty" 1UL (Some "base"B) true false
            ]
            |> Map.ofList

        let activeKeys = [ "changed"; "clean"; "conflict"; "dirty"; "new" ]
        let scope = Scope.build keys [ { Collection = "notes"; Keys = activeKeys } ]

        let effects =
            Snapshot.reconcile
                {
                    KeyId = keyId
                    NamespaceId = ns
                    Collection = "notes"
                    Scope = scope
                    Rows = rows
                    Snapshot =
                        [
                            "new", "fresh"B
                            "dirty", "edited"B
                            "conflict", "mine"B
                            "clean", "same"B
                            "changed", "new value"B
                            "stray", "x"B
                        ]
                    ItemIdOf = LogicalKey.itemId keys "notes"
                    Now = t1
                }

        match effects with
        | [ SnapshotEffect.Queue changed
            SnapshotEffect.Queue created
            SnapshotEffect.OutsideScope("notes", "stray") ] ->
            Expect.equal
                changed
                { rows["changed"] with Dirty = true; UpdatedAt = t1 }
                "changed: dirty, version and base kept"

            Expect.equal created.Key "new" "then the new key"

            Expect.equal
                (created.Version, created.BaseValue, created.Dirty)
                (0UL, None, true)
                "new row: version 0, no base, dirty"

            Expect.equal (ItemState.status created) ItemStatus.PendingCreate "pending create"
        | other -> failtestf "unexpected effects %A" other
    }

let scheduleTests =
    let s = Schedule.settings TimeSpan.Zero TimeSpan.Zero

    testList
        "schedule"
        [
            test "defaults: 5 min base, 60 min cap; a max below the base becomes max(60 min, base)" {
                Expect.equal s { Base = minutes 5.0; Max = minutes 60.0 } "defaults"

                Expect.equal
                    (Schedule.settings (minutes 90.0) (minutes 10.0))
                    { Base = minutes 90.0; Max = minutes 90.0 }
                    "max below base"

                Expect.equal
                    (Schedule.settings (minutes 1.0) (minutes 2.0))
                    { Base = minutes 1.0; Max = minutes 2.0 }
                    "kept as given"
            }
            test "transient failures retry after at most 1, 2, 4 s (4 s for about a minute), then doubling up to the poll interval; Retry-After bounds it below" {
                let transient n retryAfter =
                    let mutable st = Schedule.initial s

                    for _ in 1..n do
                        st <-
                            Schedule.record
                                s
                                false
                                st
                                {
                                    Failure = Some(FailureKind.Transient retryAfter)
                                    Activity = false
                                    Requested = false
                                }

                    st

                Expect.equal
                    [ for n in 1..24 -> (transient n None).Interval.TotalSeconds ]
                    ([ 1.0; 2.0 ] @ List.replicate 13 4.0 @ [ 8.0; 16.0; 32.0; 64.0; 128.0; 256.0; 300.0; 300.0; 300.0 ])
                    "ceilings: 1, 2, then 4 s for about a minute, then doubling up to the poll interval"

                Expect.equal (Schedule.nextWait (transient 3 None) 0.0) TimeSpan.Zero "full jitter from zero"
                Expect.equal (Schedule.nextWait (transient 3 None) 0.999999999) (TimeSpan.FromSeconds 4.0) "to the ceiling"
                let limited = transient 1 (Some(TimeSpan.FromSeconds 90.0))
                Expect.equal (Schedule.nextWait limited 0.0) (TimeSpan.FromSeconds 90.0) "not before Retry-After"

                Expect.equal
                    (Schedule.nextWait (transient 1 (Some(TimeSpan.FromDays 30.0))) 0.0)
                    (minutes 60.0)
                    "a Retry-After beyond the backoff cap is bounded by it"

                Expect.equal
                    (Schedule.classify true None None, Schedule.classify false (Some 503) None, Schedule.classify false (Some 429) None)
                    (FailureKind.Transient None, FailureKind.Transient None, FailureKind.Transient None)
                    "no answer, 5xx, 429 are transient"

                Expect.equal
                    (Schedule.classify false (Some 403) None, Schedule.classify false None None)
                    (FailureKind.Policy, FailureKind.Policy)
                    "a refusal or a non-HTTP failure is not"
            }
            test "failure backoff with defaults is 10, 20, 40, 60, 60 minutes" {
                Expect.equal
                    [ for f in 1..5 -> (Schedule.failureBackoff s f).TotalMinutes ]
                    [ 10.0; 20.0; 40.0; 60.0; 60.0 ]
                    "backoff"
            }
            test "idle interval doubles every three quiet polls" {
                Expect.equal
                    [ for q in 1..12 -> (Schedule.idleInterval s q).TotalMinutes ]
                    [ 5.0; 5.0; 10.0; 10.0; 10.0; 20.0; 20.0; 20.0; 40.0; 40.0; 40.0; 60.0 ]
                    "idle"
            }
            test "jitter spans exactly 0.9x to 1.1x; zero stays zero" {
                Expect.equal (Schedule.jitter (minutes 10.0) 0.0) (minutes 9.0) "low end"

                Expect.equal
                    (Schedule.jitter (minutes 10.0) 0.999999999999)
                    (minutes 11.0)
                    "high end"

                Expect.equal (Schedule.jitter TimeSpan.Zero 0.5) TimeSpan.Zero "zero"

                Expect.equal
                    (Schedule.jitter (TimeSpan 5L) 0.7)
                    (TimeSpan 5L)
                    "below 10 ticks unchanged"
            }
            test
                "recording: failure backs off, login resets, idle quiet passes slow down, activity resets" {
                let st0 = Schedule.initial s

                let failed =
                    Schedule.record
                        s
                        false
                        st0
                        {
                            Failure = Some FailureKind.Policy
                            Activity = false
                            Requested = false
                        }

                Expect.equal
                    failed
                    { st0 with
                        Interval = minutes 10.0
                        Failures = 1
                    }
                    "a policy failure: the long backoff"

                Expect.equal (Schedule.loginSucceeded s failed) st0 "login resets"

                let quiet =
                    {
                        Failure = None
                        Activity = false
                        Requested = false
                    }

                let idle3 =
                    List.fold (fun st r -> Schedule.record s true st r) st0 [ quiet; quiet; quiet ]

                Expect.equal
                    idle3
                    { st0 with
                        Interval = minutes 10.0
                        IdlePolls = 3
                    }
                    "idle slows down"

                Expect.equal
                    (Schedule.record s false st0 quiet)
                    st0
                    "foreground never infers idleness"

                Expect.equal
                    (Schedule.record s true idle3 { quiet with Activity = true })
                    st0
                    "activity resets"

                Expect.equal
                    (Schedule.record s true idle3 { quiet with Requested = true })
                    st0
                    "requested resets"
            }
        ]

let authTests =
    let state token expiry =
        {
            KeyId = keyId
            Kind = IdentityKind.Keystore
            AccessToken = token
            TokenExpiry = expiry
            DefaultNamespaceId = None
            UpdatedAt = t0
        }

    let now = DateTimeOffset(2026, 11, 24, 12, 0, 0, TimeSpan.Zero)
    let skew = TimeSpan.FromHours 24.0

    testList
        "auth"
        [
            test "no token, expired or unknown expiry → login; inside the skew → refresh; else use" {
                Expect.equal
                    (Auth.decide (state None None) now skew true)
                    (AuthDecision.Login None)
                    "no token"

                Expect.equal
                    (Auth.decide (state (Some "t") (Some(now.AddSeconds -1.0))) now skew true)
                    (AuthDecision.Login(Some(now.AddSeconds -1.0)))
                    "expired"

                Expect.equal
                    (Auth.decide (state (Some "t") None) now skew true)
                    (AuthDecision.Login None)
                    "unknown expiry"

                Expect.equal
                    (Auth.decide (state (Some "t") (Some(now.AddHours 2.0))) now skew true)
                    (AuthDecision.RefreshThenUse("t", now.AddHours 2.0))
                    "refresh window"

                Expect.equal
                    (Auth.decide (state (Some "t") (Some(now.AddHours 48.0))) now skew true)
                    (AuthDecision.UseToken "t")
                    "valid"
            }
            test "background work never prompts: needs-login instead of login, no refresh signature" {
                Expect.equal
                    (Auth.decide (state None None) now skew false)
                    (AuthDecision.NeedsLogin None)
                    "needs login"

                Expect.equal
                    (Auth.decide (state (Some "t") (Some(now.AddHours 2.0))) now skew false)
                    (AuthDecision.UseToken "t")
                    "no refresh"
            }
            test "a 401 re-logs in only when nobody replaced the failing token" {
                Expect.equal
                    (Auth.onUnauthorized (state (Some "new") None) "old" true)
                    (UnauthorizedDecision.RetryWith "new")
                    "replaced"

                Expect.equal
                    (Auth.onUnauthorized (state (Some "old") None) "old" true)
                    UnauthorizedDecision.ClearAndLogin
                    "same token"

                Expect.equal
                    (Auth.onUnauthorized (state (Some "old") None) "old" false)
                    UnauthorizedDecision.ClearAndNeedsLogin
                    "background"
            }
            test "a login response without a default namespace keeps the known one (§12.6)" {
                let known = { state (Some "t") None with DefaultNamespaceId = Some ns }
                let after = Auth.afterLogin known "t2" now None now
                Expect.equal after.DefaultNamespaceId (Some ns) "kept"

                Expect.equal
                    (after.AccessToken, after.TokenExpiry)
                    (Some "t2", Some now)
                    "token stored"
            }
        ]

let private nsRow id head scope dek =
    {
        KeyId = keyId
        NamespaceId = id
        Kind = Some NamespaceKind.Default
        Head = head
        ActiveScopeHash = scope
        Dek = dek
        UpdatedAt = t0
    }

let private ns2 =
    Bin.parse<NamespaceIdKind> "ffeeddccbbaa99887766554433221100" |> ok "ns2"

let private identity defaultNs =
    {
        KeyId = keyId
        Kind = IdentityKind.Keystore
        AccessToken = Some "t"
        TokenExpiry = Some(t0.AddDays 2.0)
        DefaultNamespaceId = defaultNs
        UpdatedAt = t0
    }

let private listed id kind head : ListedNamespace =
    { NamespaceId = id; Kind = kind; Head = head }

let private rollbackOf (r: Result<'a, SyncError>) =
    match r with
    | Error(SyncError.Rollback reason) -> reason
    | other -> failtestf "expected a rollback, got %A" other

let namespaceTests =
    testList
        "namespace and item-map decisions"
        [
            test
                "TestSyncNamespacesRejectsCachedNamespaceDisappearance (decision): reported as removal, nothing planned" {
                let r =
                    Namespaces.check
                        (identity None)
                        [
                            { nsRow ns 4UL "" (Some dek) with
                                Kind = Some NamespaceKind.Shared
                            }
                        ]
                        []
                        t1

                Expect.equal
                    r
                    (Error(SyncError.NamespaceRemoved ns))
                    "namespace removed, distinct from item rollback"
            }
            test "TestSyncNamespacesRejectsMultipleDefaultNamespaces (decision)" {
                let r =
                    Namespaces.check
                        (identity None)
                        []
                        [
                            listed ns NamespaceKind.Default 0UL
                            listed ns2 NamespaceKind.Default 0UL
                        ]
                        t1

                Expect.equal r (Error SyncError.MultipleDefaultNamespaces) "multiple defaults"

                Expect.stringContains
                    SyncError.MultipleDefaultNamespaces.Message
                    "multiple default namespaces"
                    "message"
            }
            test "TestSyncNamespacesRejectsDefaultNamespaceMismatch (decision)" {
                let r =
                    Namespaces.check
                        (identity (Some ns))
                        []
                        [ listed ns2 NamespaceKind.Default 0UL ]
                        t1

                Expect.equal
                    (rollbackOf r)
                    (RollbackReason.DefaultNamespaceChanged(ns, ns2))
                    "changed default"

                let kind =
                    Namespaces.check
                        (identity (Some ns))
                        []
                        [ listed ns NamespaceKind.Shared 0UL ]
                        t1

                Expect.equal
                    (rollbackOf kind)
                    (RollbackReason.DefaultKindChanged ns)
                    "default listed as shared"
            }
            test
                "a listed head below the cached head is a rollback, found before anything is planned" {
                let r =
                    Namespaces.check
                        (identity (Some ns))
                        [ nsRow ns 5UL "" (Some dek) ]
                        [ listed ns NamespaceKind.Default 4UL ]
                        t1

                Expect.equal
                    (rollbackOf r)
                    (RollbackReason.NamespaceHeadDecreased(ns, 5UL, 4UL))
                    "head decreased"
            }
            test
                "new namespaces need a join and a default is adopted; unknown kinds are not rollbacks" {
                let plan =
                    Namespaces.check (identity None) [] [ listed ns NamespaceKind.Default 3UL ] t1
                    |> ok "plan"

                Expect.equal plan.AdoptDefault (Some ns) "adopt default"
                Expect.isTrue plan.Namespaces.Head.NeedsJoin "join to get the DEK"
                Expect.isTrue plan.Namespaces.Head.RemoteChanged "head 3 > 0"

                let weird: Wire.NamespaceSummary =
                    {
                        NamespaceId = ns.Wire
                        Kind = "private"
                        NamespaceHead = 1UL
                    }

                Expect.equal
                    (Namespaces.parseListed [ weird ])
                    (Error(SyncError.UnsupportedNamespaceKind(ns.Wire, "private")))
                    "unsupported kind"
            }
            test
                "TestSyncNamespacesReconcilesActiveScopeChangeAtCurrentHead (decision): a scope change at the same head fetches the map once" {
                let plan =
                    Namespaces.check
                        (identity (Some ns))
                        [ nsRow ns 7UL "" (Some dek) ]
                        [ listed ns NamespaceKind.Default 7UL ]
                        t1
                    |> ok "plan"

                let p = plan.Namespaces.Head

                let scopeHash =
                    Scope.hashOf (
                        Scope.build keys [ { Collection = "notes"; Keys = [ "remote-only" ] } ]
                    )

                Expect.equal
                    (Namespaces.decide p scopeHash t1)
                    (NamespaceAction.FetchItemMap 7UL)
                    "scope changed: fetch"

                let again = { p with Row = { p.Row with ActiveScopeHash = scopeHash } }

                Expect.equal
                    (Namespaces.decide again scopeHash t1)
                    NamespaceAction.UpToDate
                    "same scope: no fetch, nothing to write"

                Expect.equal
                    (Namespaces.decide { again with RowChanged = true } scopeHash t1)
                    (NamespaceAction.Save { again.Row with Head = 7UL; UpdatedAt = t1 })
                    "kind changed: saved without a fetch"
            }
            test
                "TestNamespaceWatchNeedsSyncRejectsRollbackHead and self-notifications need no pass" {
                let cached = [ nsRow ns 5UL "" (Some dek) ]

                Expect.equal
                    (rollbackOf (
                        Namespaces.needsSync cached [ listed ns NamespaceKind.Default 4UL ]
                    ))
                    (RollbackReason.WatchHeadDecreased(ns, 5UL, 4UL))
                    "rollback"

                Expect.equal
                    (Namespaces.needsSync cached [ listed ns NamespaceKind.Default 5UL ])
                    (Ok false)
                    "already observed"

                Expect.equal
                    (Namespaces.needsSync cached [ listed ns NamespaceKind.Default 6UL ])
                    (Ok true)
                    "newer"

                Expect.equal
                    (Namespaces.needsSync cached [ listed ns2 NamespaceKind.Shared 0UL ])
                    (Ok true)
                    "unknown namespace"
            }
            test "TestSyncNamespacesSkipsInactiveScopedItemsAndAdvancesHead (decision)" {
                let inactive = row "gone-from-keys" 1UL (Some "v1"B) false false
                let scope = Scope.build keys [ { Collection = "notes"; Keys = [ "other" ] } ]

                let plan =
                    ItemMap.plan
                        {
                            Row = nsRow ns 1UL "" (Some dek)
                            ExpectedHead = 2UL
                            MapHead = 2UL
                            MapItems = Map.ofList [ inactive.ItemId, 2UL ]
                            Cached = [ inactive ]
                            Scope = scope
                            Now = t1
                        }
                    |> ok "plan"

                Expect.isEmpty plan.Downloads "no download of an inactive item"
                Expect.isEmpty plan.Unknown "not reported unknown"
                Expect.equal plan.Finish.Head 2UL "head advanced"
                Expect.equal plan.Finish.ActiveScopeHash (Scope.hashOf scope) "scope hash stored"
            }
            test "a transient download failure keeps the cached head, so the next pass fetches the map again" {
                let previous = nsRow ns 1UL "" (Some dek)
                let scope = Scope.build keys [ { Collection = "notes"; Keys = [ "k" ] } ]

                let plan =
                    ItemMap.plan
                        {
                            Row = previous
                            ExpectedHead = 3UL
                            MapHead = 3UL
                            MapItems = Map.empty
                            Cached = []
                            Scope = scope
                            Now = t1
                        }
                    |> ok "plan"

                Expect.equal (ItemMapFinish.decide plan previous false) plan.Finish "all applied: the new head"
                let held = ItemMapFinish.decide plan previous true
                Expect.equal held.Head 1UL "a download to retry: the head stays"
                Expect.equal held.ActiveScopeHash plan.Finish.ActiveScopeHash "the scope is still recorded"
            }
            test
                "TestSyncNamespacesRejectsInactiveItemDisappearance and TestSyncNamespaceItemsDetectsDisappearedKnownItemAsRollback (decision)" {
                let cached = row "k" 2UL (Some "v"B) false false

                let input =
                    {
                        Row = nsRow ns 4UL "" (Some dek)
                        ExpectedHead = 5UL
                        MapHead = 5UL
                        MapItems = Map.empty
                        Cached = [ cached ]
                        Scope = Scope.build keys []
                        Now = t1
                    }

                Expect.equal
                    (rollbackOf (ItemMap.plan input))
                    (RollbackReason.ItemDisappeared(ns, cached.ItemId, 2UL))
                    "inactive item disappeared"

                let active =
                    { input with
                        Scope = Scope.build keys [ { Collection = "notes"; Keys = [ "k" ] } ]
                    }

                Expect.equal
                    (rollbackOf (ItemMap.plan active))
                    (RollbackReason.ItemDisappeared(ns, cached.ItemId, 2UL))
                    "active item disappeared"

                let lower = { input with MapItems = Map.ofList [ cached.ItemId, 1UL ] }

                Expect.equal
                    (rollbackOf (ItemMap.plan lower))
                    (RollbackReason.ItemVersionDecreased(ns, cached.ItemId, 2UL, 1UL))
                    "version decreased"
            }
            test "TestSyncNamespaceItemsRejectsSnapshotBehindExpectedHead (decision)" {
                let input =
                    {
                        Row = nsRow ns 3UL "" (Some dek)
                        ExpectedHead = 5UL
                        MapHead = 4UL
                        MapItems = Map.empty
                        Cached = []
                        Scope = Scope.build keys []
                        Now = t1
                    }

                Expect.equal
                    (rollbackOf (ItemMap.plan input))
                    (RollbackReason.ItemMapHeadBehind(ns, 4UL, 5UL))
                    "behind the list"
            }
            test
                "remote-only keys in scope are downloaded from templates; unmappable IDs are reported, in item-ID order" {
                let scope =
                    Scope.build keys [ { Collection = "notes"; Keys = [ "remote-only"; "b" ] } ]

                let unknownA = Bin.parse<ItemIdKind>(String('0', 64)) |> ok "u"
                let unknownB = Bin.parse<ItemIdKind>(String('f', 64)) |> ok "u"
                let remoteOnly = LogicalKey.itemId keys "notes" "remote-only"

                let plan =
                    ItemMap.plan
                        {
                            Row = nsRow ns 0UL "" (Some dek)
                            ExpectedHead = 3UL
                            MapHead = 3UL
                            MapItems = Map.ofList [ unknownB, 1UL; remoteOnly, 2UL; unknownA, 1UL ]
                            Cached = []
                            Scope = scope
                            Now = t1
                        }
                    |> ok "plan"

                Expect.equal plan.Unknown [ unknownA; unknownB ] "sorted unknown ids"

                match plan.Downloads with
                | [ (template, 2UL) ] ->
                    Expect.equal
                        (template.Key, template.Version)
                        ("remote-only", 0UL)
                        "template at version 0"
                | other -> failtestf "downloads %A" other
            }
        ]

let private preferLocal: ByteMerge = fun _ local _ -> Ok(MergeOutcome.Merged local)

let private preferRemote: ByteMerge =
    fun _ _ remote -> Ok(MergeOutcome.Merged remote)

let private noMerge: ByteMerge = fun _ _ _ -> Ok MergeOutcome.Unresolved

let applyTests =
    testList
        "apply and flush decisions"
        [
            test
                "TestFetchAndApplyRemoteItemUsesFetchedVersion (decision): a clean apply stores the response version" {
                let clean = row "k" 1UL (Some "v1"B) false false
                Download.checkVersion clean (Some 2UL) 3UL |> ok "v3 ≥ map v2"

                match Apply.decide clean 3UL "v3"B (LocalValue.Present "v1"B) (Some(CollectionFunctions.ofMerge noMerge)) t1 with
                | ApplyDecision.Write w ->
                    Expect.equal w.Expected (Expected.Present "v1"B) "expects the clean value"

                    Expect.equal
                        (w.OnWritten.Row.Version,
                         w.OnWritten.Row.BaseVersion,
                         w.OnWritten.Row.BaseValue)
                        (3UL, 3UL, Some "v3"B)
                        "stored at v3"

                    Expect.equal
                        w.OnWritten.Events
                        [ ItemEvent.ItemChanged; ItemEvent.ItemDownloaded ]
                        "events"

                    Expect.equal
                        w.OnLostRace.Row
                        { clean with Dirty = true; UpdatedAt = t1 }
                        "lost race: dirty, versions not advanced"
                | other -> failtestf "%A" other
            }
            test "TestConflictStatePreservesOriginalMergeBase (decision)" {
                let dirty = row "k" 1UL (Some "base value"B) true false

                match
                    Apply.decide
                        dirty
                        2UL
                        "remote edit"B
                        (LocalValue.Present "local edit"B)
                        (Some(CollectionFunctions.ofMerge noMerge))
                        t1
                with
                | ApplyDecision.Save o ->
                    let r = o.Row

                    Expect.equal
                        (r.Dirty, r.Conflict, r.Version)
                        (true, true, 2UL)
                        "dirty conflict at v2"

                    Expect.equal
                        (r.BaseVersion, r.BaseValue)
                        (1UL, Some "base value"B)
                        "original base kept"

                    Expect.equal
                        (r.ConflictRemoteVersion, r.ConflictRemoteValue)
                        (2UL, Some "remote edit"B)
                        "remote side kept"

                    Expect.equal o.Events [ ItemEvent.ConflictDetected ] "conflict event"
                | other -> failtestf "%A" other

                let conflicted = { dirty with Conflict = true; Version = 2UL }

                match Apply.start conflicted 3UL "newer"B None t1 with
                | ApplyDecision.Save o ->
                    Expect.equal
                        (o.Row.Version, o.Row.ConflictRemoteValue, o.Row.BaseValue)
                        (3UL, Some "newer"B, Some "base value"B)
                        "conflict refreshed"
                | other -> failtestf "%A" other
            }
            test
                "TestConcurrentCreateWithoutMergeBaseRecordsConflictForStrictCodec (decision): the merge sees no base" {
                let pending = { row "k" 0UL None true false with BaseValue = None }
                let mutable seenBase = Some [||]

                let spy: ByteMerge =
                    fun b _ _ ->
                        seenBase <- b
                        Ok MergeOutcome.Unresolved

                match
                    Apply.decide
                        pending
                        1UL
                        "remote create"B
                        (LocalValue.Present "local create"B)
                        (Some(CollectionFunctions.ofMerge spy))
                        t1
                with
                | ApplyDecision.Save o ->
                    Expect.equal
                        (o.Row.Conflict, o.Row.Version, o.Row.BaseVersion, o.Row.BaseValue)
                        (true, 1UL, 0UL, None)
                        "conflict without base"
                | other -> failtestf "%A" other

                Expect.isNone seenBase "nil base"
            }
            test
                "TestResolvedUploadConflictRetriesMergedValueInSameFlush (decision): rebased dirty at v2, retried with If-Match 2" {
                let dirty = row "k" 1UL (Some "base"B) true false

                match
                    Apply.decide
                        dirty
                        2UL
                        "remote"B
                        (LocalValue.Present "local"B)
                        (Some(CollectionFunctions.ofMerge preferLocal))
                        t1
                with
                | ApplyDecision.Write w ->
                    let r = w.OnWritten.Row

                    Expect.equal
                        (r.Dirty, r.Version, r.BaseVersion, r.BaseValue)
                        (true, 2UL, 2UL, Some "remote"B)
                        "rebased"

                    Expect.equal
                        (Flush.afterPreconditionFailure 1 (Some r) true)
                        RetryDecision.Retry
                        "retry once"

                    match Flush.prepare r true (LocalValue.Present "local"B) with
                    | FlushStep.Upload u ->
                        Expect.equal
                            (u.IfMatch, u.TargetVersion)
                            (IfMatch.Version 2UL, 3UL)
                            "If-Match 2, target 3"
                    | other -> failtestf "%A" other

                    Expect.equal
                        (Flush.afterPreconditionFailure 2 (Some r) true)
                        RetryDecision.Stop
                        "no third PUT"
                | other -> failtestf "%A" other
            }
            test "TestUploadConflictAcceptingRemoteDoesNotRetry (decision)" {
                let dirty = row "k" 1UL (Some "base"B) true false

                match
                    Apply.decide
                        dirty
                        2UL
                        "remote"B
                        (LocalValue.Present "local"B)
                        (Some(CollectionFunctions.ofMerge preferRemote))
                        t1
                with
                | ApplyDecision.Write w ->
                    Expect.isFalse w.OnWritten.Row.Dirty "clean at v2"

                    Expect.equal
                        (Flush.afterPreconditionFailure 1 (Some w.OnWritten.Row) true)
                        RetryDecision.Stop
                        "nothing to retry"
                | other -> failtestf "%A" other
            }
            test "TestUploadConflictRejectsFetchedRollbackVersion (decision)" {
                let dirty = row "k" 2UL (Some "base"B) true false

                Expect.equal
                    (rollbackOf (Download.checkVersion dirty None 1UL))
                    (RollbackReason.ItemVersionDecreased(ns, dirty.ItemId, 2UL, 1UL))
                    "rollback"
            }
            test
                "equal local and remote values converge without a merge; a vanished dirty value quarantines the item" {
                let dirty = row "k" 1UL (Some "base"B) true false
                let failing: ByteMerge = fun _ _ _ -> failtest "merge must not run"

                match
                    Apply.decide dirty 2UL "same"B (LocalValue.Present "same"B) (Some(CollectionFunctions.ofMerge failing)) t1
                with
                | ApplyDecision.Write w -> Expect.isFalse w.OnWritten.Row.Dirty "converged clean"
                | other -> failtestf "%A" other

                Expect.equal
                    (Apply.decide dirty 2UL "x"B LocalValue.Absent (Some(CollectionFunctions.ofMerge failing)) t1)
                    (ApplyDecision.Quarantine QuarantineReason.LocalValueMissing)
                    "quarantined"

                let broken: ByteMerge = fun _ _ _ -> Error "decode merge local: bad json"

                Expect.equal
                    (Apply.decide dirty 2UL "x"B (LocalValue.Present "y"B) (Some(CollectionFunctions.ofMerge broken)) t1)
                    (ApplyDecision.Quarantine(
                        QuarantineReason.MergeFailed "decode merge local: bad json"
                    ))
                    "merge error isolated"
            }
            test
                "TestFlushDirtyItemsSkipsOversizedValueAndContinues and TestFlushDirtyItemsSkipsInactiveScopedItems (decision)" {
                let big = row "big" 0UL None true false

                Expect.equal
                    (Flush.prepare big true (LocalValue.Present(Array.zeroCreate 65536)))
                    (FlushStep.Skip(FlushSkip.TooLarge 65536))
                    "oversized"

                let small = row "small" 0UL None true false

                match Flush.prepare small true (LocalValue.Present "v"B) with
                | FlushStep.Upload u ->
                    Expect.equal (u.IfMatch, u.TargetVersion) (IfMatch.Absent, 1UL) "create"
                | other -> failtestf "%A" other

                Expect.equal
                    (Flush.prepare small false (LocalValue.Present "v"B))
                    (FlushStep.Skip FlushSkip.Inactive)
                    "inactive"

                Expect.equal
                    (Flush.prepare { small with Conflict = true } true (LocalValue.Present "v"B))
                    (FlushStep.Skip FlushSkip.InConflict)
                    "conflict"

                Expect.equal
                    (Flush.prepare small true LocalValue.Absent)
                    (FlushStep.Skip FlushSkip.ValueMissing)
                    "missing value reported"
            }
            test
                "an accepted upload makes the row clean with exactly the uploaded bytes as base; flush order is deterministic" {
                let dirty = row "k" 1UL (Some "base"B) true false

                match Flush.prepare dirty true (LocalValue.Present "edit"B) with
                | FlushStep.Upload u ->
                    let o = Flush.accepted u 2UL t1

                    Expect.equal
                        (o.Row.Version, o.Row.BaseVersion, o.Row.BaseValue, o.Row.Dirty)
                        (2UL, 2UL, Some "edit"B, false)
                        "clean v2"

                    Expect.equal o.Events [ ItemEvent.ItemUploaded ] "uploaded"
                | other -> failtestf "%A" other

                let a, b = row "a" 0UL None true false, row "b" 0UL None true false
                Expect.equal (Flush.order [ b; a ]) (Flush.order [ a; b ]) "ties broken by item id"
                Expect.equal (Namespaces.afterUpload (nsRow ns 4UL "" None) t1).Head 5UL "head + 1"
            }
        ]

let watchTests =
    testList
        "watch decisions"
        [
            test
                "TestWatchNamespacesOnceSkipsAlreadyObservedSelfNotification (decision) and the other answers" {
                let cached = [ nsRow ns 5UL "" (Some dek) ]

                Expect.equal
                    (Watch.interpret cached [ listed ns NamespaceKind.Default 5UL ] false)
                    WatchOutcome.AlreadyObserved
                    "self-notification"

                Expect.equal
                    (Watch.interpret cached [ listed ns NamespaceKind.Default 6UL ] false)
                    WatchOutcome.NeedsSync
                    "newer"

                Expect.equal (Watch.interpret cached [] true) WatchOutcome.TimedOut "timed out"

                match Watch.interpret cached [] false with
                | WatchOutcome.Failed(SyncError.InvalidResponse _) -> ()
                | other -> failtestf "an empty answer without timing out is an error, got %A" other

                match Watch.interpret cached [ listed ns NamespaceKind.Default 4UL ] false with
                | WatchOutcome.Failed(SyncError.Rollback _) -> ()
                | other -> failtestf "rollback expected, got %A" other
            }
            test "404, 405 and 501 stop the watch; transient failures reconnect within seconds; others back off like polling" {
                let s = Schedule.settings TimeSpan.Zero TimeSpan.Zero
                let transient = FailureKind.Transient None

                for status in [ 404; 405; 501 ] do
                    Expect.equal
                        (Watch.onFailure s 1 transient (Some status) 0.5)
                        WatchFailure.Unsupported
                        (string status)

                Expect.equal
                    (Watch.onFailure s 2 transient (Some 500) 0.99999999999)
                    (WatchFailure.Retry(TimeSpan.FromSeconds 2.0))
                    "second transient failure: at most 2 s (full jitter, high end)"

                Expect.equal
                    (Watch.onFailure s 1 transient None 0.0)
                    (WatchFailure.Retry TimeSpan.Zero)
                    "no answer: full jitter from 0 s"

                Expect.equal
                    (Watch.onFailure s 1 (FailureKind.Transient(Some(TimeSpan.FromSeconds 30.0))) (Some 503) 0.0)
                    (WatchFailure.Retry(TimeSpan.FromSeconds 30.0))
                    "Retry-After honoured"

                Expect.equal
                    (Watch.onFailure s 2 FailureKind.Policy (Some 403) 0.0)
                    (WatchFailure.Retry(minutes 18.0))
                    "a refusal: 20 min backoff, low jitter"
            }
        ]

let quarantineTests =
    test "a quarantined item is retried only when the remote version or the local value changes" {
        let dirty = row "k" 1UL (Some "base"B) true false

        let q =
            Quarantine.create
                dirty
                (QuarantineReason.MergeFailed "bad json")
                2UL
                (LocalValue.Present "local"B)

        Expect.equal (q.Collection, q.Key, q.RemoteVersion) ("notes", "k", 2UL) "names the item"

        Expect.isFalse
            (Quarantine.shouldRetry q 2UL (LocalValue.Present "local"B))
            "same inputs: not retried"

        Expect.isTrue (Quarantine.shouldRetry q 3UL (LocalValue.Present "local"B)) "newer remote"
        Expect.isTrue (Quarantine.shouldRetry q 2UL (LocalValue.Present "edited"B)) "local edit"
        Expect.isTrue (Quarantine.shouldRetry q 2UL LocalValue.Absent) "local value removed"

        Expect.stringContains
            (QuarantineReason.UnreadableRemote "aad mismatch").Message
            "aad mismatch"
            "reason text"
    }

let readinessTests =
    test
        "TestCreateInviteRejectsDefaultNamespaceBeforeChallenge (decision): kind checked on the cached row, joins keep head and scope" {
        let cached = nsRow ns 7UL "scope" (Some dek)

        Expect.equal
            (Readiness.decide (Some cached) (Some NamespaceKind.Shared) None)
            (Readiness.WrongKind(Some NamespaceKind.Default, NamespaceKind.Shared))
            "expected shared"

        Expect.equal
            (Readiness.decide (Some { cached with Kind = None }) (Some NamespaceKind.Shared) None)
            (Readiness.WrongKind(None, NamespaceKind.Shared))
            "unknown kind"

        Expect.equal
            (Readiness.decide (Some cached) None None)
            (Readiness.Ready cached)
            "ready offline"

        Expect.equal
            (Readiness.decide (Some { cached with Dek = None }) None (Some NamespaceKind.Shared))
            (Readiness.NeedsJoin(Some NamespaceKind.Default))
            "cached kind wins over the hint"

        Expect.equal
            (Readiness.decide None None (Some NamespaceKind.Shared))
            (Readiness.NeedsJoin(Some NamespaceKind.Shared))
            "new namespace"

        let joined =
            Readiness.afterJoin
                (Some { cached with Dek = None; Kind = None })
                keyId
                ns
                (Some NamespaceKind.Shared)
                dek
                t1

        Expect.equal
            (joined.Head, joined.ActiveScopeHash, joined.Kind, joined.Dek)
            (7UL, "scope", Some NamespaceKind.Shared, Some dek)
            "head and scope kept, kind filled"
    }

let conflictTests =
    test "resolving a conflict: with a value, keeping local, or taking remote (transitions 20–23)" {
        let conflict =
            { row "k" 2UL (Some "base"B) true true with
                BaseVersion = 1UL
                ConflictRemoteVersion = 2UL
                ConflictRemoteValue = Some "remote"B
            }

        match Conflicts.resolveWithValue conflict "chosen"B t1 with
        | Resolution.WriteAndSave(value, r) ->
            Expect.equal value "chosen"B "writes the value"

            Expect.equal
                (r.Conflict, r.Dirty, r.Version, r.BaseVersion, r.BaseValue)
                (false, true, 2UL, 1UL, Some "base"B)
                "dirty at the remote version, original base"
        | other -> failtestf "%A" other

        match Conflicts.preferLocal conflict (LocalValue.Present "mine"B) t1 with
        | Resolution.Save r ->
            Expect.equal
                (r.Conflict, r.Dirty, r.ConflictRemoteValue)
                (false, true, None)
                "dirty, conflict cleared"
        | other -> failtestf "%A" other

        Expect.equal
            (Conflicts.preferLocal conflict LocalValue.Absent t1)
            Resolution.LocalValueMissing
            "needs a local value"

        match Conflicts.preferRemote conflict t1 with
        | Resolution.WriteAndSave(value, r) ->
            Expect.equal value "remote"B "writes the remote value"

            Expect.equal
                (r.Dirty, r.Version, r.BaseVersion, r.BaseValue)
                (false, 2UL, 2UL, Some "remote"B)
                "clean at the remote version"
        | other -> failtestf "%A" other

        let clean = row "k" 1UL (Some "v"B) false false

        Expect.equal
            (Conflicts.preferRemote clean t1)
            Resolution.NotInConflict
            "no-op when not in conflict"

        Expect.equal
            (Conflicts.resolveWithValue clean "x"B t1)
            Resolution.NotInConflict
            "no-op when not in conflict"
    }

let tests =
    testList
        "core"
        [
            keyTests
            snapshotTests
            scheduleTests
            authTests
            namespaceTests
            applyTests
            watchTests
            quarantineTests
            readinessTests
            conflictTests
        ]
