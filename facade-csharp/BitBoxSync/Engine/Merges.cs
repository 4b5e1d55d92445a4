namespace BitBoxSync;

/// <summary>What a merge is given: the key, the common base when one is known, and both sides.</summary>
/// <typeparam name="T">The collection's value type.</typeparam>
public readonly record struct MergeInput<T>(string Key, bool HasBase, T? Base, T Local, T Remote);

/// <summary>A merge's answer: a merged value, or "unresolved" (a conflict is recorded).</summary>
public readonly record struct MergeResult<T>
{
    private MergeResult(bool resolved, T? value)
    {
        IsResolved = resolved;
        Value = value;
    }

    /// <summary>Whether the merge produced a value.</summary>
    public bool IsResolved { get; }

    /// <summary>The merged value (when resolved).</summary>
    public T? Value { get; }

    /// <summary>The merged value.</summary>
    public static MergeResult<T> Resolved(T value) => new(true, value);

    /// <summary>No automatic answer: record a conflict and stop uploading the key until resolved.</summary>
    public static MergeResult<T> Unresolved => new(false, default);
}

/// <summary>
/// Merges a local and a remote value of one key. <see cref="MergeInput{T}.HasBase"/> is false when
/// no common base is known (both devices created the key, first sync of existing values, after a
/// reset). Inputs are read-only; return owned values. An exception quarantines the item (it is
/// reported and retried when its input changes) without stopping the rest of the sync.
/// </summary>
public delegate MergeResult<T> MergeFunction<T>(MergeInput<T> input);

/// <summary>The bundled merge policies.</summary>
public static class Merges
{
    /// <summary>Keep the local value.</summary>
    public static MergeFunction<T> PreferLocal<T>() => input => MergeResult<T>.Resolved(input.Local);

    /// <summary>Take the remote value.</summary>
    public static MergeFunction<T> PreferRemote<T>() => input => MergeResult<T>.Resolved(input.Remote);

    /// <summary>Never merge: every concurrent change becomes a conflict (the default).</summary>
    public static MergeFunction<T> NoMerge<T>() => _ => MergeResult<T>.Unresolved;
}
