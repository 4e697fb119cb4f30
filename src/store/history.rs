//! Compact detector history: each stream's parameter set stored once
//! (`detector_parameters`, per baseline and for as long as it stays the same),
//! and one `detector_history` row per fed case holding every stream's step;
//! the latest step of each detector in `detector_state`. Read back a stream at
//! a time for audit and replay (`drift::replay`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{Result, StoreError};
use crate::drift::feed::{Parameters, StreamKey, StreamUpdate};
use crate::drift::replay::{ReplayCase, ReplayStep, first_alarm, replay};
use crate::drift::{Baseline, Detector, Metric, Update};
use crate::views::{HistoryAudit, HistoryStep, HistoryValue};

mod postgres;
pub(super) use postgres::save;

/// Values per stream in `detector_history.vals`: (input, statistic, limit) of
/// each detector of [`Detector::ALL`], in that order.
pub(super) const SLOTS: usize = 3 * Detector::ALL.len();

/// Bit of a stream's `flags` set when its case was late; bit `1 + i` is set
/// when the `i`-th detector of [`Detector::ALL`] alarmed.
const LATE: i16 = 1;

fn slot(detector: Detector) -> usize {
    Detector::ALL
        .iter()
        .position(|d| *d == detector)
        .unwrap_or(0)
}

fn alarm_bit(detector: Detector) -> i16 {
    1 << (1 + slot(detector))
}

/// One detector step as stored: 4-byte floats, None for a non-finite value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoredUpdate {
    /// The detector.
    pub detector: Detector,
    /// What it was fed (see [`Update::input`]).
    pub input: Option<f32>,
    /// The statistic after the case.
    pub statistic: Option<f32>,
    /// The limit it was compared with.
    pub limit: Option<f32>,
    /// Whether it alarmed.
    pub alarm: bool,
}

fn stored(value: f64) -> Option<f32> {
    value.is_finite().then_some(value as f32)
}

impl From<&Update> for StoredUpdate {
    fn from(u: &Update) -> StoredUpdate {
        StoredUpdate {
            detector: u.detector,
            input: stored(u.input),
            statistic: stored(u.statistic),
            limit: stored(u.limit),
            alarm: u.alarm,
        }
    }
}

/// One case of a stream's stored history.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredStep {
    /// Stored id of the evaluation result of the case.
    pub result_id: i64,
    /// Case time.
    pub observed_at: DateTime<Utc>,
    /// The case's Dice for the stream's structure (or its mean Dice).
    pub dice: f64,
    /// Cases fed to the stream since its baseline started, this one included.
    pub t: u32,
    /// The case came earlier in case time than one already fed.
    pub late: bool,
    /// (stream, detector) pairs sharing the false-alert budget.
    pub pairs: i32,
    /// Stored id of its parameter set.
    pub parameters_id: i32,
    /// What the detectors were computed with.
    pub parameters: Arc<Parameters>,
    /// Each running detector's step, in the order of `parameters.designs`.
    pub updates: Vec<StoredUpdate>,
}

/// A stream's stored history under one baseline, in the order fed.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamHistory {
    /// The baseline the stream ran on.
    pub baseline_id: i64,
    /// Its sample for the stream's structure.
    pub baseline: Baseline,
    /// The stream watches the per-case mean Dice.
    pub structure_is_mean: bool,
    /// Every case fed since the baseline started.
    pub steps: Vec<StoredStep>,
}

impl StreamHistory {
    /// Recomputes every step from the stored cases and targets with the
    /// engine's detectors.
    pub fn replay(&self) -> Vec<ReplayStep> {
        let threshold = self
            .steps
            .first()
            .map_or(0.0, |s| s.parameters.failure_threshold);
        let cases: Vec<ReplayCase> = self
            .steps
            .iter()
            .map(|s| ReplayCase {
                observed_at: s.observed_at,
                dice: s.dice,
                target_cases: s.parameters.target_cases,
            })
            .collect();
        replay(&self.baseline, self.structure_is_mean, threshold, &cases)
    }

    /// Replays the history and compares it with what was stored, keeping the
    /// stored steps of the `context` cases up to the first alarm.
    pub fn audit(&self, context: usize) -> HistoryAudit {
        let replayed = self.replay();
        let mismatches = self
            .steps
            .iter()
            .zip(&replayed)
            .filter(|(stored, step)| {
                let recomputed: Vec<StoredUpdate> =
                    step.updates.iter().map(StoredUpdate::from).collect();
                (stored.t, stored.late, &stored.updates) != (step.t, step.late, &recomputed)
            })
            .map(|(stored, _)| stored.t)
            .collect();
        let first = first_alarm(&replayed);
        let end = first.as_ref().map_or(self.steps.len(), |(i, _)| i + 1);
        HistoryAudit {
            baseline_id: self.baseline_id,
            cases: self.steps.len(),
            mismatches,
            first_alarm: first.as_ref().map(|(i, _)| replayed[*i].t),
            first_alarm_detectors: first
                .iter()
                .flat_map(|(_, d)| d.iter().map(|d| d.as_str().to_owned()))
                .collect(),
            steps: self.steps[end.saturating_sub(context)..end]
                .iter()
                .map(StoredStep::view)
                .collect(),
        }
    }
}

