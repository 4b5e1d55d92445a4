/// Laws of the key directory (docs/protocol.md §17): its merge is a join-semilattice (commutative,
/// associative, idempotent, never losing a key), a stale peer replaying older state changes
/// nothing (a deleted key never resurrects without a newer write), replicas that exchange states
/// converge, a bucket's bytes are canonical, and buckets stay within one item.
module BitBoxSync.Properties.DirectoryProperties

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open BitBoxSync.Core
open BitBoxSync.Properties.Generators

let private writers = [ "00000000000000a1"; "00000000000000b2"; "00000000000000c3" ]
let private keys = [ "a"; "b"; "c"; "d" ]

let private entry =
    gen {
        let! g = Gen.choose (1, 4)
        let! deleted = Gen.elements [ true; false ]
        let! w = Gen.elements writers
        let! seen = Gen.choose (0, 3)

        return
            {
                Generation = uint64 g
                State = if deleted then KeyState.Deleted else KeyState.Live
                Seen = (if not deleted && seen = 3 then KeyDirectory.AppWrite else uint64 seen)
                Writer = w
            }
    }

let private directory =
    gen {
        let! present = Gen.subListOf keys
        let! entries = Gen.listOfLength present.Length entry
        return List.zip present entries |> Map.ofList
    }

let private policy = Gen.elements [ DeletePolicy.EditWins; DeletePolicy.DeleteWins ]

/// A local operation of a replica: write or delete a key.
type private Op =
    | Write of replica: int * key: string
    | Delete of replica: int * key: string
    | Exchange of from: int * into: int

let private op replicas =
    Gen.oneof
        [
            Gen.map2 (fun r k -> Write(r, k)) (Gen.choose (0, replicas - 1)) (Gen.elements keys)
            Gen.map2 (fun r k -> Delete(r, k)) (Gen.choose (0, replicas - 1)) (Gen.elements keys)
            Gen.map2 (fun a b -> Exchange(a, b)) (Gen.choose (0, replicas - 1)) (Gen.choose (0, replicas - 1))
        ]

/// Runs operations on three replicas; returns every state each replica went through.
let private run (p: DeletePolicy) (ops: Op list) =
    let states = Array.init 3 (fun _ -> [ Map.empty<string, DirEntry> ])
    let now r = List.head states[r]

    for o in ops do
        match o with
        | Write(r, k) -> states[r] <- Map.add k (KeyDirectory.written writers[r] (Map.tryFind k (now r))) (now r) :: states[r]
        | Delete(r, k) ->
            let seen = uint64 (List.length states[r] % 4)
            states[r] <- Map.add k (KeyDirectory.deleted writers[r] seen (Map.tryFind k (now r))) (now r) :: states[r]
        | Exchange(a, b) -> states[b] <- KeyDirectory.merge p (now b) (now a) :: states[b]

    states

