using BitBoxSync.Core;
using BitBoxSync.Protocol;
using Microsoft.FSharp.Core;
using static BitBoxSync.StateMapping;

namespace BitBoxSync;

/// <content>Deleting a key of a key-directory collection on this device (docs/concepts.md, "Deletes").</content>
public sealed partial class SyncEngine
{
    internal async Task DeleteAsync<T>(string ns, CollectionAdapter<T> adapter, string key, CancellationToken ct)
    {
        ThrowIfClosed();
        ArgumentException.ThrowIfNullOrEmpty(key);
        if (System.Text.Encoding.UTF8.GetByteCount(key) > KeyDirectory.MaxKeyBytes)
            throw new ArgumentException($"a key of a key-directory collection is at most {KeyDirectory.MaxKeyBytes} UTF-8 bytes", nameof(key));
        var directory = DirectoryIn(ns);
        if (directory is null || !directory.Holds(adapter.Name))
            throw new InvalidOperationException($"collection \"{adapter.Name}\" keeps no key directory: deletes need CollectionOptions.KeyDirectory");
        if (!adapter.CanRemove)
            throw new InvalidOperationException($"the backend of collection \"{adapter.Name}\" cannot remove values: implement IDeletableValueBackend<T> to delete keys");
        using var linked = Linked(ct);
        var token = linked.Token;
        // The sync lock: no pass applies or uploads this key while it is being deleted.
        await _syncLock.WaitAsync(token);
        try
        {
            ThrowIfClosed();
            var stored = await _store.GetItemByLogicalKeyAsync(_keyId.Wire, ns, adapter.Name, key, token);
            // The namespace keys name the item and choose its directory bucket.
            var keys = directory.Keys ?? (await _store.GetNamespaceAsync(_keyId.Wire, ns, token) is { Dek: { Length: 32 } dek }
                ? NamespaceKeysModule.derive(Bin.ofBytes<DekKind>(dek).ResultValue)
                : throw new InvalidOperationException($"namespace {ns} has not been synced on this device yet: sync once before deleting"));
            directory.Keys ??= keys;
            var row = stored is not null
                ? ToCore(stored)
                : ItemStateModule.template(_keyId, Bin.parse<NamespaceIdKind>(ns).ResultValue, adapter.Name, key, LogicalKey.itemId(keys, adapter.Name, key), Now);
            var original = row;
            var value = await adapter.GetAsync(key, token);
            if (row.Deleted)
            {
                if (value is null) return; // deleted already, nothing to remove
                if (!row.Removed && ItemStateModule.equalsBase(row, value))
                {
                    // The deleted value itself, not removed yet: remove it now.
                    if (await adapter.RemoveIfCurrentAsync(key, value, token))
                    {
                        var done = ToRecord(Deletes.removed(row, Now));
                        await _store.SaveAsync(new Storage.StoreWrite { Items = [done] }, token);
                        RowsSaved([done]);
                    }
                    return;
                }
                // Written again since the deletion (not synced yet): that write, then this deletion.
                row = ItemStateModule.writtenAfterDeletion(row, Now);
            }
            var synced = await directory.SyncedEntryAsync(adapter.Name, key, token);
            var current = Deletes.publishedEntry(directory.PolicyOf(adapter.Name), directory.Writer, synced is null ? null : FSharpOption<DirEntry>.Some(synced),
                Deletes.ownEntry(directory.Writer, row), value is not null);
            var deleted = Deletes.requested(directory.Writer, adapter.DeletedValue is not null, current, row,
                value is null ? LocalValue.Absent : LocalValue.NewPresent(value), Now);
            // The deletion is kept first: a crash before the removal leaves the deleted value, which the next pass removes.
            var record = ToRecord(deleted);
            await _store.SaveAsync(new Storage.StoreWrite { Items = [record] }, token);
            RowsSaved([record]);
            _quarantined.TryRemove((ns, deleted.ItemId.Wire), out _);
            _quarantineState.TryRemove((ns, deleted.ItemId.Wire), out _);
            if (value is not null && await adapter.RemoveIfCurrentAsync(key, value, token))
            {
                // Removed: from now on any value of the key is a write after the deletion.
                var removed = ToRecord(Deletes.removed(deleted, Now));
                await _store.SaveAsync(new Storage.StoreWrite { Items = [removed] }, token);
                RowsSaved([removed]);
            }
            Emit(deleted, ItemEvent.ItemDeleted);
            // The counts move by what this row changed (no store scan, no derivation per deletion).
            var uploads = (deleted.Dirty ? 1 : 0) - (original.Dirty && !original.Conflict ? 1 : 0);
            var conflictsEnded = original.Conflict ? 1 : 0;
            UpdateStatus(st => st with
            {
                PendingUploads = Math.Max(0, st.PendingUploads + uploads),
                Conflicts = Math.Max(0, st.Conflicts - conflictsEnded),
                PendingDeletions = st.PendingDeletions + 1,
            });
        }
        finally
        {
            _syncLock.Release();
        }
        ScheduleSync();
    }
}
