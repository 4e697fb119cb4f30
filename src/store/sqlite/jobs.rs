//! The job queue: a claim is one UPDATE on the single write connection, so two
//! workers (or processes) never hold the same lease; completion is guarded by
//! the lease token as in PostgreSQL.

use std::time::Duration;

use chrono::{DateTime, Utc};

use sqlx::{Sqlite, Transaction};

use super::{Lite, at, classify, days_ago, json, now, parse, readers};
use crate::metrics::case::CaseScore;
use crate::store::jobs::{ClaimedJob, JobInputs, finite, stored_name};
use crate::store::readers::StructureAgreement;
use crate::store::{Result, StoredProbabilities};
use crate::store::{probabilistic, rollups};

/// `after` from now, as stored.
fn from_now(after: Duration) -> String {
    at(Utc::now() + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX))
}

impl Lite {
    /// See [`crate::store::Store::claim_job`].
    pub async fn claim_job(&self, lease: Duration) -> Result<Option<ClaimedJob>> {
        let token: i64 = rand::random();
        let row: Option<(i64, i32)> = sqlx::query_as(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_token = $1, lease_until = $2
             WHERE id = (
                 SELECT id FROM jobs
                 WHERE (status = 'queued' AND run_after <= $3) OR (status = 'running' AND lease_until < $3)
                 ORDER BY id LIMIT 1)
             RETURNING id, attempts",
        )
        .bind(token)
        .bind(from_now(lease))
        .bind(now())
        .fetch_optional(&self.writer)
        .await
        .map_err(classify)?;
        Ok(row.map(|(id, attempts)| ClaimedJob {
            id,
            lease_token: token,
            attempts,
        }))
    }

