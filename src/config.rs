//! Service configuration: a TOML file (optional) overridden by environment
//! variables `SEGWATCH_*`.

use std::path::Path;

use serde::Deserialize;

use crate::formats;
use crate::metrics::SurfaceMode;

/// Everything `segwatch serve` can be told.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// PostgreSQL connection string (`SEGWATCH_DATABASE_URL`); empty (the
    /// default) keeps everything in the embedded store under `data_dir`.
    pub database_url: String,
    /// Directory of the embedded store, used when `database_url` is empty
    /// (`SEGWATCH_DATA_DIR`, `--data-dir`); relative paths are relative to the
    /// working directory.
    pub data_dir: std::path::PathBuf,
    /// Address to listen on (`SEGWATCH_LISTEN`).
    pub listen: String,
    /// Apply migrations at start (`SEGWATCH_MIGRATE`).
    pub migrate: bool,
    /// `text` or `json` logs (`SEGWATCH_LOG_FORMAT`).
    pub log_format: String,
    pub limits: LimitsConfig,
    pub workers: WorkersConfig,
    pub scoring: ScoringConfig,
    pub drift: DriftConfig,
    pub dicomweb: DicomWebConfig,
    /// Days a scored segmentation is kept for drill-down before its voxels are
    /// purged (results are kept) (`SEGWATCH_RETENTION_DAYS`).
    pub retention_days: u32,
    /// Days a case is kept after its last upload and score: then it goes with
    /// its uploads, jobs, results and detector history; 0 keeps every case
    /// (`SEGWATCH_RESULTS_RETENTION_DAYS`).
    pub results_retention_days: u32,
    /// Days a resolved incident is kept after its resolution; 0 keeps every
    /// incident (`SEGWATCH_INCIDENTS_RETENTION_DAYS`).
    pub incidents_retention_days: u32,
}

/// Sizes the service accepts.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest upload body after transfer decompression, in bytes.
    pub max_upload_bytes: usize,
    /// Largest image, in voxels.
    pub max_voxels: u64,
    /// Largest decompressed voxel data, in bytes.
    pub max_decompressed_bytes: u64,
    /// Jobs waiting or running beyond which uploads get 503.
    pub max_queue_depth: i64,
    /// Seconds a request may take.
    pub request_timeout_secs: u64,
    /// Seconds a client may take to send a request's headers, and a
    /// keep-alive connection may stay idle (`SEGWATCH_HEADER_READ_TIMEOUT_SECS`).
    pub header_read_timeout_secs: u64,
    /// Structures (labels or segments) one upload may hold: each is a set of
    /// metric series, so this bounds what one key can add (`SEGWATCH_MAX_STRUCTURES`).
    pub max_structures: usize,
    /// Bytes of request bodies held in memory at once, across requests; beyond
    /// it requests get 503 with Retry-After (`SEGWATCH_MAX_BODY_MEMORY_BYTES`).
    pub max_body_memory_bytes: u64,
    /// Models with a prediction in the last [`ACTIVE_DAYS`] days, across the
    /// deployment; a prediction for one more gets 422 (`SEGWATCH_MAX_MODELS`).
    pub max_models: u32,
    /// Versions of one model with a prediction in the last [`ACTIVE_DAYS`]
    /// days; a prediction for one more gets 422 (`SEGWATCH_MAX_MODEL_VERSIONS`).
    pub max_model_versions: u32,
}

