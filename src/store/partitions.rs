//! Monthly partitions of the stored files (PostgreSQL, migration 0016): this
//! month's and the next ones are created ahead of time, and a month whose files
//! are all past retention is dropped as a whole. The embedded store is not
//! partitioned: `purge_scored` alone deletes its files.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};

use super::{Db, Result, Store, StoreError};

/// The partitioned table and the prefix of its monthly partitions' names.
const TABLE: &str = "segmentation_contents";
/// Months created ahead of the current one.
const MONTHS_AHEAD: u32 = 2;

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

/// The partition of the month starting on `month`.
fn partition_name(month: NaiveDate) -> String {
    format!("{TABLE}_{:04}_{:02}", month.year(), month.month())
}

/// The month a partition holds, from its name; None for the DEFAULT partition.
fn partition_month(name: &str) -> Option<NaiveDate> {
    let suffix = name.strip_prefix(TABLE)?.strip_prefix('_')?;
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
    /// Creates the monthly partitions of the stored files from this month
    /// through [`MONTHS_AHEAD`] ahead, then drops each month whose end is more
    /// than `days` days ago: its files of scored jobs go with the partition,
    /// the others move to the DEFAULT partition. Returns how many files went.
    /// The embedded store has no partitions: 0.
    pub async fn maintain_partitions(&self, days: u32) -> Result<u64> {
        let pool = match &self.db {
            Db::Postgres(pg) => &pg.pool,
            Db::Sqlite(_) => return Ok(0),
        };
        let today = Utc::now().date_naive();
        let mut tx = pool.begin().await.map_err(StoreError::classify)?;
        lock(&mut tx).await?;
        let months = months(&mut tx).await?;
        for month in (0..=MONTHS_AHEAD).map(|later| month_start(today, later)) {
            if !months.contains(&month) {
                create_month(&mut tx, month).await?;
            }
        }
        tx.commit().await?;
        let cutoff = Utc::now() - Duration::days(i64::from(days));
        let mut dropped = 0;
        for month in months {
            if midnight(month_start(month, 1)) <= cutoff {
                dropped += drop_month(pool, month).await?;
            }
        }
        Ok(dropped)
    }
}

/// Serialises partition upkeep between replicas, until the transaction ends.
async fn lock(tx: &mut sqlx::PgConnection) -> Result<()> {
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtext('segwatch partitions'))")
        .execute(tx)
        .await?;
    Ok(())
}

/// The months that have a partition.
async fn months(tx: &mut sqlx::PgConnection) -> Result<Vec<NaiveDate>> {
    let names = sqlx::query_scalar!(
        r#"SELECT c.relname::text AS "name!" FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = 'segmentation_contents'::regclass"#
    )
    .fetch_all(tx)
    .await?;
    Ok(names.iter().filter_map(|n| partition_month(n)).collect())
}

/// Creates the partition of the month starting on `month`, moving into it
/// the files the DEFAULT partition took for that month (received while it
/// did not exist), which PostgreSQL requires before attaching it.
async fn create_month(tx: &mut sqlx::PgConnection, month: NaiveDate) -> Result<()> {
    let name = partition_name(month);
    let (from, to) = (midnight(month), midnight(month_start(month, 1)));
    ddl(
        tx,
        format!("CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"),
    )
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH moved AS (DELETE FROM {TABLE}_default WHERE received_at >= $1 AND received_at < $2
                        RETURNING segmentation_id, received_at, content)
         INSERT INTO {name} SELECT * FROM moved"
    )))
    .bind(from)
    .bind(to)
    .execute(&mut *tx)
    .await?;
    ddl(
        tx,
        format!(
            "ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES FROM ('{}') TO ('{}')",
            from.to_rfc3339(),
            to.to_rfc3339()
        ),
    )
    .await
}

/// Drops the partition of the month starting on `month` once another replica
/// has not: the files no done job used move to the DEFAULT partition first.
/// Returns how many files went.
async fn drop_month(pool: &sqlx::PgPool, month: NaiveDate) -> Result<u64> {
    let name = partition_name(month);
    let (from, to) = (midnight(month), midnight(month_start(month, 1)));
    let mut tx = pool.begin().await.map_err(StoreError::classify)?;
    lock(&mut tx).await?;
    if !months(&mut tx).await?.contains(&month) {
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
    // Rather fail and try again next time than queue uploads behind the lock.
    sqlx::query("SET LOCAL lock_timeout = '10s'")
        .execute(&mut *tx)
        .await?;
    ddl(
        &mut tx,
        format!("ALTER TABLE {TABLE} DETACH PARTITION {name}"),
    )
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {TABLE} SELECT * FROM {name} WHERE segmentation_id = ANY($1)"
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
        assert_eq!(partition_name(next), "segmentation_contents_2027_01");
        assert_eq!(partition_month(&partition_name(next)), Some(next));
        assert_eq!(partition_month("segmentation_contents_default"), None);
        assert_eq!(midnight(next).to_rfc3339(), "2027-01-01T00:00:00+00:00");
    }
}
