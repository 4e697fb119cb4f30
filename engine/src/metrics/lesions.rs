//! Lesion-wise (instance) metrics of one structure: its connected components on
//! each side, matched predicted to reference, then detection counts, lesion-wise
//! Dice (BraTS 2023) and Panoptic Quality, as `docs/lesions.md` specifies.

mod components;

pub use components::{Components, Connectivity};
use serde::{Deserialize, Serialize};

use super::{Empty, finite_or_null};
use crate::volume::{GridMismatch, LabelVolume};

/// How predicted lesions are matched to reference lesions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Matching {
    /// One to one: pairs with IoU ≥ `threshold`, taken greedily by descending IoU
    /// (ties: lower reference, then lower predicted instance first), as panoptica's
    /// `NaiveThresholdMatching`. At a threshold of 0.5 or more a match is unique.
    Iou {
        /// Least IoU of a match, in [0, 1].
        threshold: f64,
    },
    /// BraTS 2023: a reference lesion is detected by every predicted lesion that
    /// overlaps it, and scored against their union; a predicted lesion is a false
    /// positive when it overlaps no reference lesion.
    AnyOverlap,
}

impl Default for Matching {
    /// IoU ≥ 0.5, panoptica's default.
    fn default() -> Self {
        Matching::Iou { threshold: 0.5 }
    }
}

/// How lesions are found and matched.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LesionSettings {
    /// Which voxels form one lesion.
    pub connectivity: Connectivity,
    /// How predictions are matched to reference lesions.
    pub matching: Matching,
}

/// Lesion-wise metrics of one structure. Undefined values serialize as null.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LesionMetrics {
    /// Which side, if any, has no lesion; sets the conventions below.
    pub empty: Empty,
    /// Lesions (connected components) in the reference.
    pub ref_instances: u32,
    /// Lesions in the prediction.
    pub pred_instances: u32,
    /// Detected reference lesions.
    pub tp: u32,
    /// Predicted lesions matched to none: the false positives of the case.
    pub fp: u32,
    /// Missed reference lesions; `fn` in JSON.
    #[serde(rename = "fn")]
    pub fn_: u32,
    /// Detection sensitivity, tp / `ref_instances`; 1 when both sides are empty, NaN when only the reference is.
    #[serde(serialize_with = "finite_or_null")]
    pub sensitivity: f64,
    /// (`pred_instances` − fp) / `pred_instances`; 1 when both sides are empty, NaN when only the prediction is.
    #[serde(serialize_with = "finite_or_null")]
    pub precision: f64,
    /// Harmonic mean of sensitivity and precision; 1 when both sides are empty, 0 when one is.
    #[serde(serialize_with = "finite_or_null")]
    pub f1: f64,
    /// BraTS 2023 lesion-wise Dice: the reference lesions' Dice summed, over tp + fn + fp; 1 when both sides are empty.
    #[serde(serialize_with = "finite_or_null")]
    pub lesion_dice: f64,
    /// Segmentation quality: mean IoU of the detected lesions; 1 when both sides are empty, 0 when none is detected.
    #[serde(serialize_with = "finite_or_null")]
    pub sq: f64,
    /// Recognition quality, tp / (tp + fp/2 + fn/2); 1 when both sides are empty.
    #[serde(serialize_with = "finite_or_null")]
    pub rq: f64,
    /// Panoptic quality, `sq` × `rq`.
    #[serde(serialize_with = "finite_or_null")]
    pub pq: f64,
    /// The reference lesions, numbered from 0 in storage order of their first voxel.
    pub lesions: Vec<ReferenceLesion>,
}

/// One reference lesion and its match.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReferenceLesion {
    /// Its voxels.
    pub voxels: u64,
    /// Its volume in mL.
    pub volume_ml: f64,
    /// The predicted lesions matched to it (numbered as the reference ones): at
    /// most one under IoU matching; empty when missed.
    pub matched: Vec<u32>,
    /// Dice with the matched prediction (their union under BraTS matching); 0 when missed.
    pub dice: f64,
    /// IoU with the matched prediction (their union under BraTS matching); 0 when missed.
    pub iou: f64,
}

