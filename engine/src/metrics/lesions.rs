//! Lesion-wise (instance) metrics of one structure: its connected components on
//! each side, matched predicted to reference, then detection counts, lesion-wise
//! Dice (BraTS 2023) and Panoptic Quality, as `docs/lesions.md` specifies.

mod components;

pub use components::{Components, Connectivity};
use serde::{Deserialize, Serialize};

use super::{Empty, finite_or_null};
use crate::volume::{Grid, GridMismatch, LabelVolume};

/// How predicted lesions are matched to reference lesions. In JSON an object
/// named by `kind`: `{"kind": "iou", "threshold": 0.5}`, `{"kind": "any_overlap"}`,
/// `{"kind": "brats2023", "dilation": 3}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Matching {
    /// One to one: pairs with IoU ≥ `threshold`, taken greedily by descending IoU
    /// (ties: lower reference, then lower predicted instance first), as panoptica's
    /// `NaiveThresholdMatching`. At a threshold of 0.5 or more a match is unique.
    Iou {
        /// Least IoU of a match, in [0, 1].
        threshold: f64,
    },
    /// BraTS 2023 without dilation: a reference lesion is detected by every
    /// predicted lesion that overlaps it, and scored against their union; a
    /// predicted lesion is a false positive when it overlaps no reference lesion.
    /// The same as `Brats2023 { dilation: 0 }`.
    AnyOverlap,
    /// BraTS 2023: the reference is dilated `dilation` times by the
    /// 18-neighbourhood; reference lesions whose dilated regions touch are one
    /// lesion, detected by every predicted lesion that meets its dilated region
    /// and scored (Dice, IoU) on its own voxels against their union.
    Brats2023 {
        /// Dilation iterations: 3 for BraTS-GLI, -SSA and -PED, 1 for -MEN and -MET.
        dilation: u32,
    },
}

impl Default for Matching {
    /// IoU ≥ 0.5, panoptica's default.
    fn default() -> Self {
        Matching::Iou { threshold: 0.5 }
    }
}

/// How lesions are found and matched.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LesionSettings {
    /// Which voxels form one lesion.
    pub connectivity: Connectivity,
    /// How predictions are matched to reference lesions.
    pub matching: Matching,
    /// Reference lesions of at most this volume in mm³ are left out, and so are
    /// the predicted lesions that only meet them (BraTS 2023: 50, 2 for BraTS-MET);
    /// 0, the default, keeps every lesion.
    pub min_reference_mm3: f64,
}

impl LesionSettings {
    /// The BraTS 2023 lesion-wise settings of a challenge (`GLI`, `SSA`, `MEN`,
    /// `PED` or `MET`, any case, with or without a `BraTS-` prefix): 26-connectivity,
    /// the challenge's dilation and volume threshold.
    pub fn brats2023(challenge: &str) -> Option<LesionSettings> {
        let upper = challenge.to_ascii_uppercase();
        let (dilation, min_reference_mm3) = match upper.strip_prefix("BRATS-").unwrap_or(&upper) {
            "GLI" | "SSA" | "PED" => (3, 50.0),
            "MEN" => (1, 50.0),
            "MET" => (1, 2.0),
            _ => return None,
        };
        Some(LesionSettings {
            connectivity: Connectivity::Corner,
            matching: Matching::Brats2023 { dilation },
            min_reference_mm3,
        })
    }
}

/// Lesion-wise metrics of one structure. Undefined values serialize as null.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LesionMetrics {
    /// Which side, if any, has no lesion; sets the conventions below.
    pub empty: Empty,
    /// Reference lesions counted: connected components (merged when their
    /// dilated regions touch under BraTS 2023 matching), not left out.
    pub ref_instances: u32,
    /// Predicted lesions counted: connected components not left out.
    pub pred_instances: u32,
    /// Reference lesions left out as too small (`min_reference_mm3`).
    pub ref_left_out: u32,
    /// Predicted lesions left out: they meet left-out reference lesions only.
    pub pred_left_out: u32,
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
    /// The counted reference lesions, in storage order of their first voxel
    /// (of their dilated region under BraTS 2023 matching).
    pub lesions: Vec<ReferenceLesion>,
}

