using System.CommandLine;

namespace BitBoxSync.Notes;

/// <summary>The notes command line.</summary>
public static class NotesCommand
{
    /// <summary>The passphrase: BITBOXSYNC_PASSPHRASE, else typed at a prompt (not echoed).</summary>
    private static string Passphrase(TextWriter output)
    {
        if (Environment.GetEnvironmentVariable("BITBOXSYNC_PASSPHRASE") is { Length: > 0 } fromEnvironment) return fromEnvironment;
        if (Console.IsInputRedirected)
            throw new ArgumentException("--identity-file needs a passphrase: set BITBOXSYNC_PASSPHRASE (input is not a terminal)");
        output.Write("passphrase: ");
        var typed = new System.Text.StringBuilder();
        for (var k = Console.ReadKey(intercept: true); k.Key != ConsoleKey.Enter; k = Console.ReadKey(intercept: true))
            if (k.Key == ConsoleKey.Backspace && typed.Length > 0) typed.Length--;
            else if (!char.IsControl(k.KeyChar)) typed.Append(k.KeyChar);
        output.WriteLine();
        return typed.Length > 0 ? typed.ToString() : throw new ArgumentException("an empty passphrase");
    }

    private static async Task<LocalKeystore> CreateIdentityAsync(string file, IKeyProtector protector, TextWriter output, CancellationToken ct)
    {
        var identity = LocalKeystore.Create();
        await identity.SaveAsync(file, protector, ct);
        await output.WriteLineAsync($"created identity {identity.KeyId[..16]}… in {file}");
        return identity;
    }

