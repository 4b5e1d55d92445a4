/// Wire DTOs of every request and response (exact JSON names, Go struct order, omission rules)
/// and the JSON settings that read and write them. Implements docs/protocol.md §6.4 and §7.
/// Wire format — change only with a protocol version bump.
namespace BitBoxSync.Protocol.Wire

open System
open System.Text.Json
open System.Text.Json.Serialization

// ---------------------------------------------------------------------------------------------
// Auth

/// `POST /v1/auth/challenge` request. `action` and `actionFieldsHash` only for sensitive actions.
type ChallengeRequest =
    {
        [<JsonPropertyName "purpose">]
        Purpose: string
        [<JsonPropertyName "kind">]
        Kind: string
        [<JsonPropertyName "action"; JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)>]
        Action: string
        [<JsonPropertyName "actionFieldsHash";
          JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)>]
        ActionFieldsHash: string
    }

/// `spamControl` object of a challenge response.
type SpamControlDto =
    {
        [<JsonPropertyName "kind">]
        Kind: string
    }

/// `POST /v1/auth/challenge` response.
type ChallengeResponse =
    {
        [<JsonPropertyName "challenge">]
        Challenge: string
        [<JsonPropertyName "expiresAt">]
        ExpiresAt: string
        [<JsonPropertyName "spamControl">]
        SpamControl: SpamControlDto
    }

/// `POST /v1/auth/login` request.
type LoginRequest =
    {
        [<JsonPropertyName "kind">]
        Kind: string
        [<JsonPropertyName "keyId">]
        KeyId: string
        [<JsonPropertyName "authPublicKey">]
        AuthPublicKey: string
        [<JsonPropertyName "wrapPublicKey">]
        WrapPublicKey: string
        [<JsonPropertyName "challenge">]
        Challenge: string
        [<JsonPropertyName "intentSignature">]
        IntentSignature: string
        [<JsonPropertyName "attestation";
          JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)>]
        Attestation: string
    }

/// `POST /v1/auth/login` response. `defaultNamespaceId` is null when the identity has none.
type LoginResponse =
    {
        [<JsonPropertyName "kind">]
        Kind: string
        [<JsonPropertyName "accessToken">]
        AccessToken: string
        [<JsonPropertyName "expiresAt">]
        ExpiresAt: string
        [<JsonPropertyName "defaultNamespaceId">]
        DefaultNamespaceId: string
    }

/// `POST /v1/auth/refresh` request.
type RefreshRequest =
    {
        [<JsonPropertyName "kind">]
        Kind: string
        [<JsonPropertyName "keyId">]
        KeyId: string
        [<JsonPropertyName "challenge">]
        Challenge: string
        [<JsonPropertyName "intentSignature">]
        IntentSignature: string
        [<JsonPropertyName "attestation";
          JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)>]
        Attestation: string
    }

/// `POST /v1/auth/refresh` response.
type RefreshResponse =
    {
        [<JsonPropertyName "kind">]
        Kind: string
        [<JsonPropertyName "accessToken">]
        AccessToken: string
        [<JsonPropertyName "expiresAt">]
        ExpiresAt: string
    }

/// `DELETE /v1/auth/tokens` request (a DELETE with a JSON body).
type RevokeAllTokensRequest =
    {
        [<JsonPropertyName "kind">]
        Kind: string
        [<JsonPropertyName "keyId">]
        KeyId: string
        [<JsonPropertyName "challenge">]
        Challenge: string
        [<JsonPropertyName "intentSignature">]
        IntentSignature: string
    }

// ---------------------------------------------------------------------------------------------
// Namespaces

/// `GET /v1/namespaces/default` response.
type DefaultNamespaceResponse =
    {
        [<JsonPropertyName "namespaceId">]
        NamespaceId: string
        [<JsonPropertyName "kind">]
        Kind: string
    }

/// `PUT /v1/namespaces/default` request.
type EnsureDefaultNamespaceRequest =
    {
        [<JsonPropertyName "proposedNamespaceId">]
        ProposedNamespaceId: string
        [<JsonPropertyName "wrappedDek">]
        WrappedDek: string
    }

