//! Baselines, stream states, detector history and incidents, for the pure
//! drift feed (`drift::feed`), as in the PostgreSQL store.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use super::{Lite, at, classify, json, now, parse};
use crate::drift::feed::{
    FeedSettings, Feeder, ScoredCase, StreamKey, StreamRecord, VersionContext,
};
use crate::drift::incident::{Incident, Incidents, StreamId};
use crate::drift::{Baseline, Metric};
use crate::store::Result;
use crate::store::drift::{
    ActiveStream, CaseValues, DetectorRow, EvidenceRow, IncidentRow, IncidentStreamRow,
    NotifiedAlert, OpenIncident, OpenIncidentRow, Samples, WatchedValues, active_stream,
    add_values, assemble_incidents, failure_thresholds, lesion_sensitivity, parse_metric,
    sample_of, stored_values, summary, watched_metrics,
};
use crate::store::rollups::{WindowStart, WindowSum};
use crate::views::{BaselineInfo, BaselineStructure, IncidentView, Stratum};

/// Streams count as active while their latest case is this recent, relative
/// to the latest case of any stream.
const ACTIVE_STREAM_DAYS: i64 = 30;

/// The cut-off of active streams: 30 days before the latest case time of any
/// stream (or of `also`); None when there is no stream.
async fn active_since(
    conn: &mut SqliteConnection,
    also: Option<DateTime<Utc>>,
) -> Result<Option<String>> {
    let latest: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT max(latest_at) FROM drift_streams")
            .fetch_one(&mut *conn)
            .await
            .map_err(classify)?;
    Ok(latest
        .into_iter()
        .chain(also)
        .max()
        .map(|t| at(t - chrono::Duration::days(ACTIVE_STREAM_DAYS))))
}

/// The baseline samples of a baseline, by metric and structure.
async fn load_samples(conn: &mut SqliteConnection, baseline_id: i64) -> Result<Samples> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT structure, metric, dice FROM baseline_samples WHERE baseline_id = $1",
    )
    .bind(baseline_id)
    .fetch_all(&mut *conn)
    .await
    .map_err(classify)?;
    rows.into_iter()
        .map(|(structure, metric, dice)| {
            let metric = parse_metric(&metric)?;
            let values: Vec<f64> = parse("baseline sample", &dice)?;
            Ok(((metric, structure), sample_of(metric, values)?))
        })
        .collect()
}

/// Stored lesion results (JSON text), parsed.
fn lesions_json(text: Option<&str>) -> Option<serde_json::Value> {
    text.and_then(|t| serde_json::from_str(t).ok())
}

