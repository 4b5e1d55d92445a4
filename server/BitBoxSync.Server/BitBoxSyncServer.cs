using System.Diagnostics;
using BitBoxSync.Server.Endpoints;
using BitBoxSync.Server.Store;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace BitBoxSync.Server;

/// <summary>
/// A running BitBoxSync server: Kestrel, the endpoints and the store. Start one embedded in a
/// process (tests, demos) with <see cref="StartAsync"/>, or run the <c>BitBoxSync.Server</c> command.
/// </summary>
public sealed class BitBoxSyncServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly Api _api;

    private BitBoxSyncServer(WebApplication app, Api api, IReadOnlyList<Uri> addresses, SweepLoop sweep)
    {
        _app = app;
        _api = api;
        _sweep = sweep;
        Addresses = addresses;
    }

    private readonly SweepLoop _sweep;

    /// <summary>Runs the sweep of expired rows now (tests; it also runs every 10 minutes).</summary>
    internal Task<int> SweepNowAsync(CancellationToken cancellationToken = default) => _sweep.SweepAsync(cancellationToken);

    /// <summary>The addresses the server listens on (with the actual ports).</summary>
    public IReadOnlyList<Uri> Addresses { get; }

    /// <summary>The first listen address: the base URL for clients on this machine.</summary>
    public Uri BaseAddress => Addresses[0];

    /// <summary>Where the data lives, e.g. "SQLite /srv/bitboxsync.sqlite" (never credentials).</summary>
    public string StoreDescription => _api.Store.Describe;

    internal ServerStore Store => _api.Store;

    /// <summary>The host's services (tests reach an in-process test server through them).</summary>
    internal IServiceProvider Services => _app.Services;
    internal WatchHub Hub => _api.Hub;

    /// <summary>
    /// Validates the options, opens (and migrates) the store, and starts listening.
    /// </summary>
    /// <exception cref="ArgumentException">An option is invalid.</exception>
    public static Task<BitBoxSyncServer> StartAsync(ServerOptions options, CancellationToken cancellationToken = default) =>
        StartWithAsync(options, null, cancellationToken);

    /// <summary>
    /// <see cref="StartAsync(ServerOptions, CancellationToken)"/> with a last say on the host
    /// builder (tests host the server in process on a test server instead of Kestrel).
    /// </summary>
    internal static async Task<BitBoxSyncServer> StartWithAsync(ServerOptions options, Action<WebApplicationBuilder>? configure,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Logging.AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "HH:mm:ss ";
        });
        builder.Logging.SetMinimumLevel(options.MinimumLogLevel);
        builder.Logging.AddFilter("Microsoft.AspNetCore", level => level >= LogLevel.Warning && level >= options.MinimumLogLevel);
        builder.Logging.AddFilter("Microsoft.Hosting", level => level >= LogLevel.Warning && level >= options.MinimumLogLevel);
        builder.WebHost.UseKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Limits.MaxRequestBodySize = Api.MaxBodyBytes * 4;
            k.Limits.MaxRequestHeadersTotalSize = 16 * 1024;
        });
        builder.WebHost.UseUrls(options.Urls);
        builder.Services.Configure<HostOptions>(h => h.ShutdownTimeout = TimeSpan.FromSeconds(10));
        RateLimits.Add(builder.Services, options);
        configure?.Invoke(builder);

        var app = builder.Build();
        var logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("BitBoxSync.Server");
        ServerStore store = options.Store switch
        {
            ServerStoreKind.Postgres => new PostgresServerStore(options.PostgresConnectionString!, logger),
            _ => new SqliteServerStore(options.SqlitePath, logger),
        };
        try
        {
            await store.MigrateAsync(cancellationToken);
        }
        catch
        {
            await store.DisposeAsync();
            throw;
        }

        var hub = new WatchHub();
        store.Changed = hub.Signal;
        if (store is PostgresServerStore pg) pg.StartListening();
        var api = new Api(store, hub, options, logger);

        app.Use(async (http, next) =>
        {
            var started = Stopwatch.GetTimestamp();
            await next(http);
            // Method, path (ids only) and status: never headers or bodies, which carry tokens and secrets.
            logger.LogInformation("{Method} {Path} {Status} {Ms:0.0} ms", http.Request.Method, http.Request.Path.Value,
                http.Response.StatusCode, Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        });
        // Routing's own refusals (unknown path 404, wrong method 405) get JSON bodies too.
        app.UseStatusCodePages(async context =>
        {
            var http = context.HttpContext;
            var message = http.Response.StatusCode switch
            {
                404 => "not found",
                405 => "method not allowed",
                _ => "request refused",
            };
            await Handler.WriteError(http, http.Response.StatusCode, message);
        });
        app.UseRateLimiter();
        ApiRoutes.Map(app, api);

        try
        {
            await app.StartAsync(cancellationToken);
        }
        catch
        {
            await app.DisposeAsync();
            await store.DisposeAsync();
            throw;
        }

        var sweep = new SweepLoop(api, logger);
        var addresses = (app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses ?? [])
            .Select(a => new Uri(a)).DefaultIfEmpty(new Uri("http://localhost/")).ToList();
        logger.LogInformation("BitBoxSync server listening on {Addresses} with {Store}; public origin {Origin}",
            string.Join(", ", addresses), store.Describe, options.PublicOrigin);
        return new BitBoxSyncServer(app, api, addresses, sweep);
    }

    /// <summary>Parked watchers (diagnostics).</summary>
    public int ParkedWatchers => _api.Hub.Parked;

    /// <summary>Stops gracefully: stops accepting, answers parked watchers, lets in-flight requests finish.</summary>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        await _app.StopAsync(cancellationToken);
    }

    /// <summary>Blocks until the host is shut down (Ctrl+C / SIGTERM for the command).</summary>
    public Task WaitForShutdownAsync(CancellationToken cancellationToken = default) => _app.WaitForShutdownAsync(cancellationToken);

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        try
        {
            await _sweep.DisposeAsync();
            await _app.StopAsync();
        }
        finally
        {
            await _app.DisposeAsync();
            await _api.Store.DisposeAsync();
        }
    }
}
