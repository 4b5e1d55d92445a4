/// Protocol flows through the raw client, as the engine will drive them: login, namespaces,
/// the invite rendezvous and items, with real crypto and the dummy keystore.
module BitBoxSync.Server.Tests.Flows

open System
open System.Security.Cryptography
open BitBoxSync
open BitBoxSync.Protocol
open BitBoxSync.Protocol.Wire
open BitBoxSync.Server.Tests.Harness

let private ok what (r: Result<'T, 'E>) =
    match r with
    | Ok v -> v
    | Error e -> failwithf "%s: %A" what e

/// The C# dummy keystore (an IIdentity), not the protocol layer's class of the same name.
type Keystore = BitBoxSync.DummyKeystore

let random (n: int) = RandomNumberGenerator.GetBytes n
let hex (b: ReadOnlyMemory<byte>) = Convert.ToHexStringLower b.Span
let bin<'K when 'K :> IBinaryKind> (b: byte[]) = Bin.ofBytes<'K> b |> ok "bytes"

/// A logged-in identity on a server.
type Session =
    {
        Server: TestServer
        Identity: Keystore
        Token: string
        KeyId: string
        DefaultNamespaceId: string
    }

    member s.Client = s.Server.Client

/// A signed login request built from a fresh login challenge.
let loginRequest (client: SyncClient) (id: Keystore) : LoginRequest =
    let challenge = client.ChallengeAsync "login" |> await

    let signature =
        id.SignLoginIntentAsync(Convert.FromBase64String challenge.Challenge).AsTask()
        |> await

    {
        Kind = "keystore"
        KeyId = id.KeyId
        AuthPublicKey = hex id.AuthPublicKey
        WrapPublicKey = hex id.WrapPublicKey
        Challenge = challenge.Challenge
        IntentSignature = Convert.ToHexStringLower(signature: byte[])
        Attestation = null
    }

/// Logs a label's dummy identity in.
let login (server: TestServer) (label: string) : Session =
    let id = Keystore.FromLabel label
    let r = server.Client.LoginAsync(loginRequest server.Client id) |> await

    {
        Server = server
        Identity = id
        Token = r.AccessToken
        KeyId = id.KeyId
        DefaultNamespaceId = r.DefaultNamespaceId
    }

/// A namespace the test knows the DEK of.
type Ns = { Id: NamespaceId; Dek: Dek }

let newNamespace () =
    {
        Id = bin<NamespaceIdKind>(random 16)
        Dek = bin<DekKind>(random 32)
    }

/// The DEK of `ns` wrapped to an identity's wrap key (base64).
let wrapFor (id: Keystore) (ns: Ns) : string =
    (DekWrap.wrap (bin<WrapPublicKeyKind>(id.WrapPublicKey.ToArray())) ns.Id ns.Dek (random 32)
     |> ok "wrap")
        .Wire

/// Creates (or gets) the caller's default namespace.
let ensureDefault (s: Session) : Ns * EnsureDefaultNamespaceResponse =
    let ns = newNamespace ()

    let r =
        s.Client.EnsureDefaultNamespaceAsync(
            s.Token,
            {
                ProposedNamespaceId = ns.Id.Wire
                WrappedDek = wrapFor s.Identity ns
            }
        )
        |> await

    ns, r

/// Creates a shared namespace owned by the caller.
let createShared (s: Session) : Ns =
    let ns = newNamespace ()

    s.Client.CreateSharedNamespaceAsync(
        s.Token,
        {
            NamespaceId = ns.Id.Wire
            WrappedDek = wrapFor s.Identity ns
        }
    )
    |> await
    |> ignore

    ns

/// An invite as the inviter keeps it.
type Invite =
    {
        Namespace: Ns
        InviteId: InviteId
        Secret: InviteSecret
        ExpiresAt: int64
        MaxAccepted: int
    }

    member i.ServerSecret = InviteSecrets.serverSecret i.Secret

/// The signed create-invite request for a fresh challenge.
let createInviteRequestFor
    (s: Session)
    (ns: Ns)
    (inviteId: InviteId)
    (expiresAt: int64)
    (maxAccepted: int)
    =
    let secret = bin<InviteSecretKind>(random 32)
    let serverHash = InviteSecrets.serverSecretHash (InviteSecrets.serverSecret secret)

    let fields: CreateInviteFields =
        {
            NamespaceId = ns.Id
            InviteId = inviteId
            InviteServerSecretHash = serverHash
            ExpiresAt = expiresAt
            MaxAccepted = maxAccepted
        }

    let challenge =
        s.Client.SensitiveActionChallengeAsync(
            "create-namespace-invite",
            (ActionFields.hash (ActionFields.createInvite fields)).Wire
        )
        |> await

    let signature =
        s.Identity
            .SignCreateNamespaceInviteIntentAsync(
                Convert.FromBase64String challenge.Challenge,
                Bin.toArray ns.Id,
                Bin.toArray inviteId,
                Bin.toArray serverHash,
                expiresAt,
                maxAccepted
            )
            .AsTask()
        |> await

    let request: CreateNamespaceInviteRequest =
        {
            Kind = "keystore"
            KeyId = s.KeyId
            InviteId = inviteId.Wire
            InviteServerSecretHash = serverHash.Wire
            Challenge = challenge.Challenge
            IntentSignature = Convert.ToHexStringLower(signature: byte[])
            ExpiresAt = expiresAt
            MaxAccepted = int64 maxAccepted
        }

    request,
    {
        Namespace = ns
        InviteId = inviteId
        Secret = secret
        ExpiresAt = expiresAt
        MaxAccepted = maxAccepted
    }

