using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Threading.RateLimiting;
using Microsoft.AspNetCore.Http;

namespace BitBoxSync.Server;

/// <summary>
/// Rate limits (System.Threading.RateLimiting, the limiters behind ASP.NET Core's rate-limiting
/// middleware): unauthenticated requests per client address, authenticated writes per bearer token,
/// in fixed one-minute windows. They are applied by the endpoints themselves, so that a server
/// mounted in a host app is limited whatever the host's middleware (the host can still add its own
/// policies to the endpoint group). A refused request is answered 429 <c>{"error": "rate limited"}</c>
/// with <c>Retry-After</c> and changes nothing. Parked long polls are reads and never count.
/// </summary>
internal sealed class RateLimits : IDisposable
{
    /// <summary>Which limit an endpoint is under.</summary>
    public enum Kind
    {
        None,
        Anonymous,
        Writes,
    }

    private readonly PartitionedRateLimiter<HttpContext> _anonymous;
    private readonly PartitionedRateLimiter<HttpContext> _writes;

    public RateLimits(ServerOptions options)
    {
        _anonymous = PartitionedRateLimiter.Create<HttpContext, string>(http =>
            Window(options.AnonymousRequestsPerMinute, "address:" + (http.Connection.RemoteIpAddress?.ToString() ?? "unknown")));
        _writes = PartitionedRateLimiter.Create<HttpContext, string>(http =>
            Window(options.WritesPerMinutePerToken, "token:" + TokenKey(http)));
    }

    /// <summary>
    /// Takes a permit for the request; when refused, answers 429 with <c>Retry-After</c> and returns false.
    /// </summary>
    public async ValueTask<bool> TryEnterAsync(HttpContext http, Kind kind)
    {
        try
        {
            Take(http, kind, 1);
            return true;
        }
        catch (RateLimitedException refused)
        {
            await RefuseAsync(http, refused);
            return false;
        }
    }

    /// <summary>
    /// Takes <paramref name="permits"/> permits at once (a batch of writes counts each write), or
    /// throws <see cref="RateLimitedException"/> having taken none.
    /// </summary>
    public void Take(HttpContext http, Kind kind, int permits)
    {
        var limiter = kind switch
        {
            Kind.Anonymous => _anonymous,
            Kind.Writes => _writes,
            _ => null,
        };
        if (limiter is null) return;
        using var lease = limiter.AttemptAcquire(http, permits);
        if (lease.IsAcquired) return;
        throw new RateLimitedException(lease.TryGetMetadata(MetadataName.RetryAfter, out var wait) ? wait : TimeSpan.FromMinutes(1));
    }

    /// <summary>Answers 429 <c>{"error": "rate limited"}</c> with <c>Retry-After</c> in whole seconds.</summary>
    public static Task RefuseAsync(HttpContext http, RateLimitedException refused)
    {
        if (http.Response.HasStarted) return Task.CompletedTask;
        http.Response.Headers.RetryAfter = Math.Max(1, (int)Math.Ceiling(refused.RetryAfter.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
        return Endpoints.Handler.WriteError(http, StatusCodes.Status429TooManyRequests, "rate limited");
    }

    /// <summary>
    /// Most writes one batch may hold: the extension's limit, or the per-token write limit when that
    /// is lower (a batch must fit in one window).
    /// </summary>
    public static int MaxBatchWrites(ServerOptions options) =>
        options.WritesPerMinutePerToken > 0 ? Math.Min(BitBoxSync.Protocol.Limits.MaxBatchItems, options.WritesPerMinutePerToken) : BitBoxSync.Protocol.Limits.MaxBatchItems;

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

    /// <summary>A bearer token's partition key: a prefix of its hash (the token itself is never kept).</summary>
    private static string TokenKey(HttpContext http)
    {
        var header = http.Request.Headers.Authorization.ToString();
        return header.Length == 0 ? "none" : Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(header)))[..32];
    }

    public void Dispose()
    {
        _anonymous.Dispose();
        _writes.Dispose();
    }
}

/// <summary>A rate limit refused the request; nothing was taken.</summary>
internal sealed class RateLimitedException(TimeSpan retryAfter) : Exception("rate limited")
{
    /// <summary>When the window has permits again.</summary>
    public TimeSpan RetryAfter { get; } = retryAfter;
}