impl StoredStep {
    fn view(&self) -> HistoryStep {
        HistoryStep {
            result_id: self.result_id,
            observed_at: self.observed_at,
            t: self.t,
            late: self.late,
            dice: self.dice,
            target_cases: self.parameters.target_cases,
            detectors: self
                .updates
                .iter()
                .map(|u| HistoryValue {
                    detector: u.detector.as_str().to_owned(),
                    input: u.input,
                    statistic: u.statistic,
                    limit: u.limit,
                    alarm: u.alarm,
                })
                .collect(),
        }
    }
}

/// A parameter set to store: its stream, baseline and JSON.
pub(super) struct ParameterSet<'a> {
    pub key: &'a StreamKey,
    pub baseline_id: i64,
    pub json: String,
}

/// The distinct parameter sets of a feed, and the index of each update's set.
pub(super) fn parameter_sets(
    updates: &[StreamUpdate],
) -> Result<(Vec<ParameterSet<'_>>, Vec<usize>)> {
    let mut sets: Vec<ParameterSet> = Vec::new();
    let mut index: HashMap<(&StreamKey, i64, String), usize> = HashMap::new();
    let mut texts: HashMap<*const Parameters, String> = HashMap::new();
    let mut of_update = Vec::with_capacity(updates.len());
    for u in updates {
        let json = match texts.get(&Arc::as_ptr(&u.parameters)) {
            Some(text) => text.clone(),
            None => {
                let text = serde_json::to_string(&*u.parameters)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                texts.insert(Arc::as_ptr(&u.parameters), text.clone());
                text
            }
        };
        let n = *index
            .entry((&u.key, u.baseline_id, json.clone()))
            .or_insert_with(|| {
                sets.push(ParameterSet {
                    key: &u.key,
                    baseline_id: u.baseline_id,
                    json,
                });
                sets.len() - 1
            });
        of_update.push(n);
    }
    Ok((sets, of_update))
}

/// The history rows of a feed, one per case, as flat arrays: row `i` holds
/// the streams `lo[i]..=hi[i]` (1-based) of `parameters`, `t` and `flags`,
/// and their `SLOTS` values each in `vals`.
#[derive(Debug, Default)]
pub(super) struct HistoryBatch {
    pub result_ids: Vec<i64>,
    pub pairs: Vec<i32>,
    pub lo: Vec<i32>,
    pub hi: Vec<i32>,
    pub parameters: Vec<i32>,
    pub t: Vec<i32>,
    pub flags: Vec<i16>,
    pub vals: Vec<Option<f32>>,
}

impl HistoryBatch {
    /// `updates` in feed order (a case's streams together); `set_ids` the
    /// stored id of each update's parameter set.
    pub fn new(updates: &[StreamUpdate], set_ids: &[i32]) -> HistoryBatch {
        let mut batch = HistoryBatch::default();
        for (u, id) in updates.iter().zip(set_ids) {
            if batch.result_ids.last() != Some(&u.result_id) {
                batch.result_ids.push(u.result_id);
                batch.pairs.push(u.pairs as i32);
                batch.lo.push(batch.t.len() as i32 + 1);
                batch.hi.push(batch.t.len() as i32);
            }
            if let Some(hi) = batch.hi.last_mut() {
                *hi += 1;
            }
            batch.parameters.push(*id);
            batch.t.push(u.updates.first().map_or(0, |s| s.t as i32));
            let mut flags = if u.late { LATE } else { 0 };
            let mut vals = [None; SLOTS];
            for step in &u.updates {
                let s = StoredUpdate::from(step);
                let at = 3 * slot(step.detector);
                vals[at..at + 3].copy_from_slice(&[s.input, s.statistic, s.limit]);
                if step.alarm {
                    flags |= alarm_bit(step.detector);
                }
            }
            batch.flags.push(flags);
            batch.vals.extend(vals);
        }
        batch
    }

