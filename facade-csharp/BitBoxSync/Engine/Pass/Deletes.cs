using BitBoxSync.Core;
using BitBoxSync.Protocol;
using Microsoft.FSharp.Core;
using static BitBoxSync.StateMapping;

namespace BitBoxSync;

public sealed partial class SyncEngine
{
    /// <content>Deletes in key-directory collections: the executor of Core.Deletes.decide (docs/concepts.md, "Deletes").</content>
    private sealed partial class Pass
    {
        /// <summary>
        /// After the downloads, before the uploads: every key whose synced directory entry beats this
        /// device's own entry gets its fate (a deletion removes the value or meets an edit, a newer live
        /// entry brings a deleted key back), so revivals and adopted deletions are published in this pass.
        /// Keys already settled cost nothing: only a changed synced directory is looked at again.
        /// </summary>
        /// <param name="namespaceId">Only this namespace (after its item map), or every namespace (before the uploads).</param>
        /// <returns>Whether a row changed (the directory derives its buckets anew).</returns>
        private async Task<bool> DeletesAsync(string? namespaceId = null)
        {
            var changed = false;
            foreach (var directory in e._collections.Values.OfType<DirectoryAdapter>().ToList())
            {
                if (namespaceId is not null && directory.NamespaceId != namespaceId) continue;
                if (directory.FatesSettled || directory.Keys is not { } keys || directory.CollectionNames.Count == 0) continue;
                var settled = true;
                foreach (var collection in directory.CollectionNames.ToList())
                {
                    var ns = directory.NamespaceId;
                    if (!e._collections.TryGetValue((ns, collection), out var adapter)) continue;
                    var nsId = Bin.parse<NamespaceIdKind>(ns).ResultValue;
                    var policy = directory.PolicyOf(collection);
                    var outcomes = new List<Outcome>();
                    foreach (var (key, synced) in await directory.UnsettledAsync(collection, ct))
                    {
                        var stored = await e._store.GetItemByLogicalKeyAsync(e._keyId.Wire, ns, collection, key, ct);
                        var row = stored is null
                            ? ItemStateModule.template(e._keyId, nsId, collection, key, LogicalKey.itemId(keys, collection, key), Now)
                            : ToCore(stored);
                        var value = await adapter.GetAsync(key, ct);
                        var local = value is null ? LocalValue.Absent : LocalValue.NewPresent(value);
                        switch (Deletes.decide(policy, directory.Writer, adapter.CanRemove, FSharpOption<DirEntry>.Some(synced), row, local, Now))
                        {
                            case KeyAction.Save save:
                                outcomes.Add(save.Item);
                                break;
                            case KeyAction.Remove remove:
                                if (await adapter.RemoveIfCurrentAsync(key, remove.Item.Expected, ct)) outcomes.Add(remove.Item.OnRemoved);
                                else settled = false; // the app wrote meanwhile: decided again next pass, with its value
                                break;
                        }
                    }
                    if (outcomes.Count == 0) continue;
                    Activity = true;
                    changed = true;
                    await SaveItemsAsync(outcomes.Select(o => o.Row));
                    foreach (var outcome in outcomes)
                    {
                        Settled(outcome.Row);
                        foreach (var ev in outcome.Events) e.Emit(outcome.Row, ev);
                    }
                }
                directory.FatesSettled = settled;
            }
            return changed;
        }
    }
}
