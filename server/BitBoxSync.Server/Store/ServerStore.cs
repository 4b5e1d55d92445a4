using System.Data.Common;
using Microsoft.Extensions.Logging;

namespace BitBoxSync.Server.Store;

/// <summary>
/// A server database: runs each unit of work in one transaction, retries it when the database
/// reports a transient conflict, and reports committed changes to the watch hub.
/// </summary>
internal abstract class ServerStore(Dialect dialect, ILogger logger) : IAsyncDisposable
{
    private const int MaxAttempts = 8;

    /// <summary>The SQL dialect.</summary>
    public Dialect Dialect => dialect;

    /// <summary>Called after commit with every changed watch key (and by cross-process notifications).</summary>
    public Action<string>? Changed { get; set; }

    /// <summary>Records commit latencies (set by the server; absent in tools that only migrate).</summary>
    public ServerMetrics? Metrics { get; set; }

    /// <summary>Human-readable description of where the data lives (no credentials).</summary>
    public abstract string Describe { get; }

    protected abstract Task<DbConnection> OpenAsync(CancellationToken ct);

    /// <summary>Begins a transaction: writers are serialised or lock what they read.</summary>
    protected abstract Task<DbTransaction> BeginAsync(DbConnection connection, bool write, CancellationToken ct);

    /// <summary>Whether a failure is a lost race that a retry resolves (busy, serialization, deadlock, duplicate key).</summary>
    protected abstract bool IsTransient(Exception e);

    /// <summary>Runs a read-only unit of work on a consistent snapshot.</summary>
    public Task<T> ReadAsync<T>(Func<StoreTx, Task<T>> work, CancellationToken ct) => RunAsync(false, work, ct);

    /// <summary>
    /// Runs a state-changing unit of work in one transaction. The work commits by returning; any
    /// exception (a refused request included) rolls everything back.
    /// </summary>
    public Task<T> WriteAsync<T>(Func<StoreTx, Task<T>> work, CancellationToken ct) => RunAsync(true, work, ct);

    private async Task<T> RunAsync<T>(bool write, Func<StoreTx, Task<T>> work, CancellationToken ct)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await using var connection = await OpenAsync(ct);
                await using var transaction = await BeginAsync(connection, write, ct);
                var tx = new StoreTx(connection, transaction, dialect, write);
                var result = await work(tx);
                await tx.NotifyAsync(ct);
                var committing = System.Diagnostics.Stopwatch.GetTimestamp();
                await transaction.CommitAsync(ct);
                if (write) Metrics?.Committed(dialect.Name, System.Diagnostics.Stopwatch.GetElapsedTime(committing));
                foreach (var key in tx.Changed) Changed?.Invoke(key);
                return result;
            }
            catch (Exception e) when (IsTransient(e))
            {
                if (attempt == MaxAttempts)
                    throw new StoreBusyException($"gave up after {MaxAttempts} lost races: {e.Message}", e);
                logger.LogDebug("retrying a transaction after a lost race ({Attempt}): {Message}", attempt, e.Message);
                await Task.Delay(TimeSpan.FromMilliseconds(Random.Shared.Next(1, 5 * attempt)), ct);
            }
        }
    }

    /// <summary>Creates or upgrades the schema to <see cref="Schema.Current"/>; refuses a newer database.</summary>
    public async Task MigrateAsync(CancellationToken ct)
    {
        await using var connection = await OpenAsync(ct);
        await PrepareForMigrationAsync(connection, ct);
        await using (var create = connection.CreateCommand())
        {
            create.CommandText = $"CREATE TABLE IF NOT EXISTS bitboxsync_schema (version {dialect.IntType} NOT NULL)";
            await create.ExecuteNonQueryAsync(ct);
        }

        while (true)
        {
            await using var transaction = await BeginAsync(connection, true, ct);
            await LockSchemaAsync(connection, transaction, ct);
            var version = await CurrentVersionAsync(connection, transaction, ct);
            if (version > Schema.Current)
                throw new InvalidOperationException(
                    $"the database schema is version {version}, newer than this server's {Schema.Current}: upgrade the server");
            if (version == Schema.Current)
            {
                await transaction.CommitAsync(ct);
                return;
            }

            foreach (var statement in Schema.Migrations[version])
                await Execute(connection, transaction, dialect.Ddl(statement), ct);
            await Execute(connection, transaction, "DELETE FROM bitboxsync_schema", ct);
            await Execute(connection, transaction, $"INSERT INTO bitboxsync_schema (version) VALUES ({version + 1})", ct);
            await transaction.CommitAsync(ct);
            logger.LogInformation("migrated the {Store} schema to version {Version}", dialect.Name, version + 1);
        }
    }

    /// <summary>Per-store set-up before migrating (journal mode, advisory locks).</summary>
    protected virtual Task PrepareForMigrationAsync(DbConnection connection, CancellationToken ct) => Task.CompletedTask;

    /// <summary>Serialises concurrent migrations of several server processes.</summary>
    protected virtual Task LockSchemaAsync(DbConnection connection, DbTransaction transaction, CancellationToken ct) => Task.CompletedTask;

    private static async Task<int> CurrentVersionAsync(DbConnection c, DbTransaction t, CancellationToken ct)
    {
        await using var cmd = c.CreateCommand();
        cmd.Transaction = t;
        cmd.CommandText = "SELECT MAX(version) FROM bitboxsync_schema";
        var v = await cmd.ExecuteScalarAsync(ct);
        return v is null or DBNull ? 0 : Convert.ToInt32(v);
    }

    private static async Task Execute(DbConnection c, DbTransaction t, string sql, CancellationToken ct)
    {
        await using var cmd = c.CreateCommand();
        cmd.Transaction = t;
        cmd.CommandText = sql;
        await cmd.ExecuteNonQueryAsync(ct);
    }

    /// <inheritdoc />
    public virtual ValueTask DisposeAsync() => ValueTask.CompletedTask;
}

/// <summary>A transaction lost its race too many times in a row; the request may be retried later (503).</summary>
internal sealed class StoreBusyException(string message, Exception inner) : Exception(message, inner);
