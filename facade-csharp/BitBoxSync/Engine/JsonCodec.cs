using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;

namespace BitBoxSync;

/// <summary>
/// A codec whose type may be refused before use (checked by <see cref="SyncNamespace.OpenCollection{T}"/>).
/// </summary>
internal interface ICheckedCodec
{
    /// <summary>Throws <see cref="ArgumentException"/> naming the first member that cannot be encoded compatibly.</summary>
    void Check();
}

/// <summary>
/// A codec that writes exactly the bytes it decoded (every byte sequence is its own canonical
/// form), so the engine can skip re-encoding downloaded values.
/// </summary>
internal interface IByteExactCodec;

/// <summary>
/// JSON in exactly the bytes Go's <c>encoding/json</c> (<c>json.Marshal</c>) writes for the same
/// value; the rules are listed in docs/protocol.md ("JSON values written by Codecs.Json").
/// System.Text.Json does the reflection and the numbers (with Go's float formatting); the string
/// contents of its output are then re-escaped by Go's rules (<see cref="GoJson.Rewrite"/>).
/// </summary>
internal sealed class JsonCodec<T> : ICodec<T>, ICheckedCodec
{
    private readonly JsonSerializerOptions _options;
    private readonly string? _refusal;

    public JsonCodec(JsonSerializerOptions? options)
    {
        var o = options is null ? new JsonSerializerOptions() : new JsonSerializerOptions(options);
        // The relaxed encoder escapes the fewest characters, so most output needs no rewrite.
        o.Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping;
        o.WriteIndented = false;
        o.Converters.Insert(0, new GoJson.SortedMapConverterFactory());
        o.Converters.Insert(0, new GoJson.DoubleConverter());
        o.Converters.Insert(0, new GoJson.SingleConverter());
        o.Converters.Insert(0, new GoJson.DateTimeOffsetConverter());
        o.MakeReadOnly(populateMissingResolver: true);
        _options = o;
        _refusal = GoJson.Refusal(typeof(T), o, options);
    }

    public void Check()
    {
        if (_refusal is not null) throw new ArgumentException(_refusal, "options");
    }

    public byte[] Encode(T value)
    {
        if (_refusal is not null) throw new NotSupportedException(_refusal);
        var json = JsonSerializer.SerializeToUtf8Bytes(value, _options);
        return GoJson.NeedsRewrite(json) ? GoJson.Rewrite(json) : json;
    }

    public T Decode(ReadOnlySpan<byte> bytes)
    {
        if (_refusal is not null) throw new NotSupportedException(_refusal);
        if (bytes.IsEmpty) throw new FormatException("empty JSON payload");
        try
        {
            return JsonSerializer.Deserialize<T>(bytes, _options)!;
        }
        catch (JsonException e)
        {
            throw new FormatException("invalid JSON: " + e.Message, e);
        }
        catch (InvalidOperationException e)
        {
            throw new FormatException("invalid JSON: " + e.Message, e);
        }
    }
}

/// <summary>Go's <c>encoding/json</c> rules for <see cref="JsonCodec{T}"/>: string escaping, map order, floats, times.</summary>
internal static class GoJson
{
    private static readonly byte[] Hex = "0123456789abcdef"u8.ToArray();

    /// <summary>
    /// Whether System.Text.Json's compact output differs from Go's: an escape (Go may write the
    /// character raw or with another escape), an HTML character or U+2028/U+2029 written raw.
    /// </summary>
    internal static bool NeedsRewrite(ReadOnlySpan<byte> json) =>
        json.IndexOfAny("\\<>&"u8) >= 0 || json.IndexOf("\u2028"u8) >= 0 || json.IndexOf("\u2029"u8) >= 0;

