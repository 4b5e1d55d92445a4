/// Every vector of tests/data/vectors.json (docs/protocol.md §16) and the RFC 9180 A.2.1 vector,
/// checked byte for byte and
/// driven by the files: a vector without a handler, or an expected value no assertion reads,
/// fails the suite.
module BitBoxSync.Tests.VectorTests

open System
open System.Text.Json
open Expecto
open BitBoxSync.Protocol
open BitBoxSync.Protocol.Wire
open BitBoxSync.Tests.TestData

let private vectors = lazy (load "vectors.json")

let private inputOf (vectorName: string) : JsonElement =
    vectors.Value.GetProperty(vectorName).GetProperty "inputs"

let private str (e: JsonElement) (name: string) = e.GetProperty(name).GetString()
let private int64Of (e: JsonElement) (name: string) = e.GetProperty(name).GetInt64()
let private hexOf (e: JsonElement) (name: string) = hex (str e name)

let private parsed<'K when 'K :> IBinaryKind> (s: string) : Bin<'K> =
    Bin.parse<'K> s |> ok ("parse " + s)

let private ofRaw<'K when 'K :> IBinaryKind> (b: byte[]) : Bin<'K> = Bin.ofBytes<'K> b |> ok "bytes"

/// The dummy keystore a vector names as its identity (for example "dummy_keystore_alice").
let private keystoreNamed (vectorName: string) =
    DummyKeystore.FromLabel(str (inputOf vectorName) "label")

let private challengeOf (inputs: JsonElement) =
    ofRaw<ChallengeKind>(hexOf inputs "challenge")

type private Handler = JsonElement -> Tracked -> unit

// --- encodings ---------------------------------------------------------------------------------

let private lowerHexExact: Handler =
    fun inputs expected ->
        bytesEqual
            (Bin.toArray (parsed<KeyIdKind>(str inputs "accept_keyId")))
            (expected.Hex "accept_keyId_bytes")
            "accepted key id"

        let rejects: (string * (string -> Result<unit, FieldError>)) list =
            [
                "reject_keyId", (Bin.parse<KeyIdKind> >> Result.map ignore)
                "reject_namespaceId", (Bin.parse<NamespaceIdKind> >> Result.map ignore)
                "reject_itemId", (Bin.parse<ItemIdKind> >> Result.map ignore)
                "reject_authPublicKey", (Bin.parse<AuthPublicKeyKind> >> Result.map ignore)
                "reject_wrapPublicKey", (Bin.parse<WrapPublicKeyKind> >> Result.map ignore)
            ]

        for field, parse in rejects do
            parse (str inputs field)
            |> errorContaining field "must be lowercase hex" (fun e -> e.Message)
            |> ignore

        // "all reject_* inputs are rejected (uppercase hex)": asserted by the loop above.
        Expect.stringContains
            (expected.Str "rejections")
            "rejected"
            "rejections describes the loop above"

let private genericHex: Handler =
    fun inputs expected ->
        let bytes =
            Hex.decodeExact "value" (int (int64Of inputs "size")) (str inputs "value")
            |> ok "generic hex"

        bytesEqual bytes (expected.Hex "bytes") "generic hex decode"

let private canonicalBase64: Handler =
    fun inputs expected ->
        bytesEqual
            (Base64.decode "v" (str inputs "accept") |> ok "base64")
            (expected.Hex "accept_bytes")
            "accepted base64"

        Base64.decode "v" (str inputs "reject")
        |> errorContaining "non-canonical base64" (expected.Str "reject_error_contains") (fun e ->
            e.Message)
        |> ignore

let private ifMatch: Handler =
    fun inputs expected ->
        Expect.equal
            (IfMatch.quote (uint64 (int64Of inputs "quote_version")))
            (expected.Str "quoted")
            "quoted version"

        let okCases = inputs.GetProperty("parse_ok").EnumerateArray() |> Seq.toList
        let okExpected = (expected.Get "parse_ok").EnumerateArray() |> Seq.toList
        Expect.equal okCases.Length okExpected.Length "parse_ok lengths"

        for input, exp in List.zip okCases okExpected do
            let result = IfMatch.parse (input.GetString()) |> ok "If-Match"

            match result, exp.GetProperty("hasVersion").GetBoolean() with
            | IfMatch.Absent, false ->
                Expect.equal (exp.GetProperty("version").GetUInt64()) 0UL "no version"
            | IfMatch.Version v, true ->
                Expect.equal v (exp.GetProperty("version").GetUInt64()) "version"
            | other, _ -> failtestf "If-Match %A parsed to %A" (input.GetString()) other

        for input in inputs.GetProperty("parse_invalid").EnumerateArray() do
            match IfMatch.parse (input.GetString()) with
            | Error _ -> ()
            | Ok v -> failtestf "If-Match %A must be rejected, got %A" (input.GetString()) v

        Expect.stringContains
            (expected.Str "parse_invalid")
            "error"
            "parse_invalid describes the loop above"

let private decryptShortNonce: Handler =
    fun inputs expected ->
        let keys = NamespaceKeys.derive (ofRaw<DekKind>(hexOf inputs "dek"))
        let nonce = Text.Encoding.UTF8.GetBytes(str inputs "nonce_utf8")

        let result =
            try
                Ok(
                    ItemCrypto.decryptRaw
                        keys
                        nonce
                        (hexOf inputs "aad")
                        (hexOf inputs "ciphertext")
                )
            with e ->
                Error e

        Expect.isFalse (expected.Get("panics").GetBoolean()) "vector says no panic"
        Expect.isTrue (expected.Get("error").GetBoolean()) "vector says error"

        match result with
        | Error e -> failtestf "DecryptItem threw %O" e
        | Ok(Ok _) -> failtest "a 5-byte nonce must not decrypt"
        | Ok(Error e) -> Expect.equal e InvalidNonce "error kind"

