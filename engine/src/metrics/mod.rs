//! The metric engine: overlap counts, surface distances and the conventions for
//! empty structures, as `docs/metrics.md` specifies.

pub mod case;
pub mod distance;
pub mod edt;
pub mod lesions;
pub mod overlap;
pub mod pairing;
pub mod probabilistic;
pub mod strata;
pub mod surface;
pub mod surfel_area;

use rayon::prelude::*;
use serde::{Deserialize, Serialize, Serializer};

use crate::volume::{Grid, LabelVolume};
use distance::SurfaceMetrics;
use overlap::LabelOverlap;
use surface::Surface;

/// Which surface definition the distance metrics use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SurfaceMode {
    /// Face-connected border voxels, equally weighted (MONAI, Metrics Reloaded).
    #[default]
    Voxel,
    /// Area-weighted surface elements on the corner lattice (DeepMind surface-distance).
    Surfel,
}

impl SurfaceMode {
    /// Every mode's name, as in configuration, JSON and the command line.
    pub const NAMES: [&'static str; 2] = ["voxel", "surfel"];

    /// The mode's name.
    pub fn as_str(self) -> &'static str {
        match self {
            SurfaceMode::Voxel => "voxel",
            SurfaceMode::Surfel => "surfel",
        }
    }
}

impl std::str::FromStr for SurfaceMode {
    type Err = String;

    fn from_str(name: &str) -> Result<SurfaceMode, String> {
        match name {
            "voxel" => Ok(SurfaceMode::Voxel),
            "surfel" => Ok(SurfaceMode::Surfel),
            other => Err(format!("unknown surface mode {other:?}: voxel or surfel")),
        }
    }
}

/// Which side of a structure is empty, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Empty {
    /// Both sides have voxels: every metric is measured.
    None,
    /// Neither side has a voxel: perfect agreement by convention.
    Both,
    /// Only the prediction is empty (a missed structure).
    Pred,
    /// Only the reference is empty (a spurious structure).
    Ref,
}

impl Empty {
    /// The name it is serialised and stored under.
    pub fn as_str(self) -> &'static str {
        match self {
            Empty::None => "none",
            Empty::Both => "both",
            Empty::Pred => "pred",
            Empty::Ref => "ref",
        }
    }
}

/// Every metric of one structure. Infinite or undefined values serialize as null.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StructureMetrics {
    /// Label value in a label map; None for coded segments.
    pub label: Option<u16>,
    /// `SCHEME:VALUE` of a coded segment; None for label maps.
    pub code: Option<String>,
    /// Human-readable structure name, when known.
    pub name: Option<String>,
    /// Which side, if any, has no voxel of the structure; sets the conventions below.
    pub empty: Empty,
    /// Voxels of the structure in the prediction.
    pub pred_voxels: u64,
    /// Voxels of the structure in the reference.
    pub ref_voxels: u64,
    /// True positives: voxels in both.
    pub tp: u64,
    /// False positives: voxels in the prediction only (`pred_voxels - tp`).
    pub fp: u64,
    /// False negatives: voxels in the reference only (`ref_voxels - tp`); `fn` in JSON.
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// Prediction volume in mL: `pred_voxels` × [`Grid::voxel_volume_ml`].
    pub pred_volume_ml: f64,
    /// Reference volume in mL: `ref_voxels` × [`Grid::voxel_volume_ml`].
    pub ref_volume_ml: f64,
    /// Volume error, prediction minus reference, in mL ([`volume_errors`]).
    pub volume_error_ml: f64,
    /// Volume error relative to the reference volume; NaN (null) when the reference is empty.
    #[serde(serialize_with = "finite_or_null")]
    pub relative_volume_error: f64,
    /// Dice, 2·tp / (2·tp + fp + fn), in [0, 1]; 1 when both sides are empty, 0 when one is.
    #[serde(serialize_with = "finite_or_null")]
    pub dice: f64,
    /// Jaccard index (IoU), tp / (tp + fp + fn); 1 when both sides are empty, 0 when one is.
    #[serde(serialize_with = "finite_or_null")]
    pub iou: f64,
    /// tp / `pred_voxels`; 1 when both sides are empty, NaN when only the prediction is.
    #[serde(serialize_with = "finite_or_null")]
    pub precision: f64,
    /// Sensitivity, tp / `ref_voxels`; 1 when both sides are empty, NaN when only the reference is.
    #[serde(serialize_with = "finite_or_null")]
    pub recall: f64,
    /// Hausdorff distance between the two surfaces in mm; 0 when both are empty, ∞ when one is.
    #[serde(serialize_with = "finite_or_null")]
    pub hd_mm: f64,
    /// 95th-percentile Hausdorff distance in mm (the larger directed percentile); 0 or ∞ as `hd_mm`.
    #[serde(serialize_with = "finite_or_null")]
    pub hd95_mm: f64,
    /// Average symmetric surface distance in mm, over both surfaces pooled; 0 or ∞ as `hd_mm`.
    #[serde(serialize_with = "finite_or_null")]
    pub assd_mm: f64,
    /// Mean of the two directed mean surface distances, in mm; 0 or ∞ as `hd_mm`.
    #[serde(serialize_with = "finite_or_null")]
    pub masd_mm: f64,
    /// Normalized surface Dice: share of both surfaces within the tolerance of the
    /// other, in [0, 1]; 1 when both sides are empty, 0 when one is.
    #[serde(serialize_with = "finite_or_null")]
    pub nsd: f64,
}

