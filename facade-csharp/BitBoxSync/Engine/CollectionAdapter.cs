using BitBoxSync.Core;
using Microsoft.FSharp.Core;

namespace BitBoxSync;

/// <summary>The byte-level view of a collection the engine works with (docs/engine.md §2.7.1).</summary>
internal interface ICollectionAdapter
{
    string Name { get; }
    ValueTask<IReadOnlyCollection<string>> KeysAsync(CancellationToken ct);
    ValueTask<List<KeyValuePair<string, byte[]>>> SnapshotAsync(CancellationToken ct);
    ValueTask<byte[]?> GetAsync(string key, CancellationToken ct);

    /// <summary>Writes <paramref name="value"/> if the key still holds <paramref name="expected"/> (null = absent).</summary>
    ValueTask<bool> SetIfCurrentAsync(string key, byte[]? expected, byte[] value, CancellationToken ct);

    /// <summary>Writes unconditionally (conflict resolution with a value).</summary>
    ValueTask SetAsync(string key, byte[] value, CancellationToken ct);

    /// <summary>Whether the backend can remove values (<see cref="IDeletableValueBackend{T}"/>).</summary>
    bool CanRemove { get; }

    /// <summary>The encoded value that overwrites a deleted one on the server (<c>OverwriteOnDelete</c>), or null.</summary>
    byte[]? DeletedValue { get; }

    /// <summary>Removes the key's value if it still is <paramref name="expected"/> (true also when it is already gone).</summary>
    ValueTask<bool> RemoveIfCurrentAsync(string key, byte[] expected, CancellationToken ct);

    FSharpFunc<FSharpOption<byte[]>, FSharpFunc<byte[], FSharpFunc<byte[], FSharpResult<MergeOutcome, string>>>> Merge { get; }

    /// <summary>The merge and the canonical form (this device's bytes for a downloaded value) the apply step uses.</summary>
    CollectionFunctions Functions { get; }

    /// <summary>The backend's change stamp, or null when it does not track changes.</summary>
    ValueTask<long?> ChangeStampAsync(CancellationToken ct);

    /// <summary>
    /// The present values of the keys written after <paramref name="stamp"/> and of <paramref name="alsoKeys"/>,
    /// or null (take a full snapshot).
    /// </summary>
    ValueTask<List<KeyValuePair<string, byte[]>>?> ChangedSinceAsync(long stamp, IEnumerable<string> alsoKeys, CancellationToken ct);

    /// <summary>Engine state: keys that entered the scope since the last saved reconciliation.</summary>
    HashSet<string> EnteredScope { get; }

    /// <summary>Engine state: the stamp read before the last snapshot reconciliation that was saved completely.</summary>
    long? ReconciledStamp { get; set; }

    /// <summary>Engine state: the keys returned at a change stamp (reused while the stamp is unchanged).</summary>
    (long Stamp, string[] Keys)? KeysAtStamp { get; set; }
}

