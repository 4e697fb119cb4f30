//! All SQL: migrations, keys, schemas, uploads, the job queue and results.

mod drift;
mod jobs;
mod keys;
mod results;
mod schemas;
mod uploads;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

pub use drift::{
    ALL, BaselineInfo, BaselineStructure, DetectorRow, IncidentStream, IncidentView, NotifiedAlert,
    OpenIncident, Stratum,
};
pub use jobs::{ClaimedJob, JobInputs, JobOutcome};
pub use keys::{KeyInfo, Principal, Role, hash_secret};
pub use results::{CaseFilter, CaseStatus, CaseSummary, CaseView, Revision};
pub use uploads::{NewSegmentation, PartnerGrid, SegRole, StoredUpload};

/// Channel on which new jobs are announced.
pub const JOBS_CHANNEL: &str = "segwatch_jobs";

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or timed out: retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Pool timeouts and connection failures mean "try again", not "bad request".
    fn classify(err: sqlx::Error) -> StoreError {
        match err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => StoreError::Unavailable(err.to_string()),
            other => StoreError::Database(other),
        }
    }

    /// What was wrong with a value the database refused as input (a NUL
    /// character in text, a date or number out of its range): the request's
    /// fault, not the service's. The transaction was rolled back.
    pub fn invalid_input(&self) -> Option<&'static str> {
        let StoreError::Database(sqlx::Error::Database(e)) = self else {
            return None;
        };
        match e.code().as_deref() {
            // character_not_in_repertoire, untranslatable_character
            Some("22021") | Some("22P05") => Some("text must not contain NUL characters"),
            // datetime_field_overflow, invalid_datetime_format, numeric_value_out_of_range
            Some("22008") | Some("22007") | Some("22003") => {
                Some("a date or number is out of its valid range")
            }
            // invalid_row_count_in_limit_clause and similar
            Some("2201W") | Some("2201X") => Some("a count must not be negative"),
            _ => None,
        }
    }

    /// Whether the operation may succeed if retried.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The service's database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects lazily: requests fail fast with `Unavailable` while the database is down.
    pub fn connect(url: &str, max_connections: u32) -> Result<Store> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy(url)?;
        Ok(Store { pool })
    }

    /// The connection pool (for LISTEN).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the migrations in `migrations/`.
    pub async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations").run(&self.pool).await?;
        Ok(())
    }

    /// Database reachable and every migration applied.
    pub async fn ready(&self) -> Result<bool> {
        let applied: i64 =
            sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await
                .map_err(StoreError::classify)?;
        Ok(applied as usize >= sqlx::migrate!("./migrations").iter().count())
    }
}
