//! One connection's reads: which items it holds open, per queue, so that a
//! confirm or abort "of the oldest n" finds them, the open-read limit can be
//! counted, and whatever is still open goes back to its queue when the
//! connection ends, however it ends.

use std::collections::VecDeque;
use std::sync::Arc;

use super::ServiceError;
use crate::queue::Queue;

/// Keyed by queue name with foldhash: every reliable read and confirm looks
/// a queue up here, and SipHash was 2% of the server's instructions in the
/// reliable loop; foldhash is seeded per process, so names a client picks
/// cannot be made to collide on purpose.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The reads one connection holds open, per queue, oldest first.
pub struct Session {
    /// Opened for the session: confirmed or aborted through it, aborted
    /// when it ends.
    open: HashMap<Arc<str>, OpenReads>,
    /// Opened with a deadline (Thrift): they outlive the session, but count
    /// against its open-read limit while they stay open.
    timed: HashMap<Arc<str>, OpenReads>,
}

struct OpenReads {
    /// The queue instance they were opened on (a queue deleted and created
    /// again under the same name is another instance).
    queue: Arc<Queue>,
    xids: VecDeque<u64>,
}

impl Session {
    pub(super) fn new() -> Session {
        Session {
            open: HashMap::default(),
            timed: HashMap::default(),
        }
    }

    pub(super) fn open_count(&self, queue: &Arc<Queue>) -> usize {
        match self.open.get(queue.name()) {
            Some(reads) if Arc::ptr_eq(&reads.queue, queue) => reads.xids.len(),
            _ => 0,
        }
    }

    /// How many reads this session opened with a deadline on `queue` are
    /// still open (not confirmed, aborted or timed out since).
    pub(super) fn timed_count(&mut self, queue: &Arc<Queue>) -> usize {
        match self.timed.get_mut(queue.name()) {
            Some(reads) if Arc::ptr_eq(&reads.queue, queue) => {
                queue.retain_open(&mut reads.xids);
                reads.xids.len()
            }
            _ => 0,
        }
    }

    pub(super) fn record(&mut self, queue: &Arc<Queue>, xids: impl IntoIterator<Item = u64>) {
        Self::add(&mut self.open, queue, xids);
    }

    pub(super) fn record_timed(&mut self, queue: &Arc<Queue>, xids: impl IntoIterator<Item = u64>) {
        Self::add(&mut self.timed, queue, xids);
    }

    fn add(
        map: &mut HashMap<Arc<str>, OpenReads>,
        queue: &Arc<Queue>,
        xids: impl IntoIterator<Item = u64>,
    ) {
        let reads = map
            .entry(queue.name().clone())
            .or_insert_with(|| OpenReads {
                queue: queue.clone(),
                xids: VecDeque::new(),
            });
        if !Arc::ptr_eq(&reads.queue, queue) {
            *reads = OpenReads {
                queue: queue.clone(),
                xids: VecDeque::new(),
            };
        }
        reads.xids.extend(xids);
    }

    /// Takes the oldest `n` (or all) open reads on `queue` out of the session.
    pub(super) fn take(
        &mut self,
        queue: &str,
        n: Option<usize>,
    ) -> Result<Option<Held>, ServiceError> {
        let Some(reads) = self.open.get_mut(queue) else {
            return match n {
                Some(wanted) if wanted > 0 => Err(ServiceError::NotEnoughOpen { wanted, open: 0 }),
                _ => Ok(None),
            };
        };
        let n = n.unwrap_or(reads.xids.len());
        if n > reads.xids.len() {
            return Err(ServiceError::NotEnoughOpen {
                wanted: n,
                open: reads.xids.len(),
            });
        }
        let held = Held {
            queue: reads.queue.clone(),
            xids: reads.xids.drain(..n).collect(),
        };
        if reads.xids.is_empty() {
            self.open.remove(queue);
        }
        Ok(Some(held))
    }
}

/// Open reads taken out of a session to be confirmed or aborted.
pub(super) struct Held {
    pub queue: Arc<Queue>,
    pub xids: Vec<u64>,
}

impl Drop for Session {
    fn drop(&mut self) {
        for (name, reads) in self.open.drain() {
            let xids: Vec<u64> = reads.xids.into();
            // Not awaited: an abort that misses the disk is rolled back by
            // recovery anyway.
            let (n, _) = reads.queue.abort(&xids);
            if n > 0 {
                tracing::debug!(queue = %name, items = n, "connection closed: open reads aborted");
            }
        }
    }
}
