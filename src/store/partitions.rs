//! Monthly partitions (PostgreSQL): the stored files by month of receipt
//! (migration 0016), and results with their structure, lesion and detector
//! history rows by month of the result's `scored_at` (migration 0020). This
//! month's and the next ones are created ahead of time, and a month past
//! retention is dropped as a whole, what is still needed moved to the DEFAULT
//! partition first. The embedded store is not partitioned: `purge_scored` and
//! `purge_expired_cases` alone delete its rows.

mod history;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};

use super::{Db, Result, Store, StoreError};

/// The partitioned table of stored files.
const FILES: &str = "segmentation_contents";
/// Months created ahead of the current one.
const MONTHS_AHEAD: u32 = 2;

/// What dropping whole months took away.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DroppedMonths {
    /// Stored files.
    pub files: u64,
    /// Results (each with its structure, lesion and detector history rows).
    pub results: u64,
}

/// The first day of the month `later` months after `day`'s.
fn month_start(day: NaiveDate, later: u32) -> NaiveDate {
    let months = day.year() * 12 + day.month0() as i32 + later as i32;
    NaiveDate::from_ymd_opt(months.div_euclid(12), months.rem_euclid(12) as u32 + 1, 1)
        .unwrap_or(NaiveDate::MAX)
}

/// UTC midnight of `day`.
fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

/// The partition of `table` for the month starting on `month`.
fn partition_name(table: &str, month: NaiveDate) -> String {
    format!("{table}_{:04}_{:02}", month.year(), month.month())
}

/// The month a partition of `table` holds, from its name; None for the
/// DEFAULT partition.
fn partition_month(table: &str, name: &str) -> Option<NaiveDate> {
    let suffix = name.strip_prefix(table)?.strip_prefix('_')?;
    let (year, month) = suffix.split_once('_')?;
    NaiveDate::from_ymd_opt(year.parse().ok()?, month.parse().ok()?, 1)
}

/// Runs one statement that names a partition (DDL takes no bind parameters);
/// the names and bounds come from dates, never from input.
async fn ddl(tx: &mut sqlx::PgConnection, statement: String) -> Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(statement))
        .execute(tx)
        .await?;
    Ok(())
}

impl Store {
    /// Creates the monthly partitions from this month through
    /// [`MONTHS_AHEAD`] ahead, then drops each month of stored files whose
    /// end is more than `days` days ago (its files of scored jobs go with the
    /// partition, the others move to the DEFAULT partition) and, with
    /// `results_days` set (0 keeps every result), each month of results whose
    /// end is more than `results_days` ago (results of cases still active by
    /// the results retention move to the DEFAULT partition, the rest go).
    /// The embedded store has no partitions: nothing dropped.
    pub async fn maintain_partitions(&self, days: u32, results_days: u32) -> Result<DroppedMonths> {
        let pool = match &self.db {
            Db::Postgres(pg) => &pg.pool,
            Db::Sqlite(_) => return Ok(DroppedMonths::default()),
        };
        let today = Utc::now().date_naive();
        let mut tx = pool.begin().await.map_err(StoreError::classify)?;
        lock(&mut tx).await?;
        let files = months(&mut tx, FILES).await?;
        let results = months(&mut tx, history::RESULTS).await?;
        for month in (0..=MONTHS_AHEAD).map(|later| month_start(today, later)) {
            if !files.contains(&month) {
                let name = detached_month(&mut tx, FILES, "received_at", month).await?;
                attach(&mut tx, FILES, &name, month).await?;
            }
            if !results.contains(&month) {
                history::create_month(&mut tx, month).await?;
            }
        }
        tx.commit().await?;
        let mut dropped = DroppedMonths::default();
        let cutoff = Utc::now() - Duration::days(i64::from(days));
        for month in files {
            if midnight(month_start(month, 1)) <= cutoff {
                dropped.files += drop_files_month(pool, month).await?;
            }
        }
        if results_days > 0 {
            let cutoff = Utc::now() - Duration::days(i64::from(results_days));
            for month in results {
                if midnight(month_start(month, 1)) <= cutoff {
                    dropped.results += history::drop_month(pool, month, cutoff).await?;
                }
            }
        }
        Ok(dropped)
    }
}

/// Held shared by each transaction that can make a case active or change its
/// results (an upload, a completed job), and exclusive by the drop of a month
/// of results from before it reads which results to keep.
const CASE_ACTIVITY_LOCK: i64 = 0x5365_6777_6361_7365;

/// Takes the case-activity lock shared until the transaction ends: first in
/// the transaction, before any table lock, so that it never waits for a drop
/// while holding what the drop needs.
pub(super) async fn share_case_activity(tx: &mut sqlx::PgConnection) -> Result<()> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock_shared($1)",
        CASE_ACTIVITY_LOCK
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Serialises partition upkeep between replicas, until the transaction ends.
async fn lock(tx: &mut sqlx::PgConnection) -> Result<()> {
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtext('segwatch partitions'))")
        .execute(tx)
        .await?;
    Ok(())
}

