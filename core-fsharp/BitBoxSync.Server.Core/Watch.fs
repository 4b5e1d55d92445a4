/// The long-poll watch rule: which visible namespaces differ from the caller's known heads.
/// Implements docs/protocol.md §7.9 and §10.5.
namespace BitBoxSync.Server.Core

open BitBoxSync.Protocol

/// The watch decisions.
module Watch =
    /// Server-side wait before answering `timedOut: true` (well below the client's 75 s).
    let DefaultTimeout = System.TimeSpan.FromSeconds 45.0

    /// Visible namespaces whose head differs from `knownHeads` (missing entries count as
    /// different; entries for namespaces the caller cannot see are ignored), in ID order.
    let changed
        (visible: (NamespaceId * NamespaceKind * uint64) list)
        (knownHeads: Map<NamespaceId, uint64>)
        : Wire.NamespaceSummary[] =
        visible
        |> List.filter (fun (ns, _, head) -> knownHeads.TryFind ns <> Some head)
        |> List.sortBy (fun (ns, _, _) -> ns)
        |> List.map (fun (ns, kind, head) ->
            ({
                NamespaceId = ns.Wire
                Kind = kind.Wire
                NamespaceHead = head
            }
            : Wire.NamespaceSummary))
        |> Array.ofList

    /// The answer once the wait is over: the changes, or `timedOut` with an empty list (never an
    /// empty list without `timedOut`).
    let answer (changes: Wire.NamespaceSummary[]) : Wire.WatchNamespacesResponse =
        { Namespaces = changes; TimedOut = Array.isEmpty changes }
