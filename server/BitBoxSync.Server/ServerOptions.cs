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
/// Server configuration. Bound from the <c>BitBoxSync</c> configuration section (appsettings.json,
/// environment variables <c>BITBOXSYNC_…</c>, command-line options); see docs/server.md.
/// </summary>
public sealed class ServerOptions
{
    /// <summary>Addresses to listen on, e.g. <c>http://127.0.0.1:8090</c>; port 0 picks a free port.</summary>
    public string[] Urls { get; set; } = ["http://127.0.0.1:8090"];

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

    /// <summary>The lowest level written to the log (default Information).</summary>
    public LogLevel MinimumLogLevel { get; set; } = LogLevel.Information;

    /// <summary>The clock (tests substitute one).</summary>
    internal TimeProvider Clock { get; set; } = TimeProvider.System;

    /// <summary>Checks the options; throws <see cref="ArgumentException"/> naming the bad one.</summary>
    public void Validate()
    {
        if (Urls is null || Urls.Length == 0)
            throw new ArgumentException("at least one listen URL is required", nameof(Urls));
        foreach (var url in Urls)
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
    }
}
