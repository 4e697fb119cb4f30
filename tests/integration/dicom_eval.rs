//! Every fixture pair (SEG with SEG on the union of their slice ranges, SEG with a
//! NIfTI label map through a schema) gives the counts and Dice computed from the
//! label arrays that generated the files.

use std::path::{Path, PathBuf};
use std::process::Command;

use segwatch::formats::{Limits, read_path};
use segwatch::metrics::pairing::{PairingError, Request, evaluate};
use segwatch::metrics::{Empty, StructureMetrics};
use segwatch::schema::{Schema, StructureDef, UnknownPolicy};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("expected.json")).unwrap()).unwrap()
}

/// The schema a pair with a NIfTI side implies: label value → segment code.
fn schema_of(pair: &Value) -> Option<Schema> {
    let map = pair["reference_label_map"].as_object()?;
    let structures = map
        .iter()
        .map(|(label, code)| StructureDef {
            label: Some(label.parse().unwrap()),
            code: Some(code.as_str().unwrap().to_owned()),
            name: format!("structure {label}"),
            tolerance_mm: None,
            failure_threshold: None,
            gate_min_mean_dice: None,
            gate_max_failure_rate: None,
            ambiguous_below: None,
            instances: false,
            volume_bands_ml: None,
            lesion_matching: None,
            drift_metrics: Vec::new(),
        })
        .collect();
    Some(Schema {
        structures,
        unknown_labels: UnknownPolicy::Reject,
    })
}

fn empty_name(e: Empty) -> &'static str {
    match e {
        Empty::None => "none",
        Empty::Both => "both",
        Empty::Pred => "pred",
        Empty::Ref => "ref",
    }
}

#[test]
fn every_fixture_pair_matches_the_label_arrays() {
    let expected = expected();
    for pair in expected["pairs"].as_array().unwrap() {
        let (p_name, r_name) = (
            pair["prediction"].as_str().unwrap(),
            pair["reference"].as_str().unwrap(),
        );
        let what = format!("{p_name} vs {r_name}");
        let pred = read_path(&dir().join(p_name), &Limits::default()).unwrap();
        let reference = read_path(&dir().join(r_name), &Limits::default()).unwrap();
        let schema = schema_of(pair);
        let request = Request {
            schema: schema.as_ref(),
            ..Request::default()
        };
        let evaluation =
            evaluate(&pred, &reference, &request).unwrap_or_else(|e| panic!("{what}: {e}"));
        let shape: Vec<usize> = pair["grid_shape_zyx"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        if schema.is_none() {
            // SEG with SEG: the union of both slice ranges.
            assert_eq!(evaluation.grid.shape.to_vec(), shape, "{what}");
        }
        for want in pair["structures"].as_array().unwrap() {
            let code = want["code"].as_str().unwrap();
            let got: &StructureMetrics = evaluation
                .structures
                .iter()
                .find(|s| s.code.as_deref() == Some(code))
                .unwrap_or_else(|| panic!("{what}: no {code}"));
            for (field, value) in [
                ("pred_voxels", got.pred_voxels),
                ("ref_voxels", got.ref_voxels),
                ("tp", got.tp),
                ("fp", got.fp),
                ("fn", got.fn_),
            ] {
                assert_eq!(
                    value,
                    want[field].as_u64().unwrap(),
                    "{what} {code} {field}"
                );
            }
            assert_eq!(
                empty_name(got.empty),
                want["empty"].as_str().unwrap(),
                "{what} {code}"
            );
            assert!(
                (got.dice - want["dice"].as_f64().unwrap()).abs() < 1e-9,
                "{what} {code} dice"
            );
            assert!(
                (got.ref_volume_ml - want["ref_volume_ml"].as_f64().unwrap()).abs() < 1e-6,
                "{what} {code} volume"
            );
            if schema.is_none() {
                // Names come from the reference SEG's SegmentLabel.
                assert_eq!(got.name.as_deref(), want["name"].as_str(), "{what} {code}");
            }
        }
    }
}

#[test]
fn segments_pair_by_code_not_number() {
    // The AI file numbers the left kidney 4, the corrected file 1: pairing by
    // number would score the left kidney against the liver.
    let read = |name: &str| read_path(&dir().join(name), &Limits::default()).unwrap();
    let evaluation = evaluate(
        &read("ai_binary.dcm"),
        &read("corrected_binary.dcm"),
        &Request::default(),
    )
    .unwrap();
    let left = evaluation
        .structures
        .iter()
        .find(|s| s.code.as_deref() == Some("SCT:64033007^SCT:7771000"))
        .unwrap();
    assert_eq!((left.pred_voxels, left.ref_voxels), (0, 32));
}

#[test]
fn differing_grids_and_unknown_structures_are_refused() {
    let read = |name: &str| read_path(&dir().join(name), &Limits::default()).unwrap();
    let err = evaluate(
        &read("mismatch_grid.dcm"),
        &read("corrected_binary.dcm"),
        &Request::default(),
    )
    .unwrap_err();
    assert!(matches!(err, PairingError::Grid(_)), "{err}");

    // A schema without the spleen rejects a file that has one.
    let pair = &expected()["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["reference"] == "ref_labels.nii.gz")
        .cloned()
        .unwrap();
    let mut schema = schema_of(pair).unwrap();
    schema
        .structures
        .retain(|s| s.code.as_deref() != Some("SCT:78961009"));
    let request = Request {
        schema: Some(&schema),
        ..Request::default()
    };
    let err = evaluate(
        &read("corrected_binary.dcm"),
        &read("ref_labels.nii.gz"),
        &request,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown structure: segment code SCT:78961009 is not in the structure schema"
    );
    schema.unknown_labels = UnknownPolicy::Ignore;
    let request = Request {
        schema: Some(&schema),
        ..Request::default()
    };
    let evaluation = evaluate(
        &read("corrected_binary.dcm"),
        &read("ref_labels.nii.gz"),
        &request,
    )
    .unwrap();
    assert_eq!(evaluation.structures.len(), 3);
}

#[test]
fn eval_command_shows_codes_and_names_for_seg() {
    let output = Command::new(env!("CARGO_BIN_EXE_segwatch"))
        .current_dir(dir())
        .args([
            "eval",
            "ai_binary.dcm",
            "corrected_binary.dcm",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    let liver = json["structures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["code"] == "SCT:10200004")
        .unwrap();
    assert_eq!(liver["name"], "liver (corrected)");
    assert!(liver["label"].is_null());
    assert!(
        (json["mean_dice"].as_f64().unwrap()
            - expected()["pairs"][0]["mean_dice"].as_f64().unwrap())
        .abs()
            < 1e-9
    );

    let bad = Command::new(env!("CARGO_BIN_EXE_segwatch"))
        .current_dir(dir())
        .args(["eval", "bad_frame_count.dcm", "corrected_binary.dcm"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("bad_frame_count.dcm: frame count mismatch"),
        "{stderr}"
    );
}
