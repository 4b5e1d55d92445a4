namespace BitBoxSync;

/// <summary>What happened (docs/engine.md §2.4).</summary>
public enum SyncEventType
{
    /// <summary>A login failed, or all tokens were revoked: the app should run a foreground <c>LoginAsync</c>.</summary>
    LoginRequired,
    /// <summary>A login or refresh succeeded (<see cref="SyncEvent.TokenExpiresAt"/> = the new expiry).</summary>
    SessionReady,
    /// <summary>The token is still valid but expires within the refresh skew; a refresh is attempted (<see cref="SyncEvent.TokenExpiresAt"/> = the current expiry).</summary>
    RefreshRecommended,
    /// <summary>A sync pass started.</summary>
    SyncStarted,
    /// <summary>A sync pass finished without error.</summary>
    SyncFinished,
    /// <summary>A sync pass failed (<see cref="SyncEvent.Error"/>).</summary>
    SyncFailed,
    /// <summary>A namespace's item map was reconciled.</summary>
    NamespaceChanged,
    /// <summary>An item's metadata changed through a remote apply or merge.</summary>
    ItemChanged,
    /// <summary>A remote value was written into the app's backend.</summary>
    ItemDownloaded,
    /// <summary>A local change was queued for upload.</summary>
    ItemQueued,
    /// <summary>A local change was accepted by the server.</summary>
    ItemUploaded,
    /// <summary>A merge could not resolve a concurrent change: the key is in conflict.</summary>
    ConflictDetected,
    /// <summary>The server lists an item this device cannot map to a key in its scope.</summary>
    UnknownRemoteItem,
    /// <summary>An item could not be applied or uploaded and was set aside (<see cref="SyncEvent.Error"/>); retried when its input changes.</summary>
    ItemQuarantined,
    /// <summary>The app resolved a conflict; a sync is scheduled to upload the resolution.</summary>
    ConflictResolved,
    /// <summary>The long-poll watch failed (<see cref="SyncEvent.Error"/>); it backs off and retries, polling continues.</summary>
    NamespaceWatchFailed,
    /// <summary>
    /// The backend's snapshot holds a key its <c>KeysAsync</c> did not return (an app bug, docs/engine.md
    /// §12.18): the key is neither uploaded nor downloaded. Reported once per key while the engine is open.
    /// </summary>
    KeyOutsideScope,
    /// <summary>
    /// Key-directory collections (docs/concepts.md, "Deletes"): the key was deleted, on this device
    /// through <see cref="Collection{T}.DeleteAsync"/> or on another device and applied here (the value
    /// was removed through <see cref="IDeletableValueBackend{T}"/>; without it, remove it now).
    /// </summary>
    ItemDeleted,
    /// <summary>
    /// Key-directory collections: a deleted key lives again: an edit made without seeing the deletion
    /// won (policy <see cref="DeletePolicy.EditWins"/>), or another device wrote the key after the deletion.
    /// </summary>
    ItemRevived,
    /// <summary>
    /// Key-directory collections, policy <see cref="DeletePolicy.DeleteWins"/>: a deletion made without
    /// seeing this device's edit won; the edit and the value were removed (an <see cref="ItemDeleted"/> precedes it).
    /// </summary>
    EditDropped,
}

/// <summary>One engine event.</summary>
public sealed record SyncEvent
{
    /// <summary>What happened.</summary>
    public required SyncEventType Type { get; init; }

    /// <summary>When (UTC).</summary>
    public DateTimeOffset At { get; init; }

    /// <summary>The namespace, for namespace and item events.</summary>
    public string? NamespaceId { get; init; }

    /// <summary>The collection, for item events.</summary>
    public string? Collection { get; init; }

    /// <summary>The key, for item events.</summary>
    public string? Key { get; init; }

    /// <summary>The item ID, for item events.</summary>
    public string? ItemId { get; init; }

    /// <summary>The error, for failures.</summary>
    public Exception? Error { get; init; }

    /// <summary>For auth events: the token expiry the event refers to (null when there was no token).</summary>
    public DateTimeOffset? TokenExpiresAt { get; init; }
}
