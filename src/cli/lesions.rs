//! `eval`'s lesion-wise scoring: which structures, and with what settings.

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;

use crate::metrics::lesions::{
    Connectivity, LesionMetrics, LesionSettings, Matching, lesion_metrics,
};
use crate::schema::Schema;
use crate::volume::Segmentation;

/// Options of lesion-wise (instance) scoring.
#[derive(Debug, Clone, Args)]
pub struct LesionArgs {
    /// Labels also scored lesion by lesion (connected components), besides the
    /// structures the schema marks `"instances": true`.
    #[arg(long, value_delimiter = ',')]
    lesions: Vec<u16>,
    /// Voxels that touch form one lesion: 6, 18 or 26 neighbours (4, 8, 8 in 2D).
    #[arg(long, default_value = "26")]
    connectivity: Connectivity,
    /// Least IoU that matches a predicted lesion to a reference lesion.
    #[arg(long, default_value_t = 0.5, value_parser = unit_interval)]
    lesion_iou: f64,
    /// BraTS 2023 matching instead of IoU: any overlap detects a reference lesion.
    #[arg(long)]
    brats_matching: bool,
}

fn unit_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s} is not an IoU (a number from 0 to 1)")),
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

/// The structures to score lesion by lesion, with their names, and how.
#[derive(Debug, Default)]
pub struct LesionRequest {
    labels: Vec<(u16, Option<String>)>,
    settings: LesionSettings,
}

impl LesionRequest {
    /// From the options and the schema's multi-instance structures.
    pub fn new(args: &LesionArgs, schema: Option<&Schema>) -> LesionRequest {
        let mut labels: Vec<(u16, Option<String>)> = schema
            .into_iter()
            .flat_map(|s| &s.structures)
            .filter(|s| s.instances)
            .filter_map(|s| Some((s.label?, Some(s.name.clone()))))
            .collect();
        for &label in &args.lesions {
            if !labels.iter().any(|(l, _)| *l == label) {
                labels.push((label, None));
            }
        }
        let matching = if args.brats_matching {
            Matching::AnyOverlap
        } else {
            Matching::Iou {
                threshold: args.lesion_iou,
            }
        };
        LesionRequest {
            labels,
            settings: LesionSettings {
                connectivity: args.connectivity,
                matching,
                ..LesionSettings::default()
            },
        }
    }

    /// Scores the requested structures of two label maps lesion by lesion.
    pub fn score(
        &self,
        pred: &Segmentation,
        reference: &Segmentation,
    ) -> anyhow::Result<Vec<StructureLesions>> {
        if self.labels.is_empty() {
            return Ok(Vec::new());
        }
        let (Segmentation::LabelMap(pred), Segmentation::LabelMap(reference)) = (pred, reference)
        else {
            bail!("lesion-wise metrics need label maps (NIfTI) on both sides");
        };
        self.labels
            .iter()
            .map(|(label, name)| {
                let metrics = lesion_metrics(pred, reference, *label, &self.settings)
                    .context("lesion-wise metrics need both files on one grid")?;
                Ok(StructureLesions {
                    label: *label,
                    name: name.clone(),
                    metrics,
                })
            })
            .collect()
    }
}
