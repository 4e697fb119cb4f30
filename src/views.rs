//! The read models the API serves: built by the store from its rows,
//! serialised and documented (OpenAPI) by `http`. They live here, below both,
//! so that store types carry no HTTP derives.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::metrics::StructureMetrics;
use crate::metrics::probabilistic::{Probabilistic, ReliabilityBin};

/// Where a case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    WaitingForReference,
    WaitingForPrediction,
    Queued,
    Scored,
    Failed,
}

/// One stored upload of a case.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Revision {
    pub role: String,
    pub revision: i32,
    pub format: String,
    pub model: Option<String>,
    pub model_version: Option<String>,
    /// A reference's reader pseudonym; none for a prediction.
    pub reader: Option<String>,
    pub received_at: DateTime<Utc>,
    /// The voxels were dropped after the retention period.
    pub purged: bool,
}

/// A case with its latest result.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CaseView {
    pub site: String,
    pub case: String,
    pub status: CaseStatus,
    /// Why the latest job failed, or why it is being retried.
    pub reason: Option<String>,
    pub model: Option<String>,
    pub model_version: Option<String>,
    pub scored_at: Option<DateTime<Utc>>,
    pub mean_dice: Option<f64>,
    /// Generalized Dice score over the latest result's structures (weights
    /// 1 / reference voxels², as MONAI's `GeneralizedDiceScore`).
    pub generalized_dice: Option<f64>,
    pub structures: Vec<StructureView>,
    /// Lesion-wise metrics of the latest result's multi-instance structures.
    pub lesions: Vec<CaseLesions>,
    /// Each model version with a prediction for the case (shadow mode: several),
    /// scored against the same reference, by model and version.
    pub versions: Vec<VersionView>,
    pub revisions: Vec<Revision>,
}

/// One model version's prediction of a case: where its scoring stands and its
/// latest result.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VersionView {
    pub model: String,
    pub model_version: String,
    /// The version's latest prediction revision.
    pub revision: i32,
    pub status: CaseStatus,
    /// Why the version's latest job failed, or why it is being retried.
    pub reason: Option<String>,
    pub scored_at: Option<DateTime<Utc>>,
    pub mean_dice: Option<f64>,
    pub generalized_dice: Option<f64>,
    pub structures: Vec<StructureView>,
    pub lesions: Vec<CaseLesions>,
    /// With references from two or more readers: their agreement on each
    /// structure and the version's latest prediction against them.
    pub readers: Vec<ReaderAgreement>,
}

/// The agreement of a case's readers on one structure, and the AI's with them
/// (docs/compare.md, "Several readers").
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ReaderAgreement {
    pub structure: String,
    /// Mean Dice over all reader pairs.
    pub inter_reader_dice: f64,
    /// The AI's Dice against each reader's latest reference, primary reader first.
    pub ai_vs_reader: Vec<ReaderDice>,
    /// The AI's Dice against the readers' strict-majority consensus.
    pub ai_vs_consensus: f64,
    /// Inter-reader Dice below the structure's `ambiguous_below`.
    pub ambiguous: bool,
    /// The AI's mean Dice against the readers is at least the inter-reader Dice.
    pub within_variability: bool,
}

/// The AI's Dice against one reader.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize, ToSchema)]
pub struct ReaderDice {
    /// The reader's pseudonym.
    pub reader: String,
    pub dice: f64,
}

/// One structure of a stored result: the fields of an entry of `eval`'s JSON
/// `structures` (docs/metrics.md), then its probabilistic scores, as `eval`'s
/// `probabilistic` entries give them. These are null when the prediction kept
/// no probabilities for the structure (anything but a FRACTIONAL PROBABILITY
/// SEG segment); Brier and ECE are also null if not finite.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StructureView {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub metrics: StructureMetrics,
    /// Soft Dice, 2·Σp·g / (Σp + Σg); 1 when both sums are 0.
    pub soft_dice: Option<f64>,
    /// Brier score: mean of (p − g)² over the grid.
    pub brier: Option<f64>,
    /// Expected calibration error over `ece_bins` equal-width bins.
    pub ece: Option<f64>,
    /// Equal-width bins of the ECE (15).
    pub ece_bins: Option<usize>,
    /// Reliability-diagram data: `ece_bins` + 1 bins (the last for p = 1), each
    /// with `lower`, `upper`, `count`, `mean_probability`, `observed_frequency`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub reliability: Option<Vec<ReliabilityBin>>,
}

impl StructureView {
    /// A structure's view from its metrics and probabilistic scores.
    pub fn new(metrics: StructureMetrics, probabilistic: Option<Probabilistic>) -> StructureView {
        let finite = |v: f64| v.is_finite().then_some(v);
        let p = probabilistic.as_ref();
        StructureView {
            metrics,
            soft_dice: p.map(|p| p.soft_dice),
            brier: p.and_then(|p| finite(p.brier)),
            ece: p.and_then(|p| finite(p.ece)),
            ece_bins: p.map(|p| p.ece_bins),
            reliability: probabilistic.map(|p| p.reliability),
        }
    }
}

