using BitBoxSync.Protocol;
using BitBoxSync.Server.Core;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;

namespace BitBoxSync.Server;

/// <summary>A refused request on its way out: the rule's status and message, rolled back.</summary>
internal sealed class ApiFailure(ApiError error) : Exception(error.Message)
{
    public ApiError Error { get; } = error;

    public static ApiFailure BadRequest(string message) => new(ApiErrorModule.badRequest(message));
}

/// <summary>Glue between the pure F# rules and the C# shell.</summary>
internal static class Interop
{
    public static FSharpOption<T> Some<T>(T value) => FSharpOption<T>.Some(value);

    public static FSharpOption<T> Opt<T>(T? value) where T : class =>
        value is null ? FSharpOption<T>.None : FSharpOption<T>.Some(value);

    public static T? OrNull<T>(this FSharpOption<T>? option) where T : class =>
        option is null ? null : option.Value;

    public static FSharpList<T> ToFSharpList<T>(this IEnumerable<T> items) => ListModule.OfSeq(items);

    /// <summary>The value of a rule's result, or the refusal as an <see cref="ApiFailure"/>.</summary>
    public static T OrFail<T>(this FSharpResult<T, ApiError> result) =>
        result.IsOk ? result.ResultValue : throw new ApiFailure(result.ErrorValue);

    /// <summary>A validated request, or 400 naming the field.</summary>
    public static T OrBadRequest<T>(this FSharpResult<T, FieldError> result) =>
        result.IsOk ? result.ResultValue : throw new ApiFailure(ApiErrorModule.ofField(result.ErrorValue));

    /// <summary>A path parameter: lowercase hex of the exact length, else 400.</summary>
    public static Bin<K> PathId<K>(string value) where K : IBinaryKind =>
        Bin.parse<K>(value).OrBadRequest();

    /// <summary>Bytes read back from the database (written by us): a bad value is corruption.</summary>
    public static Bin<K> Stored<K>(byte[] bytes) where K : IBinaryKind
    {
        var r = Bin.ofBytes<K>(bytes);
        return r.IsOk ? r.ResultValue : throw new InvalidOperationException("corrupt stored value: " + r.ErrorValue.Message);
    }

    /// <summary>A wire string read back from the database.</summary>
    public static Bin<K> StoredWire<K>(string wire) where K : IBinaryKind
    {
        var r = Bin.parse<K>(wire);
        return r.IsOk ? r.ResultValue : throw new InvalidOperationException("corrupt stored value: " + r.ErrorValue.Message);
    }

    public static byte[] Bytes<K>(this Bin<K> value) where K : IBinaryKind => Bin.toArray(value);
}
