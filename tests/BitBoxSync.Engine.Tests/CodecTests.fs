/// Codecs (docs/engine.md §2.8, §12.26–§12.29; docs/protocol.md §14) and the memory backend's
/// encoded comparison.
module BitBoxSync.Engine.Tests.CodecTests

open System
open System.Collections.Generic
open System.Text
open System.Text.Json.Serialization
open Expecto
open BitBoxSync

type Label =
    {
        [<JsonPropertyName "name">]
        Name: string
        [<JsonPropertyName "count">]
        Count: int
        [<JsonPropertyName "tags">]
        Tags: Dictionary<string, string>
    }

let private json (v: 'T) =
    Encoding.UTF8.GetString(Codecs.Json<'T>().Encode v)

let tests =
    testList
        "codecs"
        [
            test "TestJSONCodecRejectsEmptyPayload" {
                let codec = Codecs.Json<string>()

                Expect.throwsT<FormatException>
                    (fun () -> codec.Decode(ReadOnlySpan<byte>()) |> ignore)
                    "empty"

                Expect.throwsT<FormatException>
                    (fun () -> codec.Decode(ReadOnlySpan(Array.empty<byte>)) |> ignore)
                    "zero length"

                Expect.throwsT<FormatException>
                    (fun () -> codec.Decode(ReadOnlySpan("{"B)) |> ignore)
                    "malformed"
            }

            test "JSON bytes as Go's encoding/json writes them" {
                let map = Dictionary<string, int>()
                map["b"] <- 1
                map["a"] <- 2
                map["é"] <- 3
                map["Z"] <- 4

                Expect.equal
                    (json map)
                    """{"Z":4,"a":2,"b":1,"é":3}"""
                    "map keys sorted by UTF-8 bytes"

                Expect.equal (json "<a&b>") "\"\\u003ca\\u0026b\\u003e\"" "HTML characters escaped"

                Expect.equal
                    (json "x\u2028y\u2029")
                    "\"x\\u2028y\\u2029\""
                    "line and paragraph separators escaped"

                Expect.equal (json "é ✓") "\"é ✓\"" "non-ASCII stays UTF-8"

                Expect.equal
                    (json "\u0001\u001f\n\t\r\"\\")
                    "\"\\u0001\\u001f\\n\\t\\r\\\"\\\\\""
                    "control characters, lowercase hex"

                let tags = Dictionary<string, string>()
                tags["z"] <- "1"
                tags["a"] <- "2"

                Expect.equal
                    (json { Name = "x"; Count = 2; Tags = tags })
                    """{"name":"x","count":2,"tags":{"a":"2","z":"1"}}"""
                    "fields in order, nested map sorted"

                let back =
                    Codecs
                        .Json<Label>()
                        .Decode(
                            ReadOnlySpan(
                                Codecs.Json<Label>().Encode { Name = "x"; Count = 2; Tags = tags }
                            )
                        )

                Expect.equal (back.Name, back.Count, back.Tags["z"]) ("x", 2, "1") "round trip"
            }

            test "floating-point numbers as Go's encoding/json writes float64 and float32" {
                let cases =
                    [
                        0.0, "0"
                        -0.0, "-0"
                        1.0, "1"
                        -2.5, "-2.5"
                        0.1 + 0.2, "0.30000000000000004"
                        123456789.123, "123456789.123"
                        1e-6, "0.000001"
                        1e15, "1000000000000000"
                        1e20, "100000000000000000000"
                        123456789012345680000.0, "123456789012345680000"
                        1e21, "1e+21"
                        -2.5e300, "-2.5e+300"
                        1e-7, "1e-7"
                        1.5e-7, "1.5e-7"
                        1.23e-18, "1.23e-18"
                        5e-324, "5e-324"
                        Double.MaxValue, "1.7976931348623157e+308"
                    ]

                for (v, expected) in cases do
                    Expect.equal (json v) expected $"float64 {v:R}"

                    Expect.equal
                        (Codecs
                            .Json<float>()
                            .Decode(ReadOnlySpan(Text.Encoding.UTF8.GetBytes expected)))
                        v
                        "reads back"

                let singles =
                    [
                        0.1f, "0.1"
                        1e-7f, "1e-7"
                        16777216.0f, "16777216"
                        3.4028235e38f, "3.4028235e+38"
                        1e21f, "1e+21"
                    ]

                for (v, expected) in singles do
                    Expect.equal (json v) expected $"float32 {v:R}"

                Expect.equal (json [| 1e21; 0.5 |]) "[1e+21,0.5]" "inside arrays"
                Expect.equal (json (Nullable 1e-9)) "1e-9" "nullable"

                Expect.throws
                    (fun () -> Codecs.Json<float>().Encode Double.NaN |> ignore)
                    "NaN has no JSON form (Go refuses it too)"
            }

            test "the string codec round-trips any bytes (invalid UTF-8 included)" {
                let rnd = Random 7

                for i in 0..2000 do
                    let bytes = Array.zeroCreate (rnd.Next 40)
                    rnd.NextBytes bytes
                    let s = Codecs.String.Decode(ReadOnlySpan bytes)
                    Expect.equal (Codecs.String.Encode s) bytes $"case {i}"

                let text = "plain, é, 😀"

                Expect.equal
                    (Codecs.String.Decode(ReadOnlySpan(Codecs.String.Encode text)))
                    text
                    "valid text unchanged"

                Expect.equal
                    (Codecs.String.Encode text)
                    (Encoding.UTF8.GetBytes text)
                    "valid text is plain UTF-8"

                Expect.throwsT<ArgumentException>
                    (fun () -> Codecs.String.Encode(String([| char 0xD800 |])) |> ignore)
                    "an unpaired high surrogate has no bytes"
            }

            test "the bytes codec copies both ways" {
                let input = [| 1uy; 2uy |]
                let encoded = Codecs.Bytes.Encode input
                input[0] <- 9uy
                Expect.equal encoded [| 1uy; 2uy |] "encode copies"
            }

            test "MemoryValueBackend.SetIfCurrent compares encoded values, not references" {
                let codec = Codecs.Json<List<int>>()
                let backend = MemoryValueBackend<List<int>>(codec)
                let ct = Threading.CancellationToken.None
                backend.SetAsync("k", List [ 1; 2 ], ct).AsTask().GetAwaiter().GetResult()

                let replaced =
                    backend
                        .SetIfCurrentAsync("k", List [ 1; 2 ], true, List [ 3 ], ct)
                        .AsTask()
                        .GetAwaiter()
                        .GetResult()

                Expect.isTrue replaced "equal content, another instance"

                let refused =
                    backend
                        .SetIfCurrentAsync("k", List [ 1; 2 ], true, List [ 4 ], ct)
                        .AsTask()
                        .GetAwaiter()
                        .GetResult()

                Expect.isFalse refused "the stored value changed"

                Expect.isFalse
                    (backend
                        .SetIfCurrentAsync("k", null, false, List [ 5 ], ct)
                        .AsTask()
                        .GetAwaiter()
                        .GetResult())
                    "must-be-absent fails when present"
            }
        ]
