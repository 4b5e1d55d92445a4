using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Threading.Channels;
using BitBoxSync.Core;
using BitBoxSync.Protocol;
using BitBoxSync.Protocol.Wire;
using BitBoxSync.Storage;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using static BitBoxSync.StateMapping;
using KeyId = BitBoxSync.Protocol.Bin<BitBoxSync.Protocol.KeyIdKind>;
using NamespaceId = BitBoxSync.Protocol.Bin<BitBoxSync.Protocol.NamespaceIdKind>;
using ItemId = BitBoxSync.Protocol.Bin<BitBoxSync.Protocol.ItemIdKind>;
using Dek = BitBoxSync.Protocol.Bin<BitBoxSync.Protocol.DekKind>;

namespace BitBoxSync;

/// <summary>
/// The sync engine: keeps the app's collections in sync with a BitBoxSync server, end-to-end
/// encrypted. Every rule (what is dirty, what to download, how to merge, when a conflict is
/// recorded, what is a rollback) is decided by the pure core; this class executes the effects:
/// HTTP through <see cref="SyncClient"/>, crypto, the app's backends and the metadata store.
/// </summary>
public sealed class SyncEngine : IAsyncDisposable
{
    private readonly SyncClient _client;
    private readonly IIdentity _identity;
    private readonly IStore _store;
    private readonly SyncEngineOptions _options;
    private readonly TimeProvider _clock;
    private readonly KeyId _keyId;
    private readonly SemaphoreSlim _syncLock = new(1, 1);
    private readonly SemaphoreSlim _authLock = new(1, 1);
    private readonly ConcurrentDictionary<(string Namespace, string Name), ICollectionAdapter> _collections = new();
    private readonly Channel<bool> _wake = Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite });
    private readonly CancellationTokenSource _closing = new();
    private IdentityState _state;
    private int _running;
    private int _closed;

    private SyncEngine(SyncEngineOptions options, KeyId keyId, IdentityState state)
    {
        _options = options;
        _client = options.Client!;
        _identity = options.Identity!;
        _store = options.Store!;
        _clock = options.Clock;
        _keyId = keyId;
        _state = state;
        _idlePolling = options.IdlePolling;
        _log = (options.LoggerFactory ?? Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance).CreateLogger("BitBoxSync.Engine");
        SyncTelemetry.Track(this);
    }

    private readonly Microsoft.Extensions.Logging.ILogger _log;

    internal bool IsClosed => Volatile.Read(ref _closed) != 0;

    private readonly object _statusGate = new();
    private SyncStatus _status = new();
    private readonly ConcurrentDictionary<(string Namespace, string ItemId), QuarantinedItem> _quarantined = new();
    private readonly ConcurrentDictionary<(string Namespace, string ItemId), Core.QuarantinedItem> _quarantineState = new();
    private readonly ConcurrentDictionary<(string Namespace, string Collection, string Key), byte> _reportedOutsideScope = new();
    private readonly ConcurrentDictionary<string, (Dek Dek, List<(string Collection, string[] Keys)> Keys, ActiveScope Scope)> _scopeCache = new(StringComparer.Ordinal);

    /// <summary>The current sync status (a snapshot).</summary>
    public SyncStatus Status
    {
        get
        {
            lock (_statusGate) return _status;
        }
    }

    /// <summary>Raised (on the engine's thread) after <see cref="Status"/> changed. Handlers must be quick and must not throw.</summary>
    public event EventHandler<SyncStatus>? StatusChanged;

    /// <summary>Items currently set aside with their error.</summary>
    public IReadOnlyList<QuarantinedItem> QuarantinedItems =>
        _quarantined.Values.OrderBy(q => q.Since).ThenBy(q => q.ItemId, StringComparer.Ordinal).ToList();

    private void UpdateStatus(Func<SyncStatus, SyncStatus> change)
    {
        SyncStatus now;
        lock (_statusGate) now = _status = change(_status) with { Quarantined = _quarantined.Count };
        try
        {
            StatusChanged?.Invoke(this, now);
        }
        catch
        {
            // A failing handler must not break syncing.
        }
    }

    /// <summary>The identity's key ID (64 lowercase hex): all local state is partitioned by it.</summary>
    public string KeyId => _keyId.Wire;

    /// <summary>
    /// The engine's default event stream: a subscription (see <see cref="Subscribe"/>) created on
    /// first use of this property, holding at most <see cref="DefaultEventCapacity"/> events (the
    /// oldest are dropped when nobody reads: <see cref="DroppedEvents"/>). Events emitted before the
    /// first use are not in it: touch it right after <see cref="OpenAsync"/> if you need them all.
    /// For several readers (a UI and a logger), give each its own <see cref="Subscribe"/>.
    /// Completed when the engine is disposed.
    /// </summary>
    public ChannelReader<SyncEvent> Events => DefaultSubscription.Reader;

    /// <summary>Events dropped from <see cref="Events"/> because it was not read fast enough.</summary>
    public long DroppedEvents => _defaultSubscription?.Dropped ?? 0;

    /// <summary>The capacity of <see cref="Events"/> and of <see cref="Subscribe"/> by default.</summary>
    public const int DefaultEventCapacity = 1024;

    /// <summary>
    /// A new reader of every event from now on, bounded by <paramref name="capacity"/> (oldest
    /// dropped when full, counted in <see cref="SyncEventSubscription.Dropped"/>). Any number may
    /// exist; with none, the engine keeps no events at all. Dispose it when done.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="capacity"/> is below 1.</exception>
    public SyncEventSubscription Subscribe(int capacity = DefaultEventCapacity) => _hub.Add(capacity);

    private SyncEventSubscription DefaultSubscription
    {
        get
        {
            if (Volatile.Read(ref _defaultSubscription) is { } s) return s;
            var created = _hub.Add(DefaultEventCapacity);
            if (Interlocked.CompareExchange(ref _defaultSubscription, created, null) is { } existing)
            {
                created.Dispose();
                return existing;
            }
            return created;
        }
    }

    private SyncEventSubscription? _defaultSubscription;
    private readonly EventHub _hub = new();

    /// <summary>Validates the options and loads the identity's cached state. No network.</summary>
    /// <exception cref="ArgumentException">A required option is missing or a duration is invalid.</exception>
    public static async Task<SyncEngine> OpenAsync(SyncEngineOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Client is null) throw new ArgumentException("sync client is required", nameof(options));
        if (options.Identity is null) throw new ArgumentException("sync identity is required", nameof(options));
        if (options.Store is null) throw new ArgumentException("sync store is required", nameof(options));
        if (options.PollInterval <= TimeSpan.Zero) throw new ArgumentException("the poll interval must be positive", nameof(options));
        if (options.RefreshSkew < TimeSpan.Zero) throw new ArgumentException("the refresh skew must not be negative", nameof(options));
        if (options.MaxPollInterval is { } max && max < options.PollInterval)
            throw new ArgumentException("the maximum poll interval must not be below the poll interval", nameof(options));
        if (options.Identity.Kind != "keystore") throw new ArgumentException("only keystore identities are supported", nameof(options));

        var authKey = Bin.ofBytes<AuthPublicKeyKind>(options.Identity.AuthPublicKey.ToArray());
        if (authKey.IsError) throw new ArgumentException("the identity's auth public key: " + authKey.ErrorValue.Message, nameof(options));
        var keyId = KeyIds.ofAuthPublicKey(authKey.ResultValue);
        var stored = await options.Store.LoadIdentityAsync(keyId.Wire, cancellationToken);
        var state = stored is null
            ? new IdentityState(keyId, IdentityKind.Keystore, FSharpOption<string>.None, FSharpOption<DateTimeOffset>.None,
                FSharpOption<NamespaceId>.None, options.Clock.GetUtcNow())
            : ToCore(stored);
        return new SyncEngine(options, keyId, state);
    }

    private DateTimeOffset Now => _clock.GetUtcNow();

    private void ThrowIfClosed()
    {
        if (Volatile.Read(ref _closed) != 0) throw new SyncEngineClosedException();
    }

    internal void Emit(SyncEventType type, string? ns = null, string? collection = null, string? key = null, string? itemId = null, Exception? error = null,
        DateTimeOffset? tokenExpiresAt = null)
    {
        Observe(type, ns, collection, itemId, error, tokenExpiresAt);
        if (!_hub.HasSubscribers) return; // nobody listens: nothing is kept
        _hub.Publish(new SyncEvent
        {
            Type = type, At = Now, NamespaceId = ns, Collection = collection, Key = key, ItemId = itemId, Error = error, TokenExpiresAt = tokenExpiresAt,
        });
    }

    /// <summary>Metrics and logs of an event (item IDs and collections only: never keys or values).</summary>
    private void Observe(SyncEventType type, string? ns, string? collection, string? itemId, Exception? error, DateTimeOffset? tokenExpiresAt)
    {
        switch (type)
        {
            case SyncEventType.ItemUploaded: SyncTelemetry.Uploaded.Add(1); break;
            case SyncEventType.ItemDownloaded: SyncTelemetry.Downloaded.Add(1); break;
            case SyncEventType.ConflictDetected:
                SyncTelemetry.Conflicts.Add(1);
                EngineLog.Conflict(_log, ns, collection, itemId);
                break;
            case SyncEventType.ItemQuarantined:
                SyncTelemetry.Quarantined.Add(1);
                EngineLog.Quarantined(_log, ns, collection, itemId, error?.GetType().Name ?? "error");
                break;
            case SyncEventType.LoginRequired: EngineLog.LoginRequired(_log); break;
            case SyncEventType.SessionReady: EngineLog.SessionReady(_log, tokenExpiresAt); break;
        }
    }

    private DateTimeOffset? TokenExpiry => _state.TokenExpiry is null ? null : _state.TokenExpiry.Value;

    private void Emit(ItemState row, ItemEvent e) =>
        Emit(e.Tag switch
        {
            ItemEvent.Tags.ItemChanged => SyncEventType.ItemChanged,
            ItemEvent.Tags.ItemDownloaded => SyncEventType.ItemDownloaded,
            ItemEvent.Tags.ItemQueued => SyncEventType.ItemQueued,
            ItemEvent.Tags.ItemUploaded => SyncEventType.ItemUploaded,
            _ => SyncEventType.ConflictDetected,
        }, row.NamespaceId.Wire, row.Collection, row.Key, row.ItemId.Wire);

    internal void Register(string namespaceId, ICollectionAdapter adapter)
    {
        ThrowIfClosed();
        if (!_collections.TryAdd((namespaceId, adapter.Name), adapter))
            throw new CollectionAlreadyRegisteredException(namespaceId, adapter.Name);
    }

    private CancellationTokenSource Linked(CancellationToken ct) => CancellationTokenSource.CreateLinkedTokenSource(ct, _closing.Token);

    // ------------------------------------------------------------------ identity and auth

    private async Task SaveIdentityAsync(IdentityState state, CancellationToken ct)
    {
        await _store.SaveAsync(new StoreWrite { Identity = ToRecord(state) }, ct);
        _state = state;
    }

    private async Task<string> TokenAsync(bool mayPrompt, CancellationToken ct)
    {
        await _authLock.WaitAsync(ct);
        try
        {
            var decision = Auth.decide(_state, Now, _options.RefreshSkew, mayPrompt);
            switch (decision)
            {
                case AuthDecision.UseToken use:
                    return use.token;
                case AuthDecision.RefreshThenUse refresh:
                    Emit(SyncEventType.RefreshRecommended, tokenExpiresAt: refresh.expiry);
                    try
                    {
                        return await RefreshCoreAsync(refresh.token, ct);
                    }
                    catch (Exception e) when (e is SyncException or HttpRequestException)
                    {
                        return refresh.token; // still valid; a later 401 is handled by the wrapper
                    }
                case AuthDecision.Login:
                    return await LoginCoreAsync(ct);
                default:
                    Emit(SyncEventType.LoginRequired, tokenExpiresAt: TokenExpiry);
                    throw new LoginRequiredException();
            }
        }
        finally
        {
            _authLock.Release();
        }
    }

    private async Task<string> LoginCoreAsync(CancellationToken ct)
    {
        var previousExpiry = TokenExpiry;
        try
        {
            var (challenge, signature, attestation) = await SignedChallengeAsync("login", _identity.SignLoginIntentAsync, ct);
            var response = await _client.LoginAsync(new LoginRequest(
                "keystore", _keyId.Wire, Convert.ToHexStringLower(_identity.AuthPublicKey.Span), Convert.ToHexStringLower(_identity.WrapPublicKey.Span),
                challenge, signature, attestation!), ct);
            var expiry = ParseExpiry(response.ExpiresAt);
            var defaultNs = response.DefaultNamespaceId is null
                ? FSharpOption<NamespaceId>.None
                : FSharpOption<NamespaceId>.Some(Bin.parse<NamespaceIdKind>(response.DefaultNamespaceId).ResultValue);
            await SaveIdentityAsync(Auth.afterLogin(_state, response.AccessToken, expiry, defaultNs, Now), ct);
            Emit(SyncEventType.SessionReady, tokenExpiresAt: expiry);
            return response.AccessToken;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            Emit(SyncEventType.LoginRequired, error: e, tokenExpiresAt: previousExpiry);
            throw;
        }
    }

    private async Task<string> RefreshCoreAsync(string token, CancellationToken ct)
    {
        var (challenge, signature, attestation) = await SignedChallengeAsync("refresh", _identity.SignRefreshIntentAsync, ct);
        var response = await _client.RefreshAsync(token, new RefreshRequest("keystore", _keyId.Wire, challenge, signature, attestation!), ct);
        var expiry = ParseExpiry(response.ExpiresAt);
        await SaveIdentityAsync(Auth.afterLogin(_state, response.AccessToken, expiry, FSharpOption<NamespaceId>.None, Now), ct);
        Emit(SyncEventType.SessionReady, tokenExpiresAt: expiry);
        return response.AccessToken;
    }

    /// <summary>A login or refresh challenge, the identity's signature (hex) and, when demanded, its attestation (base64).</summary>
    private async Task<(string Challenge, string Signature, string? Attestation)> SignedChallengeAsync(
        string purpose, Func<ReadOnlyMemory<byte>, CancellationToken, ValueTask<byte[]>> sign, CancellationToken ct)
    {
        var challenge = await _client.ChallengeAsync(purpose, ct);
        var bytes = ChallengeBytes(challenge.Challenge);
        var signature = Convert.ToHexStringLower(await sign(bytes, ct));
        var attestation = challenge.SpamControl?.Kind == "attestation" ? Convert.ToBase64String(await _identity.AttestAsync(bytes, ct)) : null;
        return (challenge.Challenge, signature, attestation);
    }

    /// <summary>A sensitive-action challenge bound to an action and its fields hash; spam control must be none (docs/protocol.md §8).</summary>
    private async Task<(string Challenge, byte[] Bytes)> SensitiveChallengeAsync(string action, Bin<ActionFieldsHashKind> fieldsHash, CancellationToken ct)
    {
        var challenge = await _client.SensitiveActionChallengeAsync(action, fieldsHash.Wire, ct);
        if (challenge.SpamControl?.Kind != "none") throw new SyncProtocolException("sensitive action challenge must use spam control none");
        return (challenge.Challenge, ChallengeBytes(challenge.Challenge));
    }

    /// <summary>The server's namespace list, parsed (a malformed answer is a protocol error).</summary>
    private async Task<FSharpList<ListedNamespace>> ListedNamespacesAsync(string token, CancellationToken ct)
    {
        var listed = await _client.ListNamespacesAsync(token, ct);
        var parsed = Namespaces.parseListed(ListModule.OfSeq(listed.Namespaces));
        return parsed.IsError ? throw ToException(parsed.ErrorValue) : parsed.ResultValue;
    }

    /// <summary>Dirty rows waiting for upload, and rows in conflict (for <see cref="Status"/>).</summary>
    private async Task<(int Pending, int Conflicts)> DirtyCountsAsync(CancellationToken ct)
    {
        var dirty = await _store.ListDirtyItemsAsync(_keyId.Wire, ct);
        var conflicts = dirty.Count(i => i.Conflict);
        return (dirty.Count - conflicts, conflicts);
    }

    private static byte[] ChallengeBytes(string challenge)
    {
        var parsed = Bin.parse<ChallengeKind>(challenge);
        return parsed.IsOk ? Bin.toArray(parsed.ResultValue) : throw new SyncProtocolException("challenge must be 32 bytes");
    }

    private static DateTimeOffset ParseExpiry(string expiresAt)
    {
        var parsed = Rfc3339.parse("expiresAt", expiresAt);
        return parsed.IsOk ? parsed.ResultValue : throw new SyncProtocolException("token expiry: " + parsed.ErrorValue.Message);
    }

    /// <summary>Runs an operation with a valid token; on a 401, logs in again once and repeats it.</summary>
    private async Task<T> AuthenticatedAsync<T>(Func<string, Task<T>> operation, bool mayPrompt, CancellationToken ct)
    {
        var token = await TokenAsync(mayPrompt, ct);
        try
        {
            return await operation(token);
        }
        catch (SyncApiException e) when (e.StatusCode == 401)
        {
            await _authLock.WaitAsync(ct);
            try
            {
                switch (Auth.onUnauthorized(_state, token, mayPrompt))
                {
                    case UnauthorizedDecision.RetryWith retry:
                        token = retry.token;
                        break;
                    case var d when d.IsClearAndLogin:
                        await SaveIdentityAsync(Auth.clearToken(_state, Now), ct);
                        token = await LoginCoreAsync(ct);
                        break;
                    default:
                        await SaveIdentityAsync(Auth.clearToken(_state, Now), ct);
                        Emit(SyncEventType.LoginRequired);
                        throw new LoginRequiredException();
                }
            }
            finally
            {
                _authLock.Release();
            }
            return await operation(token);
        }
    }

    // ------------------------------------------------------------------ namespaces

    private async Task<NamespaceState?> LoadNamespaceAsync(NamespaceId ns, CancellationToken ct) =>
        await _store.GetNamespaceAsync(_keyId.Wire, ns.Wire, ct) is { } r ? ToCore(r) : null;

    private async Task SaveNamespaceAsync(NamespaceState row, CancellationToken ct) =>
        await _store.SaveAsync(new StoreWrite { Namespaces = [ToRecord(row)] }, ct);

    /// <summary>Fetches and unwraps this identity's wrapped DEK of a namespace; saves it (head and scope kept).</summary>
    private async Task<NamespaceState> JoinAsync(string token, NamespaceId ns, NamespaceKind? hint, CancellationToken ct)
    {
        var response = await _client.GetWrappedDekAsync(token, ns.Wire, _keyId.Wire, ct);
        var wrapped = Bin.parse<WrappedDekKind>(response.WrappedDek);
        if (wrapped.IsError) throw new SyncProtocolException("wrapped DEK: " + wrapped.ErrorValue.Message);
        var dekBytes = await _identity.UnwrapNamespaceDekAsync(Bin.toArray(ns), Bin.toArray(wrapped.ResultValue), ct);
        var dek = Bin.ofBytes<DekKind>(dekBytes);
        if (dek.IsError) throw new SyncProtocolException("unwrapped DEK: " + dek.ErrorValue.Message);
        var row = ReadinessModule.afterJoin(Opt(await LoadNamespaceAsync(ns, ct)), _keyId, ns,
            hint is null ? FSharpOption<NamespaceKind>.None : FSharpOption<NamespaceKind>.Some(hint), dek.ResultValue, Now);
        await SaveNamespaceAsync(row, ct);
        return row;
    }

    /// <summary>docs/engine.md §4.2: the cached row with its DEK, joining first when needed.</summary>
    private async Task<NamespaceState> EnsureReadyAsync(NamespaceId ns, NamespaceKind? expected, Func<Task<string>> token, CancellationToken ct)
    {
        for (var attempt = 0; ; attempt++)
        {
            var row = await LoadNamespaceAsync(ns, ct);
            var readiness = ReadinessModule.decide(Opt(row),
                expected is null ? FSharpOption<NamespaceKind>.None : FSharpOption<NamespaceKind>.Some(expected), FSharpOption<NamespaceKind>.None);
            switch (readiness)
            {
                case Readiness.Ready ready:
                    return ready.Item;
                case Readiness.WrongKind wrong:
                    throw new SyncException($"namespace {ns.Wire} has kind {(wrong.actual is null ? "unknown" : wrong.actual.Value.Wire)}, expected {wrong.expected.Wire}");
                case Readiness.NeedsJoin join when attempt == 0:
                    await JoinAsync(await token(), ns, join.kindHint?.Value ?? expected, ct);
                    break;
                default:
                    throw new SyncException($"namespace {ns.Wire} has no DEK after joining");
            }
        }
    }

    private static NamespaceId ParseNamespaceId(string id, string paramName)
    {
        var r = Bin.parse<NamespaceIdKind>(id);
        return r.IsOk ? r.ResultValue : throw new ArgumentException(r.ErrorValue.Message, paramName);
    }

    /// <summary>
    /// The identity's default namespace, created on the server the first time (docs/engine.md §8.1): may log in
    /// (and prompt the identity). Later calls use the cache.
    /// </summary>
    public async Task<SyncNamespace> DefaultNamespaceAsync(CancellationToken cancellationToken = default)
    {
        ThrowIfClosed();
        // Cached with its DEK: a handle offline, without a token or the identity (docs/engine.md §12.21).
        if (_state.DefaultNamespaceId is { } known && await LoadNamespaceAsync(known.Value, cancellationToken) is { Dek: not null } row
            && row.Kind is { } kind && kind.Value.IsDefault)
            return new SyncNamespace(this, row.NamespaceId.Wire, "default");
        return await AuthenticatedAsync(token => DefaultNamespaceCoreAsync(token, cancellationToken), mayPrompt: true, cancellationToken);
    }

    /// <summary>Wake-ups waiting for <see cref="RunAsync"/> (0 or 1: <see cref="ScheduleSync"/> coalesces).</summary>
    internal int PendingWakeups => _wake.Reader.Count;

    private async Task<SyncNamespace> DefaultNamespaceCoreAsync(string token, CancellationToken ct)
    {
        if (_state.DefaultNamespaceId is { } known)
        {
            var ready = await EnsureReadyAsync(known.Value, NamespaceKind.Default, () => Task.FromResult(token), ct);
            return new SyncNamespace(this, ready.NamespaceId.Wire, "default");
        }

        var proposed = Bin.ofBytes<NamespaceIdKind>(_options.RandomBytes(16)).ResultValue;
        var dek = Bin.ofBytes<DekKind>(_options.RandomBytes(32)).ResultValue;
        var wrapped = WrapToSelf(proposed, dek);
        var response = await _client.EnsureDefaultNamespaceAsync(token, new EnsureDefaultNamespaceRequest(proposed.Wire, wrapped), ct);
        var ns = ParseNamespaceId(response.NamespaceId, nameof(response));
        if (!response.Created)
        {
            var existing = Bin.parse<WrappedDekKind>(response.WrappedDek);
            if (existing.IsError) throw new SyncProtocolException("wrapped DEK: " + existing.ErrorValue.Message);
            var bytes = await _identity.UnwrapNamespaceDekAsync(Bin.toArray(ns), Bin.toArray(existing.ResultValue), ct);
            dek = Bin.ofBytes<DekKind>(bytes).ResultValue;
        }

        // Unlike the reference, an existing row keeps its head and scope hash (docs/engine.md §12.6).
        var row = ReadinessModule.afterJoin(Opt(await LoadNamespaceAsync(ns, ct)), _keyId, ns, FSharpOption<NamespaceKind>.Some(NamespaceKind.Default), dek, Now);
        var identity = new IdentityState(_state.KeyId, _state.Kind, _state.AccessToken, _state.TokenExpiry, FSharpOption<NamespaceId>.Some(ns), Now);
        await _store.SaveAsync(new StoreWrite { Identity = ToRecord(identity), Namespaces = [ToRecord(row)] }, ct);
        _state = identity;
        return new SyncNamespace(this, ns.Wire, "default");
    }

    private string WrapToSelf(NamespaceId ns, Dek dek)
    {
        var pk = Bin.ofBytes<WrapPublicKeyKind>(_identity.WrapPublicKey.ToArray()).ResultValue;
        var wrapped = DekWrap.wrap(pk, ns, dek, _options.RandomBytes(32));
        return wrapped.IsOk ? wrapped.ResultValue.Wire : throw new SyncException("wrap DEK: " + wrapped.ErrorValue.Message);
    }

    /// <summary>A namespace this identity belongs to, joined (DEK fetched and unwrapped) when not cached.</summary>
    public async Task<SyncNamespace> NamespaceAsync(string namespaceId, CancellationToken cancellationToken = default)
    {
        ThrowIfClosed();
        var ns = ParseNamespaceId(namespaceId, nameof(namespaceId));
        var row = await EnsureReadyAsync(ns, null, () => TokenAsync(true, cancellationToken), cancellationToken);
        return new SyncNamespace(this, ns.Wire, row.Kind is null ? null : row.Kind.Value.Wire);
    }

    /// <summary>Creates a shared namespace with this identity as its first member (docs/engine.md §8.2).</summary>
    public Task<SyncNamespace> CreateSharedNamespaceAsync(CancellationToken cancellationToken = default)
    {
        ThrowIfClosed();
        return AuthenticatedAsync(async token =>
        {
            var ns = Bin.ofBytes<NamespaceIdKind>(_options.RandomBytes(16)).ResultValue;
            var dek = Bin.ofBytes<DekKind>(_options.RandomBytes(32)).ResultValue;
            await _client.CreateSharedNamespaceAsync(token, new CreateSharedNamespaceRequest(ns.Wire, WrapToSelf(ns, dek)), cancellationToken);
            var row = ReadinessModule.afterJoin(FSharpOption<NamespaceState>.None, _keyId, ns, FSharpOption<NamespaceKind>.Some(NamespaceKind.Shared), dek, Now);
            await SaveNamespaceAsync(row, cancellationToken);
            return new SyncNamespace(this, ns.Wire, "shared");
        }, mayPrompt: true, cancellationToken);
    }

    /// <summary>Logs in (may prompt the identity), bootstraps the default namespace, and drops background backoff.</summary>
    public async Task LoginAsync(CancellationToken cancellationToken = default)
    {
        ThrowIfClosed();
        await AuthenticatedAsync(async token =>
        {
            await DefaultNamespaceCoreAsync(token, cancellationToken);
            return 0;
        }, mayPrompt: true, cancellationToken);
        Interlocked.Exchange(ref _loginSignal, 1);
        Interlocked.Exchange(ref _watchLogin, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
        ScheduleSync();
    }

    /// <summary>Completed by a successful <see cref="LoginAsync"/>: ends the watch's failure backoff early.</summary>
    private TaskCompletionSource _watchLogin = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private int _loginSignal;

    /// <summary>
    /// Revokes every session of this identity on the server (a sensitive action the identity signs),
    /// then forgets the local token: the next operation needs <see cref="LoginAsync"/>.
    /// </summary>
    public async Task RevokeAllTokensAsync(CancellationToken cancellationToken = default)
    {
        ThrowIfClosed();
        await AuthenticatedAsync(async token =>
        {
            var (challenge, bytes) = await SensitiveChallengeAsync("revoke-all-tokens", ActionFields.hash(ActionFields.revokeAllTokens), cancellationToken);
            var signature = await _identity.SignRevokeAllTokensIntentAsync(bytes, cancellationToken);
            await _client.RevokeAllTokensAsync(token, new RevokeAllTokensRequest("keystore", _keyId.Wire, challenge,
                Convert.ToHexStringLower(signature)), cancellationToken);
            return 0;
        }, mayPrompt: true, cancellationToken);
        await _authLock.WaitAsync(cancellationToken);
        try
        {
            await SaveIdentityAsync(Auth.clearToken(_state, Now), cancellationToken);
        }
        finally
        {
            _authLock.Release();
        }
        UpdateStatus(st => st with { LoginRequired = true });
        Emit(SyncEventType.LoginRequired);
    }

    // ------------------------------------------------------------------ the pass

    /// <summary>
    /// Runs one full sync pass now and waits for it: local changes are detected, remote changes
    /// downloaded and merged, dirty items uploaded. May log in (and prompt the identity).
    /// </summary>
    /// <exception cref="SyncEngineClosedException">The engine was disposed.</exception>
    /// <exception cref="RollbackDetectedException">The server went back in time; nothing was overwritten.</exception>
    public Task SyncNowAsync(CancellationToken cancellationToken = default) => PassAsync(mayPrompt: true, cancellationToken);

    private async Task PassAsync(bool mayPrompt, CancellationToken cancellationToken)
    {
        ThrowIfClosed();
        using var linked = Linked(cancellationToken);
        var ct = linked.Token;
        await _syncLock.WaitAsync(ct);
        try
        {
            ThrowIfClosed();
            using var activity = SyncTelemetry.Source.StartActivity("bitboxsync.sync");
            activity?.SetTag("bitboxsync.key_id", _keyId.Wire[..16]);
            var started = System.Diagnostics.Stopwatch.GetTimestamp();
            EngineLog.PassStarted(_log);
            Emit(SyncEventType.SyncStarted);
            UpdateStatus(st => st with { Syncing = true, Downloaded = 0, DownloadsPlanned = 0, Uploaded = 0, UploadsPlanned = 0 });
            try
            {
                await AuthenticatedAsync(async token =>
                {
                    var pass = new Pass(this, token, ct);
                    await pass.RunAsync();
                    return pass.Activity;
                }, mayPrompt, ct);
                var (pending, conflicts) = await DirtyCountsAsync(ct);
                UpdateStatus(st => st with
                {
                    Syncing = false, Connected = true, LoginRequired = false, LastSyncedAt = Now, LastError = null,
                    PendingUploads = pending, Conflicts = conflicts,
                });
                var elapsed = System.Diagnostics.Stopwatch.GetElapsedTime(started);
                SyncTelemetry.Passes.Add(1, new KeyValuePair<string, object?>("outcome", "success"));
                SyncTelemetry.PassDuration.Record(elapsed.TotalSeconds, new KeyValuePair<string, object?>("outcome", "success"));
                var st = Status;
                EngineLog.PassFinished(_log, elapsed.TotalMilliseconds, st.Uploaded, st.Downloaded, pending, conflicts);
                activity?.SetTag("bitboxsync.items.uploaded", st.Uploaded);
                activity?.SetTag("bitboxsync.items.downloaded", st.Downloaded);
                Emit(SyncEventType.SyncFinished);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                UpdateStatus(st => st with
                {
                    Syncing = false, LastError = e, LoginRequired = e is LoginRequiredException,
                    Connected = e is not SyncTransportException && st.Connected,
                });
                var elapsed = System.Diagnostics.Stopwatch.GetElapsedTime(started);
                var kind = SyncTelemetry.Kind(FailureOf(e));
                var outcome = new KeyValuePair<string, object?>("outcome", "failure");
                var failureKind = new KeyValuePair<string, object?>("failure.kind", kind);
                SyncTelemetry.Passes.Add(1, outcome, failureKind);
                SyncTelemetry.PassDuration.Record(elapsed.TotalSeconds, outcome, failureKind);
                SyncTelemetry.Failures.Add(1, new KeyValuePair<string, object?>("kind", kind));
                EngineLog.PassFailed(_log, elapsed.TotalMilliseconds, kind, e.GetType().Name, e.Message);
                if (e is RollbackDetectedException) EngineLog.Rollback(_log, e.Message);
                activity?.SetStatus(System.Diagnostics.ActivityStatusCode.Error, e.GetType().Name);
                activity?.SetTag("error.type", e.GetType().FullName);
                Emit(SyncEventType.SyncFailed, error: e);
                throw;
            }
            catch (OperationCanceledException)
            {
                UpdateStatus(st => st with { Syncing = false });
                throw;
            }
        }
        finally
        {
            _syncLock.Release();
        }
    }

    private bool _lastPassActivity;

    /// <summary>Item downloads in flight during an item-map reconciliation (applies stay sequential).</summary>
    private const int MaxParallelDownloads = 8;
    private TaskCompletionSource _nextPass = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _runPassesStarted;
    private int _runPassesCompleted;

    /// <summary>One pass's state: the token, the per-namespace scopes computed once, and the effects.</summary>
    private sealed class Pass(SyncEngine e, string token, CancellationToken ct)
    {
        private readonly Dictionary<string, (NamespaceKeys Keys, ActiveScope Scope, List<ICollectionAdapter> Collections)> _scopes = new(StringComparer.Ordinal);
        private readonly Dictionary<ICollectionAdapter, long?> _stamps = new();

        public bool Activity { get; private set; }

        private DateTimeOffset Now => e.Now;

        public async Task RunAsync()
        {
            await ReconcileSnapshotsAsync();
            await ReconcileNamespacesAsync();
            await FlushAsync();
            e._lastPassActivity = Activity;
        }

        private async Task<(NamespaceKeys Keys, ActiveScope Scope, List<ICollectionAdapter> Collections)> ScopeOfAsync(NamespaceId ns)
        {
            if (_scopes.TryGetValue(ns.Wire, out var known)) return known;
            var row = await e.EnsureReadyAsync(ns, null, () => Task.FromResult(token), ct);
            var keys = NamespaceKeysModule.derive(row.Dek!.Value);
            var collections = e._collections.Where(c => c.Key.Namespace == ns.Wire).Select(c => c.Value)
                .OrderBy(c => c.Name, StringComparer.Ordinal).ToList();
            var keyLists = new List<(string Collection, string[] Keys)>();
            foreach (var c in collections)
            {
                // The change stamp is read before the keys and the snapshot: a write after it is seen again next pass.
                var stamp = await c.ChangeStampAsync(ct);
                _stamps[c] = stamp;
                string[] collectionKeys;
                if (stamp is { } now && c.KeysAtStamp is { } atStamp && atStamp.Stamp == now)
                {
                    collectionKeys = atStamp.Keys;
                }
                else
                {
                    collectionKeys = (await c.KeysAsync(ct)).ToArray();
                    // A key that enters the scope is compared with its base even if it was not written.
                    if (c.KeysAtStamp is { } previous && c.ReconciledStamp is not null)
                        c.EnteredScope.UnionWith(collectionKeys.Except(previous.Keys, StringComparer.Ordinal));
                    c.KeysAtStamp = stamp is { } at ? (at, collectionKeys) : null;
                }
                keyLists.Add((c.Name, collectionKeys));
            }
            // The scope (one HMAC per key) is reused while the DEK and every collection's keys are unchanged.
            ActiveScope scope;
            if (e._scopeCache.TryGetValue(ns.Wire, out var cached) && cached.Dek.Equals(row.Dek.Value) && SameKeys(cached.Keys, keyLists))
            {
                scope = cached.Scope;
            }
            else
            {
                scope = Scope.build(keys, ListModule.OfSeq(keyLists.Select(k => new CollectionKeys(k.Collection, ListModule.OfSeq(k.Keys.Distinct())))));
                e._scopeCache[ns.Wire] = (row.Dek.Value, keyLists, scope);
            }
            return _scopes[ns.Wire] = (keys, scope, collections);
        }

        private static bool SameKeys(List<(string Collection, string[] Keys)> a, List<(string Collection, string[] Keys)> b)
        {
            if (a.Count != b.Count) return false;
            for (var i = 0; i < a.Count; i++)
                if (a[i].Collection != b[i].Collection || (!ReferenceEquals(a[i].Keys, b[i].Keys) && !a[i].Keys.AsSpan().SequenceEqual(b[i].Keys)))
                    return false;
            return true;
        }

        private async Task SaveItemsAsync(IEnumerable<ItemState> rows, params NamespaceState[] namespaces) =>
            await e._store.SaveAsync(new StoreWrite { Items = rows.Select(ToRecord).ToList(), Namespaces = namespaces.Select(ToRecord).ToList() }, ct);

        /// <summary>Above this many changed keys, the namespace's rows are read in one query instead of one by one.</summary>
        private const int ChangedKeysReadOneByOne = 64;

        // docs/engine.md §4.3: local change detection, one batch per collection. A change-tracking backend whose
        // stamp has not moved since the last saved reconciliation is skipped without reading a value;
        // after a few writes only the written keys are compared with their bases.
        private async Task ReconcileSnapshotsAsync()
        {
            foreach (var ns in e._collections.Keys.Select(k => k.Namespace).Distinct().Order(StringComparer.Ordinal))
            {
                var nsId = Bin.parse<NamespaceIdKind>(ns).ResultValue;
                var (keys, scope, collections) = await ScopeOfAsync(nsId);
                List<ItemState>? rows = null;
                foreach (var c in collections)
                {
                    var stamp = _stamps[c];
                    if (stamp is { } current && c.ReconciledStamp == current) continue;
                    var changed = stamp is not null && c.ReconciledStamp is { } last ? await c.ChangedSinceAsync(last, c.EnteredScope, ct) : null;
                    Dictionary<string, ItemState> byKey;
                    if (changed is not null && changed.Count <= ChangedKeysReadOneByOne)
                    {
                        byKey = new(StringComparer.Ordinal);
                        foreach (var (key, _) in changed)
                            if (await e._store.GetItemByLogicalKeyAsync(e._keyId.Wire, ns, c.Name, key, ct) is { } row)
                                byKey[key] = ToCore(row);
                    }
                    else
                    {
                        rows ??= (await e._store.ListNamespaceItemsAsync(e._keyId.Wire, ns, ct)).Select(ToCore).ToList();
                        byKey = rows.Where(r => r.Collection == c.Name).ToDictionary(r => r.Key, StringComparer.Ordinal);
                    }
                    var snapshot = changed ?? await c.SnapshotAsync(ct);
                    var effects = Snapshot.reconcile(new SnapshotInput(e._keyId, nsId, c.Name, scope, byKey,
                        ListModule.OfSeq(snapshot.Select(kv => Tuple.Create(kv.Key, kv.Value))),
                        FuncConvert.FromFunc<string, ItemId>(key => LogicalKey.itemId(keys, c.Name, key)), Now));
                    foreach (var outside in effects.OfType<SnapshotEffect.OutsideScope>())
                        if (e._reportedOutsideScope.TryAdd((ns, outside.collection, outside.key), 0))
                            e.Emit(SyncEventType.KeyOutsideScope, ns, outside.collection, outside.key);
                    var queued = effects.OfType<SnapshotEffect.Queue>().Select(q => q.Item).ToList();
                    if (queued.Count > 0)
                    {
                        await SaveItemsAsync(queued);
                        foreach (var row in queued) e.Emit(row, ItemEvent.ItemQueued);
                    }
                    c.ReconciledStamp = stamp;
                    c.EnteredScope.Clear();
                }
            }
        }

        // docs/engine.md §4.4–§4.7: the namespace list, then each namespace's item map and downloads.
        private async Task ReconcileNamespacesAsync()
        {
            var listed = await e.ListedNamespacesAsync(token, ct);
            var cached = (await e._store.ListNamespacesAsync(e._keyId.Wire, ct)).Select(ToCore);
            var checkedPlan = Namespaces.check(e._state, ListModule.OfSeq(cached), listed, Now);
            if (checkedPlan.IsError) throw ToException(checkedPlan.ErrorValue);
            var plan = checkedPlan.ResultValue;
            if (plan.AdoptDefault is { } adopt)
            {
                var s = e._state;
                await e.SaveIdentityAsync(new IdentityState(s.KeyId, s.Kind, s.AccessToken, s.TokenExpiry, adopt, Now), ct);
            }

            foreach (var p in plan.Namespaces)
            {
                var planned = p;
                if (p.NeedsJoin)
                {
                    var joined = await e.JoinAsync(token, p.Listed.NamespaceId, p.Listed.Kind, ct);
                    planned = new NamespacePlan(p.Listed, new NamespaceState(joined.KeyId, joined.NamespaceId,
                        FSharpOption<NamespaceKind>.Some(p.Listed.Kind), p.Row.Head, p.Row.ActiveScopeHash, joined.Dek, joined.UpdatedAt),
                        false, p.RemoteChanged, true);
                }
                var (keys, scope, collections) = await ScopeOfAsync(planned.Listed.NamespaceId);
                switch (Namespaces.decide(planned, Scope.hashOf(scope), Now))
                {
                    case NamespaceAction.Save save:
                        await e.SaveNamespaceAsync(save.Item, ct);
                        break;
                    case NamespaceAction.FetchItemMap fetch:
                        await ItemMapAsync(planned, fetch.expectedHead, keys, scope);
                        break;
                }
            }
        }

        private async Task ItemMapAsync(NamespacePlan p, ulong expectedHead, NamespaceKeys keys, ActiveScope scope)
        {
            var ns = p.Listed.NamespaceId;
            var map = await e._client.GetNamespaceItemsAsync(token, ns.Wire, ct);
            var items = new List<Tuple<ItemId, ulong>>();
            foreach (var (id, v) in map.Items)
            {
                var parsed = Bin.parse<ItemIdKind>(id);
                if (parsed.IsError) throw new SyncProtocolException("item map: " + parsed.ErrorValue.Message);
                items.Add(Tuple.Create(parsed.ResultValue, v.Version));
            }
            var cached = (await e._store.ListNamespaceItemsAsync(e._keyId.Wire, ns.Wire, ct)).Select(ToCore);
            var planned = ItemMap.plan(new ItemMapInput(p.Row, expectedHead, map.NamespaceHead, MapModule.OfSeq(items),
                ListModule.OfSeq(cached), scope, Now));
            if (planned.IsError) throw ToException(planned.ErrorValue);
            var plan = planned.ResultValue;
            foreach (var unknown in plan.Unknown)
                e.Emit(SyncEventType.UnknownRemoteItem, ns.Wire, itemId: unknown.Wire);
            var downloads = plan.Downloads.ToList();
            e.UpdateStatus(st => st with { DownloadsPlanned = st.DownloadsPlanned + downloads.Count });
            // Fetch ahead, a few requests in flight; apply strictly in the planned order.
            using var fetching = CancellationTokenSource.CreateLinkedTokenSource(ct);
            using var inFlight = new SemaphoreSlim(MaxParallelDownloads);
            var fetches = downloads.Select(async d =>
            {
                await inFlight.WaitAsync(fetching.Token);
                try
                {
                    return await e._client.GetItemAsync(token, ns.Wire, d.Item1.ItemId.Wire, fetching.Token);
                }
                finally
                {
                    inFlight.Release();
                }
            }).ToList();
            _batch = [];
            try
            {
                for (var i = 0; i < downloads.Count; i++)
                {
                    await ApplyRemoteAsync(downloads[i].Item1, FSharpOption<ulong>.Some(downloads[i].Item2), keys, await fetches[i]);
                    e.UpdateStatus(st => st with { Downloaded = st.Downloaded + 1 });
                }
                var applied = _batch;
                _batch = null;
                // Every applied row and the new head: one transaction.
                await SaveItemsAsync(applied.Select(o => o.Row), ItemMapFinish.decide(plan, p.Row, _retryLater));
                foreach (var outcome in applied)
                {
                    Settled(outcome.Row);
                    foreach (var ev in outcome.Events) e.Emit(outcome.Row, ev);
                }
            }
            finally
            {
                _batch = null;
                await fetching.CancelAsync();
                try { await Task.WhenAll(fetches); } catch { /* abandoned prefetches */ }
            }
            e.Emit(SyncEventType.NamespaceChanged, ns.Wire);
            Activity = true;
        }

        // docs/engine.md §4.7: download one item and apply it through the core's decisions.
        private async Task ApplyRemoteAsync(ItemState row, FSharpOption<ulong> mapVersion, NamespaceKeys keys, GetItemResponse? fetched = null)
        {
            var response = fetched ?? await e._client.GetItemAsync(token, row.NamespaceId.Wire, row.ItemId.Wire, ct);
            var check = Download.checkVersion(row, mapVersion, response.Version);
            if (check.IsError) throw ToException(check.ErrorValue);

            var nonce = Bin.parse<ItemNonceKind>(response.Nonce);
            var aad = Bin.parse<ItemAadKind>(response.Aad);
            var ciphertext = Bin.parse<CiphertextKind>(response.Ciphertext);
            if (nonce.IsError || aad.IsError || ciphertext.IsError)
            {
                Quarantined(row, "unreadable remote value: " + (nonce.IsError ? nonce.ErrorValue : aad.IsError ? aad.ErrorValue : ciphertext.ErrorValue).Message);
                return;
            }
            SyncTelemetry.BytesDownloaded.Add(ciphertext.ResultValue.Length);
            var opened = ItemCrypto.openItem(keys, row.NamespaceId, row.ItemId, response.Version,
                new SealedItem(nonce.ResultValue, aad.ResultValue, ciphertext.ResultValue));
            if (opened.IsError)
            {
                Quarantined(row, "unreadable remote value: " + opened.ErrorValue.Message);
                return;
            }
            var remote = opened.ResultValue;

            // A quarantined item is retried only when the remote version or the local value changed.
            e._collections.TryGetValue((row.NamespaceId.Wire, row.Collection), out var registered);
            if (e._quarantineState.TryGetValue((row.NamespaceId.Wire, row.ItemId.Wire), out var parked))
            {
                var localNow = registered is null ? null : await registered.GetAsync(row.Key, ct);
                if (!Quarantine.shouldRetry(parked, response.Version, localNow is null ? LocalValue.Absent : LocalValue.NewPresent(localNow)))
                    return;
            }

            var current = await e._store.GetItemByIdAsync(e._keyId.Wire, row.NamespaceId.Wire, row.ItemId.Wire, ct);
            var target = Download.rowToApply(current is null ? FSharpOption<ItemState>.None : FSharpOption<ItemState>.Some(ToCore(current)), row, response.Version);
            if (target is null) return;
            var item = target.Value;
            Activity = true;

            e._collections.TryGetValue((item.NamespaceId.Wire, item.Collection), out var adapter);
            var functions = adapter is null ? null : FSharpOption<CollectionFunctions>.Some(adapter.Functions);
            var decision = Apply.start(item, response.Version, remote, functions, Now);
            if (decision.IsReadLocal)
            {
                var local = adapter is null ? null : await adapter.GetAsync(item.Key, ct);
                MergeContext.Key = item.Key;
                decision = Apply.decide(item, response.Version, remote,
                    local is null ? LocalValue.Absent : LocalValue.NewPresent(local), functions, Now);
                if (decision is ApplyDecision.Write write)
                {
                    var w = write.Item;
                    bool replaced;
                    try
                    {
                        replaced = await adapter!.SetIfCurrentAsync(item.Key, w.Expected is Expected.Present present ? present.Item : null, w.Value, ct);
                    }
                    catch (Exception ex) when (ex is not OperationCanceledException)
                    {
                        // Transient (the app's storage failed): not parked, retried by the next pass.
                        _retryLater = true;
                        Quarantined(item, "the app's backend refused the value: " + ex.Message);
                        return;
                    }
                    await SaveOutcomeAsync(replaced ? w.OnWritten : w.OnLostRace);
                    return;
                }
            }

            switch (decision)
            {
                case ApplyDecision.Save save:
                    await SaveOutcomeAsync(save.Item);
                    break;
                case ApplyDecision.Quarantine q:
                    await ParkAsync(item, q.Item, response.Version);
                    Quarantined(item, q.Item.Message);
                    break;
            }
        }

        /// <summary>Outcomes of the item map being applied, saved with its head in one transaction (docs/engine.md §12.13).</summary>
        private List<Outcome>? _batch;

        /// <summary>A download failed transiently in this pass: the namespace head must not move past it.</summary>
        private bool _retryLater;

        private async Task SaveOutcomeAsync(Outcome outcome)
        {
            if (_batch is not null)
            {
                _batch.Add(outcome);
                return;
            }
            Settled(outcome.Row);
            await SaveItemsAsync([outcome.Row]);
            foreach (var ev in outcome.Events) e.Emit(outcome.Row, ev);
        }

        /// <summary>Remembers what a quarantined apply saw (remote version, local value) for the retry rule.</summary>
        private async Task ParkAsync(ItemState row, QuarantineReason reason, ulong remoteVersion)
        {
            e._collections.TryGetValue((row.NamespaceId.Wire, row.Collection), out var adapter);
            var local = adapter is null ? null : await adapter.GetAsync(row.Key, ct);
            e._quarantineState[(row.NamespaceId.Wire, row.ItemId.Wire)] =
                Quarantine.create(row, reason, remoteVersion, local is null ? LocalValue.Absent : LocalValue.NewPresent(local));
        }

        private void Settled(ItemState row)
        {
            e._quarantined.TryRemove((row.NamespaceId.Wire, row.ItemId.Wire), out _);
            e._quarantineState.TryRemove((row.NamespaceId.Wire, row.ItemId.Wire), out _);
        }

        /// <summary>Lists the item as quarantined; the event is emitted when it is new or its error changed.</summary>
        private void Quarantined(ItemState row, string why)
        {
            var id = (row.NamespaceId.Wire, row.ItemId.Wire);
            if (e._quarantined.TryGetValue(id, out var known) && known.Error == why) return;
            e._quarantined.AddOrUpdate(id,
                _ => new QuarantinedItem(row.NamespaceId.Wire, row.Collection, row.Key, row.ItemId.Wire, why, Now),
                (_, old) => old with { Error = why });
            e.Emit(SyncEventType.ItemQuarantined, row.NamespaceId.Wire, row.Collection, row.Key, row.ItemId.Wire, new SyncException(why));
        }

        // docs/engine.md §4.10: upload dirty items, oldest first; a 412 fetches, merges and retries once.
        // Uploads go out in chunks: each chunk's items are prepared in order, sent with a few requests in
        // flight, and the accepted ones are saved clean in one transaction with the head they moved (an
        // item is never marked clean before its upload was accepted; a crash before that transaction
        // leaves it dirty, and its next upload meets 412, fetches its own value and converges).
        private async Task FlushAsync()
        {
            var dirty = (await e._store.ListDirtyItemsAsync(e._keyId.Wire, ct)).Select(ToCore).ToList();
            e.UpdateStatus(st => st with { UploadsPlanned = dirty.Count(d => !d.Conflict) });
            var order = Flush.order(ListModule.OfSeq(dirty)).Where(d => _scopes.ContainsKey(d.NamespaceId.Wire)).ToList();
            for (var start = 0; start < order.Count; start += UploadChunk)
            {
                var refused = await FlushChunkAsync(order.GetRange(start, Math.Min(UploadChunk, order.Count - start)));
                // A 412 (or 428): fetch, merge, and retry once, one item at a time.
                foreach (var row in refused) await FlushOneAsync(row, refusedOnce: true);
            }
        }

        /// <summary>Items per chunk of pipelined uploads (one metadata transaction each).</summary>
        private const int UploadChunk = 64;

        /// <summary>One prepared upload: the row, its intent and the sealed item.</summary>
        private sealed record PreparedUpload(ItemState Row, UploadIntent Intent, SealedItem Sealed);

        /// <summary>Reads the row and the local value, decides, seals; null when nothing is to be sent.</summary>
        private async Task<PreparedUpload?> PrepareUploadAsync(ItemState first)
        {
            var (keys, scope, _) = _scopes[first.NamespaceId.Wire];
            var stored = await e._store.GetItemByIdAsync(e._keyId.Wire, first.NamespaceId.Wire, first.ItemId.Wire, ct);
            if (stored is null) return null;
            var row = ToCore(stored);
            var active = Scope.isActive(scope, row.Collection, row.ItemId);
            e._collections.TryGetValue((row.NamespaceId.Wire, row.Collection), out var adapter);
            var local = adapter is null ? null : await adapter.GetAsync(row.Key, ct);
            var step = Flush.prepare(row, active, local is null ? LocalValue.Absent : LocalValue.NewPresent(local));
            if (step is FlushStep.Skip skip)
            {
                if (skip.Item.IsValueMissing || skip.Item.IsTooLarge)
                    Quarantined(row, "not uploaded: " + Quarantine.ofFlushSkip(skip.Item).Value.Message);
                return null;
            }
            var intent = ((FlushStep.Upload)step).Item;
            var nonce = Bin.ofBytes<ItemNonceKind>(e._options.RandomBytes(24)).ResultValue;
            var sealedItem = ItemCrypto.seal(keys, row.NamespaceId, row.ItemId, intent.TargetVersion, nonce, intent.Plaintext);
            if (sealedItem.IsError)
            {
                Quarantined(row, "seal: " + sealedItem.ErrorValue.Message);
                return null;
            }
            return new PreparedUpload(row, intent, sealedItem.ResultValue);
        }

        private Task<PutItemResponse> SendAsync(PreparedUpload u, CancellationToken token2) =>
            e._client.PutItemAsync(token, u.Row.NamespaceId.Wire, u.Row.ItemId.Wire,
                new PutItemRequest(u.Sealed.Nonce.Wire, u.Sealed.Aad.Wire, u.Sealed.Ciphertext.Wire),
                u.Intent.IfMatch.IsAbsent ? null : u.Row.Version, token2);

        /// <summary>
        /// Sends a chunk (a few PUTs in flight), saves every accepted item in one transaction, and
        /// returns the rows refused with 412/428 in order. Any other failure is thrown after the
        /// accepted ones were saved.
        /// </summary>
        private async Task<List<ItemState>> FlushChunkAsync(List<ItemState> chunk)
        {
            var prepared = new List<PreparedUpload>(chunk.Count);
            foreach (var first in chunk)
                if (await PrepareUploadAsync(first) is { } u) prepared.Add(u);
            using var inFlight = new SemaphoreSlim(e._options.UploadsInFlight);
            var sends = prepared.Select(async u =>
            {
                await inFlight.WaitAsync(ct);
                try
                {
                    return await SendAsync(u, ct);
                }
                finally
                {
                    inFlight.Release();
                }
            }).ToList();
            var accepted = new List<Outcome>();
            var refused = new List<ItemState>();
            Exception? failure = null;
            for (var i = 0; i < sends.Count; i++)
            {
                try
                {
                    var answer = await sends[i];
                    SyncTelemetry.BytesUploaded.Add(prepared[i].Sealed.Ciphertext.Length);
                    accepted.Add(Flush.accepted(prepared[i].Intent, answer.Version, Now));
                }
                catch (SyncApiException x) when (x.StatusCode is 412 or 428)
                {
                    refused.Add(prepared[i].Row);
                }
                catch (Exception x)
                {
                    failure ??= x;
                }
            }
            await SaveUploadedAsync(accepted);
            if (failure is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
            return refused;
        }

        /// <summary>Accepted uploads: clean rows and the heads they moved, one transaction (docs/engine.md §12.13).</summary>
        private async Task SaveUploadedAsync(List<Outcome> accepted)
        {
            if (accepted.Count == 0) return;
            var heads = new List<NamespaceState>();
            foreach (var group in accepted.GroupBy(o => o.Row.NamespaceId.Wire))
            {
                var nsRow = await e.LoadNamespaceAsync(group.First().Row.NamespaceId, ct);
                if (nsRow is null) continue;
                foreach (var _ in group) nsRow = Namespaces.afterUpload(nsRow, Now);
                heads.Add(nsRow);
            }
            await SaveItemsAsync(accepted.Select(o => o.Row), [.. heads]);
            foreach (var outcome in accepted)
            {
                foreach (var ev in outcome.Events) e.Emit(outcome.Row, ev);
                Settled(outcome.Row);
            }
            e.UpdateStatus(st => st with { Uploaded = st.Uploaded + accepted.Count });
            Activity = true;
        }

        /// <summary>One item, one request at a time: after <paramref name="refusedOnce"/> its first PUT met a 412.</summary>
        private async Task FlushOneAsync(ItemState first, bool refusedOnce)
        {
            var (keys, scope, _) = _scopes[first.NamespaceId.Wire];
            for (var attempt = 1; attempt <= 2; attempt++)
            {
                if (!(refusedOnce && attempt == 1))
                {
                    var u = await PrepareUploadAsync(first);
                    if (u is null) return;
                    try
                    {
                        var answer = await SendAsync(u, ct);
                        SyncTelemetry.BytesUploaded.Add(u.Sealed.Ciphertext.Length);
                        await SaveUploadedAsync([Flush.accepted(u.Intent, answer.Version, Now)]);
                        return;
                    }
                    catch (SyncApiException x) when (x.StatusCode is 412 or 428)
                    {
                    }
                }
                var stored = await e._store.GetItemByIdAsync(e._keyId.Wire, first.NamespaceId.Wire, first.ItemId.Wire, ct);
                if (stored is null) return;
                var row = ToCore(stored);
                await ApplyRemoteAsync(row, FSharpOption<ulong>.None, keys);
                var again = await e._store.GetItemByIdAsync(e._keyId.Wire, row.NamespaceId.Wire, row.ItemId.Wire, ct);
                var decision = Flush.afterPreconditionFailure(attempt,
                    again is null ? FSharpOption<ItemState>.None : FSharpOption<ItemState>.Some(ToCore(again)),
                    Scope.isActive(scope, row.Collection, row.ItemId));
                if (!decision.IsRetry) return;
            }
        }
    }

    // ------------------------------------------------------------------ conflicts

    internal async Task<IReadOnlyList<Conflict<T>>> ConflictsAsync<T>(string ns, CollectionAdapter<T> adapter, CancellationToken ct)
    {
        ThrowIfClosed();
        var result = new List<Conflict<T>>();
        foreach (var row in await _store.ListNamespaceItemsAsync(_keyId.Wire, ns, ct))
        {
            if (!row.Conflict || row.Collection != adapter.Name) continue;
            var hasBase = row.BaseVersion != 0 || row.BaseValue is { Length: > 0 };
            var local = await adapter.Backend.GetAsync(row.Key, ct);
            result.Add(new Conflict<T>(row.Key, hasBase, hasBase && row.BaseValue is { } b ? adapter.Codec.Decode(b) : default,
                local, adapter.Codec.Decode(row.ConflictRemoteValue ?? []), row.ConflictRemoteVersion));
        }
        return result;
    }

    internal async Task ResolveAsync<T>(string ns, CollectionAdapter<T> adapter, string key, ConflictChoice choice, byte[]? value, CancellationToken ct)
    {
        ThrowIfClosed();
        ArgumentNullException.ThrowIfNull(key);
        using var linked = Linked(ct);
        // The sync lock: a pass never applies a remote value to this key while it is being resolved.
        await _syncLock.WaitAsync(linked.Token);
        try
        {
            var stored = await _store.GetItemByLogicalKeyAsync(_keyId.Wire, ns, adapter.Name, key, linked.Token)
                ?? throw new KeyNotFoundException($"no sync metadata for key \"{key}\" of collection \"{adapter.Name}\"");
            var row = ToCore(stored);
            Resolution resolution = choice switch
            {
                ConflictChoice.Value => Conflicts.resolveWithValue(row, value!, Now),
                ConflictChoice.Remote => Conflicts.preferRemote(row, Now),
                _ => Conflicts.preferLocal(row, await adapter.GetAsync(key, linked.Token) is { } local ? LocalValue.NewPresent(local) : LocalValue.Absent, Now),
            };
            switch (resolution)
            {
                case Resolution.WriteAndSave write:
                    await adapter.SetAsync(key, write.value, linked.Token);
                    await _store.SaveAsync(new StoreWrite { Items = [ToRecord(write.row)] }, linked.Token);
                    break;
                case Resolution.Save save:
                    await _store.SaveAsync(new StoreWrite { Items = [ToRecord(save.Item)] }, linked.Token);
                    break;
                case var r when r.IsLocalValueMissing:
                    throw new InvalidOperationException($"the backend has no value for key \"{key}\" to keep");
                default:
                    return; // not in conflict
            }
            Emit(SyncEventType.ConflictResolved, ns, adapter.Name, key, row.ItemId.Wire);
            var (pending, conflicts) = await DirtyCountsAsync(linked.Token);
            UpdateStatus(st => st with { PendingUploads = pending, Conflicts = conflicts });
        }
        finally
        {
            _syncLock.Release();
        }
        ScheduleSync();
    }

    // ------------------------------------------------------------------ sharing

    /// <summary>
    /// Joins a namespace after a join request was approved: fetches and unwraps this identity's
    /// wrapped DEK (always refetched) and caches it. Passes also join listed namespaces on their own.
    /// </summary>
    public Task<SyncNamespace> JoinNamespaceAsync(string namespaceId, CancellationToken cancellationToken = default)
    {
        ThrowIfClosed();
        var ns = ParseNamespaceId(namespaceId, nameof(namespaceId));
        return AuthenticatedAsync(async token =>
        {
            // The kind comes from the namespace list, so the handle can create invites at once (docs/engine.md §12.20).
            var kind = (await ListedNamespacesAsync(token, cancellationToken)).FirstOrDefault(l => l.NamespaceId.Equals(ns))?.Kind;
            var row = await JoinAsync(token, ns, kind, cancellationToken);
            return new SyncNamespace(this, ns.Wire, row.Kind is null ? null : row.Kind.Value.Wire);
        }, mayPrompt: true, cancellationToken);
    }

    /// <summary>
    /// Asks to join the namespace of a scanned invite (docs/engine.md §8.5): signs a join request bound to the
    /// invite, the server origin and an expiry, with a proof that it holds the invite secret. After
    /// a member approves, call <see cref="JoinNamespaceAsync"/> (or let a pass join it).
    /// </summary>
    /// <exception cref="ArgumentException">The invite is malformed.</exception>
    /// <exception cref="SyncException">The invite has expired, or the expiry options are out of range.</exception>
    public async Task<SubmitNamespaceJoinRequestResponse> SubmitJoinRequestAsync(Invite invite, JoinRequestOptions? options = null, CancellationToken cancellationToken = default)
    {
        ThrowIfClosed();
        ArgumentNullException.ThrowIfNull(invite);
        var token = invite.ToCanonicalToken();
        var expiry = Core.Sharing.joinRequestExpiry(token, options?.ExpiresAt is { } e ? FSharpOption<long>.Some(e) : FSharpOption<long>.None,
            options?.Ttl ?? TimeSpan.Zero, Now);
        if (expiry.IsError) throw new SyncException(expiry.ErrorValue);
        var expiresAt = expiry.ResultValue;
        var signature = await _identity.SignNamespaceJoinRequestIntentAsync(Bin.toArray(token.NamespaceId), Bin.toArray(token.InviteId),
            token.ServerOrigin.Value, expiresAt, cancellationToken);
        var auth = Bin.ofBytes<AuthPublicKeyKind>(_identity.AuthPublicKey.ToArray()).ResultValue;
        var wrap = Bin.ofBytes<WrapPublicKeyKind>(_identity.WrapPublicKey.ToArray()).ResultValue;
        var payload = JoinRequests.payload(new JoinRequestFields(token.NamespaceId, token.InviteId, token.ServerOrigin, IdentityKind.Keystore,
            _keyId, auth, wrap, expiresAt));
        var request = new SubmitNamespaceJoinRequestRequest(
            InviteSecrets.serverSecret(token.InviteSecret).Wire,
            new NamespaceJoinRequest(1, token.NamespaceId.Wire, token.InviteId.Wire, token.ServerOrigin.Value, "keystore", _keyId.Wire,
                auth.Wire, wrap.Wire, expiresAt, Convert.ToHexStringLower(signature), InviteSecrets.proof(token.InviteSecret, payload).Wire));
        return await AuthenticatedAsync(t => _client.SubmitNamespaceJoinRequestAsync(t, token.NamespaceId.Wire, token.InviteId.Wire, request, cancellationToken),
            mayPrompt: true, cancellationToken);
    }

    internal async Task<Invite> CreateInviteAsync(string namespaceId, InviteOptions options, CancellationToken ct)
    {
        ThrowIfClosed();
        ArgumentNullException.ThrowIfNull(options);
        var parameters = Core.Sharing.inviteParameters(options.Ttl, options.MaxAccepted, Now);
        if (parameters.IsError) throw new ArgumentException(parameters.ErrorValue, nameof(options));
        var origin = ServerOriginModule.canonicalize(options.ServerOrigin ?? "");
        if (origin.IsError) throw new ArgumentException("server origin: " + origin.ErrorValue.Message, nameof(options));
        var ns = ParseNamespaceId(namespaceId, nameof(namespaceId));
        // A default namespace (or one of unknown kind) fails here, before any challenge.
        await EnsureReadyAsync(ns, NamespaceKind.Shared, () => TokenAsync(true, ct), ct);
        var inviteId = options.InviteId is null
            ? Bin.ofBytes<InviteIdKind>(_options.RandomBytes(16)).ResultValue
            : Bin.parse<InviteIdKind>(options.InviteId) is { IsOk: true } id ? id.ResultValue : throw new ArgumentException("invalid invite ID", nameof(options));
        var secret = options.InviteSecret is null
            ? Bin.ofBytes<InviteSecretKind>(_options.RandomBytes(32)).ResultValue
            : Bin.parse<InviteSecretKind>(options.InviteSecret) is { IsOk: true } sec ? sec.ResultValue : throw new ArgumentException("invalid invite secret", nameof(options));
        var p = parameters.ResultValue;
        var serverHash = InviteSecrets.serverSecretHash(InviteSecrets.serverSecret(secret));
        var fieldsHash = ActionFields.hash(ActionFields.createInvite(new CreateInviteFields(ns, inviteId, serverHash, p.ExpiresAt, p.MaxAccepted)));
        await AuthenticatedAsync(async token =>
        {
            var (challenge, bytes) = await SensitiveChallengeAsync("create-namespace-invite", fieldsHash, ct);
            var signature = await _identity.SignCreateNamespaceInviteIntentAsync(bytes, Bin.toArray(ns), Bin.toArray(inviteId),
                Bin.toArray(serverHash), p.ExpiresAt, p.MaxAccepted, ct);
            var response = await _client.CreateNamespaceInviteAsync(token, ns.Wire, new CreateNamespaceInviteRequest("keystore", _keyId.Wire, inviteId.Wire,
                serverHash.Wire, challenge, Convert.ToHexStringLower(signature), p.ExpiresAt, p.MaxAccepted), ct);
            if (response.ExpiresAt != p.ExpiresAt) throw new SyncProtocolException("create invite response expiry mismatch");
            if (response.MaxAccepted != p.MaxAccepted) throw new SyncProtocolException("create invite response maxAccepted mismatch");
            return 0;
        }, mayPrompt: true, ct);
        return new Invite(1, origin.ResultValue.Value, ns.Wire, inviteId.Wire, p.ExpiresAt, secret.Wire);
    }

    internal async Task ApproveJoinRequestAsync(string namespaceId, Invite invite, NamespaceJoinRequestEntry entry, CancellationToken ct)
    {
        ThrowIfClosed();
        ArgumentNullException.ThrowIfNull(invite);
        ArgumentNullException.ThrowIfNull(entry);
        var ns = ParseNamespaceId(namespaceId, nameof(namespaceId));
        var verified = Core.Sharing.verifyJoinRequest(ns, invite.ToCanonicalToken(), entry.JoinRequestHash ?? "", entry.JoinRequest, Now);
        if (verified.IsError) throw new SyncException("join request refused: " + verified.ErrorValue);
        var v = verified.ResultValue;
        var row = await EnsureReadyAsync(ns, NamespaceKind.Shared, () => TokenAsync(true, ct), ct);
        var wrapped = DekWrap.wrap(v.WrapPublicKey, ns, row.Dek!.Value, _options.RandomBytes(32));
        if (wrapped.IsError) throw new SyncException("wrap DEK: " + wrapped.ErrorValue.Message);
        await AuthenticatedAsync(token => _client.ApproveNamespaceJoinRequestAsync(token, ns.Wire, v.RequesterKeyId.Wire, v.Hash.Wire,
            new ApproveNamespaceJoinRequestRequest(v.ServerSecret.Wire, wrapped.ResultValue.Wire), ct), mayPrompt: true, ct);
    }

    internal Task<T> WithTokenAsync<T>(Func<SyncClient, string, Task<T>> call, CancellationToken ct)
    {
        ThrowIfClosed();
        return AuthenticatedAsync(token => call(_client, token), mayPrompt: true, ct);
    }

    // ------------------------------------------------------------------ background loop

    /// <summary>Wakes <see cref="RunAsync"/> for a pass soon (coalesces; no network by itself). Call after app writes.</summary>
    public void ScheduleSync() => _wake.Writer.TryWrite(true);

    private volatile bool _idlePolling;

    /// <summary>Whether background polling slows down while nothing changes (idle mode).</summary>
    public bool IdlePolling => _idlePolling;

    /// <summary>Switches idle mode (for example when the app goes to the background) and wakes <see cref="RunAsync"/>.</summary>
    public void SetIdlePolling(bool idle)
    {
        _idlePolling = idle;
        ScheduleSync();
    }

    /// <summary>
    /// Every namespace this identity can see, after a namespace reconciliation under the sync lock
    /// (new ones are joined). Records carry no key material.
    /// </summary>
    public async Task<IReadOnlyList<NamespaceInfo>> ListNamespacesAsync(CancellationToken cancellationToken = default)
    {
        await SyncNowAsync(cancellationToken);
        return (await _store.ListNamespacesAsync(_keyId.Wire, cancellationToken))
            .OrderBy(n => n.Kind, StringComparer.Ordinal).ThenBy(n => n.NamespaceId, StringComparer.Ordinal)
            .Select(n => new NamespaceInfo(n.NamespaceId, n.Kind, n.Head)).ToList();
    }

    /// <summary>
    /// Syncs in the background until cancelled or disposed: a pass at start, after each
    /// <see cref="ScheduleSync"/>, and every poll interval (±10 % jitter), backing off after failures
    /// (a transient failure — no answer, 5xx, 408, 429 — is retried within seconds with full jitter,
    /// honouring <c>Retry-After</c>; other failures wait 10, 20, 40, 60 minutes by default; see
    /// docs/concepts.md). Background passes never prompt the identity: when a login
    /// is needed they report <see cref="SyncEventType.LoginRequired"/> and wait for <see cref="LoginAsync"/>.
    /// </summary>
    /// <exception cref="InvalidOperationException">Another <c>RunAsync</c> is already running.</exception>
    public async Task RunAsync(CancellationToken cancellationToken = default)
    {
        ThrowIfClosed();
        if (Interlocked.CompareExchange(ref _running, 1, 0) != 0)
            throw new InvalidOperationException("RunAsync is already running on this engine");
        try
        {
            using var linked = Linked(cancellationToken);
            var ct = linked.Token;
            var max = _options.MaxPollInterval is { } m ? m : TimeSpan.FromTicks(Math.Max(TimeSpan.FromMinutes(60).Ticks, _options.PollInterval.Ticks));
            var settings = Schedule.settings(_options.PollInterval, max);
            var schedule = Schedule.initial(settings);
            var requested = true;
            var watch = _options.DisableNamespaceWatch ? Task.CompletedTask : Task.Run(() => WatchLoopAsync(settings, ct), CancellationToken.None);
            try
            {
                while (true)
                {
                    ct.ThrowIfCancellationRequested();
                    FailureKind? failure = null;
                    Interlocked.Increment(ref _runPassesStarted);
                    try
                    {
                        await PassAsync(mayPrompt: false, ct);
                    }
                    catch (Exception e) when (e is not OperationCanceledException && e is not SyncEngineClosedException)
                    {
                        failure = FailureOf(e);
                    }
                    Interlocked.Increment(ref _runPassesCompleted);
                    Interlocked.Exchange(ref _nextPass, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
                    schedule = Schedule.record(settings, _idlePolling, schedule,
                        new PassResult(failure is null ? null : FSharpOption<FailureKind>.Some(failure), _lastPassActivity, requested));
                    if (Interlocked.Exchange(ref _loginSignal, 0) == 1) schedule = Schedule.loginSucceeded(settings, schedule);
                    var delay = Schedule.nextWait(schedule, _options.RandomSample());
                    EngineLog.NextPass(_log, delay.TotalMilliseconds,
                        failure is null ? (_idlePolling ? "idle polling" : "polling") : "after a " + SyncTelemetry.Kind(failure) + " failure",
                        schedule.Failures);
                    // The wait runs on the engine's clock (tests drive it with a fake TimeProvider).
                    using var elapsed = new CancellationTokenSource(delay, _clock);
                    using var timer = CancellationTokenSource.CreateLinkedTokenSource(ct, elapsed.Token);
                    try
                    {
                        requested = await _wake.Reader.WaitToReadAsync(timer.Token) && _wake.Reader.TryRead(out _);
                    }
                    catch (OperationCanceledException) when (!ct.IsCancellationRequested)
                    {
                        requested = false; // the poll interval passed
                    }
                }
            }
            finally
            {
                await watch;
            }
        }
        catch (OperationCanceledException) when (Volatile.Read(ref _closed) != 0)
        {
            throw new SyncEngineClosedException();
        }
        finally
        {
            Volatile.Write(ref _running, 0);
        }
    }

    /// <summary>What the schedule needs to know of a failure (the rule is <c>Schedule.classify</c>).</summary>
    private static FailureKind FailureOf(Exception e) => e switch
    {
        SyncTransportException => Schedule.classify(true, null, null),
        SyncApiException api => Schedule.classify(false, FSharpOption<int>.Some(api.StatusCode),
            api.RetryAfter is { } r ? FSharpOption<TimeSpan>.Some(r) : null),
        IOException => Schedule.classify(true, null, null),
        _ => Schedule.classify(false, null, null),
    };

    /// <summary>
    /// The advisory long poll (docs/engine.md §6.3): waits on the server for a namespace change,
    /// then asks Run for a pass and waits for it. 404/405/501 from the watch request itself switch
    /// watching off for this run (docs/engine.md §12.15); other failures back off. Never prompts
    /// the identity.
    /// </summary>
    private async Task WatchLoopAsync(PollSettings settings, CancellationToken ct)
    {
        var failures = 0;
        while (!ct.IsCancellationRequested)
        {
            // Taken before the request: a login while it fails still ends the backoff that follows.
            var login = Volatile.Read(ref _watchLogin).Task;
            try
            {
                var cached = (await _store.ListNamespacesAsync(_keyId.Wire, ct)).ToList();
                var known = cached.ToDictionary(n => n.NamespaceId, n => n.Head, StringComparer.Ordinal);
                WatchNamespacesResponse answer;
                try
                {
                    answer = await AuthenticatedAsync(token => _client.WatchNamespacesAsync(token, new WatchNamespacesRequest(known), ct), mayPrompt: false, ct);
                }
                catch (SyncApiException e) when (e.StatusCode is 404 or 405 or 501)
                {
                    return; // the server does not offer the watch: polling only
                }
                var reported = Namespaces.parseListed(ListModule.OfSeq(answer.Namespaces));
                if (reported.IsError) throw ToException(reported.ErrorValue);
                var outcome = Core.Watch.interpret(ListModule.OfSeq(cached.Select(ToCore)), reported.ResultValue, answer.TimedOut);
                switch (outcome)
                {
                    case WatchOutcome.Failed failed:
                        throw ToException(failed.Item);
                    case var o when o.IsNeedsSync:
                        SyncTelemetry.WatchWakeups.Add(1);
                        EngineLog.WatchWakeup(_log);
                        // Wait for a pass that starts after this answer (not one already running), so
                        // the next watch carries the heads that pass reconciled.
                        var needed = Volatile.Read(ref _runPassesStarted) + 1;
                        ScheduleSync();
                        while (Volatile.Read(ref _runPassesCompleted) < needed)
                        {
                            var next = Volatile.Read(ref _nextPass).Task;
                            if (Volatile.Read(ref _runPassesCompleted) >= needed) break;
                            await next.WaitAsync(ct);
                        }
                        break;
                    case var o when o.IsTimedOut:
                        await Task.Delay(Schedule.watchReconnectDelay(_options.RandomSample()), _clock, ct);
                        break;
                }
                failures = 0;
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                return;
            }
            catch (SyncEngineClosedException)
            {
                return;
            }
            catch (Exception e)
            {
                failures++;
                Emit(SyncEventType.NamespaceWatchFailed, error: e);
                var status = e is SyncApiException api ? FSharpOption<int>.Some(api.StatusCode) : null;
                SyncTelemetry.Failures.Add(1, new KeyValuePair<string, object?>("kind", "watch"));
                var kind = FailureOf(e);
                if (Core.Watch.onFailure(settings, failures, kind, status, _options.RandomSample()) is WatchFailure.Retry retry)
                {
                    EngineLog.WatchFailed(_log, SyncTelemetry.Kind(kind), retry.delay.TotalMilliseconds, e.GetType().Name, e.Message);
                    try
                    {
                        // A successful login ends the backoff at once (the device is back).
                        if (await Task.WhenAny(Task.Delay(retry.delay, _clock, ct), login) == login) failures = 0;
                        ct.ThrowIfCancellationRequested();
                    }
                    catch (OperationCanceledException)
                    {
                        return;
                    }
                }
            }
        }
    }

    /// <summary>Stops background work (cancelling requests in flight), waits for a running pass, completes <see cref="Events"/> and disposes the store.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0) return;
        await _closing.CancelAsync();
        await _syncLock.WaitAsync();
        try
        {
            _hub.Complete();
            await _store.DisposeAsync();
        }
        finally
        {
            _syncLock.Release();
            _closing.Dispose();
        }
    }
}
