//! A prediction sent with a float NIfTI of probabilities (multipart/form-data,
//! `labels` and `probabilities` parts), on either store: scored with the
//! engine's soft Dice, Brier and ECE for the same arrays, channels in the
//! schema's order when the version has one; the identical upload sent again
//! changes nothing; and every way the pair can be wrong is refused with its
//! own problem, storing nothing.

use segwatch::formats::nifti::encode;
use segwatch::formats::{Limits, probability_nifti};
use segwatch::http::form_body;
use segwatch::metrics::probabilistic::{DEFAULT_BINS, LabelMapScorer};
use segwatch::store::Role;
use segwatch::volume::{Grid, LabelVolume, Labels};
use serde_json::{Value, json};

use crate::common::{TestApp, read_fixture};

const BOUNDARY: &str = "segwatch-test-boundary-7f3a";
const SHAPE: [usize; 3] = [12, 10, 6];

fn grid() -> Grid {
    Grid::axis_aligned(SHAPE, [0.8, 0.8, 2.0], 3)
}

/// A label map of two boxes (labels 1 and 2), shifted by `shift` voxels in x.
fn boxes(shift: usize) -> LabelVolume {
    let mut labels = vec![0u8; SHAPE.iter().product()];
    for z in 1..5 {
        for y in 2..8 {
            for x in 0..SHAPE[0] {
                let i = x + SHAPE[0] * (y + SHAPE[1] * z);
                labels[i] = match x {
                    x if (1 + shift..5 + shift).contains(&x) => 1,
                    x if (6 + shift..10 + shift).contains(&x) => 2,
                    _ => 0,
                };
            }
        }
    }
    LabelVolume::new(grid(), Labels::U8(labels)).unwrap()
}

/// A probability channel for `label` of `prediction`: high on its voxels,
/// varying with the position (0 and 1 included), low elsewhere.
fn channel(prediction: &LabelVolume, label: u16) -> Vec<f32> {
    (0..prediction.grid.len())
        .map(|i| match (prediction.labels.get(i) == label, i % 7) {
            (true, 0) => 1.0,
            (true, k) => 0.55 + 0.06 * k as f32,
            (false, 0) => 0.0,
            (false, k) => 0.05 * k as f32,
        })
        .collect()
}

/// The engine's scores of `file` against `reference` for `labels`' channels.
fn engine_scores(reference: &LabelVolume, labels: &[u16], file: &[u8]) -> Vec<Value> {
    let mut scorer = LabelMapScorer::new(reference, labels, DEFAULT_BINS).unwrap();
    probability_nifti::decode(file, &Limits::default(), &mut scorer).unwrap();
    scorer
        .finish()
        .unwrap()
        .into_iter()
        .map(|p| json!(p))
        .collect()
}

