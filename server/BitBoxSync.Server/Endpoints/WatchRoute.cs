using BitBoxSync.Protocol.Wire;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.FSharp.Collections;
using BitBoxSync.Server.Store;

namespace BitBoxSync.Server.Endpoints;

/// <summary>
/// The long poll (docs/protocol.md §7.9): answers at once when a visible namespace differs from the
/// caller's known heads, otherwise parks the request in the <see cref="WatchHub"/> (no thread)
/// until a commit touches one of its namespaces or the timeout passes.
/// </summary>
internal static class WatchRoute
{
    public static async Task<object> Watch(Api api, HttpContext http)
    {
        var body = await Api.RawBodyAsync(http);
        var ct = http.RequestAborted;
        var (caller, known) = await api.Store.ReadAsync(async tx =>
        {
            var caller = await api.AuthenticateAsync(http, tx);
            var cmd = Requests.watch(ApiRoutes.Decode<WatchNamespacesRequest>(body)).OrBadRequest();
            return (caller, cmd.KnownHeads);
        }, ct);

        var stopping = http.RequestServices.GetRequiredService<IHostApplicationLifetime>().ApplicationStopping;
        // 90–100 % of the timeout, so that many watchers do not reconnect in lockstep.
        var clock = api.Options.Clock;
        var started = clock.GetTimestamp();
        var timeout = api.Options.WatchTimeout * (0.9 + 0.1 * Random.Shared.NextDouble());
        var visible = await VisibleAsync(api, caller.KeyId, ct);
        while (true)
        {
            var keys = visible.Select(v => WatchKeys.Namespace(v.Item1.Wire)).Append(WatchKeys.Identity(caller.KeyId.Wire));
            var waiter = api.Hub.Register(keys);
            try
            {
                // Re-read after registering: a commit between the two reads cannot be missed.
                visible = await VisibleAsync(api, caller.KeyId, ct);
                var changes = Core.Watch.changed(ListModule.OfSeq(visible), known);
                var remaining = timeout - clock.GetElapsedTime(started);
                if (changes.Length > 0 || remaining <= TimeSpan.Zero || stopping.IsCancellationRequested)
                    return Core.Watch.answer(changes);
                using var wake = CancellationTokenSource.CreateLinkedTokenSource(ct, stopping);
                try
                {
                    await waiter.Woken.WaitAsync(remaining, clock, wake.Token);
                }
                catch (TimeoutException)
                {
                    // Loop once more: the answer is computed from the current state.
                }
                catch (OperationCanceledException) when (stopping.IsCancellationRequested && !ct.IsCancellationRequested)
                {
                    // Shutting down: answer now instead of dropping the request.
                }
            }
            finally
            {
                api.Hub.Unregister(waiter);
            }
        }
    }

    private static Task<List<Tuple<NamespaceId, NamespaceKind, ulong>>> VisibleAsync(Api api, KeyId keyId, CancellationToken ct) =>
        api.Store.ReadAsync(async tx =>
            (await tx.NamespacesOfAsync(keyId, ct)).Select(n => Tuple.Create(n.NamespaceId, n.Kind, n.Head)).ToList(), ct);
}