/// A create-invite body in the legacy layout of older Go clients (`maxPending`, 80-byte action
/// fields), signed by the dummy keystore of `label` (the session's identity); `tamper` changes the
/// request after signing.
let legacyCreateInviteBody
    (s: Session)
    (label: string)
    (ns: Ns)
    (expiresAt: int64)
    (maxPending: int)
    (maxAccepted: int)
    (tamper: LegacyCreateNamespaceInviteRequest -> LegacyCreateNamespaceInviteRequest)
    =
    let inviteId = bin<InviteIdKind>(random 16)
    let secret = bin<InviteSecretKind>(random 32)
    let serverHash = InviteSecrets.serverSecretHash (InviteSecrets.serverSecret secret)

    let fields =
        ActionFields.createInviteLegacy
            {
                NamespaceId = ns.Id
                InviteId = inviteId
                InviteServerSecretHash = serverHash
                ExpiresAt = expiresAt
                MaxAccepted = maxAccepted
            }
            maxPending

    let challenge =
        s.Client.SensitiveActionChallengeAsync(
            "create-namespace-invite",
            (ActionFields.hash fields).Wire
        )
        |> await

    let material = BitBoxSync.Protocol.DummyKeystore.Derive label

    let intent =
        Intents.sensitiveAction
            SensitiveAction.CreateNamespaceInvite
            (bin<ChallengeKind>(Convert.FromBase64String challenge.Challenge))
            IdentityKind.Keystore
            material.KeyId
            fields

    use key = Ed25519.importSeed (ReadOnlySpan material.AuthSeed)

    let request: LegacyCreateNamespaceInviteRequest =
        {
            Kind = "keystore"
            KeyId = s.KeyId
            InviteId = inviteId.Wire
            InviteServerSecretHash = serverHash.Wire
            Challenge = challenge.Challenge
            IntentSignature = (Ed25519.sign key (ReadOnlySpan intent)).Wire
            ExpiresAt = expiresAt
            MaxPending = int64 maxPending
            MaxAccepted = int64 maxAccepted
        }

    Json.serialize (tamper request),
    {
        Namespace = ns
        InviteId = inviteId
        Secret = secret
        ExpiresAt = expiresAt
        MaxAccepted = maxAccepted
    }

/// The signed create-invite request for a fresh invite ID.
let createInviteRequest (s: Session) (ns: Ns) (expiresAt: int64) (maxAccepted: int) =
    createInviteRequestFor s ns (bin<InviteIdKind>(random 16)) expiresAt maxAccepted

/// Creates an invite valid for 10 minutes.
let createInvite (s: Session) (ns: Ns) : Invite =
    let expiresAt = s.Server.Clock.Now.ToUnixTimeSeconds() + 600L
    let request, invite = createInviteRequest s ns expiresAt 3

    s.Client.CreateNamespaceInviteAsync(s.Token, ns.Id.Wire, request)
    |> await
    |> ignore

    invite

/// The join request a requester builds from an invite (signed, with the invite proof).
let joinRequest
    (requester: Session)
    (invite: Invite)
    (expiresAt: int64)
    : SubmitNamespaceJoinRequestRequest =
    let origin = ServerOrigin.parseCanonical Harness.origin |> ok "origin"

    let signature =
        requester.Identity
            .SignNamespaceJoinRequestIntentAsync(
                Bin.toArray invite.Namespace.Id,
                Bin.toArray invite.InviteId,
                Harness.origin,
                expiresAt
            )
            .AsTask()
        |> await

    let fields: JoinRequestFields =
        {
            NamespaceId = invite.Namespace.Id
            InviteId = invite.InviteId
            ServerOrigin = origin
            Kind = IdentityKind.Keystore
            KeyId = bin<KeyIdKind>(Convert.FromHexString requester.KeyId)
            AuthPublicKey = bin<AuthPublicKeyKind>(requester.Identity.AuthPublicKey.ToArray())
            WrapPublicKey = bin<WrapPublicKeyKind>(requester.Identity.WrapPublicKey.ToArray())
            ExpiresAt = expiresAt
        }

    {
        InviteServerSecret = invite.ServerSecret.Wire
        JoinRequest =
            {
                Version = 1L
                NamespaceId = invite.Namespace.Id.Wire
                InviteId = invite.InviteId.Wire
                ServerOrigin = Harness.origin
                Kind = "keystore"
                KeyId = requester.KeyId
                AuthPublicKey = hex requester.Identity.AuthPublicKey
                WrapPublicKey = hex requester.Identity.WrapPublicKey
                ExpiresAt = expiresAt
                Signature = Convert.ToHexStringLower(signature: byte[])
                InviteProof = (InviteSecrets.proof invite.Secret (JoinRequests.payload fields)).Wire
            }
    }

