//! Server-wide counters. Every protocol adapter and the service update the
//! same atomics, so `stats` over memcache and `peek` over Thrift agree.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::service::{QueueStats, ServerStats};

/// Live counters; cheap to bump from any task.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    pub cmd_get: AtomicU64,
    pub cmd_set: AtomicU64,
    pub cmd_peek: AtomicU64,
    pub total_items: AtomicU64,
    pub get_hits: AtomicU64,
    pub get_misses: AtomicU64,
    pub curr_connections: AtomicU64,
    pub total_connections: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    /// Connections refused at `max_connections`.
    pub rejected_connections: AtomicU64,
    /// `accept` calls that failed (out of file descriptors, typically).
    pub accept_errors: AtomicU64,
    /// Connections closed for a request not complete within `request_timeout`.
    pub request_timeouts: AtomicU64,
    /// Requests refused as malformed or oversized, and connections closed
    /// for input that could not be framed.
    pub protocol_errors: AtomicU64,
    /// Reads refused or cut short by `max_open_transactions`.
    pub rejected_open_reads: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            cmd_get: AtomicU64::new(0),
            cmd_set: AtomicU64::new(0),
            cmd_peek: AtomicU64::new(0),
            total_items: AtomicU64::new(0),
            get_hits: AtomicU64::new(0),
            get_misses: AtomicU64::new(0),
            curr_connections: AtomicU64::new(0),
            total_connections: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            request_timeouts: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            rejected_open_reads: AtomicU64::new(0),
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

/// The server-wide stats, named and ordered as Kestrel's memcache `stats`.
pub fn server_fields(s: &ServerStats) -> Vec<(&'static str, String)> {
    let curr_items: u64 = s.queues.iter().map(|(_, q)| q.items).sum();
    let bytes: u64 = s.queues.iter().map(|(_, q)| q.bytes).sum();
    vec![
        ("uptime", s.uptime_secs.to_string()),
        ("time", s.time_secs.to_string()),
        ("version", s.version.to_string()),
        ("curr_items", curr_items.to_string()),
        ("total_items", s.total_items.to_string()),
        ("bytes", bytes.to_string()),
        ("curr_connections", s.curr_connections.to_string()),
        ("total_connections", s.total_connections.to_string()),
        ("cmd_get", s.cmd_get.to_string()),
        ("cmd_set", s.cmd_set.to_string()),
        ("cmd_peek", s.cmd_peek.to_string()),
        ("get_hits", s.get_hits.to_string()),
        ("get_misses", s.get_misses.to_string()),
        ("bytes_read", s.bytes_read.to_string()),
        ("bytes_written", s.bytes_written.to_string()),
        ("queue_creates", s.queue_creates.to_string()),
        ("queue_deletes", s.queue_deletes.to_string()),
        ("queue_expires", s.queue_expires.to_string()),
        ("rejected_connections", s.rejected_connections.to_string()),
        ("accept_errors", s.accept_errors.to_string()),
        ("request_timeouts", s.request_timeouts.to_string()),
        ("protocol_errors", s.protocol_errors.to_string()),
        ("rejected_open_reads", s.rejected_open_reads.to_string()),
        ("rejected_creates", s.rejected_creates.to_string()),
        ("open_files", s.open_files.to_string()),
        ("journal_fsyncs", s.journal_fsyncs.to_string()),
    ]
}

/// One queue's stats, named and ordered as Kestrel's `queue_<name>_<stat>`.
pub fn queue_fields(q: &QueueStats) -> [(&'static str, u64); 14] {
    let c = &q.counters;
    [
        ("items", q.items),
        ("bytes", q.bytes),
        ("total_items", c.total_items),
        ("logsize", q.journal_bytes),
        ("expired_items", c.expired_items),
        ("mem_items", q.mem_items),
        ("mem_bytes", q.mem_bytes),
        ("age", q.age_ms),
        ("discarded", c.discarded),
        ("waiters", q.waiters),
        ("open_transactions", q.open_transactions),
        ("transactions", c.transactions),
        ("canceled_transactions", c.canceled_transactions),
        ("total_flushes", c.total_flushes),
    ]
}
