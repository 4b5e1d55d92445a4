using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace BitBoxSync;

/// <summary>
/// JSON in the bytes the reference Go client's <c>encoding/json</c> produces (ENGINE.md §12.26):
/// compact, dictionary keys sorted by UTF-8 bytes, <c>&lt;</c> <c>&gt;</c> <c>&amp;</c> U+2028 U+2029
/// escaped as <c>\u003c</c>…, other escapes with lowercase hex, non-ASCII left as UTF-8. Clean
/// detection compares bytes, so equal values written by a Go client and by this codec stay clean.
/// Properties are written in declaration order (as Go writes struct fields); name them with
/// <see cref="JsonPropertyNameAttribute"/> to match a Go struct's tags. Floating-point numbers
/// use Go's shortest round-trip digits: plain decimals for magnitudes in [1e-6, 1e21), exponent
/// form (<c>1e+21</c>, <c>1.5e-7</c>) outside it; <c>float</c> as Go's <c>float32</c>.
/// </summary>
internal sealed class JsonCodec<T> : ICodec<T>
{
    private readonly JsonSerializerOptions _options;

    public JsonCodec(JsonSerializerOptions? options)
    {
        var o = options is null ? new JsonSerializerOptions() : new JsonSerializerOptions(options);
        o.Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping;
        o.WriteIndented = false;
        o.Converters.Insert(0, new GoJson.SortedMapConverterFactory());
        o.Converters.Insert(0, new GoJson.DoubleConverter());
        o.Converters.Insert(0, new GoJson.SingleConverter());
        o.MakeReadOnly(populateMissingResolver: true);
        _options = o;
    }

    public byte[] Encode(T value) => GoEscape(JsonSerializer.SerializeToUtf8Bytes(value, _options));

    public T Decode(ReadOnlySpan<byte> bytes)
    {
        if (bytes.IsEmpty) throw new FormatException("empty JSON payload");
        try
        {
            return JsonSerializer.Deserialize<T>(bytes, _options)!;
        }
        catch (JsonException e)
        {
            throw new FormatException("invalid JSON: " + e.Message, e);
        }
    }

    /// <summary>Rewrites escapes the way Go's encoder writes them (only string contents can change).</summary>
    private static byte[] GoEscape(byte[] json)
    {
        var output = new List<byte>(json.Length + 16);
        for (var i = 0; i < json.Length; i++)
        {
            var b = json[i];
            if (b == (byte)'\\' && i + 1 < json.Length)
            {
                var next = json[i + 1];
                if (next == (byte)'u' && i + 5 < json.Length)
                {
                    output.Add((byte)'\\');
                    output.Add((byte)'u');
                    for (var k = 2; k < 6; k++) output.Add((byte)char.ToLowerInvariant((char)json[i + k]));
                    i += 5;
                }
                else
                {
                    output.Add(b);
                    output.Add(next);
                    i++;
                }
            }
            else if (b is (byte)'<' or (byte)'>' or (byte)'&')
            {
                output.AddRange(Encoding.ASCII.GetBytes($"\\u00{b:x2}"));
            }
            else if (b == 0xE2 && i + 2 < json.Length && json[i + 1] == 0x80 && json[i + 2] is 0xA8 or 0xA9)
            {
                output.AddRange(Encoding.ASCII.GetBytes(json[i + 2] == 0xA8 ? "\\u2028" : "\\u2029"));
                i += 2;
            }
            else
            {
                output.Add(b);
            }
        }
        return [.. output];
    }
}

/// <summary>Converters of <see cref="JsonCodec{T}"/>.</summary>
internal static class GoJson
{
    /// <summary>String-keyed dictionaries written with their keys in UTF-8 byte order, as Go sorts map keys.</summary>
    internal sealed class SortedMapConverterFactory : JsonConverterFactory
    {
        public override bool CanConvert(Type t) =>
            t.IsGenericType && t.GetGenericArguments() is [var k, _] && k == typeof(string)
            && (t.GetGenericTypeDefinition() == typeof(Dictionary<,>) || t.GetGenericTypeDefinition() == typeof(IDictionary<,>)
                || t.GetGenericTypeDefinition() == typeof(IReadOnlyDictionary<,>) || t.GetGenericTypeDefinition() == typeof(SortedDictionary<,>));

        public override JsonConverter CreateConverter(Type t, JsonSerializerOptions options) =>
            (JsonConverter)Activator.CreateInstance(typeof(SortedMapConverter<,>).MakeGenericType(t, t.GetGenericArguments()[1]))!;
    }

