/// Benchmarks of the pure core's reconciliation over large collections: scope building + hashing
/// and item-map planning at 1 000 and 10 000 items (the namespace limit), and snapshot diffing at
/// 10 000 and 100 000 keys.
module BitBoxSync.Benchmarks.ReconciliationBenchmarks

open System
open BenchmarkDotNet.Attributes
open BitBoxSync.Protocol
open BitBoxSync.Benchmarks.Common
open BitBoxSync.Core

/// Scope and item-map work for one collection with N keys, a tenth of them newer on the server.
[<MemoryDiagnoser>]
type ReconciliationBenchmarks() =
    let keys = NamespaceKeys.derive (Bin.ofBytes<DekKind>(Array.init 32 byte) |> orFail)
    let ns = Bin.ofBytes<NamespaceIdKind>(Array.init 16 byte) |> orFail
    let keyId = Bin.ofBytes<KeyIdKind>(Array.zeroCreate 32) |> orFail
    let t0 = DateTimeOffset.FromUnixTimeSeconds 100L
    let mutable names: string list = []
    let mutable scope = Unchecked.defaultof<ActiveScope>
    let mutable rows: Map<string, ItemState> = Map.empty
    let mutable ids: Map<string, ItemId> = Map.empty
    let mutable serverMap: Map<ItemId, uint64> = Map.empty
    let mutable nsRow = Unchecked.defaultof<NamespaceState>

    /// Keys in the collection.
    [<Params(1000, 10000)>]
    member val Items = 0 with get, set

    [<GlobalSetup>]
    member this.Setup() =
        names <- [ for i in 1 .. this.Items -> sprintf "account:%06d:label" i ]
        ids <- names |> List.map (fun k -> k, LogicalKey.itemId keys "labels" k) |> Map.ofList
        scope <- Scope.build keys [ { Collection = "labels"; Keys = names } ]

        rows <-
            names
            |> List.map (fun k ->
                k,
                { ItemState.template keyId ns "labels" k ids[k] t0 with
                    Version = 1UL
                    BaseVersion = 1UL
                    BaseValue = Some(Text.Encoding.UTF8.GetBytes("value of " + k))
                })
            |> Map.ofList

        serverMap <-
            names
            |> List.mapi (fun i k -> ids[k], (if i % 10 = 0 then 2UL else 1UL))
            |> Map.ofList

        nsRow <-
            {
                KeyId = keyId
                NamespaceId = ns
                Kind = Some NamespaceKind.Shared
                Head = 5UL
                ActiveScopeHash = ""
                Dek = None
                UpdatedAt = t0
            }

    /// Building the active scope (one HMAC per key) and hashing it.
    [<Benchmark>]
    member _.ScopeBuildAndHash() =
        Scope.hashOf (Scope.build keys [ { Collection = "labels"; Keys = names } ])

    /// Item-map planning: rollback checks over every cached item and the download list.
    [<Benchmark>]
    member _.ItemMapPlan() =
        ItemMap.plan
            {
                Row = nsRow
                ExpectedHead = 6UL
                MapHead = 6UL
                MapItems = serverMap
                Cached = rows |> Map.values |> List.ofSeq
                Scope = scope
                Now = t0
            }

/// Snapshot diffing at 10 000 and 100 000 keys with 0 % and 1 % changed (rows in a hash map, as
/// the shell keeps them). Target: 100 000 keys, 1 % changed, under 20 ms, allocation proportional
/// to the changed keys.
[<MemoryDiagnoser>]
type SnapshotDiffBenchmarks() =
    let keys = NamespaceKeys.derive (Bin.ofBytes<DekKind>(Array.init 32 byte) |> orFail)
    let ns = Bin.ofBytes<NamespaceIdKind>(Array.init 16 byte) |> orFail
    let keyId = Bin.ofBytes<KeyIdKind>(Array.zeroCreate 32) |> orFail
    let t0 = DateTimeOffset.FromUnixTimeSeconds 100L
    let mutable input = Unchecked.defaultof<SnapshotInput>

    /// Keys in the collection.
    [<Params(10000, 100000)>]
    member val Items = 0 with get, set

    /// Percentage of values changed since the last sync.
    [<Params(0, 1)>]
    member val ChangedPercent = 0 with get, set

    [<GlobalSetup>]
    member this.Setup() =
        let names = [ for i in 1 .. this.Items -> sprintf "account:%06d:label" i ]
        let scope = Scope.build keys [ { Collection = "labels"; Keys = names } ]
        let rows = Collections.Generic.Dictionary<string, ItemState>(StringComparer.Ordinal)

        for k in names do
            rows[k] <-
                { ItemState.template keyId ns "labels" k (LogicalKey.itemId keys "labels" k) t0 with
                    Version = 1UL
                    BaseVersion = 1UL
                    BaseValue = Some(Text.Encoding.UTF8.GetBytes("value of " + k))
                }

        let every =
            if this.ChangedPercent = 0 then
                Int32.MaxValue
            else
                100 / this.ChangedPercent

        input <-
            {
                KeyId = keyId
                NamespaceId = ns
                Collection = "labels"
                Scope = scope
                Rows = rows
                Snapshot =
                    names
                    |> List.mapi (fun i k ->
                        k,
                        Text.Encoding.UTF8.GetBytes(
                            (if i % every = 0 then "edited " else "value of ") + k
                        ))
                ItemIdOf = LogicalKey.itemId keys "labels"
                Now = t0
            }

    /// Snapshot reconciliation of the whole collection.
    [<Benchmark>]
    member _.SnapshotReconcile() = Snapshot.reconcile input