/// `PUT /v1/namespaces/default` response.
type EnsureDefaultNamespaceResponse =
    {
        [<JsonPropertyName "namespaceId">]
        NamespaceId: string
        [<JsonPropertyName "kind">]
        Kind: string
        [<JsonPropertyName "wrappedDek">]
        WrappedDek: string
        [<JsonPropertyName "created">]
        Created: bool
    }

/// One namespace in `/mine` and watch answers.
type NamespaceSummary =
    {
        [<JsonPropertyName "namespaceId">]
        NamespaceId: string
        [<JsonPropertyName "kind">]
        Kind: string
        [<JsonPropertyName "namespaceHead">]
        NamespaceHead: uint64
    }

/// `GET /v1/namespaces/mine` response.
type ListNamespacesResponse =
    {
        [<JsonPropertyName "namespaces">]
        Namespaces: NamespaceSummary[]
    }

/// `POST /v1/namespaces/watch` request. `knownHeads` may be null from raw callers (= empty).
type WatchNamespacesRequest =
    {
        [<JsonPropertyName "knownHeads">]
        KnownHeads: Collections.Generic.IReadOnlyDictionary<string, uint64>
    }

/// `POST /v1/namespaces/watch` response.
type WatchNamespacesResponse =
    {
        [<JsonPropertyName "namespaces">]
        Namespaces: NamespaceSummary[]
        [<JsonPropertyName "timedOut">]
        TimedOut: bool
    }

/// `POST /v1/namespaces` request.
type CreateSharedNamespaceRequest =
    {
        [<JsonPropertyName "namespaceId">]
        NamespaceId: string
        [<JsonPropertyName "wrappedDek">]
        WrappedDek: string
    }

/// `POST /v1/namespaces` response.
type CreateSharedNamespaceResponse =
    {
        [<JsonPropertyName "namespaceId">]
        NamespaceId: string
        [<JsonPropertyName "kind">]
        Kind: string
        [<JsonPropertyName "created">]
        Created: bool
    }

/// One member of a namespace.
type NamespaceMember =
    {
        [<JsonPropertyName "kind">]
        Kind: string
        [<JsonPropertyName "keyId">]
        KeyId: string
    }

/// `GET /v1/namespaces/{ns}/members` response.
type GetNamespaceMembersResponse =
    {
        [<JsonPropertyName "namespaceId">]
        NamespaceId: string
        [<JsonPropertyName "members">]
        Members: NamespaceMember[]
    }

// ---------------------------------------------------------------------------------------------
// Invites and join requests

/// `POST /v1/namespaces/{ns}/invites` request (current layout: no `maxPending`).
type CreateNamespaceInviteRequest =
    {
        [<JsonPropertyName "kind">]
        Kind: string
        [<JsonPropertyName "keyId">]
        KeyId: string
        [<JsonPropertyName "inviteId">]
        InviteId: string
        [<JsonPropertyName "inviteServerSecretHash">]
        InviteServerSecretHash: string
        [<JsonPropertyName "challenge">]
        Challenge: string
        [<JsonPropertyName "intentSignature">]
        IntentSignature: string
        [<JsonPropertyName "expiresAt">]
        ExpiresAt: int64
        [<JsonPropertyName "maxAccepted">]
        MaxAccepted: int64
    }

/// `POST /v1/namespaces/{ns}/invites` request in the legacy layout older Go clients send: the
/// current fields plus `maxPending` (docs/protocol.md, "Legacy create-invite layout").
/// Wire format — change only with a version bump.
type LegacyCreateNamespaceInviteRequest =
    {
        [<JsonPropertyName "kind">]
        Kind: string
        [<JsonPropertyName "keyId">]
        KeyId: string
        [<JsonPropertyName "inviteId">]
        InviteId: string
        [<JsonPropertyName "inviteServerSecretHash">]
        InviteServerSecretHash: string
        [<JsonPropertyName "challenge">]
        Challenge: string
        [<JsonPropertyName "intentSignature">]
        IntentSignature: string
        [<JsonPropertyName "expiresAt">]
        ExpiresAt: int64
        [<JsonPropertyName "maxPending">]
        MaxPending: int64
        [<JsonPropertyName "maxAccepted">]
        MaxAccepted: int64
    }

