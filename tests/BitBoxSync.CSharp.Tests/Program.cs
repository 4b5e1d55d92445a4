// The C# API used exactly as README.md shows it, against an embedded server on
// 127.0.0.1. A minimal runner prints the same summary line as Expecto ("N passed, N ignored,
// N failed, N errored"), which the test command sums.
using System.Diagnostics;
using BitBoxSync;
using BitBoxSync.Server;
using BitBoxSync.Storage;
using BitBoxSync.Storage.Sqlite;
using Microsoft.Extensions.Logging;

var minute = TimeSpan.FromMinutes(1);
var tests = new (string Name, Func<Task> Run, TimeSpan Timeout)[]
{
    ("README: two devices sync labels through the server", ReadmeFlow, minute),
    ("conflicts: listed and resolved from C#", ConflictsFromCSharp, minute),
    ("sharing: invite URI, join request, approval, shared collection", SharingFromCSharp, minute),
    ("events: read with await foreach; the engine never waits for readers", EventsFromCSharp, minute),
    ("options are validated at OpenAsync with clear errors", OptionsValidated, minute),
    ("demo: the whole flow (docs/engine.md §10.1 + §10.2) against the embedded server, exit code 0", SampleTests.DemoRunsWholeFlow, minute),
    ("demo: --keep keeps the databases; an unreachable --server and bad options fail with a message", SampleTests.DemoKeepAndFailures, minute),
    ("notes sample: two instances sync through their own SQLite databases; merge, conflict, deletion, restart", SampleTests.NotesTwoInstances, minute),
    ("notes sample: the command line (add, list) and its refusals (missing note, no conflict, bad --server)", SampleTests.NotesCommandLine, minute),
    ("notes sample: app writes racing remote applies are never lost (SetIfCurrent in the app's transaction)", SampleTests.NotesRacingAppWrites, 3 * minute),
    ("worker sample on the generic host: AddBitBoxSync, two hosts sync a note through the long poll; ILogger, metrics and activities observed", WorkerTests.TwoWorkersSync, minute),
    ("worker sample: invalid BitBoxSync options stop the host at start with every problem named", WorkerTests.BadOptionsStopTheHost, minute),
    ("identity sealed by ASP.NET Core Data Protection: round trip; another key ring or a changed blob is refused", DataProtectionIdentity, minute),
    ("packages: packed to a folder feed, a fresh console app references them by name, builds and syncs; the bitboxsync-server tool installs from the feed and serves", SampleTests.PackagesWorkOutsideTheSolution, 10 * minute),
    ("container layout: the published command runs from a /data working directory with the image's settings; its health check command", DistributionTests.PublishedLayoutServes, 5 * minute),
};

// `-- --filter <text>` runs only the tests whose name contains the text (other arguments are ignored).
var filter = args.SkipWhile(a => a != "--filter").Skip(1).FirstOrDefault();
if (filter is not null) tests = tests.Where(t => t.Name.Contains(filter, StringComparison.OrdinalIgnoreCase)).ToArray();

var passed = 0;
var failed = 0;
foreach (var (name, run, timeout) in tests)
{
    var sw = Stopwatch.StartNew();
    try
    {
        await run().WaitAsync(timeout);
        passed++;
        Console.WriteLine($"passed  {name} ({sw.ElapsedMilliseconds} ms)");
    }
    catch (Exception e)
    {
        failed++;
        Console.WriteLine($"FAILED  {name}: {e}");
    }
}
Console.WriteLine($"EXPECTO! {tests.Length} tests run for BitBoxSync.CSharp.Tests – {passed} passed, 0 ignored, {failed} failed, 0 errored.");
return failed == 0 ? 0 : 1;

