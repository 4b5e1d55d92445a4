using BitBoxSync.Protocol;
using Keys = BitBoxSync.Protocol.DummyKeystore;

namespace BitBoxSync;

/// <summary>The protocol side of a software identity: signing and unwrapping with the protocol's code.</summary>
internal sealed class KeystoreCore : IDisposable
{
    private readonly Keys _keys;

    public KeystoreCore(Keys keys)
    {
        _keys = keys;
        AuthPublicKey = Bin.toArray(keys.AuthPublicKey);
        WrapPublicKey = Bin.toArray(keys.WrapPublicKey);
        KeyId = keys.KeyId.Wire;
    }

    public ReadOnlyMemory<byte> AuthPublicKey { get; }
    public ReadOnlyMemory<byte> WrapPublicKey { get; }
    public string KeyId { get; }

    private static Bin<K> Arg<K>(ReadOnlyMemory<byte> bytes, string name) where K : IBinaryKind
    {
        var r = Bin.ofBytesAs<K>(name, bytes.Span);
        return r.IsOk ? r.ResultValue : throw new ArgumentException(r.ErrorValue.Message, name);
    }

    private static ValueTask<byte[]> Done<K>(Bin<K> value) where K : IBinaryKind => ValueTask.FromResult(Bin.toArray(value));

    public ValueTask<byte[]> SignLogin(ReadOnlyMemory<byte> challenge) => Done(_keys.SignLoginIntent(Arg<ChallengeKind>(challenge, "challenge")));

    public ValueTask<byte[]> SignRefresh(ReadOnlyMemory<byte> challenge) => Done(_keys.SignRefreshIntent(Arg<ChallengeKind>(challenge, "challenge")));

    public ValueTask<byte[]> SignRevokeAllTokens(ReadOnlyMemory<byte> challenge) =>
        Done(_keys.SignRevokeAllTokensIntent(Arg<ChallengeKind>(challenge, "challenge")));

    public ValueTask<byte[]> SignCreateNamespaceInvite(ReadOnlyMemory<byte> challenge, ReadOnlyMemory<byte> namespaceId, ReadOnlyMemory<byte> inviteId,
        ReadOnlyMemory<byte> inviteServerSecretHash, long expiresAt, int maxAccepted)
    {
        var fields = new CreateInviteFields(
            Arg<NamespaceIdKind>(namespaceId, "namespaceId"), Arg<InviteIdKind>(inviteId, "inviteId"),
            Arg<InviteServerSecretHashKind>(inviteServerSecretHash, "inviteServerSecretHash"), expiresAt, maxAccepted);
        var r = _keys.SignCreateNamespaceInviteIntent(Arg<ChallengeKind>(challenge, "challenge"), fields);
        return r.IsOk ? Done(r.ResultValue) : throw new ArgumentException(r.ErrorValue);
    }

    public ValueTask<byte[]> SignNamespaceJoinRequest(ReadOnlyMemory<byte> namespaceId, ReadOnlyMemory<byte> inviteId, string serverOrigin, long expiresAt)
    {
        var origin = ServerOriginModule.parseCanonical(serverOrigin ?? "");
        if (origin.IsError) throw new ArgumentException(origin.ErrorValue.Message, nameof(serverOrigin));
        var r = _keys.SignNamespaceJoinRequestIntent(Arg<NamespaceIdKind>(namespaceId, "namespaceId"), Arg<InviteIdKind>(inviteId, "inviteId"),
            origin.ResultValue, expiresAt);
        return r.IsOk ? Done(r.ResultValue) : throw new ArgumentException(r.ErrorValue);
    }

    public ValueTask<byte[]> Attest(ReadOnlyMemory<byte> challenge) => Done(_keys.Attest(Arg<ChallengeKind>(challenge, "challenge")));

    public ValueTask<byte[]> UnwrapNamespaceDek(ReadOnlyMemory<byte> namespaceId, ReadOnlyMemory<byte> wrappedDek)
    {
        var r = _keys.UnwrapNamespaceDek(Arg<NamespaceIdKind>(namespaceId, "namespaceId"), Arg<WrappedDekKind>(wrappedDek, "wrappedDek"));
        return r.IsOk ? Done(r.ResultValue) : throw new SyncException("unwrap namespace DEK: " + r.ErrorValue.Message);
    }