// --- origins and invite URIs -------------------------------------------------------------------

let private originHash: Handler =
    fun inputs expected ->
        let hash = ServerOrigin.hashOf (str inputs "origin") |> ok "origin hash"
        Expect.equal hash.Wire (expected.Str "hash") "origin hash"

let private originHashRejects: Handler =
    fun inputs expected ->
        let needle = expected.Str "error_contains"

        for case in inputs.GetProperty("cases").EnumerateArray() do
            ServerOrigin.hashOf (case.GetString())
            |> errorContaining (case.GetString()) needle (fun e -> e.Message)
            |> ignore

let private originLength: Handler =
    fun inputs expected ->
        let accepted =
            ServerOrigin.canonicalize (str inputs "accepted") |> ok "accepted origin"

        Expect.equal accepted.Value (expected.Str "accepted_canonical") "canonical"
        Expect.equal (int64 accepted.Value.Length) (expected.Int64 "accepted_length") "length"

        ServerOrigin.canonicalize (str inputs "rejected")
        |> errorContaining "too long" (expected.Str "rejected_error_contains") (fun e -> e.Message)
        |> ignore

let private originCases: Handler =
    fun inputs expected ->
        let cases = inputs.GetProperty("cases").EnumerateArray() |> Seq.toList
        let exp = (expected.Get "cases").EnumerateArray() |> Seq.toList
        Expect.equal cases.Length exp.Length "case count"

        for case, e in List.zip cases exp do
            ServerOrigin.canonicalize (case.GetString())
            |> errorContaining
                (case.GetString())
                (e.GetProperty("error_contains").GetString())
                (fun e -> e.Message)
            |> ignore

let private tokenOf (inputs: JsonElement) =
    InviteUri.createToken
        (int (int64Of inputs "version"))
        (str inputs "serverOrigin")
        (str inputs "namespaceId")
        (str inputs "inviteId")
        (int64Of inputs "expiresAt")
        (str inputs "inviteSecret_b64url")
    |> ok "invite token"

let private uriEncode: Handler =
    fun inputs expected ->
        Expect.equal (InviteUri.format (tokenOf inputs)) (expected.Str "uri") "invite URI"

let private uriParse: Handler =
    fun inputs expected ->
        let t = InviteUri.parse (str inputs "uri") |> ok "parse URI"
        Expect.equal (int64 t.Version) (expected.Int64 "version") "version"
        Expect.equal t.ServerOrigin.Value (expected.Str "serverOrigin") "origin"
        Expect.equal t.NamespaceId.Wire (expected.Str "namespaceId") "namespace"
        Expect.equal t.InviteId.Wire (expected.Str "inviteId") "invite"
        Expect.equal t.ExpiresAt (expected.Int64 "expiresAt") "expiry"
        Expect.equal t.InviteSecret.Wire (expected.Str "inviteSecret_b64url") "secret"

let private uriRejectOne: Handler =
    fun inputs expected ->
        InviteUri.parse (str inputs "uri")
        |> errorContaining "padded secret" (expected.Str "error_contains") (fun e -> e.Message)
        |> ignore

let private uriRejectCases: Handler =
    fun inputs expected ->
        let cases = inputs.GetProperty("cases").EnumerateArray() |> Seq.toList
        let exp = (expected.Get "cases").EnumerateArray() |> Seq.toList
        Expect.equal cases.Length exp.Length "case count"

        for case, e in List.zip cases exp do
            let uri = case.GetProperty("uri").GetString()

            InviteUri.parse uri
            |> errorContaining uri (e.GetProperty("error_contains").GetString()) (fun e ->
                e.Message)
            |> ignore

// --- identities, intents, signatures -------------------------------------------------------------

let private dummyKeystore: Handler =
    fun inputs expected ->
        let m = DummyKeystore.Derive(str inputs "label")
        bytesEqual m.RootSecret (expected.Hex "rootSecret") "root secret"
        bytesEqual m.AuthSeed (expected.Hex "authSeed") "auth seed"
        Expect.equal m.AuthPublicKey.Wire (expected.Str "authPublicKey") "auth public key"
        Expect.equal m.KeyId.Wire (expected.Str "keyId") "key id"
        Expect.equal (KeyIds.ofAuthPublicKey m.AuthPublicKey) m.KeyId "key id = SHA-256(auth key)"
        bytesEqual m.WrapPrivateKey (expected.Hex "wrapPrivateKey") "wrap private key"
        Expect.equal m.WrapPublicKey.Wire (expected.Str "wrapPublicKey") "wrap public key"

let private checkSignature
    (ks: DummyKeystore)
    (intent: byte[])
    (signature: Signature)
    (expected: Tracked)
    =
    Expect.equal signature.Wire (expected.Str "signature") "signature"

    Expect.isTrue
        (Ed25519.verify ks.AuthPublicKey (ReadOnlySpan intent) signature)
        "signature verifies"

