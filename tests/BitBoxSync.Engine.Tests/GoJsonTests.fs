/// Codecs.Json<T> writes exactly what Go's json.Marshal writes (docs/protocol.md, "JSON values
/// written by Codecs.Json"), refuses the types it cannot write that way, and the engine never
/// re-uploads a value a peer encoded differently.
module BitBoxSync.Engine.Tests.GoJsonTests

open System
open System.Collections.Generic
open System.Text
open System.Text.Json
open System.Text.Json.Serialization
open Expecto
open BitBoxSync
open BitBoxSync.Storage
open BitBoxSync.Server.Tests.Harness

/// The bytes Go's json.Marshal writes for a string, from the rules alone (written independently
/// of the codec): HTML-safe escaping, short escapes for the usual controls, `\u00xx` with lowercase
/// hex for the other controls, U+2028/U+2029 escaped, every other scalar value as raw UTF-8.
let goString (s: string) : byte[] =
    let out = List<byte>()
    let ascii (t: string) = out.AddRange(Encoding.ASCII.GetBytes t)
    out.Add(byte '"')

    for r in s.EnumerateRunes() do
        match r.Value with
        | 0x22 -> ascii "\\\""
        | 0x5C -> ascii "\\\\"
        | 0x0A -> ascii "\\n"
        | 0x0D -> ascii "\\r"
        | 0x09 -> ascii "\\t"
        | 0x08 -> ascii "\\b"
        | 0x0C -> ascii "\\f"
        | v when v < 0x20 || v = 0x3C || v = 0x3E || v = 0x26 -> ascii (sprintf "\\u%04x" v)
        | 0x2028 -> ascii "\\u2028"
        | 0x2029 -> ascii "\\u2029"
        | _ ->
            let buffer = Array.zeroCreate 4
            let n = r.EncodeToUtf8(Span buffer)
            out.AddRange(buffer[.. n - 1])

    out.Add(byte '"')
    out.ToArray()

let private concat (parts: byte[] list) = Array.concat parts
let private ascii (s: string) = Encoding.ASCII.GetBytes s

type Fields =
    {
        [<JsonPropertyName "title">]
        Title: string
        [<JsonPropertyName "body">]
        Body: string
        [<JsonPropertyName "at">]
        At: DateTimeOffset
        [<JsonPropertyName "tags">]
        Tags: string[]
        [<JsonPropertyName "raw">]
        Raw: byte[]
        [<JsonPropertyName "n">]
        N: Nullable<int>
    }

type WithDecimal = { Price: decimal }
type WithDateTime = { When: DateTime }
type WithSet = { Members: HashSet<string> }
type WithByteList = { Bytes: List<byte> }
type WithGuidMap = { ByGuid: Dictionary<Guid, string> }
type WithObject = { Anything: obj }

