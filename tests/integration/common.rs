//! Test harness for the service: every test gets its own database, embedded
//! (a temporary data directory) or PostgreSQL, as `SEGWATCH_TEST_BACKEND` says.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use segwatch::config::Config;
use segwatch::store::{Role, Store};
use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection};

/// Where PostgreSQL test databases are created (`SEGWATCH_TEST_ADMIN_URL`).
pub fn admin_url() -> String {
    std::env::var("SEGWATCH_TEST_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The service tests run on PostgreSQL with `SEGWATCH_TEST_BACKEND=postgres`,
/// else on the embedded store.
pub fn on_postgres() -> bool {
    match std::env::var("SEGWATCH_TEST_BACKEND").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Ok("") | Err(_) => false,
        Ok(other) => panic!("SEGWATCH_TEST_BACKEND must be sqlite or postgres, not {other}"),
    }
}

/// Says, past the test harness's output capture, that a PostgreSQL test did not run.
pub fn not_on_postgres(test: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "note: {test} needs PostgreSQL and did not run; run the PostgreSQL suite with \
         SEGWATCH_TEST_BACKEND=postgres cargo test --release --test integration (CI does)"
    );
}

/// A fresh database, dropped when the test ends well.
pub enum TestDb {
    /// A PostgreSQL database of its own.
    Postgres { name: String, url: String },
    /// An embedded store in a temporary data directory.
    Embedded { dir: tempfile::TempDir },
}

/// A value or row both backends can decode.
pub trait BothBackends:
    for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
    + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
    + Send
    + Unpin
{
}

impl<T> BothBackends for T where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
        + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + Send
        + Unpin
{
}

impl TestDb {
    /// A database on the backend under test.
    pub async fn new() -> TestDb {
        if on_postgres() {
            TestDb::new_postgres().await
        } else {
            TestDb::Embedded {
                dir: tempfile::tempdir().unwrap(),
            }
        }
    }

    /// A PostgreSQL database when the PostgreSQL suite runs; None (and a
    /// note) otherwise.
    pub async fn postgres_only(test: &str) -> Option<TestDb> {
        if on_postgres() {
            Some(TestDb::new_postgres().await)
        } else {
            not_on_postgres(test);
            None
        }
    }

