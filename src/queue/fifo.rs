//! One queue as the rest of the server sees it: [`Queue`], whose items (the
//! [`Store`]) and parked readers ([`Waiters`]) sit behind one
//! `std::sync::Mutex` that is never held across an `.await`.
//!
//! Every change is applied and journaled under that lock, so memory and log
//! agree on the order of events; callers then wait for the returned [`Ack`]
//! outside the lock before acknowledging. A read that finds too few items
//! parks as a waiter and is served by the writers that come after it; the
//! [`PendingRead`] guard makes it cancel-safe.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::time::Instant;

use super::item::Item;
use super::read::{ReadKind, ReadMode, Want};
use super::report::{Deleted, Expired, PutOutcome, Taken};
use super::store::Store;
use super::waiters::Waiters;
use super::xid::XidSource;
use crate::clock::now_ms;
use crate::config::QueueConfig;
use crate::journal::{Ack, Journal, Recovery};
use crate::stats::{QueueMetrics, QueueStats};

/// One named queue, shared as `Arc<Queue>` by the collection and every
/// reader; each call holds its lock briefly and never across an `.await`.
pub struct Queue {
    name: Arc<str>,
    state: Mutex<State>,
    /// The service's counts and latencies of this queue's requests: kept
    /// here so they live and die with the queue, outside its lock.
    metrics: QueueMetrics,
    /// Held while a journal maintenance job works on the queue's files
    /// outside the state lock, and by whoever moves the queue's directory
    /// away (flush, delete): a job in flight must never act on a directory
    /// that has meanwhile become another journal's (a checkpoint stored into
    /// it, a segment of the same number deleted from it).
    files: Mutex<()>,
}

/// Everything under the queue's lock.
struct State {
    store: Store,
    waiters: Waiters,
    /// Set once by a delete: stale handles then refuse puts and reads.
    deleted: bool,
}

impl State {
    /// Hands ready items to parked readers, oldest reader first.
    fn serve_waiters(&mut self, now_ms: i64) {
        self.waiters.serve(&mut self.store, now_ms);
    }

    /// Marks the queue deleted: its journal is destroyed, parked readers
    /// return with what they have, and later calls through stale handles do
    /// nothing. Returns whether it had a journal, and its items for the
    /// caller to drop outside the lock.
    fn delete(&mut self) -> (bool, VecDeque<Item>) {
        self.deleted = true;
        let deleted = self.store.delete();
        self.waiters.release_all();
        deleted
    }
}

