using System.Data.Common;
using Microsoft.Data.Sqlite;

namespace BitBoxSync.Storage.Sqlite;

/// <summary>
/// The bundled metadata store (docs/engine.md §9.2, improved): one SQLite file in WAL mode with
/// full-sync commits, schema versions in <c>PRAGMA user_version</c> with ordered migrations,
/// integer timestamps (Unix milliseconds, UTC), and one transaction per <see cref="StoreWrite"/>.
/// Holds DEKs and the bearer token: protect the file like a credential.
/// </summary>
public sealed class SqliteStore : IStore
{
    private static int _memoryCounter;
    private readonly SqliteConnection _connection;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly TimeProvider _clock;
    private bool _disposed;

    /// <summary>The schema version this build writes.</summary>
    public static int SchemaVersion => Migrations.Length;

    private static readonly string[][] Migrations =
    [
        [
            """
            CREATE TABLE identity_states (
                key_id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                access_token TEXT NOT NULL DEFAULT '',
                token_expiry INTEGER NULL,
                default_namespace_id TEXT NULL,
                updated_at INTEGER NOT NULL)
            """,
            """
            CREATE TABLE namespaces (
                key_id TEXT NOT NULL,
                namespace_id TEXT NOT NULL,
                kind TEXT NOT NULL DEFAULT '',
                namespace_head INTEGER NOT NULL DEFAULT 0,
                active_scope_hash TEXT NOT NULL DEFAULT '',
                dek BLOB NULL,
                updated_at INTEGER NOT NULL,
                PRIMARY KEY (key_id, namespace_id))
            """,
            """
            CREATE TABLE items (
                key_id TEXT NOT NULL,
                namespace_id TEXT NOT NULL,
                collection_name TEXT NOT NULL,
                item_key TEXT NOT NULL,
                item_id TEXT NOT NULL,
                version INTEGER NOT NULL DEFAULT 0,
                base_version INTEGER NOT NULL DEFAULT 0,
                base_value BLOB NULL,
                dirty INTEGER NOT NULL DEFAULT 0,
                conflict INTEGER NOT NULL DEFAULT 0,
                conflict_remote_version INTEGER NOT NULL DEFAULT 0,
                conflict_remote_value BLOB NULL,
                updated_at INTEGER NOT NULL,
                PRIMARY KEY (key_id, namespace_id, item_id))
            """,
            "CREATE UNIQUE INDEX idx_items_logical_key ON items (key_id, namespace_id, collection_name, item_key)",
            "CREATE INDEX idx_items_dirty ON items (key_id, dirty, updated_at)",
        ],
    ];

    private SqliteStore(SqliteConnection connection, TimeProvider clock)
    {
        _connection = connection;
        _clock = clock;
    }

