/// The Run-loop schedule: capped doubling, failure backoff, idle polling and jitter, with the
/// random sample passed in. Implements docs/engine.md §6.1 and the result recording of §6.2, with
/// one departure from the reference design (docs/concepts.md, "Recovering from outages"): a
/// transient failure (no answer, 5xx, 408, 429) retries on a short exponential backoff with full
/// jitter, honouring Retry-After; only failures a retry will not change keep the long backoff.
namespace BitBoxSync.Core

open System

/// Poll settings after validation (docs/engine.md §2.2 defaults applied).
type PollSettings =
    {
        /// Base fallback poll period (default 5 min).
        Base: TimeSpan
        /// Cap for failure and idle backoff (default max(60 min, Base)).
        Max: TimeSpan
    }

/// How a pass or a watch round failed, as the schedule sees it.
[<RequireQualifiedAccess>]
type FailureKind =
    /// No answer (connection refused or reset, timeout), or 5xx, 408 or 429: the server is
    /// restarting, overloaded or rate limiting; retry soon (not before `retryAfter`, if given).
    | Transient of retryAfter: TimeSpan option
    /// A failure retrying soon will not change (a rollback, a refusal, an invalid answer).
    | Policy

/// The Run loop's scheduling state.
type RunSchedule =
    {
        /// The interval the next wait is drawn from.
        Interval: TimeSpan
        /// Consecutive failed passes.
        Failures: int
        IdlePolls: int
        /// How the wait is drawn: ±10 % around `Interval` (polling and the long backoff), or
        /// uniformly over [`MinWait`, `Interval`] (full jitter, after a transient failure).
        FullJitter: bool
        /// The wait the server asked for (Retry-After); never undercut.
        MinWait: TimeSpan
    }

/// How a pass ended, as the schedule sees it.
type PassResult =
    {
        /// None when the pass succeeded.
        Failure: FailureKind option
        /// An activity event happened during the pass.
        Activity: bool
        /// The pass was explicitly requested (ScheduleSync, SetIdlePolling, watch).
        Requested: bool
    }

