//! Baselines, stream states, detector history and incidents: persisted for
//! the pure drift feed (`drift::feed`), which decides everything.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use super::rollups::{Rolling, WindowStart, WindowSum};
use super::{Result, Store, StoreError};
use crate::drift::feed::{
    FeedSettings, Feeder, ScoredCase, StreamKey, StreamRecord, VersionContext,
};
use crate::drift::incident::{Evidence, Incident, Incidents, StreamId};
use crate::drift::{Baseline, Detector, Metric, StreamState};
use crate::views::{BaselineInfo, BaselineStructure, IncidentStream, IncidentView, Stratum};

/// The stream key used for pooled sites and for a site's mean Dice.
pub const ALL: &str = crate::drift::incident::ALL;

/// Lock held by the one process feeding drift streams at a time.
pub(super) const FEED_LOCK: i64 = 0x5365_6777_6472_6966;

/// An open incident, for metrics.
#[derive(Debug, Clone)]
pub struct OpenIncident {
    pub id: i64,
    pub site: String,
    pub model: String,
    pub model_version: String,
    pub structure: String,
    pub metric: String,
    pub detector: String,
}

/// A detector's current state, for metrics.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DetectorRow {
    pub site: String,
    pub model: String,
    pub model_version: String,
    pub structure: String,
    pub metric: String,
    pub detector: String,
    pub statistic: f64,
    pub limit: f64,
    pub alarm: bool,
}

/// Baseline samples of a model version: (metric, structure or `all`) →
/// sample of scores ([`Metric::score`]).
pub type Samples = BTreeMap<(Metric, String), Baseline>;

/// What the API shows of one structure's baseline sample, in the metric's
/// own units (quantiles of the worse tail: for ECE its 95th and 75th
/// percentiles).
pub(super) fn summary(metric: Metric, structure: &str, baseline: &Baseline) -> BaselineStructure {
    BaselineStructure {
        structure: structure.to_owned(),
        metric: metric.as_str().to_owned(),
        cases: baseline.len(),
        mean: metric.value(baseline.mean()),
        p05: metric.value(baseline.quantile(0.05)),
        p25: metric.value(baseline.quantile(0.25)),
        note: crate::drift::baseline_note(baseline),
    }
}

