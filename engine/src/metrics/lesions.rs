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
            lesions.iter().map(|l| l.dice).sum::<f64>() / (tp_ + fn_f + fp_),
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
