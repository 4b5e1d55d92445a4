using BitBoxSync.Storage.Sqlite;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace BitBoxSync.Extensions.Hosting;

/// <summary>Registers BitBoxSync on the generic host.</summary>
public static class BitBoxSyncServiceCollectionExtensions
{
    /// <summary>The name of the <see cref="IHttpClientFactory"/> client the engine uses.</summary>
    public const string HttpClientName = "BitBoxSync";

    /// <summary>
    /// Adds the engine: binds <see cref="BitBoxSyncOptions"/> from <paramref name="configuration"/>
    /// (for example <c>builder.Configuration.GetSection("BitBoxSync")</c>), validates them when the
    /// host starts, registers an <see cref="IHttpClientFactory"/> client, the
    /// <see cref="BitBoxSyncEngineHost"/> (the engine once opened, <c>WaitForFirstSyncAsync</c>) and
    /// a hosted service that opens the SQLite store and the engine, logs in (retrying while the
    /// server is unreachable), opens the collections registered with
    /// <see cref="BitBoxSyncBuilder.AddCollection{T}"/> and runs the sync loop until the host stops.
    /// An <see cref="IIdentity"/> must be registered too; register an <see cref="IKeyProtector"/> to keep the
    /// store's tokens and namespace keys sealed at rest.
    /// </summary>
    public static BitBoxSyncBuilder AddBitBoxSync(this IServiceCollection services, IConfiguration? configuration = null,
        Action<BitBoxSyncOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var options = services.AddOptions<BitBoxSyncOptions>();
        if (configuration is not null) options.Bind(configuration);
        if (configure is not null) options.Configure(configure);
        options.ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<BitBoxSyncOptions>, BitBoxSyncOptionsValidator>());
        services.AddHttpClient(HttpClientName, (sp, client) =>
            client.Timeout = sp.GetRequiredService<IOptions<BitBoxSyncOptions>>().Value.HttpTimeout);
        services.TryAddSingleton<BitBoxSyncEngineHost>();
        services.AddHostedService(sp => sp.GetRequiredService<BitBoxSyncEngineHost>());
        return new BitBoxSyncBuilder(services);
    }
}

/// <summary>Adds collections to the engine <see cref="BitBoxSyncServiceCollectionExtensions.AddBitBoxSync"/> registered.</summary>
public sealed class BitBoxSyncBuilder
{
    internal BitBoxSyncBuilder(IServiceCollection services) => Services = services;

    /// <summary>The service collection.</summary>
    public IServiceCollection Services { get; }

    /// <summary>
    /// A collection opened before the sync loop starts, in the identity's default namespace (or in
    /// <paramref name="namespaceId"/>), with options built from the service provider (the app's
    /// backend, its codec and merge).
    /// </summary>
    public BitBoxSyncBuilder AddCollection<T>(string name, Func<IServiceProvider, CollectionOptions<T>> options, string? namespaceId = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(options);
        Services.AddSingleton<ICollectionRegistration>(new CollectionRegistration<T>(name, options, namespaceId));
        return this;
    }
}

/// <summary>A collection to open when the engine opens.</summary>
internal interface ICollectionRegistration
{
    Task OpenAsync(SyncEngine engine, IServiceProvider services, CancellationToken cancellationToken);
}

internal sealed class CollectionRegistration<T>(string name, Func<IServiceProvider, CollectionOptions<T>> options, string? namespaceId)
    : ICollectionRegistration
{
    public async Task OpenAsync(SyncEngine engine, IServiceProvider services, CancellationToken cancellationToken)
    {
        var ns = namespaceId is null
            ? await engine.DefaultNamespaceAsync(cancellationToken)
            : await engine.NamespaceAsync(namespaceId, cancellationToken);
        ns.OpenCollection(name, options(services));
    }
}

/// <summary>
/// The engine on the host: opened by the hosted service when the host starts, disposed when it
/// stops. Inject it to reach the engine (<see cref="GetEngineAsync"/>) or to wait for the first
/// complete sync (<see cref="WaitForFirstSyncAsync"/>).
/// </summary>
public sealed class BitBoxSyncEngineHost : BackgroundService
{
    private readonly IServiceProvider _services;
    private readonly IOptions<BitBoxSyncOptions> _options;
    private readonly ILogger _log;
    private readonly TaskCompletionSource<SyncEngine> _engine = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _firstSync = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Created by the container.</summary>
    public BitBoxSyncEngineHost(IServiceProvider services, IOptions<BitBoxSyncOptions> options, ILogger<BitBoxSyncEngineHost> log)
    {
        _services = services;
        _options = options;
        _log = log;
    }