/// Asserts that Codecs.Json refuses 'T with a message containing `fragment`, at the check and at encode.
let private refused<'T> (fragment: string) =
    let e =
        Expect.throwsC (fun () -> (Codecs.Json<'T>() :?> ICheckedCodec).Check()) id

    Expect.isTrue (e :? ArgumentException) $"{typeof<'T>.Name}: ArgumentException"
    Expect.stringContains e.Message fragment $"{typeof<'T>.Name}: message names it"

    Expect.throwsT<NotSupportedException>
        (fun () -> Codecs.Json<'T>().Encode Unchecked.defaultof<'T> |> ignore)
        $"{typeof<'T>.Name}: encode refuses too"

let private codecTests =
    testList
        "Codecs.Json writes Go's bytes"
        [
            test "every Unicode scalar value, alone, as a map key and as a map value" {
                let single = Codecs.Json<string>()
                let map = Codecs.Json<Dictionary<string, string>>()
                let mutable checkedCount = 0

                for cp in 0..0x10FFFF do
                    if cp < 0xD800 || cp > 0xDFFF then
                        let s = Rune(cp).ToString()
                        let expected = goString s
                        let encoded = single.Encode s

                        if encoded <> expected then
                            failtestf "U+%04X alone: %A, Go writes %A" cp encoded expected

                        let asKey = map.Encode(Dictionary(dict [ s, "v" ]))
                        let keyExpected = concat [ ascii "{"; expected; ascii ":\"v\"}" ]

                        if asKey <> keyExpected then
                            failtestf "U+%04X as a key: %A, Go writes %A" cp asKey keyExpected

                        let asValue = map.Encode(Dictionary(dict [ "k", s ]))
                        let valueExpected = concat [ ascii "{\"k\":"; expected; ascii "}" ]

                        if asValue <> valueExpected then
                            failtestf "U+%04X as a value: %A, Go writes %A" cp asValue valueExpected

                        if single.Decode(ReadOnlySpan expected) <> s then
                            failtestf "U+%04X: Go's bytes do not decode back" cp

                        checkedCount <- checkedCount + 1

                Expect.equal checkedCount 1_112_064 "every scalar value was checked"
            }

            test "the named examples" {
                let go (s: string) =
                    Encoding.UTF8.GetString(Codecs.Json<string>().Encode s)

                Expect.equal (Codecs.Json<string>().Encode "\u007f") [| 0x22uy; 0x7fuy; 0x22uy |] "DEL raw"
                Expect.equal (Codecs.Json<string>().Encode "\u00a0") [| 0x22uy; 0xc2uy; 0xa0uy; 0x22uy |] "NBSP raw"

                Expect.equal
                    (Codecs.Json<string>().Encode "😀")
                    [| 0x22uy; 0xf0uy; 0x9fuy; 0x98uy; 0x80uy; 0x22uy |]
                    "emoji raw UTF-8"

                Expect.equal (go "\ufeff\ue000\U000F0000") "\"\ufeff\ue000\U000F0000\"" "BOM, private use raw"
                Expect.equal (go "\u0378") "\"\u0378\"" "unassigned raw"
                Expect.equal (go "<>&") "\"\\u003c\\u003e\\u0026\"" "HTML escaped"
                Expect.equal (go "\u2028\u2029") "\"\\u2028\\u2029\"" "separators escaped"
                Expect.equal (go "\b\f") "\"\\b\\f\"" "short forms of Go ≥ 1.22"
                Expect.equal (go "\n\r\t\u0000\u001f\u000b") "\"\\n\\r\\t\\u0000\\u001f\\u000b\"" "controls"
                Expect.equal (go "a\"b\\c/d") "\"a\\\"b\\\\c/d\"" "quote, backslash; slash raw"

                Expect.equal
                    (go (String [| 'a'; char 0xD800; 'b' |]))
                    "\"a\ufffdb\""
                    "a lone surrogate is written as U+FFFD"
            }

            test "maps sorted by UTF-8 bytes, integer keys by their text, fields in declaration order" {
                let json (v: 'T) =
                    Encoding.UTF8.GetString(Codecs.Json<'T>().Encode v)

                let m = Dictionary<string, int>()

                for k in [ "b"; "😀"; "\uffff"; "a<"; "A"; "é" ] do
                    m[k] <- k.Length

                Expect.equal
                    (json m)
                    "{\"A\":1,\"a\\u003c\":2,\"b\":1,\"é\":1,\"\uffff\":1,\"😀\":2}"
                    "UTF-8 byte order (U+FFFF before the emoji, unlike UTF-16 order)"

                let ints = Dictionary<int, string>()

                for k in [ 10; 2; -1; 1 ] do
                    ints[k] <- "x"

                Expect.equal (json ints) "{\"-1\":\"x\",\"1\":\"x\",\"10\":\"x\",\"2\":\"x\"}" "integer keys as Go sorts them"
                let back = Codecs.Json<Dictionary<int, string>>().Decode(ReadOnlySpan(Codecs.Json<_>().Encode ints))
                Expect.equal back.Count 4 "integer keys read back"

                Expect.throwsT<FormatException>
                    (fun () -> Codecs.Json<Dictionary<int, string>>().Decode(ReadOnlySpan("{\"01\":\"x\"}"B)) |> ignore)
                    "a non-canonical integer key is refused"

                let at = DateTimeOffset(2024, 2, 29, 13, 4, 5, TimeSpan.Zero).AddTicks 1_230_000L

                let v =
                    {
                        Title = "t"
                        Body = "<b>"
                        At = at
                        Tags = [| "x"; "y" |]
                        Raw = [| 0uy; 255uy; 1uy |]
                        N = Nullable()
                    }

                Expect.equal
                    (json v)
                    "{\"title\":\"t\",\"body\":\"\\u003cb\\u003e\",\"at\":\"2024-02-29T13:04:05.123Z\",\"tags\":[\"x\",\"y\"],\"raw\":\"AP8B\",\"n\":null}"
                    "a struct as Go writes it"

                Expect.equal (json { v with Tags = null }) ((json v).Replace("[\"x\",\"y\"]", "null")) "null slice"
                Expect.equal (json { v with Tags = [||] }) ((json v).Replace("[\"x\",\"y\"]", "[]")) "empty slice"
            }

            test "times as Go writes time.Time, and Go's nanoseconds read back" {
                let json (v: DateTimeOffset) =
                    Encoding.UTF8.GetString(Codecs.Json<DateTimeOffset>().Encode v)

                Expect.equal (json (DateTimeOffset(2020, 1, 2, 3, 4, 5, TimeSpan.Zero))) "\"2020-01-02T03:04:05Z\"" "whole seconds, Z"

                Expect.equal
                    (json (DateTimeOffset(2020, 1, 2, 3, 4, 5, TimeSpan.FromHours 5.5).AddTicks 5_000_000L))
                    "\"2020-01-02T03:04:05.5+05:30\""
                    "fraction trimmed, offset"

                Expect.equal
                    (json (DateTimeOffset(1, 1, 1, 0, 0, 0, TimeSpan.FromHours -8.0).AddTicks 1L))
                    "\"0001-01-01T00:00:00.0000001-08:00\""
                    "100 ns, negative offset"

                let goWritten = "\"2020-01-02T03:04:05.123456789Z\""B
                let decoded = Codecs.Json<DateTimeOffset>().Decode(ReadOnlySpan goWritten)
                Expect.equal decoded (DateTimeOffset(2020, 1, 2, 3, 4, 5, TimeSpan.Zero).AddTicks 1_234_567L) "nanoseconds truncated to ticks"

                Expect.throwsT<FormatException>
                    (fun () -> Codecs.Json<DateTimeOffset>().Decode(ReadOnlySpan "\"2020-01-02 03:04:05\""B) |> ignore)
                    "not RFC 3339"
            }

            test "bytes other encoders write decode to the same value" {
                let codec = Codecs.Json<Dictionary<string, string>>()

                let foreign =
                    "{ \"b\" : \"\\u00e9\\uD83D\\uDE00\" ,\n \"a\":\"<\\/x>\" }"B

                let value = codec.Decode(ReadOnlySpan foreign)
                Expect.equal (value["b"], value["a"]) ("é😀", "</x>") "escaped forms read"

                Expect.equal
                    (Encoding.UTF8.GetString(codec.Encode value))
                    "{\"a\":\"\\u003c/x\\u003e\",\"b\":\"é😀\"}"
                    "written back in Go's bytes"
            }

            test "types without a Go encoding are refused with the member and an alternative" {
                refused<WithDecimal> "Price"
                refused<WithDateTime> "DateTimeOffset"
                refused<WithSet> "set"
                refused<WithByteList> "byte[]"
                refused<WithGuidMap> "Guid keys"
                refused<WithObject> "Anything"
                refused<JsonElement> "JsonElement"
                refused<char> "rune"
                refused<TimeSpan> "Duration"

                let accepted (c: obj) = (c :?> ICheckedCodec).Check()
                accepted (Codecs.Json<Fields>())
                accepted (Codecs.Json<Dictionary<int64, List<Guid>>>())
                accepted (Codecs.Json<IReadOnlyDictionary<string, Nullable<double>>>())
                accepted (Codecs.Json<int[]>())
                accepted (Codecs.Json<DayOfWeek>())
            }

            test "a type with the app's own converter is accepted; its strings are still escaped as Go's" {
                let options = JsonSerializerOptions()
                options.Converters.Add(JsonStringEnumConverter())
                let codec = Codecs.Json<Dictionary<string, DayOfWeek>>(options)
                (codec :?> ICheckedCodec).Check()
                Expect.equal (Encoding.UTF8.GetString(codec.Encode(Dictionary(dict [ "<", DayOfWeek.Friday ])))) "{\"\\u003c\":\"Friday\"}" "escaped"
            }
        ]

/// A peer whose encoder writes the same values in other bytes: indented, unsorted keys, non-ASCII
/// escaped (System.Text.Json's defaults).
type ForeignJson<'T>() =
    interface ICodec<'T> with
        member _.Encode value =
            JsonSerializer.SerializeToUtf8Bytes(value, JsonSerializerOptions(WriteIndented = true))

        member _.Decode bytes = JsonSerializer.Deserialize<'T>(bytes)

type private Labels = Dictionary<string, string>

let private mixedPeers backend =
    test $"a .NET device and a peer with another JSON encoder converge and then upload nothing ({backend})" {
        use server = start backend
        let keys = [ "a"; "b"; "c" ]

        let open' (label: string) (codec: ICodec<Labels>) =
            let client = new SyncClient(server.BaseAddress)
            let engine = EngineTests.openWith client label (new MemoryStore())
            let ns = engine.DefaultNamespaceAsync() |> await
            let backend = MemoryValueBackend<Labels>(codec, null, keys)

            ns.OpenCollection(
                "labels",
                CollectionOptions<Labels>(Codec = codec, Merge = Merges.PreferLocal(), Backend = backend)
            )
            |> ignore

            engine, backend, client

        let ours, ourValues, c1 = open' "alice" (Codecs.Json<Labels>())
        let peer, peerValues, c2 = open' "alice" (ForeignJson<Labels>())

        let set (b: MemoryValueBackend<Labels>) key (pairs: (string * string) list) =
            b.SetAsync(key, Labels(dict pairs), Threading.CancellationToken.None).AsTask() |> awaitUnit

        let sync (e: SyncEngine) = e.SyncNowAsync() |> awaitUnit

        let head () =
            use probe = new SyncClient(server.BaseAddress)
            let id = BitBoxSync.DummyKeystore.FromLabel "alice"
            let t = probe.LoginAsync(BitBoxSync.Server.Tests.Flows.loginRequest probe id) |> await
            let ns = (ours.DefaultNamespaceAsync() |> await).Id
            let items = probe.GetNamespaceItemsAsync(t.AccessToken, ns) |> await
            items.NamespaceHead, items.Items

        set ourValues "a" [ "name", "Ünïcødé 😀 <b>"; "z", "\u00a0" ]
        set peerValues "b" [ "name", "peer\u2028line"; "emoji", "🎉" ]
        sync ours
        sync peer
        sync ours
        sync peer
        set peerValues "c" [ "x", "\u007f\ufeff" ]
        sync peer
        sync ours
        let settledHead, _ = head ()

        for _ in 1..4 do
            sync ours
            sync peer

        let finalHead, items = head ()
        Expect.equal finalHead settledHead "quiet passes after the mixed exchange upload nothing"

        let read (b: MemoryValueBackend<Labels>) key =
            let v = b.GetAsync(key, Threading.CancellationToken.None).AsTask() |> await
            v.Value |> Seq.map (fun kv -> kv.Key, kv.Value) |> Seq.sortBy fst |> List.ofSeq

        for k in keys do
            Expect.equal (read ourValues k) (read peerValues k) $"{k} converged"

        Expect.isLessThanOrEqual finalHead 4UL "three keys, at most one extra version in all"
        Expect.equal items.Count 3 "three items"

        for d in [ ours :> IAsyncDisposable; peer ] do
            d.DisposeAsync().AsTask() |> awaitUnit

        c1.Dispose()
        c2.Dispose()
    }

let tests =
    testList
        "Go-compatible JSON"
        [
            codecTests
            testList "mixed encoders" [ for b in backends -> mixedPeers b ]
        ]
