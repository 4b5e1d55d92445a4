/// Loading of the spec's test vectors (copied into tests/data) and strict, usage-tracked access
/// to their expected values: a vector field that no assertion reads fails the suite.
module BitBoxSync.Tests.TestData

open System
open System.Collections.Generic
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open Expecto
open BitBoxSync.Server.Core

/// The folder holding vectors.json and hpke-rfc9180-a2-1.json next to the test binary.
let dataDir = Path.Combine(AppContext.BaseDirectory, "data")

/// Parses a JSON file of the data folder.
let load (file: string) : JsonElement =
    use doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(dataDir, file)))
    doc.RootElement.Clone()

/// Lowercase-hex bytes of a test-data string (vectors are trusted input, so any hex is fine).
let hex (s: string) : byte[] = Convert.FromHexString s

/// A JSON object whose properties are marked as they are read, so a test can prove that it
/// asserted every expected value of a vector.
type Tracked(element: JsonElement, path: string) =
    let used = HashSet<string>()

    member _.Element = element
    member _.Path = path

    member _.Get(name: string) : JsonElement =
        used.Add name |> ignore

        match element.TryGetProperty name with
        | true, v -> v
        | _ -> failtestf "%s has no field %s" path name

    member t.Str name = t.Get(name).GetString()
    member t.Hex name = hex (t.Str name)
    member t.Int64 name = t.Get(name).GetInt64()
    member t.Has(name: string) = element.TryGetProperty(name) |> fst
    member t.Child name = Tracked(t.Get name, path + "." + name)

    /// Marks a field as checked by other means (for example a JSON body compared as a whole).
    member _.Touch(name: string) = used.Add name |> ignore

    /// Fails unless every property was read.
    member _.AssertAllUsed() =
        let unused =
            [
                for p in element.EnumerateObject() do
                    if not (used.Contains p.Name) then
                        p.Name
            ]

        if not unused.IsEmpty then
            failtestf "%s: expected values never asserted: %A" path unused

/// Compact JSON of a vector's JSON value, keys in file order, with the relaxed escaping the
/// library uses (so `+` and `/` of base64 stay literal).
let compactJson (element: JsonElement) : string =
    let options =
        JsonSerializerOptions(
            Encoder = Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping
        )

    JsonNode.Parse(element.GetRawText()).ToJsonString options

/// Asserts byte equality with a hex rendering of both sides on failure.
let bytesEqual (actual: byte[]) (expected: byte[]) (what: string) =
    Expect.equal (Convert.ToHexStringLower actual) (Convert.ToHexStringLower expected) what

/// Unwraps an Ok or fails the test with the error.
let ok (what: string) (r: Result<'a, 'e>) : 'a =
    match r with
    | Ok v -> v
    | Error e -> failtestf "%s: unexpected error %A" what e

/// Fails unless the result is an error whose text contains `needle`; returns the error text.
let errorContaining
    (what: string)
    (needle: string)
    (message: 'e -> string)
    (r: Result<'a, 'e>)
    : string =
    match r with
    | Ok v -> failtestf "%s: expected an error containing %A, got Ok %A" what needle v
    | Error e ->
        let m = message e
        Expect.stringContains m needle (sprintf "%s: error text" what)
        m

/// The HTTP status a server rule answers with: 200 for Ok, else the refusal's status.
let status (r: Result<'a, ApiError>) : int =
    match r with
    | Ok _ -> 200
    | Error e -> e.Status
