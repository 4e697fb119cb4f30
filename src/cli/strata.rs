//! Folder mode's size strata: Dice, and lesion detection where lesions were
//! scored, by band of reference volume (`metrics::strata`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::eval::CaseOutcome;
use crate::metrics::strata::{
    LESION_BANDS_ML, STRUCTURE_BANDS_ML, band, band_name, lesions_by_band,
};
use crate::metrics::{Empty, structure_name};
use crate::schema::Schema;

/// One structure's results within one band of reference volume.
#[derive(Debug, Serialize)]
pub struct Stratum {
    pub structure: String,
    pub band: String,
    /// Cases whose reference volume of the structure is in the band (cases
    /// with an empty reference are in no band).
    pub cases: usize,
    pub dice_mean: Option<f64>,
    /// Reference lesions of a size in the band (lesion-wise structures only).
    pub lesions: Option<usize>,
    pub lesions_detected: Option<usize>,
    pub lesion_sensitivity: Option<f64>,
}

/// Sums of one (structure, band).
#[derive(Default)]
struct Tally {
    cases: usize,
    dice_sum: f64,
    lesions: usize,
    detected: usize,
}

/// One structure's band edges, whether it was scored lesion by lesion, and
/// its sums by band.
struct Structure<'a> {
    edges: &'a [f64],
    lesion_wise: bool,
    bands: BTreeMap<usize, Tally>,
}

/// A structure's entry, made with its edges the first time.
fn entry<'m, 'e>(
    structures: &'m mut BTreeMap<String, Structure<'e>>,
    name: String,
    edges: &'e [f64],
) -> &'m mut Structure<'e> {
    structures.entry(name).or_insert_with(|| Structure {
        edges,
        lesion_wise: false,
        bands: BTreeMap::new(),
    })
}

/// The strata of a folder run, by structure then band; bands without a case
/// or lesion are left out.
pub fn strata(outcomes: &[CaseOutcome], schema: Option<&Schema>) -> Vec<Stratum> {
    let mut structures: BTreeMap<String, Structure> = BTreeMap::new();
    let edges_of = |label: Option<u16>, code: Option<&str>, lesions: bool| -> &[f64] {
        let def = label
            .and_then(|l| schema?.by_label(l))
            .or_else(|| schema?.by_code(code?));
        match def {
            Some(def) => def.volume_bands(),
            None if lesions => &LESION_BANDS_ML,
            None => &STRUCTURE_BANDS_ML,
        }
    };
    for report in outcomes.iter().filter_map(|o| o.report.as_ref()) {
        for s in &report.structures {
            if matches!(s.empty, Empty::Both | Empty::Ref) {
                continue;
            }
            let lesions = report.lesions.iter().any(|l| Some(l.label) == s.label);
            let edges = edges_of(s.label, s.code.as_deref(), lesions);
            let structure = entry(&mut structures, s.display_name(), edges);
            let tally = structure
                .bands
                .entry(band(s.ref_volume_ml, edges))
                .or_default();
            tally.cases += 1;
            tally.dice_sum += s.dice;
        }
        for l in &report.lesions {
            let edges = edges_of(Some(l.label), None, true);
            let name = structure_name(l.name.as_deref(), None, Some(l.label));
            let structure = entry(&mut structures, name, edges);
            structure.lesion_wise = true;
            let counts = lesions_by_band(&l.metrics.lesions, edges);
            for (b, (lesions, detected)) in counts.into_iter().enumerate() {
                if lesions > 0 {
                    let tally = structure.bands.entry(b).or_default();
                    tally.lesions += lesions as usize;
                    tally.detected += detected as usize;
                }
            }
        }
    }
    structures
        .into_iter()
        .flat_map(|(name, s)| {
            let (edges, lesions) = (s.edges, s.lesion_wise);
            s.bands.into_iter().map(move |(b, t)| Stratum {
                structure: name.clone(),
                band: band_name(b, edges),
                cases: t.cases,
                dice_mean: (t.cases > 0).then(|| t.dice_sum / t.cases as f64),
                lesions: lesions.then_some(t.lesions),
                lesions_detected: lesions.then_some(t.detected),
                lesion_sensitivity: (t.lesions > 0).then(|| t.detected as f64 / t.lesions as f64),
            })
        })
        .collect()
}
