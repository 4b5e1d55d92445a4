using System.CommandLine;
using Microsoft.Extensions.Configuration;

namespace BitBoxSync.Server.Tool;

/// <summary>
/// <c>bitboxsync-server check-health</c>: asks a running server's <c>/readyz</c> and exits 0 when it
/// answers 200 within the timeout, 1 otherwise. The container image has no curl or wget, so its
/// HEALTHCHECK runs this.
/// </summary>
internal static class HealthCommand
{
    internal static Command Build(Func<IConfiguration>? configuration = null)
    {
        var url = new Option<Uri?>("--url")
        {
            CustomParser = result =>
            {
                var text = result.Tokens.Single().Value;
                if (Uri.TryCreate(text, UriKind.Absolute, out var u) && (u.Scheme == Uri.UriSchemeHttp || u.Scheme == Uri.UriSchemeHttps)) return u;
                result.AddError($"--url: '{text}' is not an absolute http or https URL");
                return null;
            },
            Description = "The readiness URL (default: /readyz on the first address the server is configured to listen on, with a wildcard host read as 127.0.0.1)",
            HelpName = "url",
        };
        var timeout = new Option<int>("--timeout")
        {
            Description = "Seconds to wait for the answer (default 5)",
            DefaultValueFactory = _ => 5,
            HelpName = "seconds",
        };
        var command = new Command("check-health", "Exit 0 when a running server is ready (its /readyz answers 200), 1 otherwise") { url, timeout };
        command.SetAction(async (parse, ct) =>
        {
            var target = parse.GetValue(url) ?? ReadinessUrl((configuration ?? (() => ServerCommand.CreateBuilder().Configuration))());
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(Math.Max(1, parse.GetValue(timeout))) };
            try
            {
                using var answer = await http.GetAsync(target, ct);
                parse.InvocationConfiguration.Output.WriteLine($"{target}: {(int)answer.StatusCode}");
                return answer.IsSuccessStatusCode ? 0 : 1;
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
            {
                parse.InvocationConfiguration.Error.WriteLine($"{target}: {e.Message}");
                return 1;
            }
        });
        return command;
    }

    /// <summary>/readyz on the first configured listen address (the same settings the server reads).</summary>
    internal static Uri ReadinessUrl(IConfiguration configuration)
    {
        var first = configuration[$"{ServerCommand.Section}:Urls:0"]
            ?? configuration["urls"]?.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).FirstOrDefault()
            ?? (configuration["http_ports"]?.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).FirstOrDefault() is { } port
                ? $"http://127.0.0.1:{port}"
                : ServerOptions.DefaultUrl);
        var builder = new UriBuilder(first.Replace("://+", "://127.0.0.1").Replace("://*", "://127.0.0.1"));
        if (builder.Host is "0.0.0.0" or "[::]" or "::") builder.Host = "127.0.0.1";
        builder.Path = builder.Path.TrimEnd('/') + "/readyz";
        return builder.Uri;
    }
}
