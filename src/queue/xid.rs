//! Transaction ids: one source for the whole server.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::now_ms;

/// Source of transaction ids, shared by every queue of a server so that ids
/// are unique server-wide. It starts from the clock (milliseconds << 20), so
/// ids handed out by an earlier run of the server are never handed out again
/// and a stale confirm after a restart cannot hit somebody else's item.
#[derive(Debug)]
pub struct XidSource(AtomicU64);

impl XidSource {
    pub fn new() -> Self {
        XidSource(AtomicU64::new(((now_ms().max(1)) as u64) << 20))
    }

    pub(super) fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

impl Default for XidSource {
    fn default() -> Self {
        Self::new()
    }
}
