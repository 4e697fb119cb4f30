//! Test harness for the service: every test gets its own Postgres database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use segwatch::config::Config;
use segwatch::store::{Role, Store};
use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection};

/// Where test databases are created (`SEGWATCH_TEST_ADMIN_URL`).
pub fn admin_url() -> String {
    std::env::var("SEGWATCH_TEST_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database, dropped when the test ends well.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
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
        TestDb {
            url: format!("{base}/{name}"),
            name,
        }
    }

    pub async fn drop_db(self) {
        if let Ok(mut conn) = PgConnection::connect(&admin_url()).await {
            let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
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
    config.database_url = db.url.clone();
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
        let store = Store::connect(&db.url, 4).unwrap();
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

    /// GET with a key, as JSON.
    pub async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
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
        command
            .arg("serve")
            .env("SEGWATCH_DATABASE_URL", &db.url)
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
