/// Enumerations, code bytes and the signed intents (login, refresh, sensitive actions) with their
/// action fields and hash. Implements docs/protocol.md §2.2, §2.3, §3.1, §4.
namespace BitBoxSync.Protocol

open System

/// Identity / auth-key kind. `keystore` is the only kind (code byte 0x01).
[<RequireQualifiedAccess>]
type IdentityKind =
    | Keystore

    /// The wire string.
    member k.Wire =
        match k with
        | Keystore -> "keystore"

    /// The code byte inside byte layouts.
    member k.Code =
        match k with
        | Keystore -> 1uy

/// Parsing of identity kinds.
module IdentityKind =
    /// Parses a kind string from field `field` ("invalid kind" otherwise).
    let parseAs (field: string) (s: string) : Result<IdentityKind, FieldError> =
        match s with
        | "keystore" -> Ok IdentityKind.Keystore
        | null -> FieldError.missing field
        | _ -> FieldError.fail field "must be \"keystore\" (invalid kind)"

    /// Parses the `kind` field.
    let parse (s: string) = parseAs "kind" s

/// Sensitive actions that need a dedicated challenge and signature.
[<RequireQualifiedAccess>]
type SensitiveAction =
    /// `revoke-all-tokens` (code 0x01, empty action fields).
    | RevokeAllTokens
    /// `create-namespace-invite` (code 0x02, 76-byte action fields).
    | CreateNamespaceInvite

    /// The wire string.
    member a.Wire =
        match a with
        | RevokeAllTokens -> "revoke-all-tokens"
        | CreateNamespaceInvite -> "create-namespace-invite"

    /// The action code byte.
    member a.Code =
        match a with
        | RevokeAllTokens -> 1uy
        | CreateNamespaceInvite -> 2uy

/// Parsing of sensitive actions.
module SensitiveAction =
    /// Parses the `action` field ("unsupported sensitive action" otherwise).
    let parse (s: string) : Result<SensitiveAction, FieldError> =
        match s with
        | "revoke-all-tokens" -> Ok SensitiveAction.RevokeAllTokens
        | "create-namespace-invite" -> Ok SensitiveAction.CreateNamespaceInvite
        | null -> FieldError.missing "action"
        | _ ->
            FieldError.fail
                "action"
                "must be a supported sensitive action (unsupported sensitive action)"

/// What a challenge is minted for.
[<RequireQualifiedAccess>]
type ChallengePurpose =
    | Login
    | Refresh
    /// A sensitive action bound to the hash of its action fields.
    | SensitiveAction of SensitiveAction * ActionFieldsHash

    /// The `purpose` wire string.
    member p.Wire =
        match p with
        | Login -> "login"
        | Refresh -> "refresh"
        | SensitiveAction _ -> "sensitive-action"

/// Namespace kinds.
[<RequireQualifiedAccess>]
type NamespaceKind =
    | Default
    | Shared

    /// The wire string.
    member k.Wire =
        match k with
        | Default -> "default"
        | Shared -> "shared"

/// Parsing of namespace kinds.
module NamespaceKind =
    /// Parses `default` / `shared` ("unsupported namespace kind" otherwise).
    let parse (field: string) (s: string) : Result<NamespaceKind, FieldError> =
        match s with
        | "default" -> Ok NamespaceKind.Default
        | "shared" -> Ok NamespaceKind.Shared
        | _ ->
            FieldError.fail field "must be \"default\" or \"shared\" (unsupported namespace kind)"

/// Spam-control kinds of a challenge response. Anything but `attestation` means "no attestation".
[<RequireQualifiedAccess>]
type SpamControl =
    | None
    | Attestation

    /// The wire string.
    member s.Wire =
        match s with
        | None -> "none"
        | Attestation -> "attestation"

/// Key IDs.
module KeyIds =
    /// Key ID = SHA-256(auth public key).
    let ofAuthPublicKey (authPublicKey: AuthPublicKey) : KeyId =
        Bin.trusted<KeyIdKind>(Hashing.sha256 authPublicKey.Span)

    /// Checks a claimed key ID against an auth public key ("key id does not match auth public key").
    let verify (claimed: KeyId) (authPublicKey: AuthPublicKey) : Result<unit, FieldError> =
        if ofAuthPublicKey authPublicKey = claimed then
            Ok()
        else
            FieldError.fail
                "keyId"
                "does not match auth public key (key id does not match auth public key)"

