/// Example tests of the pure sync core's decisions (ENGINE.md §3, §4.3, §6.1, §7.2). The
/// engine-level checklist tests of ENGINE.md §11 are ported with the shell (issue "The engine").
module BitBoxSync.Tests.CoreTests

open System
open Expecto
open BitBoxSync.Protocol
open BitBoxSync.Core
open BitBoxSync.Tests.TestData

let private dek = Bin.ofBytes<DekKind> (Array.init 32 (fun i -> byte (0x40 + i))) |> ok "dek"
let private keys = NamespaceKeys.derive dek
let private ns = Bin.parse<NamespaceIdKind> "00112233445566778899aabbccddeeff" |> ok "ns"
let private keyId = Bin.parse<KeyIdKind> (String('a', 64)) |> ok "key id"
let private t0 = DateTimeOffset.FromUnixTimeSeconds 100L
let private t1 = DateTimeOffset.FromUnixTimeSeconds 200L
let private minutes (m: float) = TimeSpan.FromMinutes m

let private row key version baseValue dirty conflict =
    { ItemState.template keyId ns "notes" key (LogicalKey.itemId keys "notes" key) t0 with
        Version = version
        BaseVersion = version
        BaseValue = baseValue
        Dirty = dirty
        Conflict = conflict }

let keyTests =
    testList
        "logical keys and scope hash"
        [ test "TestLogicalKeyCompositionIsLengthDelimited: (a, b\\x1fc) and (a\\x1fb, c) get different item ids" {
              Expect.notEqual (LogicalKey.itemId keys "a" "b\u001fc") (LogicalKey.itemId keys "a\u001fb" "c") "no collision"
              bytesEqual (LogicalKey.join [ "ab"; "" ]) (hex "00000000000000026162" |> fun b -> Array.append b (Array.zeroCreate 8)) "u64be length then bytes"
          }
          test "item ids hash the length-delimited (collection, key) under the map key" {
              // Independently computed: HMAC-SHA256(HKDF(dek 40..5f, item-id label), join ["notes"; "n1"]).
              Expect.equal (LogicalKey.itemId keys "notes" "n1").Wire "72d222db515388d659a11acf625d928a1975a7727ac55adac1328b6bd0b5a192" "item id"
          }
          test "the scope hash is bit-exact, with names in UTF-8 byte order" {
              let ids = [ "ff"; "00"; "ab" ] |> List.map (fun b -> Bin.parse<ItemIdKind> (String.replicate 32 b) |> ok "id")
              let names = [ "notes"; "accounts"; "é"; "\U0001F600"; "Ａ" ]
              // Independently computed with Python hashlib (UTF-16 ordinal order would put the emoji before Ａ).
              Expect.equal (Scope.hash names ids) "eea3543df98dddaf7c850e7f775c0f405c5d2f02164aa04d801a534337814384" "scope hash"
              Expect.equal (Scope.hash [] ids) "" "no collection registered: empty"
          }
          test "collections without keys still contribute their name" {
              Expect.notEqual (Scope.hash [ "a" ] []) (Scope.hash [ "a"; "b" ] []) "empty collection counts"
          } ]

let snapshotTests =
    test "TestReconcileLocalSnapshotsQueuesNewAndChangedValues (decision): changed and new are queued in key order, the rest untouched" {
        let rows =
            [ "changed", row "changed" 1UL (Some "old"B) false false
              "clean", row "clean" 1UL (Some "same"B) false false
              "conflict", row "conflict" 2UL (Some "base"B) true true
              "dirty", row "dirty" 1UL (Some "base"B) true false ]
            |> Map.ofList

        let activeKeys = [ "changed"; "clean"; "conflict"; "dirty"; "new" ]
        let scope = Scope.build keys [ { Collection = "notes"; Keys = activeKeys } ]

        let effects =
            Snapshot.reconcile
                { KeyId = keyId
                  NamespaceId = ns
                  Collection = "notes"
                  Scope = scope
                  Rows = rows
                  Snapshot =
                    [ "new", "fresh"B; "dirty", "edited"B; "conflict", "mine"B; "clean", "same"B; "changed", "new value"B; "stray", "x"B ]
                  ItemIdOf = LogicalKey.itemId keys "notes"
                  Now = t1 }

        match effects with
        | [ SnapshotEffect.Queue changed; SnapshotEffect.Queue created; SnapshotEffect.OutsideScope("notes", "stray") ] ->
            Expect.equal changed { rows["changed"] with Dirty = true; UpdatedAt = t1 } "changed: dirty, version and base kept"
            Expect.equal created.Key "new" "then the new key"
            Expect.equal (created.Version, created.BaseValue, created.Dirty) (0UL, None, true) "new row: version 0, no base, dirty"
            Expect.equal (ItemState.status created) ItemStatus.PendingCreate "pending create"
        | other -> failtestf "unexpected effects %A" other
    }