    /// <summary>Builds the command; output goes to <paramref name="output"/>.</summary>
    public static RootCommand Build(TextWriter output)
    {
        var dir = new Option<string>("--dir") { Description = "This instance's directory (notes.sqlite, sync.sqlite)", DefaultValueFactory = _ => "notes-data", Recursive = true };
        var server = new Option<string>("--server")
        {
            Description = "The sync server's URL",
            DefaultValueFactory = _ => Environment.GetEnvironmentVariable("BITBOXSYNC_BASE_URL") ?? "http://127.0.0.1:8090",
            Recursive = true,
        };
        var user = new Option<string>("--user") { Description = "Who you are (a dummy keystore label: demo only)", DefaultValueFactory = _ => "notes-demo-user", Recursive = true };
        var identityFile = new Option<string?>("--identity-file")
        {
            Description = "A real identity in this file (created when missing), sealed with the passphrase from BITBOXSYNC_PASSPHRASE or typed at a prompt; "
                + "the sync store's tokens and keys are sealed with it too. Without it, --user's demo identity is used",
            Recursive = true,
        };
        var root = new RootCommand("notes: a notes app whose notes live in its own SQLite database and sync end-to-end encrypted") { dir, server, user, identityFile };

        Command Sub(string name, string description, Func<NotesApp, ParseResult, CancellationToken, Task> action, params Symbol[] symbols)
        {
            var command = new Command(name, description);
            foreach (var s in symbols)
                if (s is Argument a) command.Add(a);
                else command.Add((Option)s);
            command.SetAction(async (parse, ct) =>
            {
                try
                {
                    if (!Uri.TryCreate(parse.GetValue(server), UriKind.Absolute, out var serverUri))
                        throw new ArgumentException($"--server: '{parse.GetValue(server)}' is not an absolute URL");
                    IKeyProtector? protector = null;
                    IIdentity identity;
                    if (parse.GetValue(identityFile) is { Length: > 0 } file)
                    {
                        protector = new PassphraseKeyProtector(Passphrase(output));
                        identity = File.Exists(file) ? await LocalKeystore.LoadAsync(file, protector, ct) : await CreateIdentityAsync(file, protector, output, ct);
                    }
                    else
                    {
                        identity = DummyKeystore.FromLabel(parse.GetValue(user)!);
                    }
                    try
                    {
                        await using var app = await NotesApp.OpenAsync(parse.GetValue(dir)!, serverUri, identity, protector, ct);
                        await action(app, parse, ct);
                        return 0;
                    }
                    finally
                    {
                        (identity as IDisposable)?.Dispose();
                    }
                }
                catch (Exception e) when (e is SyncException or KeyNotFoundException or ArgumentException)
                {
                    await output.WriteLineAsync($"error: {e.Message}");
                    return 1;
                }
            });
            root.Add(command);
            return command;
        }

        var title = new Argument<string>("title");
        var body = new Argument<string>("body");
        var key = new Argument<string>("key");
        Sub("add", "Add a note and sync", async (app, p, ct) =>
        {
            var k = await app.AddAsync(p.GetValue(title)!, p.GetValue(body)!, ct);
            await app.SyncAsync(ct);
            await output.WriteLineAsync($"added {k}");
        }, title, body);
        var newBody = new Argument<string>("body");
        Sub("edit", "Replace a note's body and sync", async (app, p, ct) =>
        {
            await app.EditAsync(p.GetValue(key)!, p.GetValue(newBody)!, ct);
            await app.SyncAsync(ct);
            await output.WriteLineAsync("edited");
        }, key, newBody);
        var offline = new Option<bool>("--offline") { Description = "List without syncing first" };
        Sub("list", "Sync, then list the notes", async (app, p, ct) =>
        {
            if (!p.GetValue(offline)) await app.SyncAsync(ct);
            foreach (var (k, n) in await app.ListAsync(ct))
                await output.WriteLineAsync($"{k}  {n.Title}: {n.Body}");
        }, offline);
        Sub("sync", "Sync once", async (app, _, ct) =>
        {
            await app.SyncAsync(ct);
            await output.WriteLineAsync($"synced; {app.Engine.Status.Conflicts} conflict(s)");
        });
        Sub("conflicts", "List conflicting edits (base / local / remote)", async (app, _, ct) =>
        {
            foreach (var c in await app.Notes.ConflictsAsync(ct))
                await output.WriteLineAsync($"{c.Key}\n  base:   {c.Base?.Body ?? "(none)"}\n  local:  {c.Local.Value?.Body}\n  remote: {c.Remote.Body}");
        });
        var choice = new Argument<string>("choice") { Description = "local, remote, or the body to keep" };
        Sub("resolve", "Resolve a conflict and sync", async (app, p, ct) =>
        {
            var k = p.GetValue(key)!;
            switch (p.GetValue(choice))
            {
                case "local": await app.Notes.KeepLocalAsync(k, ct); break;
                case "remote": await app.Notes.TakeRemoteAsync(k, ct); break;
                case var text:
                    var conflict = (await app.Notes.ConflictsAsync(ct)).FirstOrDefault(c => c.Key == k)
                        ?? throw new KeyNotFoundException($"no conflict on '{k}'");
                    await app.Notes.ResolveWithValueAsync(k, conflict.Remote with { Body = text! }, ct);
                    break;
            }
            await app.SyncAsync(ct);
            await output.WriteLineAsync("resolved");
        }, key, choice);
        Sub("watch", "Sync in the background and print incoming notes until Ctrl+C", async (app, _, ct) =>
        {
            var run = app.Engine.RunAsync(ct);
            await output.WriteLineAsync("watching (Ctrl+C to stop)");
            try
            {
                await foreach (var e in app.Engine.Events.ReadAllAsync(ct))
                    if (e is { Type: SyncEventType.ItemDownloaded, Collection: "notes", Key: { } k } && await app.Database.GetAsync(k, ct) is { } n)
                        await output.WriteLineAsync($"{e.At:HH:mm:ss} {k}  {n.Title}: {n.Body}");
                    else if (e is { Type: SyncEventType.ItemDeleted, Collection: "notes", Key: { } gone })
                        await output.WriteLineAsync($"{e.At:HH:mm:ss} {gone}  (deleted)");
                    else if (e is { Type: SyncEventType.ItemRevived, Collection: "notes", Key: { } back })
                        await output.WriteLineAsync($"{e.At:HH:mm:ss} {back}  (deleted elsewhere, kept: it was edited here or there meanwhile)");
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
            }
            try
            {
                await run;
            }
            catch (OperationCanceledException)
            {
            }
        });
        return root;
    }
}
