namespace BitBoxSync.Storage;

/// <summary>
/// One identity's session state (docs/engine.md §2.3), one per key ID. Stored by an <see cref="IStore"/>.
/// The access token is a secret: stores must not log it.
/// </summary>
public sealed record IdentityRecord
{
    /// <summary>The key ID (64 lowercase hex).</summary>
    public required string KeyId { get; init; }

    /// <summary>The auth-key kind, <c>keystore</c>.</summary>
    public string Kind { get; init; } = "keystore";

    /// <summary>The bearer token; null when there is none.</summary>
    public string? AccessToken { get; init; }

    /// <summary>The server-reported token expiry; null when unknown or no token.</summary>
    public DateTimeOffset? TokenExpiry { get; init; }

    /// <summary>The cached default namespace ID; null when unknown.</summary>
    public string? DefaultNamespaceId { get; init; }

    /// <summary>Local write time (UTC). A store sets it to now when left at its default.</summary>
    public DateTimeOffset UpdatedAt { get; init; }
}

/// <summary>One cached namespace of one identity (docs/engine.md §2.3).</summary>
public sealed record NamespaceRecord
{
    /// <summary>The identity's key ID.</summary>
    public required string KeyId { get; init; }

    /// <summary>The namespace ID (32 lowercase hex).</summary>
    public required string NamespaceId { get; init; }

    /// <summary><c>default</c> or <c>shared</c>; null only transiently (joined, not yet listed).</summary>
    public string? Kind { get; init; }

    /// <summary>The highest namespace head reconciled locally.</summary>
    public ulong Head { get; init; }

    /// <summary>Hash of the active scope reconciled at <see cref="Head"/>; empty when no collection is registered.</summary>
    public string ActiveScopeHash { get; init; } = "";

    /// <summary>The unwrapped 32-byte namespace key; null when not cached. A secret.</summary>
    public byte[]? Dek { get; init; }

    /// <summary>Local write time (UTC). A store sets it to now when left at its default.</summary>
    public DateTimeOffset UpdatedAt { get; init; }
}

/// <summary>Sync metadata of one item (docs/engine.md §2.3): never the app's value itself, only the last clean base.</summary>
public sealed record ItemRecord
{
    /// <summary>The identity's key ID.</summary>
    public required string KeyId { get; init; }

    /// <summary>The namespace ID.</summary>
    public required string NamespaceId { get; init; }

    /// <summary>The collection name.</summary>
    public required string Collection { get; init; }

    /// <summary>The logical key within the collection.</summary>
    public required string Key { get; init; }

    /// <summary>The item ID (64 lowercase hex, an HMAC of collection and key).</summary>
    public required string ItemId { get; init; }

    /// <summary>The highest remote version known locally; the version the next upload must match.</summary>
    public ulong Version { get; init; }

    /// <summary>The version <see cref="BaseValue"/> belongs to.</summary>
    public ulong BaseVersion { get; init; }

    /// <summary>Encoded bytes of the last clean value; null when there is no base.</summary>
    public byte[]? BaseValue { get; init; }

    /// <summary>The local value must be uploaded.</summary>
    public bool Dirty { get; init; }

    /// <summary>An automatic merge failed; uploads are stopped until the conflict is resolved.</summary>
    public bool Conflict { get; init; }

    /// <summary>The remote version of an open conflict.</summary>
    public ulong ConflictRemoteVersion { get; init; }

    /// <summary>The remote value of an open conflict (encoded bytes).</summary>
    public byte[]? ConflictRemoteValue { get; init; }

    /// <summary>Local write time (UTC), also the upload order. A store sets it to now when left at its default.</summary>
    public DateTimeOffset UpdatedAt { get; init; }

    /// <summary>Key-directory collections: the generation of this device's own directory entry for the key (0 = none).</summary>
    public ulong DirGeneration { get; init; }

    /// <summary>Key-directory collections: the key is deleted on this device (nothing is uploaded for it).</summary>
    public bool Deleted { get; init; }

    /// <summary>Key-directory collections, a deleted key: the highest item version known when it was deleted.</summary>
    public ulong DirSeen { get; init; }

    /// <summary>Key-directory collections, a deleted key: its value is gone from the app's storage.</summary>
    public bool Removed { get; init; }
}

/// <summary>
/// Rows written together, atomically: all of them or none (a whole item map, a flush step with
/// its namespace head). Rows are upserts by their keys.
/// </summary>
public sealed record StoreWrite
{
    /// <summary>The identity row to upsert, if any.</summary>
    public IdentityRecord? Identity { get; init; }

    /// <summary>Namespace rows to upsert, by (key ID, namespace ID).</summary>
    public IReadOnlyList<NamespaceRecord> Namespaces { get; init; } = [];

    /// <summary>Item rows to upsert, by (key ID, namespace ID, item ID).</summary>
    public IReadOnlyList<ItemRecord> Items { get; init; } = [];

    /// <summary>Checks that every row names its keys (stores call this before writing anything).</summary>
    /// <exception cref="ArgumentException">A row lacks a key ID, namespace ID, item ID, collection or key.</exception>
    public void Validate()
    {
        if (Namespaces is null || Items is null)
            throw new ArgumentException("namespace and item lists must not be null");
        if (Identity is { } identity && string.IsNullOrEmpty(identity.KeyId))
            throw new ArgumentException("identity key ID is required");
        foreach (var n in Namespaces)
            if (n is null || string.IsNullOrEmpty(n.KeyId) || string.IsNullOrEmpty(n.NamespaceId))
                throw new ArgumentException("namespace rows need a key ID and a namespace ID");
        foreach (var item in Items)
            if (item is null || string.IsNullOrEmpty(item.KeyId) || string.IsNullOrEmpty(item.NamespaceId) || string.IsNullOrEmpty(item.ItemId)
                || item.Collection is null || item.Key is null)
                throw new ArgumentException("item rows need a key ID, namespace ID, item ID, collection and key");
    }
}
