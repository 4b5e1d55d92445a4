namespace BitBoxSync.Storage;

/// <summary>
/// An <see cref="IStore"/> in process memory: nothing survives the process. For tests and for apps
/// that rebuild their sync state on every start. Thread-safe; byte arrays are copied in and out.
/// </summary>
public sealed class MemoryStore : IStore
{
    private readonly object _gate = new();
    private readonly Dictionary<string, IdentityRecord> _identities = new(StringComparer.Ordinal);
    private readonly Dictionary<(string, string), NamespaceRecord> _namespaces = [];
    private readonly Dictionary<(string, string, string), ItemRecord> _items = [];
    private readonly Dictionary<(string, string, string, string), string> _byLogicalKey = [];
    private readonly TimeProvider _clock;
    private bool _disposed;

    /// <summary>Creates an empty store.</summary>
    public MemoryStore() : this(TimeProvider.System) { }

    internal MemoryStore(TimeProvider clock) => _clock = clock;

    private static byte[]? Copy(byte[]? b) => b is null ? null : (byte[])b.Clone();

    private static NamespaceRecord Copy(NamespaceRecord n) => n with { Dek = Copy(n.Dek) };

    private static ItemRecord Copy(ItemRecord i) =>
        i with { BaseValue = Copy(i.BaseValue), ConflictRemoteValue = Copy(i.ConflictRemoteValue) };

    private T Locked<T>(Func<T> f)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return f();
        }
    }

    /// <inheritdoc />
    public ValueTask<IdentityRecord?> LoadIdentityAsync(string keyId, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Locked(() => _identities.GetValueOrDefault(keyId)));

    /// <inheritdoc />
    public ValueTask<NamespaceRecord?> GetNamespaceAsync(string keyId, string namespaceId, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Locked(() => _namespaces.TryGetValue((keyId, namespaceId), out var n) ? Copy(n) : null));

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<NamespaceRecord>> ListNamespacesAsync(string keyId, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult<IReadOnlyList<NamespaceRecord>>(Locked(() => _namespaces.Values
            .Where(n => n.KeyId == keyId)
            .OrderBy(n => n.UpdatedAt).ThenBy(n => n.NamespaceId, StringComparer.Ordinal)
            .Select(Copy).ToList()));

    /// <inheritdoc />
    public ValueTask<ItemRecord?> GetItemByIdAsync(string keyId, string namespaceId, string itemId, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Locked(() => _items.TryGetValue((keyId, namespaceId, itemId), out var i) ? Copy(i) : null));

    /// <inheritdoc />
    public ValueTask<ItemRecord?> GetItemByLogicalKeyAsync(string keyId, string namespaceId, string collection, string key, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Locked(() =>
            _byLogicalKey.TryGetValue((keyId, namespaceId, collection, key), out var id) && _items.TryGetValue((keyId, namespaceId, id), out var i)
                ? Copy(i)
                : null));

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<ItemRecord>> ListNamespaceItemsAsync(string keyId, string namespaceId, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Ordered(i => i.KeyId == keyId && i.NamespaceId == namespaceId));

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<ItemRecord>> ListDirtyItemsAsync(string keyId, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(Ordered(i => i.KeyId == keyId && i.Dirty));

    private IReadOnlyList<ItemRecord> Ordered(Func<ItemRecord, bool> filter) =>
        Locked(() => _items.Values.Where(filter)
            .OrderBy(i => i.UpdatedAt).ThenBy(i => i.ItemId, StringComparer.Ordinal)
            .Select(Copy).ToList());

    /// <inheritdoc />
    public ValueTask SaveAsync(StoreWrite write, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(write);
        write.Validate();
        var now = _clock.GetUtcNow();
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            // Check every row first: a refused write changes nothing.
            var claimed = new Dictionary<(string, string, string, string), string>();
            var released = new HashSet<(string, string, string, string)>();
            foreach (var item in write.Items)
            {
                var logical = (item.KeyId, item.NamespaceId, item.Collection, item.Key);
                // Moving an item to another logical key frees the old one.
                if (_items.TryGetValue((item.KeyId, item.NamespaceId, item.ItemId), out var old))
                    released.Add((old.KeyId, old.NamespaceId, old.Collection, old.Key));
                var bound = claimed.TryGetValue(logical, out var c) ? c
                    : !released.Contains(logical) && _byLogicalKey.TryGetValue(logical, out var b) ? b : null;
                if (bound is not null && bound != item.ItemId)
                    throw new StoreException($"collection '{item.Collection}' key '{item.Key}' is already stored under another item ID");
                claimed[logical] = item.ItemId;
            }

            if (write.Identity is { } identity)
                _identities[identity.KeyId] = identity.UpdatedAt == default ? identity with { UpdatedAt = now } : identity;
            foreach (var n in write.Namespaces)
                _namespaces[(n.KeyId, n.NamespaceId)] = Copy(n.UpdatedAt == default ? n with { UpdatedAt = now } : n);
            foreach (var i in write.Items)
            {
                if (_items.TryGetValue((i.KeyId, i.NamespaceId, i.ItemId), out var old))
                    _byLogicalKey.Remove((old.KeyId, old.NamespaceId, old.Collection, old.Key));
                _items[(i.KeyId, i.NamespaceId, i.ItemId)] = Copy(i.UpdatedAt == default ? i with { UpdatedAt = now } : i);
                _byLogicalKey[(i.KeyId, i.NamespaceId, i.Collection, i.Key)] = i.ItemId;
            }
        }
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public ValueTask ForgetIdentitySecretsAsync(string keyId, CancellationToken cancellationToken = default)
    {
        var now = _clock.GetUtcNow();
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_identities.TryGetValue(keyId, out var identity))
                _identities[keyId] = identity with { AccessToken = null, TokenExpiry = null, UpdatedAt = now };
            foreach (var key in _namespaces.Keys.Where(k => k.Item1 == keyId).ToList())
                _namespaces[key] = _namespaces[key] with { Dek = null, UpdatedAt = now };
        }
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public ValueTask ResetSyncStateAsync(string keyId, CancellationToken cancellationToken = default)
    {
        var now = _clock.GetUtcNow();
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            foreach (var key in _items.Keys.Where(k => k.Item1 == keyId).ToList()) _items.Remove(key);
            foreach (var key in _byLogicalKey.Keys.Where(k => k.Item1 == keyId).ToList()) _byLogicalKey.Remove(key);
            foreach (var key in _namespaces.Keys.Where(k => k.Item1 == keyId).ToList()) _namespaces.Remove(key);
            if (_identities.TryGetValue(keyId, out var identity))
                _identities[keyId] = identity with { DefaultNamespaceId = null, UpdatedAt = now };
        }
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public ValueTask DisposeAsync()
    {
        lock (_gate) _disposed = true;
        return ValueTask.CompletedTask;
    }
}
