using BitBoxSync.Server.Store;
using Microsoft.Extensions.Logging;

namespace BitBoxSync.Server;

/// <summary>
/// Every 10 minutes (on the server's clock), deletes what can never be used again: expired or
/// used challenges, expired or revoked tokens, pending join requests past their expiry.
/// </summary>
internal sealed class SweepLoop : IAsyncDisposable
{
    public static readonly TimeSpan Interval = TimeSpan.FromMinutes(10);
    private readonly Api _api;
    private readonly ILogger _log;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;

    /// <summary>A sweeper; with <paramref name="start"/> it also sweeps every <see cref="Interval"/>.</summary>
    public SweepLoop(Api api, ILogger log, bool start)
    {
        _api = api;
        _log = log;
        _loop = start ? Task.Run(RunAsync) : Task.CompletedTask;
    }

    public async Task<int> SweepAsync(CancellationToken ct)
    {
        var now = _api.Now;
        var deleted = await _api.Store.WriteAsync(tx => tx.SweepAsync(now, ct), ct);
        if (deleted > 0) _log.LogInformation("swept {Rows} expired challenges, tokens and join requests", deleted);
        return deleted;
    }

    private async Task RunAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(Interval, _api.Clock, _stop.Token);
                await SweepAsync(_stop.Token);
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                _log.LogWarning("sweep failed: {Error}", e.Message);
            }
        }
    }

    private int _disposed;

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return; // the server may be disposed twice
        await _stop.CancelAsync();
        try { await _loop; } catch (OperationCanceledException) { }
        _stop.Dispose();
    }
}