/// A stored sample (values as scored) as the detectors see it.
pub(super) fn sample_of(metric: Metric, values: Vec<f64>) -> Result<Baseline> {
    Baseline::new(values.into_iter().map(|v| metric.score(v)).collect())
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A sample's values as stored: as scored, not as scores.
pub(super) fn stored_values(metric: Metric, baseline: &Baseline) -> Vec<f64> {
    baseline.values().iter().map(|&v| metric.value(v)).collect()
}

/// A stream of the last 30 days of case time, for the alert plan.
#[derive(Debug, Clone)]
pub struct ActiveStream {
    /// Site, or "all" for a pooled stream.
    pub site: String,
    /// Structure, or "all" for the per-case mean.
    pub structure: String,
    /// The metric it watches.
    pub metric: Metric,
    /// Its detector state.
    pub state: StreamState,
}

/// An active stream from its stored columns.
pub(super) fn active_stream(
    site: String,
    structure: String,
    metric: &str,
    state: serde_json::Value,
) -> Result<ActiveStream> {
    Ok(ActiveStream {
        site,
        structure,
        metric: parse_metric(metric)?,
        state: serde_json::from_value(state)
            .map_err(|e| StoreError::Corrupt(format!("drift stream state: {e}")))?,
    })
}

/// A metric name read from the database.
pub(super) fn parse_metric(name: &str) -> Result<Metric> {
    Metric::parse(name).ok_or_else(|| StoreError::Corrupt(format!("drift metric {name}")))
}

/// Per-case values of the first scored cases: (metric, structure) → value
/// as scored. Dice of structures empty on both sides, ECE without
/// probabilities and lesion sensitivity without reference lesions are left out.
pub type CaseValues = BTreeMap<(Metric, String), f64>;

/// Adds one structure's values of a case to `case`.
pub(super) fn add_values(
    case: &mut CaseValues,
    structure: &str,
    dice: Option<f64>,
    ece: Option<f64>,
    sensitivity: Option<f64>,
) {
    for (metric, value) in [
        (Metric::Dice, dice),
        (Metric::Ece, ece),
        (Metric::LesionSensitivity, sensitivity),
    ] {
        if let Some(value) = value.filter(|v| v.is_finite()) {
            case.insert((metric, structure.to_owned()), value);
        }
    }
}

/// Lesion-wise sensitivity of a stored `lesion_results` row: detected over
/// reference lesions; None without reference lesions.
pub(super) fn lesion_sensitivity(metrics: &serde_json::Value) -> Option<f64> {
    let count = |field: &str| metrics.get(field).and_then(serde_json::Value::as_f64);
    let reference = count("ref_instances").filter(|&n| n > 0.0)?;
    Some(count("tp")? / reference)
}

impl Store {
    /// Freezes a new baseline version for a model version (the previous one is
    /// kept, inactive) and restarts its detectors.
    pub async fn create_baseline(
        &self,
        model: &str,
        version: &str,
        source: &str,
        description: Option<&str>,
        created_by: &str,
        samples: &Samples,
    ) -> Result<BaselineInfo> {
        let pool = postgres_or!(self, lite => lite.create_baseline(model, version, source, description, created_by, samples));
        let mut tx = pool.begin().await.map_err(StoreError::classify)?;
        sqlx::query!(
            "SELECT pg_advisory_xact_lock(hashtext($1 || '/' || $2))",
            model,
            version
        )
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query!("UPDATE baselines SET active = false WHERE model = $1 AND model_version = $2 AND active", model, version)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query!(
            "INSERT INTO baselines (model, model_version, version, source, description, created_by)
             VALUES ($1, $2, (SELECT coalesce(max(version), 0) + 1 FROM baselines WHERE model = $1 AND model_version = $2), $3, $4, $5)
             RETURNING id, version, created_at",
            model,
            version,
            source,
            description,
            created_by
        )
        .fetch_one(&mut *tx)
        .await?;
        for ((metric, structure), baseline) in samples {
            sqlx::query!(
                "INSERT INTO baseline_samples (baseline_id, structure, metric, dice) VALUES ($1, $2, $3, $4)",
                row.id,
                structure,
                metric.as_str(),
                &stored_values(*metric, baseline)
            )
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query!(
            "DELETE FROM detector_state WHERE model = $1 AND model_version = $2",
            model,
            version
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "DELETE FROM drift_streams WHERE model = $1 AND model_version = $2",
            model,
            version
        )
        .execute(&mut *tx)
        .await?;
        // A new baseline accepts the current quality: what was open closes.
        sqlx::query!(
            "UPDATE incidents SET resolved_at = now(), resolution = 'new_baseline'
             WHERE model = $1 AND model_version = $2 AND resolved_at IS NULL",
            model,
            version
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(BaselineInfo {
            model: model.into(),
            model_version: version.into(),
            version: row.version,
            source: source.into(),
            description: description.map(str::to_owned),
            created_by: created_by.into(),
            created_at: row.created_at,
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
        let pool = postgres_or!(self, lite => lite.active_baseline(model, version));
        let Some(row) = sqlx::query!(
            "SELECT id, version, source, description, created_by, created_at FROM baselines
             WHERE model = $1 AND model_version = $2 AND active",
            model,
            version
        )
        .fetch_optional(pool)
        .await
        .map_err(StoreError::classify)?
        else {
            return Ok(None);
        };
        let samples = load_samples(pool, row.id).await?;
        Ok(Some(BaselineInfo {
            model: model.into(),
            model_version: version.into(),
            version: row.version,
            source: row.source,
            description: row.description,
            created_by: row.created_by,
            created_at: row.created_at,
            structures: samples
                .iter()
                .map(|((m, s), b)| summary(*m, s, b))
                .collect(),
        }))
    }

    /// Per-case values of the first `cases` scored cases of a model version,
    /// by case time (see [`CaseValues`]; cases without any left out).
    pub async fn first_scored(
        &self,
        model: &str,
        version: &str,
        cases: i64,
    ) -> Result<Vec<CaseValues>> {
        let pool = postgres_or!(self, lite => lite.first_scored(model, version, cases));
        let rows = sqlx::query!(
            r#"WITH first AS (
                   SELECT DISTINCT ON (case_id) id, case_id, observed_at, scored_at FROM results
                   WHERE model = $1 AND model_version = $2 ORDER BY case_id, id)
               SELECT f.id, s.structure,
                      CASE WHEN s.pred_voxels > 0 OR s.ref_voxels > 0 THEN s.dice END AS dice,
                      s.ece, l.metrics AS "lesions?"
               FROM (SELECT id, observed_at, scored_at FROM first ORDER BY observed_at, id LIMIT $3) f
               JOIN structure_results s ON s.result_id = f.id AND s.scored_at = f.scored_at
               LEFT JOIN lesion_results l
                      ON l.result_id = f.id AND l.scored_at = f.scored_at AND l.structure = s.structure
               ORDER BY f.observed_at, f.id"#,
            model,
            version,
            cases
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)?;
        let mut by_case: Vec<(i64, CaseValues)> = Vec::new();
        for r in rows {
            if by_case.last().is_none_or(|(id, _)| *id != r.id) {
                by_case.push((r.id, CaseValues::new()));
            }
            if let Some((_, case)) = by_case.last_mut() {
                let sensitivity = r.lesions.as_ref().and_then(lesion_sensitivity);
                add_values(case, &r.structure, r.dice, r.ece, sensitivity);
            }
        }
        Ok(by_case
            .into_iter()
            .map(|(_, m)| m)
            .filter(|m| !m.is_empty())
            .collect())
    }

    /// Incidents, newest first: open ones only unless `all`; those touching
    /// one site (its own streams, and pooled ones it is evidence of) when
    /// `site` is given.
    pub async fn incidents(&self, site: Option<&str>, all: bool) -> Result<Vec<IncidentView>> {
        let pool = match &self.db {
            super::Db::Postgres(pg) => &pg.pool,
            super::Db::Sqlite(lite) => {
                let ids = lite.incident_ids(site, all).await?;
                return self.incident_views(&ids).await;
            }
        };
        let ids = sqlx::query_scalar!(
            "SELECT i.id FROM incidents i
             WHERE ($2 OR i.resolved_at IS NULL)
               AND ($1::text IS NULL OR i.site = $1
                    OR EXISTS (SELECT 1 FROM incident_streams s WHERE s.incident_id = i.id AND s.site = $1))
             ORDER BY i.id DESC LIMIT 1000",
            site,
            all
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)?;
        self.incident_views(&ids).await
    }

    /// One incident.
    pub async fn incident(&self, id: i64) -> Result<Option<IncidentView>> {
        Ok(self.incident_views(&[id]).await?.pop())
    }

    async fn incident_views(&self, ids: &[i64]) -> Result<Vec<IncidentView>> {
        let pool = postgres_or!(self, lite => lite.incident_views(ids));
        let rows = sqlx::query_as!(
            IncidentRow,
            r#"SELECT id, site, model, model_version, structure, metric, detector, opened_at, observed_at, last_alarm_at,
                      statistic, limit_value, acknowledged_at, acknowledged_by, note, resolved_at, resolution
               FROM incidents WHERE id = ANY($1) ORDER BY id DESC"#,
            ids
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)?;
        let streams = sqlx::query_as!(
            IncidentStreamRow,
            "SELECT incident_id, site, structure, detector, first_alarm_at, last_alarm_at
             FROM incident_streams WHERE incident_id = ANY($1) ORDER BY incident_id, first_alarm_at, site, structure, detector",
            ids
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)?;
        Ok(assemble_incidents(rows, streams))
    }

    /// Acknowledges an incident (the first acknowledgement is kept; a note
    /// replaces the previous one). It stays open while its streams alarm.
    /// None if there is no such incident.
    pub async fn acknowledge(
        &self,
        id: i64,
        by: &str,
        note: Option<&str>,
    ) -> Result<Option<IncidentView>> {
        let pool = match &self.db {
            super::Db::Postgres(pg) => &pg.pool,
            super::Db::Sqlite(lite) => {
                return match lite.acknowledge(id, by, note).await? {
                    true => self.incident(id).await,
                    false => Ok(None),
                };
            }
        };
        let updated = sqlx::query!(
            "UPDATE incidents SET acknowledged_at = coalesce(acknowledged_at, now()),
                    acknowledged_by = coalesce(acknowledged_by, $2), note = coalesce($3, note)
             WHERE id = $1",
            id,
            by,
            note
        )
        .execute(pool)
        .await
        .map_err(StoreError::classify)?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        self.incident(id).await
    }

    /// Open incidents, for metrics.
    pub async fn open_incidents(&self) -> Result<Vec<OpenIncident>> {
        let pool = postgres_or!(self, lite => lite.open_incidents());
        sqlx::query_as!(
            OpenIncident,
            "SELECT id, site, model, model_version, structure, metric, detector FROM incidents WHERE resolved_at IS NULL"
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)
    }

    /// States of the streams of the last 30 days of case time.
    pub async fn active_stream_states(&self) -> Result<Vec<ActiveStream>> {
        let pool = postgres_or!(self, lite => lite.active_stream_states());
        let rows = sqlx::query!(
            "SELECT site, structure, metric, state FROM drift_streams
             WHERE latest_at > (SELECT max(latest_at) FROM drift_streams) - interval '30 days'"
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)?;
        rows.into_iter()
            .map(|r| active_stream(r.site, r.structure, &r.metric, r.state))
            .collect()
    }

    /// Size of the smallest active baseline sample.
    pub async fn smallest_active_baseline(&self) -> Result<Option<i64>> {
        let pool = postgres_or!(self, lite => lite.smallest_active_baseline());
        sqlx::query_scalar!(
            "SELECT min(cardinality(s.dice))::bigint FROM baselines b JOIN baseline_samples s ON s.baseline_id = b.id WHERE b.active"
        )
        .fetch_one(pool)
        .await
        .map_err(StoreError::classify)
    }

    /// Streams of the last 30 days of case time, and their (stream, detector) pairs.
    pub async fn active_streams(&self) -> Result<(i64, i64)> {
        let pool = postgres_or!(self, lite => lite.active_streams());
        let r = sqlx::query!(
            r#"SELECT count(*) AS "streams!", coalesce(sum(pairs), 0)::bigint AS "pairs!" FROM drift_streams
               WHERE latest_at > (SELECT max(latest_at) FROM drift_streams) - interval '30 days'"#
        )
        .fetch_one(pool)
        .await
        .map_err(StoreError::classify)?;
        Ok((r.streams, r.pairs))
    }

    /// The current state of every detector fed in the last `days`.
    pub async fn detector_states(&self, days: u32) -> Result<Vec<DetectorRow>> {
        let pool = postgres_or!(self, lite => lite.detector_states(days));
        sqlx::query_as!(
            DetectorRow,
            r#"SELECT site, model, model_version, structure, metric, detector, statistic, limit_value AS "limit", alarm
               FROM detector_state WHERE updated_at > now() - make_interval(days => $1)"#,
            days as i32
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)
    }

    /// Active Dice baselines: (model, version, summary).
    pub async fn baseline_gauges(&self) -> Result<Vec<(String, String, BaselineStructure)>> {
        let pool = postgres_or!(self, lite => lite.baseline_gauges());
        let rows = sqlx::query!(
            "SELECT b.model, b.model_version, s.structure, s.dice FROM baselines b
             JOIN baseline_samples s ON s.baseline_id = b.id WHERE b.active AND s.metric = 'dice'"
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let baseline = Baseline::new(r.dice).ok()?;
                let summary = summary(Metric::Dice, &r.structure, &baseline);
                Some((r.model, r.model_version, summary))
            })
            .collect())
    }

    /// Rolling means and case counts per stream over the last `days`, from
    /// the rollups (see [`WindowStart`]): of Dice (sites and pooled, structures
    /// and mean), and of soft Dice and ECE (structures with probabilistic scores).
    pub async fn rolling_means(&self, days: i32) -> Result<Rolling> {
        let start = WindowStart::of(days, Utc::now());
        let sums = match &self.db {
            super::Db::Postgres(pg) => postgres_rolling_sums(&pg.pool, start).await?,
            super::Db::Sqlite(lite) => lite.rolling_sums(start).await?,
        };
        Ok(Rolling::of(&sums))
    }

    /// Unix time of the latest accepted upload per site and role.
    pub async fn last_uploads(&self) -> Result<Vec<(String, String, f64)>> {
        let pool = postgres_or!(self, lite => lite.last_uploads());
        let rows = sqlx::query!(
            r#"SELECT site, role, extract(epoch FROM last_received_at)::float8 AS "at!" FROM site_uploads"#
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)?;
        Ok(rows.into_iter().map(|r| (r.site, r.role, r.at)).collect())
    }

    /// Strata of recent cases of a stream (since `since`), worst against the
    /// baseline first.
    pub async fn strata(
        &self,
        site: &str,
        model: &str,
        version: &str,
        structure: &str,
        since: DateTime<Utc>,
        baseline_mean: f64,
    ) -> Result<Vec<Stratum>> {
        let mut strata = match &self.db {
            super::Db::Postgres(pg) => {
                postgres_strata(&pg.pool, site, model, version, structure, since).await?
            }
            super::Db::Sqlite(lite) => lite.strata(site, model, version, structure, since).await?,
        };
        for stratum in &mut strata {
            stratum.drop = baseline_mean - stratum.mean_dice;
        }
        strata.sort_by(|a, b| b.drop.total_cmp(&a.drop).then(b.cases.cmp(&a.cases)));
        Ok(strata)
    }
}

/// Sums and case counts per site stream over a rolling window.
async fn postgres_rolling_sums(pool: &sqlx::PgPool, start: WindowStart) -> Result<Vec<WindowSum>> {
    let (hour, day) = match start {
        WindowStart::Hour(hour) => (Some(hour), None),
        WindowStart::Day(day) => (None, Some(day)),
    };
    // Grouped by hashing, not sorting: the 1-day window reads 24 buckets of
    // every stream. Pooled sites are summed in Rust.
    sqlx::query_as!(
        WindowSum,
        r#"WITH recent AS (
               SELECT site, model, model_version, structure, cases, dice_sum, probabilistic_cases,
                      soft_dice_sum, ece_sum
               FROM dice_hourly WHERE hour >= $1
               UNION ALL
               SELECT site, model, model_version, structure, cases, dice_sum, probabilistic_cases,
                      soft_dice_sum, ece_sum
               FROM dice_daily WHERE day >= $2)
           SELECT site AS "site!", model AS "model!", model_version AS "model_version!", structure AS "structure!",
                  sum(dice_sum) AS "dice_sum!", sum(cases)::bigint AS "cases!",
                  sum(soft_dice_sum) AS "soft_dice_sum!", sum(ece_sum) AS "ece_sum!",
                  sum(probabilistic_cases)::bigint AS "probabilistic_cases!"
           FROM recent GROUP BY site, model, model_version, structure"#,
        hour,
        day
    )
    .fetch_all(pool)
    .await
    .map_err(StoreError::classify)
}

/// Strata of recent cases of a stream, with `drop` left at 0.
async fn postgres_strata(
    pool: &sqlx::PgPool,
    site: &str,
    model: &str,
    version: &str,
    structure: &str,
    since: DateTime<Utc>,
) -> Result<Vec<Stratum>> {
    {
        let rows = sqlx::query!(
            r#"WITH cases AS (
                   SELECT r.acquisition, CASE WHEN $4 = 'all' THEN r.mean_dice ELSE s.dice END AS dice
                   FROM results r LEFT JOIN structure_results s
                       ON s.result_id = r.id AND s.scored_at = r.scored_at AND s.structure = $4
                   WHERE r.model = $2 AND r.model_version = $3 AND ($1 = 'all' OR r.site = $1) AND r.observed_at >= $5
                     AND ($4 = 'all' OR ((s.pred_voxels > 0 OR s.ref_voxels > 0) AND s.dice IS NOT NULL))),
               attributes AS (
                   SELECT 'scanner_manufacturer' AS attribute, acquisition->>'scanner_manufacturer' AS value, dice FROM cases
                   UNION ALL SELECT 'scanner_model', acquisition->>'scanner_model', dice FROM cases
                   UNION ALL SELECT 'protocol', acquisition->>'protocol', dice FROM cases
                   UNION ALL SELECT 'slice_thickness_band',
                       CASE WHEN (acquisition->>'slice_thickness_mm') IS NULL THEN NULL
                            WHEN (acquisition->>'slice_thickness_mm')::float8 <= 1.0 THEN '<= 1 mm'
                            WHEN (acquisition->>'slice_thickness_mm')::float8 <= 2.5 THEN '1-2.5 mm'
                            WHEN (acquisition->>'slice_thickness_mm')::float8 <= 5.0 THEN '2.5-5 mm'
                            ELSE '> 5 mm' END, dice FROM cases)
               SELECT attribute AS "attribute!", value AS "value!", count(*) AS "cases!", avg(dice) AS "mean!"
               FROM attributes WHERE value IS NOT NULL AND dice IS NOT NULL
               GROUP BY attribute, value"#,
            site,
            model,
            version,
            structure,
            since
        )
        .fetch_all(pool)
        .await
        .map_err(StoreError::classify)?;
        Ok(rows
            .into_iter()
            .map(|r| Stratum {
                attribute: r.attribute,
                value: r.value,
                cases: r.cases,
                mean_dice: r.mean,
                drop: 0.0,
            })
            .collect())
    }
}

