//! The wall clock item times are kept in.
//!
//! Item times are wall-clock milliseconds, not monotonic instants, because
//! clients give absolute expiry times and journals outlive the process. The
//! engine stamps items with it and the journal its checkpoints; both read it
//! here so neither depends on the other for the time.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is set before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
