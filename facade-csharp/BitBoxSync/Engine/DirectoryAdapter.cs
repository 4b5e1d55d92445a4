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
/// bucket's local value is derived from its synced value (the row's base), this device's own
/// entries (kept with the item rows) and the keys the collection holds (<c>Deletes.published</c>),
/// so the pass's snapshot, flush, download and apply carry the directory like any collection, and
/// its merge is the directory's join (never a conflict, never the app's merge). Everything is kept
/// per bucket: a saved bucket or a changed own entry derives only its bucket again, so applying many
/// buckets costs each bucket once.
/// </summary>
internal sealed class DirectoryAdapter(SyncEngine engine, string namespaceId, string writer) : ICollectionAdapter
{
    public string Name => KeyDirectory.ReservedCollection;

    /// <summary>The namespace.</summary>
    internal string NamespaceId => namespaceId;

    /// <summary>This device's writer tag (the first 8 bytes of its key ID).</summary>
    internal string Writer => writer;

    /// <summary>Each directory collection's delete policy (every device of a collection must use the same).</summary>
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, Core.DeletePolicy> _policies = new(StringComparer.Ordinal);

    /// <summary>The delete policy of a directory collection (EditWins for an unknown one).</summary>
    internal Core.DeletePolicy PolicyOf(string collection) =>
        _policies.TryGetValue(collection, out var p) ? p : Core.DeletePolicy.EditWins;

    /// <summary>Registers a directory collection with its delete policy.</summary>
    internal void Add(string collection, Core.DeletePolicy policy)
    {
        // Collections are opened by the app outside the sync lock: the pass sees an immutable list,
        // replaced here, and reloads the stored state (with the new collection's own entries) at its
        // next use; the new collection's leftover decisions are looked at again.
        _policies[collection] = policy;
        lock (_policies)
            _names = [.. _names.Append(collection).Distinct().Order(StringComparer.Ordinal)];
        _reload = true;
    }

    /// <summary>The directory collections, in ordinal order (replaced, never changed in place).</summary>
    private volatile string[] _names = [];

    /// <summary>A collection was added: read the stored state again at the next use.</summary>
    private volatile bool _reload;

    /// <summary>Whether the collection keeps a directory.</summary>
    internal bool Holds(string collection) => _names.Contains(collection);

    /// <summary>The directory collections of the namespace, in ordinal order.</summary>
    internal IReadOnlyCollection<string> CollectionNames => _names;

    private NamespaceKeys? _keys;

    /// <summary>Set by the pass: the namespace keys (item IDs choose the buckets; a namespace's DEK never changes).</summary>
    internal NamespaceKeys? Keys
    {
        get => _keys;
        set
        {
            if (_keys is null && value is not null) Changed();
            _keys = value;
        }
    }

    private IReadOnlyList<(string Collection, string[] Keys)> _collectionKeys = [];

    /// <summary>The app's keys of each directory collection, grouped by bucket (null: group again).</summary>
    private Dictionary<(string, int), List<string>>? _appKeysByBucket;

    /// <summary>Set by the pass before reading buckets: each directory collection's keys (buckets are derived again only when they changed).</summary>
    internal IReadOnlyList<(string Collection, string[] Keys)> CollectionKeys
    {
        get => _collectionKeys;
        set
        {
            if (!SyncEngine.SameKeys(_collectionKeys, value))
            {
                _appKeysByBucket = null;
                _local.Clear();
                Changed();
            }
            _collectionKeys = value;
        }
    }

    /// <summary>The bucket of each key seen so far (one HMAC per key for the engine's lifetime).</summary>
    private readonly Dictionary<(string, string), int> _bucketOf = new();

    private int BucketOf(string collection, string key)
    {
        if (_bucketOf.TryGetValue((collection, key), out var b)) return b;
        b = KeyDirectory.bucketOf(LogicalKey.itemId(_keys!, collection, key));
        _bucketOf[(collection, key)] = b;
        return b;
    }

    // ------------------------------------------------------------------ what the store holds

    /// <summary>The synced (decoded) buckets and the unreadable ones (another layout version: left exactly as they are).</summary>
    private Dictionary<(string, int), DirMap>? _syncedBuckets;
    private readonly Dictionary<(string, int), byte[]> _unreadable = new();

    /// <summary>Per directory collection, per key: this device's own entry (rows whose <c>DirGeneration</c> is set).</summary>
    private Dictionary<string, Dictionary<string, (ulong Generation, bool Deleted, ulong Seen, bool Pending)>>? _own;

