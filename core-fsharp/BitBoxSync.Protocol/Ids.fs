/// Constrained types for every identifier and binary value on the wire: parse once at the edge,
/// after that the type proves validity. Implements docs/protocol.md §2.1 (and the wrapped-DEK
/// format check of §3.6.2).
namespace BitBoxSync.Protocol

#nowarn "3535" // static abstract interface members are the point of IBinaryKind

open System

/// How a binary value is written on the wire.
type WireForm =
    /// Lowercase hex (identifiers, keys, hashes, signatures).
    | LowerHex
    /// Canonical standard padded base64.
    | Base64Padded
    /// Canonical unpadded base64url.
    | Base64UrlUnpadded

/// The rules of one kind of binary value.
type BinarySpec =
    {
        /// The default JSON field name used in error messages.
        Field: string
        Form: WireForm
        MinLength: int
        MaxLength: int
        /// Secrets are never printed by ToString.
        Secret: bool
        /// An extra format rule on the decoded bytes (the broken rule's words, or None).
        Check: byte[] -> string option
    }

/// Marker for a kind of binary value: a type whose static `Spec` states its rules.
type IBinaryKind =
    static abstract Spec: BinarySpec

/// A validated binary value of kind 'K (for example `Bin<NamespaceIdKind>` = `NamespaceId`).
/// Equality and ordering are by the bytes (ordinal), so it can key maps and sort deterministically.
[<Sealed>]
type Bin<'K when 'K :> IBinaryKind> internal (raw: byte[]) =
    /// The wire form once computed (never for secret kinds: no extra copy of a secret is kept).
    let mutable wire: string = null

    /// The underlying bytes. Callers inside the library must not mutate them.
    member internal _.Raw = raw

    /// Number of bytes.
    member _.Length = raw.Length

    /// A read-only view of the bytes.
    member _.Span = ReadOnlySpan<byte> raw

    /// The wire form (lowercase hex, base64 or base64url), computed once per value.
    member _.Wire =
        match wire with
        | null ->
            let w =
                match 'K.Spec.Form with
                | LowerHex -> Hex.ofBytes raw
                | Base64Padded -> Base64.encode raw
                | Base64UrlUnpadded -> Base64Url.encode raw

            if not 'K.Spec.Secret then
                wire <- w

            w
        | w -> w

    override this.ToString() =
        if 'K.Spec.Secret then "<redacted>" else this.Wire

    override _.Equals(o: obj) =
        match o with
        | :? Bin<'K> as other ->
            MemoryExtensions.SequenceEqual(ReadOnlySpan raw, ReadOnlySpan other.Raw)
        | _ -> false

    override _.GetHashCode() =
        let h = HashCode()
        h.AddBytes(ReadOnlySpan raw)
        h.ToHashCode()

    interface IEquatable<Bin<'K>> with
        member _.Equals(other: Bin<'K>) =
            not (isNull (box other))
            && MemoryExtensions.SequenceEqual(ReadOnlySpan raw, ReadOnlySpan other.Raw)

    interface IComparable<Bin<'K>> with
        member _.CompareTo(other: Bin<'K>) =
            MemoryExtensions.SequenceCompareTo(ReadOnlySpan raw, ReadOnlySpan other.Raw)

    interface IComparable with
        member this.CompareTo(o: obj) =
            match o with
            | :? Bin<'K> as other -> (this :> IComparable<Bin<'K>>).CompareTo other
            | _ -> invalidArg "o" "cannot compare values of different kinds"

/// Construction and access for binary values of any kind.
module Bin =
    /// The rules of kind 'K.
    let spec<'K when 'K :> IBinaryKind> () : BinarySpec = 'K.Spec

    let private checkLength (s: BinarySpec) field (bytes: byte[]) =
        if bytes.Length < s.MinLength || bytes.Length > s.MaxLength then
            if s.MinLength = s.MaxLength then
                FieldError.fail field (sprintf "must be %d bytes" s.MinLength)
            else
                FieldError.fail field (sprintf "must be %d to %d bytes" s.MinLength s.MaxLength)
        else
            match s.Check bytes with
            | Some rule -> FieldError.fail field rule
            | None -> Ok bytes

    /// Validates raw bytes (copied) as kind 'K, reporting errors under `field`.
    let ofBytesAs<'K when 'K :> IBinaryKind>
        (field: string)
        (bytes: ReadOnlySpan<byte>)
        : Result<Bin<'K>, FieldError> =
        checkLength 'K.Spec field (bytes.ToArray()) |> Result.map (fun b -> Bin<'K> b)

    /// Validates raw bytes (copied) as kind 'K under its default field name.
    let ofBytes<'K when 'K :> IBinaryKind> (bytes: byte[]) : Result<Bin<'K>, FieldError> =
        if isNull bytes then
            FieldError.missing 'K.Spec.Field
        else
            ofBytesAs<'K> 'K.Spec.Field (ReadOnlySpan bytes)

    /// Parses the wire form of kind 'K from JSON field `field`.
    let parseAs<'K when 'K :> IBinaryKind>
        (field: string)
        (wire: string)
        : Result<Bin<'K>, FieldError> =
        let s = 'K.Spec

        let decoded =
            match s.Form with
            | LowerHex ->
                // Hex lengths are exact for every hex kind.
                Hex.decodeLowerExact field s.MinLength wire
            | Base64Padded -> Base64.decode field wire
            | Base64UrlUnpadded -> Base64Url.decodeExact field s.MinLength wire

        decoded |> Result.bind (checkLength s field) |> Result.map (fun b -> Bin<'K> b)

    /// Parses the wire form of kind 'K under its default field name.
    let parse<'K when 'K :> IBinaryKind> (wire: string) : Result<Bin<'K>, FieldError> =
        parseAs<'K> 'K.Spec.Field wire

    /// Builds a value from bytes the library itself produced with the right length (no copy).
    let internal trusted<'K when 'K :> IBinaryKind> (bytes: byte[]) : Bin<'K> =
        if bytes.Length < 'K.Spec.MinLength || bytes.Length > 'K.Spec.MaxLength then
            invalidOp (sprintf "internal error: %s of %d bytes" 'K.Spec.Field bytes.Length)

        Bin<'K> bytes

    /// A copy of the bytes.
    let toArray (b: Bin<'K>) : byte[] = Array.copy b.Raw

    /// The wire form.
    let toWire (b: Bin<'K>) : string = b.Wire

module private Specs =
    let noCheck (_: byte[]) = None

    let hex field length =
        {
            Field = field
            Form = LowerHex
            MinLength = length
            MaxLength = length
            Secret = false
            Check = noCheck
        }

    let b64 field minLength maxLength =
        {
            Field = field
            Form = Base64Padded
            MinLength = minLength
            MaxLength = maxLength
            Secret = false
            Check = noCheck
        }

    let b64url field secret =
        {
            Field = field
            Form = Base64UrlUnpadded
            MinLength = Limits.InviteSecretLength
            MaxLength = Limits.InviteSecretLength
            Secret = secret
            Check = noCheck
        }

    /// docs/protocol.md §3.6.2 checks 2–4 (`ValidateWrappedDEK`).
    let wrappedDekCheck (b: byte[]) =
        if b.Length = 0 then
            Some "invalid wrapped dek"
        elif b[0] <> 1uy then
            Some "unsupported version"
        elif b.Length <> Limits.WrappedDekLengthV1 then
            Some "invalid wrapped dek"
        else
            None

/// Kind of `keyId`: SHA-256 of the auth public key, 32 bytes, lowercase hex.
type KeyIdKind =
    interface IBinaryKind with
        static member Spec = Specs.hex "keyId" Limits.KeyIdLength

/// Kind of `namespaceId`: 16 random bytes, lowercase hex.
type NamespaceIdKind =
    interface IBinaryKind with
        static member Spec = Specs.hex "namespaceId" Limits.NamespaceIdLength

/// Kind of `inviteId`: 16 random bytes, lowercase hex.
type InviteIdKind =
    interface IBinaryKind with
        static member Spec = Specs.hex "inviteId" Limits.InviteIdLength

/// Kind of `itemId`: HMAC of a logical key, 32 bytes, lowercase hex.
type ItemIdKind =
    interface IBinaryKind with
        static member Spec = Specs.hex "itemId" Limits.ItemIdLength

/// Kind of `joinRequestHash`: SHA-256 of the join-request payload.
type JoinRequestHashKind =
    interface IBinaryKind with
        static member Spec = Specs.hex "joinRequestHash" Limits.HashLength

/// Kind of `inviteServerSecretHash`: SHA-256 of the invite server secret.
type InviteServerSecretHashKind =
    interface IBinaryKind with
        static member Spec = Specs.hex "inviteServerSecretHash" Limits.HashLength

/// Kind of `actionFieldsHash`: SHA-256 of sensitive-action fields.
type ActionFieldsHashKind =
    interface IBinaryKind with
        static member Spec = Specs.hex "actionFieldsHash" Limits.HashLength

/// Kind of a server origin hash (inside the join-request payload only).
type ServerOriginHashKind =
    interface IBinaryKind with
        static member Spec = Specs.hex "serverOriginHash" Limits.HashLength

/// Kind of `authPublicKey`: Ed25519 public key.
type AuthPublicKeyKind =
    interface IBinaryKind with
        static member Spec = Specs.hex "authPublicKey" Limits.PublicKeyLength

/// Kind of `wrapPublicKey`: X25519 public key.
type WrapPublicKeyKind =
    interface IBinaryKind with
        static member Spec = Specs.hex "wrapPublicKey" Limits.PublicKeyLength

/// Kind of `intentSignature` / join-request `signature`: Ed25519 signature.
type SignatureKind =
    interface IBinaryKind with
        static member Spec = Specs.hex "intentSignature" Limits.SignatureLength

/// Kind of `challenge`: 32 server-random bytes, canonical base64.
type ChallengeKind =
    interface IBinaryKind with
        static member Spec = Specs.b64 "challenge" Limits.ChallengeLength Limits.ChallengeLength

/// Kind of `attestation`: opaque bytes, canonical base64.
type AttestationKind =
    interface IBinaryKind with
        static member Spec = Specs.b64 "attestation" 1 Limits.MaxAttestationLength

/// Kind of `wrappedDek`: HPKE-wrapped DEK, format version 1, 97 bytes, canonical base64.
type WrappedDekKind =
    interface IBinaryKind with
        static member Spec =
            { Specs.b64 "wrappedDek" 0 Limits.WrappedDekLengthV1 with
                MaxLength = Int32.MaxValue
                Check = Specs.wrappedDekCheck
            }

/// Kind of item `nonce`: 24 bytes, canonical base64.
type ItemNonceKind =
    interface IBinaryKind with
        static member Spec = Specs.b64 "nonce" Limits.ItemNonceLength Limits.ItemNonceLength

/// Kind of item `aad`: 76 bytes, canonical base64.
type ItemAadKind =
    interface IBinaryKind with
        static member Spec = Specs.b64 "aad" Limits.ItemAadLength Limits.ItemAadLength

/// Kind of item `ciphertext`: 16 to 65 536 bytes, canonical base64.
type CiphertextKind =
    interface IBinaryKind with
        static member Spec =
            Specs.b64 "ciphertext" Limits.AeadTagLength Limits.MaxItemCiphertextSize

/// Kind of `inviteServerSecret`: 32 bytes, unpadded base64url.
type InviteServerSecretKind =
    interface IBinaryKind with
        static member Spec = Specs.b64url "inviteServerSecret" false

/// Kind of `inviteProof`: 32 bytes, unpadded base64url.
type InviteProofKind =
    interface IBinaryKind with
        static member Spec = Specs.b64url "inviteProof" false

/// Kind of the invite secret (URI fragment `k` only, never sent to the server): 32 bytes.
type InviteSecretKind =
    interface IBinaryKind with
        static member Spec = Specs.b64url "inviteSecret" true

/// Kind of a namespace DEK (never on the wire in clear): 32 bytes, hex only for test data.
type DekKind =
    interface IBinaryKind with
        static member Spec = { Specs.hex "dek" Limits.DekLength with Secret = true }

/// SHA-256(authPublicKey).
type KeyId = Bin<KeyIdKind>
/// 16-byte namespace ID.
type NamespaceId = Bin<NamespaceIdKind>
/// 16-byte invite ID.
type InviteId = Bin<InviteIdKind>
/// 32-byte item ID.
type ItemId = Bin<ItemIdKind>
/// SHA-256 of a join-request payload.
type JoinRequestHash = Bin<JoinRequestHashKind>
/// SHA-256 of an invite server secret.
type InviteServerSecretHash = Bin<InviteServerSecretHashKind>
/// SHA-256 of sensitive-action fields.
type ActionFieldsHash = Bin<ActionFieldsHashKind>
/// SHA-256 of a canonical server origin.
type ServerOriginHash = Bin<ServerOriginHashKind>
/// Ed25519 public key.
type AuthPublicKey = Bin<AuthPublicKeyKind>
/// X25519 public key.
type WrapPublicKey = Bin<WrapPublicKeyKind>
/// Ed25519 signature.
type Signature = Bin<SignatureKind>
/// Server challenge (32 bytes).
type Challenge = Bin<ChallengeKind>
/// Opaque attestation bytes.
type Attestation = Bin<AttestationKind>
/// HPKE-wrapped DEK (format version 1).
type WrappedDek = Bin<WrappedDekKind>
/// Item nonce (24 bytes).
type ItemNonce = Bin<ItemNonceKind>
/// Item AAD (76 bytes).
type ItemAad = Bin<ItemAadKind>
/// Item ciphertext with tag (16..65 536 bytes).
type Ciphertext = Bin<CiphertextKind>
/// Invite server secret (32 bytes).
type InviteServerSecret = Bin<InviteServerSecretKind>
/// Invite proof (32 bytes).
type InviteProof = Bin<InviteProofKind>
/// Invite secret (32 bytes; URI only).
type InviteSecret = Bin<InviteSecretKind>
/// Namespace data-encryption key (32 bytes; secret).
type Dek = Bin<DekKind>
