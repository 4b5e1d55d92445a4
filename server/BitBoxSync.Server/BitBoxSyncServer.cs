using BitBoxSync.Server.Hosting;
using BitBoxSync.Server.Store;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace BitBoxSync.Server;

/// <summary>
/// A running standalone BitBoxSync server: Kestrel, the endpoints and the store. Start one embedded
/// in a process (tests, demos) with <see cref="StartAsync"/>, or run the <c>bitboxsync-server</c>
/// command. To serve BitBoxSync from an existing ASP.NET Core app instead, use
/// <c>AddBitBoxSyncServer</c> and <c>MapBitBoxSync</c> (<see cref="BitBoxSyncServerExtensions"/>).
/// </summary>
public sealed class BitBoxSyncServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ServerRuntime _runtime;

    internal BitBoxSyncServer(WebApplication app)
    {
        _app = app;
        _runtime = app.Services.GetRequiredService<ServerRuntime>();
        Addresses = (app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses ?? [])
            .Select(a => new Uri(a)).DefaultIfEmpty(new Uri("http://localhost/")).ToList();
        // The runtime already logged the store and the origin when it became ready.
        _runtime.Logger.LogInformation("BitBoxSync server listening on {Addresses}", string.Join(", ", Addresses));
    }

    /// <summary>Runs the sweep of expired rows now (tests; it also runs every 10 minutes).</summary>
    internal Task<int> SweepNowAsync(CancellationToken cancellationToken = default) => _runtime.SweepNowAsync(cancellationToken);

    /// <summary>The addresses the server listens on (with the actual ports).</summary>
    public IReadOnlyList<Uri> Addresses { get; }

    /// <summary>The first listen address: the base URL for clients on this machine.</summary>
    public Uri BaseAddress => Addresses[0];

    /// <summary>Where the data lives, e.g. "SQLite /srv/bitboxsync.sqlite" (never credentials).</summary>
    public string StoreDescription => _runtime.Store.Describe;

    internal ServerStore Store => _runtime.Store;

    /// <summary>The host's services (tests reach an in-process test server through them).</summary>
    internal IServiceProvider Services => _app.Services;
    internal WatchHub Hub => _runtime.Hub;

    /// <summary>
    /// Validates the options, opens (and migrates) the store, and starts listening on
    /// <see cref="ServerOptions.Urls"/> (or the standard URL settings, or <see cref="ServerOptions.DefaultUrl"/>).
    /// Logs go to the console at <see cref="ServerOptions.MinimumLogLevel"/>.
    /// </summary>
    /// <exception cref="ArgumentException">An option is invalid.</exception>
    public static Task<BitBoxSyncServer> StartAsync(ServerOptions options, CancellationToken cancellationToken = default) =>
        StartWithAsync(options, null, cancellationToken);

    /// <summary>
    /// <see cref="StartAsync(ServerOptions, CancellationToken)"/> with a last say on the host
    /// builder (tests host the server in process on a test server instead of Kestrel).
    /// </summary>
    internal static Task<BitBoxSyncServer> StartWithAsync(ServerOptions options, Action<WebApplicationBuilder>? configure,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
        builder.Logging.ClearProviders();
        builder.Logging.AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffzzz ";
            o.UseUtcTimestamp = true;
        });
        builder.Logging.SetMinimumLevel(options.MinimumLogLevel);
        builder.Logging.AddFilter("Microsoft.AspNetCore", level => level >= LogLevel.Warning && level >= options.MinimumLogLevel);
        builder.Logging.AddFilter("Microsoft.Hosting", level => level >= LogLevel.Warning && level >= options.MinimumLogLevel);
        builder.Logging.AddFilter("Microsoft.Extensions.Diagnostics.HealthChecks", level => level >= LogLevel.Warning && level >= options.MinimumLogLevel);
        Standalone.Configure(builder, options);
        configure?.Invoke(builder);
        return Standalone.StartAsync(builder, options, cancellationToken);
    }

    /// <summary>Parked watchers (diagnostics).</summary>
    public int ParkedWatchers => _runtime.Hub.Parked;

    /// <summary>Stops gracefully: stops accepting, answers parked watchers, lets in-flight requests finish.</summary>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        await _app.StopAsync(cancellationToken);
    }

    /// <summary>Blocks until the host is shut down (Ctrl+C / SIGTERM for the command).</summary>
    public Task WaitForShutdownAsync(CancellationToken cancellationToken = default) => _app.WaitForShutdownAsync(cancellationToken);

    private int _disposed;

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        try
        {
            await _app.StopAsync();
        }
        finally
        {
            await _app.DisposeAsync(); // disposes the runtime: the sweep stops, the store closes
        }
    }
}
