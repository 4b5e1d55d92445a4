/// Example tests of the protocol layer's edges: every parser rejects bad input with the field and
/// the rule, never an exception; operations fail in the documented order; JSON follows
/// docs/protocol.md §6.4.
module BitBoxSync.Tests.ProtocolTests

open System
open Expecto
open BitBoxSync.Protocol
open BitBoxSync.Protocol.Wire
open BitBoxSync.Tests.TestData

let private fieldError (r: Result<'a, FieldError>) : FieldError =
    match r with
    | Ok v -> failtestf "expected a field error, got Ok %A" v
    | Error e -> e

let private rejects (field: string) (rule: string) (r: Result<'a, FieldError>) =
    let e = fieldError r
    Expect.equal e.Field field "field name"
    Expect.stringContains e.Rule rule "rule"

let private ns1 =
    Bin.parse<NamespaceIdKind> "00112233445566778899aabbccddeeff" |> ok "ns"

let private item1 = Bin.parse<ItemIdKind>(String('a', 64)) |> ok "item"

let encodingTests =
    testList
        "encodings reject bad input with field and rule"
        [
            test "hex: uppercase, non-hex, odd length and wrong length are named" {
                Hex.decodeLowerExact "keyId" 2 "ABCD" |> rejects "keyId" "must be lowercase hex"
                Hex.decodeLowerExact "keyId" 2 "zz00" |> rejects "keyId" "must be lowercase hex"
                Hex.decodeLowerExact "keyId" 2 "abc" |> rejects "keyId" "must be 2 bytes"
                Hex.decodeLowerExact "keyId" 2 "abcdef" |> rejects "keyId" "must be 2 bytes"
                Hex.decodeLowerExact "keyId" 2 null |> rejects "keyId" "must be present"
            }
            test "base64: missing padding, whitespace and non-zero trailing bits are not canonical" {
                for s in [ "AQI"; " AQI="; "AQI=\n"; "AQJ="; "AQI=="; "A" ] do
                    Base64.decode "nonce" s |> rejects "nonce" "must use canonical base64"

                Base64.decodeExact "nonce" 3 "AQI=" |> rejects "nonce" "must be 3 bytes"
            }
            test "base64url: padding, the standard alphabet and trailing bits are refused" {
                let valid = Base64Url.encode (Array.init 32 byte)

                Base64Url.decodeExact "inviteProof" 32 (valid + "=")
                |> rejects "inviteProof" "must be unpadded base64url"

                Base64Url.decodeExact
                    "inviteProof"
                    32
                    (valid.Replace('-', '+').Replace('_', '/') |> fun s -> "+" + s.Substring 1)
                |> rejects "inviteProof" "canonical base64url"

                Base64Url.decodeExact "inviteProof" 32 (valid.Substring(0, 42) + "B")
                |> rejects "inviteProof" "canonical base64url"

                Base64Url.decodeExact "inviteProof" 31 valid
                |> rejects "inviteProof" "must be 31 bytes"
            }
            test "RFC 3339: zone-less and malformed times are refused; UTC is written with Z" {
                for s in
                    [
                        "2026-07-05T07:01:38"
                        "2026-07-05 07:01:38Z"
                        "2026-13-05T07:01:38Z"
                        "2026-02-30T07:01:38Z"
                        "2026-07-05T07:01:38.Z"
                        "2026-07-05T07:01:38.1234567890Z"
                        ""
                    ] do
                    Rfc3339.parse "expiresAt" s |> rejects "expiresAt" "RFC 3339"

                let t = Rfc3339.parse "t" "2026-07-05T09:01:38.123456789+02:00" |> ok "parse"
                Expect.equal (Rfc3339.format t) "2026-07-05T07:01:38.1234567Z" "UTC, 7 digits, Z"

                Expect.equal
                    (Rfc3339.format (DateTimeOffset(2026, 7, 5, 7, 1, 38, TimeSpan.Zero)))
                    "2026-07-05T07:01:38Z"
                    "no fraction"
            }
            test "If-Match: weak tags, wildcards, overflow and lists are invalid; max u64 is fine" {
                for s in
                    [
                        "W/\"3\""
                        "*"
                        "\"18446744073709551616\""
                        "\"-1\""
                        "\"\""
                        "\"3\",\"4\""
                        "\"+3\""
                    ] do
                    IfMatch.parse s |> rejects "If-Match" "quoted canonical version"

                Expect.equal
                    (IfMatch.parse "\"18446744073709551615\"" |> ok "max")
                    (IfMatch.Version UInt64.MaxValue)
                    "max u64"

                Expect.equal
                    (IfMatch.parse "  " |> ok "blank")
                    IfMatch.Absent
                    "whitespace is no precondition"
            }
            test "wrapped DEK format: empty, unknown version and wrong length, in that order" {
                Bin.ofBytes<WrappedDekKind> [||] |> rejects "wrappedDek" "invalid wrapped dek"

                Bin.ofBytes<WrappedDekKind>(Array.create 97 2uy)
                |> rejects "wrappedDek" "unsupported version"

                Bin.ofBytes<WrappedDekKind>(Array.create 96 1uy)
                |> rejects "wrappedDek" "invalid wrapped dek"

                Bin.ofBytes<WrappedDekKind>(Array.create 98 1uy)
                |> rejects "wrappedDek" "invalid wrapped dek"
            }
            test "ciphertext length is 16 to 65 536 bytes" {
                Bin.ofBytes<CiphertextKind>(Array.zeroCreate 15)
                |> rejects "ciphertext" "must be 16 to 65536 bytes"

                Bin.ofBytes<CiphertextKind>(Array.zeroCreate 65537)
                |> rejects "ciphertext" "must be 16 to 65536 bytes"

                Bin.ofBytes<CiphertextKind>(Array.zeroCreate 65536) |> ok "max" |> ignore
            }
            test "secrets never print" {
                let secret = Bin.ofBytes<InviteSecretKind>(Array.create 32 7uy) |> ok "secret"
                let dek = Bin.ofBytes<DekKind>(Array.create 32 7uy) |> ok "dek"
                Expect.equal (string secret) "<redacted>" "invite secret"
                Expect.equal (string dek) "<redacted>" "dek"

                Expect.equal
                    (string (NamespaceKeys.derive dek))
                    "NamespaceKeys(<redacted>)"
                    "namespace keys"

                Expect.equal
                    (string ns1)
                    "00112233445566778899aabbccddeeff"
                    "ids print their wire form"
            }
        ]

let cryptoTests =
    let dek = Bin.ofBytes<DekKind>(Array.init 32 byte) |> ok "dek"

    testList
        "crypto fails safely and in the documented order"
        [
            test "unwrap checks namespace id, then emptiness, version, length, key, AEAD, binding" {
                use alice = DummyKeystore.FromLabel "alice"
                let material = DummyKeystore.Derive "alice"

                let wrapped =
                    DekWrap.wrap alice.WrapPublicKey ns1 dek (Array.create 32 9uy)
                    |> ok "wrap"
                    |> Bin.toArray

                let unwrap key nsBytes bytes = DekWrap.unwrapRaw key nsBytes bytes

                Expect.equal
                    (unwrap material.WrapPrivateKey (Array.zeroCreate 15) wrapped)
                    (Error InvalidNamespaceId)
                    "namespace id first"

                Expect.equal
                    (unwrap material.WrapPrivateKey (Bin.toArray ns1) [||])
                    (Error InvalidWrappedDek)
                    "empty"

                Expect.equal
                    (unwrap
                        material.WrapPrivateKey
                        (Bin.toArray ns1)
                        (Array.append [| 2uy |] wrapped[1..]))
                    (Error UnsupportedVersion)
                    "version"

                Expect.equal
                    (unwrap material.WrapPrivateKey (Bin.toArray ns1) wrapped[..95])
                    (Error InvalidWrappedDek)
                    "length"

                Expect.equal
                    (unwrap (Array.zeroCreate 31) (Bin.toArray ns1) wrapped)
                    (Error InvalidPrivateKey)
                    "private key"

                Expect.equal
                    (unwrap (DummyKeystore.Derive "bob").WrapPrivateKey (Bin.toArray ns1) wrapped)
                    (Error OpenWrappedDekFailed)
                    "other recipient"

                Expect.equal
                    (unwrap material.WrapPrivateKey (Array.create 16 0xeeuy) wrapped)
                    (Error NamespaceMismatch)
                    "binding"

                Expect.equal
                    (unwrap material.WrapPrivateKey (Bin.toArray ns1) wrapped)
                    (Ok dek)
                    "the real thing opens"
            }
            test "wrapping to a low-order point fails instead of producing a key anyone can read" {
                let lowOrder =
                    Bin.ofBytes<WrapPublicKeyKind>(Array.zeroCreate 32) |> ok "zero point"

                Expect.equal
                    (DekWrap.wrap lowOrder ns1 dek (Array.create 32 9uy))
                    (Error EncapFailed)
                    "encap fails"

                Expect.isTrue (X25519.isLowOrder lowOrder) "zero is low order"

                let one =
                    Bin.ofBytes<WrapPublicKeyKind>(
                        Array.init 32 (fun i -> if i = 0 then 1uy else 0uy)
                    )
                    |> ok "one"

                Expect.isTrue (X25519.isLowOrder one) "u = 1 is low order"
                use alice = DummyKeystore.FromLabel "alice"
                Expect.isFalse (X25519.isLowOrder alice.WrapPublicKey) "a real key is not"
            }
            test "a decap with a low-order enc fails as a decapsulation error" {
                let material = DummyKeystore.Derive "alice"
                let wrapped = Array.append [| 1uy |] (Array.zeroCreate 96)

                Expect.equal
                    (DekWrap.unwrapRaw material.WrapPrivateKey (Bin.toArray ns1) wrapped)
                    (Error DecapFailed)
                    "decap"
            }
            test "item plaintexts are capped at 65 520 bytes so the ciphertext fits 64 KiB" {
                let keys = NamespaceKeys.derive dek
                let nonce = Bin.ofBytes<ItemNonceKind>(Array.zeroCreate 24) |> ok "nonce"
                let big = Array.zeroCreate 65521

                Expect.equal
                    (ItemCrypto.seal keys ns1 item1 1UL nonce (ReadOnlySpan big)
                     |> Result.map ignore)
                    (Error(PlaintextTooLarge 65521))
                    "too large"

                let sealedItem =
                    ItemCrypto.seal keys ns1 item1 1UL nonce (ReadOnlySpan(Array.zeroCreate 65520))
                    |> ok "max"

                Expect.equal
                    sealedItem.Ciphertext.Length
                    Limits.MaxItemCiphertextSize
                    "exactly 64 KiB"
            }
            test "an item whose received AAD names another item is refused before decryption" {
                let keys = NamespaceKeys.derive dek
                let nonce = Bin.ofBytes<ItemNonceKind>(Array.zeroCreate 24) |> ok "nonce"

                let sealedItem =
                    ItemCrypto.seal keys ns1 item1 5UL nonce (ReadOnlySpan "x"B) |> ok "seal"

                let other = Bin.parse<ItemIdKind>(String('b', 64)) |> ok "other"

                Expect.equal
                    (ItemCrypto.openItem keys ns1 other 5UL sealedItem)
                    (Error AadMismatch)
                    "aad mismatch"

                Aad.buildFromHex "ABCD" item1.Wire 1UL |> rejects "namespaceId" "lowercase hex"
            }
            test "a claimed key id must be SHA-256 of the auth key" {
                use alice = DummyKeystore.FromLabel "alice"
                use bob = DummyKeystore.FromLabel "bob"
                KeyIds.verify alice.KeyId alice.AuthPublicKey |> ok "match"

                KeyIds.verify bob.KeyId alice.AuthPublicKey
                |> rejects "keyId" "does not match auth public key"
            }
            test
                "the dummy keystore refuses out-of-range invite and join-request values before signing" {
                use alice = DummyKeystore.FromLabel "alice"
                let challenge = Bin.ofBytes<ChallengeKind>(Array.zeroCreate 32) |> ok "challenge"
                let inv = Bin.ofBytes<InviteIdKind>(Array.zeroCreate 16) |> ok "invite"
                let hash = Bin.ofBytes<InviteServerSecretHashKind>(Array.zeroCreate 32) |> ok "hash"

                let fields =
                    {
                        NamespaceId = ns1
                        InviteId = inv
                        InviteServerSecretHash = hash
                        ExpiresAt = 1L
                        MaxAccepted = 10
                    }

                Expect.equal
                    (alice.SignCreateNamespaceInviteIntent(
                        challenge,
                        { fields with ExpiresAt = -1L }
                    ))
                    (Error "namespace invite expiry before unix epoch")
                    "expiry"

                Expect.equal
                    (alice.SignCreateNamespaceInviteIntent(
                        challenge,
                        { fields with MaxAccepted = 11 }
                    ))
                    (Error "namespace invite limits are out of range")
                    "limit"

                Expect.isOk
                    (alice.SignCreateNamespaceInviteIntent(
                        challenge,
                        { fields with MaxAccepted = 0 }
                    ))
                    "0 is accepted by the identity"

                let origin = ServerOrigin.parseCanonical "https://sync.example" |> ok "origin"

                Expect.equal
                    (alice.SignNamespaceJoinRequestIntent(ns1, inv, origin, -1L))
                    (Error "join request expiry before unix epoch")
                    "join expiry"
            }
        ]

let originTests =
    let canonical s =
        ServerOrigin.canonicalize s |> Result.map (fun o -> o.Value)

    let rejected s (needle: string) =
        ServerOrigin.canonicalize s
        |> errorContaining s needle (fun e -> e.Message)
        |> ignore

    testList
        "server origins"
        [
            test "accepted forms canonicalise: scheme lowercased, :443 dropped, other ports kept" {
                Expect.equal (canonical "HTTPS://sync.example") (Ok "https://sync.example") "scheme"

                Expect.equal
                    (canonical "https://sync.example:443")
                    (Ok "https://sync.example")
                    "443"

                Expect.equal
                    (canonical "https://sync.example:8443")
                    (Ok "https://sync.example:8443")
                    "8443"

                Expect.equal (canonical "https://localhost") (Ok "https://localhost") "single label"
                Expect.equal (canonical "https://127.0.0.1:1") (Ok "https://127.0.0.1:1") "IPv4"

                Expect.equal
                    (canonical "https://xn--bcher-kva.example")
                    (Ok "https://xn--bcher-kva.example")
                    "A-label"
            }
            test "every broken rule is reported in the reference client's words" {
                rejected "http://sync.example" "https"
                rejected "sync.example" "https"
                rejected "https://sync.example/" "only scheme, host, and optional port"
                rejected "https://user@sync.example" "only scheme, host, and optional port"
                rejected "https://sync.example?q=1" "only scheme, host, and optional port"
                rejected "https://sync.example#f" "only scheme, host, and optional port"
                rejected "https://" "only scheme, host, and optional port"
                rejected "https://Sync.example" "lowercase ASCII"
                rejected "https://[::1]" "IDNA A-label"
                rejected "https://sync..example" "IDNA A-label"
                rejected "https://.sync.example" "IDNA A-label"
                rejected "https://-sync.example" "IDNA A-label"
                rejected "https://sync_x.example" "IDNA A-label"
                rejected "https://sync%41.example" "IDNA A-label"
                rejected "https://sync.example:0" "port must be canonical"
                rejected "https://sync.example:65536" "port must be canonical"
                rejected "https://sync.example:0443" "port must be canonical"
                rejected "https://sync.example:" "port must be canonical"
                rejected "https://sync.example:+1" "port must be canonical"
                rejected "" "empty"
                rejected null "empty"
            }
            test "hashing demands an already canonical origin" {
                ServerOrigin.hashOf "HTTPS://sync.example"
                |> errorContaining "scheme" "must be canonical" (fun e -> e.Message)
                |> ignore

                Expect.isOk (ServerOrigin.hashOf "https://sync.example:8443") "canonical with port"
            }
        ]

let uriTests =
    let canonical =
        "bitboxsync://join-namespace?v=1&s=sync.example&n=00000000000000000000000000000000&i=11111111111111111111111111111111&e=1735689600#k=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

    let rejected (uri: string) (needle: string) =
        InviteUri.parse uri |> errorContaining uri needle (fun e -> e.Message) |> ignore

    testList
        "invite URIs"
        [
            test "authority, path, query and fragment rules" {
                rejected (canonical.Replace("join-namespace", "JOIN-NAMESPACE")) "unsupported"
                rejected (canonical.Replace("join-namespace?", "join-namespace/x?")) "unsupported"
                rejected (canonical.Replace("bitboxsync://", "bitboxsync:")) "unsupported"
                rejected "bitboxsync://join-namespace#k=AAAA" "must include query fields"

                rejected
                    (canonical.Substring(0, canonical.IndexOf '#'))
                    "must include fragment fields"

                rejected (canonical.Replace("v=1", "v=2")) "unsupported version"
                rejected (canonical.Replace("e=1735689600", "e=0")) "must be positive"
                rejected (canonical.Replace("e=1735689600", "e=-5")) "must be positive"
                rejected (canonical.Replace("e=1735689600", "e=01735689600")) "canonical expiry"
                rejected (canonical.Replace("e=1735689600", "e=+5")) "expiresAt"
                rejected (canonical.Replace("e=1735689600", "e=x")) "expiresAt"
                rejected (canonical.Replace("n=0000", "n=AAAA")) "lowercase hex"
                rejected (canonical.Replace("s=sync.example", "s=sync.example/")) "only scheme"
                rejected (canonical.Replace("#k=", "#K=")) "canonical fragment fields"

                rejected
                    (canonical.Replace("s=sync.example", "s=sync.example;x"))
                    "parse invite query"

                rejected (canonical + "\n") "unsupported"
                rejected null "unsupported"
            }
            test "Go-compatible leniency: any field order, percent-encoded values, user info" {
                let reordered =
                    "bitboxsync://join-namespace?e=1735689600&i=11111111111111111111111111111111&n=00000000000000000000000000000000&s=sync.example&v=1#k=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

                let expected = InviteUri.parse canonical |> ok "canonical"
                Expect.equal (InviteUri.parse reordered |> ok "reordered") expected "order is free"

                Expect.equal
                    (InviteUri.parse (canonical.Replace("v=1", "v=%31")) |> ok "escaped")
                    expected
                    "escapes decode"

                Expect.equal
                    (InviteUri.parse (canonical.Replace("//join", "//someone@join"))
                     |> ok "userinfo")
                    expected
                    "user info ignored"

                Expect.equal
                    (InviteUri.format expected)
                    canonical
                    "and the encoder writes the canonical form"
            }
            test "the encoder refuses what the parser would refuse" {
                let mk v o e =
                    InviteUri.createToken
                        v
                        o
                        (String('0', 32))
                        (String('1', 32))
                        e
                        (String('A', 43))

                Expect.equal
                    (mk 2 "https://sync.example" 1L |> Result.map ignore)
                    (Error InviteUriError.UnsupportedVersion)
                    "version"

                Expect.equal
                    (mk 1 "https://sync.example" 0L |> Result.map ignore)
                    (Error InviteUriError.NonPositiveExpiry)
                    "expiry"

                Expect.isError (mk 1 "http://sync.example" 1L) "origin"

                Expect.isError
                    (InviteUri.createToken
                        1
                        "https://sync.example"
                        (String('0', 32))
                        (String('1', 32))
                        1L
                        (String('A', 42) + "B"))
                    "non-canonical secret"
            }
        ]

let jsonTests =
    testList
        "JSON"
        [
            test "optional request fields are omitted, never null or empty" {
                let login: LoginRequest =
                    {
                        Kind = "keystore"
                        KeyId = "k"
                        AuthPublicKey = "a"
                        WrapPublicKey = "w"
                        Challenge = "c"
                        IntentSignature = "s"
                        Attestation = null
                    }

                Expect.equal
                    (Json.serialize login)
                    """{"kind":"keystore","keyId":"k","authPublicKey":"a","wrapPublicKey":"w","challenge":"c","intentSignature":"s"}"""
                    "no attestation"

                Expect.stringContains
                    (Json.serialize { login with Attestation = "AA==" })
                    "\"attestation\":\"AA==\""
                    "attestation when set"

                Expect.equal
                    (Json.serialize
                        {
                            Purpose = "login"
                            Kind = "keystore"
                            Action = null
                            ActionFieldsHash = null
                        })
                    """{"purpose":"login","kind":"keystore"}"""
                    "challenge"
            }
            test "nullable response fields are written as null; base64 is not escaped" {
                let r: LoginResponse =
                    {
                        Kind = "keystore"
                        AccessToken = "t+/"
                        ExpiresAt = "2026-01-01T00:00:00Z"
                        DefaultNamespaceId = null
                    }

                Expect.equal
                    (Json.serialize r)
                    """{"kind":"keystore","accessToken":"t+/","expiresAt":"2026-01-01T00:00:00Z","defaultNamespaceId":null}"""
                    "login response"
            }
            test "map keys are written sorted, as Go does" {
                let heads = Collections.Generic.Dictionary<string, uint64>()
                heads["bb"] <- 2UL
                heads["B"] <- 3UL
                heads["aa"] <- 1UL
                let w: WatchNamespacesRequest = { KnownHeads = heads }

                Expect.equal
                    (Json.serialize w)
                    """{"knownHeads":{"B":3,"aa":1,"bb":2}}"""
                    "ordinal order"

                let back =
                    Json.decodeRequestString<WatchNamespacesRequest>
                        """{"knownHeads":{"b":1,"b":2}}"""

                Expect.equal
                    (back |> Result.map (fun r -> r.KnownHeads["b"]))
                    (Ok 2UL)
                    "last repeated key wins"
            }
            test
                "responses decode like the Go client: any case, unknown fields ignored, null is zero" {
                let r =
                    Json.decodeResponseString<PutItemResponse>
                        """{"NAMESPACEID":"n","itemId":null,"version":null,"extra":[1,2]}"""
                    |> ok "lenient"

                Expect.equal r { NamespaceId = "n"; ItemId = null; Version = 0UL } "decoded"

                let big =
                    Json.decodeResponseString<GetNamespaceItemsResponse>
                        """{"namespaceId":"n","namespaceHead":18446744073709551615,"items":{"x":{"version":9007199254740993}}}"""
                    |> ok "u64"

                Expect.equal big.NamespaceHead UInt64.MaxValue "u64 head above 2^53"
                Expect.equal big.Items["x"].Version 9007199254740993UL "u64 version above 2^53"
            }
            test "requests decode strictly and bad bodies are errors, not exceptions" {
                for body in
                    [
                        "null"
                        ""
                        "{"
                        "[]"
                        "\"x\""
                        """{"version":-1}"""
                        """{"version":1.5}"""
                        """{"version":"1"}"""
                    ] do
                    Expect.isError (Json.decodeRequestString<PutItemResponse> body) body

                Expect.isError (Json.decodeRequestString<PutItemRequest> null) "null string"

                let r =
                    Json.decodeRequestString<PutItemRequest> """{"Nonce":"x"}"""
                    |> ok "case-sensitive"

                Expect.isNull r.Nonce "names are matched exactly on requests"
            }
        ]

let validationTests =
    let goodLogin: LoginRequest =
        {
            Kind = "keystore"
            KeyId = String('a', 64)
            AuthPublicKey = String('b', 64)
            WrapPublicKey = String('c', 64)
            Challenge = Base64.encode (Array.zeroCreate 32)
            IntentSignature = String('d', 128)
            Attestation = null
        }

    testList
        "request validation names the field"
        [
            test "a valid login validates; each bad field is named" {
                let c = Requests.login goodLogin |> ok "valid"
                Expect.isNone c.Attestation "no attestation"

                Requests.login { goodLogin with Kind = "other" }
                |> rejects "kind" "invalid kind"

                Requests.login { goodLogin with KeyId = String('A', 64) }
                |> rejects "keyId" "lowercase hex"

                Requests.login { goodLogin with AuthPublicKey = "bb" }
                |> rejects "authPublicKey" "must be 32 bytes"

                Requests.login { goodLogin with WrapPublicKey = null }
                |> rejects "wrapPublicKey" "must be present"

                Requests.login
                    { goodLogin with
                        Challenge = Base64.encode (Array.zeroCreate 31)
                    }
                |> rejects "challenge" "must be 32 bytes"

                Requests.login { goodLogin with IntentSignature = String('d', 126) }
                |> rejects "intentSignature" "must be 64 bytes"

                Requests.login { goodLogin with Attestation = "AA" }
                |> rejects "attestation" "canonical base64"
            }
            test "challenge requests carry action fields exactly for sensitive actions" {
                let hash = String('e', 64)

                Expect.equal
                    (Requests.challenge
                        {
                            Purpose = "login"
                            Kind = "keystore"
                            Action = null
                            ActionFieldsHash = null
                        }
                     |> ok "login")
                        .Purpose
                    ChallengePurpose.Login
                    "login"

                Requests.challenge
                    {
                        Purpose = "login"
                        Kind = "keystore"
                        Action = "revoke-all-tokens"
                        ActionFieldsHash = null
                    }
                |> rejects "action" "must be omitted"

                Requests.challenge
                    {
                        Purpose = "sensitive-action"
                        Kind = "keystore"
                        Action = "revoke-all-tokens"
                        ActionFieldsHash = null
                    }
                |> rejects "actionFieldsHash" "must be present"

                Requests.challenge
                    {
                        Purpose = "sensitive-action"
                        Kind = "keystore"
                        Action = "delete-everything"
                        ActionFieldsHash = hash
                    }
                |> rejects "action" "unsupported sensitive action"

                Requests.challenge
                    {
                        Purpose = "admin"
                        Kind = "keystore"
                        Action = null
                        ActionFieldsHash = null
                    }
                |> rejects "purpose" "must be"
            }
            test "watch: null knownHeads is empty; bad keys and oversized maps are refused" {
                Expect.equal
                    (Requests.watch { KnownHeads = Unchecked.defaultof<_> } |> ok "null").KnownHeads
                    Map.empty
                    "null = {}"

                Requests.watch { KnownHeads = Map.ofList [ "ABC", 1UL ] }
                |> rejects "knownHeads" "lowercase hex"

                let many =
                    Map.ofList
                        [
                            for i in 0..1000 ->
                                (Hex.ofBytes (Array.init 16 (fun j -> byte (i >>> (8 * (j % 2)))))),
                                0UL
                        ]

                Requests.watch { KnownHeads = many } |> rejects "knownHeads" "at most 1000"
            }
            test "create-invite limits are range-checked, never clamped" {
                let r: CreateNamespaceInviteRequest =
                    {
                        Kind = "keystore"
                        KeyId = String('a', 64)
                        InviteId = String('b', 32)
                        InviteServerSecretHash = String('c', 64)
                        Challenge = Base64.encode (Array.zeroCreate 32)
                        IntentSignature = String('d', 128)
                        ExpiresAt = 10L
                        MaxAccepted = 10L
                    }

                Expect.equal (Requests.createInvite r |> ok "valid").MaxAccepted 10 "kept as given"

                Requests.createInvite { r with MaxAccepted = 0L }
                |> rejects "maxAccepted" "between 1 and 10"

                Requests.createInvite { r with MaxAccepted = 11L }
                |> rejects "maxAccepted" "between 1 and 10"

                Requests.createInvite { r with ExpiresAt = 0L }
                |> rejects "expiresAt" "positive"

                let legacy: LegacyCreateNamespaceInviteRequest =
                    {
                        Kind = r.Kind
                        KeyId = r.KeyId
                        InviteId = r.InviteId
                        InviteServerSecretHash = r.InviteServerSecretHash
                        Challenge = r.Challenge
                        IntentSignature = r.IntentSignature
                        ExpiresAt = r.ExpiresAt
                        MaxPending = 20L
                        MaxAccepted = r.MaxAccepted
                    }

                Expect.equal
                    (Requests.createInviteLegacy legacy |> ok "legacy").MaxPending
                    (Some 20)
                    "legacy maxPending kept"

                Expect.isNone (Requests.createInvite r |> ok "current").MaxPending "current: none"

                Requests.createInviteLegacy { legacy with MaxPending = 0L }
                |> rejects "maxPending" "between 1 and 20"

                Requests.createInviteLegacy { legacy with MaxPending = 21L }
                |> rejects "maxPending" "between 1 and 20"

                Requests.createInviteLegacy { legacy with MaxAccepted = 11L }
                |> rejects "maxAccepted" "between 1 and 10"
            }
            test "join requests: version, canonical origin and nested fields are named" {
                let jr: NamespaceJoinRequest =
                    {
                        Version = 1L
                        NamespaceId = String('0', 32)
                        InviteId = String('1', 32)
                        ServerOrigin = "https://sync.example"
                        Kind = "keystore"
                        KeyId = String('a', 64)
                        AuthPublicKey = String('b', 64)
                        WrapPublicKey = String('c', 64)
                        ExpiresAt = 5L
                        Signature = String('d', 128)
                        InviteProof = Base64Url.encode (Array.zeroCreate 32)
                    }

                Requests.joinRequest jr |> ok "valid" |> ignore

                Requests.joinRequest { jr with Version = 2L }
                |> rejects "joinRequest.version" "unsupported version"

                Requests.joinRequest { jr with ServerOrigin = "https://sync.example:443" }
                |> rejects "joinRequest.serverOrigin" "must be canonical"

                Requests.joinRequest { jr with InviteProof = "AAAA" }
                |> rejects "joinRequest.inviteProof" "must be 32 bytes"

                Requests.joinRequest { jr with ExpiresAt = -1L }
                |> rejects "joinRequest.expiresAt" "Unix epoch"

                Requests.submitJoinRequest { InviteServerSecret = "AAAA"; JoinRequest = jr }
                |> rejects "inviteServerSecret" "must be 32 bytes"

                Requests.submitJoinRequest
                    {
                        InviteServerSecret = Base64Url.encode (Array.zeroCreate 32)
                        JoinRequest = Unchecked.defaultof<_>
                    }
                |> rejects "joinRequest" "must be present"
            }
            test "item uploads check nonce, AAD and ciphertext sizes" {
                let good: PutItemRequest =
                    {
                        Nonce = Base64.encode (Array.zeroCreate 24)
                        Aad = Base64.encode (Array.zeroCreate 76)
                        Ciphertext = Base64.encode (Array.zeroCreate 16)
                    }

                Requests.putItem good |> ok "valid" |> ignore

                Requests.putItem { good with Nonce = Base64.encode (Array.zeroCreate 12) }
                |> rejects "nonce" "must be 24 bytes"

                Requests.putItem { good with Aad = Base64.encode (Array.zeroCreate 75) }
                |> rejects "aad" "must be 76 bytes"

                Requests.putItem
                    { good with
                        Ciphertext = Base64.encode (Array.zeroCreate 8)
                    }
                |> rejects "ciphertext" "16 to 65536"
            }
            test "response checks accept a correct answer" {
                let r: PutItemResponse =
                    {
                        NamespaceId = ns1.Wire
                        ItemId = item1.Wire
                        Version = 4UL
                    }

                Expect.equal
                    (ResponseChecks.putItem ns1 item1 (IfMatch.Version 3UL) r)
                    (Ok 4UL)
                    "N+1"

                Expect.equal
                    (ResponseChecks.putItem ns1 item1 (IfMatch.Version 4UL) r
                     |> Result.mapError (fun v -> v.Message))
                    (Error "version mismatch")
                    "not N+1"

                let login: LoginResponse =
                    {
                        Kind = "keystore"
                        AccessToken = "t"
                        ExpiresAt = ""
                        DefaultNamespaceId = ""
                    }

                Expect.isError
                    (ResponseChecks.login IdentityKind.Keystore login)
                    "an empty default namespace id is not null"
            }
        ]

let tests =
    testList
        "protocol"
        [
            encodingTests
            cryptoTests
            originTests
            uriTests
            jsonTests
            validationTests
        ]
