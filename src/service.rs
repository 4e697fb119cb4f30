//! Assembling the running service: store, migrations, compute pool, workers,
//! periodic tasks and the router.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::compute::Compute;
use crate::config::Config;
use crate::http::{self, AppState};
use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;
use crate::worker::Workers;

/// Starts the service and returns the API router.
///
/// The database is prepared in the background: the first attempt to reach it
/// and apply the migrations is awaited, so that with the database up the
/// router is returned ready (as tests and a normal start expect); when it is
/// unreachable or missing the router is returned at once, `/readyz` answers
/// 503 naming the problem, and the attempts go on until it is there. Workers
/// and periodic tasks start once the database is ready. A migration that fails
/// for another reason on the first attempt stops the start.
pub async fn launch(config: Arc<Config>) -> anyhow::Result<Router> {
    let store = config.store((config.concurrency() as u32 * 2 + 8).max(10))?;
    let compute = Compute::new(config.threads(), config.workers.memory_budget_voxels)?;
    let metrics = Metrics::new(&config.drift.rolling_windows_days);
    if let crate::drift::RunLengthTarget::Budget {
        false_alerts_per_month,
    } = config.drift.target()
    {
        metrics
            .drift_false_alert_budget_per_month
            .set(false_alerts_per_month);
    }
    let (first_tx, first_rx) = oneshot::channel();
    tokio::spawn(prepare_database(
        AppState {
            store: store.clone(),
            compute: compute.clone(),
            config: config.clone(),
            metrics: metrics.clone(),
        },
        first_tx,
    ));
    if let Ok(FirstAttempt::Failed(e)) = first_rx.await {
        return Err(e.into());
    }
    Ok(http::router(AppState {
        store,
        compute,
        config,
        metrics,
    }))
}

/// How the first attempt to prepare the database ended.
enum FirstAttempt {
    /// Ready, or not reachable yet (attempts go on).
    Done,
    /// A failure retrying will not fix.
    Failed(StoreError),
}

/// Waits for the database, applies the migrations (unless disabled), then starts
/// the workers and periodic tasks. Reports the first attempt's outcome on `first`.
async fn prepare_database(app: AppState, first: oneshot::Sender<FirstAttempt>) {
    let mut first = Some(first);
    let mut delay = Duration::from_millis(250);
    let mut last_error = String::new();
    loop {
        let attempt = async {
            app.store.check().await?;
            if app.config.migrate {
                app.store.migrate().await?;
            }
            Ok::<(), StoreError>(())
        };
        match attempt.await {
            Ok(()) => {
                if !last_error.is_empty() {
                    info!(database = %app.store.location(), "database ready");
                }
                start_background(app);
                if let Some(first) = first.take() {
                    let _ = first.send(FirstAttempt::Done);
                }
                return;
            }
            Err(e) if e.is_transient() => {
                let message = e.to_string();
                if message != last_error {
                    warn!(error = %message, "database not ready; /readyz answers 503 until it is");
                    last_error = message;
                }
                if let Some(first) = first.take() {
                    let _ = first.send(FirstAttempt::Done);
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
            Err(e) => {
                match first.take() {
                    Some(first) => {
                        let _ = first.send(FirstAttempt::Failed(e));
                    }
                    None => error!(error = %e, "cannot apply the migrations; /readyz answers 503"),
                }
                return;
            }
        }
    }
}

/// The longest wait between two attempts to reach the database.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Starts the workers and the periodic tasks.
fn start_background(app: AppState) {
    if !app.config.workers.disabled {
        Workers::new(
            app.store.clone(),
            app.compute.clone(),
            app.config.clone(),
            app.metrics.clone(),
        )
        .spawn();
    }
    tokio::spawn(refresh_gauges(
        app.store.clone(),
        app.config.clone(),
        app.metrics.clone(),
    ));
    tokio::spawn(purge_expired(app.store, app.config, app.metrics));
}

/// A timer for a periodic task: a tick missed while the task ran late is
/// skipped, not run back to back to catch up.
fn every(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick
}

/// Refreshes the gauges from the database every `drift.refresh_secs`, in a
/// task of its own so that nothing else (the purge) delays it.
async fn refresh_gauges(store: Store, config: Arc<Config>, metrics: Metrics) {
    let mut tick = every(Duration::from_secs(config.drift.refresh_secs));
    loop {
        tick.tick().await;
        let started = std::time::Instant::now();
        let refreshed = crate::telemetry::refresh(&store, &metrics, &config.drift).await;
        metrics
            .refresh_duration_seconds
            .observe(started.elapsed().as_secs_f64());
        // The last gauges read stay exported while the database is away.
        metrics.database_up.set(i64::from(refreshed.is_ok()));
        if let Err(e) = refreshed {
            warn!(error = %e, "cannot refresh metrics from the database");
        }
    }
}

/// How often the stored files of segmentations past retention are dropped.
const PURGE_PERIOD: Duration = Duration::from_secs(3600);
/// Segmentations purged per statement: short transactions, however large the backlog.
const PURGE_BATCH: i64 = 5000;
/// Cases deleted per transaction by the results retention (each with its rows).
const CASE_PURGE_BATCH: i64 = 500;

/// Every hour, in a task of its own and in batches: drops the stored files of
/// segmentations past retention (whole months where it can, creating the
/// coming months' partitions) and hourly Dice buckets the 1-day window no
/// longer reads, then, where those retentions are set, whole months of results
/// past the results retention, cases past it and incidents past theirs.
async fn purge_expired(store: Store, config: Arc<Config>, metrics: Metrics) {
    let mut tick = every(PURGE_PERIOD);
    loop {
        tick.tick().await;
        let started = std::time::Instant::now();
        // Whole months of stored files and results first (and the coming months'
        // partitions created), then the rest in batches.
        let mut purged = 0;
        let mut results = 0;
        let outcome = match store
            .maintain_partitions(config.retention_days, config.results_retention_days)
            .await
        {
            Ok(dropped) => {
                purged += dropped.files;
                results = dropped.results;
                loop {
                    match store.purge_scored(config.retention_days, PURGE_BATCH).await {
                        Ok(n) => {
                            purged += n;
                            if n < PURGE_BATCH as u64 {
                                break Ok(());
                            }
                        }
                        Err(e) => break Err(e),
                    }
                }
            }
            Err(e) => Err(e),
        };
        let outcome = match outcome {
            Ok(()) => store.purge_hourly_rollups().await.map(drop),
            Err(e) => Err(e),
        };
        let mut cases = 0;
        let outcome = match outcome {
            Ok(()) if config.results_retention_days > 0 => loop {
                match store
                    .purge_expired_cases(config.results_retention_days, CASE_PURGE_BATCH)
                    .await
                {
                    Ok(n) => {
                        cases += n;
                        if n < CASE_PURGE_BATCH as u64 {
                            break Ok(());
                        }
                    }
                    Err(e) => break Err(e),
                }
            },
            other => other,
        };
        let outcome = match outcome {
            Ok(()) if config.incidents_retention_days > 0 => store
                .purge_resolved_incidents(config.incidents_retention_days)
                .await
                .map(drop),
            other => other,
        };
        metrics
            .purge_duration_seconds
            .set(started.elapsed().as_secs_f64());
        if purged > 0 {
            info!(
                purged,
                "dropped stored files of segmentations past retention"
            );
        }
        if results > 0 {
            info!(
                results,
                "dropped whole months of results past the results retention"
            );
        }
        if cases > 0 {
            info!(cases, "deleted cases past the results retention");
        }
        if let Err(e) = outcome {
            warn!(error = %e, "retention purge failed");
        }
    }
}
