using BitBoxSync.Protocol.Wire;
using Microsoft.AspNetCore.Http;
using static BitBoxSync.Server.Interop;
using static BitBoxSync.Server.Endpoints.ApiRoutes;

namespace BitBoxSync.Server.Endpoints;

/// <summary>Invites and join requests (docs/protocol.md §7.12–§7.18).</summary>
internal static class SharingRoutes
{
    public static async Task<object> CreateInvite(Api api, HttpContext http)
    {
        var caller = await api.AuthenticateAsync(http);
        var ns = Route<NamespaceIdKind>(http, "namespaceId");
        var body = await Api.RawBodyAsync(http);
        // Older Go clients send maxPending and sign the legacy 80-byte action fields
        // (docs/protocol.md, "Legacy create-invite layout").
        var cmd = Api.HasField(body, "maxPending")
            ? Requests.createInviteLegacy(Decode<LegacyCreateNamespaceInviteRequest>(body)).OrBadRequest()
            : Requests.createInvite(Decode<CreateNamespaceInviteRequest>(body)).OrBadRequest();
        await api.ConsumeChallengeAsync(http, cmd.Challenge, Sharing.createInvitePurpose(ns, cmd), cmd.Kind);
        return await api.Store.WriteAsync<object>(async tx =>
        {
            var ct = http.RequestAborted;
            var stored = await tx.LockNamespaceAsync(ns, ct);
            var membership = await tx.GetMembershipAsync(ns, caller.KeyId, ct);
            if (stored is null || membership is null)
                throw new ApiFailure(ApiErrorModule.forbidden("not a member of this namespace"));
            var invites = await tx.InvitesOfAsync(ns, ct);
            var invite = Sharing.createInvite(
                api.SharingSettings, caller, stored, Some(membership), cmd,
                await tx.GetInviteAsync(cmd.InviteId, ct) is not null,
                invites.Count(i => Sharing.isActive(i, api.Now)),
                api.Now).OrFail();
            await tx.InsertInviteAsync(invite, ct);
            return Sharing.createInviteResponse(invite);
        }, http.RequestAborted);
    }

    public static Task<object> ListInvites(Api api, HttpContext http) =>
        api.Store.ReadAsync<object>(async tx =>
        {
            var (_, ns, _) = await Member(api, http, tx);
            var invites = await tx.InvitesOfAsync(ns, http.RequestAborted);
            var pending = await tx.PendingJoinRequestsOfAsync(ns, http.RequestAborted);
            return Sharing.list(ns, invites.ToFSharpList(), pending.ToFSharpList(), api.Now);
        }, http.RequestAborted);

    public static Task<object> RevokeInvite(Api api, HttpContext http) =>
        api.Store.WriteAsync<object>(async tx =>
        {
            var ct = http.RequestAborted;
            var caller = await api.AuthenticateAsync(http, tx);
            var ns = Route<NamespaceIdKind>(http, "namespaceId");
            var inviteId = Route<InviteIdKind>(http, "inviteId");
            await tx.LockNamespaceAsync(ns, ct);
            var membership = await tx.GetMembershipAsync(ns, caller.KeyId, ct);
            var invite = await tx.GetInviteAsync(inviteId, ct);
            if (invite is not null && !invite.NamespaceId.Equals(ns)) invite = null;
            var revoked = Sharing.revoke(Opt(membership), Opt(invite), api.Now).OrFail();
            await tx.UpdateInviteAsync(revoked, ct);
            return new RevokeNamespaceInviteResponse(ns.Wire, inviteId.Wire, true);
        }, http.RequestAborted);

