//! Scores of a probability map against a binary reference: soft Dice, Brier
//! score, expected calibration error (ECE) and reliability-diagram data, as
//! `docs/metrics.md` ("Probabilistic outputs") specifies.
//!
//! A [`SoftTally`] is fed the voxels with a non-zero probability (or any
//! others) one at a time, so no probability volume needs to be held; the
//! voxels never fed count as probability 0 when it is finished.

use serde::Serialize;

use crate::formats::FormatError;
use crate::volume::GridMismatch;

mod label_map;
mod segments;

pub use label_map::LabelMapScorer;
pub use segments::score_segments;

/// Calibration bins unless asked otherwise.
pub const DEFAULT_BINS: usize = 15;
/// Most calibration bins accepted.
pub const MAX_BINS: usize = 1000;

/// Why probabilistic scores cannot be computed.
#[derive(Debug, thiserror::Error)]
pub enum ProbabilityError {
    /// A value that is not a probability: non-finite, below 0 or above 1.
    #[error("{value} is not a probability (a number from 0 to 1)")]
    OutOfRange {
        /// The value found.
        value: f64,
    },
    /// A bin count outside 1 to [`MAX_BINS`].
    #[error("{0} calibration bins: give 1 to {MAX_BINS}")]
    Bins(usize),
    /// The voxel counts given to [`SoftTally::finish`] are fewer than the voxels fed.
    #[error("{0}")]
    Counts(String),
    /// The probability file cannot be read.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The probabilities do not lie on the reference's grid.
    #[error("the probabilities lie on another grid: {0}")]
    Grid(#[from] GridMismatch),
    /// The probability file has another number of channels than structures scored.
    #[error(
        "{found} probability channels for {expected} structures: give one channel per structure, in the order scored"
    )]
    Channels {
        /// Channels in the file.
        found: usize,
        /// Structures scored.
        expected: usize,
    },
    /// Probabilities cannot be paired with this reference.
    #[error("{0}")]
    Reference(String),
}

/// Per-bin sums of one calibration bin.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Bin {
    count: u64,
    sum_p: f64,
    positives: u64,
}

/// Running sums of one structure's probabilities against its reference.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftTally {
    /// `bins + 1` entries: the equal-width bins, then one for p = 1 exactly.
    bins: Vec<Bin>,
    sum_pg: f64,
    squared_error: f64,
    fed: u64,
    fed_in_reference: u64,
}

impl SoftTally {
    /// An empty tally with `bins` equal-width calibration bins (1 to [`MAX_BINS`]).
    pub fn new(bins: usize) -> Result<SoftTally, ProbabilityError> {
        if !(1..=MAX_BINS).contains(&bins) {
            return Err(ProbabilityError::Bins(bins));
        }
        Ok(SoftTally {
            bins: vec![Bin::default(); bins + 1],
            sum_pg: 0.0,
            squared_error: 0.0,
            fed: 0,
            fed_in_reference: 0,
        })
    }

    /// Calibration bin of probability `p`: k with k/N ≤ p < (k+1)/N, edges
    /// being the double-precision values of k/N; N (a bin of its own) for p = 1.
    fn bin_of(&self, p: f64) -> usize {
        let n = self.bins.len() - 1;
        let edge = |k: usize| k as f64 / n as f64;
        let mut k = ((p * n as f64) as usize).min(n);
        // p·N may round across an edge: settle on the exact comparison.
        while k > 0 && p < edge(k) {
            k -= 1;
        }
        while k < n && p >= edge(k + 1) {
            k += 1;
        }
        k
    }

    /// Adds one voxel of probability `p`, inside the reference or not.
    pub fn add(&mut self, p: f64, in_reference: bool) -> Result<(), ProbabilityError> {
        if !(0.0..=1.0).contains(&p) {
            return Err(ProbabilityError::OutOfRange { value: p });
        }
        let k = self.bin_of(p);
        let g = f64::from(u8::from(in_reference));
        let bin = &mut self.bins[k];
        bin.count += 1;
        bin.sum_p += p;
        bin.positives += u64::from(in_reference);
        self.sum_pg += p * g;
        self.squared_error += (p - g) * (p - g);
        self.fed += 1;
        self.fed_in_reference += u64::from(in_reference);
        Ok(())
    }