/// The one naming rule for a structure in results, tables, metrics and
/// dashboards: the schema's name, else the segment code (`SCHEME:VALUE`), else
/// `label_N`.
pub fn structure_name(name: Option<&str>, code: Option<&str>, label: Option<u16>) -> String {
    match (name, code, label) {
        (Some(name), _, _) => name.to_owned(),
        (None, Some(code), _) => code.to_owned(),
        (None, None, Some(label)) => format!("label_{label}"),
        (None, None, None) => "unnamed".to_owned(),
    }
}

impl StructureMetrics {
    /// The structure's name by [`structure_name`].
    pub fn display_name(&self) -> String {
        structure_name(self.name.as_deref(), self.code.as_deref(), self.label)
    }
}

/// Volume error (prediction − reference, mL) and that error relative to the
/// reference volume (NaN when the reference is empty).
pub fn volume_errors(pred_volume_ml: f64, ref_volume_ml: f64) -> (f64, f64) {
    let error = pred_volume_ml - ref_volume_ml;
    let relative = if ref_volume_ml > 0.0 {
        error / ref_volume_ml
    } else {
        f64::NAN
    };
    (error, relative)
}

/// JSON has no infinity or NaN: those become null.
fn finite_or_null<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if value.is_finite() {
        serializer.serialize_f64(*value)
    } else {
        serializer.serialize_none()
    }
}

/// Overlap counts of one structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Voxels of the structure in the prediction.
    pub pred_voxels: u64,
    /// Voxels of the structure in the reference.
    pub ref_voxels: u64,
    /// Voxels in both; at most the smaller of the two counts.
    pub tp: u64,
}

impl From<LabelOverlap> for Counts {
    fn from(o: LabelOverlap) -> Self {
        Counts {
            pred_voxels: o.pred_voxels,
            ref_voxels: o.ref_voxels,
            tp: o.tp,
        }
    }
}

impl Counts {
    /// Which side, if any, has no voxel of the structure.
    pub fn empty(self) -> Empty {
        match (self.pred_voxels == 0, self.ref_voxels == 0) {
            (true, true) => Empty::Both,
            (true, false) => Empty::Pred,
            (false, true) => Empty::Ref,
            (false, false) => Empty::None,
        }
    }
}

/// The overlap ratios of one structure, as [`StructureMetrics`] has them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overlap {
    /// As [`StructureMetrics::dice`].
    pub dice: f64,
    /// As [`StructureMetrics::iou`].
    pub iou: f64,
    /// As [`StructureMetrics::precision`].
    pub precision: f64,
    /// As [`StructureMetrics::recall`].
    pub recall: f64,
}

