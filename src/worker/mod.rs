//! Job workers: claim a leased job, score it on the compute pool, store the
//! results, retry transient failures with backoff, record permanent ones.

mod drift;
mod score;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use score::{JobUploads, ReaderUpload, ScoreError, inflate, score};

use crate::compute::Compute;
use crate::config::Config;
use crate::metrics::Settings;
use crate::metrics::pairing::PairingError;
use crate::metrics::probabilistic::ProbabilityError;
use crate::schema::Schema;
use crate::store::{ClaimedJob, JOBS_CHANNEL, Store, StoreError};
use crate::telemetry::Metrics;

/// Set to `abort_after_claim` to abort the process right after claiming a job:
/// used by the tests that prove an abandoned job is re-run once its lease expires.
pub const FAILPOINT_ENV: &str = "SEGWATCH_FAILPOINT";

/// What every worker shares.
#[derive(Clone)]
pub struct Workers {
    store: Store,
    compute: Compute,
    config: Arc<Config>,
    metrics: Metrics,
    wake: Arc<Notify>,
}

/// How handling one job ended.
enum Handled {
    Done,
    Retry(String),
    Failed(FailureReason, String),
    LeaseLost,
}

/// Why a job did not score: the stable `reason` label of
/// `segwatch_jobs_failed_total`, whatever the wording of the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// The database failed; the job is retried.
    Transient,
    /// A stored upload cannot be read or decoded.
    InvalidFile,
    /// The prediction and reference grids cannot be compared.
    GridMismatch,
    /// A structure is not in the model version's schema.
    UnknownStructure,
    /// An upload was purged after the retention period.
    Purged,
    /// Attempts ran out (a crashed worker, a lost lease).
    Abandoned,
    /// The scorer panicked or the stored schema is unreadable: a bug.
    Internal,
}

impl FailureReason {
    /// Every reason, so the counter starts at 0 for each.
    pub const ALL: [FailureReason; 7] = [
        FailureReason::Transient,
        FailureReason::InvalidFile,
        FailureReason::GridMismatch,
        FailureReason::UnknownStructure,
        FailureReason::Purged,
        FailureReason::Abandoned,
        FailureReason::Internal,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Transient => "transient",
            FailureReason::InvalidFile => "invalid_file",
            FailureReason::GridMismatch => "grid_mismatch",
            FailureReason::UnknownStructure => "unknown_structure",
            FailureReason::Purged => "purged",
            FailureReason::Abandoned => "abandoned",
            FailureReason::Internal => "internal",
        }
    }
}

impl From<&ScoreError> for FailureReason {
    fn from(err: &ScoreError) -> FailureReason {
        match err {
            ScoreError::Format { .. } | ScoreError::Stored(_) => FailureReason::InvalidFile,
            ScoreError::Pairing(PairingError::Grid(_) | PairingError::Coverage(_)) => {
                FailureReason::GridMismatch
            }
            ScoreError::Pairing(PairingError::Unknown(_)) => FailureReason::UnknownStructure,
            ScoreError::Probability(ProbabilityError::Grid(_)) => FailureReason::GridMismatch,
            ScoreError::Probability(_) => FailureReason::InvalidFile,
        }
    }
}

