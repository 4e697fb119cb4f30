//! `simulate --lesions`: small lesions in the liver as a multi-instance
//! structure (`liver_lesion`). The prediction finds each lesion, finds part of
//! it, or misses it, and now and then adds a false-positive lesion; only
//! lesion voxels and background change, so the organs keep their Dice.

use rand::RngExt;
use rand::rngs::StdRng;

use super::{SHAPE, coords, index, random_projection};
use crate::metrics::lesions::{LesionSettings, lesion_metrics};
use crate::volume::{LabelVolume, Labels};

/// The lesions' label and schema name.
pub const LABEL: u8 = 6;
pub const NAME: &str = "liver_lesion";
/// The organ the lesions lie in.
const LIVER: u8 = 1;
/// Chance that the model misses a lesion of radius below 2 voxels, and a larger one.
const MISS_SMALL: f64 = 0.3;
const MISS_LARGE: f64 = 0.08;
/// Chance of a false-positive lesion in a case.
const FALSE_POSITIVE: f64 = 0.2;

/// Voxels within `radius` (in-plane voxels; half as many slices, the slices
/// being twice as thick) of `centre`.
fn ball(centre: [usize; 3], radius: f64) -> Vec<usize> {
    let reach = [radius, radius, radius / 2.0];
    let range = |a: usize| {
        let lo = (centre[a] as f64 - reach[a]).floor().max(0.0) as usize;
        let hi = ((centre[a] as f64 + reach[a]).ceil() as usize).min(SHAPE[a] - 1);
        lo..=hi
    };
    let mut voxels = Vec::new();
    for z in range(2) {
        for y in range(1) {
            for x in range(0) {
                let p = [x, y, z];
                let d: f64 = (0..3)
                    .map(|a| ((p[a] as f64 - centre[a] as f64) / reach[a]).powi(2))
                    .sum();
                if d <= 1.0 {
                    voxels.push(index(p));
                }
            }
        }
    }
    voxels
}

/// Puts 1 to 4 lesions (radius 1.2 to 3 voxels) into the reference's liver;
/// the voxels of each, with its radius.
pub fn add_to_reference(rng: &mut StdRng, labels: &mut [u8]) -> Vec<(Vec<usize>, f64)> {
    let liver: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == LIVER).collect();
    if liver.is_empty() {
        return Vec::new();
    }
    (0..rng.random_range(1..=4))
        .map(|_| {
            let centre = coords(liver[rng.random_range(0..liver.len())]);
            let radius = rng.random_range(1.2..3.0);
            let voxels: Vec<usize> = ball(centre, radius)
                .into_iter()
                .filter(|&i| labels[i] == LIVER)
                .collect();
            for &i in &voxels {
                labels[i] = LABEL;
            }
            (voxels, radius)
        })
        .collect()
}

/// The model's lesions: each reference lesion missed (its voxels left to the
/// background), or found with a share of up to 40 % cut away on one side;
/// sometimes a false-positive lesion where both sides are background.
pub fn add_to_prediction(
    rng: &mut StdRng,
    reference: &[u8],
    prediction: &mut [u8],
    lesions: &[(Vec<usize>, f64)],
) {
    for (voxels, radius) in lesions {
        let miss = if *radius < 2.0 {
            MISS_SMALL
        } else {
            MISS_LARGE
        };
        let cut = if rng.random::<f64>() < miss {
            voxels.len()
        } else {
            (rng.random_range(0.0..0.4) * voxels.len() as f64).round() as usize
        };
        let along = random_projection(rng);
        let mut sorted = voxels.clone();
        sorted.sort_by(|&a, &b| along(b).total_cmp(&along(a)));
        for &i in sorted.iter().take(cut) {
            if prediction[i] == LABEL {
                prediction[i] = 0;
            }
        }
    }
    if rng.random::<f64>() < FALSE_POSITIVE {
        let centre = coords(rng.random_range(0..reference.len()));
        let blob = ball(centre, rng.random_range(1.2..2.5));
        if blob
            .iter()
            .all(|&i| reference[i] == 0 && prediction[i] == 0)
        {
            for i in blob {
                prediction[i] = LABEL;
            }
        }
    }
}

/// Lesion-wise detection sensitivity, as the service scores it (default
/// lesion matching): detected over reference lesions; None without any.
pub fn sensitivity(prediction: &[u8], reference: &[u8]) -> Option<f64> {
    let volume = |labels: &[u8]| {
        LabelVolume::new(super::grid(), Labels::U8(labels.to_vec())).expect("shape matches")
    };
    let m = lesion_metrics(
        &volume(prediction),
        &volume(reference),
        LABEL.into(),
        &LesionSettings::default(),
    )
    .ok()?;
    (m.ref_instances > 0).then(|| f64::from(m.tp) / f64::from(m.ref_instances))
}

/// Dice of the lesion label.
pub fn dice(prediction: &[u8], reference: &[u8]) -> f64 {
    let (mut both, mut total) = (0usize, 0usize);
    for (&p, &r) in prediction.iter().zip(reference) {
        both += usize::from(p == LABEL && r == LABEL);
        total += usize::from(p == LABEL) + usize::from(r == LABEL);
    }
    if total == 0 {
        1.0
    } else {
        2.0 * both as f64 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::super::reference;
    use super::*;

    #[test]
    fn lesions_change_only_lesion_voxels_and_the_background() {
        let mut rng = StdRng::seed_from_u64(3);
        let (mut found, mut total, mut dices) = (0, 0, Vec::new());
        for _ in 0..40 {
            let organs = reference(&mut rng);
            let mut labels = organs.clone();
            let lesions = add_to_reference(&mut rng, &mut labels);
            assert!((1..=4).contains(&lesions.len()));
            for (i, (&with, &without)) in labels.iter().zip(&organs).enumerate() {
                assert!(
                    with == without || (with == LABEL && without == LIVER),
                    "{i}"
                );
            }
            let mut prediction = labels.clone();
            add_to_prediction(&mut rng, &labels, &mut prediction, &lesions);
            for (&p, &r) in prediction.iter().zip(&labels) {
                assert!(p == r || p == 0 || (p == LABEL && r == 0));
            }
            total += lesions.len();
            let kept = lesions
                .iter()
                .filter(|(v, _)| v.iter().any(|&i| prediction[i] == LABEL))
                .count();
            found += kept;
            dices.push(dice(&prediction, &labels));
            // The service's matching finds what the prediction kept (a found
            // lesion keeps at least 60 % of its voxels).
            let scored = sensitivity(&prediction, &labels).unwrap();
            assert!(scored <= 1.0 && (kept == 0) == (scored == 0.0), "{scored}");
        }
        // Most lesions are found, not all; the Dice spreads below 1.
        let mean = dices.iter().sum::<f64>() / dices.len() as f64;
        assert!(
            found * 10 > total * 7 && found < total,
            "{found} of {total}"
        );
        assert!((0.5..0.95).contains(&mean), "mean Dice {mean}");
    }
}
