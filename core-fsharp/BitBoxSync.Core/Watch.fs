/// Namespace watch (advisory long poll) decisions: what a watch answer means and how the watch
/// loop backs off. Implements docs/engine.md §6.3.
namespace BitBoxSync.Core

open System

/// What one watch round's answer means.
[<RequireQualifiedAccess>]
type WatchOutcome =
    /// The server's wait expired: reconnect after 0–5 s of jitter.
    | TimedOut
    /// Reported heads are already reflected locally (e.g. this client's own upload): reconnect now.
    | AlreadyObserved
    /// Something is newer: ask Run for a pass and wait for it before the next round.
    | NeedsSync
    /// The answer is an error (empty list without timing out, or a rollback).
    | Failed of SyncError

/// What the watch loop does after a failed round.
[<RequireQualifiedAccess>]
type WatchFailure =
    /// 404, 405 or 501: watching is unsupported; stop for the rest of this run (polling goes on).
    | Unsupported
    /// Anything else: emit `namespace-watch-failed`, sleep the failure backoff, retry.
    | Retry of delay: TimeSpan

/// The watch decisions.
module Watch =
    /// Interprets a watch answer against the cached namespaces.
    let interpret
        (cached: NamespaceState list)
        (reported: ListedNamespace list)
        (timedOut: bool)
        : WatchOutcome =
        match reported, timedOut with
        | [], true -> WatchOutcome.TimedOut
        | [], false ->
            WatchOutcome.Failed(
                SyncError.InvalidResponse "watch reported no changes without timing out"
            )
        | _ ->
            match Namespaces.needsSync cached reported with
            | Error e -> WatchOutcome.Failed e
            | Ok true -> WatchOutcome.NeedsSync
            | Ok false -> WatchOutcome.AlreadyObserved

    /// After the `failures`-th consecutive failed round: 404/405/501 from the watch itself switch
    /// watching off; a transient failure (no answer, 5xx, 408, 429) reconnects on the short
    /// full-jitter schedule of `Schedule.record` (not before Retry-After); any other failure keeps
    /// the long backoff.
    let onFailure
        (settings: PollSettings)
        (failures: int)
        (failure: FailureKind)
        (status: int option)
        (jitterSample: float)
        : WatchFailure =
        match status with
        | Some(404 | 405 | 501) -> WatchFailure.Unsupported
        | _ ->
            let previous =
                { Schedule.initial settings with
                    Failures = max 0 (failures - 1)
                }

            let next =
                Schedule.record
                    settings
                    false
                    previous
                    {
                        Failure = Some failure
                        Activity = false
                        Requested = false
                    }

            WatchFailure.Retry(Schedule.nextWait next jitterSample)
