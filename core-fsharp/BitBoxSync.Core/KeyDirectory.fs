/// The key directory of a collection (docs/protocol.md §17, engine extension, layout version 1):
/// which logical keys exist and which were deleted, kept by the engine in reserved encrypted items of
/// the namespace so that a device can learn keys another device created and deletions propagate.
/// The merge is a state-based CRDT (a join-semilattice: commutative, associative, idempotent), so
/// concurrent directory writes always merge without a conflict and without the app's merge
/// function, and a peer replaying an older state can never bring a deleted key back.
namespace BitBoxSync.Core

open System
open System.Collections.Generic
open BitBoxSync.Protocol

/// Whether a directory entry says the key exists or was deleted.
[<RequireQualifiedAccess>]
type KeyState =
    | Live
    | Deleted

/// What a collection does when a deletion and an edit made without seeing it meet (set per
/// collection; every device of the collection must use the same policy, or they may disagree).
[<RequireQualifiedAccess>]
type DeletePolicy =
    /// The edit wins: the key lives again and the app is told that a deleted key came back (default).
    | EditWins
    /// The deletion wins: the concurrent edit is dropped and the app is told.
    | DeleteWins

/// One key's entry: its state, the generation of that state (raised by one each time the key is
/// created again or deleted), the item version the state is about (`Seen`: for a deletion the
/// highest version the deleting device had seen, so a version above it is an edit the deletion did
/// not see; for a live state the version that brought the key back, or `AppWrite` when an app
/// wrote it, which no deletion has seen), and the writer of that state (the first 8 bytes of its
/// key ID, hex), which only orders entries that are otherwise equal.
type DirEntry =
    {
        Generation: uint64
        State: KeyState
        Seen: uint64
        Writer: string
    }

