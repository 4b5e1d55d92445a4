using BitBoxSync.Core;
using BitBoxSync.Protocol;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using static BitBoxSync.StateMapping;

namespace BitBoxSync;

public sealed partial class SyncEngine
{
    /// <content>The namespace list, each namespace's item map and its downloads: the executors of Core.Namespaces and Core.ItemMap (docs/engine.md §4.4–§4.6).</content>
    private sealed partial class Pass
    {
        // docs/engine.md §4.4–§4.7: the namespace list, then each namespace's item map and downloads.
        private async Task ReconcileNamespacesAsync()
        {
            var listed = await e.ListedNamespacesAsync(token, ct);
            var cached = (await e._store.ListNamespacesAsync(e._keyId.Wire, ct)).Select(ToCore);
            var checkedPlan = Namespaces.check(e._state, ListModule.OfSeq(cached), listed, Now);
            if (checkedPlan.IsError) throw ToException(checkedPlan.ErrorValue);
            var plan = checkedPlan.ResultValue;
            if (plan.AdoptDefault is { } adopt)
            {
                var s = e._state;
                await e.SaveIdentityAsync(new IdentityState(s.KeyId, s.Kind, s.AccessToken, s.TokenExpiry, adopt, Now), ct);
            }

            foreach (var p in plan.Namespaces)
            {
                var planned = p;
                if (p.NeedsJoin)
                {
                    var joined = await e.JoinAsync(token, p.Listed.NamespaceId, p.Listed.Kind, ct);
                    planned = new NamespacePlan(p.Listed, new NamespaceState(joined.KeyId, joined.NamespaceId,
                        FSharpOption<NamespaceKind>.Some(p.Listed.Kind), p.Row.Head, p.Row.ActiveScopeHash, joined.Dek, joined.UpdatedAt),
                        false, p.RemoteChanged, true);
                }
                var (keys, scope, collections) = await ScopeOfAsync(planned.Listed.NamespaceId);
                switch (Namespaces.decide(planned, Scope.hashOf(scope), Now))
                {
                    case NamespaceAction.Save save:
                        await e.SaveNamespaceAsync(save.Item, ct);
                        break;
                    case NamespaceAction.FetchItemMap fetch:
                        await ItemMapAsync(planned, fetch.expectedHead, keys, scope);
                        // A downloaded directory bucket may name keys this device did not know, delete
                        // keys or bring deleted ones back: deletions are applied, and the scope grows
                        // so that the items of learned and revived keys are downloaded in this same pass.
                        if (_directoryChanged.Remove(planned.Listed.NamespaceId.Wire))
                            await LearnedKeysAsync(planned, await DeletesAsync(planned.Listed.NamespaceId.Wire));
                        break;
                }
            }
        }

        /// <summary>Namespaces whose directory buckets were applied in this pass.</summary>
        private readonly HashSet<string> _directoryChanged = new(StringComparer.Ordinal);

        /// <summary>The scope again (with the keys the directory now lists), then the item map again for them.</summary>
        /// <param name="planned">The namespace.</param>
        /// <param name="revived">The deletes step changed rows (a key live again forgot its version): plan again even if the scope is the same.</param>
        private async Task LearnedKeysAsync(NamespacePlan planned, bool revived)
        {
            var ns = planned.Listed.NamespaceId;
            var before = _scopes[ns.Wire].Scope;
            _scopes.Remove(ns.Wire);
            var (keys, scope, _) = await ScopeOfAsync(ns);
            if (!revived && Scope.hashOf(scope) == Scope.hashOf(before)) return;
            var row = await e.LoadNamespaceAsync(ns, ct);
            if (row is null) return;
            await ItemMapAsync(new NamespacePlan(planned.Listed, row, false, true, false), row.Head, keys, scope);
            _directoryChanged.Remove(ns.Wire); // learned keys do not chain further within one pass
        }

        private async Task ItemMapAsync(NamespacePlan p, ulong expectedHead, NamespaceKeys keys, ActiveScope scope)
        {
            var ns = p.Listed.NamespaceId;
            var map = await e._client.GetNamespaceItemsAsync(token, ns.Wire, ct);
            var items = new List<Tuple<ItemId, ulong>>();
            foreach (var (id, v) in map.Items)
            {
                var parsed = Bin.parse<ItemIdKind>(id);
                if (parsed.IsError) throw new SyncProtocolException("item map: " + parsed.ErrorValue.Message);
                items.Add(Tuple.Create(parsed.ResultValue, v.Version));
            }
            var cached = (await e._store.ListNamespaceItemsAsync(e._keyId.Wire, ns.Wire, ct)).Select(ToCore);
            var planned = ItemMap.plan(new ItemMapInput(p.Row, expectedHead, map.NamespaceHead, MapModule.OfSeq(items),
                ListModule.OfSeq(cached), scope, Now));
            if (planned.IsError) throw ToException(planned.ErrorValue);
            var plan = planned.ResultValue;
            foreach (var unknown in plan.Unknown)
                e.Emit(SyncEventType.UnknownRemoteItem, ns.Wire, itemId: unknown.Wire);
            // Directory buckets first: a value of a key deleted here is then judged against the newest directory.
            var downloads = plan.Downloads.OrderBy(d => d.Item1.Collection != KeyDirectory.ReservedCollection).ToList();
            e.UpdateStatus(st => st with { DownloadsPlanned = st.DownloadsPlanned + downloads.Count });
            // Fetch ahead (batches when offered, else a few single requests in flight); apply strictly in the planned order.
            using var fetching = CancellationTokenSource.CreateLinkedTokenSource(ct);
            var batches = downloads.Count > 1 ? await e.BatchLimitsAsync(ct) : null;
            var prefetch = new Prefetch(this, ns.Wire, downloads.Select(d => d.Item1.ItemId).ToList(), batches, fetching.Token);
            _batch = [];
            try
            {
                for (var i = 0; i < downloads.Count; i++)
                {
                    // The buckets (applied first) are saved before any value: a value of a key deleted
                    // here is then judged against the directory they bring. Item rows ahead of the
                    // namespace head are safe: the head moves only with the last save.
                    if (_batch.Count > 0 && downloads[i].Item1.Collection != KeyDirectory.ReservedCollection
                        && _batch.All(o => o.Row.Collection == KeyDirectory.ReservedCollection))
                    {
                        var buckets = _batch;
                        _batch = [];
                        await SaveItemsAsync(buckets.Select(o => o.Row));
                        foreach (var outcome in buckets) Settled(outcome.Row);
                        _directoryChanged.Add(ns.Wire);
                    }
                    await ApplyRemoteAsync(downloads[i].Item1, FSharpOption<ulong>.Some(downloads[i].Item2), keys, await prefetch.GetAsync(i), rowIsCurrent: true);
                    prefetch.Consumed();
                    e.UpdateStatus(st => st with { Downloaded = st.Downloaded + 1 });
                }
                var applied = _batch;
                _batch = null;
                // Every applied row and the new head: one transaction.
                await SaveItemsAsync(applied.Select(o => o.Row), ItemMapFinish.decide(plan, p.Row, _retryLater));
                foreach (var outcome in applied)
                {
                    Settled(outcome.Row);
                    foreach (var ev in outcome.Events) e.Emit(outcome.Row, ev);
                    if (outcome.Row.Collection == KeyDirectory.ReservedCollection) _directoryChanged.Add(ns.Wire);
                }
            }
            finally
            {
                _batch = null;
                await fetching.CancelAsync();
                await prefetch.StopAsync();
            }
            e.Emit(SyncEventType.NamespaceChanged, ns.Wire);
            Activity = true;
        }
    }
}