let private loginIntent: Handler =
    fun inputs expected ->
        use ks = keystoreNamed (str inputs "identity")
        let challenge = challengeOf inputs
        Expect.equal challenge.Wire (str inputs "challenge_b64") "challenge base64"
        let kind = IdentityKind.parse (str inputs "kind") |> ok "kind"
        let intent = Intents.login challenge kind ks.KeyId ks.AuthPublicKey ks.WrapPublicKey
        bytesEqual intent (expected.Hex "intent") "login intent"
        Expect.equal (int64 intent.Length) (expected.Int64 "intent_length") "intent length"
        let signature = ks.SignLoginIntent challenge
        checkSignature ks intent signature expected

        let body: LoginRequest =
            {
                Kind = kind.Wire
                KeyId = ks.KeyId.Wire
                AuthPublicKey = ks.AuthPublicKey.Wire
                WrapPublicKey = ks.WrapPublicKey.Wire
                Challenge = challenge.Wire
                IntentSignature = signature.Wire
                Attestation = null
            }

        Expect.equal
            (Json.serialize body)
            (compactJson (expected.Get "login_request_json"))
            "login request JSON"

let private refreshIntent: Handler =
    fun inputs expected ->
        use ks = keystoreNamed (str inputs "identity")
        let challenge = challengeOf inputs
        let kind = IdentityKind.parse (str inputs "kind") |> ok "kind"
        let intent = Intents.refresh challenge kind ks.KeyId
        bytesEqual intent (expected.Hex "intent") "refresh intent"
        Expect.equal (int64 intent.Length) (expected.Int64 "intent_length") "intent length"
        let signature = ks.SignRefreshIntent challenge
        checkSignature ks intent signature expected

        let body: RefreshRequest =
            {
                Kind = kind.Wire
                KeyId = ks.KeyId.Wire
                Challenge = challenge.Wire
                IntentSignature = signature.Wire
                Attestation = null
            }

        Expect.equal
            (Json.serialize body)
            (compactJson (expected.Get "refresh_request_json"))
            "refresh request JSON"

let private challengeRequestJson (action: SensitiveAction) (hash: ActionFieldsHash) =
    Json.serialize
        {
            Purpose = (ChallengePurpose.SensitiveAction(action, hash)).Wire
            Kind = IdentityKind.Keystore.Wire
            Action = action.Wire
            ActionFieldsHash = hash.Wire
        }

let private revokeIntent: Handler =
    fun inputs expected ->
        use ks = keystoreNamed (str inputs "identity")
        let challenge = challengeOf inputs
        let action = SensitiveAction.parse (str inputs "action") |> ok "action"
        let fields = hexOf inputs "actionFields"
        bytesEqual fields ActionFields.revokeAllTokens "empty action fields"
        let hash = ActionFields.hash fields
        Expect.equal hash.Wire (expected.Str "actionFieldsHash") "fields hash"

        Expect.equal
            (challengeRequestJson action hash)
            (compactJson (expected.Get "challenge_request_json"))
            "challenge JSON"

        let intent =
            Intents.sensitiveAction action challenge IdentityKind.Keystore ks.KeyId fields

        bytesEqual intent (expected.Hex "intent") "revoke intent"
        Expect.equal (int64 intent.Length) (expected.Int64 "intent_length") "intent length"
        let signature = ks.SignRevokeAllTokensIntent challenge
        checkSignature ks intent signature expected

        let body: RevokeAllTokensRequest =
            {
                Kind = "keystore"
                KeyId = ks.KeyId.Wire
                Challenge = challenge.Wire
                IntentSignature = signature.Wire
            }

        Expect.equal
            (Json.serialize body)
            (compactJson (expected.Get "revoke_request_json"))
            "revoke JSON"

let private createInviteFieldsOf (inputs: JsonElement) : CreateInviteFields =
    {
        NamespaceId = parsed<NamespaceIdKind>(str inputs "namespaceId")
        InviteId = parsed<InviteIdKind>(str inputs "inviteId")
        InviteServerSecretHash =
            parsed<InviteServerSecretHashKind>(str inputs "inviteServerSecretHash")
        ExpiresAt = int64Of inputs "expiresAt"
        MaxAccepted = int (int64Of inputs "maxAccepted")
    }

let private createInviteIntent: Handler =
    fun inputs expected ->
        use ks = keystoreNamed (str inputs "identity")
        let challenge = challengeOf inputs
        let f = createInviteFieldsOf inputs
        let fields = ActionFields.createInvite f
        bytesEqual fields (expected.Hex "actionFields") "action fields"
        Expect.equal (int64 fields.Length) (expected.Int64 "actionFields_length") "fields length"
        let hash = ActionFields.hash fields
        Expect.equal hash.Wire (expected.Str "actionFieldsHash") "fields hash"

        Expect.equal
            (challengeRequestJson SensitiveAction.CreateNamespaceInvite hash)
            (compactJson (expected.Get "challenge_request_json"))
            "challenge JSON"

        let intent =
            Intents.sensitiveAction
                SensitiveAction.CreateNamespaceInvite
                challenge
                IdentityKind.Keystore
                ks.KeyId
                fields

        bytesEqual intent (expected.Hex "intent") "create-invite intent"
        Expect.equal (int64 intent.Length) (expected.Int64 "intent_length") "intent length"
        let signature = ks.SignCreateNamespaceInviteIntent(challenge, f) |> ok "sign"
        checkSignature ks intent signature expected

        let body: CreateNamespaceInviteRequest =
            {
                Kind = "keystore"
                KeyId = ks.KeyId.Wire
                InviteId = f.InviteId.Wire
                InviteServerSecretHash = f.InviteServerSecretHash.Wire
                Challenge = challenge.Wire
                IntentSignature = signature.Wire
                ExpiresAt = f.ExpiresAt
                MaxAccepted = int64 f.MaxAccepted
            }

        Expect.equal
            (Json.serialize body)
            (compactJson (expected.Get "create_invite_request_json"))
            "create-invite JSON"

        Expect.equal (Paths.invites f.NamespaceId) (expected.Str "path") "path"

