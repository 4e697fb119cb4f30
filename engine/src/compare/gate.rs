//! The deployment gate of a model version from its validation results: each
//! structure passes when the one-sided lower confidence bound of its mean Dice
//! is at least its minimum and its failure rate at most its limit.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::bootstrap::{Bootstrap, mean_lower_bound};
use super::{CompareError, failure_rate, mean};
use crate::schema::StructureDef;

/// What one structure must meet.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GateRule {
    /// Least acceptable lower confidence bound of the mean Dice.
    pub min_mean_dice: f64,
    /// Dice strictly below which a case is a failure.
    pub failure_threshold: f64,
    /// Largest acceptable fraction of failures (inclusive).
    pub max_failure_rate: f64,
}

impl GateRule {
    /// The rule of a schema structure: its `gate_min_mean_dice` (default: its
    /// failure threshold), its failure threshold and its
    /// `gate_max_failure_rate` (default 0.1).
    pub fn for_structure(def: &StructureDef) -> GateRule {
        GateRule {
            min_mean_dice: def.gate_min_mean_dice(),
            failure_threshold: def.failure(),
            max_failure_rate: def.gate_max_failure_rate(),
        }
    }

    fn check(&self) -> Result<(), CompareError> {
        let numbers = [
            self.min_mean_dice,
            self.failure_threshold,
            self.max_failure_rate,
        ];
        if numbers.iter().all(|v| v.is_finite()) {
            Ok(())
        } else {
            Err(CompareError::InvalidSettings(
                "gate rule values must be numbers",
            ))
        }
    }
}

/// One structure's validation Dice and its rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StructureResults<'a> {
    /// Structure name, as in the schema.
    pub name: &'a str,
    /// Dice of each validation case.
    pub dice: &'a [f64],
    /// What it must meet.
    pub rule: GateRule,
}

/// Why a structure fails the gate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum GateFailure {
    /// No validation cases: nothing shows the structure is good enough.
    NoCases,
    /// The lower confidence bound of the mean Dice is below the minimum.
    LowMeanDice {
        /// The bound.
        lower_bound: f64,
        /// Its one-sided confidence level.
        level: f64,
        /// The rule's minimum.
        min: f64,
    },
    /// Too many cases below the failure threshold.
    HighFailureRate {
        /// Fraction of failures.
        rate: f64,
        /// The rule's limit.
        max: f64,
    },
}

impl fmt::Display for GateFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GateFailure::NoCases => write!(f, "no validation cases"),
            GateFailure::LowMeanDice {
                lower_bound,
                level,
                min,
            } => write!(
                f,
                "lower {}% bound of mean Dice {lower_bound:.4} is below {min}",
                level * 100.0
            ),
            GateFailure::HighFailureRate { rate, max } => {
                write!(f, "failure rate {rate:.4} is above {max}")
            }
        }
    }
}

/// The gate's finding for one structure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StructureGate {
    /// Structure name.
    pub name: String,
    /// Number of validation cases.
    pub n: usize,
    /// Mean Dice (none without cases).
    pub mean_dice: Option<f64>,
    /// One-sided lower confidence bound of the mean Dice.
    pub lower_bound: Option<f64>,
    /// Fraction of cases below the failure threshold.
    pub failure_rate: Option<f64>,
    /// The rule it was held to.
    pub rule: GateRule,
    /// Why it fails; empty when it passes.
    pub failures: Vec<GateFailure>,
}

/// The gate of a model version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateReport {
    /// True when no structure fails.
    pub passed: bool,
    /// Every structure, in the order given.
    pub structures: Vec<StructureGate>,
}