    private sealed class SortedMapConverter<TMap, TValue> : JsonConverter<TMap> where TMap : IEnumerable<KeyValuePair<string, TValue>>
    {
        public override TMap Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
        {
            var values = new Dictionary<string, TValue>(StringComparer.Ordinal);
            if (reader.TokenType != JsonTokenType.StartObject) throw new JsonException("expected a JSON object");
            while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
            {
                var key = reader.GetString()!;
                reader.Read();
                values[key] = JsonSerializer.Deserialize<TValue>(ref reader, options)!;
            }
            if (typeof(TMap).IsAssignableFrom(typeof(Dictionary<string, TValue>))) return (TMap)(object)values;
            return (TMap)Activator.CreateInstance(typeof(TMap), values)!;
        }

        public override void Write(Utf8JsonWriter writer, TMap value, JsonSerializerOptions options)
        {
            writer.WriteStartObject();
            foreach (var kv in value.OrderBy(kv => Encoding.UTF8.GetBytes(kv.Key), Utf8Order.Instance))
            {
                writer.WritePropertyName(kv.Key);
                JsonSerializer.Serialize(writer, kv.Value, options);
            }
            writer.WriteEndObject();
        }
    }

    /// <summary><c>double</c> as Go writes a <c>float64</c>.</summary>
    internal sealed class DoubleConverter : JsonConverter<double>
    {
        public override double Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => reader.GetDouble();

        public override void Write(Utf8JsonWriter writer, double value, JsonSerializerOptions options) =>
            writer.WriteRawValue(FormatFloat(value.ToString("R", System.Globalization.CultureInfo.InvariantCulture), Math.Abs(value) is var a && a != 0 && (a < 1e-6 || a >= 1e21), value), skipInputValidation: true);
    }

    /// <summary><c>float</c> as Go writes a <c>float32</c>.</summary>
    internal sealed class SingleConverter : JsonConverter<float>
    {
        public override float Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => reader.GetSingle();

        public override void Write(Utf8JsonWriter writer, float value, JsonSerializerOptions options) =>
            writer.WriteRawValue(FormatFloat(value.ToString("R", System.Globalization.CultureInfo.InvariantCulture), MathF.Abs(value) is var a && a != 0 && (a < 1e-6f || a >= 1e21f), value), skipInputValidation: true);
    }

    /// <summary>
    /// Go's <c>encoding/json</c> float text from .NET's shortest round-trip text <paramref name="roundTrip"/>
    /// (same digits): <c>strconv</c>'s 'f' or 'e' format, exponents without a leading zero when negative.
    /// </summary>
    internal static string FormatFloat(string roundTrip, bool exponent, double value)
    {
        if (double.IsNaN(value) || double.IsInfinity(value))
            throw new JsonException($"JSON cannot represent {roundTrip} (Go's encoder refuses it too)");
        var negative = roundTrip.StartsWith('-');
        var text = negative ? roundTrip[1..] : roundTrip;
        var e = text.IndexOfAny(['E', 'e']);
        var power = e < 0 ? 0 : int.Parse(text.AsSpan(e + 1), System.Globalization.CultureInfo.InvariantCulture);
        var mantissa = e < 0 ? text : text[..e];
        var point = mantissa.IndexOf('.');
        var digits = point < 0 ? mantissa : mantissa.Remove(point, 1);
        // value = 0.digits × 10^position
        var position = (point < 0 ? mantissa.Length : point) + power;
        var trimmed = digits.TrimStart('0');
        position -= digits.Length - trimmed.Length;
        digits = trimmed.TrimEnd('0');
        var sign = negative ? "-" : "";
        if (digits.Length == 0) return sign + "0";
        if (exponent)
        {
            var x = position - 1;
            var mant = digits.Length == 1 ? digits : digits[..1] + "." + digits[1..];
            var exp = x < 0 ? "-" + (-x).ToString(System.Globalization.CultureInfo.InvariantCulture)
                : "+" + x.ToString("00", System.Globalization.CultureInfo.InvariantCulture);
            return sign + mant + "e" + exp;
        }
        if (position <= 0) return sign + "0." + new string('0', -position) + digits;
        if (position >= digits.Length) return sign + digits + new string('0', position - digits.Length);
        return sign + digits[..position] + "." + digits[position..];
    }

    private sealed class Utf8Order : IComparer<byte[]>
    {
        public static readonly Utf8Order Instance = new();
        public int Compare(byte[]? a, byte[]? b) => a.AsSpan().SequenceCompareTo(b);
    }
}