impl Lite {
    /// See [`crate::store::Store::create_baseline`].
    pub async fn create_baseline(
        &self,
        model: &str,
        version: &str,
        source: &str,
        description: Option<&str>,
        created_by: &str,
        samples: &Samples,
    ) -> Result<BaselineInfo> {
        let mut tx = self.begin().await?;
        let created = now();
        sqlx::query(
            "UPDATE baselines SET active = 0 WHERE model = $1 AND model_version = $2 AND active",
        )
        .bind(model)
        .bind(version)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        let (id, number, created_at): (i64, i32, DateTime<Utc>) = sqlx::query_as(
            "INSERT INTO baselines (model, model_version, version, source, description, created_by, created_at)
             VALUES ($1, $2, (SELECT coalesce(max(version), 0) + 1 FROM baselines WHERE model = $1 AND model_version = $2),
                     $3, $4, $5, $6)
             RETURNING id, version, created_at",
        )
        .bind(model)
        .bind(version)
        .bind(source)
        .bind(description)
        .bind(created_by)
        .bind(&created)
        .fetch_one(&mut *tx)
        .await
        .map_err(classify)?;
        for ((metric, structure), baseline) in samples {
            sqlx::query(
                "INSERT INTO baseline_samples (baseline_id, structure, metric, dice) VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(structure)
            .bind(metric.as_str())
            .bind(json(&stored_values(*metric, baseline))?)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        for table in ["detector_state", "drift_streams"] {
            let sql = format!("DELETE FROM {table} WHERE model = $1 AND model_version = $2");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(model)
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
        }
        // A new baseline accepts the current quality: what was open closes.
        sqlx::query(
            "UPDATE incidents SET resolved_at = $3, resolution = 'new_baseline'
             WHERE model = $1 AND model_version = $2 AND resolved_at IS NULL",
        )
        .bind(model)
        .bind(version)
        .bind(&created)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(BaselineInfo {
            model: model.into(),
            model_version: version.into(),
            version: number,
            source: source.into(),
            description: description.map(str::to_owned),
            created_by: created_by.into(),
            created_at,
            structures: samples
                .iter()
                .map(|((m, s), b)| summary(*m, s, b))
                .collect(),
        })
    }

    /// The active baseline of a model version.
    pub async fn active_baseline(
        &self,
        model: &str,
        version: &str,
    ) -> Result<Option<BaselineInfo>> {
        let mut conn = self.reader.acquire().await.map_err(classify)?;
        type Row = (i64, i32, String, Option<String>, String, DateTime<Utc>);
        let Some((id, number, source, description, created_by, created_at)): Option<Row> =
            sqlx::query_as(
                "SELECT id, version, source, description, created_by, created_at FROM baselines
                 WHERE model = $1 AND model_version = $2 AND active",
            )
            .bind(model)
            .bind(version)
            .fetch_optional(&mut *conn)
            .await
            .map_err(classify)?
        else {
            return Ok(None);
        };
        let samples = load_samples(&mut conn, id).await?;
        Ok(Some(BaselineInfo {
            model: model.into(),
            model_version: version.into(),
            version: number,
            source,
            description,
            created_by,
            created_at,
            structures: samples
                .iter()
                .map(|((m, s), b)| summary(*m, s, b))
                .collect(),
        }))
    }

    /// See [`crate::store::Store::first_scored`].
    pub async fn first_scored(
        &self,
        model: &str,
        version: &str,
        cases: i64,
    ) -> Result<Vec<CaseValues>> {
        type Row = (i64, String, Option<f64>, Option<f64>, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(
            "WITH first AS (
                 SELECT min(id) AS id FROM results WHERE model = $1 AND model_version = $2 GROUP BY case_id),
             chosen AS (
                 SELECT r.id, r.observed_at FROM first JOIN results r ON r.id = first.id
                 ORDER BY r.observed_at, r.id LIMIT $3)
             SELECT f.id, s.structure, CASE WHEN s.pred_voxels > 0 OR s.ref_voxels > 0 THEN s.dice END,
                    s.ece, l.metrics
             FROM chosen f JOIN structure_results s ON s.result_id = f.id
             LEFT JOIN lesion_results l ON l.result_id = f.id AND l.structure = s.structure
             ORDER BY f.observed_at, f.id",
        )
        .bind(model)
        .bind(version)
        .bind(cases)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        let mut by_case: Vec<(i64, CaseValues)> = Vec::new();
        for (id, structure, dice, ece, lesions) in rows {
            if by_case.last().is_none_or(|(last, _)| *last != id) {
                by_case.push((id, CaseValues::new()));
            }
            if let Some((_, case)) = by_case.last_mut() {
                let sensitivity = lesions_json(lesions.as_deref())
                    .as_ref()
                    .and_then(lesion_sensitivity);
                add_values(case, &structure, dice, ece, sensitivity);
            }
        }
        Ok(by_case
            .into_iter()
            .map(|(_, m)| m)
            .filter(|m| !m.is_empty())
            .collect())
    }

    /// See [`crate::store::Store::incidents`].
    pub async fn incident_ids(&self, site: Option<&str>, all: bool) -> Result<Vec<i64>> {
        sqlx::query_scalar(
            "SELECT i.id FROM incidents i
             WHERE ($2 OR i.resolved_at IS NULL)
               AND ($1 IS NULL OR i.site = $1
                    OR EXISTS (SELECT 1 FROM incident_streams s WHERE s.incident_id = i.id AND s.site = $1))
             ORDER BY i.id DESC LIMIT 1000",
        )
        .bind(site)
        .bind(all)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)
    }

    /// Incidents with these ids, newest first.
    pub async fn incident_views(&self, ids: &[i64]) -> Result<Vec<IncidentView>> {
        let ids = json(&ids)?;
        let rows: Vec<IncidentRow> = sqlx::query_as(
            "SELECT id, site, model, model_version, structure, metric, detector, opened_at, observed_at, last_alarm_at,
                    statistic, limit_value, acknowledged_at, acknowledged_by, note, resolved_at, resolution
             FROM incidents WHERE id IN (SELECT value FROM json_each($1)) ORDER BY id DESC",
        )
        .bind(&ids)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        let streams: Vec<IncidentStreamRow> = sqlx::query_as(
            "SELECT incident_id, site, structure, detector, first_alarm_at, last_alarm_at
             FROM incident_streams WHERE incident_id IN (SELECT value FROM json_each($1))
             ORDER BY incident_id, first_alarm_at, site, structure, detector",
        )
        .bind(&ids)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        Ok(assemble_incidents(rows, streams))
    }

    /// Acknowledges an incident; false if there is none with this id.
    pub async fn acknowledge(&self, id: i64, by: &str, note: Option<&str>) -> Result<bool> {
        let updated = sqlx::query(
            "UPDATE incidents SET acknowledged_at = coalesce(acknowledged_at, $4),
                    acknowledged_by = coalesce(acknowledged_by, $2), note = coalesce($3, note)
             WHERE id = $1",
        )
        .bind(id)
        .bind(by)
        .bind(note)
        .bind(now())
        .execute(&self.writer)
        .await
        .map_err(classify)?;
        Ok(updated.rows_affected() == 1)
    }

    /// Open incidents, for metrics.
    pub async fn open_incidents(&self) -> Result<Vec<OpenIncident>> {
        let rows: Vec<(i64, String, String, String, String, String, String)> = sqlx::query_as(
            "SELECT id, site, model, model_version, structure, metric, detector FROM incidents WHERE resolved_at IS NULL",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(
                |(id, site, model, model_version, structure, metric, detector)| OpenIncident {
                    id,
                    site,
                    model,
                    model_version,
                    structure,
                    metric,
                    detector,
                },
            )
            .collect())
    }

    /// See [`crate::store::Store::active_stream_states`].
    pub async fn active_stream_states(&self) -> Result<Vec<ActiveStream>> {
        let mut conn = self.reader.acquire().await.map_err(classify)?;
        let Some(since) = active_since(&mut conn, None).await? else {
            return Ok(Vec::new());
        };
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT site, structure, metric, state FROM drift_streams WHERE latest_at > $1",
        )
        .bind(since)
        .fetch_all(&mut *conn)
        .await
        .map_err(classify)?;
        rows.into_iter()
            .map(|(site, structure, metric, state)| {
                active_stream(
                    site,
                    structure,
                    &metric,
                    parse("drift stream state", &state)?,
                )
            })
            .collect()
    }

