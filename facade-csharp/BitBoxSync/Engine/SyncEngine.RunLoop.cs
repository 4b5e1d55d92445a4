using BitBoxSync.Core;
using BitBoxSync.Protocol;
using BitBoxSync.Protocol.Wire;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using static BitBoxSync.StateMapping;

namespace BitBoxSync;

/// <content>The background loop: scheduling, backoff, idle polling and the long-poll watch.</content>
public sealed partial class SyncEngine
{
    // ------------------------------------------------------------------ background loop

    /// <summary>Wakes <see cref="RunAsync"/> for a pass soon (coalesces; no network by itself). Call after app writes.</summary>
    public void ScheduleSync() => _wake.Writer.TryWrite(true);

    private volatile bool _idlePolling;

    /// <summary>Whether background polling slows down while nothing changes (idle mode).</summary>
    public bool IdlePolling => _idlePolling;

    /// <summary>Switches idle mode (for example when the app goes to the background) and wakes <see cref="RunAsync"/>.</summary>
    public void SetIdlePolling(bool idle)
    {
        _idlePolling = idle;
        ScheduleSync();
    }

    /// <summary>
    /// Every namespace this identity can see, after a namespace reconciliation under the sync lock
    /// (new ones are joined). Records carry no key material.
    /// </summary>
    public async Task<IReadOnlyList<NamespaceInfo>> ListNamespacesAsync(CancellationToken cancellationToken = default)
    {
        await SyncNowAsync(cancellationToken);
        return (await _store.ListNamespacesAsync(_keyId.Wire, cancellationToken))
            .OrderBy(n => n.Kind, StringComparer.Ordinal).ThenBy(n => n.NamespaceId, StringComparer.Ordinal)
            .Select(n => new NamespaceInfo(n.NamespaceId, n.Kind, n.Head)).ToList();
    }

