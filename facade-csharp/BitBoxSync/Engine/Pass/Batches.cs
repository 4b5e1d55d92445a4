using BitBoxSync.Core;

namespace BitBoxSync;

/// <content>Whether the server offers the batch-items extension (docs/protocol.md §15), asked once an hour.</content>
public sealed partial class SyncEngine
{
    /// <summary>How long a server's answer about its extensions is trusted.</summary>
    private static readonly TimeSpan BatchOfferLifetime = TimeSpan.FromHours(1);

    private BatchLimits? _batchLimits;
    private DateTimeOffset? _batchOfferCheckedAt;

    /// <summary>
    /// The batch limits the server offers, or null when it offers none (or batching is switched off
    /// in the options): asked on first need and again an hour later, so a server that gains or
    /// loses the extension is followed. Any refusal or unreadable answer means "none" (remembered for
    /// the hour); a 5xx or no answer means "none for now" (asked again at the next need).
    /// </summary>
    private async Task<BatchLimits?> BatchLimitsAsync(CancellationToken ct)
    {
        if (!_options.UseBatchItems) return null;
        if (_batchOfferCheckedAt is { } at && Now - at < BatchOfferLifetime) return _batchLimits;
        try
        {
            var offer = await _client.GetCapabilitiesAsync(ct);
            var limits = Batching.ofCapability(offer.BatchItems);
            _batchLimits = limits is null ? null : limits.Value;
        }
        catch (SyncApiException e) when (e.StatusCode >= 500)
        {
            return null; // the server is in trouble: single requests now, ask again next time
        }
        catch (SyncTransportException)
        {
            return null; // no answer: single requests now (they will meet the same outage), ask again next time
        }
        catch (Exception e) when (e is SyncApiException or SyncProtocolException)
        {
            // Anything else (a 4xx, a page that is not our JSON): this server offers nothing usable.
            _batchLimits = null;
        }
        _batchOfferCheckedAt = Now;
        EngineLog.BatchOffer(_log, _batchLimits is not null, _batchLimits?.MaxItems ?? 1);
        return _batchLimits;
    }

    /// <summary>A batch endpoint answered 404: the server no longer offers the extension; single requests from now on.</summary>
    private void BatchWithdrawn()
    {
        _batchLimits = null;
        _batchOfferCheckedAt = Now;
    }
}
