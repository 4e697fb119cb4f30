//! Retention beyond stored files, as in PostgreSQL (`store::retention`).

use chrono::{Duration, Utc};

use super::{Lite, at, classify, json};
use crate::store::Result;

impl Lite {
    /// See [`crate::store::Store::purge_expired_cases`].
    pub async fn purge_expired_cases(&self, days: u32, batch: i64) -> Result<u64> {
        let cutoff = Utc::now() - Duration::days(i64::from(days));
        // One writer: no worker stores a result while this transaction runs.
        let mut tx = self.writer.begin().await.map_err(classify)?;
        // Daily Dice sums of days no rolling window reads.
        sqlx::query("DELETE FROM dice_daily WHERE day < $1")
            .bind((cutoff - Duration::days(1)).format("%Y-%m-%d").to_string())
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        let cases: Vec<i64> = sqlx::query_scalar(
            "SELECT c.id FROM cases c
             WHERE c.created_at < $1
               AND NOT EXISTS (SELECT 1 FROM segmentations s WHERE s.case_id = c.id AND s.received_at >= $1)
               AND NOT EXISTS (SELECT 1 FROM results r WHERE r.case_id = c.id AND (r.scored_at >= $1 OR r.drift_pending))
               AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.case_id = c.id AND j.status IN ('queued', 'running'))
             ORDER BY c.created_at LIMIT $2",
        )
        .bind(at(cutoff))
        .bind(batch)
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?;
        if cases.is_empty() {
            tx.commit().await.map_err(classify)?;
            return Ok(0);
        }
        let ids = json(&cases)?;
        let of_results = "result_id IN (SELECT id FROM results WHERE case_id IN (SELECT value FROM json_each($1)))";
        let of_cases = "case_id IN (SELECT value FROM json_each($1))";
        for statement in [
            format!("DELETE FROM detector_history WHERE {of_results}"),
            format!("DELETE FROM lesion_results WHERE {of_results}"),
            format!("DELETE FROM structure_results WHERE {of_results}"),
            format!("DELETE FROM results WHERE {of_cases}"),
            format!("DELETE FROM jobs WHERE {of_cases}"),
            format!("DELETE FROM reader_agreement WHERE {of_cases}"),
            format!(
                "DELETE FROM segmentation_contents WHERE segmentation_id IN (SELECT id FROM segmentations WHERE {of_cases})"
            ),
            format!("DELETE FROM segmentations WHERE {of_cases}"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(statement))
                .bind(&ids)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
        }
        let done = sqlx::query("DELETE FROM cases WHERE id IN (SELECT value FROM json_each($1))")
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(done.rows_affected())
    }

    /// See [`crate::store::Store::purge_resolved_incidents`].
    pub async fn purge_resolved_incidents(&self, days: u32) -> Result<u64> {
        let cutoff = at(Utc::now() - Duration::days(i64::from(days)));
        let mut tx = self.writer.begin().await.map_err(classify)?;
        sqlx::query(
            "DELETE FROM incident_streams WHERE incident_id IN
                 (SELECT id FROM incidents WHERE resolved_at < $1)",
        )
        .bind(&cutoff)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        let done = sqlx::query("DELETE FROM incidents WHERE resolved_at < $1")
            .bind(&cutoff)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(done.rows_affected())
    }
}
