//! Logging setup and the Prometheus registry. Labels are only site, model,
//! model_version, structure, detector, incident, role and reason (plus route on
//! the HTTP histogram and version on build_info): never case, study or patient
//! identifiers.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::metrics::case::CaseScore;
use crate::metrics::strata::band_name;
use crate::store::{ALL, JobInputs};

mod refresh;
pub use refresh::refresh;

/// Dice histogram buckets, fine near the top where models live.
const DICE_BUCKETS: [f64; 16] = [
    0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99, 1.0,
];

/// Every metric segwatch exports, in one explicit registry.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Every family registered, as (name, Prometheus type): the metric contract,
    /// which `deploy/metric-contract.txt` must list (tested) for the deployment checks.
    pub families: Vec<(String, &'static str)>,
    pub case_dice_ratio: HistogramVec,
    pub segmentations_received_total: IntCounterVec,
    pub cases_scored_total: IntCounterVec,
    /// Lesions of multi-instance structures: in the reference, detected, and
    /// predicted lesions matched to none.
    pub lesions_reference_total: IntCounterVec,
    pub lesions_detected_total: IntCounterVec,
    pub lesions_false_positive_total: IntCounterVec,
    pub jobs_failed_total: IntCounterVec,
    pub job_duration_seconds: prometheus::Histogram,
    pub http_request_duration_seconds: HistogramVec,
    pub jobs_queued: IntGauge,
    pub jobs_running: IntGauge,
    /// Quality gauges, refreshed from the database: (rolling window in days, gauge).
    pub rolling_dice_ratio: Vec<(u32, GaugeVec)>,
    /// Rolling soft Dice and ECE of structures with probabilistic scores:
    /// (window in days, soft Dice gauge, ECE gauge), windows as above.
    pub rolling_probabilistic: Vec<(u32, GaugeVec, GaugeVec)>,
    pub rolling_cases_7d: IntGaugeVec,
    pub dice_baseline_ratio: GaugeVec,
    pub dice_baseline_p05_ratio: GaugeVec,
    pub dice_baseline_p25_ratio: GaugeVec,
    pub drift_statistic: GaugeVec,
    pub drift_limit: GaugeVec,
    pub drift_alarm: IntGaugeVec,
    /// 1 per open incident, labelled with its opening stream and detector.
    pub drift_incident_open: IntGaugeVec,
    /// As `drift_statistic`, `drift_limit`, `drift_alarm` and
    /// `drift_incident_open`, for streams of the other metrics a schema
    /// watches (lesion sensitivity, ECE), with a `metric` label.
    pub drift_metric_statistic: GaugeVec,
    pub drift_metric_limit: GaugeVec,
    pub drift_metric_alarm: IntGaugeVec,
    pub drift_metric_incident_open: IntGaugeVec,
    pub drift_false_alert_budget_per_month: Gauge,
    pub drift_streams_active: IntGauge,
    pub drift_target_run_length_seconds: Gauge,
    pub last_upload_timestamp_seconds: GaugeVec,
    /// 1 while the last refresh from the database succeeded.
    pub database_up: IntGauge,
    /// Time one refresh of the gauges from the database takes.
    pub refresh_duration_seconds: prometheus::Histogram,
    /// Time the last retention purge took.
    pub purge_duration_seconds: Gauge,
    /// 1 while site × structure streams carry only their 7-day mean and alarms.
    pub streams_detail_reduced: IntGauge,
    /// Whether the last refresh reduced the detail (read when scoring).
    reduced: Arc<AtomicBool>,
    /// Held for writing while a refresh sets its gauges and for reading while
    /// a scrape gathers them, so that a scrape sees one whole refresh.
    exposition: Arc<RwLock<()>>,
}

/// A stream of one site and one structure: the streams whose detail a large
/// network leaves out of `/metrics` (pooled and per-case mean streams stay whole).
fn site_structure(site: &str, structure: &str) -> bool {
    site != ALL && structure != ALL
}

const STREAM: [&str; 4] = ["site", "model", "model_version", "structure"];
/// A stream's labels and a lesion size band (`metrics::strata::band_name`).
const LESION_BAND: [&str; 5] = ["site", "model", "model_version", "structure", "band"];
const DETECTOR: [&str; 5] = ["site", "model", "model_version", "structure", "detector"];
/// A detector's labels with the metric its stream watches.
const METRIC_DETECTOR: [&str; 6] = [
    "site",
    "model",
    "model_version",
    "structure",
    "metric",
    "detector",
];
const BASELINE: [&str; 3] = ["model", "model_version", "structure"];