/// The watched metrics' values of the results being fed, as scored.
#[derive(Debug, Default)]
pub(super) struct WatchedValues(BTreeMap<i64, Vec<(String, Metric, f64)>>);

impl WatchedValues {
    /// Adds a structure's ECE and lesion sensitivity of a result, if any.
    pub(super) fn add(
        &mut self,
        result_id: i64,
        structure: &str,
        ece: Option<f64>,
        sensitivity: Option<f64>,
    ) {
        let values = self.0.entry(result_id).or_default();
        for (metric, value) in [(Metric::Ece, ece), (Metric::LesionSensitivity, sensitivity)] {
            if let Some(value) = value.filter(|v| v.is_finite()) {
                values.push((structure.to_owned(), metric, value));
            }
        }
    }

    /// The values of a result, removed.
    pub(super) fn take(&mut self, result_id: i64) -> Vec<(String, Metric, f64)> {
        self.0.remove(&result_id).unwrap_or_default()
    }
}

/// An `incidents` row, as both backends read it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct IncidentRow {
    pub id: i64,
    pub site: String,
    pub model: String,
    pub model_version: String,
    pub structure: String,
    pub metric: String,
    pub detector: String,
    pub opened_at: DateTime<Utc>,
    pub observed_at: DateTime<Utc>,
    pub last_alarm_at: DateTime<Utc>,
    pub statistic: f64,
    pub limit_value: f64,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    pub note: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolution: Option<String>,
}