/// <summary>A typed collection adapted to bytes with its codec, merge and backend.</summary>
internal sealed class CollectionAdapter<T>(string name, ICodec<T> codec, MergeFunction<T> merge, IValueBackend<T> backend, byte[]? deletedValue = null)
    : ICollectionAdapter
{
    public byte[]? DeletedValue => deletedValue;

    public string Name => name;

    public ICodec<T> Codec => codec;

    public IValueBackend<T> Backend => backend;

    public async ValueTask<IReadOnlyCollection<string>> KeysAsync(CancellationToken ct) => await backend.KeysAsync(ct) ?? [];

    public async ValueTask<List<KeyValuePair<string, byte[]>>> SnapshotAsync(CancellationToken ct)
    {
        var values = await backend.SnapshotAsync(ct) ?? new Dictionary<string, T>();
        return values.Select(kv => KeyValuePair.Create(kv.Key, codec.Encode(kv.Value))).ToList();
    }

    public long? ReconciledStamp { get; set; }

    public (long Stamp, string[] Keys)? KeysAtStamp { get; set; }

    public async ValueTask<long?> ChangeStampAsync(CancellationToken ct) =>
        backend is IChangeTrackingBackend tracking ? await tracking.GetChangeStampAsync(ct) : null;

    public HashSet<string> EnteredScope { get; } = new(StringComparer.Ordinal);

    public async ValueTask<List<KeyValuePair<string, byte[]>>?> ChangedSinceAsync(long stamp, IEnumerable<string> alsoKeys, CancellationToken ct)
    {
        if (backend is not IChangeTrackingBackend tracking) return null;
        var keys = await tracking.GetChangedKeysAsync(stamp, ct);
        if (keys is null) return null;
        var values = new List<KeyValuePair<string, byte[]>>(keys.Count);
        foreach (var key in keys.Concat(alsoKeys).Distinct(StringComparer.Ordinal))
            if (await GetAsync(key, ct) is { } encoded) values.Add(KeyValuePair.Create(key, encoded));
        return values;
    }

    public async ValueTask<byte[]?> GetAsync(string key, CancellationToken ct)
    {
        var v = await backend.GetAsync(key, ct);
        return v.Found ? codec.Encode(v.Value!) : null;
    }

    public async ValueTask<bool> SetIfCurrentAsync(string key, byte[]? expected, byte[] value, CancellationToken ct)
    {
        var decoded = codec.Decode(value);
        if (backend is IConditionalValueBackend<T> conditional)
            return await conditional.SetIfCurrentAsync(key, expected is null ? default : codec.Decode(expected), expected is not null, decoded, ct);
        await backend.SetAsync(key, decoded, ct);
        return true;
    }

    public async ValueTask SetAsync(string key, byte[] value, CancellationToken ct) => await backend.SetAsync(key, codec.Decode(value), ct);

    public bool CanRemove => backend is IDeletableValueBackend<T>;

    public async ValueTask<bool> RemoveIfCurrentAsync(string key, byte[] expected, CancellationToken ct) =>
        backend is IDeletableValueBackend<T> deletable && await deletable.DeleteIfCurrentAsync(key, codec.Decode(expected), ct);

    public FSharpFunc<FSharpOption<byte[]>, FSharpFunc<byte[], FSharpFunc<byte[], FSharpResult<MergeOutcome, string>>>> Merge =>
        FuncConvert.FromFunc<FSharpOption<byte[]>, byte[], byte[], FSharpResult<MergeOutcome, string>>(MergeBytes);

    private CollectionFunctions? _functions;

    public CollectionFunctions Functions => _functions ??= new CollectionFunctions(Merge,
        codec is IByteExactCodec
            ? FuncConvert.FromFunc<byte[], FSharpResult<byte[], string>>(FSharpResult<byte[], string>.NewOk)
            : FuncConvert.FromFunc<byte[], FSharpResult<byte[], string>>(Canonical));

    /// <summary>encode(decode(remote)): the bytes this device's codec writes for the value a peer wrote.</summary>
    private FSharpResult<byte[], string> Canonical(byte[] remote)
    {
        T value;
        try { value = codec.Decode(remote); }
        catch (Exception e) { return FSharpResult<byte[], string>.NewError("decode: " + e.Message); }
        try { return FSharpResult<byte[], string>.NewOk(codec.Encode(value)); }
        catch (Exception e) { return FSharpResult<byte[], string>.NewError("encode the decoded value: " + e.Message); }
    }

    private FSharpResult<MergeOutcome, string> MergeBytes(FSharpOption<byte[]>? mergeBase, byte[] local, byte[] remote)
    {
        // Keys are not part of the byte-level merge; the typed merge gets them through MergeContext.
        try
        {
            T? baseValue = default;
            var hasBase = mergeBase is not null;
            if (hasBase)
            {
                try { baseValue = codec.Decode(mergeBase!.Value); }
                catch (Exception e) { return FSharpResult<MergeOutcome, string>.NewError("decode merge base: " + e.Message); }
            }
            T localValue, remoteValue;
            try { localValue = codec.Decode(local); }
            catch (Exception e) { return FSharpResult<MergeOutcome, string>.NewError("decode merge local: " + e.Message); }
            try { remoteValue = codec.Decode(remote); }
            catch (Exception e) { return FSharpResult<MergeOutcome, string>.NewError("decode merge remote: " + e.Message); }
            var result = merge(new MergeInput<T>(MergeContext.Key ?? "", hasBase, baseValue, localValue, remoteValue));
            if (!result.IsResolved) return FSharpResult<MergeOutcome, string>.NewOk(MergeOutcome.Unresolved);
            byte[] encoded;
            try { encoded = codec.Encode(result.Value!); }
            catch (Exception e) { return FSharpResult<MergeOutcome, string>.NewError("encode merged value: " + e.Message); }
            return FSharpResult<MergeOutcome, string>.NewOk(MergeOutcome.NewMerged(encoded));
        }
        catch (Exception e)
        {
            return FSharpResult<MergeOutcome, string>.NewError("merge: " + e.Message);
        }
    }
}

/// <summary>The key a merge is running for (the core's byte-level merge does not carry it).</summary>
internal static class MergeContext
{
    private static readonly AsyncLocal<string?> Current = new();

    public static string? Key
    {
        get => Current.Value;
        set => Current.Value = value;
    }
}
