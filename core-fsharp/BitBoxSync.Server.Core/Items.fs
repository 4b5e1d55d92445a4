/// Item rules: compare-and-set PUT with the namespace head moving by exactly one per accepted
/// write, GET, the item map, and the per-namespace quotas. Implements docs/protocol.md
/// §7.20–§7.22 and §10.4.
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