    /// <summary>Reads the synced buckets and the own entries once (one query); later saves keep them current.</summary>
    private async Task LoadAsync(CancellationToken ct)
    {
        if (_reload)
        {
            _reload = false;
            _syncedBuckets = null;
            _own = null;
            FatesSettled = false;
        }
        if (_syncedBuckets is not null && _own is not null) return;
        var synced = new Dictionary<(string, int), DirMap>();
        var own = new Dictionary<string, Dictionary<string, (ulong, bool, ulong, bool)>>(StringComparer.Ordinal);
        _unreadable.Clear();
        _syncedRaw.Clear();
        foreach (var row in await engine.Store.ListNamespaceItemsAsync(engine.KeyId, namespaceId, ct))
        {
            if (row.Collection == Name) SyncedBucket(synced, row);
            else if (row.DirGeneration > 0 && _names.Contains(row.Collection))
                OwnOf(own, row.Collection)[row.Key] = OwnOf(row);
        }
        _syncedBuckets = synced;
        _own = own;
        _merged = null;
        _local.Clear();
        Changed();
    }

    /// <summary>Each bucket row's base as last seen (to tell a changed synced value from a queued upload).</summary>
    private readonly Dictionary<string, byte[]> _syncedRaw = new(StringComparer.Ordinal);

    private void SyncedBucket(Dictionary<(string, int), DirMap> synced, Storage.ItemRecord row)
    {
        if (KeyDirectory.tryParseBucketKey(row.Key) is not { } parsed) return;
        _syncedRaw[row.Key] = row.BaseValue ?? [];
        var at = (parsed.Value.Item1, parsed.Value.Item2);
        synced.Remove(at);
        _unreadable.Remove(at);
        if (row.BaseValue is not { Length: > 0 } baseValue) return;
        var decoded = KeyDirectory.decode(baseValue);
        if (decoded.IsOk) synced[at] = decoded.ResultValue;
        else _unreadable[at] = baseValue;
    }

    private static (ulong, bool, ulong, bool) OwnOf(Storage.ItemRecord row) => (row.DirGeneration, row.Deleted, row.DirSeen, row.Deleted && row.Dirty);

    private static Dictionary<string, (ulong, bool, ulong, bool)> OwnOf(Dictionary<string, Dictionary<string, (ulong, bool, ulong, bool)>> own, string collection)
    {
        if (!own.TryGetValue(collection, out var map)) own[collection] = map = new(StringComparer.Ordinal);
        return map;
    }

    /// <summary>Rows of the namespace were saved: a bucket's synced value or an own entry changed; only its bucket derives anew.</summary>
    internal void RowsSaved(IEnumerable<Storage.ItemRecord> rows)
    {
        foreach (var row in rows)
        {
            if (row.Collection == Name)
            {
                if (_syncedBuckets is null) continue;
                // A bucket queued for upload keeps its base: nothing the directory is derived from changed.
                if (_syncedRaw.TryGetValue(row.Key, out var raw) && (row.BaseValue ?? []).AsSpan().SequenceEqual(raw)) continue;
                SyncedBucket(_syncedBuckets, row);
                if (KeyDirectory.tryParseBucketKey(row.Key) is { } bucket) _local.Remove((bucket.Value.Item1, bucket.Value.Item2));
                _merged = null;
                FatesSettled = false;
                Changed();
                continue;
            }
            if (_own is null || !_names.Contains(row.Collection)) continue;
            var map = OwnOf(_own, row.Collection);
            var had = map.TryGetValue(row.Key, out var before);
            if (row.DirGeneration > 0)
            {
                var now = OwnOf(row);
                if (had && before == now) continue;
                map[row.Key] = now;
            }
            else if (!had || !map.Remove(row.Key)) continue;
            if (_keys is not null) _local.Remove((row.Collection, BucketOf(row.Collection, row.Key)));
            else _local.Clear();
            Changed();
        }
    }

    private DirEntry OwnEntry((ulong Generation, bool Deleted, ulong Seen, bool Pending) own) => new(own.Generation,
        own.Deleted ? KeyState.Deleted : KeyState.Live, own.Seen, writer);

    // ------------------------------------------------------------------ what the pass asks

    /// <summary>The synced entries of each directory collection, all buckets merged (for the scope), recomputed only after a bucket changed.</summary>
    private Dictionary<string, DirMap>? _merged;