/// One reference lesion and its match.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReferenceLesion {
    /// Its voxels.
    pub voxels: u64,
    /// Its volume in mL.
    pub volume_ml: f64,
    /// The predicted lesions matched to it, numbered from 0 in storage order of
    /// their first voxel: at most one under IoU matching; empty when missed.
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
        &pred.grid,
        settings,
    ))
}

/// A reference lesion as matching found it.
struct Candidate {
    /// Its voxels.
    voxels: u64,
    /// The predicted components matched to it.
    matched: Vec<u32>,
    /// Voxels it shares with the union of `matched`.
    shared: u64,
    /// The predicted components that meet it: overlap it (IoU matching) or
    /// its dilated region (BraTS 2023).
    near: Vec<u32>,
}

/// Matches predicted to reference components (found with `settings`'
/// connectivity on `grid`) and scores them.
pub fn score_components(
    pred: &Components,
    reference: &Components,
    grid: &Grid,
    settings: &LesionSettings,
) -> LesionMetrics {
    let candidates = match settings.matching {
        Matching::Iou { threshold } => match_by_iou(pred, reference, threshold),
        Matching::AnyOverlap => {
            match_dilated(pred, reference, grid.shape, 0, settings.connectivity)
        }
        Matching::Brats2023 { dilation } => {
            match_dilated(pred, reference, grid.shape, dilation, settings.connectivity)
        }
    };
    let voxel_mm3: f64 = grid.spacing.iter().product();
    let voxel_ml = grid.voxel_volume_ml();
    // Left out at or below the least volume; a NaN setting leaves nothing out.
    let least = settings.min_reference_mm3;
    let kept = |c: &Candidate| least.is_nan() || c.voxels as f64 * voxel_mm3 > least;
    let (mut used, mut near_left_out) = (vec![false; pred.count()], vec![false; pred.count()]);
    let mut ref_left_out = 0usize;
    let mut lesions = Vec::with_capacity(candidates.len());
    for c in candidates {
        if !kept(&c) {
            ref_left_out += 1;
            for &p in &c.near {
                near_left_out[p as usize] = true;
            }
            continue;
        }
        for &p in &c.matched {
            used[p as usize] = true;
        }
        let total = (c.voxels
            + c.matched
                .iter()
                .map(|&p| pred.voxels()[p as usize])
                .sum::<u64>()) as f64;
        lesions.push(ReferenceLesion {
            voxels: c.voxels,
            volume_ml: c.voxels as f64 * voxel_ml,
            matched: c.matched,
            dice: 2.0 * c.shared as f64 / total,
            iou: c.shared as f64 / (total - c.shared as f64),
        });
    }
    // Saturating: a grid holds fewer than 2³² lesions.
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let pred_left_out = count(
        (0..pred.count())
            .filter(|&p| near_left_out[p] && !used[p])
            .count(),
    );
    let ref_instances = count(lesions.len());
    let pred_instances = count(pred.count()).saturating_sub(pred_left_out);
    let tp = count(lesions.iter().filter(|l| !l.matched.is_empty()).count());
    let fp = count(
        (0..pred.count())
            .filter(|&p| !used[p] && !near_left_out[p])
            .count(),
    );
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
        ref_left_out: count(ref_left_out),
        pred_left_out,
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

/// BraTS 2023 matching: the reference dilated `dilation` times; each dilated
/// component is one lesion, made of the reference components inside it and
/// matched to every predicted component that meets it.
fn match_dilated(
    pred: &Components,
    reference: &Components,
    shape: [usize; 3],
    dilation: u32,
    connectivity: Connectivity,
) -> Vec<Candidate> {
    let dilated = reference.dilated(shape, dilation, connectivity);
    let mut candidates: Vec<Candidate> = (0..dilated.count())
        .map(|_| Candidate {
            voxels: 0,
            matched: Vec::new(),
            shared: 0,
            near: Vec::new(),
        })
        .collect();
    // Each reference component lies in one dilated component, its lesion.
    let mut lesion_of = vec![0u32; reference.count()];
    for (lesion, component, voxels) in dilated.overlaps(reference) {
        lesion_of[component as usize] = lesion;
        candidates[lesion as usize].voxels += voxels;
    }
    // Sorted by lesion, then predicted component.
    for (lesion, p, _) in dilated.overlaps(pred) {
        candidates[lesion as usize].matched.push(p);
    }
    // A predicted component sharing reference voxels meets the dilated region
    // too, so it is among the lesion's matches.
    for (component, _, shared) in reference.overlaps(pred) {
        candidates[lesion_of[component as usize] as usize].shared += shared;
    }
    for c in &mut candidates {
        c.near.clone_from(&c.matched);
    }
    candidates
}

/// One-to-one matches by IoU ≥ `threshold`, greedy by descending IoU: the
/// predicted component matched to each reference component, if any.
fn match_by_iou(pred: &Components, reference: &Components, threshold: f64) -> Vec<Candidate> {
    let overlaps = reference.overlaps(pred);
    let mut candidates: Vec<(f64, u32, u32, u64)> = overlaps
        .iter()
        .map(|&(r, p, shared)| {
            let union = reference.voxels()[r as usize] + pred.voxels()[p as usize] - shared;
            (shared as f64 / union as f64, r, p, shared)
        })
        .filter(|&(iou, _, _, _)| iou >= threshold)
        .collect();
    // Descending IoU; equal IoUs (equal ratios divide to the same float) by index.
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    let mut lesions: Vec<Candidate> = reference
        .voxels()
        .iter()
        .map(|&voxels| Candidate {
            voxels,
            matched: Vec::new(),
            shared: 0,
            near: Vec::new(),
        })
        .collect();
    for &(r, p, _) in &overlaps {
        lesions[r as usize].near.push(p);
    }
    let mut taken = vec![false; pred.count()];
    for (_, r, p, shared) in candidates {
        let lesion = &mut lesions[r as usize];
        if lesion.matched.is_empty() && !taken[p as usize] {
            lesion.matched.push(p);
            lesion.shared = shared;
            taken[p as usize] = true;
        }
    }
    lesions
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
                ..LesionSettings::default()
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

    /// Label 1 on the voxels of `boxes` (x, y, z ranges) in a grid of 1 mm voxels.
    fn boxes(shape: [usize; 3], boxes: &[[std::ops::Range<usize>; 3]]) -> LabelVolume {
        let grid = Grid::axis_aligned(shape, [1.0; 3], 3);
        let mut labels = vec![0u8; grid.len()];
        for [x, y, z] in boxes {
            for k in z.clone() {
                for j in y.clone() {
                    for i in x.clone() {
                        labels[i + shape[0] * (j + shape[1] * k)] = 1;
                    }
                }
            }
        }
        LabelVolume::new(grid, Labels::U8(labels)).unwrap()
    }

    /// BraTS 2023 settings: 26-connectivity, `dilation`, `min_reference_mm3`.
    fn brats(dilation: u32, min_reference_mm3: f64) -> LesionSettings {
        LesionSettings {
            connectivity: Connectivity::Corner,
            matching: Matching::Brats2023 { dilation },
            min_reference_mm3,
        }
    }

    #[test]
    fn reference_lesions_two_voxels_apart_merge_after_one_dilation() {
        // Along x at y = z = 1: reference A at x 1..3 and B at x 5..7, 2 voxels
        // apart; the prediction is A. Dilated once, A covers x 0..4 and B x 4..8:
        // they touch, so one lesion of 4 voxels, detected: Dice 2·2 / (4 + 2) = 2/3,
        // IoU 2/4, no FN. SQ 1/2, RQ 1, PQ 1/2.
        let reference = boxes([12, 3, 3], &[[1..3, 1..2, 1..2], [5..7, 1..2, 1..2]]);
        let pred = boxes([12, 3, 3], &[[1..3, 1..2, 1..2]]);
        let m = lesion_metrics(&pred, &reference, 1, &brats(1, 0.0)).unwrap();
        assert_eq!((m.ref_instances, m.tp, m.fp, m.fn_), (1, 1, 0, 0));
        assert_eq!(m.lesions[0].voxels, 4);
        assert_ratios(&m, [1.0, 1.0, 1.0, 2.0 / 3.0, 0.5, 1.0, 0.5]);
        // Undilated (any overlap, or a dilation of 0): two lesions, B missed;
        // lesion-wise Dice (1 + 0) / 2.
        for matching in [Matching::AnyOverlap, Matching::Brats2023 { dilation: 0 }] {
            let m = score(&pred, &reference, Connectivity::Corner, matching);
            assert_eq!((m.ref_instances, m.tp, m.fp, m.fn_), (2, 1, 0, 1));
            assert_close(m.lesion_dice, 0.5);
        }
        // 3 voxels apart, one dilation leaves a gap: two lesions again.
        let apart = boxes([12, 3, 3], &[[1..3, 1..2, 1..2], [6..8, 1..2, 1..2]]);
        let m = lesion_metrics(&pred, &apart, 1, &brats(1, 0.0)).unwrap();
        assert_eq!((m.ref_instances, m.tp, m.fn_), (2, 1, 1));
    }

    #[test]
    fn a_prediction_meeting_only_the_dilated_zone_is_a_detection_with_dice_on_the_lesion() {
        // Reference: the 2×2×2 cube at [2, 4)³ of a 10³ grid. Prediction: the
        // 1×2×2 slab at x = 4, face to face with it, sharing no voxel.
        let reference = boxes([10; 3], &[[2..4, 2..4, 2..4]]);
        let slab = boxes([10; 3], &[[4..5, 2..4, 2..4]]);
        // Dilated once the lesion takes in the slab: detected, Dice 0 (no shared
        // voxel of the lesion itself); lesion-wise Dice 0 / 1, SQ 0, RQ 1.
        let m = lesion_metrics(&slab, &reference, 1, &brats(1, 0.0)).unwrap();
        assert_eq!((m.tp, m.fp, m.fn_), (1, 0, 0));
        assert_eq!(m.lesions[0].matched, [0]);
        assert_ratios(&m, [1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
        // Undilated it is a miss and a false positive.
        let m = score(
            &slab,
            &reference,
            Connectivity::Corner,
            Matching::AnyOverlap,
        );
        assert_eq!((m.tp, m.fp, m.fn_), (0, 1, 1));
        // Half in the lesion, half in the dilated zone (x 3..5): Dice against the
        // 8 reference voxels, not the dilated region: 2·4 / (8 + 8) = 1/2, IoU 4/12.
        let half = boxes([10; 3], &[[3..5, 2..4, 2..4]]);
        let m = lesion_metrics(&half, &reference, 1, &brats(1, 0.0)).unwrap();
        assert_close(m.lesions[0].dice, 0.5);
        assert_close(m.lesions[0].iou, 1.0 / 3.0);
        // A voxel touching the cube's corner (4, 4, 4) is outside one dilation by
        // the 18-neighbourhood (no corner neighbours): a false positive; two
        // dilations reach it.
        let corner = boxes([10; 3], &[[4..5, 4..5, 4..5]]);
        let m = lesion_metrics(&corner, &reference, 1, &brats(1, 0.0)).unwrap();
        assert_eq!((m.tp, m.fp, m.fn_), (0, 1, 1));
        let m = lesion_metrics(&corner, &reference, 1, &brats(2, 0.0)).unwrap();
        assert_eq!((m.tp, m.fp, m.fn_), (1, 0, 0));
    }

    #[test]
    fn reference_lesions_at_most_the_least_volume_are_left_out_and_false_positives_are_not() {
        // Reference: a 3³ cube (27 mm³) and a 2-voxel lesion far from it.
        // Prediction: the cube, the 2 voxels, and a stray voxel meeting nothing.
        let reference = boxes([16, 8, 8], &[[1..4, 1..4, 1..4], [10..12, 5..6, 5..6]]);
        let pred = boxes(
            [16, 8, 8],
            &[
                [1..4, 1..4, 1..4],
                [10..12, 5..6, 5..6],
                [14..15, 1..2, 6..7],
            ],
        );
        // Threshold 2 mm³ (BraTS-MET): the 2-voxel lesion is left out, with the
        // prediction on it; the stray voxel stays a false positive. TP 1, FP 1:
        // lesion-wise Dice 1 / 2, precision 1/2, F1 2/3, SQ 1, RQ 2/3.
        for matching in [Matching::Brats2023 { dilation: 1 }, Matching::default()] {
            let settings = LesionSettings {
                matching,
                min_reference_mm3: 2.0,
                ..LesionSettings::default()
            };
            let m = lesion_metrics(&pred, &reference, 1, &settings).unwrap();
            assert_eq!(
                (
                    m.ref_instances,
                    m.ref_left_out,
                    m.pred_instances,
                    m.pred_left_out
                ),
                (1, 1, 2, 1)
            );
            assert_eq!((m.tp, m.fp, m.fn_), (1, 1, 0));
            assert_eq!(m.lesions.len(), 1);
            assert_ratios(&m, [1.0, 0.5, 2.0 / 3.0, 0.5, 1.0, 2.0 / 3.0, 2.0 / 3.0]);
        }
        // Just below 2 mm³ it counts: (1 + 1 + FP 0) / 3.
        let m = lesion_metrics(&pred, &reference, 1, &brats(1, 1.99)).unwrap();
        assert_eq!((m.ref_instances, m.ref_left_out, m.tp, m.fp), (2, 0, 2, 1));
        assert_close(m.lesion_dice, 2.0 / 3.0);
        // Every reference lesion left out and no false positive: both sides empty, 1.
        let only_tiny = boxes([16, 8, 8], &[[10..12, 5..6, 5..6]]);
        let m = lesion_metrics(&only_tiny, &only_tiny, 1, &brats(1, 2.0)).unwrap();
        assert_eq!(
            (m.empty, m.ref_left_out, m.pred_left_out),
            (Empty::Both, 1, 1)
        );
        assert_ratios(&m, [1.0; 7]);
    }

    #[test]
    fn brats_2023_presets_and_json_settings() {
        let gli = LesionSettings::brats2023("BraTS-GLI").unwrap();
        assert_eq!(gli, brats(3, 50.0));
        assert_eq!(LesionSettings::brats2023("met"), Some(brats(1, 2.0)));
        assert_eq!(LesionSettings::brats2023("MEN"), Some(brats(1, 50.0)));
        assert_eq!(LesionSettings::brats2023("GoAT"), None);
        let parsed: LesionSettings = serde_json::from_str(
            r#"{"matching": {"kind": "brats2023", "dilation": 3}, "min_reference_mm3": 50}"#,
        )
        .unwrap();
        assert_eq!(parsed, gli);
        let iou: LesionSettings =
            serde_json::from_str(r#"{"matching": {"kind": "iou", "threshold": 0.3}}"#).unwrap();
        assert_eq!(iou.matching, Matching::Iou { threshold: 0.3 });
        assert_eq!(iou.min_reference_mm3, 0.0);
        assert!(serde_json::from_str::<LesionSettings>(r#"{"dilation": 3}"#).is_err());
    }

    proptest! {
        #[test]
        fn counts_are_consistent(
            pred in proptest::collection::vec(proptest::bool::weighted(0.3), 6 * 5 * 4),
            reference in proptest::collection::vec(proptest::bool::weighted(0.3), 6 * 5 * 4),
            threshold in 0.0f64..1.0,
            kind in 0u8..3,
            dilation in 0u32..3,
            min_reference_mm3 in prop_oneof![Just(0.0), Just(2.0), Just(5.0)],
        ) {
            let grid = Grid::axis_aligned([6, 5, 4], [1.0; 3], 3);
            let volume = |on: Vec<bool>| LabelVolume::new(grid.clone(), Labels::U8(on.into_iter().map(u8::from).collect())).unwrap();
            let matching = match kind {
                0 => Matching::Iou { threshold },
                1 => Matching::AnyOverlap,
                _ => Matching::Brats2023 { dilation },
            };
            let settings = LesionSettings { connectivity: Connectivity::Face, matching, min_reference_mm3 };
            let (pred, reference) = (volume(pred), volume(reference));
            let m = lesion_metrics(&pred, &reference, 1, &settings).unwrap();
            let components = |v: &LabelVolume| Components::of_label(&v.labels, 1, grid.shape, Connectivity::Face).count() as u32;
            prop_assert_eq!(m.tp + m.fn_, m.ref_instances);
            prop_assert_eq!(m.ref_instances as usize, m.lesions.len());
            prop_assert_eq!(m.pred_instances + m.pred_left_out, components(&pred));
            // Dilation only merges reference lesions.
            prop_assert!(m.ref_instances + m.ref_left_out <= components(&reference));
            if kind == 0 {
                prop_assert_eq!(m.tp + m.fp, m.pred_instances);
            } else {
                prop_assert!(m.fp <= m.pred_instances);
            }
            for l in &m.lesions {
                prop_assert!(l.voxels as f64 > min_reference_mm3);
            }
            for r in ratios(&m) {
                prop_assert!(r.is_nan() || (0.0..=1.0).contains(&r), "{:?}", ratios(&m));
            }
        }
    }
}
