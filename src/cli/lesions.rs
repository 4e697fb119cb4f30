//! `eval`'s lesion-wise scoring: which structures, and with what settings.

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;

use crate::metrics::lesions::{
    Connectivity, LesionMetrics, LesionSettings, Matching, lesion_metrics,
};
use crate::schema::{MAX_DILATION, Schema};
use crate::volume::Segmentation;

/// Options of lesion-wise (instance) scoring. Given, the settings options apply
/// to every structure; else a schema structure's `lesion_matching` does, else
/// the defaults (26-connectivity, IoU ≥ 0.5).
#[derive(Debug, Clone, Args)]
pub struct LesionArgs {
    /// Labels also scored lesion by lesion (connected components), besides the
    /// structures the schema marks `"instances": true`.
    #[arg(long, value_delimiter = ',')]
    lesions: Vec<u16>,
    /// Voxels that touch form one lesion: 6, 18 or 26 neighbours (4, 8, 8 in 2D) [default: 26].
    #[arg(long)]
    connectivity: Option<Connectivity>,
    /// Least IoU that matches a predicted lesion to a reference lesion [default: 0.5].
    #[arg(long, value_parser = unit_interval)]
    lesion_iou: Option<f64>,
    /// BraTS 2023 matching instead of IoU: any overlap detects a reference lesion.
    #[arg(long)]
    brats_matching: bool,
    /// BraTS 2023 matching on the reference dilated N times (18-neighbourhood).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=MAX_DILATION as i64))]
    brats_dilation: Option<u32>,
    /// Reference lesions of at most this volume (mm³) are left out.
    #[arg(long, value_name = "MM3", value_parser = volume_mm3)]
    min_lesion_mm3: Option<f64>,
    /// The BraTS 2023 settings of a challenge: GLI, SSA, PED (dilation 3, 50 mm³),
    /// MEN (1, 50 mm³) or MET (1, 2 mm³); the options above override them.
    #[arg(long, value_name = "CHALLENGE", value_parser = brats_challenge)]
    brats2023: Option<LesionSettings>,
}

fn unit_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s} is not an IoU (a number from 0 to 1)")),
    }
}

fn volume_mm3(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s} is not a volume in mm³ (a number ≥ 0)")),
    }
}

fn brats_challenge(s: &str) -> Result<LesionSettings, String> {
    LesionSettings::brats2023(s)
        .ok_or_else(|| format!("unknown challenge {s:?}: GLI, SSA, MEN, PED or MET"))
}

impl LesionArgs {
    /// The settings the options give, if any is given.
    fn settings(&self) -> Option<LesionSettings> {
        let given = self.connectivity.is_some()
            || self.lesion_iou.is_some()
            || self.brats_matching
            || self.brats_dilation.is_some()
            || self.min_lesion_mm3.is_some()
            || self.brats2023.is_some();
        if !given {
            return None;
        }
        let mut settings = self.brats2023.unwrap_or_default();
        if let Some(connectivity) = self.connectivity {
            settings.connectivity = connectivity;
        }
        if let Some(threshold) = self.lesion_iou {
            settings.matching = Matching::Iou { threshold };
        }
        if self.brats_matching {
            settings.matching = Matching::AnyOverlap;
        }
        if let Some(dilation) = self.brats_dilation {
            settings.matching = Matching::Brats2023 { dilation };
        }
        if let Some(least) = self.min_lesion_mm3 {
            settings.min_reference_mm3 = least;
        }
        Some(settings)
    }
}

/// Lesion-wise metrics of one structure of a case.
#[derive(Debug, Serialize)]
pub struct StructureLesions {
    pub label: u16,
    pub name: Option<String>,
    #[serde(flatten)]
    pub metrics: LesionMetrics,
}

/// One structure to score lesion by lesion.
#[derive(Debug)]
struct Requested {
    label: u16,
    name: Option<String>,
    settings: LesionSettings,
}

/// The structures to score lesion by lesion, with their names, and how.
#[derive(Debug, Default)]
pub struct LesionRequest {
    structures: Vec<Requested>,
}

impl LesionRequest {
    /// From the options and the schema's multi-instance structures.
    pub fn new(args: &LesionArgs, schema: Option<&Schema>) -> LesionRequest {
        let given = args.settings();
        let mut structures: Vec<Requested> = schema
            .into_iter()
            .flat_map(|s| &s.structures)
            .filter(|s| s.instances)
            .filter_map(|s| {
                Some(Requested {
                    label: s.label?,
                    name: Some(s.name.clone()),
                    settings: given.or(s.lesion_matching).unwrap_or_default(),
                })
            })
            .collect();
        for &label in &args.lesions {
            if !structures.iter().any(|s| s.label == label) {
                structures.push(Requested {
                    label,
                    name: None,
                    settings: given.unwrap_or_default(),
                });
            }
        }
        LesionRequest { structures }
    }

    /// Scores the requested structures of two label maps lesion by lesion.
    pub fn score(
        &self,
        pred: &Segmentation,
        reference: &Segmentation,
    ) -> anyhow::Result<Vec<StructureLesions>> {
        if self.structures.is_empty() {
            return Ok(Vec::new());
        }
        let (Segmentation::LabelMap(pred), Segmentation::LabelMap(reference)) = (pred, reference)
        else {
            bail!("lesion-wise metrics need label maps (NIfTI) on both sides");
        };
        self.structures
            .iter()
            .map(|s| {
                let metrics = lesion_metrics(pred, reference, s.label, &s.settings)
                    .context("lesion-wise metrics need both files on one grid")?;
                Ok(StructureLesions {
                    label: s.label,
                    name: s.name.clone(),
                    metrics,
                })
            })
            .collect()
    }
}
