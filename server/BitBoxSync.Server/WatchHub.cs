namespace BitBoxSync.Server;

/// <summary>
/// Parked long-poll watchers, keyed by what they wait for (a namespace head, an identity's
/// namespace set). A watcher is a registration plus a task: no thread is held while it waits.
/// </summary>
internal sealed class WatchHub
{
    /// <summary>The key that wakes every watcher (after a lost cross-process notification).</summary>
    public const string Everything = "*";

    private readonly object _gate = new();
    private readonly Dictionary<string, HashSet<Waiter>> _byKey = new(StringComparer.Ordinal);
    private int _parked;

    /// <summary>Watchers currently parked.</summary>
    public int Parked => Volatile.Read(ref _parked);

    /// <summary>One parked watcher.</summary>
    public sealed class Waiter(string[] keys)
    {
        private readonly TaskCompletionSource _woken = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public string[] Keys { get; } = keys;
        public Task Woken => _woken.Task;
        public void Wake() => _woken.TrySetResult();
    }

    /// <summary>Registers a watcher for these keys; register before reading the state it checks.</summary>
    public Waiter Register(IEnumerable<string> keys)
    {
        var waiter = new Waiter(keys.Distinct(StringComparer.Ordinal).ToArray());
        lock (_gate)
        {
            foreach (var key in waiter.Keys)
            {
                if (!_byKey.TryGetValue(key, out var set)) _byKey[key] = set = [];
                set.Add(waiter);
            }
            _parked++;
        }
        return waiter;
    }

    /// <summary>Removes a watcher (after it woke, timed out or was cancelled).</summary>
    public void Unregister(Waiter waiter)
    {
        lock (_gate)
        {
            foreach (var key in waiter.Keys)
            {
                if (_byKey.TryGetValue(key, out var set) && set.Remove(waiter) && set.Count == 0)
                    _byKey.Remove(key);
            }
            _parked--;
        }
    }

    /// <summary>Wakes every watcher of a key (or all of them for <see cref="Everything"/>).</summary>
    public void Signal(string key)
    {
        var count = Wake(key);
        if (count > 0) Woken?.Invoke(count);
    }

    /// <summary>Reports how many watchers a signal woke (metrics).</summary>
    public Action<int>? Woken { get; set; }

    private int Wake(string key)
    {
        List<Waiter> woken;
        lock (_gate)
        {
            if (key == Everything)
                woken = _byKey.Values.SelectMany(s => s).Distinct().ToList();
            else if (_byKey.TryGetValue(key, out var set))
                woken = [.. set];
            else
                return 0;
        }
        foreach (var w in woken) w.Wake();
        return woken.Count;
    }
}