    /// Extends a lease; false once the lease is lost.
    pub async fn heartbeat(&self, job: &ClaimedJob, lease: Duration) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_until = $3 WHERE id = $1 AND lease_token = $2 AND status = 'running'",
        )
        .bind(job.id)
        .bind(job.lease_token)
        .bind(from_now(lease))
        .execute(&self.writer)
        .await
        .map_err(classify)?;
        Ok(done.rows_affected() == 1)
    }

    /// Loads what a job needs.
    pub async fn job_inputs(&self, job: &ClaimedJob) -> Result<JobInputs> {
        let r: JobRow = sqlx::query_as(
            "SELECT j.case_id, c.site, c.case_key, p.model, p.model_version, p.id AS prediction_id,
                    r.id AS reference_id, r.reader AS reference_reader, pc.content AS prediction,
                    rc.content AS reference, p.voxels + r.voxels AS voxels, s.schema,
                    p.acquisition AS prediction_acquisition, r.acquisition AS reference_acquisition,
                    p.observed_at, pc.probabilities, pc.probability_labels
             FROM jobs j
             JOIN cases c ON c.id = j.case_id
             JOIN segmentations p ON p.id = j.prediction_id
             JOIN segmentations r ON r.id = j.reference_id
             LEFT JOIN segmentation_contents pc ON pc.segmentation_id = p.id
             LEFT JOIN segmentation_contents rc ON rc.segmentation_id = r.id
             LEFT JOIN model_schemas s ON s.model = p.model AND s.model_version = p.model_version
             WHERE j.id = $1",
        )
        .bind(job.id)
        .fetch_one(&self.reader)
        .await
        .map_err(classify)?;
        // The reference's acquisition fields win, as with jsonb `||`.
        let mut acquisition: serde_json::Value = parse("acquisition", &r.prediction_acquisition)?;
        let reference: serde_json::Map<String, serde_json::Value> =
            parse("acquisition", &r.reference_acquisition)?;
        if let Some(merged) = acquisition.as_object_mut() {
            merged.extend(reference);
        }
        Ok(JobInputs {
            case_id: r.case_id,
            site: r.site,
            case_key: r.case_key,
            model: r.model,
            model_version: r.model_version,
            prediction_id: r.prediction_id,
            reference_id: r.reference_id,
            reference_reader: r.reference_reader,
            prediction: r.prediction,
            reference: r.reference,
            probabilities: StoredProbabilities::from_columns(
                r.probabilities,
                r.probability_labels,
            )?,
            voxels: r.voxels,
            schema: r.schema.map(|s| parse("schema", &s)).transpose()?,
            acquisition,
            observed_at: r.observed_at,
        })
    }

    /// See [`crate::store::Store::complete_job`].
    pub async fn complete_job(
        &self,
        job: &ClaimedJob,
        inputs: &JobInputs,
        outcome: Option<&CaseScore>,
        agreement: &[StructureAgreement],
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let finished = now();
        let done = sqlx::query(
            "UPDATE jobs SET status = 'done', finished_at = $3, lease_token = NULL, lease_until = NULL, last_error = NULL
             WHERE id = $1 AND lease_token = $2 AND status = 'running'",
        )
        .bind(job.id)
        .bind(job.lease_token)
        .bind(&finished)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        if let Some(outcome) = outcome {
            store_result(&mut tx, job, inputs, outcome, &finished).await?;
        }
        readers::store_agreement(&mut tx, job.id, inputs, agreement).await?;
        tx.commit().await.map_err(classify)?;
        Ok(true)
    }

    /// See [`crate::store::Store::fail_job`].
    pub async fn fail_job(
        &self,
        job: &ClaimedJob,
        reason: &str,
        retry_after: Option<Duration>,
    ) -> Result<()> {
        let query = match retry_after {
            Some(delay) => sqlx::query(
                "UPDATE jobs SET status = 'queued', run_after = $3, last_error = $4, lease_token = NULL, lease_until = NULL
                 WHERE id = $1 AND lease_token = $2 AND status = 'running'",
            )
            .bind(job.id)
            .bind(job.lease_token)
            .bind(from_now(delay)),
            None => sqlx::query(
                "UPDATE jobs SET status = 'failed', finished_at = $3, last_error = $4, lease_token = NULL, lease_until = NULL
                 WHERE id = $1 AND lease_token = $2 AND status = 'running'",
            )
            .bind(job.id)
            .bind(job.lease_token)
            .bind(now()),
        };
        query
            .bind(reason)
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Jobs waiting, and jobs running.
    pub async fn job_counts(&self) -> Result<(i64, i64)> {
        sqlx::query_as(
            "SELECT coalesce(sum(status = 'queued'), 0), coalesce(sum(status = 'running'), 0)
             FROM jobs WHERE status IN ('queued', 'running')",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(classify)
    }

    /// Scored results not yet fed to the drift detectors.
    pub async fn drift_backlog(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT count(*) FROM results WHERE drift_pending")
            .fetch_one(&self.reader)
            .await
            .map_err(classify)
    }

    /// See [`crate::store::Store::purge_scored`].
    pub async fn purge_scored(&self, days: u32, batch: i64) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM segmentation_contents
             WHERE segmentation_id IN (
                 SELECT c.segmentation_id FROM segmentation_contents c
                 WHERE c.received_at < $1
                   AND (EXISTS (SELECT 1 FROM jobs j WHERE j.status = 'done' AND j.prediction_id = c.segmentation_id)
                        OR EXISTS (SELECT 1 FROM jobs j WHERE j.status = 'done' AND j.reference_id = c.segmentation_id))
                 LIMIT $2)",
        )
        .bind(days_ago(days))
        .bind(batch)
        .execute(&self.writer)
        .await
        .map_err(classify)?;
        Ok(done.rows_affected())
    }

    /// See [`crate::store::Store::purge_hourly_rollups`].
    pub async fn purge_hourly_rollups(&self) -> Result<u64> {
        let done = sqlx::query("DELETE FROM dice_hourly WHERE hour < $1")
            .bind(at(Utc::now() - rollups::HOURLY_KEPT))
            .execute(&self.writer)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected())
    }
}