/// The environment variables [`Config::load`] reads, with the setting each
/// overrides (listed by `segwatch serve --help`; a test keeps it complete).
pub const ENV_VARS: [(&str, &str); 33] = [
    ("SEGWATCH_CONFIG", "the configuration file"),
    ("SEGWATCH_DATABASE_URL", "database_url"),
    ("SEGWATCH_DATA_DIR", "data_dir"),
    ("SEGWATCH_LISTEN", "listen"),
    ("SEGWATCH_MIGRATE", "migrate"),
    ("SEGWATCH_LOG_FORMAT", "log_format"),
    ("SEGWATCH_RETENTION_DAYS", "retention_days"),
    ("SEGWATCH_RESULTS_RETENTION_DAYS", "results_retention_days"),
    (
        "SEGWATCH_INCIDENTS_RETENTION_DAYS",
        "incidents_retention_days",
    ),
    ("SEGWATCH_MAX_UPLOAD_BYTES", "limits.max_upload_bytes"),
    ("SEGWATCH_MAX_VOXELS", "limits.max_voxels"),
    (
        "SEGWATCH_HEADER_READ_TIMEOUT_SECS",
        "limits.header_read_timeout_secs",
    ),
    ("SEGWATCH_MAX_STRUCTURES", "limits.max_structures"),
    (
        "SEGWATCH_MAX_BODY_MEMORY_BYTES",
        "limits.max_body_memory_bytes",
    ),
    ("SEGWATCH_MAX_MODELS", "limits.max_models"),
    ("SEGWATCH_MAX_MODEL_VERSIONS", "limits.max_model_versions"),
    ("SEGWATCH_MAX_QUEUE_DEPTH", "limits.max_queue_depth"),
    ("SEGWATCH_WORKER_THREADS", "workers.threads"),
    ("SEGWATCH_WORKER_CONCURRENCY", "workers.concurrency"),
    (
        "SEGWATCH_MEMORY_BUDGET_VOXELS",
        "workers.memory_budget_voxels",
    ),
    ("SEGWATCH_LEASE_SECS", "workers.lease_secs"),
    ("SEGWATCH_POLL_INTERVAL_MS", "workers.poll_interval_ms"),
    ("SEGWATCH_WORKERS_DISABLED", "workers.disabled"),
    (
        "SEGWATCH_DRIFT_FALSE_ALERTS_PER_MONTH",
        "drift.false_alerts_per_month",
    ),
    ("SEGWATCH_DRIFT_ARL0", "drift.arl0"),
    ("SEGWATCH_DRIFT_LATENESS_SECS", "drift.lateness_secs"),
    (
        "SEGWATCH_DRIFT_INCIDENT_HOLD_DAYS",
        "drift.incident_hold_days",
    ),
    ("SEGWATCH_REFRESH_SECS", "drift.refresh_secs"),
    (
        "SEGWATCH_DRIFT_RETIRE_AFTER_DAYS",
        "drift.retire_after_days",
    ),
    (
        "SEGWATCH_DRIFT_MAX_DETAILED_STREAMS",
        "drift.max_detailed_streams",
    ),
    (
        "SEGWATCH_DRIFT_EXCLUDE_AMBIGUOUS",
        "drift.exclude_ambiguous",
    ),
    (
        "SEGWATCH_ROLLING_WINDOWS_DAYS",
        "drift.rolling_windows_days (comma-separated)",
    ),
    ("SEGWATCH_CASE_KEY_SECRET", "dicomweb.case_key_secret"),
];

/// Days after its last prediction a model version stops counting as active.
pub const ACTIVE_DAYS: u32 = 30;

/// The job workers and the compute pool.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WorkersConfig {
    /// Threads of the compute pool (0: one per core).
    pub threads: usize,
    /// Jobs scored at once (0: as many as threads).
    pub concurrency: usize,
    /// Voxels decoded and scored at once, across uploads and jobs.
    pub memory_budget_voxels: u64,
    /// Seconds a claimed job stays leased without a heartbeat.
    pub lease_secs: u64,
    /// Attempts before a job fails for good.
    pub max_attempts: i32,
    /// Polling interval when no notification arrives, in milliseconds.
    pub poll_interval_ms: u64,
    /// Run no workers (an API-only replica).
    pub disabled: bool,
}

/// DICOMweb STOW-RS ingest.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DicomWebConfig {
    /// Secret keying the hash that turns StudyInstanceUID and the referenced
    /// SeriesInstanceUID into a case key (`SEGWATCH_CASE_KEY_SECRET`).
    pub case_key_secret: Option<String>,
    /// Rules that decide the role before SegmentAlgorithmType does, for viewers
    /// that keep AUTOMATIC on edited segments; the first match wins.
    pub role_rules: Vec<RoleRule>,
}

