using BitBoxSync.Protocol.Wire;
using Microsoft.AspNetCore.Http;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using static BitBoxSync.Server.Interop;
using static BitBoxSync.Server.Endpoints.ApiRoutes;

namespace BitBoxSync.Server.Endpoints;

/// <summary>Item map, item read, compare-and-set write (docs/protocol.md §7.20–§7.22) and the batch-items extension (§15).</summary>
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
            var sealedItem = Items.sealedOf(Decode<PutItemRequest>(body)).OrFail();
            var usage = await tx.UsageAsync(ns, ct); // locks the namespace: heads move by one per write
            Namespaces.requireMember(Opt(usage is null ? null : await tx.GetMembershipAsync(ns, caller.KeyId, ct))).OrFail();
            var current = await tx.GetItemAsync(ns, itemId, ct);
            var accepted = Items.put(usage!, itemId, Opt(current), ifMatch, sealedItem, api.Now).OrFail();
            await tx.UpsertItemAsync(accepted.Item, ct);
            await tx.SetUsageAsync(accepted.Usage, ct);
            return Items.putResponse(accepted);
        }, http.RequestAborted);
    }

    // ------------------------------------------------------------------ batch-items extension (docs/protocol.md §15)

    /// <summary><c>GET /v1/capabilities</c>: the extensions this server offers, with their limits.</summary>
    public static object Capabilities(Api api) =>
        new CapabilitiesResponse(api.Options.BatchItems
            ? new BatchItemsCapability(1, RateLimits.MaxBatchWrites(api.Options), Limits.MaxBatchRequestBytes, Limits.MaxBatchResponseBytes)
            : null!);

    private static void RequireBatchItems(Api api)
    {
        if (!api.Options.BatchItems) throw new ApiFailure(ApiErrorModule.notFound("the batch-items extension is switched off"));
    }

    /// <summary>Batch GET: many items of one namespace from one snapshot, within the response budget.</summary>
    public static async Task<object> BatchGet(Api api, HttpContext http)
    {
        RequireBatchItems(api);
        var body = await Api.RawBodyAsync(http);
        return await api.Store.ReadAsync<object>(async tx =>
        {
            var (_, ns, _) = await Member(api, http, tx);
            var ids = BatchRequests.get(Limits.MaxBatchItems, Decode<BatchGetItemsRequest>(body)).OrBadRequest();
            var found = await tx.GetItemsAsync(ns, [.. ids], http.RequestAborted);
            var plan = Items.getBatch(ids, Lookup(found), Limits.MaxBatchResponseBytes);
            return Items.getBatchResponse(ns, plan);
        }, http.RequestAborted);
    }

    /// <summary>
    /// Batch PUT: each item checked by the single PUT's rule in request order, all accepted ones
    /// written in one transaction (the head moves by one per accepted item, watchers wake once).
    /// </summary>
    public static async Task<object> BatchPut(Api api, HttpContext http)
    {
        RequireBatchItems(api);
        var body = await Api.RawBodyAsync(http, Limits.MaxBatchRequestBytes);
        var maxItems = RateLimits.MaxBatchWrites(api.Options);
        var decoded = BitBoxSync.Protocol.Wire.Json.decodeRequest<BatchPutItemsRequest>(body);
        var structure = decoded.IsOk
            ? BatchRequests.put(maxItems, decoded.ResultValue)
            : FSharpResult<FSharpList<BatchPutEntry>, FieldError>.NewError(FieldErrorModule.create("", decoded.ErrorValue));
        // Each write counts against the token's write limit (a malformed batch counts one).
        api.Limits.Take(http, RateLimits.Kind.Writes, structure.IsOk ? structure.ResultValue.Length : 1);
        return await api.Store.WriteAsync<object>(async tx =>
        {
            var ct = http.RequestAborted;
            var caller = await api.AuthenticateAsync(http, tx);
            var ns = Route<NamespaceIdKind>(http, "namespaceId");
            var entries = structure.OrBadRequest();
            var usage = await tx.UsageAsync(ns, ct); // locks the namespace: heads move by one per write
            Namespaces.requireMember(Opt(usage is null ? null : await tx.GetMembershipAsync(ns, caller.KeyId, ct))).OrFail();
            var current = await tx.GetItemsAsync(ns, [.. entries.Select(e => e.ItemId)], ct);
            var outcome = Items.putBatch(usage!,
                ListModule.OfSeq(entries.Select(e => Tuple.Create(e.ItemId,
                    current.TryGetValue(e.ItemId.Wire, out var row) ? Some(row) : FSharpOption<StoredItem>.None,
                    e.IfMatch, Items.sealedOf(e.Body)))),
                api.Now);
            var accepted = new List<StoredItem>(outcome.Results.Length);
            foreach (var (_, result) in outcome.Results)
                if (result.IsOk) accepted.Add(result.ResultValue.Item);
            if (accepted.Count > 0)
            {
                await tx.UpsertItemsAsync(accepted, ct);
                await tx.SetUsageAsync(outcome.Usage, ct);
            }
            return Items.putBatchResponse(outcome);
        }, http.RequestAborted);
    }

    /// <summary>The stored item of an ID, if any (the lookup the pure batch rule takes).</summary>
    private static FSharpFunc<ItemId, FSharpOption<StoredItem>> Lookup(Dictionary<string, StoredItem> found) =>
        Microsoft.FSharp.Core.FuncConvert.FromFunc<ItemId, FSharpOption<StoredItem>>(id =>
            found.TryGetValue(id.Wire, out var item) ? Some(item) : FSharpOption<StoredItem>.None);
}
