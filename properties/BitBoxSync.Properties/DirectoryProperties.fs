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

        return
            {
                Generation = uint64 g
                State = if deleted then KeyState.Deleted else KeyState.Live
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
        | Delete(r, k) -> states[r] <- Map.add k (KeyDirectory.deleted writers[r] (Map.tryFind k (now r))) (now r) :: states[r]
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
                let gone = KeyDirectory.deleted w (Some live)
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

            testPropertyWithConfig config "a concurrent delete and edit meet by the policy; an unedited value follows the deletion"
            <| forAll (Gen.zip policy (Gen.elements writers)) (fun (p, w) ->
                let live = KeyDirectory.written w None
                let gone = KeyDirectory.deleted "00000000000000ff" (Some live)
                let unedited, _ = KeyDirectory.fate p w (Some live) gone true false
                let edited, publish = KeyDirectory.fate p w (Some live) gone true true
                let learned, _ = KeyDirectory.fate p w None live false false

                unedited = KeyFate.Delete
                && learned = KeyFate.Learned
                && (match p with
                    | DeletePolicy.EditWins ->
                        edited = KeyFate.Revived
                        && (match publish with
                            | Some e -> KeyDirectory.compare p e gone > 0 && e.State = KeyState.Live
                            | None -> false)
                    | DeletePolicy.DeleteWins -> edited = KeyFate.EditDropped && publish.IsNone))

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
                            Array.zeroCreate 8
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
                let valid = { Generation = 1UL; State = KeyState.Live; Writer = writers[0] }

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

                let entry = { Generation = UInt64.MaxValue; State = KeyState.Deleted; Writer = writers[0] }

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
