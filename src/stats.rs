//! Server-wide counters. Every protocol adapter and the service update the
//! same atomics, so `stats` over memcache and `peek` over Thrift agree.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Live counters; cheap to bump from any task.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    pub cmd_get: AtomicU64,
    pub cmd_set: AtomicU64,
    pub cmd_peek: AtomicU64,
    pub get_hits: AtomicU64,
    pub get_misses: AtomicU64,
    pub curr_connections: AtomicU64,
    pub total_connections: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            cmd_get: AtomicU64::new(0),
            cmd_set: AtomicU64::new(0),
            cmd_peek: AtomicU64::new(0),
            get_hits: AtomicU64::new(0),
            get_misses: AtomicU64::new(0),
            curr_connections: AtomicU64::new(0),
            total_connections: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
        }
    }
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Stats {
    /// Seconds since the server started.
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Counts a connection for as long as the returned guard lives.
    pub fn connection(&self) -> ConnectionGuard<'_> {
        add(&self.total_connections, 1);
        add(&self.curr_connections, 1);
        ConnectionGuard(self)
    }
}

/// Keeps `curr_connections` true however a connection task ends.
pub struct ConnectionGuard<'a>(&'a Stats);

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0.curr_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A read of a counter.
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}
