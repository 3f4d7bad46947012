//! What a run's samples and the mocks' attempt logs add up to.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::{Outage, Run, Sample, Scenario, Timeline};
use crate::{Attempt, MockHandle};

/// The arrival times of one mock's calls, on the driver's clock (since the start of the run),
/// sorted.
///
/// ```
/// use std::time::Duration;
/// use tower_llm_chaos::scenario::UpstreamCalls;
///
/// let calls = UpstreamCalls::new([4, 1, 5, 9].map(Duration::from_secs));
/// assert_eq!(calls.between(Duration::from_secs(4), Duration::from_secs(9)), 2);
/// assert_eq!(calls.len(), 4);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamCalls {
    at: Vec<Duration>,
}

impl UpstreamCalls {
    /// Calls at these times, already on the driver's clock.
    pub fn new(at: impl IntoIterator<Item = Duration>) -> UpstreamCalls {
        let mut at: Vec<Duration> = at.into_iter().collect();
        at.sort_unstable();
        UpstreamCalls { at }
    }

    /// The calls of an attempt log whose mock started `mock_lead` before the driver: each
    /// [`Attempt::at`] minus `mock_lead`. Attempts from before the driver started are left out.
    pub fn from_attempts(attempts: &[Attempt], mock_lead: Duration) -> UpstreamCalls {
        UpstreamCalls::new(attempts.iter().filter_map(|a| a.at.checked_sub(mock_lead)))
    }

    /// The calls logged by `mock`, converted to the clock of `run`: the offset between the
    /// mock's start and the run's start is measured now (both clocks are `tokio::time`, so this
    /// is exact, paused or not). Attempts from before the run started are left out.
    pub fn from_mock(mock: &MockHandle, run: &Run) -> UpstreamCalls {
        let attempts = mock.attempts();
        let mock_started = Instant::now()
            .checked_sub(mock.elapsed())
            .unwrap_or(run.started);
        match run.started.checked_duration_since(mock_started) {
            Some(lead) => UpstreamCalls::from_attempts(&attempts, lead),
            None => {
                let lag = mock_started.saturating_duration_since(run.started);
                UpstreamCalls::new(attempts.iter().map(|a| a.at.saturating_add(lag)))
            }
        }
    }

    /// The arrival times, sorted.
    pub fn times(&self) -> &[Duration] {
        &self.at
    }

    /// How many calls there are.
    pub fn len(&self) -> usize {
        self.at.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// How many calls arrived in `[from, until)`.
    pub fn between(&self, from: Duration, until: Duration) -> usize {
        let first = self.at.partition_point(|&t| t < from);
        let end = self.at.partition_point(|&t| t < until);
        end.saturating_sub(first)
    }
}

/// The nearest-rank `percent` percentile of `sorted` (ascending): the smallest value such that
/// at least `percent` % of the values are at most it. `None` for an empty slice or a percent
/// outside `0..=100`.
///
/// ```
/// use std::time::Duration;
/// use tower_llm_chaos::scenario::nearest_rank;
///
/// let ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
/// assert_eq!(nearest_rank(&ms, 99.0), Some(Duration::from_millis(99)));
/// assert_eq!(nearest_rank(&ms, 50.0), Some(Duration::from_millis(50)));
/// assert_eq!(nearest_rank(&ms[..3], 50.0), Some(Duration::from_millis(2)));
/// assert_eq!(nearest_rank(&[], 50.0), None);
/// ```
pub fn nearest_rank(sorted: &[Duration], percent: f64) -> Option<Duration> {
    if sorted.is_empty() || !(0.0..=100.0).contains(&percent) {
        return None;
    }
    let n = sorted.len();
    // `percent * n` first: for whole percents the division is exact where it should be.
    let rank = (percent * n as f64 / 100.0).ceil() as usize;
    sorted.get(rank.clamp(1, n) - 1).copied()
}

/// What users lived through in one run of a [`Scenario`].
///
/// Times are on the driver's clock (since the start of the run). A request is "during the
/// fault" when it *started* in `[fault_from, fault_until)`. Ratios whose denominator is zero are
/// `NaN` (so any threshold assertion on them fails).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ScenarioReport {
    /// The scenario's name.
    pub name: String,
    /// Which providers were down during the fault.
    pub outage: Outage,
    /// The run's timeline.
    pub timeline: Timeline,
    /// Requests started.
    pub requests: usize,
    /// Real answers ([`Sample::answered`]).
    pub answered: usize,
    /// Answers served by the cache or static tier ([`Sample::served_by_tier`]).
    pub served_by_tier: usize,
    /// Everything else: error statuses, errors, broken or wrong bodies, unfinished requests.
    pub failed: usize,
    /// Requests that had not finished when the driver gave up (counted in `failed`).
    pub unfinished: usize,
    /// `answered / requests` over the requests that started while at least one provider was up:
    /// every request for [`Outage::Primary`], those started outside the fault for
    /// [`Outage::Both`].
    pub success_rate_when_up: f64,
    /// Requests started during the fault.
    pub requests_during_fault: usize,
    /// Median latency (nearest rank) of the requests started during the fault, failures
    /// included; `None` when there were none.
    pub p50_during_fault: Option<Duration>,
    /// 99th percentile latency (nearest rank) of the requests started during the fault.
    pub p99_during_fault: Option<Duration>,
    /// Requests started before the fault that ended after it started.
    pub in_flight_at_fault_start: usize,
    /// Calls that reached the primary mock during the fault.
    pub primary_calls_during_fault: usize,
    /// Calls that reached the secondary mock during the fault.
    pub secondary_calls_during_fault: usize,
    /// (primary + secondary calls during the fault) / requests started during the fault.
    pub upstream_calls_per_request: f64,
    /// Calls that reached either mock over the whole run (drain included).
    pub upstream_calls: usize,
    /// `upstream_calls / requests`.
    pub upstream_calls_per_request_run: f64,
    /// Time from `fault_until` until the primary is back: the earliest end `t ≥ fault_until` of
    /// a real answer from the primary (its `x-llm-target` starts with the scenario's primary
    /// prefix) such that at least 90 % of the real answers that ended at or after `t` came from
    /// the primary. `None` if that never happened.
    pub recovery: Option<Duration>,
    /// Time from `fault_until` to the end of the first real answer (from any target) that ended
    /// at or after it; the figure that matters when both providers were down. `None` if none did.
    pub resumed: Option<Duration>,
}

