//! Compact detector history: each stream's parameter set stored once
//! (`detector_parameters`, per baseline and for as long as it stays the same),
//! and one `detector_history` row per fed case holding every stream's step;
//! the latest step of each detector in `detector_state`. Read back a stream at
//! a time for audit and replay (`drift::replay`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use super::{Result, Store, StoreError};
use crate::drift::feed::{Parameters, StreamKey, StreamUpdate};
use crate::drift::replay::{ReplayCase, ReplayStep, first_alarm, replay};
use crate::drift::{Baseline, Detector, Update};
use crate::views::{HistoryAudit, HistoryStep, HistoryValue};

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

/// Stores a feed's history and the latest detector states: a few statements
/// per feed, whatever its number of cases.
pub(super) async fn save(
    tx: &mut Transaction<'_, Postgres>,
    updates: &[StreamUpdate],
) -> Result<()> {
    if updates.is_empty() {
        return Ok(());
    }
    let (sets, of_update) = parameter_sets(updates)?;
    let models: Vec<&str> = sets.iter().map(|s| s.key.model.as_str()).collect();
    let versions: Vec<&str> = sets.iter().map(|s| s.key.model_version.as_str()).collect();
    let sites: Vec<&str> = sets.iter().map(|s| s.key.stream.site.as_str()).collect();
    let structures: Vec<&str> = sets
        .iter()
        .map(|s| s.key.stream.structure.as_str())
        .collect();
    let baselines: Vec<i64> = sets.iter().map(|s| s.baseline_id).collect();
    let texts: Vec<&str> = sets.iter().map(|s| s.json.as_str()).collect();
    // New sets come back from the insert, known ones from the table (the
    // statement's snapshot does not see its own inserts).
    let found = sqlx::query!(
        r#"WITH i AS (
               SELECT m, v, s, st, b, p::jsonb AS p, n
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[])
                   WITH ORDINALITY AS i(m, v, s, st, b, p, n)),
           ins AS (
               INSERT INTO detector_parameters (model, model_version, site, structure, baseline_id, parameters)
               SELECT m, v, s, st, b, p FROM i
               ON CONFLICT (model, model_version, site, structure, baseline_id, md5(parameters::text)) DO NOTHING
               RETURNING id, model, model_version, site, structure, baseline_id, parameters)
           SELECT i.n AS "n!", coalesce(ins.id, old.id) AS "id!"
           FROM i
           LEFT JOIN ins ON (ins.model, ins.model_version, ins.site, ins.structure, ins.baseline_id, ins.parameters)
                          = (i.m, i.v, i.s, i.st, i.b, i.p)
           LEFT JOIN detector_parameters old
                  ON (old.model, old.model_version, old.site, old.structure, old.baseline_id, md5(old.parameters::text))
                   = (i.m, i.v, i.s, i.st, i.b, md5(i.p::text))"#,
        &models as &[&str],
        &versions as &[&str],
        &sites as &[&str],
        &structures as &[&str],
        &baselines,
        &texts as &[&str]
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut ids = vec![0; sets.len()];
    for r in found {
        ids[r.n as usize - 1] = r.id;
    }
    let set_ids: Vec<i32> = of_update.iter().map(|&n| ids[n]).collect();
    let batch = HistoryBatch::new(updates, &set_ids);
    let vals: Vec<f32> = batch.vals.iter().map(|v| v.unwrap_or(f32::NAN)).collect();
    sqlx::query!(
        "INSERT INTO detector_history (result_id, pairs, parameters, t, flags, vals)
         SELECT r.id, r.pairs, ($5::int4[])[r.lo:r.hi], ($6::int4[])[r.lo:r.hi], ($7::int2[])[r.lo:r.hi],
                ($8::float4[])[(r.lo - 1) * $9 + 1:r.hi * $9]
         FROM unnest($1::int8[], $2::int4[], $3::int4[], $4::int4[]) AS r(id, pairs, lo, hi)",
        &batch.result_ids,
        &batch.pairs,
        &batch.lo,
        &batch.hi,
        &batch.parameters,
        &batch.t,
        &batch.flags,
        &vals,
        SLOTS as i32
    )
    .execute(&mut **tx)
    .await?;
    save_states(tx, updates).await
}

