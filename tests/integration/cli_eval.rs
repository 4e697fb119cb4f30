//! `segwatch eval` as a user runs it: output shapes, folder mode, and one clear
//! line naming the file and the problem for every bad input.

use std::path::Path;
use std::process::{Command, Output};

use segwatch::formats::nifti::encode;
use segwatch::volume::{Grid, LabelVolume, Labels};
use serde_json::Value;

fn segwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_segwatch"))
        .args(args)
        .output()
        .expect("run segwatch")
}

fn reference_case(name: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference");
    dir.join("cases").join(name).display().to_string()
}

/// A cube of `label` at `offset` in a 12³ volume.
fn cube(label: u8, offset: usize) -> LabelVolume {
    let grid = Grid::axis_aligned([12, 12, 12], [1.0, 1.0, 2.0], 3);
    let labels = (0..grid.len())
        .map(|i| {
            let (x, y, z) = (i % 12, (i / 12) % 12, i / 144);
            let inside = [x, y, z].iter().all(|&c| (offset..offset + 6).contains(&c));
            if inside { label } else { 0 }
        })
        .collect();
    LabelVolume::new(grid, Labels::U8(labels)).unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

fn stderr_line(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(text.lines().count(), 1, "expected one line, got: {text}");
    text.trim_end().to_owned()
}

#[test]
fn json_output_has_the_documented_shape() {
    let output = segwatch(&[
        "eval",
        &reference_case("P09_pred.nii.gz"),
        &reference_case("P09_ref.nii.gz"),
        "--labels",
        "1,2,3,4,5",
        "--format",
        "json",
    ]);
    assert!(output.status.success());
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "prediction",
            "reference",
            "surface",
            "tolerance_mm",
            "grid",
            "structures",
            "mean_dice",
            "generalized_dice"
        ]
    );
    assert_eq!(json["surface"], "voxel");
    assert_eq!(json["grid"]["shape"], serde_json::json!([30, 40, 40]));
    assert_eq!(
        json["grid"]["spacing_mm"],
        serde_json::json!([1.5, 0.9, 0.9])
    );
    let structures = json["structures"].as_array().unwrap();
    let fields: Vec<&str> = structures[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        [
            "label",
            "code",
            "name",
            "empty",
            "pred_voxels",
            "ref_voxels",
            "tp",
            "fp",
            "fn",
            "pred_volume_ml",
            "ref_volume_ml",
            "volume_error_ml",
            "relative_volume_error",
            "dice",
            "iou",
            "precision",
            "recall",
            "hd_mm",
            "hd95_mm",
            "assd_mm",
            "masd_mm",
            "nsd"
        ]
    );
    // Label 3 is missed: distances are infinite (null), precision undefined (null).
    let missed = &structures[2];
    assert_eq!(missed["empty"], "pred");
    assert_eq!(missed["dice"], 0.0);
    assert!(missed["hd95_mm"].is_null() && missed["precision"].is_null());
    assert_eq!(missed["recall"], 0.0);
    // A missed structure lost its whole volume; against an empty reference the
    // relative error is undefined (null), the absolute one the predicted volume.
    assert_eq!(missed["relative_volume_error"], -1.0);
    let invented = &structures[3];
    assert_eq!(invented["empty"], "ref");
    assert!(invented["relative_volume_error"].is_null());
    assert_eq!(invented["volume_error_ml"], invented["pred_volume_ml"]);
    // Label 2: 0.85 mL predicted against 0.97 mL, as the volumes say.
    let under = &structures[1];
    let (pred_ml, ref_ml) = (
        under["pred_volume_ml"].as_f64().unwrap(),
        under["ref_volume_ml"].as_f64().unwrap(),
    );
    assert!(pred_ml < ref_ml);
    assert_eq!(under["volume_error_ml"].as_f64().unwrap(), pred_ml - ref_ml);
    assert_eq!(
        under["relative_volume_error"].as_f64().unwrap(),
        (pred_ml - ref_ml) / ref_ml
    );
    // Label 5 is declared but absent from both.
    assert_eq!(structures[4]["empty"], "both");
    assert_eq!(structures[4]["dice"], 1.0);
    // Mean Dice leaves out structures empty on both sides.
    let dice: Vec<f64> = structures[..4]
        .iter()
        .map(|s| s["dice"].as_f64().unwrap())
        .collect();
    let mean = dice.iter().sum::<f64>() / 4.0;
    assert!((json["mean_dice"].as_f64().unwrap() - mean).abs() < 1e-12);
}

