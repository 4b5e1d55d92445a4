using System.Diagnostics;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Logging;

namespace BitBoxSync;

/// <summary>
/// The engine's OpenTelemetry-friendly instruments: the <see cref="Meter"/> and
/// <see cref="ActivitySource"/> named <c>BitBoxSync</c> (subscribe with
/// <c>AddMeter("BitBoxSync")</c> / <c>AddSource("BitBoxSync")</c>). Names, units and tags are
/// listed in docs/observability.md. Nothing here ever carries a secret, a logical key or a value:
/// item IDs (opaque HMACs) and collection names at most.
/// </summary>
public static class SyncTelemetry
{
    /// <summary>The name of the meter and of the activity source: <c>BitBoxSync</c>.</summary>
    public const string Name = "BitBoxSync";

    internal static readonly ActivitySource Source = new(Name, typeof(SyncTelemetry).Assembly.GetName().Version?.ToString(3));
    internal static readonly Meter Meter = new(Name, typeof(SyncTelemetry).Assembly.GetName().Version?.ToString(3));

    internal static readonly Counter<long> Passes = Meter.CreateCounter<long>("bitboxsync.sync.passes", "{pass}",
        "Sync passes, by outcome (success, failure) and failure kind (transient, policy).");
    internal static readonly Histogram<double> PassDuration = Meter.CreateHistogram<double>("bitboxsync.sync.pass.duration", "s",
        "Duration of a sync pass.");
    internal static readonly Counter<long> Uploaded = Meter.CreateCounter<long>("bitboxsync.items.uploaded", "{item}",
        "Item versions the server accepted from this device.");
    internal static readonly Counter<long> Downloaded = Meter.CreateCounter<long>("bitboxsync.items.downloaded", "{item}",
        "Remote item versions applied on this device.");
    internal static readonly Counter<long> BytesUploaded = Meter.CreateCounter<long>("bitboxsync.bytes.uploaded", "By",
        "Ciphertext bytes of accepted uploads.");
    internal static readonly Counter<long> BytesDownloaded = Meter.CreateCounter<long>("bitboxsync.bytes.downloaded", "By",
        "Ciphertext bytes of downloaded items.");
    internal static readonly Counter<long> Conflicts = Meter.CreateCounter<long>("bitboxsync.conflicts", "{conflict}",
        "Conflicts recorded (the app's merge left them unresolved).");
    internal static readonly Counter<long> Quarantined = Meter.CreateCounter<long>("bitboxsync.items.quarantined", "{item}",
        "Items set aside with an error (new or changed errors).");
    internal static readonly Counter<long> WatchWakeups = Meter.CreateCounter<long>("bitboxsync.watch.wakeups", "{wakeup}",
        "Long-poll answers that reported a change and triggered a pass.");
    internal static readonly Counter<long> Failures = Meter.CreateCounter<long>("bitboxsync.failures", "{failure}",
        "Failures by kind: transient (no answer, 5xx, 408, 429), policy, watch.");

    private static readonly List<WeakReference<SyncEngine>> Engines = [];

    static SyncTelemetry()
    {
        Meter.CreateObservableGauge("bitboxsync.uploads.pending", () =>
        {
            var total = 0L;
            lock (Engines)
            {
                Engines.RemoveAll(w => !w.TryGetTarget(out _));
                foreach (var w in Engines)
                    if (w.TryGetTarget(out var e) && !e.IsClosed) total += e.Status.PendingUploads;
            }
            return total;
        }, "{item}", "Local changes waiting for upload, over every open engine.");
    }

    internal static void Track(SyncEngine engine)
    {
        lock (Engines) Engines.Add(new WeakReference<SyncEngine>(engine));
    }

    internal static string Kind(Core.FailureKind kind) => kind.IsTransient ? "transient" : "policy";
}

/// <summary>The engine's log messages: stable event IDs, structured fields, never a secret or a value.</summary>
internal static partial class EngineLog
{
    [LoggerMessage(1, LogLevel.Debug, "Sync pass started")]
    public static partial void PassStarted(ILogger logger);

    [LoggerMessage(2, LogLevel.Information, "Sync pass finished in {DurationMs:0.0} ms: {Uploaded} uploaded, {Downloaded} downloaded, {PendingUploads} pending, {Conflicts} conflicts")]
    public static partial void PassFinished(ILogger logger, double durationMs, long uploaded, long downloaded, long pendingUploads, long conflicts);

    [LoggerMessage(3, LogLevel.Warning, "Sync pass failed after {DurationMs:0.0} ms ({FailureKind}): {ErrorType}: {ErrorMessage}")]
    public static partial void PassFailed(ILogger logger, double durationMs, string failureKind, string errorType, string errorMessage);

    [LoggerMessage(4, LogLevel.Information, "Next pass in {DelayMs:0} ms ({Reason}, {Failures} consecutive failures)")]
    public static partial void NextPass(ILogger logger, double delayMs, string reason, int failures);

    [LoggerMessage(5, LogLevel.Information, "Conflict recorded in {NamespaceId}/{Collection} for item {ItemId}")]
    public static partial void Conflict(ILogger logger, string? namespaceId, string? collection, string? itemId);

    [LoggerMessage(6, LogLevel.Warning, "Item {ItemId} of {NamespaceId}/{Collection} quarantined: {ErrorType}")]
    public static partial void Quarantined(ILogger logger, string? namespaceId, string? collection, string? itemId, string errorType);

    [LoggerMessage(7, LogLevel.Warning, "Namespace watch failed ({FailureKind}), retrying in {DelayMs:0} ms: {ErrorType}: {ErrorMessage}")]
    public static partial void WatchFailed(ILogger logger, string failureKind, double delayMs, string errorType, string errorMessage);

    [LoggerMessage(8, LogLevel.Warning, "Login required: background passes wait for LoginAsync")]
    public static partial void LoginRequired(ILogger logger);

    [LoggerMessage(9, LogLevel.Error, "Rollback detected: {ErrorMessage}")]
    public static partial void Rollback(ILogger logger, string errorMessage);

    [LoggerMessage(10, LogLevel.Debug, "Namespace watch reported a change: pass requested")]
    public static partial void WatchWakeup(ILogger logger);

    [LoggerMessage(11, LogLevel.Information, "Session ready, token valid until {TokenExpiresAt:o}")]
    public static partial void SessionReady(ILogger logger, DateTimeOffset? tokenExpiresAt);

    [LoggerMessage(12, LogLevel.Debug, "Server offers batch items: {Offered} (up to {MaxItems} per request)")]
    public static partial void BatchOffer(ILogger logger, bool offered, int maxItems);
}
