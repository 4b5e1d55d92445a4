using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace BitBoxSync.Server;

/// <summary>
/// The server's instruments (meter <c>BitBoxSync.Server</c>, docs/server.md "Metrics"): requests
/// by endpoint and status, compare-and-set conflicts, rate-limit refusals, commit latency, parked
/// watchers and watch wake-ups. Tags never carry identities, namespaces, tokens or item IDs.
/// </summary>
internal sealed class ServerMetrics
{
    /// <summary>The meter name to subscribe to (OpenTelemetry: <c>AddMeter("BitBoxSync.Server")</c>).</summary>
    public const string MeterName = "BitBoxSync.Server";

    private readonly Counter<long> _requests;
    private readonly Counter<long> _casConflicts;
    private readonly Counter<long> _wakeups;
    private readonly Histogram<double> _commitDuration;

    public ServerMetrics(IMeterFactory factory, Func<int> parkedWatchers)
    {
        var meter = factory.Create(MeterName, typeof(ServerMetrics).Assembly.GetName().Version?.ToString());
        _requests = meter.CreateCounter<long>("bitboxsync.server.requests", "{request}",
            "Protocol requests answered, by endpoint and status code.");
        _casConflicts = meter.CreateCounter<long>("bitboxsync.server.cas_conflicts", "{conflict}",
            "Item writes refused with 412 because the If-Match version was not the stored one.");
        _wakeups = meter.CreateCounter<long>("bitboxsync.server.watch.wakeups", "{wakeup}",
            "Parked long-poll watchers woken by a commit.");
        _commitDuration = meter.CreateHistogram<double>("bitboxsync.server.commit.duration", "s",
            "Time to commit a write transaction (the fsync included).",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1] });
        meter.CreateObservableUpDownCounter("bitboxsync.server.watchers.parked", parkedWatchers, "{watcher}",
            "Long-poll watchers currently parked.");
    }

    /// <summary>One answered request: <paramref name="endpoint"/> is the operation name (e.g. <c>item.put</c>).</summary>
    public void Request(string endpoint, string method, int status)
    {
        if (!_requests.Enabled) return;
        _requests.Add(1, new TagList
        {
            { "bitboxsync.endpoint", endpoint },
            { "http.request.method", method },
            { "http.response.status_code", status },
        });
        if (endpoint == "item.put" && status == 412) _casConflicts.Add(1);
    }

    /// <summary>Watchers woken by one signal.</summary>
    public void Woken(int count)
    {
        if (count > 0) _wakeups.Add(count);
    }

    /// <summary>One committed write transaction.</summary>
    public void Committed(string store, TimeSpan elapsed) =>
        _commitDuration.Record(elapsed.TotalSeconds, new KeyValuePair<string, object?>("bitboxsync.store", store));
}
