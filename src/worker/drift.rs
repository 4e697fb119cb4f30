//! The drift task: feeds scored results to their streams in case-time order,
//! once they are older than the configured lateness, so detector decisions do
//! not depend on which worker finished first.

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use crate::config::Config;
use crate::drift::feed::{FeedSettings, Feeder};
use crate::schema::DEFAULT_FAILURE_THRESHOLD;
use crate::store::Store;

/// Results fed per transaction.
const BATCH: i64 = 100;
/// Pause between polls when nothing is due.
const POLL: Duration = Duration::from_millis(500);

/// Runs forever.
pub async fn feed(store: Store, config: Arc<Config>) {
    let settings = FeedSettings {
        target: config.drift.target(),
        incident_hold: chrono::Duration::seconds(
            (config.drift.incident_hold_days * 86_400.0) as i64,
        ),
        default_failure_threshold: DEFAULT_FAILURE_THRESHOLD,
    };
    let lateness = Duration::from_secs(config.drift.lateness_secs);
    let mut feeder = Feeder::default();
    loop {
        match store
            .feed_drift(
                &mut feeder,
                &settings,
                lateness,
                BATCH,
                config.drift.exclude_ambiguous,
            )
            .await
        {
            Ok(n) if n as i64 == BATCH => continue,
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot feed drift detectors; retrying"),
        }
        tokio::time::sleep(POLL).await;
    }
}
