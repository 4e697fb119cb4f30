//! Baselines, detector state and updates, and alerts.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::{Postgres, Transaction};
use utoipa::ToSchema;

use super::{JobInputs, JobOutcome, Result, Store, StoreError};
use crate::drift::{self, Baseline, Cusum, PitEwma, State, Update};
use crate::metrics::Empty;

/// The stream key used for pooled sites and for a site's mean Dice.
pub const ALL: &str = "all";

/// How detectors are tuned.
#[derive(Debug, Clone)]
pub struct DetectorSettings {
    /// Target in-control run length of PIT-EWMA.
    pub arl0: f64,
    /// Failure threshold per structure (default 0.5).
    pub failure_thresholds: BTreeMap<String, f64>,
}

/// One structure's sample in a baseline.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BaselineStructure {
    pub structure: String,
    pub cases: usize,
    pub mean: f64,
    pub p05: f64,
    pub p25: f64,
}

/// The active baseline of a model version.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BaselineInfo {
    pub model: String,
    pub model_version: String,
    pub version: i32,
    pub source: String,
    pub description: Option<String>,
    /// The key that froze it.
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub structures: Vec<BaselineStructure>,
}

/// An alert raised by a detector.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Alert {
    pub id: i64,
    pub site: String,
    pub model: String,
    pub model_version: String,
    pub structure: String,
    pub detector: String,
    pub opened_at: DateTime<Utc>,
    /// Case time of the update that raised it.
    pub observed_at: DateTime<Utc>,
    pub statistic: f64,
    pub limit: f64,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    pub note: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// A detector's current state, for metrics.
#[derive(Debug, Clone)]
pub struct DetectorRow {
    pub site: String,
    pub model: String,
    pub model_version: String,
    pub structure: String,
    pub detector: String,
    pub statistic: f64,
    pub limit: f64,
    pub alarm: bool,
}

/// A group of recent cases sharing an acquisition attribute value.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Stratum {
    /// scanner_manufacturer, scanner_model, protocol or slice_thickness_band.
    pub attribute: String,
    pub value: String,
    pub cases: i64,
    pub mean_dice: f64,
    /// Baseline mean minus the stratum's mean: how much worse it is.
    pub drop: f64,
}