let tests =
    testList
        "key directory"
        [
            testPropertyWithConfig config "merge is commutative"
            <| forAll (Gen.zip3 policy directory directory) (fun (p, a, b) ->
                KeyDirectory.merge p a b = KeyDirectory.merge p b a)

            testPropertyWithConfig config "merge is associative"
            <| forAll (Gen.zip policy (Gen.zip3 directory directory directory)) (fun (p, (a, b, c)) ->
                KeyDirectory.merge p (KeyDirectory.merge p a b) c = KeyDirectory.merge p a (KeyDirectory.merge p b c))

            testPropertyWithConfig config "merge is idempotent"
            <| forAll (Gen.zip policy directory) (fun (p, a) -> KeyDirectory.merge p a a = a)

            testPropertyWithConfig config "merge keeps every key, each entry at least as large as both (tombstones included)"
            <| forAll (Gen.zip3 policy directory directory) (fun (p, a, b) ->
                let m = KeyDirectory.merge p a b

                Set.ofSeq m.Keys = Set.union (Set.ofSeq a.Keys) (Set.ofSeq b.Keys)
                && Seq.append (Map.toSeq a) (Map.toSeq b)
                   |> Seq.forall (fun (k, e) -> KeyDirectory.compare p m[k] e >= 0))

            testPropertyWithConfig config "a stale peer replaying any older state changes nothing: no resurrection without a newer write"
            <| forAll (Gen.zip policy (Gen.listOf (op 3))) (fun (p, ops) ->
                let states = run p ops

                [ 0..2 ]
                |> List.forall (fun r ->
                    let final = List.head states[r]
                    // Every state any replica ever had is older than or concurrent with the final one;
                    // the ones this replica went through are strictly older: replaying them is a no-op.
                    states[r] |> List.forall (fun old -> KeyDirectory.merge p final old = final)))

            testPropertyWithConfig config "a deletion seen by a writer is undone only by that writer's newer write"
            <| forAll (Gen.zip policy (Gen.elements writers)) (fun (p, w) ->
                let live = KeyDirectory.written w None
                let gone = KeyDirectory.deleted w 1UL (Some live)
                let again = KeyDirectory.written w (Some gone)
                let stale = Map.ofList [ "k", live ]

                KeyDirectory.merge p (Map.ofList [ "k", gone ]) stale = Map.ofList [ "k", gone ]
                && KeyDirectory.merge p (Map.ofList [ "k", again ]) (Map.ofList [ "k", gone ]) = Map.ofList [ "k", again ]
                && again.State = KeyState.Live)

            testPropertyWithConfig config "replicas that exchange their states converge, whatever they did meanwhile"
            <| forAll (Gen.zip policy (Gen.listOf (op 3))) (fun (p, ops) ->
                let states = run p ops
                let finals = [ 0..2 ] |> List.map (fun r -> List.head states[r])
                let all = finals |> List.reduce (KeyDirectory.merge p)
                // Any order of merging everything gives the same directory and the same live keys.
                let reversed = finals |> List.rev |> List.reduce (KeyDirectory.merge p)
                all = reversed && KeyDirectory.liveKeys all = KeyDirectory.liveKeys reversed)

            testPropertyWithConfig config "a bucket key names its collection and bucket, and nothing else parses as one"
            <| forAll (Gen.zip (Gen.elements [ "notes"; "a:b"; "x" ]) (Gen.choose (0, 255))) (fun (c, b) ->
                KeyDirectory.tryParseBucketKey (KeyDirectory.bucketKey c b) = Some(c, b)
                && [ null; ""; "0a"; "0a:"; "0A:notes"; "zz:notes"; "0a-notes" ]
                   |> List.forall (fun k -> KeyDirectory.tryParseBucketKey k = None))

            testPropertyWithConfig config "a bucket's bytes are canonical and read back"
            <| forAll directory (fun d ->
                let bytes = KeyDirectory.encode d |> Result.defaultWith failwith
                let shuffled = d |> Map.toList |> List.rev |> Map.ofList

                KeyDirectory.decode (ReadOnlySpan bytes) = Ok d
                && KeyDirectory.encode shuffled = Ok bytes
                && bytes.Length = KeyDirectory.encodedSize d)

            test "malformed buckets are refused with a reason" {
                let entry (key: byte[]) (generation: uint64) (state: byte) =
                    Array.concat
                        [
                            [| byte (key.Length >>> 8); byte key.Length |]
                            key
                            BitConverter.GetBytes(generation) |> Array.rev
                            [| state |]
                            Array.zeroCreate 16
                        ]

                let bucket parts = Array.concat ([| 1uy |] :: parts)
                let k = "k"B

                for name, bytes in
                    [
                        "empty", [||]
                        "another version", [| 2uy |]
                        "truncated length", [| 1uy; 0uy |]
                        "truncated entry", (bucket [ entry k 1UL 0uy ])[.. 10]
                        "generation 0", bucket [ entry k 0UL 0uy ]
                        "state 2", bucket [ entry k 1UL 2uy ]
                        "a key that is not UTF-8", bucket [ entry [| 0xffuy; 0xfeuy |] 1UL 0uy ]
                        "a repeated key", bucket [ entry k 1UL 0uy; entry k 2UL 1uy ]
                        "keys out of order", bucket [ entry "b"B 1UL 0uy; entry "a"B 1UL 0uy ]
                        "a key over 512 bytes", bucket [ entry (Array.create 513 120uy) 1UL 0uy ]
                    ] do
                    match KeyDirectory.decode (ReadOnlySpan bytes) with
                    | Ok _ -> failtestf "accepted: %s" name
                    | Error reason -> Expect.isNotEmpty reason name

                Expect.equal (KeyDirectory.decode (ReadOnlySpan [| 1uy |])) (Ok Map.empty) "an empty bucket"
                let valid = { Generation = 1UL; State = KeyState.Live; Seen = 0UL; Writer = writers[0] }

                for name, bucket in
                    [
                        "a key over 512 bytes", Map.ofList [ String('x', 513), valid ]
                        "a lone surrogate", Map.ofList [ "a" + string (char 0xD800), valid ]
                        "generation 0", Map.ofList [ "k", { valid with Generation = 0UL } ]
                        "a writer that is not 16 hex digits", Map.ofList [ "k", { valid with Writer = "XYZ" } ]
                    ] do
                    Expect.isError (KeyDirectory.encode bucket) $"not written: {name}"

                Expect.isTrue (KeyDirectory.isReservedName KeyDirectory.ReservedCollection) "the directory's own name is reserved"
                Expect.isFalse (KeyDirectory.isReservedName "notes") "app names are not"
            }

            test "10 000 keys of 512 bytes in 256 buckets stay under the item limit, tombstones of as many more included" {
                let keys =
                    BitBoxSync.Protocol.NamespaceKeys.derive (
                        BitBoxSync.Protocol.Bin.ofBytes<BitBoxSync.Protocol.DekKind>(Array.init 32 byte)
                        |> Result.defaultWith (fun _ -> failwith "dek")
                    )

                let entry = { Generation = UInt64.MaxValue; State = KeyState.Deleted; Seen = UInt64.MaxValue; Writer = writers[0] }

                let buckets =
                    [ 0..19_999 ]
                    |> List.map (fun i -> sprintf "%05d" i + String('\u00e9', (KeyDirectory.MaxKeyBytes - 5) / 2) + "x")
                    |> List.groupBy (fun key -> KeyDirectory.bucketOf (LogicalKey.itemId keys "notes" key))
                    |> List.map (fun (_, ks) -> ks |> List.map (fun k -> k, entry) |> Map.ofList)

                let largest = buckets |> List.map KeyDirectory.encodedSize |> List.max
                Expect.equal (Text.Encoding.UTF8.GetByteCount(sprintf "%05d" 0 + String('\u00e9', 253) + "x")) 512 "keys of 512 bytes"
                Expect.isLessThanOrEqual largest BitBoxSync.Protocol.Limits.MaxItemPlaintextSize "the largest bucket fits in one item"
                printfn "key directory: 20 000 entries of 512-byte keys, largest of %d buckets %d bytes" buckets.Length largest
                Expect.equal (KeyDirectory.encode buckets[0] |> Result.map (fun b -> b.Length)) (Ok(KeyDirectory.encodedSize buckets[0])) "the size is exact"
            }
        ]

