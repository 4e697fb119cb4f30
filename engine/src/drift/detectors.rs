//! The detectors of one stream and their pure step: (state, observation) →
//! (state, updates). A stream is one site's (or all sites' pooled) cases of one
//! structure (or of the per-case mean) of one model version.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Baseline;
use super::calibration::{mean_lower_quantile, rate_upper_bound};
use super::limits::{CusumDesign, LAMBDA, ewma_limit};

/// No PIT-EWMA or CUSUM alarm before this many cases in a stream.
pub const WARM_UP: u32 = 20;
/// The guard rail's window, in days of case time.
pub const GUARD_WINDOW_DAYS: u32 = 7;
/// The guard rail needs at least this many cases in its window.
pub const GUARD_MIN_CASES: u32 = 20;
const HOURS_IN_WINDOW: i64 = GUARD_WINDOW_DAYS as i64 * 24;

/// A drift detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// EWMA of each case's percentile in the baseline: the Dice distribution
    /// moved down.
    PitEwma,
    /// Bernoulli CUSUM of failures: more cases below the failure threshold.
    Cusum,
    /// The 7-day mean far below what the baseline makes plausible.
    GuardRail,
}

impl Detector {
    /// Every detector, in a fixed order.
    pub const ALL: [Detector; 3] = [Detector::Cusum, Detector::GuardRail, Detector::PitEwma];

    /// The stable name used in storage, the API and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::PitEwma => "pit_ewma",
            Detector::Cusum => "cusum",
            Detector::GuardRail => "guard_rail",
        }
    }

    /// The detector named by [`Detector::as_str`].
    pub fn parse(name: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// Whether it runs on a stream: on the per-case mean only PIT-EWMA runs.
    /// A mean below a failure threshold needs several structures failing at
    /// once, so the CUSUM could not fire; and failures, which set the guard
    /// rail's tail, are defined per structure.
    pub fn runs_on(self, structure_is_mean: bool) -> bool {
        self == Detector::PitEwma || !structure_is_mean
    }
}

/// One scored case of a stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// The case's Dice for the stream's structure (or its per-case mean), or
    /// the score of the stream's other metric ([`super::Metric::score`]), in [0, 1].
    pub dice: f64,
    /// Case time.
    pub at: DateTime<Utc>,
}

/// The guard rail's limit on the window mean, precomputed on a grid of window
/// sizes and interpolated in 1/√n between them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardRail {
    /// Chance that one evaluation of an in-control window alarms.
    pub alpha: f64,
    /// No alarm while the window holds fewer cases than this ([`GUARD_MIN_CASES`]).
    pub min_cases: u32,
    /// Window length in days of case time ([`GUARD_WINDOW_DAYS`]).
    pub window_days: u32,
    /// (window cases, limit); left out of audit records, which carry the
    /// limit used.
    #[serde(skip)]
    grid: Vec<(u32, f64)>,
}

/// Upper 90 % point of the standard normal.
const BASELINE_Z90: f64 = 1.281_551_6;
/// Window sizes of the guard rail's grid grow by this factor.
const GUARD_GRID_RATIO: f64 = 1.25;
const GUARD_GRID_MAX: f64 = 200_000.0;