    /// <summary>
    /// Rewrites every JSON string of valid, compact JSON <paramref name="json"/> (property names
    /// included) with Go's escaping; everything outside strings is copied unchanged.
    /// </summary>
    internal static byte[] Rewrite(ReadOnlySpan<byte> json)
    {
        var output = new ArrayBufferWriter<byte>(json.Length + 16);
        var i = 0;
        while (i < json.Length)
        {
            var start = json[i..].IndexOf((byte)'"');
            if (start < 0)
            {
                output.Write(json[i..]);
                break;
            }
            output.Write(json.Slice(i, start + 1));
            i += start + 1;
            i = RewriteString(json, i, output);
        }
        return output.WrittenSpan.ToArray();
    }

    /// <summary>Rewrites one string's contents from <paramref name="i"/> through its closing quote; returns the index after it.</summary>
    private static int RewriteString(ReadOnlySpan<byte> json, int i, ArrayBufferWriter<byte> output)
    {
        Span<byte> utf8 = stackalloc byte[4];
        while (true)
        {
            var b = json[i];
            if (b == (byte)'"')
            {
                output.Write("\""u8);
                return i + 1;
            }
            int scalar;
            if (b == (byte)'\\')
            {
                var e = json[i + 1];
                i += 2;
                switch (e)
                {
                    case (byte)'"': scalar = '"'; break;
                    case (byte)'\\': scalar = '\\'; break;
                    case (byte)'/': scalar = '/'; break;
                    case (byte)'b': scalar = '\b'; break;
                    case (byte)'f': scalar = '\f'; break;
                    case (byte)'n': scalar = '\n'; break;
                    case (byte)'r': scalar = '\r'; break;
                    case (byte)'t': scalar = '\t'; break;
                    case (byte)'u':
                        scalar = ParseHex4(json.Slice(i, 4));
                        i += 4;
                        if (char.IsHighSurrogate((char)scalar) && i + 5 < json.Length && json[i] == (byte)'\\' && json[i + 1] == (byte)'u'
                            && ParseHex4(json.Slice(i + 2, 4)) is var low && char.IsLowSurrogate((char)low))
                        {
                            scalar = char.ConvertToUtf32((char)scalar, (char)low);
                            i += 6;
                        }
                        else if (scalar is >= 0xD800 and <= 0xDFFF)
                        {
                            scalar = 0xFFFD; // ill-formed text, as Go writes invalid UTF-8
                        }
                        break;
                    default: throw new FormatException($"invalid JSON escape \\{(char)e}");
                }
            }
            else
            {
                if (Rune.DecodeFromUtf8(json[i..], out var rune, out var consumed) != OperationStatus.Done)
                    throw new FormatException("invalid UTF-8 in JSON output");
                scalar = rune.Value;
                i += consumed;
            }
            WriteScalar(scalar, output, utf8);
        }
    }

    private static int ParseHex4(ReadOnlySpan<byte> hex) =>
        int.Parse(Encoding.ASCII.GetString(hex), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);

    /// <summary>One Unicode scalar value inside a JSON string, as Go's <c>json.Marshal</c> writes it.</summary>
    private static void WriteScalar(int scalar, ArrayBufferWriter<byte> output, Span<byte> utf8)
    {
        switch (scalar)
        {
            case '"': output.Write("\\\""u8); return;
            case '\\': output.Write("\\\\"u8); return;
            case '\b': output.Write("\\b"u8); return;
            case '\f': output.Write("\\f"u8); return;
            case '\n': output.Write("\\n"u8); return;
            case '\r': output.Write("\\r"u8); return;
            case '\t': output.Write("\\t"u8); return;
            case < 0x20 or '<' or '>' or '&':
                output.Write("\\u00"u8);
                output.Write([Hex[scalar >> 4], Hex[scalar & 0xF]]);
                return;
            case 0x2028: output.Write("\\u2028"u8); return;
            case 0x2029: output.Write("\\u2029"u8); return;
            default:
                var n = new Rune(scalar).EncodeToUtf8(utf8);
                output.Write(utf8[..n]);
                return;
        }
    }

