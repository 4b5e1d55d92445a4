using System.Diagnostics;
using BitBoxSync.Server;
using BitBoxSync.Storage.Sqlite;
using Microsoft.Extensions.Logging;
using Spectre.Console;

namespace BitBoxSync.Demo;

/// <summary>What the demo runs against and how.</summary>
public sealed class DemoSettings
{
    /// <summary>The server command's default public origin.</summary>
    public const string DefaultPublicOrigin = "https://localhost";

    /// <summary>An external server; null starts an embedded one on 127.0.0.1 (SQLite in the data directory).</summary>
    public Uri? Server { get; init; }

    /// <summary>The server's public origin, named in invites (the embedded server is configured with it).</summary>
    public string PublicOrigin { get; init; } = DefaultPublicOrigin;

    /// <summary>Keep the databases instead of deleting them at the end.</summary>
    public bool Keep { get; init; }

    /// <summary>How many writes the long-poll part sends.</summary>
    public int WatchWrites { get; init; } = 5;

    /// <summary>Pause between two long-poll writes.</summary>
    public TimeSpan WatchWriteSpacing { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>The directory for the databases; null makes a fresh temporary one.</summary>
    public string? DataDirectory { get; init; }

    /// <summary>
    /// Alice's real identity: a <see cref="LocalKeystore"/> in this file (created when missing),
    /// sealed with <see cref="Passphrase"/>; her sync store is sealed with it too. Null: the demo
    /// identities (zero set-up).
    /// </summary>
    public string? IdentityFile { get; init; }

    /// <summary>The passphrase of <see cref="IdentityFile"/>.</summary>
    public string? Passphrase { get; init; }
}

/// <summary>Runs the demo: docs/engine.md §10.1 (two devices, sharing, a conflict) then §10.2 (the long poll).</summary>
public static class DemoRun
{
    /// <summary>Runs the whole demo; returns the process exit code (0 success, 1 failure, 130 cancelled).</summary>
    public static async Task<int> RunAsync(DemoSettings settings, IAnsiConsole console, CancellationToken cancellationToken)
    {
        var dir = settings.DataDirectory ?? Directory.CreateTempSubdirectory("bitboxsync-demo-").FullName;
        Directory.CreateDirectory(dir);
        var flow = new DemoFlow(settings, console, dir);
        var exitCode = 1;
        try
        {
            await flow.RunAsync(cancellationToken);
            console.MarkupLine("[green bold]Demo finished: both devices agree.[/]");
            exitCode = 0;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            console.MarkupLine("[yellow]Cancelled.[/]");
            exitCode = 130;
        }
        catch (DemoFailure e)
        {
            console.MarkupLineInterpolated($"[red bold]Demo failed:[/] {e.Message}");
        }
        catch (Exception e)
        {
            console.MarkupLineInterpolated($"[red bold]Demo failed:[/] {e.GetType().Name}: {e.Message}");
        }
        finally
        {
            await flow.DisposeAsync();
            if (settings.Keep)
                console.MarkupLineInterpolated($"Databases kept in [blue]{dir}[/]");
            else
                TryDelete(dir);
        }
        return exitCode;
    }

    private static void TryDelete(string dir)
    {
        try
        {
            Directory.Delete(dir, recursive: true);
        }
        catch (IOException)
        {
            // A file still open elsewhere: the temporary directory is left for the OS to clean.
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}

/// <summary>A step of the demo did not produce what it should.</summary>
public sealed class DemoFailure(string message) : Exception(message);

/// <summary>One device: its engine (with a SQLite metadata store) and the app data it syncs.</summary>
internal sealed class Device(string name, SyncEngine engine) : IAsyncDisposable
{
    private CancellationTokenSource? _runStop;
    private Task? _run;

    public string Name { get; } = name;
    public SyncEngine Engine { get; } = engine;

    /// <summary>The app's values per collection (the demo keeps them in memory).</summary>
    public Dictionary<string, MemoryValueBackend<string>> Data { get; } = new(StringComparer.Ordinal);

    public void StartRun()
    {
        _runStop = new CancellationTokenSource();
        _run = Engine.RunAsync(_runStop.Token);
    }

    public async Task StopRunAsync()
    {
        if (_run is null || _runStop is null) return;
        await _runStop.CancelAsync();
        try
        {
            await _run.WaitAsync(TimeSpan.FromSeconds(5));
        }
        catch (OperationCanceledException)
        {
        }
        _run = null;
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await StopRunAsync();
        }
        finally
        {
            _runStop?.Dispose();
            await Engine.DisposeAsync(); // closes the store
        }
    }
}

internal sealed class DemoFlow(DemoSettings settings, IAnsiConsole console, string dir) : IAsyncDisposable
{
    private static readonly TimeSpan StepTimeout = TimeSpan.FromSeconds(30);
    private readonly string _runId = DateTime.UtcNow.ToString("yyyyMMddHHmmssfff");
    private BitBoxSyncServer? _server;
    private Device? _alice;
    private Device? _bob;
    private int _step;

