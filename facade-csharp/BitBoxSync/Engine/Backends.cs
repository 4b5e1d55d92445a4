namespace BitBoxSync;

/// <summary>A value read from a backend: present with its value, or missing.</summary>
public readonly record struct BackendValue<T>(bool Found, T? Value)
{
    /// <summary>No value for the key.</summary>
    public static BackendValue<T> Missing => default;

    /// <summary>A present value.</summary>
    public static BackendValue<T> Of(T value) => new(true, value);
}

/// <summary>
/// The app's own storage of a collection's current values (docs/engine.md §2.9). The engine never
/// stores values itself. Implementations must be safe for concurrent use.
/// </summary>
public interface IValueBackend<T>
{
    /// <summary>
    /// The full active key scope on every call: keys with local values and keys that may exist only
    /// remotely (item IDs cannot be reversed into keys). Keys not returned are neither downloaded
    /// nor uploaded. Duplicates are ignored.
    /// </summary>
    ValueTask<IReadOnlyCollection<string>> KeysAsync(CancellationToken cancellationToken);

    /// <summary>Every current value, in one pass (called at the start of each sync). Omitted keys are not deletions.</summary>
    ValueTask<IReadOnlyDictionary<string, T>> SnapshotAsync(CancellationToken cancellationToken);

    /// <summary>The current value of a key, or <see cref="BackendValue{T}.Missing"/>.</summary>
    ValueTask<BackendValue<T>> GetAsync(string key, CancellationToken cancellationToken);

    /// <summary>Replaces one key's value atomically (a later get observes it).</summary>
    ValueTask SetAsync(string key, T value, CancellationToken cancellationToken);
}

/// <summary>
/// A backend that can replace a value only if it is still what the engine read, in the same
/// lock or transaction the app uses for its own writes: an app write that lands while a remote
/// value is being applied is never lost (the engine merges again instead).
/// </summary>
public interface IConditionalValueBackend<T> : IValueBackend<T>
{
    /// <summary>
    /// Replaces the value only if the key still holds <paramref name="current"/> (or, when
    /// <paramref name="currentFound"/> is false, still has no value); false when an app write won.
    /// </summary>
    ValueTask<bool> SetIfCurrentAsync(string key, T? current, bool currentFound, T value, CancellationToken cancellationToken);
}

/// <summary>
/// A backend that can remove values, for collections with a key directory (docs/concepts.md,
/// "Deletes"): <see cref="Collection{T}.DeleteAsync"/> removes the app's value through it, and a
/// deletion made on another device is applied here without the app's help. Like
/// <see cref="IConditionalValueBackend{T}.SetIfCurrentAsync"/>, the removal is conditional, in the
/// same lock or transaction as the app's own writes: a value the app changed after the engine read
/// it is never removed.
/// </summary>
public interface IDeletableValueBackend<T> : IValueBackend<T>
{
    /// <summary>
    /// Removes the key's value only if it still is <paramref name="current"/>; true when it was
    /// removed or the key already has no value, false when the app wrote another value meanwhile.
    /// After a removal <see cref="IValueBackend{T}.GetAsync"/> reports the key missing and a
    /// change-tracking backend reports the key as written.
    /// </summary>
    ValueTask<bool> DeleteIfCurrentAsync(string key, T current, CancellationToken cancellationToken);
}

/// <summary>
/// Optional for a backend (implement it next to <see cref="IValueBackend{T}"/>): tells the engine
/// which keys were written since it last looked, so a pass over an unchanged collection reads no
/// values at all and a pass after a few edits reads only those keys. Without it every pass takes a
/// full <see cref="IValueBackend{T}.SnapshotAsync"/> and compares every value with its base.
/// </summary>
/// <remarks>
/// A typical implementation keeps a counter that every write increments and remembers, per key,
/// the counter of its last write (in SQLite: a sequence column updated in the same transaction as
/// the value). Reporting too many keys is always safe; reporting too few loses local edits until
/// the engine restarts (a fresh engine always starts with a full snapshot).
/// </remarks>
public interface IChangeTrackingBackend
{
    /// <summary>
    /// The current change stamp. It must change whenever a value is written (by the app or the
    /// engine) and whenever <see cref="IValueBackend{T}.KeysAsync"/> would return different keys.
    /// </summary>
    ValueTask<long> GetChangeStampAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Every key written after the stamp was <paramref name="stamp"/> (a superset is fine), or null
    /// when the backend cannot tell (for example the stamp is older than its history): the engine
    /// then takes a full snapshot.
    /// </summary>
    ValueTask<IReadOnlyCollection<string>?> GetChangedKeysAsync(long stamp, CancellationToken cancellationToken);
}

