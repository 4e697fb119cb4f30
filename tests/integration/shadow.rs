//! Shadow mode: predictions of several model versions for one case, each
//! scored against the same reference, all shown by the case API.

use std::time::{Duration, Instant};

use segwatch::store::Role;
use serde_json::Value;

use crate::common::{TestApp, read_fixture};

/// Uploads a prediction of model `m` at `version`; the status and response.
async fn predict(app: &TestApp, key: &str, case: &str, version: &str, body: &[u8]) -> (u16, Value) {
    let response = app.predict(key, "s", case, version, body.to_vec()).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Waits until every listed version of the case is scored; the case.
async fn scored(app: &TestApp, key: &str, case: &str, versions: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = app.get(key, &format!("/v1/sites/s/cases/{case}")).await;
        let done = versions.iter().all(|v| {
            body["versions"].as_array().is_some_and(|all| {
                all.iter()
                    .any(|e| e["model_version"] == *v && e["status"] == "scored")
            })
        });
        if done {
            return body;
        }
        assert!(Instant::now() < deadline, "{case} not scored: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn version<'a>(case: &'a Value, name: &str) -> &'a Value {
    case["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["model_version"] == name)
        .unwrap_or_else(|| panic!("no {name} in {case}"))
}

#[tokio::test]
async fn each_version_predicting_a_case_is_scored_against_its_reference() {
    let app = TestApp::start().await;
    let key = app.key(Role::Ingest, Some("s")).await;
    let prediction = read_fixture("reference/cases/P09_pred.nii.gz");
    let reference = read_fixture("reference/cases/P09_ref.nii.gz");

    // Two versions predict the same bytes before the reference comes: both
    // are stored; the same bytes again from one version change nothing.
    let (status, first) = predict(&app, &key, "c1", "v1", &prediction).await;
    assert_eq!((status, &first["duplicate"]), (202, &Value::Bool(false)));
    let (status, second) = predict(&app, &key, "c1", "v2", &prediction).await;
    assert_eq!(status, 202, "{second}");
    assert_eq!(
        (second["revision"].as_i64(), &second["duplicate"]),
        (Some(2), &Value::Bool(false))
    );
    let (status, again) = predict(&app, &key, "c1", "v2", &prediction).await;
    assert_eq!(
        (status, again["revision"].as_i64()),
        (200, Some(2)),
        "{again}"
    );
    assert_eq!(again["duplicate"], true);
    let (_, waiting) = app.get(&key, "/v1/sites/s/cases/c1").await;
    assert_eq!(waiting["status"], "waiting_for_reference");
    let statuses: Vec<&Value> = waiting["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["status"])
        .collect();
    assert_eq!(statuses, ["waiting_for_reference", "waiting_for_reference"]);

    // The reference pairs with each version's prediction.
    let response = app
        .upload(&key, "s", "c1", "reference", reference.clone())
        .await;
    assert_eq!(response.status(), 202);
    let case = scored(&app, &key, "c1", &["v1", "v2"]).await;
    let (v1, v2) = (version(&case, "v1"), version(&case, "v2"));
    assert_eq!(
        (v1["revision"].as_i64(), v2["revision"].as_i64()),
        (Some(1), Some(2))
    );
    assert!(v1["mean_dice"].as_f64().unwrap() < 1.0, "{case}");
    assert_eq!(v1["mean_dice"], v2["mean_dice"], "same bytes, same score");
    assert_eq!(v1["structures"], v2["structures"]);
    assert!(!v1["generalized_dice"].is_null());

    // A third version that predicts the reference itself is scored alone;
    // the others keep their results.
    let (status, _) = predict(&app, &key, "c1", "v3", &reference).await;
    assert_eq!(status, 202);
    let case = scored(&app, &key, "c1", &["v1", "v2", "v3"]).await;
    let names: Vec<&Value> = case["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["model_version"])
        .collect();
    assert_eq!(names, ["v1", "v2", "v3"]);
    assert_eq!(version(&case, "v3")["mean_dice"], 1.0, "{case}");
    assert_eq!(version(&case, "v1")["mean_dice"], v1["mean_dice"]);
    assert_eq!(case["model_version"], "v3");
    assert_eq!(case["mean_dice"], 1.0);

    // Listings show each version's latest result of the case.
    let (status, listed) = app.get(&key, "/v1/sites/s/cases?limit=10").await;
    assert_eq!(status, 200, "{listed}");
    let mut listed: Vec<(String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["case"].as_str().unwrap().to_owned(),
                c["model_version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [("c1", "v1"), ("c1", "v2"), ("c1", "v3")].map(|(c, v)| (c.to_owned(), v.to_owned()))
    );

    // A corrected reference scores every version again, against it.
    let response = app
        .upload(&key, "s", "c1", "reference", prediction.clone())
        .await;
    assert_eq!(response.status(), 202);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, case) = app.get(&key, "/v1/sites/s/cases/c1").await;
        if ["v1", "v2"]
            .iter()
            .all(|v| version(&case, v)["mean_dice"] == 1.0)
            && version(&case, "v3")["mean_dice"] == v1["mean_dice"]
        {
            break;
        }
        assert!(Instant::now() < deadline, "not scored again: {case}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.finish().await;
}

#[tokio::test]
async fn a_shadow_version_worse_on_one_structure_is_called_worse_there_only() {
    let app = TestApp::start().await;
    let admin = app.key(Role::Admin, None).await;
    let reader = app.key(Role::Read, None).await;
    // 2 sites × 5 days × 3 cases, each predicted by 1.0 and by 2.0 in shadow,
    // 2.0 losing 0.03 Dice on the spleen.
    let run = |args: Vec<String>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_segwatch"));
        command.args(args).env("SEGWATCH_KEY", &admin);
        tokio::task::spawn_blocking(move || command.output().unwrap())
    };
    let simulate = "simulate --sites 2 --days 5 --cases-per-day 3 --seed 3 \
                    --shadow-version 2.0 --shadow-worse spleen:0.03 --url";
    let mut args: Vec<String> = simulate.split_whitespace().map(str::to_owned).collect();
    args.push(app.base.clone());
    let output = run(args).await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Every case scored under both versions.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut rows = 0;
        for site in ["site1", "site2"] {
            let (_, listed) = app
                .get(&reader, &format!("/v1/sites/{site}/cases?limit=100"))
                .await;
            rows += listed.as_array().map_or(0, Vec::len);
        }
        if rows == 2 * 30 {
            break;
        }
        assert!(Instant::now() < deadline, "{rows} of 60 results");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (status, report) = app
        .get(&reader, "/v1/models/simnet/compare?a=1.0&b=2.0")
        .await;
    assert_eq!(status, 200, "{report}");
    let verdicts: Vec<(&str, &str)> = report["structures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["structure"].as_str().unwrap(),
                s["verdict"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("kidney_left", "no_evidence"),
            ("kidney_right", "no_evidence"),
            ("liver", "no_evidence"),
            ("pancreas", "no_evidence"),
            ("spleen", "b_worse"),
        ],
        "{report}"
    );
    let spleen = &report["structures"][4];
    assert_eq!(
        (spleen["design"].as_str(), spleen["n_paired"].as_u64()),
        (Some("paired"), Some(30))
    );
    let difference = spleen["mean_difference"].as_f64().unwrap();
    assert!((difference + 0.03).abs() < 0.01, "{spleen}");

    // The pipeline's check fails on it.
    let compare = format!(
        "compare --model simnet --a 1.0 --b 2.0 --fail-if-worse --url {}",
        app.base
    );
    let output = run(compare.split_whitespace().map(str::to_owned).collect())
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{table}");
    assert_eq!(table.matches("B worse").count(), 1, "{table}");
    app.finish().await;
}

/// A label map of `labels` in slabs along x (label k fills the k-th slab of
/// the listed ones) on a `shape` grid of 1 mm voxels.
fn slabs(shape: [usize; 3], labels: &[u8]) -> Vec<u8> {
    use segwatch::formats::nifti::encode;
    use segwatch::volume::{Grid, LabelVolume, Labels};
    let grid = Grid::axis_aligned(shape, [1.0; 3], 3);
    let width = shape[0] / (labels.len() + 1);
    let voxels = (0..grid.len())
        .map(|i| labels.get((i % shape[0]) / width).copied().unwrap_or(0))
        .collect();
    encode(&LabelVolume::new(grid, Labels::U8(voxels)).unwrap(), true)
}

#[tokio::test]
async fn an_upload_that_one_version_could_not_score_is_refused_up_front() {
    let app = TestApp::start().await;
    let key = app.key(Role::Ingest, Some("s")).await;
    let schema = serde_json::json!({"structures": [{"label": 1, "name": "liver"}], "unknown_labels": "reject"});
    assert_eq!(app.put_schema("m", "v2", &schema).await, 201);
    let grid = [12, 10, 4];
    let problem = |body: &Value| body["detail"].as_str().unwrap_or_default().to_owned();

    // v2 knows label 1 only; v1 has no schema and predicts labels 1 and 2.
    assert_eq!(
        predict(&app, &key, "c1", "v2", &slabs(grid, &[1])).await.0,
        202
    );
    assert_eq!(
        predict(&app, &key, "c1", "v1", &slabs(grid, &[1, 2]))
            .await
            .0,
        202
    );
    // The reference will pair with both: a prediction on another grid is
    // refused before any reference came.
    let (status, body) = predict(&app, &key, "c1", "v3", &slabs([12, 10, 5], &[1])).await;
    assert_eq!(status, 422, "{body}");
    // A version may still replace its own prediction on another grid, as
    // long as no other version predicted the case.
    assert_eq!(
        predict(&app, &key, "c3", "v1", &slabs(grid, &[1])).await.0,
        202
    );
    assert_eq!(
        predict(&app, &key, "c3", "v1", &slabs([12, 10, 5], &[1]))
            .await
            .0,
        202
    );
    let response = app
        .upload(&key, "s", "c3", "reference", slabs([12, 10, 5], &[1]))
        .await;
    assert_eq!(response.status(), 202);
    let case = scored(&app, &key, "c3", &["v1"]).await;
    assert_eq!(version(&case, "v1")["revision"], 2, "{case}");
    // A reference with label 2 cannot be scored against v2 (whose schema
    // rejects it), though the case's latest prediction is v1's.
    let response = app
        .upload(&key, "s", "c1", "reference", slabs(grid, &[1, 2]))
        .await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert!(problem(&body).contains("label 2"), "{body}");
    let response = app
        .upload(&key, "s", "c1", "reference", slabs(grid, &[1]))
        .await;
    assert_eq!(response.status(), 202);
    let case = scored(&app, &key, "c1", &["v1", "v2"]).await;
    assert_eq!(version(&case, "v2")["mean_dice"], 1.0, "{case}");

    // A reference first: a prediction whose schema rejects one of its labels
    // is refused, naming it.
    let response = app
        .upload(&key, "s", "c2", "reference", slabs(grid, &[1, 2]))
        .await;
    assert_eq!(response.status(), 202);
    let (status, body) = predict(&app, &key, "c2", "v2", &slabs(grid, &[1])).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        problem(&body).contains("label 2 (in the case's reference)"),
        "{body}"
    );
    assert_eq!(
        predict(&app, &key, "c2", "v1", &slabs(grid, &[1])).await.0,
        202
    );
    scored(&app, &key, "c2", &["v1"]).await;
    app.finish().await;
}
