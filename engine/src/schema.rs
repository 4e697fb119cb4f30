//! The structure schema of a model version: which label values or segment codes
//! are which structures, with their NSD tolerance, failure threshold and
//! deployment-gate limits.

use serde::{Deserialize, Serialize};

use crate::drift::Metric;
use crate::metrics::lesions::{LesionSettings, Matching};

/// Default NSD tolerance when a structure does not set one, in mm.
pub const DEFAULT_TOLERANCE_MM: f64 = 1.0;
/// Default Dice below which a case counts as a failure of the structure.
pub const DEFAULT_FAILURE_THRESHOLD: f64 = 0.5;
/// Default largest fraction of a version's validation cases below the failure
/// threshold that its deployment gate allows.
pub const DEFAULT_GATE_MAX_FAILURE_RATE: f64 = 0.1;

/// Most dilation iterations a schema or `eval` accepts for BraTS 2023 matching.
pub const MAX_DILATION: u32 = 32;

/// One structure of a schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructureDef {
    /// Label value in label maps (NIfTI).
    #[serde(default)]
    pub label: Option<u16>,
    /// `SCHEME:VALUE` (with `^SCHEME:VALUE` modifier) of DICOM SEG segments.
    #[serde(default)]
    pub code: Option<String>,
    /// Structure name shown in results, metrics and dashboards.
    pub name: String,
    /// NSD tolerance in mm.
    #[serde(default)]
    pub tolerance_mm: Option<f64>,
    /// Dice below which a case counts as a failure (Bernoulli CUSUM).
    #[serde(default)]
    pub failure_threshold: Option<f64>,
    /// Least lower confidence bound of the mean Dice with which a version
    /// passes its deployment gate (default: the failure threshold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_min_mean_dice: Option<f64>,
    /// Largest fraction of validation cases below the failure threshold with
    /// which a version passes its deployment gate (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_max_failure_rate: Option<f64>,
    /// Inter-reader Dice below which a case with several readers is ambiguous
    /// (default 0.75, `compare::readers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ambiguous_below: Option<f64>,
    /// Made of separate instances (lesions, nodules, metastases): `eval` also
    /// scores it lesion by lesion (`metrics::lesions`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub instances: bool,
    /// Edges of the reference-volume bands its results are stratified by, in
    /// mL, ascending (default: `metrics::strata`'s for structures or lesions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_bands_ml: Option<Vec<f64>>,
    /// How a multi-instance structure's lesions are found and matched
    /// (default: 26-connectivity, IoU ≥ 0.5); needs `instances`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lesion_matching: Option<LesionSettings>,
    /// Metrics the drift module watches besides Dice (always watched):
    /// `lesion_sensitivity` (needs `instances`) and `ece`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift_metrics: Vec<Metric>,
}

impl StructureDef {
    /// NSD tolerance, or the default.
    pub fn tolerance(&self) -> f64 {
        self.tolerance_mm.unwrap_or(DEFAULT_TOLERANCE_MM)
    }

    /// Edges of its size bands in mL: the schema's, else the default for a
    /// multi-instance structure (lesions) or a single one.
    pub fn volume_bands(&self) -> &[f64] {
        match &self.volume_bands_ml {
            Some(edges) => edges,
            None if self.instances => &crate::metrics::strata::LESION_BANDS_ML,
            None => &crate::metrics::strata::STRUCTURE_BANDS_ML,
        }
    }

    /// Failure threshold, or the default.
    pub fn failure(&self) -> f64 {
        self.failure_threshold.unwrap_or(DEFAULT_FAILURE_THRESHOLD)
    }

    /// The deployment gate's minimum of the mean Dice's lower bound, or the
    /// failure threshold.
    pub fn gate_min_mean_dice(&self) -> f64 {
        self.gate_min_mean_dice.unwrap_or_else(|| self.failure())
    }

    /// The deployment gate's limit on the failure rate, or the default.
    pub fn gate_max_failure_rate(&self) -> f64 {
        self.gate_max_failure_rate
            .unwrap_or(DEFAULT_GATE_MAX_FAILURE_RATE)
    }

    /// The inter-reader Dice below which a case is ambiguous, or the default.
    pub fn ambiguous_below(&self) -> f64 {
        self.ambiguous_below
            .unwrap_or(crate::compare::readers::DEFAULT_AMBIGUOUS_BELOW)
    }
}

/// What to do with a label or code that the schema does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownPolicy {
    /// Refuse the segmentation, naming the structure.
    #[default]
    Reject,
    /// Leave the structure out.
    Ignore,
}

