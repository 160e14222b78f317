//! [`MemoryEvents`]: the log in memory, under one lock. Lost when dropped; for tests and
//! `--events memory`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::engine::Engine;
use crate::now_ms;
use crate::storage::{Append, Bounds, RETENTION_BATCH, Skip, Storage, StoredGroup, oldest_kept, over_count};
use crate::{DeadLetter, Event, EventsError, Result, Retention, Selection, TopicInfo, validate};

#[derive(Default)]
struct Topic {
    events: VecDeque<Event>,
    last: u64,
    last_ms: u64,
}

impl Topic {
    fn first(&self) -> u64 {
        self.events.front().map_or(self.last + 1, |e| e.sequence)
    }

    /// The sequences stored of `topic` (none yet: `1..=0`).
    fn bounds(topic: Option<&Topic>) -> Bounds {
        topic.map_or(Bounds { first: 1, last: 0 }, |t| Bounds { first: t.first(), last: t.last })
    }

    fn retain(&mut self, retention: &Retention, now: u64) -> u64 {
        let cutoff = oldest_kept(retention, now);
        let mut removed = 0;
        while removed < RETENTION_BATCH
            && self.events.front().is_some_and(|e| {
                e.timestamp_ms < cutoff || over_count(retention, self.events.len() as u64) > 0
            })
        {
            self.events.pop_front();
            removed += 1;
        }
        removed
    }
}

#[derive(Default)]
struct Log {
    topics: HashMap<(String, String), Topic>,
    cursors: HashMap<(String, String, String), u64>,
    dead: HashMap<(String, String, String), BTreeMap<u64, DeadLetter>>,
    released: HashMap<(String, String, String), BTreeMap<u64, Event>>,
    skips: HashMap<(String, String, String), Skip>,
}

#[derive(Default)]
pub(crate) struct MemoryStorage {
    log: Mutex<Log>,
}

impl MemoryStorage {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Log>> {
        self.log.lock().map_err(|_| EventsError::Internal("the memory log lock is poisoned".into()))
    }
}

fn key(namespace: &str, topic: &str) -> (String, String) {
    (namespace.to_string(), topic.to_string())
}

fn group_key(namespace: &str, topic: &str, group: &str) -> (String, String, String) {
    (namespace.to_string(), topic.to_string(), group.to_string())
}

/// A group's dead letters or released events, in sequence order.
fn values<T: Clone>(by_sequence: Option<&BTreeMap<u64, T>>) -> Vec<T> {
    by_sequence.map_or(Vec::new(), |map| map.values().cloned().collect())
}

impl Storage for MemoryStorage {
    fn append(&self, batch: Vec<Append>, retention: &Retention) -> Result<Vec<Event>> {
        let mut log = self.lock()?;
        let now = now_ms();
        let mut stored = Vec::with_capacity(batch.len());
        for append in batch {
            let log_topic = log.topics.entry(key(&append.namespace, &append.topic)).or_default();
            log_topic.last += 1;
            log_topic.last_ms = log_topic.last_ms.max(append.event.timestamp_ms);
            let event = Event {
                id: append.event.id,
                topic: append.topic,
                metadata: append.event.metadata,
                payload: append.event.payload,
                timestamp_ms: log_topic.last_ms,
                sequence: log_topic.last,
            };
            log_topic.events.push_back(event.clone());
            log_topic.retain(retention, now);
            stored.push(event);
        }
        Ok(stored)
    }

    fn read_from(&self, namespace: &str, topic: &str, from: u64, limit: usize) -> Result<Vec<Event>> {
        let log = self.lock()?;
        let Some(log_topic) = log.topics.get(&key(namespace, topic)) else { return Ok(Vec::new()) };
        let skip = usize::try_from(from.saturating_sub(log_topic.first())).unwrap_or(usize::MAX);
        Ok(log_topic.events.iter().skip(skip).take(limit).cloned().collect())
    }

    fn bounds(&self, namespace: &str, topic: &str) -> Result<Bounds> {
        Ok(Topic::bounds(self.lock()?.topics.get(&key(namespace, topic))))
    }