fn summary(structure: &str, baseline: &Baseline) -> BaselineStructure {
    BaselineStructure {
        structure: structure.to_owned(),
        cases: baseline.len(),
        mean: baseline.mean(),
        p05: baseline.quantile(0.05),
        p25: baseline.quantile(0.25),
    }
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
        samples: &BTreeMap<String, Baseline>,
    ) -> Result<BaselineInfo> {
        let mut tx = self.pool.begin().await.map_err(StoreError::classify)?;
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
        for (structure, baseline) in samples {
            sqlx::query!(
                "INSERT INTO baseline_samples (baseline_id, structure, dice) VALUES ($1, $2, $3)",
                row.id,
                structure,
                baseline.values()
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
        tx.commit().await?;
        Ok(BaselineInfo {
            model: model.into(),
            model_version: version.into(),
            version: row.version,
            source: source.into(),
            description: description.map(str::to_owned),
            created_by: created_by.into(),
            created_at: row.created_at,
            structures: samples.iter().map(|(s, b)| summary(s, b)).collect(),
        })
    }

    /// The active baseline of a model version.
    pub async fn active_baseline(
        &self,
        model: &str,
        version: &str,
    ) -> Result<Option<BaselineInfo>> {
        let Some(row) = sqlx::query!(
            "SELECT id, version, source, description, created_by, created_at FROM baselines
             WHERE model = $1 AND model_version = $2 AND active",
            model,
            version
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::classify)?
        else {
            return Ok(None);
        };
        let samples = load_samples(&self.pool, row.id).await?;
        Ok(Some(BaselineInfo {
            model: model.into(),
            model_version: version.into(),
            version: row.version,
            source: row.source,
            description: row.description,
            created_by: row.created_by,
            created_at: row.created_at,
            structures: samples.iter().map(|(s, b)| summary(s, b)).collect(),
        }))
    }

    /// Per-case Dice of the first `cases` scored cases of a model version, by case
    /// time: structure → Dice (cases empty on both sides left out).
    pub async fn first_scored(
        &self,
        model: &str,
        version: &str,
        cases: i64,
    ) -> Result<Vec<BTreeMap<String, f64>>> {
        let rows = sqlx::query!(
            r#"WITH first AS (
                   SELECT DISTINCT ON (case_id) id, case_id, observed_at FROM results
                   WHERE model = $1 AND model_version = $2 ORDER BY case_id, id)
               SELECT f.id, s.structure, s.dice AS "dice!"
               FROM (SELECT id, observed_at FROM first ORDER BY observed_at, id LIMIT $3) f
               JOIN structure_results s ON s.result_id = f.id
               WHERE s.empty <> 'both' AND s.dice IS NOT NULL
               ORDER BY f.observed_at, f.id"#,
            model,
            version,
            cases
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::classify)?;
        let mut by_case: Vec<(i64, BTreeMap<String, f64>)> = Vec::new();
        for r in rows {
            match by_case.last_mut() {
                Some((id, map)) if *id == r.id => {
                    map.insert(r.structure, r.dice);
                }
                _ => by_case.push((r.id, BTreeMap::from([(r.structure, r.dice)]))),
            }
        }
        Ok(by_case.into_iter().map(|(_, m)| m).collect())
    }

    /// Alerts, newest first: open ones only unless `all`; one site's (with its
    /// pooled ones excluded) when `site` is given.
    pub async fn alerts(&self, site: Option<&str>, all: bool) -> Result<Vec<Alert>> {
        sqlx::query_as!(
            Alert,
            r#"SELECT id, site, model, model_version, structure, detector, opened_at, observed_at, statistic,
                      limit_value AS "limit", acknowledged_at, acknowledged_by, note, resolved_at
               FROM alerts WHERE ($1::text IS NULL OR site = $1) AND ($2 OR resolved_at IS NULL)
               ORDER BY id DESC LIMIT 1000"#,
            site,
            all
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::classify)
    }

    /// One alert.
    pub async fn alert(&self, id: i64) -> Result<Option<Alert>> {
        sqlx::query_as!(
            Alert,
            r#"SELECT id, site, model, model_version, structure, detector, opened_at, observed_at, statistic,
                      limit_value AS "limit", acknowledged_at, acknowledged_by, note, resolved_at
               FROM alerts WHERE id = $1"#,
            id
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::classify)
    }

    /// Acknowledges an alert: restarts its detector and resolves it. None if
    /// there is no such alert.
    pub async fn acknowledge(
        &self,
        id: i64,
        by: &str,
        note: Option<&str>,
    ) -> Result<Option<Alert>> {
        let mut tx = self.pool.begin().await.map_err(StoreError::classify)?;
        let Some(alert) = sqlx::query!(
            "UPDATE alerts SET acknowledged_at = coalesce(acknowledged_at, now()), acknowledged_by = coalesce(acknowledged_by, $2),
                    note = coalesce($3, note), resolved_at = coalesce(resolved_at, now())
             WHERE id = $1 RETURNING site, model, model_version, structure, detector",
            id,
            by,
            note
        )
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let start = match alert.detector.as_str() {
            "cusum" => Cusum::START.statistic,
            _ => PitEwma::START.statistic,
        };
        sqlx::query!(
            "UPDATE detector_state SET t = 0, statistic = $6, alarm = false, reset_at = now(), updated_at = now()
             WHERE site = $1 AND model = $2 AND model_version = $3 AND structure = $4 AND detector = $5 AND detector <> 'guard_rail'",
            alert.site,
            alert.model,
            alert.model_version,
            alert.structure,
            alert.detector,
            start
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.alert(id).await
    }

    /// Every detector's current state.
    pub async fn detector_states(&self) -> Result<Vec<DetectorRow>> {
        sqlx::query_as!(
            DetectorRow,
            r#"SELECT site, model, model_version, structure, detector, statistic, limit_value AS "limit", alarm
               FROM detector_state"#
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::classify)
    }

    /// Active baselines: (model, version, structure, mean, p05, p25).
    pub async fn baseline_gauges(&self) -> Result<Vec<(String, String, BaselineStructure)>> {
        let rows = sqlx::query!(
            "SELECT b.model, b.model_version, s.structure, s.dice FROM baselines b
             JOIN baseline_samples s ON s.baseline_id = b.id WHERE b.active"
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::classify)?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let baseline = Baseline::new(r.dice).ok()?;
                Some((r.model, r.model_version, summary(&r.structure, &baseline)))
            })
            .collect())
    }

    /// Rolling mean Dice and case counts per stream over the last `days`
    /// (sites and pooled, structures and mean): (site, model, version, structure, mean, cases).
    pub async fn rolling_dice(
        &self,
        days: i32,
    ) -> Result<Vec<(String, String, String, String, f64, i64)>> {
        let rows = sqlx::query!(
            r#"WITH recent AS (
                   SELECT r.site, r.model, r.model_version, s.structure, s.dice
                   FROM results r JOIN structure_results s ON s.result_id = r.id
                   WHERE r.observed_at > now() - make_interval(days => $1) AND s.empty <> 'both' AND s.dice IS NOT NULL
                   UNION ALL
                   SELECT r.site, r.model, r.model_version, 'all', r.mean_dice
                   FROM results r WHERE r.observed_at > now() - make_interval(days => $1) AND r.mean_dice IS NOT NULL)
               SELECT coalesce(site, 'all') AS "site!", model AS "model!", model_version AS "model_version!",
                      structure AS "structure!", avg(dice) AS "mean!", count(*) AS "cases!"
               FROM recent GROUP BY GROUPING SETS ((site, model, model_version, structure), (model, model_version, structure))"#,
            days
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::classify)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.site,
                    r.model,
                    r.model_version,
                    r.structure,
                    r.mean,
                    r.cases,
                )
            })
            .collect())
    }

    /// Unix time of the latest accepted upload per site and role.
    pub async fn last_uploads(&self) -> Result<Vec<(String, String, f64)>> {
        let rows = sqlx::query!(
            r#"SELECT c.site, s.role, extract(epoch FROM max(s.received_at))::float8 AS "at!"
               FROM segmentations s JOIN cases c ON c.id = s.case_id GROUP BY c.site, s.role"#
        )
        .fetch_all(&self.pool)
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
        let rows = sqlx::query!(
            r#"WITH cases AS (
                   SELECT r.acquisition, CASE WHEN $4 = 'all' THEN r.mean_dice ELSE s.dice END AS dice
                   FROM results r LEFT JOIN structure_results s ON s.result_id = r.id AND s.structure = $4
                   WHERE r.model = $2 AND r.model_version = $3 AND ($1 = 'all' OR r.site = $1) AND r.observed_at >= $5
                     AND ($4 = 'all' OR (s.empty <> 'both' AND s.dice IS NOT NULL))),
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
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::classify)?;
        let mut strata: Vec<Stratum> = rows
            .into_iter()
            .map(|r| Stratum {
                attribute: r.attribute,
                value: r.value,
                cases: r.cases,
                mean_dice: r.mean,
                drop: baseline_mean - r.mean,
            })
            .collect();
        strata.sort_by(|a, b| b.drop.total_cmp(&a.drop).then(b.cases.cmp(&a.cases)));
        Ok(strata)
    }
}