    /// <summary>The engine, once the host opened it (collections registered, login done).</summary>
    public Task<SyncEngine> GetEngineAsync(CancellationToken cancellationToken = default) => _engine.Task.WaitAsync(cancellationToken);

    /// <summary>
    /// Completes after the first pass that finished: every namespace of the identity was pulled and
    /// every pending change pushed (not merely after the engine opened, nor after a failed pass).
    /// </summary>
    public Task WaitForFirstSyncAsync(CancellationToken cancellationToken = default) => _firstSync.Task.WaitAsync(cancellationToken);

    /// <inheritdoc />
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var o = _options.Value;
        var identity = _services.GetService<IIdentity>()
            ?? throw new InvalidOperationException("AddBitBoxSync needs an IIdentity service (register the app's identity)");
        var http = _services.GetRequiredService<IHttpClientFactory>().CreateClient(BitBoxSyncServiceCollectionExtensions.HttpClientName);
        var client = new SyncClient(o.ServerUrl!, http);
        // With an IKeyProtector registered, the store keeps tokens and namespace keys sealed by it.
        var protector = _services.GetService<IKeyProtector>();
        var storePath = Path.GetFullPath(o.StorePath);
        var store = protector is null
            ? await SqliteStore.OpenAsync(storePath, stoppingToken)
            : await SqliteStore.OpenAsync(storePath, protector, stoppingToken);
        SyncEngine engine;
        try
        {
            engine = await SyncEngine.OpenAsync(new SyncEngineOptions
            {
                Client = client, Identity = identity, Store = store, PollInterval = o.PollInterval, MaxPollInterval = o.MaxPollInterval,
                IdlePolling = o.IdlePolling, DisableNamespaceWatch = o.DisableNamespaceWatch, RefreshSkew = o.RefreshSkew,
                LoggerFactory = _services.GetService<ILoggerFactory>(),
            }, stoppingToken);
        }
        catch
        {
            await store.DisposeAsync();
            client.Dispose();
            throw;
        }

        await using (engine)
        {
            using var events = engine.Subscribe();
            var firstSync = WatchFirstSyncAsync(events, stoppingToken);
            await LoginAsync(engine, stoppingToken);
            foreach (var c in _services.GetServices<ICollectionRegistration>())
                await c.OpenAsync(engine, _services, stoppingToken);
            _engine.TrySetResult(engine);
            try
            {
                await engine.RunAsync(stoppingToken);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                // the host is stopping
            }
            await firstSync.ContinueWith(_ => { }, TaskScheduler.Default);
        }
        client.Dispose();
        _engine.TrySetCanceled(stoppingToken);
        _firstSync.TrySetCanceled(stoppingToken);
    }

    private async Task WatchFirstSyncAsync(SyncEventSubscription events, CancellationToken ct)
    {
        try
        {
            await foreach (var e in events.ReadAllAsync(ct))
                if (e.Type == SyncEventType.SyncFinished)
                {
                    _firstSync.TrySetResult();
                    return;
                }
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>Logs in, retrying while the server cannot be reached (1, 2, 4 … 30 s); other failures are logged and left to the sync loop.</summary>
    private async Task LoginAsync(SyncEngine engine, CancellationToken ct)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await engine.LoginAsync(ct);
                return;
            }
            catch (Exception e) when (e is SyncTransportException || e is SyncApiException { StatusCode: >= 500 or 408 or 429 })
            {
                var wait = TimeSpan.FromSeconds(Math.Min(30, Math.Pow(2, Math.Min(attempt - 1, 5))));
                _log.LogWarning(new EventId(100, "LoginRetry"), "Login failed ({ErrorType}: {ErrorMessage}); retrying in {DelaySeconds} s",
                    e.GetType().Name, e.Message, wait.TotalSeconds);
                await Task.Delay(wait, ct);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                _log.LogError(new EventId(101, "LoginFailed"), "Login failed: {ErrorType}: {ErrorMessage}", e.GetType().Name, e.Message);
                return;
            }
        }
    }
}
