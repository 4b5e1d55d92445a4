// The worker sample on the generic host (AddBitBoxSync), against a real server on 127.0.0.1: two
// hosts of one identity, a note written on one arrives on the other through the long poll; logs go
// through ILogger; the engine's metrics and activities are observed; bad options stop the host.
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using BitBoxSync;
using BitBoxSync.Extensions.Hosting;
using BitBoxSync.Server;
using BitBoxSync.Worker;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

internal static class WorkerTests
{
    private sealed class Capture : ILoggerProvider
    {
        public readonly ConcurrentQueue<(string Category, int EventId, string Text)> Entries = new();
        public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);
        public void Dispose() { }

        private sealed class Logger(Capture owner, string category) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
            public bool IsEnabled(LogLevel logLevel) => true;
            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
                owner.Entries.Enqueue((category, eventId.Id, formatter(state, exception)));
        }
    }

    public static async Task TwoWorkersSync()
    {
        await using var server = await BitBoxSyncServer.StartAsync(new ServerOptions
        {
            Urls = ["http://127.0.0.1:0"],
            PublicOrigin = "https://sync.test",
            SqlitePath = Path.Combine(Directory.CreateTempSubdirectory("bbs-worker-").FullName, "server.sqlite"),
            MinimumLogLevel = LogLevel.Warning,
        });
        var dir = Directory.CreateTempSubdirectory("bbs-worker-").FullName;
        var identity = "worker-" + Guid.NewGuid().ToString("N");
        var logs = new Capture();

        // Observe the engine's instruments the way an OpenTelemetry SDK would.
        var passes = 0L;
        using var meters = new MeterListener();
        meters.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == SyncTelemetry.Name) listener.EnableMeasurementEvents(instrument);
        };
        meters.SetMeasurementEventCallback<long>((instrument, value, _, _) =>
        {
            if (instrument.Name == "bitboxsync.sync.passes") Interlocked.Add(ref passes, value);
        });
        meters.Start();
        var activities = new ConcurrentQueue<string>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == SyncTelemetry.Name,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = a => activities.Enqueue(a.DisplayName),
        };
        ActivitySource.AddActivityListener(listener);

        IHost Worker(string name, params string[] extra) => WorkerApp.Build(
            [
                "--BitBoxSync:ServerUrl", server.BaseAddress.ToString(),
                "--BitBoxSync:StorePath", Path.Combine(dir, name + ".sqlite"),
                "--BitBoxSync:PollInterval", "00:10:00",
                "--Worker:Identity", identity, .. extra,
            ],
            b => b.Logging.AddProvider(logs));

        using var reader = Worker("b");
        await reader.StartAsync();
        await reader.Services.GetRequiredService<BitBoxSyncEngineHost>().WaitForFirstSyncAsync().WaitAsync(TimeSpan.FromSeconds(30));
        using var writer = Worker("a", "--Worker:Note", "hello from a worker", "--Worker:NoteKey", "note-2");
        await writer.StartAsync();

        var notes = reader.Services.GetRequiredService<MemoryValueBackend<Note>>();
        var sw = Stopwatch.StartNew();
        while (!(await notes.GetAsync("note-2", CancellationToken.None)).Found && sw.Elapsed < TimeSpan.FromSeconds(30))
            await Task.Delay(20);
        var arrived = await notes.GetAsync("note-2", CancellationToken.None);
        Check(arrived.Found && arrived.Value!.Title == "hello from a worker", "the note reached the other worker");
        Check(sw.Elapsed < TimeSpan.FromSeconds(20), $"through the long poll, not the 10-minute poll ({sw.Elapsed})");

        await writer.StopAsync();
        await reader.StopAsync();

        var entries = logs.Entries.ToList();
        Check(entries.Any(e => e.Category == "BitBoxSync.Engine" && e.EventId == 2), "the engine logs its passes through ILogger");
        Check(entries.Any(e => e.Text.StartsWith("First sync done", StringComparison.Ordinal)), "the app's job waited for the first sync");
        Check(!entries.Any(e => e.Text.Contains("hello from a worker", StringComparison.Ordinal)), "no value in any log line");
        Check(Interlocked.Read(ref passes) >= 2, "pass counts were measured");
        Check(activities.Contains("bitboxsync.sync") && activities.Any(a => a.StartsWith("PUT /v1/kv/", StringComparison.Ordinal)),
            "pass and HTTP activities were recorded");
    }

    public static async Task BadOptionsStopTheHost()
    {
        using var host = WorkerApp.Build(["--BitBoxSync:ServerUrl", "not a url", "--BitBoxSync:HttpTimeout", "00:00:30"]);
        try
        {
            await host.StartAsync();
            throw new Exception("check failed: the host started with invalid options");
        }
        catch (OptionsValidationException e)
        {
            Check(e.Message.Contains("ServerUrl", StringComparison.Ordinal) && e.Message.Contains("HttpTimeout", StringComparison.Ordinal),
                $"every invalid option named: {e.Message}");
        }
    }

    private static void Check(bool condition, string what)
    {
        if (!condition) throw new Exception("check failed: " + what);
    }
}