    /// <summary>
    /// The synced entries of every directory collection (for the scope), and the buckets whose
    /// synced value this engine cannot read (another layout version): those are left exactly as
    /// they are, never rewritten from what this engine understands.
    /// </summary>
    internal async Task<(Dictionary<string, DirMap> Entries, Dictionary<(string, int), byte[]> Unreadable)> SyncedAsync(CancellationToken ct)
    {
        await LoadAsync(ct);
        if (_merged is null)
        {
            var merged = new Dictionary<string, DirMap>(StringComparer.Ordinal);
            foreach (var collection in _names) merged[collection] = MapModule.Empty<string, DirEntry>();
            foreach (var ((collection, _), entries) in _syncedBuckets!)
                if (merged.TryGetValue(collection, out var known))
                    merged[collection] = known.IsEmpty ? entries : KeyDirectory.merge(PolicyOf(collection), known, entries);
            _merged = merged;
        }
        return (_merged, _unreadable);
    }

    private DirEntry? SyncedEntry(string collection, string key) =>
        _syncedBuckets!.TryGetValue((collection, BucketOf(collection, key)), out var bucket) && bucket.TryFind(key) is { } e ? e.Value : null;

    /// <summary>The synced entry of one key of a directory collection (null when none).</summary>
    internal async Task<DirEntry?> SyncedEntryAsync(string collection, string key, CancellationToken ct)
    {
        await LoadAsync(ct);
        return SyncedEntry(collection, key);
    }

    /// <summary>The entry this device publishes for one key of a directory collection (null when none).</summary>
    internal async Task<DirEntry?> PublishedEntryAsync(string collection, string key, bool appHoldsKey, CancellationToken ct)
    {
        await LoadAsync(ct);
        var s = SyncedEntry(collection, key);
        var o = _own!.TryGetValue(collection, out var mine) && mine.TryGetValue(key, out var entry) ? FSharpOption<DirEntry>.Some(OwnEntry(entry)) : null;
        var published = Deletes.publishedEntry(PolicyOf(collection), writer, s is null ? null : FSharpOption<DirEntry>.Some(s), o, appHoldsKey);
        return published?.Value;
    }

    /// <summary>The keys of a directory collection deleted on this device whose deletion the synced directory does not hold yet.</summary>
    internal async Task<IEnumerable<string>> PendingDeletionKeysAsync(string collection, CancellationToken ct)
    {
        await LoadAsync(ct);
        if (!_own!.TryGetValue(collection, out var mine) || mine.Count == 0) return [];
        var policy = PolicyOf(collection);
        // A deletion whose overwrite is pending stays in scope until the overwrite is done (its 412 needs the newer version).
        return mine.Where(kv => kv.Value.Deleted && (kv.Value.Pending || Contributes(policy, collection, kv.Key, kv.Value)))
            .Select(kv => kv.Key).ToList();
    }

    private bool Contributes(Core.DeletePolicy policy, string collection, string key, (ulong, bool, ulong, bool) own)
    {
        var s = SyncedEntry(collection, key);
        return Deletes.contributes(policy, s is null ? null : FSharpOption<DirEntry>.Some(s), OwnEntry(own));
    }

    /// <summary>Deletions made or adopted on this device that the synced directory does not hold yet.</summary>
    internal async Task<int> PendingDeletionsAsync(CancellationToken ct)
    {
        if (_keys is null) return 0;
        await LoadAsync(ct);
        var pending = 0;
        foreach (var (collection, mine) in _own!)
        {
            var policy = PolicyOf(collection);
            foreach (var (key, own) in mine)
                if (own.Deleted && Contributes(policy, collection, key, own)) pending++;
        }
        return pending;
    }

