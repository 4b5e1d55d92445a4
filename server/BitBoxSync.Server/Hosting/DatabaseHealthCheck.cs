using BitBoxSync.Protocol.Wire;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace BitBoxSync.Server.Hosting;

/// <summary>Readiness: the database answers a read (registered with a 5 s timeout).</summary>
internal sealed class DatabaseHealthCheck(ServerRuntime runtime) : IHealthCheck
{
    /// <summary>The registration's name.</summary>
    public const string Name = "bitboxsync-database";

    /// <summary>The tag of the checks <c>/readyz</c> runs.</summary>
    public const string ReadyTag = "bitboxsync-ready";

    private static readonly NamespaceId Probe = Bin.parse<NamespaceIdKind>(new string('0', 32)).ResultValue;

    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        try
        {
            await runtime.Store.ReadAsync(async tx =>
            {
                await tx.GetNamespaceAsync(Probe, cancellationToken);
                return 0;
            }, cancellationToken);
            return HealthCheckResult.Healthy();
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            // The message names the failure, never a connection string.
            return new HealthCheckResult(context.Registration.FailureStatus, "database unavailable: " + e.GetType().Name);
        }
    }
}
