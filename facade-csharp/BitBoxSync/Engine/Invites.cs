using BitBoxSync.Protocol;
using Microsoft.FSharp.Core;

namespace BitBoxSync;

/// <summary>
/// An invite to a shared namespace, as shown in a QR code (docs/protocol.md §5.1, §5.4). Holds the invite
/// secret: the inviter must keep it to approve join requests; anyone holding it can ask to join
/// until it expires. Never contains the namespace key.
/// </summary>
/// <param name="Version">Invite format version, 1.</param>
/// <param name="ServerOrigin">The server's canonical public origin, e.g. <c>https://sync.example</c>.</param>
/// <param name="NamespaceId">The shared namespace.</param>
/// <param name="InviteId">The invite's ID (32 lowercase hex).</param>
/// <param name="ExpiresAt">Expiry, Unix seconds.</param>
/// <param name="InviteSecret">The invite secret (unpadded base64url of 32 bytes). A secret: never log it.</param>
public sealed record Invite(int Version, string ServerOrigin, string NamespaceId, string InviteId, long ExpiresAt, string InviteSecret)
{
    /// <summary>A summary without the secret (safe to log); <see cref="InviteUri.Format"/> gives the shareable URI.</summary>
    public override string ToString() => $"Invite {{ NamespaceId = {NamespaceId}, InviteId = {InviteId}, ExpiresAt = {ExpiresAt} }}";

    internal InviteToken ToToken()
    {
        var r = Protocol.InviteUri.createToken(Version, ServerOrigin, NamespaceId, InviteId, ExpiresAt, InviteSecret);
        return r.IsOk ? r.ResultValue : throw new ArgumentException("invalid invite: " + r.ErrorValue.Message);
    }

    /// <summary>The token for a join request or an approval: the origin must already be canonical (docs/engine.md §8.5, §8.6).</summary>
    internal InviteToken ToCanonicalToken()
    {
        if (ServerOriginModule.parseCanonical(ServerOrigin ?? "").IsError)
            throw new ArgumentException("invite server origin must be canonical");
        return ToToken();
    }

    internal static Invite Of(InviteToken t) =>
        new(t.Version, t.ServerOrigin.Value, t.NamespaceId.Wire, t.InviteId.Wire, t.ExpiresAt, t.InviteSecret.Wire);
}

/// <summary>The QR/copy form of invites: <c>bitboxsync://join-namespace?v=1&amp;s=…&amp;n=…&amp;i=…&amp;e=…#k=…</c>.</summary>
public static class InviteUri
{
    /// <summary>The canonical URI of an invite.</summary>
    /// <exception cref="ArgumentException">The invite is not valid (version, origin, IDs, expiry, secret).</exception>
    public static string Format(Invite invite)
    {
        ArgumentNullException.ThrowIfNull(invite);
        return Protocol.InviteUri.format(invite.ToToken());
    }

    /// <summary>Parses an invite URI (scanned or pasted), with the reference client's rules.</summary>
    /// <exception cref="FormatException">The URI is not a valid invite; the message says why.</exception>
    public static Invite Parse(string uri)
    {
        ArgumentNullException.ThrowIfNull(uri);
        var r = Protocol.InviteUri.parse(uri);
        return r.IsOk ? Invite.Of(r.ResultValue) : throw new FormatException("invalid invite URI: " + r.ErrorValue.Message);
    }
}

/// <summary>How an invite is created.</summary>
public sealed class InviteOptions
{
    /// <summary>The server's canonical public origin (as the server is configured), e.g. <c>https://sync.example</c> (required).</summary>
    public string? ServerOrigin { get; set; }

    /// <summary>A caller-chosen invite ID (32 lowercase hex); random when null.</summary>
    public string? InviteId { get; set; }

    /// <summary>A caller-chosen secret (unpadded base64url of 32 bytes); random when null.</summary>
    public string? InviteSecret { get; set; }

    /// <summary>Lifetime (default 10 minutes, at most 1 hour).</summary>
    public TimeSpan Ttl { get; set; }

    /// <summary>How many join requests may be approved through it (default and maximum 10).</summary>
    public int MaxAccepted { get; set; }
}

/// <summary>How a join request is submitted.</summary>
public sealed class JoinRequestOptions
{
    /// <summary>Lifetime (default and maximum 10 minutes, never past the invite's expiry).</summary>
    public TimeSpan Ttl { get; set; }

    /// <summary>An explicit expiry (Unix seconds) instead of <see cref="Ttl"/>.</summary>
    public long? ExpiresAt { get; set; }
}