    async fn new_postgres() -> TestDb {
        let admin = admin_url();
        let name = format!("segwatch_test_{:016x}", rand::random::<u64>());
        let mut conn = PgConnection::connect(&admin)
            .await
            .expect("test Postgres (SEGWATCH_TEST_ADMIN_URL) reachable");
        let create = format!("CREATE DATABASE {name}");
        conn.execute(sqlx::AssertSqlSafe(create)).await.unwrap();
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(b, _)| b)
            .to_owned();
        TestDb::Postgres {
            url: format!("{base}/{name}"),
            name,
        }
    }

    /// Points a configuration at this database.
    pub fn configure(&self, config: &mut Config) {
        match self {
            TestDb::Postgres { url, .. } => config.database_url = url.clone(),
            TestDb::Embedded { dir } => {
                config.database_url = String::new();
                config.data_dir = dir.path().to_owned();
            }
        }
    }

    /// The environment that points a `segwatch` process at this database.
    pub fn env(&self) -> (&'static str, String) {
        match self {
            TestDb::Postgres { url, .. } => ("SEGWATCH_DATABASE_URL", url.clone()),
            TestDb::Embedded { dir } => ("SEGWATCH_DATA_DIR", dir.path().display().to_string()),
        }
    }

    /// A store on this database.
    pub fn store(&self) -> Store {
        let mut config = Config::default();
        self.configure(&mut config);
        config.store(4).unwrap()
    }

    /// Rows of a query written in SQL both backends accept.
    pub async fn rows<T: BothBackends>(&self, sql: &str) -> Vec<T> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            TestDb::Postgres { url, .. } => {
                let pool = sqlx::PgPool::connect(url).await.unwrap();
                let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
                pool.close().await;
                rows
            }
            TestDb::Embedded { dir } => {
                let pool = self.sqlite_pool(dir.path()).await;
                let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
                pool.close().await;
                rows
            }
        }
    }

    /// The single value of a query.
    pub async fn scalar<T>(&self, sql: &str) -> T
    where
        (T,): BothBackends,
    {
        let mut rows = self.rows::<(T,)>(sql).await;
        assert_eq!(rows.len(), 1, "{sql}");
        rows.pop().unwrap().0
    }

    /// Makes every case idle for `days`: created, uploaded and scored that
    /// long ago, and already fed to the drift detectors.
    pub async fn age_every_case(&self, days: i64) {
        let then = (chrono::Utc::now() - chrono::Duration::days(days))
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        for statement in [
            format!("UPDATE cases SET created_at = '{then}'"),
            format!("UPDATE segmentations SET received_at = '{then}'"),
            format!("UPDATE results SET scored_at = '{then}', drift_pending = false"),
        ] {
            self.execute(&statement).await;
        }
    }

    /// Runs a statement written in SQL both backends accept.
    pub async fn execute(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self {
            TestDb::Postgres { url, .. } => {
                let pool = sqlx::PgPool::connect(url).await.unwrap();
                sqlx::query(sql).execute(&pool).await.unwrap();
                pool.close().await;
            }
            TestDb::Embedded { dir } => {
                let pool = self.sqlite_pool(dir.path()).await;
                sqlx::query(sql).execute(&pool).await.unwrap();
                pool.close().await;
            }
        }
    }

    /// Applies the migrations up to `last` only (the schema of an earlier
    /// release), from a copy of the repository's migration files.
    pub async fn migrate_to(&self, last: i64) {
        let backend = if self.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        };
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(backend);
        let earlier = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(&source).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let version: i64 = name.split('_').next().unwrap().parse().unwrap();
            if version <= last {
                std::fs::copy(&path, earlier.path().join(name)).unwrap();
            }
        }
        let migrator = sqlx::migrate::Migrator::new(earlier.path()).await.unwrap();
        match self {
            TestDb::Postgres { url, .. } => {
                let pool = sqlx::PgPool::connect(url).await.unwrap();
                migrator.run(&pool).await.unwrap();
                pool.close().await;
            }
            TestDb::Embedded { dir } => {
                let pool = self.sqlite_pool(dir.path()).await;
                migrator.run(&pool).await.unwrap();
                pool.close().await;
            }
        }
    }

    /// Whether this is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        matches!(self, TestDb::Postgres { .. })
    }

    async fn sqlite_pool(&self, dir: &Path) -> sqlx::SqlitePool {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.join("segwatch.db"))
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(10));
        sqlx::SqlitePool::connect_with(options).await.unwrap()
    }

    pub async fn drop_db(self) {
        if let TestDb::Postgres { name, .. } = self
            && let Ok(mut conn) = PgConnection::connect(&admin_url()).await
        {
            let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            let _ = conn.execute(sqlx::AssertSqlSafe(drop)).await;
        }
    }
}

/// A service running in this process on an ephemeral port.
pub struct TestApp {
    pub base: String,
    pub store: Store,
    pub admin_key: String,
    pub client: reqwest::Client,
    pub db: TestDb,
}

/// Test configuration: a small fast service on `db`.
pub fn test_config(db: &TestDb) -> Config {
    let mut config = Config::load(None, |_| None).unwrap();
    db.configure(&mut config);
    config.workers.threads = 2;
    config.workers.poll_interval_ms = 200;
    config.workers.lease_secs = 30;
    config
}

