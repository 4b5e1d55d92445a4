/// Testing an app's merge the way docs/testing-merges.md shows, on the notes sample's merges: the
/// laws a merge needs (FsCheck), then the model checker over the merge as the engine runs it (through
/// the collection's codec).
module BitBoxSync.Properties.SampleMerges

open Expecto
open FsCheck
open FsCheck.FSharp
open BitBoxSync
open BitBoxSync.Core
open BitBoxSync.Notes
open BitBoxSync.Properties.Generators

/// An app's merge as the engine runs it: decode base, local and remote with the collection's codec,
/// merge, encode the answer. An exception (codec or merge) becomes an error (the item is quarantined).
let ofMerge (codec: ICodec<'T>) (merge: MergeFunction<'T>) : ByteMerge =
    fun baseBytes local remote ->
        try
            let b =
                baseBytes |> Option.map (fun (v: byte[]) -> codec.Decode(System.ReadOnlySpan v))

            let input =
                MergeInput<'T>(
                    "key",
                    b.IsSome,
                    Option.defaultValue Unchecked.defaultof<'T> b,
                    codec.Decode(System.ReadOnlySpan local),
                    codec.Decode(System.ReadOnlySpan remote)
                )

            let r = merge.Invoke input

            if r.IsResolved then
                Ok(MergeOutcome.Merged(codec.Encode r.Value))
            else
                Ok MergeOutcome.Unresolved
        with e ->
            Error e.Message

/// Small domains, so that equal fields (the interesting cases) are frequent.
let private note =
    gen {
        let! title = Gen.elements [ "t"; "u" ]
        let! body = Gen.elements [ "a"; "b"; "c" ]
        return Note(title, body)
    }

let private threeWay (b: Note option) (l: Note) (r: Note) =
    NoteMerges.ThreeWay(MergeInput<Note>("key", b.IsSome, Option.toObj b, l, r))

let private outcome (m: MergeResult<'T>) =
    if m.IsResolved then Some m.Value else None

let private noteCodec = Codecs.Json<Note>()

/// Notes as the codec encodes them (the model checker's values are UTF-8 strings).
let private encoded (notes: Note list) =
    notes
    |> List.map (fun n -> System.Text.Encoding.UTF8.GetString(noteCodec.Encode n))

let tests =
    testList
        "sample merges"
        [
            testPropertyWithConfig
                config
                "notes: merging a note with itself gives it back (idempotent)"
            <| Prop.forAll (Arb.fromGen (Gen.zip (Gen.optionOf note) note)) (fun (b, x) ->
                outcome (threeWay b x x) = Some x)

            testPropertyWithConfig config "notes: a side that did not change takes the other side"
            <| Prop.forAll (Arb.fromGen (Gen.zip note note)) (fun (b, x) ->
                outcome (threeWay (Some b) b x) = Some x
                && outcome (threeWay (Some b) x b) = Some x)

            testPropertyWithConfig
                config
                "notes: the merge is symmetric in local and remote (devices converge)"
            <| Prop.forAll (Arb.fromGen (Gen.zip3 (Gen.optionOf note) note note)) (fun (b, l, r) ->
                outcome (threeWay b l r) = outcome (threeWay b r l))

            testPropertyWithConfig
                config
                "notes: an unresolved merge is a real collision (both sides changed the same text differently)"
            <| Prop.forAll (Arb.fromGen (Gen.zip3 (Gen.optionOf note) note note)) (fun (b, l, r) ->
                match outcome (threeWay b l r), b with
                | Some _, _ -> true
                | None, None -> l <> r
                | None, Some b ->
                    (l.Title <> b.Title && r.Title <> b.Title && l.Title <> r.Title)
                    || (l.Body <> b.Body && r.Body <> b.Body && l.Body <> r.Body))

            ModelCheck.check
                "notes merge through its JSON codec: 2 clients, 1 key, 3 notes, 2 writes, 4 passes, 1 fault"
                (ofMerge noteCodec (MergeFunction<Note> NoteMerges.ThreeWay))
                { ModelCheck.smallConflict with
                    Values = encoded [ Note("t", "a"); Note("t", "b"); Note("u", "a") ]
                    RacingValue = List.head (encoded [ Note("u", "c") ])
                }
        ]