// ---------------------------------------------------------------------------------------- deletes

let private me = writers[0]
let private t = DateTimeOffset.FromUnixTimeSeconds 1000L

let private idOf (n: int) (b: byte) =
    Array.init n (fun _ -> b)

let private template =
    let ok r = r |> Result.defaultWith (fun _ -> failwith "id")

    ItemState.template
        (BitBoxSync.Protocol.Bin.ofBytes<BitBoxSync.Protocol.KeyIdKind> (idOf 32 1uy) |> ok)
        (BitBoxSync.Protocol.Bin.ofBytes<BitBoxSync.Protocol.NamespaceIdKind> (idOf 16 2uy) |> ok)
        "notes"
        "k"
        (BitBoxSync.Protocol.Bin.ofBytes<BitBoxSync.Protocol.ItemIdKind> (idOf 32 3uy) |> ok)
        t

let private values = [ "a"B; "b"B ]

/// A row of a directory collection in any state the engine can leave it in.
let private row =
    gen {
        let! version = Gen.choose (0, 4)
        let! baseValue = Gen.elements (None :: (values |> List.map Some))
        let! deleted = Gen.elements [ true; false ]
        let! generation = Gen.choose ((if deleted then 1 else 0), 4)
        let! dirty = Gen.elements [ true; false ]
        let! conflict = Gen.elements [ true; false ]
        let! seen = Gen.choose (0, 4)

        return
            { template with
                Version = uint64 version
                BaseVersion = (if baseValue.IsSome then uint64 version else 0UL)
                BaseValue = baseValue
                Dirty = not deleted && (dirty || conflict)
                Conflict = not deleted && conflict
                ConflictRemoteVersion = (if not deleted && conflict then uint64 version else 0UL)
                ConflictRemoteValue = (if not deleted && conflict then Some "r"B else None)
                DirGeneration = uint64 generation
                Deleted = deleted
                DirSeen = (if generation = 0 then 0UL elif not deleted && seen = 4 then KeyDirectory.AppWrite else uint64 seen)
            }
    }

