//! Probabilistic scores through the service, on either store: a FRACTIONAL
//! PROBABILITY SEG prediction is scored as `eval` scores the same files, the
//! case API and the rolling gauges show it, other predictions show nulls,
//! retention takes the scores with their rows, and a SEG storing a value above
//! its MaximumFractionalValue or a float NIfTI of probabilities is refused at
//! upload.

use std::process::Command;

use segwatch::formats::probability_nifti;
use segwatch::store::Role;
use segwatch::volume::Grid;
use serde_json::Value;

use crate::common::{TestApp, fixture, read_fixture};
use crate::metrics_detail::{metrics_with, samples};

const FRACTIONAL: &str = "dicom/ai_fractional.dcm";
const BINARY: &str = "dicom/ai_binary.dcm";
const REFERENCE: &str = "dicom/ref_labels.nii.gz";
const FIELDS: [&str; 5] = ["soft_dice", "brier", "ece", "ece_bins", "reliability"];

/// `segwatch eval --format json` of two fixtures.
fn eval(pred: &str, reference: &str) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_segwatch"))
        .args(["eval", "--format", "json"])
        .arg(fixture(pred))
        .arg(fixture(reference))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Uploads a prediction and the reference as `case` at site `s`; the scored case.
async fn scored(app: &TestApp, key: &str, case: &str, pred: &str) -> Value {
    for (role, file) in [("prediction", pred), ("reference", REFERENCE)] {
        let response = app.upload(key, "s", case, role, read_fixture(file)).await;
        assert_eq!(response.status(), 202, "{case} {role}");
    }
    let case = app.wait_scored("s", case).await;
    assert_eq!(case["status"], "scored", "{case}");
    case
}