/// PUT a multipart prediction of model m at `version`.
async fn send_form(
    app: &TestApp,
    key: &str,
    case: &str,
    version: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    app.client
        .put(app.url(&format!(
            "/v1/sites/s/cases/{case}/prediction?model=m&model_version={version}"
        )))
        .bearer_auth(key)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The scored structure named `name`.
fn structure<'a>(case: &'a Value, name: &str) -> &'a Value {
    case["structures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {case}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prediction_with_probabilities_is_scored_as_the_engine_scores_them() {
    let app = TestApp::start().await;
    let key = app.key(Role::Ingest, Some("s")).await;
    // Version v2's schema lists label 2 first: its channels follow that order.
    let schema =
        json!({"structures": [{"label": 2, "name": "right"}, {"label": 1, "name": "left"}]});
    assert_eq!(app.put_schema("m", "v2", &schema).await, 201);
    let (prediction, reference) = (boxes(1), boxes(0));
    let labels = encode(&prediction, true);
    for (case, version, order, names) in [
        ("plain", "v1", [1u16, 2], ["label_1", "label_2"]),
        ("schema", "v2", [2, 1], ["right", "left"]),
    ] {
        let channels: Vec<Vec<f32>> = order.iter().map(|&l| channel(&prediction, l)).collect();
        let probabilities = probability_nifti::encode(&grid(), &channels, true);
        let body = form_body(&labels, &probabilities, BOUNDARY);
        let response = send_form(&app, &key, case, version, body.clone()).await;
        assert_eq!(response.status(), 202, "{case}");
        // The same pair again changes nothing; the labels alone are another upload.
        let again: Value = send_form(&app, &key, case, version, body)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            (&again["duplicate"], &again["revision"]),
            (&json!(true), &json!(1))
        );
        let response = app
            .upload(&key, "s", case, "reference", encode(&reference, true))
            .await;
        assert_eq!(response.status(), 202, "{case}");
        let scored = app.wait_scored("s", case).await;
        assert_eq!(scored["status"], "scored", "{scored}");
        let expected = engine_scores(&reference, &order, &probabilities);
        for (name, want) in names.iter().zip(&expected) {
            let got = structure(&scored, name);
            for field in ["soft_dice", "brier", "ece", "ece_bins", "reliability"] {
                assert_eq!(got[field], want[field], "{case} {name} {field}");
            }
            let soft = got["soft_dice"].as_f64().unwrap();
            assert!(soft > 0.3 && soft < 0.95, "{case} {name}: {soft}");
        }
    }
    let stored = "SELECT count(*) FROM segmentation_contents WHERE probabilities IS NOT NULL";
    assert_eq!(app.db.scalar::<i64>(stored).await, 2);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probabilities_that_do_not_fit_their_labels_are_refused_and_nothing_is_stored() {
    let app = TestApp::start().await;
    let key = app.key(Role::Ingest, Some("s")).await;
    let prediction = boxes(1);
    let labels = encode(&prediction, true);
    let fitting = |value: Option<f32>, grid: &Grid, channels: usize| {
        let channels: Vec<Vec<f32>> = (1..=channels as u16)
            .map(|l| match value {
                Some(v) => vec![v; grid.len()],
                None => channel(&prediction, l),
            })
            .collect();
        probability_nifti::encode(grid, &channels, true)
    };
    let good = fitting(None, &grid(), 2);
    let other_grid = Grid::axis_aligned(SHAPE, [0.8, 0.8, 2.5], 3);
    let complete = form_body(&labels, &good, BOUNDARY);
    let only_probabilities = form_body(&[], &good, BOUNDARY);
    let seg = read_fixture("dicom/ai_binary.dcm");
    let cases: [(&str, Vec<u8>, u16, &str, &str); 7] = [
        (
            "other grid",
            form_body(&labels, &fitting(None, &other_grid, 2), BOUNDARY),
            422,
            "probabilities-grid-mismatch",
            "another grid",
        ),
        (
            "out of range",
            form_body(&labels, &fitting(Some(1.5), &grid(), 2), BOUNDARY),
            422,
            "probabilities-out-of-range",
            "holds 1.5, which is not a probability",
        ),
        (
            "one channel short",
            form_body(&labels, &fitting(None, &grid(), 1), BOUNDARY),
            422,
            "probabilities-channels",
            "1 probability channels for 2 structures",
        ),
        (
            "no labels part",
            only_probabilities,
            400,
            "missing-labels-part",
            "\"labels\" part",
        ),
        (
            "truncated body",
            complete[..complete.len() / 2].to_vec(),
            400,
            "invalid-multipart",
            "closing delimiter",
        ),
        (
            "truncated probabilities",
            form_body(&labels, &good[..good.len() / 2], BOUNDARY),
            422,
            "invalid-probabilities",
            "the probabilities part",
        ),
        (
            "SEG labels",
            form_body(&seg, &good, BOUNDARY),
            422,
            "probabilities-need-label-map",
            "NIfTI label map",
        ),
    ];
    for (what, body, status, slug, detail) in cases {
        let response = send_form(&app, &key, "bad", "v1", body).await;
        assert_eq!(response.status(), status, "{what}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(
            problem["type"],
            format!("https://segwatch.dev/problems/{slug}"),
            "{what}: {problem}"
        );
        assert!(
            problem["detail"].as_str().unwrap().contains(detail),
            "{what}: {problem}"
        );
    }
    // A reference is the file itself, never a form.
    let response = app
        .client
        .put(app.url("/v1/sites/s/cases/bad/reference"))
        .bearer_auth(&key)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(complete)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    for table in ["segmentations", "segmentation_contents", "cases", "jobs"] {
        let count = app
            .db
            .scalar::<i64>(&format!("SELECT count(*) FROM {table}"))
            .await;
        assert_eq!(count, 0, "{table}");
    }
    app.finish().await;
}
