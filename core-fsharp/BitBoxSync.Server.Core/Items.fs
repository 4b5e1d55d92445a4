/// Item rules: compare-and-set PUT with the namespace head moving by exactly one per accepted
/// write, GET, the item map, the per-namespace quotas, and the batch-items extension. Implements
/// docs/protocol.md §7.20–§7.22, §10.4 and §15.
namespace BitBoxSync.Server.Core

open System
open BitBoxSync.Protocol

/// A stored item: the sealed value of its current version. Storage format — change only with a
/// schema migration.
type StoredItem =
    {
        NamespaceId: NamespaceId
        ItemId: ItemId
        Version: uint64
        Sealed: SealedItem
        UpdatedAt: DateTimeOffset
    }

/// What a namespace holds, as the PUT rule needs it.
type NamespaceUsage =
    {
        NamespaceId: NamespaceId
        Head: uint64
        ItemCount: int
        /// Nonce + AAD + ciphertext bytes of every current item (docs/protocol.md §10.4).
        StoredBytes: int64
    }

/// An accepted PUT: the item row to write and the namespace's new head, in one transaction.
type PutAccepted =
    { Item: StoredItem; NewHead: uint64; Usage: NamespaceUsage }

/// A batch PUT after the rule: each item's outcome in request order, and the namespace's usage
/// after the accepted ones (its head moved by one per accepted item).
type BatchPutOutcome =
    {
        Results: (ItemId * Result<PutAccepted, ApiError>) list
        Usage: NamespaceUsage
    }

/// What a batch GET answers: the found items within the budget (request order), the IDs with no
/// item, and the IDs past the budget.
type BatchGetPlan =
    {
        Items: StoredItem list
        Missing: ItemId list
        Omitted: ItemId list
    }