/// One multi-instance structure of a scored case, lesion by lesion: the
/// fields of an entry of `eval`'s JSON `lesions` (docs/lesions.md).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CaseLesions {
    pub structure: String,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub metrics: serde_json::Map<String, serde_json::Value>,
}

/// A scored case in a listing.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CaseSummary {
    pub site: String,
    pub case: String,
    pub model: String,
    pub model_version: String,
    pub scored_at: DateTime<Utc>,
    pub mean_dice: Option<f64>,
    pub structures: Vec<StructureView>,
}

/// One structure's sample in a baseline.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BaselineStructure {
    pub structure: String,
    /// `dice`, `lesion_sensitivity` or `ece`.
    pub metric: String,
    pub cases: usize,
    /// Mean, and the worse tail's 5 % and 25 % points, in the metric's units
    /// (for ECE, where lower is better, its 95th and 75th percentiles).
    pub mean: f64,
    pub p05: f64,
    pub p25: f64,
    /// Set when the sample is smaller than recommended: what that costs and
    /// how many cases it needs.
    pub note: Option<String>,
}

/// The active baseline of a model version.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BaselineInfo {
    pub model: String,
    pub model_version: String,
    pub version: i32,
    pub source: String,
    pub description: Option<String>,
    /// The key that froze it.
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub structures: Vec<BaselineStructure>,
}

/// A recorded deployment-gate decision of a model version: what was asked, by
/// which key, and the report (docs/compare.md).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct GateDecision {
    pub id: i64,
    pub model: String,
    pub model_version: String,
    /// The site whose results were gated; none for every site.
    pub site: Option<String>,
    /// Only results scored since then were gated.
    pub since: Option<DateTime<Utc>>,
    pub decided_at: DateTime<Utc>,
    /// True when every structure of the schema passed.
    pub passed: bool,
    /// The id of the API key that asked.
    pub key_id: String,
    /// `cases`, the bootstrap's `level`, and `structures`: each with `n`,
    /// `mean_dice`, `lower_bound`, `failure_rate`, the `rule`, `passed`,
    /// `failures` and their `reasons` in words.
    #[schema(value_type = Object)]
    pub report: serde_json::Value,
}

/// A stream and detector that alarmed during an incident.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IncidentStream {
    /// `all` for the pooled stream.
    pub site: String,
    /// `all` for the per-case mean.
    pub structure: String,
    pub detector: String,
    /// Case times of its first and latest alarm.
    pub first_alarm_at: DateTime<Utc>,
    pub last_alarm_at: DateTime<Utc>,
}

/// One incident: a change seen by one or more correlated streams.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IncidentView {
    pub id: i64,
    /// The stream and detector that opened it.
    pub site: String,
    pub model: String,
    pub model_version: String,
    pub structure: String,
    /// What its streams watch: `dice`, `lesion_sensitivity` or `ece`.
    pub metric: String,
    pub detector: String,
    pub opened_at: DateTime<Utc>,
    /// Case time of the opening alarm.
    pub observed_at: DateTime<Utc>,
    /// Case time of the latest alarm of any of its streams.
    pub last_alarm_at: DateTime<Utc>,
    /// Statistic and limit of the opening update.
    pub statistic: f64,
    pub limit: f64,
    /// Every stream and detector that alarmed while it was open.
    pub streams: Vec<IncidentStream>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    pub note: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// `back_in_control` or `new_baseline`.
    pub resolution: Option<String>,
}

/// A group of recent cases sharing an acquisition attribute value.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Stratum {
    /// scanner_manufacturer, scanner_model, protocol or slice_thickness_band.
    pub attribute: String,
    pub value: String,
    pub cases: i64,
    pub mean_dice: f64,
    /// Baseline mean minus the stratum's mean: how much worse it is.
    pub drop: f64,
}

/// The stored history of the stream that opened an incident, checked by
/// replaying it from its baseline's start.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryAudit {
    /// Stored id of the baseline the stream ran on.
    pub baseline_id: i64,
    /// Cases fed to the stream since the baseline started.
    pub cases: usize,
    /// `t` of each case whose stored steps differ from the replay's: empty
    /// when the record is intact.
    pub mismatches: Vec<u32>,
    /// `t` of the first case at which the replay alarms.
    pub first_alarm: Option<u32>,
    /// The detectors that alarmed there.
    pub first_alarm_detectors: Vec<String>,
    /// The stored steps of the 20 cases up to the first alarm (or the last 20).
    pub steps: Vec<HistoryStep>,
}

/// One case of a stream's stored history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryStep {
    pub result_id: i64,
    /// Case time.
    pub observed_at: DateTime<Utc>,
    /// Cases fed to the stream since its baseline started, this one included.
    pub t: u32,
    pub late: bool,
    /// The score the stream was fed: Dice, lesion sensitivity, or 1 − ECE.
    pub dice: f64,
    /// The target in-control run length it was fed under, in cases.
    pub target_cases: f64,
    pub detectors: Vec<HistoryValue>,
}

/// One detector's stored step (4-byte floats; null where not finite).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryValue {
    pub detector: String,
    pub input: Option<f32>,
    pub statistic: Option<f32>,
    pub limit: Option<f32>,
    pub alarm: bool,
}