    public async Task RunAsync(CancellationToken ct)
    {
        console.Write(new Rule("[bold]BitBoxSync demo[/]").LeftJustified());
        var baseAddress = await ServerAsync(ct);

        Step("Two devices, each with its own identity and SQLite metadata store");
        var alice = _alice = await OpenDeviceAsync("Alice", baseAddress, ct);
        var bob = _bob = await OpenDeviceAsync("Bob", baseAddress, ct);
        var aliceHome = await Timed(alice.Engine.DefaultNamespaceAsync, ct);
        var bobHome = await Timed(bob.Engine.DefaultNamespaceAsync, ct);
        Detail($"Alice's default namespace {Short(aliceHome.Id)}, Bob's {Short(bobHome.Id)} (the server only sees these random IDs)");

        Step("Alice's private notes, uploaded encrypted");
        var notes = Open(alice, aliceHome, "notes", Merges.PreferLocal<string>(),
            new MemoryValueBackend<string>(Codecs.String, new Dictionary<string, string> { ["account:primary:label"] = "Alice savings" }));
        Detail($"pre-existing app value: account:primary:label = {Quote(await ValueAsync(notes, "account:primary:label", ct))}");
        await notes.SetAsync("account:secondary:label", "Alice checking", ct);
        await Timed(alice.Engine.SyncNowAsync, ct);
        Detail($"synced {alice.Engine.Status.Uploaded} uploads; account:primary:label = {Quote(await ValueAsync(notes, "account:primary:label", ct))}");

        Step("Sharing: Alice creates a shared namespace and invites Bob");
        var shared = await Timed(alice.Engine.CreateSharedNamespaceAsync, ct);
        var invite = await Timed(c => shared.CreateInviteAsync(new InviteOptions { ServerOrigin = settings.PublicOrigin, Ttl = TimeSpan.FromMinutes(10) }, c), ct);
        var uri = InviteUri.Format(invite);
        Detail($"invite URI (shown as a QR code): {Redacted(uri)}");
        var scanned = InviteUri.Parse(uri); // Bob scans it
        await Timed(c => bob.Engine.SubmitJoinRequestAsync(scanned, null, c), ct);
        Detail("Bob scanned it and sent a signed join request");
        var requests = await Timed(shared.JoinRequestsAsync, ct);
        Expect(requests.Count == 1, $"Alice should see exactly one join request, saw {requests.Count}");
        await Timed(c => shared.ApproveJoinRequestAsync(invite, requests[0], c), ct);
        Detail("Alice checked the request's proof and signature and wrapped the namespace key to Bob");
        var bobShared = await Timed(c => bob.Engine.JoinNamespaceAsync(shared.Id, c), ct);
        var members = await Timed(shared.MembersAsync, ct);
        Detail($"Bob joined {Short(bobShared.Id)} ({bobShared.Kind}); members: {members.Count}");

        Step("Shared data: Alice writes a draft, Bob receives it");
        var aliceDrafts = Open(alice, shared, "drafts", Merges.PreferLocal<string>(), new MemoryValueBackend<string>(Codecs.String));
        await aliceDrafts.SetAsync("shared:note", "Shared grocery list: milk, eggs, coffee", ct);
        await Timed(alice.Engine.SyncNowAsync, ct);
        var bobDrafts = Open(bob, bobShared, "drafts", Merges.PreferLocal<string>(), new MemoryValueBackend<string>(Codecs.String, keys: ["shared:note"]));
        await Timed(bob.Engine.SyncNowAsync, ct);
        var draft = await ValueAsync(bobDrafts, "shared:note", ct);
        Expect(draft == "Shared grocery list: milk, eggs, coffee", $"Bob should read Alice's draft, read {Quote(draft)}");
        Detail($"Bob reads shared:note = {Quote(draft)}");

        await ConflictAsync(shared, bobShared, ct);
        await DirectoryAsync(shared, bobShared, ct);

        Step("Namespaces");
        var bobsNamespaces = await Timed(bob.Engine.ListNamespacesAsync, ct);
        Expect(bobsNamespaces.Count == 2, $"Bob should belong to 2 namespaces, belongs to {bobsNamespaces.Count}");
        Detail($"Bob belongs to {bobsNamespaces.Count}: {string.Join(", ", bobsNamespaces.Select(n => $"{Short(n.NamespaceId)} ({n.Kind})"))}");

        await LongPollAsync(shared, bobShared, ct);

        Step("Final state");
        await Timed(alice.Engine.SyncNowAsync, ct);
        await Timed(bob.Engine.SyncNowAsync, ct);
        await FinalTableAsync(ct);
        ServerSeesNoPlaintext();
    }

