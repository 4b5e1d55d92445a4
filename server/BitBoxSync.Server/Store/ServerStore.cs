using System.Data.Common;
using System.Threading.Channels;
using Microsoft.FSharp.Collections;
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
    /// Runs a state-changing unit of work. The work commits by returning; any exception (a refused
    /// request included) rolls its writes back. With group commit (the default) concurrent works
    /// share one transaction and one durable commit, each in a savepoint of its own, in arrival
    /// order (<see cref="GroupCommit"/>); the returned task completes once the commit is durable.
    /// </summary>
    public Task<T> WriteAsync<T>(Func<StoreTx, Task<T>> work, CancellationToken ct)
    {
        if (!GroupCommits) return RunAsync(true, work, ct);
        var member = new Member<T>(work, ct);
        Interlocked.Increment(ref _queued);
        if (!_queue.Writer.TryWrite(member))
        {
            Interlocked.Decrement(ref _queued);
            throw new ObjectDisposedException(GetType().Name, "the store is closed");
        }
        EnsureWriter();
        return member.Task;
    }

    /// <summary>Whether writes are group-committed (on by default; tests compare both ways).</summary>
    public bool GroupCommits { get; set; } = true;

    // ------------------------------------------------------------------ group commit

    private readonly Channel<Member> _queue = Channel.CreateUnbounded<Member>(new UnboundedChannelOptions { SingleReader = true });
    private Task? _writer;
    private int _queued;
    private readonly object _writerGate = new();

    /// <summary>One queued write: its work, the caller's token, and its answer once committed.</summary>
    private abstract class Member(CancellationToken ct)
    {
        public CancellationToken Token => ct;
        public Exception? Error { get; set; }
        public abstract Task RunAsync(StoreTx tx);
        public abstract void Acknowledge();
        public abstract void Fail(Exception e);
    }

    private sealed class Member<T>(Func<StoreTx, Task<T>> work, CancellationToken ct) : Member(ct)
    {
        private readonly TaskCompletionSource<T> _answer = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private T? _result;
        public Task<T> Task => _answer.Task;
        public override async Task RunAsync(StoreTx tx) => _result = await work(tx);
        public override void Acknowledge() => _answer.TrySetResult(_result!);
        public override void Fail(Exception e) => _answer.TrySetException(e);
    }

    private void EnsureWriter()
    {
        if (_writer is not null) return;
        lock (_writerGate) _writer ??= Task.Run(WriterLoopAsync);
    }

    /// <summary>The single writer: takes whatever queued while the previous group committed.</summary>
    private async Task WriterLoopAsync()
    {
        var group = new List<Member>(GroupCommit.MaxGroup);
        while (await _queue.Reader.WaitToReadAsync())
        {
            group.Clear();
            var take = GroupCommit.take(Volatile.Read(ref _queued));
            while (group.Count < Math.Max(1, take) && _queue.Reader.TryRead(out var member))
            {
                Interlocked.Decrement(ref _queued);
                if (member.Token.IsCancellationRequested) member.Fail(new OperationCanceledException(member.Token));
                else group.Add(member);
            }
            if (group.Count == 0) continue;
            try
            {
                await CommitGroupAsync(group);
            }
            catch (Exception e)
            {
                foreach (var m in group) m.Fail(e); // answered members ignore it (TrySet)
            }
        }
    }

    private async Task CommitGroupAsync(List<Member> group)
    {
        for (var attempt = 1; ; attempt++)
        {
            var outcomes = new MemberOutcome[group.Count];
            Array.Fill(outcomes, MemberOutcome.NotRun);
            var changed = new List<string>();
            GroupDecision decision;
            try
            {
                await using var connection = await OpenAsync(CancellationToken.None);
                await using var transaction = await BeginAsync(connection, true, CancellationToken.None);
                for (var i = 0; i < group.Count; i++)
                {
                    var member = group[i];
                    member.Error = null;
                    await transaction.SaveAsync("member");
                    var tx = new StoreTx(connection, transaction, dialect, write: true);
                    try
                    {
                        await member.RunAsync(tx);
                        await tx.NotifyAsync(CancellationToken.None);
                        await transaction.ReleaseAsync("member");
                        outcomes[i] = MemberOutcome.Done;
                        changed.AddRange(tx.Changed);
                    }
                    catch (Exception e) when (IsTransient(e))
                    {
                        outcomes[i] = MemberOutcome.LostRace;
                        member.Error = e;
                        break; // the transaction is lost: nothing more runs in it
                    }
                    catch (Exception e)
                    {
                        await transaction.RollbackAsync("member");
                        await transaction.ReleaseAsync("member");
                        outcomes[i] = MemberOutcome.Refused;
                        member.Error = e;
                    }
                }
                decision = GroupCommit.decide(ListModule.OfArray(outcomes));
                if (decision.Commit)
                {
                    var committing = System.Diagnostics.Stopwatch.GetTimestamp();
                    await transaction.CommitAsync(CancellationToken.None);
                    Metrics?.Committed(dialect.Name, System.Diagnostics.Stopwatch.GetElapsedTime(committing));
                }
            }
            catch (Exception e) when (IsTransient(e))
            {
                decision = GroupCommit.decide(ListModule.OfArray(Enumerable.Repeat(MemberOutcome.LostRace, group.Count).ToArray()));
                group[0].Error = e;
            }

            if (decision.Commit)
            {
                foreach (var key in changed.Distinct(StringComparer.Ordinal)) Changed?.Invoke(key);
                foreach (var i in decision.Acknowledge) group[i].Acknowledge();
                foreach (var i in decision.Fail) group[i].Fail(group[i].Error ?? new OperationCanceledException());
                return;
            }
            var lost = group.Select(m => m.Error).FirstOrDefault(e => e is not null && IsTransient(e));
            if (attempt == MaxAttempts)
            {
                var busy = new StoreBusyException($"gave up after {MaxAttempts} lost races: {lost?.Message}", lost!);
                foreach (var m in group) m.Fail(busy);
                return;
            }
            logger.LogDebug("retrying a group of {Count} after a lost race ({Attempt}): {Message}", group.Count, attempt, lost?.Message);
            await Task.Delay(TimeSpan.FromMilliseconds(Random.Shared.Next(1, 5 * attempt)));
        }
    }

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

    /// <summary>Stops taking writes and lets the writer finish the queued ones.</summary>
    protected async ValueTask StopWriterAsync()
    {
        _queue.Writer.TryComplete();
        if (_writer is { } writer) await writer;
    }

    /// <inheritdoc />
    public virtual ValueTask DisposeAsync() => StopWriterAsync();
}

/// <summary>A transaction lost its race too many times in a row; the request may be retried later (503).</summary>
internal sealed class StoreBusyException(string message, Exception inner) : Exception(message, inner);
