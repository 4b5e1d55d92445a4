/// Server origins, invite secrets and proofs, join-request payloads, invite tokens and the
/// `bitboxsync://` URI. Implements docs/protocol.md §5.1–§5.6.
namespace BitBoxSync.Protocol

open System
open System.Text
open FsToolkit.ErrorHandling

/// Why a server origin was rejected (docs/protocol.md §5.3).
[<RequireQualifiedAccess>]
type OriginError =
    | Empty
    | NotHttps
    | NotOnlySchemeHostPort
    | HostNotLowercaseAscii
    | HostNotALabel
    | PortNotCanonical
    | TooLong of length: int
    | NotCanonical

    /// The error text, in the reference client's words.
    member e.Message =
        match e with
        | Empty -> "parse server origin: empty origin"
        | NotHttps -> "server origin must use https"
        | NotOnlySchemeHostPort -> "server origin must contain only scheme, host, and optional port"
        | HostNotLowercaseAscii -> "server origin host must be lowercase ASCII"
        | HostNotALabel -> "server origin host must be an IDNA A-label host"
        | PortNotCanonical -> "server origin port must be canonical"
        | TooLong n ->
            sprintf "server origin exceeds maximum %d bytes (got %d)" Limits.MaxServerOriginLength n
        | NotCanonical -> "server origin must be canonical"

    override e.ToString() = e.Message

/// A canonical public server origin such as `https://sync.example` or `https://sync.example:8443`.
[<Sealed>]
type ServerOrigin private (value: string) =
    /// The canonical origin string.
    member _.Value = value

    /// The origin without the `https://` prefix (the URI field `s`).
    member _.HostAndPort = value.Substring 8

    override _.ToString() = value

    override _.Equals(o) =
        match o with
        | :? ServerOrigin as other -> String.Equals(value, other.Value, StringComparison.Ordinal)
        | _ -> false

    override _.GetHashCode() =
        StringComparer.Ordinal.GetHashCode value

    static member internal Create(v: string) = ServerOrigin v

