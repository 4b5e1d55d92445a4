using BitBoxSync.Protocol.Wire;

namespace BitBoxSync;

/// <summary>A namespace the engine can sync: cheap to hold; opens collections.</summary>
public sealed class SyncNamespace
{
    private readonly SyncEngine _engine;

    internal SyncNamespace(SyncEngine engine, string id, string? kind)
    {
        _engine = engine;
        Id = id;
        Kind = kind;
    }

    /// <summary>The namespace ID (32 lowercase hex).</summary>
    public string Id { get; }

    /// <summary><c>default</c> or <c>shared</c> (null when not yet known).</summary>
    public string? Kind { get; }

    /// <summary>Every member (key IDs, caller included), in join order.</summary>
    public async Task<IReadOnlyList<NamespaceMember>> MembersAsync(CancellationToken cancellationToken = default) =>
        (await _engine.WithTokenAsync((c, t) => c.GetMembersAsync(t, Id, cancellationToken), cancellationToken)).Members;

    /// <summary>
    /// Creates an invite to this shared namespace (docs/engine.md §8.4): nothing is stored locally: keep the
    /// returned invite (it holds the secret) until its join requests are approved or it is revoked.
    /// </summary>
    /// <exception cref="ArgumentException">The options are invalid (origin, lifetime above 1 hour, more than 10 approvals).</exception>
    /// <exception cref="SyncException">The namespace is not shared.</exception>
    public Task<Invite> CreateInviteAsync(InviteOptions options, CancellationToken cancellationToken = default) =>
        _engine.CreateInviteAsync(Id, options, cancellationToken);

    /// <summary>Active invites and those revoked or expired recently.</summary>
    public async Task<IReadOnlyList<NamespaceInviteSummary>> InvitesAsync(CancellationToken cancellationToken = default) =>
        (await _engine.WithTokenAsync((c, t) => c.ListNamespaceInvitesAsync(t, Id, cancellationToken), cancellationToken)).Invites;

    /// <summary>Revokes an invite: no more join requests or approvals through it.</summary>
    public Task RevokeInviteAsync(string inviteId, CancellationToken cancellationToken = default) =>
        _engine.WithTokenAsync((c, t) => c.RevokeNamespaceInviteAsync(t, Id, inviteId, cancellationToken), cancellationToken);

    /// <summary>Pending join requests, exactly as the requesters signed them.</summary>
    public async Task<IReadOnlyList<NamespaceJoinRequestEntry>> JoinRequestsAsync(CancellationToken cancellationToken = default) =>
        (await _engine.WithTokenAsync((c, t) => c.ListNamespaceJoinRequestsAsync(t, Id, cancellationToken), cancellationToken)).Requests;

    /// <summary>
    /// Approves a join request after verifying it locally against the invite (docs/engine.md §8.6: namespace,
    /// invite, origin, expiries, hash, signature and the proof that the requester holds the invite
    /// secret), then wraps the namespace key to the requester.
    /// </summary>
    /// <exception cref="SyncException">The request does not verify; nothing was sent.</exception>
    public Task ApproveJoinRequestAsync(Invite invite, NamespaceJoinRequestEntry entry, CancellationToken cancellationToken = default) =>
        _engine.ApproveJoinRequestAsync(Id, invite, entry, cancellationToken);

    /// <summary>Rejects a pending join request.</summary>
    public Task RejectJoinRequestAsync(NamespaceJoinRequestEntry entry, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(entry);
        return _engine.WithTokenAsync((c, t) => c.RejectNamespaceJoinRequestAsync(t, Id, entry.JoinRequest?.KeyId ?? "", entry.JoinRequestHash, cancellationToken), cancellationToken);
    }

    /// <summary>
    /// Opens a collection: registers its codec, merge and backend with the engine. No network; works
    /// offline. Open collections before <see cref="SyncEngine.RunAsync"/> so passes can apply and upload them.
    /// </summary>
    /// <exception cref="ArgumentException">The name is empty or reserved (names starting with
    /// <c>bitboxsync.</c> belong to the engine, for example its key directory), the codec or backend is
    /// missing, or the codec cannot encode the value type (for example <see cref="Codecs.Json{T}"/> of a
    /// type Go writes differently).</exception>
    /// <exception cref="CollectionAlreadyRegisteredException">The namespace already has a collection of that name.</exception>
    public Collection<T> OpenCollection<T>(string name, CollectionOptions<T> options)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(options);
        if (BitBoxSync.Core.KeyDirectory.isReservedName(name))
            throw new ArgumentException($"collection name \"{name}\" is reserved: names starting with \"bitboxsync.\" belong to the engine", nameof(name));
        if (options.Codec is null) throw new ArgumentException($"collection \"{name}\" needs a codec", nameof(options));
        if (options.Backend is null) throw new ArgumentException($"bitboxsync: collection value backend required for collection \"{name}\"", nameof(options));
        if (options.Codec is ICheckedCodec checkedCodec) checkedCodec.Check();
        if (!Enum.IsDefined(options.DeletePolicy)) throw new ArgumentException($"collection \"{name}\" has an unknown delete policy {(int)options.DeletePolicy}", nameof(options));
        byte[]? deletedValue = null;
        if (options.OverwriteOnDelete)
        {
            if (!options.KeyDirectory) throw new ArgumentException($"collection \"{name}\": OverwriteOnDelete needs KeyDirectory", nameof(options));
            if (options.DeletedValue is null) throw new ArgumentException($"collection \"{name}\": OverwriteOnDelete needs a DeletedValue", nameof(options));
            deletedValue = options.Codec.Encode(options.DeletedValue);
            if (deletedValue.Length > BitBoxSync.Protocol.Limits.MaxItemPlaintextSize)
                throw new ArgumentException($"collection \"{name}\": the DeletedValue is {deletedValue.Length} bytes, over the item limit", nameof(options));
        }
        var adapter = new CollectionAdapter<T>(name, options.Codec, options.Merge ?? Merges.NoMerge<T>(), options.Backend, deletedValue);
        _engine.Register(Id, adapter);
        if (options.KeyDirectory)
            _engine.DirectoryOf(Id).Add(name, options.DeletePolicy == DeletePolicy.DeleteWins ? Core.DeletePolicy.DeleteWins : Core.DeletePolicy.EditWins);
        return new Collection<T>(_engine, this, adapter);
    }
}

