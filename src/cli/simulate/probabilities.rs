//! `simulate --probabilities-at`: the probabilities a model gives with its
//! prediction, one float channel per structure of the schema (in its order):
//! 0.9 on the structure's predicted voxels, 0.25 on the background voxels
//! next to them, 0 elsewhere. Deterministic: the fleet's random draws do not
//! change.

use crate::formats::probability_nifti;
use crate::volume::Grid;

use super::neighbours;

/// Probability on a structure's predicted voxels, and on their neighbours.
const INSIDE: f32 = 0.9;
const NEXT_TO: f32 = 0.25;

/// The float NIfTI (gzip) of `prediction`'s probabilities for `labels`.
pub fn file(grid: &Grid, prediction: &[u8], labels: &[u8]) -> Vec<u8> {
    let channels: Vec<Vec<f32>> = labels
        .iter()
        .map(|&label| channel(prediction, label))
        .collect();
    probability_nifti::encode(grid, &channels, true)
}

fn channel(prediction: &[u8], label: u8) -> Vec<f32> {
    let mut p = vec![0f32; prediction.len()];
    for i in (0..prediction.len()).filter(|&i| prediction[i] == label) {
        p[i] = INSIDE;
        for j in neighbours(i).filter(|&j| prediction[j] == 0) {
            p[j] = NEXT_TO;
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::super::{SHAPE, index};
    use super::*;

    #[test]
    fn a_structure_is_likely_inside_and_less_so_beside() {
        let mut prediction = vec![0u8; SHAPE.iter().product()];
        prediction[index([5, 5, 5])] = 2;
        prediction[index([6, 5, 5])] = 3;
        let p = channel(&prediction, 2);
        assert_eq!(p[index([5, 5, 5])], INSIDE);
        assert_eq!(p[index([4, 5, 5])], NEXT_TO);
        assert_eq!(p[index([5, 5, 6])], NEXT_TO);
        // Another structure's voxel is not this one's neighbourhood.
        assert_eq!(p[index([6, 5, 5])], 0.0);
        assert_eq!(p.iter().filter(|&&v| v > 0.0).count(), 6);
    }
}
