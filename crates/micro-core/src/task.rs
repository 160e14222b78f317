//! Background tasks tied to their owner.

use tokio::task::{AbortHandle, JoinHandle};

/// Aborts its task when dropped. The owner of a background loop (a sweeper, a watcher, a
/// heartbeat, a forwarding task) holds one, so the loop ends when its owner does, however the
/// owner ends: returned, failed or dropped.
#[derive(Debug)]
pub struct AbortOnDrop(AbortHandle);

impl AbortOnDrop {
    /// Guards the task `handle` aborts.
    pub fn new(handle: AbortHandle) -> Self {
        Self(handle)
    }
}

impl<T> From<JoinHandle<T>> for AbortOnDrop {
    /// Guards a spawned task; the task stays detached until the guard drops.
    fn from(task: JoinHandle<T>) -> Self {
        Self(task.abort_handle())
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_the_guard_aborts_the_task() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        let guard = AbortOnDrop::from(task);
        drop(guard);
        assert!(rx.await.is_err(), "the aborted task dropped its sender");

        let kept = tokio::spawn(async { 7 });
        let handle = kept.abort_handle();
        let _guard = AbortOnDrop::new(handle);
        assert_eq!(kept.await.unwrap(), 7, "a live guard leaves the task running");
    }
}
