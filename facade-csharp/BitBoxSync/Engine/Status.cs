namespace BitBoxSync;

/// <summary>
/// What an app shows about syncing (bind a UI to <see cref="SyncEngine.Status"/> and refresh on
/// <see cref="SyncEngine.StatusChanged"/>). A snapshot: immutable.
/// </summary>
public sealed record SyncStatus
{
    /// <summary>The last exchange with the server succeeded (false before the first one).</summary>
    public bool Connected { get; init; }

    /// <summary>A pass is running.</summary>
    public bool Syncing { get; init; }

    /// <summary>A foreground <see cref="SyncEngine.LoginAsync"/> is needed (background passes never prompt).</summary>
    public bool LoginRequired { get; init; }

    /// <summary>When the last pass finished without error.</summary>
    public DateTimeOffset? LastSyncedAt { get; init; }

    /// <summary>The last pass's error (null after a successful pass).</summary>
    public Exception? LastError { get; init; }

    /// <summary>Local changes not yet accepted by the server (after the last pass).</summary>
    public int PendingUploads { get; init; }

    /// <summary>Key-directory collections: deletions made on this device that the server does not hold yet.</summary>
    public int PendingDeletions { get; init; }

    /// <summary>Keys in conflict (after the last pass).</summary>
    public int Conflicts { get; init; }

    /// <summary>Items set aside with an error (see <see cref="SyncEngine.QuarantinedItems"/>).</summary>
    public int Quarantined { get; init; }

    /// <summary>Remote items applied in the current (or last) pass.</summary>
    public int Downloaded { get; init; }

    /// <summary>Remote items to apply in the current (or last) pass.</summary>
    public int DownloadsPlanned { get; init; }

    /// <summary>Uploads accepted in the current (or last) pass.</summary>
    public int Uploaded { get; init; }

    /// <summary>Dirty items the current (or last) pass set out to upload.</summary>
    public int UploadsPlanned { get; init; }
}

/// <summary>An item that could not be applied or uploaded; syncing goes on without it and retries it on later passes.</summary>
/// <param name="NamespaceId">The namespace.</param>
/// <param name="Collection">The collection.</param>
/// <param name="Key">The key.</param>
/// <param name="ItemId">The item ID.</param>
/// <param name="Error">Why (an unreadable remote value, a merge that threw, a value too large, a missing value).</param>
/// <param name="Since">When it was first set aside.</param>
public sealed record QuarantinedItem(string NamespaceId, string Collection, string Key, string ItemId, string Error, DateTimeOffset Since);

/// <summary>A namespace this identity belongs to, as cached (no key material).</summary>
/// <param name="NamespaceId">The namespace ID.</param>
/// <param name="Kind"><c>default</c> or <c>shared</c> (null when not yet known).</param>
/// <param name="Head">The highest head reconciled locally.</param>
public sealed record NamespaceInfo(string NamespaceId, string? Kind, ulong Head);
