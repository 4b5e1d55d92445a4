namespace BitBoxSync;

/// <summary>The engine was disposed.</summary>
public sealed class SyncEngineClosedException : SyncException
{
    /// <summary>Creates the exception.</summary>
    public SyncEngineClosedException() : base("bitboxsync: engine closed") { }
}

/// <summary>A collection of that name is already open in the namespace; the first registration stays.</summary>
public sealed class CollectionAlreadyRegisteredException : SyncException
{
    /// <summary>Creates the exception.</summary>
    public CollectionAlreadyRegisteredException(string namespaceId, string collection)
        : base($"bitboxsync: collection \"{collection}\" is already registered in namespace {namespaceId}") { }
}

/// <summary>
/// The server contradicted state it showed before (a head, version, item or namespace went
/// backwards or vanished): data may have been tampered with or restored from an old backup.
/// Syncing that data stops until the app repairs it (for example with <c>ResetSyncState</c>).
/// </summary>
public sealed class RollbackDetectedException : SyncException
{
    /// <summary>Creates the exception.</summary>
    public RollbackDetectedException(string message) : base("bitboxsync: " + message) { }
}

/// <summary>
/// The operation needs a login (a signature from the identity, which may prompt a device), and the
/// caller was a background operation that must not prompt. Run <c>LoginAsync</c> in the foreground.
/// </summary>
public sealed class LoginRequiredException : SyncException
{
    /// <summary>Creates the exception.</summary>
    public LoginRequiredException() : base("bitboxsync: login required") { }
}