let private createInviteIntentLegacy: Handler =
    fun inputs expected ->
        let material = DummyKeystore.Derive(str (inputOf (str inputs "identity")) "label")
        let challenge = challengeOf inputs
        let f = createInviteFieldsOf inputs
        let fields = ActionFields.createInviteLegacy f (int (int64Of inputs "maxPending"))
        bytesEqual fields (expected.Hex "actionFields") "legacy action fields"

        Expect.equal
            (int64 fields.Length)
            (expected.Int64 "actionFields_length")
            "legacy fields length"

        Expect.equal
            (ActionFields.hash fields).Wire
            (expected.Str "actionFieldsHash")
            "legacy fields hash"

        let intent =
            Intents.sensitiveAction
                SensitiveAction.CreateNamespaceInvite
                challenge
                IdentityKind.Keystore
                material.KeyId
                fields

        bytesEqual intent (expected.Hex "intent") "legacy intent"
        Expect.equal (int64 intent.Length) (expected.Int64 "intent_length") "legacy intent length"
        use key = Ed25519.importSeed (ReadOnlySpan material.AuthSeed)
        let signature = Ed25519.sign key (ReadOnlySpan intent)
        Expect.equal signature.Wire (expected.Str "signature") "legacy signature"

        // The server accepts the legacy request: challenge purpose over the 80-byte fields, the
        // vector's signature verified, maxPending stored and echoed.
        let request: LegacyCreateNamespaceInviteRequest =
            {
                Kind = "keystore"
                KeyId = material.KeyId.Wire
                InviteId = f.InviteId.Wire
                InviteServerSecretHash = f.InviteServerSecretHash.Wire
                Challenge = challenge.Wire
                IntentSignature = expected.Str "signature"
                ExpiresAt = f.ExpiresAt
                MaxPending = int64Of inputs "maxPending"
                MaxAccepted = int64 f.MaxAccepted
            }

        let cmd = Requests.createInviteLegacy request |> ok "legacy request"

        Expect.equal
            (BitBoxSync.Server.Core.Sharing.createInvitePurpose f.NamespaceId cmd)
            (ChallengePurpose.SensitiveAction(
                SensitiveAction.CreateNamespaceInvite,
                parsed<ActionFieldsHashKind> (expected.Str "actionFieldsHash")
            ))
            "the server binds the challenge to the legacy fields hash"

        use ks = keystoreNamed (str inputs "identity")
        let now = DateTimeOffset.FromUnixTimeSeconds(f.ExpiresAt - 600L)

        let login: LoginCommand =
            {
                Kind = IdentityKind.Keystore
                KeyId = ks.KeyId
                AuthPublicKey = ks.AuthPublicKey
                WrapPublicKey = ks.WrapPublicKey
                Challenge = challenge
                Signature = ks.SignLoginIntent challenge
                Attestation = None
            }

        let caller =
            BitBoxSync.Server.Core.Auth.login BitBoxSync.Server.Core.Auth.defaults login None now
            |> ok "login"

        let shared: BitBoxSync.Server.Core.StoredNamespace =
            {
                NamespaceId = f.NamespaceId
                Kind = NamespaceKind.Shared
                Head = 0UL
                CreatedBy = ks.KeyId
                CreatedAt = now
            }

        let membership: BitBoxSync.Server.Core.Membership =
            {
                NamespaceId = f.NamespaceId
                KeyId = ks.KeyId
                Kind = IdentityKind.Keystore
                WrappedDek =
                    Bin.ofBytes<WrappedDekKind>(Array.init 97 (fun i -> if i = 0 then 1uy else 5uy))
                    |> ok "wrapped"
                JoinedAt = now
            }

        let settings =
            BitBoxSync.Server.Core.Sharing.settings (
                ServerOrigin.parseCanonical "https://sync.example" |> ok "origin"
            )

        let create (c: CreateInviteCommand) =
            BitBoxSync.Server.Core.Sharing.createInvite
                settings
                caller
                shared
                (Some membership)
                c
                false
                0
                now

        let invite = create cmd |> ok "the vector's legacy invite is accepted"
        Expect.equal invite.MaxPending (Some 20) "maxPending stored"

        Expect.equal
            (BitBoxSync.Server.Core.Sharing.createInviteResponse invite).MaxPending
            (Nullable 20L)
            "maxPending echoed"

        match create { cmd with MaxPending = Some 19 } with
        | Error e -> Expect.equal e.Status 403 "a signature over another maxPending is refused"
        | Ok _ -> failtest "a legacy invite with a changed maxPending was accepted"

        match create { cmd with MaxPending = None } with
        | Error e -> Expect.equal e.Status 403 "the legacy signature does not verify as the current layout"
        | Ok _ -> failtest "a legacy signature verified over the current layout"

let private inviteSecretDerivations: Handler =
    fun inputs expected ->
        let secret = parsed<InviteSecretKind>(str inputs "inviteSecret_b64url")
        bytesEqual (Bin.toArray secret) (hexOf inputs "inviteSecret") "secret bytes"
        let serverSecret = InviteSecrets.serverSecret secret
        bytesEqual (Bin.toArray serverSecret) (expected.Hex "inviteServerSecret") "server secret"

        Expect.equal
            serverSecret.Wire
            (expected.Str "inviteServerSecret_b64url")
            "server secret base64url"

        let hash = InviteSecrets.serverSecretHash serverSecret
        Expect.equal hash.Wire (expected.Str "inviteServerSecretHash") "server secret hash"
        Expect.isTrue (InviteSecrets.matchesHash serverSecret hash) "hash matches"
        bytesEqual (InviteSecrets.proofKey secret) (expected.Hex "inviteProofKey") "proof key"

