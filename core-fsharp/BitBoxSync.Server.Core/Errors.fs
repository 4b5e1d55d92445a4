/// The server's refusals: an HTTP status and a message for the `{"error": …}` body.
/// Implements the status mapping of docs/protocol.md §6.6–§6.7 (our choices, documented per case).
namespace BitBoxSync.Server.Core

open BitBoxSync.Protocol

/// A refused request. Every refusal leaves the server state unchanged.
type ApiError = { Status: int; Message: string }

/// Constructors, one per row of the mapping in docs/protocol.md §6.7.
module ApiError =
    /// 400: malformed input (encoding, length, enum, JSON).
    let badRequest message = { Status = 400; Message = message }

    /// 400 from a field error ("namespaceId must be lowercase hex").
    let ofField (e: FieldError) = badRequest e.Message

    /// 401: missing, unknown, expired or revoked bearer token — and only that.
    let unauthorized message = { Status = 401; Message = message }

    /// 403: bad challenge, bad signature, key mismatch, not a member, not allowed.
    let forbidden message = { Status = 403; Message = message }

    /// 404: unknown namespace, invite, join request, item or wrapped DEK.
    let notFound message = { Status = 404; Message = message }

    /// 409: ID already taken; item-count, byte and membership quotas.
    let conflict message = { Status = 409; Message = message }

    /// 410: invite or join request expired or revoked.
    let gone message = { Status = 410; Message = message }

    /// 412: any item version precondition failure (never 409: the client merges only on 412).
    let preconditionFailed message = { Status = 412; Message = message }

    /// 413: an item ciphertext over 64 KiB.
    let tooLarge message = { Status = 413; Message = message }
