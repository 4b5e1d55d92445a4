using Microsoft.Data.Sqlite;

namespace BitBoxSync.Notes;

/// <summary>
/// The app's own database (one SQLite file). The sync engine never owns it: it reads, writes and
/// removes the notes through the backend below, in this database's transactions, exactly as the app does.
/// </summary>
/// <remarks>
/// Tables: <c>notes</c> (key, title, body, seq), <c>removed</c> (keys whose note was removed, with the
/// write number) and <c>counter</c> (one row: the last write number). Every write transaction takes the
/// next number and stamps the rows it writes or removes with it, which is what change tracking
/// (<see cref="IChangeTrackingBackend"/>) reports. The notes collection keeps a key directory, so the
/// app lists only the notes it holds: notes created elsewhere are learned by the engine.
/// </remarks>
public sealed class NotesDatabase : IDisposable
{
    private readonly string _connectionString;
    private readonly SemaphoreSlim _writer = new(1, 1);

    private NotesDatabase(string path)
    {
        _connectionString = new SqliteConnectionStringBuilder { DataSource = path, Pooling = false, DefaultTimeout = 30 }.ToString();
        using var c = Open();
        Exec(c, null, """
            PRAGMA journal_mode = WAL;
            CREATE TABLE IF NOT EXISTS notes (key TEXT PRIMARY KEY, title TEXT NOT NULL, body TEXT NOT NULL, seq INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS removed (key TEXT PRIMARY KEY, seq INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS counter (value INTEGER NOT NULL);
            INSERT INTO counter (value) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM counter);
            """);
        Notes = new NoteBackend(this);
    }

    /// <summary>The <c>notes</c> collection's backend (one key per note).</summary>
    public NoteBackend Notes { get; }

    /// <summary>Opens (or creates) the app database.</summary>
    public static NotesDatabase Open(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        return new NotesDatabase(path);
    }

    /// <summary>An app write: adds or replaces a note.</summary>
    public Task PutAsync(string key, Note note, CancellationToken ct = default) =>
        WriteAsync((c, tx, seq) =>
        {
            WriteNote(c, tx, key, note, seq);
            return true;
        }, ct);

    /// <summary>
    /// An app edit: reads the note, changes it and writes it back in one transaction, so that a remote
    /// value the engine applies meanwhile is never overwritten by a stale read (the engine's
    /// conditional writes queue on the same lock). False when there is no such note.
    /// </summary>
    public Task<bool> UpdateAsync(string key, Func<Note, Note> change, CancellationToken ct = default) =>
        WriteAsync((c, tx, seq) =>
        {
            Note? current;
            using (var cmd = Command(c, tx, "SELECT key, title, body FROM notes WHERE key = $k", ("$k", key)))
            using (var r = cmd.ExecuteReader())
                current = r.Read() ? ReadNote(r) : null;
            if (current is null) return false;
            WriteNote(c, tx, key, change(current), seq);
            return true;
        }, ct);

    /// <summary>Every note, ordered by key.</summary>
    public async Task<IReadOnlyList<(string Key, Note Note)>> AllAsync(CancellationToken ct = default)
    {
        await using var c = Open();
        var result = new List<(string, Note)>();
        await using var cmd = Command(c, null, "SELECT key, title, body FROM notes ORDER BY key");
        await using var r = await cmd.ExecuteReaderAsync(ct);
        while (await r.ReadAsync(ct)) result.Add((r.GetString(0), ReadNote(r)));
        return result;
    }

    /// <summary>One note, or null.</summary>
    public async Task<Note?> GetAsync(string key, CancellationToken ct = default)
    {
        await using var c = Open();
        await using var cmd = Command(c, null, "SELECT key, title, body FROM notes WHERE key = $k", ("$k", key));
        await using var r = await cmd.ExecuteReaderAsync(ct);
        return await r.ReadAsync(ct) ? ReadNote(r) : null;
    }

    /// <summary>The keys of the notes this database holds.</summary>
    public Task<string[]> KeysAsync(CancellationToken ct = default)
    {
        using var c = Open();
        return Task.FromResult(ReadKeys(c, null));
    }

    internal async Task<long> StampAsync(CancellationToken ct)
    {
        await using var c = Open();
        await using var cmd = Command(c, null, "SELECT value FROM counter");
        return (long)(await cmd.ExecuteScalarAsync(ct))!;
    }

    internal async Task<List<string>> ChangedAsync(string sql, long stamp, CancellationToken ct)
    {
        await using var c = Open();
        await using var cmd = Command(c, null, sql, ("$s", stamp));
        await using var r = await cmd.ExecuteReaderAsync(ct);
        var keys = new List<string>();
        while (await r.ReadAsync(ct)) keys.Add(r.GetString(0));
        return keys;
    }

    /// <summary>
    /// Runs one write transaction (<c>BEGIN IMMEDIATE</c>: writers queue on the database lock, so the
    /// engine's conditional writes and the app's writes serialise). <paramref name="write"/> returns
    /// false to roll back.
    /// </summary>
    internal async Task<bool> WriteAsync(Func<SqliteConnection, SqliteTransaction, long, bool> write, CancellationToken ct)
    {
        await _writer.WaitAsync(ct);
        try
        {
            await using var c = Open();
            await using var tx = c.BeginTransaction(deferred: false); // BEGIN IMMEDIATE
            long seq;
            using (var next = Command(c, tx, "UPDATE counter SET value = value + 1 RETURNING value"))
                seq = (long)next.ExecuteScalar()!;
            if (!write(c, tx, seq))
            {
                await tx.RollbackAsync(ct);
                return false;
            }
            await tx.CommitAsync(ct);
            return true;
        }
        finally
        {
            _writer.Release();
        }
    }