let scheduleTests =
    let s = Schedule.settings TimeSpan.Zero TimeSpan.Zero

    testList
        "schedule"
        [ test "defaults: 5 min base, 60 min cap; a max below the base becomes max(60 min, base)" {
              Expect.equal s { Base = minutes 5.0; Max = minutes 60.0 } "defaults"
              Expect.equal (Schedule.settings (minutes 90.0) (minutes 10.0)) { Base = minutes 90.0; Max = minutes 90.0 } "max below base"
              Expect.equal (Schedule.settings (minutes 1.0) (minutes 2.0)) { Base = minutes 1.0; Max = minutes 2.0 } "kept as given"
          }
          test "failure backoff with defaults is 10, 20, 40, 60, 60 minutes" {
              Expect.equal [ for f in 1..5 -> (Schedule.failureBackoff s f).TotalMinutes ] [ 10.0; 20.0; 40.0; 60.0; 60.0 ] "backoff"
          }
          test "idle interval doubles every three quiet polls" {
              Expect.equal [ for q in 1..12 -> (Schedule.idleInterval s q).TotalMinutes ] [ 5.0; 5.0; 10.0; 10.0; 10.0; 20.0; 20.0; 20.0; 40.0; 40.0; 40.0; 60.0 ] "idle"
          }
          test "jitter spans exactly 0.9x to 1.1x; zero stays zero" {
              Expect.equal (Schedule.jitter (minutes 10.0) 0.0) (minutes 9.0) "low end"
              Expect.equal (Schedule.jitter (minutes 10.0) 0.999999999999) (minutes 11.0) "high end"
              Expect.equal (Schedule.jitter TimeSpan.Zero 0.5) TimeSpan.Zero "zero"
              Expect.equal (Schedule.jitter (TimeSpan 5L) 0.7) (TimeSpan 5L) "below 10 ticks unchanged"
          }
          test "recording: failure backs off, login resets, idle quiet passes slow down, activity resets" {
              let st0 = Schedule.initial s
              let failed = Schedule.record s false st0 { Failed = true; Activity = false; Requested = false }
              Expect.equal failed { Interval = minutes 10.0; Failures = 1; IdlePolls = 0 } "failure"
              Expect.equal (Schedule.loginSucceeded s failed) st0 "login resets"
              let quiet = { Failed = false; Activity = false; Requested = false }
              let idle3 = List.fold (fun st r -> Schedule.record s true st r) st0 [ quiet; quiet; quiet ]
              Expect.equal idle3 { Interval = minutes 10.0; Failures = 0; IdlePolls = 3 } "idle slows down"
              Expect.equal (Schedule.record s false st0 quiet) st0 "foreground never infers idleness"
              Expect.equal (Schedule.record s true idle3 { quiet with Activity = true }) st0 "activity resets"
              Expect.equal (Schedule.record s true idle3 { quiet with Requested = true }) st0 "requested resets"
          } ]

let authTests =
    let state token expiry =
        { KeyId = keyId
          Kind = IdentityKind.Keystore
          AccessToken = token
          TokenExpiry = expiry
          DefaultNamespaceId = None
          UpdatedAt = t0 }

    let now = DateTimeOffset(2026, 11, 24, 12, 0, 0, TimeSpan.Zero)
    let skew = TimeSpan.FromHours 24.0

    testList
        "auth"
        [ test "no token, expired or unknown expiry → login; inside the skew → refresh; else use" {
              Expect.equal (Auth.decide (state None None) now skew true) (AuthDecision.Login None) "no token"
              Expect.equal (Auth.decide (state (Some "t") (Some(now.AddSeconds -1.0))) now skew true) (AuthDecision.Login(Some(now.AddSeconds -1.0))) "expired"
              Expect.equal (Auth.decide (state (Some "t") None) now skew true) (AuthDecision.Login None) "unknown expiry"
              Expect.equal (Auth.decide (state (Some "t") (Some(now.AddHours 2.0))) now skew true) (AuthDecision.RefreshThenUse("t", now.AddHours 2.0)) "refresh window"
              Expect.equal (Auth.decide (state (Some "t") (Some(now.AddHours 48.0))) now skew true) (AuthDecision.UseToken "t") "valid"
          }
          test "background work never prompts: needs-login instead of login, no refresh signature" {
              Expect.equal (Auth.decide (state None None) now skew false) (AuthDecision.NeedsLogin None) "needs login"
              Expect.equal (Auth.decide (state (Some "t") (Some(now.AddHours 2.0))) now skew false) (AuthDecision.UseToken "t") "no refresh"
          }
          test "a 401 re-logs in only when nobody replaced the failing token" {
              Expect.equal (Auth.onUnauthorized (state (Some "new") None) "old" true) (UnauthorizedDecision.RetryWith "new") "replaced"
              Expect.equal (Auth.onUnauthorized (state (Some "old") None) "old" true) UnauthorizedDecision.ClearAndLogin "same token"
              Expect.equal (Auth.onUnauthorized (state (Some "old") None) "old" false) UnauthorizedDecision.ClearAndNeedsLogin "background"
          }
          test "a login response without a default namespace keeps the known one (§12.6)" {
              let known = { state (Some "t") None with DefaultNamespaceId = Some ns }
              let after = Auth.afterLogin known "t2" now None now
              Expect.equal after.DefaultNamespaceId (Some ns) "kept"
              Expect.equal (after.AccessToken, after.TokenExpiry) (Some "t2", Some now) "token stored"
          } ]

let tests = testList "core" [ keyTests; snapshotTests; scheduleTests; authTests ]