async fn save_states(tx: &mut Transaction<'_, Postgres>, updates: &[StreamUpdate]) -> Result<()> {
    let states = latest_states(updates);
    let column =
        |f: fn(&StreamKey) -> &str| states.iter().map(|(k, _, _)| f(k)).collect::<Vec<_>>();
    let detectors: Vec<&str> = states.iter().map(|(_, _, u)| u.detector.as_str()).collect();
    sqlx::query!(
        "INSERT INTO detector_state (site, model, model_version, structure, detector, baseline_id, t, statistic, limit_value, alarm)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::int4[],
                              $8::float8[], $9::float8[], $10::bool[])
         ON CONFLICT (site, model, model_version, structure, detector) DO UPDATE
         SET baseline_id = EXCLUDED.baseline_id, t = EXCLUDED.t, statistic = EXCLUDED.statistic,
             limit_value = EXCLUDED.limit_value, alarm = EXCLUDED.alarm, updated_at = now()",
        &column(|k| k.stream.site.as_str()) as &[&str],
        &column(|k| k.model.as_str()) as &[&str],
        &column(|k| k.model_version.as_str()) as &[&str],
        &column(|k| k.stream.structure.as_str()) as &[&str],
        &detectors as &[&str],
        &states.iter().map(|(_, b, _)| *b).collect::<Vec<_>>(),
        &states.iter().map(|(_, _, u)| u.t as i32).collect::<Vec<_>>(),
        &states.iter().map(|(_, _, u)| finite(u.statistic)).collect::<Vec<_>>(),
        &states.iter().map(|(_, _, u)| u.limit).collect::<Vec<_>>(),
        &states.iter().map(|(_, _, u)| u.alarm).collect::<Vec<_>>()
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A statistic as `detector_state` keeps it (0 when undefined).
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

impl Store {
    /// The stored history of one stream (site or `all`, structure or `all`)
    /// under the latest baseline it ran on; None if it never ran.
    /// [`StoreError::HistoryTooLong`] beyond `max_cases` cases, read no further.
    pub async fn stream_history(
        &self,
        model: &str,
        version: &str,
        site: &str,
        structure: &str,
        max_cases: usize,
    ) -> Result<Option<StreamHistory>> {
        let pool = postgres_or!(self, lite => lite.stream_history(model, version, site, structure, max_cases));
        let Some(baseline_id) = sqlx::query_scalar!(
            "SELECT max(baseline_id) FROM detector_parameters
             WHERE model = $1 AND model_version = $2 AND site = $3 AND structure = $4",
            model,
            version,
            site,
            structure
        )
        .fetch_one(pool)
        .await
        .map_err(StoreError::classify)?
        else {
            return Ok(None);
        };
        let sets = sqlx::query!(
            "SELECT id, parameters FROM detector_parameters
             WHERE model = $1 AND model_version = $2 AND site = $3 AND structure = $4 AND baseline_id = $5",
            model,
            version,
            site,
            structure,
            baseline_id
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)?;
        let sets = parse_sets(sets.into_iter().map(|r| (r.id, r.parameters)).collect())?;
        let ids: Vec<i32> = sets.keys().copied().collect();
        let sample = sqlx::query_scalar!(
            "SELECT dice FROM baseline_samples WHERE baseline_id = $1 AND structure = $2",
            baseline_id,
            structure
        )
        .fetch_one(pool)
        .await
        .map_err(StoreError::classify)?;
        let baseline = Baseline::new(sample).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let rows = sqlx::query!(
            r#"SELECT h.result_id, r.observed_at, h.pairs, h.parameters, h.t, h.flags, h.vals,
                      CASE WHEN $4 = 'all' THEN r.mean_dice ELSE s.dice END AS dice
               FROM detector_history h
               JOIN results r ON r.id = h.result_id
               LEFT JOIN structure_results s ON s.result_id = h.result_id AND s.structure = $4
               WHERE r.model = $1 AND r.model_version = $2 AND ($3 = 'all' OR r.site = $3)
                 AND h.parameters && $5::int4[]
               LIMIT $6"#,
            model,
            version,
            site,
            structure,
            &ids,
            max_cases as i64 + 1
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)?;
        let rows = rows
            .into_iter()
            .map(|r| HistoryRow {
                result_id: r.result_id,
                observed_at: r.observed_at,
                dice: r.dice,
                pairs: r.pairs,
                parameters: r.parameters,
                t: r.t,
                flags: r.flags,
                vals: r
                    .vals
                    .into_iter()
                    .map(|v| v.is_finite().then_some(v))
                    .collect(),
            })
            .collect();
        assemble(
            baseline_id,
            baseline,
            structure == super::ALL,
            &sets,
            rows,
            max_cases,
        )
        .map(Some)
    }
}
