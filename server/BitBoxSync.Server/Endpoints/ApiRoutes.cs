using System.Reflection;
using BitBoxSync.Protocol.Wire;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.FSharp.Collections;
using static BitBoxSync.Server.Interop;

namespace BitBoxSync.Server.Endpoints;

/// <summary>
/// Every endpoint of docs/protocol.md §7. Each parses and validates its request, loads what the rule
/// needs, calls the pure rule in BitBoxSync.Server.Core and writes the outcome in one transaction.
/// </summary>
internal static class ApiRoutes
{
    public static void Map(IEndpointRouteBuilder app, Api api)
    {
        RequestDelegate H(string name, Func<HttpContext, Task<object>> f, RateLimits.Kind limit = RateLimits.Kind.None) =>
            Handler.Json(api, name, f, limit);
        const RateLimits.Kind anonymous = RateLimits.Kind.Anonymous, writes = RateLimits.Kind.Writes;

        app.MapGet("/version", H("version", _ => Task.FromResult<object>(new VersionResponse(GitCommit))));

        // Literal routes first (routing precedence also guarantees it).
        app.MapPost(Paths.Challenge, H("auth.challenge", http => Challenge(api, http), anonymous));
        app.MapPost(Paths.Login, H("auth.login", http => Login(api, http), anonymous));
        app.MapPost(Paths.Refresh, H("auth.refresh", http => Refresh(api, http)));
        app.MapDelete(Paths.Tokens, H("auth.revoke_tokens", http => RevokeAllTokens(api, http), writes));
        app.MapGet(Paths.DefaultNamespace, H("namespace.get_default", http => GetDefault(api, http)));
        app.MapPut(Paths.DefaultNamespace, H("namespace.ensure_default", http => EnsureDefault(api, http), writes));
        app.MapGet(Paths.Mine, H("namespace.mine", http => Mine(api, http)));
        app.MapPost(Paths.Watch, H("namespace.watch", http => WatchRoute.Watch(api, http)));
        app.MapPost(Paths.Namespaces, H("namespace.create_shared", http => CreateShared(api, http), writes));

        app.MapGet("/v1/namespaces/{namespaceId}/members", H("namespace.members", http => Members(api, http)));
        app.MapPost("/v1/namespaces/{namespaceId}/invites", H("invite.create", http => SharingRoutes.CreateInvite(api, http), writes));
        app.MapGet("/v1/namespaces/{namespaceId}/invites", H("invite.list", http => SharingRoutes.ListInvites(api, http)));
        app.MapDelete("/v1/namespaces/{namespaceId}/invites/{inviteId}", H("invite.revoke", http => SharingRoutes.RevokeInvite(api, http), writes));
        app.MapPost("/v1/namespaces/{namespaceId}/invites/{inviteId}/join-requests", H("join.submit", http => SharingRoutes.Submit(api, http), writes));
        app.MapGet("/v1/namespaces/{namespaceId}/join-requests", H("join.list", http => SharingRoutes.ListRequests(api, http)));
        app.MapPut("/v1/namespaces/{namespaceId}/join-requests/{keyId}/{joinRequestHash}/approve", H("join.approve", http => SharingRoutes.Approve(api, http), writes));
        app.MapDelete("/v1/namespaces/{namespaceId}/join-requests/{keyId}/{joinRequestHash}", H("join.reject", http => SharingRoutes.Reject(api, http), writes));
        app.MapGet("/v1/namespaces/{namespaceId}/wrapped-deks/{keyId}", H("namespace.wrapped_dek", http => WrappedDek(api, http)));
        app.MapGet("/v1/namespaces/{namespaceId}/items", H("item.map", http => ItemRoutes.Map(api, http)));
        app.MapGet("/v1/kv/{namespaceId}/{itemId}", H("item.get", http => ItemRoutes.Get(api, http)));
        app.MapPut("/v1/kv/{namespaceId}/{itemId}", H("item.put", http => ItemRoutes.Put(api, http), writes));

        // The batch-items extension (docs/protocol.md §15): offered in the capabilities, switchable.
        app.MapGet(Paths.Capabilities, H("capabilities", _ => Task.FromResult(ItemRoutes.Capabilities(api))));
        app.MapPost("/v1/namespaces/{namespaceId}/items/batch-get", H("item.batch_get", http => ItemRoutes.BatchGet(api, http)));
        app.MapPost("/v1/namespaces/{namespaceId}/items/batch-put", H("item.batch_put", http => ItemRoutes.BatchPut(api, http)));
    }

    /// <summary>The commit this server was built from (from the informational version), or "unknown".</summary>
    public static readonly string GitCommit = ReadCommit();

