//! Server-wide counters and latencies, and the snapshots every way of
//! reporting them reads. Every protocol adapter and the service update the
//! same atomics, so `stats` over memcache, `peek` over Thrift and the admin
//! port agree.

mod latency;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

pub use latency::{Histogram, Snapshot};

use bytes::Bytes;

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
    /// Request latencies of every queue together.
    pub latencies: Latencies,
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
            latencies: Latencies::default(),
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

/// Everything `stats` reports.
#[derive(Debug, Clone)]
pub struct ServerStats {
    pub uptime_secs: u64,
    pub time_secs: u64,
    pub version: &'static str,
    pub curr_connections: u64,
    pub total_connections: u64,
    pub cmd_get: u64,
    pub cmd_set: u64,
    pub cmd_peek: u64,
    pub get_hits: u64,
    pub get_misses: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub rejected_connections: u64,
    pub accept_errors: u64,
    pub request_timeouts: u64,
    pub protocol_errors: u64,
    pub rejected_open_reads: u64,
    pub total_items: u64,
    pub queue_creates: u64,
    pub queue_deletes: u64,
    pub queue_expires: u64,
    /// Queue creations refused at `max_queues`.
    pub rejected_creates: u64,
    /// Journal files held open now.
    pub open_files: u64,
    /// fsyncs of journal files and directories since the server started.
    pub journal_fsyncs: u64,
    /// The machine's memory in bytes, if it could be read.
    pub physical_memory: Option<u64>,
    pub latencies: LatencySnapshots,
    pub queues: Vec<(Arc<str>, QueueStats)>,
}

impl ServerStats {
    /// Kestrel's `reserved_memory_ratio`: the memory the queues may hold
    /// (the sum of their `max_memory_size`) over the machine's memory, where
    /// Kestrel divided by the JVM's largest heap. Above 1 the queues' budgets
    /// together could exhaust the machine. `None` if its memory is unknown.
    pub fn reserved_memory_ratio(&self) -> Option<f64> {
        let reserved: u64 = self
            .queues
            .iter()
            .map(|(_, q)| q.max_memory_size)
            .fold(0, u64::saturating_add);
        self.physical_memory
            .filter(|&total| total > 0)
            .map(|total| reserved as f64 / total as f64)
    }
}

/// Counters of one queue, as reported by stats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueCounters {
    /// Items ever added.
    pub total_items: u64,
    /// Items dropped because they expired.
    pub expired_items: u64,
    /// Items dropped to make room (`discard_old_when_full`).
    pub discarded: u64,
    /// Items opened by reliable reads.
    pub transactions: u64,
    /// Open items put back (aborted, timed out, or their reader disconnected).
    pub canceled_transactions: u64,
    /// Times the queue was flushed.
    pub total_flushes: u64,
    /// New journal segments started (see `journal::Turnover`).
    pub journal_rotations: u64,
    /// Journal segments reclaimed: deleted or rewritten.
    pub journal_rewrites: u64,
}

/// One queue, as peek and stats report it: a consistent snapshot taken
/// under the queue's lock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub head: Option<Bytes>,
    pub items: u64,
    pub bytes: u64,
    pub mem_items: u64,
    pub mem_bytes: u64,
    pub age_ms: u64,
    /// Bytes of the queue's journal on disk (0 for a memory-only queue).
    pub journal_bytes: u64,
    pub waiters: u64,
    pub open_transactions: u64,
    /// The queue's `max_memory_size`: what it may hold in memory.
    pub max_memory_size: u64,
    /// Its fanout children (`<name>+…`), by name; filled in by the service,
    /// which knows the other queues.
    pub children: Vec<Arc<str>>,
    pub counters: QueueCounters,
    /// What the service measured of the queue's requests.
    pub requests: QueueRequests,
}

/// Latencies of the requests a server (or one queue) served, as Kestrel
/// named them: put, get that found items, get that found none at once, get
/// that waited in vain, and an item's time from put to the get that handed
/// it out. All are kept in microseconds, so that every histogram has the
/// same buckets; Kestrel's `_msec` names report the last two in milliseconds.
#[derive(Debug, Default)]
pub struct Latencies {
    pub set: Histogram,
    pub get_hit: Histogram,
    pub get_miss: Histogram,
    pub get_timeout: Histogram,
    pub delivery: Histogram,
}

impl Latencies {
    pub fn snapshot(&self) -> LatencySnapshots {
        LatencySnapshots {
            set: self.set.snapshot(),
            get_hit: self.get_hit.snapshot(),
            get_miss: self.get_miss.snapshot(),
            get_timeout: self.get_timeout.snapshot(),
            delivery: self.delivery.snapshot(),
        }
    }
}

/// [`Latencies`] at one moment (in microseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencySnapshots {
    pub set: Snapshot,
    pub get_hit: Snapshot,
    pub get_miss: Snapshot,
    pub get_timeout: Snapshot,
    pub delivery: Snapshot,
}

/// The unit Kestrel reported a latency in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Micros,
    Millis,
}

impl LatencySnapshots {
    /// Each histogram with its Kestrel (Ostrich) name and reporting unit.
    pub fn named(&self) -> [(&'static str, Unit, &Snapshot); 5] {
        [
            ("set_latency_usec", Unit::Micros, &self.set),
            ("get_hit_latency_usec", Unit::Micros, &self.get_hit),
            ("get_miss_latency_usec", Unit::Micros, &self.get_miss),
            ("get_timeout_msec", Unit::Millis, &self.get_timeout),
            ("delivery_latency_msec", Unit::Millis, &self.delivery),
        ]
    }
}

/// One queue's request counts and latencies, kept beside the queue and
/// allocated on its first request, so that idle queues cost nothing.
#[derive(Debug, Default)]
pub struct QueueMetrics(OnceLock<Box<QueueMetricsInner>>);

#[derive(Debug, Default)]
pub struct QueueMetricsInner {
    pub put_bytes: AtomicU64,
    pub get_items_hit: AtomicU64,
    pub get_items_miss: AtomicU64,
    pub latencies: Latencies,
}

impl QueueMetrics {
    /// The metrics, allocated on first use.
    pub fn get(&self) -> &QueueMetricsInner {
        self.0.get_or_init(Box::default)
    }

    pub fn snapshot(&self) -> QueueRequests {
        match self.0.get() {
            None => QueueRequests::default(),
            Some(m) => QueueRequests {
                put_bytes: get(&m.put_bytes),
                get_items_hit: get(&m.get_items_hit),
                get_items_miss: get(&m.get_items_miss),
                latencies: m.latencies.snapshot(),
            },
        }
    }
}

/// [`QueueMetrics`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueRequests {
    pub put_bytes: u64,
    /// Gets that returned items.
    pub get_items_hit: u64,
    /// Gets that returned none (at once or after waiting).
    pub get_items_miss: u64,
    pub latencies: LatencySnapshots,
}
