/// How the engine uses the batch-items extension (docs/protocol.md §15, docs/engine.md §4.10):
/// whether a server's offer is usable, and how uploads and downloads are cut into batches. Without
/// a usable offer the engine sends single-item requests, as the protocol's reference client does.
namespace BitBoxSync.Core

open BitBoxSync.Protocol

/// The limits the engine batches within (the server's offer, clamped to ours).
type BatchLimits =
    {
        /// Most items per batch request.
        MaxItems: int
        /// Largest batch PUT body in bytes.
        MaxRequestBytes: int
    }

module Batching =
    /// The version of the extension this engine speaks.
    [<Literal>]
    let Version = 1

    /// A body this large holds any single item (a 64 KiB ciphertext in base64 and its fields):
    /// an offer below it could not take every item, so it is not used.
    [<Literal>]
    let MinRequestBytes = 131072

    /// The largest batch PUT body the engine sends, whatever the server offers: 1 MiB goes through a
    /// 112 kbit/s uplink within the client's 75 s request timeout (256 items of a few KiB fit; items
    /// near 64 KiB go about 11 per batch).
    [<Literal>]
    let MaxRequestBytes = 1048576

    /// The server's offer, if this engine can use it: version 1, at least 2 items per batch and
    /// room for any single item; its limits clamped to the engine's own.
    let ofCapability (offer: Wire.BatchItemsCapability) : BatchLimits option =
        if isNull (box offer)
           || offer.Version <> Version
           || offer.MaxItems < 2
           || offer.MaxRequestBytes < MinRequestBytes then
            None
        else
            Some
                {
                    MaxItems = min offer.MaxItems Limits.MaxBatchItems
                    MaxRequestBytes = min offer.MaxRequestBytes MaxRequestBytes
                }

    /// `{"items":[` … `]}` around the entries.
    [<Literal>]
    let PutEnvelopeBytes = 12

    /// An upper bound of the bytes one item adds to a batch PUT body: its JSON object (names,
    /// quotes, a 64-character item ID, a 20-digit `ifMatch`), its base64 fields and a comma.
    let putEntryBytes (nonce: int) (aad: int) (ciphertext: int) : int = 168 + nonce + aad + ciphertext

    /// Cuts items (given each one's `putEntryBytes`) into consecutive batches, greedily: order
    /// kept, every batch non-empty with at most `MaxItems` items and a body within
    /// `MaxRequestBytes`, a new batch started only when the next item would not fit. Returns the
    /// batch lengths.
    let cut (limits: BatchLimits) (entryBytes: int list) : int list =
        let rec go batches count bytes rest =
            match rest with
            | [] -> List.rev (if count > 0 then count :: batches else batches)
            | size :: later ->
                if count > 0
                   && (count = limits.MaxItems
                       || bytes + size > limits.MaxRequestBytes) then
                    go (count :: batches) 1 (PutEnvelopeBytes + size) later
                else
                    go batches (count + 1) (bytes + size) later

        go [] 0 PutEnvelopeBytes entryBytes