/// Lesion-wise metrics of `label` in two label maps on the same grid.
pub fn lesion_metrics(
    pred: &LabelVolume,
    reference: &LabelVolume,
    label: u16,
    settings: &LesionSettings,
) -> Result<LesionMetrics, GridMismatch> {
    pred.grid.check_same(&reference.grid)?;
    let shape = pred.grid.shape;
    let (pred_components, ref_components) = rayon::join(
        || Components::of_label(&pred.labels, label, shape, settings.connectivity),
        || Components::of_label(&reference.labels, label, shape, settings.connectivity),
    );
    Ok(score_components(
        &pred_components,
        &ref_components,
        pred.grid.voxel_volume_ml(),
        settings.matching,
    ))
}

/// Matches predicted to reference components and scores them; `voxel_ml` is
/// the volume of one voxel in mL.
pub fn score_components(
    pred: &Components,
    reference: &Components,
    voxel_ml: f64,
    matching: Matching,
) -> LesionMetrics {
    let overlaps = reference.overlaps(pred);
    let matched = match matching {
        Matching::Iou { threshold } => match_by_iou(&overlaps, pred, reference, threshold),
        Matching::AnyOverlap => {
            let mut matched = vec![Vec::new(); reference.count()];
            for &(r, p, _) in &overlaps {
                matched[r as usize].push(p);
            }
            matched
        }
    };
    let mut used = vec![false; pred.count()];
    let lesions: Vec<ReferenceLesion> = matched
        .into_iter()
        .enumerate()
        .map(|(r, matched)| {
            let ref_voxels = reference.voxels()[r];
            let pred_voxels: u64 = matched.iter().map(|&p| pred.voxels()[p as usize]).sum();
            // Overlaps are sorted by reference component.
            let first = overlaps.partition_point(|o| (o.0 as usize) < r);
            let shared: u64 = overlaps[first..]
                .iter()
                .take_while(|o| o.0 as usize == r)
                .filter(|o| matched.contains(&o.1))
                .map(|o| o.2)
                .sum();
            for &p in &matched {
                used[p as usize] = true;
            }
            let total = (ref_voxels + pred_voxels) as f64;
            ReferenceLesion {
                voxels: ref_voxels,
                volume_ml: ref_voxels as f64 * voxel_ml,
                matched,
                dice: 2.0 * shared as f64 / total,
                iou: shared as f64 / (total - shared as f64),
            }
        })
        .collect();
    let count = |n: usize| u32::try_from(n).expect("fewer than 2³² lesions");
    let (ref_instances, pred_instances) = (count(reference.count()), count(pred.count()));
    let tp = count(lesions.iter().filter(|l| !l.matched.is_empty()).count());
    let fp = count(used.iter().filter(|&&u| !u).count());
    let fn_ = ref_instances - tp;
    let empty = match (pred_instances == 0, ref_instances == 0) {
        (true, true) => Empty::Both,
        (true, false) => Empty::Pred,
        (false, true) => Empty::Ref,
        (false, false) => Empty::None,
    };
    let ratio = |num: f64, den: f64| if den == 0.0 { f64::NAN } else { num / den };
    let [tp_, fp_, fn_f] = [tp, fp, fn_].map(f64::from);
    let (sensitivity, precision, f1, lesion_dice, sq, rq) = if empty == Empty::Both {
        (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    } else {
        let sensitivity = ratio(tp_, f64::from(ref_instances));
        let precision = ratio(f64::from(pred_instances - fp), f64::from(pred_instances));
        // One side empty: the NaN ratio gives no F1, which is 0 there.
        let f1 = 2.0 * sensitivity * precision / (sensitivity + precision);
        let detected_iou: f64 = lesions
            .iter()
            .filter(|l| !l.matched.is_empty())
            .map(|l| l.iou)
            .sum();
        (
            sensitivity,
            precision,
            if f1.is_finite() { f1 } else { 0.0 },
            // Folded from +0.0: f64's `sum` starts at -0.0, which would print a
            // case with only false positives as -0.
            lesions.iter().map(|l| l.dice).fold(0.0, |a, d| a + d) / (tp_ + fn_f + fp_),
            if tp > 0 { detected_iou / tp_ } else { 0.0 },
            tp_ / (tp_ + fp_ / 2.0 + fn_f / 2.0),
        )
    };
    LesionMetrics {
        empty,
        ref_instances,
        pred_instances,
        tp,
        fp,
        fn_,
        sensitivity,
        precision,
        f1,
        lesion_dice,
        sq,
        rq,
        pq: sq * rq,
        lesions,
    }
}

/// One-to-one matches by IoU ≥ `threshold`, greedy by descending IoU: the
/// predicted component matched to each reference component, if any.
fn match_by_iou(
    overlaps: &[(u32, u32, u64)],
    pred: &Components,
    reference: &Components,
    threshold: f64,
) -> Vec<Vec<u32>> {
    let mut candidates: Vec<(f64, u32, u32)> = overlaps
        .iter()
        .map(|&(r, p, shared)| {
            let union = reference.voxels()[r as usize] + pred.voxels()[p as usize] - shared;
            (shared as f64 / union as f64, r, p)
        })
        .filter(|&(iou, _, _)| iou >= threshold)
        .collect();
    // Descending IoU; equal IoUs (equal ratios divide to the same float) by index.
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    let mut matched = vec![Vec::new(); reference.count()];
    let mut taken = vec![false; pred.count()];
    for (_, r, p) in candidates {
        if matched[r as usize].is_empty() && !taken[p as usize] {
            matched[r as usize].push(p);
            taken[p as usize] = true;
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{Grid, Labels};
    use proptest::prelude::*;

    /// A 2D label map from rows of `#` (label 1) and `.`, y growing downwards.
    fn image(rows: &[&str]) -> LabelVolume {
        let shape = [rows[0].len(), rows.len(), 1];
        let labels = rows
            .iter()
            .flat_map(|r| r.bytes().map(|b| (b == b'#') as u8))
            .collect();
        LabelVolume::new(
            Grid::axis_aligned(shape, [0.5, 0.5, 1.0], 2),
            Labels::U8(labels),
        )
        .unwrap()
    }

    /// Metrics of label 1 with the given connectivity and matching.
    fn score(
        pred: &LabelVolume,
        reference: &LabelVolume,
        connectivity: Connectivity,
        matching: Matching,
    ) -> LesionMetrics {
        lesion_metrics(
            pred,
            reference,
            1,
            &LesionSettings {
                connectivity,
                matching,
            },
        )
        .unwrap()
    }

    fn assert_close(actual: f64, expected: f64) {
        assert!((actual - expected).abs() < 1e-12, "{actual} != {expected}");
    }

    /// (sensitivity, precision, f1, lesion_dice, sq, rq, pq).
    fn ratios(m: &LesionMetrics) -> [f64; 7] {
        [
            m.sensitivity,
            m.precision,
            m.f1,
            m.lesion_dice,
            m.sq,
            m.rq,
            m.pq,
        ]
    }

    fn assert_ratios(m: &LesionMetrics, expected: [f64; 7]) {
        for (actual, expected) in ratios(m).into_iter().zip(expected) {
            if expected.is_nan() {
                assert!(actual.is_nan(), "{:?} != {expected:?}", ratios(m));
            } else {
                assert_close(actual, expected);
            }
        }
    }

    #[test]
    fn a_found_and_a_missed_lesion_in_2d() {
        // Reference: A (4 voxels) and B (2). The prediction covers A plus one voxel:
        // IoU 4/5, Dice 8/9; B is missed. Sensitivity 1/2, precision 1, F1 2/3,
        // lesion-wise Dice (8/9 + 0) / 2, SQ 4/5, RQ 1 / (1 + 1/2), PQ 8/15.
        let reference = image(&["##....", "##....", "......", "....##"]);
        let pred = image(&["###...", "##....", "......", "......"]);
        let m = score(&pred, &reference, Connectivity::Corner, Matching::default());
        assert_eq!(
            (m.ref_instances, m.pred_instances, m.tp, m.fp, m.fn_),
            (2, 1, 1, 0, 1)
        );
        assert_ratios(
            &m,
            [0.5, 1.0, 2.0 / 3.0, 4.0 / 9.0, 0.8, 2.0 / 3.0, 8.0 / 15.0],
        );
        assert_eq!(m.lesions[0].matched, [0]);
        assert_close(m.lesions[0].dice, 8.0 / 9.0);
        // 4 voxels of 0.5 × 0.5 × 1 mm³.
        assert_close(m.lesions[0].volume_ml, 0.001);
        assert_eq!(
            (
                m.lesions[1].voxels,
                m.lesions[1].matched.len(),
                m.lesions[1].dice
            ),
            (2, 0, 0.0)
        );
    }

    /// Two 2×2×2 cubes touching by a corner, and a prediction of the first alone.
    fn corner_pair() -> (LabelVolume, LabelVolume) {
        let grid = Grid::axis_aligned([4, 4, 4], [1.0; 3], 3);
        let cube = |at: usize, labels: &mut [u8]| {
            for i in 0..8 {
                labels[at + (i & 1) + 4 * ((i >> 1) & 1) + 16 * (i >> 2)] = 1;
            }
        };
        let (mut pred, mut reference) = (vec![0u8; 64], vec![0u8; 64]);
        cube(0, &mut pred);
        cube(0, &mut reference);
        cube(2 + 4 * 2 + 16 * 2, &mut reference);
        let volume = |labels| LabelVolume::new(grid.clone(), Labels::U8(labels)).unwrap();
        (volume(pred), volume(reference))
    }

    #[test]
    fn corner_touching_lesions_are_one_under_26_connectivity_and_two_under_6() {
        let (pred, reference) = corner_pair();
        // 6: two reference lesions, one found exactly. Lesion-wise Dice (1 + 0) / 2,
        // F1 2/3, SQ 1, RQ 1 / (1 + 1/2).
        let m = score(&pred, &reference, Connectivity::Face, Matching::default());
        assert_eq!((m.ref_instances, m.tp, m.fp, m.fn_), (2, 1, 0, 1));
        assert_ratios(&m, [0.5, 1.0, 2.0 / 3.0, 0.5, 1.0, 2.0 / 3.0, 2.0 / 3.0]);
        // 26: one 16-voxel lesion; the 8-voxel prediction has IoU exactly 0.5, which
        // matches (≥, as panoptica): Dice 16/24, SQ 1/2, RQ 1, PQ 1/2.
        let m = score(&pred, &reference, Connectivity::Corner, Matching::default());
        assert_eq!((m.ref_instances, m.tp, m.fp, m.fn_), (1, 1, 0, 0));
        assert_ratios(&m, [1.0, 1.0, 1.0, 2.0 / 3.0, 0.5, 1.0, 0.5]);
        // Above the threshold nothing matches: one FN, one FP, every ratio 0.
        let m = score(
            &pred,
            &reference,
            Connectivity::Corner,
            Matching::Iou { threshold: 0.6 },
        );
        assert_eq!((m.tp, m.fp, m.fn_), (0, 1, 1));
        assert_ratios(&m, [0.0; 7]);
    }

    #[test]
    fn a_lesion_split_in_two_predictions() {
        // Reference: one run of 6. Prediction: 3 + 2 voxels with a gap.
        let reference = image(&["######"]);
        let pred = image(&["###.##"]);
        // IoU: the 3-voxel part has IoU 3/6 (matched, Dice 2/3), the other is an
        // FP. Lesion-wise Dice (2/3) / 2, F1 2/3, SQ 1/2, RQ 1 / (1 + 1/2).
        let m = score(&pred, &reference, Connectivity::Corner, Matching::default());
        assert_eq!((m.tp, m.fp, m.fn_), (1, 1, 0));
        assert_ratios(
            &m,
            [1.0, 0.5, 2.0 / 3.0, 1.0 / 3.0, 0.5, 2.0 / 3.0, 1.0 / 3.0],
        );
        // BraTS: both parts detect it; their union (5 voxels, all shared) has Dice
        // 10/11 and IoU 5/6; no FP.
        let m = score(
            &pred,
            &reference,
            Connectivity::Corner,
            Matching::AnyOverlap,
        );
        assert_eq!((m.tp, m.fp, m.fn_), (1, 0, 0));
        assert_eq!(m.lesions[0].matched, [0, 1]);
        assert_ratios(&m, [1.0, 1.0, 1.0, 10.0 / 11.0, 5.0 / 6.0, 1.0, 5.0 / 6.0]);
    }

    #[test]
    fn below_one_half_matches_go_by_descending_iou_then_lowest_index() {
        // The prediction (4 voxels) meets R0 (IoU 1/5) and R1 (IoU 2/6): R1 wins.
        let reference = image(&["##.####"]);
        let pred = image(&[".####.."]);
        let m = score(
            &pred,
            &reference,
            Connectivity::Corner,
            Matching::Iou { threshold: 0.1 },
        );
        assert_eq!(
            (m.lesions[0].matched.len(), m.lesions[1].matched.as_slice()),
            (0, [0].as_slice())
        );
        assert_close(m.lesions[1].dice, 0.5);
        // Equal IoU 1/4 with both: the lower reference lesion wins.
        let reference = image(&["##.##"]);
        let pred = image(&[".###."]);
        let m = score(
            &pred,
            &reference,
            Connectivity::Corner,
            Matching::Iou { threshold: 0.2 },
        );
        assert_eq!(
            (m.lesions[0].matched.as_slice(), m.lesions[1].matched.len()),
            ([0].as_slice(), 0)
        );
    }

    #[test]
    fn empty_sides_follow_the_documented_conventions() {
        let none = image(&["....."]);
        let two = image(&["#.#.."]);
        // Both empty: perfect agreement (BraTS 2023; panoptica gives NaN).
        let m = score(&none, &none, Connectivity::Corner, Matching::default());
        assert_eq!((m.empty, m.tp, m.fp, m.fn_), (Empty::Both, 0, 0, 0));
        assert_ratios(&m, [1.0; 7]);
        // Reference empty: both predictions are FPs; no sensitivity.
        let m = score(&two, &none, Connectivity::Corner, Matching::default());
        assert_eq!((m.empty, m.fp), (Empty::Ref, 2));
        assert_ratios(&m, [f64::NAN, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        let json = serde_json::to_value(&m).unwrap();
        assert!(json["sensitivity"].is_null() && json["fn"] == 0);
        // A positive zero: JSON and tables show 0, not -0.
        assert!(m.lesion_dice.is_sign_positive());
        // Prediction empty: both reference lesions missed; no precision.
        let m = score(&none, &two, Connectivity::Corner, Matching::AnyOverlap);
        assert_eq!((m.empty, m.fn_), (Empty::Pred, 2));
        assert_ratios(&m, [0.0, f64::NAN, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn agrees_with_panoptica_on_two_cubes_one_found() {
        // Reference: 2×2×2 cubes at [1, 3)³ and [5, 7)³ of an 8³ grid; prediction: the
        // first stretched to 2×2×3 (IoU 8/12) and a cube at [4, 6) × [0, 2)² meeting
        // nothing. panoptica 2.1.7 (NaiveThresholdMatching, IoU ≥ 0.5, cc3d 26):
        // tp 1, fp 1, fn 1, prec 0.5, rec 0.5, rq 0.5, sq 0.6667, pq 0.3333.
        // Lesion-wise Dice by hand: Dice 16/20 for the first, over 3 lesions.
        let grid = Grid::axis_aligned([8, 8, 8], [1.0; 3], 3);
        let boxed = |boxes: &[[std::ops::Range<usize>; 3]]| {
            let mut labels = vec![0u8; 512];
            for [x, y, z] in boxes {
                for k in z.clone() {
                    for j in y.clone() {
                        for i in x.clone() {
                            labels[i + 8 * (j + 8 * k)] = 1;
                        }
                    }
                }
            }
            LabelVolume::new(grid.clone(), Labels::U8(labels)).unwrap()
        };
        let reference = boxed(&[[1..3, 1..3, 1..3], [5..7, 5..7, 5..7]]);
        let pred = boxed(&[[1..3, 1..3, 1..4], [4..6, 0..2, 0..2]]);
        let m = score(&pred, &reference, Connectivity::Corner, Matching::default());
        assert_eq!((m.tp, m.fp, m.fn_), (1, 1, 1));
        assert_ratios(&m, [0.5, 0.5, 0.5, 0.8 / 3.0, 2.0 / 3.0, 0.5, 1.0 / 3.0]);
    }

    proptest! {
        #[test]
        fn counts_are_consistent(
            pred in proptest::collection::vec(proptest::bool::weighted(0.3), 6 * 5 * 4),
            reference in proptest::collection::vec(proptest::bool::weighted(0.3), 6 * 5 * 4),
            threshold in 0.0f64..1.0,
            brats in any::<bool>(),
        ) {
            let grid = Grid::axis_aligned([6, 5, 4], [1.0; 3], 3);
            let volume = |on: Vec<bool>| LabelVolume::new(grid.clone(), Labels::U8(on.into_iter().map(u8::from).collect())).unwrap();
            let matching = if brats { Matching::AnyOverlap } else { Matching::Iou { threshold } };
            let m = score(&volume(pred), &volume(reference), Connectivity::Face, matching);
            prop_assert_eq!(m.tp + m.fn_, m.ref_instances);
            if brats {
                prop_assert!(m.fp <= m.pred_instances);
            } else {
                prop_assert_eq!(m.tp + m.fp, m.pred_instances);
            }
            for r in ratios(&m) {
                prop_assert!(r.is_nan() || (0.0..=1.0).contains(&r), "{:?}", ratios(&m));
            }
        }
    }
}
