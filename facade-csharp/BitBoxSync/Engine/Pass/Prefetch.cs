using BitBoxSync.Core;
using BitBoxSync.Protocol;
using BitBoxSync.Protocol.Wire;

namespace BitBoxSync;

public sealed partial class SyncEngine
{
    /// <content>Downloads ahead of the apply (docs/engine.md §4.7).</content>
    private sealed partial class Pass
    {
        /// <summary>
        /// Fetches a namespace's planned downloads ahead of the apply, which takes them strictly in
        /// order: batch GETs when the server offers them (two requests in flight, items the server
        /// omitted asked again), else single GETs (<see cref="MaxParallelDownloads"/> in flight). It runs at most a few batches ahead of the apply, so memory stays bounded. A
        /// failure is delivered at the item it concerns (and, for a failed batch, at every later
        /// one): the apply stops there, as with single requests.
        /// </summary>
        private sealed class Prefetch
        {
            private readonly Pass _pass;
            private readonly string _ns;
            private readonly IReadOnlyList<ItemId> _ids;
            private readonly TaskCompletionSource<GetItemResponse>[] _slots;
            private readonly SemaphoreSlim _ahead;
            private readonly CancellationToken _ct;
            private BatchLimits? _limits;
            private readonly Task _worker;

            public Prefetch(Pass pass, string ns, IReadOnlyList<ItemId> ids, BatchLimits? limits, CancellationToken ct)
            {
                _pass = pass;
                _ns = ns;
                _ids = ids;
                _limits = limits;
                _ct = ct;
                _slots = new TaskCompletionSource<GetItemResponse>[ids.Count];
                for (var i = 0; i < _slots.Length; i++) _slots[i] = new(TaskCreationOptions.RunContinuationsAsynchronously);
                _ahead = new SemaphoreSlim(limits is { } l ? 4 * l.MaxItems : 4 * MaxParallelDownloads);
                _worker = RunAsync();
            }

            /// <summary>The answer for download <paramref name="index"/> (throws its failure).</summary>
            public Task<GetItemResponse> GetAsync(int index) => _slots[index].Task;

            /// <summary>The apply is done with one item: the fetch may go one further ahead.</summary>
            public void Consumed() => _ahead.Release();

            /// <summary>Waits for the fetching to stop (after the caller cancelled it), observing every failure.</summary>
            public async Task StopAsync()
            {
                try
                {
                    await _worker;
                }
                catch
                {
                    // abandoned: the apply already has what it needed
                }
                foreach (var slot in _slots)
                {
                    slot.TrySetCanceled(_ct.IsCancellationRequested ? _ct : new CancellationToken(true));
                    _ = slot.Task.Exception; // observed
                }
                _ahead.Dispose();
            }

            /// <summary>Batch requests in flight at once (the server answers one while the next is read).</summary>
            private const int BatchesInFlight = 2;

            private async Task RunAsync()
            {
                await Task.Yield();
                using var inFlight = new SemaphoreSlim(MaxParallelDownloads);
                using var batchesInFlight = new SemaphoreSlim(BatchesInFlight);
                var requests = new List<Task>();
                try
                {
                    var next = 0;
                    while (next < _ids.Count)
                    {
                        if (_limits is { } limits)
                        {
                            var batch = new List<int>(limits.MaxItems);
                            while (batch.Count < limits.MaxItems && next < _ids.Count)
                            {
                                await _ahead.WaitAsync(_ct);
                                batch.Add(next++);
                            }
                            await batchesInFlight.WaitAsync(_ct);
                            requests.Add(FetchBatchAsync(batch, batchesInFlight, inFlight));
                        }
                        else
                        {
                            await _ahead.WaitAsync(_ct);
                            await inFlight.WaitAsync(_ct);
                            requests.Add(FetchOneAsync(next++, inFlight));
                        }
                    }
                }
                catch (Exception x)
                {
                    // Cancelled: every item not delivered yet gets the failure.
                    foreach (var slot in _slots) slot.TrySetException(x);
                }
                await Task.WhenAll(requests);
            }

            /// <summary>
            /// One batch: asks for its items (again for those the server omitted) and delivers each. When
            /// the server no longer offers batches, its items (and all later ones) go as single requests.
            /// </summary>
            private async Task FetchBatchAsync(List<int> batch, SemaphoreSlim batchesInFlight, SemaphoreSlim inFlight)
            {
                var pending = batch;
                try
                {
                    while (pending.Count > 0)
                    {
                        if (_limits is null)
                        {
                            foreach (var index in pending)
                            {
                                await inFlight.WaitAsync(_ct);
                                await FetchOneAsync(index, inFlight);
                            }
                            return;
                        }
                        BatchGetItemsResponse answer;
                        try
                        {
                            answer = await _pass.Engine._client.GetItemsAsync(_pass.AccessToken, _ns, pending.Select(i => _ids[i].Wire).ToList(), _ct);
                        }
                        catch (SyncApiException x) when (Withdrawn(x))
                        {
                            _pass.Engine.BatchWithdrawn();
                            _limits = null;
                            continue;
                        }
                        pending = Deliver(pending, answer);
                    }
                }
                catch (Exception x)
                {
                    foreach (var index in pending) _slots[index].TrySetException(x);
                }
                finally
                {
                    batchesInFlight.Release();
                }
            }

            /// <summary>Delivers a batch answer; returns the omitted ones (to ask again), in order.</summary>
            private List<int> Deliver(List<int> batch, BatchGetItemsResponse answer)
            {
                var byId = new Dictionary<string, int>(batch.Count, StringComparer.Ordinal);
                foreach (var i in batch) byId[_ids[i].Wire] = i;
                foreach (var item in answer.Items) _slots[byId[item.ItemId]].TrySetResult(item);
                foreach (var id in answer.Missing)
                    _slots[byId[id]].TrySetException(new SyncApiException(404, "unknown item"));
                var omitted = answer.Omitted.Select(id => byId[id]).ToList();
                omitted.Sort();
                return omitted;
            }

            private async Task FetchOneAsync(int index, SemaphoreSlim inFlight)
            {
                try
                {
                    _slots[index].TrySetResult(await _pass.Engine._client.GetItemAsync(_pass.AccessToken, _ns, _ids[index].Wire, _ct));
                }
                catch (Exception x)
                {
                    _slots[index].TrySetException(x);
                }
                finally
                {
                    inFlight.Release();
                }
            }
        }
    }
}
