using BitBoxSync.Extensions.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace BitBoxSync.Worker;

/// <summary>A note, as the app stores it (and as Go clients would see it: JSON).</summary>
public sealed record Note(string Title, string Body);

/// <summary>The worker app: its notes, the sync engine on the host, and a job that writes and reports notes.</summary>
public static class WorkerApp
{
    /// <summary>Builds the host from the command line and appsettings (BitBoxSync:*, Worker:*).</summary>
    public static IHost Build(string[] args, Action<IHostApplicationBuilder>? customize = null)
    {
        var builder = Host.CreateApplicationBuilder(args);

        // The app's own storage (in memory here; a real app uses its database).
        // The keys it syncs: a fixed scope here (an app with keys made at run time lists them too).
        var keys = (builder.Configuration["Worker:Keys"] ?? "note-1,note-2,note-3").Split(',', StringSplitOptions.RemoveEmptyEntries);
        builder.Services.AddSingleton(_ => new MemoryValueBackend<Note>(Codecs.Json<Note>(), null, keys));
        // The identity: the dummy keystore is for demos; ship a real one in an app.
        builder.Services.AddSingleton<IIdentity>(_ => DummyKeystore.FromLabel(builder.Configuration["Worker:Identity"] ?? "worker-demo"));

        builder.Services.AddBitBoxSync(builder.Configuration.GetSection("BitBoxSync"))
            .AddCollection("notes", sp => new CollectionOptions<Note>
            {
                Codec = Codecs.Json<Note>(),
                Merge = Merges.PreferLocal<Note>(),
                Backend = sp.GetRequiredService<MemoryValueBackend<Note>>(),
            });

        builder.Services.AddHostedService<NotesJob>();
        customize?.Invoke(builder);
        return builder.Build();
    }
}

/// <summary>Writes a note at start (if Worker:Note is set) and logs every note that arrives.</summary>
internal sealed class NotesJob(BitBoxSyncEngineHost sync, MemoryValueBackend<Note> notes, IConfiguration config, ILogger<NotesJob> log)
    : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var engine = await sync.GetEngineAsync(stoppingToken);
        using var events = engine.Subscribe();
        await sync.WaitForFirstSyncAsync(stoppingToken);
        log.LogInformation("First sync done: {Count} notes", (await notes.SnapshotAsync(stoppingToken)).Count);

        if (config["Worker:Note"] is { Length: > 0 } text)
        {
            await notes.SetAsync(config["Worker:NoteKey"] ?? "note-1", new Note(text, "written by this worker"), stoppingToken);
            engine.ScheduleSync();
        }

        await foreach (var e in events.ReadAllAsync(stoppingToken))
            if (e.Type == SyncEventType.ItemDownloaded && e.Key is { } key
                && (await notes.GetAsync(key, stoppingToken)) is { Found: true } note)
                log.LogInformation("Note {Key} arrived ({Length} characters)", key, note.Value!.Title.Length + note.Value.Body.Length);
    }
}
