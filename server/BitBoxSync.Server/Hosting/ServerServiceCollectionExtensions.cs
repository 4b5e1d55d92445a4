using BitBoxSync.Server.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;

namespace BitBoxSync.Server;

/// <summary>
/// Mounts the BitBoxSync server in any ASP.NET Core app: <c>builder.Services.AddBitBoxSyncServer(…)</c>
/// registers its parts, <c>app.MapBitBoxSync("/prefix")</c> maps its endpoints (docs/server.md "Mounting").
/// </summary>
public static class BitBoxSyncServerExtensions
{
    /// <summary>
    /// Registers the server: options (validated when the host starts), the store (opened and migrated
    /// before the host listens, closed with the container), the watch hub, rate limits, the periodic
    /// sweep, the meter <c>BitBoxSync.Server</c> and the database readiness health check.
    /// </summary>
    /// <param name="services">The host's services.</param>
    /// <param name="configure">Sets options in code (after any configuration binding).</param>
    /// <returns>An options builder, to bind or validate more.</returns>
    public static OptionsBuilder<ServerOptions> AddBitBoxSyncServer(this IServiceCollection services, Action<ServerOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var builder = services.AddOptions<ServerOptions>();
        if (configure is not null) builder.Configure(configure);
        if (services.Any(d => d.ServiceType == typeof(ServerRuntime))) return builder; // already registered

        builder.ValidateOnStart();
        services.AddSingleton<IValidateOptions<ServerOptions>, ServerOptionsValidator>();
        services.AddMetrics();
        services.TryAddSingleton<ServerRuntime>();
        services.AddHostedService(sp => sp.GetRequiredService<ServerRuntime>());
        services.AddHealthChecks().AddCheck<DatabaseHealthCheck>(
            DatabaseHealthCheck.Name, HealthStatus.Unhealthy, [DatabaseHealthCheck.ReadyTag], TimeSpan.FromSeconds(5));
        return builder;
    }

    /// <summary>
    /// <see cref="AddBitBoxSyncServer(IServiceCollection, Action{ServerOptions})"/> with the options bound
    /// from a configuration section (usually <c>builder.Configuration.GetSection("BitBoxSync")</c>).
    /// </summary>
    /// <param name="services">The host's services.</param>
    /// <param name="configuration">The section holding the <see cref="ServerOptions"/> settings.</param>
    /// <returns>An options builder, to configure or validate more.</returns>
    public static OptionsBuilder<ServerOptions> AddBitBoxSyncServer(this IServiceCollection services, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        return services.AddBitBoxSyncServer().Bind(configuration);
    }

    /// <summary>
    /// Maps every protocol endpoint (docs/protocol.md §7) under <paramref name="prefix"/>, plus
    /// <c>/healthz</c> (liveness: the process answers), <c>/readyz</c> (readiness: the database answers
    /// within 5 s, else 503) and <c>/version</c>. Clients use <c>https://host/prefix/</c> as their server
    /// URL. Requires <see cref="AddBitBoxSyncServer(IServiceCollection, Action{ServerOptions})"/>.
    /// </summary>
    /// <param name="endpoints">The app (or any endpoint route builder).</param>
    /// <param name="prefix">A path prefix such as <c>/sync</c>, or empty for the root.</param>
    /// <returns>The endpoint group, for the host's own conventions (authorization policies, rate-limiting policies, CORS…).</returns>
    /// <exception cref="InvalidOperationException">The server's services were not registered.</exception>
    /// <exception cref="OptionsValidationException">The options are invalid.</exception>
    public static RouteGroupBuilder MapBitBoxSync(this IEndpointRouteBuilder endpoints, string prefix = "")
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        ArgumentNullException.ThrowIfNull(prefix);
        if (prefix.Length > 0 && (!prefix.StartsWith('/') || prefix.EndsWith('/') || prefix.Contains('?') || prefix.Contains('#') || prefix.Contains('{')))
            throw new ArgumentException("the prefix must start with '/', not end with '/', and hold no query, fragment or route parameter", nameof(prefix));
        var runtime = endpoints.ServiceProvider.GetService<ServerRuntime>()
            ?? throw new InvalidOperationException("call services.AddBitBoxSyncServer(…) before app.MapBitBoxSync(…)");

        var group = endpoints.MapGroup(prefix);
        // Liveness checks nothing (a load balancer must not restart a server because its database is down).
        group.MapHealthChecks("/healthz", new HealthCheckOptions { Predicate = _ => false, ResponseWriter = WriteHealth });
        group.MapHealthChecks("/readyz", new HealthCheckOptions
        {
            Predicate = r => r.Tags.Contains(DatabaseHealthCheck.ReadyTag),
            ResponseWriter = WriteHealth,
        });
        Endpoints.ApiRoutes.Map(group, runtime.Api);
        return group;
    }

    private static Task WriteHealth(HttpContext http, HealthReport report) =>
        report.Status == HealthStatus.Unhealthy
            ? Endpoints.Handler.WriteError(http, http.Response.StatusCode, "database unavailable")
            : WriteOk(http);

    private static Task WriteOk(HttpContext http)
    {
        http.Response.ContentType = "application/json";
        return http.Response.WriteAsync("{\"status\":\"ok\"}");
    }

    /// <summary>Runs <see cref="ServerOptions.Validate"/> for the options system.</summary>
    private sealed class ServerOptionsValidator : IValidateOptions<ServerOptions>
    {
        public ValidateOptionsResult Validate(string? name, ServerOptions options)
        {
            try
            {
                options.Validate();
                return ValidateOptionsResult.Success;
            }
            catch (ArgumentException e)
            {
                return ValidateOptionsResult.Fail($"BitBoxSync server option {e.ParamName}: {ServerOptions.MessageOf(e)}");
            }
        }
    }
}
