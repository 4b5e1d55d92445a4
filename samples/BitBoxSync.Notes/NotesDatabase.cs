using Microsoft.Data.Sqlite;

namespace BitBoxSync.Notes;

/// <summary>
/// The app's own database (one SQLite file). The sync engine never owns it: it reads and writes the
/// notes through the two backends below, in this database's transactions, exactly as the app does.
/// </summary>
/// <remarks>
/// Tables: <c>notes</c> (key, title, body, deleted, seq), <c>note_keys</c> (every known note key,
/// including keys whose note has not arrived yet) and <c>counter</c> (one row: the last write number).
/// Every write transaction takes the next number and stamps the rows it writes with it, which is what
/// change tracking (<see cref="IChangeTrackingBackend"/>) reports.
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
            CREATE TABLE IF NOT EXISTS notes (key TEXT PRIMARY KEY, title TEXT NOT NULL, body TEXT NOT NULL,
                deleted INTEGER NOT NULL, seq INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS note_keys (key TEXT PRIMARY KEY, seq INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS counter (value INTEGER NOT NULL);
            INSERT INTO counter (value) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM counter);
            """);
        Notes = new NoteBackend(this);
        Index = new IndexBackend(this);
    }

    /// <summary>The <c>notes</c> collection's backend (one key per note).</summary>
    public NoteBackend Notes { get; }

    /// <summary>The <c>note-index</c> collection's backend (one key, <see cref="IndexKey"/>: the list of note keys).</summary>
    public IndexBackend Index { get; }

    /// <summary>The single key of the index collection.</summary>
    public const string IndexKey = "all";

    /// <summary>Opens (or creates) the app database.</summary>
    public static NotesDatabase Open(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        return new NotesDatabase(path);
    }

    /// <summary>An app write: adds or replaces a note (and registers its key) in one transaction.</summary>
    public Task PutAsync(string key, Note note, CancellationToken ct = default) =>
        WriteAsync((c, tx, seq) =>
        {
            WriteNote(c, tx, key, note, seq);
            Exec(c, tx, "INSERT INTO note_keys (key, seq) VALUES ($k, $s) ON CONFLICT (key) DO NOTHING", ("$k", key), ("$s", seq));
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
            using (var cmd = Command(c, tx, "SELECT key, title, body, deleted FROM notes WHERE key = $k", ("$k", key)))
            using (var r = cmd.ExecuteReader())
                current = r.Read() ? ReadNote(r) : null;
            if (current is null) return false;
            WriteNote(c, tx, key, change(current), seq);
            return true;
        }, ct);

    /// <summary>Every note (including tombstones), ordered by key.</summary>
    public async Task<IReadOnlyList<(string Key, Note Note)>> AllAsync(CancellationToken ct = default)
    {
        await using var c = Open();
        var result = new List<(string, Note)>();
        await using var cmd = Command(c, null, "SELECT key, title, body, deleted FROM notes ORDER BY key");
        await using var r = await cmd.ExecuteReaderAsync(ct);
        while (await r.ReadAsync(ct)) result.Add((r.GetString(0), ReadNote(r)));
        return result;
    }

    /// <summary>One note, or null.</summary>
    public async Task<Note?> GetAsync(string key, CancellationToken ct = default)
    {
        await using var c = Open();
        await using var cmd = Command(c, null, "SELECT key, title, body, deleted FROM notes WHERE key = $k", ("$k", key));
        await using var r = await cmd.ExecuteReaderAsync(ct);
        return await r.ReadAsync(ct) ? ReadNote(r) : null;
    }

    /// <summary>The known note keys (the notes collection's scope).</summary>
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

    /// <summary>The known note keys, in key order, inside a connection (and transaction).</summary>
    internal static string[] ReadKeys(SqliteConnection c, SqliteTransaction? tx)
    {
        using var cmd = Command(c, tx, "SELECT key FROM note_keys ORDER BY key");
        using var r = cmd.ExecuteReader();
        var keys = new List<string>();
        while (r.Read()) keys.Add(r.GetString(0));
        return keys.ToArray();
    }

    internal static Note? ReadNote(SqliteConnection c, SqliteTransaction tx, string key)
    {
        using var cmd = Command(c, tx, "SELECT key, title, body, deleted FROM notes WHERE key = $k", ("$k", key));
        using var r = cmd.ExecuteReader();
        return r.Read() ? ReadNote(r) : null;
    }

    internal static void WriteNote(SqliteConnection c, SqliteTransaction tx, string key, Note note, long seq) =>
        Exec(c, tx, """
            INSERT INTO notes (key, title, body, deleted, seq) VALUES ($k, $t, $b, $d, $s)
            ON CONFLICT (key) DO UPDATE SET title = $t, body = $b, deleted = $d, seq = $s
            """, ("$k", key), ("$t", note.Title), ("$b", note.Body), ("$d", note.Deleted ? 1 : 0), ("$s", seq));

    internal static void Exec(SqliteConnection c, SqliteTransaction? tx, string sql, params (string Name, object Value)[] args)
    {
        using var cmd = Command(c, tx, sql, args);
        cmd.ExecuteNonQuery();
    }

    private static Note ReadNote(SqliteDataReader r) => new(r.GetString(1), r.GetString(2), r.GetInt64(3) != 0);

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
public sealed class NoteBackend(NotesDatabase db) : IConditionalValueBackend<Note>, IChangeTrackingBackend
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
    public async ValueTask<long> GetChangeStampAsync(CancellationToken cancellationToken) => await db.StampAsync(cancellationToken);

    /// <inheritdoc />
    public async ValueTask<IReadOnlyCollection<string>?> GetChangedKeysAsync(long stamp, CancellationToken cancellationToken) =>
        await db.ChangedAsync("SELECT key FROM notes WHERE seq > $s UNION SELECT key FROM note_keys WHERE seq > $s", stamp, cancellationToken);
}

/// <summary>
/// The note-index collection: one key whose value is the list of note keys. Item IDs are HMACs, so
/// a device learns which notes exist only through this list; the notes collection's scope is then
/// every key in it.
/// </summary>
public sealed class IndexBackend(NotesDatabase db) : IConditionalValueBackend<string[]>, IChangeTrackingBackend
{
    private static readonly string[] Scope = [NotesDatabase.IndexKey];

    /// <inheritdoc />
    public ValueTask<IReadOnlyCollection<string>> KeysAsync(CancellationToken cancellationToken) => ValueTask.FromResult<IReadOnlyCollection<string>>(Scope);

    /// <inheritdoc />
    public async ValueTask<IReadOnlyDictionary<string, string[]>> SnapshotAsync(CancellationToken cancellationToken)
    {
        var keys = await db.KeysAsync(cancellationToken);
        return keys.Length == 0 ? new Dictionary<string, string[]>() : new Dictionary<string, string[]> { [NotesDatabase.IndexKey] = keys };
    }

    /// <inheritdoc />
    public async ValueTask<BackendValue<string[]>> GetAsync(string key, CancellationToken cancellationToken)
    {
        if (key != NotesDatabase.IndexKey) return BackendValue<string[]>.Missing;
        var keys = await db.KeysAsync(cancellationToken);
        return keys.Length == 0 ? BackendValue<string[]>.Missing : BackendValue<string[]>.Of(keys);
    }

    /// <inheritdoc />
    public async ValueTask SetAsync(string key, string[] value, CancellationToken cancellationToken) =>
        await db.WriteAsync((c, tx, seq) => Replace(c, tx, key, value, seq), cancellationToken);

    /// <inheritdoc />
    public async ValueTask<bool> SetIfCurrentAsync(string key, string[]? current, bool currentFound, string[] value, CancellationToken cancellationToken) =>
        await db.WriteAsync((c, tx, seq) =>
        {
            var now = NotesDatabase.ReadKeys(c, tx);
            var same = currentFound ? current is not null && now.SequenceEqual(current) : now.Length == 0;
            return same && Replace(c, tx, key, value, seq);
        }, cancellationToken);

    /// <inheritdoc />
    public async ValueTask<long> GetChangeStampAsync(CancellationToken cancellationToken) => await db.StampAsync(cancellationToken);

    /// <inheritdoc />
    public async ValueTask<IReadOnlyCollection<string>?> GetChangedKeysAsync(long stamp, CancellationToken cancellationToken) =>
        (await db.ChangedAsync("SELECT key FROM note_keys WHERE seq > $s LIMIT 1", stamp, cancellationToken)).Count > 0 ? Scope : [];

    /// <summary>Makes the known keys exactly <paramref name="keys"/> (new keys are stamped; the merge only ever adds).</summary>
    private static bool Replace(Microsoft.Data.Sqlite.SqliteConnection c, Microsoft.Data.Sqlite.SqliteTransaction tx, string key, string[] keys, long seq)
    {
        if (key != NotesDatabase.IndexKey) throw new ArgumentException($"the index has one key, '{NotesDatabase.IndexKey}'", nameof(key));
        var wanted = keys.ToHashSet(StringComparer.Ordinal);
        foreach (var old in NotesDatabase.ReadKeys(c, tx))
            if (!wanted.Contains(old))
                NotesDatabase.Exec(c, tx, "DELETE FROM note_keys WHERE key = $k", ("$k", old));
        foreach (var k in wanted)
            NotesDatabase.Exec(c, tx, "INSERT INTO note_keys (key, seq) VALUES ($k, $s) ON CONFLICT (key) DO NOTHING", ("$k", k), ("$s", seq));
        return true;
    }
}