/// Dice, IoU, precision and recall from the counts, with the empty-side
/// conventions of [`StructureMetrics`]: the one computation, so that a store
/// can keep the counts and derive the rest bit for bit.
pub fn overlap(counts: Counts) -> Overlap {
    let Counts {
        pred_voxels,
        ref_voxels,
        tp,
    } = counts;
    let ratio = |num: u64, den: u64| {
        if den == 0 {
            f64::NAN
        } else {
            num as f64 / den as f64
        }
    };
    let (dice, iou) = match counts.empty() {
        Empty::Both => (1.0, 1.0),
        Empty::Pred | Empty::Ref => (0.0, 0.0),
        // 2·tp + fp + fn and tp + fp + fn, in whole numbers.
        Empty::None => (
            ratio(2 * tp, pred_voxels + ref_voxels),
            ratio(tp, pred_voxels + ref_voxels - tp),
        ),
    };
    let (precision, recall) = match counts.empty() {
        Empty::Both => (1.0, 1.0),
        _ => (ratio(tp, pred_voxels), ratio(tp, ref_voxels)),
    };
    Overlap {
        dice,
        iou,
        precision,
        recall,
    }
}

/// What to compute for one structure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Surface definition for HD, HD95, ASSD, MASD and NSD.
    pub surface: SurfaceMode,
    /// NSD tolerance in mm.
    pub tolerance_mm: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            surface: SurfaceMode::Voxel,
            tolerance_mm: crate::schema::DEFAULT_TOLERANCE_MM,
        }
    }
}

/// Scores one structure from its counts and surfaces, applying the empty conventions.
pub fn score_structure(
    counts: Counts,
    pred: &Surface,
    reference: &Surface,
    grid: &Grid,
    settings: &Settings,
) -> StructureMetrics {
    let Counts {
        pred_voxels,
        ref_voxels,
        tp,
    } = counts;
    let (fp, fn_) = (pred_voxels - tp, ref_voxels - tp);
    let empty = counts.empty();
    let Overlap {
        dice,
        iou,
        precision,
        recall,
    } = overlap(counts);
    let surface = match empty {
        Empty::Both => SurfaceMetrics::BOTH_EMPTY,
        Empty::Pred | Empty::Ref => SurfaceMetrics::ONE_EMPTY,
        Empty::None => {
            distance::surface_metrics(pred, reference, grid.spacing, settings.tolerance_mm)
        }
    };
    let voxel_ml = grid.voxel_volume_ml();
    let (pred_volume_ml, ref_volume_ml) =
        (pred_voxels as f64 * voxel_ml, ref_voxels as f64 * voxel_ml);
    let (volume_error_ml, relative_volume_error) = volume_errors(pred_volume_ml, ref_volume_ml);
    StructureMetrics {
        label: None,
        code: None,
        name: None,
        empty,
        pred_voxels,
        ref_voxels,
        tp,
        fp,
        fn_,
        pred_volume_ml,
        ref_volume_ml,
        volume_error_ml,
        relative_volume_error,
        dice,
        iou,
        precision,
        recall,
        hd_mm: surface.hd_mm,
        hd95_mm: surface.hd95_mm,
        assd_mm: surface.assd_mm,
        masd_mm: surface.masd_mm,
        nsd: surface.nsd,
    }
}

/// Mean Dice over structures that are not empty on both sides; None if there are none.
pub fn mean_dice(structures: &[StructureMetrics]) -> Option<f64> {
    let scored: Vec<f64> = structures
        .iter()
        .filter(|s| s.empty != Empty::Both)
        .map(|s| s.dice)
        .collect();
    (!scored.is_empty()).then(|| scored.iter().sum::<f64>() / scored.len() as f64)
}

/// Generalized Dice score of a case over its structures (Sudre et al. 2017,
/// as MONAI 1.6's `GeneralizedDiceScore` with square weights): each structure
/// weighs 1 / (reference voxels)², a structure absent from the reference the
/// largest weight among the others (1 if none has one), and the score is
/// 2 Σ w·tp / Σ w·(pred + ref); 1 when every structure is empty on both
/// sides. None for a case without structures.
pub fn generalized_dice(structures: &[StructureMetrics]) -> Option<f64> {
    if structures.is_empty() {
        return None;
    }
    let weight = |s: &StructureMetrics| (s.ref_voxels > 0).then(|| (s.ref_voxels as f64).powi(-2));
    let absent = structures
        .iter()
        .filter_map(weight)
        .reduce(f64::max)
        .unwrap_or(1.0);
    let (numerator, denominator) = structures.iter().fold((0.0, 0.0), |(n, d), s| {
        let w = weight(s).unwrap_or(absent);
        (
            n + 2.0 * w * s.tp as f64,
            d + w * (s.pred_voxels + s.ref_voxels) as f64,
        )
    });
    Some(if denominator > 0.0 {
        numerator / denominator
    } else {
        1.0
    })
}

