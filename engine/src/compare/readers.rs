//! Agreement between several readers' references of one structure, and the
//! AI's place within it (issue 15, item 4).
//!
//! Conventions (documented in `docs/compare.md`, "Several readers"):
//! - Dice is 2·|A∩B| / (|A| + |B|), and 1 when both masks are empty.
//! - The inter-reader Dice of a case is the mean over all reader pairs.
//! - The consensus is a strict majority vote: a voxel is labelled when more
//!   than half the readers label it (with two readers, their intersection;
//!   a tie in an even count is not labelled). STAPLE is not used.
//! - The AI is within inter-reader variability when its mean Dice against
//!   the readers is at least the mean inter-reader Dice.
//! - A case is ambiguous when its inter-reader Dice is below the structure's
//!   `ambiguous_below` (default [`DEFAULT_AMBIGUOUS_BELOW`]).

use serde::{Deserialize, Serialize};

use crate::metrics::{Counts, overlap};
use crate::volume::Labels;

/// Inter-reader Dice below which a case is ambiguous, unless the schema says otherwise.
pub const DEFAULT_AMBIGUOUS_BELOW: f64 = 0.75;

/// Why agreement could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadersError {
    /// Agreement needs at least two readers.
    #[error("agreement needs at least two readers, got {0}")]
    TooFewReaders(usize),
    /// Every mask must cover the same voxels.
    #[error("mask of {found} voxels where {expected} were expected")]
    SizeMismatch {
        /// Voxels of the AI's mask.
        expected: usize,
        /// Voxels of the mismatching mask.
        found: usize,
    },
}

/// Agreement of one structure in one case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseAgreement {
    /// Number of readers.
    pub readers: usize,
    /// Mean Dice over all reader pairs.
    pub inter_reader_dice: f64,
    /// The AI's Dice against each reader, in the readers' order.
    pub ai_vs_reader: Vec<f64>,
    /// The AI's Dice against the strict-majority consensus.
    pub ai_vs_consensus: f64,
    /// Inter-reader Dice below the ambiguity threshold.
    pub ambiguous: bool,
}

impl CaseAgreement {
    /// Mean of the AI's Dice against each reader.
    pub fn mean_ai_vs_reader(&self) -> f64 {
        mean(&self.ai_vs_reader)
    }

    /// The AI agrees with the readers at least as well as they agree with each other.
    pub fn within_variability(&self) -> bool {
        self.mean_ai_vs_reader() >= self.inter_reader_dice
    }
}

/// Agreement of the readers' masks with each other and with the AI's.
pub fn agreement(
    ai: &[bool],
    readers: &[&[bool]],
    ambiguous_below: f64,
) -> Result<CaseAgreement, ReadersError> {
    same_size(ai.len(), readers.iter().map(|r| r.len()))?;
    agreement_by(
        ai.len(),
        readers.len(),
        |i| ai[i],
        |r, i| readers[r][i],
        ambiguous_below,
    )
}

/// Agreement on one label of label maps on the same voxels: a voxel is in
/// the structure where its label is `label`.
pub fn label_agreement(
    ai: &Labels,
    readers: &[&Labels],
    label: u16,
    ambiguous_below: f64,
) -> Result<CaseAgreement, ReadersError> {
    same_size(ai.len(), readers.iter().map(|r| r.len()))?;
    agreement_by(
        ai.len(),
        readers.len(),
        |i| ai.get(i) == label,
        |r, i| readers[r].get(i) == label,
        ambiguous_below,
    )
}

/// Every reader's mask has the AI's `expected` voxels.
fn same_size(
    expected: usize,
    mut readers: impl Iterator<Item = usize>,
) -> Result<(), ReadersError> {
    match readers.find(|&found| found != expected) {
        Some(found) => Err(ReadersError::SizeMismatch { expected, found }),
        None => Ok(()),
    }
}

