/// Laws of the wire encodings and constrained types: every encoder/parser pair round-trips, and a
/// parser accepts exactly one spelling of each value (canonical forms).
module BitBoxSync.Properties.EncodingProperties

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open BitBoxSync.Protocol
open BitBoxSync.Properties.Generators

let private roundTripsAs<'K when 'K :> IBinaryKind> () =
    testPropertyWithConfig config (sprintf "%s: parse (wire v) = v" (Bin.spec<'K>()).Field)
    <| forAll binOf<'K> (fun v ->
        Bin.parse<'K> v.Wire = Ok v && Bin.ofBytes<'K>(Bin.toArray v) = Ok v)

let private onlyCanonicalAs<'K when 'K :> IBinaryKind> () =
    testPropertyWithConfig
        config
        (sprintf "%s: whatever parses is the canonical spelling" (Bin.spec<'K>()).Field)
    <| forAll
        (Gen.oneof [ anyString; binOf<'K> |> Gen.map (fun v -> v.Wire) |> Gen.bind mutate ])
        (fun s ->
            match Bin.parse<'K> s with
            | Ok v -> v.Wire = s
            | Error e -> e.Field = (Bin.spec<'K>()).Field && e.Rule.Length > 0)

let private wrongLengthAs<'K when 'K :> IBinaryKind> () =
    let s = Bin.spec<'K>()

    testPropertyWithConfig
        config
        (sprintf "%s: a wrong length is rejected naming the length" s.Field)
    <| forAll (bytesBetween 0 (s.MaxLength + 8 |> min 200)) (fun b ->
        let inRange = b.Length >= s.MinLength && b.Length <= s.MaxLength

        match Bin.ofBytes<'K> b with
        | Ok _ -> inRange
        | Error e -> not inRange && e.Rule.Contains "bytes" || inRange && s.Check b <> None)

let private kinds =
    [
        roundTripsAs<KeyIdKind>()
        roundTripsAs<NamespaceIdKind>()
        roundTripsAs<InviteIdKind>()
        roundTripsAs<ItemIdKind>()
        roundTripsAs<JoinRequestHashKind>()
        roundTripsAs<InviteServerSecretHashKind>()
        roundTripsAs<ActionFieldsHashKind>()
        roundTripsAs<AuthPublicKeyKind>()
        roundTripsAs<WrapPublicKeyKind>()
        roundTripsAs<SignatureKind>()
        roundTripsAs<ChallengeKind>()
        roundTripsAs<AttestationKind>()
        roundTripsAs<WrappedDekKind>()
        roundTripsAs<ItemNonceKind>()
        roundTripsAs<ItemAadKind>()
        roundTripsAs<CiphertextKind>()
        roundTripsAs<InviteServerSecretKind>()
        roundTripsAs<InviteProofKind>()
        roundTripsAs<InviteSecretKind>()
        onlyCanonicalAs<NamespaceIdKind>()
        onlyCanonicalAs<KeyIdKind>()
        onlyCanonicalAs<ChallengeKind>()
        onlyCanonicalAs<WrappedDekKind>()
        onlyCanonicalAs<ItemNonceKind>()
        onlyCanonicalAs<InviteProofKind>()
        onlyCanonicalAs<AttestationKind>()
        wrongLengthAs<NamespaceIdKind>()
        wrongLengthAs<SignatureKind>()
        wrongLengthAs<CiphertextKind>()
        wrongLengthAs<WrappedDekKind>()
    ]

let tests =
    testList
        "encodings"
        [
            testPropertyWithConfig config "hex: decodeLowerExact (encode b) = b"
            <| forAll (bytesBetween 0 80) (fun b ->
                Hex.decodeLowerExact "f" b.Length (Hex.ofBytes b) = Ok b)

            testPropertyWithConfig config "hex: an uppercase letter is never accepted"
            <| forAll (bytesBetween 1 40) (fun b ->
                let s = Hex.ofBytes b
                let upper = s.ToUpperInvariant()
                upper = s || (Hex.decodeLowerExact "f" b.Length upper |> Result.isError))

            testPropertyWithConfig
                config
                "base64: decode (encode b) = b and accepted strings are canonical"
            <| forAll
                (Gen.oneof [ bytesBetween 0 64 |> Gen.map Base64.encode; anyString ])
                (fun s ->
                    match Base64.decode "f" s with
                    | Ok b -> Base64.encode b = s
                    | Error e -> e.Message = "f must use canonical base64")

            testPropertyWithConfig
                config
                "base64url: decode (encode b) = b for 32 bytes; accepted strings are canonical"
            <| forAll
                (Gen.oneof
                    [
                        bytesOf 32 |> Gen.map Base64Url.encode
                        anyString
                        bytesOf 32 |> Gen.map Base64Url.encode |> Gen.bind mutate
                    ])
                (fun s ->
                    match Base64Url.decodeExact "f" 32 s with
                    | Ok b -> Base64Url.encode b = s && b.Length = 32
                    | Error e -> e.Field = "f")

            testPropertyWithConfig
                config
                "decimal: canonical u64 round trip; only the canonical spelling parses"
            <| forAll
                (Gen.oneof
                    [ ArbMap.defaults |> ArbMap.generate<uint64> |> Gen.map string; anyString ])
                (fun s ->
                    match Decimal.tryParseUInt64 s with
                    | ValueSome v -> string v = s
                    | ValueNone -> true)

            testPropertyWithConfig
                config
                "If-Match: parse (quote v) = v; every accepted header is quote v"
            <| forAll
                (Gen.oneof
                    [
                        ArbMap.defaults |> ArbMap.generate<uint64> |> Gen.map IfMatch.quote
                        anyString
                        ArbMap.defaults
                        |> ArbMap.generate<uint64>
                        |> Gen.map IfMatch.quote
                        |> Gen.bind mutate
                    ])
                (fun s ->
                    match IfMatch.parse s with
                    | Ok IfMatch.Absent -> String.IsNullOrWhiteSpace s
                    | Ok(IfMatch.Version v) -> IfMatch.quote v = s
                    | Error e -> e.Field = "If-Match")

            testPropertyWithConfig
                config
                "RFC 3339: parse (format t) = t, and offsets name the same instant"
            <| forAll
                (Gen.zip
                    (Gen.choose64 (
                        DateTimeOffset(1970, 1, 1, 0, 0, 0, TimeSpan.Zero).Ticks,
                        DateTimeOffset(2200, 1, 1, 0, 0, 0, TimeSpan.Zero).Ticks
                    ))
                    (Gen.choose (-14 * 60, 14 * 60)))
                (fun (ticks, offsetMinutes) ->
                    let t = DateTimeOffset(ticks, TimeSpan.Zero)
                    let formatted = Rfc3339.format t

                    let shifted =
                        t
                            .ToOffset(TimeSpan.FromMinutes(float offsetMinutes))
                            .ToString("yyyy-MM-dd'T'HH:mm:ss.fffffffzzz")

                    formatted.EndsWith "Z"
                    && Rfc3339.parse "t" formatted = Ok t
                    && Rfc3339.parse "t" shifted = Ok t)

            testPropertyWithConfig
                config
                "RFC 3339: the parser never throws and never accepts a zone-less time"
            <| forAll
                (Gen.oneof [ anyString; Gen.constant "2026-07-05T07:01:38Z" |> Gen.bind mutate ])
                (fun s ->
                    match Rfc3339.parse "t" s with
                    | Ok _ ->
                        s.EndsWith "Z"
                        || s.Length >= 6 && (s[s.Length - 6] = '+' || s[s.Length - 6] = '-')
                    | Error _ -> true)

            testList "constrained types" kinds
        ]