/// Rather fail and try again next hour than queue writers behind the locks
/// that detaching and dropping a partition take, until the transaction ends.
async fn lock_timeout(tx: &mut sqlx::PgConnection) -> Result<()> {
    sqlx::query("SET LOCAL lock_timeout = '10s'")
        .execute(tx)
        .await?;
    Ok(())
}

/// The months of `table` that have a partition.
async fn months(tx: &mut sqlx::PgConnection, table: &str) -> Result<Vec<NaiveDate>> {
    let names = sqlx::query_scalar!(
        r#"SELECT c.relname::text AS "name!" FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = $1::text::regclass"#,
        table
    )
    .fetch_all(tx)
    .await?;
    Ok(names
        .iter()
        .filter_map(|n| partition_month(table, n))
        .collect())
}

/// Creates (not attached yet) the partition of `table` for the month
/// starting on `month`, moving into it the rows the DEFAULT partition took
/// for that month (stored while it did not exist), which PostgreSQL requires
/// before attaching it. Returns its name.
async fn detached_month(
    tx: &mut sqlx::PgConnection,
    table: &str,
    key: &str,
    month: NaiveDate,
) -> Result<String> {
    let name = partition_name(table, month);
    ddl(
        tx,
        format!("CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"),
    )
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH moved AS (DELETE FROM {table}_default WHERE {key} >= $1 AND {key} < $2 RETURNING *)
         INSERT INTO {name} SELECT * FROM moved"
    )))
    .bind(midnight(month))
    .bind(midnight(month_start(month, 1)))
    .execute(&mut *tx)
    .await?;
    Ok(name)
}

/// Attaches `name` as the partition of `table` for the month starting on `month`.
async fn attach(
    tx: &mut sqlx::PgConnection,
    table: &str,
    name: &str,
    month: NaiveDate,
) -> Result<()> {
    ddl(
        tx,
        format!(
            "ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ('{}') TO ('{}')",
            midnight(month).to_rfc3339(),
            midnight(month_start(month, 1)).to_rfc3339()
        ),
    )
    .await
}

/// Drops the partition of stored files of the month starting on `month` once
/// another replica has not: the files no done job used move to the DEFAULT
/// partition first. Returns how many files went.
async fn drop_files_month(pool: &sqlx::PgPool, month: NaiveDate) -> Result<u64> {
    let name = partition_name(FILES, month);
    let (from, to) = (midnight(month), midnight(month_start(month, 1)));
    let mut tx = pool.begin().await.map_err(StoreError::classify)?;
    lock(&mut tx).await?;
    if !months(&mut tx, FILES).await?.contains(&month) {
        tx.commit().await?;
        return Ok(0);
    }
    // Read before the partition is detached, which blocks uploads until the
    // transaction ends; no file is received into a past month.
    let files = sqlx::query_scalar!(
        r#"SELECT count(*) AS "files!" FROM segmentation_contents WHERE received_at >= $1 AND received_at < $2"#,
        from,
        to
    )
    .fetch_one(&mut *tx)
    .await?;
    let kept = sqlx::query_scalar!(
        "SELECT c.segmentation_id FROM segmentation_contents c
         WHERE c.received_at >= $1 AND c.received_at < $2
           AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.prediction_id = c.segmentation_id AND j.status = 'done')
           AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.reference_id = c.segmentation_id AND j.status = 'done')",
        from,
        to
    )
    .fetch_all(&mut *tx)
    .await?;
    lock_timeout(&mut tx).await?;
    ddl(
        &mut tx,
        format!("ALTER TABLE {FILES} DETACH PARTITION {name}"),
    )
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {FILES} SELECT * FROM {name} WHERE segmentation_id = ANY($1)"
    )))
    .bind(&kept)
    .execute(&mut *tx)
    .await?;
    ddl(&mut tx, format!("DROP TABLE {name}")).await?;
    tx.commit().await?;
    Ok((files as u64).saturating_sub(kept.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_roll_over_years_and_names_read_back() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 17).unwrap();
        let next = month_start(day, 2);
        assert_eq!(next, NaiveDate::from_ymd_opt(2027, 1, 1).unwrap());
        assert_eq!(partition_name(FILES, next), "segmentation_contents_2027_01");
        assert_eq!(
            partition_month(FILES, &partition_name(FILES, next)),
            Some(next)
        );
        assert_eq!(
            partition_month(FILES, "segmentation_contents_default"),
            None
        );
        assert_eq!(partition_month("results", "results_2027_01"), Some(next));
        assert_eq!(partition_month("results", "results_default"), None);
        assert_eq!(midnight(next).to_rfc3339(), "2027-01-01T00:00:00+00:00");
    }
}
