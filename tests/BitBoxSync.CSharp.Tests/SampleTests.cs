// The demo (the README's first command), the notes sample and the NuGet packages, tested as their
// users run them.
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using BitBoxSync;
using BitBoxSync.Demo;
using BitBoxSync.Notes;
using BitBoxSync.Server;
using Microsoft.Extensions.Logging;
using Spectre.Console;

internal static class SampleTests
{
    private static async Task AssertThrows<TException>(Func<Task> action, string what) where TException : Exception
    {
        try
        {
            await action();
        }
        catch (TException)
        {
            return;
        }
        throw new InvalidOperationException($"FAILED: {what}: no {typeof(TException).Name}");
    }

    private static void Check(bool condition, string what)
    {
        if (!condition) throw new Exception("check failed: " + what);
    }

    private static (IAnsiConsole Console, StringWriter Output) RecordingConsole()
    {
        var output = new StringWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.No,
            ColorSystem = ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
            Out = new AnsiConsoleOutput(output),
        });
        console.Profile.Width = 200;
        return (console, output);
    }

    public static async Task DemoRunsWholeFlow()
    {
        var (console, output) = RecordingConsole();
        var dir = Path.Combine(Directory.CreateTempSubdirectory("bbs-demo-test-").FullName, "data");
        var code = await DemoRun.RunAsync(new DemoSettings { DataDirectory = dir, WatchWriteSpacing = TimeSpan.FromMilliseconds(100) }, console, CancellationToken.None);
        var text = output.ToString();
        Check(code == 0, "exit code 0; output:\n" + text);
        foreach (var expected in new[]
                 {
                     "(embedded, SQLite", "Bob joined", "Bob reads shared:note", "│ base", "local (Bob)", "remote (Alice, version 2)",
                     "resolution", "conflicts left: 0", "Bob belongs to 2", "watch latency", "stream:item:5", "contains none of the values",
                     "Demo finished: both devices agree.",
                 })
            Check(text.Contains(expected, StringComparison.Ordinal), $"the output shows '{expected}'");
        Check(!text.Contains("#", StringComparison.Ordinal) || text.Contains("#<secret>", StringComparison.Ordinal), "the invite secret is not printed");
        Check(!Directory.Exists(dir), "the databases are deleted without --keep");
    }

    public static async Task DemoKeepAndFailures()
    {
        // --keep: the databases stay and the path is printed.
        var (console, output) = RecordingConsole();
        var dir = Path.Combine(Directory.CreateTempSubdirectory("bbs-demo-test-").FullName, "data");
        var code = await DemoRun.RunAsync(new DemoSettings { DataDirectory = dir, Keep = true, WatchWrites = 1 }, console, CancellationToken.None);
        Check(code == 0, "exit code 0 with --keep; output:\n" + output);
        Check(File.Exists(Path.Combine(dir, "bitboxsync-demo-alice.sqlite")) && File.Exists(Path.Combine(dir, "bitboxsync-demo-bob.sqlite")),
            "both devices' stores are kept");
        Check(output.ToString().Contains(dir, StringComparison.Ordinal), "the kept directory is printed");

        // --identity-file: Alice's real identity is created, then loaded; her store is sealed.
        var identityFile = Path.Combine(dir, "alice.bbs");
        foreach (var expected in new[] { "created in", "loaded from" })
        {
            (console, output) = RecordingConsole();
            var realDir = Path.Combine(dir, "real-" + expected.Replace(' ', '-'));
            code = await DemoRun.RunAsync(new DemoSettings
            {
                DataDirectory = realDir, Keep = true, WatchWrites = 1, IdentityFile = identityFile, Passphrase = "demo passphrase",
            }, console, CancellationToken.None);
            Check(code == 0 && output.ToString().Contains(expected, StringComparison.Ordinal), $"--identity-file ({expected}):\n{output}");
            Check(File.ReadAllBytes(Path.Combine(realDir, "bitboxsync-demo-alice.sqlite")).AsSpan().IndexOf("enc1:"u8) >= 0, "Alice's store is sealed");
        }

        // An unreachable --server: exit code 1 and a readable reason.
        int closedPort;
        using (var l = new TcpListener(IPAddress.Loopback, 0))
        {
            l.Start();
            closedPort = ((IPEndPoint)l.LocalEndpoint).Port;
        }
        (console, output) = RecordingConsole();
        using var err = new StringWriter();
        code = await DemoCommand.Build(console).Parse(["--server", $"http://127.0.0.1:{closedPort}"])
            .InvokeAsync(new System.CommandLine.InvocationConfiguration { Output = err, Error = err });
        Check(code == 1, $"exit code 1 for an unreachable server, was {code}");
        Check(output.ToString().Contains("Demo failed:", StringComparison.Ordinal) && output.ToString().Contains("refused", StringComparison.OrdinalIgnoreCase),
            "the failure says why:\n" + output);

        // Bad options: refused before anything runs.
        foreach (var args in new[] { new[] { "--watch-writes", "0" }, ["--server", "not a url"], ["--no-such-option"] })
        {
            (console, output) = RecordingConsole();
            using var messages = new StringWriter();
            code = await DemoCommand.Build(console).Parse(args)
                .InvokeAsync(new System.CommandLine.InvocationConfiguration { Output = messages, Error = messages });
            Check(code != 0, $"{string.Join(' ', args)} is refused");
            Check(output.ToString().Length == 0, $"{string.Join(' ', args)}: the demo did not start");
            Check(messages.ToString().Length > 0, $"{string.Join(' ', args)}: a message");
        }
    }

    private static async Task<BitBoxSyncServer> ServerAsync() =>
        await BitBoxSyncServer.StartAsync(new ServerOptions
        {
            Urls = ["http://127.0.0.1:0"],
            SqlitePath = Path.Combine(Directory.CreateTempSubdirectory("bbs-notes-").FullName, "server.sqlite"),
            MinimumLogLevel = LogLevel.Warning,
        });

    private static Task<NotesApp> InstanceAsync(BitBoxSyncServer server, string user) =>
        NotesApp.OpenAsync(Directory.CreateTempSubdirectory("bbs-notes-").FullName, server.BaseAddress, DummyKeystore.FromLabel(user));

    public static async Task NotesTwoInstances()
    {
        await using var server = await ServerAsync();
        var laptopDir = Directory.CreateTempSubdirectory("bbs-notes-").FullName;
        string key;
        await using (var laptop = await NotesApp.OpenAsync(laptopDir, server.BaseAddress, DummyKeystore.FromLabel("notes-user")))
        await using (var phone = await InstanceAsync(server, "notes-user"))
        {
            key = await laptop.AddAsync("Groceries", "milk, eggs");
            await laptop.SyncAsync();
            await phone.SyncAsync();
            var onPhone = await phone.ListAsync();
            Check(onPhone.Count == 1 && onPhone[0].Key == key && onPhone[0].Note == new Note("Groceries", "milk, eggs"),
                "a note added on the laptop is on the phone after one pass (learned through the key directory)");

            // Different fields edited on both: merged field by field, no conflict.
            await laptop.Database.PutAsync(key, new Note("Shopping", "milk, eggs"));
            await phone.EditAsync(key, "milk, eggs, bread");
            await laptop.SyncAsync();
            await phone.SyncAsync();
            await laptop.SyncAsync();
            var merged = new Note("Shopping", "milk, eggs, bread");
            Check(await laptop.Database.GetAsync(key) == merged && await phone.Database.GetAsync(key) == merged, "field-wise merge on both");

            // The same field edited differently: a conflict with base, local and remote; resolved.
            await laptop.EditAsync(key, "laptop list");
            await phone.EditAsync(key, "phone list");
            await laptop.SyncAsync();
            await phone.SyncAsync();
            var conflicts = await phone.Notes.ConflictsAsync();
            Check(conflicts.Count == 1 && conflicts[0].Base?.Body == "milk, eggs, bread" && conflicts[0].Local.Value?.Body == "phone list"
                  && conflicts[0].Remote.Body == "laptop list", "one conflict: base, local, remote");
            await phone.Notes.ResolveWithValueAsync(key, conflicts[0].Remote with { Body = "laptop list + phone list" });
            await phone.SyncAsync();
            await laptop.SyncAsync();
            Check((await laptop.Database.GetAsync(key))?.Body == "laptop list + phone list", "the resolution reached the laptop");

            // A deletion removes the note from both databases.
            await laptop.DeleteAsync(key);
            Check(await laptop.Database.GetAsync(key) is null, "removed from the laptop's database at once");
            await laptop.SyncAsync();
            await phone.SyncAsync();
            Check((await phone.ListAsync()).Count == 0 && await phone.Database.GetAsync(key) is null, "the deletion reached the phone's database");

            // Deleted on the laptop while the phone, offline, edits it: the edit wins (EditWins), on both.
            var list = await laptop.AddAsync("List", "a");
            await laptop.SyncAsync();
            await phone.SyncAsync();
            await phone.EditAsync(list, "a, b (edited offline)");
            await laptop.DeleteAsync(list);
            await laptop.SyncAsync();
            await phone.SyncAsync();
            await laptop.SyncAsync();
            Check((await laptop.Database.GetAsync(list))?.Body == "a, b (edited offline)", "the offline edit brought the note back on the laptop");
            await AssertThrows<KeyNotFoundException>(() => laptop.DeleteAsync("note:missing"), "deleting a missing note");
        }

        // Reopened from its files, the laptop is in sync: nothing to upload, nothing lost.
        await using var reopened = await NotesApp.OpenAsync(laptopDir, server.BaseAddress, DummyKeystore.FromLabel("notes-user"));
        await reopened.SyncAsync();
        Check(reopened.Engine.Status is { PendingUploads: 0, Conflicts: 0, PendingDeletions: 0 }, "clean after a restart");
        Check(await reopened.Database.GetAsync(key) is null, "the deleted note stays deleted");
        Check((await reopened.ListAsync()).Count == 1, "the edited note is there");
    }

    public static async Task NotesCommandLine()
    {
        await using var server = await ServerAsync();
        var dir = Directory.CreateTempSubdirectory("bbs-notes-cli-").FullName;
        async Task<(int Code, string Output)> Notes(params string[] args)
        {
            using var output = new StringWriter();
            var code = await NotesCommand.Build(output)
                .Parse(["--dir", dir, "--server", server.BaseAddress.ToString(), "--user", "cli-user", .. args])
                .InvokeAsync(new System.CommandLine.InvocationConfiguration { Output = output, Error = output });
            return (code, output.ToString());
        }

        var (code, text) = await Notes("add", "Groceries", "milk");
        Check(code == 0 && text.StartsWith("added note:", StringComparison.Ordinal), "add: " + text);
        var key = text.Trim()["added ".Length..];
        (code, text) = await Notes("list");
        Check(code == 0 && text.Contains($"{key}  Groceries: milk", StringComparison.Ordinal), "list: " + text);

        // Bad input: a clear message, exit code 1, nothing changed.
        (code, text) = await Notes("edit", "note:missing", "x");
        Check(code == 1 && text.Contains("no note 'note:missing'", StringComparison.Ordinal), "edit of a missing note: " + text);
        (code, text) = await Notes("resolve", key, "some text");
        Check(code == 1 && text.Contains($"no conflict on '{key}'", StringComparison.Ordinal), "resolve without a conflict: " + text);
        using (var output = new StringWriter())
        {
            code = await NotesCommand.Build(output).Parse(["--dir", dir, "--server", "not a url", "list"])
                .InvokeAsync(new System.CommandLine.InvocationConfiguration { Output = output, Error = output });
            Check(code == 1 && output.ToString().Contains("is not an absolute URL", StringComparison.Ordinal), "a bad --server: " + output);
        }
        (code, text) = await Notes("list", "--offline");
        Check(code == 0 && text.Trim() == $"{key}  Groceries: milk", "nothing changed: " + text);

        // A real identity: created on first use, sealed with the passphrase; two instances that use
        // the file share the identity's notes; a wrong passphrase is refused clearly.
        var identityFile = Path.Combine(dir, "identity.bbs");
        async Task<(int Code, string Output)> Real(string instance, string passphrase, params string[] args)
        {
            using var output = new StringWriter();
            Environment.SetEnvironmentVariable("BITBOXSYNC_PASSPHRASE", passphrase);
            try
            {
                var code = await NotesCommand.Build(output)
                    .Parse(["--dir", Path.Combine(dir, instance), "--server", server.BaseAddress.ToString(), "--identity-file", identityFile, .. args])
                    .InvokeAsync(new System.CommandLine.InvocationConfiguration { Output = output, Error = output });
                return (code, output.ToString());
            }
            finally
            {
                Environment.SetEnvironmentVariable("BITBOXSYNC_PASSPHRASE", null);
            }
        }
        (code, text) = await Real("laptop", "open sesame", "add", "Secret", "kept sealed");
        Check(code == 0 && text.Contains("created identity", StringComparison.Ordinal), "a new identity: " + text);
        (code, text) = await Real("phone", "open sesame", "list");
        Check(code == 0 && text.Contains("Secret: kept sealed", StringComparison.Ordinal) && !text.Contains("Groceries", StringComparison.Ordinal),
            "the second instance of the same identity (not the demo user's notes): " + text);
        (code, text) = await Real("phone", "wrong", "list");
        Check(code == 1 && text.Contains("wrong passphrase", StringComparison.Ordinal), "a wrong passphrase: " + text);
        var syncFile = File.ReadAllBytes(Path.Combine(dir, "laptop", "sync.sqlite"));
        Check(syncFile.AsSpan().IndexOf("enc1:"u8) >= 0, "the laptop's token is sealed in its sync store");
    }

    public static async Task NotesRacingAppWrites()
    {
        await using var server = await ServerAsync();
        await using var a = await InstanceAsync(server, "racer");
        await using var b = await InstanceAsync(server, "racer");
        var key = await a.AddAsync("t0", "b0");
        await a.SyncAsync();
        await b.SyncAsync();

        // A renames the note while B rewrites its body, and both sync all along: remote applies on B
        // race B's own writes. SetIfCurrent (in the app's transaction) must never drop a B write.
        const int rounds = 40;
        var writerA = Task.Run(async () =>
        {
            for (var i = 1; i <= rounds; i++)
            {
                var title = $"t{i}";
                await a.Database.UpdateAsync(key, n => n with { Title = title });
                await a.SyncAsync();
            }
        });
        var writerB = Task.Run(async () =>
        {
            for (var i = 1; i <= rounds; i++)
            {
                await b.EditAsync(key, $"b{i}");
                if (i % 3 == 0) await b.SyncAsync();
            }
        });
        var syncB = Task.Run(async () =>
        {
            while (!writerB.IsCompleted)
                await b.SyncAsync();
        });
        await Task.WhenAll(writerA, writerB, syncB).WaitAsync(TimeSpan.FromSeconds(120));
        for (var i = 0; i < 3; i++)
        {
            await b.SyncAsync();
            await a.SyncAsync();
        }
        var expected = new Note($"t{rounds}", $"b{rounds}");
        Check(await b.Database.GetAsync(key) == expected, $"B has both last writes, has {await b.Database.GetAsync(key)} (A has {await a.Database.GetAsync(key)}; B's status {b.Engine.Status})");
        Check(await a.Database.GetAsync(key) == expected, $"A has both last writes, has {await a.Database.GetAsync(key)}");
        Check(a.Engine.Status is { Conflicts: 0, PendingUploads: 0 } && b.Engine.Status is { Conflicts: 0, PendingUploads: 0 }, "clean");
    }

    /// <summary>
    /// Packs the packages into a folder feed, then builds and runs a fresh console app (outside the
    /// repository) that references them by package name: server, client and SQLite store.
    /// </summary>
    public static async Task PackagesWorkOutsideTheSolution()
    {
        var repo = FindRepositoryRoot();
        var configuration = AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Release{Path.DirectorySeparatorChar}") ? "Release" : "Debug";
        var work = Directory.CreateTempSubdirectory("bbs-packages-").FullName;
        var feed = Path.Combine(work, "feed");
        await RunAsync("dotnet", ["pack", Path.Combine(repo, "BitBoxSync.Functional.sln"), "-c", configuration, "--no-build", "-o", feed, "-v", "q", "-nologo"], repo,
            TimeSpan.FromMinutes(4));
        var packages = Directory.GetFiles(feed, "*.nupkg").Select(Path.GetFileName).Order().ToList();
        foreach (var id in new[] { "BitBoxSync", "BitBoxSync.Core", "BitBoxSync.Protocol", "BitBoxSync.Server", "BitBoxSync.Server.Core", "BitBoxSync.Server.Tool", "BitBoxSync.Storage.Sqlite" })
            Check(packages.Any(p => p!.StartsWith(id + ".0.", StringComparison.Ordinal)), $"{id} is packed ({string.Join(", ", packages)})");
        foreach (var package in Directory.GetFiles(feed, "*.nupkg"))
        {
            using var zip = System.IO.Compression.ZipFile.OpenRead(package);
            using var reader = new StreamReader(zip.Entries.Single(e => e.FullName.EndsWith(".nuspec", StringComparison.Ordinal)).Open());
            var nuspec = await reader.ReadToEndAsync();
            Check(!nuspec.Contains("version=\"[", StringComparison.Ordinal), $"{Path.GetFileName(package)}: dependencies are minimums, not exact versions");
        }
        var version = packages.First(p => p!.StartsWith("BitBoxSync.Protocol.", StringComparison.Ordinal))!["BitBoxSync.Protocol.".Length..^".nupkg".Length];

        var app = Path.Combine(work, "consumer");
        Directory.CreateDirectory(app);
        var userPackages = Environment.GetEnvironmentVariable("NUGET_PACKAGES")
            ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        // A private packages folder (so a stale copy of these packages is never used) that falls back
        // to the user's folder for everything already downloaded.
        await File.WriteAllTextAsync(Path.Combine(app, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <config><add key="globalPackagesFolder" value="{Path.Combine(work, "packages")}" /></config>
              <packageSources><add key="bitboxsync-local" value="{feed}" /></packageSources>
              <fallbackPackageFolders><add key="user" value="{userPackages}" /></fallbackPackageFolders>
            </configuration>
            """);
        await File.WriteAllTextAsync(Path.Combine(app, "consumer.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <Nullable>enable</Nullable>
                <ImplicitUsings>enable</ImplicitUsings>
                <TreatWarningsAsErrors>true</TreatWarningsAsErrors>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="BitBoxSync" Version="{version}" />
                <PackageReference Include="BitBoxSync.Storage.Sqlite" Version="{version}" />
                <PackageReference Include="BitBoxSync.Server" Version="{version}" />
                <!-- Newer than the version the packages were built against: dependencies are minimums. -->
                <PackageReference Include="FSharp.Core" Version="11.0.101" />
              </ItemGroup>
            </Project>
            """);
        await File.WriteAllTextAsync(Path.Combine(app, "Program.cs"), """
            using BitBoxSync;
            using BitBoxSync.Server;
            using BitBoxSync.Storage.Sqlite;

            var dir = Directory.CreateTempSubdirectory("consumer-").FullName;
            await using var server = await BitBoxSyncServer.StartAsync(new ServerOptions {
                Urls = ["http://127.0.0.1:0"], SqlitePath = Path.Combine(dir, "server.sqlite"),
                MinimumLogLevel = Microsoft.Extensions.Logging.LogLevel.Warning });

            async Task<(SyncEngine, MemoryValueBackend<string>)> Device(string file)
            {
                var engine = await SyncEngine.OpenAsync(new SyncEngineOptions {
                    Client = new SyncClient(server.BaseAddress), Identity = DummyKeystore.FromLabel("consumer"),
                    Store = await SqliteStore.OpenAsync(Path.Combine(dir, file)) });
                var values = new MemoryValueBackend<string>(Codecs.String, keys: ["greeting"]);
                (await engine.DefaultNamespaceAsync()).OpenCollection("greetings",
                    new CollectionOptions<string> { Codec = Codecs.String, Backend = values });
                return (engine, values);
            }

            var (a, aValues) = await Device("a.sqlite");
            var (b, bValues) = await Device("b.sqlite");
            await using (a)
            await using (b)
            {
                await aValues.SetAsync("greeting", "hello from a package", CancellationToken.None);
                await a.SyncNowAsync();
                await b.SyncNowAsync();
                var got = await bValues.GetAsync("greeting", CancellationToken.None);
                Console.WriteLine(got.Value == "hello from a package" ? "consumer ok" : $"consumer got '{got.Value}'");
                return got.Value == "hello from a package" ? 0 : 1;
            }
            """);
        var output = await RunAsync("dotnet", ["run", "--project", app, "-c", "Release"], app, TimeSpan.FromMinutes(5));
        Check(output.Contains("consumer ok", StringComparison.Ordinal), "the consumer app synced through the packages:\n" + output);
        await DistributionTests.ToolInstallsAndServes(work, feed, Path.Combine(app, "nuget.config"), version);
        try
        {
            Directory.Delete(work, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    internal static string FindRepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "BitBoxSync.Functional.sln")))
                return dir.FullName;
        throw new InvalidOperationException("the repository root (BitBoxSync.Functional.sln) was not found above " + AppContext.BaseDirectory);
    }

    /// <summary>Runs a process to completion (bounded in time); throws with its output when it fails.</summary>
    internal static async Task<string> RunAsync(string file, string[] args, string workingDirectory, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(file)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        // The consumer must not inherit this repository's MSBuild settings.
        psi.Environment.Remove("MSBuildExtensionsPath");
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', args)} took longer than {timeout}");
        }
        var output = await stdout + await stderr;
        if (process.ExitCode != 0)
            throw new Exception($"{file} {string.Join(' ', args)} exited with {process.ExitCode}:\n{output}");
        return output;
    }
}
