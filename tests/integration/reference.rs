//! Every case in tests/fixtures/reference matches MONAI (voxel, and the
//! generalized Dice score) and surface-distance (surfel): counts exactly, other
//! values within 1e-5 relative (1e-6 absolute).

use std::path::{Path, PathBuf};

use segwatch::formats::{Limits, read_path};
use segwatch::metrics::pairing::{Request, evaluate};
use segwatch::metrics::{Empty, Settings, StructureMetrics, SurfaceMode, generalized_dice};
use serde_json::Value;

fn reference_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference")
}

fn close(got: f64, expected: &Value, what: &str) {
    match expected.as_f64() {
        None => assert!(
            got.is_infinite(),
            "{what}: expected null (infinite), got {got}"
        ),
        Some(e) => assert!(
            (got - e).abs() <= 1e-6 || (got - e).abs() <= 1e-5 * e.abs(),
            "{what}: got {got}, expected {e}"
        ),
    }
}

fn empty_name(e: Empty) -> &'static str {
    match e {
        Empty::None => "none",
        Empty::Both => "both",
        Empty::Pred => "pred",
        Empty::Ref => "ref",
    }
}

fn check(case: &Value, mode: SurfaceMode, key: &str) {
    let dir = reference_dir().join("cases");
    let id = case["id"].as_str().unwrap();
    let pred = read_path(
        &dir.join(case["pred"].as_str().unwrap()),
        &Limits::default(),
    )
    .unwrap();
    let reference =
        read_path(&dir.join(case["ref"].as_str().unwrap()), &Limits::default()).unwrap();
    let spacing: Vec<f64> = case["spacing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (axis, s) in spacing.iter().enumerate() {
        assert!(
            (pred.grid().spacing[axis] - s).abs() < 1e-6,
            "{id}: spacing"
        );
    }
    let labels: Vec<u16> = case["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u16)
        .collect();
    let settings = Settings {
        surface: mode,
        tolerance_mm: case["tolerance_mm"].as_f64().unwrap(),
    };
    let request = Request {
        labels: Some(&labels),
        settings,
        ..Request::default()
    };
    let results = evaluate(&pred, &reference, &request).unwrap().structures;
    let expected = case["structures"].as_array().unwrap();
    assert_eq!(results.len(), expected.len(), "{id}");
    for (got, want) in results.iter().zip(expected) {
        let StructureMetrics { label, .. } = got;
        let what = |field: &str| format!("{id} label {} {key} {field}", label.unwrap());
        assert_eq!(Some(want["label"].as_u64().unwrap() as u16), *label);
        for (field, value) in [
            ("pred_voxels", got.pred_voxels),
            ("ref_voxels", got.ref_voxels),
            ("tp", got.tp),
            ("fp", got.fp),
            ("fn", got.fn_),
        ] {
            assert_eq!(value, want[field].as_u64().unwrap(), "{}", what(field));
        }
        assert_eq!(
            empty_name(got.empty),
            want["empty"].as_str().unwrap(),
            "{}",
            what("empty")
        );
        close(got.dice, &want["dice"], &what("dice"));
        close(got.iou, &want["iou"], &what("iou"));
        let surface = &want[key];
        close(got.hd_mm, &surface["hd"], &what("hd"));
        close(got.hd95_mm, &surface["hd95"], &what("hd95"));
        close(got.assd_mm, &surface["assd"], &what("assd"));
        close(got.masd_mm, &surface["masd"], &what("masd"));
        close(got.nsd, &surface["nsd"], &what("nsd"));
    }
    // MONAI 1.6.1's GeneralizedDiceScore (scripts/peers/check_generalized_dice.py),
    // computed in float32.
    close(
        generalized_dice(&results).unwrap(),
        &case["generalized_dice"],
        &format!("{id} generalized_dice"),
    );
}

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(reference_dir().join("expected.json"))
        .expect("tests/fixtures/reference/expected.json");
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn voxel_mode_matches_monai() {
    let cases = cases();
    assert!(cases.len() >= 12);
    for case in &cases {
        check(case, SurfaceMode::Voxel, "voxel");
    }
}

#[test]
fn surfel_mode_matches_surface_distance() {
    for case in &cases() {
        check(case, SurfaceMode::Surfel, "surfel");
    }
}
