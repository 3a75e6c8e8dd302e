//! The readers parked on one queue, waiting for items, and their wakeups.
//!
//! Parked readers are *served by the writer*: a put (or an abort) that finds
//! parked readers takes the items for them from the store under the queue's
//! lock, and wakes each reader once its request is complete. So readers are
//! served in arrival order, an item can never be taken twice, and a parked
//! reader costs a map entry and a `Notify`: no task is polled until it has
//! something.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::Notify;

use super::read::{ReadMode, Want};
use super::report::Taken;
use super::store::Store;

/// A parked reader: what it still wants, and what it got so far.
struct Waiter {
    want: Want,
    mode: ReadMode,
    got: Vec<Taken>,
    wake: Arc<Notify>,
}

/// The parked readers of a queue, by id in arrival order, and the items
/// taken for those already served until they pick them up.
#[derive(Default)]
pub struct Waiters {
    /// Parked readers in arrival order, each still short of its request.
    parked: BTreeMap<u64, Waiter>,
    /// Items taken for readers whose request is complete, until they pick
    /// them up.
    handed: HashMap<u64, Vec<Taken>>,
    next_id: u64,
}

impl Waiters {
    /// Parks a reader that still wants `want`, behind every reader parked
    /// before it. Returns its id, to [`collect`](Waiters::collect) its items
    /// with, and what wakes it once: when its request is complete or the
    /// queue is deleted.
    pub fn park(&mut self, want: Want, mode: ReadMode) -> (u64, Arc<Notify>) {
        let id = self.next_id;
        self.next_id += 1;
        let wake = Arc::new(Notify::new());
        self.parked.insert(
            id,
            Waiter {
                want,
                mode,
                got: Vec::new(),
                wake: wake.clone(),
            },
        );
        (id, wake)
    }

    /// Hands ready items from `store` to parked readers, oldest reader first,
    /// waking each one whose request is now complete. A reader left short
    /// keeps the ones behind it waiting.
    pub fn serve(&mut self, store: &mut Store, now_ms: i64) {
        while let Some(mut entry) = self.parked.first_entry() {
            let waiter = entry.get_mut();
            store.take_into(&mut waiter.want, waiter.mode, now_ms, &mut waiter.got);
            if !waiter.want.done() {
                break;
            }
            let (id, waiter) = entry.remove_entry();
            waiter.wake.notify_one();
            self.handed.insert(id, waiter.got);
        }
    }

    /// Unparks reader `id` (if it is still parked) and returns what it got.
    pub fn collect(&mut self, id: u64) -> Vec<Taken> {
        match self.parked.remove(&id) {
            Some(waiter) => waiter.got,
            None => self.handed.remove(&id).unwrap_or_default(),
        }
    }

    /// Wakes every parked reader to return with what it has (its queue was
    /// deleted).
    pub fn release_all(&mut self) {
        for (id, waiter) in std::mem::take(&mut self.parked) {
            waiter.wake.notify_one();
            self.handed.insert(id, waiter.got);
        }
    }

    /// How many readers are parked.
    pub fn len(&self) -> usize {
        self.parked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parked.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;
    use crate::config::QueueConfig;
    use crate::queue::xid::XidSource;

    fn put(store: &mut Store, item: &'static str) {
        store.put([bytes::Bytes::from_static(item.as_bytes())], None, 0);
    }

    fn data(got: &[Taken]) -> Vec<&[u8]> {
        got.iter().map(|t| &t.item.data[..]).collect()
    }

    #[test]
    fn a_reader_left_short_keeps_the_later_ones_waiting() {
        let config = Arc::new(QueueConfig::default());
        let mut store = Store::new(config, Arc::new(XidSource::new()), None, None);
        let mut waiters = Waiters::default();
        let (first, first_wake) = waiters.park(Want::new(2), ReadMode::Take);
        let (second, second_wake) = waiters.park(Want::new(1), ReadMode::Take);

        put(&mut store, "a");
        waiters.serve(&mut store, 0);
        assert_eq!(waiters.len(), 2, "the first still wants one more");
        assert!(first_wake.notified().now_or_never().is_none());

        put(&mut store, "b");
        waiters.serve(&mut store, 0);
        assert!(first_wake.notified().now_or_never().is_some());
        assert!(second_wake.notified().now_or_never().is_none());
        assert_eq!(data(&waiters.collect(first)), [b"a", b"b"]);

        put(&mut store, "c");
        waiters.serve(&mut store, 0);
        assert!(waiters.is_empty());
        assert_eq!(data(&waiters.collect(second)), [b"c"]);
        assert!(waiters.collect(second).is_empty(), "picked up once");
    }

    #[test]
    fn releasing_all_wakes_every_reader_with_what_it_has() {
        let config = Arc::new(QueueConfig::default());
        let mut store = Store::new(config, Arc::new(XidSource::new()), None, None);
        let mut waiters = Waiters::default();
        let (id, wake) = waiters.park(Want::new(2), ReadMode::Open);
        put(&mut store, "a");
        waiters.serve(&mut store, 0);
        waiters.release_all();
        assert!(waiters.is_empty());
        assert!(wake.notified().now_or_never().is_some());
        let got = waiters.collect(id);
        assert_eq!(data(&got), [b"a"]);
        assert!(got[0].xid.is_some_and(|xid| store.is_open(xid)));
    }
}
