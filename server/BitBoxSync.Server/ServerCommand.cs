using System.CommandLine;
using System.Globalization;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;

namespace BitBoxSync.Server;

/// <summary>
/// The server command line: every <see cref="ServerOptions"/> setting has an option. Settings are read
/// from appsettings.json (section <c>BitBoxSync</c>), then <c>BITBOXSYNC_*</c> environment variables,
/// then the command line (later sources win).
/// </summary>
internal static class ServerCommand
{
    /// <summary>The option each settable <see cref="ServerOptions"/> property is given on the command line.</summary>
    internal static readonly IReadOnlyDictionary<string, string> OptionFor = new Dictionary<string, string>
    {
        [nameof(ServerOptions.Urls)] = "--urls",
        [nameof(ServerOptions.PublicOrigin)] = "--public-origin",
        [nameof(ServerOptions.Store)] = "--store",
        [nameof(ServerOptions.SqlitePath)] = "--sqlite",
        [nameof(ServerOptions.PostgresConnectionString)] = "--postgres",
        [nameof(ServerOptions.WatchTimeout)] = "--watch-timeout",
        [nameof(ServerOptions.ChallengeLifetime)] = "--challenge-lifetime",
        [nameof(ServerOptions.TokenLifetime)] = "--token-lifetime",
        [nameof(ServerOptions.RequireAttestation)] = "--require-attestation",
        [nameof(ServerOptions.MinimumLogLevel)] = "--log-level",
        [nameof(ServerOptions.AnonymousRequestsPerMinute)] = "--anonymous-rate",
        [nameof(ServerOptions.WritesPerMinutePerToken)] = "--write-rate",
    };

    /// <summary>Builds the command; its action calls <paramref name="run"/> with the resolved options.</summary>
    internal static RootCommand Build(Func<ServerOptions, CancellationToken, Task<int>> run, IConfiguration? baseConfiguration = null)
    {
        var defaults = new ServerOptions();
        var urls = new Option<string[]>(OptionFor[nameof(ServerOptions.Urls)])
        {
            Description = $"Listen addresses, e.g. http://0.0.0.0:8090 (default {string.Join(", ", defaults.Urls)}; port 0 picks a free port)",
            AllowMultipleArgumentsPerToken = true,
            HelpName = "url",
        };
        var origin = new Option<string>(OptionFor[nameof(ServerOptions.PublicOrigin)])
        {
            Description = $"The server's public https origin as named in invites (default {defaults.PublicOrigin})",
            HelpName = "origin",
        };
        var store = new Option<string>(OptionFor[nameof(ServerOptions.Store)])
        {
            Description = "Database: sqlite (one process per file) or postgres (any number of processes) (default sqlite)",
        };
        store.AcceptOnlyFromAmong(StringComparer.OrdinalIgnoreCase, "sqlite", "postgres");
        var sqlite = new Option<string>(OptionFor[nameof(ServerOptions.SqlitePath)])
        {
            Description = $"The SQLite file, created when missing (default {defaults.SqlitePath} in the working directory)",
            HelpName = "path",
        };
        var postgres = new Option<string>(OptionFor[nameof(ServerOptions.PostgresConnectionString)])
        {
            Description = "PostgreSQL connection string (with --store postgres), e.g. \"Host=db;Username=bitboxsync;Database=bitboxsync\"",
            HelpName = "connection-string",
        };
        var watch = Duration(OptionFor[nameof(ServerOptions.WatchTimeout)], $"Long-poll wait before answering timedOut, under 70 s (default {Show(defaults.WatchTimeout)})");
        var challenge = Duration(OptionFor[nameof(ServerOptions.ChallengeLifetime)], $"How long a login challenge is accepted (default {Show(defaults.ChallengeLifetime)})");
        var token = Duration(OptionFor[nameof(ServerOptions.TokenLifetime)], $"Bearer token lifetime, over 2 days (default {Show(defaults.TokenLifetime)})");
        var attestation = new Option<bool>(OptionFor[nameof(ServerOptions.RequireAttestation)])
        {
            Description = "Demand an attestation at login and refresh (test mode: only the dummy format is accepted)",
        };
        var anonymousRate = new Option<int?>(OptionFor[nameof(ServerOptions.AnonymousRequestsPerMinute)])
        {
            Description = $"Challenge and login requests per client address per minute before 429, 0 = off (default {defaults.AnonymousRequestsPerMinute})",
            HelpName = "per-minute",
        };
        var writeRate = new Option<int?>(OptionFor[nameof(ServerOptions.WritesPerMinutePerToken)])
        {
            Description = $"Authenticated writes per bearer token per minute before 429, 0 = off (default {defaults.WritesPerMinutePerToken})",
            HelpName = "per-minute",
        };
        var logLevel = new Option<LogLevel?>(OptionFor[nameof(ServerOptions.MinimumLogLevel)])
        {
            Description = $"Lowest level logged: Trace, Debug, Information, Warning, Error (default {defaults.MinimumLogLevel})",
            HelpName = "level",
        };

        var root = new RootCommand("""
            BitBoxSync sync server. Stores only ciphertext, opaque IDs, public keys and hashes.
            Settings come from appsettings.json (section "BitBoxSync"), BITBOXSYNC_<Setting> environment variables
            (e.g. BITBOXSYNC_Store=Postgres) and these options, later ones winning. Ctrl+C stops it gracefully.
            """)
        {
            urls, origin, store, sqlite, postgres, watch, challenge, token, attestation, logLevel, anonymousRate, writeRate,
        };
        root.SetAction(async (parse, ct) =>
        {
            var configuration = baseConfiguration ?? DefaultConfiguration();
            var options = new ServerOptions();
            configuration.GetSection("BitBoxSync").Bind(options);
            configuration.Bind(options); // environment variables arrive without the section prefix
            if (parse.GetResult(urls) is not null) options.Urls = parse.GetValue(urls)!;
            if (parse.GetResult(origin) is not null) options.PublicOrigin = parse.GetValue(origin)!;
            if (parse.GetResult(store) is not null) options.Store = Enum.Parse<ServerStoreKind>(parse.GetValue(store)!, ignoreCase: true);
            if (parse.GetResult(sqlite) is not null) options.SqlitePath = parse.GetValue(sqlite)!;
            if (parse.GetResult(postgres) is not null) options.PostgresConnectionString = parse.GetValue(postgres);
            if (parse.GetValue(watch) is { } w) options.WatchTimeout = w;
            if (parse.GetValue(challenge) is { } c) options.ChallengeLifetime = c;
            if (parse.GetValue(token) is { } t) options.TokenLifetime = t;
            if (parse.GetResult(attestation) is not null) options.RequireAttestation = parse.GetValue(attestation);
            if (parse.GetValue(logLevel) is { } level) options.MinimumLogLevel = level;
            if (parse.GetValue(anonymousRate) is { } ar) options.AnonymousRequestsPerMinute = ar;
            if (parse.GetValue(writeRate) is { } wr) options.WritesPerMinutePerToken = wr;
            try
            {
                options.Validate();
            }
            catch (ArgumentException e)
            {
                parse.InvocationConfiguration.Error.WriteLine($"invalid configuration ({e.ParamName}): {Message(e)}");
                return 2;
            }
            return await run(options, ct);
        });
        return root;
    }