async fn load_samples<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    baseline_id: i64,
) -> Result<BTreeMap<String, Baseline>> {
    let rows = sqlx::query!(
        "SELECT structure, dice FROM baseline_samples WHERE baseline_id = $1",
        baseline_id
    )
    .fetch_all(executor)
    .await
    .map_err(StoreError::classify)?;
    rows.into_iter()
        .map(|r| {
            let b = Baseline::new(r.dice).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Ok((r.structure, b))
        })
        .collect()
}

/// One detector update to apply.
struct StreamInput<'a> {
    site: &'a str,
    structure: &'a str,
    dice: f64,
}

/// Feeds a scored case to every detector of its streams (site and pooled, each
/// structure and the mean), storing each update and opening or resolving alerts.
/// Runs inside the transaction that stores the result.
pub(super) async fn update_detectors(
    tx: &mut Transaction<'_, Postgres>,
    result_id: i64,
    inputs: &JobInputs,
    outcome: &JobOutcome,
    settings: &DetectorSettings,
) -> Result<()> {
    let (model, version) = (inputs.model.as_str(), inputs.model_version.as_str());
    let Some(baseline_id) = sqlx::query_scalar!(
        "SELECT id FROM baselines WHERE model = $1 AND model_version = $2 AND active",
        model,
        version
    )
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(());
    };
    let samples = load_samples(&mut **tx, baseline_id).await?;
    let mut streams: Vec<StreamInput> = Vec::new();
    for (structure, m, _) in &outcome.structures {
        if m.empty != Empty::Both && m.dice.is_finite() && samples.contains_key(structure) {
            for site in [inputs.site.as_str(), ALL] {
                streams.push(StreamInput {
                    site,
                    structure,
                    dice: m.dice,
                });
            }
        }
    }
    if let Some(mean) = outcome.mean_dice.filter(|_| samples.contains_key(ALL)) {
        for site in [inputs.site.as_str(), ALL] {
            streams.push(StreamInput {
                site,
                structure: ALL,
                dice: mean,
            });
        }
    }
    // A fixed order of row locks keeps concurrent jobs from deadlocking.
    streams.sort_by(|a, b| (a.site, a.structure).cmp(&(b.site, b.structure)));
    for stream in &streams {
        let baseline = &samples[stream.structure];
        for detector in ["cusum", "guard_rail", "pit_ewma"] {
            let start = if detector == "cusum" {
                Cusum::START
            } else {
                PitEwma::START
            };
            sqlx::query!(
                "INSERT INTO detector_state (site, model, model_version, structure, detector, baseline_id, statistic, limit_value)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 0) ON CONFLICT DO NOTHING",
                stream.site,
                model,
                version,
                stream.structure,
                detector,
                baseline_id,
                start.statistic
            )
            .execute(&mut **tx)
            .await?;
            let row = sqlx::query!(
                "SELECT t, statistic, baseline_id FROM detector_state
                 WHERE site = $1 AND model = $2 AND model_version = $3 AND structure = $4 AND detector = $5 FOR UPDATE",
                stream.site,
                model,
                version,
                stream.structure,
                detector
            )
            .fetch_one(&mut **tx)
            .await?;
            let mut state = if row.baseline_id == baseline_id {
                State {
                    t: row.t as u32,
                    statistic: row.statistic,
                }
            } else {
                start
            };
            let (update, parameters) = match detector {
                "pit_ewma" => {
                    let d = PitEwma::for_arl0(settings.arl0, baseline);
                    (
                        d.update(&mut state, baseline, stream.dice),
                        json!({"lambda": d.lambda, "width": d.width, "arl0": settings.arl0, "baseline_cases": baseline.len()}),
                    )
                }
                "cusum" => {
                    let threshold = settings
                        .failure_thresholds
                        .get(stream.structure)
                        .copied()
                        .unwrap_or(crate::schema::DEFAULT_FAILURE_THRESHOLD);
                    let d = Cusum::new(baseline, threshold);
                    (
                        d.update(&mut state, stream.dice),
                        json!({"threshold": d.threshold, "p0": d.p0, "p1": d.p1, "h": d.h}),
                    )
                }
                _ => {
                    let window = sqlx::query!(
                        r#"SELECT avg(CASE WHEN $4 = 'all' THEN r.mean_dice ELSE s.dice END) AS mean, count(*) AS "cases!"
                           FROM results r LEFT JOIN structure_results s ON s.result_id = r.id AND s.structure = $4
                           WHERE r.model = $2 AND r.model_version = $3 AND ($1 = 'all' OR r.site = $1)
                             AND r.observed_at > $5::timestamptz - interval '7 days' AND r.observed_at <= $5
                             AND ($4 = 'all' OR (s.empty <> 'both' AND s.dice IS NOT NULL))"#,
                        stream.site,
                        model,
                        version,
                        stream.structure,
                        inputs.observed_at
                    )
                    .fetch_one(&mut **tx)
                    .await?;
                    let update = drift::guard_rail(
                        window.mean.unwrap_or(f64::NAN),
                        window.cases,
                        baseline.mean(),
                    );
                    (
                        update,
                        json!({"margin": drift::GUARD_MARGIN, "min_cases": drift::GUARD_MIN_CASES, "window_days": 7}),
                    )
                }
            };
            record(
                tx,
                stream,
                model,
                version,
                detector,
                baseline_id,
                result_id,
                &update,
                &parameters,
                inputs.observed_at,
            )
            .await?;
        }
    }
    Ok(())
}

