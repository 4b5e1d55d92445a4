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
        // 2: the store key (sealed by the app's key protector) when secrets are encrypted at rest.
        [
            "CREATE TABLE store_secrets (id INTEGER PRIMARY KEY CHECK (id = 1), sealed_key BLOB NOT NULL)",
        ],
        // 3: deletes in key-directory collections (this device's directory entry per key).
        [
            "ALTER TABLE items ADD COLUMN dir_generation INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE items ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE items ADD COLUMN dir_seen INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE items ADD COLUMN removed INTEGER NOT NULL DEFAULT 0",
        ],
    ];

    private SqliteStore(SqliteConnection connection, TimeProvider clock)
    {
        _connection = connection;
        _clock = clock;
    }

    /// <summary>
    /// Opens (creating when missing) and migrates the store at <paramref name="path"/>, keeping
    /// tokens and namespace keys <b>unencrypted</b> in the file; prefer
    /// <see cref="OpenAsync(string, IKeyProtector, CancellationToken)"/> in an app.
    /// </summary>
    /// <exception cref="ArgumentException">The path is empty.</exception>
    /// <exception cref="StoreException">The file is not a usable store (for example written by a newer
    /// version), or its secrets are encrypted (open it with its key protector).</exception>
    public static async Task<SqliteStore> OpenAsync(string path, CancellationToken cancellationToken = default)
    {
        var store = await OpenAsync(ConnectionString(path), file: true, TimeProvider.System, cancellationToken);
        if (await store.SealedKeyAsync(cancellationToken) is not null)
        {
            await store.DisposeAsync();
            throw new StoreException("this store keeps its secrets encrypted: open it with SqliteStore.OpenAsync(path, protector)");
        }
        return store;
    }

    /// <summary>
    /// Opens the store at <paramref name="path"/> with its <b>secrets encrypted at rest</b>: bearer
    /// tokens and namespace keys (DEKs) are sealed with XChaCha20-Poly1305 under a random store key,
    /// itself sealed by <paramref name="secretsProtector"/> (a passphrase, DPAPI, …) inside the file.
    /// Each ciphertext is bound to its row (column, identity key ID, namespace ID): rows cannot be
    /// swapped. A store written without encryption is migrated on open (existing secrets encrypted,
    /// the old bytes overwritten).
    /// </summary>
    /// <exception cref="KeyProtectionException">The protector cannot open this store's key (wrong passphrase, changed file).</exception>
    /// <exception cref="StoreException">The file is not a usable store.</exception>
    public static async Task<SqliteStore> OpenAsync(string path, IKeyProtector secretsProtector, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(secretsProtector);
        var store = await OpenAsync(ConnectionString(path), file: true, TimeProvider.System, cancellationToken);
        try
        {
            await store.UseSecretsAsync(secretsProtector, cancellationToken);
            return store;
        }
        catch
        {
            await store.DisposeAsync();
            throw;
        }
    }

    private static string ConnectionString(string path)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new ArgumentException("sqlite path is required", nameof(path));
        return new SqliteConnectionStringBuilder { DataSource = Path.GetFullPath(path), Mode = SqliteOpenMode.ReadWriteCreate, Pooling = false }.ToString();
    }

    private static readonly byte[] StoreKeyPurpose = "bitboxsync-store-key-v1"u8.ToArray();
    private const string TokenPrefix = "enc1:";
    private const byte DekMarker = 0xE1;
    private NSec.Cryptography.Key? _secretsKey;

    private Task<byte[]?> SealedKeyAsync(CancellationToken ct) =>
        Locked(async () => (await Query("SELECT sealed_key FROM store_secrets WHERE id = 1", r => (byte[])r.GetValue(0), ct)).FirstOrDefault(), ct);

    /// <summary>Creates or opens the store key, then encrypts any secret still stored in the clear.</summary>
    private async Task UseSecretsAsync(IKeyProtector protector, CancellationToken ct)
    {
        var sealedKey = await SealedKeyAsync(ct);
        byte[] raw;
        if (sealedKey is null)
        {
            raw = System.Security.Cryptography.RandomNumberGenerator.GetBytes(32);
            var sealedNew = await protector.ProtectAsync(raw, StoreKeyPurpose, ct);
            await Locked(async () =>
            {
                await Exec(_connection, null, "INSERT INTO store_secrets (id, sealed_key) VALUES (1, @s)", ct, ("@s", sealedNew));
                return 0;
            }, ct);
        }
        else
        {
            raw = await protector.UnprotectAsync(sealedKey, StoreKeyPurpose, ct);
            if (raw.Length != 32) throw new KeyProtectionException("the store key has the wrong length");
        }
        _secretsKey = NSec.Cryptography.Key.Import(NSec.Cryptography.AeadAlgorithm.XChaCha20Poly1305, raw, NSec.Cryptography.KeyBlobFormat.RawSymmetricKey);
        System.Security.Cryptography.CryptographicOperations.ZeroMemory(raw);

        // Overwritten pages are zeroed, so migrated plaintext does not linger in free pages.
        await Locked(async () =>
        {
            await Exec(_connection, null, "PRAGMA secure_delete = ON", ct);
            var identities = await Query("SELECT key_id, access_token FROM identity_states", r => (r.GetString(0), r.GetString(1)), ct);
            var namespaces = await Query("SELECT key_id, namespace_id, dek FROM namespaces WHERE dek IS NOT NULL",
                r => (r.GetString(0), r.GetString(1), (byte[])r.GetValue(2)), ct);
            await using var tx = (SqliteTransaction)await _connection.BeginTransactionAsync(ct);
            foreach (var (keyId, token) in identities)
                if (token.Length > 0 && !token.StartsWith(TokenPrefix, StringComparison.Ordinal))
                    await Exec(_connection, tx, "UPDATE identity_states SET access_token = @t WHERE key_id = @k", ct,
                        ("@t", SealToken(keyId, token)), ("@k", keyId));
            foreach (var (keyId, ns, dek) in namespaces)
                if (dek.Length > 0 && dek[0] != DekMarker)
                    await Exec(_connection, tx, "UPDATE namespaces SET dek = @d WHERE key_id = @k AND namespace_id = @n", ct,
                        ("@d", SealDek(keyId, ns, dek)), ("@k", keyId), ("@n", ns));
            await tx.CommitAsync(ct);
            await Exec(_connection, null, "PRAGMA wal_checkpoint(TRUNCATE)", ct);
            return 0;
        }, ct);
    }

    private static byte[] SecretAad(string column, string keyId, string namespaceId) =>
        System.Text.Encoding.UTF8.GetBytes($"bitboxsync-store-secret-v1|{column}|{keyId}|{namespaceId}");

    private byte[] Seal(ReadOnlySpan<byte> plain, byte[] aad)
    {
        var nonce = System.Security.Cryptography.RandomNumberGenerator.GetBytes(24);
        return [.. nonce, .. NSec.Cryptography.AeadAlgorithm.XChaCha20Poly1305.Encrypt(_secretsKey!, nonce, aad, plain)];
    }

    private byte[] Open(ReadOnlySpan<byte> sealedBytes, byte[] aad, string what)
    {
        var plain = new byte[Math.Max(0, sealedBytes.Length - 24 - 16)];
        if (sealedBytes.Length < 24 + 16
            || !NSec.Cryptography.AeadAlgorithm.XChaCha20Poly1305.Decrypt(_secretsKey!, sealedBytes[..24], aad, sealedBytes[24..], plain))
            throw new StoreException($"the stored {what} does not open: the row was changed or moved from another row");
        return plain;
    }

    private string SealToken(string keyId, string token) =>
        TokenPrefix + Convert.ToBase64String(Seal(System.Text.Encoding.UTF8.GetBytes(token), SecretAad("access_token", keyId, "")));

    private byte[] SealDek(string keyId, string namespaceId, byte[] dek) => [DekMarker, .. Seal(dek, SecretAad("dek", keyId, namespaceId))];

    private string? OpenToken(string keyId, string? stored)
    {
        if (stored is not null && _secretsKey is not null && !stored.StartsWith(TokenPrefix, StringComparison.Ordinal))
            throw new StoreException("an unencrypted access token in an encrypted store: the row was changed");
        if (stored is null || !stored.StartsWith(TokenPrefix, StringComparison.Ordinal)) return stored;
        if (_secretsKey is null) throw new StoreException("this store's token is encrypted: open it with its key protector");
        byte[] bytes;
        try { bytes = Convert.FromBase64String(stored[TokenPrefix.Length..]); }
        catch (FormatException) { throw new StoreException("the stored access token is damaged"); }
        return System.Text.Encoding.UTF8.GetString(Open(bytes, SecretAad("access_token", keyId, ""), "access token"));
    }

    private byte[]? OpenDek(string keyId, string namespaceId, byte[]? stored)
    {
        if (stored is { Length: > 0 } && _secretsKey is not null && (stored[0] != DekMarker || stored.Length == 32))
            throw new StoreException("an unencrypted namespace key in an encrypted store: the row was changed");
        if (stored is null || stored.Length == 0 || stored[0] != DekMarker || stored.Length == 32) return stored is { Length: > 0 } ? stored : null;
        if (_secretsKey is null) throw new StoreException("this store's namespace keys are encrypted: open it with its key protector");
        return Open(stored.AsSpan(1), SecretAad("dek", keyId, namespaceId), "namespace key");
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
        var cmd = Cached(null, sql, args);
        await using var r = await cmd.ExecuteReaderAsync(ct);
        var rows = new List<T>();
        while (await r.ReadAsync(ct)) rows.Add(read(r));
        return rows;
    }

    /// <summary>Prepared commands by SQL text, reused under the gate (preparing is most of a small statement's cost).</summary>
    private readonly Dictionary<string, SqliteCommand> _commands = new(StringComparer.Ordinal);

    /// <summary>The prepared command for <paramref name="sql"/> with these argument values (call only under the gate).</summary>
    private SqliteCommand Cached(SqliteTransaction? tx, string sql, (string Name, object? Value)[] args)
    {
        if (!_commands.TryGetValue(sql, out var cmd))
        {
            cmd = _connection.CreateCommand();
            cmd.CommandText = sql;
            foreach (var (name, _) in args) cmd.Parameters.Add(new SqliteParameter { ParameterName = name });
            _commands[sql] = cmd;
        }
        cmd.Transaction = tx;
        for (var i = 0; i < args.Length; i++) cmd.Parameters[i].Value = args[i].Value ?? DBNull.Value;
        return cmd;
    }

    private Task CachedExec(SqliteTransaction tx, string sql, CancellationToken ct, params (string, object?)[] args) =>
        Cached(tx, sql, args).ExecuteNonQueryAsync(ct);

    private static long Ms(DateTimeOffset t) => t.ToUnixTimeMilliseconds();
    private static DateTimeOffset Time(SqliteDataReader r, int i) => DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(i));
    private static byte[]? Blob(SqliteDataReader r, int i) => r.IsDBNull(i) ? null : (byte[])r.GetValue(i);
    private static string? Text(SqliteDataReader r, int i) => r.IsDBNull(i) || r.GetString(i).Length == 0 ? null : r.GetString(i);

    private const string IdentityColumns = "key_id, kind, access_token, token_expiry, default_namespace_id, updated_at";
    private const string NamespaceColumns = "key_id, namespace_id, kind, namespace_head, active_scope_hash, dek, updated_at";
    private const string ItemColumns =
        "key_id, namespace_id, collection_name, item_key, item_id, version, base_version, base_value, dirty, conflict, conflict_remote_version, conflict_remote_value, updated_at, dir_generation, deleted, dir_seen, removed";

    private IdentityRecord ReadIdentity(SqliteDataReader r) => new()
    {
        KeyId = r.GetString(0),
        Kind = r.GetString(1),
        AccessToken = OpenToken(r.GetString(0), Text(r, 2)),
        TokenExpiry = r.IsDBNull(3) ? null : Time(r, 3),
        DefaultNamespaceId = Text(r, 4),
        UpdatedAt = Time(r, 5),
    };

    private NamespaceRecord ReadNamespace(SqliteDataReader r) => new()
    {
        KeyId = r.GetString(0),
        NamespaceId = r.GetString(1),
        Kind = Text(r, 2),
        Head = (ulong)r.GetInt64(3),
        ActiveScopeHash = r.GetString(4),
        Dek = OpenDek(r.GetString(0), r.GetString(1), Blob(r, 5)),
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
        DirGeneration = (ulong)r.GetInt64(13),
        Deleted = r.GetInt64(14) != 0,
        DirSeen = (ulong)r.GetInt64(15),
        Removed = r.GetInt64(16) != 0,
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
                await CachedExec(tx,
                    $"""
                    INSERT INTO identity_states ({IdentityColumns}) VALUES (@k, @kind, @t, @e, @d, @u)
                    ON CONFLICT (key_id) DO UPDATE SET kind = excluded.kind, access_token = excluded.access_token,
                        token_expiry = excluded.token_expiry, default_namespace_id = excluded.default_namespace_id, updated_at = excluded.updated_at
                    """,
                    cancellationToken, ("@k", i.KeyId), ("@kind", i.Kind ?? "keystore"), ("@t", i.AccessToken is { Length: > 0 } token && _secretsKey is not null ? SealToken(i.KeyId, token) : i.AccessToken ?? ""),
                    ("@e", i.TokenExpiry is { } e ? Ms(e) : null), ("@d", i.DefaultNamespaceId), ("@u", Ms(Stamp(i.UpdatedAt, now))));
            foreach (var n in write.Namespaces)
                await CachedExec(tx,
                    $"""
                    INSERT INTO namespaces ({NamespaceColumns}) VALUES (@k, @n, @kind, @h, @s, @d, @u)
                    ON CONFLICT (key_id, namespace_id) DO UPDATE SET kind = excluded.kind, namespace_head = excluded.namespace_head,
                        active_scope_hash = excluded.active_scope_hash, dek = excluded.dek, updated_at = excluded.updated_at
                    """,
                    cancellationToken, ("@k", n.KeyId), ("@n", n.NamespaceId), ("@kind", n.Kind ?? ""), ("@h", (long)n.Head),
                    ("@s", n.ActiveScopeHash ?? ""), ("@d", n.Dek is { Length: > 0 } ? (_secretsKey is not null ? SealDek(n.KeyId, n.NamespaceId, n.Dek) : n.Dek) : null), ("@u", Ms(Stamp(n.UpdatedAt, now))));
            // An item's collection and key are fixed by its ID (their HMAC): an update leaves them, and
            // so the logical-key index, untouched.
            foreach (var item in write.Items)
                await CachedExec(tx,
                    $"""
                    INSERT INTO items ({ItemColumns}) VALUES (@k, @n, @c, @key, @i, @v, @bv, @b, @d, @cf, @cv, @cr, @u, @g, @del, @ds, @rm)
                    ON CONFLICT (key_id, namespace_id, item_id) DO UPDATE SET version = excluded.version, base_version = excluded.base_version,
                        base_value = excluded.base_value, dirty = excluded.dirty, conflict = excluded.conflict,
                        conflict_remote_version = excluded.conflict_remote_version, conflict_remote_value = excluded.conflict_remote_value,
                        updated_at = excluded.updated_at, dir_generation = excluded.dir_generation, deleted = excluded.deleted,
                        dir_seen = excluded.dir_seen, removed = excluded.removed
                    """,
                    cancellationToken, ("@k", item.KeyId), ("@n", item.NamespaceId), ("@c", item.Collection), ("@key", item.Key),
                    ("@i", item.ItemId), ("@v", (long)item.Version), ("@bv", (long)item.BaseVersion), ("@b", item.BaseValue),
                    ("@d", item.Dirty ? 1 : 0), ("@cf", item.Conflict ? 1 : 0), ("@cv", (long)item.ConflictRemoteVersion),
                    ("@cr", item.ConflictRemoteValue), ("@u", Ms(Stamp(item.UpdatedAt, now))), ("@g", (long)item.DirGeneration),
                    ("@del", item.Deleted ? 1 : 0), ("@ds", (long)item.DirSeen), ("@rm", item.Removed ? 1 : 0));
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
            _secretsKey?.Dispose();
            foreach (var cmd in _commands.Values) await cmd.DisposeAsync();
            _commands.Clear();
            await _connection.DisposeAsync();
        }
        finally
        {
            _gate.Release();
        }
    }
}
