/// Wire encodings: strict lowercase hex, canonical base64 / base64url, RFC 3339 and
/// Unix-seconds times, canonical decimals and the If-Match header. Implements docs/protocol.md
/// §1 and §6.2.
namespace BitBoxSync.Protocol

open System
open System.Globalization

/// A rejected input value: the field it came from and the rule it broke, in the words of
/// docs/protocol.md. `Message` reads like "namespaceId must be lowercase hex".
type FieldError =
    {
        Field: string
        Rule: string
    }

    /// The human-readable message, field name first.
    member e.Message =
        if String.IsNullOrEmpty e.Field then
            e.Rule
        else
            e.Field + " " + e.Rule

    override e.ToString() = e.Message

/// Constructors for field errors.
module FieldError =
    /// A field error for `field` breaking `rule`.
    let create field rule = { Field = field; Rule = rule }

    /// A failed result for `field` breaking `rule`.
    let fail field rule : Result<'a, FieldError> = Error(create field rule)

    /// A "must be present" error for a missing or null field.
    let missing field : Result<'a, FieldError> = fail field "must be present"

/// Lowercase hexadecimal.
module Hex =
    let private hexDigits = "0123456789abcdef"

    /// Encodes bytes as lowercase hex (the only form this library emits).
    let encode (bytes: ReadOnlySpan<byte>) : string = Convert.ToHexStringLower bytes

    /// Encodes a byte array as lowercase hex.
    let ofBytes (bytes: byte[]) : string = Convert.ToHexStringLower bytes

    let inline private nibble (c: char) =
        if c >= '0' && c <= '9' then int c - int '0'
        elif c >= 'a' && c <= 'f' then int c - int 'a' + 10
        else -1

    /// Strict decoder for identifiers, keys, hashes and signatures: lowercase only, then the exact
    /// decoded length. Errors: "must be lowercase hex", "must be N bytes".
    let decodeLowerExact (field: string) (length: int) (s: string) : Result<byte[], FieldError> =
        if isNull s then
            FieldError.missing field
        elif s.Length % 2 <> 0 then
            // Odd length can never be valid hex; report the length rule when it is otherwise hex.
            if s |> Seq.forall (fun c -> nibble c >= 0) then
                FieldError.fail field (sprintf "must be %d bytes" length)
            else
                FieldError.fail field "must be lowercase hex"
        else
            let out = Array.zeroCreate (s.Length / 2)
            let mutable ok = true
            let mutable i = 0

            while ok && i < out.Length do
                let hi = nibble s[2 * i]
                let lo = nibble s[2 * i + 1]

                if hi < 0 || lo < 0 then
                    ok <- false
                else
                    out[i] <- byte ((hi <<< 4) ||| lo)
                    i <- i + 1

            if not ok then
                FieldError.fail field "must be lowercase hex"
            elif out.Length <> length then
                FieldError.fail field (sprintf "must be %d bytes" length)
            else
                Ok out

    /// Generic hex decoder (case-insensitive) with an exact length: the shared package exports it
    /// for non-identifier values. The library itself always uses `decodeLowerExact`.
    let decodeExact (field: string) (length: int) (s: string) : Result<byte[], FieldError> =
        if isNull s then
            FieldError.missing field
        else
            decodeLowerExact field length (s.ToLowerInvariant())

    /// True when every character is a lowercase hex digit.
    let isLower (s: string) =
        not (isNull s) && s |> Seq.forall (fun c -> hexDigits.Contains c)

/// Standard base64 (RFC 4648 §4) with padding, decoded canonically.
module Base64 =
    /// Encodes bytes as standard padded base64.
    let encode (bytes: byte[]) : string = Convert.ToBase64String bytes

    /// Canonical decoder: the input must be exactly what `encode` produces for the decoded bytes
    /// (no missing padding, no whitespace, no non-zero trailing bits). Error: "must use canonical base64".
    let decode (field: string) (s: string) : Result<byte[], FieldError> =
        if isNull s then
            FieldError.missing field
        else
            let buffer = Array.zeroCreate<byte>((s.Length / 4 + 1) * 3)
            let mutable written = 0

            if Convert.TryFromBase64String(s, Span buffer, &written) then
                let bytes = buffer[.. written - 1]

                if String.Equals(Convert.ToBase64String bytes, s, StringComparison.Ordinal) then
                    Ok bytes
                else
                    FieldError.fail field "must use canonical base64"
            else
                FieldError.fail field "must use canonical base64"

    /// Canonical decoder with an exact decoded length ("must be N bytes").
    let decodeExact (field: string) (length: int) (s: string) : Result<byte[], FieldError> =
        match decode field s with
        | Ok b when b.Length = length -> Ok b
        | Ok _ -> FieldError.fail field (sprintf "must be %d bytes" length)
        | Error e -> Error e