/// Agreement from each voxel's membership (`ai(i)`, `reader(r, i)` for
/// voxels `0..voxels`), in one pass that only counts: the Dice of each pair
/// comes from its voxel counts through [`overlap`], as every stored Dice does.
fn agreement_by(
    voxels: usize,
    readers: usize,
    ai: impl Fn(usize) -> bool,
    reader: impl Fn(usize, usize) -> bool,
    ambiguous_below: f64,
) -> Result<CaseAgreement, ReadersError> {
    if readers < 2 {
        return Err(ReadersError::TooFewReaders(readers));
    }
    let mut on = vec![false; readers];
    let (mut ai_count, mut consensus, mut ai_and_consensus) = (0u64, 0u64, 0u64);
    let mut count = vec![0u64; readers];
    let mut with_ai = vec![0u64; readers];
    // both[r * readers + s] for r < s: voxels readers r and s both label.
    let mut both = vec![0u64; readers * readers];
    for i in 0..voxels {
        let a = ai(i);
        let mut votes = 0;
        for (r, slot) in on.iter_mut().enumerate() {
            *slot = reader(r, i);
            votes += usize::from(*slot);
        }
        ai_count += u64::from(a);
        if votes == 0 {
            continue;
        }
        for r in (0..readers).filter(|&r| on[r]) {
            count[r] += 1;
            with_ai[r] += u64::from(a);
            for s in (r + 1..readers).filter(|&s| on[s]) {
                both[r * readers + s] += 1;
            }
        }
        // Strict majority: more than half the readers.
        if 2 * votes > readers {
            consensus += 1;
            ai_and_consensus += u64::from(a);
        }
    }
    let dice = |pred_voxels, ref_voxels, tp| {
        overlap(Counts {
            pred_voxels,
            ref_voxels,
            tp,
        })
        .dice
    };
    let mut pairs = Vec::new();
    for r in 0..readers {
        for s in r + 1..readers {
            pairs.push(dice(count[r], count[s], both[r * readers + s]));
        }
    }
    let inter_reader_dice = mean(&pairs);
    Ok(CaseAgreement {
        readers,
        inter_reader_dice,
        ai_vs_reader: (0..readers)
            .map(|r| dice(ai_count, count[r], with_ai[r]))
            .collect(),
        ai_vs_consensus: dice(ai_count, consensus, ai_and_consensus),
        ambiguous: inter_reader_dice < ambiguous_below,
    })
}

/// One structure's agreement over the multi-reader cases of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgreementSummary {
    /// Cases with at least two readers.
    pub cases: usize,
    /// Mean over cases of the inter-reader Dice.
    pub mean_inter_reader_dice: f64,
    /// Mean over cases of the AI's mean Dice against the readers.
    pub mean_ai_vs_reader_dice: f64,
    /// Mean over cases of the AI's Dice against the consensus.
    pub mean_ai_vs_consensus_dice: f64,
    /// Cases flagged ambiguous.
    pub ambiguous_cases: usize,
    /// Mean AI-vs-reader Dice at least the mean inter-reader Dice.
    pub within_variability: bool,
}

