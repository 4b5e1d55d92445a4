/// The Run-loop schedule: capped doubling, failure backoff, idle polling and jitter, with the
/// random sample passed in. Implements docs/engine.md §6.1 and the result recording of §6.2.
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

/// The Run loop's scheduling state.
type RunSchedule = { Interval: TimeSpan; Failures: int; IdlePolls: int }

/// How a pass ended, as the schedule sees it.
type PassResult =
    {
        Failed: bool
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

    /// The schedule when Run starts.
    let initial (s: PollSettings) : RunSchedule =
        { Interval = s.Base; Failures = 0; IdlePolls = 0 }

    /// docs/engine.md §6.2 result recording: a failure backs off; a success with activity, an
    /// explicit request, or foreground mode resets to the base; an idle quiet success slows down.
    let record
        (s: PollSettings)
        (idleMode: bool)
        (state: RunSchedule)
        (result: PassResult)
        : RunSchedule =
        if result.Failed then
            let f = state.Failures + 1

            {
                Interval = failureBackoff s f
                Failures = f
                IdlePolls = 0
            }
        elif result.Activity || result.Requested || not idleMode then
            initial s
        else
            let q = state.IdlePolls + 1
            { Interval = idleInterval s q; Failures = 0; IdlePolls = q }

    /// A successful login drops accumulated backoff (no pass by itself).
    let loginSucceeded (s: PollSettings) (_: RunSchedule) : RunSchedule = initial s
