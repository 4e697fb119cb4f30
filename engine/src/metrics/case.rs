//! A scored case as it is kept: its structures under names unique within the
//! case, each with the NSD tolerance it was scored with.

use std::collections::{HashMap, HashSet};

use super::lesions::LesionMetrics;
use super::pairing::Evaluation;
use super::probabilistic::Probabilistic;
use super::strata::lesions_by_band;
use super::{StructureMetrics, SurfaceMode, mean_dice};
use crate::volume::Grid;

/// The scores of one prediction/reference pair.
#[derive(Debug, Clone)]
pub struct CaseScore {
    /// The surface definition the distances used.
    pub surface: SurfaceMode,
    /// The common grid the pair was scored on.
    pub grid: Grid,
    /// Mean Dice over the structures not empty on both sides (None: none such).
    pub mean_dice: Option<f64>,
    /// The structures, in scoring order.
    pub structures: Vec<ScoredStructure>,
    /// Lesion-wise metrics of the multi-instance structures.
    pub lesions: Vec<LesionScore>,
}

/// One multi-instance structure of a [`CaseScore`], scored lesion by lesion.
#[derive(Debug, Clone)]
pub struct LesionScore {
    /// The structure's name, as in [`ScoredStructure::name`].
    pub structure: String,
    /// Its size bands' edges in mL ([`super::strata`]).
    pub band_edges_ml: Vec<f64>,
    /// Its lesion-wise metrics.
    pub metrics: LesionMetrics,
}

impl LesionScore {
    /// Reference lesions and detected ones, by size band (index into the
    /// bands of [`Self::band_edges_ml`]; every band, empty ones included).
    pub fn by_band(&self) -> Vec<(u32, u32)> {
        lesions_by_band(&self.metrics.lesions, &self.band_edges_ml)
    }
}

/// One structure of a [`CaseScore`].
#[derive(Debug, Clone)]
pub struct ScoredStructure {
    /// Its name in results, metrics and dashboards, unique within the case.
    pub name: String,
    /// Its metrics.
    pub metrics: StructureMetrics,
    /// The NSD tolerance it was scored with, in mm.
    pub tolerance_mm: f64,
    /// Its probabilistic scores, when the prediction kept its probabilities
    /// (a FRACTIONAL PROBABILITY SEG segment); None otherwise.
    pub probabilistic: Option<Probabilistic>,
}

impl CaseScore {
    /// The score of an evaluation, naming structures by
    /// [`super::structure_name`] made unique ([`unique_names`]).
    pub fn new(
        evaluation: Evaluation,
        surface: SurfaceMode,
        tolerance_mm: impl Fn(&StructureMetrics) -> f64,
    ) -> CaseScore {
        let mean_dice = mean_dice(&evaluation.structures);
        let structures = unique_names(&evaluation.structures)
            .into_iter()
            .zip(evaluation.structures)
            .map(|(name, metrics)| ScoredStructure {
                tolerance_mm: tolerance_mm(&metrics),
                name,
                metrics,
                probabilistic: None,
            })
            .collect();
        CaseScore {
            surface,
            grid: evaluation.grid,
            mean_dice,
            structures,
            lesions: Vec::new(),
        }
    }
}

/// Names unique within a case, as results are keyed by name: structures that
/// share a name (two segments labelled alike) get their code or label added,
/// then a counter if that is shared too.
pub fn unique_names(structures: &[StructureMetrics]) -> Vec<String> {
    let shared = |names: &[String]| -> HashSet<String> {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for name in names {
            *counts.entry(name.as_str()).or_default() += 1;
        }
        counts
            .into_iter()
            .filter(|&(_, n)| n > 1)
            .map(|(name, _)| name.to_owned())
            .collect()
    };
    let mut names: Vec<String> = structures
        .iter()
        .map(StructureMetrics::display_name)
        .collect();
    let repeated = shared(&names);
    for (name, m) in names.iter_mut().zip(structures) {
        if repeated.contains(name.as_str()) {
            let detail = m
                .code
                .clone()
                .or_else(|| m.label.map(|l| format!("label_{l}")));
            if let Some(detail) = detail {
                *name = format!("{name} ({detail})");
            }
        }
    }
    let repeated = shared(&names);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for name in names.iter_mut() {
        if repeated.contains(name.as_str()) {
            let n = seen.entry(name.clone()).or_default();
            *n += 1;
            *name = format!("{name} #{n}");
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::pairing::{Request, evaluate};
    use crate::volume::{LabelVolume, Labels, Segmentation};

    /// Three scored structures (labels 1, 2, 3) to rename.
    fn three() -> Vec<StructureMetrics> {
        let grid = Grid::axis_aligned([3, 1, 1], [1.0; 3], 3);
        let volume = LabelVolume::new(grid, Labels::U8(vec![1, 2, 3])).unwrap();
        let seg = Segmentation::LabelMap(volume);
        evaluate(&seg, &seg, &Request::default())
            .unwrap()
            .structures
    }

    #[test]
    fn shared_names_get_their_code_or_label_then_a_counter() {
        let mut s = three();
        assert_eq!(unique_names(&s), ["label_1", "label_2", "label_3"]);
        for m in &mut s {
            m.name = Some("Kidney".into());
        }
        s[0].code = Some("SCT:64033007^SCT:24028007".into());
        s[1].code = Some("SCT:64033007^SCT:7771000".into());
        assert_eq!(
            unique_names(&s),
            [
                "Kidney (SCT:64033007^SCT:24028007)",
                "Kidney (SCT:64033007^SCT:7771000)",
                "Kidney (label_3)",
            ]
        );
        s[2].code = s[1].code.clone();
        let names = unique_names(&s);
        assert_eq!(names[0], "Kidney (SCT:64033007^SCT:24028007)");
        assert_eq!(names[1], "Kidney (SCT:64033007^SCT:7771000) #1");
        assert_eq!(names[2], "Kidney (SCT:64033007^SCT:7771000) #2");
    }
}
