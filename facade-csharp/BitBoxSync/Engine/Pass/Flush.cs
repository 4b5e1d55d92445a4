using BitBoxSync.Core;
using BitBoxSync.Protocol;
using BitBoxSync.Protocol.Wire;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using static BitBoxSync.StateMapping;

namespace BitBoxSync;

public sealed partial class SyncEngine
{
    /// <content>The upload flush: the executor of Core.Flush (docs/engine.md §4.10).</content>
    private sealed partial class Pass
    {
        // docs/engine.md §4.10: upload dirty items, oldest first; a 412 fetches, merges and retries once.
        // Uploads go out in chunks: each chunk's items are prepared in order, sent with a few requests in
        // flight, and the accepted ones are saved clean in one transaction with the head they moved (an
        // item is never marked clean before its upload was accepted; a crash before that transaction
        // leaves it dirty, and its next upload meets 412, fetches its own value and converges).
        private async Task FlushAsync()
        {
            var dirty = (await e._store.ListDirtyItemsAsync(e._keyId.Wire, ct)).Select(ToCore).ToList();
            e.UpdateStatus(st => st with { UploadsPlanned = dirty.Count(d => !d.Conflict) });
            var order = Flush.order(ListModule.OfSeq(dirty)).Where(d => _scopes.ContainsKey(d.NamespaceId.Wire)).ToList();
            for (var start = 0; start < order.Count; start += UploadChunk)
            {
                var refused = await FlushChunkAsync(order.GetRange(start, Math.Min(UploadChunk, order.Count - start)));
                // A 412 (or 428): fetch, merge, and retry once, one item at a time.
                foreach (var row in refused) await FlushOneAsync(row, refusedOnce: true);
            }
        }

        /// <summary>Items per chunk of pipelined uploads (one metadata transaction each).</summary>
        private const int UploadChunk = 64;

        /// <summary>One prepared upload: the row, its intent and the sealed item.</summary>
        private sealed record PreparedUpload(ItemState Row, UploadIntent Intent, SealedItem Sealed);

        /// <summary>Reads the row and the local value, decides, seals; null when nothing is to be sent.</summary>
        private async Task<PreparedUpload?> PrepareUploadAsync(ItemState first)
        {
            var (keys, scope, _) = _scopes[first.NamespaceId.Wire];
            var stored = await e._store.GetItemByIdAsync(e._keyId.Wire, first.NamespaceId.Wire, first.ItemId.Wire, ct);
            if (stored is null) return null;
            var row = ToCore(stored);
            var active = Scope.isActive(scope, row.Collection, row.ItemId);
            e._collections.TryGetValue((row.NamespaceId.Wire, row.Collection), out var adapter);
            var local = adapter is null ? null : await adapter.GetAsync(row.Key, ct);
            var step = Flush.prepare(row, active, local is null ? LocalValue.Absent : LocalValue.NewPresent(local));
            if (step is FlushStep.Skip skip)
            {
                if (skip.Item.IsValueMissing || skip.Item.IsTooLarge)
                    Quarantined(row, "not uploaded: " + Quarantine.ofFlushSkip(skip.Item).Value.Message);
                return null;
            }
            var intent = ((FlushStep.Upload)step).Item;
            var nonce = Bin.ofBytes<ItemNonceKind>(e._options.RandomBytes(24)).ResultValue;
            var sealedItem = ItemCrypto.seal(keys, row.NamespaceId, row.ItemId, intent.TargetVersion, nonce, intent.Plaintext);
            if (sealedItem.IsError)
            {
                Quarantined(row, "seal: " + sealedItem.ErrorValue.Message);
                return null;
            }
            return new PreparedUpload(row, intent, sealedItem.ResultValue);
        }

        private Task<PutItemResponse> SendAsync(PreparedUpload u, CancellationToken token2) =>
            e._client.PutItemAsync(token, u.Row.NamespaceId.Wire, u.Row.ItemId.Wire,
                new PutItemRequest(u.Sealed.Nonce.Wire, u.Sealed.Aad.Wire, u.Sealed.Ciphertext.Wire),
                u.Intent.IfMatch.IsAbsent ? null : u.Row.Version, token2);

