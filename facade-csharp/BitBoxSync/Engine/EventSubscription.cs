using System.Threading.Channels;

namespace BitBoxSync;

/// <summary>
/// One reader of a <see cref="SyncEngine"/>'s events, from <see cref="SyncEngine.Subscribe"/>. Every
/// subscription sees every event emitted while it exists, in order. It holds at most its capacity:
/// when the reader falls behind, the oldest events are dropped (counted in <see cref="Dropped"/>), so
/// a slow or absent reader never stalls the engine nor grows its memory. Dispose it to stop
/// receiving; it completes when the engine is disposed.
/// </summary>
public sealed class SyncEventSubscription : IDisposable
{
    private readonly EventHub _hub;
    private readonly Channel<SyncEvent> _channel;
    private long _dropped;

    internal SyncEventSubscription(EventHub hub, int capacity)
    {
        _hub = hub;
        _channel = Channel.CreateBounded<SyncEvent>(
            new BoundedChannelOptions(capacity) { FullMode = BoundedChannelFullMode.DropOldest, SingleWriter = false, SingleReader = false },
            _ => Interlocked.Increment(ref _dropped));
    }

    /// <summary>The events, oldest first. Completed when the engine is disposed or this subscription is.</summary>
    public ChannelReader<SyncEvent> Reader => _channel.Reader;

    /// <summary>How many events were dropped because the reader fell behind (oldest first).</summary>
    public long Dropped => Interlocked.Read(ref _dropped);

    /// <summary>Reads the events as they come, until the engine or this subscription is disposed.</summary>
    public IAsyncEnumerable<SyncEvent> ReadAllAsync(CancellationToken cancellationToken = default) => _channel.Reader.ReadAllAsync(cancellationToken);

    internal void Write(SyncEvent e) => _channel.Writer.TryWrite(e);

    internal void Complete() => _channel.Writer.TryComplete();

    /// <summary>Stops receiving events and completes <see cref="Reader"/>.</summary>
    public void Dispose()
    {
        _hub.Remove(this);
        Complete();
    }
}

/// <summary>The engine's subscribers: each event goes to every one; with none, nothing is kept.</summary>
internal sealed class EventHub
{
    private readonly object _gate = new();
    private SyncEventSubscription[] _subscribers = [];
    private bool _completed;

    public bool HasSubscribers => Volatile.Read(ref _subscribers).Length > 0;

    public SyncEventSubscription Add(int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        var s = new SyncEventSubscription(this, capacity);
        lock (_gate)
        {
            if (_completed) s.Complete();
            else _subscribers = [.. _subscribers, s];
        }
        return s;
    }

    public void Remove(SyncEventSubscription s)
    {
        lock (_gate) _subscribers = _subscribers.Where(x => !ReferenceEquals(x, s)).ToArray();
    }

    public void Publish(SyncEvent e)
    {
        foreach (var s in Volatile.Read(ref _subscribers)) s.Write(e);
    }

    public void Complete()
    {
        SyncEventSubscription[] all;
        lock (_gate)
        {
            _completed = true;
            all = _subscribers;
            _subscribers = [];
        }
        foreach (var s in all) s.Complete();
    }
}
