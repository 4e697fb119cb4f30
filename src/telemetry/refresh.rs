//! The periodic refresh of the gauges the database holds: every read first,
//! then every gauge at once under the exposition lock, so that a scrape sees
//! one whole refresh and never a family emptied for the next.

use std::sync::atomic::Ordering;

use super::{Metrics, site_structure};
use crate::config::DriftConfig;
use crate::drift::Metric;
use crate::store::{DetectorRow, OpenIncident, Rolling, Store, StoreError};
use crate::views::BaselineStructure;

/// Everything one refresh reads from the database.
struct Snapshot {
    queued: i64,
    running: i64,
    /// (window in days, rolling means), in the order of `Metrics::rolling_dice_ratio`.
    windows: Vec<(u32, Rolling)>,
    detectors: Vec<DetectorRow>,
    baselines: Vec<(String, String, BaselineStructure)>,
    incidents: Vec<OpenIncident>,
    /// Active streams and their (stream, detector) pairs.
    streams: (i64, i64),
    /// (site, role, unix time) of the latest upload.
    uploads: Vec<(String, String, f64)>,
}

impl Snapshot {
    /// Reads the database; the independent reads run at once, so a refresh
    /// takes about its slowest query, not their sum.
    async fn read(store: &Store, drift: &DriftConfig, windows: &[u32]) -> Result<Self, StoreError> {
        let rolling = futures_util::future::try_join_all(windows.iter().map(|&days| async move {
            Ok::<_, StoreError>((days, store.rolling_means(days as i32).await?))
        }));
        let (jobs, windows, detectors, baselines, incidents, streams, uploads) = tokio::try_join!(
            store.job_counts(),
            rolling,
            store.detector_states(drift.retire_after_days),
            store.baseline_gauges(),
            store.open_incidents(),
            store.active_streams(),
            store.last_uploads(),
        )?;
        Ok(Snapshot {
            queued: jobs.0,
            running: jobs.1,
            windows,
            detectors,
            baselines,
            incidents,
            streams,
            uploads,
        })
    }
}

/// Recomputes every quality gauge from the database, so that every replica reports
/// the same values and a restart loses nothing. Series that disappeared are dropped.
/// On an error no gauge changes: the last refresh stays exported.
pub async fn refresh(
    store: &Store,
    metrics: &Metrics,
    drift: &DriftConfig,
) -> Result<(), StoreError> {
    let days: Vec<u32> = metrics.rolling_dice_ratio.iter().map(|(d, _)| *d).collect();
    let snapshot = Snapshot::read(store, drift, &days).await?;
    let _publishing = metrics
        .exposition
        .write()
        .unwrap_or_else(|e| e.into_inner());
    publish(metrics, drift, snapshot);
    Ok(())
}

/// Sets every gauge from `snapshot` (the caller holds the exposition lock).
fn publish(metrics: &Metrics, drift: &DriftConfig, s: Snapshot) {
    metrics.jobs_queued.set(s.queued);
    metrics.jobs_running.set(s.running);
    let site_structures: std::collections::HashSet<_> = s
        .windows
        .iter()
        .flat_map(|(_, rolling)| &rolling.dice)
        .filter(|(site, _, _, structure, _, _)| site_structure(site, structure))
        .map(|(site, model, version, structure, _, _)| (site, model, version, structure))
        .collect();
    let reduced = site_structures.len() > drift.max_detailed_streams as usize;
    if reduced && !metrics.reduced.swap(true, Ordering::Relaxed) {
        // The per-site histograms kept so far would keep their series: drop them.
        metrics.case_dice_ratio.reset();
    } else if !reduced {
        metrics.reduced.store(false, Ordering::Relaxed);
    }
    metrics.streams_detail_reduced.set(reduced as i64);
    // Whether a series of this stream is exported: everything, or for a site ×
    // structure stream of a reduced network only what is always kept.
    let detailed = |site: &str, structure: &str| !reduced || !site_structure(site, structure);
    publish_windows(metrics, &s.windows, &detailed);
    publish_baselines(metrics, s.baselines);
    publish_detectors(metrics, &s.detectors, &detailed);
    publish_incidents(metrics, &s.incidents);
    let (streams, pairs) = s.streams;
    metrics.drift_streams_active.set(streams);
    if let Some(days) = drift.target().days(pairs as usize) {
        metrics.drift_target_run_length_seconds.set(days * 86_400.0);
    }
    for (site, role, at) in s.uploads {
        metrics
            .last_upload_timestamp_seconds
            .with_label_values(&[site.as_str(), role.as_str()])
            .set(at);
    }
}

