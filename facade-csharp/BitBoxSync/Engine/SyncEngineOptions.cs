using BitBoxSync.Storage;

namespace BitBoxSync;

/// <summary>How a <see cref="SyncEngine"/> is set up; validated by <see cref="SyncEngine.OpenAsync"/>.</summary>
public sealed class SyncEngineOptions
{
    /// <summary>The API client (required).</summary>
    public SyncClient? Client { get; set; }

    /// <summary>The identity that signs and unwraps (required).</summary>
    public IIdentity? Identity { get; set; }

    /// <summary>Where sync metadata is kept (required). The engine owns it and disposes it.</summary>
    public IStore? Store { get; set; }

    /// <summary>Base period of background polling (default 5 minutes).</summary>
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>Cap of failure and idle backoff (default: the larger of 60 minutes and <see cref="PollInterval"/>).</summary>
    public TimeSpan? MaxPollInterval { get; set; }

    /// <summary>Start <see cref="SyncEngine.RunAsync"/> in idle mode (polls slow down while nothing changes).</summary>
    public bool IdlePolling { get; set; }

    /// <summary>Do not run the long-poll namespace watch inside <see cref="SyncEngine.RunAsync"/> (polling only).</summary>
    public bool DisableNamespaceWatch { get; set; }

    /// <summary>Refresh the token this long before it expires (default 24 hours).</summary>
    public TimeSpan RefreshSkew { get; set; } = TimeSpan.FromHours(24);

    /// <summary>
    /// Where the engine logs (passes, failures, the next wait, conflicts, quarantined items, the
    /// watch), with stable event IDs under the category <c>BitBoxSync.Engine</c>; never a secret,
    /// a logical key or a value. Default: no logging.
    /// </summary>
    public Microsoft.Extensions.Logging.ILoggerFactory? LoggerFactory { get; set; }

    /// <summary>The clock (tests substitute one).</summary>
    internal TimeProvider Clock { get; set; } = TimeProvider.System;

    /// <summary>Random bytes for namespace IDs, keys, nonces and invites (the simulation seeds it).</summary>
    internal Func<int, byte[]> RandomBytes { get; set; } = System.Security.Cryptography.RandomNumberGenerator.GetBytes;

    /// <summary>Uniform samples in [0, 1) for jitter (the simulation seeds it).</summary>
    internal Func<double> RandomSample { get; set; } = Random.Shared.NextDouble;

    /// <summary>Uploads in flight during a flush (tests and the shell simulation set 1 for strictly sequential requests).</summary>
    internal int UploadsInFlight { get; set; } = 8;

    /// <summary>
    /// Whether the engine uses the batch-items extension when the server offers it (tests and the
    /// shell simulation compare both paths; a server without the extension is always served by
    /// single-item requests).
    /// </summary>
    internal bool UseBatchItems { get; set; } = true;
}

/// <summary>How a collection is opened.</summary>
public sealed class CollectionOptions<T>
{
    /// <summary>The codec (required).</summary>
    public ICodec<T>? Codec { get; set; }

    /// <summary>The merge for concurrent changes (default: <see cref="Merges.NoMerge{T}"/>, every collision is a conflict).</summary>
    public MergeFunction<T>? Merge { get; set; }

    /// <summary>The app's storage of the values (required).</summary>
    public IValueBackend<T>? Backend { get; set; }

    /// <summary>
    /// Keeps an encrypted key directory for the collection (docs/protocol.md §17): keys created on
    /// one device are learned by the others and downloaded in the same pass, so the backend's
    /// <see cref="IValueBackend{T}.KeysAsync"/> only needs the keys it holds. Off by default: the
    /// directory adds items to the namespace that clients without it (the Go client, older
    /// versions) list as unknown items; they keep syncing the keys they name themselves.
    /// </summary>
    public bool KeyDirectory { get; set; }

    /// <summary>
    /// With <see cref="KeyDirectory"/>: what happens when a deletion meets an edit made without seeing
    /// it (docs/concepts.md, "Deletes"). Every device of the collection must use the same policy.
    /// </summary>
    public DeletePolicy DeletePolicy { get; set; } = DeletePolicy.EditWins;

    /// <summary>
    /// With <see cref="KeyDirectory"/>: a deletion also overwrites the key's encrypted value on the
    /// server with <see cref="DeletedValue"/> (protocol v1 cannot remove an item), so the deleted
    /// content is gone from the server too, and clients without the directory (the Go client) read
    /// <see cref="DeletedValue"/> instead of the deleted value. Off by default: the deleted value
    /// stays on the server, readable by members of the namespace with any client.
    /// </summary>
    public bool OverwriteOnDelete { get; set; }

    /// <summary>
    /// With <see cref="OverwriteOnDelete"/>: the value written over a deleted one (required then; choose
    /// one that clients without the directory can show as deleted, for example an empty record).
    /// </summary>
    public T? DeletedValue { get; set; }
}

/// <summary>What a key-directory collection does when a deletion and an edit made without seeing it meet.</summary>
public enum DeletePolicy
{
    /// <summary>The edit wins: the key lives again with the edited value, and <see cref="SyncEventType.ItemRevived"/> tells the app (the default: nothing typed is lost).</summary>
    EditWins,

    /// <summary>The deletion wins: the edit is dropped and the value removed, and <see cref="SyncEventType.EditDropped"/> tells the app.</summary>
    DeleteWins,
}
