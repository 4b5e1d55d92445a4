using System.CommandLine;
using Spectre.Console;

namespace BitBoxSync.Demo;

/// <summary>The demo's command line (System.CommandLine): options, validation and help.</summary>
public static class DemoCommand
{
    /// <summary>Builds the root command; its action runs the demo and writes to <paramref name="console"/>.</summary>
    public static RootCommand Build(IAnsiConsole console)
    {
        var server = new Option<Uri?>("--server")
        {
            Description = "Run against this server (e.g. http://127.0.0.1:8090) instead of an embedded one",
            CustomParser = result =>
            {
                var text = result.Tokens.Single().Value;
                if (Uri.TryCreate(text, UriKind.Absolute, out var uri) && (uri.Scheme == "http" || uri.Scheme == "https"))
                    return uri;
                result.AddError($"--server: '{text}' is not an absolute http or https URL");
                return null;
            },
        };
        var publicOrigin = new Option<string>("--public-origin")
        {
            Description = "With --server: the server's configured public origin, named in invites",
            DefaultValueFactory = _ => Environment.GetEnvironmentVariable("BITBOXSYNC_PUBLIC_ORIGIN") ?? DemoSettings.DefaultPublicOrigin,
        };
        var keep = new Option<bool>("--keep") { Description = "Keep the databases (printed at the end) instead of deleting them" };
        var writes = new Option<int>("--watch-writes")
        {
            Description = "How many writes the long-poll part sends (1-20)",
            DefaultValueFactory = _ => 5,
        };
        writes.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int>() is < 1 or > 20) result.AddError("--watch-writes must be between 1 and 20");
        });

        var identityFile = new Option<string?>("--identity-file")
        {
            Description = "Give Alice a real identity kept in this file (created when missing), sealed with the passphrase from "
                + "BITBOXSYNC_PASSPHRASE; her sync store is sealed with it too. Without it, both use demo identities",
        };
        var root = new RootCommand("BitBoxSync demo: two devices, end-to-end encrypted sync, sharing, a conflict and the long poll")
        {
            server, publicOrigin, keep, writes, identityFile,
        };
        root.SetAction(async (parse, cancellationToken) =>
        {
            var settings = new DemoSettings
            {
                Server = parse.GetValue(server),
                PublicOrigin = parse.GetValue(publicOrigin)!,
                Keep = parse.GetValue(keep),
                WatchWrites = parse.GetValue(writes),
                IdentityFile = parse.GetValue(identityFile),
                Passphrase = Environment.GetEnvironmentVariable("BITBOXSYNC_PASSPHRASE"),
            };
            if (settings.IdentityFile is not null && string.IsNullOrEmpty(settings.Passphrase))
            {
                console.MarkupLine("[red]--identity-file needs a passphrase: set BITBOXSYNC_PASSPHRASE[/]");
                return 2;
            }
            return await DemoRun.RunAsync(settings, console, cancellationToken);
        });
        return root;
    }
}
