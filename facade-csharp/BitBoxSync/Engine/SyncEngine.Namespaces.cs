using BitBoxSync.Core;
using BitBoxSync.Protocol;
using BitBoxSync.Protocol.Wire;
using BitBoxSync.Storage;
using Microsoft.FSharp.Core;
using static BitBoxSync.StateMapping;

namespace BitBoxSync;

/// <content>Namespaces: the default namespace, joining, readiness (docs/engine.md §4.2).</content>
public sealed partial class SyncEngine
{
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
}
