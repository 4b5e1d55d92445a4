using BitBoxSync.Core;
using BitBoxSync.Protocol;
using BitBoxSync.Storage;
using static BitBoxSync.StateMapping;

namespace BitBoxSync;

/// <content>Recorded conflicts: listing and resolving them.</content>
public sealed partial class SyncEngine
{
    // ------------------------------------------------------------------ conflicts

    internal async Task<IReadOnlyList<Conflict<T>>> ConflictsAsync<T>(string ns, CollectionAdapter<T> adapter, CancellationToken ct)
    {
        ThrowIfClosed();
        var result = new List<Conflict<T>>();
        foreach (var row in await _store.ListNamespaceItemsAsync(_keyId.Wire, ns, ct))
        {
            if (!row.Conflict || row.Collection != adapter.Name) continue;
            var hasBase = row.BaseVersion != 0 || row.BaseValue is { Length: > 0 };
            var local = await adapter.Backend.GetAsync(row.Key, ct);
            result.Add(new Conflict<T>(row.Key, hasBase, hasBase && row.BaseValue is { } b ? adapter.Codec.Decode(b) : default,
                local, adapter.Codec.Decode(row.ConflictRemoteValue ?? []), row.ConflictRemoteVersion));
        }
        return result;
    }

    internal async Task ResolveAsync<T>(string ns, CollectionAdapter<T> adapter, string key, ConflictChoice choice, byte[]? value, CancellationToken ct)
    {
        ThrowIfClosed();
        ArgumentNullException.ThrowIfNull(key);
        using var linked = Linked(ct);
        // The sync lock: a pass never applies a remote value to this key while it is being resolved.
        await _syncLock.WaitAsync(linked.Token);
        try
        {
            var stored = await _store.GetItemByLogicalKeyAsync(_keyId.Wire, ns, adapter.Name, key, linked.Token)
                ?? throw new KeyNotFoundException($"no sync metadata for key \"{key}\" of collection \"{adapter.Name}\"");
            var row = ToCore(stored);
            Resolution resolution = choice switch
            {
                ConflictChoice.Value => Conflicts.resolveWithValue(row, value!, Now),
                ConflictChoice.Remote => Conflicts.preferRemote(row, Now),
                _ => Conflicts.preferLocal(row, await adapter.GetAsync(key, linked.Token) is { } local ? LocalValue.NewPresent(local) : LocalValue.Absent, Now),
            };
            switch (resolution)
            {
                case Resolution.WriteAndSave write:
                    await adapter.SetAsync(key, write.value, linked.Token);
                    await _store.SaveAsync(new StoreWrite { Items = [ToRecord(write.row)] }, linked.Token);
                    break;
                case Resolution.Save save:
                    await _store.SaveAsync(new StoreWrite { Items = [ToRecord(save.Item)] }, linked.Token);
                    break;
                case var r when r.IsLocalValueMissing:
                    throw new InvalidOperationException($"the backend has no value for key \"{key}\" to keep");
                default:
                    return; // not in conflict
            }
            Emit(SyncEventType.ConflictResolved, ns, adapter.Name, key, row.ItemId.Wire);
            var (pending, conflicts) = await DirtyCountsAsync(linked.Token);
            UpdateStatus(st => st with { PendingUploads = pending, Conflicts = conflicts });
        }
        finally
        {
            _syncLock.Release();
        }
        ScheduleSync();
    }
}