    public void Dispose() => ((IDisposable)_keys).Dispose();
}

/// <summary>
/// An identity whose private keys are in this process (<see cref="LocalKeystore"/>,
/// <see cref="DummyKeystore"/>): signs the protocol's intents and unwraps namespace keys with the
/// protocol's own code. Dispose it to drop the keys.
/// </summary>
public abstract class SoftwareKeystore : IIdentity, IDisposable
{
    private readonly KeystoreCore _core;

    private protected SoftwareKeystore(KeystoreCore core) => _core = core;

    /// <inheritdoc />
    public string Kind => "keystore";

    /// <inheritdoc />
    public ReadOnlyMemory<byte> AuthPublicKey => _core.AuthPublicKey;

    /// <inheritdoc />
    public ReadOnlyMemory<byte> WrapPublicKey => _core.WrapPublicKey;

    /// <summary>The key ID (64 lowercase hex): the identity's public name on the server.</summary>
    public string KeyId => _core.KeyId;

    /// <inheritdoc />
    public ValueTask<byte[]> SignLoginIntentAsync(ReadOnlyMemory<byte> challenge, CancellationToken cancellationToken = default) => _core.SignLogin(challenge);

    /// <inheritdoc />
    public ValueTask<byte[]> SignRefreshIntentAsync(ReadOnlyMemory<byte> challenge, CancellationToken cancellationToken = default) => _core.SignRefresh(challenge);

    /// <inheritdoc />
    public ValueTask<byte[]> SignRevokeAllTokensIntentAsync(ReadOnlyMemory<byte> challenge, CancellationToken cancellationToken = default) =>
        _core.SignRevokeAllTokens(challenge);

    /// <inheritdoc />
    public ValueTask<byte[]> SignCreateNamespaceInviteIntentAsync(ReadOnlyMemory<byte> challenge, ReadOnlyMemory<byte> namespaceId, ReadOnlyMemory<byte> inviteId,
        ReadOnlyMemory<byte> inviteServerSecretHash, long expiresAt, int maxAccepted, CancellationToken cancellationToken = default) =>
        _core.SignCreateNamespaceInvite(challenge, namespaceId, inviteId, inviteServerSecretHash, expiresAt, maxAccepted);

    /// <inheritdoc />
    public ValueTask<byte[]> SignNamespaceJoinRequestIntentAsync(ReadOnlyMemory<byte> namespaceId, ReadOnlyMemory<byte> inviteId, string serverOrigin,
        long expiresAt, CancellationToken cancellationToken = default) =>
        _core.SignNamespaceJoinRequest(namespaceId, inviteId, serverOrigin, expiresAt);

    /// <inheritdoc />
    public ValueTask<byte[]> AttestAsync(ReadOnlyMemory<byte> challenge, CancellationToken cancellationToken = default) => _core.Attest(challenge);

    /// <inheritdoc />
    public ValueTask<byte[]> UnwrapNamespaceDekAsync(ReadOnlyMemory<byte> namespaceId, ReadOnlyMemory<byte> wrappedDek, CancellationToken cancellationToken = default) =>
        _core.UnwrapNamespaceDek(namespaceId, wrappedDek);

    /// <summary>Names the identity by its key ID; never shows a private key.</summary>
    public override string ToString() => $"{GetType().Name}(keyId={KeyId})";

    /// <summary>Drops the private keys (zeroed where this library holds them).</summary>
    public virtual void Dispose()
    {
        _core.Dispose();
        GC.SuppressFinalize(this);
    }
}

/// <summary>
/// A software identity derived deterministically from a label (docs/protocol.md §9.3).
/// <b>TEST AND DEMO ONLY</b>: anyone who knows the label has the private keys. Never use it for
/// real data: use <see cref="LocalKeystore"/> (random keys, protected at rest) or a hardware device.
/// </summary>
public sealed class DummyKeystore : SoftwareKeystore
{
    private DummyKeystore(Keys keys) : base(new KeystoreCore(keys)) { }

    /// <summary>Derives the identity of a label, e.g. <c>demo-alice</c>. TEST AND DEMO ONLY.</summary>
    /// <exception cref="ArgumentException">The label is empty.</exception>
    public static DummyKeystore FromLabel(string label)
    {
        ArgumentException.ThrowIfNullOrEmpty(label);
        return new DummyKeystore(Keys.FromLabel(label));
    }
}
