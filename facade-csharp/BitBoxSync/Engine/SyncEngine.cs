using System.Collections.Concurrent;
using System.Threading.Channels;
using BitBoxSync.Core;
using BitBoxSync.Protocol;
using BitBoxSync.Storage;
using Microsoft.FSharp.Core;
using static BitBoxSync.StateMapping;

namespace BitBoxSync;

/// <summary>
/// The sync engine: keeps the app's collections in sync with a BitBoxSync server, end-to-end
/// encrypted. Every rule (what is dirty, what to download, how to merge, when a conflict is
/// recorded, what is a rollback) is decided by the pure core; this class executes the effects:
/// HTTP through <see cref="SyncClient"/>, crypto, the app's backends and the metadata store.
/// </summary>
public sealed partial class SyncEngine : IAsyncDisposable
{
    private readonly SyncClient _client;
    private readonly IIdentity _identity;
    private readonly IStore _store;
    private readonly SyncEngineOptions _options;
    private readonly TimeProvider _clock;
    private readonly KeyId _keyId;
    private readonly SemaphoreSlim _syncLock = new(1, 1);
    private readonly SemaphoreSlim _authLock = new(1, 1);
    private readonly ConcurrentDictionary<(string Namespace, string Name), ICollectionAdapter> _collections = new();
    private readonly Channel<bool> _wake = Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite });
    private readonly CancellationTokenSource _closing = new();
    private IdentityState _state;
    private int _running;
    private int _closed;

    private SyncEngine(SyncEngineOptions options, KeyId keyId, IdentityState state)
    {
        _options = options;
        _client = options.Client!;
        _identity = options.Identity!;
        _store = options.Store!;
        _clock = options.Clock;
        _keyId = keyId;
        _state = state;
        _idlePolling = options.IdlePolling;
        _log = (options.LoggerFactory ?? Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance).CreateLogger("BitBoxSync.Engine");
        SyncTelemetry.Track(this);
    }

    private readonly Microsoft.Extensions.Logging.ILogger _log;

    internal bool IsClosed => Volatile.Read(ref _closed) != 0;

    private readonly object _statusGate = new();
    private SyncStatus _status = new();
    private readonly ConcurrentDictionary<(string Namespace, string ItemId), QuarantinedItem> _quarantined = new();
    private readonly ConcurrentDictionary<(string Namespace, string ItemId), Core.QuarantinedItem> _quarantineState = new();
    private readonly ConcurrentDictionary<(string Namespace, string Collection, string Key), byte> _reportedOutsideScope = new();
    private readonly ConcurrentDictionary<string, (Dek Dek, List<(string Collection, string[] Keys)> Keys, ActiveScope Scope)> _scopeCache = new(StringComparer.Ordinal);

    /// <summary>The current sync status (a snapshot).</summary>
    public SyncStatus Status
    {
        get
        {
            lock (_statusGate) return _status;
        }
    }

    /// <summary>Raised (on the engine's thread) after <see cref="Status"/> changed. Handlers must be quick and must not throw.</summary>
    public event EventHandler<SyncStatus>? StatusChanged;

    /// <summary>Items currently set aside with their error.</summary>
    public IReadOnlyList<QuarantinedItem> QuarantinedItems =>
        _quarantined.Values.OrderBy(q => q.Since).ThenBy(q => q.ItemId, StringComparer.Ordinal).ToList();

    private void UpdateStatus(Func<SyncStatus, SyncStatus> change)
    {
        SyncStatus now;
        lock (_statusGate) now = _status = change(_status) with { Quarantined = _quarantined.Count };
        try
        {
            StatusChanged?.Invoke(this, now);
        }
        catch
        {
            // A failing handler must not break syncing.
        }
    }

    /// <summary>The identity's key ID (64 lowercase hex): all local state is partitioned by it.</summary>
    public string KeyId => _keyId.Wire;

    /// <summary>
    /// The engine's default event stream: a subscription (see <see cref="Subscribe"/>) created on
    /// first use of this property, holding at most <see cref="DefaultEventCapacity"/> events (the
    /// oldest are dropped when nobody reads: <see cref="DroppedEvents"/>). Events emitted before the
    /// first use are not in it: touch it right after <see cref="OpenAsync"/> if you need them all.
    /// For several readers (a UI and a logger), give each its own <see cref="Subscribe"/>.
    /// Completed when the engine is disposed.
    /// </summary>
    public ChannelReader<SyncEvent> Events => DefaultSubscription.Reader;

    /// <summary>Events dropped from <see cref="Events"/> because it was not read fast enough.</summary>
    public long DroppedEvents => _defaultSubscription?.Dropped ?? 0;

    /// <summary>The capacity of <see cref="Events"/> and of <see cref="Subscribe"/> by default.</summary>
    public const int DefaultEventCapacity = 1024;

    /// <summary>
    /// A new reader of every event from now on, bounded by <paramref name="capacity"/> (oldest
    /// dropped when full, counted in <see cref="SyncEventSubscription.Dropped"/>). Any number may
    /// exist; with none, the engine keeps no events at all. Dispose it when done.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="capacity"/> is below 1.</exception>
    public SyncEventSubscription Subscribe(int capacity = DefaultEventCapacity) => _hub.Add(capacity);

    private SyncEventSubscription DefaultSubscription
    {
        get
        {
            if (Volatile.Read(ref _defaultSubscription) is { } s) return s;
            var created = _hub.Add(DefaultEventCapacity);
            if (Interlocked.CompareExchange(ref _defaultSubscription, created, null) is { } existing)
            {
                created.Dispose();
                return existing;
            }
            return created;
        }
    }

    private SyncEventSubscription? _defaultSubscription;
    private readonly EventHub _hub = new();

    /// <summary>Validates the options and loads the identity's cached state. No network.</summary>
    /// <exception cref="ArgumentException">A required option is missing or a duration is invalid.</exception>
    public static async Task<SyncEngine> OpenAsync(SyncEngineOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Client is null) throw new ArgumentException("sync client is required", nameof(options));
        if (options.Identity is null) throw new ArgumentException("sync identity is required", nameof(options));
        if (options.Store is null) throw new ArgumentException("sync store is required", nameof(options));
        if (options.PollInterval <= TimeSpan.Zero) throw new ArgumentException("the poll interval must be positive", nameof(options));
        if (options.RefreshSkew < TimeSpan.Zero) throw new ArgumentException("the refresh skew must not be negative", nameof(options));
        if (options.MaxPollInterval is { } max && max < options.PollInterval)
            throw new ArgumentException("the maximum poll interval must not be below the poll interval", nameof(options));
        if (options.Identity.Kind != "keystore") throw new ArgumentException("only keystore identities are supported", nameof(options));

        var authKey = Bin.ofBytes<AuthPublicKeyKind>(options.Identity.AuthPublicKey.ToArray());
        if (authKey.IsError) throw new ArgumentException("the identity's auth public key: " + authKey.ErrorValue.Message, nameof(options));
        var keyId = KeyIds.ofAuthPublicKey(authKey.ResultValue);
        var stored = await options.Store.LoadIdentityAsync(keyId.Wire, cancellationToken);
        var state = stored is null
            ? new IdentityState(keyId, IdentityKind.Keystore, FSharpOption<string>.None, FSharpOption<DateTimeOffset>.None,
                FSharpOption<NamespaceId>.None, options.Clock.GetUtcNow())
            : ToCore(stored);
        return new SyncEngine(options, keyId, state);
    }

    private DateTimeOffset Now => _clock.GetUtcNow();

    private void ThrowIfClosed()
    {
        if (Volatile.Read(ref _closed) != 0) throw new SyncEngineClosedException();
    }

    internal void Emit(SyncEventType type, string? ns = null, string? collection = null, string? key = null, string? itemId = null, Exception? error = null,
        DateTimeOffset? tokenExpiresAt = null)
    {
        Observe(type, ns, collection, itemId, error, tokenExpiresAt);
        if (!_hub.HasSubscribers) return; // nobody listens: nothing is kept
        _hub.Publish(new SyncEvent
        {
            Type = type, At = Now, NamespaceId = ns, Collection = collection, Key = key, ItemId = itemId, Error = error, TokenExpiresAt = tokenExpiresAt,
        });
    }

    /// <summary>Metrics and logs of an event (item IDs and collections only: never keys or values).</summary>
    private void Observe(SyncEventType type, string? ns, string? collection, string? itemId, Exception? error, DateTimeOffset? tokenExpiresAt)
    {
        switch (type)
        {
            case SyncEventType.ItemUploaded: SyncTelemetry.Uploaded.Add(1); break;
            case SyncEventType.ItemDownloaded: SyncTelemetry.Downloaded.Add(1); break;
            case SyncEventType.ConflictDetected:
                SyncTelemetry.Conflicts.Add(1);
                EngineLog.Conflict(_log, ns, collection, itemId);
                break;
            case SyncEventType.ItemQuarantined:
                SyncTelemetry.Quarantined.Add(1);
                EngineLog.Quarantined(_log, ns, collection, itemId, error?.GetType().Name ?? "error");
                break;
            case SyncEventType.LoginRequired: EngineLog.LoginRequired(_log); break;
            case SyncEventType.SessionReady: EngineLog.SessionReady(_log, tokenExpiresAt); break;
        }
    }

    private DateTimeOffset? TokenExpiry => _state.TokenExpiry is null ? null : _state.TokenExpiry.Value;

    private void Emit(ItemState row, ItemEvent e)
    {
        if (row.Collection == KeyDirectory.ReservedCollection) return; // the engine's own items: not the app's events
        Emit(e.Tag switch
        {
            ItemEvent.Tags.ItemChanged => SyncEventType.ItemChanged,
            ItemEvent.Tags.ItemDownloaded => SyncEventType.ItemDownloaded,
            ItemEvent.Tags.ItemQueued => SyncEventType.ItemQueued,
            ItemEvent.Tags.ItemUploaded => SyncEventType.ItemUploaded,
            ItemEvent.Tags.ItemDeleted => SyncEventType.ItemDeleted,
            ItemEvent.Tags.ItemRevived => SyncEventType.ItemRevived,
            ItemEvent.Tags.EditDropped => SyncEventType.EditDropped,
            _ => SyncEventType.ConflictDetected,
        }, row.NamespaceId.Wire, row.Collection, row.Key, row.ItemId.Wire);
    }

    /// <summary>The metadata store (for the engine's own collections).</summary>
    internal IStore Store => _store;

    /// <summary>The key directory of a namespace, registered on first use (docs/protocol.md §17).</summary>
    internal DirectoryAdapter DirectoryOf(string namespaceId) =>
        (DirectoryAdapter)_collections.GetOrAdd((namespaceId, KeyDirectory.ReservedCollection),
            _ => new DirectoryAdapter(this, namespaceId, KeyDirectory.writerOf(_keyId)));

    /// <summary>The key directory of a namespace when one of its collections keeps one, else null.</summary>
    internal DirectoryAdapter? DirectoryIn(string namespaceId) =>
        _collections.TryGetValue((namespaceId, KeyDirectory.ReservedCollection), out var d) ? d as DirectoryAdapter : null;

    /// <summary>Item rows were saved: the key directories derive what changed anew.</summary>
    internal void RowsSaved(IReadOnlyList<Storage.ItemRecord> records)
    {
        foreach (var group in records.GroupBy(r => r.NamespaceId))
            DirectoryIn(group.Key)?.RowsSaved(group);
    }

    /// <summary>Deletions not yet on the server, over every key directory.</summary>
    internal async Task<int> PendingDeletionsAsync(CancellationToken ct)
    {
        var total = 0;
        foreach (var adapter in _collections.Values)
            if (adapter is DirectoryAdapter directory)
                total += await directory.PendingDeletionsAsync(ct);
        return total;
    }

    internal void Register(string namespaceId, ICollectionAdapter adapter)
    {
        ThrowIfClosed();
        if (!_collections.TryAdd((namespaceId, adapter.Name), adapter))
            throw new CollectionAlreadyRegisteredException(namespaceId, adapter.Name);
    }

    private CancellationTokenSource Linked(CancellationToken ct) => CancellationTokenSource.CreateLinkedTokenSource(ct, _closing.Token);

    /// <summary>Stops background work (cancelling requests in flight), waits for a running pass, completes <see cref="Events"/> and disposes the store.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0) return;
        await _closing.CancelAsync();
        await _syncLock.WaitAsync();
        try
        {
            _hub.Complete();
            await _store.DisposeAsync();
        }
        finally
        {
            _syncLock.Release();
            _closing.Dispose();
        }
    }
}
