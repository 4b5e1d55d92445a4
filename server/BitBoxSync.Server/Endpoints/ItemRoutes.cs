using BitBoxSync.Protocol.Wire;
using Microsoft.AspNetCore.Http;
using static BitBoxSync.Server.Interop;
using static BitBoxSync.Server.Endpoints.ApiRoutes;

namespace BitBoxSync.Server.Endpoints;

/// <summary>Item map, item read and compare-and-set write (docs/protocol.md §7.20–§7.22).</summary>
internal static class ItemRoutes
{
    public static Task<object> Map(Api api, HttpContext http) =>
        api.Store.ReadAsync<object>(async tx =>
        {
            var (_, ns, _) = await Member(api, http, tx);
            var usage = await tx.UsageAsync(ns, http.RequestAborted)
                ?? throw new InvalidOperationException("member of a missing namespace");
            var versions = await tx.ItemVersionsAsync(ns, http.RequestAborted);
            return Items.mapResponse(ns, usage.Head, versions.Select(v => Tuple.Create(v.Item1, v.Item2)));
        }, http.RequestAborted);

    public static Task<object> Get(Api api, HttpContext http) =>
        api.Store.ReadAsync<object>(async tx =>
        {
            var (_, ns, _) = await Member(api, http, tx);
            var itemId = Route<ItemIdKind>(http, "itemId");
            var item = await tx.GetItemAsync(ns, itemId, http.RequestAborted)
                ?? throw new ApiFailure(ApiErrorModule.notFound("unknown item"));
            http.Response.Headers.ETag = IfMatchModule.quote(item.Version);
            return Items.getResponse(item);
        }, http.RequestAborted);

    public static async Task<object> Put(Api api, HttpContext http)
    {
        var body = await Api.RawBodyAsync(http);
        return await api.Store.WriteAsync<object>(async tx =>
        {
            var ct = http.RequestAborted;
            var caller = await api.AuthenticateAsync(http, tx);
            var ns = Route<NamespaceIdKind>(http, "namespaceId");
            var itemId = Route<ItemIdKind>(http, "itemId");
            var headers = http.Request.Headers.IfMatch;
            var ifMatch = IfMatchModule.parse(headers.Count > 1 ? string.Join(", ", headers.ToArray()) : headers.ToString()).OrBadRequest();
            var request = Decode<PutItemRequest>(body);
            if (DecodedLength(request.Ciphertext) > Limits.MaxItemCiphertextSize)
                throw new ApiFailure(ApiErrorModule.tooLarge($"ciphertext exceeds {Limits.MaxItemCiphertextSize} bytes"));
            var sealedItem = Requests.putItem(request).OrBadRequest();
            var usage = await tx.UsageAsync(ns, ct); // locks the namespace: heads move by one per write
            Namespaces.requireMember(Opt(usage is null ? null : await tx.GetMembershipAsync(ns, caller.KeyId, ct))).OrFail();
            var current = await tx.GetItemAsync(ns, itemId, ct);
            var accepted = Items.put(usage!, itemId, Opt(current), ifMatch, sealedItem, api.Now).OrFail();
            await tx.UpsertItemAsync(accepted.Item, ct);
            await tx.SetUsageAsync(accepted.Usage, ct);
            return Items.putResponse(accepted);
        }, http.RequestAborted);
    }

    /// <summary>Bytes a base64 string decodes to (before validation), for the 413 answer.</summary>
    private static long DecodedLength(string? base64) =>
        base64 is null ? 0 : base64.Length / 4 * 3L - (base64.EndsWith("==") ? 2 : base64.EndsWith('=') ? 1 : 0);
}