    /// <summary>
    /// Why <paramref name="root"/> cannot be written as Go writes it, or null when it can: walks
    /// the serializer's type information (objects, collections, dictionaries) down to leaf types.
    /// </summary>
    internal static string? Refusal(Type root, JsonSerializerOptions options, JsonSerializerOptions? userOptions)
    {
        var seen = new HashSet<Type>();
        return Walk(root, TypeName(root));

        string? Walk(Type t, string path)
        {
            if (Nullable.GetUnderlyingType(t) is { } inner) return Walk(inner, path);
            if (!seen.Add(t)) return null;
            if (t.IsEnum || Leaves.Contains(t)) return null;
            if (Refused.TryGetValue(t, out var why)) return $"{path} ({TypeName(t)}) {why}";
            if (UserConverter(t, userOptions)) return null; // the app's converter decides the text
            if (t.IsGenericType && t.GetGenericTypeDefinition() is var g
                && (g == typeof(ISet<>) || g == typeof(IReadOnlySet<>) || t.GetInterfaces().Any(i => i.IsGenericType && i.GetGenericTypeDefinition() == typeof(ISet<>))))
                return $"{path} ({TypeName(t)}) is a set: its enumeration order is not stable, so equal sets could encode differently; use a sorted list or an array";
            if (SortedMapConverterFactory.MapArguments(t) is var (key, value))
                return KeyTypes.Contains(key) ? Walk(value, path + "[]")
                    : $"{path} ({TypeName(t)}) has {TypeName(key)} keys: only string and integer keys are sorted as Go sorts map keys";
            JsonTypeInfo info;
            try { info = options.GetTypeInfo(t); }
            catch (Exception e) when (e is NotSupportedException or InvalidOperationException or ArgumentException)
            {
                return $"{path} ({TypeName(t)}) cannot be serialized: {e.Message}";
            }
            switch (info.Kind)
            {
                case JsonTypeInfoKind.Object:
                    foreach (var p in info.Properties)
                        if (Walk(p.PropertyType, path + "." + p.Name) is { } r) return r;
                    return null;
                case JsonTypeInfoKind.Enumerable when info.ElementType == typeof(byte):
                    return $"{path} ({TypeName(t)}) is written as an array of numbers, a Go []byte as base64: use byte[]";
                case JsonTypeInfoKind.Enumerable:
                    return Walk(info.ElementType!, path + "[]");
                case JsonTypeInfoKind.Dictionary:
                    return $"{path} ({TypeName(t)}) is a dictionary type whose keys are not written sorted: use Dictionary<,>, IDictionary<,>, IReadOnlyDictionary<,> or SortedDictionary<,>";
                default:
                    return $"{path} ({TypeName(t)}) has no Go-compatible encoding: see docs/protocol.md for the supported types, or register a JsonConverter for it";
            }
        }
    }

    private static bool UserConverter(Type t, JsonSerializerOptions? userOptions) =>
        t.GetCustomAttributes(typeof(JsonConverterAttribute), true).Length > 0
        || (userOptions?.Converters.Any(c => c.CanConvert(t)) ?? false);

    private static string TypeName(Type t) =>
        !t.IsGenericType ? t.Name : t.Name[..t.Name.IndexOf('`')] + "<" + string.Join(", ", t.GetGenericArguments().Select(TypeName)) + ">";

    /// <summary>Leaf types written exactly as Go writes the matching Go type.</summary>
    private static readonly HashSet<Type> Leaves =
    [
        typeof(string), typeof(bool), typeof(byte), typeof(sbyte), typeof(short), typeof(ushort), typeof(int), typeof(uint),
        typeof(long), typeof(ulong), typeof(float), typeof(double), typeof(byte[]), typeof(DateTimeOffset), typeof(Guid),
    ];

    private static readonly HashSet<Type> KeyTypes =
    [
        typeof(string), typeof(byte), typeof(sbyte), typeof(short), typeof(ushort), typeof(int), typeof(uint), typeof(long), typeof(ulong),
    ];

