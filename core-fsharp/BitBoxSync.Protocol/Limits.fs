/// Protocol constants: lengths, quotas and time limits shared by client and server.
/// Implements docs/protocol.md §2.3, §2.4 and §12.
module BitBoxSync.Protocol.Limits

/// Raw key ID length (SHA-256 of the auth public key).
[<Literal>]
let KeyIdLength = 32

/// Raw namespace ID length.
[<Literal>]
let NamespaceIdLength = 16

/// Raw invite ID length.
[<Literal>]
let InviteIdLength = 16

/// Raw item ID length (HMAC-SHA256 output).
[<Literal>]
let ItemIdLength = 32

/// Raw length of every SHA-256 hash on the wire (join-request hash, server-secret hash, ...).
[<Literal>]
let HashLength = 32

/// Ed25519 and X25519 public key length.
[<Literal>]
let PublicKeyLength = 32

/// Ed25519 signature length.
[<Literal>]
let SignatureLength = 64

/// Raw challenge length minted by the server.
[<Literal>]
let ChallengeLength = 32

/// Invite secret, invite server secret and invite proof length.
[<Literal>]
let InviteSecretLength = 32

/// Maximum length in bytes of a canonical server origin.
[<Literal>]
let MaxServerOriginLength = 128

/// Namespace data-encryption key length.
[<Literal>]
let DekLength = 32

/// XChaCha20-Poly1305 nonce length.
[<Literal>]
let ItemNonceLength = 24

/// Poly1305 tag length.
[<Literal>]
let AeadTagLength = 16

/// Item AAD layout length.
[<Literal>]
let ItemAadLength = 76

/// Maximum ciphertext bytes of one item, tag included.
[<Literal>]
let MaxItemCiphertextSize = 65536

/// Maximum plaintext bytes of one item (the engine refuses longer values).
[<Literal>]
let MaxItemPlaintextSize = 65520

/// Wrapped DEK length, format version 1 (1 + 32 + 16 + 32 + 16).
[<Literal>]
let WrappedDekLengthV1 = 97

/// Upper bound this implementation accepts for an opaque attestation (bytes).
[<Literal>]
let MaxAttestationLength = 16384

/// Login / refresh / revoke-all-tokens / create-invite intent lengths.
[<Literal>]
let LoginIntentLength = 148

[<Literal>]
let RefreshIntentLength = 84

[<Literal>]
let RevokeAllTokensIntentLength = 85

[<Literal>]
let CreateInviteIntentLength = 161

/// Create-invite action fields length (current layout, no maxPending).
[<Literal>]
let CreateInviteActionFieldsLength = 76

/// Create-invite action fields length of the legacy layout (with maxPending).
[<Literal>]
let LegacyCreateInviteActionFieldsLength = 80

/// Join-request payload length.
[<Literal>]
let JoinRequestPayloadLength = 193

/// JSON `version` of join requests and URI `v` of invite tokens.
[<Literal>]
let JoinRequestVersion = 1

/// Server quotas (docs/protocol.md §12).
[<Literal>]
let MaxItemsPerNamespace = 10000

[<Literal>]
let MaxNamespaceStoredBytes = 67108864L

[<Literal>]
let MaxNamespacesPerKey = 32

[<Literal>]
let MaxMembersPerNamespace = 32

[<Literal>]
let MaxActiveTokensPerKey = 32

[<Literal>]
let MaxKeysPerDevice = 100

[<Literal>]
let MaxNamespacesCreatedPerDevice = 100

[<Literal>]
let MaxActiveInvitesPerNamespace = 5

[<Literal>]
let MaxPendingJoinRequestsPerInvite = 20

[<Literal>]
let MaxAcceptedJoinRequestsPerInvite = 10

[<Literal>]
let MaxPendingJoinRequestsPerRequester = 20

/// Invite and join-request time limits, in seconds.
[<Literal>]
let MaxInviteTtlSeconds = 3600L

[<Literal>]
let DefaultInviteTtlSeconds = 600L

[<Literal>]
let MaxJoinRequestTtlSeconds = 600L

/// Raw client timeout per request, in seconds.
[<Literal>]
let ClientTimeoutSeconds = 75

/// The engine refreshes a token that expires within this window, in seconds (24 h).
[<Literal>]
let RefreshSkewSeconds = 86400L

/// After a watch answered `timedOut: true` the client reconnects after 0..5 s of jitter.
[<Literal>]
let WatchReconnectJitterMaxSeconds = 5

/// Label strings (docs/protocol.md §2.4), exact ASCII.
module Labels =
    [<Literal>]
    let Intent = "bitboxsync-intent"

    [<Literal>]
    let JoinRequest = "bitboxsync-join-request"

    [<Literal>]
    let ItemAad = "bitboxsync-item-aad"

    [<Literal>]
    let BlobKey = "bitboxsync-namespace-blob-aead-v1"

    [<Literal>]
    let MapKey = "bitboxsync-namespace-item-id-v1"

    [<Literal>]
    let WrapDek = "bitboxsync-wrap-dek-v1"

    [<Literal>]
    let InviteServerSecret = "bitboxsync-invite-server-secret-v1"

    [<Literal>]
    let InviteProofKey = "bitboxsync-invite-proof-key-v1"

    [<Literal>]
    let DummyAuthSeed = "bitboxsync-auth-ed25519-seed-v1"

    [<Literal>]
    let DummyWrapSeed = "bitboxsync-wrap-x25519-seed-v1"

/// Batch-items extension (docs/protocol.md §15): most item IDs or items in one request.
[<Literal>]
let MaxBatchItems = 256

/// Batch-items extension: largest batch PUT body (bytes). 4 MiB holds 46 items at the 64 KiB
/// ciphertext limit, or all 256 items of a few KiB.
[<Literal>]
let MaxBatchRequestBytes = 4194304

/// Batch-items extension: ciphertext bytes one batch GET answers before it omits the rest (the
/// first item is always answered, so every request makes progress).
[<Literal>]
let MaxBatchResponseBytes = 4194304
