using System.Data;
using System.Data.Common;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace BitBoxSync.Server.Store;

/// <summary>
/// The scale-out store: PostgreSQL shared by several server processes. Write transactions lock
/// the rows their decision rests on (namespace, identity) with <c>SELECT … FOR UPDATE</c>; commits
/// publish changed watch keys with NOTIFY, and a listener connection wakes local watchers for
/// commits made by other processes.
/// </summary>
internal sealed class PostgresServerStore : ServerStore
{
    private readonly NpgsqlDataSource _dataSource;
    private readonly string _describe;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private Task? _listener;

    public PostgresServerStore(string connectionString, ILogger logger) : base(Dialect.Postgres, logger)
    {
        var builder = new NpgsqlConnectionStringBuilder(connectionString);
        _describe = $"PostgreSQL {builder.Host}:{builder.Port}/{builder.Database}";
        _dataSource = NpgsqlDataSource.Create(builder);
        _logger = logger;
    }

    public override string Describe => _describe;

    protected override async Task<DbConnection> OpenAsync(CancellationToken ct) =>
        await _dataSource.OpenConnectionAsync(ct);

    protected override async Task<DbTransaction> BeginAsync(DbConnection connection, bool write, CancellationToken ct) =>
        await ((NpgsqlConnection)connection).BeginTransactionAsync(write ? IsolationLevel.ReadCommitted : IsolationLevel.RepeatableRead, ct);

    protected override async Task LockSchemaAsync(DbConnection connection, DbTransaction transaction, CancellationToken ct)
    {
        await using var cmd = connection.CreateCommand();
        cmd.Transaction = transaction;
        cmd.CommandText = "SELECT pg_advisory_xact_lock(7361626978)";
        await cmd.ExecuteNonQueryAsync(ct);
    }

    protected override bool IsTransient(Exception e) =>
        e is PostgresException { SqlState: "40001" or "40P01" or "23505" };

    /// <summary>Starts listening for other processes' commits.</summary>
    public void StartListening()
    {
        _listener ??= Task.Run(() => ListenAsync(_stop.Token));
    }

    private async Task ListenAsync(CancellationToken ct)
    {
        var delay = TimeSpan.FromMilliseconds(200);
        while (!ct.IsCancellationRequested)
        {
            try
            {
                await using var connection = await _dataSource.OpenConnectionAsync(ct);
                connection.Notification += (_, e) => Changed?.Invoke(e.Payload);
                await using (var listen = connection.CreateCommand())
                {
                    listen.CommandText = "LISTEN " + Dialect.ChangeChannel;
                    await listen.ExecuteNonQueryAsync(ct);
                }
                // Changes may have been missed while disconnected: wake every watcher to re-check.
                Changed?.Invoke(WatchHub.Everything);
                delay = TimeSpan.FromMilliseconds(200);
                while (!ct.IsCancellationRequested) await connection.WaitAsync(ct);
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                _logger.LogWarning("change listener lost its connection, reconnecting in {Delay}: {Message}", delay, e.Message);
                try { await Task.Delay(delay, ct); } catch (OperationCanceledException) { return; }
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, TimeSpan.FromSeconds(10).Ticks));
            }
        }
    }

    public override async ValueTask DisposeAsync()
    {
        await StopWriterAsync();
        await _stop.CancelAsync();
        if (_listener is not null) await _listener;
        await _dataSource.DisposeAsync();
        _stop.Dispose();
    }
}