let private local =
    Gen.elements (LocalValue.Absent :: (values |> List.map LocalValue.Present))

type private Case =
    {
        Policy: DeletePolicy
        CanRemove: bool
        Synced: DirEntry
        Row: ItemState
        Local: LocalValue
    }

let private case =
    gen {
        let! p = policy
        let! canRemove = Gen.elements [ true; false ]
        let! synced = entry
        let! r = row
        let! l = local
        return { Policy = p; CanRemove = canRemove; Synced = synced; Row = r; Local = l }
    }

/// The row and the app's value after an action (a removal or restore that the app does not race).
let private after (c: Case) (action: KeyAction) =
    match action with
    | KeyAction.Nothing -> c.Row, c.Local
    | KeyAction.Save o -> o.Row, c.Local
    | KeyAction.Remove r -> r.OnRemoved.Row, LocalValue.Absent

let private decide (c: Case) =
    Deletes.decide c.Policy me c.CanRemove (Some c.Synced) c.Row c.Local t

let private edited (c: Case) =
    match c.Local with
    | LocalValue.Present v -> c.Row.Dirty || c.Row.Conflict || not (ItemState.equalsBase c.Row v)
    | LocalValue.Absent -> false

let private eventsOf action =
    match action with
    | KeyAction.Nothing -> []
    | KeyAction.Save o -> o.Events
    | KeyAction.Remove r -> r.OnRemoved.Events

