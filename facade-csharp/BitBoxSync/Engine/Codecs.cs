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
    /// JSON, byte-compatible with the reference Go client's encoder for strings, integers, booleans,
    /// objects (properties in declaration order) and string-keyed dictionaries (keys sorted). An
    /// empty payload does not decode. <paramref name="options"/> may add converters or naming.
    /// </summary>
    public static ICodec<T> Json<T>(System.Text.Json.JsonSerializerOptions? options = null) => new JsonCodec<T>(options);

    /// <summary>Raw bytes, copied on both encode and decode.</summary>
    public static ICodec<byte[]> Bytes { get; } = new BytesCodec();

    private sealed class BytesCodec : ICodec<byte[]>
    {
        public byte[] Encode(byte[] value) => (byte[])(value ?? throw new ArgumentNullException(nameof(value))).Clone();
        public byte[] Decode(ReadOnlySpan<byte> bytes) => bytes.ToArray();
    }

    private sealed class StringCodec : ICodec<string>
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