/// The structures of a model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    /// The structures, each with a label, a code or both; results follow this order.
    pub structures: Vec<StructureDef>,
    /// What to do with labels or codes not listed (reject by default).
    #[serde(default)]
    pub unknown_labels: UnknownPolicy,
}

/// Why a schema is not usable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid structure schema: {0}")]
pub struct SchemaError(pub String);

impl Schema {
    /// Checks that every structure is identifiable and its settings are sane.
    pub fn validate(&self) -> Result<(), SchemaError> {
        let err = |m: String| Err(SchemaError(m));
        if self.structures.is_empty() {
            return err("no structures".into());
        }
        for (i, s) in self.structures.iter().enumerate() {
            let what = format!("structure {} ({:?})", i + 1, s.name);
            if s.name.trim().is_empty() || s.name.len() > 128 {
                return err(format!("{what}: name must have 1 to 128 characters"));
            }
            if s.label.is_none() && s.code.is_none() {
                return err(format!("{what}: give a label, a code or both"));
            }
            if s.label == Some(0) {
                return err(format!("{what}: label 0 is background"));
            }
            if let Some(code) = &s.code
                && !valid_code(code)
            {
                return err(format!(
                    "{what}: code {code:?} is not SCHEME:VALUE[^SCHEME:VALUE]"
                ));
            }
            if s.tolerance_mm.is_some_and(|t| !(t.is_finite() && t >= 0.0)) {
                return err(format!("{what}: tolerance_mm must be a number ≥ 0"));
            }
            let fractions = [
                ("failure_threshold", s.failure_threshold),
                ("gate_min_mean_dice", s.gate_min_mean_dice),
                ("gate_max_failure_rate", s.gate_max_failure_rate),
                ("ambiguous_below", s.ambiguous_below),
            ];
            for (field, value) in fractions {
                if value.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
                    return err(format!("{what}: {field} must be between 0 and 1"));
                }
            }
            if let Some(edges) = &s.volume_bands_ml {
                let ascending = edges.windows(2).all(|w| w[0] < w[1]);
                let positive = edges.iter().all(|e| e.is_finite() && *e > 0.0);
                if edges.is_empty() || edges.len() > 16 || !ascending || !positive {
                    return err(format!(
                        "{what}: volume_bands_ml must be 1 to 16 ascending volumes above 0"
                    ));
                }
            }
            if let Some(settings) = &s.lesion_matching {
                lesion_matching_problem(s.instances, settings).map_or(Ok(()), |problem| {
                    err(format!("{what}: lesion_matching {problem}"))
                })?;
            }
            if let Some(problem) = drift_metrics_problem(s) {
                return err(format!("{what}: drift_metrics {problem}"));
            }
            for other in &self.structures[..i] {
                if s.label.is_some() && s.label == other.label {
                    return err(format!(
                        "{what}: label {} is listed twice",
                        s.label.unwrap_or_default()
                    ));
                }
                if s.code.is_some() && s.code == other.code {
                    return err(format!(
                        "{what}: code {} is listed twice",
                        s.code.as_deref().unwrap_or_default()
                    ));
                }
                if s.name == other.name {
                    return err(format!("{what}: name {:?} is listed twice", s.name));
                }
            }
        }
        Ok(())
    }

    /// The structure with this label value.
    pub fn by_label(&self, label: u16) -> Option<&StructureDef> {
        self.structures.iter().find(|s| s.label == Some(label))
    }

    /// The structure with this segment code.
    pub fn by_code(&self, code: &str) -> Option<&StructureDef> {
        self.structures
            .iter()
            .find(|s| s.code.as_deref() == Some(code))
    }
}

/// What is wrong with a structure's drift metrics, if anything.
fn drift_metrics_problem(s: &StructureDef) -> Option<String> {
    for (i, metric) in s.drift_metrics.iter().enumerate() {
        match metric {
            Metric::Dice => return Some("need not list dice: it is always watched".into()),
            Metric::LesionSensitivity if !s.instances => {
                return Some("lesion_sensitivity needs \"instances\": true".into());
            }
            _ if s.drift_metrics[..i].contains(metric) => {
                return Some(format!("list {metric} twice"));
            }
            _ => {}
        }
    }
    None
}