/// Scores labels of two label maps on the same grid from their overlap; each
/// label comes with its NSD tolerance. Structures are computed in parallel.
pub fn score_labels(
    pred: &LabelVolume,
    reference: &LabelVolume,
    overlap: &overlap::Overlap,
    specs: &[(u16, f64)],
    mode: SurfaceMode,
) -> Vec<StructureMetrics> {
    let grid = &pred.grid;
    // Surfaces are needed only where both sides have the structure.
    let measured: Vec<u16> = specs
        .iter()
        .map(|s| s.0)
        .filter(|&l| overlap.get(l).pred_voxels > 0 && overlap.get(l).ref_voxels > 0)
        .collect();
    let surfaces =
        |volume: &LabelVolume| surface::label_surfaces(&volume.labels, grid, mode, &measured);
    let (pred_surfaces, ref_surfaces) = rayon::join(|| surfaces(pred), || surfaces(reference));
    let none = Surface::default();
    specs
        .par_iter()
        .map(|&(label, tolerance_mm)| {
            let (p, r) = match measured.iter().position(|&m| m == label) {
                Some(i) => (&pred_surfaces[i], &ref_surfaces[i]),
                None => (&none, &none),
            };
            let settings = Settings {
                surface: mode,
                tolerance_mm,
            };
            StructureMetrics {
                label: Some(label),
                ..score_structure(overlap.get(label).into(), p, r, grid, &settings)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{
        Counts, Settings, StructureMetrics, generalized_dice, score_structure, structure_name,
    };
    use crate::metrics::surface::Surface;
    use crate::volume::Grid;

    /// A structure's metrics from its voxel counts (no surfaces needed here).
    fn counted(pred_voxels: u64, ref_voxels: u64, tp: u64) -> StructureMetrics {
        let none = Surface::default();
        let grid = Grid::axis_aligned([8, 8, 8], [1.0; 3], 3);
        let counts = Counts {
            pred_voxels,
            ref_voxels,
            tp,
        };
        score_structure(counts, &none, &none, &grid, &Settings::default())
    }

    #[test]
    fn generalized_dice_weighs_structures_by_inverse_squared_reference_volume() {
        // By hand: weights 1/100² and 1/10²; the third structure is absent from
        // the reference and takes the largest weight, 1/10².
        // 2·(70/100² + 8/10² + 0) / (180/100² + 22/10² + 5/10²) = 0.174 / 0.288.
        let case = [counted(80, 100, 70), counted(12, 10, 8), counted(5, 0, 0)];
        let score = generalized_dice(&case).unwrap();
        assert!((score - 0.174 / 0.288).abs() < 1e-12, "{score}");
        // A structure empty on both sides adds nothing.
        let with_both_empty = [case.as_slice(), &[counted(0, 0, 0)]].concat();
        assert_eq!(generalized_dice(&with_both_empty), Some(score));
    }

    #[test]
    fn generalized_dice_of_a_case_without_reference_voxels() {
        // No reference voxels: 1 when the prediction is empty too, else 0.
        assert_eq!(generalized_dice(&[counted(0, 0, 0)]), Some(1.0));
        assert_eq!(
            generalized_dice(&[counted(0, 0, 0), counted(3, 0, 0)]),
            Some(0.0)
        );
        assert_eq!(generalized_dice(&[]), None);
    }

    #[test]
    fn structures_are_named_by_name_then_code_then_label() {
        assert_eq!(
            structure_name(Some("liver"), Some("SCT:10200004"), Some(1)),
            "liver"
        );
        assert_eq!(
            structure_name(None, Some("SCT:10200004"), Some(1)),
            "SCT:10200004"
        );
        assert_eq!(structure_name(None, None, Some(3)), "label_3");
        assert_eq!(structure_name(None, None, None), "unnamed");
    }
}