/// `POST /v1/namespaces/{ns}/invites` response.
type CreateNamespaceInviteResponse =
    {
        [<JsonPropertyName "namespaceId">]
        NamespaceId: string
        [<JsonPropertyName "inviteId">]
        InviteId: string
        [<JsonPropertyName "expiresAt">]
        ExpiresAt: int64
        /// Only for an invite created in the legacy layout (absent otherwise).
        [<JsonPropertyName "maxPending";
          JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)>]
        MaxPending: Nullable<int64>
        [<JsonPropertyName "maxAccepted">]
        MaxAccepted: int64
    }

/// One invite of `GET /v1/namespaces/{ns}/invites`. `revokedAt` is null unless revoked.
type NamespaceInviteSummary =
    {
        [<JsonPropertyName "inviteId">]
        InviteId: string
        [<JsonPropertyName "createdByKeyId">]
        CreatedByKeyId: string
        [<JsonPropertyName "createdAt">]
        CreatedAt: string
        [<JsonPropertyName "expiresAt">]
        ExpiresAt: int64
        /// Only for an invite created in the legacy layout (absent otherwise).
        [<JsonPropertyName "maxPending";
          JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)>]
        MaxPending: Nullable<int64>
        [<JsonPropertyName "maxAccepted">]
        MaxAccepted: int64
        [<JsonPropertyName "activeRequestCount">]
        ActiveRequestCount: int64
        [<JsonPropertyName "acceptedCount">]
        AcceptedCount: int64
        [<JsonPropertyName "revokedAt">]
        RevokedAt: string
    }

/// `GET /v1/namespaces/{ns}/invites` response.
type ListNamespaceInvitesResponse =
    {
        [<JsonPropertyName "namespaceId">]
        NamespaceId: string
        [<JsonPropertyName "invites">]
        Invites: NamespaceInviteSummary[]
    }

/// `DELETE /v1/namespaces/{ns}/invites/{invite}` response.
type RevokeNamespaceInviteResponse =
    {
        [<JsonPropertyName "namespaceId">]
        NamespaceId: string
        [<JsonPropertyName "inviteId">]
        InviteId: string
        [<JsonPropertyName "revoked">]
        Revoked: bool
    }

/// A signed join request, returned verbatim to approvers (all 11 fields).
type NamespaceJoinRequest =
    {
        [<JsonPropertyName "version">]
        Version: int64
        [<JsonPropertyName "namespaceId">]
        NamespaceId: string
        [<JsonPropertyName "inviteId">]
        InviteId: string
        [<JsonPropertyName "serverOrigin">]
        ServerOrigin: string
        [<JsonPropertyName "kind">]
        Kind: string
        [<JsonPropertyName "keyId">]
        KeyId: string
        [<JsonPropertyName "authPublicKey">]
        AuthPublicKey: string
        [<JsonPropertyName "wrapPublicKey">]
        WrapPublicKey: string
        [<JsonPropertyName "expiresAt">]
        ExpiresAt: int64
        [<JsonPropertyName "signature">]
        Signature: string
        [<JsonPropertyName "inviteProof">]
        InviteProof: string
    }

/// `POST /v1/namespaces/{ns}/invites/{invite}/join-requests` request.
type SubmitNamespaceJoinRequestRequest =
    {
        [<JsonPropertyName "inviteServerSecret">]
        InviteServerSecret: string
        [<JsonPropertyName "joinRequest">]
        JoinRequest: NamespaceJoinRequest
    }

/// `POST /v1/namespaces/{ns}/invites/{invite}/join-requests` response.
type SubmitNamespaceJoinRequestResponse =
    {
        [<JsonPropertyName "namespaceId">]
        NamespaceId: string
        [<JsonPropertyName "inviteId">]
        InviteId: string
        [<JsonPropertyName "requesterKind">]
        RequesterKind: string
        [<JsonPropertyName "requesterKeyId">]
        RequesterKeyId: string
        [<JsonPropertyName "joinRequestHash">]
        JoinRequestHash: string
        [<JsonPropertyName "status">]
        Status: string
    }

