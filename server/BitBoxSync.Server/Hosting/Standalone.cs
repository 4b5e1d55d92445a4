using System.Diagnostics;
using System.Net;
using System.Reflection;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.HttpOverrides;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace BitBoxSync.Server.Hosting;

/// <summary>
/// The standalone server (the command and <see cref="BitBoxSyncServer.StartAsync(ServerOptions, CancellationToken)"/>):
/// a host app of its own around <c>AddBitBoxSyncServer</c> and <c>MapBitBoxSync</c>, with Kestrel's
/// limits, listen URLs, forwarded headers from trusted proxies only, a request log, and JSON bodies
/// on every error answer.
/// </summary>
internal static class Standalone
{
    /// <summary>The logger category of the request log.</summary>
    public const string RequestLogCategory = "BitBoxSync.Server.Requests";

    /// <summary>
    /// Logging defaults the host's configuration overrides: a single-line console log (or JSON when
    /// <paramref name="formatter"/> is <c>json</c>) with a UTC date and zone on every line.
    /// </summary>
    public static IEnumerable<KeyValuePair<string, string?>> LoggingDefaults(LogLevel level, string? formatter) =>
    [
        new("Logging:LogLevel:Default", level.ToString()),
        new("Logging:LogLevel:Microsoft.AspNetCore", "Warning"),
        new("Logging:LogLevel:Microsoft.Hosting", "Warning"),
        new("Logging:LogLevel:Microsoft.Extensions.Diagnostics.HealthChecks", "Warning"),
        new("Logging:Console:FormatterName", "simple"),
        new("Logging:Console:FormatterOptions:SingleLine", "true"),
        // The simple formatter writes the level right after the time: it needs the trailing space.
        new("Logging:Console:FormatterOptions:TimestampFormat",
            string.Equals(formatter, "simple", StringComparison.OrdinalIgnoreCase) || string.IsNullOrEmpty(formatter)
                ? "yyyy-MM-ddTHH:mm:ss.fffzzz "
                : "yyyy-MM-ddTHH:mm:ss.fffzzz"),
        new("Logging:Console:FormatterOptions:UseUtcTimestamp", "true"),
    ];

    /// <summary>Registers the server with exactly these options, Kestrel's settings and the listen URLs.</summary>
    public static void Configure(WebApplicationBuilder builder, ServerOptions options)
    {
        builder.Services.AddBitBoxSyncServer(target => CopyOptions(options, target));
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Limits.MaxRequestBodySize = Api.MaxBodyBytes * 4;
            k.Limits.MaxRequestHeadersTotalSize = 16 * 1024;
            k.ConfigureEndpointDefaults(KestrelErrorBodies.Use);
        });
        if (options.Urls.Length > 0)
            builder.WebHost.UseUrls(options.Urls);
        else if (!NamesListeners(builder.Configuration))
            builder.WebHost.UseUrls(ServerOptions.DefaultUrl);
        builder.Services.Configure<HostOptions>(h => h.ShutdownTimeout = TimeSpan.FromSeconds(10));
        if (options.TrustedProxies.Length > 0)
        {
            builder.Services.Configure<ForwardedHeadersOptions>(f =>
            {
                f.ForwardedHeaders = ForwardedHeaders.XForwardedFor | ForwardedHeaders.XForwardedProto;
                f.KnownProxies.Clear();
                f.KnownIPNetworks.Clear();
                foreach (var proxy in options.TrustedProxies)
                {
                    if (IPAddress.TryParse(proxy, out var address)) f.KnownProxies.Add(address);
                    else f.KnownIPNetworks.Add(System.Net.IPNetwork.Parse(proxy));
                }
            });
        }
    }

    /// <summary>Whether the host's configuration already names where to listen (the standard settings).</summary>
    private static bool NamesListeners(IConfiguration configuration) =>
        !string.IsNullOrEmpty(configuration["urls"]) || !string.IsNullOrEmpty(configuration["http_ports"])
        || !string.IsNullOrEmpty(configuration["https_ports"]) || configuration.GetSection("Kestrel:Endpoints").Exists();

    /// <summary>Builds the app, wires the pipeline, starts listening.</summary>
    public static async Task<BitBoxSyncServer> StartAsync(WebApplicationBuilder builder, ServerOptions options, CancellationToken ct)
    {
        var app = builder.Build();
        try
        {
            if (options.TrustedProxies.Length > 0) app.UseForwardedHeaders();
            var requests = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger(RequestLogCategory);
            app.Use(async (http, next) =>
            {
                var started = Stopwatch.GetTimestamp();
                await next(http);
                // Method, path (ids only), status, duration and the request ID: never headers or bodies,
                // which carry tokens and secrets.
                requests.LogInformation(new EventId(1, "Request"), "{Method} {Path} {Status} {ElapsedMs:0.0} ms {RequestId}",
                    http.Request.Method, http.Request.Path.Value, http.Response.StatusCode,
                    Stopwatch.GetElapsedTime(started).TotalMilliseconds, http.TraceIdentifier);
            });
            // Routing's own refusals (unknown path 404, wrong method 405) get JSON bodies too.
            app.UseStatusCodePages(context =>
                Endpoints.Handler.WriteError(context.HttpContext, context.HttpContext.Response.StatusCode,
                    KestrelErrorBodies.MessageFor(context.HttpContext.Response.StatusCode)));
            app.MapBitBoxSync();
            await app.StartAsync(ct);
        }
        catch
        {
            await app.DisposeAsync();
            throw;
        }
        return new BitBoxSyncServer(app);
    }

    /// <summary>Copies every option (the internal clock included) onto the options system's instance.</summary>
    private static void CopyOptions(ServerOptions from, ServerOptions to)
    {
        foreach (var p in typeof(ServerOptions).GetProperties(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic))
            if (p.CanRead && p.CanWrite) p.SetValue(to, p.GetValue(from));
    }
}
