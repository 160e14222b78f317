//! Matching and paging shared by the backends, so "prefix", "suffix", "offset" and "limit"
//! mean exactly the same everywhere.

use crate::{ListOptions, ReadOptions};

/// Which keys a prefix/suffix scan keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Filter<'a> {
    /// Keys must start with this (empty = any). Scans start here and stop at the first key in
    /// order that no longer starts with it.
    pub prefix: &'a str,
    /// Keys must end with this (empty = any).
    pub suffix: &'a str,
}

impl<'a> Filter<'a> {
    /// The filter of a prefix and/or suffix read of `key`.
    pub fn read(key: &'a str, options: &ReadOptions) -> Self {
        Self { prefix: if options.prefix { key } else { "" }, suffix: if options.suffix { key } else { "" } }
    }

    /// The filter of a list.
    pub fn list(options: &'a ListOptions) -> Self {
        Self { prefix: &options.prefix, suffix: &options.suffix }
    }

    /// Whether `key` is past every possible match (keys are visited in order from `prefix`).
    pub fn is_past(&self, key: &str) -> bool {
        !key.starts_with(self.prefix)
    }

    /// Whether `key` ends with the suffix. Keys visited from `prefix` and not [`Self::is_past`]
    /// already start with the prefix.
    pub fn suffix_matches(&self, key: &str) -> bool {
        key.ends_with(self.suffix)
    }

    /// Whether `key` matches both conditions.
    #[cfg(test)]
    pub fn matches(&self, key: &str) -> bool {
        !self.is_past(key) && self.suffix_matches(key)
    }
}

/// Offset-then-limit paging over matching, live items in key order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pager {
    to_skip: u64,
    left: u64,
    bytes_left: u64,
}

impl Pager {
    /// A pager skipping `offset` items, then taking `limit` (0 = unlimited).
    pub fn new(offset: u64, limit: u64) -> Self {
        Self { to_skip: offset, left: if limit == 0 { u64::MAX } else { limit }, bytes_left: u64::MAX }
    }

    /// A pager for a read: `limit` items and at most about `max_bytes` of values (0 = no budget;
    /// see [`crate::ReadOptions::max_bytes`]).
    pub fn for_read(options: &crate::ReadOptions) -> Self {
        let mut pager = Self::new(options.offset, options.limit);
        if options.max_bytes > 0 {
            pager.bytes_left = options.max_bytes;
        }
        pager
    }

    /// Counts `bytes` of an admitted item against the budget; past it the page is full.
    pub fn charge(&mut self, bytes: usize) {
        self.bytes_left = self.bytes_left.saturating_sub(bytes as u64);
        if self.bytes_left == 0 {
            self.left = 0;
        }
    }

    /// Offers the next matching live item; true when it belongs to the page.
    pub fn admit(&mut self) -> bool {
        if self.to_skip > 0 {
            self.to_skip -= 1;
            false
        } else if self.left > 0 {
            self.left -= 1;
            true
        } else {
            false
        }
    }

    /// Whether the page is complete, so the scan can stop.
    pub fn is_full(&self) -> bool {
        self.left == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(items: &[&str], offset: u64, limit: u64) -> Vec<String> {
        let mut pager = Pager::new(offset, limit);
        let mut out = Vec::new();
        for item in items {
            if pager.is_full() {
                break;
            }
            if pager.admit() {
                out.push((*item).to_string());
            }
        }
        out
    }

    #[test]
    fn paging_is_offset_then_limit() {
        let items = ["a", "b", "c", "d", "e"];
        assert_eq!(page(&items, 0, 0), items);
        assert_eq!(page(&items, 0, 2), ["a", "b"]);
        assert_eq!(page(&items, 3, 0), ["d", "e"]);
        assert_eq!(page(&items, 1, 2), ["b", "c"]);
        assert!(page(&items, 9, 1).is_empty());
        assert_eq!(page(&items, 0, u64::MAX), items);
    }

    #[test]
    fn filters() {
        let both = Filter::read("foo", &ReadOptions { prefix: true, suffix: true, ..Default::default() });
        assert!(both.matches("foofoo"));
        assert!(both.matches("foo"));
        assert!(!both.matches("foobar"));
        assert!(!both.matches("barfoo"));
        let suffix = Filter::read("foo", &ReadOptions { suffix: true, ..Default::default() });
        assert!(suffix.matches("barfoo") && !suffix.matches("foobar"));
        let list = ListOptions { prefix: "a".into(), ..Default::default() };
        assert!(Filter::list(&list).is_past("b"));
    }
}
