//! All SQL: migrations, keys, schemas, uploads, the job queue and results,
//! in PostgreSQL (`database_url` set: several replicas can share it) or in the
//! embedded SQLite store under the data directory (the default, one host).
//! Each `Store` method runs the PostgreSQL queries in its module here, or the
//! embedded store's in `sqlite/`.

/// The connection pool of a PostgreSQL store; for the embedded store, returns
/// from the calling method with `$call`, the same operation on `$lite`.
macro_rules! postgres_or {
    ($store:expr, $lite:ident => $call:expr) => {
        match &$store.db {
            crate::store::Db::Postgres(pg) => &pg.pool,
            crate::store::Db::Sqlite($lite) => return $call.await,
        }
    };
}

mod drift;
mod gates;
mod history;
mod jobs;
mod keys;
mod partitions;
mod probabilistic;
mod readers;
mod results;
mod retention;
mod rollups;
mod schemas;
mod sqlite;
mod uploads;
mod versions;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

pub use drift::{ALL, ActiveStream, CaseValues, DetectorRow, NotifiedAlert, OpenIncident, Samples};
pub use gates::NewGateDecision;
pub use history::{StoredStep, StoredUpdate, StreamHistory};
pub use jobs::{ClaimedJob, JobInputs};
pub use keys::{KEY_CACHE_TTL, KeyInfo, Principal, Role, hash_secret};
pub use partitions::DroppedMonths;
pub use probabilistic::StoredProbabilities;
pub use readers::{ReaderReference, StructureAgreement};
pub use results::CaseFilter;
pub use rollups::Rolling;
pub use uploads::{
    ModelBoundExceeded, ModelBounds, NewSegmentation, PartnerGrid, SegRole, Source, StoredUpload,
};
pub use versions::VersionDice;

/// Channel on which new jobs are announced.
pub const JOBS_CHANNEL: &str = "segwatch_jobs";

/// The setting that names the database, as told to users.
const DATABASE_SETTING: &str = "database_url in the configuration file or SEGWATCH_DATABASE_URL";

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or timed out: retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database named by `database_url` cannot be used: unreachable,
    /// missing or refusing the connection. Retrying may succeed once it is fixed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// `database_url` is not a valid PostgreSQL URL.
    #[error("{DATABASE_SETTING} is not a valid postgres:// URL: {0}")]
    BadUrl(String),
    /// An error the database returned for a statement.
    #[error("database error: {}", describe(.0))]
    Database(sqlx::Error),
    /// A migration could not be applied.
    #[error("migration failed: {}", describe_migrate(.0))]
    Migrate(sqlx::migrate::MigrateError),
    /// Rows that contradict each other or cannot be decoded.
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// A stream's history is longer than one request may replay.
    #[error(
        "the stream has more than {limit} cases under its baseline: too many to replay in one request"
    )]
    HistoryTooLong {
        /// The most cases a request replays.
        limit: usize,
    },
    /// The embedded store's data directory cannot be created or written.
    #[error("cannot use the data directory {}: {reason}; check --data-dir (SEGWATCH_DATA_DIR) and its permissions", .dir.display())]
    DataDir {
        /// The directory.
        dir: PathBuf,
        /// What the file system said.
        reason: String,
    },
}

// Written by hand rather than with `#[from]`: a source would be printed after the
// message, with the Postgres source position `describe` leaves out.
impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> StoreError {
        StoreError::Database(err)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> StoreError {
        StoreError::Migrate(err)
    }
}

/// Where the database is, for messages: host, port and database, never the
/// user's password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbTarget {
    /// Host name, address or Unix socket directory.
    pub host: String,
    /// TCP port (also the socket's suffix).
    pub port: u16,
    /// Database name; Postgres defaults it to the user name.
    pub database: String,
    /// The user connecting.
    pub user: String,
}

impl DbTarget {
    fn of(options: &PgConnectOptions) -> DbTarget {
        let user = options.get_username().to_owned();
        DbTarget {
            host: options.get_host().to_owned(),
            port: options.get_port(),
            database: options.get_database().unwrap_or(&user).to_owned(),
            user,
        }
    }
}

impl fmt::Display for DbTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "database \"{}\" on {}:{}",
            self.database, self.host, self.port
        )
    }
}

/// Why the database named by `database_url` cannot be used. Each message names
/// the host, port and database and the setting to change.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// Nothing answers at the host and port, or the host is unknown.
    #[error(
        "cannot reach {target}: {reason}; is PostgreSQL running there? Check {DATABASE_SETTING}"
    )]
    NoAnswer {
        /// The database tried.
        target: DbTarget,
        /// What the connection attempt reported.
        reason: String,
    },
    /// The server answers but has no such database.
    #[error("{target} does not exist; create it (createdb -h {} -p {} -U {} {}) or point {DATABASE_SETTING} at an existing database",
        .target.host, .target.port, .target.user, .target.database)]
    Missing {
        /// The database tried.
        target: DbTarget,
    },
    /// The server refused the connection: authentication, permissions, too many
    /// connections or still starting.
    #[error("{target} refused user \"{}\": {reason}; check the user and password in {DATABASE_SETTING}", .target.user)]
    Refused {
        /// The database tried.
        target: DbTarget,
        /// What the server said.
        reason: String,
    },
}

