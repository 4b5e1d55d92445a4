using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using BitBoxSync.Protocol;
using BitBoxSync.Protocol.Wire;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;

namespace BitBoxSync;

/// <summary>
/// The raw BitBoxSync API client: one method per endpoint, exactly the requests the reference Go
/// client sends, and the same checks on every answer (docs/protocol.md §11.1). No retries: callers
/// (the sync engine) decide what to do with each failure.
/// </summary>
/// <remarks>
/// Errors: <see cref="SyncApiException"/> for a status of 400 or above (with the server's
/// message), <see cref="SyncProtocolException"/> for an answer the client must refuse,
/// <see cref="SyncTransportException"/> when no answer arrived (connection, 75 s timeout),
/// <see cref="ArgumentException"/> for an invalid argument (nothing is sent). Thread-safe.
/// </remarks>
public sealed class SyncClient : IDisposable
{
    /// <summary>The default per-request timeout (the whole exchange), as in the Go client.</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(75);

    private static readonly MediaTypeHeaderValue JsonContentType = new("application/json");
    private readonly HttpClient _http;
    private readonly bool _ownsHttp;
    private readonly string _base;

    /// <summary>Creates a client for a base URL such as <c>https://sync.example</c> or <c>http://127.0.0.1:8090/api</c>.</summary>
    /// <param name="baseAddress">Absolute http or https URL; request paths are appended to its path.</param>
    /// <param name="httpClient">An HTTP client to use (its timeout applies); by default one with a 75 s timeout is created and owned.</param>
    /// <exception cref="ArgumentException">The base address is not an absolute http(s) URL.</exception>
    public SyncClient(Uri baseAddress, HttpClient? httpClient = null)
    {
        ArgumentNullException.ThrowIfNull(baseAddress);
        if (!baseAddress.IsAbsoluteUri || (baseAddress.Scheme != Uri.UriSchemeHttp && baseAddress.Scheme != Uri.UriSchemeHttps))
            throw new ArgumentException("the base address must be an absolute http or https URL", nameof(baseAddress));
        if (!string.IsNullOrEmpty(baseAddress.Query) || !string.IsNullOrEmpty(baseAddress.Fragment))
            throw new ArgumentException("the base address must not have a query or fragment", nameof(baseAddress));
        _base = baseAddress.GetLeftPart(UriPartial.Path).TrimEnd('/');
        BaseAddress = new Uri(_base);
        if (httpClient is null)
        {
            _http = new HttpClient(new SocketsHttpHandler
            {
                AutomaticDecompression = DecompressionMethods.GZip,
                AllowAutoRedirect = false,
                PooledConnectionIdleTimeout = TimeSpan.FromSeconds(60),
            }) { Timeout = DefaultTimeout };
            _ownsHttp = true;
        }
        else
        {
            _http = httpClient;
        }
    }

    /// <summary>The base URL (without trailing slash).</summary>
    public Uri BaseAddress { get; }

    /// <summary>
    /// <c>BitBoxSync.NET/&lt;package version&gt;</c>: the <c>User-Agent</c> this client sends by default.
    /// </summary>
    public static string DefaultUserAgent { get; } = "BitBoxSync.NET/" + PackageVersion();

