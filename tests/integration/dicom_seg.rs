//! DICOM SEG decoding against the fixtures in tests/fixtures/dicom, whose expected
//! values were computed from the label arrays that generated them.

use std::path::{Path, PathBuf};

use segwatch::formats::dicom_seg::{SegKind, decode};
use segwatch::formats::{FormatError, Limits};
use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("expected.json")).unwrap()).unwrap()
}

fn read(name: &str) -> Result<segwatch::formats::dicom_seg::SegImage, FormatError> {
    decode(
        &std::fs::read(dir().join(name)).unwrap(),
        &Limits::default(),
    )
}

#[test]
fn segments_match_the_generating_arrays() {
    let expected = expected();
    let files = expected["files"].as_object().unwrap();
    let foreign = expected["foreign"].as_object().unwrap();
    let malformed = expected["malformed"].as_object().unwrap();
    let readable = |name: &String| {
        malformed
            .get(name)
            .is_none_or(|m| m["accept_or_reject"] == true || m["error_kind"] == "grid_mismatch")
    };
    for (name, file) in files
        .iter()
        .chain(foreign.iter())
        .filter(|(name, _)| readable(name))
    {
        let image = read(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let kind = match image.kind {
            SegKind::Binary => "BINARY",
            SegKind::Fractional => "FRACTIONAL",
            SegKind::Labelmap => "LABELMAP",
        };
        assert_eq!(kind, file["segmentation_type"], "{name}");
        let segments: Vec<&Value> = file["segments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["background"] != true)
            .collect();
        assert_eq!(image.segments.len(), segments.len(), "{name}");
        for (got, want) in image.segments.iter().zip(segments) {
            assert_eq!(
                got.number as u64,
                want["segment_number"].as_u64().unwrap(),
                "{name}"
            );
            assert_eq!(got.code, want["code"].as_str().unwrap(), "{name}");
            assert_eq!(got.name.as_deref(), want["label"].as_str(), "{name}");
            if let Some(voxels) = want["voxels"].as_u64() {
                assert_eq!(got.mask.voxels(), voxels, "{name} segment {}", got.number);
            }
        }
        assert_eq!(
            image.grid.shape[0] as u64,
            file["columns"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            image.grid.shape[1] as u64,
            file["rows"].as_u64().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn grid_matches_the_ct_geometry() {
    let expected = expected();
    let grid = &expected["grid"];
    let image = read("corrected_binary.dcm").unwrap();
    // The corrected SEG spans slices 2..11 of the CT.
    assert_eq!(image.grid.shape, [11, 13, 10]);
    let spacing: Vec<f64> = grid["spacing_xyz_mm"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for a in 0..3 {
        assert!((image.grid.spacing[a] - spacing[a]).abs() < 1e-6);
    }
    let ras = grid["nifti_affine_ras"].as_array().unwrap();
    let slice2: Vec<f64> = grid["slice_positions_lps_mm"][2]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let origin_ras = [-slice2[0], -slice2[1], slice2[2]];
    for r in 0..3 {
        for c in 0..3 {
            let want = ras[r][c].as_f64().unwrap();
            assert!(
                (image.grid.affine[r][c] - want).abs() < 1e-6,
                "affine[{r}][{c}]"
            );
        }
        assert!((image.grid.affine[r][3] - origin_ras[r]).abs() < 1e-6);
    }
}

#[test]
fn fractional_keeps_probabilities_and_thresholds_at_half() {
    let image = read("ai_fractional.dcm").unwrap();
    let binary = read("ai_binary.dcm").unwrap();
    for (soft, hard) in image.segments.iter().zip(&binary.segments) {
        assert_eq!(
            soft.mask.voxels(),
            hard.mask.voxels(),
            "segment {}",
            soft.number
        );
    }
    let liver = &image.segments[0];
    let map = liver.probabilities.as_ref().unwrap();
    assert_eq!(map.max, 255);
    // A shell of values below one half surrounds the thresholded voxels.
    let nonzero = map.values.iter().filter(|&&v| v > 0).count() as u64;
    assert!(nonzero > liver.mask.voxels());
    assert!(
        map.values.contains(&127)
            || image.segments.iter().any(|s| s
                .probabilities
                .as_ref()
                .is_some_and(|m| m.values.contains(&127)))
    );
    // The left kidney has frames, all below one half: empty mask, kept values.
    let left = &image.segments[3];
    assert_eq!(left.mask.voxels(), 0);
    assert!(left.probabilities.is_some());
}

#[test]
fn provenance_is_kept_and_patient_data_is_not() {
    let expected = expected();
    let want = &expected["provenance"]["ai_binary.dcm"];
    let image = read("ai_binary.dcm").unwrap();
    let p = &image.provenance;
    assert_eq!(
        p.study_instance_uid.as_deref(),
        want["study_instance_uid"].as_str()
    );
    assert_eq!(
        p.series_instance_uid.as_deref(),
        want["series_instance_uid"].as_str()
    );
    assert_eq!(
        p.referenced_series_instance_uid.as_deref(),
        want["referenced_series_instance_uid"].as_str()
    );
    assert_eq!(
        p.frame_of_reference_uid.as_deref(),
        want["frame_of_reference_uid"].as_str()
    );
    assert_eq!(p.segment_algorithm_type.as_deref(), Some("AUTOMATIC"));
    assert_eq!(p.algorithm_name.as_deref(), want["algorithm_name"].as_str());
    assert_eq!(
        p.algorithm_version.as_deref(),
        want["algorithm_version"].as_str()
    );
    assert_eq!(p.manufacturer.as_deref(), want["manufacturer"].as_str());
    assert_eq!(
        p.manufacturer_model_name.as_deref(),
        want["manufacturer_model_name"].as_str()
    );
    assert_eq!(
        p.software_versions.as_deref(),
        want["software_versions"].as_str()
    );
    let corrected = read("corrected_binary.dcm").unwrap();
    assert_eq!(
        corrected.provenance.segment_algorithm_type.as_deref(),
        Some("MANUAL")
    );

    // Nothing segwatch keeps, prints or logs about a SEG holds patient identity.
    let kept = format!(
        "{:?} {} {:?}",
        image,
        serde_json::to_string(&image.provenance).unwrap(),
        image.segments
    );
    for forbidden in expected["phi"]["forbidden_strings"].as_array().unwrap() {
        assert!(
            !kept.contains(forbidden.as_str().unwrap()),
            "{forbidden} leaked"
        );
    }
}

#[test]
fn encodings_decode_to_the_same_segments() {
    let binary = read("ai_binary.dcm").unwrap();
    for variant in [
        "ai_binary_deflate.dcm",
        "big_endian.dcm",
        "ai_labelmap.dcm",
        "ai_labelmap_rle.dcm",
        "ai_fractional_rle.dcm",
    ] {
        let image = read(variant).unwrap_or_else(|e| panic!("{variant}: {e}"));
        for (a, b) in image.segments.iter().zip(&binary.segments) {
            assert_eq!(a.code, b.code, "{variant}");
            let points = |m: &segwatch::volume::BoxMask, origin: [f64; 3]| {
                let mut p: Vec<[i64; 3]> = m
                    .points()
                    .map(|p| [p[0] as i64, p[1] as i64, p[2] as i64 + origin[2] as i64])
                    .collect();
                p.sort();
                p
            };
            // Same voxels once both grids are put on the CT's slice index.
            let slice = |g: &segwatch::volume::Grid| {
                let binary_origin = binary.grid.affine.map(|r| r[3]);
                let d: f64 = (0..3)
                    .map(|r| (g.affine[r][3] - binary_origin[r]) * g.affine[r][2] / g.spacing[2])
                    .sum();
                [0.0, 0.0, (d / g.spacing[2]).round()]
            };
            assert_eq!(
                points(&a.mask, slice(&image.grid)),
                points(&b.mask, [0.0; 3]),
                "{variant} {}",
                a.code
            );
        }
    }
}

#[test]
fn malformed_files_get_specific_errors() {
    type Case = (&'static str, fn(&FormatError) -> bool, &'static str);
    let cases: [Case; 9] = [
        (
            "bad_truncated.dcm",
            |e| matches!(e, FormatError::Truncated(_)),
            "truncated",
        ),
        (
            "bad_no_segment_sequence.dcm",
            |e| matches!(e, FormatError::Dicom(_)),
            "SegmentSequence",
        ),
        (
            "bad_no_per_frame_groups.dcm",
            |e| matches!(e, FormatError::Dicom(_)),
            "PerFrameFunctionalGroupsSequence",
        ),
        (
            "bad_frame_count.dcm",
            |e| matches!(e, FormatError::FrameCount(_)),
            "NumberOfFrames is 27",
        ),
        (
            "bad_transfer_syntax.dcm",
            |e| matches!(e, FormatError::TransferSyntax(_)),
            "1.2.840.10008.1.2.4.90",
        ),
        (
            "bad_unknown_transfer_syntax.dcm",
            |e| matches!(e, FormatError::TransferSyntax(_)),
            "1.2.840.10008.1.2.999.42",
        ),
        (
            "bad_mixed_orientation.dcm",
            |e| matches!(e, FormatError::Geometry(_)),
            "mixed orientations",
        ),
        (
            "bad_unknown_segment_ref.dcm",
            |e| matches!(e, FormatError::Dicom(_)),
            "segment 9",
        ),
        (
            "bad_not_seg.dcm",
            |e| matches!(e, FormatError::NotSegmentation(_)),
            "1.2.840.10008.5.1.4.1.1.2",
        ),
    ];
    for (name, kind, detail) in cases {
        let err = read(name).expect_err(name);
        assert!(
            kind(&err) && err.to_string().contains(detail),
            "{name}: {err}"
        );
    }
}

#[test]
fn limits_are_checked_before_decoding() {
    let limits = Limits {
        max_voxels: 1000,
        max_bytes: 1 << 20,
    };
    let err = decode(
        &std::fs::read(dir().join("foreign_liver.dcm")).unwrap(),
        &limits,
    )
    .unwrap_err();
    assert!(matches!(err, FormatError::TooLarge(_)), "{err}");
}

#[test]
fn fuzzer_findings_fail_cleanly() {
    // Inputs that once made the DICOM parser loop or reserve gigabytes.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let err = decode(&std::fs::read(&path).unwrap(), &Limits::default()).unwrap_err();
        assert!(
            matches!(err, FormatError::Dicom(_) | FormatError::Truncated(_)),
            "{}: {err}",
            path.display()
        );
    }
}
