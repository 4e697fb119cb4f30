//! Assembling the running service: store, migrations, compute pool, workers,
//! periodic tasks and the router.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tracing::{info, warn};

use crate::compute::Compute;
use crate::config::Config;
use crate::http::{self, AppState};
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::worker::Workers;

/// Starts workers and periodic tasks and returns the API router.
pub async fn launch(config: Arc<Config>) -> anyhow::Result<Router> {
    let store = Store::connect(
        &config.database_url,
        (config.concurrency() as u32 * 2 + 8).max(10),
    )?;
    if config.migrate {
        migrate_when_reachable(&store).await?;
    }
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
    if !config.workers.disabled {
        Workers::new(
            store.clone(),
            compute.clone(),
            config.clone(),
            metrics.clone(),
        )
        .spawn();
    }
    tokio::spawn(periodic(store.clone(), config.clone(), metrics.clone()));
    Ok(http::router(AppState {
        store,
        compute,
        config,
        metrics,
    }))
}

/// Applies migrations, waiting for the database if it is still starting.
async fn migrate_when_reachable(store: &Store) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(500);
    for attempt in 1..=10 {
        match store.migrate().await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 10 => {
                warn!(error = %e, "cannot migrate yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Refreshes the gauges from Postgres and purges expired uploads.
async fn periodic(store: Store, config: Arc<Config>, metrics: Metrics) {
    let mut tick = tokio::time::interval(Duration::from_secs(config.drift.refresh_secs));
    let mut purged_at = tokio::time::Instant::now() - Duration::from_secs(3600);
    loop {
        tick.tick().await;
        if let Err(e) = crate::telemetry::refresh(&store, &metrics, config.drift.target()).await {
            warn!(error = %e, "cannot refresh metrics from the database");
        }
        if purged_at.elapsed() >= Duration::from_secs(3600) {
            purged_at = tokio::time::Instant::now();
            match store.purge_scored(config.retention_days).await {
                Ok(0) => {}
                Ok(n) => info!(purged = n, "dropped voxels of segmentations past retention"),
                Err(e) => warn!(error = %e, "retention purge failed"),
            }
        }
    }
}
