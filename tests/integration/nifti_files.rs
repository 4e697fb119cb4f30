//! NIfTI files written by nibabel (tests/fixtures/nifti/make_nifti.py): every
//! storage variant decodes to the same labels on the same grid, reoriented files
//! are aligned exactly, and oversized or bomb-like inputs stop early.

use std::io::Write;
use std::path::{Path, PathBuf};

use segwatch::formats::nifti::{decode, encode, read_path};
use segwatch::formats::{FormatError, Limits};
use segwatch::metrics::pairing::{Request, evaluate};
use segwatch::volume::{Grid, LabelVolume, Labels, Segmentation};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nifti")
        .join(name)
}

fn read(name: &str) -> LabelVolume {
    read_path(&fixture(name), &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn labels(v: &LabelVolume) -> Vec<u16> {
    (0..v.labels.len()).map(|i| v.labels.get(i)).collect()
}

fn same_affine(a: &Grid, b: &Grid) -> bool {
    (0..3).all(|r| (0..4).all(|c| (a.affine[r][c] - b.affine[r][c]).abs() < 1e-4))
}

#[test]
fn storage_variants_decode_identically() {
    let reference = read("labels.nii.gz");
    assert_eq!(reference.grid.shape, [9, 7, 5]);
    for name in [
        "labels_nifti2.nii.gz",
        "labels_big_endian.nii",
        "labels_scaled_float.nii.gz",
        "labels_qform_only.nii.gz",
        "labels_4d_singleton.nii.gz",
    ] {
        let v = read(name);
        assert_eq!(v.grid.shape, reference.grid.shape, "{name}");
        assert!(
            same_affine(&v.grid, &reference.grid),
            "{name}: {:?}",
            v.grid.affine
        );
        assert_eq!(labels(&v), labels(&reference), "{name}");
        assert_eq!(reference.grid.check_same(&v.grid), Ok(()), "{name}");
    }
}

#[test]
fn time_series_are_refused() {
    let err = read_path(&fixture("labels_4d_series.nii.gz"), &Limits::default()).unwrap_err();
    assert!(err.to_string().contains("dim[4] = 3"), "{err}");
}

#[test]
fn reoriented_files_are_aligned_exactly() {
    let reference = read("labels.nii.gz");
    let reoriented = read("labels_reoriented.nii.gz");
    assert_eq!(reoriented.grid.shape, [9, 5, 7]);
    let moved = reoriented.reoriented_onto(&reference.grid).unwrap();
    assert_eq!(labels(&moved), labels(&reference));
    let evaluation = evaluate(
        &Segmentation::LabelMap(reoriented),
        &Segmentation::LabelMap(reference),
        &Request::default(),
    )
    .unwrap();
    assert_eq!(evaluation.structures.len(), 3);
    assert!(
        evaluation
            .structures
            .iter()
            .all(|s| s.dice == 1.0 && s.hd_mm == 0.0)
    );
}

#[test]
fn shifted_labels_give_the_dice_of_their_arrays() {
    let reference = read("labels.nii.gz");
    let shifted = read("labels_shifted.nii.gz");
    let (r, p) = (labels(&reference), labels(&shifted));
    let evaluation = evaluate(
        &Segmentation::LabelMap(shifted),
        &Segmentation::LabelMap(reference),
        &Request::default(),
    )
    .unwrap();
    for s in &evaluation.structures {
        let l = s.label.unwrap();
        let tp = p
            .iter()
            .zip(&r)
            .filter(|(a, b)| **a == l && **b == l)
            .count() as f64;
        let np = p.iter().filter(|&&v| v == l).count() as f64;
        let nr = r.iter().filter(|&&v| v == l).count() as f64;
        assert_eq!(s.dice, 2.0 * tp / (np + nr), "label {l}");
    }
}

#[test]
fn gzip_bomb_stops_at_the_declared_size() {
    // A header declaring 30 voxels, followed by 4 GiB of zeros: 4096 more gzip
    // members of 1 MiB each.
    let grid = Grid::axis_aligned([5, 3, 2], [1.0; 3], 3);
    let volume = LabelVolume::new(grid, Labels::U8(vec![1; 30])).unwrap();
    let plain = encode(&volume, false);
    let gzip = |bytes: &[u8]| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    };
    let zeros = gzip(&vec![0u8; 1 << 20]);
    let mut bomb = gzip(&plain);
    for _ in 0..4096 {
        bomb.extend_from_slice(&zeros);
    }
    assert!(bomb.len() < 8 << 20, "the bomb is small on disk");
    let start = std::time::Instant::now();
    let decoded = decode(&bomb, &Limits::default()).unwrap();
    assert_eq!(decoded, volume);
    // Inflating 4 GiB would take far longer than reading the declared 30 bytes
    // and a bounded tail; this is a guard, not a timing.
    assert!(start.elapsed().as_secs_f64() < 5.0);

    // A header declaring more than the limit is refused before any inflating.
    let mut huge = plain.clone();
    huge[42..44].copy_from_slice(&30000i16.to_le_bytes());
    huge[44..46].copy_from_slice(&30000i16.to_le_bytes());
    let err = decode(&huge, &Limits::default()).unwrap_err();
    assert!(matches!(err, FormatError::TooLarge(_)), "{err}");
}
