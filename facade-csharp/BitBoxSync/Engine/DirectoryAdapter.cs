using BitBoxSync.Core;
using BitBoxSync.Protocol;
using Microsoft.FSharp.Collections;
using DirMap = Microsoft.FSharp.Collections.FSharpMap<string, BitBoxSync.Core.DirEntry>;
using Microsoft.FSharp.Core;

namespace BitBoxSync;

/// <summary>
/// The key directory of a namespace's directory collections (docs/protocol.md §17) as an
/// engine-owned collection: bucket <c>b</c> of collection <c>C</c> is the item with key
/// <c>"bb:C"</c> in the reserved collection. Nothing of it is stored outside the sync metadata: a
/// bucket's local value is derived on every read from its synced value (the row's base) and the
/// keys the collection holds now (a key without a live entry is written into it), so the pass's
/// snapshot, flush, download and apply carry the directory like any collection, and its merge is
/// the directory's join (never a conflict, never the app's merge).
/// </summary>
internal sealed class DirectoryAdapter(SyncEngine engine, string namespaceId, string writer) : ICollectionAdapter
{
    public string Name => KeyDirectory.ReservedCollection;

    /// <summary>The delete policy of the namespace's directory collections.</summary>
    public DeletePolicy Policy { get; } = DeletePolicy.EditWins;

    /// <summary>Set by the pass before reading buckets: each directory collection's keys and the namespace keys.</summary>
    internal IReadOnlyList<(string Collection, string[] Keys)> CollectionKeys { get; set; } = [];

    internal NamespaceKeys? Keys { get; set; }

    /// <summary>The directory collections of the namespace (by name).</summary>
    internal SortedSet<string> Collections { get; } = new(StringComparer.Ordinal);

    public ValueTask<IReadOnlyCollection<string>> KeysAsync(CancellationToken ct) =>
        ValueTask.FromResult<IReadOnlyCollection<string>>(
            [.. Collections.SelectMany(c => Enumerable.Range(0, KeyDirectory.Buckets).Select(b => KeyDirectory.bucketKey(c, b)))]);

    public async ValueTask<List<KeyValuePair<string, byte[]>>> SnapshotAsync(CancellationToken ct)
    {
        var values = new List<KeyValuePair<string, byte[]>>();
        foreach (var (collection, buckets) in await LocalBucketsAsync(ct))
            foreach (var (bucket, value) in buckets)
                values.Add(KeyValuePair.Create(KeyDirectory.bucketKey(collection, bucket), value));
        return values;
    }

    public async ValueTask<byte[]?> GetAsync(string key, CancellationToken ct)
    {
        var (collection, bucket) = Parse(key);
        var all = await LocalBucketsAsync(ct, collection);
        return all.TryGetValue(collection, out var buckets) && buckets.TryGetValue(bucket, out var value) ? value : null;
    }

    /// <summary>The synced entries of every directory collection's live keys (for the scope).</summary>
    internal async Task<Dictionary<string, DirMap>> SyncedAsync(CancellationToken ct, string? only = null)
    {
        var synced = new Dictionary<string, DirMap>(StringComparer.Ordinal);
        foreach (var c in Collections) synced[c] = MapModule.Empty<string, DirEntry>();
        var rows = await engine.Store.ListNamespaceItemsAsync(engine.KeyId, namespaceId, ct);
        foreach (var row in rows)
        {
            if (row.Collection != Name || row.BaseValue is not { Length: > 0 } baseValue) continue;
            var (collection, _) = Parse(row.Key);
            if (!synced.TryGetValue(collection, out var known) || (only is not null && collection != only)) continue;
            var decoded = KeyDirectory.decode(baseValue);
            if (decoded.IsOk) synced[collection] = KeyDirectory.merge(Policy, known, decoded.ResultValue);
        }
        return synced;
    }