/// "If `attribute` contains `contains` (case-insensitive), the SEG is a `role`."
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoleRule {
    /// series_description, manufacturer, manufacturer_model_name, content_label,
    /// algorithm_name or software_versions.
    pub attribute: String,
    pub contains: String,
    /// prediction or reference.
    pub role: String,
}

/// Drift detection and the metrics refreshed from the database.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DriftConfig {
    /// Expected false alerts a month for the whole deployment, all detectors
    /// and streams together; every limit follows from it
    /// (`SEGWATCH_DRIFT_FALSE_ALERTS_PER_MONTH`).
    pub false_alerts_per_month: f64,
    /// Expert override of the budget: the same in-control run length in cases
    /// for every stream and detector, 100 to 10⁹ (`SEGWATCH_DRIFT_ARL0`).
    pub arl0: Option<f64>,
    /// Results are fed to the detectors in case-time order once they are this
    /// many seconds old; a result scored later than that is fed on arrival
    /// and marked late (`SEGWATCH_DRIFT_LATENESS_SECS`).
    pub lateness_secs: u64,
    /// An incident closes after this many days of case time without an alarm
    /// on any of its streams (`SEGWATCH_DRIFT_INCIDENT_HOLD_DAYS`).
    pub incident_hold_days: f64,
    /// Seconds between refreshes of the quality gauges (`SEGWATCH_REFRESH_SECS`).
    pub refresh_secs: u64,
    /// Rolling mean Dice windows in days, each exported as
    /// `segwatch_rolling_dice_<N>d_ratio`; 7 is required (guard rail, rules and
    /// dashboards) (`SEGWATCH_ROLLING_WINDOWS_DAYS`, comma-separated).
    pub rolling_windows_days: Vec<u32>,
    /// Detector gauges of streams not fed for this many days leave `/metrics`:
    /// a retired model version stops costing series
    /// (`SEGWATCH_DRIFT_RETIRE_AFTER_DAYS`).
    pub retire_after_days: u32,
    /// Above this many site × structure streams, `/metrics` keeps only their
    /// 7-day mean and alarms in progress, so a large network stays within a
    /// Prometheus series budget (`SEGWATCH_DRIFT_MAX_DETAILED_STREAMS`).
    pub max_detailed_streams: u32,
    /// Leave a structure out of its drift streams in a case whose readers
    /// disagree on it (ambiguous, docs/compare.md "Several readers"), and the
    /// case out of the mean-Dice streams (`SEGWATCH_DRIFT_EXCLUDE_AMBIGUOUS`).
    pub exclude_ambiguous: bool,
}

/// Largest `drift.arl0`: the PIT-EWMA calibration covers run lengths up to
/// 10⁹ cases for the smallest baseline.
const MAX_ARL0: f64 = 1e9;

impl DriftConfig {
    /// What sets every detector's in-control run length.
    pub fn target(&self) -> crate::drift::RunLengthTarget {
        use crate::drift::RunLengthTarget;
        match self.arl0 {
            Some(cases) => RunLengthTarget::Arl0 { cases },
            None => RunLengthTarget::Budget {
                false_alerts_per_month: self.false_alerts_per_month,
            },
        }
    }
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            false_alerts_per_month: 1.0,
            arl0: None,
            lateness_secs: 10,
            incident_hold_days: 3.0,
            refresh_secs: 15,
            rolling_windows_days: vec![1, 7, 30],
            retire_after_days: 30,
            max_detailed_streams: 500,
            exclude_ambiguous: false,
        }
    }
}

/// How cases are scored.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ScoringConfig {
    pub surface: SurfaceMode,
    /// NSD tolerance of structures whose schema sets none, in mm.
    pub default_tolerance_mm: f64,
}

/// Where the embedded store lives unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "segwatch-data";

