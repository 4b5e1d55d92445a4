using System.Security.Cryptography;
using System.Text.Json;
using BitBoxSync.Server.Store;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using static BitBoxSync.Server.Interop;

namespace BitBoxSync.Server;

/// <summary>
/// What every endpoint shares: the store, the watch hub, the settings, the clock, body reading
/// with a size cap, bearer authentication and challenge consumption.
/// </summary>
internal sealed class Api(ServerStore store, WatchHub hub, ServerOptions options, ILogger logger, ServerMetrics metrics, RateLimits limits)
{
    /// <summary>Largest request body accepted: a 64 KiB ciphertext in base64 plus the other fields.</summary>
    public const int MaxBodyBytes = 128 * 1024;

    public ServerStore Store => store;
    public WatchHub Hub => hub;
    public ServerOptions Options => options;
    public ILogger Logger => logger;
    public ServerMetrics Metrics => metrics;
    public RateLimits Limits => limits;

    public AuthSettings AuthSettings { get; } = new(options.ChallengeLifetime, options.TokenLifetime, options.RequireAttestation);

    public SharingSettings SharingSettings { get; } =
        Core.Sharing.settings(ServerOriginModule.canonicalize(options.PublicOrigin).ResultValue);

    public DateTimeOffset Now => options.Clock.GetUtcNow();

    /// <summary>The server's clock (tests substitute one).</summary>
    public TimeProvider Clock => options.Clock;

    public static byte[] Random32() => RandomNumberGenerator.GetBytes(32);

    /// <summary>Reads and strictly decodes a JSON body (400 when malformed, 413 when too large).</summary>
    public async Task<T> BodyAsync<T>(HttpContext http)
    {
        var bytes = await RawBodyAsync(http);
        var decoded = BitBoxSync.Protocol.Wire.Json.decodeRequest<T>(bytes);
        return decoded.IsOk ? decoded.ResultValue : throw ApiFailure.BadRequest(decoded.ErrorValue);
    }

    /// <summary>The body bytes, capped at <paramref name="maxBytes"/> (default <see cref="MaxBodyBytes"/>).</summary>
    public static async Task<byte[]> RawBodyAsync(HttpContext http, int maxBytes = MaxBodyBytes)
    {
        if (http.Request.ContentLength > maxBytes) throw TooLarge(maxBytes);
        if (maxBytes > MaxBodyBytes && http.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit
            && limit.MaxRequestBodySize < maxBytes)
            limit.MaxRequestBodySize = maxBytes; // the host's smaller limit is for single-item bodies
        using var buffer = new MemoryStream(http.Request.ContentLength is { } known and > 0 ? (int)known : 4096);
        var chunk = System.Buffers.ArrayPool<byte>.Shared.Rent(16 * 1024);
        try
        {
            int read;
            while ((read = await http.Request.Body.ReadAsync(chunk, http.RequestAborted)) > 0)
            {
                if (buffer.Length + read > maxBytes) throw TooLarge(maxBytes);
                buffer.Write(chunk, 0, read);
            }
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(chunk);
        }
        return buffer.Length == buffer.Capacity ? buffer.GetBuffer() : buffer.ToArray();
    }

    private static ApiFailure TooLarge(int maxBytes) =>
        new(ApiErrorModule.tooLarge($"request body exceeds {maxBytes} bytes"));

    /// <summary>Whether a JSON object body carries <paramref name="field"/> (false for malformed JSON, which the strict decoder reports).</summary>
    public static bool HasField(ReadOnlySpan<byte> body, string field)
    {
        try
        {
            using var doc = JsonDocument.Parse(body.ToArray());
            return doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty(field, out _);
        }
        catch (JsonException)
        {
            return false;
        }
    }

    /// <summary>The caller of an authenticated request: a valid bearer token, else 401.</summary>
    public async Task<RegisteredIdentity> AuthenticateAsync(HttpContext http, StoreTx tx)
    {
        var header = http.Request.Headers.Authorization.ToString();
        const string prefix = "Bearer ";
        if (!header.StartsWith(prefix, StringComparison.Ordinal) || header.Length == prefix.Length)
            throw new ApiFailure(ApiErrorModule.unauthorized("missing bearer token"));
        var token = await tx.GetTokenAsync(Core.Auth.tokenHash(header[prefix.Length..]), http.RequestAborted);
        var keyId = Core.Auth.authenticate(Opt(token), Now).OrFail();
        return await tx.GetIdentityAsync(keyId, http.RequestAborted)
            ?? throw new InvalidOperationException("token of an unregistered identity");
    }

    /// <summary>Authenticates in a read transaction of its own (before a challenge is consumed).</summary>
    public Task<RegisteredIdentity> AuthenticateAsync(HttpContext http) =>
        store.ReadAsync(tx => AuthenticateAsync(http, tx), http.RequestAborted);

    /// <summary>
    /// Presents a challenge: it is consumed in a transaction of its own, so that it stays used
    /// whether or not the rest of the request succeeds (single use, docs/protocol.md §10.2).
    /// </summary>
    public async Task ConsumeChallengeAsync(HttpContext http, Challenge challenge, ChallengePurpose purpose, IdentityKind kind)
    {
        var use = await store.WriteAsync(async tx =>
        {
            var stored = await tx.GetChallengeAsync(challenge, http.RequestAborted);
            var use = Core.Auth.useChallenge(Opt(stored), purpose, kind, Now);
            if (use.MarkUsed is not null) await tx.MarkChallengeUsedAsync(challenge, http.RequestAborted);
            return use;
        }, http.RequestAborted);
        use.Result.OrFail();
    }

    /// <summary>Issues a token for an identity inside the caller's transaction, evicting the oldest beyond 32.</summary>
    public async Task<(string Token, StoredToken Stored)> IssueTokenAsync(StoreTx tx, KeyId keyId, CancellationToken ct)
    {
        await tx.LockIdentityAsync(keyId, ct); // concurrent logins and refreshes respect the 32-token limit
        await tx.DeleteStaleTokensAsync(keyId, Now, ct);
        var active = await tx.ActiveTokensAsync(keyId, Now, ct);
        var issued = Core.Auth.issueToken(AuthSettings, keyId, Random32(), active.ToFSharpList(), Now);
        await tx.InsertTokenAsync(issued.Item2, ct);
        foreach (var evicted in issued.Item3) await tx.RevokeTokenAsync(evicted.TokenHash, ct);
        return (issued.Item1, issued.Item2);
    }
}