    /// <summary>Opens (creating when missing) and migrates the store at <paramref name="path"/>.</summary>
    /// <exception cref="ArgumentException">The path is empty.</exception>
    /// <exception cref="StoreException">The file is not a usable store (for example written by a newer version).</exception>
    public static Task<SqliteStore> OpenAsync(string path, CancellationToken cancellationToken = default)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new ArgumentException("sqlite path is required", nameof(path));
        var cs = new SqliteConnectionStringBuilder { DataSource = Path.GetFullPath(path), Mode = SqliteOpenMode.ReadWriteCreate, Pooling = false };
        return OpenAsync(cs.ToString(), file: true, TimeProvider.System, cancellationToken);
    }

    /// <summary>Opens a fresh in-memory store, isolated from every other one (tests).</summary>
    public static Task<SqliteStore> OpenInMemoryAsync(CancellationToken cancellationToken = default)
    {
        var n = Interlocked.Increment(ref _memoryCounter);
        var cs = new SqliteConnectionStringBuilder
        {
            DataSource = $"bitboxsync-{Environment.ProcessId}-{n}",
            Mode = SqliteOpenMode.Memory,
            Cache = SqliteCacheMode.Shared,
            Pooling = false,
        };
        return OpenAsync(cs.ToString(), file: false, TimeProvider.System, cancellationToken);
    }

    internal static async Task<SqliteStore> OpenAsync(string connectionString, bool file, TimeProvider clock, CancellationToken ct)
    {
        var connection = new SqliteConnection(connectionString);
        try
        {
            await connection.OpenAsync(ct);
            await Exec(connection, null, (file ? "PRAGMA journal_mode = WAL; " : "") +
                "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; PRAGMA synchronous = FULL", ct);
            await MigrateAsync(connection, ct);
            return new SqliteStore(connection, clock);
        }
        catch (SqliteException e)
        {
            await connection.DisposeAsync();
            throw new StoreException("open sqlite store: " + e.Message, e);
        }
        catch
        {
            await connection.DisposeAsync();
            throw;
        }
    }

    private static async Task MigrateAsync(SqliteConnection c, CancellationToken ct)
    {
        while (true)
        {
            await using var tx = (SqliteTransaction)await c.BeginTransactionAsync(ct);
            var version = Convert.ToInt32(await Scalar(c, tx, "PRAGMA user_version", ct));
            if (version > SchemaVersion)
                throw new StoreException($"the store's schema version {version} is newer than this library's {SchemaVersion}: upgrade BitBoxSync");
            if (version == SchemaVersion) return;
            foreach (var statement in Migrations[version]) await Exec(c, tx, statement, ct);
            await Exec(c, tx, $"PRAGMA user_version = {version + 1}", ct);
            await tx.CommitAsync(ct);
        }
    }

    private static async Task Exec(SqliteConnection c, SqliteTransaction? tx, string sql, CancellationToken ct, params (string, object?)[] args)
    {
        await using var cmd = Command(c, tx, sql, args);
        await cmd.ExecuteNonQueryAsync(ct);
    }

    private static async Task<object?> Scalar(SqliteConnection c, SqliteTransaction? tx, string sql, CancellationToken ct)
    {
        await using var cmd = Command(c, tx, sql, []);
        return await cmd.ExecuteScalarAsync(ct);
    }

    private static SqliteCommand Command(SqliteConnection c, SqliteTransaction? tx, string sql, (string Name, object? Value)[] args)
    {
        var cmd = c.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = sql;
        foreach (var (name, value) in args) cmd.Parameters.AddWithValue(name, value ?? DBNull.Value);
        return cmd;
    }

    private async Task<T> Locked<T>(Func<Task<T>> work, CancellationToken ct)
    {
        await _gate.WaitAsync(ct);
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return await work();
        }
        catch (SqliteException e)
        {
            throw new StoreException("sqlite store: " + e.Message, e);
        }
        finally
        {
            _gate.Release();
        }
    }

    private async Task<List<T>> Query<T>(string sql, Func<SqliteDataReader, T> read, CancellationToken ct, params (string, object?)[] args)
    {
        await using var cmd = Command(_connection, null, sql, args);
        await using var r = await cmd.ExecuteReaderAsync(ct);
        var rows = new List<T>();
        while (await r.ReadAsync(ct)) rows.Add(read(r));
        return rows;
    }

    private static long Ms(DateTimeOffset t) => t.ToUnixTimeMilliseconds();
    private static DateTimeOffset Time(SqliteDataReader r, int i) => DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(i));
    private static byte[]? Blob(SqliteDataReader r, int i) => r.IsDBNull(i) ? null : (byte[])r.GetValue(i);
    private static string? Text(SqliteDataReader r, int i) => r.IsDBNull(i) || r.GetString(i).Length == 0 ? null : r.GetString(i);

    private const string IdentityColumns = "key_id, kind, access_token, token_expiry, default_namespace_id, updated_at";
    private const string NamespaceColumns = "key_id, namespace_id, kind, namespace_head, active_scope_hash, dek, updated_at";
    private const string ItemColumns =
        "key_id, namespace_id, collection_name, item_key, item_id, version, base_version, base_value, dirty, conflict, conflict_remote_version, conflict_remote_value, updated_at";

    private static IdentityRecord ReadIdentity(SqliteDataReader r) => new()
    {
        KeyId = r.GetString(0),
        Kind = r.GetString(1),
        AccessToken = Text(r, 2),
        TokenExpiry = r.IsDBNull(3) ? null : Time(r, 3),
        DefaultNamespaceId = Text(r, 4),
        UpdatedAt = Time(r, 5),
    };

    private static NamespaceRecord ReadNamespace(SqliteDataReader r) => new()
    {
        KeyId = r.GetString(0),
        NamespaceId = r.GetString(1),
        Kind = Text(r, 2),
        Head = (ulong)r.GetInt64(3),
        ActiveScopeHash = r.GetString(4),
        Dek = Blob(r, 5) is { Length: > 0 } dek ? dek : null,
        UpdatedAt = Time(r, 6),
    };

    private static ItemRecord ReadItem(SqliteDataReader r) => new()
    {
        KeyId = r.GetString(0),
        NamespaceId = r.GetString(1),
        Collection = r.GetString(2),
        Key = r.GetString(3),
        ItemId = r.GetString(4),
        Version = (ulong)r.GetInt64(5),
        BaseVersion = (ulong)r.GetInt64(6),
        BaseValue = Blob(r, 7),
        Dirty = r.GetInt64(8) != 0,
        Conflict = r.GetInt64(9) != 0,
        ConflictRemoteVersion = (ulong)r.GetInt64(10),
        ConflictRemoteValue = Blob(r, 11),
        UpdatedAt = Time(r, 12),
    };

    /// <inheritdoc />
    public ValueTask<IdentityRecord?> LoadIdentityAsync(string keyId, CancellationToken cancellationToken = default) =>
        new(Locked(async () => (await Query($"SELECT {IdentityColumns} FROM identity_states WHERE key_id = @k", ReadIdentity, cancellationToken,
            ("@k", keyId))).FirstOrDefault(), cancellationToken));

    /// <inheritdoc />
    public ValueTask<NamespaceRecord?> GetNamespaceAsync(string keyId, string namespaceId, CancellationToken cancellationToken = default) =>
        new(Locked(async () => (await Query($"SELECT {NamespaceColumns} FROM namespaces WHERE key_id = @k AND namespace_id = @n", ReadNamespace,
            cancellationToken, ("@k", keyId), ("@n", namespaceId))).FirstOrDefault(), cancellationToken));

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<NamespaceRecord>> ListNamespacesAsync(string keyId, CancellationToken cancellationToken = default) =>
        new(Locked<IReadOnlyList<NamespaceRecord>>(async () => await Query(
            $"SELECT {NamespaceColumns} FROM namespaces WHERE key_id = @k ORDER BY updated_at, namespace_id", ReadNamespace, cancellationToken,
            ("@k", keyId)), cancellationToken));

    /// <inheritdoc />
    public ValueTask<ItemRecord?> GetItemByIdAsync(string keyId, string namespaceId, string itemId, CancellationToken cancellationToken = default) =>
        new(Locked(async () => (await Query($"SELECT {ItemColumns} FROM items WHERE key_id = @k AND namespace_id = @n AND item_id = @i", ReadItem,
            cancellationToken, ("@k", keyId), ("@n", namespaceId), ("@i", itemId))).FirstOrDefault(), cancellationToken));

    /// <inheritdoc />
    public ValueTask<ItemRecord?> GetItemByLogicalKeyAsync(string keyId, string namespaceId, string collection, string key, CancellationToken cancellationToken = default) =>
        new(Locked(async () => (await Query(
            $"SELECT {ItemColumns} FROM items WHERE key_id = @k AND namespace_id = @n AND collection_name = @c AND item_key = @key", ReadItem,
            cancellationToken, ("@k", keyId), ("@n", namespaceId), ("@c", collection), ("@key", key))).FirstOrDefault(), cancellationToken));

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<ItemRecord>> ListNamespaceItemsAsync(string keyId, string namespaceId, CancellationToken cancellationToken = default) =>
        new(Locked<IReadOnlyList<ItemRecord>>(async () => await Query(
            $"SELECT {ItemColumns} FROM items WHERE key_id = @k AND namespace_id = @n ORDER BY updated_at, item_id", ReadItem, cancellationToken,
            ("@k", keyId), ("@n", namespaceId)), cancellationToken));

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<ItemRecord>> ListDirtyItemsAsync(string keyId, CancellationToken cancellationToken = default) =>
        new(Locked<IReadOnlyList<ItemRecord>>(async () => await Query(
            $"SELECT {ItemColumns} FROM items WHERE key_id = @k AND dirty = 1 ORDER BY updated_at, item_id", ReadItem, cancellationToken,
            ("@k", keyId)), cancellationToken));

    /// <inheritdoc />
    public ValueTask SaveAsync(StoreWrite write, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(write);
        write.Validate();
        return new(Locked(async () =>
        {
            var now = _clock.GetUtcNow();
            await using var tx = (SqliteTransaction)await _connection.BeginTransactionAsync(cancellationToken);
            if (write.Identity is { } i)
                await Exec(_connection, tx,
                    $"""
                    INSERT INTO identity_states ({IdentityColumns}) VALUES (@k, @kind, @t, @e, @d, @u)
                    ON CONFLICT (key_id) DO UPDATE SET kind = excluded.kind, access_token = excluded.access_token,
                        token_expiry = excluded.token_expiry, default_namespace_id = excluded.default_namespace_id, updated_at = excluded.updated_at
                    """,
                    cancellationToken, ("@k", i.KeyId), ("@kind", i.Kind ?? "keystore"), ("@t", i.AccessToken ?? ""),
                    ("@e", i.TokenExpiry is { } e ? Ms(e) : null), ("@d", i.DefaultNamespaceId), ("@u", Ms(Stamp(i.UpdatedAt, now))));
            foreach (var n in write.Namespaces)
                await Exec(_connection, tx,
                    $"""
                    INSERT INTO namespaces ({NamespaceColumns}) VALUES (@k, @n, @kind, @h, @s, @d, @u)
                    ON CONFLICT (key_id, namespace_id) DO UPDATE SET kind = excluded.kind, namespace_head = excluded.namespace_head,
                        active_scope_hash = excluded.active_scope_hash, dek = excluded.dek, updated_at = excluded.updated_at
                    """,
                    cancellationToken, ("@k", n.KeyId), ("@n", n.NamespaceId), ("@kind", n.Kind ?? ""), ("@h", (long)n.Head),
                    ("@s", n.ActiveScopeHash ?? ""), ("@d", n.Dek is { Length: > 0 } ? n.Dek : null), ("@u", Ms(Stamp(n.UpdatedAt, now))));
            foreach (var item in write.Items)
                await Exec(_connection, tx,
                    $"""
                    INSERT INTO items ({ItemColumns}) VALUES (@k, @n, @c, @key, @i, @v, @bv, @b, @d, @cf, @cv, @cr, @u)
                    ON CONFLICT (key_id, namespace_id, item_id) DO UPDATE SET collection_name = excluded.collection_name,
                        item_key = excluded.item_key, version = excluded.version, base_version = excluded.base_version,
                        base_value = excluded.base_value, dirty = excluded.dirty, conflict = excluded.conflict,
                        conflict_remote_version = excluded.conflict_remote_version, conflict_remote_value = excluded.conflict_remote_value,
                        updated_at = excluded.updated_at
                    """,
                    cancellationToken, ("@k", item.KeyId), ("@n", item.NamespaceId), ("@c", item.Collection), ("@key", item.Key),
                    ("@i", item.ItemId), ("@v", (long)item.Version), ("@bv", (long)item.BaseVersion), ("@b", item.BaseValue),
                    ("@d", item.Dirty ? 1 : 0), ("@cf", item.Conflict ? 1 : 0), ("@cv", (long)item.ConflictRemoteVersion),
                    ("@cr", item.ConflictRemoteValue), ("@u", Ms(Stamp(item.UpdatedAt, now))));
            await tx.CommitAsync(cancellationToken);
            return 0;
        }, cancellationToken));
    }

    private static DateTimeOffset Stamp(DateTimeOffset t, DateTimeOffset now) => t == default ? now : t;

    /// <inheritdoc />
    public ValueTask ForgetIdentitySecretsAsync(string keyId, CancellationToken cancellationToken = default) =>
        new(Locked(async () =>
        {
            var now = Ms(_clock.GetUtcNow());
            await using var tx = (SqliteTransaction)await _connection.BeginTransactionAsync(cancellationToken);
            await Exec(_connection, tx, "UPDATE identity_states SET access_token = '', token_expiry = NULL, updated_at = @u WHERE key_id = @k",
                cancellationToken, ("@u", now), ("@k", keyId));
            await Exec(_connection, tx, "UPDATE namespaces SET dek = NULL, updated_at = @u WHERE key_id = @k", cancellationToken, ("@u", now), ("@k", keyId));
            await tx.CommitAsync(cancellationToken);
            return 0;
        }, cancellationToken));

    /// <inheritdoc />
    public ValueTask ResetSyncStateAsync(string keyId, CancellationToken cancellationToken = default) =>
        new(Locked(async () =>
        {
            var now = Ms(_clock.GetUtcNow());
            await using var tx = (SqliteTransaction)await _connection.BeginTransactionAsync(cancellationToken);
            await Exec(_connection, tx, "DELETE FROM items WHERE key_id = @k", cancellationToken, ("@k", keyId));
            await Exec(_connection, tx, "DELETE FROM namespaces WHERE key_id = @k", cancellationToken, ("@k", keyId));
            await Exec(_connection, tx, "UPDATE identity_states SET default_namespace_id = NULL, updated_at = @u WHERE key_id = @k",
                cancellationToken, ("@u", now), ("@k", keyId));
            await tx.CommitAsync(cancellationToken);
            return 0;
        }, cancellationToken));

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        await _gate.WaitAsync();
        try
        {
            if (_disposed) return;
            _disposed = true;
            await _connection.DisposeAsync();
        }
        finally
        {
            _gate.Release();
        }
    }
}