    /// <summary>The note keys, in key order, inside a connection (and transaction).</summary>
    internal static string[] ReadKeys(SqliteConnection c, SqliteTransaction? tx)
    {
        using var cmd = Command(c, tx, "SELECT key FROM notes ORDER BY key");
        using var r = cmd.ExecuteReader();
        var keys = new List<string>();
        while (r.Read()) keys.Add(r.GetString(0));
        return keys.ToArray();
    }

    internal static Note? ReadNote(SqliteConnection c, SqliteTransaction tx, string key)
    {
        using var cmd = Command(c, tx, "SELECT key, title, body FROM notes WHERE key = $k", ("$k", key));
        using var r = cmd.ExecuteReader();
        return r.Read() ? ReadNote(r) : null;
    }

    internal static void WriteNote(SqliteConnection c, SqliteTransaction tx, string key, Note note, long seq)
    {
        Exec(c, tx, """
            INSERT INTO notes (key, title, body, seq) VALUES ($k, $t, $b, $s)
            ON CONFLICT (key) DO UPDATE SET title = $t, body = $b, seq = $s
            """, ("$k", key), ("$t", note.Title), ("$b", note.Body), ("$s", seq));
        Exec(c, tx, "DELETE FROM removed WHERE key = $k", ("$k", key));
    }

    /// <summary>Removes a note, remembering the key with the write number (change tracking reports it).</summary>
    internal static void RemoveNote(SqliteConnection c, SqliteTransaction tx, string key, long seq)
    {
        Exec(c, tx, "DELETE FROM notes WHERE key = $k", ("$k", key));
        Exec(c, tx, "INSERT INTO removed (key, seq) VALUES ($k, $s) ON CONFLICT (key) DO UPDATE SET seq = $s", ("$k", key), ("$s", seq));
    }

    internal static void Exec(SqliteConnection c, SqliteTransaction? tx, string sql, params (string Name, object Value)[] args)
    {
        using var cmd = Command(c, tx, sql, args);
        cmd.ExecuteNonQuery();
    }

    private static Note ReadNote(SqliteDataReader r) => new(r.GetString(1), r.GetString(2));

    private static SqliteCommand Command(SqliteConnection c, SqliteTransaction? tx, string sql, params (string Name, object Value)[] args)
    {
        var cmd = c.CreateCommand();
        cmd.CommandText = sql;
        cmd.Transaction = tx;
        foreach (var (name, value) in args) cmd.Parameters.AddWithValue(name, value);
        return cmd;
    }

    private SqliteConnection Open()
    {
        var c = new SqliteConnection(_connectionString);
        c.Open();
        return c;
    }

    /// <inheritdoc />
    public void Dispose() => _writer.Dispose();
}

/// <summary>
/// The notes collection over the app database. <see cref="SetIfCurrentAsync"/> compares and writes in
/// one transaction, so an app edit that lands while the engine applies a remote note is never
/// overwritten: the engine sees <c>false</c> and merges again.
/// </summary>
public sealed class NoteBackend(NotesDatabase db) : IConditionalValueBackend<Note>, IDeletableValueBackend<Note>, IChangeTrackingBackend
{
    /// <inheritdoc />
    public async ValueTask<IReadOnlyCollection<string>> KeysAsync(CancellationToken cancellationToken) => await db.KeysAsync(cancellationToken);

    /// <inheritdoc />
    public async ValueTask<IReadOnlyDictionary<string, Note>> SnapshotAsync(CancellationToken cancellationToken) =>
        (await db.AllAsync(cancellationToken)).ToDictionary(n => n.Key, n => n.Note, StringComparer.Ordinal);

    /// <inheritdoc />
    public async ValueTask<BackendValue<Note>> GetAsync(string key, CancellationToken cancellationToken) =>
        await db.GetAsync(key, cancellationToken) is { } note ? BackendValue<Note>.Of(note) : BackendValue<Note>.Missing;

    /// <inheritdoc />
    public async ValueTask SetAsync(string key, Note value, CancellationToken cancellationToken) => await db.PutAsync(key, value, cancellationToken);

    /// <inheritdoc />
    public async ValueTask<bool> SetIfCurrentAsync(string key, Note? current, bool currentFound, Note value, CancellationToken cancellationToken) =>
        await db.WriteAsync((c, tx, seq) =>
        {
            var now = NotesDatabase.ReadNote(c, tx, key);
            if (currentFound ? now != current : now is not null) return false; // an app write won
            NotesDatabase.WriteNote(c, tx, key, value, seq);
            return true;
        }, cancellationToken);

    /// <inheritdoc />
    public async ValueTask<bool> DeleteIfCurrentAsync(string key, Note current, CancellationToken cancellationToken) =>
        await db.WriteAsync((c, tx, seq) =>
        {
            var now = NotesDatabase.ReadNote(c, tx, key);
            if (now is null) return true; // already gone (nothing written)
            if (now != current) return false; // an app write won
            NotesDatabase.RemoveNote(c, tx, key, seq);
            return true;
        }, cancellationToken);

    /// <inheritdoc />
    public async ValueTask<long> GetChangeStampAsync(CancellationToken cancellationToken) => await db.StampAsync(cancellationToken);

    /// <inheritdoc />
    public async ValueTask<IReadOnlyCollection<string>?> GetChangedKeysAsync(long stamp, CancellationToken cancellationToken) =>
        await db.ChangedAsync("SELECT key FROM notes WHERE seq > $s UNION SELECT key FROM removed WHERE seq > $s", stamp, cancellationToken);
}
