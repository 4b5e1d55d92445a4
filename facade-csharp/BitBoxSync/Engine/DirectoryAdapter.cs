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

    /// <summary>The namespace.</summary>
    internal string NamespaceId => namespaceId;

    /// <summary>This device's writer tag (the first 8 bytes of its key ID).</summary>
    internal string Writer => writer;

    /// <summary>Each directory collection's delete policy (every device of a collection must use the same).</summary>
    private readonly Dictionary<string, Core.DeletePolicy> _policies = new(StringComparer.Ordinal);

    /// <summary>The delete policy of a directory collection (EditWins for an unknown one).</summary>
    internal Core.DeletePolicy PolicyOf(string collection) =>
        _policies.TryGetValue(collection, out var p) ? p : Core.DeletePolicy.EditWins;

    /// <summary>Registers a directory collection with its delete policy.</summary>
    internal void Add(string collection, Core.DeletePolicy policy)
    {
        Collections.Add(collection);
        _policies[collection] = policy;
    }

    /// <summary>Whether the collection keeps a directory.</summary>
    internal bool Holds(string collection) => Collections.Contains(collection);

    /// <summary>
    /// Per directory collection, per key: this device's own entry (rows whose <c>DirGeneration</c> is
    /// set), read once from the store and kept current by <see cref="RowsSaved"/>.
    /// </summary>
    private Dictionary<string, Dictionary<string, (ulong Generation, bool Deleted, ulong Seen, bool Pending)>>? _own;

    private async Task<Dictionary<string, Dictionary<string, (ulong Generation, bool Deleted, ulong Seen, bool Pending)>>> OwnAsync(CancellationToken ct)
    {
        if (_own is { } known) return known;
        var own = new Dictionary<string, Dictionary<string, (ulong, bool, ulong, bool)>>(StringComparer.Ordinal);
        foreach (var row in await engine.Store.ListNamespaceItemsAsync(engine.KeyId, namespaceId, ct))
            if (row.DirGeneration > 0 && Collections.Contains(row.Collection))
                OwnOf(own, row.Collection)[row.Key] = (row.DirGeneration, row.Deleted, row.DirSeen, row.Deleted && row.Dirty);
        return _own = own;
    }

    private static Dictionary<string, (ulong, bool, ulong, bool)> OwnOf(Dictionary<string, Dictionary<string, (ulong, bool, ulong, bool)>> own, string collection)
    {
        if (!own.TryGetValue(collection, out var map)) own[collection] = map = new(StringComparer.Ordinal);
        return map;
    }

    /// <summary>Rows of the namespace were saved: own entries that changed make the local buckets derive anew.</summary>
    internal void RowsSaved(IEnumerable<Storage.ItemRecord> rows)
    {
        foreach (var row in rows)
        {
            if (row.Collection == Name)
            {
                Invalidate();
                continue;
            }
            if (_own is null || !Collections.Contains(row.Collection)) continue;
            var map = OwnOf(_own, row.Collection);
            var had = map.TryGetValue(row.Key, out var before);
            if (row.DirGeneration > 0)
            {
                var now = (row.DirGeneration, row.Deleted, row.DirSeen, row.Deleted && row.Dirty);
                if (had && before == now) continue;
                map[row.Key] = now;
            }
            else if (!had || !map.Remove(row.Key)) continue;
            _local = null;
        }
    }

    private DirEntry OwnEntry((ulong Generation, bool Deleted, ulong Seen, bool Pending) own) => new(own.Generation,
        own.Deleted ? KeyState.Deleted : KeyState.Live, own.Seen, writer);

    /// <summary>The entry this device publishes for one key of a directory collection (null when none).</summary>
    internal async Task<DirEntry?> PublishedEntryAsync(string collection, string key, bool appHoldsKey, CancellationToken ct)
    {
        var (synced, _) = await SyncedAsync(ct);
        var own = await OwnAsync(ct);
        var s = synced.TryGetValue(collection, out var entries) ? entries.TryFind(key) : null;
        var o = own.TryGetValue(collection, out var mine) && mine.TryGetValue(key, out var entry) ? FSharpOption<DirEntry>.Some(OwnEntry(entry)) : null;
        var published = Deletes.publishedEntry(PolicyOf(collection), writer, s, o, appHoldsKey);
        return published?.Value;
    }

    /// <summary>The keys of a directory collection deleted on this device whose deletion the synced directory does not hold yet.</summary>
    internal async Task<IEnumerable<string>> PendingDeletionKeysAsync(string collection, CancellationToken ct)
    {
        var (synced, _) = await SyncedAsync(ct);
        var own = await OwnAsync(ct);
        if (!own.TryGetValue(collection, out var mine) || mine.Count == 0) return [];
        var entries = synced.TryGetValue(collection, out var e) ? e : MapModule.Empty<string, DirEntry>();
        var policy = PolicyOf(collection);
        // A deletion whose overwrite is pending stays in scope until the overwrite is done (its 412 needs the newer version).
        return mine.Where(kv => kv.Value.Deleted && (kv.Value.Pending || Deletes.contributes(policy, entries.TryFind(kv.Key), OwnEntry(kv.Value))))
            .Select(kv => kv.Key).ToList();
    }

    /// <summary>Deletions made or adopted on this device that the synced directory does not hold yet.</summary>
    internal int PendingDeletions { get; private set; }

    /// <summary>
    /// The keys of a directory collection whose synced entry may change what this device holds: a
    /// deletion that beats the row's own entry (or a key without one), or a live entry that beats
    /// the row's own deletion. Everything else is settled without reading a row or a value.
    /// </summary>
    internal async Task<List<(string Key, DirEntry Synced)>> UnsettledAsync(string collection, CancellationToken ct)
    {
        var (synced, _) = await SyncedAsync(ct);
        var own = await OwnAsync(ct);
        var result = new List<(string, DirEntry)>();
        if (!synced.TryGetValue(collection, out var entries)) return result;
        own.TryGetValue(collection, out var mine);
        var policy = PolicyOf(collection);
        foreach (var kv in entries)
        {
            var s = kv.Value;
            DirEntry? ownEntry = mine is not null && mine.TryGetValue(kv.Key, out var o) ? OwnEntry(o) : null;
            var unsettled = s.State.IsDeleted
                ? ownEntry is null || (ownEntry.State.IsLive && KeyDirectory.supersedes(policy, s, ownEntry)) || (ownEntry.State.IsDeleted && s.Generation > ownEntry.Generation)
                : ownEntry is not null && ownEntry.State.IsDeleted && KeyDirectory.supersedes(policy, s, ownEntry);
            if (unsettled) result.Add((kv.Key, s));
        }
        return result;
    }

    private IReadOnlyList<(string Collection, string[] Keys)> _collectionKeys = [];
    private NamespaceKeys? _keys;

    /// <summary>The local buckets as last derived (null: derive again). Valid until the keys or a synced bucket change.</summary>
    private Dictionary<string, Dictionary<int, byte[]>>? _local;

    /// <summary>The synced directory as last read (null: read again). Valid until a bucket row is saved or written.</summary>
    private (Dictionary<string, DirMap> Entries, Dictionary<(string, int), byte[]> Unreadable)? _synced;

    /// <summary>Set by the pass before reading buckets: each directory collection's keys (the local buckets are derived again only when they changed).</summary>
    internal IReadOnlyList<(string Collection, string[] Keys)> CollectionKeys
    {
        get => _collectionKeys;
        set
        {
            if (!Same(_collectionKeys, value)) _local = null;
            _collectionKeys = value;
        }
    }

    private static bool Same(IReadOnlyList<(string Collection, string[] Keys)> a, IReadOnlyList<(string Collection, string[] Keys)> b)
    {
        if (a.Count != b.Count) return false;
        for (var i = 0; i < a.Count; i++)
            if (a[i].Collection != b[i].Collection || (!ReferenceEquals(a[i].Keys, b[i].Keys) && !a[i].Keys.AsSpan().SequenceEqual(b[i].Keys)))
                return false;
        return true;
    }

    /// <summary>Set by the pass: the namespace keys (item IDs choose the buckets; a namespace's DEK never changes).</summary>
    internal NamespaceKeys? Keys
    {
        get => _keys;
        set
        {
            if (_keys is null) _local = null;
            _keys = value;
        }
    }

    /// <summary>The directory collections of the namespace (by name).</summary>
    private SortedSet<string> Collections { get; } = new(StringComparer.Ordinal);

    /// <summary>The directory collections of the namespace, in ordinal order.</summary>
    internal IReadOnlyCollection<string> CollectionNames => Collections;

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
        var all = await LocalBucketsAsync(ct);
        return all.TryGetValue(collection, out var buckets) && buckets.TryGetValue(bucket, out var value) ? value : null;
    }

    /// <summary>
    /// The synced entries of every directory collection (for the scope), and the buckets whose
    /// synced value this engine cannot read (another layout version): those are left exactly as
    /// they are, never rewritten from what this engine understands.
    /// </summary>
    internal async Task<(Dictionary<string, DirMap> Entries, Dictionary<(string, int), byte[]> Unreadable)> SyncedAsync(CancellationToken ct)
    {
        if (_synced is { } cached) return cached;
        var synced = new Dictionary<string, DirMap>(StringComparer.Ordinal);
        var unreadable = new Dictionary<(string, int), byte[]>();
        foreach (var collection in Collections)
        {
            var known = MapModule.Empty<string, DirEntry>();
            for (var bucket = 0; bucket < KeyDirectory.Buckets; bucket++)
            {
                var row = await engine.Store.GetItemByLogicalKeyAsync(engine.KeyId, namespaceId, Name, KeyDirectory.bucketKey(collection, bucket), ct);
                if (row?.BaseValue is not { Length: > 0 } baseValue) continue;
                var decoded = KeyDirectory.decode(baseValue);
                if (decoded.IsOk) known = KeyDirectory.merge(PolicyOf(collection), known, decoded.ResultValue);
                else unreadable[(collection, bucket)] = baseValue;
            }
            synced[collection] = known;
        }
        return (_synced = (synced, unreadable)).Value;
    }

    /// <summary>Per collection, per bucket: the local value (synced entries joined with the collection's current keys).</summary>
    private async Task<Dictionary<string, Dictionary<int, byte[]>>> LocalBucketsAsync(CancellationToken ct)
    {
        if (_local is { } cached) return cached;
        var result = new Dictionary<string, Dictionary<int, byte[]>>(StringComparer.Ordinal);
        if (Keys is null) return result;
        var (synced, unreadable) = await SyncedAsync(ct);
        var own = await OwnAsync(ct);
        var pending = 0;
        foreach (var (collection, keys) in CollectionKeys)
        {
            if (!synced.TryGetValue(collection, out var known)) continue;
            var mine = own.TryGetValue(collection, out var m0) ? m0 : [];
            // A deletion whose overwriting value is not uploaded yet is counted, not published.
            var ownEntries = new List<Tuple<string, DirEntry>>();
            foreach (var (key, own1) in mine)
            {
                var entry = OwnEntry(own1);
                if (entry.State.IsDeleted && Deletes.contributes(PolicyOf(collection), known.TryFind(key), entry)) pending++;
                if (!own1.Pending) ownEntries.Add(Tuple.Create(key, entry));
            }
            var entries = Deletes.published(PolicyOf(collection), writer, known, ownEntries, keys);
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
            foreach (var ((c, bucket), raw) in unreadable)
                if (c == collection) encoded[bucket] = raw;
            result[collection] = encoded;
        }
        _generation++;
        PendingDeletions = pending;
        return _local = result;
    }

    private static (string Collection, int Bucket) Parse(string key) =>
        (key[3..], Convert.ToInt32(key[..2], 16));

    /// <summary>A synced bucket was saved: derive the local buckets again at the next read.</summary>
    internal void Invalidate()
    {
        _local = null;
        _synced = null;
        FatesSettled = false;
    }

    /// <summary>Engine state: the deletes step found nothing unsettled since the synced directory was last read.</summary>
    internal bool FatesSettled { get; set; }

    /// <summary>Accepted: the directory's local value is derived from the synced one, which the engine saves next.</summary>
    public ValueTask<bool> SetIfCurrentAsync(string key, byte[]? expected, byte[] value, CancellationToken ct)
    {
        Invalidate();
        return ValueTask.FromResult(true);
    }

    public ValueTask SetAsync(string key, byte[] value, CancellationToken ct)
    {
        Invalidate();
        return ValueTask.CompletedTask;
    }

    /// <summary>Directory buckets are never deleted.</summary>
    public bool CanRemove => false;

    public byte[]? DeletedValue => null;

    public ValueTask<bool> RemoveIfCurrentAsync(string key, byte[] expected, CancellationToken ct) => ValueTask.FromResult(false);

    public FSharpFunc<FSharpOption<byte[]>, FSharpFunc<byte[], FSharpFunc<byte[], FSharpResult<MergeOutcome, string>>>> Merge =>
        FuncConvert.FromFunc<FSharpOption<byte[]>, byte[], byte[], FSharpResult<MergeOutcome, string>>(Join);

    private CollectionFunctions? _functions;

    public CollectionFunctions Functions => _functions ??= new CollectionFunctions(Merge,
        FuncConvert.FromFunc<byte[], FSharpResult<byte[], string>>(FSharpResult<byte[], string>.NewOk));

    /// <summary>The directory's merge: the join of local and remote (the base plays no part), under the bucket's collection's policy.</summary>
    private FSharpResult<MergeOutcome, string> Join(FSharpOption<byte[]>? mergeBase, byte[] local, byte[] remote)
    {
        var policy = MergeContext.Key is { Length: > 3 } bucketKey ? PolicyOf(bucketKey[3..]) : Core.DeletePolicy.EditWins;
        var l = KeyDirectory.decode(local);
        var r = KeyDirectory.decode(remote);
        if (l.IsError) return FSharpResult<MergeOutcome, string>.NewError("local directory bucket: " + l.ErrorValue);
        if (r.IsError) return FSharpResult<MergeOutcome, string>.NewError("remote directory bucket: " + r.ErrorValue);
        var merged = KeyDirectory.encode(KeyDirectory.merge(policy, l.ResultValue, r.ResultValue));
        return merged.IsOk
            ? FSharpResult<MergeOutcome, string>.NewOk(MergeOutcome.NewMerged(merged.ResultValue))
            : FSharpResult<MergeOutcome, string>.NewError(merged.ErrorValue);
    }

    /// <summary>Moves each time the local buckets are derived anew (so an unchanged directory is not reconciled again).</summary>
    private long _generation;

    /// <summary>The local buckets' generation (derived first if needed): the pass skips an unchanged directory.</summary>
    public async ValueTask<long?> ChangeStampAsync(CancellationToken ct)
    {
        await LocalBucketsAsync(ct);
        return _generation;
    }

    public ValueTask<List<KeyValuePair<string, byte[]>>?> ChangedSinceAsync(long stamp, IEnumerable<string> alsoKeys, CancellationToken ct) =>
        ValueTask.FromResult<List<KeyValuePair<string, byte[]>>?>(null);

    public HashSet<string> EnteredScope { get; } = new(StringComparer.Ordinal);

    public long? ReconciledStamp { get; set; }

    public (long Stamp, string[] Keys)? KeysAtStamp { get; set; }
}
