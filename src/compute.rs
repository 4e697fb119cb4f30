//! The bounded compute pool: all decoding and scoring runs here, never on the
//! async runtime, admitted by a budget of voxels in flight.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use tokio::sync::{Semaphore, oneshot};

/// Voxels one budget permit stands for.
const VOXELS_PER_PERMIT: u64 = 1 << 16;

/// A fixed rayon pool and a memory budget, shared by uploads and jobs.
#[derive(Clone)]
pub struct Compute {
    pool: Arc<rayon::ThreadPool>,
    budget: Arc<Semaphore>,
    capacity: u32,
}

/// Work that panicked; the pool and the process carry on.
#[derive(Debug, thiserror::Error)]
#[error("internal error while computing: {0}")]
pub struct ComputePanic(pub String);

impl Compute {
    /// A pool of `threads` threads admitting at most `budget_voxels` voxels at once.
    pub fn new(threads: usize, budget_voxels: u64) -> std::io::Result<Compute> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("segwatch-compute-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        let capacity =
            (budget_voxels / VOXELS_PER_PERMIT).clamp(1, Semaphore::MAX_PERMITS as u64) as u32;
        Ok(Compute {
            pool: Arc::new(pool),
            budget: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
        })
    }

    /// Runs `work` on the pool once `voxels` fit in the budget. Work larger than
    /// the whole budget waits until it can run alone.
    pub async fn run<T: Send + 'static>(
        &self,
        voxels: u64,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ComputePanic> {
        let permits = voxels
            .div_ceil(VOXELS_PER_PERMIT)
            .clamp(1, self.capacity as u64) as u32;
        let _admitted = self
            .budget
            .clone()
            .acquire_many_owned(permits)
            .await
            .map_err(|_| ComputePanic("the compute pool is shut down".into()))?;
        let (done, result) = oneshot::channel();
        self.pool.spawn(move || {
            let outcome = catch_unwind(AssertUnwindSafe(work)).map_err(|panic| {
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into())
            });
            let _ = done.send(outcome);
        });
        match result.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(ComputePanic(message)),
            Err(_) => Err(ComputePanic("the compute task was dropped".into())),
        }
    }

    /// Voxels admitted right now (for metrics).
    pub fn voxels_in_flight(&self) -> u64 {
        (self.capacity as u64 - self.budget.available_permits() as u64) * VOXELS_PER_PERMIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_work_and_survives_panics() {
        let compute = Compute::new(2, 1 << 20).unwrap();
        assert_eq!(compute.run(10, || 6 * 7).await.unwrap(), 42);
        let err = compute
            .run(10, || -> u8 { panic!("bad input") })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("bad input"));
        assert_eq!(compute.run(1 << 40, || 1).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn budget_bounds_voxels_in_flight() {
        let compute = Compute::new(4, 4 * VOXELS_PER_PERMIT).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        // Two jobs of 3 permits cannot run together in a budget of 4.
        let first = {
            let (compute, rx) = (compute.clone(), rx.clone());
            tokio::spawn(async move {
                compute
                    .run(3 * VOXELS_PER_PERMIT, move || {
                        rx.lock().unwrap().recv().unwrap()
                    })
                    .await
            })
        };
        while compute.voxels_in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(compute.voxels_in_flight(), 3 * VOXELS_PER_PERMIT);
        let second = {
            let compute = compute.clone();
            tokio::spawn(async move { compute.run(3 * VOXELS_PER_PERMIT, || ()).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!second.is_finished());
        tx.send(()).unwrap();
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
        assert_eq!(compute.voxels_in_flight(), 0);
    }
}
