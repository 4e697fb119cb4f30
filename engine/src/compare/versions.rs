//! One structure's Dice under model versions A and B: the difference of mean
//! Dice with its bootstrap interval, a rank test, failure rates and the cases
//! B scores worst against A.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::bootstrap::{self, Bootstrap, Interval};
use super::rank_tests::{self, TestResult};
use super::{CompareError, check_finite, failure_rate, mean};
use crate::schema::DEFAULT_FAILURE_THRESHOLD;

/// One case's Dice for the structure under one version.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CaseDice<'a> {
    /// The case's key; the same key in both versions makes a pair.
    pub case: &'a str,
    /// Its Dice.
    pub dice: f64,
}

/// How to compare.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CompareSettings {
    /// The bootstrap of the mean difference (two-sided interval at its level).
    pub bootstrap: Bootstrap,
    /// Dice strictly below which a case is a failure (the schema's
    /// `failure_threshold` of the structure).
    pub failure_threshold: f64,
    /// How many of the worst paired cases to list.
    pub worst: usize,
}

impl Default for CompareSettings {
    /// The default bootstrap, the schema's default failure threshold, 5 cases.
    fn default() -> Self {
        CompareSettings {
            bootstrap: Bootstrap::default(),
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            worst: 5,
        }
    }
}

/// Whether the cases were paired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Design {
    /// Both versions scored exactly the same cases.
    Paired,
    /// The case sets differ; the two samples are treated as independent.
    Unpaired,
}

/// The rank test used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RankTest {
    /// Wilcoxon signed-rank test of the paired differences B − A.
    Wilcoxon,
    /// Mann–Whitney U test; its statistic is U of B.
    MannWhitney,
}

/// What the interval of B − A says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The whole interval is below 0.
    BWorse,
    /// The whole interval is above 0.
    BBetter,
    /// The interval contains 0.
    NoEvidence,
}

/// A paired case where B's Dice is below A's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorstCase {
    /// The case's key.
    pub case: String,
    /// Dice under A.
    pub a: f64,
    /// Dice under B.
    pub b: f64,
}

/// The comparison of one structure between versions A and B.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Cases scored by A.
    pub n_a: usize,
    /// Cases scored by B.
    pub n_b: usize,
    /// Cases scored by both.
    pub n_paired: usize,
    /// Paired or not.
    pub design: Design,
    /// Mean Dice under A.
    pub mean_a: f64,
    /// Mean Dice under B.
    pub mean_b: f64,
    /// `mean_b − mean_a`.
    pub mean_difference: f64,
    /// Bootstrap interval of the mean difference B − A.
    pub interval: Interval,
    /// The test behind `result`.
    pub test: RankTest,
    /// Its statistic and two-sided p-value.
    pub result: TestResult,
    /// Fraction of A's cases below the failure threshold.
    pub failure_rate_a: f64,
    /// Fraction of B's cases below the failure threshold.
    pub failure_rate_b: f64,
    /// `failure_rate_b − failure_rate_a`.
    pub failure_rate_difference: f64,
    /// What the interval says.
    pub verdict: Verdict,
    /// Paired cases where B is below A, largest drop first (ties by key).
    pub worst: Vec<WorstCase>,
}

/// Dice by case key, refusing a key listed twice and non-finite Dice.
fn by_case<'a>(scores: &[CaseDice<'a>]) -> Result<BTreeMap<&'a str, f64>, CompareError> {
    if scores.is_empty() {
        return Err(CompareError::Empty);
    }
    let mut map = BTreeMap::new();
    for (index, s) in scores.iter().enumerate() {
        check_finite(&[s.dice]).map_err(|_| CompareError::NotFinite {
            index,
            value: s.dice,
        })?;
        if map.insert(s.case, s.dice).is_some() {
            return Err(CompareError::DuplicateCase(s.case.to_owned()));
        }
    }
    Ok(map)
}