let private joinRequestVector: Handler =
    fun inputs expected ->
        use ks = keystoreNamed (str inputs "identity")
        let origin = ServerOrigin.parseCanonical (str inputs "serverOrigin") |> ok "origin"
        Expect.equal (ServerOrigin.hash origin).Wire (expected.Str "serverOriginHash") "origin hash"

        let fields: JoinRequestFields =
            {
                NamespaceId = parsed<NamespaceIdKind>(str inputs "namespaceId")
                InviteId = parsed<InviteIdKind>(str inputs "inviteId")
                ServerOrigin = origin
                Kind = IdentityKind.parse (str inputs "kind") |> ok "kind"
                KeyId = ks.KeyId
                AuthPublicKey = ks.AuthPublicKey
                WrapPublicKey = ks.WrapPublicKey
                ExpiresAt = int64Of inputs "expiresAt"
            }

        let payload = JoinRequests.payload fields
        bytesEqual payload (expected.Hex "payload") "payload"
        Expect.equal (int64 payload.Length) (expected.Int64 "payload_length") "payload length"

        let signature =
            ks.SignNamespaceJoinRequestIntent(
                fields.NamespaceId,
                fields.InviteId,
                origin,
                fields.ExpiresAt
            )
            |> ok "sign"

        checkSignature ks payload signature expected
        let hash = JoinRequests.hash payload
        Expect.equal hash.Wire (expected.Str "joinRequestHash") "join request hash"
        let secret = ofRaw<InviteSecretKind>(hexOf inputs "inviteSecret")
        let proof = InviteSecrets.proof secret payload
        bytesEqual (Bin.toArray proof) (expected.Hex "inviteProof") "invite proof"
        Expect.equal proof.Wire (expected.Str "inviteProof_b64url") "invite proof base64url"
        InviteSecrets.verifyProof secret payload proof.Span |> ok "proof verifies"

        let body: SubmitNamespaceJoinRequestRequest =
            {
                InviteServerSecret = (InviteSecrets.serverSecret secret).Wire
                JoinRequest =
                    {
                        Version = 1L
                        NamespaceId = fields.NamespaceId.Wire
                        InviteId = fields.InviteId.Wire
                        ServerOrigin = origin.Value
                        Kind = fields.Kind.Wire
                        KeyId = fields.KeyId.Wire
                        AuthPublicKey = fields.AuthPublicKey.Wire
                        WrapPublicKey = fields.WrapPublicKey.Wire
                        ExpiresAt = fields.ExpiresAt
                        Signature = signature.Wire
                        InviteProof = proof.Wire
                    }
            }

        let expectedJson = compactJson (expected.Get "submit_request_json")
        Expect.equal (Json.serialize body) expectedJson "submit JSON"
        // The server's validation rebuilds exactly the signed payload from the JSON.
        let decoded =
            Json.decodeRequestString<SubmitNamespaceJoinRequestRequest> expectedJson
            |> ok "decode"

        let command = Requests.submitJoinRequest decoded |> ok "validate"
        bytesEqual (JoinRequests.payload command.JoinRequest.Fields) payload "rebuilt payload"

        Expect.equal
            (Paths.submitJoinRequest fields.NamespaceId fields.InviteId)
            (expected.Str "submit_path")
            "submit path"

        Expect.equal
            (Paths.approveJoinRequest fields.NamespaceId fields.KeyId hash)
            (expected.Str "approve_path")
            "approve path"

        Expect.equal
            (Paths.joinRequest fields.NamespaceId fields.KeyId hash)
            (expected.Str "reject_path")
            "reject path"

let private attestation: Handler =
    fun inputs expected ->
        use ks = keystoreNamed (str inputs "identity")
        let a = ks.Attest(challengeOf inputs)
        bytesEqual (Bin.toArray a) (expected.Hex "attestation") "attestation"
        Expect.equal (int64 a.Length) (expected.Int64 "attestation_length") "length"
        Expect.equal a.Wire (expected.Str "attestation_b64") "base64"

// --- namespace keys, items, wrapping -----------------------------------------------------------

let private keysOf (inputs: JsonElement) =
    NamespaceKeys.derive (ofRaw<DekKind>(hexOf inputs "dek"))

let private namespaceKeys: Handler =
    fun inputs expected ->
        let keys = keysOf inputs
        bytesEqual (NamespaceKeys.blobKey keys) (expected.Hex "blobKey") "blob key"
        bytesEqual (NamespaceKeys.mapKey keys) (expected.Hex "mapKey") "map key"

let private itemIdVector: Handler =
    fun inputs expected ->
        Expect.equal
            (ItemIds.compute (keysOf inputs) (str inputs "logicalKey_utf8")).Wire
            (expected.Str "itemId")
            "item id"

