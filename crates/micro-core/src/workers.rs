//! [`Workers`]: a few dedicated threads that run blocking jobs from one queue, for work that
//! must stay off the async runtime and gains from always running on the same threads.
//!
//! Against tokio's blocking pool (up to 512 threads, a lock, a condvar wake and a thread switch
//! per job): under load a worker takes jobs back to back without waking, the number of threads
//! doing the work is fixed (so is what they hold in thread-local state), and jobs beyond that
//! number wait their turn. A panicking job is an error to its caller and its worker lives on.
//! The threads end when the last clone of their [`Workers`] (the queue's sender) is dropped; they
//! hold nothing of their own, so what a job captured is released when the job ends.

use std::sync::{Arc, Mutex, PoisonError, mpsc};

type Job = Box<dyn FnOnce() + Send>;

/// A job did not finish: it panicked, or the workers are gone.
#[derive(Debug, thiserror::Error)]
#[error("the {0} worker thread failed")]
pub struct WorkerFailed(&'static str);

/// Dedicated worker threads fed by one queue. Clones share the threads.
#[derive(Debug, Clone)]
pub struct Workers {
    name: &'static str,
    jobs: mpsc::Sender<Job>,
}

impl Workers {
    /// Starts `threads` threads named `micro-<name>-<n>`.
    pub fn start(name: &'static str, threads: usize) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new().name(format!("micro-{name}-{n}")).spawn(move || {
                loop {
                    // Held only while waiting for the next job; jobs run without it.
                    let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            })?;
        }
        Ok(Self { name, jobs })
    }

    /// Runs `work` on one of the threads and returns what it returned.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, WorkerFailed> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            let _ = done.send(outcome);
        });
        let failed = || WorkerFailed(self.name);
        self.jobs.send(job).map_err(|_| failed())?;
        match result.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => {
                tracing::error!(workers = self.name, "a worker job panicked");
                Err(failed())
            }
            Err(_) => Err(failed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_the_named_threads_and_panics_are_errors() {
        let workers = Workers::start("test", 2).unwrap();
        let name = workers.run(|| std::thread::current().name().map(str::to_string)).await.unwrap();
        assert!(name.is_some_and(|name| name.starts_with("micro-test-")));
        for _ in 0..4 {
            let panicked = workers.run(|| panic!("inside a job")).await;
            assert!(panicked.is_err());
        }
        let mut jobs = tokio::task::JoinSet::new();
        for n in 0..16u32 {
            let workers = workers.clone();
            jobs.spawn(async move { workers.run(move || n * 2).await.unwrap() });
        }
        let mut doubled = jobs.join_all().await;
        doubled.sort_unstable();
        assert_eq!(doubled, (0..16).map(|n| n * 2).collect::<Vec<_>>(), "every worker lives on");
    }
}
