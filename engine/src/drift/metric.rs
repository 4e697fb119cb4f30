//! What a drift stream watches: Dice (always), and, for structures whose schema
//! asks for them, lesion-wise detection sensitivity and the expected
//! calibration error of probabilistic predictions.
//!
//! Detectors look for a drop of a score in [0, 1] where higher is better. A
//! metric that is better lower (ECE) is fed as its complement, 1 − ECE, so a
//! rise in ECE is a drop of the score and every detector, limit and
//! calibration is the one Dice streams use.

use serde::{Deserialize, Serialize};

/// A metric a drift stream watches.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Dice of the structure (or the per-case mean Dice); every structure.
    #[default]
    Dice,
    /// Lesion-wise detection sensitivity: detected reference lesions over
    /// reference lesions (multi-instance structures; a case without reference
    /// lesions feeds nothing).
    LesionSensitivity,
    /// Expected calibration error of the structure's probabilities (cases
    /// scored without probabilities feed nothing); lower is better.
    Ece,
}

/// Sensitivity below this is a failure: more than half the reference lesions
/// were missed.
pub const LESION_SENSITIVITY_FAILURE: f64 = 0.5;
/// ECE above this is a failure.
pub const ECE_FAILURE: f64 = 0.1;

impl Metric {
    /// Every metric, in a fixed order.
    pub const ALL: [Metric; 3] = [Metric::Dice, Metric::LesionSensitivity, Metric::Ece];

    /// The stable name used in storage, the API, schemas and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Dice => "dice",
            Metric::LesionSensitivity => "lesion_sensitivity",
            Metric::Ece => "ece",
        }
    }

    /// The metric named by [`Metric::as_str`].
    pub fn parse(name: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Whether a lower value is better (alarms then fire on a rise).
    pub fn lower_is_better(self) -> bool {
        self == Metric::Ece
    }

    /// The score detectors are fed: the value, or its complement where lower
    /// is better. Its own inverse.
    pub fn score(self, value: f64) -> f64 {
        if self.lower_is_better() {
            1.0 - value
        } else {
            value
        }
    }

    /// The value of a score ([`Metric::score`] is its own inverse).
    pub fn value(self, score: f64) -> f64 {
        self.score(score)
    }

    /// The score below which a case is a failure (CUSUM and guard rail): the
    /// structure's Dice failure threshold for Dice, fixed ones otherwise.
    pub fn failure_score(self, dice_threshold: f64) -> f64 {
        match self {
            Metric::Dice => dice_threshold,
            Metric::LesionSensitivity => LESION_SENSITIVITY_FAILURE,
            Metric::Ece => self.score(ECE_FAILURE),
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ece_is_fed_as_its_complement_so_a_rise_is_a_drop() {
        assert_eq!(Metric::Ece.score(0.02), 0.98);
        assert!(Metric::Ece.score(0.2) < Metric::Ece.score(0.02));
        assert_eq!(Metric::Ece.value(Metric::Ece.score(0.25)), 0.25);
        assert_eq!(Metric::LesionSensitivity.score(0.75), 0.75);
        assert_eq!(Metric::Dice.failure_score(0.6), 0.6);
        // ECE 0.15 fails (score 0.85 below 0.9), 0.05 does not.
        let failure = Metric::Ece.failure_score(0.6);
        assert!(Metric::Ece.score(0.15) < failure && Metric::Ece.score(0.05) > failure);
        for m in Metric::ALL {
            assert_eq!(Metric::parse(m.as_str()), Some(m));
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
        }
        assert_eq!(Metric::parse("soft_dice"), None);
    }
}