let private itemEncrypt: Handler =
    fun inputs expected ->
        let keys = keysOf inputs
        bytesEqual (NamespaceKeys.blobKey keys) (expected.Hex "blobKey") "blob key"
        let ns = parsed<NamespaceIdKind>(str inputs "namespaceId")
        let item = parsed<ItemIdKind>(str inputs "itemId")
        let version = uint64 (int64Of inputs "version")
        let plaintext = Text.Encoding.UTF8.GetBytes(str inputs "plaintext_utf8")
        let nonce = ofRaw<ItemNonceKind>(hexOf inputs "nonce")

        let sealedItem =
            ItemCrypto.seal keys ns item version nonce (ReadOnlySpan plaintext) |> ok "seal"

        bytesEqual (Bin.toArray sealedItem.Aad) (expected.Hex "aad") "aad"
        Expect.equal (int64 sealedItem.Aad.Length) (expected.Int64 "aad_length") "aad length"
        bytesEqual (Bin.toArray sealedItem.Ciphertext) (expected.Hex "ciphertext") "ciphertext"

        Expect.equal
            (int64 sealedItem.Ciphertext.Length)
            (expected.Int64 "ciphertext_length")
            "ciphertext length"

        let aadFromHex = Aad.buildFromHex ns.Wire item.Wire version |> ok "aad from hex"
        Expect.equal aadFromHex sealedItem.Aad "aad from hex strings"

        let body: PutItemRequest =
            {
                Nonce = sealedItem.Nonce.Wire
                Aad = sealedItem.Aad.Wire
                Ciphertext = sealedItem.Ciphertext.Wire
            }

        Expect.equal
            (Json.serialize body)
            (compactJson (expected.Get "put_request_json"))
            "PUT JSON"

        // Target version t: no If-Match for t = 1, If-Match "t-1" otherwise.
        let ifMatch =
            if version = 1UL then
                IfMatch.Absent
            else
                IfMatch.Version(version - 1UL)

        match (expected.Get "if_match_header").ValueKind, ifMatch with
        | JsonValueKind.Null, IfMatch.Absent -> ()
        | JsonValueKind.String, IfMatch.Version n ->
            Expect.equal (IfMatch.quote n) (expected.Str "if_match_header") "If-Match header"

            Expect.equal
                (IfMatch.parse (expected.Str "if_match_header") |> ok "parse")
                ifMatch
                "header parses back"
        | kind, m -> failtestf "If-Match %A vs %A" kind m

        let response: PutItemResponse =
            {
                NamespaceId = ns.Wire
                ItemId = item.Wire
                Version = uint64 (expected.Int64 "expected_put_response_version")
            }

        Expect.equal
            (ResponseChecks.putItem ns item ifMatch response |> ok "put check")
            version
            "response version"
        // And the receiving side opens it again.
        let decrypted = ItemCrypto.openItem keys ns item version sealedItem |> ok "open"
        bytesEqual decrypted plaintext "round trip"

let private wrappedDekVector: Handler =
    fun inputs expected ->
        use recipient = keystoreNamed (str inputs "recipient")

        Expect.equal
            recipient.WrapPublicKey.Wire
            (str inputs "recipientWrapPublicKey")
            "recipient key"

        let ns = parsed<NamespaceIdKind>(str inputs "namespaceId")
        let dek = ofRaw<DekKind>(hexOf inputs "dek")
        let ephemeral = hexOf inputs "ephemeralPrivateKey"
        let ctx = DekWrap.senderContext recipient.WrapPublicKey ephemeral |> ok "context"
        bytesEqual ctx.Enc (expected.Hex "enc") "enc"
        bytesEqual ctx.SharedSecret (expected.Hex "sharedSecret") "shared secret"
        bytesEqual ctx.KeyScheduleContext (expected.Hex "keyScheduleContext") "key schedule context"
        bytesEqual ctx.Key (expected.Hex "hpkeKey") "hpke key"
        bytesEqual ctx.BaseNonce (expected.Hex "hpkeBaseNonce") "base nonce"

        bytesEqual
            (Array.append (Bin.toArray ns) (Bin.toArray dek))
            (expected.Hex "hpkePlaintext")
            "plaintext"

        let wrapped = DekWrap.wrap recipient.WrapPublicKey ns dek ephemeral |> ok "wrap"
        bytesEqual (Bin.toArray wrapped) (expected.Hex "wrappedDek") "wrapped dek"
        Expect.equal (int64 wrapped.Length) (expected.Int64 "wrappedDek_length") "length"
        Expect.equal wrapped.Wire (expected.Str "wrappedDek_b64") "base64"
        // Receiving side: the recipient unwraps the vector's bytes; another namespace is refused.
        let fromWire = parsed<WrappedDekKind>(expected.Str "wrappedDek_b64")
        Expect.equal (recipient.UnwrapNamespaceDek(ns, fromWire) |> ok "unwrap") dek "unwrapped dek"
        let other = ofRaw<NamespaceIdKind>(Array.init 16 (fun i -> byte (0xf0 + i)))

        recipient.UnwrapNamespaceDek(other, fromWire)
        |> errorContaining
            "other namespace"
            (expected.Str "unwrap_with_other_namespace_error")
            (fun e -> e.Message)
        |> ignore

// --- client response validation (raw/client_test.go) ------------------------------------------

let private decodeFake<'T> (fake: string) : 'T =
    Json.decodeResponseString<'T> fake |> ok "decode fake response"

let private segments (path: string) =
    path.Split('/', StringSplitOptions.RemoveEmptyEntries)