static async Task DataProtectionIdentity()
{
    var provider = new Microsoft.AspNetCore.DataProtection.EphemeralDataProtectionProvider();
    var protector = new BitBoxSync.Extensions.DataProtection.DataProtectionKeyProtector(provider);
    using var identity = LocalKeystore.Create();
    var blob = await identity.ExportAsync(protector);
    using var again = await LocalKeystore.ImportAsync(blob, protector);
    Check(again.KeyId == identity.KeyId, "the same identity after a round trip");
    var changed = (byte[])blob.Clone();
    changed[^1] ^= 1;
    await Refused(() => LocalKeystore.ImportAsync(changed, protector).AsTask(), "a changed blob");
    var otherRing = new BitBoxSync.Extensions.DataProtection.DataProtectionKeyProtector(new Microsoft.AspNetCore.DataProtection.EphemeralDataProtectionProvider());
    await Refused(() => LocalKeystore.ImportAsync(blob, otherRing).AsTask(), "another key ring");

    static async Task Refused(Func<Task> open, string what)
    {
        try
        {
            await open();
            throw new Exception("check failed: accepted " + what);
        }
        catch (KeyProtectionException)
        {
        }
    }
}

static void Check(bool condition, string what)
{
    if (!condition) throw new Exception("check failed: " + what);
}

static async Task<BitBoxSyncServer> StartServerAsync() =>
    await BitBoxSyncServer.StartAsync(new ServerOptions
    {
        Urls = ["http://127.0.0.1:0"],
        PublicOrigin = "https://sync.test",
        SqlitePath = Path.Combine(Directory.CreateTempSubdirectory("bbs-cs-").FullName, "server.sqlite"),
        MinimumLogLevel = LogLevel.Warning,
    });

static async Task<(SyncEngine Engine, Collection<string> Labels, MemoryValueBackend<string> AppLabels)> DeviceAsync(
    BitBoxSyncServer server, string label, string storePath)
{
    // As in the README.
    var client = new SyncClient(server.BaseAddress);
    IIdentity identity = DummyKeystore.FromLabel(label);      // test/demo only
    var store = await SqliteStore.OpenAsync(storePath);
    var engine = await SyncEngine.OpenAsync(new SyncEngineOptions
    {
        Client = client, Identity = identity, Store = store, PollInterval = TimeSpan.FromSeconds(30),
    });
    _ = engine.Events; // the default event stream keeps events from its first use on
    var appLabels = new MemoryValueBackend<string>(Codecs.String, keys: ["account:primary:label", "account:savings:label"]);
    var ns = await engine.DefaultNamespaceAsync();
    var labels = ns.OpenCollection("account-labels", new CollectionOptions<string>
    {
        Codec = Codecs.String, Merge = Merges.PreferLocal<string>(), Backend = appLabels,
    });
    return (engine, labels, appLabels);
}

static string TempStore() => Path.Combine(Directory.CreateTempSubdirectory("bbs-cs-").FullName, "bitboxsync.sqlite");

static async Task ReadmeFlow()
{
    await using var server = await StartServerAsync();
    var (phone, _, phoneLabels) = await DeviceAsync(server, "demo-alice", TempStore());
    var (laptop, _, laptopLabels) = await DeviceAsync(server, "demo-alice", TempStore());
    await using (phone)
    await using (laptop)
    {
        using var appStopping = new CancellationTokenSource();
        var run = laptop.RunAsync(appStopping.Token);

        await phoneLabels.SetAsync("account:primary:label", "Main account", CancellationToken.None);
        await phone.SyncNowAsync();             // foreground, waits for the result

        laptop.ScheduleSync();                  // after app writes; coalesces; no network itself
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while ((await laptopLabels.GetAsync("account:primary:label", CancellationToken.None)).Value != "Main account")
        {
            Check(DateTime.UtcNow < deadline, "the laptop received the label");
            await Task.Delay(50);
        }
        appStopping.Cancel();
        try { await run; } catch (OperationCanceledException) { }
    }
}

