using System.Data.Common;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;

namespace BitBoxSync.Server.Store;

/// <summary>
/// The embedded store: one SQLite file in WAL mode with full-sync commits. Writers are serialised
/// by <c>BEGIN IMMEDIATE</c>, which makes every compare-and-set atomic. One server process per file.
/// </summary>
internal sealed class SqliteServerStore : ServerStore
{
    private readonly string _connectionString;
    private readonly string _path;

    public SqliteServerStore(string path, ILogger logger) : base(Dialect.Sqlite, logger)
    {
        _path = Path.GetFullPath(path);
        _connectionString = new SqliteConnectionStringBuilder
        {
            DataSource = _path,
            Mode = SqliteOpenMode.ReadWriteCreate,
            Cache = SqliteCacheMode.Private,
            Pooling = true,
            DefaultTimeout = 30,
        }.ToString();
    }

    public override string Describe => "SQLite " + _path;

    protected override async Task<DbConnection> OpenAsync(CancellationToken ct)
    {
        var c = new SqliteConnection(_connectionString);
        await c.OpenAsync(ct);
        await using var pragma = c.CreateCommand();
        // FULL: a commit is on disk before the answer goes out (WAL + NORMAL could lose the last ones).
        pragma.CommandText = "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 30000";
        await pragma.ExecuteNonQueryAsync(ct);
        return c;
    }

    protected override Task<DbTransaction> BeginAsync(DbConnection connection, bool write, CancellationToken ct) =>
        Task.FromResult<DbTransaction>(((SqliteConnection)connection).BeginTransaction(deferred: !write));

    protected override async Task PrepareForMigrationAsync(DbConnection connection, CancellationToken ct)
    {
        await using var cmd = connection.CreateCommand();
        cmd.CommandText = "PRAGMA journal_mode = WAL";
        await cmd.ExecuteNonQueryAsync(ct);
    }

    protected override bool IsTransient(Exception e) =>
        e is SqliteException { SqliteErrorCode: 5 or 6 }; // SQLITE_BUSY, SQLITE_LOCKED

    public override async ValueTask DisposeAsync()
    {
        await StopWriterAsync();
        SqliteConnection.ClearAllPools();
    }
}
