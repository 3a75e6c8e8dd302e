//! The memory every connection's partial requests hold together, and the
//! bound on it (`max_buffered_bytes`).
//!
//! A request is buffered until it is complete, so a client can make the
//! server hold up to one maximal request per connection, and many clients
//! many of them. Each connection charges what its input buffer (and a codec's
//! half-built request) holds; once the total reaches the bound, connections
//! stop reading (TCP flow control then holds their clients back) until memory
//! is released. A connection holding less than [`FLOOR`] may always read, so
//! small requests keep flowing while large ones wait.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// A connection holding less than this may grow its buffer whatever the
/// budget says: a small request is never held back by large ones.
pub const FLOOR: usize = 16 * 1024;

/// The shared budget of buffered request bytes.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
    /// Connections waiting for memory; releases only wake them if any.
    waiting: AtomicUsize,
    released: Notify,
    /// Times a connection had to wait for memory.
    stalls: AtomicU64,
}

impl Budget {
    pub fn new(limit: usize) -> Budget {
        Budget {
            limit,
            used: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            released: Notify::new(),
            stalls: AtomicU64::new(0),
        }
    }

    /// Bytes held by partial requests now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How many times a connection waited for memory.
    pub fn stalls(&self) -> u64 {
        self.stalls.load(Ordering::Relaxed)
    }

    /// Whether a connection holding `held` bytes may grow by `more`.
    pub fn allows(&self, held: usize, more: usize) -> bool {
        held + more <= FLOOR || self.used().saturating_add(more) <= self.limit
    }

    /// Moves a connection's charge from `from` to `to` bytes.
    pub fn recharge(&self, from: usize, to: usize) {
        if to > from {
            self.used.fetch_add(to - from, Ordering::Relaxed);
        } else if from > to {
            self.used.fetch_sub(from - to, Ordering::Relaxed);
            if self.waiting.load(Ordering::Acquire) > 0 {
                self.released.notify_waiters();
            }
        }
    }

    /// Waits until a connection holding `held` bytes may grow by `more`.
    /// Cancel-safe.
    pub async fn wait_for(&self, held: usize, more: usize) {
        if self.allows(held, more) {
            return;
        }
        self.stalls.fetch_add(1, Ordering::Relaxed);
        crate::throttled!(
            warn,
            limit = self.limit,
            "max_buffered_bytes reached: connections wait for partial requests to complete"
        );
        let _waiting = Waiting::new(&self.waiting);
        loop {
            let released = self.released.notified();
            if self.allows(held, more) {
                return;
            }
            released.await;
        }
    }
}

/// Counts a waiter for as long as it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn small_buffers_always_grow_large_ones_wait_for_releases() {
        let budget = Budget::new(100 * 1024);
        budget.recharge(0, 100 * 1024);
        assert!(budget.allows(0, FLOOR));
        assert!(!budget.allows(FLOOR, 1));
        let waiter = budget.wait_for(FLOOR, 1024);
        tokio::pin!(waiter);
        assert!(
            tokio::time::timeout(Duration::from_millis(10), &mut waiter)
                .await
                .is_err()
        );
        budget.recharge(100 * 1024, 50 * 1024);
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("woken by the release");
        assert_eq!(budget.stalls(), 1);
    }
}