/// The item rules.
module Items =
    /// Bytes an item counts towards `MaxNamespaceStoredBytes`.
    let storedBytes (s: SealedItem) : int64 =
        int64 (s.Nonce.Length + s.Aad.Length + s.Ciphertext.Length)

    /// `PUT /v1/kv/{ns}/{item}` for a member: no If-Match creates (the item must not exist;
    /// `"0"` means the same); If-Match N updates only version N. Any other case is 412. The AAD
    /// must be the one for (namespace, item, target version), else 400 (readers would refuse it).
    /// Creating counts against 10 000 items and 64 MiB per namespace (409).
    let put
        (usage: NamespaceUsage)
        (itemId: ItemId)
        (current: StoredItem option)
        (ifMatch: IfMatch)
        (sealedItem: SealedItem)
        (now: DateTimeOffset)
        : Result<PutAccepted, ApiError> =
        let expected =
            match ifMatch with
            | IfMatch.Absent
            | IfMatch.Version 0UL -> None
            | IfMatch.Version n -> Some n

        let target =
            match expected, current with
            | None, None -> Ok 1UL
            | Some n, Some item when item.Version = n -> Ok(n + 1UL)
            | None, Some item ->
                Error(
                    ApiError.preconditionFailed (
                        sprintf "item already exists at version %d" item.Version
                    )
                )
            | Some n, Some item ->
                Error(
                    ApiError.preconditionFailed (
                        sprintf "item is at version %d, not %d" item.Version n
                    )
                )
            | Some n, None ->
                Error(ApiError.preconditionFailed (sprintf "item does not exist (If-Match %d)" n))

        target
        |> Result.bind (fun version ->
            let expectedAad = Aad.build usage.NamespaceId itemId version

            if sealedItem.Aad <> expectedAad then
                Error(
                    ApiError.badRequest (
                        sprintf "aad must bind namespace, item and target version %d" version
                    )
                )
            else
                let oldBytes =
                    current |> Option.map (fun i -> storedBytes i.Sealed) |> Option.defaultValue 0L

                let count = usage.ItemCount + (if current.IsNone then 1 else 0)
                let bytes = usage.StoredBytes - oldBytes + storedBytes sealedItem

                if count > Limits.MaxItemsPerNamespace then
                    Error(
                        ApiError.conflict (
                            sprintf
                                "namespace is at its limit of %d items"
                                Limits.MaxItemsPerNamespace
                        )
                    )
                elif bytes > Limits.MaxNamespaceStoredBytes then
                    Error(
                        ApiError.conflict (
                            sprintf
                                "namespace would exceed %d stored bytes"
                                Limits.MaxNamespaceStoredBytes
                        )
                    )
                else
                    let head = usage.Head + 1UL

                    Ok
                        {
                            Item =
                                {
                                    NamespaceId = usage.NamespaceId
                                    ItemId = itemId
                                    Version = version
                                    Sealed = sealedItem
                                    UpdatedAt = now
                                }
                            NewHead = head
                            Usage =
                                { usage with
                                    Head = head
                                    ItemCount = count
                                    StoredBytes = bytes
                                }
                        })

    /// `GET /v1/kv/{ns}/{item}` answer.
    let getResponse (item: StoredItem) : Wire.GetItemResponse =
        {
            NamespaceId = item.NamespaceId.Wire
            ItemId = item.ItemId.Wire
            Version = item.Version
            Nonce = item.Sealed.Nonce.Wire
            Aad = item.Sealed.Aad.Wire
            Ciphertext = item.Sealed.Ciphertext.Wire
        }

    /// `PUT` answer.
    let putResponse (accepted: PutAccepted) : Wire.PutItemResponse =
        {
            NamespaceId = accepted.Item.NamespaceId.Wire
            ItemId = accepted.Item.ItemId.Wire
            Version = accepted.Item.Version
        }

    /// `GET /v1/namespaces/{ns}/items` answer: the head and every item's version, from one snapshot.
    let mapResponse
        (ns: NamespaceId)
        (head: uint64)
        (versions: (ItemId * uint64) seq)
        : Wire.GetNamespaceItemsResponse =
        {
            NamespaceId = ns.Wire
            NamespaceHead = head
            Items =
                let map =
                    Collections.Generic.Dictionary<string, Wire.ItemVersion>(StringComparer.Ordinal)

                for id, v in versions do
                    map[id.Wire] <- { Version = v }

                map
        }

    /// Bytes a base64 field decodes to (before validation), for the 413 answer.
    let decodedLength (base64: string) : int64 =
        if isNull base64 then
            0L
        else
            int64 (base64.Length / 4) * 3L
            - (if base64.EndsWith "==" then 2L
               elif base64.EndsWith "=" then 1L
               else 0L)

    /// A PUT body's sealed item: 413 for a ciphertext over 64 KiB, 400 for a malformed field.
    let sealedOf (body: Wire.PutItemRequest) : Result<SealedItem, ApiError> =
        if decodedLength body.Ciphertext > int64 Limits.MaxItemCiphertextSize then
            Error(ApiError.tooLarge (sprintf "ciphertext exceeds %d bytes" Limits.MaxItemCiphertextSize))
        else
            Requests.putItem body |> Result.mapError ApiError.ofField

    /// Batch PUT (extension, docs/protocol.md §15): every item is checked by `put` in request
    /// order against the namespace as the earlier accepted items left it; a refused item changes
    /// nothing and does not stop the others. `current` is each item's stored row before the batch
    /// (the IDs are distinct, so no item sees another's write). Equal, item by item, to the same
    /// single PUTs made one after the other.
    let putBatch
        (usage: NamespaceUsage)
        (entries: (ItemId * StoredItem option * IfMatch * Result<SealedItem, ApiError>) list)
        (now: DateTimeOffset)
        : BatchPutOutcome =
        let results, final =
            entries
            |> List.mapFold
                (fun (usage: NamespaceUsage) (itemId, current, ifMatch, sealedItem) ->
                    match sealedItem |> Result.bind (fun s -> put usage itemId current ifMatch s now) with
                    | Ok accepted -> (itemId, Ok accepted), accepted.Usage
                    | Error e -> (itemId, Error e), usage)
                usage

        { Results = results; Usage = final }

    /// Batch PUT answer.
    let putBatchResponse (outcome: BatchPutOutcome) : Wire.BatchPutItemsResponse =
        {
            NamespaceId = outcome.Usage.NamespaceId.Wire
            NamespaceHead = outcome.Usage.Head
            Results =
                outcome.Results
                |> List.map (fun (id, r) ->
                    match r with
                    | Ok accepted ->
                        {
                            Wire.BatchPutResult.ItemId = id.Wire
                            Wire.BatchPutResult.Status = 200
                            Wire.BatchPutResult.Version = accepted.Item.Version
                            Wire.BatchPutResult.Error = null
                        }
                    | Error e ->
                        {
                            Wire.BatchPutResult.ItemId = id.Wire
                            Wire.BatchPutResult.Status = e.Status
                            Wire.BatchPutResult.Version = 0UL
                            Wire.BatchPutResult.Error = e.Message
                        })
                |> List.toArray
        }

    /// Batch GET (extension): in request order, found items are answered while their ciphertexts
    /// fit in `budget` bytes — the first found item always, so every request progresses —; from
    /// the first one that does not fit, every later ID is omitted (the client asks again); IDs
    /// without an item before that point are missing.
    let getBatch (requested: ItemId list) (found: ItemId -> StoredItem option) (budget: int64) : BatchGetPlan =
        let rec go spent items missing rest =
            match rest with
            | [] ->
                {
                    Items = List.rev items
                    Missing = List.rev missing
                    Omitted = []
                }
            | id :: later ->
                match found id with
                | None -> go spent items (id :: missing) later
                | Some item ->
                    let size = int64 item.Sealed.Ciphertext.Length

                    if List.isEmpty items || spent + size <= budget then
                        go (spent + size) (item :: items) missing later
                    else
                        {
                            Items = List.rev items
                            Missing = List.rev missing
                            Omitted = rest
                        }

        go 0L [] [] requested

    /// Batch GET answer.
    let getBatchResponse (ns: NamespaceId) (plan: BatchGetPlan) : Wire.BatchGetItemsResponse =
        {
            NamespaceId = ns.Wire
            Items = plan.Items |> List.map getResponse |> List.toArray
            Missing = plan.Missing |> List.map (fun i -> i.Wire) |> List.toArray
            Omitted = plan.Omitted |> List.map (fun i -> i.Wire) |> List.toArray
        }