    /// <summary>Per collection, per bucket: the local value (synced entries joined with the collection's current keys).</summary>
    private async Task<Dictionary<string, Dictionary<int, byte[]>>> LocalBucketsAsync(CancellationToken ct, string? only = null)
    {
        var result = new Dictionary<string, Dictionary<int, byte[]>>(StringComparer.Ordinal);
        if (Keys is null) return result;
        var synced = await SyncedAsync(ct, only);
        foreach (var (collection, keys) in CollectionKeys)
        {
            if (only is not null && collection != only) continue;
            if (!synced.TryGetValue(collection, out var known)) continue;
            var entries = known;
            foreach (var key in keys)
            {
                if (System.Text.Encoding.UTF8.GetByteCount(key) > KeyDirectory.MaxKeyBytes) continue; // too long to list: synced through Keys() only
                var current = entries.TryFind(key);
                if (current is not null && current.Value.State.IsLive) continue;
                entries = entries.Add(key, KeyDirectory.written(writer, current));
            }
            var buckets = new Dictionary<int, DirMap>();
            foreach (var kv in entries)
            {
                var bucket = KeyDirectory.bucketOf(LogicalKey.itemId(Keys, collection, kv.Key));
                buckets[bucket] = (buckets.TryGetValue(bucket, out var m) ? m : MapModule.Empty<string, DirEntry>()).Add(kv.Key, kv.Value);
            }
            var encoded = new Dictionary<int, byte[]>();
            foreach (var (bucket, map) in buckets)
            {
                var bytes = KeyDirectory.encode(map);
                if (bytes.IsOk) encoded[bucket] = bytes.ResultValue;
            }
            result[collection] = encoded;
        }
        return result;
    }

    private static (string Collection, int Bucket) Parse(string key) =>
        (key[3..], Convert.ToInt32(key[..2], 16));

    /// <summary>Accepted: the directory's local value is derived from the synced one, nothing to write.</summary>
    public ValueTask<bool> SetIfCurrentAsync(string key, byte[]? expected, byte[] value, CancellationToken ct) => ValueTask.FromResult(true);

    public ValueTask SetAsync(string key, byte[] value, CancellationToken ct) => ValueTask.CompletedTask;

    public FSharpFunc<FSharpOption<byte[]>, FSharpFunc<byte[], FSharpFunc<byte[], FSharpResult<MergeOutcome, string>>>> Merge =>
        FuncConvert.FromFunc<FSharpOption<byte[]>, byte[], byte[], FSharpResult<MergeOutcome, string>>(Join);

    private CollectionFunctions? _functions;

    public CollectionFunctions Functions => _functions ??= new CollectionFunctions(Merge,
        FuncConvert.FromFunc<byte[], FSharpResult<byte[], string>>(FSharpResult<byte[], string>.NewOk));

    /// <summary>The directory's merge: the join of local and remote (the base plays no part).</summary>
    private FSharpResult<MergeOutcome, string> Join(FSharpOption<byte[]>? mergeBase, byte[] local, byte[] remote)
    {
        var l = KeyDirectory.decode(local);
        var r = KeyDirectory.decode(remote);
        if (l.IsError) return FSharpResult<MergeOutcome, string>.NewError("local directory bucket: " + l.ErrorValue);
        if (r.IsError) return FSharpResult<MergeOutcome, string>.NewError("remote directory bucket: " + r.ErrorValue);
        var merged = KeyDirectory.encode(KeyDirectory.merge(Policy, l.ResultValue, r.ResultValue));
        return merged.IsOk
            ? FSharpResult<MergeOutcome, string>.NewOk(MergeOutcome.NewMerged(merged.ResultValue))
            : FSharpResult<MergeOutcome, string>.NewError(merged.ErrorValue);
    }

    public ValueTask<long?> ChangeStampAsync(CancellationToken ct) => ValueTask.FromResult<long?>(null);

    public ValueTask<List<KeyValuePair<string, byte[]>>?> ChangedSinceAsync(long stamp, IEnumerable<string> alsoKeys, CancellationToken ct) =>
        ValueTask.FromResult<List<KeyValuePair<string, byte[]>>?>(null);

    public HashSet<string> EnteredScope { get; } = new(StringComparer.Ordinal);

    public long? ReconciledStamp { get; set; }

    public (long Stamp, string[] Keys)? KeysAtStamp { get; set; }
}