impl GuardRail {
    /// Limits at which one evaluation alarms with chance `alpha` when the cases
    /// come from the baseline's distribution (saddlepoint tail of the mean),
    /// for windows of up to about `max_cases` (larger windows use the limit of
    /// the largest, which alarms less).
    ///
    /// Failures (Dice below `failure_threshold`) dominate the lower tail of a
    /// window mean, and a baseline of a few hundred cases knows their rate
    /// poorly; so the baseline's failures are weighted up to the upper 90 %
    /// confidence bound of their rate (a baseline without failures gets one at
    /// half the threshold), and every limit is lowered by the upper 90 % error
    /// of the baseline mean. The chance per evaluation then holds for at least
    /// about 90 % of baselines.
    pub fn new(
        baseline: &Baseline,
        failure_threshold: f64,
        alpha: f64,
        max_cases: f64,
    ) -> GuardRail {
        let values = baseline.values();
        let failures = baseline.failures(failure_threshold) as usize;
        let rate = rate_upper_bound(failures as u64, values.len() as u64, 0.9);
        let (failed, passed) = values.split_at(failures);
        let mut atoms: Vec<(f64, f64)> = passed
            .iter()
            .map(|&v| (v, (1.0 - rate) / passed.len() as f64))
            .collect();
        if failed.is_empty() {
            atoms.push((failure_threshold / 2.0, rate));
        } else {
            atoms.extend(failed.iter().map(|&v| (v, rate / failed.len() as f64)));
        }
        let mean = baseline.mean();
        let variance =
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() as f64 - 1.0);
        let baseline_error = BASELINE_Z90 * (variance / values.len() as f64).sqrt();
        let mut grid = Vec::new();
        let mut n = GUARD_MIN_CASES as f64;
        let top = max_cases.clamp(GUARD_MIN_CASES as f64, GUARD_GRID_MAX) * GUARD_GRID_RATIO;
        while n < top {
            let cases = n.round() as u32;
            let limit = mean_lower_quantile(&atoms, cases as usize, alpha);
            grid.push((cases, limit - baseline_error));
            n *= GUARD_GRID_RATIO;
        }
        GuardRail {
            alpha,
            min_cases: GUARD_MIN_CASES,
            window_days: GUARD_WINDOW_DAYS,
            grid,
        }
    }

    /// The lowest plausible window mean over `cases` cases.
    pub fn limit(&self, cases: u32) -> f64 {
        let cases = cases.max(self.min_cases);
        let i = self.grid.partition_point(|&(n, _)| n <= cases);
        if i == 0 {
            return self.grid[0].1;
        }
        if i >= self.grid.len() {
            return self.grid[self.grid.len() - 1].1;
        }
        let ((n0, l0), (n1, l1)) = (self.grid[i - 1], self.grid[i]);
        let x = |n: u32| 1.0 / (n as f64).sqrt();
        l0 + (l1 - l0) * (x(cases) - x(n0)) / (x(n1) - x(n0))
    }
}

/// What a stream's designs depend on besides its baseline and target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamProfile {
    /// The stream watches the per-case mean Dice.
    pub structure_is_mean: bool,
    /// Dice below this is a failure.
    pub failure_threshold: f64,
    /// Observed case rate (sizes the guard rail's table of window limits).
    pub cases_per_day: f64,
}

/// A detector's parameters for one stream: everything its step needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "detector", rename_all = "snake_case")]
pub enum Design {
    /// PIT-EWMA: EWMA of each case's mid-rank percentile in the baseline, from 0.5.
    PitEwma {
        /// Weight of the newest percentile in the EWMA ([`LAMBDA`]).
        lambda: f64,
        /// Distance of the limit below 0.5, in units of the EWMA's asymptotic sd.
        width: f64,
        /// Alarm when the EWMA falls below this: 0.5 − `width` · sd.
        limit: f64,
        /// Size of the baseline the limit was calibrated for.
        baseline_cases: usize,
        /// The target run length was beyond the calibration table.
        beyond_table: bool,
    },
    /// Bernoulli CUSUM of failures.
    Cusum(CusumDesign),
    /// Guard rail on the mean Dice of the last 7 days.
    GuardRail(GuardRail),
}

impl Design {
    /// The design of `detector` for a stream's baseline and target in-control
    /// run length in cases; None where the detector does not run.
    pub fn new(
        detector: Detector,
        baseline: &Baseline,
        stream: &StreamProfile,
        target_cases: f64,
    ) -> Option<Design> {
        let structure_is_mean = stream.structure_is_mean;
        if !detector.runs_on(structure_is_mean) {
            return None;
        }
        Some(match detector {
            Detector::PitEwma => {
                let limit = ewma_limit(baseline.len(), target_cases);
                Design::PitEwma {
                    lambda: LAMBDA,
                    width: limit.width,
                    limit: limit.limit,
                    baseline_cases: baseline.len(),
                    beyond_table: limit.beyond_table,
                }
            }
            Detector::Cusum => Design::Cusum(CusumDesign::new(
                stream.failure_threshold,
                baseline.failures(stream.failure_threshold),
                baseline.len() as u64,
                target_cases,
            )?),
            // A union bound over every evaluation: one false alarm per target
            // run length even if consecutive windows were independent (they
            // overlap almost entirely, so the true rate is far lower).
            Detector::GuardRail => Design::GuardRail(GuardRail::new(
                baseline,
                stream.failure_threshold,
                1.0 / target_cases,
                2.0 * GUARD_WINDOW_DAYS as f64 * stream.cases_per_day,
            )),
        })
    }

    /// The detector this design is for.
    pub fn detector(&self) -> Detector {
        match self {
            Design::PitEwma { .. } => Detector::PitEwma,
            Design::Cusum(_) => Detector::Cusum,
            Design::GuardRail(_) => Detector::GuardRail,
        }
    }