    fn sequence_at(&self, namespace: &str, topic: &str, timestamp_ms: u64) -> Result<u64> {
        let log = self.lock()?;
        let Some(log_topic) = log.topics.get(&key(namespace, topic)) else { return Ok(1) };
        let index = log_topic.events.partition_point(|e| e.timestamp_ms < timestamp_ms);
        Ok(log_topic.events.get(index).map_or(log_topic.last + 1, |e| e.sequence))
    }

    fn load_cursor(&self, namespace: &str, topic: &str, group: &str) -> Result<Option<u64>> {
        let log = self.lock()?;
        Ok(log.cursors.get(&(namespace.to_string(), topic.to_string(), group.to_string())).copied())
    }

    fn save_cursor(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        settled: u64,
        _durable: bool,
    ) -> Result<()> {
        let mut log = self.lock()?;
        log.cursors.insert((namespace.to_string(), topic.to_string(), group.to_string()), settled);
        Ok(())
    }

    fn save_replay(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        settled: u64,
        skip: Option<Skip>,
    ) -> Result<()> {
        let mut log = self.lock()?;
        let key = group_key(namespace, topic, group);
        log.cursors.insert(key.clone(), settled);
        match skip {
            Some(skip) => log.skips.insert(key, skip),
            None => log.skips.remove(&key),
        };
        Ok(())
    }

    fn load_skip(&self, namespace: &str, topic: &str, group: &str) -> Result<Option<Skip>> {
        Ok(self.lock()?.skips.get(&group_key(namespace, topic, group)).copied())
    }

    fn topics(&self, namespace: &str, max: usize) -> Result<Vec<TopicInfo>> {
        let log = self.lock()?;
        let mut topics: Vec<TopicInfo> = log
            .topics
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|((_, name), topic)| TopicInfo {
                name: name.clone(),
                events: topic.events.len() as u64,
                last_sequence: topic.last,
                last_timestamp_ms: if topic.events.is_empty() { 0 } else { topic.last_ms },
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics.truncate(max);
        Ok(topics)
    }

    fn groups(&self, max: usize) -> Result<Vec<StoredGroup>> {
        let log = self.lock()?;
        let mut keys: Vec<&(String, String, String)> = log.cursors.keys().collect();
        keys.sort();
        Ok(keys
            .into_iter()
            .take(max)
            .map(|key| {
                let (namespace, topic, group) = key.clone();
                let bounds = Topic::bounds(log.topics.get(&(namespace.clone(), topic.clone())));
                StoredGroup {
                    settled: log.cursors[key],
                    skip: log.skips.get(key).copied(),
                    bounds,
                    dead: log.dead.get(key).map_or(0, |letters| letters.len() as u64),
                    released: log.released.get(key).map_or(0, |released| released.len() as u64),
                    namespace,
                    topic,
                    group,
                }
            })
            .collect())
    }

    fn add_dead_letter(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        dead: &DeadLetter,
        max: usize,
    ) -> Result<Vec<u64>> {
        let mut log = self.lock()?;
        let key = group_key(namespace, topic, group);
        if let Some(released) = log.released.get_mut(&key) {
            released.remove(&dead.event.sequence);
        }
        let letters = log.dead.entry(key).or_default();
        letters.insert(dead.event.sequence, dead.clone());
        let mut removed = Vec::new();
        while letters.len() > max {
            removed.extend(letters.pop_first().map(|(sequence, _)| sequence));
        }
        Ok(removed)
    }

    fn dead_letters(&self, namespace: &str, topic: &str, group: &str) -> Result<Vec<DeadLetter>> {
        Ok(values(self.lock()?.dead.get(&group_key(namespace, topic, group))))
    }

    fn take_dead_letters(
        &self,
        namespace: &str,
        topic: &str,
        group: &str,
        which: &Selection,
        release: bool,
    ) -> Result<Vec<DeadLetter>> {
        let mut log = self.lock()?;
        let key = group_key(namespace, topic, group);
        let all = values(log.dead.get(&key));
        let chosen: Vec<DeadLetter> =
            validate::selected(&all, which, group)?.into_iter().map(|n| all[n].clone()).collect();
        if let Some(letters) = log.dead.get_mut(&key) {
            for dead in &chosen {
                letters.remove(&dead.event.sequence);
            }
        }
        if release {
            let released = log.released.entry(key).or_default();
            for dead in &chosen {
                released.insert(dead.event.sequence, dead.event.clone());
            }
        }
        Ok(chosen)
    }

    fn released(&self, namespace: &str, topic: &str, group: &str) -> Result<Vec<Event>> {
        Ok(values(self.lock()?.released.get(&group_key(namespace, topic, group))))
    }

    fn settle_released(&self, namespace: &str, topic: &str, group: &str, sequence: u64) -> Result<()> {
        let mut log = self.lock()?;
        if let Some(released) = log.released.get_mut(&group_key(namespace, topic, group)) {
            released.remove(&sequence);
        }
        Ok(())
    }

    fn sweep(&self, retention: &Retention) -> Result<u64> {
        let now = now_ms();
        let mut log = self.lock()?;
        let mut removed = 0;
        for topic in log.topics.values_mut() {
            loop {
                let step = topic.retain(retention, now);
                removed += step;
                if step < RETENTION_BATCH {
                    break;
                }
            }
        }
        Ok(removed)
    }

    fn summary(&self) -> String {
        "memory".to_string()
    }
}

/// An [`Events`](crate::Events) backend in memory. Cloning is cheap and shares the log.
#[derive(Clone)]
pub struct MemoryEvents {
    engine: Arc<Engine>,
}

impl std::fmt::Debug for MemoryEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryEvents").finish_non_exhaustive()
    }
}