fn ratio(numerator: usize, denominator: usize) -> f64 {
    if denominator == 0 {
        f64::NAN
    } else {
        numerator as f64 / denominator as f64
    }
}

pub(super) fn compute(
    scenario: &Scenario,
    samples: &[Sample],
    primary: &UpstreamCalls,
    secondary: &UpstreamCalls,
) -> ScenarioReport {
    let timeline = scenario.timeline;
    let (from, until) = (timeline.fault_from, timeline.fault_until);
    let requests = samples.len();
    let answered = samples.iter().filter(|s| s.answered).count();
    let served_by_tier = samples.iter().filter(|s| s.served_by_tier).count();
    let unfinished = samples.iter().filter(|s| !s.finished).count();

    let counts_when_up = |s: &&Sample| match scenario.outage {
        Outage::Primary => true,
        Outage::Both => !timeline.in_fault(s.start),
    };
    let when_up = samples.iter().filter(counts_when_up).count();
    let answered_when_up = samples
        .iter()
        .filter(counts_when_up)
        .filter(|s| s.answered)
        .count();

    let mut latencies: Vec<Duration> = samples
        .iter()
        .filter(|s| timeline.in_fault(s.start))
        .map(Sample::latency)
        .collect();
    latencies.sort_unstable();

    let primary_calls_during_fault = primary.between(from, until);
    let secondary_calls_during_fault = secondary.between(from, until);
    let upstream_calls = primary.len() + secondary.len();

    ScenarioReport {
        name: scenario.name.clone(),
        outage: scenario.outage,
        timeline,
        requests,
        answered,
        served_by_tier,
        failed: requests.saturating_sub(answered + served_by_tier),
        unfinished,
        success_rate_when_up: ratio(answered_when_up, when_up),
        requests_during_fault: latencies.len(),
        p50_during_fault: nearest_rank(&latencies, 50.0),
        p99_during_fault: nearest_rank(&latencies, 99.0),
        in_flight_at_fault_start: samples
            .iter()
            .filter(|s| s.start < from && s.end > from)
            .count(),
        primary_calls_during_fault,
        secondary_calls_during_fault,
        upstream_calls_per_request: ratio(
            primary_calls_during_fault + secondary_calls_during_fault,
            latencies.len(),
        ),
        upstream_calls,
        upstream_calls_per_request_run: ratio(upstream_calls, requests),
        recovery: recovery(samples, until, &scenario.primary_prefix),
        resumed: samples
            .iter()
            .filter(|s| s.answered && s.end >= until)
            .map(|s| s.end - until)
            .min(),
    }
}