/// What is wrong with a structure's lesion settings, if anything.
fn lesion_matching_problem(instances: bool, settings: &LesionSettings) -> Option<String> {
    if !instances {
        return Some("needs \"instances\": true".into());
    }
    if !(settings.min_reference_mm3.is_finite() && settings.min_reference_mm3 >= 0.0) {
        return Some("min_reference_mm3 must be a number ≥ 0".into());
    }
    match settings.matching {
        Matching::Iou { threshold } if !(0.0..=1.0).contains(&threshold) => {
            Some("threshold must be between 0 and 1".into())
        }
        Matching::Brats2023 { dilation } if dilation > MAX_DILATION => {
            Some(format!("dilation must be at most {MAX_DILATION}"))
        }
        _ => None,
    }
}

/// `SCHEME:VALUE`, optionally followed by `^SCHEME:VALUE`.
fn valid_code(code: &str) -> bool {
    let part = |p: &str| {
        p.split_once(':').is_some_and(|(scheme, value)| {
            !scheme.is_empty() && !value.is_empty() && !p.chars().any(char::is_whitespace)
        })
    };
    let mut parts = code.split('^');
    let first = parts.next().is_some_and(part);
    let rest: Vec<&str> = parts.collect();
    first && rest.len() <= 1 && rest.iter().all(|p| part(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(json: &str) -> Result<(), SchemaError> {
        serde_json::from_str::<Schema>(json).unwrap().validate()
    }

    #[test]
    fn accepts_labels_codes_and_defaults() {
        let s: Schema = serde_json::from_str(
            r#"{"structures": [
                {"label": 1, "code": "SCT:10200004", "name": "liver", "tolerance_mm": 2.0},
                {"code": "SCT:64033007^SCT:24028007", "name": "kidney_right", "failure_threshold": 0.6}
            ], "unknown_labels": "ignore"}"#,
        )
        .unwrap();
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(s.by_label(1).unwrap().tolerance(), 2.0);
        assert_eq!(
            s.by_code("SCT:64033007^SCT:24028007").unwrap().failure(),
            0.6
        );
        assert_eq!(s.by_label(1).unwrap().failure(), DEFAULT_FAILURE_THRESHOLD);
        assert_eq!(s.unknown_labels, UnknownPolicy::Ignore);
        // Gate limits: the failure threshold and 0.1 unless set.
        let kidney = s.by_code("SCT:64033007^SCT:24028007").unwrap();
        assert_eq!(
            (kidney.gate_min_mean_dice(), kidney.gate_max_failure_rate()),
            (0.6, DEFAULT_GATE_MAX_FAILURE_RATE)
        );
        assert_eq!(s.by_label(1).unwrap().gate_min_mean_dice(), 0.5);
        // Size bands: the organ default, the lesion default, or the schema's.
        let bands = |json: &str| {
            serde_json::from_str::<StructureDef>(json)
                .unwrap()
                .volume_bands()
                .to_vec()
        };
        use crate::metrics::strata::{LESION_BANDS_ML, STRUCTURE_BANDS_ML};
        assert_eq!(
            bands(r#"{"label": 1, "name": "liver"}"#),
            STRUCTURE_BANDS_ML
        );
        assert_eq!(
            bands(r#"{"label": 2, "name": "mets", "instances": true}"#),
            LESION_BANDS_ML
        );
        assert_eq!(
            bands(r#"{"label": 2, "name": "mets", "volume_bands_ml": [0.5]}"#),
            [0.5]
        );
        // BraTS-GLI lesion settings for a multi-instance structure.
        let s: Schema = serde_json::from_str(
            r#"{"structures": [{"label": 3, "name": "enhancing", "instances": true,
                "lesion_matching": {"matching": {"kind": "brats2023", "dilation": 3}, "min_reference_mm3": 50}}]}"#,
        )
        .unwrap();
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(
            s.structures[0].lesion_matching,
            LesionSettings::brats2023("GLI")
        );
    }

    #[test]
    fn names_the_problem() {
        let cases = [
            (r#"{"structures": []}"#, "no structures"),
            (
                r#"{"structures": [{"name": "x"}]}"#,
                "give a label, a code or both",
            ),
            (
                r#"{"structures": [{"label": 0, "name": "x"}]}"#,
                "background",
            ),
            (
                r#"{"structures": [{"code": "liver", "name": "x"}]}"#,
                "is not SCHEME:VALUE",
            ),
            (
                r#"{"structures": [{"label": 1, "name": "x", "tolerance_mm": -1}]}"#,
                "tolerance_mm",
            ),
            (
                r#"{"structures": [{"label": 1, "name": "x", "failure_threshold": 2}]}"#,
                "failure_threshold",
            ),
            (
                r#"{"structures": [{"label": 1, "name": "x", "gate_min_mean_dice": 1.5}]}"#,
                "structure 1 (\"x\"): gate_min_mean_dice must be between 0 and 1",
            ),
            (
                r#"{"structures": [{"label": 1, "name": "x", "gate_max_failure_rate": -0.1}]}"#,
                "structure 1 (\"x\"): gate_max_failure_rate must be between 0 and 1",
            ),
            (
                r#"{"structures": [{"label": 1, "name": "x", "ambiguous_below": 1.5}]}"#,
                "structure 1 (\"x\"): ambiguous_below must be between 0 and 1",
            ),
            (
                r#"{"structures": [{"label": 1, "name": "x", "volume_bands_ml": [10, 1]}]}"#,
                "volume_bands_ml",
            ),
            (
                r#"{"structures": [{"label": 1, "name": "x", "lesion_matching": {}}]}"#,
                "lesion_matching needs",
            ),
            (
                r#"{"structures": [{"label": 1, "name": "x", "instances": true, "lesion_matching": {"matching": {"kind": "brats2023", "dilation": 33}}}]}"#,
                "dilation must be at most 32",
            ),
            (
                r#"{"structures": [{"label": 1, "name": "x", "instances": true, "lesion_matching": {"min_reference_mm3": -1}}]}"#,
                "min_reference_mm3",
            ),
            (
                r#"{"structures": [{"label": 1, "name": "x", "instances": true, "lesion_matching": {"matching": {"kind": "iou", "threshold": 1.5}}}]}"#,
                "threshold",
            ),
            (
                r#"{"structures": [{"label": 1, "name": "x", "drift_metrics": ["lesion_sensitivity"]}]}"#,
                "structure 1 (\"x\"): drift_metrics lesion_sensitivity needs \"instances\": true",
            ),
            (
                r#"{"structures": [{"label": 1, "name": "x", "drift_metrics": ["dice"]}]}"#,
                "always watched",
            ),
            (
                r#"{"structures": [{"label": 1, "name": "x", "drift_metrics": ["ece", "ece"]}]}"#,
                "list ece twice",
            ),
            (
                r#"{"structures": [{"label": 1, "name": "a"}, {"label": 1, "name": "b"}]}"#,
                "label 1 is listed twice",
            ),
            (
                r#"{"structures": [{"label": 1, "name": "a"}, {"label": 2, "name": "a"}]}"#,
                "listed twice",
            ),
        ];
        for (json, problem) in cases {
            let err = schema(json).unwrap_err();
            assert!(err.to_string().contains(problem), "{json}: {err}");
        }
        assert!(serde_json::from_str::<Schema>(r#"{"structures": [], "extra": 1}"#).is_err());
        let unknown = r#"{"structures": [{"label": 1, "name": "x", "drift_metrics": ["recall"]}]}"#;
        assert!(serde_json::from_str::<Schema>(unknown).is_err());
    }

    #[test]
    fn drift_metrics_are_opt_in_per_structure() {
        let s: Schema = serde_json::from_str(
            r#"{"structures": [{"label": 1, "name": "liver", "drift_metrics": ["ece"]},
                {"label": 2, "name": "mets", "instances": true, "drift_metrics": ["lesion_sensitivity", "ece"]},
                {"label": 3, "name": "spleen"}]}"#,
        )
        .unwrap();
        assert_eq!(s.validate(), Ok(()));
        let metrics: Vec<&[Metric]> = s.structures.iter().map(|s| &s.drift_metrics[..]).collect();
        assert_eq!(
            metrics,
            [
                &[Metric::Ece][..],
                &[Metric::LesionSensitivity, Metric::Ece],
                &[]
            ]
        );
    }

    #[test]
    fn gate_limits_are_fractions_and_optional() {
        let mut s: Schema = serde_json::from_str(
            r#"{"structures": [{"label": 1, "name": "liver",
                "gate_min_mean_dice": 1, "gate_max_failure_rate": 0}]}"#,
        )
        .unwrap();
        assert_eq!(s.validate(), Ok(()));
        let liver = &s.structures[0];
        assert_eq!(
            (liver.gate_min_mean_dice(), liver.gate_max_failure_rate()),
            (1.0, 0.0)
        );
        s.structures[0].gate_min_mean_dice = Some(f64::NAN);
        assert!(s.validate().is_err());
        // A schema without them reads and writes as before.
        let plain = r#"{"label":1,"code":null,"name":"liver","tolerance_mm":null,"failure_threshold":null}"#;
        let def: StructureDef = serde_json::from_str(plain).unwrap();
        assert_eq!(serde_json::to_string(&def).unwrap(), plain);
    }
}
