using System.Text;

namespace BitBoxSync;

/// <summary>
/// Turns a collection's values into the bytes that are encrypted and synced, and back. Encode must
/// be deterministic for equal values (clean detection compares bytes); Decode must reject
/// malformed input instead of returning a partial value.
/// </summary>
public interface ICodec<T>
{
    /// <summary>The bytes of a value.</summary>
    byte[] Encode(T value);

    /// <summary>The value of some bytes; throws <see cref="FormatException"/> (or another exception) for malformed input.</summary>
    T Decode(ReadOnlySpan<byte> bytes);
}

/// <summary>The bundled codecs.</summary>
public static class Codecs
{
    /// <summary>
    /// Strings as UTF-8, round-tripping <b>any</b> bytes: a byte sequence that is not valid UTF-8
    /// (which another client may write) decodes to a string that holds each invalid byte as a lone
    /// surrogate U+DC80–U+DCFF and encodes back to the same bytes.
    /// </summary>
    public static ICodec<string> String { get; } = new StringCodec();

    /// <summary>
    /// JSON in exactly the bytes Go's <c>encoding/json</c> (<c>json.Marshal</c>) writes for the same
    /// value, so a Go client and this engine agree on every value's bytes (docs/protocol.md,
    /// "JSON values written by Codecs.Json").
    /// </summary>
    /// <remarks>
    /// <para>Byte-compatible types (and what they match in Go): <c>string</c> (Go <c>string</c>;
    /// escaped as Go escapes with HTML escaping: <c>\"</c> <c>\\</c> <c>\n</c> <c>\r</c> <c>\t</c>
    /// <c>\b</c> <c>\f</c>, other controls as <c>\u00xx</c>, <c>&lt;</c> <c>&gt;</c> <c>&amp;</c>
    /// U+2028 U+2029 as <c>\uXXXX</c> with lowercase hex, every other character as raw UTF-8; a
    /// lone surrogate is written as U+FFFD); <c>bool</c>; <c>byte</c>, <c>sbyte</c>, <c>short</c>,
    /// <c>ushort</c>, <c>int</c>, <c>uint</c>, <c>long</c>, <c>ulong</c> (Go's integer types);
    /// <c>double</c> and <c>float</c> (Go's <c>float64</c> and <c>float32</c>: shortest round-trip
    /// digits, exponent form below 1e-6 and from 1e21; NaN and infinities are refused as Go refuses
    /// them); <c>byte[]</c> (Go <c>[]byte</c>: padded standard base64); <c>DateTimeOffset</c> (Go
    /// <c>time.Time</c>: RFC 3339, fraction trimmed, <c>Z</c> for offset zero); <c>Guid</c> (a Go
    /// <c>string</c> holding the lowercase hyphenated form); enums (Go integer types, or strings
    /// with <c>JsonStringEnumConverter</c>); <c>Nullable&lt;T&gt;</c> of these (Go pointers);
    /// arrays and lists (Go slices; <c>null</c> for a null reference, <c>[]</c> for an empty one);
    /// <c>Dictionary</c>, <c>IDictionary</c>, <c>IReadOnlyDictionary</c> and
    /// <c>SortedDictionary</c> with string or integer keys (Go maps: keys sorted by the UTF-8 bytes
    /// of their text); classes, records and structs (Go structs: public properties in declaration
    /// order, derived-class properties before base-class ones; name a property with
    /// <see cref="System.Text.Json.Serialization.JsonPropertyNameAttribute"/> to match a Go field's
    /// <c>json:"…"</c> tag, order it with <c>JsonPropertyOrder</c>, skip it with <c>JsonIgnore</c>).</para>
    /// <para>Refused when the collection is opened (an <see cref="ArgumentException"/> naming the
    /// member and an alternative), because no Go type writes their text: <c>DateTime</c>,
    /// <c>decimal</c>, <c>char</c>, <c>TimeSpan</c>, <c>Half</c>, <c>Int128</c>, <c>UInt128</c>,
    /// <c>DateOnly</c>, <c>TimeOnly</c>, <c>object</c>, <c>JsonElement</c>, <c>JsonNode</c>,
    /// <c>JsonDocument</c>, sets (unstable order), byte collections other than <c>byte[]</c>,
    /// dictionaries with other key types and other dictionary types. A type with a converter in
    /// <paramref name="options"/> or a <c>[JsonConverter]</c> attribute is accepted: its string
    /// contents are still escaped as Go escapes them, the rest of its text is the converter's.</para>
    /// <para>Values another encoder wrote (extra spaces, other escapes, more fraction digits) decode
    /// normally, and the engine compares later edits against this codec's bytes for the decoded
    /// value, so they are never re-uploaded because of their encoding. An empty payload does not
    /// decode.</para>
    /// </remarks>
    /// <example>
    /// <code>
    /// Codecs.Json&lt;Dictionary&lt;string, string&gt;&gt;().Encode(new() { ["b"] = "😀", ["a"] = "&lt;x&gt;" })
    /// // {"a":"\u003cx\u003e","b":"😀"}
    /// </code>
    /// </example>
    /// <param name="options">Serializer options to start from (naming policy, converters); the encoder,
    /// indentation and the number, map and time converters are always this codec's.</param>
    public static ICodec<T> Json<T>(System.Text.Json.JsonSerializerOptions? options = null) => new JsonCodec<T>(options);

