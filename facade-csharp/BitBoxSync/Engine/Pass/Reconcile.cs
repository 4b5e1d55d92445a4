using BitBoxSync.Core;
using BitBoxSync.Protocol;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using static BitBoxSync.StateMapping;

namespace BitBoxSync;

public sealed partial class SyncEngine
{
    /// <content>Local change detection: the executor of Core.Reconcile (docs/engine.md §4.3).</content>
    private sealed partial class Pass
    {
        /// <summary>Above this many changed keys, the namespace's rows are read in one query instead of one by one.</summary>
        private const int ChangedKeysReadOneByOne = 64;

        // docs/engine.md §4.3: local change detection, one batch per collection. A change-tracking backend whose
        // stamp has not moved since the last saved reconciliation is skipped without reading a value;
        // after a few writes only the written keys are compared with their bases.
        // The key directory is reconciled after the app's collections (their revivals and deletions
        // change the buckets it derives), and again after the deletes step (directoriesOnly).
        private async Task ReconcileSnapshotsAsync(bool directoriesOnly = false)
        {
            foreach (var ns in e._collections.Keys.Select(k => k.Namespace).Distinct().Order(StringComparer.Ordinal))
            {
                var nsId = Bin.parse<NamespaceIdKind>(ns).ResultValue;
                var (keys, scope, collections) = await ScopeOfAsync(nsId);
                List<ItemState>? rows = null;
                foreach (var c in collections.OrderBy(c => c is DirectoryAdapter))
                {
                    if (c is DirectoryAdapter) _stamps[c] = await c.ChangeStampAsync(ct);
                    else if (directoriesOnly) continue;
                    var stamp = _stamps[c];
                    if (stamp is { } current && c.ReconciledStamp == current) continue;
                    var changed = stamp is not null && c.ReconciledStamp is { } last ? await c.ChangedSinceAsync(last, c.EnteredScope, ct) : null;
                    Dictionary<string, ItemState> byKey;
                    if (changed is not null && changed.Count <= ChangedKeysReadOneByOne)
                    {
                        byKey = new(StringComparer.Ordinal);
                        foreach (var (key, _) in changed)
                            if (await e._store.GetItemByLogicalKeyAsync(e._keyId.Wire, ns, c.Name, key, ct) is { } row)
                                byKey[key] = ToCore(row);
                    }
                    else
                    {
                        rows ??= (await e._store.ListNamespaceItemsAsync(e._keyId.Wire, ns, ct)).Select(ToCore).ToList();
                        byKey = rows.Where(r => r.Collection == c.Name).ToDictionary(r => r.Key, StringComparer.Ordinal);
                    }
                    var snapshot = changed ?? await c.SnapshotAsync(ct);
                    var effects = Snapshot.reconcile(new SnapshotInput(e._keyId, nsId, c.Name, scope, byKey,
                        ListModule.OfSeq(snapshot.Select(kv => Tuple.Create(kv.Key, kv.Value))),
                        FuncConvert.FromFunc<string, ItemId>(key => LogicalKey.itemId(keys, c.Name, key)), Now));
                    foreach (var outside in effects.OfType<SnapshotEffect.OutsideScope>())
                        if (e._reportedOutsideScope.TryAdd((ns, outside.collection, outside.key), 0))
                            e.Emit(SyncEventType.KeyOutsideScope, ns, outside.collection, outside.key);
                    // A deleted key's value still in the backend (not removed yet, or a crash came between the two writes).
                    if (c.CanRemove)
                        foreach (var lingering in effects.OfType<SnapshotEffect.Lingering>())
                            if (await c.RemoveIfCurrentAsync(lingering.row.Key, lingering.value, ct))
                                await SaveItemsAsync([lingering.row]);
                    var queued = effects.OfType<SnapshotEffect.Queue>().Select(q => q.Item).ToList();
                    if (queued.Count > 0)
                    {
                        await SaveItemsAsync(queued);
                        foreach (var row in queued) e.Emit(row, ItemEvent.ItemQueued);
                    }
                    c.ReconciledStamp = stamp;
                    c.EnteredScope.Clear();
                }
            }
        }
    }
}