    /// <summary>
    /// The end-to-end claim made visible: none of the values (nor the collection names or keys) occurs
    /// in the embedded server's database files.
    /// </summary>
    private void ServerSeesNoPlaintext()
    {
        if (_server is null) return;
        var files = Directory.GetFiles(dir, "bitboxsync-demo-server.sqlite*");
        var bytes = files.SelectMany(f =>
        {
            using var stream = new FileStream(f, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            using var copy = new MemoryStream();
            stream.CopyTo(copy);
            return copy.ToArray();
        }).ToArray();
        var secrets = new[] { "Alice savings", "Alice checking", "grocery", "base value", "resolved this together", "stream:item:", "conflict-demo", "account:primary", "buy coffee", "todo:" };
        var found = secrets.Where(v => bytes.AsSpan().IndexOf(System.Text.Encoding.UTF8.GetBytes(v)) >= 0).ToList();
        Expect(found.Count == 0, $"the server's database contains plaintext: {string.Join(", ", found)}");
        Detail($"the server's database ({bytes.Length / 1024} KiB in {files.Length} files) contains none of the values, keys or "
            + "collection names: only ciphertext, HMAC item IDs and wrapped keys");
    }

    /// <summary>A collection with a key directory: keys learned without being named, and a deletion that syncs.</summary>
    private async Task DirectoryAsync(SyncNamespace shared, SyncNamespace bobShared, CancellationToken ct)
    {
        var (alice, bob) = (_alice!, _bob!);
        Step("Key directory: Bob learns Alice's new to-dos without naming them, and his deletion reaches Alice");
        var aliceTodos = Open(alice, shared, "todos", Merges.PreferLocal<string>(), new MemoryValueBackend<string>(Codecs.String), out _, keyDirectory: true);
        var bobTodos = Open(bob, bobShared, "todos", Merges.PreferLocal<string>(), new MemoryValueBackend<string>(Codecs.String), out var bobCollection,
            keyDirectory: true);
        await aliceTodos.SetAsync("todo:1", "buy coffee", ct);
        await aliceTodos.SetAsync("todo:2", "call the bank", ct);
        await Timed(alice.Engine.SyncNowAsync, ct);
        await Timed(bob.Engine.SyncNowAsync, ct);
        var learned = string.Join(", ", (await bobTodos.KeysAsync(ct)).Order(StringComparer.Ordinal));
        Expect(learned == "todo:1, todo:2", $"Bob should have learned both to-dos in one pass, holds {learned}");
        Detail($"Bob's storage named no keys; after one pass it holds {learned} (learned from the encrypted key directory)");
        await Timed(c => bobCollection.DeleteAsync("todo:1", c), ct);
        Detail("Bob deletes todo:1: removed from his storage at once, the deletion kept in his sync metadata");
        await Timed(bob.Engine.SyncNowAsync, ct);
        await Timed(alice.Engine.SyncNowAsync, ct);
        var gone = await ValueAsync(aliceTodos, "todo:1", ct);
        Expect(gone is null, $"todo:1 should be deleted on Alice's device, holds {Quote(gone)}");
        Detail($"after Alice's next pass todo:1 is gone from her storage too; todo:2 = {Quote(await ValueAsync(aliceTodos, "todo:2", ct))}");
    }

    private async Task ConflictAsync(SyncNamespace shared, SyncNamespace bobShared, CancellationToken ct)
    {
        var (alice, bob) = (_alice!, _bob!);
        const string key = "same-key";
        Step("A conflict: both devices edit the same key offline (merge: NoMerge)");
        var aliceSide = Open(alice, shared, "conflict-demo", Merges.NoMerge<string>(), new MemoryValueBackend<string>(Codecs.String));
        var bobSide = Open(bob, bobShared, "conflict-demo", Merges.NoMerge<string>(), new MemoryValueBackend<string>(Codecs.String, keys: [key]),
            out var bobConflicts);
        await aliceSide.SetAsync(key, "base value", ct);
        await Timed(alice.Engine.SyncNowAsync, ct);
        await Timed(bob.Engine.SyncNowAsync, ct);
        Expect(await ValueAsync(bobSide, key, ct) == "base value", "Bob should have the base value");
        Detail($"both devices hold {Quote("base value")}");

        await aliceSide.SetAsync(key, "alice local edit", ct);
        await bobSide.SetAsync(key, "bob local edit", ct);
        await Timed(alice.Engine.SyncNowAsync, ct);
        Detail("Alice uploads her edit first (version 2)");
        await Timed(bob.Engine.SyncNowAsync, ct);
        var conflicts = await Timed(bobConflicts.ConflictsAsync, ct);
        Expect(conflicts.Count == 1, $"Bob should have one conflict, has {conflicts.Count}");
        var conflict = conflicts[0];
        Detail($"Bob's pass cannot merge: conflict recorded (status: {bob.Engine.Status.Conflicts} conflict)");
        var table = new Table().Border(TableBorder.Rounded).AddColumn("same-key").AddColumn("value");
        table.AddRow("base", Markup.Escape(Quote(conflict.HasBase ? conflict.Base : null)));
        table.AddRow("local (Bob)", Markup.Escape(Quote(conflict.Local.Found ? conflict.Local.Value : null)));
        table.AddRow($"remote (Alice, version {conflict.RemoteVersion})", Markup.Escape(Quote(conflict.Remote)));
        const string resolution = "alice and bob resolved this together";
        table.AddRow("[green]resolution[/]", $"[green]{Markup.Escape(Quote(resolution))}[/]");
        console.Write(new Padder(table).PadLeft(4).PadTop(0).PadBottom(0));
        Expect(conflict is { HasBase: true, Base: "base value", Remote: "alice local edit" } && conflict.Local.Value == "bob local edit",
            "the conflict should show base, Bob's edit and Alice's edit");

        await Timed(c => bobConflicts.ResolveWithValueAsync(key, resolution, c), ct);
        await Timed(bob.Engine.SyncNowAsync, ct);
        await Timed(alice.Engine.SyncNowAsync, ct);
        var resolved = await ValueAsync(aliceSide, key, ct);
        Expect(resolved == resolution, $"Alice should read the resolution, read {Quote(resolved)}");
        Detail($"Bob resolved and uploaded version 3; Alice reads {Quote(resolved)}; conflicts left: {bob.Engine.Status.Conflicts}");
    }

    private async Task LongPollAsync(SyncNamespace shared, SyncNamespace bobShared, CancellationToken ct)
    {
        var (alice, bob) = (_alice!, _bob!);
        Step("Background sync and the long poll: poll interval 5 minutes, remote writes arrive through the watch");
        var aliceStream = Open(alice, shared, "longpoll", Merges.PreferLocal<string>(), new MemoryValueBackend<string>(Codecs.String));
        var keys = Enumerable.Range(1, settings.WatchWrites).Select(i => $"stream:item:{i}").ToArray();
        var bobStream = Open(bob, bobShared, "longpoll", Merges.PreferLocal<string>(), new MemoryValueBackend<string>(Codecs.String, keys: keys));

        // Bob's event reader: when each streamed key arrived.
        while (bob.Engine.Events.TryRead(out _))
        {
        }
        var arrived = new Dictionary<string, long>(StringComparer.Ordinal);
        var firstPass = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var stopReading = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var reader = Task.Run(async () =>
        {
            await foreach (var e in bob.Engine.Events.ReadAllAsync(stopReading.Token))
            {
                var now = Stopwatch.GetTimestamp();
                switch (e.Type)
                {
                    case SyncEventType.SyncFinished:
                        firstPass.TrySetResult();
                        break;
                    case SyncEventType.SyncFailed:
                        firstPass.TrySetException(new DemoFailure($"Bob's background pass failed: {e.Error?.Message}"));
                        break;
                    case SyncEventType.NamespaceWatchFailed:
                        console.MarkupLineInterpolated($"    [yellow]warning:[/] Bob's watch failed ({e.Error?.Message}); it retries, polling continues");
                        break;
                    case SyncEventType.ItemDownloaded when e.Collection == "longpoll" && e.Key is not null:
                        lock (arrived) arrived.TryAdd(e.Key, now);
                        break;
                }
            }
        }, CancellationToken.None);

        alice.StartRun();
        bob.StartRun();
        await console.Status().StartAsync("Waiting for the first background pass…", async _ =>
            await firstPass.Task.WaitAsync(TimeSpan.FromSeconds(15), ct));
        Detail("both Run loops are up; Bob's engine is parked on the namespace watch");

        var latencies = new List<double>();
        foreach (var key in keys)
        {
            var value = $"item {key["stream:item:".Length..]} at {DateTime.UtcNow:HH:mm:ss.fff}";
            var written = Stopwatch.GetTimestamp();
            await aliceStream.SetAsync(key, value, ct);
            await Timed(alice.Engine.SyncNowAsync, ct);
            var uploaded = Stopwatch.GetTimestamp();
            long received = 0;
            await console.Status().StartAsync($"Alice wrote {key}; waiting for Bob…", async _ =>
            {
                var deadline = Stopwatch.GetTimestamp() + Stopwatch.Frequency * 15;
                while (!TryArrived(arrived, key, out received))
                {
                    if (Stopwatch.GetTimestamp() > deadline)
                        throw new DemoFailure($"{key} did not reach Bob within 15 s (the watch should deliver it long before the 5-minute poll)");
                    await Task.Delay(5, ct);
                }
            });
            var got = await ValueAsync(bobStream, key, ct);
            Expect(got == value, $"Bob should read {Quote(value)} for {key}, read {Quote(got)}");
            var sinceUpload = Math.Max(0, Stopwatch.GetElapsedTime(uploaded, received).TotalMilliseconds);
            latencies.Add(sinceUpload);
            Detail($"{key}: at Bob {Stopwatch.GetElapsedTime(written, received).TotalMilliseconds:F0} ms after Alice's write, "
                + $"{sinceUpload:F0} ms after the server accepted it");
            if (key != keys[^1]) await Task.Delay(settings.WatchWriteSpacing, ct);
        }
        latencies.Sort();
        Detail($"watch latency (server accepted → Bob applied): median {latencies[latencies.Count / 2]:F0} ms, max {latencies[^1]:F0} ms; "
            + "the fallback poll would have taken up to 5 minutes");

        await alice.StopRunAsync();
        await bob.StopRunAsync();
        await stopReading.CancelAsync();
        try
        {
            await reader;
        }
        catch (OperationCanceledException)
        {
        }
    }

    private async Task FinalTableAsync(CancellationToken ct)
    {
        var (alice, bob) = (_alice!, _bob!);
        var table = new Table().Border(TableBorder.Rounded)
            .AddColumn("collection").AddColumn("key").AddColumn("Alice").AddColumn("Bob").AddColumn("");
        var mismatches = 0;
        foreach (var (collection, aliceData) in alice.Data)
        {
            bob.Data.TryGetValue(collection, out var bobData);
            foreach (var key in (await aliceData.KeysAsync(ct)).Order(StringComparer.Ordinal))
            {
                var a = (await aliceData.GetAsync(key, ct)).Value;
                string mark;
                string? b = null;
                if (bobData is null)
                    mark = "[grey]private[/]";
                else
                {
                    b = (await bobData.GetAsync(key, ct)).Value;
                    var same = a == b;
                    if (!same) mismatches++;
                    mark = same ? "[green]same[/]" : "[red]differs[/]";
                }
                table.AddRow(Markup.Escape(collection), Markup.Escape(key), Markup.Escape(Quote(a)),
                    bobData is null ? "[grey]—[/]" : Markup.Escape(Quote(b)), mark);
            }
        }
        console.Write(table);
        Expect(mismatches == 0, $"{mismatches} shared values differ between Alice and Bob");
        Expect(alice.Engine.Status is { PendingUploads: 0, Conflicts: 0, Quarantined: 0 }
                && bob.Engine.Status is { PendingUploads: 0, Conflicts: 0, Quarantined: 0 },
            "both devices should end with nothing pending, no conflict and nothing quarantined");
    }

    private async Task<Uri> ServerAsync(CancellationToken ct)
    {
        if (settings.Server is { } external)
        {
            console.MarkupLineInterpolated($"Server: [blue]{external}[/] (external; public origin {settings.PublicOrigin})");
            return external;
        }
        _server = await BitBoxSyncServer.StartAsync(new ServerOptions
        {
            Urls = ["http://127.0.0.1:0"],
            PublicOrigin = settings.PublicOrigin,
            SqlitePath = Path.Combine(dir, "bitboxsync-demo-server.sqlite"),
            MinimumLogLevel = LogLevel.Warning,
        }, ct);
        console.MarkupLineInterpolated($"Server: [blue]{_server.BaseAddress}[/] (embedded, {_server.StoreDescription})");
        return _server.BaseAddress;
    }

    private async Task<Device> OpenDeviceAsync(string name, Uri server, CancellationToken ct)
    {
        var storePath = Path.Combine(dir, $"bitboxsync-demo-{name.ToLowerInvariant()}.sqlite");
        IIdentity identity = DummyKeystore.FromLabel($"demo-{name.ToLowerInvariant()}-{_runId}"); // test/demo only
        SqliteStore store;
        if (name == "Alice" && settings.IdentityFile is { } file)
        {
            var protector = new PassphraseKeyProtector(settings.Passphrase ?? throw new ArgumentException("--identity-file needs a passphrase"));
            var created = !File.Exists(file);
            var local = created ? LocalKeystore.Create() : await LocalKeystore.LoadAsync(file, protector, ct);
            if (created) await local.SaveAsync(file, protector, ct);
            console.MarkupLineInterpolated($"Alice: identity [blue]{local.KeyId[..16]}…[/] {(created ? "created in" : "loaded from")} {file} (sealed with the passphrase)");
            identity = local;
            store = await SqliteStore.OpenAsync(storePath, protector, ct);
        }
        else
        {
            store = await SqliteStore.OpenAsync(storePath, ct);
        }
        var engine = await SyncEngine.OpenAsync(new SyncEngineOptions
        {
            Client = new SyncClient(server),
            Identity = identity,
            Store = store,
            PollInterval = TimeSpan.FromMinutes(5),
        }, ct);
        return new Device(name, engine);
    }

    private static MemoryValueBackend<string> Open(Device device, SyncNamespace ns, string collection, MergeFunction<string> merge,
        MemoryValueBackend<string> backend) => Open(device, ns, collection, merge, backend, out _);

    private static MemoryValueBackend<string> Open(Device device, SyncNamespace ns, string collection, MergeFunction<string> merge,
        MemoryValueBackend<string> backend, out Collection<string> synced, bool keyDirectory = false)
    {
        synced = ns.OpenCollection(collection,
            new CollectionOptions<string> { Codec = Codecs.String, Merge = merge, Backend = backend, KeyDirectory = keyDirectory });
        device.Data[collection] = backend;
        return backend;
    }

    private static async Task<string?> ValueAsync(MemoryValueBackend<string> backend, string key, CancellationToken ct) =>
        (await backend.GetAsync(key, ct)).Value;

    private static bool TryArrived(Dictionary<string, long> arrived, string key, out long at)
    {
        lock (arrived) return arrived.TryGetValue(key, out at);
    }

    private static async Task<T> Timed<T>(Func<CancellationToken, Task<T>> action, CancellationToken ct)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(StepTimeout);
        try
        {
            return await action(timeout.Token);
        }
        catch (OperationCanceledException) when (timeout.IsCancellationRequested && !ct.IsCancellationRequested)
        {
            throw new DemoFailure($"a step took longer than {StepTimeout.TotalSeconds:F0} s");
        }
    }

    private static Task Timed(Func<CancellationToken, Task> action, CancellationToken ct) =>
        Timed(async c =>
        {
            await action(c);
            return true;
        }, ct);

    private void Step(string title)
    {
        _step++;
        console.MarkupLineInterpolated($"[bold]{_step}.[/] {title}");
    }

    private void Detail(string text) => console.MarkupLineInterpolated($"    [grey]·[/] {text}");

    private static void Expect(bool condition, string failure)
    {
        if (!condition) throw new DemoFailure(failure);
    }

    private static string Short(string id) => id.Length > 12 ? id[..12] + "…" : id;

    private static string Quote(string? value) => value is null ? "(none)" : "\"" + value + "\"";

    /// <summary>The invite secret travels in the URI fragment: never printed.</summary>
    private static string Redacted(string uri)
    {
        var hash = uri.IndexOf('#');
        return hash < 0 ? uri : uri[..hash] + "#<secret>";
    }

    public async ValueTask DisposeAsync()
    {
        if (_bob is not null) await _bob.DisposeAsync();
        if (_alice is not null) await _alice.DisposeAsync();
        if (_server is not null) await _server.DisposeAsync();
    }
}