        /// <summary>
        /// Sends a chunk (a few PUTs in flight), saves every accepted item in one transaction, and
        /// returns the rows refused with 412/428 in order. Any other failure is thrown after the
        /// accepted ones were saved.
        /// </summary>
        private async Task<List<ItemState>> FlushChunkAsync(List<ItemState> chunk)
        {
            var prepared = new List<PreparedUpload>(chunk.Count);
            foreach (var first in chunk)
                if (await PrepareUploadAsync(first) is { } u) prepared.Add(u);
            using var inFlight = new SemaphoreSlim(e._options.UploadsInFlight);
            var sends = prepared.Select(async u =>
            {
                await inFlight.WaitAsync(ct);
                try
                {
                    return await SendAsync(u, ct);
                }
                finally
                {
                    inFlight.Release();
                }
            }).ToList();
            var accepted = new List<Outcome>();
            var refused = new List<ItemState>();
            Exception? failure = null;
            for (var i = 0; i < sends.Count; i++)
            {
                try
                {
                    var answer = await sends[i];
                    SyncTelemetry.BytesUploaded.Add(prepared[i].Sealed.Ciphertext.Length);
                    accepted.Add(Flush.accepted(prepared[i].Intent, answer.Version, Now));
                }
                catch (SyncApiException x) when (x.StatusCode is 412 or 428)
                {
                    refused.Add(prepared[i].Row);
                }
                catch (Exception x)
                {
                    failure ??= x;
                }
            }
            await SaveUploadedAsync(accepted);
            if (failure is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
            return refused;
        }

        /// <summary>Accepted uploads: clean rows and the heads they moved, one transaction (docs/engine.md §12.13).</summary>
        private async Task SaveUploadedAsync(List<Outcome> accepted)
        {
            if (accepted.Count == 0) return;
            var heads = new List<NamespaceState>();
            foreach (var group in accepted.GroupBy(o => o.Row.NamespaceId.Wire))
            {
                var nsRow = await e.LoadNamespaceAsync(group.First().Row.NamespaceId, ct);
                if (nsRow is null) continue;
                foreach (var _ in group) nsRow = Namespaces.afterUpload(nsRow, Now);
                heads.Add(nsRow);
            }
            await SaveItemsAsync(accepted.Select(o => o.Row), [.. heads]);
            foreach (var outcome in accepted)
            {
                foreach (var ev in outcome.Events) e.Emit(outcome.Row, ev);
                Settled(outcome.Row);
            }
            e.UpdateStatus(st => st with { Uploaded = st.Uploaded + accepted.Count });
            Activity = true;
        }

        /// <summary>One item, one request at a time: after <paramref name="refusedOnce"/> its first PUT met a 412.</summary>
        private async Task FlushOneAsync(ItemState first, bool refusedOnce)
        {
            var (keys, scope, _) = _scopes[first.NamespaceId.Wire];
            for (var attempt = 1; attempt <= 2; attempt++)
            {
                if (!(refusedOnce && attempt == 1))
                {
                    var u = await PrepareUploadAsync(first);
                    if (u is null) return;
                    try
                    {
                        var answer = await SendAsync(u, ct);
                        SyncTelemetry.BytesUploaded.Add(u.Sealed.Ciphertext.Length);
                        await SaveUploadedAsync([Flush.accepted(u.Intent, answer.Version, Now)]);
                        return;
                    }
                    catch (SyncApiException x) when (x.StatusCode is 412 or 428)
                    {
                    }
                }
                var stored = await e._store.GetItemByIdAsync(e._keyId.Wire, first.NamespaceId.Wire, first.ItemId.Wire, ct);
                if (stored is null) return;
                var row = ToCore(stored);
                await ApplyRemoteAsync(row, FSharpOption<ulong>.None, keys);
                var again = await e._store.GetItemByIdAsync(e._keyId.Wire, row.NamespaceId.Wire, row.ItemId.Wire, ct);
                var decision = Flush.afterPreconditionFailure(attempt,
                    again is null ? FSharpOption<ItemState>.None : FSharpOption<ItemState>.Some(ToCore(again)),
                    Scope.isActive(scope, row.Collection, row.ItemId));
                if (!decision.IsRetry) return;
            }
        }
    }
}