let deleteTests =
    testList
        "deletes"
        [
            testPropertyWithConfig config "a key's fate is settled by its own outcome: deciding again does nothing"
            <| forAll case (fun c ->
                let r, l = after c (decide c)
                Deletes.decide c.Policy me c.CanRemove (Some c.Synced) r l t = KeyAction.Nothing)

            testPropertyWithConfig config "an adopted deletion or revival is not published again (no churn); a revival beats the deletion"
            <| forAll case (fun c ->
                let action = decide c
                let r, _ = after c action
                let published = Deletes.publishedEntry c.Policy me (Some c.Synced) (Deletes.ownEntry me r) false

                match action with
                | KeyAction.Nothing -> true
                | _ when r.Deleted || c.Row.Deleted -> published = Some c.Synced // adopted: a deletion, or a key live again
                | _ -> // revived here: the edit is published, beating the deletion
                    match published with
                    | Some e -> e.State = KeyState.Live && KeyDirectory.beats c.Policy e c.Synced
                    | None -> false)

            testPropertyWithConfig config "an edit the deletion did not see is kept under EditWins and dropped (told) under DeleteWins"
            <| forAll case (fun c ->
                let action = decide c
                let r, l = after c action
                let deletion = not c.Row.Deleted && c.Synced.State = KeyState.Deleted && action <> KeyAction.Nothing

                if not deletion || c.Local = LocalValue.Absent then
                    true
                elif not (edited c) && c.Row.Version <= c.Synced.Seen then
                    // Nothing new here: the value follows the deletion under both policies.
                    r.Deleted && (l = LocalValue.Absent || not c.CanRemove) && List.contains ItemEvent.ItemDeleted (eventsOf action)
                else
                    match c.Policy with
                    | DeletePolicy.EditWins -> not r.Deleted && l = c.Local && eventsOf action = [ ItemEvent.ItemRevived ]
                    | DeletePolicy.DeleteWins when c.CanRemove ->
                        r.Deleted
                        && l = LocalValue.Absent
                        && (not (edited c) || List.contains ItemEvent.EditDropped (eventsOf action))
                    | DeletePolicy.DeleteWins when edited c -> not r.Deleted && l = c.Local // cannot drop an edit: kept, live again
                    | DeletePolicy.DeleteWins -> r.Deleted && l = c.Local) // the app removes the unedited value on the event

            testPropertyWithConfig config "a deleted key lives again only through a live entry that beats its deletion"
            <| forAll case (fun c ->
                let r, _ = after c (decide c)

                not c.Row.Deleted
                || r.Deleted
                || (c.Synced.State = KeyState.Live
                    && KeyDirectory.beats c.Policy c.Synced (Deletes.ownEntry me c.Row |> Option.get)))

            testPropertyWithConfig config "a local deletion is published beating what the device published before, and is idempotent"
            <| forAll (Gen.zip3 policy row local) (fun (p, r, l) ->
                let before = Deletes.publishedEntry p me None (Deletes.ownEntry me r) true
                let d = Deletes.requested me false before r l t
                let again = Deletes.requested me false before d l t
                let published = Deletes.publishedEntry p me before (Deletes.ownEntry me d) true

                again = d
                && d.Deleted
                && (r.Deleted || d.DirSeen = r.Version)
                && not d.Dirty
                && not d.Conflict
                && (r.Deleted
                    || (match before, published with
                        | Some b, Some e -> e.State = KeyState.Deleted && (b.State = KeyState.Deleted || KeyDirectory.beats p e b)
                        | _ -> false)))

            testPropertyWithConfig config "a snapshot value of a deleted key: the deleted value lingers until removed, any other (or any once removed) is a write after the deletion"
            <| forAll (Gen.zip3 row (Gen.elements values) (Gen.elements [ true; false ])) (fun (r, v, removed) ->
                let r =
                    { r with
                        Deleted = true
                        Removed = removed
                        DirGeneration = max 1UL r.DirGeneration
                        Dirty = false
                        Conflict = false
                    }

                let effects =
                    Snapshot.reconcile
                        {
                            KeyId = r.KeyId
                            NamespaceId = r.NamespaceId
                            Collection = "notes"
                            Scope = Scope.build (BitBoxSync.Protocol.NamespaceKeys.derive (BitBoxSync.Protocol.Bin.ofBytes<BitBoxSync.Protocol.DekKind> (idOf 32 9uy) |> Result.defaultWith (fun _ -> failwith "dek"))) [ { Collection = "notes"; Keys = [ "k" ] } ]
                            Rows = readOnlyDict [ "k", r ]
                            Snapshot = [ "k", v ]
                            ItemIdOf = fun _ -> r.ItemId
                            Now = t
                        }

                match effects with
                | [ SnapshotEffect.Lingering(l, value) ] -> not removed && ItemState.equalsBase r v && value = v && l.Removed
                | [ SnapshotEffect.Queue q ] ->
                    (removed || not (ItemState.equalsBase r v))
                    && q.Dirty
                    && not q.Deleted
                    && q.DirGeneration = r.DirGeneration + 1UL
                | _ -> false)

            testPropertyWithConfig config "a downloaded value of a deleted key revives it only under EditWins and only above the version the deletion saw"
            <| forAll (Gen.zip3 policy row (Gen.choose (1, 6))) (fun (p, r, remoteVersion) ->
                let r = { r with Deleted = true; DirGeneration = max 1UL r.DirGeneration; Dirty = false; Conflict = false }
                let entry = Deletes.ownEntry me r
                let seen = r.DirSeen

                match Deletes.remoteValue p None entry r (uint64 remoteVersion) "z"B t with
                | DeletedRowRemote.Revive q ->
                    p = DeletePolicy.EditWins
                    && uint64 remoteVersion > seen
                    && not q.Deleted
                    && q.DirGeneration = r.DirGeneration
                    && q.DirSeen = uint64 remoteVersion
                    && KeyDirectory.supersedes p (Deletes.ownEntry me q |> Option.get) (entry |> Option.get)
                | DeletedRowRemote.StayDeleted o ->
                    (p = DeletePolicy.DeleteWins || uint64 remoteVersion <= seen)
                    && o.Row.Deleted
                    && o.Row.BaseValue = Some "z"B
                    && o.Row.Version = uint64 remoteVersion)
        ]