/// See [`ScenarioReport::recovery`].
fn recovery(samples: &[Sample], until: Duration, primary_prefix: &str) -> Option<Duration> {
    let mut answers: Vec<(Duration, bool)> = samples
        .iter()
        .filter(|s| s.answered && s.end >= until)
        .map(|s| (s.end, s.served_by(primary_prefix)))
        .collect();
    answers.sort_unstable();
    // by_primary_from[i]: answers from the primary among answers[i..].
    let mut by_primary_from = vec![0usize; answers.len() + 1];
    for (i, &(_, by_primary)) in answers.iter().enumerate().rev() {
        by_primary_from[i] = by_primary_from[i + 1] + usize::from(by_primary);
    }
    let mut tie_start = 0;
    for (i, &(end, by_primary)) in answers.iter().enumerate() {
        if i > 0 && answers[i - 1].0 != end {
            tie_start = i;
        }
        // "Ended at or after t" includes every answer that ended at the same time.
        let total = answers.len() - tie_start;
        if by_primary && by_primary_from[tie_start] * 10 >= total * 9 {
            return Some(end - until);
        }
    }
    None
}

/// Seconds with three decimals, or `dash` for nothing.
struct Secs(Option<Duration>, &'static str);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => write!(f, "{:.3}", d.as_secs_f64()),
            None => f.write_str(self.1),
        }
    }
}

/// [`Secs`] with ` s` after a number.
struct Unit(Secs);

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)?;
        if self.0 .0.is_some() {
            f.write_str(" s")?;
        }
        Ok(())
    }
}

/// A ratio as a percentage with one decimal, `—` for `NaN`.
struct Percent(f64);

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_nan() {
            f.write_str("—")
        } else {
            write!(f, "{:.1} %", self.0 * 100.0)
        }
    }
}

/// A plain ratio with two decimals, `—` for `NaN`.
struct Per(f64);

impl fmt::Display for Per {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_nan() {
            f.write_str("—")
        } else {
            write!(f, "{:.2}", self.0)
        }
    }
}

impl ScenarioReport {
    /// The header of the Markdown table whose rows [`markdown_row`](Self::markdown_row) writes
    /// (two lines: names and alignment). Durations are in seconds.
    pub fn markdown_header() -> &'static str {
        "| scenario | requests | answered | by tier | failed | success when up \
| p50 in fault (s) | p99 in fault (s) | in flight at fault start | primary calls in fault \
| upstream calls / request in fault | upstream calls / request | recovery (s) | resumed (s) |\n\
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    }

    /// This report as one row of the [`markdown_header`](Self::markdown_header) table.
    pub fn markdown_row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            self.name.replace('|', "\\|"),
            self.requests,
            self.answered,
            self.served_by_tier,
            self.failed,
            Percent(self.success_rate_when_up),
            Secs(self.p50_during_fault, "—"),
            Secs(self.p99_during_fault, "—"),
            self.in_flight_at_fault_start,
            self.primary_calls_during_fault,
            Per(self.upstream_calls_per_request),
            Per(self.upstream_calls_per_request_run),
            Secs(self.recovery, "never"),
            Secs(self.resumed, "never"),
        )
    }
}

