namespace BitBoxSync;

/// <summary>
/// The holder of an identity's private keys (docs/protocol.md §9.1). Every signing method receives the
/// meaning of what is signed and builds the canonical payload itself, so that a hardware device
/// can show the user what is being approved. Methods may prompt the user or a device and may fail
/// (user abort, device absent): the current operation then fails.
/// </summary>
public interface IIdentity
{
    /// <summary>The auth-key kind; <c>keystore</c>.</summary>
    string Kind { get; }

    /// <summary>The 32-byte Ed25519 auth public key. The key ID is its SHA-256.</summary>
    ReadOnlyMemory<byte> AuthPublicKey { get; }

    /// <summary>The 32-byte X25519 wrap public key that namespace DEKs are wrapped to.</summary>
    ReadOnlyMemory<byte> WrapPublicKey { get; }

    /// <summary>Signs the 148-byte login intent for a 32-byte challenge.</summary>
    ValueTask<byte[]> SignLoginIntentAsync(ReadOnlyMemory<byte> challenge, CancellationToken cancellationToken = default);

    /// <summary>Signs the refresh intent for a 32-byte challenge.</summary>
    ValueTask<byte[]> SignRefreshIntentAsync(ReadOnlyMemory<byte> challenge, CancellationToken cancellationToken = default);

    /// <summary>Signs the sensitive-action intent that revokes every session (empty action fields).</summary>
    ValueTask<byte[]> SignRevokeAllTokensIntentAsync(ReadOnlyMemory<byte> challenge, CancellationToken cancellationToken = default);

    /// <summary>Signs the sensitive-action intent that creates an invite (namespace 16 bytes, invite 16 bytes, server-secret hash 32 bytes, expiry in Unix seconds, accepted-member limit 0–10).</summary>
    ValueTask<byte[]> SignCreateNamespaceInviteIntentAsync(ReadOnlyMemory<byte> challenge, ReadOnlyMemory<byte> namespaceId, ReadOnlyMemory<byte> inviteId,
        ReadOnlyMemory<byte> inviteServerSecretHash, long expiresAt, int maxAccepted, CancellationToken cancellationToken = default);

    /// <summary>Signs the join-request payload for a namespace and invite on a server (canonical origin), expiring at <paramref name="expiresAt"/> (Unix seconds).</summary>
    ValueTask<byte[]> SignNamespaceJoinRequestIntentAsync(ReadOnlyMemory<byte> namespaceId, ReadOnlyMemory<byte> inviteId, string serverOrigin,
        long expiresAt, CancellationToken cancellationToken = default);

    /// <summary>An anti-abuse attestation for a challenge; identities that cannot attest throw.</summary>
    ValueTask<byte[]> AttestAsync(ReadOnlyMemory<byte> challenge, CancellationToken cancellationToken = default);

    /// <summary>Unwraps a 97-byte wrapped DEK bound to <paramref name="namespaceId"/>; a DEK bound to another namespace is refused.</summary>
    ValueTask<byte[]> UnwrapNamespaceDekAsync(ReadOnlyMemory<byte> namespaceId, ReadOnlyMemory<byte> wrappedDek, CancellationToken cancellationToken = default);
}