    private static IConfiguration DefaultConfiguration() =>
        new ConfigurationBuilder()
            .SetBasePath(AppContext.BaseDirectory)
            .AddJsonFile("appsettings.json", optional: true)
            .AddJsonFile(Path.Combine(Directory.GetCurrentDirectory(), "appsettings.json"), optional: true)
            .AddEnvironmentVariables("BITBOXSYNC_")
            .Build();

    /// <summary>The exception message without the " (Parameter 'x')" suffix.</summary>
    private static string Message(ArgumentException e) =>
        e.ParamName is { } p && e.Message.EndsWith($" (Parameter '{p}')", StringComparison.Ordinal)
            ? e.Message[..^$" (Parameter '{p}')".Length]
            : e.Message;

    private static Option<TimeSpan?> Duration(string name, string description) =>
        new(name)
        {
            Description = description + "; written as 45s, 10m, 12h, 30d or hh:mm:ss",
            HelpName = "duration",
            CustomParser = result =>
            {
                var text = result.Tokens.Single().Value;
                if (TryParseDuration(text, out var value)) return value;
                result.AddError($"{name}: '{text}' is not a duration (45s, 10m, 12h, 30d or hh:mm:ss)");
                return null;
            },
        };

    /// <summary>Parses <c>45s</c>, <c>10m</c>, <c>12h</c>, <c>30d</c> or a <see cref="TimeSpan"/> (<c>hh:mm:ss</c>, <c>d.hh:mm:ss</c>).</summary>
    internal static bool TryParseDuration(string text, out TimeSpan value)
    {
        value = default;
        if (text.Length >= 2 && "smhd".Contains(text[^1]) &&
            double.TryParse(text[..^1], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var n) && n >= 0)
        {
            value = text[^1] switch
            {
                's' => TimeSpan.FromSeconds(n),
                'm' => TimeSpan.FromMinutes(n),
                'h' => TimeSpan.FromHours(n),
                _ => TimeSpan.FromDays(n),
            };
            return true;
        }
        return text.Contains(':') && TimeSpan.TryParse(text, CultureInfo.InvariantCulture, out value);
    }

    private static string Show(TimeSpan t) =>
        t.TotalDays >= 1 && t.TotalDays % 1 == 0 ? $"{t.TotalDays:0}d"
        : t.TotalMinutes >= 1 && t.TotalMinutes % 1 == 0 ? $"{t.TotalMinutes:0}m"
        : $"{t.TotalSeconds:0.###}s";
}