    /// Size of the smallest active baseline sample.
    pub async fn smallest_active_baseline(&self) -> Result<Option<i64>> {
        sqlx::query_scalar(
            "SELECT min(json_array_length(s.dice)) FROM baselines b
             JOIN baseline_samples s ON s.baseline_id = b.id WHERE b.active",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(classify)
    }

    /// Active streams, and their (stream, detector) pairs.
    pub async fn active_streams(&self) -> Result<(i64, i64)> {
        let mut conn = self.reader.acquire().await.map_err(classify)?;
        let Some(since) = active_since(&mut conn, None).await? else {
            return Ok((0, 0));
        };
        sqlx::query_as(
            "SELECT count(*), coalesce(sum(pairs), 0) FROM drift_streams WHERE latest_at > $1",
        )
        .bind(since)
        .fetch_one(&mut *conn)
        .await
        .map_err(classify)
    }

    /// See [`crate::store::Store::detector_states`].
    pub async fn detector_states(&self, days: u32) -> Result<Vec<DetectorRow>> {
        sqlx::query_as(
            r#"SELECT site, model, model_version, structure, metric, detector, statistic, limit_value AS "limit", alarm
               FROM detector_state WHERE updated_at > $1"#,
        )
        .bind(at(Utc::now() - chrono::Duration::days(i64::from(days))))
        .fetch_all(&self.reader)
        .await
        .map_err(classify)
    }

    /// Active baselines: (model, version, summary).
    pub async fn baseline_gauges(&self) -> Result<Vec<(String, String, BaselineStructure)>> {
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT b.model, b.model_version, s.structure, s.dice FROM baselines b
             JOIN baseline_samples s ON s.baseline_id = b.id WHERE b.active AND s.metric = 'dice'",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        let mut gauges = Vec::with_capacity(rows.len());
        for (model, version, structure, dice) in rows {
            if let Ok(baseline) = Baseline::new(parse("baseline sample", &dice)?) {
                gauges.push((model, version, summary(Metric::Dice, &structure, &baseline)));
            }
        }
        Ok(gauges)
    }

    /// Sums and case counts per site stream over a rolling window.
    pub async fn rolling_sums(&self, start: WindowStart) -> Result<Vec<WindowSum>> {
        let (table, bucket, from) = match start {
            WindowStart::Hour(hour) => ("dice_hourly", "hour", at(hour)),
            WindowStart::Day(day) => ("dice_daily", "day", day.format("%Y-%m-%d").to_string()),
        };
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT site, model, model_version, structure, sum(dice_sum) AS dice_sum, sum(cases) AS cases,
                    sum(soft_dice_sum) AS soft_dice_sum, sum(ece_sum) AS ece_sum,
                    sum(probabilistic_cases) AS probabilistic_cases
             FROM {table} WHERE {bucket} >= $1 GROUP BY site, model, model_version, structure"
        )))
        .bind(from)
        .fetch_all(&self.reader)
        .await
        .map_err(classify)
    }

    /// Unix time of the latest accepted upload per site and role.
    pub async fn last_uploads(&self) -> Result<Vec<(String, String, f64)>> {
        let rows: Vec<(String, String, DateTime<Utc>)> =
            sqlx::query_as("SELECT site, role, last_received_at FROM site_uploads")
                .fetch_all(&self.reader)
                .await
                .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|(site, role, t)| (site, role, t.timestamp_micros() as f64 / 1e6))
            .collect())
    }

    /// Strata of recent cases of a stream: (attribute, value, cases, mean Dice).
    pub async fn strata(
        &self,
        site: &str,
        model: &str,
        version: &str,
        structure: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<Stratum>> {
        let rows: Vec<(String, String, i64, f64)> = sqlx::query_as(
            "WITH cases AS (
                 SELECT r.acquisition AS a, CASE WHEN $4 = 'all' THEN r.mean_dice ELSE s.dice END AS dice
                 FROM results r LEFT JOIN structure_results s ON s.result_id = r.id AND s.structure = $4
                 WHERE r.model = $2 AND r.model_version = $3 AND ($1 = 'all' OR r.site = $1) AND r.observed_at >= $5
                   AND ($4 = 'all' OR ((s.pred_voxels > 0 OR s.ref_voxels > 0) AND s.dice IS NOT NULL))),
             attributes AS (
                 SELECT 'scanner_manufacturer' AS attribute, json_extract(a, '$.scanner_manufacturer') AS value, dice FROM cases
                 UNION ALL SELECT 'scanner_model', json_extract(a, '$.scanner_model'), dice FROM cases
                 UNION ALL SELECT 'protocol', json_extract(a, '$.protocol'), dice FROM cases
                 UNION ALL SELECT 'slice_thickness_band',
                     CASE WHEN json_extract(a, '$.slice_thickness_mm') IS NULL THEN NULL
                          WHEN CAST(json_extract(a, '$.slice_thickness_mm') AS REAL) <= 1.0 THEN '<= 1 mm'
                          WHEN CAST(json_extract(a, '$.slice_thickness_mm') AS REAL) <= 2.5 THEN '1-2.5 mm'
                          WHEN CAST(json_extract(a, '$.slice_thickness_mm') AS REAL) <= 5.0 THEN '2.5-5 mm'
                          ELSE '> 5 mm' END, dice FROM cases)
             SELECT attribute, CAST(value AS TEXT), count(*), avg(dice)
             FROM attributes WHERE value IS NOT NULL AND dice IS NOT NULL
             GROUP BY attribute, value",
        )
        .bind(site)
        .bind(model)
        .bind(version)
        .bind(structure)
        .bind(at(since))
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(|(attribute, value, cases, mean_dice)| Stratum {
                attribute,
                value,
                cases,
                mean_dice,
                drop: 0.0,
            })
            .collect())
    }

    /// See [`crate::store::Store::feed_drift`]. Reads from one snapshot and
    /// computes without the write lock (a new design's limits take seconds,
    /// which would hold up every upload), then writes in one transaction that
    /// first claims the batch: if another process fed it meanwhile, nothing is
    /// written and the next call starts from the state it left.
    pub async fn feed_drift(
        &self,
        feeder: &mut Feeder,
        settings: &FeedSettings,
        lateness: std::time::Duration,
        batch: i64,
        exclude_ambiguous: bool,
    ) -> Result<usize> {
        let mut tx = self.reader.begin().await.map_err(classify)?;
        let scored_before =
            at(Utc::now() - chrono::Duration::from_std(lateness).unwrap_or(chrono::Duration::MAX));
        type ResultRow = (i64, String, String, String, Option<f64>, DateTime<Utc>);
        let rows: Vec<ResultRow> = sqlx::query_as(
            "SELECT id, site, model, model_version, mean_dice, observed_at FROM results
             WHERE drift_pending AND scored_at <= $1 ORDER BY observed_at, id LIMIT $2",
        )
        .bind(&scored_before)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?;
        if rows.is_empty() {
            return Ok(0);
        }
        let ids = json(&rows.iter().map(|r| r.0).collect::<Vec<_>>())?;
        let mut dice: BTreeMap<i64, Vec<(String, f64)>> = BTreeMap::new();
        let mut ambiguous = BTreeSet::new();
        let mut ambiguous_structures = BTreeSet::new();
        let structures: Vec<(i64, String, f64, bool)> = sqlx::query_as(
            "SELECT s.result_id, s.structure, s.dice,
                    $2 AND EXISTS (SELECT 1 FROM results r JOIN reader_agreement a
                                     ON a.case_id = r.case_id AND a.model = r.model AND a.model_version = r.model_version
                                   WHERE r.id = s.result_id AND a.structure = s.structure AND a.ambiguous)
             FROM structure_results s
             WHERE s.result_id IN (SELECT value FROM json_each($1)) AND (s.pred_voxels > 0 OR s.ref_voxels > 0)
               AND s.dice IS NOT NULL
             ORDER BY s.result_id, s.position",
        )
        .bind(&ids)
        .bind(exclude_ambiguous)
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?;
        for (result_id, structure, value, is_ambiguous) in structures {
            if is_ambiguous {
                ambiguous.insert(result_id);
                ambiguous_structures.insert((result_id, structure));
            } else {
                dice.entry(result_id).or_default().push((structure, value));
            }
        }
        let mut watched = WatchedValues::default();
        let others: Vec<(i64, String, Option<f64>, Option<String>)> = sqlx::query_as(
            "SELECT s.result_id, s.structure, s.ece, l.metrics
             FROM structure_results s
             LEFT JOIN lesion_results l ON l.result_id = s.result_id AND l.structure = s.structure
             WHERE s.result_id IN (SELECT value FROM json_each($1)) AND (s.ece IS NOT NULL OR l.metrics IS NOT NULL)",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?;
        for (result_id, structure, ece, lesions) in others {
            if !ambiguous_structures.contains(&(result_id, structure.clone())) {
                let sensitivity = lesions_json(lesions.as_deref())
                    .as_ref()
                    .and_then(lesion_sensitivity);
                watched.add(result_id, &structure, ece, sensitivity);
            }
        }
        let cases: Vec<ScoredCase> = rows
            .into_iter()
            .map(
                |(result_id, site, model, model_version, mean_dice, observed_at)| ScoredCase {
                    structures: dice.remove(&result_id).unwrap_or_default(),
                    result_id,
                    site,
                    model,
                    model_version,
                    observed_at,
                    // A case with an ambiguous structure leaves the mean-Dice streams.
                    mean_dice: mean_dice.filter(|_| !ambiguous.contains(&result_id)),
                    watched: watched.take(result_id),
                },
            )
            .collect();
        let mut contexts = BTreeMap::new();
        for case in &cases {
            let version = (case.model.clone(), case.model_version.clone());
            if !contexts.contains_key(&version)
                && let Some(context) = version_context(&mut tx, &version.0, &version.1).await?
            {
                contexts.insert(version, context);
            }
        }
        let mut streams = BTreeMap::new();
        for (model, version) in contexts.keys() {
            let rows: Vec<(String, String, String, i64, String, i64)> = sqlx::query_as(
                "SELECT site, structure, metric, baseline_id, state, pairs FROM drift_streams
                 WHERE model = $1 AND model_version = $2",
            )
            .bind(model)
            .bind(version)
            .fetch_all(&mut *tx)
            .await
            .map_err(classify)?;
            for (site, structure, metric, baseline_id, state, pairs) in rows {
                let key = StreamKey {
                    model: model.clone(),
                    model_version: version.clone(),
                    stream: StreamId {
                        site,
                        structure,
                        metric: parse_metric(&metric)?,
                    },
                };
                let record = StreamRecord {
                    baseline_id,
                    state: parse("drift stream state", &state)?,
                    pairs: pairs as usize,
                    changed: false,
                };
                streams.insert(key, record);
            }
        }
        let latest = cases.iter().map(|c| c.observed_at).max();
        let active_pairs: i64 = match active_since(&mut tx, latest).await? {
            Some(since) => sqlx::query_scalar(
                "SELECT coalesce(sum(pairs), 0) FROM drift_streams WHERE latest_at > $1",
            )
            .bind(since)
            .fetch_one(&mut *tx)
            .await
            .map_err(classify)?,
            None => 0,
        };
        tx.commit().await.map_err(classify)?;
        // CPU work: off the async worker threads, as in the PostgreSQL store.
        let updates = tokio::task::block_in_place(|| {
            feeder.feed(
                settings,
                &cases,
                &mut streams,
                &mut contexts,
                active_pairs as usize,
            )
        });
        let mut tx = self.begin().await?;
        let claimed = sqlx::query(
            "UPDATE results SET drift_pending = 0 WHERE id IN (SELECT value FROM json_each($1)) AND drift_pending",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        if claimed.rows_affected() != cases.len() as u64 {
            return Ok(0);
        }
        let written = now();
        for (key, record) in streams.iter().filter(|(_, r)| r.changed) {
            save_stream(&mut tx, key, record, &written).await?;
        }
        super::history::save(&mut tx, &updates, &written).await?;
        for ((model, version), context) in &mut contexts {
            for incident in context.incidents.open.iter_mut().filter(|i| i.changed) {
                save_incident(&mut tx, model, version, incident, &written).await?;
            }
            for (incident, closed_at) in &mut context.closed {
                save_incident(&mut tx, model, version, incident, &written).await?;
                sqlx::query(
                    "UPDATE incidents SET resolved_at = $3, resolution = 'back_in_control', closed_observed_at = $2
                     WHERE id = $1 AND resolved_at IS NULL",
                )
                .bind(incident.id)
                .bind(at(*closed_at))
                .bind(&written)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
            }
        }
        sqlx::query(
            "UPDATE results SET drift_pending = 0 WHERE id IN (SELECT value FROM json_each($1))",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(cases.len())
    }

    /// Records the alerts of a delivered notification; returns how many.
    pub async fn record_notification(
        &self,
        receiver: &str,
        alerts: &[NotifiedAlert],
    ) -> Result<usize> {
        let mut tx = self.begin().await?;
        let received = now();
        for alert in alerts {
            let name = alert.labels.get("alertname").and_then(|v| v.as_str());
            sqlx::query(
                "INSERT INTO notifications (received_at, receiver, status, alertname, labels, annotations, starts_at, ends_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&received)
            .bind(receiver)
            .bind(&alert.status)
            .bind(name)
            .bind(json(&alert.labels)?)
            .bind(json(&alert.annotations)?)
            .bind(alert.starts_at.map(at))
            .bind(alert.ends_at.map(at))
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)?;
        Ok(alerts.len())
    }
}

/// A model version's active baseline, failure thresholds and open incidents;
/// None without an active baseline.
async fn version_context(
    conn: &mut SqliteConnection,
    model: &str,
    version: &str,
) -> Result<Option<VersionContext>> {
    let Some(baseline_id): Option<i64> = sqlx::query_scalar(
        "SELECT id FROM baselines WHERE model = $1 AND model_version = $2 AND active",
    )
    .bind(model)
    .bind(version)
    .fetch_optional(&mut *conn)
    .await
    .map_err(classify)?
    else {
        return Ok(None);
    };
    let samples = load_samples(conn, baseline_id).await?;
    let schema: Option<String> = sqlx::query_scalar(
        "SELECT schema FROM model_schemas WHERE model = $1 AND model_version = $2",
    )
    .bind(model)
    .bind(version)
    .fetch_optional(&mut *conn)
    .await
    .map_err(classify)?;
    let schema: Option<crate::schema::Schema> = schema.and_then(|s| serde_json::from_str(&s).ok());
    let failure_thresholds = failure_thresholds(schema.as_ref());
    let watched = watched_metrics(schema.as_ref());
    let rows: Vec<OpenIncidentRow> = sqlx::query_as(
        "SELECT id, site, structure, metric, detector, observed_at, last_alarm_at, statistic, limit_value FROM incidents
         WHERE model = $1 AND model_version = $2 AND resolved_at IS NULL ORDER BY id",
    )
    .bind(model)
    .bind(version)
    .fetch_all(&mut *conn)
    .await
    .map_err(classify)?;
    let mut open = Vec::with_capacity(rows.len());
    for row in rows {
        let streams: Vec<EvidenceRow> = sqlx::query_as(
            "SELECT site, structure, detector, first_alarm_at, last_alarm_at FROM incident_streams WHERE incident_id = $1",
        )
        .bind(row.id)
        .fetch_all(&mut *conn)
        .await
        .map_err(classify)?;
        open.push(row.into_incident(streams)?);
    }
    Ok(Some(VersionContext {
        baseline_id,
        samples,
        failure_thresholds,
        watched,
        incidents: Incidents { open },
        closed: Vec::new(),
    }))
}

async fn save_stream(
    conn: &mut SqliteConnection,
    key: &StreamKey,
    record: &StreamRecord,
    written: &str,
) -> Result<()> {
    let latest = record.state.latest_at.unwrap_or_else(Utc::now);
    sqlx::query(
        "INSERT INTO drift_streams (model, model_version, site, structure, baseline_id, state, pairs, latest_at, updated_at,
                                   metric)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (model, model_version, site, structure, metric) DO UPDATE
         SET baseline_id = $5, state = $6, pairs = $7, latest_at = $8, updated_at = $9",
    )
    .bind(&key.model)
    .bind(&key.model_version)
    .bind(&key.stream.site)
    .bind(&key.stream.structure)
    .bind(record.baseline_id)
    .bind(json(&record.state)?)
    .bind(record.pairs as i64)
    .bind(at(latest))
    .bind(written)
    .bind(key.stream.metric.as_str())
    .execute(&mut *conn)
    .await
    .map_err(classify)?;
    Ok(())
}

/// Inserts a new incident (setting its id) or updates an open one, with its streams.
async fn save_incident(
    conn: &mut SqliteConnection,
    model: &str,
    version: &str,
    incident: &mut Incident,
    written: &str,
) -> Result<()> {
    let id = match incident.id {
        Some(id) => {
            sqlx::query("UPDATE incidents SET last_alarm_at = $2 WHERE id = $1")
                .bind(id)
                .bind(at(incident.last_alarm_at))
                .execute(&mut *conn)
                .await
                .map_err(classify)?;
            id
        }
        None => {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO incidents (site, model, model_version, structure, detector, opened_at, observed_at,
                                        last_alarm_at, statistic, limit_value, metric)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
            )
            .bind(&incident.stream.site)
            .bind(model)
            .bind(version)
            .bind(&incident.stream.structure)
            .bind(incident.detector.as_str())
            .bind(written)
            .bind(at(incident.observed_at))
            .bind(at(incident.last_alarm_at))
            .bind(if incident.statistic.is_finite() {
                incident.statistic
            } else {
                0.0
            })
            .bind(incident.limit)
            .bind(incident.stream.metric.as_str())
            .fetch_one(&mut *conn)
            .await
            .map_err(classify)?;
            incident.id = Some(id);
            id
        }
    };
    for e in &incident.streams {
        sqlx::query(
            "INSERT INTO incident_streams (incident_id, site, structure, detector, first_alarm_at, last_alarm_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (incident_id, site, structure, detector) DO UPDATE SET last_alarm_at = $6",
        )
        .bind(id)
        .bind(&e.site)
        .bind(&e.structure)
        .bind(e.detector.as_str())
        .bind(at(e.first_alarm_at))
        .bind(at(e.last_alarm_at))
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    }
    incident.changed = false;
    Ok(())
}
