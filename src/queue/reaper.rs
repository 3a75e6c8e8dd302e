//! Auto-abort: open transactions that give their reader a deadline (Thrift's
//! `auto_abort_msec`) go back to their queue when it passes.
//!
//! One background task and one heap serve every queue: a batch of items opened
//! by one call is one entry, and an entry whose items were confirmed in the
//! meantime simply aborts nothing when it comes due.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fifo::Queue;

#[derive(Default)]
pub struct AutoAbort {
    due: Mutex<BinaryHeap<Reverse<Entry>>>,
    changed: Notify,
}

struct Entry {
    at: Instant,
    queue: Arc<Queue>,
    xids: Vec<u64>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.at.cmp(&other.at)
    }
}

impl AutoAbort {
    /// Aborts whichever of `xids` are still open in `queue` at `at`.
    pub fn schedule(&self, at: Instant, queue: Arc<Queue>, xids: Vec<u64>) {
        if xids.is_empty() {
            return;
        }
        self.due
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Reverse(Entry { at, queue, xids }));
        // A stored permit if the task is busy: it re-reads the heap either way.
        self.changed.notify_one();
    }

    /// Open transactions waiting for their deadline (entries, not items).
    pub fn pending(&self) -> usize {
        self.due.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The background task: runs until `shutdown` is cancelled.
    pub async fn run(&self, shutdown: CancellationToken) {
        loop {
            let next = {
                let now = Instant::now();
                let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
                let mut expired = Vec::new();
                while due.peek().is_some_and(|Reverse(e)| e.at <= now) {
                    if let Some(Reverse(e)) = due.pop() {
                        expired.push(e);
                    }
                }
                let next = due.peek().map(|Reverse(e)| e.at);
                drop(due);
                for e in expired {
                    let (n, _) = e.queue.abort(&e.xids);
                    if n > 0 {
                        tracing::debug!(queue = %e.queue.name(), items = n, "auto-aborted open items");
                    }
                }
                next
            };
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.changed.notified() => {}
                _ = sleep => {}
            }
        }
    }
}