/// The directory rules.
module KeyDirectory =
    /// Layout version written and read.
    [<Literal>]
    let Version = 1

    /// Buckets per collection: a bucket is chosen by the first byte of the key's item ID.
    [<Literal>]
    let Buckets = 256

    /// Longest logical key (UTF-8 bytes) a directory collection accepts: with at most 10 000 live
    /// keys per namespace a bucket then stays far below the 65 520-byte plaintext limit.
    [<Literal>]
    let MaxKeyBytes = 512

    /// The reserved collection name of directory items; apps cannot register it.
    [<Literal>]
    let ReservedCollection = "bitboxsync.directory"

    /// Whether an app may use `name` for a collection (names starting "bitboxsync." are the engine's).
    let isReservedName (name: string) =
        not (isNull name) && name.StartsWith("bitboxsync.", StringComparison.Ordinal)

    /// The logical key of bucket `bucket` of `collection` in the reserved collection.
    let bucketKey (collection: string) (bucket: int) =
        bucket.ToString("x2", Globalization.CultureInfo.InvariantCulture) + ":" + collection

    /// The collection and bucket a reserved key names (the inverse of `bucketKey`), or None.
    let tryParseBucketKey (key: string) : (string * int) option =
        let hex (c: char) = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')

        if isNull key || key.Length < 4 || key[2] <> ':' || not (hex key[0] && hex key[1]) then
            None
        else
            Some(key.Substring 3, Convert.ToInt32(key.Substring(0, 2), 16))

    /// The bucket of an item ID.
    let bucketOf (itemId: ItemId) : int = int itemId.Span[0]

    /// The `Seen` of a live state an app wrote: no deletion has seen it.
    [<Literal>]
    let AppWrite = UInt64.MaxValue

    /// Within one generation: DeleteWins puts a deletion above a live state; EditWins puts a live
    /// state above a deletion only when it is about a version the deletion did not see (an edit),
    /// and the deletion above a live state whose version it saw. The same states compare by `Seen`.
    /// (EditWins is the order of Live s ↦ 2s, Deleted s ↦ 2s + 1: total.)
    let private sameGeneration (policy: DeletePolicy) (a: DirEntry) (b: DirEntry) : int =
        match policy, a.State, b.State with
        | _, KeyState.Live, KeyState.Live
        | _, KeyState.Deleted, KeyState.Deleted -> a.Seen.CompareTo b.Seen
        | DeletePolicy.DeleteWins, KeyState.Deleted, KeyState.Live -> 1
        | DeletePolicy.DeleteWins, KeyState.Live, KeyState.Deleted -> -1
        | DeletePolicy.EditWins, KeyState.Live, KeyState.Deleted -> if a.Seen > b.Seen then 1 else -1
        | DeletePolicy.EditWins, KeyState.Deleted, KeyState.Live -> if b.Seen > a.Seen then -1 else 1

    /// The order of states, the writer aside: generation first, then within one generation as the
    /// policy says. A device's own entry equal to a synced one in all but the writer is not newer.
    let supersedes (policy: DeletePolicy) (a: DirEntry) (b: DirEntry) : bool =
        let g = a.Generation.CompareTo b.Generation
        g > 0 || (g = 0 && sameGeneration policy a b > 0)

    /// The total order the merge takes the maximum of: generation, then within one generation as
    /// the policy says, then the writer (ordinal).
    let compare (policy: DeletePolicy) (a: DirEntry) (b: DirEntry) : int =
        let g = a.Generation.CompareTo b.Generation

        if g <> 0 then
            g
        else
            let s = sameGeneration policy a b
            if s <> 0 then s else String.CompareOrdinal(a.Writer, b.Writer)

    /// Whether `a` wins the join against `b` (strictly larger).
    let beats (policy: DeletePolicy) (a: DirEntry) (b: DirEntry) = compare policy a b > 0

    /// The larger of two entries.
    let join (policy: DeletePolicy) (a: DirEntry) (b: DirEntry) =
        if compare policy a b >= 0 then a else b

    /// Merges two directories (of one collection or one bucket) key by key: every key of either,
    /// with the larger entry. Commutative, associative and idempotent; nothing is ever dropped, so
    /// a tombstone outlives every older state of its key.
    let merge (policy: DeletePolicy) (a: Map<string, DirEntry>) (b: Map<string, DirEntry>) : Map<string, DirEntry> =
        b
        |> Map.fold
            (fun acc key entry ->
                match Map.tryFind key acc with
                | Some existing -> Map.add key (join policy existing entry) acc
                | None -> Map.add key entry acc)
            a

    /// The entry after the app writes a value of `key` on this device: a new key is live at
    /// generation 1, a deleted one (the writer saw the deletion) live at the next generation, a live
    /// one unchanged. An app write is seen by no deletion (`AppWrite`).
    let written (writer: string) (current: DirEntry option) : DirEntry =
        match current with
        | None ->
            {
                Generation = 1UL
                State = KeyState.Live
                Seen = AppWrite
                Writer = writer
            }
        | Some e when e.State = KeyState.Deleted ->
            {
                Generation = e.Generation + 1UL
                State = KeyState.Live
                Seen = AppWrite
                Writer = writer
            }
        | Some e -> e

    /// The entry after this device deletes `key` having seen item version `seen`: a live (or
    /// unknown) key becomes deleted at the next generation, a deleted one stays as it is.
    let deleted (writer: string) (seen: uint64) (current: DirEntry option) : DirEntry =
        match current with
        | Some e when e.State = KeyState.Deleted -> e
        | Some e ->
            {
                Generation = e.Generation + 1UL
                State = KeyState.Deleted
                Seen = seen
                Writer = writer
            }
        | None ->
            {
                Generation = 1UL
                State = KeyState.Deleted
                Seen = seen
                Writer = writer
            }

    /// The live keys of a directory.
    let liveKeys (directory: Map<string, DirEntry>) : string list =
        directory
        |> Map.toList
        |> List.choose (fun (k, e) -> if e.State = KeyState.Live then Some k else None)

    // ------------------------------------------------------------------ bucket encoding

    /// Bytes an entry takes besides its key: length, generation, state, version seen, writer.
    [<Literal>]
    let EntryOverhead = 27

    /// The writer tag of a key ID (its first 8 bytes, lowercase hex).
    let writerOf (keyId: KeyId) = keyId.Wire.Substring(0, 16)

    let private strictUtf8 = Text.UTF8Encoding(false, true)

    let private writerValid (w: string) =
        not (isNull w)
        && w.Length = 16
        && w |> Seq.forall (fun c -> (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))

    /// A bucket's plaintext, binary so that its size is exact whatever the keys hold: the layout
    /// version (one byte), then per key in ordinal order: u16be length and the key's UTF-8 bytes,
    /// u64be generation, one state byte (0 live, 1 deleted), u64be version seen, the writer's 8
    /// bytes. Equal buckets have equal bytes. An entry takes its key's length + 27 bytes. Refuses what no reader would
    /// accept: a key that is not valid UTF-16 text or longer than `MaxKeyBytes`, generation 0, a
    /// writer that is not 16 lowercase hex digits.
    let encode (bucket: Map<string, DirEntry>) : Result<byte[], string> =
        let entries =
            bucket
            |> Seq.sortWith (fun a b -> String.CompareOrdinal(a.Key, b.Key))
            |> Seq.map (fun kv ->
                let key =
                    try
                        Ok(strictUtf8.GetBytes kv.Key)
                    with :? ArgumentException ->
                        Error(sprintf "directory key %A is not valid text" kv.Key)

                match key with
                | Error e -> Error e
                | Ok k when k.Length > MaxKeyBytes -> Error(sprintf "a directory key is longer than %d bytes" MaxKeyBytes)
                | Ok _ when kv.Value.Generation = 0UL -> Error "a directory entry's generation must be positive"
                | Ok _ when not (writerValid kv.Value.Writer) -> Error "a directory entry's writer must be 16 lowercase hex digits"
                | Ok k -> Ok(k, kv.Value))
            |> Seq.toList

        match entries |> List.tryPick (function Error e -> Some e | Ok _ -> None) with
        | Some e -> Error e
        | None ->
            let entries = entries |> List.map (function Ok v -> v | Error _ -> failwith "unreachable")
            let out = Array.zeroCreate (1 + (entries |> List.sumBy (fun (k, _) -> k.Length + EntryOverhead)))
            out[0] <- byte Version
            let mutable offset = 1

            for key, e in entries do
                Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(Span(out, offset, 2), uint16 key.Length)
                key.CopyTo(out, offset + 2)
                offset <- offset + 2 + key.Length
                Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(Span(out, offset, 8), e.Generation)
                out[offset + 8] <- (if e.State = KeyState.Deleted then 1uy else 0uy)
                Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(Span(out, offset + 9, 8), e.Seen)
                Convert.FromHexString(e.Writer).CopyTo(out, offset + 17)
                offset <- offset + 25

            Ok out

    /// Bytes of the encoded bucket (without building it): 1 + Σ (key bytes + 27).
    let encodedSize (bucket: Map<string, DirEntry>) : int =
        1 + (bucket |> Seq.sumBy (fun kv -> Text.Encoding.UTF8.GetByteCount kv.Key + EntryOverhead))

    /// Reads a bucket's plaintext; refuses another version, truncated or trailing bytes, keys that
    /// are not UTF-8 or longer than `MaxKeyBytes`, keys out of order or repeated, generation 0 and
    /// states other than 0 and 1.
    let decode (bytes: ReadOnlySpan<byte>) : Result<Map<string, DirEntry>, string> =
        if bytes.Length = 0 || int bytes[0] <> Version then
            Error(sprintf "a directory bucket must start with layout version %d" Version)
        else
            let mutable offset = 1
            let mutable map = Map.empty
            let mutable previous: string = null
            let mutable error = None

            while error.IsNone && offset < bytes.Length do
                if bytes.Length - offset < 2 then
                    error <- Some "a directory bucket is truncated"
                else
                    let length = int (Buffers.Binary.BinaryPrimitives.ReadUInt16BigEndian(bytes.Slice(offset, 2)))

                    if length > MaxKeyBytes then
                        error <- Some(sprintf "a directory key is longer than %d bytes" MaxKeyBytes)
                    elif bytes.Length - offset < length + EntryOverhead then
                        error <- Some "a directory bucket is truncated"
                    else
                        let key =
                            try
                                Some(strictUtf8.GetString(bytes.Slice(offset + 2, length)))
                            with :? ArgumentException ->
                                None

                        let at = offset + 2 + length
                        let generation = Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(bytes.Slice(at, 8))
                        let state = bytes[at + 8]
                        let seen = Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(bytes.Slice(at + 9, 8))

                        match key with
                        | None -> error <- Some "a directory key is not UTF-8"
                        | Some _ when generation = 0UL -> error <- Some "a directory entry's generation must be positive"
                        | Some _ when state > 1uy -> error <- Some "a directory entry's state must be 0 or 1"
                        | Some k when not (isNull previous) && String.CompareOrdinal(previous, k) >= 0 ->
                            error <- Some "directory keys must be distinct and in order"
                        | Some k ->
                            map <-
                                Map.add
                                    k
                                    {
                                        Generation = generation
                                        State = if state = 1uy then KeyState.Deleted else KeyState.Live
                                        Seen = seen
                                        Writer = Convert.ToHexStringLower(bytes.Slice(at + 17, 8))
                                    }
                                    map

                            previous <- k
                            offset <- at + 25

            match error with
            | Some e -> Error e
            | None -> Ok map
