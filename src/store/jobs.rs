//! The job queue: leased claims with `FOR UPDATE SKIP LOCKED`, committed at once;
//! completion guarded by the lease so a job is never scored into two results.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::readers::{self, StructureAgreement};
use super::{Result, Store, StoreError, StoredProbabilities, partitions, probabilistic, rollups};
use crate::metrics::case::{CaseScore, LesionScore};

/// A job this worker holds a lease on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub id: i64,
    /// Proves the lease is still ours when completing.
    pub lease_token: i64,
    /// Claims so far, this one included.
    pub attempts: i32,
}

/// What scoring a job needs.
#[derive(Debug, Clone)]
pub struct JobInputs {
    pub case_id: i64,
    pub site: String,
    pub case_key: String,
    pub model: String,
    pub model_version: String,
    /// The prediction's segmentation.
    pub prediction_id: i64,
    /// The reference's segmentation.
    pub reference_id: i64,
    /// The reference's reader: the case's primary reader's makes a result,
    /// another reader's only updates the agreement of the readers.
    pub reference_reader: String,
    /// gzip-compressed uploads; None once purged.
    pub prediction: Option<Vec<u8>>,
    pub reference: Option<Vec<u8>>,
    /// The prediction's probabilities, if it was sent with a float NIfTI of them.
    pub probabilities: Option<StoredProbabilities>,
    pub voxels: i64,
    /// The model version's structure schema, if one is set.
    pub schema: Option<Value>,
    /// Acquisition metadata of both uploads (the reference's wins).
    pub acquisition: Value,
    pub observed_at: DateTime<Utc>,
}

/// A finite value, or NULL.
pub(super) fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// A structure's lesion-wise metrics as stored: `eval`'s JSON of them.
pub(super) fn lesion_json(scored: &LesionScore) -> Result<serde_json::Value> {
    serde_json::to_value(&scored.metrics)
        .map_err(|e| StoreError::Corrupt(format!("lesion results of {}: {e}", scored.structure)))
}

/// A structure's name as stored: NULL when it is the structure's own (read
/// back as that), which most are.
pub(super) fn stored_name<'a>(name: Option<&'a str>, structure: &str) -> Option<&'a str> {
    name.filter(|n| *n != structure)
}

impl Store {
    /// Claims the oldest runnable job (queued and due, or running with an
    /// expired lease) and commits the lease at once.
    pub async fn claim_job(&self, lease: Duration) -> Result<Option<ClaimedJob>> {
        let pool = postgres_or!(self, lite => lite.claim_job(lease));
        let token: i64 = rand::random();
        let row = sqlx::query!(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_token = $1,
                    lease_until = now() + make_interval(secs => $2)
             WHERE id = (
                 SELECT id FROM jobs
                 WHERE (status = 'queued' AND run_after <= now()) OR (status = 'running' AND lease_until < now())
                 ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1)
             RETURNING id, attempts",
            token,
            lease.as_secs_f64()
        )
        .fetch_optional(pool)
        .await
        .map_err(StoreError::classify)?;
        Ok(row.map(|r| ClaimedJob {
            id: r.id,
            lease_token: token,
            attempts: r.attempts,
        }))
    }

    /// Extends a lease; false once the lease is lost.
    pub async fn heartbeat(&self, job: &ClaimedJob, lease: Duration) -> Result<bool> {
        let pool = postgres_or!(self, lite => lite.heartbeat(job, lease));
        let done = sqlx::query!(
            "UPDATE jobs SET lease_until = now() + make_interval(secs => $3)
             WHERE id = $1 AND lease_token = $2 AND status = 'running'",
            job.id,
            job.lease_token,
            lease.as_secs_f64()
        )
        .execute(pool)
        .await
        .map_err(StoreError::classify)?;
        Ok(done.rows_affected() == 1)
    }