/// An `incident_streams` row.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct IncidentStreamRow {
    pub incident_id: i64,
    pub site: String,
    pub structure: String,
    pub detector: String,
    pub first_alarm_at: DateTime<Utc>,
    pub last_alarm_at: DateTime<Utc>,
}

/// Incidents with their streams, in the order of `rows`.
pub(super) fn assemble_incidents(
    rows: Vec<IncidentRow>,
    streams: Vec<IncidentStreamRow>,
) -> Vec<IncidentView> {
    let mut by_incident: BTreeMap<i64, Vec<IncidentStream>> = BTreeMap::new();
    for s in streams {
        by_incident
            .entry(s.incident_id)
            .or_default()
            .push(IncidentStream {
                site: s.site,
                structure: s.structure,
                detector: s.detector,
                first_alarm_at: s.first_alarm_at,
                last_alarm_at: s.last_alarm_at,
            });
    }
    rows.into_iter()
        .map(|r| IncidentView {
            streams: by_incident.remove(&r.id).unwrap_or_default(),
            id: r.id,
            site: r.site,
            model: r.model,
            model_version: r.model_version,
            structure: r.structure,
            metric: r.metric,
            detector: r.detector,
            opened_at: r.opened_at,
            observed_at: r.observed_at,
            last_alarm_at: r.last_alarm_at,
            statistic: r.statistic,
            limit: r.limit_value,
            acknowledged_at: r.acknowledged_at,
            acknowledged_by: r.acknowledged_by,
            note: r.note,
            resolved_at: r.resolved_at,
            resolution: r.resolution,
        })
        .collect()
}