    /// <summary>
    /// The keys of a directory collection whose synced entry may change what this device holds: a
    /// deletion that beats the row's own entry (or a key without one), or a live entry that beats
    /// the row's own deletion. Everything else is settled without reading a row or a value.
    /// </summary>
    internal async Task<List<(string Key, DirEntry Synced)>> UnsettledAsync(string collection, CancellationToken ct)
    {
        var (synced, _) = await SyncedAsync(ct);
        var result = new List<(string, DirEntry)>();
        if (!synced.TryGetValue(collection, out var entries)) return result;
        _own!.TryGetValue(collection, out var mine);
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

    // ------------------------------------------------------------------ the collection the pass syncs

    public ValueTask<IReadOnlyCollection<string>> KeysAsync(CancellationToken ct) =>
        ValueTask.FromResult<IReadOnlyCollection<string>>(
            [.. _names.SelectMany(c => Enumerable.Range(0, KeyDirectory.Buckets).Select(b => KeyDirectory.bucketKey(c, b)))]);

    /// <summary>The derived local buckets (encoded), by collection and bucket; a missing one is derived on demand.</summary>
    private readonly Dictionary<(string, int), byte[]?> _local = new();

    /// <summary>The local value of one bucket (null: nothing to publish), derived if needed.</summary>
    private byte[]? LocalBucket(string collection, int bucket)
    {
        if (_local.TryGetValue((collection, bucket), out var cached)) return cached;
        byte[]? value;
        if (_unreadable.TryGetValue((collection, bucket), out var raw))
        {
            value = raw;
        }
        else
        {
            _appKeysByBucket ??= GroupAppKeys();
            var synced = _syncedBuckets!.TryGetValue((collection, bucket), out var m) ? m : MapModule.Empty<string, DirEntry>();
            var ownEntries = new List<Tuple<string, DirEntry>>();
            if (_own!.TryGetValue(collection, out var mine))
                foreach (var (key, own) in mine)
                    if (!own.Pending && BucketOf(collection, key) == bucket) // an overwrite still pending: not published yet
                        ownEntries.Add(Tuple.Create(key, OwnEntry(own)));
            var appKeys = _appKeysByBucket.TryGetValue((collection, bucket), out var keys) ? keys : [];
            var entries = Deletes.published(PolicyOf(collection), writer, synced, ownEntries, appKeys);
            value = null;
            if (!entries.IsEmpty && KeyDirectory.encode(entries) is { IsOk: true } encoded) value = encoded.ResultValue;
        }
        _local[(collection, bucket)] = value;
        return value;
    }

    private Dictionary<(string, int), List<string>> GroupAppKeys()
    {
        var grouped = new Dictionary<(string, int), List<string>>();
        foreach (var (collection, keys) in _collectionKeys)
            foreach (var key in keys)
            {
                var at = (collection, BucketOf(collection, key));
                if (!grouped.TryGetValue(at, out var list)) grouped[at] = list = [];
                list.Add(key);
            }
        return grouped;
    }

    public async ValueTask<List<KeyValuePair<string, byte[]>>> SnapshotAsync(CancellationToken ct)
    {
        var values = new List<KeyValuePair<string, byte[]>>();
        if (Keys is null) return values;
        await LoadAsync(ct);
        foreach (var (collection, _) in _collectionKeys)
            for (var bucket = 0; bucket < KeyDirectory.Buckets; bucket++)
                if (LocalBucket(collection, bucket) is { } value)
                    values.Add(KeyValuePair.Create(KeyDirectory.bucketKey(collection, bucket), value));
        return values;
    }

    public async ValueTask<byte[]?> GetAsync(string key, CancellationToken ct)
    {
        if (KeyDirectory.tryParseBucketKey(key) is not { } parsed) return null;
        var (collection, bucket) = parsed.Value;
        if (Keys is null || !_collectionKeys.Any(c => c.Collection == collection)) return null;
        await LoadAsync(ct);
        return LocalBucket(collection, bucket);
    }

    /// <summary>Engine state: the deletes step found nothing unsettled since the synced directory last changed.</summary>
    internal bool FatesSettled { get; set; }

    /// <summary>Accepted: the directory's local value is derived from the synced one, which the engine saves next.</summary>
    public ValueTask<bool> SetIfCurrentAsync(string key, byte[]? expected, byte[] value, CancellationToken ct) => ValueTask.FromResult(true);

    public ValueTask SetAsync(string key, byte[] value, CancellationToken ct) => ValueTask.CompletedTask;

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

    /// <summary>Moves each time something a bucket is derived from changes (so an unchanged directory is not reconciled again).</summary>
    private long _generation;

    private void Changed() => _generation++;

    /// <summary>The inputs' generation: the pass skips an unchanged directory.</summary>
    public async ValueTask<long?> ChangeStampAsync(CancellationToken ct)
    {
        if (Keys is not null) await LoadAsync(ct);
        return _generation;
    }

    public ValueTask<List<KeyValuePair<string, byte[]>>?> ChangedSinceAsync(long stamp, IEnumerable<string> alsoKeys, CancellationToken ct) =>
        ValueTask.FromResult<List<KeyValuePair<string, byte[]>>?>(null);

    public HashSet<string> EnteredScope { get; } = new(StringComparer.Ordinal);

    public long? ReconciledStamp { get; set; }

    public (long Stamp, string[] Keys)? KeysAtStamp { get; set; }
}