/// One pending join request in a list.
type NamespaceJoinRequestEntry =
    {
        [<JsonPropertyName "inviteId">]
        InviteId: string
        [<JsonPropertyName "joinRequestHash">]
        JoinRequestHash: string
        [<JsonPropertyName "createdAt">]
        CreatedAt: string
        [<JsonPropertyName "status">]
        Status: string
        [<JsonPropertyName "joinRequest">]
        JoinRequest: NamespaceJoinRequest
    }

/// `GET /v1/namespaces/{ns}/join-requests` response.
type ListNamespaceJoinRequestsResponse =
    {
        [<JsonPropertyName "namespaceId">]
        NamespaceId: string
        [<JsonPropertyName "requests">]
        Requests: NamespaceJoinRequestEntry[]
    }

/// `PUT …/join-requests/{keyId}/{hash}/approve` request.
type ApproveNamespaceJoinRequestRequest =
    {
        [<JsonPropertyName "inviteServerSecret">]
        InviteServerSecret: string
        [<JsonPropertyName "wrappedDek">]
        WrappedDek: string
    }

/// `PUT …/join-requests/{keyId}/{hash}/approve` response.
type ApproveNamespaceJoinRequestResponse =
    {
        [<JsonPropertyName "namespaceId">]
        NamespaceId: string
        [<JsonPropertyName "memberKind">]
        MemberKind: string
        [<JsonPropertyName "memberKeyId">]
        MemberKeyId: string
        [<JsonPropertyName "joinRequestHash">]
        JoinRequestHash: string
    }

/// `DELETE …/join-requests/{keyId}/{hash}` response.
type RejectNamespaceJoinRequestResponse =
    {
        [<JsonPropertyName "namespaceId">]
        NamespaceId: string
        [<JsonPropertyName "requesterKeyId">]
        RequesterKeyId: string
        [<JsonPropertyName "joinRequestHash">]
        JoinRequestHash: string
        [<JsonPropertyName "rejected">]
        Rejected: bool
    }

/// `GET /v1/namespaces/{ns}/wrapped-deks/{keyId}` response.
type GetWrappedDekResponse =
    {
        [<JsonPropertyName "namespaceId">]
        NamespaceId: string
        [<JsonPropertyName "keyId">]
        KeyId: string
        [<JsonPropertyName "wrappedDek">]
        WrappedDek: string
    }

// ---------------------------------------------------------------------------------------------
// Items

/// `{"version": N}` entry of the item map.
type ItemVersion =
    {
        [<JsonPropertyName "version">]
        Version: uint64
    }

/// `GET /v1/namespaces/{ns}/items` response: every item with its current version.
type GetNamespaceItemsResponse =
    {
        [<JsonPropertyName "namespaceId">]
        NamespaceId: string
        [<JsonPropertyName "namespaceHead">]
        NamespaceHead: uint64
        [<JsonPropertyName "items">]
        Items: Collections.Generic.IReadOnlyDictionary<string, ItemVersion>
    }

/// `GET /v1/kv/{ns}/{item}` response.
type GetItemResponse =
    {
        [<JsonPropertyName "namespaceId">]
        NamespaceId: string
        [<JsonPropertyName "itemId">]
        ItemId: string
        [<JsonPropertyName "version">]
        Version: uint64
        [<JsonPropertyName "nonce">]
        Nonce: string
        [<JsonPropertyName "aad">]
        Aad: string
        [<JsonPropertyName "ciphertext">]
        Ciphertext: string
    }

/// `PUT /v1/kv/{ns}/{item}` request (encrypted for the target version).
type PutItemRequest =
    {
        [<JsonPropertyName "nonce">]
        Nonce: string
        [<JsonPropertyName "aad">]
        Aad: string
        [<JsonPropertyName "ciphertext">]
        Ciphertext: string
    }

/// `PUT /v1/kv/{ns}/{item}` response.
type PutItemResponse =
    {
        [<JsonPropertyName "namespaceId">]
        NamespaceId: string
        [<JsonPropertyName "itemId">]
        ItemId: string
        [<JsonPropertyName "version">]
        Version: uint64
    }

// ---------------------------------------------------------------------------------------------
// Extension: batch items (docs/protocol.md §15; not part of protocol v1, the Go client never calls it)