/// Submits a join request expiring in 5 minutes.
let submit (requester: Session) (invite: Invite) : SubmitNamespaceJoinRequestResponse =
    let expiresAt = requester.Server.Clock.Now.ToUnixTimeSeconds() + 300L

    requester.Client.SubmitNamespaceJoinRequestAsync(
        requester.Token,
        invite.Namespace.Id.Wire,
        invite.InviteId.Wire,
        joinRequest requester invite expiresAt
    )
    |> await

/// Approves a requester: wraps the DEK to its wrap key.
let approve (approver: Session) (invite: Invite) (requester: Session) (hash: string) =
    approver.Client.ApproveNamespaceJoinRequestAsync(
        approver.Token,
        invite.Namespace.Id.Wire,
        requester.KeyId,
        hash,
        {
            InviteServerSecret = invite.ServerSecret.Wire
            WrappedDek = wrapFor requester.Identity invite.Namespace
        }
    )
    |> await

/// The item ID of a logical key in a namespace.
let itemId (ns: Ns) (key: string) =
    ItemIds.compute (NamespaceKeys.derive ns.Dek) key

/// An upload of `plaintext` sealed for `version`.
let sealFor (ns: Ns) (item: ItemId) (version: uint64) (plaintext: string) : PutItemRequest =
    let s =
        ItemCrypto.seal
            (NamespaceKeys.derive ns.Dek)
            ns.Id
            item
            version
            (bin<ItemNonceKind>(random 24))
            (ReadOnlySpan(Text.Encoding.UTF8.GetBytes plaintext))
        |> ok "seal"

    {
        Nonce = s.Nonce.Wire
        Aad = s.Aad.Wire
        Ciphertext = s.Ciphertext.Wire
    }

/// Writes an item: create (no If-Match) when `expected` is None, else update from that version.
let put (s: Session) (ns: Ns) (key: string) (expected: uint64 option) (plaintext: string) =
    let item = itemId ns key
    let target = (expected |> Option.defaultValue 0UL) + 1UL

    s.Client.PutItemAsync(
        s.Token,
        ns.Id.Wire,
        item.Wire,
        sealFor ns item target plaintext,
        Option.toNullable expected
    )
    |> await

/// Reads and decrypts an item.
let read (s: Session) (ns: Ns) (key: string) : uint64 * string =
    let item = itemId ns key
    let r = s.Client.GetItemAsync(s.Token, ns.Id.Wire, item.Wire) |> await

    let sealedItem: SealedItem =
        {
            Nonce = Bin.parse<ItemNonceKind> r.Nonce |> ok "nonce"
            Aad = Bin.parse<ItemAadKind> r.Aad |> ok "aad"
            Ciphertext = Bin.parse<CiphertextKind> r.Ciphertext |> ok "ciphertext"
        }

    let plain =
        ItemCrypto.openItem (NamespaceKeys.derive ns.Dek) ns.Id item r.Version sealedItem
        |> ok "open"

    r.Version, Text.Encoding.UTF8.GetString plain

/// Alice's shared namespace with Bob as a member, and Bob's watch on it (known head 0) through a
/// client at `watcherAddress`, parked before this returns: it waits up to 5 s until
/// `parkedWatchers` counts it (and fails if it does not). Dispose the client after the watch.
let parkedWatch (writer: TestServer) (watcherAddress: Uri) (parkedWatchers: unit -> int) =
    let alice = login writer "alice"
    let bob = login writer "bob"
    let ns = createShared alice
    let invite = createInvite alice ns
    approve alice invite bob (submit bob invite).JoinRequestHash |> ignore
    let known = Collections.Generic.Dictionary<string, uint64>()
    known[ns.Id.Wire] <- 0UL
    let watcher = new SyncClient(watcherAddress)
    let watch = watcher.WatchNamespacesAsync(bob.Token, { KnownHeads = known })
    let parked = Diagnostics.Stopwatch.StartNew()

    while parkedWatchers () = 0 && parked.Elapsed < TimeSpan.FromSeconds 5.0 do
        Threading.Thread.Sleep 10

    if parkedWatchers () <> 1 then
        failwithf "the watcher is not parked (%d parked)" (parkedWatchers ())

    alice, ns, watcher, watch
