using BitBoxSync.Core;
using BitBoxSync.Protocol;
using BitBoxSync.Protocol.Wire;
using Microsoft.FSharp.Core;

namespace BitBoxSync;

/// <content>Sharing: invites, join requests, approvals.</content>
public sealed partial class SyncEngine
{
    // ------------------------------------------------------------------ sharing

    /// <summary>
    /// Joins a namespace after a join request was approved: fetches and unwraps this identity's
    /// wrapped DEK (always refetched) and caches it. Passes also join listed namespaces on their own.
    /// </summary>
    public Task<SyncNamespace> JoinNamespaceAsync(string namespaceId, CancellationToken cancellationToken = default)
    {
        ThrowIfClosed();
        var ns = ParseNamespaceId(namespaceId, nameof(namespaceId));
        return AuthenticatedAsync(async token =>
        {
            // The kind comes from the namespace list, so the handle can create invites at once (docs/engine.md §12.20).
            var kind = (await ListedNamespacesAsync(token, cancellationToken)).FirstOrDefault(l => l.NamespaceId.Equals(ns))?.Kind;
            var row = await JoinAsync(token, ns, kind, cancellationToken);
            return new SyncNamespace(this, ns.Wire, row.Kind is null ? null : row.Kind.Value.Wire);
        }, mayPrompt: true, cancellationToken);
    }

    /// <summary>
    /// Asks to join the namespace of a scanned invite (docs/engine.md §8.5): signs a join request bound to the
    /// invite, the server origin and an expiry, with a proof that it holds the invite secret. After
    /// a member approves, call <see cref="JoinNamespaceAsync"/> (or let a pass join it).
    /// </summary>
    /// <exception cref="ArgumentException">The invite is malformed.</exception>
    /// <exception cref="SyncException">The invite has expired, or the expiry options are out of range.</exception>
    public async Task<SubmitNamespaceJoinRequestResponse> SubmitJoinRequestAsync(Invite invite, JoinRequestOptions? options = null, CancellationToken cancellationToken = default)
    {
        ThrowIfClosed();
        ArgumentNullException.ThrowIfNull(invite);
        var token = invite.ToCanonicalToken();
        var expiry = Core.Sharing.joinRequestExpiry(token, options?.ExpiresAt is { } e ? FSharpOption<long>.Some(e) : FSharpOption<long>.None,
            options?.Ttl ?? TimeSpan.Zero, Now);
        if (expiry.IsError) throw new SyncException(expiry.ErrorValue);
        var expiresAt = expiry.ResultValue;
        var signature = await _identity.SignNamespaceJoinRequestIntentAsync(Bin.toArray(token.NamespaceId), Bin.toArray(token.InviteId),
            token.ServerOrigin.Value, expiresAt, cancellationToken);
        var auth = Bin.ofBytes<AuthPublicKeyKind>(_identity.AuthPublicKey.ToArray()).ResultValue;
        var wrap = Bin.ofBytes<WrapPublicKeyKind>(_identity.WrapPublicKey.ToArray()).ResultValue;
        var payload = JoinRequests.payload(new JoinRequestFields(token.NamespaceId, token.InviteId, token.ServerOrigin, IdentityKind.Keystore,
            _keyId, auth, wrap, expiresAt));
        var request = new SubmitNamespaceJoinRequestRequest(
            InviteSecrets.serverSecret(token.InviteSecret).Wire,
            new NamespaceJoinRequest(1, token.NamespaceId.Wire, token.InviteId.Wire, token.ServerOrigin.Value, "keystore", _keyId.Wire,
                auth.Wire, wrap.Wire, expiresAt, Convert.ToHexStringLower(signature), InviteSecrets.proof(token.InviteSecret, payload).Wire));
        return await AuthenticatedAsync(t => _client.SubmitNamespaceJoinRequestAsync(t, token.NamespaceId.Wire, token.InviteId.Wire, request, cancellationToken),
            mayPrompt: true, cancellationToken);
    }