/// Summary of the cases' agreement; `None` without cases.
pub fn summarize(cases: &[CaseAgreement]) -> Option<AgreementSummary> {
    if cases.is_empty() {
        return None;
    }
    let over = |f: fn(&CaseAgreement) -> f64| mean(&cases.iter().map(f).collect::<Vec<_>>());
    let mean_inter_reader_dice = over(|c| c.inter_reader_dice);
    let mean_ai_vs_reader_dice = over(CaseAgreement::mean_ai_vs_reader);
    Some(AgreementSummary {
        cases: cases.len(),
        mean_inter_reader_dice,
        mean_ai_vs_reader_dice,
        mean_ai_vs_consensus_dice: over(|c| c.ai_vs_consensus),
        ambiguous_cases: cases.iter().filter(|c| c.ambiguous).count(),
        within_variability: mean_ai_vs_reader_dice >= mean_inter_reader_dice,
    })
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mask of `n` voxels labelled at `on`.
    fn mask(n: usize, on: &[usize]) -> Vec<bool> {
        (0..n).map(|i| on.contains(&i)).collect()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn dice_counts_overlap_and_is_one_for_two_empty_masks() {
        // AI {0,1,2,3} against readers {2,3,4,5} twice: 2·2 / (4 + 4) = 0.5.
        let r = mask(8, &[2, 3, 4, 5]);
        let a = agreement(&mask(8, &[0, 1, 2, 3]), &[&r, &r], 0.75).unwrap();
        close(a.ai_vs_reader[0], 0.5);
        // Everything empty: every Dice is 1; one side empty: 0.
        let none = mask(4, &[]);
        let a = agreement(&none, &[&none, &none], 0.75).unwrap();
        close(a.inter_reader_dice, 1.0);
        close(a.ai_vs_consensus, 1.0);
        let a = agreement(&mask(4, &[1]), &[&none, &none], 0.75).unwrap();
        close(a.ai_vs_reader[0], 0.0);
    }

    #[test]
    fn consensus_is_a_strict_majority() {
        let (a, b, c) = (mask(4, &[0, 1]), mask(4, &[1, 2]), mask(4, &[1, 3]));
        // Three readers: voxel 1 has 3 votes; 0, 2, 3 one each, so an AI
        // labelling voxel 1 alone is the consensus.
        let ai = mask(4, &[1]);
        close(
            agreement(&ai, &[&a, &b, &c], 0.75).unwrap().ai_vs_consensus,
            1.0,
        );
        // Two readers: a 1–1 tie is not a majority, so only the intersection.
        close(
            agreement(&ai, &[&a, &b], 0.75).unwrap().ai_vs_consensus,
            1.0,
        );
        // Two of three readers labelling voxel 0 is a majority.
        let d = mask(4, &[0, 1]);
        let ag = agreement(&mask(4, &[0, 1]), &[&a, &d, &c], 0.75).unwrap();
        close(ag.ai_vs_consensus, 1.0);
    }

    #[test]
    fn label_maps_agree_on_one_label_at_a_time() {
        // Label 1 as in the two-reader case below, label 2 identical everywhere.
        let r1 = Labels::U8(vec![1, 1, 1, 1, 1, 0, 2, 2]);
        let r2 = Labels::U16(vec![0, 1, 1, 1, 1, 1, 2, 2]);
        let ai = Labels::U8(vec![1, 1, 1, 1, 1, 0, 2, 0]);
        let one = label_agreement(&ai, &[&r1, &r2], 1, 0.75).unwrap();
        // Readers: 4 shared of 5 + 5: 0.8. AI = reader 1 on label 1.
        close(one.inter_reader_dice, 0.8);
        close(one.ai_vs_reader[0], 1.0);
        close(one.ai_vs_reader[1], 0.8);
        // Consensus {1,2,3,4}: 2·4 / (5 + 4).
        close(one.ai_vs_consensus, 8.0 / 9.0);
        let two = label_agreement(&ai, &[&r1, &r2], 2, 0.75).unwrap();
        close(two.inter_reader_dice, 1.0);
        close(two.mean_ai_vs_reader(), 2.0 / 3.0);
        assert!(!two.within_variability());
        assert_eq!(
            label_agreement(&ai, &[&r1, &Labels::U8(vec![0; 3])], 1, 0.75),
            Err(ReadersError::SizeMismatch {
                expected: 8,
                found: 3
            })
        );
    }

    #[test]
    fn two_readers_and_an_ai_give_hand_computed_agreement() {
        // Reader 1 labels voxels 0..10, reader 2 voxels 2..12: overlap 8,
        // Dice 16/20 = 0.8. The AI labels 0..10 (= reader 1): Dice 1 with
        // reader 1, 0.8 with reader 2, mean 0.9 ≥ 0.8, so within variability.
        // Consensus = intersection 2..10 (8 voxels): AI Dice 16/18.
        let r1 = mask(20, &(0..10).collect::<Vec<_>>());
        let r2 = mask(20, &(2..12).collect::<Vec<_>>());
        let a = agreement(&r1, &[&r1, &r2], 0.75).unwrap();
        close(a.inter_reader_dice, 0.8);
        close(a.ai_vs_reader[0], 1.0);
        close(a.ai_vs_reader[1], 0.8);
        close(a.ai_vs_consensus, 16.0 / 18.0);
        assert!(!a.ambiguous);
        assert!(a.within_variability());
        // At threshold 0.8 the case is not ambiguous (strictly below is); above it, it is.
        assert!(!agreement(&r1, &[&r1, &r2], 0.8).unwrap().ambiguous);
        assert!(agreement(&r1, &[&r1, &r2], 0.81).unwrap().ambiguous);
    }

    #[test]
    fn an_ai_worse_than_the_readers_is_outside_variability() {
        // Readers agree fully on 0..4; the AI labels 2..6: Dice 2·2/8 = 0.5 with each.
        let r = mask(8, &[0, 1, 2, 3]);
        let ai = mask(8, &[2, 3, 4, 5]);
        let a = agreement(&ai, &[&r, &r], 0.75).unwrap();
        close(a.inter_reader_dice, 1.0);
        close(a.mean_ai_vs_reader(), 0.5);
        assert!(!a.within_variability());
    }

    #[test]
    fn three_readers_average_their_three_pairs() {
        // A = {0,1}, B = {1,2}, C = {1,3}: every pair overlaps in one voxel of
        // 2 + 2, Dice 0.5; the mean of the three pairs is 0.5.
        let (a, b, c) = (mask(4, &[0, 1]), mask(4, &[1, 2]), mask(4, &[1, 3]));
        let ag = agreement(&a, &[&a, &b, &c], 0.75).unwrap();
        close(ag.inter_reader_dice, 0.5);
        assert!(ag.ambiguous);
        // AI = A: Dice 1, 0.5, 0.5, mean 2/3; consensus {1}: 2·1/3.
        close(ag.mean_ai_vs_reader(), 2.0 / 3.0);
        close(ag.ai_vs_consensus, 2.0 / 3.0);
    }

    #[test]
    fn too_few_readers_or_mismatched_masks_are_refused() {
        let m = mask(4, &[0]);
        assert_eq!(
            agreement(&m, &[&m], 0.75),
            Err(ReadersError::TooFewReaders(1))
        );
        let short = mask(3, &[0]);
        assert_eq!(
            agreement(&m, &[&m, &short], 0.75),
            Err(ReadersError::SizeMismatch {
                expected: 4,
                found: 3
            })
        );
    }

    #[test]
    fn summary_averages_cases_and_counts_ambiguous_ones() {
        // Case 1: inter 0.8, AI mean 0.9, consensus 0.9; case 2: inter 0.6
        // (ambiguous), AI mean 0.55, consensus 0.7. Means 0.7, 0.725, 0.8;
        // the AI's 0.725 ≥ 0.7 is within variability.
        let case = |inter, ai: Vec<f64>, cons, ambiguous| CaseAgreement {
            readers: 2,
            inter_reader_dice: inter,
            ai_vs_reader: ai,
            ai_vs_consensus: cons,
            ambiguous,
        };
        let s = summarize(&[
            case(0.8, vec![1.0, 0.8], 0.9, false),
            case(0.6, vec![0.5, 0.6], 0.7, true),
        ])
        .unwrap();
        assert_eq!(s.cases, 2);
        close(s.mean_inter_reader_dice, 0.7);
        close(s.mean_ai_vs_reader_dice, 0.725);
        close(s.mean_ai_vs_consensus_dice, 0.8);
        assert_eq!(s.ambiguous_cases, 1);
        assert!(s.within_variability);
        assert_eq!(summarize(&[]), None);
    }
}