/// <summary>A typed collection in a namespace.</summary>
public sealed class Collection<T>
{
    private readonly SyncEngine _engine;
    private readonly CollectionAdapter<T> _adapter;

    internal Collection(SyncEngine engine, SyncNamespace ns, CollectionAdapter<T> adapter)
    {
        _engine = engine;
        _adapter = adapter;
        Namespace = ns;
    }

    /// <summary>The collection name.</summary>
    public string Name => _adapter.Name;

    /// <summary>The namespace it belongs to.</summary>
    public SyncNamespace Namespace { get; }

    /// <summary>
    /// Deletes a key on every device (docs/concepts.md, "Deletes"): its value is removed from the
    /// backend now and from the other devices' backends when they sync; the deletion is kept in the
    /// sync metadata first, so a crash cannot lose it. An unsynced edit or an open conflict of the key
    /// ends with it. Works offline; a sync is scheduled. Deleting a deleted key does nothing.
    /// </summary>
    /// <exception cref="InvalidOperationException">The collection has no key directory, its backend does
    /// not implement <see cref="IDeletableValueBackend{T}"/>, or the namespace was never synced on this
    /// device (its key is needed to name the item).</exception>
    /// <exception cref="ArgumentException">The key is empty or longer than 512 UTF-8 bytes.</exception>
    public Task DeleteAsync(string key, CancellationToken cancellationToken = default) =>
        _engine.DeleteAsync(Namespace.Id, _adapter, key, cancellationToken);

    /// <summary>Every key of this collection in conflict: base (when known), local and remote values.</summary>
    public Task<IReadOnlyList<Conflict<T>>> ConflictsAsync(CancellationToken cancellationToken = default) =>
        _engine.ConflictsAsync(Namespace.Id, _adapter, cancellationToken);

    /// <summary>Resolves a conflict with a value: it is written to the backend and uploaded on the next sync.</summary>
    /// <exception cref="KeyNotFoundException">The key has no sync metadata.</exception>
    public Task ResolveWithValueAsync(string key, T value, CancellationToken cancellationToken = default) =>
        _engine.ResolveAsync(Namespace.Id, _adapter, key, ConflictChoice.Value, _adapter.Codec.Encode(value), cancellationToken);

    /// <summary>Resolves a conflict by keeping the backend's current value (it must exist); uploaded on the next sync.</summary>
    /// <exception cref="KeyNotFoundException">The key has no sync metadata.</exception>
    /// <exception cref="InvalidOperationException">The backend has no value for the key.</exception>
    public Task KeepLocalAsync(string key, CancellationToken cancellationToken = default) =>
        _engine.ResolveAsync(Namespace.Id, _adapter, key, ConflictChoice.Local, null, cancellationToken);

    /// <summary>Resolves a conflict by taking the remote value: written to the backend, clean at the remote version.</summary>
    /// <exception cref="KeyNotFoundException">The key has no sync metadata.</exception>
    public Task TakeRemoteAsync(string key, CancellationToken cancellationToken = default) =>
        _engine.ResolveAsync(Namespace.Id, _adapter, key, ConflictChoice.Remote, null, cancellationToken);
}

/// <summary>A key in conflict: both sides changed it and the merge did not resolve.</summary>
/// <param name="Key">The key.</param>
/// <param name="HasBase">Whether a common base is known.</param>
/// <param name="Base">The common base value (when known).</param>
/// <param name="Local">The app's current value (may be missing).</param>
/// <param name="Remote">The remote value that conflicted.</param>
/// <param name="RemoteVersion">The remote version that conflicted.</param>
public sealed record Conflict<T>(string Key, bool HasBase, T? Base, BackendValue<T> Local, T Remote, ulong RemoteVersion);

internal enum ConflictChoice
{
    Value,
    Local,
    Remote,
}
