/// Invite and join-request decisions of the engine: invite parameters, join-request expiry, and
/// the local verification of a join request before the DEK is wrapped to the requester.
/// Implements docs/engine.md §8.4–§8.6.
namespace BitBoxSync.Core

open System
open BitBoxSync.Protocol

/// The parameters of a new invite after defaults and limits.
type InviteParameters = { ExpiresAt: int64; MaxAccepted: int }

/// What an approval sends once the join request is verified.
type VerifiedJoinRequest =
    {
        RequesterKeyId: KeyId
        Hash: JoinRequestHash
        WrapPublicKey: WrapPublicKey
        ServerSecret: InviteServerSecret
    }

/// The sharing decisions.
module Sharing =
    /// Default invite lifetime (docs/engine.md §8.4 step 1).
    let DefaultInviteTtl = TimeSpan.FromMinutes 10.0

    /// docs/engine.md §8.4 steps 1, 2, 7: TTL ≤ 0 → the default, above 1 h refused;
    /// maxAccepted ≤ 0 → 10, above 10 refused; expiry = now + TTL in Unix seconds.
    let inviteParameters
        (ttl: TimeSpan)
        (maxAccepted: int)
        (now: DateTimeOffset)
        : Result<InviteParameters, string> =
        let ttl = if ttl <= TimeSpan.Zero then DefaultInviteTtl else ttl

        if ttl > TimeSpan.FromSeconds(float Limits.MaxInviteTtlSeconds) then
            Error(sprintf "invite ttl exceeds maximum %d seconds" Limits.MaxInviteTtlSeconds)
        else
            let maxAccepted =
                if maxAccepted <= 0 then
                    Limits.MaxAcceptedJoinRequestsPerInvite
                else
                    maxAccepted

            if maxAccepted > Limits.MaxAcceptedJoinRequestsPerInvite then
                Error(
                    sprintf "maxAccepted exceeds maximum %d" Limits.MaxAcceptedJoinRequestsPerInvite
                )
            else
                Ok
                    {
                        ExpiresAt = (now + ttl).ToUnixTimeSeconds()
                        MaxAccepted = maxAccepted
                    }

    /// docs/engine.md §8.5 step 5: an explicit expiry, or now + TTL (≤ 0 or above 10 min →
    /// 10 min) capped at the invite's expiry; refused when negative, too far, after the invite,
    /// or not in the future.
    let joinRequestExpiry
        (invite: InviteToken)
        (explicitExpiresAt: int64 option)
        (ttl: TimeSpan)
        (now: DateTimeOffset)
        : Result<int64, string> =
        let maxTtl = TimeSpan.FromSeconds(float Limits.MaxJoinRequestTtlSeconds)
        let ttl = if ttl <= TimeSpan.Zero || ttl > maxTtl then maxTtl else ttl
        let nowUnix = now.ToUnixTimeSeconds()

        let expiry =
            match explicitExpiresAt with
            | Some e -> e
            | None -> min ((now + ttl).ToUnixTimeSeconds()) invite.ExpiresAt

        if invite.Version <> Limits.JoinRequestVersion then
            Error "unsupported version"
        elif expiry < 0L then
            Error "join request expiry before unix epoch"
        elif expiry > nowUnix + Limits.MaxJoinRequestTtlSeconds then
            Error "join request expiry exceeds maximum"
        elif expiry > invite.ExpiresAt then
            Error "join request expires after invite"
        elif expiry <= nowUnix then
            Error "invite has expired"
        else
            Ok expiry

    /// docs/engine.md §8.6 steps 1–15: every local check of a pending join request against the
    /// invite the approver kept, first failure wins (messages as the reference engine's tests
    /// expect).
    let verifyJoinRequest
        (ns: NamespaceId)
        (invite: InviteToken)
        (entryHash: string)
        (request: Wire.NamespaceJoinRequest)
        (now: DateTimeOffset)
        : Result<VerifiedJoinRequest, string> =
        let nowUnix = now.ToUnixTimeSeconds()

        let check condition message =
            if condition then Ok() else Error message

        check (invite.Version = Limits.JoinRequestVersion) "unsupported version"
        |> Result.bind (fun () -> check (invite.ExpiresAt > 0L) "invite expiry must be positive")
        |> Result.bind (fun () -> check (invite.ExpiresAt > nowUnix) "invite has expired")
        |> Result.bind (fun () ->
            check
                (not (isNull (box request))
                 && invite.NamespaceId = ns
                 && request.NamespaceId = ns.Wire)
                "join request namespace mismatch")
        |> Result.bind (fun () ->
            check (request.InviteId = invite.InviteId.Wire) "join request invite mismatch")
        |> Result.bind (fun () ->
            check
                (request.ServerOrigin = invite.ServerOrigin.Value)
                "join request server origin mismatch")
        |> Result.bind (fun () ->
            check (request.Version = int64 Limits.JoinRequestVersion) "unsupported version")
        |> Result.bind (fun () -> check (request.Kind = "keystore") "invalid kind")
        |> Result.bind (fun () -> check (request.ExpiresAt > nowUnix) "join request has expired")
        |> Result.bind (fun () ->
            check (request.ExpiresAt <= invite.ExpiresAt) "join request expires after invite")
        |> Result.bind (fun () ->
            Requests.joinRequest request |> Result.mapError (fun e -> e.Message))
        |> Result.bind (fun parsed ->
            let f = parsed.Fields

            check
                (KeyIds.ofAuthPublicKey f.AuthPublicKey = f.KeyId)
                "key id does not match auth public key"
            |> Result.bind (fun () ->
                let payload = JoinRequests.payload f
                let hash = JoinRequests.hash payload

                check (hash.Wire = entryHash) "join request hash mismatch"
                |> Result.bind (fun () ->
                    check
                        (Ed25519.verify f.AuthPublicKey (ReadOnlySpan payload) parsed.Signature)
                        "invalid join request signature")
                |> Result.bind (fun () ->
                    InviteSecrets.verifyProof invite.InviteSecret payload parsed.InviteProof.Span)
                |> Result.map (fun () ->
                    {
                        RequesterKeyId = f.KeyId
                        Hash = hash
                        WrapPublicKey = f.WrapPublicKey
                        ServerSecret = InviteSecrets.serverSecret invite.InviteSecret
                    })))
