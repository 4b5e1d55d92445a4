using Microsoft.Extensions.Logging;

namespace BitBoxSync.Server;

/// <summary>Which database the server keeps its state in.</summary>
public enum ServerStoreKind
{
    /// <summary>One SQLite file (the embedded default; one server process per file).</summary>
    Sqlite,

    /// <summary>PostgreSQL (any number of server processes on one database).</summary>
    Postgres,
}

/// <summary>
/// Server configuration. The command binds it from the <c>BitBoxSync</c> configuration section
/// (appsettings.json, environment variables <c>BITBOXSYNC_…</c>, command-line options); a host app
/// passes it to <c>AddBitBoxSyncServer</c>. See docs/server.md. <see cref="Urls"/>,
/// <see cref="TrustedProxies"/> and <see cref="MinimumLogLevel"/> shape the standalone server
/// (<see cref="BitBoxSyncServer.StartAsync(ServerOptions, CancellationToken)"/> and the command);
/// a server mounted in a host app uses the host's listeners, forwarded headers and logging instead.
/// </summary>
public sealed class ServerOptions
{
    /// <summary>The listen address when neither <see cref="Urls"/> nor the host's URL settings name one.</summary>
    public const string DefaultUrl = "http://127.0.0.1:8090";

    /// <summary>
    /// Addresses to listen on, e.g. <c>http://127.0.0.1:8090</c>; port 0 picks a free port. Empty (the
    /// default): the host's standard settings (<c>urls</c>, <c>ASPNETCORE_URLS</c>,
    /// <c>ASPNETCORE_HTTP_PORTS</c>, <c>Kestrel:Endpoints</c>), else <see cref="DefaultUrl"/>.
    /// </summary>
    public string[] Urls { get; set; } = [];

    /// <summary>
    /// Reverse proxies (IP addresses or CIDR networks such as <c>10.0.0.0/8</c>) whose
    /// <c>X-Forwarded-For</c> and <c>X-Forwarded-Proto</c> headers are believed. Empty (the default):
    /// forwarded headers are ignored and the client address is the connection's, which is what the
    /// per-address rate limit uses.
    /// </summary>
    public string[] TrustedProxies { get; set; } = [];

    /// <summary>
    /// The server's public origin as printed in invites (canonical <c>https://host[:port]</c>);
    /// join requests must name exactly this origin.
    /// </summary>
    public string PublicOrigin { get; set; } = "https://localhost";

    /// <summary>The database kind (default SQLite).</summary>
    public ServerStoreKind Store { get; set; } = ServerStoreKind.Sqlite;

    /// <summary>The SQLite file (created when missing).</summary>
    public string SqlitePath { get; set; } = "bitboxsync-server.sqlite";

    /// <summary>The PostgreSQL connection string (required when <see cref="Store"/> is Postgres).</summary>
    public string? PostgresConnectionString { get; set; }

    /// <summary>How long a watch request waits for a change before answering <c>timedOut</c> (default 45 s, must be under 75 s).</summary>
    public TimeSpan WatchTimeout { get; set; } = TimeSpan.FromSeconds(45);