    /// <summary>
    /// The <c>User-Agent</c> header sent with every request (default <see cref="DefaultUserAgent"/>);
    /// apps may prepend their own product, for example <c>"NotesApp/2.1 " + SyncClient.DefaultUserAgent</c>.
    /// </summary>
    /// <exception cref="ArgumentException">The value is not a valid <c>User-Agent</c> header value.</exception>
    public string UserAgent
    {
        get => _userAgent;
        init
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(value);
            using var probe = new HttpRequestMessage();
            if (!probe.Headers.UserAgent.TryParseAdd(value))
                throw new ArgumentException($"\"{value}\" is not a valid User-Agent value (product/version tokens and comments)", nameof(value));
            _userAgent = value;
        }
    }

    private readonly string _userAgent = DefaultUserAgent;

    private static string PackageVersion()
    {
        var informational = typeof(SyncClient).Assembly
            .GetCustomAttributes(typeof(System.Reflection.AssemblyInformationalVersionAttribute), false)
            .OfType<System.Reflection.AssemblyInformationalVersionAttribute>().FirstOrDefault()?.InformationalVersion;
        var version = informational ?? typeof(SyncClient).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";
        var plus = version.IndexOf('+');
        return plus < 0 ? version : version[..plus];
    }

    // ------------------------------------------------------------------ auth

    /// <summary><c>POST /v1/auth/challenge</c> for <c>login</c> or <c>refresh</c> (kind <c>keystore</c>).</summary>
    public Task<ChallengeResponse> ChallengeAsync(string purpose, CancellationToken cancellationToken = default)
    {
        if (purpose is not ("login" or "refresh"))
            throw new ArgumentException("purpose must be \"login\" or \"refresh\" (use SensitiveActionChallengeAsync for sensitive actions)", nameof(purpose));
        return SendAsync<ChallengeResponse>(HttpMethod.Post, Paths.Challenge, null,
            new ChallengeRequest(purpose, "keystore", null!, null!), cancellationToken)!;
    }

    /// <summary><c>POST /v1/auth/challenge</c> bound to one sensitive action and its action-fields hash.</summary>
    public Task<ChallengeResponse> SensitiveActionChallengeAsync(string action, string actionFieldsHash, CancellationToken cancellationToken = default)
    {
        if (action is not ("revoke-all-tokens" or "create-namespace-invite"))
            throw new ArgumentException("action must be \"revoke-all-tokens\" or \"create-namespace-invite\"", nameof(action));
        Valid<ActionFieldsHashKind>(actionFieldsHash, nameof(actionFieldsHash));
        return SendAsync<ChallengeResponse>(HttpMethod.Post, Paths.Challenge, null,
            new ChallengeRequest("sensitive-action", "keystore", action, actionFieldsHash), cancellationToken)!;
    }

    /// <summary><c>POST /v1/auth/login</c>: checks the <c>kind</c> echo and the default namespace ID.</summary>
    public async Task<LoginResponse> LoginAsync(LoginRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var kind = Kind(request.Kind);
        var r = await SendAsync<LoginResponse>(HttpMethod.Post, Paths.Login, null, request, cancellationToken);
        Check(ResponseChecks.login(kind, r), "login");
        return r;
    }

    /// <summary><c>POST /v1/auth/refresh</c> with the current token: checks the <c>kind</c> echo.</summary>
    public async Task<RefreshResponse> RefreshAsync(string accessToken, RefreshRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var kind = Kind(request.Kind);
        var r = await SendAsync<RefreshResponse>(HttpMethod.Post, Paths.Refresh, Token(accessToken), request, cancellationToken);
        Check(ResponseChecks.refresh(kind, r), "refresh");
        return r;
    }

    /// <summary><c>DELETE /v1/auth/tokens</c> (with a JSON body): revokes every token of the identity.</summary>
    public async Task RevokeAllTokensAsync(string accessToken, RevokeAllTokensRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        await SendAsync<object>(HttpMethod.Delete, Paths.Tokens, Token(accessToken), request, cancellationToken, expectBody: false);
    }

    // ------------------------------------------------------------------ namespaces

    /// <summary><c>GET /v1/namespaces/default</c>: checks the ID and the kind <c>default</c>.</summary>
    public async Task<DefaultNamespaceResponse> GetDefaultNamespaceAsync(string accessToken, CancellationToken cancellationToken = default)
    {
        var r = await SendAsync<DefaultNamespaceResponse>(HttpMethod.Get, Paths.DefaultNamespace, Token(accessToken), null, cancellationToken);
        Check(ResponseChecks.defaultNamespace(r), "default namespace");
        return r;
    }

    /// <summary><c>PUT /v1/namespaces/default</c> (create-or-get): when <c>created</c>, the ID must be the proposed one.</summary>
    public async Task<EnsureDefaultNamespaceResponse> EnsureDefaultNamespaceAsync(string accessToken, EnsureDefaultNamespaceRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var proposed = Valid<NamespaceIdKind>(request.ProposedNamespaceId, nameof(request.ProposedNamespaceId));
        var r = await SendAsync<EnsureDefaultNamespaceResponse>(HttpMethod.Put, Paths.DefaultNamespace, Token(accessToken), request, cancellationToken);
        Check(ResponseChecks.ensureDefaultNamespace(proposed, r), "ensure default namespace");
        return r;
    }

    /// <summary><c>GET /v1/namespaces/mine</c>: every namespace the identity belongs to, with its head.</summary>
    public async Task<ListNamespacesResponse> ListNamespacesAsync(string accessToken, CancellationToken cancellationToken = default)
    {
        var r = await SendAsync<ListNamespacesResponse>(HttpMethod.Get, Paths.Mine, Token(accessToken), null, cancellationToken);
        return r.Namespaces is null ? new ListNamespacesResponse([]) : r;
    }

    /// <summary>
    /// <c>POST /v1/namespaces/watch</c>: waits (server-side, up to ~45 s) until a visible namespace
    /// differs from <paramref name="request"/>'s known heads. The answer is only a hint to sync.
    /// </summary>
    public async Task<WatchNamespacesResponse> WatchNamespacesAsync(string accessToken, WatchNamespacesRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.KnownHeads is not null)
            foreach (var key in request.KnownHeads.Keys) Valid<NamespaceIdKind>(key, nameof(request.KnownHeads));
        var r = await SendAsync<WatchNamespacesResponse>(HttpMethod.Post, Paths.Watch, Token(accessToken), request, cancellationToken);
        return r.Namespaces is null ? new WatchNamespacesResponse([], r.TimedOut) : r;
    }

    /// <summary><c>POST /v1/namespaces</c>: creates a shared namespace; the answer must echo its ID with kind <c>shared</c>.</summary>
    public async Task<CreateSharedNamespaceResponse> CreateSharedNamespaceAsync(string accessToken, CreateSharedNamespaceRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var ns = Valid<NamespaceIdKind>(request.NamespaceId, nameof(request.NamespaceId));
        var r = await SendAsync<CreateSharedNamespaceResponse>(HttpMethod.Post, Paths.Namespaces, Token(accessToken), request, cancellationToken);
        Check(ResponseChecks.createSharedNamespace(ns, r), "create shared namespace");
        return r;
    }

    /// <summary><c>GET /v1/namespaces/{namespaceId}/members</c>.</summary>
    public async Task<GetNamespaceMembersResponse> GetMembersAsync(string accessToken, string namespaceId, CancellationToken cancellationToken = default)
    {
        var ns = Valid<NamespaceIdKind>(namespaceId, nameof(namespaceId));
        var r = await SendAsync<GetNamespaceMembersResponse>(HttpMethod.Get, Paths.members(ns), Token(accessToken), null, cancellationToken);
        Check(ResponseChecks.namespaceEcho(ns, r.NamespaceId), "members");
        return r.Members is null ? new GetNamespaceMembersResponse(r.NamespaceId, []) : r;
    }

    // ------------------------------------------------------------------ invites and join requests

    /// <summary><c>POST /v1/namespaces/{namespaceId}/invites</c> (sensitive action): checks the namespace and invite echoes.</summary>
    public async Task<CreateNamespaceInviteResponse> CreateNamespaceInviteAsync(string accessToken, string namespaceId, CreateNamespaceInviteRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var ns = Valid<NamespaceIdKind>(namespaceId, nameof(namespaceId));
        var invite = Valid<InviteIdKind>(request.InviteId, nameof(request.InviteId));
        var r = await SendAsync<CreateNamespaceInviteResponse>(HttpMethod.Post, Paths.invites(ns), Token(accessToken), request, cancellationToken);
        Check(ResponseChecks.createInvite(ns, invite, r), "create invite");
        return r;
    }

    /// <summary><c>GET /v1/namespaces/{namespaceId}/invites</c>: active and recently ended invites.</summary>
    public async Task<ListNamespaceInvitesResponse> ListNamespaceInvitesAsync(string accessToken, string namespaceId, CancellationToken cancellationToken = default)
    {
        var ns = Valid<NamespaceIdKind>(namespaceId, nameof(namespaceId));
        var r = await SendAsync<ListNamespaceInvitesResponse>(HttpMethod.Get, Paths.invites(ns), Token(accessToken), null, cancellationToken);
        Check(ResponseChecks.namespaceEcho(ns, r.NamespaceId), "list invites");
        return r.Invites is null ? new ListNamespaceInvitesResponse(r.NamespaceId, []) : r;
    }

    /// <summary><c>DELETE /v1/namespaces/{namespaceId}/invites/{inviteId}</c>: the answer must report <c>revoked</c>.</summary>
    public async Task<RevokeNamespaceInviteResponse> RevokeNamespaceInviteAsync(string accessToken, string namespaceId, string inviteId, CancellationToken cancellationToken = default)
    {
        var ns = Valid<NamespaceIdKind>(namespaceId, nameof(namespaceId));
        var invite = Valid<InviteIdKind>(inviteId, nameof(inviteId));
        var r = await SendAsync<RevokeNamespaceInviteResponse>(HttpMethod.Delete, Paths.invite(ns, invite), Token(accessToken), null, cancellationToken);
        Check(ResponseChecks.revokeInvite(ns, invite, r), "revoke invite");
        return r;
    }

    /// <summary><c>POST /v1/namespaces/{namespaceId}/invites/{inviteId}/join-requests</c> by the prospective member.</summary>
    public async Task<SubmitNamespaceJoinRequestResponse> SubmitNamespaceJoinRequestAsync(string accessToken, string namespaceId, string inviteId, SubmitNamespaceJoinRequestRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(request.JoinRequest, nameof(request.JoinRequest));
        var ns = Valid<NamespaceIdKind>(namespaceId, nameof(namespaceId));
        var invite = Valid<InviteIdKind>(inviteId, nameof(inviteId));
        var kind = Kind(request.JoinRequest.Kind);
        var keyId = Valid<KeyIdKind>(request.JoinRequest.KeyId, "joinRequest.keyId");
        var r = await SendAsync<SubmitNamespaceJoinRequestResponse>(HttpMethod.Post, Paths.submitJoinRequest(ns, invite), Token(accessToken), request, cancellationToken);
        Check(ResponseChecks.submitJoinRequest(ns, kind, keyId, r), "submit join request");
        return r;
    }

    /// <summary><c>GET /v1/namespaces/{namespaceId}/join-requests</c>: pending requests, each exactly as submitted.</summary>
    public async Task<ListNamespaceJoinRequestsResponse> ListNamespaceJoinRequestsAsync(string accessToken, string namespaceId, CancellationToken cancellationToken = default)
    {
        var ns = Valid<NamespaceIdKind>(namespaceId, nameof(namespaceId));
        var r = await SendAsync<ListNamespaceJoinRequestsResponse>(HttpMethod.Get, Paths.joinRequests(ns), Token(accessToken), null, cancellationToken);
        Check(ResponseChecks.namespaceEcho(ns, r.NamespaceId), "list join requests");
        return r.Requests is null ? new ListNamespaceJoinRequestsResponse(r.NamespaceId, []) : r;
    }

    /// <summary><c>PUT …/join-requests/{keyId}/{joinRequestHash}/approve</c>: adds the requester with the wrapped DEK.</summary>
    public async Task<ApproveNamespaceJoinRequestResponse> ApproveNamespaceJoinRequestAsync(string accessToken, string namespaceId, string keyId, string joinRequestHash, ApproveNamespaceJoinRequestRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var ns = Valid<NamespaceIdKind>(namespaceId, nameof(namespaceId));
        var key = Valid<KeyIdKind>(keyId, nameof(keyId));
        var hash = Valid<JoinRequestHashKind>(joinRequestHash, nameof(joinRequestHash));
        var r = await SendAsync<ApproveNamespaceJoinRequestResponse>(HttpMethod.Put, Paths.approveJoinRequest(ns, key, hash), Token(accessToken), request, cancellationToken);
        Check(ResponseChecks.approveJoinRequest(ns, key, hash, r), "approve join request");
        return r;
    }

    /// <summary><c>DELETE …/join-requests/{keyId}/{joinRequestHash}</c>: the answer must report <c>rejected</c>.</summary>
    public async Task<RejectNamespaceJoinRequestResponse> RejectNamespaceJoinRequestAsync(string accessToken, string namespaceId, string keyId, string joinRequestHash, CancellationToken cancellationToken = default)
    {
        var ns = Valid<NamespaceIdKind>(namespaceId, nameof(namespaceId));
        var key = Valid<KeyIdKind>(keyId, nameof(keyId));
        var hash = Valid<JoinRequestHashKind>(joinRequestHash, nameof(joinRequestHash));
        var r = await SendAsync<RejectNamespaceJoinRequestResponse>(HttpMethod.Delete, Paths.joinRequest(ns, key, hash), Token(accessToken), null, cancellationToken);
        Check(ResponseChecks.rejectJoinRequest(ns, key, hash, r), "reject join request");
        return r;
    }

    /// <summary><c>GET /v1/namespaces/{namespaceId}/wrapped-deks/{keyId}</c>: how an approved member joins.</summary>
    public async Task<GetWrappedDekResponse> GetWrappedDekAsync(string accessToken, string namespaceId, string keyId, CancellationToken cancellationToken = default)
    {
        var ns = Valid<NamespaceIdKind>(namespaceId, nameof(namespaceId));
        var key = Valid<KeyIdKind>(keyId, nameof(keyId));
        var r = await SendAsync<GetWrappedDekResponse>(HttpMethod.Get, Paths.wrappedDek(ns, key), Token(accessToken), null, cancellationToken);
        Check(ResponseChecks.wrappedDek(ns, key, r), "wrapped dek");
        return r;
    }

    // ------------------------------------------------------------------ items

    /// <summary><c>GET /v1/namespaces/{namespaceId}/items</c>: the head and every item's version.</summary>
    public async Task<GetNamespaceItemsResponse> GetNamespaceItemsAsync(string accessToken, string namespaceId, CancellationToken cancellationToken = default)
    {
        var ns = Valid<NamespaceIdKind>(namespaceId, nameof(namespaceId));
        var r = await SendAsync<GetNamespaceItemsResponse>(HttpMethod.Get, Paths.items(ns), Token(accessToken), null, cancellationToken);
        Check(ResponseChecks.namespaceEcho(ns, r.NamespaceId), "namespace items");
        return r.Items is null ? new GetNamespaceItemsResponse(r.NamespaceId, r.NamespaceHead, new Dictionary<string, ItemVersion>()) : r;
    }

    /// <summary><c>GET /v1/kv/{namespaceId}/{itemId}</c>: one sealed item at its current version.</summary>
    public async Task<GetItemResponse> GetItemAsync(string accessToken, string namespaceId, string itemId, CancellationToken cancellationToken = default)
    {
        var ns = Valid<NamespaceIdKind>(namespaceId, nameof(namespaceId));
        var item = Valid<ItemIdKind>(itemId, nameof(itemId));
        var r = await SendAsync<GetItemResponse>(HttpMethod.Get, Paths.item(ns, item), Token(accessToken), null, cancellationToken);
        Check(ResponseChecks.getItem(ns, item, r), "item");
        return r;
    }

    /// <summary>
    /// <c>PUT /v1/kv/{namespaceId}/{itemId}</c>, compare-and-set: without <paramref name="ifMatch"/>
    /// the item must not exist (new version 1); with it, the item must be at that version (new
    /// version ifMatch + 1). A lost race answers 412 (<see cref="SyncApiException"/>).
    /// </summary>
    public async Task<PutItemResponse> PutItemAsync(string accessToken, string namespaceId, string itemId, PutItemRequest request, ulong? ifMatch, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var ns = Valid<NamespaceIdKind>(namespaceId, nameof(namespaceId));
        var item = Valid<ItemIdKind>(itemId, nameof(itemId));
        var precondition = ifMatch is { } v ? IfMatch.NewVersion(v) : IfMatch.Absent;
        var r = await SendAsync<PutItemResponse>(HttpMethod.Put, Paths.item(ns, item), Token(accessToken), request, cancellationToken,
            ifMatch: ifMatch is { } n ? IfMatchModule.quote(n) : null);
        Check(ResponseChecks.putItem(ns, item, precondition, r), "put item");
        return r;
    }

    // ------------------------------------------------------------------ batch-items extension

    /// <summary>
    /// <c>GET /v1/capabilities</c>: the extensions the server offers (docs/protocol.md §15). A
    /// server without the endpoint (404, for example one that implements only protocol v1) offers
    /// none: the answer then has no <c>BatchItems</c>.
    /// </summary>
    public async Task<CapabilitiesResponse> GetCapabilitiesAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            return await SendAsync<CapabilitiesResponse>(HttpMethod.Get, Paths.Capabilities, null, null, cancellationToken);
        }
        catch (SyncApiException e) when (e.StatusCode == 404)
        {
            return new CapabilitiesResponse(null!);
        }
    }

    /// <summary>
    /// <c>POST /v1/namespaces/{namespaceId}/items/batch-get</c> (extension): up to the offered
    /// number of items in one request, read from one snapshot. Each requested ID comes back as an
    /// item, as missing, or as omitted (past the server's response budget: ask again).
    /// </summary>
    /// <exception cref="SyncApiException">404 when the server does not offer the extension.</exception>
    public async Task<BatchGetItemsResponse> GetItemsAsync(string accessToken, string namespaceId, IReadOnlyList<string> itemIds, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(itemIds);
        var ns = Valid<NamespaceIdKind>(namespaceId, nameof(namespaceId));
        if (itemIds.Count == 0) throw new ArgumentException("at least one item ID is required", nameof(itemIds));
        var ids = new List<ItemId>(itemIds.Count);
        foreach (var id in itemIds) ids.Add(Valid<ItemIdKind>(id, nameof(itemIds)));
        var r = await SendAsync<BatchGetItemsResponse>(HttpMethod.Post, Paths.batchGet(ns), Token(accessToken),
            new BatchGetItemsRequest([.. itemIds]), cancellationToken);
        Check(ResponseChecks.batchGet(ns, ListModule.OfSeq(ids), r), "batch get");
        return new BatchGetItemsResponse(r.NamespaceId, r.Items ?? [], r.Missing ?? [], r.Omitted ?? []);
    }

    /// <summary>
    /// <c>POST /v1/namespaces/{namespaceId}/items/batch-put</c> (extension): compare-and-set writes
    /// of several items (distinct IDs; <c>IfMatch</c> 0 creates) in one request and one server
    /// transaction. Each item is answered on its own (<c>Status</c> 200 with its new version, or the
    /// status the single PUT would have answered, such as 412), in request order.
    /// </summary>
    /// <exception cref="SyncApiException">404 when the server does not offer the extension; any other
    /// status when the whole batch was refused (nothing was written).</exception>
    public async Task<BatchPutItemsResponse> PutItemsAsync(string accessToken, string namespaceId, IReadOnlyList<BatchPutItem> items, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(items);
        var ns = Valid<NamespaceIdKind>(namespaceId, nameof(namespaceId));
        if (items.Count == 0) throw new ArgumentException("at least one item is required", nameof(items));
        var sent = new List<Tuple<ItemId, ulong>>(items.Count);
        foreach (var item in items)
        {
            ArgumentNullException.ThrowIfNull(item, nameof(items));
            sent.Add(Tuple.Create(Valid<ItemIdKind>(item.ItemId, nameof(items)), item.IfMatch));
        }
        var r = await SendAsync<BatchPutItemsResponse>(HttpMethod.Post, Paths.batchPut(ns), Token(accessToken),
            new BatchPutItemsRequest([.. items]), cancellationToken);
        Check(ResponseChecks.batchPut(ns, ListModule.OfSeq(sent), r), "batch put");
        return r;
    }

    // ------------------------------------------------------------------ plumbing

    private static Bin<K> Valid<K>(string? value, string paramName) where K : IBinaryKind
    {
        var r = Bin.parse<K>(value!);
        return r.IsOk ? r.ResultValue : throw new ArgumentException(r.ErrorValue.Message, paramName);
    }

    private static IdentityKind Kind(string? kind)
    {
        var r = IdentityKindModule.parse(kind!);
        return r.IsOk ? r.ResultValue : throw new ArgumentException(r.ErrorValue.Message, "kind");
    }

    private static string Token(string accessToken)
    {
        if (string.IsNullOrEmpty(accessToken))
            throw new ArgumentException("an access token is required", nameof(accessToken));
        if (accessToken.Any(c => c < 0x21 || c > 0x7e))
            throw new ArgumentException("the access token must be printable ASCII", nameof(accessToken));
        return accessToken;
    }

    private static void Check<T>(FSharpResult<T, ResponseViolation> result, string label)
    {
        if (result.IsError) throw new SyncProtocolException($"{label} response {result.ErrorValue.Message}");
    }

    private async Task<T> SendAsync<T>(HttpMethod method, string path, string? accessToken, object? body,
        CancellationToken ct, string? ifMatch = null, bool expectBody = true)
    {
        // One client activity per call, named by the route (IDs replaced: low cardinality, nothing secret).
        var route = RouteOf(path);
        using var activity = SyncTelemetry.Source.StartActivity($"{method.Method} {route}", System.Diagnostics.ActivityKind.Client);
        activity?.SetTag("http.request.method", method.Method);
        activity?.SetTag("url.template", route);
        activity?.SetTag("server.address", BaseAddress.Host);
        activity?.SetTag("server.port", BaseAddress.Port);
        try
        {
            return await SendCoreAsync<T>(method, path, accessToken, body, ct, ifMatch, expectBody, activity);
        }
        catch (Exception e) when (activity is not null)
        {
            activity.SetStatus(System.Diagnostics.ActivityStatusCode.Error, e.GetType().Name);
            activity.SetTag("error.type", e is SyncApiException api ? api.StatusCode.ToString(System.Globalization.CultureInfo.InvariantCulture) : e.GetType().FullName);
            throw;
        }
    }

    /// <summary>A request path with its IDs replaced by placeholders (for telemetry names).</summary>
    internal static string RouteOf(string path) =>
        System.Text.RegularExpressions.Regex.Replace(path, "/[0-9a-f]{32,64}(?=/|$)", "/{id}");

    private async Task<T> SendCoreAsync<T>(HttpMethod method, string path, string? accessToken, object? body,
        CancellationToken ct, string? ifMatch, bool expectBody, System.Diagnostics.Activity? activity)
    {
        using var request = new HttpRequestMessage(method, _base + path);
        // The body is serialized into a pooled buffer; it goes back to the pool only after a 2xx
        // answer (the server read all of it), never while a failed send might still be reading it.
        PooledJson? pooledBody = null;
        if (body is not null)
        {
            pooledBody = Json.serializePooled(body);
            request.Content = new ReadOnlyMemoryContent(pooledBody.Memory);
            request.Content.Headers.ContentType = JsonContentType;
        }
        request.Headers.TryAddWithoutValidation("User-Agent", _userAgent);
        if (accessToken is not null) request.Headers.TryAddWithoutValidation("Authorization", "Bearer " + accessToken);
        if (ifMatch is not null) request.Headers.TryAddWithoutValidation("If-Match", ifMatch);

        HttpResponseMessage response;
        try
        {
            response = await _http.SendAsync(request, HttpCompletionOption.ResponseContentRead, ct);
        }
        catch (HttpRequestException e)
        {
            throw new SyncTransportException($"{method} {path}: {e.Message}", e);
        }
        catch (TaskCanceledException e) when (!ct.IsCancellationRequested)
        {
            throw new SyncTransportException($"{method} {path}: no answer within {_http.Timeout.TotalSeconds:0} s", e);
        }

        using (response)
        {
            var status = (int)response.StatusCode;
            if (status is >= 200 and < 300) (pooledBody as IDisposable)?.Dispose();
            byte[] buffer;
            int length;
            try
            {
                (buffer, length) = await ReadPooledAsync(response.Content, ct);
            }
            catch (HttpRequestException e)
            {
                throw new SyncTransportException($"{method} {path}: reading the answer failed: {e.Message}", e);
            }

            try
            {
                activity?.SetTag("http.response.status_code", status);
                if (status >= 400)
                    throw new SyncApiException(status, ErrorMessage(buffer.AsSpan(0, length).ToArray())) { RetryAfter = RetryAfterOf(response) };
                if (!expectBody) return default!;
                var decoded = Json.decodeResponse<T>(buffer.AsSpan(0, length));
                if (decoded.IsError) throw new SyncProtocolException($"decode response: {decoded.ErrorValue}");
                return decoded.ResultValue;
            }
            finally
            {
                System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
            }
        }
    }

    /// <summary>The (already buffered) answer body, copied into a buffer rented from the shared pool.</summary>
    private static async Task<(byte[] Buffer, int Length)> ReadPooledAsync(HttpContent content, CancellationToken ct)
    {
        await using var stream = await content.ReadAsStreamAsync(ct);
        var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(content.Headers.ContentLength is { } known and > 0 and < int.MaxValue ? (int)known : 4096);
        var length = 0;
        try
        {
            int read;
            while ((read = await stream.ReadAsync(buffer.AsMemory(length), ct)) > 0)
            {
                length += read;
                if (length == buffer.Length)
                {
                    var larger = System.Buffers.ArrayPool<byte>.Shared.Rent(buffer.Length * 2);
                    buffer.AsSpan(0, length).CopyTo(larger);
                    System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
                    buffer = larger;
                }
            }
            return (buffer, length);
        }
        catch
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
            throw;
        }
    }

    /// <summary>The <c>Retry-After</c> of an answer (seconds or an HTTP date), if any and not in the past.</summary>
    private static TimeSpan? RetryAfterOf(HttpResponseMessage response)
    {
        var header = response.Headers.RetryAfter;
        if (header?.Delta is { } delta) return delta < TimeSpan.Zero ? null : delta;
        if (header?.Date is { } date)
        {
            var wait = date - DateTimeOffset.UtcNow;
            return wait > TimeSpan.Zero ? wait : TimeSpan.Zero;
        }
        return null;
    }

    /// <summary>The <c>error</c> string of a JSON body, else the trimmed body (Go client behaviour).</summary>
    internal static string? ErrorMessage(byte[] body)
    {
        if (body.Length == 0) return null;
        try
        {
            using var doc = JsonDocument.Parse(body);
            if (doc.RootElement.ValueKind == JsonValueKind.Object)
                foreach (var p in doc.RootElement.EnumerateObject())
                    if (string.Equals(p.Name, "error", StringComparison.OrdinalIgnoreCase) && p.Value.ValueKind == JsonValueKind.String
                        && p.Value.GetString() is { Length: > 0 } message)
                        return message;
        }
        catch (JsonException)
        {
            // not JSON: the body itself is the message
        }
        return Encoding.UTF8.GetString(body).Trim();
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_ownsHttp) _http.Dispose();
    }
}