/// The batch-items extension as a server offers it: its version and its limits.
type BatchItemsCapability =
    {
        [<JsonPropertyName "version">]
        Version: int
        /// Most item IDs (batch GET) or items (batch PUT) in one request.
        [<JsonPropertyName "maxItems">]
        MaxItems: int
        /// Largest batch PUT body in bytes.
        [<JsonPropertyName "maxRequestBytes">]
        MaxRequestBytes: int
        /// Ciphertext bytes a batch GET answers at most before it omits the rest.
        [<JsonPropertyName "maxResponseBytes">]
        MaxResponseBytes: int
    }

/// `GET /v1/capabilities` response: the extensions this server offers. A field that is absent
/// (null) is an extension the server does not offer; a server without the endpoint offers none.
type CapabilitiesResponse =
    {
        [<JsonPropertyName "batchItems"; JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)>]
        BatchItems: BatchItemsCapability
    }

/// `POST /v1/namespaces/{ns}/items/batch-get` request: the items to read, each at most once.
type BatchGetItemsRequest =
    {
        [<JsonPropertyName "itemIds">]
        ItemIds: string[]
    }

/// `POST /v1/namespaces/{ns}/items/batch-get` response. Every requested ID is in exactly one of
/// `items` (in request order), `missing` (no such item) or `omitted` (past the response budget:
/// ask again).
type BatchGetItemsResponse =
    {
        [<JsonPropertyName "namespaceId">]
        NamespaceId: string
        [<JsonPropertyName "items">]
        Items: GetItemResponse[]
        [<JsonPropertyName "missing">]
        Missing: string[]
        [<JsonPropertyName "omitted">]
        Omitted: string[]
    }

/// One item of a batch PUT: the single PUT's body plus its item ID and expected version
/// (`ifMatch` 0: the item must not exist yet).
type BatchPutItem =
    {
        [<JsonPropertyName "itemId">]
        ItemId: string
        [<JsonPropertyName "ifMatch">]
        IfMatch: uint64
        [<JsonPropertyName "nonce">]
        Nonce: string
        [<JsonPropertyName "aad">]
        Aad: string
        [<JsonPropertyName "ciphertext">]
        Ciphertext: string
    }

/// `POST /v1/namespaces/{ns}/items/batch-put` request: items with distinct IDs, applied in order.
type BatchPutItemsRequest =
    {
        [<JsonPropertyName "items">]
        Items: BatchPutItem[]
    }

/// One item's outcome in a batch PUT: the status the single PUT would have answered, the new
/// version when accepted (status 200), otherwise the error message.
type BatchPutResult =
    {
        [<JsonPropertyName "itemId">]
        ItemId: string
        [<JsonPropertyName "status">]
        Status: int
        [<JsonPropertyName "version"; JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)>]
        Version: uint64
        [<JsonPropertyName "error"; JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)>]
        Error: string
    }

/// `POST /v1/namespaces/{ns}/items/batch-put` response: one result per item, in request order,
/// and the namespace head after the batch.
type BatchPutItemsResponse =
    {
        [<JsonPropertyName "namespaceId">]
        NamespaceId: string
        [<JsonPropertyName "namespaceHead">]
        NamespaceHead: uint64
        [<JsonPropertyName "results">]
        Results: BatchPutResult[]
    }

// ---------------------------------------------------------------------------------------------
// Misc

/// `GET /healthz` response.
type HealthResponse =
    {
        [<JsonPropertyName "status">]
        Status: string
    }

/// `GET /version` response.
type VersionResponse =
    {
        [<JsonPropertyName "gitCommit">]
        GitCommit: string
    }

/// Every error body: `{"error": "…"}`.
type ErrorResponse =
    {
        [<JsonPropertyName "error">]
        Error: string
    }

/// Reads one value from a JSON reader.
type internal ReadValue<'T> = delegate of byref<Utf8JsonReader> -> 'T

/// Reads JSON null as the zero value (Go semantics), otherwise reads the value strictly.
type internal NullAsZero<'T when 'T: struct>
    (read: ReadValue<'T>, write: Utf8JsonWriter -> 'T -> unit) =
    inherit JsonConverter<'T>()

    override _.Read(reader, _typeToConvert, _options) =
        if reader.TokenType = JsonTokenType.Null then
            Unchecked.defaultof<'T>
        else
            read.Invoke(&reader)

    override _.Write(writer, value, _options) = write writer value