    private static string ReadCommit()
    {
        var v = typeof(ApiRoutes).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion;
        var plus = v?.IndexOf('+') ?? -1;
        return plus >= 0 ? v![(plus + 1)..] : "unknown";
    }

    /// <summary>A path parameter, validated as lowercase hex of its exact length (400 otherwise).</summary>
    public static Bin<K> Route<K>(HttpContext http, string name) where K : IBinaryKind =>
        Bin.parseAs<K>(name, http.Request.RouteValues[name] as string ?? "").OrBadRequest();

    // ------------------------------------------------------------------ auth

    private static async Task<object> Challenge(Api api, HttpContext http)
    {
        var cmd = Requests.challenge(await api.BodyAsync<ChallengeRequest>(http)).OrBadRequest();
        var (stored, response) = Auth.mint(api.AuthSettings, cmd, Api.Random32(), api.Now);
        await api.Store.WriteAsync(async tx =>
        {
            await tx.DeleteStaleChallengesAsync(api.Now, http.RequestAborted);
            await tx.InsertChallengeAsync(stored, http.RequestAborted);
            return 0;
        }, http.RequestAborted);
        return response;
    }

    private static async Task<object> Login(Api api, HttpContext http)
    {
        var cmd = Requests.login(await api.BodyAsync<LoginRequest>(http)).OrBadRequest();
        await api.ConsumeChallengeAsync(http, cmd.Challenge, ChallengePurpose.Login, cmd.Kind);
        return await api.Store.WriteAsync<object>(async tx =>
        {
            var ct = http.RequestAborted;
            var existing = await tx.LockIdentityAsync(cmd.KeyId, ct); // serialises token issuance per key
            var identity = Auth.login(api.AuthSettings, cmd, Opt(existing), api.Now).OrFail();
            if (existing is null) await tx.InsertIdentityAsync(identity, ct);
            var (token, stored) = await api.IssueTokenAsync(tx, identity.KeyId, ct);
            var defaultNs = await tx.DefaultNamespaceOfAsync(identity.KeyId, ct);
            return new LoginResponse(cmd.Kind.Wire, token, Rfc3339.format(stored.ExpiresAt), defaultNs?.Item1.NamespaceId.Wire!);
        }, http.RequestAborted);
    }

    private static async Task<object> Refresh(Api api, HttpContext http)
    {
        var caller = await api.AuthenticateAsync(http);
        var cmd = Requests.refresh(await api.BodyAsync<RefreshRequest>(http)).OrBadRequest();
        await api.ConsumeChallengeAsync(http, cmd.Challenge, ChallengePurpose.Refresh, cmd.Kind);
        Auth.refresh(api.AuthSettings, cmd, caller).OrFail();
        return await api.Store.WriteAsync<object>(async tx =>
        {
            var (token, stored) = await api.IssueTokenAsync(tx, caller.KeyId, http.RequestAborted);
            return new RefreshResponse(cmd.Kind.Wire, token, Rfc3339.format(stored.ExpiresAt));
        }, http.RequestAborted);
    }

    private static async Task<object> RevokeAllTokens(Api api, HttpContext http)
    {
        var caller = await api.AuthenticateAsync(http);
        var cmd = Requests.revokeAllTokens(await api.BodyAsync<RevokeAllTokensRequest>(http)).OrBadRequest();
        await api.ConsumeChallengeAsync(http, cmd.Challenge, Auth.revokeAllTokensPurpose, cmd.Kind);
        Auth.revokeAllTokens(cmd, caller).OrFail();
        await api.Store.WriteAsync(async tx =>
        {
            await tx.RevokeAllTokensAsync(caller.KeyId, http.RequestAborted);
            return 0;
        }, http.RequestAborted);
        return Handler.Empty.Value;
    }

    // ------------------------------------------------------------------ namespaces

    private static Task<object> GetDefault(Api api, HttpContext http) =>
        api.Store.ReadAsync<object>(async tx =>
        {
            var caller = await api.AuthenticateAsync(http, tx);
            var found = await tx.DefaultNamespaceOfAsync(caller.KeyId, http.RequestAborted)
                ?? throw new ApiFailure(ApiErrorModule.notFound("no default namespace yet"));
            return new DefaultNamespaceResponse(found.Item1.NamespaceId.Wire, found.Item1.Kind.Wire);
        }, http.RequestAborted);