impl fmt::Display for ScenarioReport {
    /// One line: `name: 812 requests, 800 answered, 12 by tier, 0 failed (0 unfinished); …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} requests, {} answered, {} by tier, {} failed ({} unfinished); \
success when up {}; during the fault {} requests, p50 {}, p99 {}, \
{} upstream calls per request ({} to the primary); {} in flight at fault start; \
{} upstream calls per request over the run; recovery {}; resumed {}",
            self.name,
            self.requests,
            self.answered,
            self.served_by_tier,
            self.failed,
            self.unfinished,
            Percent(self.success_rate_when_up),
            self.requests_during_fault,
            Unit(Secs(self.p50_during_fault, "—")),
            Unit(Secs(self.p99_during_fault, "—")),
            Per(self.upstream_calls_per_request),
            self.primary_calls_during_fault,
            self.in_flight_at_fault_start,
            Per(self.upstream_calls_per_request_run),
            Unit(Secs(self.recovery, "never")),
            Unit(Secs(self.resumed, "never")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A real answer from `target` over `[start, end]` (ms).
    fn answer(start: u64, end: u64, target: &str) -> Sample {
        Sample {
            start: ms(start),
            end: ms(end),
            status: Some(200),
            target: Some(target.to_owned()),
            fallback: Some("none".to_owned()),
            answered: true,
            finished: true,
            ..Sample::default()
        }
    }

    fn failure(start: u64, end: u64) -> Sample {
        Sample {
            start: ms(start),
            end: ms(end),
            status: Some(503),
            finished: true,
            ..Sample::default()
        }
    }

    fn tier(start: u64, end: u64) -> Sample {
        Sample {
            start: ms(start),
            end: ms(end),
            status: Some(200),
            fallback: Some("static".to_owned()),
            served_by_tier: true,
            finished: true,
            ..Sample::default()
        }
    }

    fn scenario(outage: Outage) -> Scenario {
        Scenario::new("test")
            .timeline(Timeline::new(ms(16_000), ms(4_000), ms(10_000)))
            .outage(outage)
    }

    fn report(outage: Outage, samples: Vec<Sample>) -> ScenarioReport {
        let run = Run::from_samples(samples);
        scenario(outage).report(&run, &UpstreamCalls::default(), &UpstreamCalls::default())
    }

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<Duration> = (1..=1000).map(ms).collect();
        assert_eq!(nearest_rank(&sorted, 99.0), Some(ms(990)));
        assert_eq!(nearest_rank(&sorted, 50.0), Some(ms(500)));
        assert_eq!(nearest_rank(&sorted, 99.9), Some(ms(999)));
        assert_eq!(nearest_rank(&sorted, 100.0), Some(ms(1000)));
        assert_eq!(nearest_rank(&sorted, 0.0), Some(ms(1)));
        let seven: Vec<Duration> = (1..=7).map(ms).collect();
        // ceil(0.99 × 7) = 7, ceil(0.5 × 7) = 4.
        assert_eq!(nearest_rank(&seven, 99.0), Some(ms(7)));
        assert_eq!(nearest_rank(&seven, 50.0), Some(ms(4)));
        assert_eq!(nearest_rank(&[ms(5)], 99.0), Some(ms(5)));
        assert_eq!(nearest_rank(&sorted, 101.0), None);
        assert_eq!(nearest_rank(&sorted, f64::NAN), None);
        assert_eq!(nearest_rank(&[], 50.0), None);
    }

    #[test]
    fn counts_rates_and_fault_latencies() {
        let mut samples = vec![
            answer(0, 100, "primary/gpt-4o"),
            // In flight when the fault starts at 4 s.
            answer(3_900, 4_100, "primary/gpt-4o"),
            failure(3_950, 4_500),
            // Ends exactly at the fault start: not in flight.
            answer(3_800, 4_000, "primary/gpt-4o"),
            tier(11_000, 11_001),
        ];
        // 100 requests during the fault, latencies 1..=100 ms; every 10th fails.
        for i in 1..=100u64 {
            let start = 4_000 + i * 50;
            samples.push(if i % 10 == 0 {
                failure(start, start + i)
            } else {
                answer(start, start + i, "secondary/gpt-4o")
            });
        }
        let r = report(Outage::Primary, samples.clone());
        assert_eq!(r.requests, 105);
        assert_eq!(r.answered, 3 + 90);
        assert_eq!(r.served_by_tier, 1);
        assert_eq!(r.failed, 1 + 10);
        assert_eq!(r.unfinished, 0);
        assert!((r.success_rate_when_up - 93.0 / 105.0).abs() < 1e-12);
        assert_eq!(r.requests_during_fault, 100);
        assert_eq!(r.p50_during_fault, Some(ms(50)));
        assert_eq!(r.p99_during_fault, Some(ms(99)));
        assert_eq!(r.in_flight_at_fault_start, 2);

        // Both down: only requests outside the fault count for the success rate.
        let r = report(Outage::Both, samples);
        assert!((r.success_rate_when_up - 3.0 / 5.0).abs() < 1e-12);
    }

    #[test]
    fn upstream_calls_during_the_fault_and_the_run() {
        let samples = vec![
            answer(0, 100, "primary"),
            answer(4_000, 4_100, "secondary"),
            answer(5_000, 5_100, "secondary"),
        ];
        let primary = UpstreamCalls::new([0, 4_000, 5_000, 10_000].map(ms));
        let secondary = UpstreamCalls::new([4_000, 5_000, 9_999].map(ms));
        let run = Run::from_samples(samples);
        let r = scenario(Outage::Primary).report(&run, &primary, &secondary);
        assert_eq!(r.primary_calls_during_fault, 2);
        assert_eq!(r.secondary_calls_during_fault, 3);
        assert_eq!(r.upstream_calls_per_request, 2.5);
        assert_eq!(r.upstream_calls, 7);
        assert!((r.upstream_calls_per_request_run - 7.0 / 3.0).abs() < 1e-12);

        // No request during the fault: NaN, which fails any threshold.
        let run = Run::from_samples(vec![answer(0, 100, "primary")]);
        let r = scenario(Outage::Primary).report(&run, &primary, &secondary);
        assert!(r.upstream_calls_per_request.is_nan());
        assert_eq!(r.upstream_calls_per_request.partial_cmp(&10.0), None);
        assert!(r.markdown_row().contains("| — |"));
    }