impl Config {
    /// The store this configuration names: PostgreSQL when `database_url` is
    /// set, else the embedded store in `data_dir`.
    pub fn store(
        &self,
        max_connections: u32,
    ) -> Result<crate::store::Store, crate::store::StoreError> {
        crate::store::Store::open(&self.database_url, &self.data_dir, max_connections)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: String::new(),
            data_dir: DEFAULT_DATA_DIR.into(),
            listen: "127.0.0.1:8080".into(),
            migrate: true,
            log_format: "text".into(),
            limits: LimitsConfig::default(),
            workers: WorkersConfig::default(),
            scoring: ScoringConfig::default(),
            drift: DriftConfig::default(),
            dicomweb: DicomWebConfig::default(),
            retention_days: 30,
            results_retention_days: 0,
            incidents_retention_days: 0,
        }
    }
}

impl LimitsConfig {
    /// The limits the decoders check headers against.
    pub fn decode(&self) -> crate::formats::Limits {
        crate::formats::Limits {
            max_voxels: self.max_voxels,
            max_bytes: self.max_decompressed_bytes,
        }
    }

    /// Largest inflated size of a stored upload: whatever ingest accepted, a
    /// worker can read back. A body is at most `max_upload_bytes` on arrival,
    /// a gzip NIfTI body inflates to its voxel data (at most
    /// `max_decompressed_bytes`) plus a header, and de-identification may
    /// lengthen a SEG's UIDs; ingest refuses (413) what would still not fit.
    pub fn stored_bytes(&self) -> u64 {
        (self.max_upload_bytes as u64).max(self.max_decompressed_bytes) + STORED_HEADER_ALLOWANCE
    }
}

/// Room for a file's header, or for UIDs lengthened by hashing, in
/// [`LimitsConfig::stored_bytes`].
const STORED_HEADER_ALLOWANCE: u64 = 1 << 20;

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_upload_bytes: 512 << 20,
            max_voxels: formats::Limits::default().max_voxels,
            max_decompressed_bytes: formats::Limits::default().max_bytes,
            max_queue_depth: 10_000,
            request_timeout_secs: 120,
            header_read_timeout_secs: 10,
            max_structures: 256,
            max_body_memory_bytes: 2 << 30,
            max_models: 16,
            max_model_versions: 4,
        }
    }
}

