//! [`Workers`]: a few dedicated threads that run blocking jobs from one queue, for work that
//! must stay off the async runtime and gains from always running on the same threads.
//!
//! Against tokio's blocking pool (up to 512 threads, a lock, a condvar wake and a thread switch
//! per job): under load a worker takes jobs back to back without waking, the number of threads
//! doing the work is fixed (so is what they hold in thread-local state), and jobs beyond that
//! number wait their turn. A panicking job is an error to its caller and its worker lives on.
//! The threads end when the last clone of their [`Workers`] (the queue's sender) is dropped; they
//! hold nothing of their own, so what a job captured is released when the job ends.
//!
//! A job whose caller has gone (the future of [`Workers::run`] was dropped before a worker took
//! the job) is skipped, not run: nobody waits for its result, and under a flood of abandoned
//! requests the threads would otherwise work for callers long gone. Workers started with
//! [`Workers::start_bounded`] also refuse a job at once ([`WorkerError::Full`]) while as many
//! jobs as the bound already wait, so a burst is answered quickly instead of queueing for ever.

use std::sync::{Arc, Mutex, PoisonError, mpsc};

type Job = Box<dyn FnOnce() + Send>;

/// Why a job did not run to completion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkerError {
    /// The job panicked, or the workers are gone.
    #[error("the {0} worker thread failed")]
    Failed(&'static str),
    /// The queue of a bounded set of workers already held `capacity` waiting jobs.
    #[error("the {name} queue is full ({capacity} jobs waiting)")]
    Full { name: &'static str, capacity: usize },
}

/// The sending end of the queue.
#[derive(Debug, Clone)]
enum Queue {
    Unbounded(mpsc::Sender<Job>),
    Bounded { jobs: mpsc::SyncSender<Job>, capacity: usize },
}

/// Dedicated worker threads fed by one queue. Clones share the threads.
#[derive(Debug, Clone)]
pub struct Workers {
    name: &'static str,
    queue: Queue,
}

impl Workers {
    /// Starts `threads` threads named `micro-<name>-<n>`; jobs beyond them wait in a queue with
    /// no bound.
    pub fn start(name: &'static str, threads: usize) -> std::io::Result<Self> {
        let (jobs, receiver) = mpsc::channel::<Job>();
        spawn(name, threads, receiver)?;
        Ok(Self { name, queue: Queue::Unbounded(jobs) })
    }

    /// Starts `threads` threads named `micro-<name>-<n>`; at most `capacity` (at least one) jobs
    /// wait for them, and [`Workers::run`] refuses more with [`WorkerError::Full`].
    pub fn start_bounded(name: &'static str, threads: usize, capacity: usize) -> std::io::Result<Self> {
        let capacity = capacity.max(1);
        let (jobs, receiver) = mpsc::sync_channel::<Job>(capacity);
        spawn(name, threads, receiver)?;
        Ok(Self { name, queue: Queue::Bounded { jobs, capacity } })
    }

    /// Runs `work` on one of the threads and returns what it returned. Dropping the returned
    /// future before a thread took the job means the job is skipped.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, WorkerError> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if done.is_closed() {
                return; // The caller left: nobody wants the result.
            }
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            let _ = done.send(outcome);
        });
        let failed = || WorkerError::Failed(self.name);
        match &self.queue {
            Queue::Unbounded(jobs) => jobs.send(job).map_err(|_| failed())?,
            Queue::Bounded { jobs, capacity } => match jobs.try_send(job) {
                Ok(()) => {}
                Err(mpsc::TrySendError::Full(_)) => {
                    return Err(WorkerError::Full { name: self.name, capacity: *capacity });
                }
                Err(mpsc::TrySendError::Disconnected(_)) => return Err(failed()),
            },
        }
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

/// Starts the threads taking jobs from `receiver`.
fn spawn(name: &'static str, threads: usize, receiver: mpsc::Receiver<Job>) -> std::io::Result<()> {
    let queue = Arc::new(Mutex::new(receiver));
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Waker};

    use super::*;

    #[tokio::test]
    async fn jobs_run_on_the_named_threads_and_panics_are_errors() {
        let workers = Workers::start("test", 2).unwrap();
        let name = workers.run(|| std::thread::current().name().map(str::to_string)).await.unwrap();
        assert!(name.is_some_and(|name| name.starts_with("micro-test-")));
        for _ in 0..4 {
            let panicked = workers.run(|| panic!("inside a job")).await;
            assert_eq!(panicked, Err(WorkerError::Failed("test")));
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

    /// Polls `future` once, which queues its job.
    fn queue<F: Future>(future: &mut Pin<Box<F>>) -> Poll<F::Output> {
        future.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test]
    async fn a_bounded_queue_refuses_when_full_and_abandoned_jobs_are_skipped() {
        let workers = Workers::start_bounded("bounded", 1, 2).unwrap();
        // Occupy the one thread until released.
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (release, released) = mpsc::channel::<()>();
        let blocker = tokio::spawn({
            let workers = workers.clone();
            async move {
                workers
                    .run(move || {
                        let _ = started_tx.send(());
                        let _ = released.recv();
                    })
                    .await
            }
        });
        started.await.unwrap();

        let ran = Arc::new(AtomicUsize::new(0));
        let count = |ran: &Arc<AtomicUsize>| {
            let ran = ran.clone();
            move || ran.fetch_add(1, Ordering::SeqCst)
        };
        let mut kept = Box::pin(workers.run(count(&ran)));
        let mut abandoned = Box::pin(workers.run(count(&ran)));
        assert!(queue(&mut kept).is_pending());
        assert!(queue(&mut abandoned).is_pending());
        // Two wait: the third is refused at once.
        let mut refused = Box::pin(workers.run(count(&ran)));
        assert_eq!(queue(&mut refused), Poll::Ready(Err(WorkerError::Full { name: "bounded", capacity: 2 })));
        drop(abandoned);

        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        assert_eq!(kept.await, Ok(0), "the job still waited for ran first");
        // Queued after the abandoned one, so it runs once that one was taken (and skipped).
        assert_eq!(workers.run(count(&ran)).await, Ok(1), "the abandoned job did not run");
        assert_eq!(ran.load(Ordering::SeqCst), 2);
    }
}
