using BitBoxSync.Core;
using BitBoxSync.Protocol;
using BitBoxSync.Protocol.Wire;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using static BitBoxSync.StateMapping;

namespace BitBoxSync;

public sealed partial class SyncEngine
{
    /// <content>Downloading one item and applying it: the executor of Core.Apply (docs/engine.md §4.7).</content>
    private sealed partial class Pass
    {
        // docs/engine.md §4.7: download one item and apply it through the core's decisions.
        /// <param name="row">The row to apply to (as planned, or as last read).</param>
        /// <param name="mapVersion">The version the item map promised, if any (rollback check).</param>
        /// <param name="keys">The namespace's keys.</param>
        /// <param name="fetched">The item when already downloaded (prefetched), else it is fetched here.</param>
        /// <param name="rowIsCurrent">The caller's row is the stored one (an item map's planned download:
        /// nothing else writes it during the apply loop), so it is not read again.</param>
        private async Task ApplyRemoteAsync(ItemState row, FSharpOption<ulong> mapVersion, NamespaceKeys keys, GetItemResponse? fetched = null,
            bool rowIsCurrent = false)
        {
            var response = fetched ?? await e._client.GetItemAsync(token, row.NamespaceId.Wire, row.ItemId.Wire, ct);
            var check = Download.checkVersion(row, mapVersion, response.Version);
            if (check.IsError) throw ToException(check.ErrorValue);

            var nonce = Bin.parse<ItemNonceKind>(response.Nonce);
            var aad = Bin.parse<ItemAadKind>(response.Aad);
            var ciphertext = Bin.parse<CiphertextKind>(response.Ciphertext);
            if (nonce.IsError || aad.IsError || ciphertext.IsError)
            {
                Quarantined(row, "unreadable remote value: " + (nonce.IsError ? nonce.ErrorValue : aad.IsError ? aad.ErrorValue : ciphertext.ErrorValue).Message);
                return;
            }
            SyncTelemetry.BytesDownloaded.Add(ciphertext.ResultValue.Length);
            var opened = ItemCrypto.openItem(keys, row.NamespaceId, row.ItemId, response.Version,
                new SealedItem(nonce.ResultValue, aad.ResultValue, ciphertext.ResultValue));
            if (opened.IsError)
            {
                Quarantined(row, "unreadable remote value: " + opened.ErrorValue.Message);
                return;
            }
            var remote = opened.ResultValue;

            // A quarantined item is retried only when the remote version or the local value changed.
            e._collections.TryGetValue((row.NamespaceId.Wire, row.Collection), out var registered);
            if (e._quarantineState.TryGetValue((row.NamespaceId.Wire, row.ItemId.Wire), out var parked))
            {
                var localNow = registered is null ? null : await registered.GetAsync(row.Key, ct);
                if (!Quarantine.shouldRetry(parked, response.Version, localNow is null ? LocalValue.Absent : LocalValue.NewPresent(localNow)))
                    return;
            }

            FSharpOption<ItemState> current;
            if (rowIsCurrent)
            {
                current = FSharpOption<ItemState>.Some(row); // a planned new row applies as itself, as when absent
            }
            else
            {
                var stored = await e._store.GetItemByIdAsync(e._keyId.Wire, row.NamespaceId.Wire, row.ItemId.Wire, ct);
                current = stored is null ? FSharpOption<ItemState>.None : FSharpOption<ItemState>.Some(ToCore(stored));
            }
            var target = Download.rowToApply(current, row, response.Version);
            if (target is null) return;
            var item = target.Value;
            Activity = true;

            e._collections.TryGetValue((item.NamespaceId.Wire, item.Collection), out var adapter);
            var functions = adapter is null ? null : FSharpOption<CollectionFunctions>.Some(adapter.Functions);

            // A key deleted on this device: an edit the deletion did not see may bring it back (policy), else the row follows the server and stays deleted.
            var revived = false;
            if (item.Deleted && adapter is not null && e.DirectoryIn(item.NamespaceId.Wire) is { } directory && directory.Holds(item.Collection))
            {
                var canonical = adapter.Functions.Canonical.Invoke(remote);
                if (canonical.IsError)
                {
                    await ParkAsync(item, QuarantineReason.NewUnreadableRemote(canonical.ErrorValue), response.Version);
                    Quarantined(item, "the remote value cannot be read: " + canonical.ErrorValue);
                    return;
                }
                var entry = await directory.PublishedEntryAsync(item.Collection, item.Key, false, ct);
                var onDeleted = Deletes.remoteValue(directory.PolicyOf(item.Collection),
                    adapter.DeletedValue is { } replacement ? FSharpOption<byte[]>.Some(replacement) : null, entry is null ? null : FSharpOption<DirEntry>.Some(entry),
                    item, response.Version, canonical.ResultValue, Now);
                if (onDeleted is DeletedRowRemote.StayDeleted stay)
                {
                    await SaveOutcomeAsync(stay.Item);
                    return;
                }
                item = ((DeletedRowRemote.Revive)onDeleted).Item;
                revived = true;
            }
            Outcome Told(Outcome o) => revived ? new Outcome(o.Row, FSharpList<ItemEvent>.Cons(ItemEvent.ItemRevived, o.Events)) : o;

            var decision = Apply.start(item, response.Version, remote, functions, Now);
            if (decision.IsReadLocal)
            {
                var local = adapter is null ? null : await adapter.GetAsync(item.Key, ct);
                MergeContext.Key = item.Key;
                decision = Apply.decide(item, response.Version, remote,
                    local is null ? LocalValue.Absent : LocalValue.NewPresent(local), functions, Now);
                if (decision is ApplyDecision.Write write)
                {
                    var w = write.Item;
                    bool replaced;
                    try
                    {
                        replaced = await adapter!.SetIfCurrentAsync(item.Key, w.Expected is Expected.Present present ? present.Item : null, w.Value, ct);
                    }
                    catch (Exception ex) when (ex is not OperationCanceledException)
                    {
                        // Transient (the app's storage failed): not parked, retried by the next pass.
                        _retryLater = true;
                        Quarantined(item, "the app's backend refused the value: " + ex.Message);
                        return;
                    }
                    await SaveOutcomeAsync(Told(replaced ? w.OnWritten : w.OnLostRace));
                    return;
                }
            }

            switch (decision)
            {
                case ApplyDecision.Save save:
                    await SaveOutcomeAsync(Told(save.Item));
                    break;
                case ApplyDecision.Quarantine q:
                    await ParkAsync(item, q.Item, response.Version);
                    Quarantined(item, q.Item.Message);
                    break;
            }
        }

        /// <summary>Outcomes of the item map being applied, saved with its head in one transaction (docs/engine.md §12.13).</summary>
        private List<Outcome>? _batch;

        /// <summary>A download failed transiently in this pass: the namespace head must not move past it.</summary>
        private bool _retryLater;

        private async Task SaveOutcomeAsync(Outcome outcome)
        {
            if (_batch is not null)
            {
                _batch.Add(outcome);
                return;
            }
            Settled(outcome.Row);
            await SaveItemsAsync([outcome.Row]);
            foreach (var ev in outcome.Events) e.Emit(outcome.Row, ev);
        }
    }
}