/// Unpadded base64url (RFC 4648 §5), decoded canonically.
module Base64Url =
    /// Encodes bytes as unpadded base64url.
    let encode (bytes: byte[]) : string =
        Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_')

    /// Canonical decoder with an exact length. Errors: "must be unpadded base64url" (any `=`),
    /// "must use canonical base64url", "must be N bytes".
    let decodeExact (field: string) (length: int) (s: string) : Result<byte[], FieldError> =
        if isNull s then
            FieldError.missing field
        elif s.Contains '=' then
            FieldError.fail field "must be unpadded base64url"
        else
            let padded =
                let t = s.Replace('-', '+').Replace('_', '/')

                match t.Length % 4 with
                | 2 -> t + "=="
                | 3 -> t + "="
                | _ -> t

            let buffer = Array.zeroCreate<byte>((padded.Length / 4 + 1) * 3)
            let mutable written = 0

            if Convert.TryFromBase64String(padded, Span buffer, &written) then
                let bytes = buffer[.. written - 1]

                if not (String.Equals(encode bytes, s, StringComparison.Ordinal)) then
                    FieldError.fail field "must use canonical base64url"
                elif bytes.Length <> length then
                    FieldError.fail field (sprintf "must be %d bytes" length)
                else
                    Ok bytes
            else
                FieldError.fail field "must use canonical base64url"

/// Canonical decimal integers (no sign on unsigned values, no leading zeros).
module Decimal =
    /// Parses a canonical unsigned 64-bit decimal: digits only, no leading zero (except "0").
    let tryParseUInt64 (s: string) : uint64 voption =
        if String.IsNullOrEmpty s || s.Length > 20 then
            ValueNone
        elif s.Length > 1 && s[0] = '0' then
            ValueNone
        elif not (s |> Seq.forall Char.IsAsciiDigit) then
            ValueNone
        else
            match UInt64.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture) with
            | true, v -> ValueSome v
            | _ -> ValueNone

    /// Parses a canonical signed 64-bit decimal: the input must equal the value's invariant
    /// formatting (so no "+", no leading zeros, no "-0").
    let tryParseInt64 (s: string) : int64 voption =
        if String.IsNullOrEmpty s || s.Length > 20 then
            ValueNone
        else
            match
                Int64.TryParse(s, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture)
            with
            | true, v when v.ToString(CultureInfo.InvariantCulture) = s -> ValueSome v
            | _ -> ValueNone