impl ConnectError {
    /// The problem without host, port, database or user, for answers to
    /// unauthenticated callers (`/readyz`); the log has the full message.
    pub fn summary(&self) -> String {
        match self {
            ConnectError::NoAnswer { reason, .. } => {
                format!("the database named by database_url does not answer: {reason}")
            }
            ConnectError::Missing { .. } => {
                "the database named by database_url does not exist".to_owned()
            }
            ConnectError::Refused { reason, .. } => {
                format!("the database named by database_url refused the connection: {reason}")
            }
        }
    }

    /// Interprets an error from connecting to `target`; `None` when it is not
    /// a connection problem.
    fn from_sqlx(target: &DbTarget, err: &sqlx::Error) -> Option<ConnectError> {
        let target = target.clone();
        match err {
            sqlx::Error::Io(e) => Some(ConnectError::NoAnswer {
                target,
                reason: e.to_string(),
            }),
            sqlx::Error::Tls(e) => Some(ConnectError::NoAnswer {
                target,
                reason: format!("TLS: {e}"),
            }),
            sqlx::Error::Database(e) => match e.code().as_deref() {
                // invalid_catalog_name
                Some("3D000") => Some(ConnectError::Missing { target }),
                // invalid_authorization_specification, invalid_password,
                // too_many_connections, cannot_connect_now
                Some(code) if code.starts_with("28") || code == "53300" || code == "57P03" => {
                    Some(ConnectError::Refused {
                        target,
                        reason: e.message().to_owned(),
                    })
                }
                // connection_exception and its subclasses
                Some(code) if code.starts_with("08") => Some(ConnectError::NoAnswer {
                    target,
                    reason: e.message().to_owned(),
                }),
                _ => None,
            },
            _ => None,
        }
    }
}

/// An error as shown to users: Postgres errors without the position in the
/// server's C source ("at line 948") that sqlx appends.
fn describe(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(e) => e.message().to_owned(),
        other => without_source_position(&other.to_string()),
    }
}

fn describe_migrate(err: &sqlx::migrate::MigrateError) -> String {
    use sqlx::migrate::MigrateError;
    match err {
        MigrateError::Execute(e) => describe(e),
        MigrateError::ExecuteMigration(e, version) => {
            format!("migration {version}: {}", describe(e))
        }
        other => without_source_position(&other.to_string()),
    }
}