/// The parameters of a create-invite action, signed inside the sensitive-action intent.
type CreateInviteFields =
    {
        NamespaceId: NamespaceId
        InviteId: InviteId
        InviteServerSecretHash: InviteServerSecretHash
        /// Invite expiry, Unix seconds.
        ExpiresAt: int64
        /// How many requests may be approved through the invite.
        MaxAccepted: int
    }

/// Sensitive-action fields (docs/protocol.md §4.5; legacy create-invite layout: §13).
module ActionFields =
    /// revoke-all-tokens: empty.
    let revokeAllTokens: byte[] = [||]

    /// create-namespace-invite (current layout, 76 bytes):
    /// ns(16) ‖ invite(16) ‖ serverSecretHash(32) ‖ u64be(expiresAt) ‖ u32be(maxAccepted).
    let createInvite (f: CreateInviteFields) : byte[] =
        Bytes.concat
            [
                f.NamespaceId.Span.ToArray()
                f.InviteId.Span.ToArray()
                f.InviteServerSecretHash.Span.ToArray()
                Bytes.u64be (uint64 f.ExpiresAt)
                Bytes.u32be (uint32 f.MaxAccepted)
            ]

    /// The legacy (80-byte) create-invite layout with `maxPending` before `maxAccepted`.
    /// Only for reading old clients' data; this library never signs it.
    let createInviteLegacy (f: CreateInviteFields) (maxPending: int) : byte[] =
        Bytes.concat
            [
                f.NamespaceId.Span.ToArray()
                f.InviteId.Span.ToArray()
                f.InviteServerSecretHash.Span.ToArray()
                Bytes.u64be (uint64 f.ExpiresAt)
                Bytes.u32be (uint32 maxPending)
                Bytes.u32be (uint32 f.MaxAccepted)
            ]

    /// SHA-256 of the action fields.
    let hash (fields: byte[]) : ActionFieldsHash =
        Bin.trusted<ActionFieldsHashKind>(Hashing.sha256 (ReadOnlySpan fields))

    /// The fields of an action: empty for revoke-all-tokens.
    let ofAction
        (action: SensitiveAction)
        (inviteFields: CreateInviteFields option)
        : Result<byte[], FieldError> =
        match action, inviteFields with
        | SensitiveAction.RevokeAllTokens, _ -> Ok revokeAllTokens
        | SensitiveAction.CreateNamespaceInvite, Some f -> Ok(createInvite f)
        | SensitiveAction.CreateNamespaceInvite, None -> FieldError.missing "actionFields"

/// The signed intent byte layouts (docs/protocol.md §4). Every builder takes validated values, so
/// the length rules of the reference builders hold by construction.
module Intents =
    let private prefix = Bytes.ascii Limits.Labels.Intent

    /// Login intent (148 bytes): label ‖ 01 ‖ 01 ‖ challenge ‖ kind ‖ keyId ‖ authPk ‖ wrapPk.
    let login
        (challenge: Challenge)
        (kind: IdentityKind)
        (keyId: KeyId)
        (auth: AuthPublicKey)
        (wrap: WrapPublicKey)
        : byte[] =
        Bytes.concat
            [
                prefix
                [| 1uy; 1uy |]
                challenge.Span.ToArray()
                [| kind.Code |]
                keyId.Span.ToArray()
                auth.Span.ToArray()
                wrap.Span.ToArray()
            ]

    /// Refresh intent (84 bytes): label ‖ 01 ‖ 02 ‖ challenge ‖ kind ‖ keyId.
    let refresh (challenge: Challenge) (kind: IdentityKind) (keyId: KeyId) : byte[] =
        Bytes.concat
            [
                prefix
                [| 1uy; 2uy |]
                challenge.Span.ToArray()
                [| kind.Code |]
                keyId.Span.ToArray()
            ]

    /// Sensitive-action intent (85 + n bytes): label ‖ 01 ‖ 03 ‖ action ‖ challenge ‖ kind ‖ keyId ‖ fields.
    let sensitiveAction
        (action: SensitiveAction)
        (challenge: Challenge)
        (kind: IdentityKind)
        (keyId: KeyId)
        (fields: byte[])
        : byte[] =
        Bytes.concat
            [
                prefix
                [| 1uy; 3uy; action.Code |]
                challenge.Span.ToArray()
                [| kind.Code |]
                keyId.Span.ToArray()
                fields
            ]