impl Default for MemoryEvents {
    fn default() -> Self {
        Self::new(Retention::default())
    }
}

impl MemoryEvents {
    /// An empty log keeping events as `retention` says.
    pub fn new(retention: Retention) -> Self {
        Self { engine: Arc::new(Engine::new(Arc::new(MemoryStorage::default()), retention)) }
    }
}

crate::engine::delegate_events!(MemoryEvents);

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::{Events, PublishOptions};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance() {
        crate::conformance::run_all(Arc::new(MemoryEvents::default())).await;
    }

    /// A namespace with more than `MAX_TOPICS` topics is listed in part: the first in name order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn topics_are_listed_up_to_the_limit() {
        let events = MemoryEvents::default();
        for n in 0..=crate::MAX_TOPICS {
            events.publish("micro", &format!("t{n:05}"), vec![], PublishOptions::default()).await.unwrap();
        }
        let listed = events.topics("micro").await.unwrap();
        assert_eq!(listed.len(), crate::MAX_TOPICS);
        assert_eq!(
            (listed[0].name.as_str(), listed[crate::MAX_TOPICS - 1].name.as_str()),
            ("t00000", "t09999")
        );
    }

    #[tokio::test]
    async fn retention_by_count_and_age() {
        let events = MemoryEvents::new(Retention { max_age: None, max_events: Some(3) });
        for n in 1..=5u8 {
            events.publish("micro", "t", vec![n], PublishOptions::default()).await.unwrap();
        }
        let kept = events.read("micro", "t", 0, 0).await.unwrap();
        assert_eq!(kept.iter().map(|e| e.sequence).collect::<Vec<_>>(), [3, 4, 5]);

        let events =
            MemoryEvents::new(Retention { max_age: Some(Duration::from_secs(60)), max_events: None });
        let old = PublishOptions { timestamp_ms: Some(now_ms() - 120_000), ..PublishOptions::default() };
        events.publish("micro", "t", vec![1], old.clone()).await.unwrap();
        events.publish("micro", "u", vec![1], old).await.unwrap();
        // The publish itself removed its own (already too old) event; sweep finds none left.
        assert!(events.read("micro", "t", 0, 0).await.unwrap().is_empty());
        assert_eq!(events.sweep().await.unwrap(), 0);
        let fresh = events.publish("micro", "t", vec![2], PublishOptions::default()).await.unwrap();
        assert_eq!(fresh.sequence, 2, "sequences continue after retention");
    }
}
