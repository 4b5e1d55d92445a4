using BitBoxSync.Protocol;
using Keys = BitBoxSync.Protocol.DummyKeystore;

namespace BitBoxSync;

/// <summary>
/// A software identity derived deterministically from a label (docs/protocol.md §9.3).
/// <b>TEST AND DEMO ONLY</b>: anyone who knows the label has the private keys. Never use it for
/// real data; production identities live on a hardware device.
/// </summary>
public sealed class DummyKeystore : IIdentity, IDisposable
{
    private readonly Keys _keys;

    private DummyKeystore(Keys keys)
    {
        _keys = keys;
        AuthPublicKey = Bin.toArray(keys.AuthPublicKey);
        WrapPublicKey = Bin.toArray(keys.WrapPublicKey);
        KeyId = keys.KeyId.Wire;
    }

    /// <summary>Derives the identity of a label, e.g. <c>demo-alice</c>. TEST AND DEMO ONLY.</summary>
    /// <exception cref="ArgumentException">The label is empty.</exception>
    public static DummyKeystore FromLabel(string label)
    {
        ArgumentException.ThrowIfNullOrEmpty(label);
        return new DummyKeystore(Keys.FromLabel(label));
    }

    /// <inheritdoc />
    public string Kind => "keystore";

    /// <inheritdoc />
    public ReadOnlyMemory<byte> AuthPublicKey { get; }

    /// <inheritdoc />
    public ReadOnlyMemory<byte> WrapPublicKey { get; }

    /// <summary>The key ID (64 lowercase hex).</summary>
    public string KeyId { get; }

    private static Bin<K> Arg<K>(ReadOnlyMemory<byte> bytes, string name) where K : IBinaryKind
    {
        var r = Bin.ofBytesAs<K>(name, bytes.Span);
        return r.IsOk ? r.ResultValue : throw new ArgumentException(r.ErrorValue.Message, name);
    }

    private static ValueTask<byte[]> Done<K>(Bin<K> value) where K : IBinaryKind => ValueTask.FromResult(Bin.toArray(value));

    /// <inheritdoc />
    public ValueTask<byte[]> SignLoginIntentAsync(ReadOnlyMemory<byte> challenge, CancellationToken cancellationToken = default) =>
        Done(_keys.SignLoginIntent(Arg<ChallengeKind>(challenge, "challenge")));

    /// <inheritdoc />
    public ValueTask<byte[]> SignRefreshIntentAsync(ReadOnlyMemory<byte> challenge, CancellationToken cancellationToken = default) =>
        Done(_keys.SignRefreshIntent(Arg<ChallengeKind>(challenge, "challenge")));

    /// <inheritdoc />
    public ValueTask<byte[]> SignRevokeAllTokensIntentAsync(ReadOnlyMemory<byte> challenge, CancellationToken cancellationToken = default) =>
        Done(_keys.SignRevokeAllTokensIntent(Arg<ChallengeKind>(challenge, "challenge")));

    /// <inheritdoc />
    public ValueTask<byte[]> SignCreateNamespaceInviteIntentAsync(ReadOnlyMemory<byte> challenge, ReadOnlyMemory<byte> namespaceId, ReadOnlyMemory<byte> inviteId,
        ReadOnlyMemory<byte> inviteServerSecretHash, long expiresAt, int maxAccepted, CancellationToken cancellationToken = default)
    {
        var fields = new CreateInviteFields(
            Arg<NamespaceIdKind>(namespaceId, "namespaceId"), Arg<InviteIdKind>(inviteId, "inviteId"),
            Arg<InviteServerSecretHashKind>(inviteServerSecretHash, "inviteServerSecretHash"), expiresAt, maxAccepted);
        var r = _keys.SignCreateNamespaceInviteIntent(Arg<ChallengeKind>(challenge, "challenge"), fields);
        return r.IsOk ? Done(r.ResultValue) : throw new ArgumentException(r.ErrorValue);
    }

    /// <inheritdoc />
    public ValueTask<byte[]> SignNamespaceJoinRequestIntentAsync(ReadOnlyMemory<byte> namespaceId, ReadOnlyMemory<byte> inviteId, string serverOrigin,
        long expiresAt, CancellationToken cancellationToken = default)
    {
        var origin = ServerOriginModule.parseCanonical(serverOrigin ?? "");
        if (origin.IsError) throw new ArgumentException(origin.ErrorValue.Message, nameof(serverOrigin));
        var r = _keys.SignNamespaceJoinRequestIntent(Arg<NamespaceIdKind>(namespaceId, "namespaceId"), Arg<InviteIdKind>(inviteId, "inviteId"),
            origin.ResultValue, expiresAt);
        return r.IsOk ? Done(r.ResultValue) : throw new ArgumentException(r.ErrorValue);
    }

    /// <inheritdoc />
    public ValueTask<byte[]> AttestAsync(ReadOnlyMemory<byte> challenge, CancellationToken cancellationToken = default) =>
        Done(_keys.Attest(Arg<ChallengeKind>(challenge, "challenge")));

    /// <inheritdoc />
    public ValueTask<byte[]> UnwrapNamespaceDekAsync(ReadOnlyMemory<byte> namespaceId, ReadOnlyMemory<byte> wrappedDek, CancellationToken cancellationToken = default)
    {
        var r = _keys.UnwrapNamespaceDek(Arg<NamespaceIdKind>(namespaceId, "namespaceId"), Arg<WrappedDekKind>(wrappedDek, "wrappedDek"));
        return r.IsOk ? Done(r.ResultValue) : throw new SyncException("unwrap namespace DEK: " + r.ErrorValue.Message);
    }

    /// <inheritdoc />
    public void Dispose() => ((IDisposable)_keys).Dispose();
}