/// String-keyed maps: written in ordinal key order (Go sorts map keys bytewise), read into an
/// ordinal dictionary (a repeated key keeps its last value, as Go does).
type internal OrdinalMapConverter<'T>() =
    inherit JsonConverter<Collections.Generic.IReadOnlyDictionary<string, 'T>>()

    override _.Read(reader, _typeToConvert, options) =
        let values =
            JsonSerializer.Deserialize<Collections.Generic.Dictionary<string, 'T>>(&reader, options)

        if isNull values then
            null
        else
            Collections.Generic.Dictionary<string, 'T>(values, StringComparer.Ordinal)

    override _.Write(writer, value, options) =
        writer.WriteStartObject()

        for KeyValue(k, v) in value |> Seq.sortWith (fun a b -> String.CompareOrdinal(a.Key, b.Key)) do
            writer.WritePropertyName k
            JsonSerializer.Serialize(writer, v, options)

        writer.WriteEndObject()

/// Creates an `OrdinalMapConverter` for every `IReadOnlyDictionary<string, _>`.
type internal OrdinalMapConverterFactory() =
    inherit JsonConverterFactory()

    override _.CanConvert t =
        t.IsGenericType
        && t.GetGenericTypeDefinition() = typedefof<Collections.Generic.IReadOnlyDictionary<_, _>>
        && t.GetGenericArguments()[0] = typeof<string>

    override _.CreateConverter(t, _options) =
        let converter =
            typedefof<OrdinalMapConverter<_>>.MakeGenericType(t.GetGenericArguments()[1])

        Activator.CreateInstance converter :?> JsonConverter

/// Compact UTF-8 JSON in a buffer rented from the shared array pool (large bodies never land on
/// the large-object heap). Dispose it, once, when the bytes are no longer read.
[<Sealed>]
type PooledJson internal (buffer: byte[], length: int) =
    let mutable returned = false

    /// The JSON bytes.
    member _.Memory = ReadOnlyMemory<byte>(buffer, 0, length)

    /// Number of JSON bytes.
    member _.Length = length

    interface IDisposable with
        member _.Dispose() =
            if not returned then
                returned <- true
                Buffers.ArrayPool<byte>.Shared.Return buffer

/// An `IBufferWriter` over buffers rented from the shared array pool (grows by renting a larger one).
type internal PooledWriter() =
    let mutable buffer = Buffers.ArrayPool<byte>.Shared.Rent 4096
    let mutable written = 0

    member private _.Ensure(hint: int) =
        let need = written + max hint 1

        if need > buffer.Length then
            let larger = Buffers.ArrayPool<byte>.Shared.Rent(max need (buffer.Length * 2))
            Buffer.BlockCopy(buffer, 0, larger, 0, written)
            Buffers.ArrayPool<byte>.Shared.Return buffer
            buffer <- larger

    /// Hands the buffer over (the writer must not be used afterwards).
    member _.Detach() = new PooledJson(buffer, written)

    /// Returns the buffer (when serialization failed).
    member _.Release() = Buffers.ArrayPool<byte>.Shared.Return buffer

    interface Buffers.IBufferWriter<byte> with
        member _.Advance(count) = written <- written + count

        member this.GetMemory(hint) =
            this.Ensure hint
            Memory<byte>(buffer, written, buffer.Length - written)

        member this.GetSpan(hint) =
            this.Ensure hint
            Span<byte>(buffer, written, buffer.Length - written)