/// Gates a model version. The lower bound is one-sided at `bootstrap.level`
/// ([`mean_lower_bound`] of the values in ascending order, so the same values
/// in any order give the same decision); every structure's bootstrap starts
/// from the same seed, so a structure's finding does not depend on the others.
pub fn gate(
    structures: &[StructureResults],
    bootstrap: &Bootstrap,
) -> Result<GateReport, CompareError> {
    let mut report = Vec::with_capacity(structures.len());
    for s in structures {
        s.rule.check()?;
        let mut finding = StructureGate {
            name: s.name.to_owned(),
            n: s.dice.len(),
            mean_dice: None,
            lower_bound: None,
            failure_rate: None,
            rule: s.rule,
            failures: Vec::new(),
        };
        if s.dice.is_empty() {
            finding.failures.push(GateFailure::NoCases);
        } else {
            // Resampled in ascending order, so that the order the results
            // were read in never changes a decision.
            let mut sorted = s.dice.to_vec();
            sorted.sort_by(f64::total_cmp);
            let lower_bound = mean_lower_bound(&sorted, bootstrap)?;
            let rate = failure_rate(s.dice, s.rule.failure_threshold);
            if lower_bound < s.rule.min_mean_dice {
                finding.failures.push(GateFailure::LowMeanDice {
                    lower_bound,
                    level: bootstrap.level,
                    min: s.rule.min_mean_dice,
                });
            }
            if rate > s.rule.max_failure_rate {
                finding.failures.push(GateFailure::HighFailureRate {
                    rate,
                    max: s.rule.max_failure_rate,
                });
            }
            finding.mean_dice = Some(mean(s.dice));
            finding.lower_bound = Some(lower_bound);
            finding.failure_rate = Some(rate);
        }
        report.push(finding);
    }
    Ok(GateReport {
        passed: report.iter().all(|s| s.failures.is_empty()),
        structures: report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: GateRule = GateRule {
        min_mean_dice: 0.8,
        failure_threshold: 0.5,
        max_failure_rate: 0.1,
    };

    fn one(dice: &[f64], rule: GateRule) -> StructureGate {
        let s = StructureResults {
            name: "liver",
            dice,
            rule,
        };
        let mut report = gate(&[s], &Bootstrap::default()).unwrap();
        assert_eq!(report.passed, report.structures[0].failures.is_empty());
        report.structures.remove(0)
    }

    #[test]
    fn good_structure_passes() {
        let g = one(&[0.9, 0.92, 0.88, 0.91, 0.93, 0.89], RULE);
        assert!(g.failures.is_empty());
        assert_eq!(g.n, 6);
        let (mean, bound) = (g.mean_dice.unwrap(), g.lower_bound.unwrap());
        assert!(0.8 < bound && bound < mean, "{bound} {mean}");
        assert_eq!(g.failure_rate, Some(0.0));
    }

    /// Mean 0.82 passes a plain mean check, but with these few, spread-out
    /// cases the 95 % lower bound is well below 0.8.
    #[test]
    fn uncertain_mean_fails_on_its_lower_bound() {
        let dice = [0.95, 0.6, 0.97, 0.7, 0.88];
        let g = one(&dice, RULE);
        assert!(g.mean_dice.unwrap() > 0.8);
        let bound = g.lower_bound.unwrap();
        assert_eq!(
            g.failures,
            vec![GateFailure::LowMeanDice {
                lower_bound: bound,
                level: 0.95,
                min: 0.8
            }]
        );
        assert!(bound < 0.75);
    }

    /// The service reads results in the order they were scored, which varies
    /// from run to run; the decision and its bound must not.
    #[test]
    fn the_order_of_the_cases_changes_nothing() {
        let dice = [0.95, 0.6, 0.97, 0.7, 0.88, 0.91, 0.42, 0.83];
        let mut reversed = dice;
        reversed.reverse();
        let mut rotated = dice;
        rotated.rotate_left(3);
        let bound = |d: &[f64]| one(d, RULE).lower_bound.unwrap();
        assert_eq!(bound(&dice).to_bits(), bound(&reversed).to_bits());
        assert_eq!(bound(&dice).to_bits(), bound(&rotated).to_bits());
    }

    /// 2 of 10 cases below 0.5: rate 0.2 > 0.1, and the mean fails too.
    #[test]
    fn each_reason_is_named() {
        let dice = [0.9, 0.95, 0.3, 0.92, 0.91, 0.45, 0.93, 0.9, 0.94, 0.96];
        let g = one(&dice, RULE);
        assert_eq!(g.failure_rate, Some(0.2));
        assert_eq!(g.failures.len(), 2);
        assert_eq!(
            g.failures[1],
            GateFailure::HighFailureRate {
                rate: 0.2,
                max: 0.1
            }
        );
        assert_eq!(
            g.failures[1].to_string(),
            "failure rate 0.2000 is above 0.1"
        );
        assert!(
            g.failures[0]
                .to_string()
                .starts_with("lower 95% bound of mean Dice 0.")
        );
        // At the limit passes: the limit is inclusive.
        let relaxed = GateRule {
            min_mean_dice: 0.5,
            max_failure_rate: 0.2,
            ..RULE
        };
        assert!(one(&dice, relaxed).failures.is_empty());
    }

    #[test]
    fn version_fails_when_any_structure_fails() {
        let good = [0.9, 0.92, 0.88, 0.91];
        let structures = [
            StructureResults {
                name: "liver",
                dice: &good,
                rule: RULE,
            },
            StructureResults {
                name: "spleen",
                dice: &[],
                rule: RULE,
            },
        ];
        let report = gate(&structures, &Bootstrap::default()).unwrap();
        assert!(!report.passed);
        assert!(report.structures[0].failures.is_empty());
        assert_eq!(report.structures[1].name, "spleen");
        assert_eq!(report.structures[1].failures, vec![GateFailure::NoCases]);
        assert_eq!(report.structures[1].mean_dice, None);
        assert_eq!(report.structures[1].rule, RULE);
    }

    #[test]
    fn rule_from_the_schema() {
        let rule = |json: &str| {
            let def: StructureDef = serde_json::from_str(json).unwrap();
            let rule = GateRule::for_structure(&def);
            (
                rule.min_mean_dice,
                rule.failure_threshold,
                rule.max_failure_rate,
            )
        };
        assert_eq!(
            rule(r#"{"label": 1, "name": "liver", "failure_threshold": 0.7}"#),
            (0.7, 0.7, 0.1)
        );
        assert_eq!(
            rule(
                r#"{"label": 1, "name": "liver", "failure_threshold": 0.7,
                    "gate_min_mean_dice": 0.85, "gate_max_failure_rate": 0.05}"#
            ),
            (0.85, 0.7, 0.05)
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        let nan = StructureResults {
            name: "liver",
            dice: &[0.9, f64::NAN],
            rule: RULE,
        };
        assert!(matches!(
            gate(&[nan], &Bootstrap::default()),
            Err(CompareError::NotFinite { index: 1, .. })
        ));
        let bad_rule = StructureResults {
            name: "liver",
            dice: &[0.9],
            rule: GateRule {
                max_failure_rate: f64::NAN,
                ..RULE
            },
        };
        assert!(matches!(
            gate(&[bad_rule], &Bootstrap::default()),
            Err(CompareError::InvalidSettings(_))
        ));
    }
}