/// Stores a detector update and keeps its alert in step.
#[allow(clippy::too_many_arguments)]
async fn record(
    tx: &mut Transaction<'_, Postgres>,
    stream: &StreamInput<'_>,
    model: &str,
    version: &str,
    detector: &str,
    baseline_id: i64,
    result_id: i64,
    update: &Update,
    parameters: &serde_json::Value,
    observed_at: DateTime<Utc>,
) -> Result<()> {
    let statistic = if update.statistic.is_finite() {
        update.statistic
    } else {
        0.0
    };
    sqlx::query!(
        "UPDATE detector_state SET t = $6, statistic = $7, limit_value = $8, alarm = $9, baseline_id = $10, updated_at = now()
         WHERE site = $1 AND model = $2 AND model_version = $3 AND structure = $4 AND detector = $5",
        stream.site,
        model,
        version,
        stream.structure,
        detector,
        update.t as i32,
        statistic,
        update.limit,
        update.alarm,
        baseline_id
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query!(
        "INSERT INTO detector_updates (site, model, model_version, structure, detector, result_id, baseline_id, t, input,
                                       statistic, limit_value, alarm, parameters)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        stream.site,
        model,
        version,
        stream.structure,
        detector,
        result_id,
        baseline_id,
        update.t as i32,
        if update.input.is_finite() { update.input } else { 0.0 },
        statistic,
        update.limit,
        update.alarm,
        parameters
    )
    .execute(&mut **tx)
    .await?;
    if update.alarm {
        sqlx::query!(
            "INSERT INTO alerts (site, model, model_version, structure, detector, observed_at, statistic, limit_value)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            stream.site,
            model,
            version,
            stream.structure,
            detector,
            observed_at,
            statistic,
            update.limit
        )
        .execute(&mut **tx)
        .await?;
    } else {
        sqlx::query!(
            "UPDATE alerts SET resolved_at = now()
             WHERE site = $1 AND model = $2 AND model_version = $3 AND structure = $4 AND detector = $5 AND resolved_at IS NULL",
            stream.site,
            model,
            version,
            stream.structure,
            detector
        )
        .execute(&mut **tx)
        .await?;
    }
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
        let mut tx = self.pool.begin().await.map_err(StoreError::classify)?;
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
