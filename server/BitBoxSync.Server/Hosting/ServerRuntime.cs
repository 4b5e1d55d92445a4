using System.Diagnostics.Metrics;
using BitBoxSync.Server.Store;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace BitBoxSync.Server.Hosting;

/// <summary>
/// The server's parts in a host's container: the store, the watch hub, the limits, the metrics and
/// the sweep. It opens and migrates the store before the host starts listening (the
/// <see cref="IHostedLifecycleService.StartingAsync"/> step runs before Kestrel starts), starts the
/// sweep once the host runs, and closes the store with the container.
/// </summary>
internal sealed class ServerRuntime : IHostedLifecycleService, IAsyncDisposable
{
    private SweepLoop? _sweep;
    private SweepLoop? _manualSweep;
    private int _disposed;

    public ServerRuntime(IOptions<ServerOptions> options, ILoggerFactory loggers, IMeterFactory meters)
    {
        var o = options.Value;
        Logger = loggers.CreateLogger("BitBoxSync.Server");
        Store = o.Store switch
        {
            ServerStoreKind.Postgres => new PostgresServerStore(o.PostgresConnectionString!, Logger),
            _ => new SqliteServerStore(o.SqlitePath, Logger),
        };
        Hub = new WatchHub();
        Metrics = new ServerMetrics(meters, () => Hub.Parked);
        Hub.Woken = Metrics.Woken;
        Store.Metrics = Metrics;
        Store.GroupCommits = o.GroupCommit;
        Store.Changed = Hub.Signal;
        Limits = new RateLimits(o);
        Api = new Api(Store, Hub, o, Logger, Metrics, Limits);
    }

    public ILogger Logger { get; }
    public ServerStore Store { get; }
    public WatchHub Hub { get; }
    public ServerMetrics Metrics { get; }
    public RateLimits Limits { get; }
    public Api Api { get; }

    /// <summary>Runs the sweep now (tests; it also runs every 10 minutes once the host runs).</summary>
    public Task<int> SweepNowAsync(CancellationToken ct) => (_sweep ?? (_manualSweep ??= new SweepLoop(Api, Logger, start: false))).SweepAsync(ct);

    public async Task StartingAsync(CancellationToken cancellationToken)
    {
        await Store.MigrateAsync(cancellationToken);
        if (Store is PostgresServerStore pg) pg.StartListening();
    }

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartedAsync(CancellationToken cancellationToken)
    {
        _sweep ??= new SweepLoop(Api, Logger, start: true);
        Logger.LogInformation("BitBoxSync server ready with {Store}; public origin {Origin}", Store.Describe, Api.Options.PublicOrigin);
        return Task.CompletedTask;
    }

    public Task StoppingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_sweep is { } sweep) await sweep.DisposeAsync();
    }

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        if (_sweep is { } sweep) await sweep.DisposeAsync();
        if (_manualSweep is { } manual) await manual.DisposeAsync();
        await Store.DisposeAsync();
        Limits.Dispose();
    }
}
