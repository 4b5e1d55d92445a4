using BitBoxSync.Core;
using BitBoxSync.Protocol;
using BitBoxSync.Storage;
using Microsoft.FSharp.Collections;
using static BitBoxSync.StateMapping;

namespace BitBoxSync;

/// <content>The pass: its entry point, its per-pass state and scopes, quarantine bookkeeping.</content>
public sealed partial class SyncEngine
{
    // ------------------------------------------------------------------ the pass

    /// <summary>
    /// Runs one full sync pass now and waits for it: local changes are detected, remote changes
    /// downloaded and merged, dirty items uploaded. May log in (and prompt the identity).
    /// </summary>
    /// <exception cref="SyncEngineClosedException">The engine was disposed.</exception>
    /// <exception cref="RollbackDetectedException">The server went back in time; nothing was overwritten.</exception>
    public Task SyncNowAsync(CancellationToken cancellationToken = default) => PassAsync(mayPrompt: true, cancellationToken);

    private async Task PassAsync(bool mayPrompt, CancellationToken cancellationToken)
    {
        ThrowIfClosed();
        using var linked = Linked(cancellationToken);
        var ct = linked.Token;
        await _syncLock.WaitAsync(ct);
        try
        {
            ThrowIfClosed();
            using var activity = SyncTelemetry.Source.StartActivity("bitboxsync.sync");
            activity?.SetTag("bitboxsync.key_id", _keyId.Wire[..16]);
            var started = System.Diagnostics.Stopwatch.GetTimestamp();
            EngineLog.PassStarted(_log);
            Emit(SyncEventType.SyncStarted);
            UpdateStatus(st => st with { Syncing = true, Downloaded = 0, DownloadsPlanned = 0, Uploaded = 0, UploadsPlanned = 0 });
            try
            {
                await AuthenticatedAsync(async token =>
                {
                    var pass = new Pass(this, token, ct);
                    await pass.RunAsync();
                    return pass.Activity;
                }, mayPrompt, ct);
                var (pending, conflicts) = await DirtyCountsAsync(ct);
                var deletions = await PendingDeletionsAsync(ct);
                UpdateStatus(st => st with
                {
                    Syncing = false, Connected = true, LoginRequired = false, LastSyncedAt = Now, LastError = null,
                    PendingUploads = pending, Conflicts = conflicts, PendingDeletions = deletions,
                });
                var elapsed = System.Diagnostics.Stopwatch.GetElapsedTime(started);
                SyncTelemetry.Passes.Add(1, new KeyValuePair<string, object?>("outcome", "success"));
                SyncTelemetry.PassDuration.Record(elapsed.TotalSeconds, new KeyValuePair<string, object?>("outcome", "success"));
                var st = Status;
                EngineLog.PassFinished(_log, elapsed.TotalMilliseconds, st.Uploaded, st.Downloaded, pending, conflicts);
                activity?.SetTag("bitboxsync.items.uploaded", st.Uploaded);
                activity?.SetTag("bitboxsync.items.downloaded", st.Downloaded);
                Emit(SyncEventType.SyncFinished);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                UpdateStatus(st => st with
                {
                    Syncing = false, LastError = e, LoginRequired = e is LoginRequiredException,
                    Connected = e is not SyncTransportException && st.Connected,
                });
                var elapsed = System.Diagnostics.Stopwatch.GetElapsedTime(started);
                var kind = SyncTelemetry.Kind(FailureOf(e));
                var outcome = new KeyValuePair<string, object?>("outcome", "failure");
                var failureKind = new KeyValuePair<string, object?>("failure.kind", kind);
                SyncTelemetry.Passes.Add(1, outcome, failureKind);
                SyncTelemetry.PassDuration.Record(elapsed.TotalSeconds, outcome, failureKind);
                SyncTelemetry.Failures.Add(1, new KeyValuePair<string, object?>("kind", kind));
                EngineLog.PassFailed(_log, elapsed.TotalMilliseconds, kind, e.GetType().Name, e.Message);
                if (e is RollbackDetectedException) EngineLog.Rollback(_log, e.Message);
                activity?.SetStatus(System.Diagnostics.ActivityStatusCode.Error, e.GetType().Name);
                activity?.SetTag("error.type", e.GetType().FullName);
                Emit(SyncEventType.SyncFailed, error: e);
                throw;
            }
            catch (OperationCanceledException)
            {
                UpdateStatus(st => st with { Syncing = false });
                throw;
            }
        }
        finally
        {
            _syncLock.Release();
        }
    }