static async Task ConflictsFromCSharp()
{
    await using var server = await StartServerAsync();
    var a = await DeviceAsync(server, "alice", TempStore());
    var client = new SyncClient(server.BaseAddress);
    var bStore = new MemoryStore();
    await using var b = await SyncEngine.OpenAsync(new SyncEngineOptions { Client = client, Identity = DummyKeystore.FromLabel("alice"), Store = bStore });
    var bLabels = new MemoryValueBackend<string>(Codecs.String, keys: ["account:primary:label"]);
    var bCollection = (await b.DefaultNamespaceAsync()).OpenCollection("account-labels", new CollectionOptions<string>
    {
        Codec = Codecs.String, Backend = bLabels, // default merge: NoMerge → conflicts
    });
    await using (a.Engine)
    {
        await a.AppLabels.SetAsync("account:primary:label", "base", CancellationToken.None);
        await a.Engine.SyncNowAsync();
        await b.SyncNowAsync();
        await a.AppLabels.SetAsync("account:primary:label", "from A", CancellationToken.None);
        await a.Engine.SyncNowAsync();
        await bLabels.SetAsync("account:primary:label", "from B", CancellationToken.None);
        await b.SyncNowAsync();
        var conflicts = await bCollection.ConflictsAsync();
        Check(conflicts.Count == 1 && conflicts[0] is { Key: "account:primary:label", HasBase: true, Base: "base", Remote: "from A" } && conflicts[0].Local.Value == "from B",
            "one conflict with base, local and remote");
        Check(b.Status.Conflicts == 1, "the status counts it");
        await bCollection.ResolveWithValueAsync("account:primary:label", "A and B");
        await b.SyncNowAsync();
        await a.Engine.SyncNowAsync();
        Check((await a.AppLabels.GetAsync("account:primary:label", CancellationToken.None)).Value == "A and B", "the resolution reached A");
    }
}

static async Task SharingFromCSharp()
{
    await using var server = await StartServerAsync();
    var alice = await DeviceAsync(server, "alice", TempStore());
    var bob = await DeviceAsync(server, "bob", TempStore());
    await using (alice.Engine)
    await using (bob.Engine)
    {
        var family = await alice.Engine.CreateSharedNamespaceAsync();
        var aliceNotes = new MemoryValueBackend<string>(Codecs.Json<string>(), keys: ["shopping"]);
        family.OpenCollection("notes", new CollectionOptions<string> { Codec = Codecs.Json<string>(), Backend = aliceNotes });

        var invite = await family.CreateInviteAsync(new InviteOptions { ServerOrigin = "https://sync.test" });
        var qr = InviteUri.Format(invite);                   // shown as a QR code
        var scanned = InviteUri.Parse(qr);                   // on Bob's device
        await bob.Engine.SubmitJoinRequestAsync(scanned);

        foreach (var request in await family.JoinRequestsAsync())
            await family.ApproveJoinRequestAsync(invite, request);   // verified locally first

        var bobsFamily = await bob.Engine.JoinNamespaceAsync(family.Id);
        var bobNotes = new MemoryValueBackend<string>(Codecs.Json<string>(), keys: ["shopping"]);
        bobsFamily.OpenCollection("notes", new CollectionOptions<string> { Codec = Codecs.Json<string>(), Backend = bobNotes });

        await aliceNotes.SetAsync("shopping", "milk, bread", CancellationToken.None);
        await alice.Engine.SyncNowAsync();
        await bob.Engine.SyncNowAsync();
        Check((await bobNotes.GetAsync("shopping", CancellationToken.None)).Value == "milk, bread", "bob reads the shared note");
        Check((await family.MembersAsync()).Count == 2, "two members");
    }
}

static async Task EventsFromCSharp()
{
    await using var server = await StartServerAsync();
    var a = await DeviceAsync(server, "alice", TempStore());
    await using (a.Engine)
    {
        // Nobody reads during 20 passes: the engine does not block.
        for (var i = 0; i < 20; i++)
        {
            await a.AppLabels.SetAsync("account:primary:label", $"v{i}", CancellationToken.None);
            await a.Engine.SyncNowAsync();
        }
        var uploads = 0;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        await foreach (var e in a.Engine.Events.ReadAllAsync(timeout.Token))
        {
            if (e.Type == SyncEventType.ItemUploaded) uploads++;
            if (uploads == 20) break;
        }
        Check(uploads == 20, "every upload reported");
    }
}

static async Task OptionsValidated()
{
    try
    {
        await SyncEngine.OpenAsync(new SyncEngineOptions { Identity = DummyKeystore.FromLabel("x"), Store = new MemoryStore() });
        Check(false, "a missing client is refused");
    }
    catch (ArgumentException e)
    {
        Check(e.Message.Contains("sync client is required"), "the message names the option");
    }
    try
    {
        await SqliteStore.OpenAsync("");
        Check(false, "an empty path is refused");
    }
    catch (ArgumentException e)
    {
        Check(e.Message.Contains("sqlite path is required"), "the message");
    }
}