/// Rolling Dice means and case counts, and the soft Dice and ECE means (which
/// follow their Dice streams' detail rule).
fn publish_windows(
    metrics: &Metrics,
    windows: &[(u32, Rolling)],
    detailed: &impl Fn(&str, &str) -> bool,
) {
    metrics.rolling_cases_7d.reset();
    for ((days, rolling), (_, gauge)) in windows.iter().zip(&metrics.rolling_dice_ratio) {
        gauge.reset();
        for (site, model, version, structure, mean, cases) in &rolling.dice {
            let labels = [site, model, version, structure].map(String::as_str);
            if *days == 7 {
                gauge.with_label_values(&labels).set(*mean);
                if detailed(site, structure) {
                    metrics
                        .rolling_cases_7d
                        .with_label_values(&labels)
                        .set(*cases);
                }
            } else if detailed(site, structure) {
                gauge.with_label_values(&labels).set(*mean);
            }
        }
    }
    for ((days, rolling), (_, soft_dice, ece)) in windows.iter().zip(&metrics.rolling_probabilistic)
    {
        for (gauge, rows) in [(soft_dice, &rolling.soft_dice), (ece, &rolling.ece)] {
            gauge.reset();
            for (site, model, version, structure, mean, _) in rows {
                if *days == 7 || detailed(site, structure) {
                    let labels = [site, model, version, structure].map(String::as_str);
                    gauge.with_label_values(&labels).set(*mean);
                }
            }
        }
    }
}

/// Each active Dice baseline's mean and lower quantiles.
fn publish_baselines(metrics: &Metrics, baselines: Vec<(String, String, BaselineStructure)>) {
    let gauges = [
        &metrics.dice_baseline_ratio,
        &metrics.dice_baseline_p05_ratio,
        &metrics.dice_baseline_p25_ratio,
    ];
    for gauge in gauges {
        gauge.reset();
    }
    for (model, version, b) in baselines {
        let labels = [model.as_str(), version.as_str(), b.structure.as_str()];
        for (gauge, value) in gauges.into_iter().zip([b.mean, b.p05, b.p25]) {
            gauge.with_label_values(&labels).set(value);
        }
    }
}

/// Each detector's statistic, limit and alarm: Dice streams in their own
/// families, other metrics with a `metric` label.
fn publish_detectors(
    metrics: &Metrics,
    detectors: &[DetectorRow],
    detailed: &impl Fn(&str, &str) -> bool,
) {
    for family in [
        &metrics.drift_statistic,
        &metrics.drift_limit,
        &metrics.drift_metric_statistic,
        &metrics.drift_metric_limit,
    ] {
        family.reset();
    }
    metrics.drift_alarm.reset();
    metrics.drift_metric_alarm.reset();
    for d in detectors {
        let dice = d.metric == Metric::Dice.as_str();
        let (statistic, limit, alarm) = if dice {
            (
                &metrics.drift_statistic,
                &metrics.drift_limit,
                &metrics.drift_alarm,
            )
        } else {
            (
                &metrics.drift_metric_statistic,
                &metrics.drift_metric_limit,
                &metrics.drift_metric_alarm,
            )
        };
        let labels: Vec<&str> = [&d.site, &d.model, &d.model_version, &d.structure]
            .into_iter()
            .chain((!dice).then_some(&d.metric))
            .chain([&d.detector])
            .map(String::as_str)
            .collect();
        if detailed(&d.site, &d.structure) {
            statistic.with_label_values(&labels).set(d.statistic);
            limit.with_label_values(&labels).set(d.limit);
            alarm.with_label_values(&labels).set(d.alarm as i64);
        } else if d.alarm {
            // Only an alarm in progress, which a dashboard can still point at.
            alarm.with_label_values(&labels).set(1);
        }
    }
}

/// 1 per open incident, Dice and other metrics in their own families.
fn publish_incidents(metrics: &Metrics, incidents: &[OpenIncident]) {
    metrics.drift_incident_open.reset();
    metrics.drift_metric_incident_open.reset();
    for i in incidents {
        let id = i.id.to_string();
        let dice = i.metric == Metric::Dice.as_str();
        let labels: Vec<&str> = [&id, &i.site, &i.model, &i.model_version, &i.structure]
            .into_iter()
            .chain((!dice).then_some(&i.metric))
            .chain([&i.detector])
            .map(String::as_str)
            .collect();
        let family = if dice {
            &metrics.drift_incident_open
        } else {
            &metrics.drift_metric_incident_open
        };
        family.with_label_values(&labels).set(1);
    }
}