    /// The statistic a detector starts from (and restarts from on a new baseline).
    fn start(&self) -> f64 {
        match self {
            Design::PitEwma { .. } => 0.5,
            Design::Cusum(_) | Design::GuardRail(_) => 0.0,
        }
    }
}

/// Case counts and Dice sums per hour of case time over the last 7 days.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// (hour since the epoch, cases, Dice sum), oldest first.
    buckets: VecDeque<(i64, u32, f64)>,
}

impl Window {
    /// Adds a case at `hour`, keeping the 7 days up to `latest_hour`.
    fn add(&mut self, hour: i64, dice: f64, latest_hour: i64) {
        let oldest = latest_hour - HOURS_IN_WINDOW + 1;
        if hour >= oldest {
            let i = self.buckets.partition_point(|b| b.0 < hour);
            match self.buckets.get_mut(i) {
                Some(b) if b.0 == hour => {
                    b.1 += 1;
                    b.2 += dice;
                }
                _ => self.buckets.insert(i, (hour, 1, dice)),
            }
        }
        while self.buckets.front().is_some_and(|b| b.0 < oldest) {
            self.buckets.pop_front();
        }
    }

    /// Cases in the window.
    pub fn cases(&self) -> u32 {
        self.buckets.iter().map(|b| b.1).sum()
    }

    /// Mean Dice of the window (NaN when empty).
    pub fn mean(&self) -> f64 {
        self.buckets.iter().map(|b| b.2).sum::<f64>() / self.cases() as f64
    }
}

/// One detector's running state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct DetectorState {
    /// Cases fed since the detector started.
    pub t: u32,
    /// The EWMA (PIT-EWMA), the CUSUM sum, or the window mean Dice (guard rail).
    pub statistic: f64,
    /// Whether the latest case fed raised an alarm.
    pub alarm: bool,
}

/// Everything a stream remembers between cases.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamState {
    /// Earliest case time fed; None before the first case.
    pub first_at: Option<DateTime<Utc>>,
    /// Latest case time fed; None before the first case.
    pub latest_at: Option<DateTime<Utc>>,
    /// Cases and Dice sums of the last 7 days, for the guard rail and the case rate.
    pub window: Window,
    /// Running state of each detector fed so far.
    pub detectors: BTreeMap<Detector, DetectorState>,
}

/// One detector update, as stored for audit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Update {
    /// The detector that stepped.
    pub detector: Detector,
    /// Cases fed to it since it started, this one included.
    pub t: u32,
    /// What the detector was fed: the percentile u (PIT-EWMA), 1 for a failure
    /// (CUSUM), or the window's case count (guard rail).
    pub input: f64,
    /// The statistic after this case (see [`DetectorState::statistic`]).
    pub statistic: f64,
    /// The limit it was compared with: below it alarms, above it for the CUSUM.
    pub limit: f64,
    /// Whether it alarmed; never during warm-up, nor with too few cases in the window.
    pub alarm: bool,
}

fn hour(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(3600)
}

impl StreamState {
    /// Cases a day over the window (at least one day of it).
    pub fn cases_per_day(&self) -> f64 {
        let (Some(first), Some(latest)) = (self.first_at, self.latest_at) else {
            return 0.0;
        };
        let span_hours = (hour(latest) - hour(first) + 1).clamp(24, HOURS_IN_WINDOW);
        self.window.cases() as f64 * 24.0 / span_hours as f64
    }

    /// Whether `at` is earlier than a case already fed.
    pub fn is_late(&self, at: DateTime<Utc>) -> bool {
        self.latest_at.is_some_and(|latest| at < latest)
    }

    /// Feeds one case to every designed detector.
    pub fn feed(
        &mut self,
        designs: &[Design],
        baseline: &Baseline,
        case: Observation,
    ) -> Vec<Update> {
        self.first_at = Some(self.first_at.map_or(case.at, |f| f.min(case.at)));
        let latest = self.latest_at.map_or(case.at, |l| l.max(case.at));
        self.latest_at = Some(latest);
        self.window.add(hour(case.at), case.dice, hour(latest));
        designs
            .iter()
            .map(|design| {
                let state =
                    self.detectors
                        .entry(design.detector())
                        .or_insert_with(|| DetectorState {
                            t: 0,
                            statistic: design.start(),
                            alarm: false,
                        });
                step(design, state, baseline, &self.window, case.dice)
            })
            .collect()
    }
}