/// JSON settings and safe (never-throwing) encode / decode.
module Json =
    let private baseOptions () =
        let o =
            JsonSerializerOptions(
                Encoder = Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
                WriteIndented = false,
                NumberHandling = JsonNumberHandling.Strict,
                UnmappedMemberHandling = JsonUnmappedMemberHandling.Skip
            )

        o.Converters.Add(OrdinalMapConverterFactory())
        o

    /// Strict options: exact (case-sensitive) names. Used to write every body and, on the server,
    /// to read requests. Null fields read as null (then rejected by validation).
    let strict: JsonSerializerOptions =
        let o = baseOptions ()
        o.MakeReadOnly(populateMissingResolver = true)
        o

    /// Lenient options mirroring the Go client's response decoding: names matched case-insensitively,
    /// unknown fields ignored, missing fields zero, `null` accepted for every field (zero value).
    let lenient: JsonSerializerOptions =
        let o = baseOptions ()
        o.PropertyNameCaseInsensitive <- true

        o.Converters.Add(
            NullAsZero<uint64>(ReadValue(fun r -> r.GetUInt64()), (fun w v -> w.WriteNumberValue v))
        )

        o.Converters.Add(
            NullAsZero<int64>(ReadValue(fun r -> r.GetInt64()), (fun w v -> w.WriteNumberValue v))
        )

        o.Converters.Add(
            NullAsZero<int>(ReadValue(fun r -> r.GetInt32()), (fun w v -> w.WriteNumberValue v))
        )

        o.Converters.Add(
            NullAsZero<bool>(ReadValue(fun r -> r.GetBoolean()), (fun w v -> w.WriteBooleanValue v))
        )

        o.MakeReadOnly(populateMissingResolver = true)
        o

    /// Compact JSON of a DTO with the exact wire names.
    let serialize (value: 'T) : string = JsonSerializer.Serialize(value, strict)

    /// Compact UTF-8 JSON of a DTO.
    let serializeToUtf8 (value: 'T) : byte[] =
        JsonSerializer.SerializeToUtf8Bytes(value, strict)

    /// Compact UTF-8 JSON of a DTO (by its runtime type) in a pooled buffer.
    let serializePooled (value: obj) : PooledJson =
        let pooled = PooledWriter()

        try
            // The writer's own options decide escaping: the same encoder as `strict`, so the bytes
            // equal `serializeToUtf8`'s (base64 '+' stays '+').
            use writer = new Utf8JsonWriter(pooled, JsonWriterOptions(Encoder = strict.Encoder))
            JsonSerializer.Serialize(writer, value, value.GetType(), strict)
            writer.Flush()
            pooled.Detach()
        with _ ->
            pooled.Release()
            reraise ()

    let private isDecodeFailure (e: exn) =
        match e with
        | :? JsonException
        | :? NotSupportedException
        | :? InvalidOperationException
        | :? ArgumentException -> true
        | _ -> false

    let private present (v: 'T) : Result<'T, string> =
        if isNull (box v) then
            Error "body must be a JSON object"
        else
            Ok v

    let private deserializeWith<'T>
        (options: JsonSerializerOptions)
        (json: ReadOnlySpan<byte>)
        : Result<'T, string> =
        try
            JsonSerializer.Deserialize<'T>(json, options) |> present
        with e when isDecodeFailure e ->
            Error("malformed JSON: " + e.Message)

    /// Decodes a request body strictly (server side). Never throws.
    let decodeRequest<'T> (utf8: ReadOnlySpan<byte>) : Result<'T, string> =
        deserializeWith<'T> strict utf8

    /// Decodes a response body leniently, as the Go client does: only the first JSON value is
    /// read (anything after it is ignored); an empty body is an error. Never throws.
    let decodeResponse<'T> (utf8: ReadOnlySpan<byte>) : Result<'T, string> =
        try
            let mutable reader =
                Utf8JsonReader(utf8, JsonReaderOptions(AllowMultipleValues = true))

            JsonSerializer.Deserialize<'T>(&reader, lenient) |> present
        with e when isDecodeFailure e ->
            Error("malformed JSON: " + e.Message)

    /// Decodes a string with the strict options.
    let decodeRequestString<'T> (json: string) : Result<'T, string> =
        if isNull json then
            Error "body must be a JSON object"
        else
            decodeRequest<'T>(ReadOnlySpan(Text.Encoding.UTF8.GetBytes json))

    /// Decodes a string with the lenient options.
    let decodeResponseString<'T> (json: string) : Result<'T, string> =
        if isNull json then
            Error "body must be a JSON object"
        else
            decodeResponse<'T>(ReadOnlySpan(Text.Encoding.UTF8.GetBytes json))