/// RFC 3339 timestamps as the Go client writes and reads them (docs/protocol.md §1.3, §6.4).
module Rfc3339 =
    /// Formats as UTC with `Z` and up to 7 fractional digits, trailing zeros dropped
    /// (Go's `time.RFC3339Nano` shape; .NET time has 100 ns resolution).
    let format (t: DateTimeOffset) : string =
        let u = t.UtcDateTime
        let frac = u.Ticks % TimeSpan.TicksPerSecond
        let head = u.ToString("yyyy'-'MM'-'dd'T'HH':'mm':'ss", CultureInfo.InvariantCulture)

        if frac = 0L then
            head + "Z"
        else
            head
            + "."
            + frac.ToString("0000000", CultureInfo.InvariantCulture).TrimEnd('0')
            + "Z"

    let inline private digit (s: string) i = int s[i] - int '0'

    let private digitsAt (s: string) start count =
        let mutable v = 0
        let mutable ok = start + count <= s.Length

        if ok then
            for i in start .. start + count - 1 do
                if Char.IsAsciiDigit s[i] then
                    v <- v * 10 + digit s i
                else
                    ok <- false

        if ok then ValueSome v else ValueNone

    /// Parses an RFC 3339 timestamp with a zone designator (`Z` or `±hh:mm`) and an optional
    /// fraction of up to 9 digits (truncated to 100 ns). A zone-less timestamp is rejected.
    let parse (field: string) (s: string) : Result<DateTimeOffset, FieldError> =
        let bad () =
            FieldError.fail field "must be an RFC 3339 timestamp with a time zone"

        if isNull s then
            FieldError.missing field
        elif
            s.Length < 20
            || s[4] <> '-'
            || s[7] <> '-'
            || s[10] <> 'T'
            || s[13] <> ':'
            || s[16] <> ':'
        then
            bad ()
        else
            match
                digitsAt s 0 4,
                digitsAt s 5 2,
                digitsAt s 8 2,
                digitsAt s 11 2,
                digitsAt s 14 2,
                digitsAt s 17 2
            with
            | ValueSome y, ValueSome mo, ValueSome d, ValueSome h, ValueSome mi, ValueSome sec ->
                let mutable i = 19
                let mutable ticks = 0L
                let mutable ok = true

                if i < s.Length && s[i] = '.' then
                    i <- i + 1
                    let start = i

                    while i < s.Length && Char.IsAsciiDigit s[i] do
                        i <- i + 1

                    let n = i - start

                    if n = 0 || n > 9 then
                        ok <- false
                    else
                        let digits = s.Substring(start, min n 7).PadRight(7, '0')
                        ticks <- Int64.Parse(digits, CultureInfo.InvariantCulture)

                let offset =
                    if not ok || i >= s.Length then
                        ValueNone
                    elif s[i] = 'Z' && i + 1 = s.Length then
                        ValueSome TimeSpan.Zero
                    elif (s[i] = '+' || s[i] = '-') && i + 6 = s.Length && s[i + 3] = ':' then
                        match digitsAt s (i + 1) 2, digitsAt s (i + 4) 2 with
                        | ValueSome oh, ValueSome om when oh < 24 && om < 60 ->
                            let span = TimeSpan(oh, om, 0)
                            ValueSome(if s[i] = '-' then span.Negate() else span)
                        | _ -> ValueNone
                    else
                        ValueNone

                match offset with
                | ValueSome off when
                    mo >= 1
                    && mo <= 12
                    && d >= 1
                    && d <= DateTime.DaysInMonth(max y 1, mo)
                    && h < 24
                    && mi < 60
                    && sec < 60
                    && y >= 1
                    ->
                    try
                        Ok(DateTimeOffset(y, mo, d, h, mi, sec, off).AddTicks ticks)
                    with :? ArgumentOutOfRangeException ->
                        bad ()
                | _ -> bad ()
            | _ -> bad ()

/// Unix-seconds helpers for invite and join-request expiries.
module UnixTime =
    /// Seconds since the Unix epoch.
    let ofDateTimeOffset (t: DateTimeOffset) : int64 = t.ToUnixTimeSeconds()

    /// The instant `seconds` after the epoch, or an error when out of .NET's range.
    let toDateTimeOffset (field: string) (seconds: int64) : Result<DateTimeOffset, FieldError> =
        if seconds < -62135596800L || seconds > 253402300799L then
            FieldError.fail field "must be a Unix time in range"
        else
            Ok(DateTimeOffset.FromUnixTimeSeconds seconds)

/// The `If-Match` precondition of `PUT /v1/kv/...` (docs/protocol.md §6.2).
[<RequireQualifiedAccess>]
type IfMatch =
    /// No header, or an empty / whitespace-only one: create the item (must not exist).
    | Absent
    /// `"N"`: the item must exist at version N.
    | Version of uint64

/// Parsing and formatting of `If-Match`.
module IfMatch =
    /// `"N"` — the header value for version N.
    let quote (version: uint64) : string =
        "\"" + version.ToString(CultureInfo.InvariantCulture) + "\""

    /// Parses a header value: null, empty or whitespace-only means no precondition; otherwise it
    /// must be exactly a double-quoted canonical unsigned decimal.
    let parse (value: string) : Result<IfMatch, FieldError> =
        if String.IsNullOrWhiteSpace value then
            Ok IfMatch.Absent
        elif value.Length >= 3 && value[0] = '"' && value[value.Length - 1] = '"' then
            match Decimal.tryParseUInt64 (value.Substring(1, value.Length - 2)) with
            | ValueSome v -> Ok(IfMatch.Version v)
            | ValueNone -> FieldError.fail "If-Match" "must be a quoted canonical version"
        else
            FieldError.fail "If-Match" "must be a quoted canonical version"
