using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Threading.RateLimiting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.RateLimiting;
using Microsoft.Extensions.DependencyInjection;

namespace BitBoxSync.Server;

/// <summary>
/// ASP.NET Core rate limiting: unauthenticated requests per client address, authenticated writes
/// per bearer token (fixed one-minute windows). A refused request is answered 429
/// <c>{"error": "rate limited"}</c> with <c>Retry-After</c> and changes nothing. Parked long polls
/// are reads and never count.
/// </summary>
internal static class RateLimits
{
    public const string Anonymous = "anonymous";
    public const string Writes = "writes";

    public static void Add(IServiceCollection services, ServerOptions options)
    {
        services.AddRateLimiter(o =>
        {
            o.RejectionStatusCode = StatusCodes.Status429TooManyRequests;
            o.OnRejected = async (context, ct) =>
            {
                var http = context.HttpContext;
                var retryAfter = context.Lease.TryGetMetadata(MetadataName.RetryAfter, out var wait) ? wait : TimeSpan.FromMinutes(1);
                http.Response.Headers.RetryAfter = Math.Max(1, (int)Math.Ceiling(retryAfter.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
                await Endpoints.Handler.WriteError(http, StatusCodes.Status429TooManyRequests, "rate limited");
            };
            o.AddPolicy(Anonymous, http => Window(options.AnonymousRequestsPerMinute,
                "address:" + (http.Connection.RemoteIpAddress?.ToString() ?? "unknown")));
            o.AddPolicy(Writes, http => Window(options.WritesPerMinutePerToken, "token:" + TokenKey(http)));
        });
    }

    private static RateLimitPartition<string> Window(int perMinute, string key) =>
        perMinute <= 0
            ? RateLimitPartition.GetNoLimiter(key)
            : RateLimitPartition.GetFixedWindowLimiter(key, _ => new FixedWindowRateLimiterOptions
            {
                PermitLimit = perMinute,
                Window = TimeSpan.FromMinutes(1),
                QueueLimit = 0,
                AutoReplenishment = true,
            });

    /// <summary>A bearer token's partition key: its hash (the token itself is never kept).</summary>
    private static string TokenKey(HttpContext http)
    {
        var header = http.Request.Headers.Authorization.ToString();
        return header.Length == 0 ? "none" : Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(header)))[..32];
    }
}