/// Failure thresholds by structure from a model version's schema (none without one).
pub(super) fn failure_thresholds(schema: Option<&crate::schema::Schema>) -> BTreeMap<String, f64> {
    schema
        .map(|s| {
            s.structures
                .iter()
                .map(|d| (d.name.clone(), d.failure()))
                .collect()
        })
        .unwrap_or_default()
}

/// The (structure, metric) pairs besides Dice a model version's schema
/// watches (none without one).
pub(super) fn watched_metrics(
    schema: Option<&crate::schema::Schema>,
) -> BTreeSet<(String, Metric)> {
    schema
        .iter()
        .flat_map(|s| &s.structures)
        .flat_map(|d| d.drift_metrics.iter().map(|m| (d.name.clone(), *m)))
        .collect()
}

/// An open incident's row, as the drift feed reads it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct OpenIncidentRow {
    pub id: i64,
    pub site: String,
    pub structure: String,
    pub metric: String,
    pub detector: String,
    pub observed_at: DateTime<Utc>,
    pub last_alarm_at: DateTime<Utc>,
    pub statistic: f64,
    pub limit_value: f64,
}

/// One stream's evidence of an incident, as the drift feed reads it.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct EvidenceRow {
    pub site: String,
    pub structure: String,
    pub detector: String,
    pub first_alarm_at: DateTime<Utc>,
    pub last_alarm_at: DateTime<Utc>,
}