    /// <summary>Types whose System.Text.Json text no Go type writes, with the reason and an alternative.</summary>
    private static readonly Dictionary<Type, string> Refused = new()
    {
        [typeof(DateTime)] = "has no time zone in Go's sense: use DateTimeOffset (written as Go writes time.Time)",
        [typeof(decimal)] = "keeps trailing zeros that Go's numbers do not: use long (for example cents) or double",
        [typeof(char)] = "is written as a string, a Go rune as a number: use string or int",
        [typeof(TimeSpan)] = "is written as text, a Go time.Duration as integer nanoseconds: use long",
        [typeof(Half)] = "has no Go type: use float",
        [typeof(Int128)] = "has no Go type: use long or a string",
        [typeof(UInt128)] = "has no Go type: use ulong or a string",
        [typeof(object)] = "has no fixed shape: use a concrete type",
        [typeof(JsonElement)] = "keeps the peer's bytes (key order, spacing, number text) instead of Go's: use a concrete type",
        [typeof(System.Text.Json.Nodes.JsonNode)] = "keeps object keys in insertion order, not sorted as Go writes maps: use a concrete type",
        [typeof(System.Text.Json.Nodes.JsonObject)] = "keeps object keys in insertion order, not sorted as Go writes maps: use a concrete type",
        [typeof(JsonDocument)] = "keeps the peer's bytes instead of Go's: use a concrete type",
        [typeof(DateOnly)] = "has no Go type: use DateTimeOffset or a string",
        [typeof(TimeOnly)] = "has no Go type: use a string",
    };

    /// <summary>Dictionaries with string or integer keys written with their key texts in UTF-8 byte order, as Go sorts map keys.</summary>
    internal sealed class SortedMapConverterFactory : JsonConverterFactory
    {
        internal static (Type Key, Type Value)? MapArguments(Type t)
        {
            if (!t.IsGenericType || t.GetGenericArguments() is not [var k, var v]) return null;
            var g = t.GetGenericTypeDefinition();
            return g == typeof(Dictionary<,>) || g == typeof(IDictionary<,>) || g == typeof(IReadOnlyDictionary<,>) || g == typeof(SortedDictionary<,>)
                ? (k, v) : null;
        }

        public override bool CanConvert(Type t) => MapArguments(t) is var (k, _) && KeyTypes.Contains(k);

        public override JsonConverter CreateConverter(Type t, JsonSerializerOptions options)
        {
            var (k, v) = MapArguments(t)!.Value;
            return (JsonConverter)Activator.CreateInstance(typeof(SortedMapConverter<,,>).MakeGenericType(t, k, v))!;
        }
    }

    private sealed class SortedMapConverter<TMap, TKey, TValue> : JsonConverter<TMap>
        where TMap : IEnumerable<KeyValuePair<TKey, TValue>>
        where TKey : notnull, ISpanParsable<TKey>
    {
        public override TMap Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
        {
            var values = new Dictionary<TKey, TValue>();
            if (reader.TokenType != JsonTokenType.StartObject) throw new JsonException("expected a JSON object");
            while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
            {
                var text = reader.GetString()!;
                if (!TKey.TryParse(text, CultureInfo.InvariantCulture, out var key) || KeyText(key) != text)
                    throw new JsonException($"map key \"{text}\" is not a canonical {typeof(TKey).Name}");
                reader.Read();
                values[key] = JsonSerializer.Deserialize<TValue>(ref reader, options)!;
            }
            if (typeof(TMap).IsAssignableFrom(typeof(Dictionary<TKey, TValue>))) return (TMap)(object)values;
            return (TMap)Activator.CreateInstance(typeof(TMap), values)!;
        }

        public override void Write(Utf8JsonWriter writer, TMap value, JsonSerializerOptions options)
        {
            var entries = new List<(byte[] Key, TValue Value)>();
            foreach (var kv in value) entries.Add((Encoding.UTF8.GetBytes(KeyText(kv.Key)), kv.Value));
            entries.Sort((a, b) => a.Key.AsSpan().SequenceCompareTo(b.Key));
            writer.WriteStartObject();
            foreach (var (key, v) in entries)
            {
                writer.WritePropertyName(key);
                JsonSerializer.Serialize(writer, v, options);
            }
            writer.WriteEndObject();
        }

        private static string KeyText(TKey key) => key is IFormattable f ? f.ToString(null, CultureInfo.InvariantCulture) : (string)(object)key;
    }