let private clientRejects (endpoint: string) : Handler =
    fun inputs expected ->
        let request = inputs.GetProperty "request"
        let path = str request "path"
        let seg = segments path
        let fake = inputs.GetProperty("fake_response_json").GetRawText()
        Expect.equal (inputs.GetProperty("fake_response_status").GetInt32()) 200 "fake answers 200"
        let ns () = parsed<NamespaceIdKind> seg[2]

        let builtPath, outcome =
            match endpoint with
            | "GetNamespaceItems" ->
                let r = decodeFake<GetNamespaceItemsResponse> fake
                Paths.items (ns ()), ResponseChecks.namespaceEcho (ns ()) r.NamespaceId
            | "Login" ->
                let kind = IdentityKind.parse (str request "request_kind") |> ok "kind"

                Paths.Login,
                ResponseChecks.login kind (decodeFake<LoginResponse> fake) |> Result.map ignore
            | "Refresh" ->
                let kind = IdentityKind.parse (str request "request_kind") |> ok "kind"
                Paths.Refresh, ResponseChecks.refresh kind (decodeFake<RefreshResponse> fake)
            | "EnsureDefaultNamespace" ->
                let proposed = parsed<NamespaceIdKind>(str request "proposedNamespaceId")

                Paths.DefaultNamespace,
                ResponseChecks.ensureDefaultNamespace proposed (decodeFake fake)
                |> Result.map ignore
            | "CreateSharedNamespace" ->
                let requested = parsed<NamespaceIdKind>(str request "namespaceId")
                Paths.Namespaces, ResponseChecks.createSharedNamespace requested (decodeFake fake)
            | "GetMembers" ->
                let r = decodeFake<GetNamespaceMembersResponse> fake
                Paths.members (ns ()), ResponseChecks.namespaceEcho (ns ()) r.NamespaceId
            | "CreateNamespaceInvite" ->
                let invite = parsed<InviteIdKind>(str request "inviteId")
                Paths.invites (ns ()), ResponseChecks.createInvite (ns ()) invite (decodeFake fake)
            | "SubmitNamespaceJoinRequest" ->
                let invite = parsed<InviteIdKind> seg[4]

                let kind, keyId =
                    match request.TryGetProperty "joinRequest_keyId" with
                    | true, k ->
                        IdentityKind.parse (str request "joinRequest_kind") |> ok "kind",
                        parsed<KeyIdKind>(k.GetString())
                    | _ -> IdentityKind.Keystore, parsed<KeyIdKind>(String('a', 64))

                Paths.submitJoinRequest (ns ()) invite,
                ResponseChecks.submitJoinRequest (ns ()) kind keyId (decodeFake fake)
                |> Result.map ignore
            | "RevokeNamespaceInvite" ->
                let invite = parsed<InviteIdKind> seg[4]

                Paths.invite (ns ()) invite,
                ResponseChecks.revokeInvite (ns ()) invite (decodeFake fake)
            | "RejectNamespaceJoinRequest" ->
                let key, hash = parsed<KeyIdKind> seg[4], parsed<JoinRequestHashKind> seg[5]

                Paths.joinRequest (ns ()) key hash,
                ResponseChecks.rejectJoinRequest (ns ()) key hash (decodeFake fake)
            | "ApproveNamespaceJoinRequest" ->
                let key, hash = parsed<KeyIdKind> seg[4], parsed<JoinRequestHashKind> seg[5]

                Paths.approveJoinRequest (ns ()) key hash,
                ResponseChecks.approveJoinRequest (ns ()) key hash (decodeFake fake)
            | "GetWrappedDEK" ->
                let key = parsed<KeyIdKind> seg[4]

                Paths.wrappedDek (ns ()) key,
                ResponseChecks.wrappedDek (ns ()) key (decodeFake fake)
            | "GetItem" ->
                let item = parsed<ItemIdKind> seg[3]
                Paths.item (ns ()) item, ResponseChecks.getItem (ns ()) item (decodeFake fake)
            | "PutItem (no If-Match)" ->
                let item = parsed<ItemIdKind> seg[3]

                Expect.equal
                    (request.GetProperty("if_match").ValueKind)
                    JsonValueKind.Null
                    "no If-Match"

                Paths.item (ns ()) item,
                ResponseChecks.putItem (ns ()) item IfMatch.Absent (decodeFake fake)
                |> Result.map ignore
            | other -> failtestf "no client check for endpoint %s" other

        Expect.equal builtPath (expected.Str "request_path") "request path"
        Expect.equal builtPath path "request path equals the vector's request"

        outcome
        |> errorContaining endpoint (expected.Str "error_contains") (fun v -> v.Message)
        |> ignore

// --- dispatch ------------------------------------------------------------------------------------

let private exact: Map<string, Handler> =
    Map.ofList
        [
            "invite_uri_encode_drops_default_port", uriEncode
            "invite_uri_encode_canonical_base", uriEncode
            "invite_uri_for_computed_invite", uriEncode
            "invite_uri_parse_roundtrip", uriParse
            "invite_uri_parse_documented_order", uriParse
            "invite_uri_reject_padded_secret", uriRejectOne
            "invite_uri_reject_noncanonical", uriRejectCases
            "server_origin_hash", originHash
            "server_origin_hash_rejects_noncanonical", originHashRejects
            "canonical_origin_length_limit", originLength
            "canonical_origin_rejects_non_ascii_and_bad_labels", originCases
            "join_request_hash_is_sha256",
            (fun inputs expected ->
                bytesEqual
                    (hexOf inputs "payload")
                    (Text.Encoding.UTF8.GetBytes(str inputs "payload_utf8"))
                    "payload"

                Expect.equal
                    (JoinRequests.hash (hexOf inputs "payload")).Wire
                    (expected.Str "hash")
                    "hash")
            "lower_hex_exact", lowerHexExact
            "generic_hex_allows_uppercase", genericHex
            "canonical_base64", canonicalBase64
            "if_match_parse", ifMatch
            "decrypt_item_short_nonce", decryptShortNonce
            "login_intent_alice", loginIntent
            "refresh_intent_alice", refreshIntent
            "revoke_all_tokens_intent_alice", revokeIntent
            "invite_secret_derivations", inviteSecretDerivations
            "create_invite_intent_alice", createInviteIntent
            "create_invite_intent_alice_legacy", createInviteIntentLegacy
            "join_request_bob", joinRequestVector
            "namespace_key_derivation", namespaceKeys
            "dummy_attestation_alice", attestation
        ]