impl OpenIncidentRow {
    /// The incident the feed updates, with its evidence (rows of an unknown
    /// detector left out).
    pub(super) fn into_incident(self, streams: Vec<EvidenceRow>) -> Result<Incident> {
        let detector = Detector::parse(&self.detector).ok_or_else(|| {
            StoreError::Corrupt(format!("incident {}: detector {}", self.id, self.detector))
        })?;
        let streams = streams
            .into_iter()
            .filter_map(|s| {
                Some(Evidence {
                    detector: Detector::parse(&s.detector)?,
                    site: s.site,
                    structure: s.structure,
                    first_alarm_at: s.first_alarm_at,
                    last_alarm_at: s.last_alarm_at,
                })
            })
            .collect();
        Ok(Incident {
            id: Some(self.id),
            stream: StreamId {
                site: self.site,
                structure: self.structure,
                metric: parse_metric(&self.metric)?,
            },
            detector,
            observed_at: self.observed_at,
            last_alarm_at: self.last_alarm_at,
            statistic: self.statistic,
            limit: self.limit_value,
            streams,
            changed: false,
        })
    }
}

async fn load_samples<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    baseline_id: i64,
) -> Result<Samples> {
    let rows = sqlx::query!(
        "SELECT structure, metric, dice FROM baseline_samples WHERE baseline_id = $1",
        baseline_id
    )
    .fetch_all(executor)
    .await
    .map_err(StoreError::classify)?;
    rows.into_iter()
        .map(|r| {
            let metric = parse_metric(&r.metric)?;
            Ok(((metric, r.structure), sample_of(metric, r.dice)?))
        })
        .collect()
}