    /// <summary>
    /// Syncs in the background until cancelled or disposed: a pass at start, after each
    /// <see cref="ScheduleSync"/>, and every poll interval (±10 % jitter), backing off after failures
    /// (a transient failure — no answer, 5xx, 408, 429 — is retried within seconds with full jitter,
    /// honouring <c>Retry-After</c>; other failures wait 10, 20, 40, 60 minutes by default; see
    /// docs/concepts.md). Background passes never prompt the identity: when a login
    /// is needed they report <see cref="SyncEventType.LoginRequired"/> and wait for <see cref="LoginAsync"/>.
    /// </summary>
    /// <exception cref="InvalidOperationException">Another <c>RunAsync</c> is already running.</exception>
    public async Task RunAsync(CancellationToken cancellationToken = default)
    {
        ThrowIfClosed();
        if (Interlocked.CompareExchange(ref _running, 1, 0) != 0)
            throw new InvalidOperationException("RunAsync is already running on this engine");
        try
        {
            using var linked = Linked(cancellationToken);
            var ct = linked.Token;
            var max = _options.MaxPollInterval is { } m ? m : TimeSpan.FromTicks(Math.Max(TimeSpan.FromMinutes(60).Ticks, _options.PollInterval.Ticks));
            var settings = Schedule.settings(_options.PollInterval, max);
            var schedule = Schedule.initial(settings);
            var requested = true;
            var watch = _options.DisableNamespaceWatch ? Task.CompletedTask : Task.Run(() => WatchLoopAsync(settings, ct), CancellationToken.None);
            try
            {
                while (true)
                {
                    ct.ThrowIfCancellationRequested();
                    FailureKind? failure = null;
                    Interlocked.Increment(ref _runPassesStarted);
                    try
                    {
                        await PassAsync(mayPrompt: false, ct);
                    }
                    catch (Exception e) when (e is not OperationCanceledException && e is not SyncEngineClosedException)
                    {
                        failure = FailureOf(e);
                    }
                    Interlocked.Increment(ref _runPassesCompleted);
                    Interlocked.Exchange(ref _nextPass, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
                    schedule = Schedule.record(settings, _idlePolling, schedule,
                        new PassResult(failure is null ? null : FSharpOption<FailureKind>.Some(failure), _lastPassActivity, requested));
                    if (Interlocked.Exchange(ref _loginSignal, 0) == 1) schedule = Schedule.loginSucceeded(settings, schedule);
                    var delay = Schedule.nextWait(schedule, _options.RandomSample());
                    EngineLog.NextPass(_log, delay.TotalMilliseconds,
                        failure is null ? (_idlePolling ? "idle polling" : "polling") : "after a " + SyncTelemetry.Kind(failure) + " failure",
                        schedule.Failures);
                    // The wait runs on the engine's clock (tests drive it with a fake TimeProvider).
                    using var elapsed = new CancellationTokenSource(delay, _clock);
                    using var timer = CancellationTokenSource.CreateLinkedTokenSource(ct, elapsed.Token);
                    try
                    {
                        requested = await _wake.Reader.WaitToReadAsync(timer.Token) && _wake.Reader.TryRead(out _);
                    }
                    catch (OperationCanceledException) when (!ct.IsCancellationRequested)
                    {
                        requested = false; // the poll interval passed
                    }
                }
            }
            finally
            {
                await watch;
            }
        }
        catch (OperationCanceledException) when (Volatile.Read(ref _closed) != 0)
        {
            throw new SyncEngineClosedException();
        }
        finally
        {
            Volatile.Write(ref _running, 0);
        }
    }

    /// <summary>What the schedule needs to know of a failure (the rule is <c>Schedule.classify</c>).</summary>
    private static FailureKind FailureOf(Exception e) => e switch
    {
        SyncTransportException => Schedule.classify(true, null, null),
        SyncApiException api => Schedule.classify(false, FSharpOption<int>.Some(api.StatusCode),
            api.RetryAfter is { } r ? FSharpOption<TimeSpan>.Some(r) : null),
        IOException => Schedule.classify(true, null, null),
        _ => Schedule.classify(false, null, null),
    };

    /// <summary>
    /// The advisory long poll (docs/engine.md §6.3): waits on the server for a namespace change,
    /// then asks Run for a pass and waits for it. 404/405/501 from the watch request itself switch
    /// watching off for this run (docs/engine.md §12.15); other failures back off. Never prompts
    /// the identity.
    /// </summary>
    private async Task WatchLoopAsync(PollSettings settings, CancellationToken ct)
    {
        var failures = 0;
        while (!ct.IsCancellationRequested)
        {
            // Taken before the request: a login while it fails still ends the backoff that follows.
            var login = Volatile.Read(ref _watchLogin).Task;
            try
            {
                var cached = (await _store.ListNamespacesAsync(_keyId.Wire, ct)).ToList();
                var known = cached.ToDictionary(n => n.NamespaceId, n => n.Head, StringComparer.Ordinal);
                WatchNamespacesResponse answer;
                try
                {
                    answer = await AuthenticatedAsync(token => _client.WatchNamespacesAsync(token, new WatchNamespacesRequest(known), ct), mayPrompt: false, ct);
                }
                catch (SyncApiException e) when (e.StatusCode is 404 or 405 or 501)
                {
                    return; // the server does not offer the watch: polling only
                }
                var reported = Namespaces.parseListed(ListModule.OfSeq(answer.Namespaces));
                if (reported.IsError) throw ToException(reported.ErrorValue);
                var outcome = Core.Watch.interpret(ListModule.OfSeq(cached.Select(ToCore)), reported.ResultValue, answer.TimedOut);
                switch (outcome)
                {
                    case WatchOutcome.Failed failed:
                        throw ToException(failed.Item);
                    case var o when o.IsNeedsSync:
                        SyncTelemetry.WatchWakeups.Add(1);
                        EngineLog.WatchWakeup(_log);
                        // Wait for a pass that starts after this answer (not one already running), so
                        // the next watch carries the heads that pass reconciled.
                        var needed = Volatile.Read(ref _runPassesStarted) + 1;
                        ScheduleSync();
                        while (Volatile.Read(ref _runPassesCompleted) < needed)
                        {
                            var next = Volatile.Read(ref _nextPass).Task;
                            if (Volatile.Read(ref _runPassesCompleted) >= needed) break;
                            await next.WaitAsync(ct);
                        }
                        break;
                    case var o when o.IsTimedOut:
                        await Task.Delay(Schedule.watchReconnectDelay(_options.RandomSample()), _clock, ct);
                        break;
                }
                failures = 0;
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                return;
            }
            catch (SyncEngineClosedException)
            {
                return;
            }
            catch (Exception e)
            {
                failures++;
                Emit(SyncEventType.NamespaceWatchFailed, error: e);
                var status = e is SyncApiException api ? FSharpOption<int>.Some(api.StatusCode) : null;
                SyncTelemetry.Failures.Add(1, new KeyValuePair<string, object?>("kind", "watch"));
                var kind = FailureOf(e);
                if (Core.Watch.onFailure(settings, failures, kind, status, _options.RandomSample()) is WatchFailure.Retry retry)
                {
                    EngineLog.WatchFailed(_log, SyncTelemetry.Kind(kind), retry.delay.TotalMilliseconds, e.GetType().Name, e.Message);
                    try
                    {
                        // A successful login ends the backoff at once (the device is back).
                        if (await Task.WhenAny(Task.Delay(retry.delay, _clock, ct), login) == login) failures = 0;
                        ct.ThrowIfCancellationRequested();
                    }
                    catch (OperationCanceledException)
                    {
                        return;
                    }
                }
            }
        }
    }
}
