//! Drift streams of lesion-wise sensitivity and ECE, on either store: a
//! structure whose schema lists the metric in `drift_metrics` gets a stream of
//! it per site and pooled, a sustained drop (a rise, for ECE) opens an incident
//! of that metric whose history replays, and structures without the setting
//! get none, even with a baseline sample and values in every case.

use std::time::{Duration, Instant};

use segwatch::store::Role;
use serde_json::{Value, json};

use crate::common::{TestApp, read_fixture};

/// Cases uploaded after the baseline: past the detectors' 20-case warm-up.
const DRIFTED_CASES: usize = 24;

/// A label map of cubes (corner, edge, label) in a 20 × 20 × 8 grid of 1 mm voxels.
fn label_map(cubes: &[((usize, usize, usize), usize, u8)]) -> Vec<u8> {
    use segwatch::formats::nifti::encode;
    use segwatch::volume::{Grid, LabelVolume, Labels};
    let grid = Grid::axis_aligned([20, 20, 8], [1.0; 3], 3);
    let labels = (0..grid.len())
        .map(|i| {
            let (x, y, z) = (i % 20, (i / 20) % 20, i / 400);
            let inside = |cube: &&((usize, usize, usize), usize, u8)| {
                let ((cx, cy, cz), n, _) = **cube;
                (cx..cx + n).contains(&x) && (cy..cy + n).contains(&y) && (cz..cz + n).contains(&z)
            };
            cubes.iter().find(inside).map_or(0, |c| c.2)
        })
        .collect();
    encode(&LabelVolume::new(grid, Labels::U8(labels)).unwrap(), true)
}

async fn start() -> TestApp {
    TestApp::start_with(|c| {
        c.drift.refresh_secs = 1;
        c.drift.lateness_secs = 0;
    })
    .await
}

async fn put_baseline(app: &TestApp, body: &Value) -> Value {
    let response = app
        .client
        .put(app.url("/v1/models/m/versions/v1/baseline"))
        .bearer_auth(&app.admin_key)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

/// `n` values spread evenly over `lo..hi`.
fn spread(n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n)
        .map(|i| lo + (hi - lo) * i as f64 / (n - 1) as f64)
        .collect()
}

