using System.Collections;
using System.CommandLine;
using System.Globalization;
using BitBoxSync.Server;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;

namespace BitBoxSync.Server.Tool;

/// <summary>
/// The server command line: every <see cref="ServerOptions"/> setting has an option. The command is a
/// standard ASP.NET Core host: configuration comes from appsettings.json and
/// appsettings.{Environment}.json in the working directory, environment variables (unprefixed for
/// the standard settings such as <c>Logging__Console__FormatterName</c> or <c>ASPNETCORE_URLS</c>;
/// <c>BITBOXSYNC_&lt;Setting&gt;</c> for the <c>BitBoxSync</c> section), then these options; later
/// sources win.
/// </summary>
internal static class ServerCommand
{
    /// <summary>The configuration section of <see cref="ServerOptions"/>.</summary>
    public const string Section = "BitBoxSync";

    /// <summary>The environment prefix that addresses the <see cref="Section"/>.</summary>
    public const string EnvironmentPrefix = "BITBOXSYNC_";

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
        [nameof(ServerOptions.TrustedProxies)] = "--trusted-proxy",
        [nameof(ServerOptions.GroupCommit)] = "--group-commit",
        [nameof(ServerOptions.BatchItems)] = "--batch-items",
    };

    /// <summary>
    /// Builds the command; its action prepares a host builder (<paramref name="createBuilder"/>, by
    /// default <see cref="CreateBuilder"/>), layers the options given on the command line over its
    /// configuration, validates the resolved <see cref="ServerOptions"/> and calls <paramref name="run"/>.
    /// </summary>
    internal static RootCommand Build(Func<WebApplicationBuilder, ServerOptions, CancellationToken, Task<int>> run,
        Func<WebApplicationBuilder>? createBuilder = null)
    {
        var defaults = new ServerOptions();
        var urls = new Option<string[]>(OptionFor[nameof(ServerOptions.Urls)])
        {
            Description = $"Listen addresses, e.g. http://0.0.0.0:8090 (default: the standard urls / ASPNETCORE_URLS / Kestrel settings, else {ServerOptions.DefaultUrl}; port 0 picks a free port)",
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
        var proxies = new Option<string[]>(OptionFor[nameof(ServerOptions.TrustedProxies)])
        {
            Description = "A reverse proxy (IP address or CIDR network) whose X-Forwarded-For/-Proto headers are believed; repeat for several (default: none, forwarded headers ignored)",
            AllowMultipleArgumentsPerToken = true,
            HelpName = "address",
        };
        var groupCommit = new Option<bool?>(OptionFor[nameof(ServerOptions.GroupCommit)])
        {
            Description = "true: concurrent writes share one transaction and one durable commit; false: one commit per write (default true)",
            HelpName = "true|false",
        };
        var batchItems = new Option<bool?>(OptionFor[nameof(ServerOptions.BatchItems)])
        {
            Description = "true: offer the batch-items extension (many items per request and transaction); false: single-item requests only, as the reference protocol (default true)",
            HelpName = "true|false",
        };
        var logLevel = new Option<LogLevel?>(OptionFor[nameof(ServerOptions.MinimumLogLevel)])
        {
            Description = $"Lowest level logged: Trace, Debug, Information, Warning, Error (default {defaults.MinimumLogLevel}; Logging:LogLevel:<category> in the configuration sets levels per category)",
            HelpName = "level",
        };

        var root = new RootCommand("""
            BitBoxSync sync server. Stores only ciphertext, opaque IDs, public keys and hashes.
            Settings come from appsettings.json in the working directory (section "BitBoxSync"), BITBOXSYNC_<Setting>
            environment variables (e.g. BITBOXSYNC_Store=Postgres), the standard ASP.NET Core settings (ASPNETCORE_URLS,
            Logging__Console__FormatterName=json, ...) and these options, later ones winning. Ctrl+C stops it gracefully.
            """)
        {
            urls, origin, store, sqlite, postgres, watch, challenge, token, attestation, logLevel, anonymousRate, writeRate, proxies, groupCommit, batchItems,
        };
        root.SetAction(async (parse, ct) =>
        {
            var builder = (createBuilder ?? CreateBuilder)();
            var given = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
            void Set(string setting, string? value) => given[$"{Section}:{setting}"] = value;
            if (parse.GetResult(urls) is not null) given["urls"] = string.Join(';', parse.GetValue(urls)!);
            if (parse.GetResult(origin) is not null) Set(nameof(ServerOptions.PublicOrigin), parse.GetValue(origin));
            if (parse.GetResult(store) is not null) Set(nameof(ServerOptions.Store), parse.GetValue(store));
            if (parse.GetResult(sqlite) is not null) Set(nameof(ServerOptions.SqlitePath), parse.GetValue(sqlite));
            if (parse.GetResult(postgres) is not null) Set(nameof(ServerOptions.PostgresConnectionString), parse.GetValue(postgres));
            if (parse.GetValue(watch) is { } w) Set(nameof(ServerOptions.WatchTimeout), w.ToString("c", CultureInfo.InvariantCulture));
            if (parse.GetValue(challenge) is { } c) Set(nameof(ServerOptions.ChallengeLifetime), c.ToString("c", CultureInfo.InvariantCulture));
            if (parse.GetValue(token) is { } t) Set(nameof(ServerOptions.TokenLifetime), t.ToString("c", CultureInfo.InvariantCulture));
            if (parse.GetResult(attestation) is not null) Set(nameof(ServerOptions.RequireAttestation), parse.GetValue(attestation) ? "true" : "false");
            if (parse.GetValue(anonymousRate) is { } ar) Set(nameof(ServerOptions.AnonymousRequestsPerMinute), ar.ToString(CultureInfo.InvariantCulture));
            if (parse.GetValue(writeRate) is { } wr) Set(nameof(ServerOptions.WritesPerMinutePerToken), wr.ToString(CultureInfo.InvariantCulture));
            if (parse.GetValue(groupCommit) is { } gc) Set(nameof(ServerOptions.GroupCommit), gc ? "true" : "false");
            if (parse.GetValue(batchItems) is { } bi) Set(nameof(ServerOptions.BatchItems), bi ? "true" : "false");
            if (parse.GetResult(proxies) is not null)
            {
                var list = parse.GetValue(proxies)!;
                for (var i = 0; i < list.Length; i++) Set($"{nameof(ServerOptions.TrustedProxies)}:{i}", list[i]);
            }
            if (parse.GetValue(logLevel) is { } level)
            {
                Set(nameof(ServerOptions.MinimumLogLevel), level.ToString());
                given["Logging:LogLevel:Default"] = level.ToString();
            }
            builder.Configuration.AddInMemoryCollection(given);

            ServerOptions options;
            try
            {
                options = new ServerOptions();
                builder.Configuration.GetSection(Section).Bind(options);
                options.Validate();
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException)
            {
                var message = e is ArgumentException a ? $"({a.ParamName}): {ServerOptions.MessageOf(a)}" : ": " + e.Message;
                parse.InvocationConfiguration.Error.WriteLine($"invalid configuration {message}");
                return 2;
            }
            // The level is a default: Logging:LogLevel:Default in the configuration wins unless --log-level is given.
            builder.Configuration.Sources.Insert(0, new Microsoft.Extensions.Configuration.Memory.MemoryConfigurationSource
            {
                InitialData = Hosting.Standalone.LoggingDefaults(options.MinimumLogLevel, builder.Configuration["Logging:Console:FormatterName"]),
            });
            return await run(builder, options, ct);
        });
        return root;
    }

    /// <summary>
    /// The command's host builder: content root and appsettings.json in the working directory, the
    /// standard sources, and <c>BITBOXSYNC_&lt;Setting&gt;</c> environment variables mapped onto the
    /// <c>BitBoxSync</c> section (<c>__</c> separates nested keys).
    /// </summary>
    internal static WebApplicationBuilder CreateBuilder()
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions
        {
            Args = [],
            ContentRootPath = Directory.GetCurrentDirectory(),
        });
        // The slim builder reads only ASPNETCORE_/DOTNET_ variables: the standard unprefixed ones
        // (Logging__Console__FormatterName=json, Logging__LogLevel__…) are added here.
        builder.Configuration.AddEnvironmentVariables();
        builder.Configuration.AddInMemoryCollection(SectionVariables(Environment.GetEnvironmentVariables()));
        builder.Logging.ClearProviders();
        builder.Logging.AddConsole();
        // The slim builder pins the simple formatter in code, after the configuration: bind the
        // console section once more so that Logging:Console:FormatterName (json, systemd) applies.
        builder.Services.Configure<Microsoft.Extensions.Logging.Console.ConsoleLoggerOptions>(builder.Configuration.GetSection("Logging:Console"));
        // JSON lines are log records, not HTML: '+' and non-ASCII stay readable.
        builder.Services.Configure<Microsoft.Extensions.Logging.Console.JsonConsoleFormatterOptions>(o =>
            o.JsonWriterOptions = o.JsonWriterOptions with { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
        return builder;
    }

    /// <summary><c>BITBOXSYNC_Store=Postgres</c> → <c>BitBoxSync:Store</c>; <c>BITBOXSYNC_Urls__0</c> → <c>BitBoxSync:Urls:0</c>.</summary>
    internal static IEnumerable<KeyValuePair<string, string?>> SectionVariables(IDictionary environment)
    {
        foreach (DictionaryEntry e in environment)
        {
            if (e.Key is string key && key.StartsWith(EnvironmentPrefix, StringComparison.OrdinalIgnoreCase) && key.Length > EnvironmentPrefix.Length)
                yield return new($"{Section}:{key[EnvironmentPrefix.Length..].Replace("__", ":", StringComparison.Ordinal)}", e.Value as string);
        }
    }

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
