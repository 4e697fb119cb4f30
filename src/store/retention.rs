//! Retention beyond stored files: cases idle past the results retention go
//! with everything stored for them, and incidents resolved past theirs.

use chrono::{Duration, Utc};

use super::{Result, Store, StoreError};

impl Store {
    /// Deletes at most `batch` cases with no upload, score or unscored result
    /// for `days` days and no job waiting or running, with their uploads,
    /// jobs, results and detector history; returns how many cases.
    pub async fn purge_expired_cases(&self, days: u32, batch: i64) -> Result<u64> {
        let pool = postgres_or!(self, lite => lite.purge_expired_cases(days, batch));
        let cutoff = Utc::now() - Duration::days(i64::from(days));
        let mut tx = pool.begin().await.map_err(StoreError::classify)?;
        // Daily Dice sums of days no rolling window reads.
        sqlx::query!(
            "DELETE FROM dice_daily WHERE day < $1",
            (cutoff - Duration::days(1)).date_naive()
        )
        .execute(&mut *tx)
        .await?;
        // Oldest first by `cases_created`. Uploads and workers lock the case
        // row too, so once it is locked here nothing new can join the case.
        let locked = sqlx::query_scalar!(
            "SELECT c.id FROM cases c
             WHERE c.created_at < $1
               AND NOT EXISTS (SELECT 1 FROM segmentations s WHERE s.case_id = c.id AND s.received_at >= $1)
               AND NOT EXISTS (SELECT 1 FROM results r WHERE r.case_id = c.id AND (r.scored_at >= $1 OR r.drift_pending))
               AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.case_id = c.id AND j.status IN ('queued', 'running'))
             ORDER BY c.created_at LIMIT $2
             FOR UPDATE SKIP LOCKED",
            cutoff,
            batch
        )
        .fetch_all(&mut *tx)
        .await?;
        // Checked again under the lock, in a fresh snapshot: an upload that
        // committed while the lock was taken keeps its case.
        let cases = sqlx::query_scalar!(
            "SELECT c.id FROM cases c
             WHERE c.id = ANY($2)
               AND NOT EXISTS (SELECT 1 FROM segmentations s WHERE s.case_id = c.id AND s.received_at >= $1)
               AND NOT EXISTS (SELECT 1 FROM results r WHERE r.case_id = c.id AND (r.scored_at >= $1 OR r.drift_pending))
               AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.case_id = c.id AND j.status IN ('queued', 'running'))",
            cutoff,
            &locked
        )
        .fetch_all(&mut *tx)
        .await?;
        if cases.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let results = sqlx::query_scalar!("SELECT id FROM results WHERE case_id = ANY($1)", &cases)
            .fetch_all(&mut *tx)
            .await?;
        sqlx::query!(
            "DELETE FROM detector_history WHERE result_id = ANY($1)",
            &results
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "DELETE FROM lesion_results WHERE result_id = ANY($1)",
            &results
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "DELETE FROM structure_results WHERE result_id = ANY($1)",
            &results
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!("DELETE FROM results WHERE id = ANY($1)", &results)
            .execute(&mut *tx)
            .await?;
        sqlx::query!("DELETE FROM jobs WHERE case_id = ANY($1)", &cases)
            .execute(&mut *tx)
            .await?;
        sqlx::query!(
            "DELETE FROM reader_agreement WHERE case_id = ANY($1)",
            &cases
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "DELETE FROM segmentation_contents
             WHERE segmentation_id IN (SELECT id FROM segmentations WHERE case_id = ANY($1))",
            &cases
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!("DELETE FROM segmentations WHERE case_id = ANY($1)", &cases)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query!("DELETE FROM cases WHERE id = ANY($1)", &cases)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// Deletes the incidents resolved more than `days` days ago; returns how many.
    pub async fn purge_resolved_incidents(&self, days: u32) -> Result<u64> {
        let pool = postgres_or!(self, lite => lite.purge_resolved_incidents(days));
        let cutoff = Utc::now() - Duration::days(i64::from(days));
        let mut tx = pool.begin().await.map_err(StoreError::classify)?;
        sqlx::query!(
            "DELETE FROM incident_streams WHERE incident_id IN
                 (SELECT id FROM incidents WHERE resolved_at < $1)",
            cutoff
        )
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query!("DELETE FROM incidents WHERE resolved_at < $1", cutoff)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}