    /// The scores over a grid of `voxels` voxels of which `ref_voxels` are in
    /// the reference; voxels not fed have probability 0.
    pub fn finish(&self, voxels: u64, ref_voxels: u64) -> Result<Probabilistic, ProbabilityError> {
        let unfed_in_reference = ref_voxels.checked_sub(self.fed_in_reference);
        let unfed = voxels.checked_sub(self.fed);
        let (Some(unfed_in_reference), Some(unfed)) = (unfed_in_reference, unfed) else {
            return Err(ProbabilityError::Counts(format!(
                "{} voxels ({} in the reference) were scored on a grid of {voxels} ({ref_voxels} in the reference)",
                self.fed, self.fed_in_reference
            )));
        };
        if unfed_in_reference > unfed {
            return Err(ProbabilityError::Counts(format!(
                "{ref_voxels} reference voxels on a grid of {voxels}"
            )));
        }
        let mut bins = self.bins.clone();
        bins[0].count += unfed;
        bins[0].positives += unfed_in_reference;
        let squared_error = self.squared_error + unfed_in_reference as f64;
        let sum_p: f64 = bins.iter().map(|b| b.sum_p).sum();
        let denominator = sum_p + ref_voxels as f64;
        let soft_dice = if denominator > 0.0 {
            2.0 * self.sum_pg / denominator
        } else {
            1.0
        };
        let n = voxels as f64;
        let (brier, ece) = if voxels == 0 {
            (f64::NAN, f64::NAN)
        } else {
            let gap: f64 = bins
                .iter()
                .map(|b| (b.positives as f64 - b.sum_p).abs())
                .sum();
            (squared_error / n, gap / n)
        };
        let last = bins.len() - 1;
        let reliability = bins
            .iter()
            .enumerate()
            .map(|(k, b)| {
                let (lower, upper) = ReliabilityBin::edges(k, last);
                ReliabilityBin {
                    lower,
                    upper,
                    count: b.count,
                    mean_probability: (b.count > 0).then(|| b.sum_p / b.count as f64),
                    observed_frequency: (b.count > 0).then(|| b.positives as f64 / b.count as f64),
                }
            })
            .collect();
        Ok(Probabilistic {
            soft_dice,
            brier,
            ece,
            ece_bins: last,
            reliability,
        })
    }
}

/// The probabilistic scores of one structure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Probabilistic {
    /// 2·Σp·g / (Σp + Σg); 1 when both sums are 0.
    pub soft_dice: f64,
    /// Mean of (p − g)² over every voxel of the grid.
    #[serde(serialize_with = "super::finite_or_null")]
    pub brier: f64,
    /// Σ over bins of |Σg − Σp| / voxels: the voxel-weighted gap between observed
    /// frequency and mean probability.
    #[serde(serialize_with = "super::finite_or_null")]
    pub ece: f64,
    /// Equal-width bins of the ECE (the reliability data has one more, for p = 1).
    pub ece_bins: usize,
    /// Reliability-diagram data: the bins in increasing order, then p = 1.
    pub reliability: Vec<ReliabilityBin>,
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReliabilityBin {
    /// Lowest probability in the bin (inclusive).
    pub lower: f64,
    /// Upper edge (exclusive), or 1 for the bin of p = 1.
    pub upper: f64,
    /// Voxels in the bin.
    pub count: u64,
    /// Mean probability of those voxels; None when the bin is empty.
    pub mean_probability: Option<f64>,
    /// Share of those voxels in the reference; None when the bin is empty.
    pub observed_frequency: Option<f64>,
}