impl Queue {
    /// A queue, empty or as recovered from its journal.
    pub fn new(
        name: Arc<str>,
        config: Arc<QueueConfig>,
        xids: Arc<XidSource>,
        journal: Option<Journal>,
        recovered: Option<Recovery>,
    ) -> Self {
        Queue {
            name,
            state: Mutex::new(State {
                store: Store::new(config, xids, journal, recovered),
                waiters: Waiters::default(),
                deleted: false,
            }),
            metrics: QueueMetrics::default(),
            files: Mutex::new(()),
        }
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn metrics(&self) -> &QueueMetrics {
        &self.metrics
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated
        // in a way later calls would misread, so keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends `items` in order. Stops at the first item the queue refuses.
    pub fn put(
        &self,
        items: impl IntoIterator<Item = Bytes>,
        expires_ms: Option<i64>,
    ) -> Result<(PutOutcome, Option<Ack>), Deleted> {
        let now = now_ms();
        let mut st = self.lock();
        if st.deleted {
            return Err(Deleted);
        }
        let outcome = st.store.put(items, expires_ms, now);
        st.serve_waiters(now);
        Ok((outcome, st.store.take_ack()))
    }

    /// Appends items as another server held them (see [`Store::restore`]);
    /// the journal records are written once the returned ack is awaited.
    pub fn restore(
        &self,
        items: impl IntoIterator<Item = (Bytes, i64, Option<i64>)>,
    ) -> Result<Option<Ack>, Deleted> {
        let now = now_ms();
        let mut st = self.lock();
        if st.deleted {
            return Err(Deleted);
        }
        st.store.restore(items);
        st.serve_waiters(now);
        Ok(st.store.take_ack())
    }

    /// Takes back the items of a put whose journal write failed, if no reader
    /// has taken them yet. Returns how many were still there.
    pub fn revoke(&self, first_seq: u64, count: usize) -> usize {
        self.lock().store.revoke(first_seq, count)
    }

    /// Reads up to `max` items (and about
    /// [`MAX_READ_BYTES`](super::read::MAX_READ_BYTES)), waiting until
    /// `deadline` for the rest when fewer are ready. Peeks return at most one
    /// item.
    ///
    /// Cancel-safe: if the returned future is dropped, every item it had taken
    /// goes back where it was.
    pub async fn get(
        self: &Arc<Self>,
        max: usize,
        deadline: Option<Instant>,
        read: ReadKind,
    ) -> (Vec<Taken>, Option<Ack>) {
        let max = if read == ReadKind::Peek {
            max.min(1)
        } else {
            max
        };
        if max == 0 {
            return (Vec::new(), None);
        }
        let may_wait = deadline.is_some_and(|d| d > Instant::now());
        let mode = ReadMode::new(read, may_wait);
        let mut pending = PendingRead {
            queue: self,
            mode,
            taken: Vec::new(),
            waiter: None,
        };
        // Taking many items holds the queue's lock a while: done as long
        // work so the worker's other connections move elsewhere meanwhile.
        let first = crate::offload::long_if(max > crate::offload::LONG_ITEMS, || {
            let now = now_ms();
            let mut st = self.lock();
            if st.deleted {
                return ControlFlow::Break((Vec::new(), None));
            }
            let mut want = Want::new(max);
            st.store.take_into(&mut want, mode, now, &mut pending.taken);
            if want.done() || !may_wait {
                return ControlFlow::Break(pending.complete(&mut st));
            }
            let (id, wake) = st.waiters.park(want, mode);
            pending.waiter = Some(id);
            ControlFlow::Continue(wake)
        });
        let wake = match first {
            ControlFlow::Continue(wake) => wake,
            ControlFlow::Break(done) => return done,
        };
        if let Some(deadline) = deadline {
            // Woken once: when the request is complete or the queue is deleted.
            let _ = tokio::time::timeout_at(deadline, wake.notified()).await;
        }
        let mut st = self.lock();
        pending.complete(&mut st)
    }

    /// Confirms open items: they are gone for good. Returns how many were open.
    pub fn confirm(&self, xids: &[u64]) -> (usize, Option<Ack>) {
        let mut st = self.lock();
        let count = xids.iter().filter(|&&xid| st.store.confirm(xid)).count();
        (count, st.store.take_ack())
    }

    /// Keeps, of `xids`, those still open.
    pub fn retain_open(&self, xids: &mut VecDeque<u64>) {
        let st = self.lock();
        xids.retain(|&xid| st.store.is_open(xid));
    }

    /// Aborts open items: they go back to the head, in put order. Returns how
    /// many were open.
    pub fn abort(&self, xids: &[u64]) -> (usize, Option<Ack>) {
        let mut st = self.lock();
        let count = xids.iter().filter(|&&xid| st.store.abort(xid)).count();
        if count > 0 {
            st.serve_waiters(now_ms());
        }
        (count, st.store.take_ack())
    }

    /// Removes every ready item, in memory and on disk; open transactions are
    /// untouched. `fresh` may supply an empty journal to replace the old one
    /// (see [`Store::flush`]).
    ///
    /// `fresh` is only asked while no maintenance job works on the files
    /// (it may move the directory away); during one, the flush is journaled.
    pub fn flush(&self, fresh: impl FnOnce(i64) -> Option<Journal>) -> Option<Ack> {
        let mut st = self.lock();
        let items = st.store.flush(|created_ms| {
            let _files = self.files.try_lock().ok()?;
            fresh(created_ms)
        });
        let ack = st.store.take_ack();
        drop(st);
        drop_items(items);
        ack
    }

    /// Expires up to `limit` expired items held in memory, wherever they sit
    /// in the queue (Kestrel only looked at the head); items still on disk are
    /// checked as they are read back. Items bound for `expire_to_queue` are
    /// handed back to move: call [`Queue::moved`] once they are safely there.
    pub fn expire(&self, limit: u64) -> Expired {
        let now = now_ms();
        self.lock().store.expire(now, limit)
    }

    /// Items handed out by [`Queue::expire`] reached their new queue: they
    /// are gone from this one for good.
    pub fn moved(&self, items: &[Item]) -> Option<Ack> {
        let mut st = self.lock();
        st.store.moved(items);
        st.store.take_ack()
    }

    /// Items handed out by [`Queue::expire`] could not be moved: keep them
    /// for the next attempt.
    pub fn unmoved(&self, items: Vec<Item>) {
        let mut st = self.lock();
        if !st.deleted {
            st.store.unmoved(items);
        }
    }

    /// Deletes the queue if it is empty, unused, and was created more than
    /// `max_age` ago (Kestrel's `max_queue_age`); returns whether it did.
    /// Checked and done under one hold of the lock, so a put cannot land in
    /// between (a put that comes after finds the queue deleted and retries).
    pub fn delete_if_empty_and_older_than(&self, max_age: std::time::Duration) -> bool {
        let mut st = self.lock();
        let idle = st.store.is_empty()
            && st.waiters.is_empty()
            && st.store.age_ms(now_ms()) >= max_age.as_millis() as i64;
        if idle {
            let _ = st.delete();
        }
        idle
    }

    /// Runs `f`, which moves the queue's directory away, once no journal
    /// maintenance job is working on it (waiting for one in flight).
    pub fn with_files_still<R>(&self, f: impl FnOnce() -> R) -> R {
        let _files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        f()
    }

    /// The settings in force.
    pub fn config(&self) -> Arc<QueueConfig> {
        self.lock().store.config().clone()
    }

    /// Marks the queue deleted and stops its journal: its items are
    /// dropped, parked readers return with what they have, and later calls
    /// through stale handles do nothing. Returns whether it had a journal
    /// (whose directory is the caller's to remove).
    pub fn delete(&self) -> bool {
        let (had_journal, items) = self.lock().delete();
        drop_items(items);
        had_journal
    }

    pub fn set_config(&self, config: Arc<QueueConfig>) {
        self.lock().store.set_config(config);
    }

    /// The queue as stats and peek report it.
    pub fn stats(&self) -> QueueStats {
        let now = now_ms();
        let mut st = self.lock();
        let waiters = st.waiters.len() as u64;
        let mut stats = st.store.stats(now, waiters);
        drop(st);
        stats.requests = self.metrics.snapshot();
        stats
    }

    /// Checkpoints the journal if due (or, `now`, if it changed) and
    /// reclaims segments that no longer hold live data. Returns whether the
    /// journal still wants maintenance later. Blocking: run it off the async
    /// runtime.
    pub fn maintain_journal(&self, now: bool) -> std::io::Result<bool> {
        let _files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let job = match self.lock().store.journal_mut() {
            Some(journal) => journal.checkpoint_job(now),
            None => return Ok(false),
        };
        if let Some(job) = job {
            job.run()?;
            if let Some(journal) = self.lock().store.journal_mut() {
                journal.checkpoint_done(&job);
            }
        }
        loop {
            let job = match self.lock().store.journal_mut() {
                Some(journal) => match journal.reclaim_job() {
                    Some(job) => job,
                    None => return Ok(journal.settle()),
                },
                None => return Ok(false),
            };
            let done = job.run()?;
            match self.lock().store.journal_mut() {
                Some(journal) => journal.reclaim_done(done),
                None => return Ok(false),
            }
        }
    }
}

/// Frees items taken out of a queue, after its lock is released: a deep
/// queue's items take a while to free.
fn drop_items(items: VecDeque<Item>) {
    crate::offload::long_if(items.len() > crate::offload::LONG_ITEMS, || drop(items));
}

/// The items a read has taken so far, returned to the queue if the read is
/// dropped before it completes (its client went away).
struct PendingRead<'a> {
    queue: &'a Arc<Queue>,
    mode: ReadMode,
    taken: Vec<Taken>,
    /// Its id among the queue's waiters while it is parked.
    waiter: Option<u64>,
}

impl PendingRead<'_> {
    /// Adds what the read got while parked to what it took before.
    fn collect(&mut self, st: &mut State) {
        if let Some(id) = self.waiter.take() {
            self.taken.extend(st.waiters.collect(id));
        }
    }

    /// Finishes the read: a held take's items are confirmed.
    fn complete(&mut self, st: &mut State) -> (Vec<Taken>, Option<Ack>) {
        self.collect(st);
        let mut taken = std::mem::take(&mut self.taken);
        if self.mode == ReadMode::HeldTake {
            for t in &mut taken {
                if let Some(xid) = t.xid.take() {
                    st.store.confirm(xid);
                }
            }
        }
        (taken, st.store.take_ack())
    }
}

impl Drop for PendingRead<'_> {
    fn drop(&mut self) {
        if self.waiter.is_none() && self.taken.is_empty() {
            return;
        }
        let mut st = self.queue.lock();
        self.collect(&mut st);
        if st.deleted || self.mode == ReadMode::Peek {
            return;
        }
        let mut restored = false;
        for t in std::mem::take(&mut self.taken) {
            if let Some(xid) = t.xid
                && st.store.put_back(xid)
            {
                restored = true;
            }
        }
        if restored {
            st.serve_waiters(now_ms());
        }
    }
}

#[cfg(test)]
mod tests;