async fn wait_fed(app: &TestApp, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let fed: i64 = app
            .db
            .scalar("SELECT count(*) FROM results WHERE NOT drift_pending")
            .await;
        if fed >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{fed} of {n} fed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Uploads `prediction` and `reference` as cases `prefix0..` at site `s`, one
/// after the other, each scored before the next.
async fn upload_cases(app: &TestApp, prefix: &str, prediction: &[u8], reference: &[u8]) {
    let key = app.key(Role::Ingest, Some("s")).await;
    for i in 0..DRIFTED_CASES {
        let case = format!("{prefix}{i}");
        for (role, body) in [("prediction", prediction), ("reference", reference)] {
            let response = app.upload(&key, "s", &case, role, body.to_vec()).await;
            assert_eq!(response.status(), 202, "{case} {role}");
        }
        assert_eq!(app.wait_scored("s", &case).await["status"], "scored");
    }
}

/// (structure, metric) of every stream of a metric other than Dice.
async fn other_streams(app: &TestApp) -> Vec<(String, String, String)> {
    app.db
        .rows::<(String, String, String)>(
            "SELECT site, structure, metric FROM drift_streams WHERE metric <> 'dice' ORDER BY site, structure, metric",
        )
        .await
}

/// The incidents of `metric`, and checks that every other one is of Dice.
async fn incidents_of(app: &TestApp, metric: &str) -> Vec<Value> {
    let (status, incidents) = app.get(&app.admin_key, "/v1/incidents?state=all").await;
    assert_eq!(status, 200);
    let incidents = incidents.as_array().unwrap().clone();
    for i in &incidents {
        assert!(i["metric"] == metric || i["metric"] == "dice", "{i}");
    }
    incidents
        .into_iter()
        .filter(|i| i["metric"] == metric)
        .collect()
}

/// The replayed history of an incident's opening stream matches the record
/// and alarms.
async fn history_replays(app: &TestApp, incident: &Value) {
    let path = format!("/v1/incidents/{}/history", incident["id"]);
    let (status, audit) = app.get(&app.admin_key, &path).await;
    assert_eq!(status, 200, "{audit}");
    assert_eq!(audit["mismatches"], json!([]), "{audit}");
    assert!(audit["first_alarm"].as_u64().is_some(), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lesion_sensitivity_drop_opens_an_incident_of_the_configured_structure() {
    let app = start().await;
    let schema = json!({"structures": [
        {"label": 1, "name": "mets", "instances": true, "drift_metrics": ["lesion_sensitivity"]},
        {"label": 2, "name": "nodules", "instances": true}
    ]});
    assert_eq!(app.put_schema("m", "v1", &schema).await, 201);
    // Validation: 9 cases in 10 found every reference metastasis, one half of
    // them; nodules too, but the schema does not watch theirs.
    let sensitivity: Vec<f64> = (0..200)
        .map(|i| if i % 10 == 0 { 0.5 } else { 1.0 })
        .collect();
    let dice = spread(200, 0.3, 0.99);
    let cases: Vec<Value> = dice
        .iter()
        .map(|d| json!({"mets": d, "nodules": d}))
        .collect();
    let baseline = put_baseline(
        &app,
        &json!({"source": "validation", "cases": cases,
                "metrics": {"lesion_sensitivity": {"mets": sensitivity, "nodules": sensitivity}}}),
    )
    .await;
    let mets = baseline["structures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["structure"] == "mets" && s["metric"] == "lesion_sensitivity")
        .unwrap_or_else(|| panic!("{baseline}"));
    assert!(
        (mets["mean"].as_f64().unwrap() - 0.95).abs() < 1e-12,
        "{mets}"
    );
    // Live: two reference metastases and a nodule; the model finds one
    // metastasis (sensitivity 0.5 every case) and the nodule.
    let reference = label_map(&[((1, 1, 1), 3, 1), ((10, 10, 1), 3, 1), ((2, 12, 4), 3, 2)]);
    let prediction = label_map(&[((1, 1, 1), 3, 1), ((2, 12, 4), 3, 2)]);
    upload_cases(&app, "c", &prediction, &reference).await;
    wait_fed(&app, DRIFTED_CASES as i64).await;
    let streams = other_streams(&app).await;
    let want = |site: &str| {
        (
            site.to_owned(),
            "mets".to_owned(),
            "lesion_sensitivity".to_owned(),
        )
    };
    assert_eq!(streams, [want("all"), want("s")]);
    // The running deployment's plan counts the (stream, detector) pairs the
    // feed counted, the metric's streams included.
    let fed: i64 = app
        .db
        .scalar("SELECT CAST(sum(pairs) AS BIGINT) FROM drift_streams")
        .await;
    let (status, plan) = app.get(&app.admin_key, "/v1/drift/plan?streams=10").await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["pairs"].as_i64(), Some(fed), "{plan}");
    let metrics: Vec<(&str, u64, u64)> = plan["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let count = |field: &str| m[field].as_u64().unwrap();
            (
                m["metric"].as_str().unwrap(),
                count("structures"),
                count("streams"),
            )
        })
        .collect();
    assert_eq!(metrics, [("dice", 2, 6), ("lesion_sensitivity", 1, 2)]);
    let incidents = incidents_of(&app, "lesion_sensitivity").await;
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(incidents[0]["structure"], "mets");
    assert_eq!(incidents[0]["resolved_at"], Value::Null);
    history_replays(&app, &incidents[0]).await;
    // The gauges: the metric's own families, Dice's left as they were.
    let text =
        crate::metrics_detail::metrics_with(&app, r#"segwatch_drift_metric_incident_open{"#).await;
    let open = text
        .lines()
        .find(|l| l.starts_with("segwatch_drift_metric_incident_open{"))
        .unwrap();
    assert!(
        open.contains(r#"metric="lesion_sensitivity""#) && open.contains(r#"structure="mets""#),
        "{open}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("segwatch_drift_metric_statistic{")
                && l.contains(r#"metric="lesion_sensitivity""#)
                && l.contains(r#"site="s""#)),
        "{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("segwatch_drift_statistic{") && l.contains("metric="))
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ece_rise_opens_an_incident_of_the_configured_structure() {
    let app = start().await;
    let structure =
        |label: u8, code: &str, name: &str| json!({"label": label, "code": code, "name": name});
    let mut liver = structure(1, "SCT:10200004", "liver");
    liver["drift_metrics"] = json!(["ece"]);
    let schema = json!({"structures": [
        liver,
        structure(2, "SCT:78961009", "spleen"),
        structure(3, "SCT:64033007^SCT:24028007", "kidney_right"),
        structure(4, "SCT:64033007^SCT:7771000", "kidney_left"),
    ]});
    assert_eq!(app.put_schema("m", "v1", &schema).await, 201);
    let prediction = read_fixture("dicom/ai_fractional.dcm");
    let reference = read_fixture("dicom/ref_labels.nii.gz");
    // A first case, before any baseline, tells the fixture's ECE.
    let key = app.key(Role::Ingest, Some("s")).await;
    for (role, body) in [("prediction", &prediction), ("reference", &reference)] {
        let response = app.upload(&key, "s", "probe", role, body.clone()).await;
        assert_eq!(response.status(), 202);
    }
    let probe = app.wait_scored("s", "probe").await;
    let ece = |name: &str| {
        probe["structures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .and_then(|s| s["ece"].as_f64())
            .unwrap_or_else(|| panic!("{name}: {probe}"))
    };
    let (liver_ece, spleen_ece) = (ece("liver"), ece("spleen"));
    assert!(liver_ece > 0.0 && spleen_ece > 0.0);
    wait_fed(&app, 1).await;
    // Validation was better calibrated: every ECE below the live one. Dice
    // spreads wide, so its streams stay quiet.
    let cases: Vec<Value> = spread(200, 0.2, 1.0)
        .iter()
        .map(|d| json!({"liver": d, "spleen": d, "kidney_right": d, "kidney_left": d}))
        .collect();
    put_baseline(
        &app,
        &json!({"source": "validation", "cases": cases, "metrics": {"ece": {
            "liver": spread(200, 0.1 * liver_ece, 0.9 * liver_ece),
            "spleen": spread(200, 0.1 * spleen_ece, 0.9 * spleen_ece)}}}),
    )
    .await;
    upload_cases(&app, "c", &prediction, &reference).await;
    wait_fed(&app, DRIFTED_CASES as i64 + 1).await;
    let streams = other_streams(&app).await;
    let want = |site: &str| (site.to_owned(), "liver".to_owned(), "ece".to_owned());
    assert_eq!(streams, [want("all"), want("s")]);
    let incidents = incidents_of(&app, "ece").await;
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(incidents[0]["structure"], "liver");
    history_replays(&app, &incidents[0]).await;
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_drift_metric_settings_get_a_specific_problem() {
    let app = start().await;
    // Lesion sensitivity needs a multi-instance structure.
    let schema = json!({"structures": [
        {"label": 1, "name": "liver", "drift_metrics": ["lesion_sensitivity"]}
    ]});
    assert_eq!(app.put_schema("m", "v1", &schema).await, 400);
    // A baseline sample of another metric needs 100 values in 0..=1, and Dice
    // values go in the cases.
    let cases: Vec<Value> = spread(100, 0.5, 1.0)
        .iter()
        .map(|d| json!({"liver": d}))
        .collect();
    for metrics in [
        json!({"ece": {"liver": [0.1, 0.2]}}),
        json!({"ece": {"liver": spread(100, 0.5, 1.5)}}),
        json!({"dice": {"liver": spread(100, 0.5, 1.0)}}),
        json!({"recall": {"liver": spread(100, 0.5, 1.0)}}),
    ] {
        let response = app
            .client
            .put(app.url("/v1/models/m/versions/v1/baseline"))
            .bearer_auth(&app.admin_key)
            .json(&json!({"source": "v", "cases": cases, "metrics": metrics}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{metrics}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(
            problem["type"]
                .as_str()
                .map(|t| t.ends_with("invalid-baseline")),
            Some(true),
            "{problem}"
        );
    }
    app.finish().await;
}