    public static async Task<object> Submit(Api api, HttpContext http)
    {
        var body = await Api.RawBodyAsync(http);
        return await api.Store.WriteAsync<object>(async tx =>
        {
            var ct = http.RequestAborted;
            var caller = await api.AuthenticateAsync(http, tx);
            var ns = Route<NamespaceIdKind>(http, "namespaceId");
            var inviteId = Route<InviteIdKind>(http, "inviteId");
            var raw = Decode<SubmitNamespaceJoinRequestRequest>(body);
            var cmd = Requests.submitJoinRequest(raw).OrBadRequest();
            await tx.LockNamespaceAsync(ns, ct);
            await tx.LockIdentityAsync(caller.KeyId, ct); // locks the requester for its pending count
            var invite = await tx.GetInviteAsync(inviteId, ct);
            var outcome = Sharing.submit(
                api.SharingSettings, caller.KeyId, ns, inviteId, cmd, raw.JoinRequest, Opt(invite),
                await tx.GetMembershipAsync(ns, caller.KeyId, ct) is not null,
                (await tx.PendingJoinRequestsOfRequesterAsync(caller.KeyId, ct)).ToFSharpList(),
                await tx.CountPendingForInviteAsync(inviteId, api.Now.ToUnixTimeSeconds(), ct),
                api.Now).OrFail();
            switch (outcome)
            {
                case SubmitOutcome.Store store:
                    if (store.replaces is { } replaced)
                        await tx.DeleteJoinRequestAsync(ns, caller.KeyId, replaced.Value, ct);
                    await tx.InsertJoinRequestAsync(store.request, ct);
                    return Sharing.submitResponse(store.request);
                case SubmitOutcome.Existing existing:
                    return Sharing.submitResponse(existing.Item);
                default:
                    throw new InvalidOperationException("unknown submit outcome");
            }
        }, http.RequestAborted);
    }

    public static Task<object> ListRequests(Api api, HttpContext http) =>
        api.Store.ReadAsync<object>(async tx =>
        {
            var (_, ns, _) = await Member(api, http, tx);
            var pending = await tx.PendingJoinRequestsOfAsync(ns, http.RequestAborted);
            return Sharing.listRequests(ns, pending.ToFSharpList(), api.Now);
        }, http.RequestAborted);

    public static async Task<object> Approve(Api api, HttpContext http)
    {
        var body = await Api.RawBodyAsync(http);
        return await api.Store.WriteAsync<object>(async tx =>
        {
            var ct = http.RequestAborted;
            var caller = await api.AuthenticateAsync(http, tx);
            var ns = Route<NamespaceIdKind>(http, "namespaceId");
            var requester = Route<KeyIdKind>(http, "keyId");
            var hash = Route<JoinRequestHashKind>(http, "joinRequestHash");
            var cmd = Requests.approveJoinRequest(Decode<ApproveNamespaceJoinRequestRequest>(body)).OrBadRequest();
            await tx.LockNamespaceAsync(ns, ct);
            await tx.LockIdentityAsync(requester, ct); // locks the requester for its namespace count
            var approver = await tx.GetMembershipAsync(ns, caller.KeyId, ct);
            var request = await tx.GetJoinRequestAsync(ns, requester, hash, ct);
            var invite = request is null ? null : await tx.GetInviteAsync(request.InviteId, ct);
            var outcome = Sharing.approve(
                Opt(approver), Opt(request), Opt(invite), cmd,
                await tx.GetMembershipAsync(ns, requester, ct) is not null,
                (await tx.MembersAsync(ns, ct)).Count,
                await tx.CountNamespacesOfAsync(requester, ct),
                api.Now).OrFail();
            await tx.InsertMembershipAsync(outcome.Membership, ct);
            await tx.SetJoinRequestStatusAsync(outcome.Request, ct);
            await tx.UpdateInviteAsync(outcome.Invite, ct);
            return new ApproveNamespaceJoinRequestResponse(ns.Wire, outcome.Membership.Kind.Wire, requester.Wire, hash.Wire);
        }, http.RequestAborted);
    }

    public static Task<object> Reject(Api api, HttpContext http) =>
        api.Store.WriteAsync<object>(async tx =>
        {
            var ct = http.RequestAborted;
            var caller = await api.AuthenticateAsync(http, tx);
            var ns = Route<NamespaceIdKind>(http, "namespaceId");
            var requester = Route<KeyIdKind>(http, "keyId");
            var hash = Route<JoinRequestHashKind>(http, "joinRequestHash");
            await tx.LockNamespaceAsync(ns, ct);
            var membership = await tx.GetMembershipAsync(ns, caller.KeyId, ct);
            var request = await tx.GetJoinRequestAsync(ns, requester, hash, ct);
            var rejected = Sharing.reject(Opt(membership), Opt(request)).OrFail();
            await tx.SetJoinRequestStatusAsync(rejected, ct);
            return new RejectNamespaceJoinRequestResponse(ns.Wire, requester.Wire, hash.Wire, true);
        }, http.RequestAborted);
}