    #[test]
    fn upstream_calls_convert_clocks() {
        let calls = UpstreamCalls::new([ms(3), ms(1), ms(2)]);
        assert_eq!(calls.times(), &[ms(1), ms(2), ms(3)]);
        assert_eq!(calls.between(ms(2), ms(3)), 1);
        assert_eq!(calls.between(ms(3), ms(2)), 0);
        assert!(UpstreamCalls::default().is_empty());
    }

    #[test]
    fn recovery_waits_for_the_primary_to_carry_90_percent() {
        // The fault ends at 10 s. The secondary answers until 10.4 s; one stray primary answer
        // at 10.1 s is not recovery (the secondary still carries most answers after it); from
        // 10.5 s the primary answers everything but one in twenty.
        let mut samples = vec![
            answer(9_900, 10_000, "secondary/x"),
            answer(9_950, 10_100, "primary/x"),
        ];
        for i in 0..4 {
            samples.push(answer(10_100 + i * 100, 10_200 + i * 100, "secondary/x"));
        }
        for i in 0..40 {
            let target = if i % 20 == 19 {
                "secondary/x"
            } else {
                "primary/x"
            };
            samples.push(answer(10_400 + i * 100, 10_500 + i * 100, target));
        }
        samples.push(failure(10_000, 12_000)); // failures do not count as answers
        let r = report(Outage::Primary, samples);
        assert_eq!(r.recovery, Some(ms(500)));
        assert_eq!(r.resumed, Some(ms(0)));
    }

    #[test]
    fn recovery_counts_answers_ending_at_the_same_time() {
        // At 10.2 s a primary and nine secondary answers end together: 10 % from the primary.
        let mut samples = vec![answer(10_100, 10_200, "primary")];
        for _ in 0..9 {
            samples.push(answer(10_100, 10_200, "secondary"));
        }
        samples.push(answer(10_200, 10_300, "primary"));
        let r = report(Outage::Primary, samples);
        assert_eq!(r.recovery, Some(ms(300)));
    }

    #[test]
    fn never_recovered_or_resumed() {
        let r = report(
            Outage::Both,
            vec![
                answer(0, 100, "primary"),
                failure(10_000, 10_001),
                tier(10_100, 10_101),
                answer(10_200, 10_300, "secondary"),
            ],
        );
        assert_eq!(r.recovery, None);
        assert_eq!(r.resumed, Some(ms(300)));
        let r = report(Outage::Both, vec![failure(10_000, 10_001)]);
        assert_eq!((r.recovery, r.resumed), (None, None));
        assert!(r.markdown_row().ends_with("| never | never |"));
    }

    #[test]
    fn unfinished_requests_fail_and_stay_in_flight() {
        let hung = Sample {
            start: ms(3_000),
            end: ms(136_000),
            error: Some("did not finish".to_owned()),
            ..Sample::default()
        };
        let r = report(Outage::Primary, vec![hung, answer(4_000, 4_050, "primary")]);
        assert_eq!((r.unfinished, r.failed, r.answered), (1, 1, 1));
        assert_eq!(r.in_flight_at_fault_start, 1);
    }

    #[test]
    fn markdown_and_display() {
        let r = report(
            Outage::Primary,
            vec![
                answer(4_000, 4_250, "primary"),
                answer(10_000, 10_050, "primary"),
            ],
        );
        let header = ScenarioReport::markdown_header();
        let row = r.markdown_row();
        let columns = |line: &str| line.matches('|').count();
        assert_eq!(header.lines().count(), 2);
        for line in header.lines() {
            assert_eq!(columns(line), columns(&row), "{line}");
        }
        assert_eq!(
            row,
            "| test | 2 | 2 | 0 | 0 | 100.0 % | 0.250 | 0.250 | 0 | 0 | 0.00 | 0.00 | 0.050 | 0.050 |"
        );
        let text = r.to_string();
        assert!(text.starts_with("test: 2 requests, 2 answered"), "{text}");
        assert!(text.contains("recovery 0.050 s"), "{text}");
        let r = report(Outage::Both, vec![failure(0, 1)]);
        assert!(
            r.to_string().ends_with("recovery never; resumed never"),
            "{r}"
        );
    }
}
