/// Auth rules: challenges (purpose, kind, action fields hash, single use, expiry), login and
/// refresh verification, bearer tokens (stored hashed, 32 active per key, oldest evicted).
/// Implements docs/protocol.md §7.2–§7.5 and §10.2 (with our choices).
namespace BitBoxSync.Server.Core

open System
open BitBoxSync.Protocol

/// Server auth settings.
type AuthSettings =
    {
        /// How long a challenge is accepted (default 5 min).
        ChallengeTtl: TimeSpan
        /// Bearer token lifetime (default 30 days, well above the client's 24 h refresh skew).
        TokenTtl: TimeSpan
        /// Demand an attestation at login and refresh (test mode accepts the dummy format only).
        RequireAttestation: bool
    }

/// A minted challenge as the server remembers it. Storage format — change only with a migration.
type StoredChallenge =
    {
        Challenge: Challenge
        Purpose: ChallengePurpose
        Kind: IdentityKind
        ExpiresAt: DateTimeOffset
        Used: bool
    }

/// A registered identity (first login registers it).
type RegisteredIdentity =
    {
        KeyId: KeyId
        Kind: IdentityKind
        AuthPublicKey: AuthPublicKey
        WrapPublicKey: WrapPublicKey
        RegisteredAt: DateTimeOffset
    }

/// A bearer token, stored as its SHA-256 only.
type StoredToken =
    {
        TokenHash: byte[]
        KeyId: KeyId
        IssuedAt: DateTimeOffset
        ExpiresAt: DateTimeOffset
        Revoked: bool
    }

/// The result of presenting a challenge: it is marked used whether or not the request passes.
type ChallengeUse =
    {
        MarkUsed: StoredChallenge option
        Result: Result<unit, ApiError>
    }

