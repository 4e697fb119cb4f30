//! Probabilistic scores (soft Dice, Brier, ECE, reliability data) against the
//! peers' values stored in tests/fixtures/probabilistic (MONAI DiceLoss with
//! zero smoothing, torchmetrics BinaryCalibrationError and its binning,
//! scikit-learn's brier_score_loss; `scripts/peers/check_probabilistic.py`),
//! through the engine and through `segwatch eval`, and their inputs: float
//! NIfTI files and FRACTIONAL PROBABILITY SEGs.

use std::process::{Command, Output};

use segwatch::formats::{self, Limits, dicom_seg, probability_nifti};
use segwatch::metrics::probabilistic::{LabelMapScorer, Probabilistic, ProbabilityError};
use segwatch::volume::{Grid, LabelVolume, Labels, Segmentation};
use serde_json::Value;

use crate::common::fixture;

/// Peers compute in float64 on the same float32 values.
const TOLERANCE: f64 = 1e-9;

fn segwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_segwatch"))
        .args(args)
        .output()
        .expect("run segwatch")
}

fn path(name: &str) -> String {
    fixture("probabilistic").join(name).display().to_string()
}

fn expected() -> Vec<Value> {
    let text = std::fs::read_to_string(fixture("probabilistic/expected.json")).unwrap();
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn label_map(file: &str) -> LabelVolume {
    match formats::read_path(file.as_ref(), &Limits::default()).unwrap() {
        Segmentation::LabelMap(v) => v,
        other => panic!("{other:?}"),
    }
}

fn close(ours: f64, theirs: &Value, what: &str) {
    let theirs = theirs.as_f64().unwrap();
    assert!(
        (ours - theirs).abs() <= TOLERANCE,
        "{what}: {ours} vs {theirs}"
    );
}

/// Compares one structure's scores with the peers' values; MONAI's soft Dice
/// is NaN (null) when both sides are empty, where segwatch's is 1.
fn check(ours: &Probabilistic, peer: &Value, case: &str) {
    let what = |m: &str| format!("{case} label {} {m}", peer["label"]);
    match peer["soft_dice"].as_f64() {
        Some(_) => close(ours.soft_dice, &peer["soft_dice"], &what("soft Dice")),
        None => assert_eq!(ours.soft_dice, 1.0, "{}", what("both empty")),
    }
    close(ours.brier, &peer["brier"], &what("Brier"));
    close(ours.ece, &peer["ece"], &what("ECE"));
    let total: u64 = ours.reliability.iter().map(|b| b.count).sum();
    assert_eq!(ours.reliability.len(), 16);
    for (k, bin) in ours.reliability.iter().enumerate() {
        let share = bin.count as f64 / total as f64;
        close(share, &peer["bin_share"][k], &what("bin share"));
        if bin.count > 0 {
            let mean = bin.mean_probability.unwrap();
            close(mean, &peer["bin_mean_probability"][k], &what("bin mean"));
            let observed = bin.observed_frequency.unwrap();
            close(
                observed,
                &peer["bin_observed_frequency"][k],
                &what("bin frequency"),
            );
        } else {
            assert_eq!(bin.mean_probability, None);
        }
    }
}

#[test]
fn engine_matches_the_peers_on_the_stored_cases() {
    for case in expected() {
        let id = case["id"].as_str().unwrap();
        let reference = label_map(&path(case["ref"].as_str().unwrap()));
        let labels = [1u16, 2, 3];
        let mut scorer = LabelMapScorer::new(&reference, &labels, 15).unwrap();
        let probs = path(case["probabilities"].as_str().unwrap());
        probability_nifti::read_path(probs.as_ref(), &Limits::default(), &mut scorer).unwrap();
        let scores = scorer.finish().unwrap();
        for (ours, peer) in scores.iter().zip(case["structures"].as_array().unwrap()) {
            check(ours, peer, id);
        }
    }
}

#[test]
fn eval_reports_the_peers_values_in_json_csv_and_table() {
    let case = &expected()[0];
    let file = |key: &str| path(case[key].as_str().unwrap());
    let args = |format: &'static str| {
        [
            "eval".to_owned(),
            file("pred"),
            file("ref"),
            "--labels".into(),
            "1,2,3".into(),
            "--probabilities".into(),
            file("probabilities"),
            "--format".into(),
            format.into(),
        ]
    };
    let run = |format| {
        let args = args(format);
        let output = segwatch(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let json: Value = serde_json::from_str(&run("json")).unwrap();
    let structures = json["probabilistic"].as_array().unwrap();
    assert_eq!(structures.len(), 3);
    let keys: Vec<&str> = structures[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let fields = ["label", "code", "name", "soft_dice", "brier", "ece"];
    assert_eq!(keys[..6], fields);
    assert_eq!(keys[6..], ["ece_bins", "reliability"]);
    for (ours, peer) in structures
        .iter()
        .zip(case["structures"].as_array().unwrap())
    {
        assert_eq!(ours["label"], peer["label"]);
        for m in ["soft_dice", "brier", "ece"] {
            close(ours[m].as_f64().unwrap(), &peer[m], m);
        }
        let bin = &ours["reliability"][15];
        assert_eq!(
            (bin["lower"].as_f64(), bin["upper"].as_f64()),
            (Some(1.0), Some(1.0))
        );
    }
    let csv = run("csv");
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    assert_eq!(header[header.len() - 3..], ["soft_dice", "brier", "ece"]);
    let first: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    close(
        first[first.len() - 1].parse().unwrap(),
        &case["structures"][0]["ece"],
        "csv ece",
    );
    let table = run("table");
    assert!(
        table.contains(
            "probabilities of label_1: soft Dice 0.5370, Brier 0.022481, ECE 0.056453 (15 bins)"
        ),
        "{table}"
    );
}

#[test]
fn without_probabilities_the_output_is_unchanged() {
    let case = &expected()[0];
    let file = |key: &str| path(case[key].as_str().unwrap());
    let output = segwatch(&["eval", &file("pred"), &file("ref"), "--format", "json"]);
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(json.get("probabilistic").is_none());
    let csv = segwatch(&["eval", &file("pred"), &file("ref"), "--format", "csv"]);
    assert!(!String::from_utf8_lossy(&csv.stdout).contains("soft_dice"));
}

/// Writes probability channels on `grid` to a temporary file.
fn probability_file(dir: &tempfile::TempDir, grid: &Grid, channels: &[Vec<f32>]) -> String {
    let path = dir.path().join("probs.nii.gz");
    std::fs::write(&path, probability_nifti::encode(grid, channels, true)).unwrap();
    path.display().to_string()
}

#[test]
fn bad_probability_files_are_refused_with_a_clear_message() {
    let case = &expected()[0];
    let file = |key: &str| path(case[key].as_str().unwrap());
    let reference = label_map(&file("ref"));
    let grid = &reference.grid;
    let n = grid.len();
    let dir = tempfile::tempdir().unwrap();
    let eval = |probs: &str| {
        let output = segwatch(&[
            "eval",
            &file("pred"),
            &file("ref"),
            "--labels",
            "1,2,3",
            "--probabilities",
            probs,
        ]);
        assert_eq!(output.status.code(), Some(2));
        String::from_utf8(output.stderr).unwrap()
    };
    let mut bad = vec![vec![0.0f32; n]; 3];
    bad[1][7] = 1.5;
    let message = eval(&probability_file(&dir, grid, &bad));
    assert!(
        message.contains("voxel 7 of channel 1 holds 1.5, which is not a probability"),
        "{message}"
    );
    bad[1][7] = f32::NAN;
    assert!(eval(&probability_file(&dir, grid, &bad)).contains("not a probability"));
    let two = vec![vec![0.0f32; n]; 2];
    let message = eval(&probability_file(&dir, grid, &two));
    assert!(
        message.contains("2 probability channels for 3 structures"),
        "{message}"
    );
    let mut shifted = grid.clone();
    shifted.shape[0] -= 1;
    let small = vec![vec![0.0f32; shifted.len()]; 3];
    let message = eval(&probability_file(&dir, &shifted, &small));
    assert!(
        message.contains("the probabilities lie on another grid"),
        "{message}"
    );
    // Integer label maps are not probabilities.
    let message = eval(&file("ref"));
    assert!(message.contains("must be float32"), "{message}");
}

#[test]
fn a_probability_out_of_range_is_a_typed_error() {
    let grid = Grid::axis_aligned([4, 3, 2], [1.0; 3], 3);
    let reference = LabelVolume::new(grid.clone(), Labels::U8(vec![0; 24])).unwrap();
    let mut channel = vec![0.0f32; 24];
    channel[5] = -0.25;
    let bytes = probability_nifti::encode(&grid, &[channel], false);
    let mut scorer = LabelMapScorer::new(&reference, &[1], 15).unwrap();
    let err = probability_nifti::decode(&bytes, &Limits::default(), &mut scorer).unwrap_err();
    assert!(
        matches!(&err, ProbabilityError::Format(formats::FormatError::Value(m)) if m.contains("voxel 5 of channel 0 holds -0.25")),
        "{err:?}"
    );
}

const FRACTIONAL: &str = "dicom/ai_fractional.dcm";

#[test]
fn a_fractional_seg_scores_as_its_values_in_a_float_nifti() {
    // The SEG's stored values v / 255, written as a float NIfTI on the
    // reference's grid, give the same scores through the other input.
    let seg_path = fixture(FRACTIONAL).display().to_string();
    let ref_path = fixture("dicom/ref_labels.nii.gz").display().to_string();
    let output = segwatch(&["eval", &seg_path, &ref_path, "--format", "json"]);
    assert!(output.status.success(), "{output:?}");
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    let from_seg = json["probabilistic"].as_array().unwrap();
    let image = dicom_seg::decode(&std::fs::read(&seg_path).unwrap(), &Limits::default()).unwrap();
    let reference = label_map(&ref_path);
    let grid = &reference.grid;
    let map = image.grid.map_onto(grid).unwrap();
    let mut labels = Vec::new();
    let mut channels = Vec::new();
    for segment in &image.segments {
        let Some(fractions) = &segment.probabilities else {
            continue;
        };
        let mut channel = vec![0.0f32; grid.len()];
        let (min, e) = (fractions.bbox.min, fractions.bbox.extent());
        for (i, &v) in fractions.values.iter().enumerate() {
            let local = [i % e[0], (i / e[0]) % e[1], i / (e[0] * e[1])];
            let t = map.target_index([0, 1, 2].map(|a| min[a] + local[a]));
            let index =
                t[0] as usize + grid.shape[0] * (t[1] as usize + grid.shape[1] * t[2] as usize);
            channel[index] = (f64::from(v) / f64::from(fractions.max)) as f32;
        }
        labels.push(segment.number);
        channels.push(channel);
    }
    assert_eq!(labels.len(), from_seg.len());
    let bytes = probability_nifti::encode(grid, &channels, false);
    let mut scorer = LabelMapScorer::new(&reference, &labels, 15).unwrap();
    probability_nifti::decode(&bytes, &Limits::default(), &mut scorer).unwrap();
    for (ours, seg) in scorer.finish().unwrap().iter().zip(from_seg) {
        // float32 storage of v / 255 moves each value by at most 3e-8.
        for (m, value) in [
            ("soft_dice", ours.soft_dice),
            ("brier", ours.brier),
            ("ece", ours.ece),
        ] {
            let diff = (value - seg[m].as_f64().unwrap()).abs();
            assert!(diff < 1e-6, "{m}: {value} vs {}", seg[m]);
        }
        let counts: Vec<u64> = ours.reliability.iter().map(|b| b.count).collect();
        let seg_counts: Vec<u64> = seg["reliability"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_u64().unwrap())
            .collect();
        assert_eq!(counts, seg_counts);
    }
}

#[test]
fn occupancy_fractions_are_thresholded_only() {
    let mut bytes = std::fs::read(fixture(FRACTIONAL)).unwrap();
    let at = bytes
        .windows(12)
        .position(|w| w == b"PROBABILITY ")
        .expect("SegmentationFractionalType");
    bytes[at..at + 12].copy_from_slice(b"OCCUPANCY   ");
    let image = dicom_seg::decode(&bytes, &Limits::default()).unwrap();
    assert!(image.segments.iter().all(|s| s.probabilities.is_none()));
    let probability = dicom_seg::decode(
        &std::fs::read(fixture(FRACTIONAL)).unwrap(),
        &Limits::default(),
    )
    .unwrap();
    for (a, b) in image.segments.iter().zip(&probability.segments) {
        assert_eq!(a.mask, b.mask);
    }
}

#[test]
fn folder_mode_takes_probabilities_named_like_the_cases() {
    let dir = tempfile::tempdir().unwrap();
    let sub = |name: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir(&path).unwrap();
        path
    };
    let (pred, reference, probs, out) = (
        sub("pred"),
        sub("ref"),
        sub("probs"),
        dir.path().join("out"),
    );
    let cases = expected();
    for (i, case) in cases.iter().enumerate() {
        let id = case["id"].as_str().unwrap();
        let copy = |key: &str, to: &std::path::Path| {
            std::fs::copy(
                path(case[key].as_str().unwrap()),
                to.join(format!("{id}.nii.gz")),
            )
            .unwrap();
        };
        copy("pred", &pred);
        copy("ref", &reference);
        // The last case has no probability file: scored without probabilities.
        if i + 1 < cases.len() {
            copy("probabilities", &probs);
        }
    }
    let arg = |p: &std::path::Path| p.display().to_string();
    let output = segwatch(&[
        "eval",
        "--pred-dir",
        &arg(&pred),
        "--ref-dir",
        &arg(&reference),
        "--prob-dir",
        &arg(&probs),
        "--labels",
        "1,2,3",
        "--out",
        &arg(&out),
    ]);
    assert!(output.status.success(), "{output:?}");
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let results = results.as_array().unwrap();
    for (result, case) in results.iter().zip(&cases[..cases.len() - 1]) {
        let scores = result["probabilistic"].as_array().unwrap();
        for (ours, peer) in scores.iter().zip(case["structures"].as_array().unwrap()) {
            close(ours["ece"].as_f64().unwrap(), &peer["ece"], "folder ece");
        }
    }
    assert!(results[cases.len() - 1].get("probabilistic").is_none());
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert!(rows[0].ends_with(",soft_dice,brier,ece"), "{}", rows[0]);
    // Every row has the header's columns; the case without probabilities leaves them empty.
    let width = rows[0].split(',').count();
    assert!(rows.iter().all(|r| r.split(',').count() == width));
    assert!(rows.last().unwrap().ends_with(",,,"));
    // The summary averages each structure's scores over the cases that have
    // probabilities (the peer's values; the last case has none).
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let with_probabilities = &cases[..cases.len() - 1];
    for structure in summary.as_array().unwrap() {
        let label = structure["label"].as_u64().unwrap() as usize;
        let peer: Vec<&Value> = with_probabilities
            .iter()
            .map(|c| &c["structures"][label - 1])
            .collect();
        assert_eq!(structure["soft_cases"], peer.len(), "{structure}");
        for (ours, theirs) in [
            ("soft_dice_mean", "soft_dice"),
            ("brier_mean", "brier"),
            ("ece_mean", "ece"),
        ] {
            let mean = peer
                .iter()
                .map(|p| p[theirs].as_f64().unwrap())
                .sum::<f64>()
                / peer.len() as f64;
            close(structure[ours].as_f64().unwrap(), &Value::from(mean), ours);
        }
    }
    let csv = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .ends_with(",soft_cases,soft_dice_mean,brier_mean,ece_mean"),
        "{csv}"
    );
}

#[test]
fn each_mode_takes_its_own_probability_option() {
    let case = &expected()[0];
    let file = |key: &str| path(case[key].as_str().unwrap());
    let dir = fixture("probabilistic").display().to_string();
    let output = segwatch(&["eval", &file("pred"), &file("ref"), "--prob-dir", &dir]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--prob-dir is for folders"));
    let output = segwatch(&[
        "eval",
        "--pred-dir",
        &dir,
        "--ref-dir",
        &dir,
        "--probabilities",
        &file("probabilities"),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--probabilities is for one pair"));
}