/// Stores a job's result, its structures, lesions and Dice rollups.
async fn store_result(
    tx: &mut Transaction<'static, Sqlite>,
    job: &ClaimedJob,
    inputs: &JobInputs,
    outcome: &CaseScore,
    finished: &str,
) -> Result<()> {
    let grid = serde_json::json!({
        "shape": outcome.grid.shape_vec(),
        "spacing_mm": outcome.grid.spacing_vec(),
    });
    let result_id: i64 = sqlx::query_scalar(
        "INSERT INTO results (job_id, case_id, site, model, model_version, surface, grid, mean_dice, acquisition,
                              observed_at, scored_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
    )
    .bind(job.id)
    .bind(inputs.case_id)
    .bind(&inputs.site)
    .bind(&inputs.model)
    .bind(&inputs.model_version)
    .bind(outcome.surface.as_str())
    .bind(json(&grid)?)
    .bind(outcome.mean_dice)
    .bind(json(&inputs.acquisition)?)
    .bind(at(inputs.observed_at))
    .bind(finished)
    .fetch_one(&mut **tx)
    .await
    .map_err(classify)?;
    for (position, scored) in outcome.structures.iter().enumerate() {
        let m = &scored.metrics;
        let (soft_dice, brier, ece, reliability) =
            probabilistic::columns(scored.probabilistic.as_ref())?;
        sqlx::query(
            "INSERT INTO structure_results (result_id, position, structure, label, code, name, pred_voxels,
                 ref_voxels, tp, pred_volume_ml, ref_volume_ml, dice, hd_mm, hd95_mm, assd_mm, masd_mm, nsd,
                 tolerance_mm, soft_dice, brier, ece, reliability)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                 $19, $20, $21, $22)",
        )
        .bind(result_id)
        .bind(position as i32)
        .bind(&scored.name)
        .bind(m.label.map(i32::from))
        .bind(&m.code)
        .bind(stored_name(m.name.as_deref(), &scored.name))
        .bind(m.pred_voxels as i64)
        .bind(m.ref_voxels as i64)
        .bind(m.tp as i64)
        .bind(m.pred_volume_ml)
        .bind(m.ref_volume_ml)
        .bind(finite(m.dice))
        .bind(finite(m.hd_mm))
        .bind(finite(m.hd95_mm))
        .bind(finite(m.assd_mm))
        .bind(finite(m.masd_mm))
        .bind(finite(m.nsd))
        .bind(scored.tolerance_mm)
        .bind(soft_dice)
        .bind(brier)
        .bind(ece)
        .bind(reliability)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
    }
    for scored in &outcome.lesions {
        sqlx::query(
            "INSERT INTO lesion_results (result_id, structure, metrics) VALUES ($1, $2, $3)",
        )
        .bind(result_id)
        .bind(&scored.structure)
        .bind(json(&scored.metrics)?)
        .execute(&mut **tx)
        .await
        .map_err(classify)?;
    }
    // One writer at a time: the newest result of each model version is the
    // only one of that version flagged latest.
    sqlx::query(
        "UPDATE results SET latest = 0
         WHERE case_id = $1 AND model = $3 AND model_version = $4 AND latest AND id <> $2",
    )
    .bind(inputs.case_id)
    .bind(result_id)
    .bind(&inputs.model)
    .bind(&inputs.model_version)
    .execute(&mut **tx)
    .await
    .map_err(classify)?;
    let day = rollups::day(inputs.observed_at)
        .format("%Y-%m-%d")
        .to_string();
    let hour = rollups::hour(inputs.observed_at);
    let hourly = hour > Utc::now() - rollups::HOURLY_KEPT;
    for entry in rollups::entries(outcome) {
        let mut buckets = vec![("dice_daily", "day", day.clone())];
        if hourly {
            buckets.push(("dice_hourly", "hour", at(hour)));
        }
        for (table, bucket, value) in buckets {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} ({bucket}, model, model_version, site, structure, cases, dice_sum,
                                      probabilistic_cases, soft_dice_sum, ece_sum)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT ({bucket}, model, model_version, site, structure) DO UPDATE
                 SET cases = cases + excluded.cases, dice_sum = dice_sum + excluded.dice_sum,
                     probabilistic_cases = probabilistic_cases + excluded.probabilistic_cases,
                     soft_dice_sum = soft_dice_sum + excluded.soft_dice_sum,
                     ece_sum = ece_sum + excluded.ece_sum"
            )))
            .bind(value)
            .bind(&inputs.model)
            .bind(&inputs.model_version)
            .bind(&inputs.site)
            .bind(&entry.structure)
            .bind(entry.cases)
            .bind(entry.dice_sum)
            .bind(entry.probabilistic_cases)
            .bind(entry.soft_dice_sum)
            .bind(entry.ece_sum)
            .execute(&mut **tx)
            .await
            .map_err(classify)?;
        }
    }
    Ok(())
}

/// A job's row with its uploads, as `job_inputs` reads it.
#[derive(sqlx::FromRow)]
struct JobRow {
    case_id: i64,
    site: String,
    case_key: String,
    model: String,
    model_version: String,
    prediction_id: i64,
    reference_id: i64,
    reference_reader: String,
    prediction: Option<Vec<u8>>,
    reference: Option<Vec<u8>>,
    voxels: i64,
    schema: Option<String>,
    prediction_acquisition: String,
    reference_acquisition: String,
    observed_at: DateTime<Utc>,
    probabilities: Option<Vec<u8>>,
    probability_labels: Option<String>,
}