    private bool _lastPassActivity;

    /// <summary>Item downloads in flight during an item-map reconciliation (applies stay sequential).</summary>
    private const int MaxParallelDownloads = 8;
    private TaskCompletionSource _nextPass = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _runPassesStarted;
    private int _runPassesCompleted;

    /// <summary>Whether two per-collection key lists are equal (same collections in order, same keys).</summary>
    internal static bool SameKeys(IReadOnlyList<(string Collection, string[] Keys)> a, IReadOnlyList<(string Collection, string[] Keys)> b)
    {
        if (a.Count != b.Count) return false;
        for (var i = 0; i < a.Count; i++)
            if (a[i].Collection != b[i].Collection || (!ReferenceEquals(a[i].Keys, b[i].Keys) && !a[i].Keys.AsSpan().SequenceEqual(b[i].Keys)))
                return false;
        return true;
    }

    /// <summary>One pass's state: the token, the per-namespace scopes computed once, and the effects.</summary>
    private sealed partial class Pass(SyncEngine e, string token, CancellationToken ct)
    {
        private readonly Dictionary<string, (NamespaceKeys Keys, ActiveScope Scope, List<ICollectionAdapter> Collections)> _scopes = new(StringComparer.Ordinal);
        private readonly Dictionary<ICollectionAdapter, long?> _stamps = new();

        public bool Activity { get; private set; }

        /// <summary>The flush overwrote a deleted value (<c>OverwriteOnDelete</c>): its deletion can be published.</summary>
        private bool _overwritten;

        /// <summary>The engine (for the pass's helpers).</summary>
        private SyncEngine Engine => e;

        /// <summary>The pass's access token.</summary>
        private string AccessToken => token;

        private DateTimeOffset Now => e.Now;

        public async Task RunAsync()
        {
            await ReconcileSnapshotsAsync();
            await ReconcileNamespacesAsync();
            await DeletesAsync();
            // Revivals and deletions of this pass change the buckets: reconciled again (a no-op when unchanged).
            await ReconcileSnapshotsAsync(directoriesOnly: true);
            await FlushAsync();
            if (_overwritten)
            {
                // Deleted values were overwritten: their deletions may be published now, in this pass.
                await ReconcileSnapshotsAsync(directoriesOnly: true);
                await FlushAsync();
            }
            e._lastPassActivity = Activity;
        }

