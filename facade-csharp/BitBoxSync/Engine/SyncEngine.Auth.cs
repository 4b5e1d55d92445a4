using BitBoxSync.Core;
using BitBoxSync.Protocol;
using BitBoxSync.Protocol.Wire;
using BitBoxSync.Storage;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using static BitBoxSync.StateMapping;

namespace BitBoxSync;

/// <content>Identity and authentication: login, refresh, signed challenges (docs/engine.md §4.1).</content>
public sealed partial class SyncEngine
{
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
}
