//! Monthly partitions of results and the rows that hang off them (migration
//! 0020), all keyed by the result's `scored_at`: a month's partitions are
//! created and dropped together.

use chrono::{DateTime, NaiveDate, Utc};

use super::{
    CASE_ACTIVITY_LOCK, attach, ddl, detached_month, lock, lock_timeout, months, partition_name,
};
use crate::store::drift::FEED_LOCK;
use crate::store::{Result, StoreError};

/// The table the others' rows hang off.
pub(super) const RESULTS: &str = "results";
/// The tables whose rows reference a result, by `(result_id, scored_at)`.
const CHILDREN: [&str; 3] = ["structure_results", "lesion_results", "detector_history"];

/// Creates the month starting on `month` for the four tables. Rows the
/// DEFAULT partitions took for it move in, the referencing rows first; the
/// results partition is attached first, so that the others' foreign keys
/// find their results when they are attached.
pub(super) async fn create_month(tx: &mut sqlx::PgConnection, month: NaiveDate) -> Result<()> {
    let mut children = Vec::with_capacity(CHILDREN.len());
    for table in CHILDREN {
        children.push((table, detached_month(tx, table, "scored_at", month).await?));
    }
    let results = detached_month(tx, RESULTS, "scored_at", month).await?;
    attach(tx, RESULTS, &results, month).await?;
    for (table, name) in children {
        attach(tx, table, &name, month).await?;
    }
    Ok(())
}

/// Waits for case activity in progress to end and makes new activity wait
/// until the transaction ends, so that which results to keep is read after
/// the last change to a case and none follows the copy: the drift feed by its
/// lock (a feed in progress finishes, the next ones skip their turn), uploads
/// and completed jobs by the case-activity lock. Each wait is bounded by the
/// `lock_timeout` already set.
async fn hold_case_activity(tx: &mut sqlx::PgConnection) -> Result<()> {
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", FEED_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", CASE_ACTIVITY_LOCK)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Drops the month starting on `month` once another replica has not, keeping
/// the results of cases still active by the results retention (`cutoff`):
/// those of a case with a result not yet fed to the drift detectors, an
/// upload or a result since the cutoff, or a job queued or running, the same
/// rule as `purge_expired_cases`. A referenced partition cannot be dropped and
/// a detached one keeps its foreign key, so the kept rows are copied out, the
/// referencing months dropped, the results month detached and dropped, and
/// the kept rows put back (into the DEFAULT partitions). Returns how many
/// results went.
pub(super) async fn drop_month(
    pool: &sqlx::PgPool,
    month: NaiveDate,
    cutoff: DateTime<Utc>,
) -> Result<u64> {
    let mut tx = pool.begin().await.map_err(StoreError::classify)?;
    lock(&mut tx).await?;
    if !months(&mut tx, RESULTS).await?.contains(&month) {
        tx.commit().await?;
        return Ok(0);
    }
    let results = partition_name(RESULTS, month);
    lock_timeout(&mut tx).await?;
    hold_case_activity(&mut tx).await?;
    // Read before any partition is dropped, which blocks scoring and reads
    // of results until the transaction ends; no result is scored into a past
    // month.
    let stored: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {results}"
    )))
    .fetch_one(&mut *tx)
    .await?;
    ddl(
        &mut tx,
        format!("CREATE TEMPORARY TABLE keep_results ON COMMIT DROP AS SELECT * FROM {results} WITH NO DATA"),
    )
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO keep_results SELECT * FROM {results} r
         WHERE r.drift_pending
            OR EXISTS (SELECT 1 FROM segmentations s WHERE s.case_id = r.case_id AND s.received_at >= $1)
            OR EXISTS (SELECT 1 FROM results n WHERE n.case_id = r.case_id AND n.scored_at >= $1)
            OR EXISTS (SELECT 1 FROM jobs j WHERE j.case_id = r.case_id AND j.status IN ('queued', 'running'))"
    )))
    .bind(cutoff)
    .execute(&mut *tx)
    .await?;
    for table in CHILDREN {
        let name = partition_name(table, month);
        ddl(
            &mut tx,
            format!(
                "CREATE TEMPORARY TABLE keep_{table} ON COMMIT DROP AS
                 SELECT * FROM {name} WHERE result_id IN (SELECT id FROM keep_results)"
            ),
        )
        .await?;
    }
    for table in CHILDREN {
        ddl(
            &mut tx,
            format!("DROP TABLE {}", partition_name(table, month)),
        )
        .await?;
    }
    ddl(
        &mut tx,
        format!("ALTER TABLE {RESULTS} DETACH PARTITION {results}"),
    )
    .await?;
    ddl(&mut tx, format!("DROP TABLE {results}")).await?;
    let kept = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {RESULTS} SELECT * FROM keep_results"
    )))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    for table in CHILDREN {
        ddl(
            &mut tx,
            format!("INSERT INTO {table} SELECT * FROM keep_{table}"),
        )
        .await?;
    }
    tx.commit().await?;
    Ok((stored as u64).saturating_sub(kept))
}
