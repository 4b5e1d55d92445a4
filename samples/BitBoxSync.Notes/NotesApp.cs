using BitBoxSync.Storage.Sqlite;

namespace BitBoxSync.Notes;

/// <summary>
/// One instance of the notes app: its own database (<c>notes.sqlite</c>) plus a sync engine whose
/// metadata lives in <c>sync.sqlite</c>, both in <c>directory</c>. Two instances with the same identity
/// (one person, two devices) share the identity's default namespace.
/// </summary>
public sealed class NotesApp : IAsyncDisposable
{
    private readonly NotesDatabase _db;

    private NotesApp(NotesDatabase db, SyncEngine engine, Collection<Note> notes)
    {
        _db = db;
        Engine = engine;
        Notes = notes;
    }

    /// <summary>The sync engine (for <see cref="SyncEngine.RunAsync"/>, status and events).</summary>
    public SyncEngine Engine { get; }

    /// <summary>The synced notes collection (conflicts are listed and resolved here).</summary>
    public Collection<Note> Notes { get; }

    /// <summary>The app database.</summary>
    public NotesDatabase Database => _db;

    /// <summary>Opens the instance kept in <paramref name="directory"/>, syncing with <paramref name="server"/> as <paramref name="identity"/>.</summary>
    public static Task<NotesApp> OpenAsync(string directory, Uri server, IIdentity identity, CancellationToken ct = default) =>
        OpenAsync(directory, server, identity, null, ct);

    /// <summary>
    /// Opens the instance kept in <paramref name="directory"/>; with <paramref name="secrets"/>, the
    /// sync store keeps its tokens and namespace keys sealed by it.
    /// </summary>
    public static async Task<NotesApp> OpenAsync(string directory, Uri server, IIdentity identity, IKeyProtector? secrets, CancellationToken ct = default)
    {
        Directory.CreateDirectory(directory);
        var db = NotesDatabase.Open(Path.Combine(directory, "notes.sqlite"));
        SyncEngine? engine = null;
        try
        {
            var storePath = Path.Combine(directory, "sync.sqlite");
            var store = secrets is null ? await SqliteStore.OpenAsync(storePath, ct) : await SqliteStore.OpenAsync(storePath, secrets, ct);
            engine = await SyncEngine.OpenAsync(new SyncEngineOptions
            {
                Client = new SyncClient(server), Identity = identity, Store = store, PollInterval = TimeSpan.FromMinutes(1),
            }, ct);
            var ns = await engine.DefaultNamespaceAsync(ct);
            // The key directory: notes created on another device are learned with it, and deletions sync.
            var notes = ns.OpenCollection("notes", new CollectionOptions<Note>
            {
                Codec = Codecs.Json<Note>(), Merge = NoteMerges.ThreeWay, Backend = db.Notes,
                KeyDirectory = true, DeletePolicy = DeletePolicy.EditWins,
            });
            return new NotesApp(db, engine, notes);
        }
        catch
        {
            if (engine is not null) await engine.DisposeAsync();
            db.Dispose();
            throw;
        }
    }

    /// <summary>Adds a note; returns its key.</summary>
    public async Task<string> AddAsync(string title, string body, CancellationToken ct = default)
    {
        var key = "note:" + Guid.NewGuid().ToString("N");
        await _db.PutAsync(key, new Note(title, body), ct);
        Engine.ScheduleSync();
        return key;
    }

    /// <summary>Replaces a note's body.</summary>
    public async Task EditAsync(string key, string body, CancellationToken ct = default)
    {
        // Read, change and write in one transaction: a remote title applied meanwhile is kept.
        if (!await _db.UpdateAsync(key, note => note with { Body = body }, ct))
            throw new KeyNotFoundException($"no note '{key}'");
        Engine.ScheduleSync();
    }

    /// <summary>
    /// Deletes a note on every device: the engine records the deletion, removes the note from this
    /// database and carries the deletion to the others (an edit made elsewhere without seeing it wins).
    /// </summary>
    public async Task DeleteAsync(string key, CancellationToken ct = default)
    {
        if (await _db.GetAsync(key, ct) is null) throw new KeyNotFoundException($"no note '{key}'");
        await Notes.DeleteAsync(key, ct);
    }

    /// <summary>The notes.</summary>
    public Task<IReadOnlyList<(string Key, Note Note)>> ListAsync(CancellationToken ct = default) => _db.AllAsync(ct);

    /// <summary>Syncs now: one pass learns the notes created elsewhere and downloads them.</summary>
    public Task SyncAsync(CancellationToken ct = default) => Engine.SyncNowAsync(ct);

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        await Engine.DisposeAsync();
        _db.Dispose();
    }
}