    /// <summary>How long a challenge is accepted (default 5 minutes).</summary>
    public TimeSpan ChallengeLifetime { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>Bearer token lifetime (default 30 days).</summary>
    public TimeSpan TokenLifetime { get; set; } = TimeSpan.FromDays(30);

    /// <summary>Demand an attestation at login and refresh. Test mode: only the dummy format is accepted.</summary>
    public bool RequireAttestation { get; set; }

    /// <summary>
    /// Unauthenticated requests (challenge, login) one client address may make per minute before the
    /// server answers 429 with <c>Retry-After</c> (default 120; 0 switches the limit off). The address
    /// is the connection's: behind a reverse proxy, configure the proxy to limit instead.
    /// </summary>
    public int AnonymousRequestsPerMinute { get; set; } = 120;

    /// <summary>
    /// Authenticated writes (item uploads, namespace, invite and join-request changes) one bearer
    /// token may make per minute before 429 (default 6 000; 0 switches the limit off). Reads and
    /// parked long polls never count.
    /// </summary>
    public int WritesPerMinutePerToken { get; set; } = 6000;

    /// <summary>
    /// Group commit (default on): concurrent writes share one transaction and one durable commit,
    /// each in a savepoint of its own, answered once the commit is durable. Off: one transaction and
    /// one commit per write.
    /// </summary>
    public bool GroupCommit { get; set; } = true;

    /// <summary>
    /// The batch-items extension (default on, docs/protocol.md §15): <c>GET /v1/capabilities</c>
    /// offers it and <c>POST …/items/batch-get</c> / <c>…/items/batch-put</c> read and write many
    /// items per request and per transaction. Off: the capabilities offer nothing and both answer
    /// 404, as a server without the extension does; clients fall back to single-item requests.
    /// </summary>
    public bool BatchItems { get; set; } = true;

    /// <summary>The lowest level written to the log (default Information).</summary>
    public LogLevel MinimumLogLevel { get; set; } = LogLevel.Information;

    /// <summary>The clock (tests substitute one).</summary>
    internal TimeProvider Clock { get; set; } = TimeProvider.System;

    /// <summary>Checks the options; throws <see cref="ArgumentException"/> naming the bad one.</summary>
    public void Validate()
    {
        foreach (var url in Urls ?? throw new ArgumentException("the listen URLs must not be null", nameof(Urls)))
            if (!Uri.TryCreate(url, UriKind.Absolute, out var u) || (u.Scheme != "http" && u.Scheme != "https"))
                throw new ArgumentException($"listen URL '{url}' must be an absolute http or https URL", nameof(Urls));
        var origin = ServerOriginModule.canonicalize(PublicOrigin ?? "");
        if (origin.IsError)
            throw new ArgumentException($"public origin '{PublicOrigin}': {origin.ErrorValue.Message}", nameof(PublicOrigin));
        if (origin.ResultValue.Value != PublicOrigin)
            throw new ArgumentException($"public origin must be written canonically: '{origin.ResultValue.Value}'", nameof(PublicOrigin));
        if (Store == ServerStoreKind.Sqlite && string.IsNullOrWhiteSpace(SqlitePath))
            throw new ArgumentException("the SQLite path is required", nameof(SqlitePath));
        if (Store == ServerStoreKind.Postgres && string.IsNullOrWhiteSpace(PostgresConnectionString))
            throw new ArgumentException("a PostgreSQL connection string is required for the Postgres store", nameof(PostgresConnectionString));
        if (WatchTimeout <= TimeSpan.Zero || WatchTimeout >= TimeSpan.FromSeconds(70))
            throw new ArgumentException("the watch timeout must be between 0 and 70 seconds (clients give up at 75 s)", nameof(WatchTimeout));
        if (ChallengeLifetime <= TimeSpan.Zero)
            throw new ArgumentException("the challenge lifetime must be positive", nameof(ChallengeLifetime));
        if (TokenLifetime <= TimeSpan.FromDays(2))
            throw new ArgumentException("the token lifetime must exceed 2 days (clients refresh 24 h before expiry)", nameof(TokenLifetime));
        if (AnonymousRequestsPerMinute < 0)
            throw new ArgumentException("the anonymous request limit must be 0 (off) or positive", nameof(AnonymousRequestsPerMinute));
        if (WritesPerMinutePerToken < 0)
            throw new ArgumentException("the write limit must be 0 (off) or positive", nameof(WritesPerMinutePerToken));
        foreach (var proxy in TrustedProxies ?? throw new ArgumentException("the trusted proxies must not be null", nameof(TrustedProxies)))
            if (!System.Net.IPAddress.TryParse(proxy, out _) && !System.Net.IPNetwork.TryParse(proxy, out _))
                throw new ArgumentException($"trusted proxy '{proxy}' is neither an IP address nor a CIDR network", nameof(TrustedProxies));
    }

    /// <summary>An <see cref="ArgumentException"/>'s message without the " (Parameter 'x')" suffix.</summary>
    internal static string MessageOf(ArgumentException e) =>
        e.ParamName is { } p && e.Message.EndsWith($" (Parameter '{p}')", StringComparison.Ordinal)
            ? e.Message[..^$" (Parameter '{p}')".Length]
            : e.Message;
}