/// The auth rules.
module Auth =
    /// The documented defaults.
    let defaults =
        {
            ChallengeTtl = TimeSpan.FromMinutes 5.0
            TokenTtl = TimeSpan.FromDays 30.0
            RequireAttestation = false
        }

    /// Mints a challenge from 32 random bytes. Sensitive actions always answer spam control
    /// `none` (the client refuses anything else there).
    let mint
        (settings: AuthSettings)
        (cmd: ChallengeCommand)
        (random32: byte[])
        (now: DateTimeOffset)
        : StoredChallenge * Wire.ChallengeResponse =
        let challenge =
            match Bin.ofBytes<ChallengeKind> random32 with
            | Ok c -> c
            | Error e -> invalidArg "random32" e.Message

        let stored =
            {
                Challenge = challenge
                Purpose = cmd.Purpose
                Kind = cmd.Kind
                ExpiresAt = now + settings.ChallengeTtl
                Used = false
            }

        let spam =
            match cmd.Purpose with
            | ChallengePurpose.Login
            | ChallengePurpose.Refresh when settings.RequireAttestation -> SpamControl.Attestation
            | _ -> SpamControl.None

        stored,
        {
            Challenge = challenge.Wire
            ExpiresAt = Rfc3339.format stored.ExpiresAt
            SpamControl = { Kind = spam.Wire }
        }

    /// Presents a challenge for `purpose` and `kind`: unknown, used, expired, minted for another
    /// purpose / action / fields hash or kind → 403. A known challenge is consumed either way.
    let useChallenge
        (stored: StoredChallenge option)
        (purpose: ChallengePurpose)
        (kind: IdentityKind)
        (now: DateTimeOffset)
        : ChallengeUse =
        match stored with
        | None ->
            {
                MarkUsed = None
                Result = Error(ApiError.forbidden "unknown challenge")
            }
        | Some c ->
            let result =
                if c.Used then
                    Error(ApiError.forbidden "challenge already used")
                elif now >= c.ExpiresAt then
                    Error(ApiError.forbidden "challenge expired")
                elif c.Purpose <> purpose then
                    Error(ApiError.forbidden "challenge was minted for another purpose or action")
                elif c.Kind <> kind then
                    Error(ApiError.forbidden "challenge was minted for another kind")
                else
                    Ok()

            { MarkUsed = Some { c with Used = true }; Result = result }

    let private checkAttestation
        (settings: AuthSettings)
        (challenge: Challenge)
        (auth: AuthPublicKey)
        (attestation: Attestation option)
        =
        match settings.RequireAttestation, attestation with
        | false, _ -> Ok()
        | true, None -> Error(ApiError.forbidden "attestation required")
        | true, Some a when a = DummyKeystore.AttestationFor(challenge, auth) -> Ok()
        | true, Some _ -> Error(ApiError.forbidden "invalid attestation")

    /// Login after the challenge passed: key ID = SHA-256(auth key), signature over the login
    /// intent, attestation when demanded, and a registered key keeps its wrap key (409). Returns
    /// the identity to store (registered on first login).
    let login
        (settings: AuthSettings)
        (cmd: LoginCommand)
        (existing: RegisteredIdentity option)
        (now: DateTimeOffset)
        : Result<RegisteredIdentity, ApiError> =
        if KeyIds.ofAuthPublicKey cmd.AuthPublicKey <> cmd.KeyId then
            Error(ApiError.forbidden "key id does not match auth public key")
        else
            let intent =
                Intents.login cmd.Challenge cmd.Kind cmd.KeyId cmd.AuthPublicKey cmd.WrapPublicKey

            if not (Ed25519.verify cmd.AuthPublicKey (ReadOnlySpan intent) cmd.Signature) then
                Error(ApiError.forbidden "invalid intent signature")
            else
                checkAttestation settings cmd.Challenge cmd.AuthPublicKey cmd.Attestation
                |> Result.bind (fun () ->
                    match existing with
                    | Some id when id.WrapPublicKey <> cmd.WrapPublicKey ->
                        Error(
                            ApiError.conflict "this key is registered with another wrap public key"
                        )
                    | Some id -> Ok id
                    | None when X25519.isLowOrder cmd.WrapPublicKey ->
                        Error(ApiError.badRequest "wrapPublicKey is a low-order point")
                    | None ->
                        Ok
                            {
                                KeyId = cmd.KeyId
                                Kind = cmd.Kind
                                AuthPublicKey = cmd.AuthPublicKey
                                WrapPublicKey = cmd.WrapPublicKey
                                RegisteredAt = now
                            })

    /// Refresh after the challenge passed: the body's key must be the token's identity, and the
    /// signature over the refresh intent must verify with the registered auth key.
    let refresh
        (settings: AuthSettings)
        (cmd: RefreshCommand)
        (caller: RegisteredIdentity)
        : Result<unit, ApiError> =
        if cmd.KeyId <> caller.KeyId then
            Error(ApiError.forbidden "keyId is not the token's identity")
        elif
            not (
                Ed25519.verify
                    caller.AuthPublicKey
                    (ReadOnlySpan(Intents.refresh cmd.Challenge cmd.Kind cmd.KeyId))
                    cmd.Signature
            )
        then
            Error(ApiError.forbidden "invalid intent signature")
        else
            checkAttestation settings cmd.Challenge caller.AuthPublicKey cmd.Attestation

    /// The purpose a revoke-all-tokens challenge must have: the action with SHA-256 of empty fields.
    let revokeAllTokensPurpose: ChallengePurpose =
        ChallengePurpose.SensitiveAction(
            SensitiveAction.RevokeAllTokens,
            ActionFields.hash ActionFields.revokeAllTokens
        )

    /// `DELETE /v1/auth/tokens` after the challenge passed: the body's key is the caller and the
    /// signature covers the 85-byte sensitive-action intent. The caller then revokes every token
    /// of the identity, the one used for this call included.
    let revokeAllTokens
        (cmd: RevokeAllTokensCommand)
        (caller: RegisteredIdentity)
        : Result<unit, ApiError> =
        let intent =
            Intents.sensitiveAction
                SensitiveAction.RevokeAllTokens
                cmd.Challenge
                cmd.Kind
                cmd.KeyId
                ActionFields.revokeAllTokens

        if cmd.KeyId <> caller.KeyId then
            Error(ApiError.forbidden "keyId is not the token's identity")
        elif not (Ed25519.verify caller.AuthPublicKey (ReadOnlySpan intent) cmd.Signature) then
            Error(ApiError.forbidden "invalid intent signature")
        else
            Ok()

    /// SHA-256 of a token: the only form stored.
    let tokenHash (token: string) : byte[] =
        Hashing.sha256 (ReadOnlySpan(Text.Encoding.UTF8.GetBytes token))

    /// Issues a token from 32 random bytes (unpadded base64url); returns the token, its stored
    /// record, and the tokens to revoke so that at most 32 stay active (oldest first).
    let issueToken
        (settings: AuthSettings)
        (keyId: KeyId)
        (random32: byte[])
        (active: StoredToken list)
        (now: DateTimeOffset)
        : string * StoredToken * StoredToken list =
        let token = Base64Url.encode random32

        let stored =
            {
                TokenHash = tokenHash token
                KeyId = keyId
                IssuedAt = now
                ExpiresAt = now + settings.TokenTtl
                Revoked = false
            }

        let live =
            active
            |> List.filter (fun t -> t.KeyId = keyId && not t.Revoked && t.ExpiresAt > now)

        let excess = live.Length + 1 - Limits.MaxActiveTokensPerKey

        let evicted =
            if excess <= 0 then
                []
            else
                live
                |> List.sortBy (fun t -> t.IssuedAt)
                |> List.truncate excess
                |> List.map (fun t -> { t with Revoked = true })

        token, stored, evicted

    /// The caller of an authenticated request: unknown, expired or revoked → 401 (and only then).
    let authenticate (stored: StoredToken option) (now: DateTimeOffset) : Result<KeyId, ApiError> =
        match stored with
        | None -> Error(ApiError.unauthorized "unknown bearer token")
        | Some t when t.Revoked -> Error(ApiError.unauthorized "revoked bearer token")
        | Some t when now >= t.ExpiresAt -> Error(ApiError.unauthorized "expired bearer token")
        | Some t -> Ok t.KeyId