    private static async Task<object> EnsureDefault(Api api, HttpContext http)
    {
        var body = await Api.RawBodyAsync(http);
        return await api.Store.WriteAsync<object>(async tx =>
        {
            var ct = http.RequestAborted;
            var caller = await api.AuthenticateAsync(http, tx);
            var proposal = Requests.ensureDefaultNamespace(Decode<EnsureDefaultNamespaceRequest>(body)).OrBadRequest();
            await tx.LockIdentityAsync(caller.KeyId, ct); // locks the identity: one default, even under races
            var existing = await tx.DefaultNamespaceOfAsync(caller.KeyId, ct);
            var outcome = Namespaces.ensureDefault(
                caller.KeyId, proposal,
                existing is { } e ? Some(Tuple.Create(e.Item1, e.Item2)) : null,
                await tx.NamespaceExistsAsync(proposal.NamespaceId, ct),
                await tx.CountNamespacesOfAsync(caller.KeyId, ct),
                api.Now).OrFail();
            if (outcome is CreateOutcome.Create create) await tx.InsertNamespaceAsync(create.Item, ct);
            return Namespaces.ensureDefaultResponse(outcome);
        }, http.RequestAborted);
    }

    private static Task<object> Mine(Api api, HttpContext http) =>
        api.Store.ReadAsync<object>(async tx =>
        {
            var caller = await api.AuthenticateAsync(http, tx);
            var all = await tx.NamespacesOfAsync(caller.KeyId, http.RequestAborted);
            return Namespaces.mine(all.ToFSharpList());
        }, http.RequestAborted);

    private static async Task<object> CreateShared(Api api, HttpContext http)
    {
        var body = await Api.RawBodyAsync(http);
        return await api.Store.WriteAsync<object>(async tx =>
        {
            var ct = http.RequestAborted;
            var caller = await api.AuthenticateAsync(http, tx);
            var proposal = Requests.createSharedNamespace(Decode<CreateSharedNamespaceRequest>(body)).OrBadRequest();
            await tx.LockIdentityAsync(caller.KeyId, ct); // locks the identity for the namespace count
            var existing = await tx.GetNamespaceAsync(proposal.NamespaceId, ct);
            var existingPair = existing is null
                ? null
                : Some(Tuple.Create(existing, Opt(await tx.GetMembershipAsync(existing.NamespaceId, caller.KeyId, ct))));
            var outcome = Namespaces.createShared(
                caller.KeyId, proposal, existingPair, await tx.CountNamespacesOfAsync(caller.KeyId, ct), api.Now).OrFail();
            if (outcome is CreateOutcome.Create create) await tx.InsertNamespaceAsync(create.Item, ct);
            return new CreateSharedNamespaceResponse(proposal.NamespaceId.Wire, NamespaceKind.Shared.Wire, outcome.IsCreate);
        }, http.RequestAborted);
    }

    private static Task<object> Members(Api api, HttpContext http) =>
        api.Store.ReadAsync<object>(async tx =>
        {
            var (_, ns, _) = await Member(api, http, tx);
            return Namespaces.members(ns, (await tx.MembersAsync(ns, http.RequestAborted)).ToFSharpList());
        }, http.RequestAborted);

    private static Task<object> WrappedDek(Api api, HttpContext http) =>
        api.Store.ReadAsync<object>(async tx =>
        {
            var caller = await api.AuthenticateAsync(http, tx);
            var ns = Route<NamespaceIdKind>(http, "namespaceId");
            var keyId = Route<KeyIdKind>(http, "keyId");
            var membership = await tx.GetMembershipAsync(ns, caller.KeyId, http.RequestAborted);
            return Namespaces.wrappedDek(Opt(membership), keyId).OrFail();
        }, http.RequestAborted);

    /// <summary>Authenticates, reads the path namespace and requires the caller to be a member (403).</summary>
    public static async Task<(RegisteredIdentity Caller, NamespaceId Namespace, Membership Membership)> Member(Api api, HttpContext http, Store.StoreTx tx)
    {
        var caller = await api.AuthenticateAsync(http, tx);
        var ns = Route<NamespaceIdKind>(http, "namespaceId");
        var membership = Namespaces.requireMember(Opt(await tx.GetMembershipAsync(ns, caller.KeyId, http.RequestAborted))).OrFail();
        return (caller, ns, membership);
    }

    /// <summary>Strictly decodes a body read earlier (400 when malformed).</summary>
    public static T Decode<T>(byte[] body)
    {
        var decoded = BitBoxSync.Protocol.Wire.Json.decodeRequest<T>(body);
        return decoded.IsOk ? decoded.ResultValue : throw ApiFailure.BadRequest(decoded.ErrorValue);
    }

    public static FSharpList<T> List<T>(IEnumerable<T> items) => ListModule.OfSeq(items);
}
