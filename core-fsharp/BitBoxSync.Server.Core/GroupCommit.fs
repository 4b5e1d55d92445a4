/// Group commit: concurrent state-changing requests share one database transaction and one
/// durable commit. Each request still runs in turn, against the state its predecessors in the group
/// left, inside a savepoint of its own; this module decides what happens to the group once every
/// member has run. docs/server.md "Group commit".
namespace BitBoxSync.Server.Core

/// How one member of a group ended.
[<RequireQualifiedAccess>]
type MemberOutcome =
    /// Its work completed; its writes are in the transaction.
    | Done
    /// It was refused or failed on its own (a 4xx, a cancelled request): rolled back to its
    /// savepoint, the rest of the group unaffected.
    | Refused
    /// The database aborted the whole transaction (a lost race with another process: deadlock,
    /// serialization failure, busy): no member's writes survive.
    | LostRace
    /// Not run: an earlier member lost a race and the transaction was abandoned.
    | NotRun

/// What the store does with a group.
type GroupDecision =
    {
        /// Commit the transaction (one durable write for the whole group).
        Commit: bool
        /// Members answered with their result once the commit is durable (indices into the group).
        Acknowledge: int list
        /// Members answered with their own failure once the commit is durable.
        Fail: int list
        /// Members run again in a fresh transaction (nothing answered yet).
        Retry: int list
    }

/// The group-commit rules.
module GroupCommit =
    /// The largest group: enough to share one fsync among many writers, small enough that one
    /// group's latency stays a few milliseconds.
    [<Literal>]
    let MaxGroup = 64

    /// How many queued requests the next group takes (at least one when any is queued).
    let take (queued: int) : int = max 0 (min queued MaxGroup)

    /// Decides a group from its members' outcomes, in member order. Without a lost race the group
    /// commits: members that completed are acknowledged, members refused on their own get their
    /// failure. After a lost race nothing is answered and every member runs again, refused ones
    /// included, because a refusal may have rested on a predecessor's writes that were just lost.
    /// Answers are only ever given for a committed transaction.
    let decide (outcomes: MemberOutcome list) : GroupDecision =
        let indexed = List.indexed outcomes

        if outcomes |> List.exists (fun o -> o = MemberOutcome.LostRace) then
            {
                Commit = false
                Acknowledge = []
                Fail = []
                Retry = indexed |> List.map fst
            }
        else
            let where outcome =
                indexed |> List.filter (fun (_, o) -> o = outcome) |> List.map fst

            {
                Commit = true
                Acknowledge = where MemberOutcome.Done
                Fail = where MemberOutcome.Refused @ where MemberOutcome.NotRun
                Retry = []
            }