        private async Task<(NamespaceKeys Keys, ActiveScope Scope, List<ICollectionAdapter> Collections)> ScopeOfAsync(NamespaceId ns)
        {
            if (_scopes.TryGetValue(ns.Wire, out var known)) return known;
            var row = await e.EnsureReadyAsync(ns, null, () => Task.FromResult(token), ct);
            var keys = NamespaceKeysModule.derive(row.Dek!.Value);
            var collections = e._collections.Where(c => c.Key.Namespace == ns.Wire).Select(c => c.Value)
                .OrderBy(c => c.Name, StringComparer.Ordinal).ToList();
            var keyLists = new List<(string Collection, string[] Keys)>();
            foreach (var c in collections)
            {
                // The change stamp is read before the keys and the snapshot: a write after it is seen again next pass.
                var stamp = await c.ChangeStampAsync(ct);
                _stamps[c] = stamp;
                string[] collectionKeys;
                if (stamp is { } now && c.KeysAtStamp is { } atStamp && atStamp.Stamp == now)
                {
                    collectionKeys = atStamp.Keys;
                }
                else
                {
                    collectionKeys = (await c.KeysAsync(ct)).ToArray();
                    // A key that enters the scope is compared with its base even if it was not written.
                    if (c.KeysAtStamp is { } previous && c.ReconciledStamp is not null)
                        c.EnteredScope.UnionWith(collectionKeys.Except(previous.Keys, StringComparer.Ordinal));
                    c.KeysAtStamp = stamp is { } at ? (at, collectionKeys) : null;
                }
                keyLists.Add((c.Name, collectionKeys));
            }
            // Directory collections: the keys they hold feed the directory; their scope adds the live
            // keys the synced directory lists (learned from other devices) and the keys deleted here
            // whose deletion is not on the server yet (a newer value is downloaded before it goes up:
            // the deletion then knows whether it saw that version).
            if (e._collections.TryGetValue((ns.Wire, KeyDirectory.ReservedCollection), out var dirAdapter) && dirAdapter is DirectoryAdapter directory)
            {
                directory.Keys = keys;
                directory.CollectionKeys = [.. keyLists.Where(k => directory.Holds(k.Collection))];
                _stamps[directory] = await directory.ChangeStampAsync(ct); // after its inputs are set
                var (synced, _) = await directory.SyncedAsync(ct);
                for (var i = 0; i < keyLists.Count; i++)
                    if (synced.TryGetValue(keyLists[i].Collection, out var entries))
                        keyLists[i] = (keyLists[i].Collection,
                            [.. keyLists[i].Keys.Union(KeyDirectory.liveKeys(entries), StringComparer.Ordinal)
                                .Union(await directory.PendingDeletionKeysAsync(keyLists[i].Collection, ct), StringComparer.Ordinal)]);
            }
            // The scope (one HMAC per key) is reused while the DEK and every collection's keys are unchanged.
            ActiveScope scope;
            if (e._scopeCache.TryGetValue(ns.Wire, out var cached) && cached.Dek.Equals(row.Dek.Value) && SameKeys(cached.Keys, keyLists))
            {
                scope = cached.Scope;
            }
            else
            {
                scope = Scope.build(keys, ListModule.OfSeq(keyLists.Select(k => new CollectionKeys(k.Collection, ListModule.OfSeq(k.Keys.Distinct())))));
                e._scopeCache[ns.Wire] = (row.Dek.Value, keyLists, scope);
            }
            return _scopes[ns.Wire] = (keys, scope, collections);
        }

        private async Task SaveItemsAsync(IEnumerable<ItemState> rows, params NamespaceState[] namespaces)
        {
            var records = rows.Select(ToRecord).ToList();
            await e._store.SaveAsync(new StoreWrite { Items = records, Namespaces = namespaces.Select(ToRecord).ToList() }, ct);
            e.RowsSaved(records);
        }

        /// <summary>Remembers what a quarantined apply saw (remote version, local value) for the retry rule.</summary>
        private async Task ParkAsync(ItemState row, QuarantineReason reason, ulong remoteVersion)
        {
            e._collections.TryGetValue((row.NamespaceId.Wire, row.Collection), out var adapter);
            var local = adapter is null ? null : await adapter.GetAsync(row.Key, ct);
            e._quarantineState[(row.NamespaceId.Wire, row.ItemId.Wire)] =
                Quarantine.create(row, reason, remoteVersion, local is null ? LocalValue.Absent : LocalValue.NewPresent(local));
        }

        private void Settled(ItemState row)
        {
            e._quarantined.TryRemove((row.NamespaceId.Wire, row.ItemId.Wire), out _);
            e._quarantineState.TryRemove((row.NamespaceId.Wire, row.ItemId.Wire), out _);
        }

        /// <summary>Lists the item as quarantined; the event is emitted when it is new or its error changed.</summary>
        private void Quarantined(ItemState row, string why)
        {
            var id = (row.NamespaceId.Wire, row.ItemId.Wire);
            if (e._quarantined.TryGetValue(id, out var known) && known.Error == why) return;
            e._quarantined.AddOrUpdate(id,
                _ => new QuarantinedItem(row.NamespaceId.Wire, row.Collection, row.Key, row.ItemId.Wire, why, Now),
                (_, old) => old with { Error = why });
            e.Emit(SyncEventType.ItemQuarantined, row.NamespaceId.Wire, row.Collection, row.Key, row.ItemId.Wire, new SyncException(why));
        }
    }
}