/// Canonicalisation and hashing of server origins.
module ServerOrigin =
    let private isLabelChar (c: char) =
        (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c = '-'

    let private validHost (host: string) =
        not (host.StartsWith '.' || host.EndsWith '.' || host.Contains "..")
        && host.Split '.'
           |> Array.forall (fun label ->
               label.Length > 0
               && not (label.StartsWith '-' || label.EndsWith '-')
               && label |> Seq.forall isLabelChar)

    let private require condition error = if condition then Ok() else Error error

    /// Splits an authority into host and optional port (an IPv6 literal keeps its brackets and
    /// then fails the label rule, as in Go).
    let private hostAndPort (authority: string) =
        if authority.StartsWith '[' then
            authority, None
        else
            match authority.LastIndexOf ':' with
            | -1 -> authority, None
            | i -> authority.Substring(0, i), Some(authority.Substring(i + 1))

    let private canonicalPort (port: string option) : Result<string, OriginError> =
        match port with
        | None -> Ok ""
        | Some p ->
            match Decimal.tryParseUInt64 p with
            | ValueSome 443UL -> Ok ""
            | ValueSome v when v >= 1UL && v <= 65535UL -> Ok(":" + p)
            | _ -> Error OriginError.PortNotCanonical

    /// `CanonicalServerOrigin`: accepts `https://host[:port]` (scheme case-insensitive), rejects
    /// anything else with the rule it broke; drops port 443. Stricter than Go on `https://h?`,
    /// `https://h#`, `https://h:` and percent-escapes in the host (all rejected).
    let canonicalize (input: string) : Result<ServerOrigin, OriginError> =
        result {
            do! require (not (String.IsNullOrEmpty input)) OriginError.Empty
            let colon = input.IndexOf ':'

            do!
                require
                    (colon > 0
                     && String.Equals(
                         input.Substring(0, colon),
                         "https",
                         StringComparison.OrdinalIgnoreCase
                     ))
                    OriginError.NotHttps

            let rest = input.Substring(colon + 1)
            do! require (rest.StartsWith "//") OriginError.NotOnlySchemeHostPort
            let authority = rest.Substring 2

            do!
                require
                    (authority.Length > 0 && authority.IndexOfAny [| '/'; '?'; '#'; '@'; '\\' |] < 0)
                    OriginError.NotOnlySchemeHostPort

            let host, port = hostAndPort authority
            do! require (host.Length > 0) OriginError.NotOnlySchemeHostPort

            do!
                require
                    (host |> Seq.forall (fun c -> c <= '\u007f' && not (Char.IsAsciiLetterUpper c)))
                    OriginError.HostNotLowercaseAscii

            do! require (validHost host) OriginError.HostNotALabel
            let! portPart = canonicalPort port
            let canonical = "https://" + host + portPart

            do!
                require
                    (canonical.Length <= Limits.MaxServerOriginLength)
                    (OriginError.TooLong canonical.Length)

            return ServerOrigin.Create canonical
        }

    /// Accepts only an origin that is already canonical ("server origin must be canonical").
    let parseCanonical (input: string) : Result<ServerOrigin, OriginError> =
        canonicalize input
        |> Result.bind (fun o ->
            if String.Equals(o.Value, input, StringComparison.Ordinal) then
                Ok o
            else
                Error OriginError.NotCanonical)

    /// SHA-256 of the canonical origin's ASCII bytes.
    let hash (origin: ServerOrigin) : ServerOriginHash =
        Bin.trusted<ServerOriginHashKind>(
            Hashing.sha256 (ReadOnlySpan(Encoding.ASCII.GetBytes origin.Value))
        )

    /// `ServerOriginHash`: hashes an origin string that must already be canonical.
    let hashOf (input: string) : Result<ServerOriginHash, OriginError> =
        parseCanonical input |> Result.map hash

/// Invite secret derivations (docs/protocol.md §5.2).
module InviteSecrets =
    let private serverSecretLabel =
        Encoding.ASCII.GetBytes Limits.Labels.InviteServerSecret

    let private proofKeyLabel = Encoding.ASCII.GetBytes Limits.Labels.InviteProofKey

    /// HMAC(inviteSecret, "bitboxsync-invite-server-secret-v1").
    let serverSecret (secret: InviteSecret) : InviteServerSecret =
        Bin.trusted<InviteServerSecretKind>(
            Hashing.hmacSha256 secret.Span (ReadOnlySpan serverSecretLabel)
        )

    /// SHA-256(inviteServerSecret): what the server stores at invite creation.
    let serverSecretHash (serverSecret: InviteServerSecret) : InviteServerSecretHash =
        Bin.trusted<InviteServerSecretHashKind>(Hashing.sha256 serverSecret.Span)

    /// Constant-time check that SHA-256(serverSecret) equals the stored hash.
    let matchesHash (serverSecret: InviteServerSecret) (stored: InviteServerSecretHash) : bool =
        Hashing.fixedTimeEquals (ReadOnlySpan(Hashing.sha256 serverSecret.Span)) stored.Span

    /// HMAC(inviteSecret, "bitboxsync-invite-proof-key-v1"). Never sent anywhere.
    let proofKey (secret: InviteSecret) : byte[] =
        Hashing.hmacSha256 secret.Span (ReadOnlySpan proofKeyLabel)

    /// HMAC(proofKey, joinRequestPayload).
    let proof (secret: InviteSecret) (payload: byte[]) : InviteProof =
        Bin.trusted<InviteProofKind>(
            Hashing.hmacSha256 (ReadOnlySpan(proofKey secret)) (ReadOnlySpan payload)
        )

    /// Verifies a received proof in constant time ("invite proof must be 32 bytes", "invalid invite proof").
    let verifyProof
        (secret: InviteSecret)
        (payload: byte[])
        (received: ReadOnlySpan<byte>)
        : Result<unit, string> =
        if received.Length <> Limits.InviteSecretLength then
            Error "invite proof must be 32 bytes"
        elif Hashing.fixedTimeEquals (proof secret payload).Span received then
            Ok()
        else
            Error "invalid invite proof"

/// The values a join request signs (docs/protocol.md §5.6).
type JoinRequestFields =
    {
        NamespaceId: NamespaceId
        InviteId: InviteId
        ServerOrigin: ServerOrigin
        Kind: IdentityKind
        KeyId: KeyId
        AuthPublicKey: AuthPublicKey
        WrapPublicKey: WrapPublicKey
        /// Join-request expiry, Unix seconds.
        ExpiresAt: int64
    }

/// Join-request payload and hash.
module JoinRequests =
    let private prefix = Encoding.ASCII.GetBytes Limits.Labels.JoinRequest

    /// The 193-byte payload: label ‖ 01 ‖ ns ‖ invite ‖ originHash ‖ kind ‖ keyId ‖ authPk ‖ wrapPk ‖ u64be(expiresAt).
    let payload (f: JoinRequestFields) : byte[] =
        Bytes.concat
            [
                prefix
                [| 1uy |]
                f.NamespaceId.Span.ToArray()
                f.InviteId.Span.ToArray()
                (ServerOrigin.hash f.ServerOrigin).Span.ToArray()
                [| f.Kind.Code |]
                f.KeyId.Span.ToArray()
                f.AuthPublicKey.Span.ToArray()
                f.WrapPublicKey.Span.ToArray()
                Bytes.u64be (uint64 f.ExpiresAt)
            ]

    /// Join-request hash = SHA-256(payload).
    let hash (payload: byte[]) : JoinRequestHash =
        Bin.trusted<JoinRequestHashKind>(Hashing.sha256 (ReadOnlySpan payload))

/// Why an invite token or URI was rejected (docs/protocol.md §5.4, §5.5).
[<RequireQualifiedAccess>]
type InviteUriError =
    | Unsupported
    | MissingQuery
    | EmptyQueryComponent
    | BadQuery of detail: string
    | NonCanonicalQueryFields
    | UnsupportedVersion
    | InvalidOrigin of OriginError
    | NonCanonicalOrigin
    | InvalidField of FieldError
    | NonPositiveExpiry
    | NonCanonicalExpiry
    | MissingFragment
    | EmptyFragmentComponent
    | BadFragment of detail: string
    | NonCanonicalFragmentFields

    /// The error text (contains the reference client's words).
    member e.Message =
        match e with
        | Unsupported -> "unsupported namespace invite URI"
        | MissingQuery -> "namespace invite URI must include query fields"
        | EmptyQueryComponent -> "namespace invite URI must not contain empty query components"
        | BadQuery d -> "parse invite query: " + d
        | NonCanonicalQueryFields -> "namespace invite URI must use canonical query fields"
        | UnsupportedVersion -> "unsupported version"
        | InvalidOrigin o -> o.Message
        | NonCanonicalOrigin -> "namespace invite URI must use canonical server origin encoding"
        | InvalidField f -> f.Message
        | NonPositiveExpiry -> "invite expiry must be positive"
        | NonCanonicalExpiry -> "namespace invite URI must use canonical expiry"
        | MissingFragment -> "namespace invite URI must include fragment fields"
        | EmptyFragmentComponent ->
            "namespace invite URI must not contain empty fragment components"
        | BadFragment d -> "parse invite fragment: " + d
        | NonCanonicalFragmentFields -> "namespace invite URI must use canonical fragment fields"

    override e.ToString() = e.Message

/// Everything a QR code carries (docs/protocol.md §5.1). Never contains the DEK; holds the
/// invite secret.
type InviteToken =
    {
        Version: int
        ServerOrigin: ServerOrigin
        NamespaceId: NamespaceId
        InviteId: InviteId
        /// Invite expiry, Unix seconds (> 0).
        ExpiresAt: int64
        InviteSecret: InviteSecret
    }

/// Invite tokens and the `bitboxsync://join-namespace` URI.
module InviteUri =
    [<Literal>]
    let private Prefix = "bitboxsync://join-namespace"

    /// Builds a token from loosely typed parts, as the encoder's input checks do: version 1,
    /// an origin that canonicalises (`:443` dropped), lowercase IDs, expiry > 0, canonical secret.
    let createToken
        (version: int)
        (serverOrigin: string)
        (namespaceId: string)
        (inviteId: string)
        (expiresAt: int64)
        (inviteSecret: string)
        : Result<InviteToken, InviteUriError> =
        if version <> Limits.JoinRequestVersion then
            Error InviteUriError.UnsupportedVersion
        else
            match ServerOrigin.canonicalize serverOrigin with
            | Error e -> Error(InviteUriError.InvalidOrigin e)
            | Ok origin ->
                match
                    Bin.parseAs<NamespaceIdKind> "namespaceId" namespaceId,
                    Bin.parseAs<InviteIdKind> "inviteId" inviteId,
                    Bin.parseAs<InviteSecretKind> "inviteSecret" inviteSecret
                with
                | Error e, _, _
                | _, Error e, _
                | _, _, Error e -> Error(InviteUriError.InvalidField e)
                | Ok ns, Ok inv, Ok secret ->
                    if expiresAt <= 0L then
                        Error InviteUriError.NonPositiveExpiry
                    else
                        Ok
                            {
                                Version = version
                                ServerOrigin = origin
                                NamespaceId = ns
                                InviteId = inv
                                ExpiresAt = expiresAt
                                InviteSecret = secret
                            }

    /// Encodes a token: `bitboxsync://join-namespace?v=1&s=…&n=…&i=…&e=…#k=…`.
    let format (token: InviteToken) : string =
        let b = StringBuilder(256)

        b
            .Append(Prefix)
            .Append("?v=")
            .Append(token.Version)
            .Append("&s=")
            .Append(token.ServerOrigin.HostAndPort)
            .Append("&n=")
            .Append(token.NamespaceId.Wire)
            .Append("&i=")
            .Append(token.InviteId.Wire)
            .Append("&e=")
            .Append(token.ExpiresAt)
            .Append("#k=")
            .Append(token.InviteSecret.Wire)
            .ToString()

    let private hexValue (c: char) =
        if c >= '0' && c <= '9' then int c - int '0'
        elif c >= 'a' && c <= 'f' then int c - int 'a' + 10
        elif c >= 'A' && c <= 'F' then int c - int 'A' + 10
        else -1

    /// application/x-www-form-urlencoded unescaping: `+` is a space, `%XX` a byte (UTF-8).
    let private unescape (s: string) : Result<string, string> =
        if s.IndexOf '%' < 0 && s.IndexOf '+' < 0 then
            Ok s
        else
            let bytes = Collections.Generic.List<byte>(s.Length)
            let mutable error = None
            let mutable i = 0

            while error.IsNone && i < s.Length do
                match s[i] with
                | '%' ->
                    if i + 2 < s.Length && hexValue s[i + 1] >= 0 && hexValue s[i + 2] >= 0 then
                        bytes.Add(byte ((hexValue s[i + 1] <<< 4) ||| hexValue s[i + 2]))
                        i <- i + 3
                    else
                        error <-
                            Some(
                                sprintf
                                    "invalid URL escape %A"
                                    (s.Substring(i, min 3 (s.Length - i)))
                            )
                | '+' ->
                    bytes.Add(byte ' ')
                    i <- i + 1
                | c ->
                    bytes.AddRange(Encoding.UTF8.GetBytes(string c))
                    i <- i + 1

            match error with
            | Some e -> Error e
            | None -> Ok(Encoding.UTF8.GetString(bytes.ToArray()))

    /// Splits a raw query/fragment into decoded (name, value) pairs, Go `url.ParseQuery` style.
    let private decodePairs (raw: string) : Result<(string * string) list, string> =
        raw.Split '&'
        |> Array.toList
        |> List.fold
            (fun acc part ->
                acc
                |> Result.bind (fun pairs ->
                    if part.Contains ';' then
                        Error "invalid semicolon separator in query"
                    else
                        let name, value =
                            match part.IndexOf '=' with
                            | -1 -> part, ""
                            | i -> part.Substring(0, i), part.Substring(i + 1)

                        match unescape name, unescape value with
                        | Ok n, Ok v -> Ok((n, v) :: pairs)
                        | Error e, _
                        | _, Error e -> Error e))
            (Ok [])
        |> Result.map List.rev

    /// Exactly these names, each exactly once, in any order.
    let private exactFields
        (names: string list)
        (pairs: (string * string) list)
        : Map<string, string> option =
        let m = Map.ofList pairs

        if
            pairs.Length = names.Length
            && m.Count = names.Length
            && names |> List.forall m.ContainsKey
        then
            Some m
        else
            None

    let private check (condition: bool) (error: InviteUriError) : Result<unit, InviteUriError> =
        if condition then Ok() else Error error

    let private field (r: Result<'a, FieldError>) =
        r |> Result.mapError InviteUriError.InvalidField

    /// Splits `scheme:rest` into (authority host, raw query, raw fragment); the query and the
    /// fragment are empty when absent.
    let private split (uri: string) =
        let hashAt = uri.IndexOf '#'
        let beforeFragment = if hashAt < 0 then uri else uri.Substring(0, hashAt)
        let fragment = if hashAt < 0 then "" else uri.Substring(hashAt + 1)
        let queryAt = beforeFragment.IndexOf '?'

        let hierarchy =
            if queryAt < 0 then
                beforeFragment
            else
                beforeFragment.Substring(0, queryAt)

        let query =
            if queryAt < 0 then
                ""
            else
                beforeFragment.Substring(queryAt + 1)

        let afterScheme = hierarchy.Substring "bitboxsync:".Length

        let host =
            if afterScheme.StartsWith "//" then
                let authority = afterScheme.Substring 2
                // Go accepts (and ignores) user info before the host.
                match authority.LastIndexOf '@' with
                | -1 -> Some authority
                | i -> Some(authority.Substring(i + 1))
            else
                None

        host, query, fragment

    let private parseExpiry (e: string) : Result<int64, InviteUriError> =
        match
            Int64.TryParse(
                e,
                Globalization.NumberStyles.AllowLeadingSign,
                Globalization.CultureInfo.InvariantCulture
            )
        with
        | false, _ ->
            Error(
                InviteUriError.InvalidField(
                    FieldError.create "expiresAt" "must be a decimal integer"
                )
            )
        | true, v when v <= 0L -> Error InviteUriError.NonPositiveExpiry
        | true, v when v.ToString(Globalization.CultureInfo.InvariantCulture) <> e ->
            Error InviteUriError.NonCanonicalExpiry
        | true, v -> Ok v

    /// Parses an invite URI following docs/protocol.md §5.5 (first failure wins). Never throws.
    let parse (uri: string) : Result<InviteToken, InviteUriError> =
        result {
            do!
                check
                    (not (isNull uri) && uri.StartsWith("bitboxsync:", StringComparison.Ordinal))
                    InviteUriError.Unsupported

            do!
                check
                    (uri |> Seq.forall (fun c -> c >= ' ' && c <> '\u007f'))
                    InviteUriError.Unsupported

            let host, query, fragment = split uri
            do! check (host = Some "join-namespace") InviteUriError.Unsupported
            do! check (query.Length > 0) InviteUriError.MissingQuery

            do!
                check
                    (query.Split '&' |> Array.forall (fun c -> c.Length > 0))
                    InviteUriError.EmptyQueryComponent

            let! pairs = decodePairs query |> Result.mapError InviteUriError.BadQuery

            let! q =
                exactFields [ "v"; "s"; "n"; "i"; "e" ] pairs
                |> Result.requireSome InviteUriError.NonCanonicalQueryFields

            do! check (q["v"] = "1") InviteUriError.UnsupportedVersion

            let! origin =
                ServerOrigin.canonicalize ("https://" + q["s"])
                |> Result.mapError InviteUriError.InvalidOrigin

            do! check (origin.HostAndPort = q["s"]) InviteUriError.NonCanonicalOrigin
            let! ns = Bin.parseAs<NamespaceIdKind> "namespaceId" q["n"] |> field
            let! invite = Bin.parseAs<InviteIdKind> "inviteId" q["i"] |> field
            let! expiresAt = parseExpiry q["e"]
            do! check (fragment.Length > 0) InviteUriError.MissingFragment

            do!
                check
                    (fragment.Split '&' |> Array.forall (fun c -> c.Length > 0))
                    InviteUriError.EmptyFragmentComponent

            let! fragmentPairs =
                decodePairs fragment |> Result.mapError InviteUriError.BadFragment

            let! f =
                exactFields [ "k" ] fragmentPairs
                |> Result.requireSome InviteUriError.NonCanonicalFragmentFields

            let! secret = Bin.parseAs<InviteSecretKind> "inviteSecret" f["k"] |> field

            return
                {
                    Version = 1
                    ServerOrigin = origin
                    NamespaceId = ns
                    InviteId = invite
                    ExpiresAt = expiresAt
                    InviteSecret = secret
                }
        }