#[test]
fn table_and_csv_formats() {
    let (pred, reference) = (
        reference_case("P02_pred.nii.gz"),
        reference_case("P02_ref.nii.gz"),
    );
    let table = segwatch(&["eval", &pred, &reference]);
    assert!(table.status.success());
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.contains("structure  empty  dice"), "{text}");
    // Unnamed label-map structures are named as in the service: label_N.
    assert!(text.contains("\nlabel_1 "), "{text}");
    assert!(text.contains("0.8888"), "{text}");
    assert!(text.contains("mean Dice 0.8888"), "{text}");

    let csv = segwatch(&[
        "eval",
        &pred,
        &reference,
        "--format",
        "csv",
        "--surface",
        "surfel",
    ]);
    let text = String::from_utf8(csv.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("label,code,name,empty,pred_voxels"));
    assert!(lines[1].starts_with("1,,,none,14147,14147,12574,1573,1573,"));
    // Surfel-mode HD95 of this case is 2.0 (surface-distance), voxel mode √5.
    assert!(lines[1].contains(",2.0,"), "{}", lines[1]);
}

#[test]
fn bad_inputs_fail_with_one_line_naming_file_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.nii.gz", &encode(&cube(1, 2), true));
    let plain = encode(&cube(1, 2), false);

    let mut corrupt = encode(&cube(1, 2), true);
    let n = corrupt.len();
    for b in &mut corrupt[12..n - 8] {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
    let mut complex = plain.clone();
    complex[70..72].copy_from_slice(&32i16.to_le_bytes());
    complex[72..74].copy_from_slice(&64i16.to_le_bytes());
    let other_grid = {
        let mut v = cube(1, 2);
        v.grid.shape = [12, 12, 6];
        v.grid.dims = 3;
        if let Labels::U8(l) = &mut v.labels {
            l.truncate(12 * 12 * 6);
        }
        encode(&v, true)
    };
    let cases: Vec<(String, &str)> = vec![
        (
            dir.path().join("missing.nii.gz").display().to_string(),
            "cannot read file",
        ),
        (
            write(dir.path(), "corrupt.nii.gz", &corrupt),
            "corrupt gzip data",
        ),
        (
            write(dir.path(), "truncated.nii", &plain[..plain.len() - 100]),
            "truncated file",
        ),
        (
            write(dir.path(), "complex.nii", &complex),
            "unsupported datatype: complex",
        ),
        (
            write(dir.path(), "text.nii", b"hello, I am not an image"),
            "not a NIfTI file",
        ),
        (
            write(dir.path(), "other_grid.nii.gz", &other_grid),
            "grids differ: shape differs: [12, 12, 12] vs [12, 12, 6]",
        ),
    ];
    for (bad, problem) in cases {
        let output = segwatch(&["eval", &good, &bad]);
        assert_eq!(output.status.code(), Some(2), "{bad}");
        let line = stderr_line(&output);
        assert!(
            line.contains(&bad) && line.contains(problem),
            "{bad}: {line}"
        );
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn folder_mode_pairs_by_name_and_writes_results_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (preds, refs, out) = (
        dir.path().join("ai"),
        dir.path().join("gt"),
        dir.path().join("out"),
    );
    std::fs::create_dir_all(&preds).unwrap();
    std::fs::create_dir_all(&refs).unwrap();
    for (case, offset) in [("case1", 2), ("case2", 3), ("case3", 2)] {
        write(
            &preds,
            &format!("{case}.nii.gz"),
            &encode(&cube(1, offset), true),
        );
        write(&refs, &format!("{case}.nii.gz"), &encode(&cube(1, 2), true));
    }
    // case3's reference as plain .nii still pairs; a lone prediction is reported.
    std::fs::remove_file(refs.join("case3.nii.gz")).unwrap();
    write(&refs, "case3.nii", &encode(&cube(1, 2), false));
    write(&preds, "lonely.nii.gz", &encode(&cube(1, 2), true));

    let output = segwatch(&[
        "eval",
        "--pred-dir",
        preds.to_str().unwrap(),
        "--ref-dir",
        refs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("lonely: no reference"));
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    let label1 = &summary[0];
    assert_eq!(label1["label"], 1);
    assert_eq!(label1["cases"], 3);
    // Cube shifted by one voxel on all axes: 5³ of 6³ overlap.
    let shifted = 2.0 * 125.0 / (2.0 * 216.0);
    assert!((label1["dice_median"].as_f64().unwrap() - 1.0).abs() < 1e-12);
    assert!((label1["dice_mean"].as_f64().unwrap() - (2.0 + shifted) / 3.0).abs() < 1e-12);
    // p5 interpolates between the two lowest of three sorted values.
    let p5 = shifted + (1.0 - shifted) * 0.1;
    assert!((label1["dice_p5"].as_f64().unwrap() - p5).abs() < 1e-12);

    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results.as_array().unwrap().len(), 3);
    assert_eq!(results[1]["case"], "case2");
    assert!((results[1]["structures"][0]["dice"].as_f64().unwrap() - shifted).abs() < 1e-12);
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4);
    assert!(csv.starts_with("case,label,code,name,empty,"));
    assert!(
        std::fs::read_to_string(out.join("summary.csv"))
            .unwrap()
            .starts_with("label,code,name,cases,")
    );
    assert!(out.join("summary.json").exists());

    // A broken pair is reported, the others still scored, and the exit code says so.
    write(&preds, "case2.nii.gz", b"garbage");
    let output = segwatch(&[
        "eval",
        "--pred-dir",
        preds.to_str().unwrap(),
        "--ref-dir",
        refs.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("case2.nii.gz: not a NIfTI file"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("2 cases scored, 1 failed"));
}

#[test]
fn usage_errors() {
    let only_pred = segwatch(&["eval", "a.nii"]);
    assert_eq!(only_pred.status.code(), Some(2));
    let both = segwatch(&[
        "eval",
        "a.nii",
        "b.nii",
        "--pred-dir",
        "x",
        "--ref-dir",
        "y",
    ]);
    assert_eq!(both.status.code(), Some(2));
    let tolerance = segwatch(&["eval", "a.nii", "b.nii", "--tolerance-mm=-1"]);
    assert!(String::from_utf8_lossy(&tolerance.stderr).contains("not a tolerance in mm"));
}

#[test]
fn a_reader_that_closes_early_ends_the_output_quietly() {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_segwatch"))
        .args([
            "eval",
            &reference_case("P09_pred.nii.gz"),
            &reference_case("P09_ref.nii.gz"),
            "--format",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run segwatch");
    // The reader goes away before segwatch writes (`segwatch eval … | head -0`).
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn serve_help_lists_the_environment_variables() {
    let help = segwatch(&["serve", "--help"]);
    assert!(help.status.success());
    let text = String::from_utf8(help.stdout).unwrap();
    for name in segwatch::config::ENV_VARS.iter().map(|(name, _)| name) {
        assert!(text.contains(name), "{name} missing in {text}");
    }
}

/// Label 1 in a 24 × 24 × 8 grid of 1 mm voxels: cubes given as (x, y, z, side).
fn lesion_map(cubes: &[(usize, usize, usize, usize)]) -> Vec<u8> {
    let grid = Grid::axis_aligned([24, 24, 8], [1.0; 3], 3);
    let labels = (0..grid.len())
        .map(|i| {
            let (x, y, z) = (i % 24, (i / 24) % 24, i / 576);
            let inside = |&(cx, cy, cz, side): &(usize, usize, usize, usize)| {
                (cx..cx + side).contains(&x)
                    && (cy..cy + side).contains(&y)
                    && (cz..cz + side).contains(&z)
            };
            u8::from(cubes.iter().any(inside))
        })
        .collect();
    encode(&LabelVolume::new(grid, Labels::U8(labels)).unwrap(), true)
}

#[test]
fn lesion_wise_metrics_for_the_structures_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    // Reference: lesions A (4³), B (4³) and a tiny C (2³). The prediction finds
    // A exactly, B one voxel off (IoU 48/80 = 0.6, Dice 0.75), misses C and
    // invents D (3³).
    let reference = write(
        dir.path(),
        "ref.nii.gz",
        &lesion_map(&[(2, 2, 2, 4), (12, 2, 2, 4), (2, 14, 2, 2)]),
    );
    let pred = write(
        dir.path(),
        "pred.nii.gz",
        &lesion_map(&[(2, 2, 2, 4), (13, 2, 2, 4), (16, 16, 2, 3)]),
    );
    let lesions = |extra: &[&str]| {
        let mut args = vec!["eval", &pred, &reference, "--format", "json"];
        args.extend_from_slice(extra);
        let output = segwatch(&args);
        assert!(output.status.success(), "{output:?}");
        let json: Value = serde_json::from_slice(&output.stdout).unwrap();
        json["lesions"][0].clone()
    };
    let m = lesions(&["--lesions", "1"]);
    let counts =
        ["ref_instances", "pred_instances", "tp", "fp", "fn"].map(|k| m[k].as_u64().unwrap());
    assert_eq!(counts, [3, 3, 2, 1, 1], "{m}");
    let close = |key: &str, want: f64| {
        let got = m[key].as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "{key}: {got} against {want}");
    };
    close("sensitivity", 2.0 / 3.0);
    close("precision", 2.0 / 3.0);
    // BraTS 2023: (1 + 0.75 + 0 for C) over TP + FN + FP = 4.
    close("lesion_dice", 1.75 / 4.0);
    // SQ = mean IoU of the matches (1 and 0.6), RQ = 2 / (2 + 1/2 + 1/2).
    close("pq", 0.8 * 2.0 / 3.0);
    let per_lesion: Vec<u64> = m["lesions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["voxels"].as_u64().unwrap())
        .collect();
    assert_eq!(per_lesion, [64, 64, 8]);

    // A stricter IoU leaves B unmatched: one more miss and one more false positive.
    let strict = lesions(&["--lesions", "1", "--lesion-iou", "0.7"]);
    assert_eq!(
        (
            strict["tp"].as_u64(),
            strict["fp"].as_u64(),
            strict["fn"].as_u64()
        ),
        (Some(1), Some(2), Some(2))
    );
    // BraTS matching counts any overlap: B is found again.
    assert_eq!(lesions(&["--lesions", "1", "--brats-matching"])["tp"], 2);

    // A schema marks the structure multi-instance; it is named.
    let schema = write(
        dir.path(),
        "schema.json",
        br#"{"structures": [{"label": 1, "name": "metastases", "instances": true}]}"#,
    );
    let named = lesions(&["--schema", &schema]);
    assert_eq!(named["name"], "metastases");
    assert_eq!(named["tp"], 2);

    // BraTS 2023 with one dilation and an 8 mm³ least volume: C (8 voxels of
    // 1 mm³) is left out; A and B are detected, D is a false positive. Nothing
    // merges (A and B are 6 voxels apart). Lesion-wise Dice (1 + 0.75) / 3.
    let brats_counts = |m: &Value| {
        ["ref_instances", "ref_left_out", "tp", "fp", "fn"].map(|k| m[k].as_u64().unwrap())
    };
    let brats = lesions(&[
        "--lesions",
        "1",
        "--brats-dilation",
        "1",
        "--min-lesion-mm3",
        "8",
    ]);
    assert_eq!(brats_counts(&brats), [2, 1, 2, 1, 0], "{brats}");
    assert!((brats["lesion_dice"].as_f64().unwrap() - 1.75 / 3.0).abs() < 1e-12);
    // The BraTS-MET preset (1 dilation, 2 mm³) keeps C: missed, (1 + 0.75) / 4.
    let met = lesions(&["--lesions", "1", "--brats2023", "MET"]);
    assert_eq!(brats_counts(&met), [3, 0, 2, 1, 1], "{met}");
    // A schema structure's lesion_matching applies unless options are given.
    let schema = write(
        dir.path(),
        "schema-brats.json",
        br#"{"structures": [{"label": 1, "name": "metastases", "instances": true,
            "lesion_matching": {"matching": {"kind": "brats2023", "dilation": 1}, "min_reference_mm3": 8}}]}"#,
    );
    assert_eq!(
        brats_counts(&lesions(&["--schema", &schema])),
        [2, 1, 2, 1, 0]
    );
    let overridden = lesions(&["--schema", &schema, "--lesion-iou", "0.7"]);
    assert_eq!(brats_counts(&overridden), [3, 0, 1, 2, 2]);

    // Bad settings are refused up front.
    let refused = |option: &str, value: &str| {
        let output = segwatch(&["eval", &pred, &reference, "--lesions", "1", option, value]);
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    assert!(refused("--connectivity", "5").contains("connectivity"));
    assert!(refused("--brats2023", "GoAT").contains("unknown challenge"));
}

#[test]
fn folder_mode_stratifies_by_reference_volume() {
    let dir = tempfile::tempdir().unwrap();
    let (ai, gt, out) = (
        dir.path().join("ai"),
        dir.path().join("gt"),
        dir.path().join("out"),
    );
    std::fs::create_dir_all(&ai).unwrap();
    std::fs::create_dir_all(&gt).unwrap();
    // Case a: the lesions of the lesion-wise test (A and B of 0.064 mL found,
    // C of 0.008 mL missed, D invented); case b: A alone, found exactly.
    write(
        &gt,
        "a.nii.gz",
        &lesion_map(&[(2, 2, 2, 4), (12, 2, 2, 4), (2, 14, 2, 2)]),
    );
    write(
        &ai,
        "a.nii.gz",
        &lesion_map(&[(2, 2, 2, 4), (13, 2, 2, 4), (16, 16, 2, 3)]),
    );
    write(&gt, "b.nii.gz", &lesion_map(&[(2, 2, 2, 4)]));
    write(&ai, "b.nii.gz", &lesion_map(&[(2, 2, 2, 4)]));
    let schema = write(
        dir.path(),
        "schema.json",
        br#"{"structures": [{"label": 1, "name": "mets", "instances": true, "volume_bands_ml": [0.01, 0.1]}]}"#,
    );
    let output = segwatch(&[
        "eval",
        "--pred-dir",
        ai.to_str().unwrap(),
        "--ref-dir",
        gt.to_str().unwrap(),
        "--schema",
        &schema,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("by reference volume"));
    let strata: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("strata.json")).unwrap()).unwrap();
    let rows: Vec<(&str, u64, u64, u64)> = strata
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["band"].as_str().unwrap(),
                s["cases"].as_u64().unwrap(),
                s["lesions"].as_u64().unwrap(),
                s["lesions_detected"].as_u64().unwrap(),
            )
        })
        .collect();
    // Lesions by their own size: C below 0.01 mL (missed), A, B and b's A in
    // 0.01–0.1 mL (found). Cases by the reference's total: a has 0.136 mL,
    // b 0.064 mL.
    assert_eq!(
        rows,
        [
            ("<0.01 mL", 0, 1, 0),
            ("0.01–0.1 mL", 1, 3, 3),
            ("≥0.1 mL", 1, 0, 0)
        ]
    );
    let b_dice = strata[1]["dice_mean"].as_f64().unwrap();
    assert_eq!(b_dice, 1.0, "case b alone in its band");
    assert!(
        std::fs::read_to_string(out.join("strata.csv"))
            .unwrap()
            .starts_with("structure,band,cases")
    );
}
