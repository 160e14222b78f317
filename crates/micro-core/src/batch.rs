//! [`CommitQueue`]: the waiting line of a group commit. Writers push what they want committed;
//! whoever holds the commit lock takes the oldest entries, up to a count and a byte budget, and
//! commits them in one transaction (the event log's publishes, the store file's changes).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Entries waiting for the next group commit, oldest first.
#[derive(Debug)]
pub struct CommitQueue<T> {
    entries: Mutex<VecDeque<T>>,
}

impl<T> Default for CommitQueue<T> {
    fn default() -> Self {
        Self { entries: Mutex::new(VecDeque::new()) }
    }
}

impl<T> CommitQueue<T> {
    pub fn push(&self, entry: T) {
        self.lock().push_back(entry);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The oldest entries, at most `max_entries` of them and `max_bytes` by `size`, but always
    /// at least one unless the queue is empty (an entry larger than the budget goes alone).
    pub fn take(&self, max_entries: usize, max_bytes: usize, size: impl Fn(&T) -> usize) -> Vec<T> {
        let mut entries = self.lock();
        let mut bytes = 0;
        let mut batch = Vec::new();
        while let Some(entry) = entries.front() {
            let entry_size = size(entry);
            if !batch.is_empty() && (batch.len() >= max_entries || bytes + entry_size > max_bytes) {
                break;
            }
            bytes += entry_size;
            batch.extend(entries.pop_front());
        }
        batch
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<T>> {
        // Only pushed to and drained; a panic while holding it leaves it valid.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_bounded_by_count_and_bytes_oldest_first() {
        let queue = CommitQueue::default();
        for size in [4, 4, 4, 100, 1, 1, 1, 1] {
            queue.push(size);
        }
        let size = |entry: &usize| *entry;
        assert_eq!(queue.take(10, 10, size), [4, 4], "a third would pass 10 bytes");
        assert_eq!(queue.take(10, 10, size), [4]);
        assert_eq!(queue.take(10, 10, size), [100], "a large entry goes alone");
        assert_eq!(queue.take(3, 10, size), [1, 1, 1], "at most three");
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.take(3, 10, size), [1]);
        assert!(queue.is_empty());
        assert!(queue.take(3, 10, size).is_empty());
    }
}