    /// Row `i`'s streams.
    pub fn row(&self, i: usize) -> Streams<'_> {
        let (lo, hi) = (self.lo[i] as usize - 1, self.hi[i] as usize);
        Streams {
            parameters: &self.parameters[lo..hi],
            t: &self.t[lo..hi],
            flags: &self.flags[lo..hi],
            vals: &self.vals[lo * SLOTS..hi * SLOTS],
        }
    }
}

/// The streams of one history row, as stored.
pub(super) struct Streams<'a> {
    pub parameters: &'a [i32],
    pub t: &'a [i32],
    pub flags: &'a [i16],
    pub vals: &'a [Option<f32>],
}

/// The latest step of each (stream, detector) of a feed, for `detector_state`.
pub(super) fn latest_states(updates: &[StreamUpdate]) -> Vec<(&StreamKey, i64, Update)> {
    let mut latest: BTreeMap<(&StreamKey, Detector), (i64, Update)> = BTreeMap::new();
    for u in updates {
        for step in &u.updates {
            latest.insert((&u.key, step.detector), (u.baseline_id, *step));
        }
    }
    latest
        .into_iter()
        .map(|((key, _), (baseline_id, step))| (key, baseline_id, step))
        .collect()
}

/// A stored history row, as both stores read it.
pub(super) struct HistoryRow {
    pub result_id: i64,
    pub observed_at: DateTime<Utc>,
    pub dice: Option<f64>,
    pub pairs: i32,
    pub parameters: Vec<i32>,
    pub t: Vec<i32>,
    pub flags: Vec<i16>,
    pub vals: Vec<Option<f32>>,
}

/// A stream's history from its rows (any order) and its parameter sets by id.
pub(super) fn assemble(
    baseline_id: i64,
    baseline: Baseline,
    structure_is_mean: bool,
    sets: &BTreeMap<i32, Arc<Parameters>>,
    rows: Vec<HistoryRow>,
    max_cases: usize,
) -> Result<StreamHistory> {
    if rows.len() > max_cases {
        return Err(StoreError::HistoryTooLong { limit: max_cases });
    }
    let corrupt = |what: &str| StoreError::Corrupt(format!("detector history: {what}"));
    let mut steps = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(i) = row.parameters.iter().position(|id| sets.contains_key(id)) else {
            continue;
        };
        let id = row.parameters[i];
        let parameters = sets[&id].clone();
        let (Some(&t), Some(&flags)) = (row.t.get(i), row.flags.get(i)) else {
            return Err(corrupt("arrays of different lengths"));
        };
        let vals = row
            .vals
            .get(i * SLOTS..(i + 1) * SLOTS)
            .ok_or_else(|| corrupt("too few values"))?;
        let updates = parameters
            .designs
            .iter()
            .map(|design| {
                let detector = design.detector();
                let at = 3 * slot(detector);
                StoredUpdate {
                    detector,
                    input: vals[at],
                    statistic: vals[at + 1],
                    limit: vals[at + 2],
                    alarm: flags & alarm_bit(detector) != 0,
                }
            })
            .collect();
        steps.push(StoredStep {
            result_id: row.result_id,
            observed_at: row.observed_at,
            dice: row
                .dice
                .ok_or_else(|| corrupt("a fed case without its Dice"))?,
            t: t as u32,
            late: flags & LATE != 0,
            pairs: row.pairs,
            parameters_id: id,
            parameters,
            updates,
        });
    }
    steps.sort_by_key(|s| s.t);
    Ok(StreamHistory {
        baseline_id,
        baseline,
        structure_is_mean,
        steps,
    })
}

/// A statistic as `detector_state` keeps it (0 when undefined).
/// The score a history row's stream was fed: its stored value (Dice, mean
/// Dice or ECE), or the lesion sensitivity of its stored lesion results, as
/// the detectors saw it ([`Metric::score`]).
pub(super) fn fed_score(
    metric: Metric,
    value: Option<f64>,
    lesions: Option<&serde_json::Value>,
) -> Option<f64> {
    let value = match metric {
        Metric::LesionSensitivity => lesions.and_then(super::drift::lesion_sensitivity),
        Metric::Dice | Metric::Ece => value,
    };
    value.map(|v| metric.score(v))
}

pub(super) fn finite(statistic: f64) -> f64 {
    if statistic.is_finite() {
        statistic
    } else {
        0.0
    }
}

/// Parameter sets by id, from (id, JSON) rows.
pub(super) fn parse_sets(
    rows: Vec<(i32, serde_json::Value)>,
) -> Result<BTreeMap<i32, Arc<Parameters>>> {
    rows.into_iter()
        .map(|(id, json)| {
            let p: Parameters = serde_json::from_value(json)
                .map_err(|e| StoreError::Corrupt(format!("detector parameters: {e}")))?;
            Ok((id, Arc::new(p)))
        })
        .collect()
}