/// <summary>
/// A backend in memory, for tests, demos and short-lived tools. <see cref="SetIfCurrentAsync"/>
/// and <see cref="DeleteIfCurrentAsync"/> compare <b>encoded</b> values (so collections and
/// records compare by content).
/// </summary>
public sealed class MemoryValueBackend<T> : IConditionalValueBackend<T>, IDeletableValueBackend<T>, IChangeTrackingBackend
{
    private readonly object _gate = new();
    private readonly Dictionary<string, T> _values;
    private readonly Dictionary<string, long> _writtenAt = new(StringComparer.Ordinal);
    private long _stamp;
    private readonly ICodec<T> _codec;
    private readonly IReadOnlyCollection<string>? _scope;

    /// <summary>Creates a backend.</summary>
    /// <param name="codec">The codec that defines value equality for <see cref="SetIfCurrentAsync"/>.</param>
    /// <param name="initial">Initial values (copied).</param>
    /// <param name="keys">A fixed key scope (including remote-only keys); by default the stored keys.</param>
    public MemoryValueBackend(ICodec<T> codec, IReadOnlyDictionary<string, T>? initial = null, IEnumerable<string>? keys = null)
    {
        _codec = codec ?? throw new ArgumentNullException(nameof(codec));
        _values = initial is null ? new(StringComparer.Ordinal) : new(initial, StringComparer.Ordinal);
        _scope = keys?.ToArray();
    }

    /// <inheritdoc />
    public ValueTask<IReadOnlyCollection<string>> KeysAsync(CancellationToken cancellationToken)
    {
        lock (_gate)
            return ValueTask.FromResult(_scope ?? _values.Keys.Order(StringComparer.Ordinal).ToArray());
    }

    /// <inheritdoc />
    public ValueTask<IReadOnlyDictionary<string, T>> SnapshotAsync(CancellationToken cancellationToken)
    {
        lock (_gate)
            return ValueTask.FromResult<IReadOnlyDictionary<string, T>>(new Dictionary<string, T>(_values, StringComparer.Ordinal));
    }

    /// <inheritdoc />
    public ValueTask<BackendValue<T>> GetAsync(string key, CancellationToken cancellationToken)
    {
        lock (_gate)
            return ValueTask.FromResult(_values.TryGetValue(key, out var v) ? BackendValue<T>.Of(v) : BackendValue<T>.Missing);
    }

    /// <inheritdoc />
    public ValueTask SetAsync(string key, T value, CancellationToken cancellationToken)
    {
        lock (_gate) Write(key, value);
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public ValueTask<bool> SetIfCurrentAsync(string key, T? current, bool currentFound, T value, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            var found = _values.TryGetValue(key, out var stored);
            if (found != currentFound) return ValueTask.FromResult(false);
            if (found && !_codec.Encode(stored!).AsSpan().SequenceEqual(_codec.Encode(current!)))
                return ValueTask.FromResult(false);
            Write(key, value);
            return ValueTask.FromResult(true);
        }
    }

    /// <inheritdoc />
    public ValueTask<bool> DeleteIfCurrentAsync(string key, T current, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            if (!_values.TryGetValue(key, out var stored)) return ValueTask.FromResult(true);
            if (!_codec.Encode(stored).AsSpan().SequenceEqual(_codec.Encode(current))) return ValueTask.FromResult(false);
            _values.Remove(key);
            _writtenAt[key] = ++_stamp;
            return ValueTask.FromResult(true);
        }
    }

    /// <summary>Removes a key's value unconditionally (as an app deleting from its own storage).</summary>
    public void Remove(string key)
    {
        lock (_gate)
            if (_values.Remove(key)) _writtenAt[key] = ++_stamp;
    }

    private void Write(string key, T value)
    {
        _values[key] = value;
        _writtenAt[key] = ++_stamp;
    }

    /// <inheritdoc />
    public ValueTask<long> GetChangeStampAsync(CancellationToken cancellationToken)
    {
        lock (_gate) return ValueTask.FromResult(_stamp);
    }

    /// <inheritdoc />
    public ValueTask<IReadOnlyCollection<string>?> GetChangedKeysAsync(long stamp, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            if (stamp > _stamp || stamp < 0) return ValueTask.FromResult<IReadOnlyCollection<string>?>(null);
            var changed = new List<string>();
            foreach (var (key, at) in _writtenAt)
                if (at > stamp) changed.Add(key);
            return ValueTask.FromResult<IReadOnlyCollection<string>?>(changed);
        }
    }
}
