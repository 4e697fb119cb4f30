//! Baselines, detectors, incidents and strata through the API, fed by `segwatch
//! simulate` with an injected drift.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{TestApp, TestDb};
use segwatch::store::Role;
use serde_json::{Value, json};

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

async fn wait_results(db: &TestDb, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done: i64 = db.scalar("SELECT count(*) FROM results").await;
        if done >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{done} of {n} scored");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_fed(db: &TestDb, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let fed: i64 = db
            .scalar("SELECT count(*) FROM results WHERE NOT drift_pending")
            .await;
        if fed >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{fed} of {n} fed to the detectors"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A service fed `segwatch simulate`'s 2 sites × 6 days × 10 cases, site2's
/// liver losing 0.15 Dice from day 1, every case scored and fed.
pub(crate) async fn drifted_app() -> TestApp {
    // Two workers score in any order; the drift task feeds case-time order.
    let app = TestApp::start_with(|c| {
        c.drift.refresh_secs = 1;
        c.drift.rolling_windows_days = vec![7, 14];
        c.drift.lateness_secs = 0;
        c.workers.concurrency = 2;
    })
    .await;
    simulate(&app, &["--drift-at", "day1:site2:liver:0.15"]);
    wait_results(&app.db, 120).await;
    wait_fed(&app.db, 120).await;
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drift_opens_one_incident_that_strata_explain_and_ack_keeps_open() {
    let app = drifted_app().await;

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

    // Every fed case is one history row; each stream's parameter set is
    // stored once while it stays the same, with the target it used.
    let rows: i64 = app.db.scalar("SELECT count(*) FROM detector_history").await;
    assert_eq!(rows, 120);
    let sets: Vec<(i64, String)> = app
        .db
        .rows(
            "SELECT CAST(id AS BIGINT), CAST(parameters AS TEXT) FROM detector_parameters
             WHERE site = 'site2' AND structure = 'liver' ORDER BY id",
        )
        .await;
    assert!(!sets.is_empty() && sets.len() < 60, "{}", sets.len());
    let parameters: Value = serde_json::from_str(&sets[sets.len() - 1].1).unwrap();
    assert!(
        parameters["target_cases"].as_f64().unwrap() > 1000.0,
        "{parameters}"
    );
    assert_eq!(
        parameters["designs"].as_array().unwrap().len(),
        3,
        "{parameters}"
    );
    // The mean stream runs PIT-EWMA only, over site2's 60 cases.
    let mean = app
        .db
        .store()
        .stream_history(
            "simnet",
            "1.0",
            &segwatch::drift::incident::StreamId::dice("site2", "all"),
            1_000,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mean.steps.len(), 60);
    assert!(mean.steps.iter().all(|s| s.updates.len() == 1));

    // One incident for the change, with its correlated streams as evidence,
    // and nothing on streams unrelated to site2/liver.
    let (_, incidents) = app.get(&app.admin_key, "/v1/incidents?state=all").await;
    let incidents = incidents.as_array().unwrap();
    let touches = |i: &Value, site: &str, structure: &str| {
        (i["site"] == site && i["structure"] == structure)
            || i["streams"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["site"] == site && s["structure"] == structure)
    };
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    let drift = &incidents[0];
    assert!(touches(drift, "site2", "liver"), "{drift}");
    for s in drift["streams"].as_array().unwrap() {
        assert!(
            s["site"] != "site1" && (s["structure"] == "liver" || s["structure"] == "all"),
            "{s}"
        );
    }
    let id = drift["id"].as_i64().unwrap();

    // Strata of the stream: every acquisition attribute, worst first.
    let (status, strata) = app
        .get(&app.admin_key, &format!("/v1/incidents/{id}/strata"))
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

    // An ingest key of another site sees neither the incident nor its strata.
    let site1 = app.key(Role::Ingest, Some("site1")).await;
    let (_, visible) = app.get(&site1, "/v1/incidents?state=all").await;
    assert!(visible.as_array().unwrap().is_empty(), "{visible}");
    assert_eq!(
        app.get(&site1, &format!("/v1/incidents/{id}/strata"))
            .await
            .0,
        403
    );
    assert_eq!(app.get(&site1, "/v1/drift/plan").await.0, 403);

    // Acknowledging records who looked; the excursion still runs, so the
    // incident stays open and the detector keeps its state.
    let response = app
        .client
        .post(app.url(&format!("/v1/incidents/{id}/ack")))
        .bearer_auth(&app.admin_key)
        .json(&json!({"note": "new scanner firmware at site2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let acked: Value = response.json().await.unwrap();
    assert!(acked["acknowledged_at"].is_string() && acked["resolved_at"].is_null());
    let t: i32 = app
        .db
        .scalar(
            "SELECT t FROM detector_state WHERE site = 'site2' AND structure = 'liver' AND detector = 'pit_ewma'",
        )
        .await;
    assert_eq!(t, 60);
    assert_eq!(
        app.get(&site1, &format!("/v1/incidents/{id}/ack")).await.0,
        405
    );

    // The running deployment's plan.
    let (status, plan) = app.get(&app.admin_key, "/v1/drift/plan?streams=20").await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(
        (plan["sites"].as_u64(), plan["structures"].as_u64()),
        (Some(2), Some(5))
    );
    assert!(plan["false_alerts_per_month"].as_f64().unwrap() <= 1.0);

    // Gauges come from Postgres, refreshed every second: the open incident is
    // exported.
    let series = format!(
        r#"segwatch_drift_incident_open{{detector="{}",incident="{id}",model="simnet",model_version="1.0",site="{}",structure="{}"}} 1"#,
        drift["detector"].as_str().unwrap(),
        drift["site"].as_str().unwrap(),
        drift["structure"].as_str().unwrap()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let metrics = app.metrics().await;
        if metrics.contains(&series) {
            break metrics;
        }
        assert!(Instant::now() < deadline, "no {series} in {metrics}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(metrics.contains("segwatch_drift_false_alert_budget_per_month 1"));
    assert!(metrics.contains(r#"segwatch_drift_alarm{detector="pit_ewma",model="simnet",model_version="1.0",site="site2",structure="liver"} 1"#));
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
    let versions: i64 = app.db.scalar("SELECT count(*) FROM baselines").await;
    assert_eq!(versions, 2);
    // A new baseline accepts the current quality: the incident closes.
    let (_, closed) = app.get(&app.admin_key, "/v1/incidents?state=all").await;
    assert_eq!(closed[0]["resolution"], "new_baseline");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_get_a_specific_problem_not_a_500() {
    let app = TestApp::start().await;
    let problem = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let kind = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(kind.as_deref(), Some("application/problem+json"), "{body}");
        (
            status,
            body["type"]
                .as_str()
                .unwrap_or("")
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned(),
        )
    };
    let send = |request: reqwest::RequestBuilder| request.bearer_auth(&app.admin_key).send();
    // A NUL character the database would refuse, in a query filter and in a note.
    let r = send(
        app.client
            .get(app.url("/v1/sites/site1/cases?protocol=%00")),
    )
    .await
    .unwrap();
    assert_eq!(problem(r).await, (400, "invalid-value".to_owned()));
    // Out-of-range counts and dates.
    let freeze = app.url("/v1/models/m/versions/1/baseline/freeze");
    let r = send(app.client.post(&freeze).json(&json!({"cases": -1})))
        .await
        .unwrap();
    assert_eq!(problem(r).await, (400, "invalid-baseline".to_owned()));
    // axum's own rejections: malformed JSON, a missing field, a non-numeric id.
    let r = send(
        app.client
            .post(&freeze)
            .header("content-type", "application/json")
            .body("{"),
    )
    .await
    .unwrap();
    assert_eq!(problem(r).await.0, 400);
    let r = send(app.client.post(&freeze).json(&json!({})))
        .await
        .unwrap();
    assert_eq!(problem(r).await, (400, "invalid-baseline".to_owned()));
    // A JSON array is not an object, though serde would read a struct from it.
    let r = send(
        app.client
            .post(app.url("/v1/incidents/1/ack"))
            .json(&json!([null])),
    )
    .await
    .unwrap();
    assert_eq!(problem(r).await, (400, "invalid-ack".to_owned()));
    // A valid request the state cannot satisfy: no scored cases yet.
    let r = send(app.client.post(&freeze).json(&json!({"cases": 150.0})))
        .await
        .unwrap();
    assert_eq!(problem(r).await, (409, "not-enough-cases".to_owned()));
    let r = send(app.client.get(app.url("/v1/incidents/abc/strata")))
        .await
        .unwrap();
    assert_eq!(problem(r).await, (400, "invalid-request".to_owned()));
    // Case keys of dots only read as path segments (HTTP clients resolve `.`
    // and `..` before sending; `...` reaches the service).
    let r = send(
        app.client
            .put(app.url("/v1/sites/site1/cases/.../reference"))
            .body(vec![0u8; 10]),
    )
    .await
    .unwrap();
    assert_eq!(problem(r).await, (400, "invalid-key".to_owned()));
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
    // A baseline below the recommended size is accepted and flagged.
    assert!(
        info["structures"][1]["note"]
            .as_str()
            .unwrap()
            .contains("at least 200")
    );
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
            "labels": {"alertname": "SegwatchQualityIncidentSite", "site": "site2", "structure": "liver"},
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
    let mut rows: Vec<(String, String)> = app
        .db
        .rows("SELECT receiver, alertname FROM notifications")
        .await;
    assert_eq!(rows.len(), 1);
    let (receiver, name) = rows.pop().unwrap();
    assert_eq!(
        (receiver.as_str(), name.as_str()),
        ("segwatch-governance", "SegwatchQualityIncidentSite")
    );
    app.finish().await;
}

#[tokio::test]
async fn detector_gauges_leave_out_streams_not_fed_within_the_retire_period() {
    let db = TestDb::new().await;
    let store = db.store();
    store.migrate().await.unwrap();
    let days_ago = |days: i64| {
        (chrono::Utc::now() - chrono::Duration::days(days))
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string()
    };
    db.execute(&format!(
        "INSERT INTO baselines (id, model, model_version, version, source, created_by, created_at)
         VALUES (1, 'm', 'retired', 1, 'first_cases', 'test', '{0}'), (2, 'm', 'live', 1, 'first_cases', 'test', '{0}')",
        days_ago(90)
    ))
    .await;
    // The retired version's detectors were last fed 40 days ago, the live one's yesterday.
    db.execute(&format!(
        "INSERT INTO detector_state (site, model, model_version, structure, detector, baseline_id, t, statistic,
                                     limit_value, alarm, updated_at)
         VALUES ('a', 'm', 'retired', 'liver', 'cusum', 1, 10, 0.5, 3.0, false, '{}'),
                ('a', 'm', 'live', 'liver', 'cusum', 2, 10, 0.5, 3.0, false, '{}')",
        days_ago(40),
        days_ago(1)
    ))
    .await;
    let versions = |rows: Vec<segwatch::store::DetectorRow>| {
        let mut versions: Vec<String> = rows.into_iter().map(|r| r.model_version).collect();
        versions.sort();
        versions
    };
    assert_eq!(versions(store.detector_states(30).await.unwrap()), ["live"]);
    assert_eq!(
        versions(store.detector_states(60).await.unwrap()),
        ["live", "retired"]
    );
    db.drop_db().await;
}