/// Removes every " at line N" (a Postgres source position) from a message.
fn without_source_position(message: &str) -> String {
    const MARK: &str = " at line ";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(MARK) {
        let after = &rest[at + MARK.len()..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        out.push_str(&rest[..at]);
        if digits == 0 {
            out.push_str(MARK);
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
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
        match self {
            StoreError::Unavailable(_) | StoreError::Connect(_) => true,
            // Serialisation failures and deadlocks, a server shutting down,
            // connection failures, exhausted resources.
            StoreError::Database(sqlx::Error::Database(e)) => e.code().is_some_and(|code| {
                ["40", "57P", "08", "53"]
                    .iter()
                    .any(|class| code.starts_with(class))
            }),
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// How long a connection attempt may take before the database is reported
/// as not answering.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The service's database.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    keys: keys::KeyCache,
}

/// Which database a store uses.
#[derive(Debug, Clone)]
enum Db {
    Postgres(Postgres),
    Sqlite(sqlite::Lite),
}

/// A PostgreSQL database and where it is.
#[derive(Debug, Clone)]
struct Postgres {
    pool: PgPool,
    target: DbTarget,
}

/// Where a store keeps its data, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A PostgreSQL database.
    Postgres(DbTarget),
    /// The embedded database file.
    Embedded(PathBuf),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Postgres(target) => target.fmt(f),
            Location::Embedded(dir) => {
                write!(
                    f,
                    "embedded database {}",
                    dir.join(sqlite::DATABASE_FILE).display()
                )
            }
        }
    }
}

impl Store {
    /// PostgreSQL at `database_url` when it is set, else the embedded store in
    /// `data_dir`.
    pub fn open(database_url: &str, data_dir: &Path, max_connections: u32) -> Result<Store> {
        if database_url.trim().is_empty() {
            Ok(Store::embedded(data_dir, max_connections))
        } else {
            Store::connect(database_url, max_connections)
        }
    }

    /// The embedded store in `data_dir` (created when first used).
    pub fn embedded(data_dir: &Path, readers: u32) -> Store {
        Store {
            db: Db::Sqlite(sqlite::Lite::open(data_dir, readers)),
            keys: keys::KeyCache::default(),
        }
    }

    /// Connects lazily: requests fail fast with `Unavailable` while the database is down.
    pub fn connect(url: &str, max_connections: u32) -> Result<Store> {
        // The parser's messages quote no part of the URL, so no password.
        let options =
            PgConnectOptions::from_str(url).map_err(|e| StoreError::BadUrl(describe(&e)))?;
        let target = DbTarget::of(&options);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with(options);
        Ok(Store {
            db: Db::Postgres(Postgres { pool, target }),
            keys: keys::KeyCache::default(),
        })
    }

    /// The PostgreSQL pool, for LISTEN; None for the embedded store.
    pub fn postgres_pool(&self) -> Option<&PgPool> {
        match &self.db {
            Db::Postgres(pg) => Some(&pg.pool),
            Db::Sqlite(_) => None,
        }
    }

    /// Woken when this process enqueues a job, for the embedded store (which
    /// has no NOTIFY); None for PostgreSQL.
    pub fn local_job_notifications(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        match &self.db {
            Db::Postgres(_) => None,
            Db::Sqlite(lite) => Some(lite.job_notifications()),
        }
    }

    /// Where the data is.
    pub fn location(&self) -> Location {
        match &self.db {
            Db::Postgres(pg) => Location::Postgres(pg.target.clone()),
            Db::Sqlite(lite) => Location::Embedded(lite.dir().to_owned()),
        }
    }

    /// Reaches the database: for PostgreSQL, one connection outside the pool,
    /// so that a failure says why; for the embedded store, creates the data
    /// directory and opens the file.
    pub async fn check(&self) -> Result<()> {
        match &self.db {
            Db::Postgres(pg) => pg.check().await,
            Db::Sqlite(lite) => lite.check().await,
        }
    }

    /// Applies the migrations of the store's database.
    pub async fn migrate(&self) -> Result<()> {
        match &self.db {
            Db::Postgres(pg) => pg.migrate().await,
            Db::Sqlite(lite) => lite.migrate().await,
        }
    }

    /// Database reachable and every migration applied.
    pub async fn ready(&self) -> Result<bool> {
        match &self.db {
            Db::Postgres(pg) => pg.ready().await,
            Db::Sqlite(lite) => lite.ready().await,
        }
    }
}

impl Postgres {
    /// Opens one connection outside the pool, so that a failure says why (the
    /// pool retries refused connections until it times out and keeps no reason).
    async fn check(&self) -> Result<()> {
        let options = self.pool.connect_options();
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options));
        match attempt.await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                Ok(())
            }
            Ok(Err(e)) => Err(self.diagnose(e)),
            Err(_) => Err(ConnectError::NoAnswer {
                target: self.target.clone(),
                reason: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            }
            .into()),
        }
    }

    /// Names the database in connection failures; other errors as usual.
    fn diagnose(&self, err: sqlx::Error) -> StoreError {
        match ConnectError::from_sqlx(&self.target, &err) {
            Some(connect) => connect.into(),
            None => StoreError::classify(err),
        }
    }

    /// Like `diagnose`, and when the pool only says it timed out, asks the
    /// database directly why.
    async fn diagnose_pool(&self, err: sqlx::Error) -> StoreError {
        match err {
            sqlx::Error::PoolTimedOut => match self.check().await {
                Err(e) => e,
                // Reachable now: the pool was busy, or the database just came up.
                Ok(()) => StoreError::classify(sqlx::Error::PoolTimedOut),
            },
            other => self.diagnose(other),
        }
    }

    async fn migrate(&self) -> Result<()> {
        match sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await
        {
            Ok(()) => Ok(()),
            // Getting a connection failed, rather than a migration.
            Err(sqlx::migrate::MigrateError::Execute(e))
                if matches!(e, sqlx::Error::PoolTimedOut)
                    || ConnectError::from_sqlx(&self.target, &e).is_some() =>
            {
                Err(self.diagnose_pool(e).await)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn ready(&self) -> Result<bool> {
        // With no connection open (never reached, or all dropped since), one direct
        // attempt says at once why, where the pool would retry until its timeout.
        if self.pool.size() == 0 {
            self.check().await?;
        }
        let applied: i64 =
            match sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await
            {
                Ok(n) => n,
                // No migration table yet: nothing applied.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => {
                    return Ok(false);
                }
                Err(e) => return Err(self.diagnose_pool(e).await),
            };
        Ok(applied as usize >= sqlx::migrate!("./migrations/postgres").iter().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_source_positions_are_left_out() {
        assert_eq!(
            without_source_position(
                "relation \"x\" does not exist at line 1392: database \"y\" does not exist at line 948"
            ),
            "relation \"x\" does not exist: database \"y\" does not exist"
        );
        assert_eq!(
            without_source_position("look at line endings"),
            "look at line endings"
        );
    }

    #[tokio::test]
    async fn the_target_never_holds_the_password() {
        let store = Store::connect("postgres://me:s3cret@db.example:6543/segwatch", 1).unwrap();
        let Location::Postgres(target) = store.location() else {
            panic!("a postgres:// URL opens PostgreSQL");
        };
        assert_eq!(
            target.to_string(),
            "database \"segwatch\" on db.example:6543"
        );
        let missing = ConnectError::Missing { target }.to_string();
        assert!(missing.contains("SEGWATCH_DATABASE_URL") && !missing.contains("s3cret"));
        let bad = Store::connect("postgres://me:s3cret@db.example:port/x", 1).unwrap_err();
        assert!(!bad.to_string().contains("s3cret"), "{bad}");
    }
}