impl Default for WorkersConfig {
    fn default() -> Self {
        WorkersConfig {
            threads: 0,
            concurrency: 0,
            memory_budget_voxels: 4 * 512 * 512 * 300,
            lease_secs: 60,
            max_attempts: 5,
            poll_interval_ms: 2000,
            disabled: false,
        }
    }
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            surface: SurfaceMode::Voxel,
            default_tolerance_mm: crate::schema::DEFAULT_TOLERANCE_MM,
        }
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("invalid configuration file {0}: {1}")]
    Parse(String, String),
    #[error("invalid environment variable {0}: {1}")]
    Env(String, String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads `path` (if given), then applies `SEGWATCH_*` variables from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let name = path.display().to_string();
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::Read(name.clone(), e))?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse(name, e.to_string()))?
            }
            None => Config::default(),
        };
        fn parse<T: std::str::FromStr>(name: &str, value: String) -> Result<T, ConfigError> {
            value
                .parse()
                .map_err(|_| ConfigError::Env(name.into(), format!("cannot parse {value:?}")))
        }
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        if let Some(v) = var("SEGWATCH_DATABASE_URL") {
            config.database_url = v;
        }
        if let Some(v) = var("SEGWATCH_DATA_DIR") {
            config.data_dir = v.into();
        }
        if let Some(v) = var("SEGWATCH_LISTEN") {
            config.listen = v;
        }
        if let Some(v) = var("SEGWATCH_MIGRATE") {
            config.migrate = parse("SEGWATCH_MIGRATE", v)?;
        }
        if let Some(v) = var("SEGWATCH_LOG_FORMAT") {
            config.log_format = v;
        }
        if let Some(v) = var("SEGWATCH_RETENTION_DAYS") {
            config.retention_days = parse("SEGWATCH_RETENTION_DAYS", v)?;
        }
        if let Some(v) = var("SEGWATCH_RESULTS_RETENTION_DAYS") {
            config.results_retention_days = parse("SEGWATCH_RESULTS_RETENTION_DAYS", v)?;
        }
        if let Some(v) = var("SEGWATCH_INCIDENTS_RETENTION_DAYS") {
            config.incidents_retention_days = parse("SEGWATCH_INCIDENTS_RETENTION_DAYS", v)?;
        }
        if let Some(v) = var("SEGWATCH_MAX_UPLOAD_BYTES") {
            config.limits.max_upload_bytes = parse("SEGWATCH_MAX_UPLOAD_BYTES", v)?;
        }
        if let Some(v) = var("SEGWATCH_MAX_VOXELS") {
            config.limits.max_voxels = parse("SEGWATCH_MAX_VOXELS", v)?;
        }
        if let Some(v) = var("SEGWATCH_HEADER_READ_TIMEOUT_SECS") {
            config.limits.header_read_timeout_secs = parse("SEGWATCH_HEADER_READ_TIMEOUT_SECS", v)?;
        }
        if let Some(v) = var("SEGWATCH_MAX_STRUCTURES") {
            config.limits.max_structures = parse("SEGWATCH_MAX_STRUCTURES", v)?;
        }
        if let Some(v) = var("SEGWATCH_MAX_BODY_MEMORY_BYTES") {
            config.limits.max_body_memory_bytes = parse("SEGWATCH_MAX_BODY_MEMORY_BYTES", v)?;
        }
        if let Some(v) = var("SEGWATCH_MAX_MODELS") {
            config.limits.max_models = parse("SEGWATCH_MAX_MODELS", v)?;
        }
        if let Some(v) = var("SEGWATCH_MAX_MODEL_VERSIONS") {
            config.limits.max_model_versions = parse("SEGWATCH_MAX_MODEL_VERSIONS", v)?;
        }
        if let Some(v) = var("SEGWATCH_MAX_QUEUE_DEPTH") {
            config.limits.max_queue_depth = parse("SEGWATCH_MAX_QUEUE_DEPTH", v)?;
        }
        if let Some(v) = var("SEGWATCH_WORKER_THREADS") {
            config.workers.threads = parse("SEGWATCH_WORKER_THREADS", v)?;
        }
        if let Some(v) = var("SEGWATCH_WORKER_CONCURRENCY") {
            config.workers.concurrency = parse("SEGWATCH_WORKER_CONCURRENCY", v)?;
        }
        if let Some(v) = var("SEGWATCH_MEMORY_BUDGET_VOXELS") {
            config.workers.memory_budget_voxels = parse("SEGWATCH_MEMORY_BUDGET_VOXELS", v)?;
        }
        if let Some(v) = var("SEGWATCH_LEASE_SECS") {
            config.workers.lease_secs = parse("SEGWATCH_LEASE_SECS", v)?;
        }
        if let Some(v) = var("SEGWATCH_POLL_INTERVAL_MS") {
            config.workers.poll_interval_ms = parse("SEGWATCH_POLL_INTERVAL_MS", v)?;
        }
        if let Some(v) = var("SEGWATCH_DRIFT_FALSE_ALERTS_PER_MONTH") {
            config.drift.false_alerts_per_month =
                parse("SEGWATCH_DRIFT_FALSE_ALERTS_PER_MONTH", v)?;
        }
        if let Some(v) = var("SEGWATCH_DRIFT_ARL0") {
            config.drift.arl0 = Some(parse("SEGWATCH_DRIFT_ARL0", v)?);
        }
        if let Some(v) = var("SEGWATCH_DRIFT_LATENESS_SECS") {
            config.drift.lateness_secs = parse("SEGWATCH_DRIFT_LATENESS_SECS", v)?;
        }
        if let Some(v) = var("SEGWATCH_DRIFT_INCIDENT_HOLD_DAYS") {
            config.drift.incident_hold_days = parse("SEGWATCH_DRIFT_INCIDENT_HOLD_DAYS", v)?;
        }
        if let Some(v) = var("SEGWATCH_REFRESH_SECS") {
            config.drift.refresh_secs = parse("SEGWATCH_REFRESH_SECS", v)?;
        }
        if let Some(v) = var("SEGWATCH_DRIFT_RETIRE_AFTER_DAYS") {
            config.drift.retire_after_days = parse("SEGWATCH_DRIFT_RETIRE_AFTER_DAYS", v)?;
        }
        if let Some(v) = var("SEGWATCH_DRIFT_MAX_DETAILED_STREAMS") {
            config.drift.max_detailed_streams = parse("SEGWATCH_DRIFT_MAX_DETAILED_STREAMS", v)?;
        }
        if let Some(v) = var("SEGWATCH_DRIFT_EXCLUDE_AMBIGUOUS") {
            config.drift.exclude_ambiguous = parse("SEGWATCH_DRIFT_EXCLUDE_AMBIGUOUS", v)?;
        }
        if let Some(v) = var("SEGWATCH_ROLLING_WINDOWS_DAYS") {
            config.drift.rolling_windows_days = v
                .split(',')
                .map(|d| parse("SEGWATCH_ROLLING_WINDOWS_DAYS", d.trim().to_owned()))
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = var("SEGWATCH_CASE_KEY_SECRET") {
            config.dicomweb.case_key_secret = Some(v);
        }
        if let Some(v) = var("SEGWATCH_WORKERS_DISABLED") {
            config.workers.disabled = parse("SEGWATCH_WORKERS_DISABLED", v)?;
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.into()));
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return bad("log_format must be text or json");
        }
        if self.limits.header_read_timeout_secs == 0 || self.limits.max_structures == 0 {
            return bad(
                "limits.header_read_timeout_secs and limits.max_structures must be at least 1",
            );
        }
        if self.limits.max_models == 0 || self.limits.max_model_versions == 0 {
            return bad("limits.max_models and limits.max_model_versions must be at least 1");
        }
        if self.limits.max_body_memory_bytes < self.limits.max_upload_bytes as u64 {
            return bad(
                "limits.max_body_memory_bytes must be at least limits.max_upload_bytes, or the largest upload could never be admitted",
            );
        }
        // The rolling windows read their days of results; files go before results.
        let kept = self.results_retention_days;
        let longest_window = self.drift.rolling_windows_days.iter().max().copied();
        if kept != 0 && (Some(kept) <= longest_window || kept < self.retention_days) {
            return bad(
                "results_retention_days must be 0 (keep every case), or longer than the longest rolling window and at least retention_days",
            );
        }
        if self.workers.lease_secs == 0 || self.workers.max_attempts < 1 {
            return bad("workers.lease_secs and workers.max_attempts must be at least 1");
        }
        if self.workers.memory_budget_voxels < 1 << 20 {
            return bad("workers.memory_budget_voxels must be at least 1048576");
        }
        const ATTRIBUTES: [&str; 6] = [
            "series_description",
            "manufacturer",
            "manufacturer_model_name",
            "content_label",
            "algorithm_name",
            "software_versions",
        ];
        for rule in &self.dicomweb.role_rules {
            if !ATTRIBUTES.contains(&rule.attribute.as_str())
                || !matches!(rule.role.as_str(), "prediction" | "reference")
            {
                return bad(
                    "dicomweb.role_rules: attribute must be one of series_description, manufacturer, manufacturer_model_name, content_label, algorithm_name, software_versions, and role prediction or reference",
                );
            }
        }
        let drift = &self.drift;
        if !(drift.false_alerts_per_month > 0.0 && drift.false_alerts_per_month <= 1000.0) {
            return bad("drift.false_alerts_per_month must be above 0 and at most 1000");
        }
        if drift.arl0.is_some_and(|a| !(100.0..=MAX_ARL0).contains(&a)) {
            return bad(
                "drift.arl0 must be from 100 to 1000000000 cases (the calibrated range); leave it unset to use the false-alert budget",
            );
        }
        if drift.refresh_secs == 0
            || !(drift.incident_hold_days >= 0.0 && drift.incident_hold_days <= 365.0)
        {
            return bad(
                "drift.refresh_secs must be at least 1 and drift.incident_hold_days from 0 to 365",
            );
        }
        if !(1..=3650).contains(&drift.retire_after_days) {
            return bad("drift.retire_after_days must be from 1 to 3650");
        }
        let windows = &self.drift.rolling_windows_days;
        let distinct: std::collections::BTreeSet<_> = windows.iter().collect();
        if !windows.contains(&7)
            || distinct.len() != windows.len()
            || windows.iter().any(|d| !(1..=365).contains(d))
        {
            return bad(
                "drift.rolling_windows_days must be distinct days from 1 to 365 and include 7",
            );
        }
        if !(self.scoring.default_tolerance_mm.is_finite()
            && self.scoring.default_tolerance_mm >= 0.0)
        {
            return bad("scoring.default_tolerance_mm must be a number ≥ 0");
        }
        Ok(())
    }

    /// Compute threads: configured, or one per core.
    pub fn threads(&self) -> usize {
        match self.workers.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }

    /// Jobs in flight: configured, or one per compute thread.
    pub fn concurrency(&self) -> usize {
        match self.workers.concurrency {
            0 => self.threads(),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn every_environment_variable_read_is_listed() {
        let source = include_str!("config.rs");
        let read: std::collections::BTreeSet<&str> = source
            .split("var(\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .filter(|name| name.starts_with("SEGWATCH_"))
            .collect();
        let listed: std::collections::BTreeSet<&str> =
            ENV_VARS.iter().map(|(name, _)| *name).collect();
        assert!(read.len() >= 26, "{read:?}");
        assert!(read.is_subset(&listed), "{:?}", read.difference(&listed));
        assert_eq!(listed.len(), ENV_VARS.len());
    }
    use super::*;

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segwatch.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:9000\"\nretention_days = 7\n[workers]\nthreads = 3\n[scoring]\nsurface = \"surfel\"\n",
        )
        .unwrap();
        let env = |name: &str| match name {
            "SEGWATCH_DATABASE_URL" => Some("postgres://x/y".to_owned()),
            "SEGWATCH_LISTEN" => Some("127.0.0.1:1234".to_owned()),
            _ => None,
        };
        let config = Config::load(Some(&path), env).unwrap();
        assert_eq!(config.listen, "127.0.0.1:1234");
        assert_eq!(config.database_url, "postgres://x/y");
        assert_eq!(config.retention_days, 7);
        assert_eq!(config.threads(), 3);
        assert_eq!(config.scoring.surface, SurfaceMode::Surfel);
    }

    #[test]
    fn defaults_and_errors() {
        let config = Config::load(None, |_| None).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080");
        let err = Config::load(None, |n| {
            (n == "SEGWATCH_LEASE_SECS").then(|| "soon".to_owned())
        })
        .unwrap_err();
        assert!(err.to_string().contains("SEGWATCH_LEASE_SECS"));
        assert_eq!(config.drift.rolling_windows_days, [1, 7, 30]);
        let windows = |v: &str| {
            let v = v.to_owned();
            Config::load(None, move |n| {
                (n == "SEGWATCH_ROLLING_WINDOWS_DAYS").then(|| v.clone())
            })
        };
        assert_eq!(
            windows("7, 14").unwrap().drift.rolling_windows_days,
            [7, 14]
        );
        for bad in ["1,30", "7,7", "7,0", "7,week"] {
            assert!(windows(bad).is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "unknown_key = 1\n").unwrap();
        assert!(matches!(
            Config::load(Some(&path), |_| None),
            Err(ConfigError::Parse(..))
        ));
    }

    #[test]
    fn results_outlive_the_rolling_windows_and_the_stored_files() {
        let results = |days: &str| {
            let days = days.to_owned();
            Config::load(None, move |n| {
                (n == "SEGWATCH_RESULTS_RETENTION_DAYS").then(|| days.clone())
            })
        };
        assert_eq!(results("0").unwrap().results_retention_days, 0);
        assert_eq!(results("31").unwrap().results_retention_days, 31);
        // The 30-day window, and the 30 days the stored files are kept.
        for short in ["30", "7"] {
            let err = results(short).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid(_)), "{short}: {err}");
        }
    }
}