/// One detector's step.
fn step(
    design: &Design,
    state: &mut DetectorState,
    baseline: &Baseline,
    window: &Window,
    dice: f64,
) -> Update {
    state.t += 1;
    let (input, limit, alarm) = match design {
        Design::PitEwma { lambda, limit, .. } => {
            let u = baseline.percentile_of(dice);
            state.statistic = lambda * u + (1.0 - lambda) * state.statistic;
            (u, *limit, state.t >= WARM_UP && state.statistic < *limit)
        }
        Design::Cusum(c) => {
            let failed = dice < c.threshold;
            let step = if failed { c.up as f64 } else { -1.0 };
            state.statistic = (state.statistic + step).max(0.0);
            let limit = c.h as f64;
            (
                if failed { 1.0 } else { 0.0 },
                limit,
                state.t >= WARM_UP && state.statistic > limit,
            )
        }
        Design::GuardRail(g) => {
            let cases = window.cases();
            state.statistic = window.mean();
            let limit = g.limit(cases);
            (
                cases as f64,
                limit,
                cases >= g.min_cases && state.statistic < limit,
            )
        }
    };
    state.alarm = alarm;
    Update {
        detector: design.detector(),
        t: state.t,
        input,
        statistic: state.statistic,
        limit,
        alarm,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn baseline() -> Baseline {
        Baseline::new((0..200).map(|i| 0.8 + i as f64 / 1000.0).collect()).unwrap()
    }

    const PROFILE: StreamProfile = StreamProfile {
        structure_is_mean: false,
        failure_threshold: 0.5,
        cases_per_day: 10.0,
    };

    fn designs(b: &Baseline, target: f64) -> Vec<Design> {
        Detector::ALL
            .into_iter()
            .filter_map(|d| Design::new(d, b, &PROFILE, target))
            .collect()
    }

    #[test]
    fn detectors_stay_quiet_during_warm_up_then_alarm_on_failures() {
        let b = baseline();
        let d = designs(&b, 1000.0);
        let mut s = StreamState::default();
        let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        for i in 1..WARM_UP {
            let updates = s.feed(
                &d,
                &b,
                Observation {
                    dice: 0.0,
                    at: t0 + Duration::hours(i as i64),
                },
            );
            for u in updates.iter().filter(|u| u.detector != Detector::GuardRail) {
                assert!(!u.alarm, "{:?} at {i}", u.detector);
            }
        }
        let updates = s.feed(
            &d,
            &b,
            Observation {
                dice: 0.0,
                at: t0 + Duration::hours(30),
            },
        );
        assert!(updates.iter().all(|u| u.alarm), "{updates:?}");
        assert_eq!(s.window.cases(), WARM_UP);
    }

    #[test]
    fn the_window_keeps_seven_days_of_case_time_and_late_cases() {
        let mut s = StreamState::default();
        let b = baseline();
        let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        for day in 0..10 {
            s.feed(
                &[],
                &b,
                Observation {
                    dice: 0.9,
                    at: t0 + Duration::days(day),
                },
            );
        }
        assert_eq!(s.window.cases(), 7);
        assert!(s.is_late(t0 + Duration::days(5)));
        // A late case inside the window counts; one older than the window does not.
        s.feed(
            &[],
            &b,
            Observation {
                dice: 0.9,
                at: t0 + Duration::days(5),
            },
        );
        s.feed(
            &[],
            &b,
            Observation {
                dice: 0.9,
                at: t0 + Duration::days(1),
            },
        );
        assert_eq!(s.window.cases(), 8);
        assert!((s.cases_per_day() - 8.0 / 7.0).abs() < 1e-9);
    }

    #[test]
    fn guard_rail_limits_follow_the_window_size() {
        let b = baseline();
        let g = GuardRail::new(&b, 0.5, 1e-6, 300.0);
        let (l20, l200) = (g.limit(20), g.limit(200));
        assert!(l20 < l200 && l200 < b.mean(), "{l20} {l200}");
        // Interpolation between grid points stays between its neighbours.
        let l30 = g.limit(30);
        assert!(l20 < l30 && l30 < l200);
    }

    #[test]
    fn the_cusum_skips_mean_streams() {
        let b = baseline();
        let mean = StreamProfile {
            structure_is_mean: true,
            ..PROFILE
        };
        assert!(Design::new(Detector::Cusum, &b, &mean, 1e4).is_none());
        assert!(Design::new(Detector::PitEwma, &b, &mean, 1e4).is_some());
        assert_eq!(Detector::parse("guard_rail"), Some(Detector::GuardRail));
        assert_eq!(Detector::parse("other"), None);
    }
}
