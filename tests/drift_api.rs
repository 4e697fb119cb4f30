//! Baselines, detectors, alerts and strata through the API, fed by `segwatch
//! simulate` with an injected drift.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::TestApp;
use segwatch::store::Role;
use serde_json::{Value, json};
use sqlx::PgPool;

fn simulate(app: &TestApp, extra: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_segwatch"))
        .args([
            "simulate",
            "--url",
            &app.base,
            "--key",
            &app.admin_key,
            "--sites",
            "2",
            "--days",
            "6",
            "--cases-per-day",
            "10",
            "--concurrency",
            "1",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn wait_results(pool: &PgPool, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM results")
            .fetch_one(pool)
            .await
            .unwrap();
        if done >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{done} of {n} scored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_raises_an_alert_that_strata_explain_and_ack_resets() {
    // One upload and one job at a time: detectors see cases in a fixed order, so
    // the run is the same every time.
    let app = TestApp::start_with(|c| {
        c.drift.refresh_secs = 1;
        c.drift.rolling_windows_days = vec![7, 14];
        c.workers.concurrency = 1;
    })
    .await;
    let pool = PgPool::connect(&app.db.url).await.unwrap();
    simulate(&app, &["--drift-at", "day1:site2:liver:0.15"]);
    wait_results(&pool, 120).await;

    // The baseline simulate set, with the per-case mean as structure "all".
    let (status, baseline) = app
        .get(&app.admin_key, "/v1/models/simnet/versions/1.0/baseline")
        .await;
    assert_eq!(status, 200);
    assert_eq!(baseline["version"], 1);
    let structures: Vec<&str> = baseline["structures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["structure"].as_str().unwrap())
        .collect();
    assert!(structures.contains(&"liver") && structures.contains(&"all"));

    // Every update is stored for audit.
    let updates: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM detector_updates WHERE site = 'site2' AND structure = 'liver'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(updates, 3 * 60);

    let (_, alerts) = app.get(&app.admin_key, "/v1/alerts").await;
    let alerts = alerts.as_array().unwrap();
    let drift = alerts
        .iter()
        .find(|a| a["site"] == "site2" && a["structure"] == "liver" && a["detector"] == "pit_ewma")
        .unwrap_or_else(|| panic!("no drift alert in {alerts:?}"));
    assert!(
        alerts.iter().all(|a| a["site"] != "site1"
            || a["structure"] == "all"
            || a["detector"] != "pit_ewma")
    );
    let id = drift["id"].as_i64().unwrap();

    // Strata of the stream: every acquisition attribute, worst first.
    let (status, strata) = app
        .get(&app.admin_key, &format!("/v1/alerts/{id}/strata"))
        .await;
    assert_eq!(status, 200);
    let strata = strata.as_array().unwrap();
    let attributes: Vec<&str> = strata
        .iter()
        .map(|s| s["attribute"].as_str().unwrap())
        .collect();
    for a in [
        "scanner_manufacturer",
        "scanner_model",
        "protocol",
        "slice_thickness_band",
    ] {
        assert!(attributes.contains(&a), "{a} missing");
    }
    let drops: Vec<f64> = strata.iter().map(|s| s["drop"].as_f64().unwrap()).collect();
    assert!(drops.windows(2).all(|w| w[0] >= w[1]));
    assert!(drops[0] > 0.05);

    // An ingest key of another site sees neither the alert nor its strata.
    let site1 = app.key(Role::Ingest, Some("site1")).await;
    let (_, visible) = app.get(&site1, "/v1/alerts").await;
    assert!(
        visible
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["site"] == "site1")
    );
    assert_eq!(
        app.get(&site1, &format!("/v1/alerts/{id}/strata")).await.0,
        403
    );

    // Acknowledging resolves the alert and restarts the detector.
    let response = app
        .client
        .post(app.url(&format!("/v1/alerts/{id}/ack")))
        .bearer_auth(&app.admin_key)
        .json(&json!({"note": "new scanner firmware at site2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let acked: Value = response.json().await.unwrap();
    assert!(acked["acknowledged_at"].is_string() && acked["resolved_at"].is_string());
    let (t, alarm): (i32, bool) = sqlx::query_as(
        "SELECT t, alarm FROM detector_state WHERE site = 'site2' AND structure = 'liver' AND detector = 'pit_ewma'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((t, alarm), (0, false));
    assert_eq!(
        app.get(&site1, &format!("/v1/alerts/{id}/ack")).await.0,
        405
    );

    // Gauges come from Postgres: the alarm of another stream is exported.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let metrics = app.metrics().await;
    assert!(metrics.contains(r#"segwatch_drift_alarm{detector="pit_ewma",model="simnet",model_version="1.0",site="site2",structure="liver"} 0"#));
    assert!(metrics.contains("segwatch_rolling_dice_7d_ratio{"));
    assert!(metrics.contains("segwatch_rolling_dice_14d_ratio{"));
    assert!(!metrics.contains("segwatch_rolling_dice_30d_ratio"));
    assert!(metrics.contains(
        r#"segwatch_dice_baseline_ratio{model="simnet",model_version="1.0",structure="liver"}"#
    ));

    // Case listings filter by acquisition.
    let (_, siemens) = app
        .get(
            &app.admin_key,
            "/v1/sites/site2/cases?scanner_manufacturer=Siemens&limit=500",
        )
        .await;
    let (_, everyone) = app
        .get(&app.admin_key, "/v1/sites/site2/cases?limit=500")
        .await;
    let n = siemens.as_array().unwrap().len();
    assert!(n > 0 && n < everyone.as_array().unwrap().len());
    let (_, thin) = app
        .get(
            &app.admin_key,
            "/v1/sites/site2/cases?slice_thickness_max_mm=1.0&limit=500",
        )
        .await;
    assert!(!thin.as_array().unwrap().is_empty());

    // A baseline frozen from the first live cases is a new, audited version.
    let response = app
        .client
        .post(app.url("/v1/models/simnet/versions/1.0/baseline/freeze"))
        .bearer_auth(&app.admin_key)
        .json(&json!({"cases": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let frozen: Value = response.json().await.unwrap();
    assert_eq!(frozen["version"], 2);
    assert_eq!(frozen["source"], "first 100 scored cases");
    let versions: i64 = sqlx::query_scalar("SELECT count(*) FROM baselines")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(versions, 2);
    pool.close().await;
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baselines_are_validated_and_admin_only() {
    let app = TestApp::start().await;
    let reader = app.key(Role::Read, None).await;
    let put = |key: String, body: Value| {
        app.client
            .put(app.url("/v1/models/m/versions/1/baseline"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let cases: Vec<Value> = (0..120)
        .map(|i| json!({"liver": 0.9 + (i % 10) as f64 / 200.0}))
        .collect();
    assert_eq!(
        put(reader, json!({"source": "v", "cases": cases}))
            .await
            .unwrap()
            .status(),
        403
    );
    let few: Vec<Value> = (0..50).map(|_| json!({"liver": 0.9})).collect();
    let response = put(app.admin_key.clone(), json!({"source": "v", "cases": few}))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap().contains("at least 100"));
    let bad: Vec<Value> = (0..120).map(|_| json!({"liver": 1.7})).collect();
    assert_eq!(
        put(app.admin_key.clone(), json!({"source": "v", "cases": bad}))
            .await
            .unwrap()
            .status(),
        400
    );
    let response = put(
        app.admin_key.clone(),
        json!({"source": "validation 2024", "cases": cases}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 201);
    let info: Value = response.json().await.unwrap();
    assert_eq!(info["structures"][1]["structure"], "liver");
    assert_eq!(info["structures"][1]["cases"], 120);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_notifications_join_the_audit_trail() {
    let app = TestApp::start().await;
    let payload = json!({
        "receiver": "segwatch-governance",
        "status": "firing",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "SegwatchDiceDriftSite", "site": "site2", "structure": "liver"},
            "annotations": {"summary": "Dice drift"},
            "startsAt": "2026-11-29T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z"
        }]
    });
    let send = |key: String| {
        app.client
            .post(app.url("/v1/alertmanager/webhook"))
            .bearer_auth(key)
            .json(&payload)
            .send()
    };
    let reader = app.key(Role::Read, None).await;
    assert_eq!(send(reader).await.unwrap().status(), 403);
    assert_eq!(send(app.admin_key.clone()).await.unwrap().status(), 204);
    let pool = PgPool::connect(&app.db.url).await.unwrap();
    let (receiver, name): (String, String) =
        sqlx::query_as("SELECT receiver, alertname FROM notifications")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (receiver.as_str(), name.as_str()),
        ("segwatch-governance", "SegwatchDiceDriftSite")
    );
    pool.close().await;
    app.finish().await;
}