/// Registers collectors and records each family's name and type.
struct Registrar<'a> {
    registry: &'a Registry,
    families: RefCell<Vec<(String, &'static str)>>,
}

impl Registrar<'_> {
    fn add<T: Collector + Kind + Clone + 'static>(&self, metric: T) -> T {
        for desc in metric.desc() {
            self.families
                .borrow_mut()
                .push((desc.fq_name.clone(), T::KIND));
        }
        self.registry
            .register(Box::new(metric.clone()))
            .expect("metric names are unique");
        metric
    }
}

/// The Prometheus type of a collector.
trait Kind {
    const KIND: &'static str;
}

macro_rules! kind {
    ($($collector:ty => $kind:literal),* $(,)?) => {
        $(impl Kind for $collector {
            const KIND: &'static str = $kind;
        })*
    };
}

kind!(
    HistogramVec => "histogram",
    prometheus::Histogram => "histogram",
    IntCounterVec => "counter",
    GaugeVec => "gauge",
    IntGaugeVec => "gauge",
    Gauge => "gauge",
    IntGauge => "gauge",
);

impl Metrics {
    /// Builds and registers every metric, with a rolling Dice gauge per window.
    pub fn new(rolling_windows_days: &[u32]) -> Metrics {
        let registry = Registry::new();
        let registrar = Registrar {
            registry: &registry,
            families: RefCell::new(Vec::new()),
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            registrar.add(GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        let int_gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            registrar.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            registrar.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        // A rolling mean gauge: `segwatch_rolling_{family}_{days}d_ratio`.
        let rolling = |family: &str, what: &str, cases: &str, days: u32| {
            gauge_vec(
                &format!("segwatch_rolling_{family}_{days}d_ratio"),
                &format!(
                    "Mean {what} of cases in the last {days} days{cases}; site=\"all\" pools every site."
                ),
                &STREAM,
            )
        };
        let build_info = int_gauge_vec(
            "segwatch_build_info",
            "segwatch version, always 1.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let mut metrics = Metrics {
            case_dice_ratio: registrar.add(HistogramVec::new(
                    HistogramOpts::new(
                        "segwatch_case_dice_ratio",
                        "Dice of each scored case and structure.",
                    )
                    .buckets(DICE_BUCKETS.to_vec()),
                    &STREAM,
                )
                .expect("valid metric"),
            ),
            segmentations_received_total: counter_vec(
                "segwatch_segmentations_received_total",
                "Uploads by role and outcome (stored, duplicate, or why refused).",
                &["site", "role", "reason"],
            ),
            cases_scored_total: counter_vec(
                "segwatch_cases_scored_total",
                "Cases scored by this replica.",
                &["site", "model", "model_version"],
            ),
            lesions_reference_total: counter_vec(
                "segwatch_lesions_reference_total",
                "Reference lesions of the schema's multi-instance structures in scored cases, by size band.",
                &LESION_BAND,
            ),
            lesions_detected_total: counter_vec(
                "segwatch_lesions_detected_total",
                "Reference lesions a predicted lesion matched (IoU >= 0.5, 26-connectivity), by size band.",
                &LESION_BAND,
            ),
            lesions_false_positive_total: counter_vec(
                "segwatch_lesions_false_positive_total",
                "Predicted lesions of multi-instance structures that matched no reference lesion.",
                &STREAM,
            ),
            jobs_failed_total: counter_vec(
                "segwatch_jobs_failed_total",
                "Job failures by reason.",
                &["reason"],
            ),
            job_duration_seconds: registrar.add(prometheus::Histogram::with_opts(
                    HistogramOpts::new("segwatch_job_duration_seconds", "Time to score one job.")
                        .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0]),
                )
                .expect("valid metric"),
            ),
            http_request_duration_seconds: registrar.add(HistogramVec::new(
                    HistogramOpts::new(
                        "segwatch_http_request_duration_seconds",
                        "HTTP request latency by route.",
                    )
                    .buckets(vec![
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ]),
                    &["route"],
                )
                .expect("valid metric"),
            ),
            jobs_queued: registrar.add(IntGauge::new("segwatch_jobs_queued", "Jobs waiting to be scored.")
                    .expect("valid metric"),
            ),
            jobs_running: registrar.add(IntGauge::new("segwatch_jobs_running", "Jobs being scored.").expect("valid metric"),
            ),
            rolling_dice_ratio: rolling_windows_days
                .iter()
                .map(|&days| (days, rolling("dice", "Dice", "", days)))
                .collect(),
            rolling_probabilistic: rolling_windows_days
                .iter()
                .map(|&days| {
                    let kept = " whose prediction kept probabilities of the structure";
                    let soft_dice = rolling("soft_dice", "soft Dice", kept, days);
                    let ece = rolling("ece", "expected calibration error (15 bins)", kept, days);
                    (days, soft_dice, ece)
                })
                .collect(),
            rolling_cases_7d: int_gauge_vec(
                "segwatch_rolling_cases_7d",
                "Cases scored in the last 7 days.",
                &STREAM,
            ),
            dice_baseline_ratio: gauge_vec(
                "segwatch_dice_baseline_ratio",
                "Mean Dice of the active baseline.",
                &BASELINE,
            ),
            dice_baseline_p05_ratio: gauge_vec(
                "segwatch_dice_baseline_p05_ratio",
                "5th percentile of the active baseline.",
                &BASELINE,
            ),
            dice_baseline_p25_ratio: gauge_vec(
                "segwatch_dice_baseline_p25_ratio",
                "25th percentile of the active baseline.",
                &BASELINE,
            ),
            drift_statistic: gauge_vec(
                "segwatch_drift_statistic",
                "Latest statistic of each drift detector.",
                &DETECTOR,
            ),
            drift_limit: gauge_vec(
                "segwatch_drift_limit",
                "Alarm limit of each drift detector.",
                &DETECTOR,
            ),
            drift_alarm: int_gauge_vec(
                "segwatch_drift_alarm",
                "1 while a drift detector is in alarm.",
                &DETECTOR,
            ),
            drift_incident_open: int_gauge_vec(
                "segwatch_drift_incident_open",
                "1 for each open drift incident, labelled with the stream and detector that opened it.",
                &["incident", "site", "model", "model_version", "structure", "detector"],
            ),
            drift_metric_statistic: gauge_vec(
                "segwatch_drift_metric_statistic",
                "Latest statistic of each drift detector of a lesion-sensitivity or ECE stream (ECE streams watch 1 - ECE).",
                &METRIC_DETECTOR,
            ),
            drift_metric_limit: gauge_vec(
                "segwatch_drift_metric_limit",
                "Alarm limit of each drift detector of a lesion-sensitivity or ECE stream.",
                &METRIC_DETECTOR,
            ),
            drift_metric_alarm: int_gauge_vec(
                "segwatch_drift_metric_alarm",
                "1 while a drift detector of a lesion-sensitivity or ECE stream is in alarm.",
                &METRIC_DETECTOR,
            ),
            drift_metric_incident_open: int_gauge_vec(
                "segwatch_drift_metric_incident_open",
                "1 for each open lesion-sensitivity or ECE drift incident, labelled with the stream and detector that opened it.",
                &["incident", "site", "model", "model_version", "structure", "metric", "detector"],
            ),
            drift_false_alert_budget_per_month: registrar.add(Gauge::new(
                    "segwatch_drift_false_alert_budget_per_month",
                    "Configured expected false alerts a month for the whole deployment (0 with a per-case arl0 override).",
                )
                .expect("valid metric"),
            ),
            drift_streams_active: registrar.add(IntGauge::new(
                    "segwatch_drift_streams_active",
                    "Drift streams with a case in the last 30 days of case time: the budget is shared over them.",
                )
                .expect("valid metric"),
            ),
            drift_target_run_length_seconds: registrar.add(Gauge::new(
                    "segwatch_drift_target_run_length_seconds",
                    "In-control run length of each (stream, detector) pair derived from the budget.",
                )
                .expect("valid metric"),
            ),
            database_up: registrar.add(IntGauge::new(
                    "segwatch_database_up",
                    "1 while the last refresh of the gauges from the database succeeded, else 0 (the gauges then keep their last values).",
                )
                .expect("valid metric"),
            ),
            last_upload_timestamp_seconds: gauge_vec(
                "segwatch_last_upload_timestamp_seconds",
                "Unix time of the last accepted upload.",
                &["site", "role"],
            ),
            refresh_duration_seconds: registrar.add(
                prometheus::Histogram::with_opts(
                    HistogramOpts::new(
                        "segwatch_refresh_duration_seconds",
                        "Time one refresh of the gauges from the database takes.",
                    )
                    .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
                )
                .expect("valid metric"),
            ),
            purge_duration_seconds: registrar.add(
                Gauge::new(
                    "segwatch_purge_duration_seconds",
                    "Time the last retention purge took (every batch of it).",
                )
                .expect("valid metric"),
            ),
            streams_detail_reduced: registrar.add(
                IntGauge::new(
                    "segwatch_streams_detail_reduced",
                    "1 while more site x structure streams than drift.max_detailed_streams exist: those streams then export only their 7-day mean Dice and alarms in progress, and case Dice is observed pooled over sites.",
                )
                .expect("valid metric"),
            ),
            reduced: Arc::new(AtomicBool::new(false)),
            exposition: Arc::default(),
            families: Vec::new(),
            registry: registry.clone(),
        };
        metrics.families = registrar.families.into_inner();
        metrics
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let families = {
            let _refreshed = self.exposition.read().unwrap_or_else(|e| e.into_inner());
            self.registry.gather()
        };
        let _ = TextEncoder::new().encode(&families, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// The exposition an ingest key of `site` may read: every series labelled
    /// with another site, or with the pooled site `all`, is left out (series
    /// without a site label describe the service, not a site's cases).
    pub fn render_for_site(&self, site: &str) -> String {
        let own = format!("site=\"{site}\"");
        self.render()
            .lines()
            .filter(|line| {
                line.starts_with('#') || !line.contains("site=\"") || line.contains(&own)
            })
            .map(|line| format!("{line}\n"))
            .collect()
    }

    /// Counts a scored case and its Dice per structure.
    pub fn record_scored(&self, inputs: &JobInputs, outcome: &CaseScore) {
        let (site, model, version) = (&inputs.site, &inputs.model, &inputs.model_version);
        self.cases_scored_total
            .with_label_values(&[site, model, version])
            .inc();
        // Per-structure series go pooled on a network of reduced detail.
        let stream_site = if self.reduced.load(Ordering::Relaxed) {
            ALL
        } else {
            site.as_str()
        };
        for scored in &outcome.structures {
            let m = &scored.metrics;
            if m.empty != crate::metrics::Empty::Both && m.dice.is_finite() {
                self.case_dice_ratio
                    .with_label_values(&[stream_site, model, version, scored.name.as_str()])
                    .observe(m.dice);
            }
        }
        for scored in &outcome.lesions {
            let structure = scored.structure.as_str();
            // Every band of the structure gets its series, at 0 if no lesion
            // of that size came yet, so that a ratio by band has data.
            for (band, (reference, detected)) in scored.by_band().into_iter().enumerate() {
                let band = band_name(band, &scored.band_edges_ml);
                let labels = [stream_site, model, version, structure, band.as_str()];
                for (counter, count) in [
                    (&self.lesions_reference_total, reference),
                    (&self.lesions_detected_total, detected),
                ] {
                    counter.with_label_values(&labels).inc_by(u64::from(count));
                }
            }
            self.lesions_false_positive_total
                .with_label_values(&[stream_site, model, version, structure])
                .inc_by(u64::from(scored.metrics.fp));
        }
    }
}

/// Sets up logging: `text` or `json` lines on stderr, filtered by `RUST_LOG`
/// (else `default_filter`, such as `info`). Logs carry case keys at most,
/// never patient data.
pub fn init_logging(format: &str, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    // Colour codes only for a terminal: a log file or journald gets plain text.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_contract_file_lists_every_registered_family() {
        let metrics = Metrics::new(&[1, 7, 30]);
        let registered: std::collections::BTreeSet<String> = metrics
            .families
            .iter()
            .map(|(name, kind)| format!("{name} {kind}"))
            .collect();
        assert_eq!(registered.len(), metrics.families.len(), "names are unique");
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/metric-contract.txt");
        let listed: std::collections::BTreeSet<String> = std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(str::to_owned)
            .collect();
        assert_eq!(
            registered, listed,
            "deploy/metric-contract.txt must list what Metrics::new registers"
        );
    }
    use super::*;

    #[test]
    fn an_ingest_key_sees_its_own_sites_series_only() {
        let metrics = Metrics::new(&[7]);
        for site in ["site1", "site10", "site2", "all"] {
            metrics
                .last_upload_timestamp_seconds
                .with_label_values(&[site, "prediction"])
                .set(1.0);
        }
        metrics.jobs_queued.set(3);
        let text = metrics.render_for_site("site1");
        assert!(text.contains(r#"site="site1""#));
        for other in [r#"site="site10""#, r#"site="site2""#, r#"site="all""#] {
            assert!(!text.contains(other), "{other} in {text}");
        }
        assert!(text.contains("segwatch_jobs_queued 3"));
    }
}
