namespace BitBoxSync.Storage;

/// <summary>
/// Where the engine keeps sync metadata (docs/engine.md §9.1): identities, cached namespaces and item
/// rows, partitioned by key ID. Apps keep their values in their own storage; this holds only what
/// syncing needs. Implementations: <see cref="MemoryStore"/>, and <c>SqliteStore</c> in the
/// BitBoxSync.Storage.Sqlite package.
/// </summary>
/// <remarks>
/// Contract: lookups return null when the row is absent; returned byte arrays are private copies;
/// <see cref="SaveAsync"/> applies all its rows or none, every field of every row (a store that drops
/// fields — for example the key-directory fields of <see cref="ItemRecord"/> — loses deletions); <see cref="ForgetIdentitySecretsAsync"/>
/// and <see cref="ResetSyncStateAsync"/> are atomic and leave other identities untouched; a
/// missing identity makes them a no-op. Implementations must be safe for concurrent calls.
/// </remarks>
public interface IStore : IAsyncDisposable
{
    /// <summary>The identity row, or null.</summary>
    ValueTask<IdentityRecord?> LoadIdentityAsync(string keyId, CancellationToken cancellationToken = default);

    /// <summary>One cached namespace, or null.</summary>
    ValueTask<NamespaceRecord?> GetNamespaceAsync(string keyId, string namespaceId, CancellationToken cancellationToken = default);

    /// <summary>Every cached namespace of the identity, ordered by update time then ID.</summary>
    ValueTask<IReadOnlyList<NamespaceRecord>> ListNamespacesAsync(string keyId, CancellationToken cancellationToken = default);

    /// <summary>An item by its ID, or null.</summary>
    ValueTask<ItemRecord?> GetItemByIdAsync(string keyId, string namespaceId, string itemId, CancellationToken cancellationToken = default);

    /// <summary>An item by its logical key, or null.</summary>
    ValueTask<ItemRecord?> GetItemByLogicalKeyAsync(string keyId, string namespaceId, string collection, string key, CancellationToken cancellationToken = default);

    /// <summary>Every item row of a namespace (dirty, conflicted and inactive included), ordered by update time then item ID.</summary>
    ValueTask<IReadOnlyList<ItemRecord>> ListNamespaceItemsAsync(string keyId, string namespaceId, CancellationToken cancellationToken = default);

    /// <summary>Every dirty item of the identity across namespaces (conflicted ones included), ordered by update time then item ID.</summary>
    ValueTask<IReadOnlyList<ItemRecord>> ListDirtyItemsAsync(string keyId, CancellationToken cancellationToken = default);

    /// <summary>Upserts all rows of <paramref name="write"/> in one transaction.</summary>
    /// <exception cref="StoreException">The write was refused (for example a logical key already bound to another item ID); nothing was written.</exception>
    ValueTask SaveAsync(StoreWrite write, CancellationToken cancellationToken = default);

    /// <summary>Clears the identity's token, token expiry and every cached DEK; keeps everything else.</summary>
    ValueTask ForgetIdentitySecretsAsync(string keyId, CancellationToken cancellationToken = default);

    /// <summary>Deletes the identity's namespace and item rows and its cached default namespace ID; keeps the token.</summary>
    ValueTask ResetSyncStateAsync(string keyId, CancellationToken cancellationToken = default);
}

/// <summary>A store refused an operation or failed; the operation changed nothing.</summary>
public sealed class StoreException : SyncException
{
    /// <summary>Creates the exception.</summary>
    public StoreException(string message, Exception? innerException = null) : base(message, innerException) { }
}