/// The handler of a vector, by exact name or by family.
let private handlerFor (name: string) (vector: JsonElement) : Handler option =
    match Map.tryFind name exact with
    | Some h -> Some h
    | None when name.StartsWith "dummy_keystore_" -> Some dummyKeystore
    | None when name.StartsWith "item_id_" -> Some itemIdVector
    | None when name.StartsWith "item_encrypt_v" -> Some itemEncrypt
    | None when name.StartsWith "wrapped_dek_for_" -> Some wrappedDekVector
    | None when name.StartsWith "client_rejects_" ->
        let tests = vector.GetProperty("tests").GetString()
        Some(clientRejects (tests.Substring(tests.IndexOf(": ") + 2)))
    | None -> None

/// One test per vector of vectors.json.
let vectorFileTests =
    let all = vectors.Value

    testList
        "vectors.json"
        [
            for property in all.EnumerateObject() do
                if property.Name <> "_meta" then
                    test property.Name {
                        let vector = property.Value

                        Expect.equal
                            (vector.GetProperty("name").GetString())
                            property.Name
                            "vector name matches its key"

                        match handlerFor property.Name vector with
                        | None ->
                            failtestf
                                "vector %s has no test: add a handler in VectorTests.fs"
                                property.Name
                        | Some handler ->
                            let expected =
                                Tracked(vector.GetProperty "expected", property.Name + ".expected")

                            handler (vector.GetProperty "inputs") expected
                            expected.AssertAllUsed()
                    }
        ]

/// RFC 9180 A.2.1: every value of the file, including the second encryption and DeriveKeyPair.
let hpkeTests =
    test "hpke-rfc9180-a2-1.json reproduces RFC 9180 A.2.1 byte for byte" {
        let v = Tracked(load "hpke-rfc9180-a2-1.json", "hpke")
        v.Touch "source"
        v.Touch "note"
        Expect.equal (v.Int64 "mode") 0L "base mode"
        Expect.equal (v.Int64 "kem_id") 0x20L "DHKEM(X25519, HKDF-SHA256)"
        Expect.equal (v.Int64 "kdf_id") 1L "HKDF-SHA256"
        Expect.equal (v.Int64 "aead_id") 3L "ChaCha20Poly1305"
        let skE = Hpke.deriveKeyPair (v.Hex "ikmE")
        bytesEqual skE (v.Hex "skEm") "skEm from ikmE"

        bytesEqual
            ((X25519.publicKeyOf (ReadOnlySpan skE) |> ok "pkE") |> Bin.toArray)
            (v.Hex "pkEm")
            "pkEm"

        let skR = Hpke.deriveKeyPair (v.Hex "ikmR")
        bytesEqual skR (v.Hex "skRm") "skRm from ikmR"
        let pkR = X25519.publicKeyOf (ReadOnlySpan skR) |> ok "pkR" |> Bin.toArray
        bytesEqual pkR (v.Hex "pkRm") "pkRm"
        let info = v.Hex "info"
        let sender = Hpke.setupBaseSender skE pkR info |> ok "sender"
        let receiver = Hpke.setupBaseRecipient skR sender.Enc info |> ok "receiver"

        for ctx, who in [ sender, "sender"; receiver, "receiver" ] do
            bytesEqual ctx.Enc (v.Hex "enc") (who + " enc")
            bytesEqual ctx.SharedSecret (v.Hex "shared_secret") (who + " shared secret")
            bytesEqual ctx.KeyScheduleContext (v.Hex "key_schedule_context") (who + " context")
            bytesEqual ctx.Secret (v.Hex "secret") (who + " secret")
            bytesEqual ctx.Key (v.Hex "key") (who + " key")
            bytesEqual ctx.BaseNonce (v.Hex "base_nonce") (who + " base nonce")
            bytesEqual ctx.ExporterSecret (v.Hex "exporter_secret") (who + " exporter secret")

        for e in (v.Get "encryptions").EnumerateArray() do
            let seq = e.GetProperty("seq").GetUInt64()

            let pt, aad, ct =
                hex (e.GetProperty("pt").GetString()),
                hex (e.GetProperty("aad").GetString()),
                hex (e.GetProperty("ct").GetString())

            bytesEqual
                (Hpke.nonceFor sender seq)
                (hex (e.GetProperty("nonce").GetString()))
                (sprintf "nonce %d" seq)

            bytesEqual (Hpke.seal sender seq aad pt) ct (sprintf "seal %d" seq)

            bytesEqual
                (Hpke.openMessage receiver seq aad ct |> ok "open")
                pt
                (sprintf "open %d" seq)

        v.AssertAllUsed()
    }

/// A vector file with a vector the handlers do not know must fail: the dispatch is checked here.
let dispatchTests =
    test "an unknown vector name has no handler, so a new vector without a test fails the suite" {
        use doc = JsonDocument.Parse """{"tests":"something new"}"""

        Expect.isNone
            (handlerFor "some_future_vector" doc.RootElement)
            "unknown vectors are not silently accepted"
    }

/// All vector tests.
let tests = testList "vectors" [ vectorFileTests; hpkeTests; dispatchTests ]