    /// <summary>
    /// <see cref="DateTimeOffset"/> as Go writes a <c>time.Time</c> (RFC 3339 with the fraction's
    /// trailing zeros trimmed, <c>Z</c> for a zero offset); reads RFC 3339 with up to 9 fractional
    /// digits (digits beyond .NET's 100 ns are dropped).
    /// </summary>
    internal sealed class DateTimeOffsetConverter : JsonConverter<DateTimeOffset>
    {
        public override DateTimeOffset Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
        {
            var text = reader.GetString() ?? throw new JsonException("expected an RFC 3339 time");
            var dot = text.IndexOf('.');
            if (dot > 0)
            {
                var end = dot + 1;
                while (end < text.Length && char.IsAsciiDigit(text[end])) end++;
                if (end - dot - 1 > 7) text = text[..(dot + 8)] + text[end..];
            }
            string[] formats = ["yyyy-MM-dd'T'HH:mm:ssK", "yyyy-MM-dd'T'HH:mm:ss.FFFFFFFK"];
            if (!DateTimeOffset.TryParseExact(text, formats, CultureInfo.InvariantCulture, DateTimeStyles.None, out var value))
                throw new JsonException($"\"{text}\" is not an RFC 3339 time");
            return value;
        }

        public override void Write(Utf8JsonWriter writer, DateTimeOffset value, JsonSerializerOptions options) =>
            writer.WriteStringValue(Format(value));

        internal static string Format(DateTimeOffset value)
        {
            var text = value.ToString("yyyy-MM-dd'T'HH:mm:ss", CultureInfo.InvariantCulture);
            var fraction = value.Ticks % TimeSpan.TicksPerSecond;
            if (fraction != 0) text += "." + fraction.ToString("0000000", CultureInfo.InvariantCulture).TrimEnd('0');
            var offset = value.Offset;
            if (offset == TimeSpan.Zero) return text + "Z";
            return text + (offset < TimeSpan.Zero ? "-" : "+") + offset.Duration().ToString("hh\\:mm", CultureInfo.InvariantCulture);
        }
    }

    /// <summary><c>double</c> as Go writes a <c>float64</c>.</summary>
    internal sealed class DoubleConverter : JsonConverter<double>
    {
        public override double Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => reader.GetDouble();

        public override void Write(Utf8JsonWriter writer, double value, JsonSerializerOptions options) =>
            writer.WriteRawValue(FormatFloat(value.ToString("R", CultureInfo.InvariantCulture), Math.Abs(value) is var a && a != 0 && (a < 1e-6 || a >= 1e21), value), skipInputValidation: true);
    }

    /// <summary><c>float</c> as Go writes a <c>float32</c>.</summary>
    internal sealed class SingleConverter : JsonConverter<float>
    {
        public override float Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => reader.GetSingle();

        public override void Write(Utf8JsonWriter writer, float value, JsonSerializerOptions options) =>
            writer.WriteRawValue(FormatFloat(value.ToString("R", CultureInfo.InvariantCulture), MathF.Abs(value) is var a && a != 0 && (a < 1e-6f || a >= 1e21f), value), skipInputValidation: true);
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
        var power = e < 0 ? 0 : int.Parse(text.AsSpan(e + 1), CultureInfo.InvariantCulture);
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
            var exp = x < 0 ? "-" + (-x).ToString(CultureInfo.InvariantCulture)
                : "+" + x.ToString("00", CultureInfo.InvariantCulture);
            return sign + mant + "e" + exp;
        }
        if (position <= 0) return sign + "0." + new string('0', -position) + digits;
        if (position >= digits.Length) return sign + digits + new string('0', position - digits.Length);
        return sign + digits[..position] + "." + digits[position..];
    }
}
