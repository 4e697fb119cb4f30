//! The embedded store: one SQLite file under the data directory, with the
//! same tables, queue semantics and drift persistence as PostgreSQL.
//!
//! Writes go through one connection, in `BEGIN IMMEDIATE` transactions, so
//! they are serialised in this process and, by SQLite's file lock, across
//! processes sharing the directory (a `segwatch keys` command next to a
//! running `serve`): what PostgreSQL does with row locks, `FOR UPDATE SKIP
//! LOCKED` and advisory locks, one writer at a time does here. Reads use a
//! separate pool and see committed data (WAL mode). Times are stored as
//! fixed-width UTC text ([`at`]) so that text order is time order.

mod drift;
mod gates;
mod history;
mod jobs;
mod readers;
mod results;
mod retention;
mod uploads;
mod versions;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
use tokio::sync::Notify;

use super::{Result, StoreError};
use crate::schema::Schema;

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "segwatch.db";

/// How long a write waits for another process holding the file's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The embedded database.
#[derive(Debug, Clone)]
pub struct Lite {
    reader: SqlitePool,
    writer: SqlitePool,
    dir: PathBuf,
    /// Woken when this process enqueues a job (PostgreSQL uses NOTIFY).
    jobs: Arc<Notify>,
}

/// A time as stored: UTC with microseconds, always the same width.
pub(super) fn at(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Now, as stored.
fn now() -> String {
    at(Utc::now())
}

/// `days` before now, as stored.
fn days_ago(days: u32) -> String {
    at(Utc::now() - chrono::Duration::days(i64::from(days)))
}

/// JSON text of a value.
fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A stored JSON column back into its value.
fn parse<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// Busy and locked files mean "try again"; a missing or unwritable directory
/// is reported as such; other errors as the database's.
fn classify(err: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(e) = &err {
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
        let primary = e
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .map(|c| c & 0xff);
        if matches!(primary, Some(5 | 6)) {
            return StoreError::Unavailable(e.message().to_owned());
        }
    }
    StoreError::classify(err)
}

impl Lite {
    /// Opens (lazily) the database in `dir`; nothing touches the disk until
    /// [`Lite::check`].
    pub fn open(dir: &Path, readers: u32) -> Lite {
        let options = SqliteConnectOptions::new()
            .filename(dir.join(DATABASE_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Every commit reaches the disk before the upload is answered.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_lazy_with(options.clone());
        let reader = SqlitePoolOptions::new()
            .max_connections(readers.max(2))
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_lazy_with(options);
        Lite {
            reader,
            writer,
            dir: dir.to_owned(),
            jobs: Arc::new(Notify::new()),
        }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Woken whenever this process enqueues a job.
    pub fn job_notifications(&self) -> Arc<Notify> {
        self.jobs.clone()
    }

    /// Creates the data directory if needed and opens the database file.
    pub async fn check(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| StoreError::DataDir {
            dir: self.dir.clone(),
            reason: e.to_string(),
        })?;
        match self.writer.acquire().await {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) => Err(StoreError::DataDir {
                dir: self.dir.clone(),
                reason: e.message().to_owned(),
            }),
            Err(e) => Err(classify(e)),
        }
    }

    /// Applies the migrations in `migrations/sqlite/`.
    pub async fn migrate(&self) -> Result<()> {
        self.check().await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.writer)
            .await
            .map_err(StoreError::from)
    }

    /// Every migration applied. Reads only, so a long write does not hold
    /// up `/readyz`.
    pub async fn ready(&self) -> Result<bool> {
        let table: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(classify)?;
        if table == 0 {
            return Ok(false);
        }
        let applied: i64 =
            sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.reader)
                .await
                .map_err(classify)?;
        Ok(applied as usize >= sqlx::migrate!("./migrations/sqlite").iter().count())
    }

    /// A write transaction, holding the database's write lock from its start.
    async fn begin(&self) -> Result<Transaction<'static, Sqlite>> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)
    }

    /// Stores a new key.
    pub async fn create_key(
        &self,
        id: &str,
        secret_sha256: &[u8],
        role: &str,
        site: Option<&str>,
        label: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, secret_sha256, role, site, label, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(secret_sha256)
        .bind(role)
        .bind(site)
        .bind(label)
        .bind(now())
        .execute(&self.writer)
        .await
        .map_err(classify)?;
        Ok(())
    }

    /// Every key, newest first.
    pub async fn list_keys(&self) -> Result<Vec<super::KeyInfo>> {
        type Row = (
            String,
            String,
            Option<String>,
            Option<String>,
            DateTime<Utc>,
            Option<DateTime<Utc>>,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, role, site, label, created_at, revoked_at FROM api_keys ORDER BY created_at DESC",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(classify)?;
        Ok(rows
            .into_iter()
            .map(
                |(id, role, site, label, created_at, revoked_at)| super::KeyInfo {
                    id,
                    role,
                    site,
                    label,
                    created_at,
                    revoked_at,
                },
            )
            .collect())
    }

    /// Revokes an active key; false if there is none with this id.
    pub async fn revoke_key(&self, id: &str) -> Result<bool> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(now())
                .execute(&self.writer)
                .await
                .map_err(classify)?;
        Ok(done.rows_affected() == 1)
    }

    /// The active keys: (id, secret hash, role, site).
    pub async fn active_keys(&self) -> Result<Vec<(String, Vec<u8>, String, Option<String>)>> {
        sqlx::query_as(
            "SELECT id, secret_sha256, role, site FROM api_keys WHERE revoked_at IS NULL",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(classify)
    }

    /// Sets the schema of a model version; true when it is new.
    pub async fn put_schema(&self, model: &str, version: &str, schema: &Schema) -> Result<bool> {
        let mut tx = self.begin().await?;
        let existed: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM model_schemas WHERE model = $1 AND model_version = $2)",
        )
        .bind(model)
        .bind(version)
        .fetch_one(&mut *tx)
        .await
        .map_err(classify)?;
        sqlx::query(
            "INSERT INTO model_schemas (model, model_version, schema, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (model, model_version) DO UPDATE SET schema = excluded.schema, updated_at = excluded.updated_at",
        )
        .bind(model)
        .bind(version)
        .bind(json(schema)?)
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(!existed)
    }

    /// The schema of a model version, as stored.
    pub async fn schema(&self, model: &str, version: &str) -> Result<Option<serde_json::Value>> {
        let text: Option<String> = sqlx::query_scalar(
            "SELECT schema FROM model_schemas WHERE model = $1 AND model_version = $2",
        )
        .bind(model)
        .bind(version)
        .fetch_optional(&self.reader)
        .await
        .map_err(classify)?;
        text.map(|t| parse("schema", &t)).transpose()
    }
}
