//! One queued item.

use bytes::Bytes;

/// An item in a queue. `seq` orders it: a queue always hands out its
/// lowest-sequence ready item first, so an aborted item, put back, is again
/// in front of everything that was put after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Position in the queue's put order; unique within the queue.
    pub seq: u64,
    /// The payload, exactly as it was put.
    pub data: Bytes,
    /// When it was put, in milliseconds since the Unix epoch.
    pub added_ms: i64,
    /// When it expires, in milliseconds since the Unix epoch.
    pub expires_ms: Option<i64>,
}

impl Item {
    /// Whether the item has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: i64) -> bool {
        self.expires_ms.is_some_and(|at| at <= now_ms)
    }

    /// Payload size as counted by the byte limits and stats.
    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }
}