/// Timing helpers and the schedule transitions.
module Schedule =
    /// Applies the defaults of docs/engine.md §2.2: base ≤ 0 → 5 min; max below base →
    /// max(60 min, base).
    let settings (pollInterval: TimeSpan) (maxPollInterval: TimeSpan) : PollSettings =
        let b =
            if pollInterval <= TimeSpan.Zero then
                TimeSpan.FromMinutes 5.0
            else
                pollInterval

        let m =
            if maxPollInterval < b then
                max (TimeSpan.FromMinutes 60.0) b
            else
                maxPollInterval

        { Base = b; Max = m }

    /// Capped doubling: start at base, double n times, return max as soon as the value reaches
    /// max or exceeds max/2; cap at max. base ≤ 0 → 0.
    let cappedDoubling (baseInterval: TimeSpan) (maxInterval: TimeSpan) (n: int) : TimeSpan =
        if baseInterval <= TimeSpan.Zero then
            TimeSpan.Zero
        else
            let m = max maxInterval baseInterval

            let rec go (current: TimeSpan) i =
                if i >= n then min current m
                elif current >= m || current.Ticks > m.Ticks / 2L then m
                else go (TimeSpan(current.Ticks * 2L)) (i + 1)

            go baseInterval 0

    /// Backoff after f ≥ 1 consecutive failures (the first failure already doubles).
    let failureBackoff (s: PollSettings) (failures: int) = cappedDoubling s.Base s.Max failures

    /// Interval after q quiet polls in idle mode: doubles every three quiet polls.
    let idleInterval (s: PollSettings) (quietPolls: int) =
        cappedDoubling s.Base s.Max (quietPolls / 3)

    /// ±10 % jitter: interval − j + U with j = interval/10 and U uniform over 0..2j, drawn from
    /// `sample` ∈ [0, 1) (the shell passes a cryptographic random sample).
    let jitter (interval: TimeSpan) (sample: float) : TimeSpan =
        if interval <= TimeSpan.Zero then
            TimeSpan.Zero
        else
            let j = interval.Ticks / 10L

            if j <= 0L then
                interval
            else
                let s =
                    if Double.IsNaN sample || sample < 0.0 then 0.0
                    elif sample >= 1.0 then 0.0
                    else sample

                let u = min (2L * j) (int64 (s * float (2L * j + 1L)))
                TimeSpan(interval.Ticks - j + u)

    /// Reconnect delay after a watch timed out: uniform over 0..5 s from `sample` ∈ [0, 1).
    let watchReconnectDelay (sample: float) : TimeSpan =
        let maxTicks =
            TimeSpan
                .FromSeconds(float BitBoxSync.Protocol.Limits.WatchReconnectJitterMaxSeconds)
                .Ticks

        let s =
            if Double.IsNaN sample || sample < 0.0 || sample >= 1.0 then
                0.5
            else
                sample

        TimeSpan(min maxTicks (int64 (s * float (maxTicks + 1L))))

    /// The first retry after a transient failure waits at most this long (then 2 s, 4 s, …).
    let TransientRetryBase = TimeSpan.FromSeconds 1.0

    /// Classifies a failure: `noAnswer` when no HTTP answer arrived, else its status (None for a
    /// failure that is not an HTTP answer, such as a rollback or an invalid answer).
    let classify (noAnswer: bool) (status: int option) (retryAfter: TimeSpan option) : FailureKind =
        match noAnswer, status with
        | true, _ -> FailureKind.Transient retryAfter
        | _, Some s when s >= 500 || s = 408 || s = 429 -> FailureKind.Transient retryAfter
        | _ -> FailureKind.Policy

    /// Retries in the fast lane: about the first minute of an outage (a restart, a deploy).
    let FastLaneRetries = 15

    /// The ceiling of a retry in the fast lane.
    let FastLaneCap = TimeSpan.FromSeconds 4.0

    /// The ceiling of the `n`-th consecutive transient retry (n ≥ 1), never above the poll
    /// interval (`Base`): 1, 2, 4 s, then 4 s up to the `FastLaneRetries`-th retry (about a
    /// minute at 2 s on average: a restarting server is seen within seconds), then doubling
    /// again from 4 s (a long outage slows the retries down to the poll interval).
    let transientCeiling (s: PollSettings) (n: int) : TimeSpan =
        let n = max 1 n
        let start = min TransientRetryBase s.Base

        if n <= FastLaneRetries then
            min (cappedDoubling start s.Base (n - 1)) (max start (min FastLaneCap s.Base))
        else
            cappedDoubling (max start (min FastLaneCap s.Base)) s.Base (n - FastLaneRetries)

    /// A Retry-After, bounded by the backoff cap (a server cannot park clients for longer).
    let private boundedRetryAfter (s: PollSettings) (retryAfter: TimeSpan option) =
        match retryAfter with
        | Some r when r > TimeSpan.Zero -> min r s.Max
        | _ -> TimeSpan.Zero

    /// Full jitter over [floor, ceiling] from `sample` ∈ [0, 1).
    let fullJitter (floor: TimeSpan) (ceiling: TimeSpan) (sample: float) : TimeSpan =
        if ceiling <= floor then
            floor
        else
            let x =
                if Double.IsNaN sample || sample < 0.0 || sample >= 1.0 then 0.5 else sample

            let span = ceiling.Ticks - floor.Ticks
            TimeSpan(floor.Ticks + min span (int64 (x * float (span + 1L))))

    /// The schedule when Run starts.
    let initial (s: PollSettings) : RunSchedule =
        {
            Interval = s.Base
            Failures = 0
            IdlePolls = 0
            FullJitter = false
            MinWait = TimeSpan.Zero
        }

    /// The wait before the next pass, from `sample` ∈ [0, 1).
    let nextWait (state: RunSchedule) (sample: float) : TimeSpan =
        if state.FullJitter then
            fullJitter state.MinWait state.Interval sample
        else
            jitter state.Interval sample

    /// docs/engine.md §6.2 result recording: a failure backs off; a success with activity, an
    /// explicit request, or foreground mode resets to the base; an idle quiet success slows down.
    let record
        (s: PollSettings)
        (idleMode: bool)
        (state: RunSchedule)
        (result: PassResult)
        : RunSchedule =
        match result.Failure with
        | Some(FailureKind.Transient retryAfter) ->
            let f = state.Failures + 1
            let floor = boundedRetryAfter s retryAfter

            {
                Interval = max floor (transientCeiling s f)
                Failures = f
                IdlePolls = 0
                FullJitter = true
                MinWait = floor
            }
        | Some FailureKind.Policy ->
            let f = state.Failures + 1

            { initial s with
                Interval = failureBackoff s f
                Failures = f
            }
        | None when result.Activity || result.Requested || not idleMode -> initial s
        | None ->
            let q = state.IdlePolls + 1

            { initial s with
                Interval = idleInterval s q
                IdlePolls = q
            }

    /// A successful login drops accumulated backoff (no pass by itself).
    let loginSucceeded (s: PollSettings) (_: RunSchedule) : RunSchedule = initial s