    /// Loads what a job needs.
    pub async fn job_inputs(&self, job: &ClaimedJob) -> Result<JobInputs> {
        let pool = postgres_or!(self, lite => lite.job_inputs(job));
        let r = sqlx::query!(
            r#"SELECT j.case_id, c.site, c.case_key, p.model AS "model!", p.model_version AS "model_version!",
                      p.id AS prediction_id, r.id AS reference_id, r.reader AS "reference_reader!", pc.content AS "prediction?", rc.content AS "reference?",
                      pc.probabilities, pc.probability_labels, p.voxels + r.voxels AS "voxels!",
                      s.schema AS "schema?", p.acquisition || r.acquisition AS "acquisition!",
                      p.observed_at
               FROM jobs j
               JOIN cases c ON c.id = j.case_id
               JOIN segmentations p ON p.id = j.prediction_id
               JOIN segmentations r ON r.id = j.reference_id
               LEFT JOIN segmentation_contents pc ON pc.segmentation_id = p.id
               LEFT JOIN segmentation_contents rc ON rc.segmentation_id = r.id
               LEFT JOIN model_schemas s ON s.model = p.model AND s.model_version = p.model_version
               WHERE j.id = $1"#,
            job.id
        )
        .fetch_one(pool)
        .await
        .map_err(StoreError::classify)?;
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
            schema: r.schema,
            acquisition: r.acquisition,
            observed_at: r.observed_at,
        })
    }

    /// Stores the result (`None` for a job that only updates the readers'
    /// agreement) and the agreement, and marks the job done, in one
    /// transaction, if the lease is still ours; false (and nothing stored)
    /// otherwise. The drift task feeds the result to its streams later, in
    /// case-time order.
    pub async fn complete_job(
        &self,
        job: &ClaimedJob,
        inputs: &JobInputs,
        outcome: Option<&CaseScore>,
        agreement: &[StructureAgreement],
    ) -> Result<bool> {
        let pool = postgres_or!(self, lite => lite.complete_job(job, inputs, outcome, agreement));
        let mut tx = pool.begin().await.map_err(StoreError::classify)?;
        partitions::share_case_activity(&mut tx).await?;
        let done = sqlx::query!(
            "UPDATE jobs SET status = 'done', finished_at = now(), lease_token = NULL, lease_until = NULL, last_error = NULL
             WHERE id = $1 AND lease_token = $2 AND status = 'running'",
            job.id,
            job.lease_token
        )
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        // Results and agreement of one case are stored one at a time, so the
        // newest result of each model version is the only one of that version
        // flagged latest.
        sqlx::query!(
            "SELECT id FROM cases WHERE id = $1 FOR UPDATE",
            inputs.case_id
        )
        .fetch_one(&mut *tx)
        .await?;
        if let Some(outcome) = outcome {
            // Its rows carry its scored_at, the month partition key (migration 0020).
            let result = sqlx::query!(
                "INSERT INTO results (job_id, case_id, site, model, model_version, surface, grid, mean_dice, acquisition, observed_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id, scored_at",
                job.id,
                inputs.case_id,
                inputs.site,
                inputs.model,
                inputs.model_version,
                outcome.surface.as_str(),
                serde_json::json!({
                    "shape": outcome.grid.shape_vec(),
                    "spacing_mm": outcome.grid.spacing_vec(),
                }),
                outcome.mean_dice,
                inputs.acquisition,
                inputs.observed_at
            )
            .fetch_one(&mut *tx)
            .await?;
            let (result_id, scored_at) = (result.id, result.scored_at);
            for (position, scored) in outcome.structures.iter().enumerate() {
                let (structure, m, tolerance) =
                    (&scored.name, &scored.metrics, scored.tolerance_mm);
                let (soft_dice, brier, ece, reliability) =
                    probabilistic::columns(scored.probabilistic.as_ref())?;
                sqlx::query!(
                    "INSERT INTO structure_results (result_id, position, structure, label, code, name, pred_voxels, ref_voxels, tp,
                         pred_volume_ml, ref_volume_ml, dice, hd_mm, hd95_mm, assd_mm, masd_mm, nsd, tolerance_mm, site,
                         soft_dice, brier, ece, reliability, scored_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
                         $20, $21, $22, $23, $24)",
                    result_id,
                    position as i32,
                    structure,
                    m.label.map(i32::from),
                    m.code,
                    stored_name(m.name.as_deref(), structure),
                    m.pred_voxels as i64,
                    m.ref_voxels as i64,
                    m.tp as i64,
                    m.pred_volume_ml,
                    m.ref_volume_ml,
                    finite(m.dice),
                    finite(m.hd_mm),
                    finite(m.hd95_mm),
                    finite(m.assd_mm),
                    finite(m.masd_mm),
                    finite(m.nsd),
                    tolerance,
                    inputs.site,
                    soft_dice,
                    brier,
                    ece,
                    reliability,
                    scored_at
                )
                .execute(&mut *tx)
                .await?;
            }
            for scored in &outcome.lesions {
                sqlx::query!(
                    "INSERT INTO lesion_results (result_id, structure, metrics, scored_at) VALUES ($1, $2, $3, $4)",
                    result_id,
                    scored.structure,
                    lesion_json(scored)?,
                    scored_at
                )
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query!(
                "UPDATE results SET latest = false
                 WHERE case_id = $1 AND model = $3 AND model_version = $4 AND latest AND id <> $2",
                inputs.case_id,
                result_id,
                inputs.model,
                inputs.model_version
            )
            .execute(&mut *tx)
            .await?;
            let entries = rollups::entries(outcome);
            let column =
                |f: fn(&rollups::Entry) -> f64| entries.iter().map(f).collect::<Vec<f64>>();
            let count = |f: fn(&rollups::Entry) -> i64| entries.iter().map(f).collect::<Vec<i64>>();
            let structures: Vec<&str> = entries.iter().map(|e| e.structure.as_str()).collect();
            let hour = rollups::hour(inputs.observed_at);
            sqlx::query!(
                "WITH entries AS (
                     SELECT * FROM unnest($5::text[], $6::bigint[], $7::float8[], $8::bigint[], $9::float8[], $10::float8[])
                     AS u (structure, cases, dice_sum, probabilistic_cases, soft_dice_sum, ece_sum)),
                 daily AS (
                     INSERT INTO dice_daily (day, model, model_version, site, structure, cases, dice_sum,
                                             probabilistic_cases, soft_dice_sum, ece_sum)
                     SELECT $1, $2, $3, $4, structure, cases, dice_sum, probabilistic_cases, soft_dice_sum, ece_sum
                     FROM entries
                     ON CONFLICT (day, model, model_version, site, structure) DO UPDATE
                     SET cases = dice_daily.cases + excluded.cases, dice_sum = dice_daily.dice_sum + excluded.dice_sum,
                         probabilistic_cases = dice_daily.probabilistic_cases + excluded.probabilistic_cases,
                         soft_dice_sum = dice_daily.soft_dice_sum + excluded.soft_dice_sum,
                         ece_sum = dice_daily.ece_sum + excluded.ece_sum)
                 INSERT INTO dice_hourly (hour, model, model_version, site, structure, cases, dice_sum,
                                          probabilistic_cases, soft_dice_sum, ece_sum)
                 SELECT $11, $2, $3, $4, structure, cases, dice_sum, probabilistic_cases, soft_dice_sum, ece_sum
                 FROM entries WHERE $12
                 ON CONFLICT (hour, model, model_version, site, structure) DO UPDATE
                 SET cases = dice_hourly.cases + excluded.cases, dice_sum = dice_hourly.dice_sum + excluded.dice_sum,
                     probabilistic_cases = dice_hourly.probabilistic_cases + excluded.probabilistic_cases,
                     soft_dice_sum = dice_hourly.soft_dice_sum + excluded.soft_dice_sum,
                     ece_sum = dice_hourly.ece_sum + excluded.ece_sum",
                rollups::day(inputs.observed_at),
                inputs.model,
                inputs.model_version,
                inputs.site,
                &structures as &[&str],
                &count(|e| e.cases),
                &column(|e| e.dice_sum),
                &count(|e| e.probabilistic_cases),
                &column(|e| e.soft_dice_sum),
                &column(|e| e.ece_sum),
                hour,
                hour > Utc::now() - rollups::HOURLY_KEPT
            )
            .execute(&mut *tx)
            .await?;
        }
        readers::store_agreement(&mut tx, job.id, inputs, agreement).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Gives the job back for another attempt after `retry_after`, or (None)
    /// fails it for good with the reason. Ignored if the lease is lost.
    pub async fn fail_job(
        &self,
        job: &ClaimedJob,
        reason: &str,
        retry_after: Option<Duration>,
    ) -> Result<()> {
        let pool = postgres_or!(self, lite => lite.fail_job(job, reason, retry_after));
        match retry_after {
            Some(delay) => sqlx::query!(
                "UPDATE jobs SET status = 'queued', run_after = now() + make_interval(secs => $3), last_error = $4,
                        lease_token = NULL, lease_until = NULL
                 WHERE id = $1 AND lease_token = $2 AND status = 'running'",
                job.id,
                job.lease_token,
                delay.as_secs_f64(),
                reason
            )
            .execute(pool)
            .await
            .map_err(StoreError::classify)?,
            None => sqlx::query!(
                "UPDATE jobs SET status = 'failed', finished_at = now(), last_error = $3, lease_token = NULL, lease_until = NULL
                 WHERE id = $1 AND lease_token = $2 AND status = 'running'",
                job.id,
                job.lease_token,
                reason
            )
            .execute(pool)
            .await
            .map_err(StoreError::classify)?,
        };
        Ok(())
    }

    /// Jobs waiting, and jobs running.
    pub async fn job_counts(&self) -> Result<(i64, i64)> {
        let pool = postgres_or!(self, lite => lite.job_counts());
        let r = sqlx::query!(
            r#"SELECT count(*) FILTER (WHERE status = 'queued') AS "queued!",
                      count(*) FILTER (WHERE status = 'running') AS "running!"
               FROM jobs WHERE status IN ('queued', 'running')"#
        )
        .fetch_one(pool)
        .await
        .map_err(StoreError::classify)?;
        Ok((r.queued, r.running))
    }

    /// Scored results not yet fed to the drift detectors.
    pub async fn drift_backlog(&self) -> Result<i64> {
        let pool = postgres_or!(self, lite => lite.drift_backlog());
        let backlog = sqlx::query_scalar!(
            r#"SELECT count(*) AS "backlog!" FROM results WHERE drift_pending"#
        )
        .fetch_one(pool)
        .await
        .map_err(StoreError::classify)?;
        Ok(backlog)
    }

    /// Deletes the stored files of at most `batch` segmentations received more than
    /// `days` ago whose pair was scored (results stay); returns how many.
    pub async fn purge_scored(&self, days: u32, batch: i64) -> Result<u64> {
        let pool = postgres_or!(self, lite => lite.purge_scored(days, batch));
        // Candidates in received order; one lookup per candidate and side, each
        // answered by an index on that side. (`OR` in one EXISTS rescanned the
        // jobs for every file; two EXISTS joined by OR let the planner hash
        // every done job per batch.) Deleting a row rewrites no index; the ids
        // as an array keep the delete on the primary key, however many.
        let done = sqlx::query!(
            "DELETE FROM segmentation_contents
             WHERE segmentation_id = ANY (ARRAY(
                 SELECT c.segmentation_id FROM segmentation_contents c
                 CROSS JOIN LATERAL (
                     SELECT 1 FROM jobs j WHERE j.prediction_id = c.segmentation_id AND j.status = 'done'
                     UNION ALL
                     SELECT 1 FROM jobs j WHERE j.reference_id = c.segmentation_id AND j.status = 'done'
                     LIMIT 1) scored
                 WHERE c.received_at < now() - make_interval(days => $1)
                 LIMIT $2))",
            days as i32,
            batch
        )
        .execute(pool)
        .await
        .map_err(StoreError::classify)?;
        Ok(done.rows_affected())
    }

    /// Drops hourly Dice buckets older than the 1-day window needs; returns how many.
    pub async fn purge_hourly_rollups(&self) -> Result<u64> {
        let pool = postgres_or!(self, lite => lite.purge_hourly_rollups());
        let done = sqlx::query!(
            "DELETE FROM dice_hourly WHERE hour < $1",
            Utc::now() - rollups::HOURLY_KEPT
        )
        .execute(pool)
        .await
        .map_err(StoreError::classify)?;
        Ok(done.rows_affected())
    }
}
