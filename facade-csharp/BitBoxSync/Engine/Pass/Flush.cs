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
        // Uploads go out in chunks: each chunk's items are prepared in order, sent in batch PUTs when the
        // server offers them (else single PUTs, a few in flight), and the accepted ones are saved clean in
        // one transaction with the head they moved (an item is never marked clean before its upload was
        // accepted; a crash before that transaction leaves it dirty, and its next upload meets 412,
        // fetches its own value and converges). The next chunk is prepared and sent while this one is
        // saved (the server's work overlaps the client's commit); the app's backend is only ever read or
        // written by one step at a time.
        private async Task FlushAsync()
        {
            var dirty = (await e._store.ListDirtyItemsAsync(e._keyId.Wire, ct)).Select(ToCore).ToList();
            e.UpdateStatus(st => st with { UploadsPlanned = dirty.Count(d => !d.Conflict) });
            var order = Flush.order(ListModule.OfSeq(dirty)).Where(d => _scopes.ContainsKey(d.NamespaceId.Wire)).ToList();
            var batches = order.Count > 1 ? await e.BatchLimitsAsync(ct) : null;
            var chunkSize = batches?.MaxItems ?? UploadChunk;
            var chunks = new List<List<ItemState>>();
            for (var start = 0; start < order.Count; start += chunkSize)
                chunks.Add(order.GetRange(start, Math.Min(chunkSize, order.Count - start)));
            if (chunks.Count == 0) return;

            var prepared = await PrepareChunkAsync(chunks[0]);
            var sending = SendChunkAsync(prepared, batches);
            for (var i = 0; i < chunks.Count; i++)
            {
                var (current, answers) = (prepared, await sending);
                Task<Answer[]>? next = null;
                Exception? preparing = null;
                if (i + 1 < chunks.Count)
                {
                    try
                    {
                        prepared = await PrepareChunkAsync(chunks[i + 1]);
                        next = SendChunkAsync(prepared, batches);
                    }
                    catch (Exception x)
                    {
                        preparing = x; // reported after this chunk's accepted uploads are saved
                    }
                }
                try
                {
                    var refused = await SaveChunkAsync(current, answers);
                    if (preparing is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(preparing);
                    // A 412 (or 428): fetch, merge, and retry once, one item at a time.
                    foreach (var row in refused) await FlushOneAsync(row, refusedOnce: true);
                }
                catch when (next is not null)
                {
                    // The pass fails at this chunk; what the server accepted of the next one (already on
                    // its way) is saved too, best effort: anything not saved stays dirty and converges
                    // through a 412.
                    var late = await next;
                    try
                    {
                        await SaveChunkAsync(prepared, late);
                    }
                    catch
                    {
                        // the first failure is the one reported
                    }
                    throw;
                }
                if (next is not null) sending = next;
            }
        }

        /// <summary>Items per chunk of pipelined uploads (one metadata transaction each).</summary>
        private const int UploadChunk = 64;

        /// <summary>One prepared upload: the row, its intent and the sealed item.</summary>
        private sealed record PreparedUpload(ItemState Row, UploadIntent Intent, SealedItem Sealed);

        /// <summary>
        /// Reads the local value, decides, seals; null when nothing is to be sent. <paramref name="listed"/>
        /// is the row as the flush listed it: still current for a chunk (nothing else writes a row of a
        /// later chunk during the flush); after a 412 the row is read again (<paramref name="reread"/>).
        /// </summary>
        private async Task<PreparedUpload?> PrepareUploadAsync(ItemState listed, bool reread)
        {
            var (keys, scope, _) = _scopes[listed.NamespaceId.Wire];
            var row = listed;
            if (reread)
            {
                var stored = await e._store.GetItemByIdAsync(e._keyId.Wire, listed.NamespaceId.Wire, listed.ItemId.Wire, ct);
                if (stored is null) return null;
                row = ToCore(stored);
            }
            var active = Scope.isActive(scope, row.Collection, row.ItemId);
            e._collections.TryGetValue((row.NamespaceId.Wire, row.Collection), out var adapter);
            if (row.Deleted && adapter is not null && adapter.DeletedValue is null)
            {
                // Opened without OverwriteOnDelete now: the deletion is published without the overwrite.
                await SaveItemsAsync([Deletes.overwriteDropped(row)]);
                return null;
            }
            // A deleted row is dirty only to upload the value that overwrites the deleted one.
            var local = adapter is null ? null : row.Deleted ? adapter.DeletedValue : await adapter.GetAsync(row.Key, ct);
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

        /// <summary>Reads, decides and seals a chunk's uploads in order (the only step of a chunk that reads the app's backend).</summary>
        private async Task<List<PreparedUpload>> PrepareChunkAsync(List<ItemState> chunk)
        {
            var prepared = new List<PreparedUpload>(chunk.Count);
            foreach (var first in chunk)
                if (await PrepareUploadAsync(first, reread: false) is { } u) prepared.Add(u);
            return prepared;
        }

        /// <summary>
        /// Sends prepared uploads (batch PUTs when offered, else a few single PUTs in flight) and
        /// returns each one's answer; never throws (a failure is an answer).
        /// </summary>
        private async Task<Answer[]> SendChunkAsync(List<PreparedUpload> prepared, BatchLimits? batches)
        {
            var answers = new Answer[prepared.Count];
            try
            {
                var rest = prepared.Count > 1 && batches is not null && await e.BatchLimitsAsync(ct) is { } limits
                    ? await SendBatchesAsync(prepared, answers, limits)
                    : Enumerable.Range(0, prepared.Count).ToList();
                await SendSinglesAsync(prepared, answers, rest);
            }
            catch (Exception x)
            {
                for (var i = 0; i < answers.Length; i++)
                    if (answers[i] == default) answers[i] = new Answer(0, x);
            }
            return answers;
        }

        /// <summary>
        /// Saves every accepted upload of a chunk in one transaction and returns the rows refused with
        /// 412/428 in order. Any other failure is thrown after the accepted ones were saved.
        /// </summary>
        private async Task<List<ItemState>> SaveChunkAsync(List<PreparedUpload> prepared, Answer[] answers)
        {
            var accepted = new List<Outcome>();
            var refused = new List<ItemState>();
            Exception? failure = null;
            for (var i = 0; i < prepared.Count; i++)
            {
                var (version, error) = answers[i];
                if (error is null)
                {
                    SyncTelemetry.BytesUploaded.Add(prepared[i].Sealed.Ciphertext.Length);
                    accepted.Add(Flush.accepted(prepared[i].Intent, version, Now));
                    if (prepared[i].Row.Deleted) _overwritten = true;
                }
                else if (error is SyncApiException { StatusCode: 412 or 428 })
                {
                    refused.Add(prepared[i].Row);
                }
                else
                {
                    failure ??= error;
                }
            }
            await SaveUploadedAsync(accepted);
            if (failure is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
            return refused;
        }

        /// <summary>One upload's answer: the new version, or why it was not accepted.</summary>
        private readonly record struct Answer(ulong Version, Exception? Error);

        /// <summary>
        /// Sends the prepared uploads in batch PUTs, one namespace per batch (the chunk's uploads grouped
        /// by namespace, their order kept within each), each item answered on its own. Returns the
        /// uploads left to send as single PUTs: none, or those not sent when the server stopped
        /// offering the extension (404).
        /// </summary>
        private async Task<List<int>> SendBatchesAsync(List<PreparedUpload> prepared, Answer[] answers, BatchLimits limits)
        {
            var groups = Enumerable.Range(0, prepared.Count).GroupBy(i => prepared[i].Row.NamespaceId.Wire, StringComparer.Ordinal).ToList();
            for (var g = 0; g < groups.Count; g++)
            {
                var ns = groups[g].Key;
                var indices = groups[g].ToList();
                var sizes = new List<int>(indices.Count);
                foreach (var i in indices)
                {
                    var s = prepared[i].Sealed;
                    sizes.Add(Batching.putEntryBytes(Base64Length(s.Nonce.Length), Base64Length(s.Aad.Length), Base64Length(s.Ciphertext.Length)));
                }
                var start = 0;
                foreach (var count in Batching.cut(limits, ListModule.OfSeq(sizes)))
                {
                    var batch = indices.GetRange(start, count);
                    var items = new BatchPutItem[count];
                    for (var k = 0; k < count; k++)
                    {
                        var u = prepared[batch[k]];
                        items[k] = new BatchPutItem(u.Row.ItemId.Wire, u.Intent.IfMatch.IsAbsent ? 0 : u.Row.Version,
                            u.Sealed.Nonce.Wire, u.Sealed.Aad.Wire, u.Sealed.Ciphertext.Wire);
                    }
                    BatchPutItemsResponse answer;
                    try
                    {
                        answer = await e._client.PutItemsAsync(token, ns, items, ct);
                    }
                    catch (SyncApiException x) when (Withdrawn(x))
                    {
                        e.BatchWithdrawn();
                        return [.. indices.Skip(start), .. groups.Skip(g + 1).SelectMany(rest => rest)];
                    }
                    catch (Exception x)
                    {
                        // The whole batch failed or its answer was lost: it and the rest stay dirty.
                        for (var i = 0; i < answers.Length; i++)
                            if (answers[i] == default) answers[i] = new Answer(0, x);
                        return [];
                    }
                    for (var k = 0; k < count; k++)
                    {
                        var r = answer.Results[k];
                        answers[batch[k]] = r.Status == 200 ? new Answer(r.Version, null) : new Answer(0, new SyncApiException(r.Status, r.Error));
                    }
                    start += count;
                }
            }
            return [];
        }

        /// <summary>Sends the given uploads as single PUTs, a few in flight (started in order).</summary>
        private async Task SendSinglesAsync(List<PreparedUpload> prepared, Answer[] answers, List<int> which)
        {
            if (which.Count == 0) return;
            using var inFlight = new SemaphoreSlim(e._options.UploadsInFlight);
            var sends = new List<Task>(which.Count);
            foreach (var i in which) sends.Add(SendOneAsync(i));
            await Task.WhenAll(sends);

            async Task SendOneAsync(int index)
            {
                try
                {
                    await inFlight.WaitAsync(ct);
                    try
                    {
                        answers[index] = new Answer((await SendAsync(prepared[index], ct)).Version, null);
                    }
                    finally
                    {
                        inFlight.Release();
                    }
                }
                catch (Exception x)
                {
                    answers[index] = new Answer(0, x);
                }
            }
        }

        /// <summary>A batch endpoint's answer meaning the server does not offer it (any more).</summary>
        private static bool Withdrawn(SyncApiException x) => x.StatusCode is 404 or 405 or 501;

        private static int Base64Length(int bytes) => (bytes + 2) / 3 * 4;

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
                    var u = await PrepareUploadAsync(first, reread: true);
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
