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

    /// <summary>
    /// Opens a collection: registers its codec, merge and backend with the engine. No network; works
    /// offline. Open collections before <see cref="SyncEngine.RunAsync"/> so passes can apply and upload them.
    /// </summary>
    /// <exception cref="ArgumentException">The name is empty, or the codec or backend is missing.</exception>
    /// <exception cref="CollectionAlreadyRegisteredException">The namespace already has a collection of that name.</exception>
    public Collection<T> OpenCollection<T>(string name, CollectionOptions<T> options)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(options);
        if (options.Codec is null) throw new ArgumentException($"collection \"{name}\" needs a codec", nameof(options));
        if (options.Backend is null) throw new ArgumentException($"bitboxsync: collection value backend required for collection \"{name}\"", nameof(options));
        var adapter = new CollectionAdapter<T>(name, options.Codec, options.Merge ?? Merges.NoMerge<T>(), options.Backend);
        _engine.Register(Id, adapter);
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
}
