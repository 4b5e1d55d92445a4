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
        /// order: batch GETs when the server offers them (one request in flight, items the server
        /// omitted asked again first), else single GETs (<see cref="MaxParallelDownloads"/> in
        /// flight). It runs at most a few batches ahead of the apply, so memory stays bounded. A
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

            private async Task RunAsync()
            {
                await Task.Yield();
                var next = 0; // the first item not yet requested
                var retry = new List<int>(); // omitted by the server: asked again first
                using var inFlight = new SemaphoreSlim(MaxParallelDownloads);
                var singles = new List<Task>();
                try
                {
                    while (next < _ids.Count || retry.Count > 0)
                    {
                        if (_limits is { } limits)
                        {
                            var batch = new List<int>(limits.MaxItems);
                            batch.AddRange(retry);
                            retry.Clear();
                            while (batch.Count < limits.MaxItems && next < _ids.Count)
                            {
                                await _ahead.WaitAsync(_ct);
                                batch.Add(next++);
                            }
                            BatchGetItemsResponse answer;
                            try
                            {
                                answer = await _pass.Engine._client.GetItemsAsync(_pass.AccessToken, _ns, batch.Select(i => _ids[i].Wire).ToList(), _ct);
                            }
                            catch (SyncApiException x) when (Withdrawn(x))
                            {
                                _pass.Engine.BatchWithdrawn();
                                _limits = null;
                                retry.AddRange(batch);
                                continue;
                            }
                            Deliver(batch, answer, retry);
                        }
                        else
                        {
                            var index = retry.Count > 0 ? retry[0] : next++;
                            if (retry.Count > 0) retry.RemoveAt(0);
                            else await _ahead.WaitAsync(_ct);
                            await inFlight.WaitAsync(_ct);
                            singles.Add(FetchOneAsync(index, inFlight));
                        }
                    }
                }
                catch (Exception x)
                {
                    // Every item not delivered yet gets the failure (the apply stops at the first one).
                    foreach (var slot in _slots) slot.TrySetException(x);
                }
                await Task.WhenAll(singles);
            }

            private void Deliver(List<int> batch, BatchGetItemsResponse answer, List<int> retry)
            {
                var byId = new Dictionary<string, int>(batch.Count, StringComparer.Ordinal);
                foreach (var i in batch) byId[_ids[i].Wire] = i;
                foreach (var item in answer.Items) _slots[byId[item.ItemId]].TrySetResult(item);
                foreach (var id in answer.Missing)
                    _slots[byId[id]].TrySetException(new SyncApiException(404, "unknown item"));
                foreach (var id in answer.Omitted) retry.Add(byId[id]);
                retry.Sort();
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