impl TestApp {
    pub async fn start() -> TestApp {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
        let db = TestDb::new().await;
        let mut config = test_config(&db);
        tweak(&mut config);
        let router = segwatch::service::launch(Arc::new(config.clone()))
            .await
            .expect("service starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        let store = db.store();
        let admin_key = store
            .create_key(Role::Admin, None, Some("test admin"))
            .await
            .unwrap();
        TestApp {
            base: format!("http://{addr}"),
            store,
            admin_key,
            client: reqwest::Client::new(),
            db,
        }
    }

    pub async fn key(&self, role: Role, site: Option<&str>) -> String {
        self.store.create_key(role, site, None).await.unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Uploads a file as the prediction (with model m, version v1) or reference.
    pub async fn upload(
        &self,
        key: &str,
        site: &str,
        case: &str,
        role: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        upload(&self.client, &self.base, key, site, case, role, body).await
    }

    /// Uploads a prediction of model m at `version`.
    pub async fn predict(
        &self,
        key: &str,
        site: &str,
        case: &str,
        version: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        self.client
            .put(self.url(&format!(
                "/v1/sites/{site}/cases/{case}/prediction?model=m&model_version={version}"
            )))
            .bearer_auth(key)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// GET with a key, as JSON.
    pub async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        self.answer(self.client.get(self.url(path)), key).await
    }

    /// POST without a body with a key, as JSON.
    pub async fn post(&self, key: &str, path: &str) -> (u16, Value) {
        self.answer(self.client.post(self.url(path)), key).await
    }

    async fn answer(&self, request: reqwest::RequestBuilder, key: &str) -> (u16, Value) {
        let response = request.bearer_auth(key).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Sets a model version's structure schema with the admin key; the status.
    pub async fn put_schema(&self, model: &str, version: &str, schema: &Value) -> u16 {
        self.client
            .put(self.url(&format!("/v1/models/{model}/versions/{version}/structures")))
            .bearer_auth(&self.admin_key)
            .json(schema)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The Prometheus exposition, read with the admin key.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .bearer_auth(&self.admin_key)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits until the case is scored or failed, and returns it.
    pub async fn wait_scored(&self, site: &str, case: &str) -> Value {
        wait_scored(&self.client, &self.base, &self.admin_key, site, case).await
    }

    pub async fn finish(self) {
        self.db.drop_db().await;
    }
}

pub async fn upload(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    site: &str,
    case: &str,
    role: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    let query = if role == "prediction" {
        "?model=m&model_version=v1"
    } else {
        ""
    };
    client
        .put(format!("{base}/v1/sites/{site}/cases/{case}/{role}{query}"))
        .bearer_auth(key)
        .body(body)
        .send()
        .await
        .unwrap()
}

pub async fn wait_scored(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    site: &str,
    case: &str,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = client
            .get(format!("{base}/v1/sites/{site}/cases/{case}"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        if response.status().is_success() {
            let case: Value = response.json().await.unwrap();
            if case["status"] == "scored" || case["status"] == "failed" {
                return case;
            }
        }
        assert!(
            Instant::now() < deadline,
            "case {site}/{case} not scored in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the latest result of case `case` at site `s` is of `version`;
/// the case.
pub async fn scored_with(app: &TestApp, key: &str, case: &str, version: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = app.get(key, &format!("/v1/sites/s/cases/{case}")).await;
        if body["status"] == "scored"
            && body["model_version"] == version
            && !body["scored_at"].is_null()
        {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{case} not scored with {version}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

pub fn read_fixture(path: &str) -> Vec<u8> {
    std::fs::read(fixture(path)).unwrap()
}

/// A `segwatch serve` process on `db`, with extra environment.
pub struct ServeProcess {
    pub child: Child,
    pub base: String,
}

impl ServeProcess {
    pub async fn start(db: &TestDb, env: &[(&str, &str)]) -> ServeProcess {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let mut command = Command::new(env!("CARGO_BIN_EXE_segwatch"));
        let (name, value) = db.env();
        command
            .arg("serve")
            .env(name, value)
            .env("SEGWATCH_LISTEN", format!("127.0.0.1:{port}"))
            .env("SEGWATCH_WORKER_THREADS", "2")
            .env("SEGWATCH_POLL_INTERVAL_MS", "200")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                Instant::now() < deadline,
                "segwatch serve did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ServeProcess { child, base }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