/// Compares one structure's Dice under A and B.
///
/// Paired when both versions scored exactly the same cases: Wilcoxon
/// signed-rank test and paired bootstrap of the differences B − A. Otherwise
/// unpaired over all cases of each: Mann–Whitney U test and independent
/// bootstrap of each group. Values are taken in case-key order, so the result
/// does not depend on the order of the input. The verdict is B worse (better)
/// when the whole interval lies below (above) 0.
pub fn compare(
    a: &[CaseDice],
    b: &[CaseDice],
    settings: &CompareSettings,
) -> Result<Comparison, CompareError> {
    if !settings.failure_threshold.is_finite() {
        return Err(CompareError::InvalidSettings(
            "failure threshold must be a number",
        ));
    }
    let (a, b) = (by_case(a)?, by_case(b)?);
    let common: Vec<(&str, f64, f64)> = a
        .iter()
        .filter_map(|(&case, &da)| b.get(case).map(|&db| (case, da, db)))
        .collect();
    let dice_a: Vec<f64> = a.values().copied().collect();
    let dice_b: Vec<f64> = b.values().copied().collect();
    let design = if common.len() == a.len() && common.len() == b.len() {
        Design::Paired
    } else {
        Design::Unpaired
    };
    let (test, result, interval) = match design {
        Design::Paired => (
            RankTest::Wilcoxon,
            rank_tests::wilcoxon(&dice_b, &dice_a)?,
            bootstrap::paired_mean_difference(&dice_a, &dice_b, &settings.bootstrap)?,
        ),
        Design::Unpaired => (
            RankTest::MannWhitney,
            rank_tests::mann_whitney_u(&dice_b, &dice_a)?,
            bootstrap::unpaired_mean_difference(&dice_a, &dice_b, &settings.bootstrap)?,
        ),
    };
    let verdict = if interval.upper < 0.0 {
        Verdict::BWorse
    } else if interval.lower > 0.0 {
        Verdict::BBetter
    } else {
        Verdict::NoEvidence
    };
    let mut drops: Vec<&(&str, f64, f64)> = common.iter().filter(|(_, da, db)| db < da).collect();
    // Stable sort: equal drops stay in key order.
    drops.sort_by(|x, y| (x.2 - x.1).total_cmp(&(y.2 - y.1)));
    let worst = drops
        .into_iter()
        .take(settings.worst)
        .map(|&(case, a, b)| WorstCase {
            case: case.to_owned(),
            a,
            b,
        })
        .collect();
    let (mean_a, mean_b) = (mean(&dice_a), mean(&dice_b));
    let failure_rate_a = failure_rate(&dice_a, settings.failure_threshold);
    let failure_rate_b = failure_rate(&dice_b, settings.failure_threshold);
    Ok(Comparison {
        n_a: dice_a.len(),
        n_b: dice_b.len(),
        n_paired: common.len(),
        design,
        mean_a,
        mean_b,
        mean_difference: mean_b - mean_a,
        interval,
        test,
        result,
        failure_rate_a,
        failure_rate_b,
        failure_rate_difference: failure_rate_b - failure_rate_a,
        verdict,
        worst,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cases<'a>(keys: &[&'a str], dice: &[f64]) -> Vec<CaseDice<'a>> {
        keys.iter()
            .zip(dice)
            .map(|(&case, &dice)| CaseDice { case, dice })
            .collect()
    }

    /// A = (0.9, 0.8, 0.4), B = (0.7, 0.85, 0.3) on cases c1–c3, threshold
    /// 0.5. Differences B − A ≈ (−0.2, +0.05, −0.1) rank 3, 1, 2: R+ = 1 =
    /// the statistic; the subset sums of {1, 2, 3} are ≤ 1 in 2 of 8 sign
    /// patterns, so p = 2·2/8. One failure each (0.4, 0.3).
    #[test]
    fn paired_by_hand() {
        let a = cases(&["c1", "c2", "c3"], &[0.9, 0.8, 0.4]);
        let b = cases(&["c3", "c1", "c2"], &[0.3, 0.7, 0.85]);
        let c = compare(&a, &b, &CompareSettings::default()).unwrap();
        assert_eq!((c.design, c.test), (Design::Paired, RankTest::Wilcoxon));
        assert_eq!((c.n_a, c.n_b, c.n_paired), (3, 3, 3));
        assert_eq!((c.result.statistic, c.result.p_value), (1.0, 0.5));
        assert!((c.mean_difference - (1.85 - 2.1) / 3.0).abs() < 1e-15);
        assert_eq!((c.failure_rate_a, c.failure_rate_b), (1.0 / 3.0, 1.0 / 3.0));
        assert_eq!(c.failure_rate_difference, 0.0);
        let worst: Vec<(&str, f64, f64)> = c
            .worst
            .iter()
            .map(|w| (w.case.as_str(), w.a, w.b))
            .collect();
        assert_eq!(worst, vec![("c1", 0.9, 0.7), ("c3", 0.4, 0.3)]);
        assert!(c.interval.lower < c.mean_difference && c.mean_difference < c.interval.upper);
    }

    #[test]
    fn input_order_does_not_matter() {
        let keys = ["a", "b", "c", "d", "e", "f"];
        let a = cases(&keys, &[0.9, 0.8, 0.7, 0.95, 0.6, 0.85]);
        let b = cases(&keys, &[0.85, 0.82, 0.6, 0.9, 0.65, 0.8]);
        let settings = CompareSettings::default();
        let forward = compare(&a, &b, &settings).unwrap();
        let (mut ra, mut rb) = (a.clone(), b.clone());
        ra.reverse();
        rb.rotate_left(2);
        assert_eq!(compare(&ra, &rb, &settings).unwrap(), forward);
    }

    #[test]
    fn different_case_sets_are_unpaired() {
        let a = cases(&["x", "y", "z"], &[0.9, 0.8, 0.3]);
        let b = cases(&["y", "z", "w", "v"], &[0.7, 0.35, 0.6, 0.4]);
        let c = compare(&a, &b, &CompareSettings::default()).unwrap();
        assert_eq!(
            (c.design, c.test),
            (Design::Unpaired, RankTest::MannWhitney)
        );
        assert_eq!((c.n_a, c.n_b, c.n_paired), (3, 4, 2));
        assert_eq!(
            c.result,
            rank_tests::mann_whitney_u(&[0.35, 0.4, 0.6, 0.7], &[0.9, 0.8, 0.3]).unwrap()
        );
        assert_eq!((c.failure_rate_a, c.failure_rate_b), (1.0 / 3.0, 0.5));
        // Only shared cases can be worse: y dropped, z rose.
        assert_eq!(c.worst.len(), 1);
        assert_eq!(c.worst[0].case, "y");
    }

    #[test]
    fn verdict_follows_the_interval() {
        let keys = ["1", "2", "3", "4", "5", "6", "7", "8"];
        let a_dice = [0.9, 0.8, 0.85, 0.7, 0.95, 0.75, 0.88, 0.82];
        let b_dice: Vec<f64> = a_dice.iter().map(|d| d - 0.1).collect();
        let (a, b) = (cases(&keys, &a_dice), cases(&keys, &b_dice));
        let settings = CompareSettings {
            worst: 2,
            ..CompareSettings::default()
        };
        let ab = compare(&a, &b, &settings).unwrap();
        assert_eq!(ab.verdict, Verdict::BWorse);
        assert_eq!(ab.worst.len(), 2);
        let ba = compare(&b, &a, &settings).unwrap();
        assert_eq!(ba.verdict, Verdict::BBetter);
        assert!((ab.mean_difference + ba.mean_difference).abs() < 1e-15);
        assert!(ba.worst.is_empty());
        let same = compare(&a, &a, &settings).unwrap();
        assert_eq!(same.verdict, Verdict::NoEvidence);
        assert_eq!(same.result.p_value, 1.0);
    }

    #[test]
    fn bad_input_is_an_error() {
        let ok = cases(&["a"], &[0.5]);
        let settings = CompareSettings::default();
        assert_eq!(compare(&[], &ok, &settings), Err(CompareError::Empty));
        assert_eq!(
            compare(&cases(&["a", "a"], &[0.5, 0.6]), &ok, &settings),
            Err(CompareError::DuplicateCase("a".into()))
        );
        assert!(matches!(
            compare(&ok, &cases(&["b", "a"], &[0.4, f64::NAN]), &settings),
            Err(CompareError::NotFinite { index: 1, .. })
        ));
        let nan_threshold = CompareSettings {
            failure_threshold: f64::NAN,
            ..settings
        };
        assert!(matches!(
            compare(&ok, &ok, &nan_threshold),
            Err(CompareError::InvalidSettings(_))
        ));
    }
}