impl Store {
    /// Feeds up to `batch` scored results older than `lateness` to their drift
    /// streams, oldest case time first, in one transaction; returns how many.
    /// One process feeds at a time (others return 0).
    pub async fn feed_drift(
        &self,
        feeder: &mut Feeder,
        settings: &FeedSettings,
        lateness: std::time::Duration,
        batch: i64,
        exclude_ambiguous: bool,
    ) -> Result<usize> {
        let pool = postgres_or!(self, lite => lite.feed_drift(feeder, settings, lateness, batch, exclude_ambiguous));
        let mut tx = pool.begin().await.map_err(StoreError::classify)?;
        let locked = sqlx::query_scalar!("SELECT pg_try_advisory_xact_lock($1)", FEED_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if locked != Some(true) {
            return Ok(0);
        }
        let rows = sqlx::query!(
            "SELECT id, site, model, model_version, mean_dice, observed_at, scored_at FROM results
             WHERE drift_pending AND scored_at <= now() - make_interval(secs => $1)
             ORDER BY observed_at, id LIMIT $2 FOR UPDATE",
            lateness.as_secs_f64(),
            batch
        )
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        // The results' months, so that only their partitions are read.
        let scored: BTreeMap<i64, DateTime<Utc>> =
            rows.iter().map(|r| (r.id, r.scored_at)).collect();
        let months: Vec<DateTime<Utc>> = scored.values().copied().collect();
        let mut dice: BTreeMap<i64, Vec<(String, f64)>> = BTreeMap::new();
        let mut ambiguous = BTreeSet::new();
        let mut ambiguous_structures = BTreeSet::new();
        for r in sqlx::query!(
            r#"SELECT s.result_id, s.structure, s.dice AS "dice!",
                      $3 AND EXISTS (SELECT 1 FROM results r JOIN reader_agreement a
                                       ON a.case_id = r.case_id AND a.model = r.model AND a.model_version = r.model_version
                                     WHERE r.id = s.result_id AND r.scored_at = s.scored_at
                                       AND a.structure = s.structure AND a.ambiguous) AS "ambiguous!"
               FROM structure_results s
               WHERE s.result_id = ANY($1) AND s.scored_at = ANY($2)
                 AND (s.pred_voxels > 0 OR s.ref_voxels > 0) AND s.dice IS NOT NULL
               ORDER BY s.result_id, s.position"#,
            &ids,
            &months,
            exclude_ambiguous
        )
        .fetch_all(&mut *tx)
        .await?
        {
            if r.ambiguous {
                ambiguous.insert(r.result_id);
                ambiguous_structures.insert((r.result_id, r.structure));
            } else {
                dice.entry(r.result_id).or_default().push((r.structure, r.dice));
            }
        }
        let mut watched = WatchedValues::default();
        for r in sqlx::query!(
            r#"SELECT s.result_id, s.structure, s.ece, l.metrics AS "lesions?"
               FROM structure_results s
               LEFT JOIN lesion_results l
                      ON l.result_id = s.result_id AND l.scored_at = s.scored_at AND l.structure = s.structure
               WHERE s.result_id = ANY($1) AND s.scored_at = ANY($2) AND (s.ece IS NOT NULL OR l.metrics IS NOT NULL)"#,
            &ids,
            &months
        )
        .fetch_all(&mut *tx)
        .await?
        {
            if !ambiguous_structures.contains(&(r.result_id, r.structure.clone())) {
                let sensitivity = r.lesions.as_ref().and_then(lesion_sensitivity);
                watched.add(r.result_id, &r.structure, r.ece, sensitivity);
            }
        }
        let cases: Vec<ScoredCase> = rows
            .into_iter()
            .map(|r| ScoredCase {
                structures: dice.remove(&r.id).unwrap_or_default(),
                result_id: r.id,
                site: r.site,
                model: r.model,
                model_version: r.model_version,
                observed_at: r.observed_at,
                // A case with an ambiguous structure leaves the mean-Dice streams.
                mean_dice: r.mean_dice.filter(|_| !ambiguous.contains(&r.id)),
                watched: watched.take(r.id),
            })
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
            for r in sqlx::query!(
                "SELECT site, structure, metric, baseline_id, state, pairs FROM drift_streams
                 WHERE model = $1 AND model_version = $2 FOR UPDATE",
                model,
                version
            )
            .fetch_all(&mut *tx)
            .await?
            {
                let state: StreamState = serde_json::from_value(r.state)
                    .map_err(|e| StoreError::Corrupt(format!("drift stream state: {e}")))?;
                let key = StreamKey {
                    model: model.clone(),
                    model_version: version.clone(),
                    stream: StreamId {
                        site: r.site,
                        structure: r.structure,
                        metric: parse_metric(&r.metric)?,
                    },
                };
                let record = StreamRecord {
                    baseline_id: r.baseline_id,
                    state,
                    pairs: r.pairs as usize,
                    changed: false,
                };
                streams.insert(key, record);
            }
        }
        let latest = cases.iter().map(|c| c.observed_at).max();
        let active_pairs = sqlx::query_scalar!(
            r#"SELECT coalesce(sum(pairs), 0)::bigint AS "pairs!" FROM drift_streams
               WHERE latest_at > greatest($1, (SELECT max(latest_at) FROM drift_streams)) - interval '30 days'"#,
            latest
        )
        .fetch_one(&mut *tx)
        .await?;
        // The step is CPU work (a new design computes its limits): keep it off
        // the async worker threads so HTTP and the gauge refresh are not held up.
        // The service always runs on the multi-threaded runtime.
        let updates = tokio::task::block_in_place(|| {
            feeder.feed(
                settings,
                &cases,
                &mut streams,
                &mut contexts,
                active_pairs as usize,
            )
        });
        for (key, record) in streams.iter().filter(|(_, r)| r.changed) {
            save_stream(&mut tx, key, record).await?;
        }
        super::history::save(&mut tx, &updates, &scored).await?;
        for ((model, version), context) in &mut contexts {
            for incident in context.incidents.open.iter_mut().filter(|i| i.changed) {
                save_incident(&mut tx, model, version, incident).await?;
            }
            for (incident, closed_at) in &mut context.closed {
                save_incident(&mut tx, model, version, incident).await?;
                sqlx::query!(
                    "UPDATE incidents SET resolved_at = now(), resolution = 'back_in_control', closed_observed_at = $2
                     WHERE id = $1 AND resolved_at IS NULL",
                    incident.id,
                    *closed_at
                )
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query!(
            "UPDATE results SET drift_pending = false WHERE id = ANY($1)",
            &ids
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(cases.len())
    }
}

/// A model version's active baseline, failure thresholds and open incidents;
/// None without an active baseline.
async fn version_context(
    tx: &mut Transaction<'_, Postgres>,
    model: &str,
    version: &str,
) -> Result<Option<VersionContext>> {
    let Some(baseline_id) = sqlx::query_scalar!(
        "SELECT id FROM baselines WHERE model = $1 AND model_version = $2 AND active",
        model,
        version
    )
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(None);
    };
    let samples = load_samples(&mut **tx, baseline_id).await?;
    let schema = sqlx::query_scalar!(
        "SELECT schema FROM model_schemas WHERE model = $1 AND model_version = $2",
        model,
        version
    )
    .fetch_optional(&mut **tx)
    .await?;
    let schema = schema.and_then(|s| serde_json::from_value::<crate::schema::Schema>(s).ok());
    let failure_thresholds = failure_thresholds(schema.as_ref());
    let watched = watched_metrics(schema.as_ref());
    let mut open = Vec::new();
    for r in sqlx::query_as!(
        OpenIncidentRow,
        "SELECT id, site, structure, metric, detector, observed_at, last_alarm_at, statistic, limit_value FROM incidents
         WHERE model = $1 AND model_version = $2 AND resolved_at IS NULL ORDER BY id FOR UPDATE",
        model,
        version
    )
    .fetch_all(&mut **tx)
    .await?
    {
        let streams = sqlx::query_as!(
            EvidenceRow,
            "SELECT site, structure, detector, first_alarm_at, last_alarm_at FROM incident_streams WHERE incident_id = $1",
            r.id
        )
        .fetch_all(&mut **tx)
        .await?;
        open.push(r.into_incident(streams)?);
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
    tx: &mut Transaction<'_, Postgres>,
    key: &StreamKey,
    record: &StreamRecord,
) -> Result<()> {
    let state =
        serde_json::to_value(&record.state).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let latest = record.state.latest_at.unwrap_or_else(Utc::now);
    sqlx::query!(
        "INSERT INTO drift_streams (model, model_version, site, structure, baseline_id, state, pairs, latest_at, metric)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (model, model_version, site, structure, metric) DO UPDATE
         SET baseline_id = $5, state = $6, pairs = $7, latest_at = $8, updated_at = now()",
        key.model,
        key.model_version,
        key.stream.site,
        key.stream.structure,
        record.baseline_id,
        state,
        record.pairs as i32,
        latest,
        key.stream.metric.as_str()
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts a new incident (setting its id) or updates an open one, with its streams.
async fn save_incident(
    tx: &mut Transaction<'_, Postgres>,
    model: &str,
    version: &str,
    incident: &mut Incident,
) -> Result<()> {
    let id = match incident.id {
        Some(id) => {
            sqlx::query!(
                "UPDATE incidents SET last_alarm_at = $2 WHERE id = $1",
                id,
                incident.last_alarm_at
            )
            .execute(&mut **tx)
            .await?;
            id
        }
        None => {
            let id = sqlx::query_scalar!(
                "INSERT INTO incidents (site, model, model_version, structure, detector, observed_at, last_alarm_at, statistic, limit_value, metric)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
                incident.stream.site,
                model,
                version,
                incident.stream.structure,
                incident.detector.as_str(),
                incident.observed_at,
                incident.last_alarm_at,
                if incident.statistic.is_finite() { incident.statistic } else { 0.0 },
                incident.limit,
                incident.stream.metric.as_str()
            )
            .fetch_one(&mut **tx)
            .await?;
            incident.id = Some(id);
            id
        }
    };
    for e in &incident.streams {
        sqlx::query!(
            "INSERT INTO incident_streams (incident_id, site, structure, detector, first_alarm_at, last_alarm_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (incident_id, site, structure, detector) DO UPDATE SET last_alarm_at = $6",
            id,
            e.site,
            e.structure,
            e.detector.as_str(),
            e.first_alarm_at,
            e.last_alarm_at
        )
        .execute(&mut **tx)
        .await?;
    }
    incident.changed = false;
    Ok(())
}

/// One alert of an Alertmanager notification.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifiedAlert {
    pub status: String,
    #[serde(default)]
    pub labels: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub annotations: serde_json::Map<String, serde_json::Value>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Records the alerts of a delivered notification; returns how many.
    pub async fn record_notification(
        &self,
        receiver: &str,
        alerts: &[NotifiedAlert],
    ) -> Result<usize> {
        let pool = postgres_or!(self, lite => lite.record_notification(receiver, alerts));
        let mut tx = pool.begin().await.map_err(StoreError::classify)?;
        for alert in alerts {
            let name = alert.labels.get("alertname").and_then(|v| v.as_str());
            sqlx::query!(
                "INSERT INTO notifications (receiver, status, alertname, labels, annotations, starts_at, ends_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                receiver,
                alert.status,
                name,
                serde_json::Value::Object(alert.labels.clone()),
                serde_json::Value::Object(alert.annotations.clone()),
                alert.starts_at,
                alert.ends_at
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(alerts.len())
    }
}
