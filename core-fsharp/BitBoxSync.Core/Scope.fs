/// The active key scope of a namespace and its bit-exact hash.
/// Implements docs/engine.md §3.4 and §4.5 (taken once per pass: §12.17).
namespace BitBoxSync.Core

open System
open BitBoxSync.Protocol

/// The keys one registered collection returned from `Keys` in this pass.
type CollectionKeys = { Collection: string; Keys: string list }

/// The active scope of one namespace: registered collection names and active item IDs, each
/// mapped to its (collection, key).
type ActiveScope =
    {
        Collections: Set<string>
        Items: Map<ItemId, string * string>
        /// Active keys per collection, for O(1) membership while diffing snapshots. Built once by
        /// `Scope.build` and never mutated afterwards.
        Keys: Map<string, Collections.Generic.HashSet<string>>
        /// The scope hash (`Scope.hash` of the collections and item IDs), computed once by `Scope.build`.
        Hash: string
    }

/// Computing and querying active scopes.
module Scope =
    let private label = Text.Encoding.ASCII.GetBytes "bitboxsync-active-scope-v1"

    /// Compares strings by their UTF-8 bytes (Go's string order), not by UTF-16 code units.
    let compareUtf8 (a: string) (b: string) : int =
        ReadOnlySpan(Text.Encoding.UTF8.GetBytes a)
            .SequenceCompareTo(ReadOnlySpan(Text.Encoding.UTF8.GetBytes b))

    /// The scope hash: "" when no collection is registered; otherwise lowercase hex of
    /// SHA-256("bitboxsync-active-scope-v1" ‖ (0x00 ‖ name)* ‖ (0x01 ‖ itemIdHex)*), names sorted by
    /// UTF-8 bytes, item IDs sorted.
    let hash (collectionNames: string seq) (activeItemIds: ItemId seq) : string =
        let names =
            collectionNames |> Seq.distinct |> Seq.sortWith compareUtf8 |> Seq.toList

        if names.IsEmpty then
            ""
        else
            use sha =
                Security.Cryptography.IncrementalHash.CreateHash
                    Security.Cryptography.HashAlgorithmName.SHA256

            sha.AppendData label

            for n in names do
                sha.AppendData [| 0uy |]
                sha.AppendData(Text.Encoding.UTF8.GetBytes n)

            for id in
                activeItemIds
                |> Seq.map (fun i -> i.Wire)
                |> Seq.distinct
                |> Seq.sortWith (fun a b -> String.CompareOrdinal(a, b)) do
                sha.AppendData [| 1uy |]
                sha.AppendData(Text.Encoding.ASCII.GetBytes id)

            Hex.ofBytes (sha.GetHashAndReset())

    /// Builds the scope from every registered collection's keys (duplicates tolerated).
    let build (keys: NamespaceKeys) (collections: CollectionKeys list) : ActiveScope =
        let names = collections |> List.map (fun c -> c.Collection) |> Set.ofList

        let items =
            collections
            |> List.collect (fun c ->
                c.Keys
                |> List.distinct
                |> List.map (fun k -> LogicalKey.itemId keys c.Collection k, (c.Collection, k)))
            |> Map.ofList

        {
            Collections = names
            Items = items
            Hash = hash names (Map.keys items)
            Keys =
                collections
                |> List.groupBy (fun c -> c.Collection)
                |> List.map (fun (name, cs) ->
                    name,
                    Collections.Generic.HashSet<string>(
                        cs |> Seq.collect (fun c -> c.Keys),
                        StringComparer.Ordinal
                    ))
                |> Map.ofList
        }

    /// The hash of a built scope.
    let hashOf (scope: ActiveScope) : string = scope.Hash

    /// Whether `key` of `collection` is in the active scope (no item ID needed).
    let isActiveKey (scope: ActiveScope) (collection: string) (key: string) : bool =
        match scope.Keys.TryFind collection with
        | Some keys -> keys.Contains key
        | None -> false

    /// An item is active iff its collection is registered and its ID is in the active set.
    let isActive (scope: ActiveScope) (collection: string) (itemId: ItemId) : bool =
        scope.Collections.Contains collection && scope.Items.ContainsKey itemId
