//! Local delivery shared by the backends: each subscriber is an [`Outlet`] (a bounded buffer
//! with its drop count), and a backend's [`Outlets`] hands a message to every outlet of a topic
//! or to one member of a queue group, counting and logging (rate-limited) what a lagging
//! subscriber loses.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::mpsc::{self, error::TrySendError};

use crate::{LAG_LOG_INTERVAL, Message, SUBSCRIBER_BUFFER, Subscription};

/// One local subscriber.
#[derive(Debug)]
pub struct Outlet {
    pub id: u64,
    sender: mpsc::Sender<Arc<Message>>,
    dropped: Arc<AtomicU64>,
    /// Milliseconds after [`Outlets`]' epoch (plus one) of the last lag log line; zero: never.
    last_warned: AtomicU64,
}

/// Where one message goes: the topic's subscribers, or one member of queue `name`, chosen
/// round robin with `next`.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub namespace: &'a str,
    pub topic: &'a str,
    pub queue: Option<(&'a str, &'a AtomicUsize)>,
}

/// A backend's outlets: ids, the total of dropped messages, and lag logging.
#[derive(Debug)]
pub struct Outlets {
    next_id: AtomicU64,
    dropped: AtomicU64,
    epoch: Instant,
}

impl Default for Outlets {
    fn default() -> Self {
        Self { next_id: AtomicU64::new(1), dropped: AtomicU64::new(0), epoch: Instant::now() }
    }
}

impl Outlets {
    /// A new outlet and the [`Subscription`] reading it; `unsubscribe` is dropped with the
    /// subscription (the backend's clean-up goes in its `Drop`).
    pub fn open(&self, unsubscribe: impl FnOnce(u64) -> Box<dyn Send + Sync>) -> (Outlet, Subscription) {
        let (sender, receiver) = mpsc::channel(SUBSCRIBER_BUFFER);
        let dropped = Arc::new(AtomicU64::new(0));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let outlet = Outlet { id, sender, dropped: Arc::clone(&dropped), last_warned: AtomicU64::new(0) };
        (outlet, Subscription::new(receiver, dropped, unsubscribe(id)))
    }

    /// Messages dropped so far over every outlet.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Hands `message` to `outlets` as `target` says, never waiting: a full outlet loses it
    /// (counted). In a queue group a full member passes its turn to the next one with room, so
    /// the message is only lost when the whole group is behind.
    pub fn deliver(&self, outlets: &[Outlet], target: Target<'_>, message: &Arc<Message>) {
        match target.queue {
            None => {
                for outlet in outlets {
                    if let Err(TrySendError::Full(_)) = outlet.sender.try_send(Arc::clone(message)) {
                        self.lagged(target, outlet);
                    }
                }
            }
            Some(_) if outlets.is_empty() => {}
            Some((_, next)) => {
                let members = outlets.len();
                let start = next.fetch_add(1, Ordering::Relaxed) % members;
                let delivered = (0..members).any(|offset| {
                    outlets[(start + offset) % members].sender.try_send(Arc::clone(message)).is_ok()
                });
                if !delivered {
                    self.lagged(target, &outlets[start]);
                }
            }
        }
    }

    /// Counts a message dropped for `outlet` and says so, at most once per
    /// [`LAG_LOG_INTERVAL`] per outlet.
    fn lagged(&self, target: Target<'_>, outlet: &Outlet) {
        let dropped = outlet.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        self.dropped.fetch_add(1, Ordering::Relaxed);
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1);
        let interval = u64::try_from(LAG_LOG_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        let last = outlet.last_warned.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= interval;
        if due && outlet.last_warned.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(
                namespace = target.namespace,
                topic = target.topic,
                queue = target.queue.map_or("", |(name, _)| name),
                subscriber = outlet.id,
                dropped,
                buffer = SUBSCRIBER_BUFFER,
                "broker subscriber lags; dropping messages for it"
            );
        }
    }
}