/// The value of a gauge sample of structure `structure` at site `s`.
fn gauge(text: &str, family: &str, structure: &str) -> Option<f64> {
    let labels = format!(r#"site="s",structure="{structure}"}}"#);
    samples(text, family)
        .into_iter()
        .find(|line| line.contains(&labels))
        .map(|line| line.rsplit(' ').next().unwrap().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probability_seg_is_scored_as_eval_scores_it_and_others_show_nulls() {
    let app = TestApp::start_with(|c| c.drift.refresh_secs = 1).await;
    let key = app.key(Role::Ingest, Some("s")).await;
    let soft = scored(&app, &key, "soft", FRACTIONAL).await;
    let hard = scored(&app, &key, "hard", BINARY).await;

    // The fractional SEG: every structure with probabilities has eval's values,
    // to the last bit (both stores keep doubles), and the rest have nulls.
    let expected = eval(FRACTIONAL, REFERENCE);
    let expected = expected["probabilistic"].as_array().unwrap();
    assert_eq!(expected.len(), 4, "{expected:?}");
    let structures = soft["structures"].as_array().unwrap();
    for want in expected {
        let got = structures
            .iter()
            .find(|s| s["code"] == want["code"])
            .unwrap_or_else(|| panic!("{} not in {structures:?}", want["code"]));
        for field in FIELDS {
            assert_eq!(got[field], want[field], "{} {field}", want["code"]);
        }
        assert_eq!(got["ece_bins"], 15);
        assert_eq!(got["reliability"].as_array().unwrap().len(), 16);
    }
    // The same scores in the version's entry, and in the worst-case listing.
    let version = &soft["versions"][0]["structures"];
    assert_eq!(version, &soft["structures"]);
    let (status, listed) = app.get(&key, "/v1/sites/s/cases?limit=10").await;
    assert_eq!(status, 200);
    let listed = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["case"] == "soft")
        .unwrap();
    assert_eq!(listed["structures"], soft["structures"]);

    // A BINARY SEG (no probabilities): every field present and null.
    let plain = hard["structures"].as_array().unwrap();
    assert!(!plain.is_empty());
    for s in plain {
        for field in FIELDS {
            assert!(s[field].is_null(), "{field} of {s}");
        }
    }

    // The gauges: per site and pooled, over the probabilistic case only (the
    // binary case of the same structures does not count), and no series for
    // the case mean, which has no probabilities.
    let liver = structures
        .iter()
        .find(|s| s["code"] == "SCT:10200004")
        .unwrap();
    let name = liver["name"].as_str().unwrap();
    let text = metrics_with(
        &app,
        &format!(r#"segwatch_rolling_ece_7d_ratio{{model="m",model_version="v1",site="s",structure="{name}"}}"#),
    )
    .await;
    for (family, field) in [
        ("segwatch_rolling_soft_dice", "soft_dice"),
        ("segwatch_rolling_ece", "ece"),
    ] {
        for days in [1, 7, 30] {
            let family = format!("{family}_{days}d_ratio");
            let value = gauge(&text, &family, name).unwrap_or_else(|| panic!("{family}"));
            let want = liver[field].as_f64().unwrap();
            assert!((value - want).abs() < 1e-12, "{family}: {value} vs {want}");
            assert!(gauge(&text, &family, "all").is_none(), "{family} of all");
            let pooled = samples(&text, &family)
                .into_iter()
                .filter(|l| l.contains(r#"site="all""#))
                .count();
            assert_eq!(pooled, expected.len(), "{family}: {text}");
        }
    }
    // The Dice gauge of the same stream counts both cases.
    let dice = text
        .lines()
        .find(|l| {
            l.starts_with("segwatch_rolling_cases_7d{")
                && l.contains(&format!(r#"site="s",structure="{name}""#))
        })
        .unwrap();
    assert!(dice.ends_with(" 2"), "{dice}");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_takes_the_probabilistic_scores_with_their_case() {
    let app = TestApp::start().await;
    let key = app.key(Role::Ingest, Some("s")).await;
    scored(&app, &key, "soft", FRACTIONAL).await;
    let db = &app.db;
    let stored = "SELECT count(*) FROM structure_results WHERE soft_dice IS NOT NULL
                  AND brier IS NOT NULL AND ece IS NOT NULL AND reliability IS NOT NULL";
    assert_eq!(db.scalar::<i64>(stored).await, 4);
    db.age_every_case(100).await;
    assert_eq!(app.store.purge_expired_cases(31, 10).await.unwrap(), 1);
    assert_eq!(db.scalar::<i64>(stored).await, 0);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_float_nifti_of_probabilities_is_refused_as_a_prediction() {
    let app = TestApp::start().await;
    let key = app.key(Role::Ingest, Some("s")).await;
    let grid = Grid::axis_aligned([4, 3, 2], [1.0; 3], 3);
    let channel = |p: f32| vec![p; grid.len()];
    for (channels, problem, detail) in [
        (
            vec![channel(0.25), channel(0.75)],
            "invalid-header",
            "dim[4] = 2: time series and vector images are not label maps",
        ),
        (
            vec![channel(0.25)],
            "invalid-labels",
            "holds 0.25, which is not an integer label",
        ),
    ] {
        let body = probability_nifti::encode(&grid, &channels, true);
        let response = app.upload(&key, "s", "probs", "prediction", body).await;
        assert_eq!(response.status(), 422, "{problem}");
        let answer: Value = response.json().await.unwrap();
        assert!(
            answer["type"].as_str().unwrap().ends_with(problem),
            "{answer}"
        );
        assert!(
            answer["detail"].as_str().unwrap().contains(detail),
            "{answer}"
        );
    }
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_value_above_maximum_fractional_value_is_refused_at_upload() {
    // MaximumFractionalValue (0062,000E) US 255 patched to 200: stored values
    // 201..255 are no fractions, so the upload is refused, never accepted and
    // then failed.
    let mut bytes = read_fixture(FRACTIONAL);
    let tag = [0x62, 0x00, 0x0e, 0x00, b'U', b'S', 0x02, 0x00];
    let at = bytes.windows(8).position(|w| w == tag).unwrap() + 8;
    assert_eq!(&bytes[at..at + 2], &255u16.to_le_bytes());
    bytes[at..at + 2].copy_from_slice(&200u16.to_le_bytes());
    let app = TestApp::start().await;
    let key = app.key(Role::Ingest, Some("s")).await;
    let response = app.upload(&key, "s", "over", "prediction", bytes).await;
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(
        problem["type"], "https://segwatch.dev/problems/invalid-labels",
        "{problem}"
    );
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("above MaximumFractionalValue 200"),
        "{detail}"
    );
    app.finish().await;
}