impl Workers {
    pub fn new(store: Store, compute: Compute, config: Arc<Config>, metrics: Metrics) -> Workers {
        for reason in FailureReason::ALL {
            metrics
                .jobs_failed_total
                .with_label_values(&[reason.as_str()])
                .inc_by(0);
        }
        Workers {
            store,
            compute,
            config,
            metrics,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Starts the listener and `concurrency` claim loops.
    pub fn spawn(self) -> Vec<JoinHandle<()>> {
        let mut tasks = vec![
            tokio::spawn(self.clone().listen()),
            tokio::spawn(drift::feed(self.store.clone(), self.config.clone())),
        ];
        for slot in 0..self.config.concurrency() {
            tasks.push(tokio::spawn(self.clone().run(slot)));
        }
        tasks
    }

    /// Wakes the claim loops on every job notification: NOTIFY from PostgreSQL
    /// (reconnecting with backoff), or the embedded store's in-process signal.
    async fn listen(self) {
        let Some(pool) = self.store.postgres_pool().cloned() else {
            if let Some(local) = self.store.local_job_notifications() {
                loop {
                    local.notified().await;
                    self.wake.notify_waiters();
                }
            }
            return;
        };
        let mut delay = Duration::from_millis(500);
        loop {
            match PgListener::connect_with(&pool).await {
                Ok(mut listener) => {
                    if listener.listen(JOBS_CHANNEL).await.is_ok() {
                        delay = Duration::from_millis(500);
                        while listener.recv().await.is_ok() {
                            self.wake.notify_waiters();
                        }
                    }
                }
                Err(e) => warn!(error = %e, "job notifications unavailable; polling"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    /// One claim loop: handles jobs until none is runnable, then waits for a
    /// notification or the polling interval. Database errors back off.
    async fn run(self, slot: usize) {
        let poll = Duration::from_millis(self.config.workers.poll_interval_ms);
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.store.claim_job(self.lease()).await {
                Ok(Some(job)) => {
                    backoff = Duration::from_millis(200);
                    if std::env::var(FAILPOINT_ENV).as_deref() == Ok("abort_after_claim") {
                        std::process::abort();
                    }
                    self.handle(job, slot).await;
                }
                Ok(None) => {
                    let _ = tokio::time::timeout(poll, self.wake.notified()).await;
                }
                Err(e) => {
                    warn!(slot, error = %e, "cannot claim jobs; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    fn lease(&self) -> Duration {
        Duration::from_secs(self.config.workers.lease_secs)
    }

    async fn handle(&self, job: ClaimedJob, slot: usize) {
        let started = Instant::now();
        let heartbeat = {
            let (store, job, lease) = (self.store.clone(), job.clone(), self.lease());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(lease / 3);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if !matches!(store.heartbeat(&job, lease).await, Ok(true) | Err(_)) {
                        break;
                    }
                }
            })
        };
        let handled = self.process(&job).await;
        heartbeat.abort();
        self.metrics
            .job_duration_seconds
            .observe(started.elapsed().as_secs_f64());
        let recorded = match &handled {
            Handled::Done => {
                info!(
                    slot,
                    job = job.id,
                    seconds = started.elapsed().as_secs_f64(),
                    "scored"
                );
                Ok(())
            }
            Handled::LeaseLost => {
                warn!(
                    slot,
                    job = job.id,
                    "lease lost; another worker owns the job"
                );
                Ok(())
            }
            Handled::Retry(reason) => {
                self.metrics
                    .jobs_failed_total
                    .with_label_values(&[FailureReason::Transient.as_str()])
                    .inc();
                let delay = retry_delay(job.attempts);
                warn!(slot, job = job.id, attempt = job.attempts, %reason, "retrying later");
                self.store.fail_job(&job, reason, Some(delay)).await
            }
            Handled::Failed(kind, reason) => {
                self.metrics
                    .jobs_failed_total
                    .with_label_values(&[kind.as_str()])
                    .inc();
                warn!(slot, job = job.id, %reason, "failed");
                self.store.fail_job(&job, reason, None).await
            }
        };
        if let Err(e) = recorded {
            // The lease will expire and the job run again.
            warn!(slot, job = job.id, error = %e, "cannot record the job's outcome");
        }
    }

    async fn process(&self, job: &ClaimedJob) -> Handled {
        if job.attempts > self.config.workers.max_attempts {
            return Handled::Failed(
                FailureReason::Abandoned,
                format!(
                    "abandoned after {} attempts (worker crashed or lost its lease)",
                    job.attempts - 1
                ),
            );
        }
        let transient = |e: StoreError| Handled::Retry(e.to_string());
        let mut inputs = match self.store.job_inputs(job).await {
            Ok(inputs) => inputs,
            Err(e) => return transient(e),
        };
        let (Some(prediction), Some(reference)) =
            (inputs.prediction.clone(), inputs.reference.clone())
        else {
            return Handled::Failed(
                FailureReason::Purged,
                "an upload was purged after the retention period; upload it again".into(),
            );
        };
        let schema: Option<Schema> = match inputs
            .schema
            .clone()
            .map(serde_json::from_value)
            .transpose()
        {
            Ok(schema) => schema,
            Err(e) => {
                return Handled::Failed(
                    FailureReason::Internal,
                    format!("stored schema is unreadable: {e}"),
                );
            }
        };
        // The job's reference is the primary reader's (the reader of the
        // case's first reference) unless another reader's arrival enqueued it:
        // then it only updates the readers' agreement.
        let references = match self
            .store
            .reader_references(inputs.case_id, inputs.reference_id)
            .await
        {
            Ok(references) => references,
            Err(e) => return transient(e),
        };
        let makes_result = references
            .first()
            .is_none_or(|r| r.reader == inputs.reference_reader);
        // The job's reference is already loaded (and counted in its voxels).
        let mut readers: Vec<_> = references
            .into_iter()
            .filter_map(|r| match r.content {
                _ if r.id == inputs.reference_id => Some((r.reader, ReaderUpload::JobReference, 0)),
                Some(content) => Some((r.reader, ReaderUpload::Stored(content), r.voxels)),
                None => None,
            })
            .collect();
        if readers.len() < 2 {
            readers.clear();
        }
        let readers_voxels: i64 = readers.iter().map(|r| r.2).sum();
        // A probability map is scored as it streams: what scoring holds of it is
        // the stored file and the reader's buffers, counted a byte a voxel.
        let probabilities_bytes = inputs.probabilities.as_ref().map_or(0, |p| {
            p.content.len() as u64 + crate::formats::probability_nifti::READ_BUFFER_BYTES
        });
        let uploads = JobUploads {
            prediction,
            reference,
            makes_result,
            readers: readers.into_iter().map(|(r, u, _)| (r, u)).collect(),
            probabilities: inputs.probabilities.take(),
        };
        let settings = Settings {
            surface: self.config.scoring.surface,
            tolerance_mm: self.config.scoring.default_tolerance_mm,
        };
        let limits = self.config.limits.decode();
        let max_stored = self.config.limits.stored_bytes();
        let budget = (inputs.voxels + readers_voxels) as u64 + probabilities_bytes;
        let scored = self
            .compute
            .run(budget, move || {
                score(&uploads, schema.as_ref(), settings, &limits, max_stored)
            })
            .await;
        let (outcome, agreement) = match scored {
            Ok(Ok(scored)) => scored,
            Ok(Err(e)) => return Handled::Failed(FailureReason::from(&e), e.to_string()),
            Err(panic) => return Handled::Failed(FailureReason::Internal, panic.to_string()),
        };
        match self
            .store
            .complete_job(job, &inputs, outcome.as_ref(), &agreement)
            .await
        {
            Ok(true) => {
                if let Some(outcome) = &outcome {
                    self.metrics.record_scored(&inputs, outcome);
                }
                Handled::Done
            }
            Ok(false) => Handled::LeaseLost,
            Err(e) if e.is_transient() => transient(e),
            // A constraint the results break will break it again: a bug.
            Err(e) => Handled::Failed(FailureReason::Internal, e.to_string()),
        }
    }
}

/// Backoff before retry `attempts`: 2, 4, 8 … seconds, at most 5 minutes.
fn retry_delay(attempts: i32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(attempts.clamp(1, 16) as u32).min(300))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::GridMismatch;

    #[test]
    fn failure_reasons_follow_the_error_not_its_wording() {
        let grid = ScoreError::Pairing(PairingError::Grid(GridMismatch::Dims(3, 2)));
        assert_eq!(FailureReason::from(&grid), FailureReason::GridMismatch);
        let unknown = ScoreError::Pairing(PairingError::Unknown("label 9".into()));
        assert_eq!(
            FailureReason::from(&unknown),
            FailureReason::UnknownStructure
        );
        let stored = ScoreError::Stored("anything at all".into());
        assert_eq!(FailureReason::from(&stored), FailureReason::InvalidFile);
        let probabilities =
            ScoreError::Probability(ProbabilityError::Grid(GridMismatch::Dims(3, 2)));
        assert_eq!(
            FailureReason::from(&probabilities),
            FailureReason::GridMismatch
        );
        let over = ScoreError::Probability(ProbabilityError::OutOfRange { value: 1.5 });
        assert_eq!(FailureReason::from(&over), FailureReason::InvalidFile);
        let labels: std::collections::BTreeSet<_> =
            FailureReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), FailureReason::ALL.len());
    }
}