impl ReliabilityBin {
    /// `lower` and `upper` of bin `k` of a diagram of `bins` equal-width bins
    /// (bin `bins` being p = 1).
    pub fn edges(k: usize, bins: usize) -> (f64, f64) {
        (
            k as f64 / bins as f64,
            (k + 1).min(bins) as f64 / bins as f64,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `voxels` (p, in reference) and scores them on a grid of `grid`
    /// voxels with `ref_voxels` in the reference.
    fn tallied(voxels: &[(f64, bool)], grid: u64, ref_voxels: u64, bins: usize) -> Probabilistic {
        let mut tally = SoftTally::new(bins).unwrap();
        for &(p, g) in voxels {
            tally.add(p, g).unwrap();
        }
        tally.finish(grid, ref_voxels).unwrap()
    }

    /// As [`tallied`], every reference voxel being fed.
    fn scored(voxels: &[(f64, bool)], grid: u64, bins: usize) -> Probabilistic {
        let ref_voxels = voxels.iter().filter(|v| v.1).count() as u64;
        tallied(voxels, grid, ref_voxels, bins)
    }

    #[test]
    fn hand_computed_case() {
        // Four voxels (p, g): (0.9, 1), (0.6, 1), (0.3, 0), (0, 1), and six more
        // at p = 0, g = 0 that are never fed. Ten voxels, Σg = 3.
        // Soft Dice: 2·(0.9 + 0.6) / (1.8 + 3) = 3 / 4.8 = 0.625.
        // Brier: (0.01 + 0.16 + 0.09 + 1) / 10 = 0.126.
        // Five bins: p = 0.9 in [0.8, 1), 0.6 in [0.6, 0.8), 0.3 in [0.2, 0.4),
        // seven voxels at 0 in [0, 0.2) with one positive.
        // ECE = (|1 − 0.9| + |1 − 0.6| + |0 − 0.3| + |1 − 0|) / 10 = 0.18.
        let voxels = [(0.9, true), (0.6, true), (0.3, false), (0.0, true)];
        let m = scored(&voxels, 10, 5);
        assert!((m.soft_dice - 0.625).abs() < 1e-12, "{}", m.soft_dice);
        assert!((m.brier - 0.126).abs() < 1e-12, "{}", m.brier);
        assert!((m.ece - 0.18).abs() < 1e-12, "{}", m.ece);
        let counts: Vec<u64> = m.reliability.iter().map(|b| b.count).collect();
        assert_eq!(counts, [7, 1, 0, 1, 1, 0]);
        assert_eq!(m.reliability[0].observed_frequency, Some(1.0 / 7.0));
        assert_eq!(m.reliability[2].mean_probability, None);
        assert_eq!(m.reliability[4].mean_probability, Some(0.9));
        assert_eq!((m.reliability[5].lower, m.reliability[5].upper), (1.0, 1.0));
    }

    #[test]
    fn unfed_voxels_equal_fed_zeros() {
        // Five voxels, two in the reference; one of those and two others at p = 0.
        let fed = [(0.7, true), (0.2, false)];
        let all = [fed.as_slice(), &[(0.0, true), (0.0, false), (0.0, false)]].concat();
        let (a, b) = (tallied(&fed, 5, 2, 15), scored(&all, 5, 15));
        assert_eq!(a.soft_dice, b.soft_dice);
        // Feeding the zeros changes only the order of the sums.
        assert!((a.brier - b.brier).abs() < 1e-15 && (a.ece - b.ece).abs() < 1e-15);
        assert_eq!(a.reliability, b.reliability);
    }

    #[test]
    fn edges_are_inclusive_below_and_one_has_its_own_bin() {
        // By hand with 15 bins: 2/15 opens bin 2; just below it is bin 1; 1 is bin 15.
        let tally = SoftTally::new(15).unwrap();
        assert_eq!(tally.bin_of(2.0 / 15.0), 2);
        assert_eq!(tally.bin_of(2.0 / 15.0 - 1e-12), 1);
        assert_eq!(tally.bin_of(0.0), 0);
        assert_eq!(tally.bin_of(1.0 - 1e-12), 14);
        assert_eq!(tally.bin_of(1.0), 15);
        // k/255 values (8-bit FRACTIONAL) that are exactly k'/15 open bin k'.
        for k in 0..15 {
            assert_eq!(tally.bin_of((17 * k) as f64 / 255.0), k);
        }
    }

    #[test]
    fn both_empty_and_one_empty_conventions() {
        // Both empty: p ≡ 0 and no reference voxel. Soft Dice 1, Brier and ECE 0.
        let both = scored(&[], 8, 15);
        assert_eq!((both.soft_dice, both.brier, both.ece), (1.0, 0.0, 0.0));
        // Reference empty, some probability: soft Dice 0; Brier mean p²; ECE mean p.
        let spurious = scored(&[(0.5, false), (1.0, false)], 4, 15);
        assert_eq!(spurious.soft_dice, 0.0);
        assert!((spurious.brier - 1.25 / 4.0).abs() < 1e-15);
        assert!((spurious.ece - 1.5 / 4.0).abs() < 1e-15);
        // Probabilities all 0, reference present: soft Dice 0, Brier and ECE the
        // reference share.
        let missed = scored(&[(0.0, true), (0.0, true)], 4, 15);
        assert_eq!(
            (missed.soft_dice, missed.brier, missed.ece),
            (0.0, 0.5, 0.5)
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut tally = SoftTally::new(15).unwrap();
        for bad in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                tally.add(bad, false),
                Err(ProbabilityError::OutOfRange { .. })
            ));
        }
        assert!(matches!(SoftTally::new(0), Err(ProbabilityError::Bins(0))));
        assert!(SoftTally::new(MAX_BINS + 1).is_err());
        tally.add(0.5, true).unwrap();
        assert!(matches!(
            tally.finish(10, 0),
            Err(ProbabilityError::Counts(_))
        ));
        assert!(matches!(
            tally.finish(0, 1),
            Err(ProbabilityError::Counts(_))
        ));
    }
}
