/// Authentication decisions: which token to use before an operation and what a 401 means.
/// Implements docs/engine.md §7.2–§7.3, with §12.24 (background work never prompts the identity).
namespace BitBoxSync.Core

open System

/// What to do before an authenticated operation.
[<RequireQualifiedAccess>]
type AuthDecision =
    /// The token is valid and outside the refresh window.
    | UseToken of token: string
    /// The token is valid but expires within the refresh skew: emit `auth-refresh-recommended`,
    /// try a refresh, and on its failure keep using this token.
    | RefreshThenUse of token: string * expiry: DateTimeOffset
    /// No usable token: log in (may prompt the device); on failure emit `auth-login-required`.
    | Login of previousExpiry: DateTimeOffset option
    /// No usable token and the caller must not prompt the identity (background pass): report a
    /// typed "login required" outcome instead.
    | NeedsLogin of previousExpiry: DateTimeOffset option

/// What a 401 on an operation that used `failedToken` means.
[<RequireQualifiedAccess>]
type UnauthorizedDecision =
    /// Another caller already replaced the token: retry once with the current one.
    | RetryWith of token: string
    /// Clear and persist the empty token, log in, retry once.
    | ClearAndLogin
    /// As ClearAndLogin, but the caller may not prompt the identity.
    | ClearAndNeedsLogin

/// The auth decisions.
module Auth =
    /// docs/engine.md §7.2: no token or an expired (or unknown-expiry) token → login; inside the
    /// skew → refresh first; otherwise use it. `mayPrompt` = false turns logins (and the optional
    /// refresh, which also needs a signature) into "needs login" / "use token" (§12.24).
    let decide
        (state: IdentityState)
        (now: DateTimeOffset)
        (refreshSkew: TimeSpan)
        (mayPrompt: bool)
        : AuthDecision =
        let login () =
            if mayPrompt then
                AuthDecision.Login state.TokenExpiry
            else
                AuthDecision.NeedsLogin state.TokenExpiry

        match state.AccessToken, state.TokenExpiry with
        | None, _
        | Some "", _ -> login ()
        | Some _, None -> login ()
        | Some _, Some expiry when expiry < now -> login ()
        | Some token, Some expiry when expiry < now + refreshSkew && mayPrompt ->
            AuthDecision.RefreshThenUse(token, expiry)
        | Some token, Some _ -> AuthDecision.UseToken token

    /// docs/engine.md §7.3: after a 401 with `failedToken`, either someone already replaced it,
    /// or clear and log in.
    let onUnauthorized
        (state: IdentityState)
        (failedToken: string)
        (mayPrompt: bool)
        : UnauthorizedDecision =
        match state.AccessToken with
        | Some current when current <> "" && current <> failedToken ->
            UnauthorizedDecision.RetryWith current
        | _ when mayPrompt -> UnauthorizedDecision.ClearAndLogin
        | _ -> UnauthorizedDecision.ClearAndNeedsLogin

    /// The identity state after a 401 cleared the token.
    let clearToken (state: IdentityState) (now: DateTimeOffset) : IdentityState =
        { state with
            AccessToken = None
            TokenExpiry = None
            UpdatedAt = now
        }

    /// The identity state after a successful login. Unlike the reference engine, a login response
    /// without a default namespace never erases a known one (docs/engine.md §12.6).
    let afterLogin
        (state: IdentityState)
        (token: string)
        (expiry: DateTimeOffset)
        (defaultNamespace: BitBoxSync.Protocol.NamespaceId option)
        (now: DateTimeOffset)
        =
        { state with
            AccessToken = Some token
            TokenExpiry = Some expiry
            DefaultNamespaceId =
                (match defaultNamespace with
                 | Some ns -> Some ns
                 | None -> state.DefaultNamespaceId)
            UpdatedAt = now
        }