    /// <summary>Raw bytes, copied on both encode and decode.</summary>
    public static ICodec<byte[]> Bytes { get; } = new BytesCodec();

    private sealed class BytesCodec : ICodec<byte[]>, IByteExactCodec
    {
        public byte[] Encode(byte[] value) => (byte[])(value ?? throw new ArgumentNullException(nameof(value))).Clone();
        public byte[] Decode(ReadOnlySpan<byte> bytes) => bytes.ToArray();
    }

    private sealed class StringCodec : ICodec<string>, IByteExactCodec
    {
        private static readonly UTF8Encoding Strict = new(false, true);

        public byte[] Encode(string value)
        {
            ArgumentNullException.ThrowIfNull(value);
            // No surrogates at all: plain UTF-8 (the common case, and the fast one).
            if (value.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF') < 0) return Encoding.UTF8.GetBytes(value);
            var output = new List<byte>(value.Length);
            Span<byte> buffer = stackalloc byte[4];
            for (var i = 0; i < value.Length; i++)
            {
                var c = value[i];
                if (c is >= '\uDC80' and <= '\uDCFF' && !(i > 0 && char.IsHighSurrogate(value[i - 1])))
                {
                    output.Add((byte)(c - 0xDC00)); // an escaped invalid byte
                }
                else if (char.IsHighSurrogate(c) && i + 1 < value.Length && char.IsLowSurrogate(value[i + 1]))
                {
                    var n = Encoding.UTF8.GetBytes(value.AsSpan(i, 2), buffer);
                    for (var j = 0; j < n; j++) output.Add(buffer[j]);
                    i++;
                }
                else if (char.IsSurrogate(c))
                {
                    throw new ArgumentException($"the string holds an unpaired surrogate U+{(int)c:X4} at {i}", nameof(value));
                }
                else
                {
                    var n = Encoding.UTF8.GetBytes(value.AsSpan(i, 1), buffer);
                    for (var j = 0; j < n; j++) output.Add(buffer[j]);
                }
            }
            return [.. output];
        }

        public string Decode(ReadOnlySpan<byte> bytes)
        {
            try
            {
                return Strict.GetString(bytes);
            }
            catch (DecoderFallbackException)
            {
                var sb = new StringBuilder(bytes.Length);
                var i = 0;
                while (i < bytes.Length)
                {
                    var status = System.Text.Rune.DecodeFromUtf8(bytes[i..], out var rune, out var consumed);
                    if (status == System.Buffers.OperationStatus.Done)
                    {
                        sb.Append(rune.ToString());
                        i += consumed;
                    }
                    else
                    {
                        sb.Append((char)(0xDC00 + bytes[i]));
                        i++;
                    }
                }
                return sb.ToString();
            }
        }
    }
}