    internal async Task<Invite> CreateInviteAsync(string namespaceId, InviteOptions options, CancellationToken ct)
    {
        ThrowIfClosed();
        ArgumentNullException.ThrowIfNull(options);
        var parameters = Core.Sharing.inviteParameters(options.Ttl, options.MaxAccepted, Now);
        if (parameters.IsError) throw new ArgumentException(parameters.ErrorValue, nameof(options));
        var origin = ServerOriginModule.canonicalize(options.ServerOrigin ?? "");
        if (origin.IsError) throw new ArgumentException("server origin: " + origin.ErrorValue.Message, nameof(options));
        var ns = ParseNamespaceId(namespaceId, nameof(namespaceId));
        // A default namespace (or one of unknown kind) fails here, before any challenge.
        await EnsureReadyAsync(ns, NamespaceKind.Shared, () => TokenAsync(true, ct), ct);
        var inviteId = options.InviteId is null
            ? Bin.ofBytes<InviteIdKind>(_options.RandomBytes(16)).ResultValue
            : Bin.parse<InviteIdKind>(options.InviteId) is { IsOk: true } id ? id.ResultValue : throw new ArgumentException("invalid invite ID", nameof(options));
        var secret = options.InviteSecret is null
            ? Bin.ofBytes<InviteSecretKind>(_options.RandomBytes(32)).ResultValue
            : Bin.parse<InviteSecretKind>(options.InviteSecret) is { IsOk: true } sec ? sec.ResultValue : throw new ArgumentException("invalid invite secret", nameof(options));
        var p = parameters.ResultValue;
        var serverHash = InviteSecrets.serverSecretHash(InviteSecrets.serverSecret(secret));
        var fieldsHash = ActionFields.hash(ActionFields.createInvite(new CreateInviteFields(ns, inviteId, serverHash, p.ExpiresAt, p.MaxAccepted)));
        await AuthenticatedAsync(async token =>
        {
            var (challenge, bytes) = await SensitiveChallengeAsync("create-namespace-invite", fieldsHash, ct);
            var signature = await _identity.SignCreateNamespaceInviteIntentAsync(bytes, Bin.toArray(ns), Bin.toArray(inviteId),
                Bin.toArray(serverHash), p.ExpiresAt, p.MaxAccepted, ct);
            var response = await _client.CreateNamespaceInviteAsync(token, ns.Wire, new CreateNamespaceInviteRequest("keystore", _keyId.Wire, inviteId.Wire,
                serverHash.Wire, challenge, Convert.ToHexStringLower(signature), p.ExpiresAt, p.MaxAccepted), ct);
            if (response.ExpiresAt != p.ExpiresAt) throw new SyncProtocolException("create invite response expiry mismatch");
            if (response.MaxAccepted != p.MaxAccepted) throw new SyncProtocolException("create invite response maxAccepted mismatch");
            return 0;
        }, mayPrompt: true, ct);
        return new Invite(1, origin.ResultValue.Value, ns.Wire, inviteId.Wire, p.ExpiresAt, secret.Wire);
    }

    internal async Task ApproveJoinRequestAsync(string namespaceId, Invite invite, NamespaceJoinRequestEntry entry, CancellationToken ct)
    {
        ThrowIfClosed();
        ArgumentNullException.ThrowIfNull(invite);
        ArgumentNullException.ThrowIfNull(entry);
        var ns = ParseNamespaceId(namespaceId, nameof(namespaceId));
        var verified = Core.Sharing.verifyJoinRequest(ns, invite.ToCanonicalToken(), entry.JoinRequestHash ?? "", entry.JoinRequest, Now);
        if (verified.IsError) throw new SyncException("join request refused: " + verified.ErrorValue);
        var v = verified.ResultValue;
        var row = await EnsureReadyAsync(ns, NamespaceKind.Shared, () => TokenAsync(true, ct), ct);
        var wrapped = DekWrap.wrap(v.WrapPublicKey, ns, row.Dek!.Value, _options.RandomBytes(32));
        if (wrapped.IsError) throw new SyncException("wrap DEK: " + wrapped.ErrorValue.Message);
        await AuthenticatedAsync(token => _client.ApproveNamespaceJoinRequestAsync(token, ns.Wire, v.RequesterKeyId.Wire, v.Hash.Wire,
            new ApproveNamespaceJoinRequestRequest(v.ServerSecret.Wire, wrapped.ResultValue.Wire), ct), mayPrompt: true, ct);
    }

    internal Task<T> WithTokenAsync<T>(Func<SyncClient, string, Task<T>> call, CancellationToken ct)
    {
        ThrowIfClosed();
        return AuthenticatedAsync(token => call(_client, token), mayPrompt: true, ct);
    }
}
