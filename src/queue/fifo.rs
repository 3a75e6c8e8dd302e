//! One queue: its ready items in put order, its open transactions, the
//! readers parked on it, and its journal.
//!
//! All state sits behind one `std::sync::Mutex` that is never held across an
//! `.await`. Every change is applied in memory and appended to the journal
//! under that lock, so memory and log agree on the order of events; callers
//! then wait for the returned [`Ack`] outside the lock before acknowledging.
//!
//! Blocked readers are *served by the writer*: a put (or an abort) that finds
//! parked readers takes the items for them under the same lock and wakes each
//! reader once its request is complete, so readers are served in arrival
//! order, an item can never be taken twice, and a parked reader costs a map
//! entry and a `Notify` — no task is polled until it has something.
//!
//! Read-behind: once the in-memory items (with their per-item overhead)
//! reach `max_memory_size`, new items are only journaled (counted, not kept); as the head drains below half the
//! budget, items are read back from the journal in order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::item::Item;
use crate::clock::now_ms;
use crate::config::QueueConfig;
use crate::journal::{Ack, Journal, Record, Recovery};
use crate::stats::{QueueCounters, QueueStats};

/// Most item bytes read back from the journal at a time.
const REFILL_CHUNK: u64 = 1024 * 1024;

/// What an item in memory costs besides its bytes: its entry in the queue
/// and its allocation's header.
const ITEM_OVERHEAD: u64 = 80;

/// How a read takes items from the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    /// Remove the items for good.
    Take,
    /// Open the items: each gets a transaction id and stays owned by the queue
    /// until confirmed (removed) or aborted (put back at the head).
    Open,
    /// Return a copy of the head item, removing nothing.
    Peek,
}

/// How items are taken from the store (a `Take` that may have to wait holds
/// its items open until it completes, so that a cancelled read can return them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Take,
    Open { internal: bool },
    Peek,
}

/// An item handed to a reader; `xid` is set when it was opened.
#[derive(Debug, Clone)]
pub struct Taken {
    pub item: Item,
    pub xid: Option<u64>,
}

/// What an expiry pass did.
pub struct Expired {
    /// Items that expired.
    pub count: u64,
    /// Those to move to `target`.
    pub moving: Vec<Item>,
    pub target: Option<String>,
    pub ack: Option<Ack>,
}

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

    fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

impl Default for XidSource {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a put stopped before its last item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The queue is at `max_items` or `max_size`.
    Full,
    /// The item is larger than `max_item_size`.
    TooLarge,
}

/// What a put did: how many items went in (with sequence numbers from
/// `first_seq` on), and why the rest did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    pub accepted: usize,
    pub first_seq: u64,
    pub refused: Option<Refusal>,
}

/// The queue was deleted while the caller held on to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted;

pub struct Queue {
    name: Arc<str>,
    state: Mutex<State>,
    xids: Arc<XidSource>,
}

struct State {
    store: Store,
    /// Parked readers in arrival order, each still short of its request.
    waiters: BTreeMap<u64, Waiter>,
    /// Items taken for readers whose request is complete, until they pick them up.
    handed: HashMap<u64, Vec<Taken>>,
    next_waiter: u64,
    deleted: bool,
}

/// Ready items on disk only (read-behind): everything with a sequence number
/// from `from` on that is still live.
#[derive(Debug, Default, Clone, Copy)]
struct DiskTail {
    count: u64,
    bytes: u64,
    from: u64,
}

/// The items themselves: ready ones in sequence order (in memory, then on
/// disk), and open ones by transaction id.
struct Store {
    config: Arc<QueueConfig>,
    ready: VecDeque<Item>,
    mem_bytes: u64,
    /// No ready item in memory expires before this (`None`: none expires),
    /// so that the expiry sweep skips a queue with nothing due without
    /// looking at its items.
    next_expiry_ms: Option<i64>,
    disk: DiskTail,
    open: HashMap<u64, Item>,
    next_seq: u64,
    counters: QueueCounters,
    journal: Option<Journal>,
    /// The acknowledgement of the newest record appended.
    ack: Option<Ack>,
    /// Expired items bound for `expire_to_queue`: out of the queue, held open
    /// (journaled as such) until the move to their new queue is durable.
    expiring: Vec<Item>,
    created_ms: i64,
}

/// What a read still wants: items, and bytes of them. A read ends when
/// either runs out, so one read never holds more than [`MAX_READ_BYTES`]
/// (plus one item), whatever count its client asked for.
#[derive(Debug, Clone, Copy)]
struct Want {
    items: usize,
    bytes: u64,
}

/// Bytes of items one read takes at most (it always takes at least one item).
pub const MAX_READ_BYTES: u64 = 16 << 20;

impl Want {
    fn done(&self) -> bool {
        self.items == 0 || self.bytes == 0
    }

    fn took(&mut self, item: &Item) {
        self.items -= 1;
        self.bytes = self.bytes.saturating_sub(item.size());
    }
}

struct Waiter {
    want: Want,
    mode: Mode,
    got: Vec<Taken>,
    wake: Arc<Notify>,
}

impl Store {
    fn log(&mut self, record: Record) {
        if let Some(journal) = &mut self.journal {
            self.ack = Some(journal.append(record));
        }
    }

    /// Memory the ready items take: their bytes plus what each item costs
    /// besides (so a budget of small items is not exceeded many times over).
    fn footprint(&self) -> u64 {
        self.mem_bytes + self.ready.len() as u64 * ITEM_OVERHEAD
    }

    fn ready_count(&self) -> u64 {
        self.ready.len() as u64 + self.disk.count
    }

    /// Reads items back from disk when memory runs low: a chunk at a time,
    /// so a read never stalls on loading the whole memory budget at once.
    fn refill(&mut self) {
        let plenty = self.footprint() * 2 >= self.config.max_memory_size && !self.ready.is_empty();
        if self.disk.count == 0 || plenty {
            return;
        }
        let budget = self
            .config
            .max_memory_size
            .saturating_sub(self.footprint())
            .min(REFILL_CHUNK);
        let Some(journal) = &mut self.journal else {
            return;
        };
        let batch = match journal.read_items(self.disk.from, budget, ITEM_OVERHEAD) {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!(error = %e, "cannot read queued items back from the journal");
                return;
            }
        };
        for stored in batch.items {
            let size = stored.data.len() as u64;
            self.disk.count = self.disk.count.saturating_sub(1);
            self.disk.bytes = self.disk.bytes.saturating_sub(size);
            self.disk.from = stored.seq + 1;
            let item = Item {
                seq: stored.seq,
                data: stored.data,
                added_ms: stored.added_ms,
                expires_ms: stored.expires_ms,
            };
            self.admit(&item);
            self.ready.push_back(item);
        }
        self.disk.count = self.disk.count.saturating_sub(batch.lost);
        if self.disk.count == 0 {
            self.disk = DiskTail {
                count: 0,
                bytes: 0,
                from: self.next_seq,
            };
        }
    }

    /// Drops expired items at the head and returns the first live one.
    fn head(&mut self, now_ms: i64) -> Option<&Item> {
        loop {
            self.refill();
            match self.ready.front() {
                Some(item) if item.is_expired(now_ms) => {
                    let item = self.ready.pop_front().expect("front exists");
                    self.mem_bytes -= item.size();
                    self.expire(item);
                }
                _ => break,
            }
        }
        self.ready.front()
    }

    /// Disposes of an expired item already out of `ready`: dropped, or set
    /// aside to move to `expire_to_queue`.
    fn expire(&mut self, item: Item) {
        let (seq, size) = (item.seq, item.size() as u32);
        self.counters.expired_items += 1;
        if self.config.expire_to_queue.is_some() {
            self.log(Record::Open { seq, size });
            self.expiring.push(item);
        } else {
            self.log(Record::Remove { seq, size });
        }
    }

    /// Removes the first in-memory item, journaling how it left.
    fn pop_front(&mut self, mode: Mode) -> Option<Item> {
        let item = self.ready.pop_front()?;
        self.mem_bytes -= item.size();
        let (seq, size) = (item.seq, item.size() as u32);
        match mode {
            Mode::Open { .. } => self.log(Record::Open { seq, size }),
            _ => self.log(Record::Remove { seq, size }),
        }
        Some(item)
    }

    /// Takes items for a reader until it has what it wants or the queue runs
    /// dry.
    fn take_into(
        &mut self,
        want: &mut Want,
        mode: Mode,
        now_ms: i64,
        xids: &XidSource,
        out: &mut Vec<Taken>,
    ) {
        if mode == Mode::Peek {
            if out.is_empty()
                && let Some(head) = self.head(now_ms)
            {
                want.took(head);
                out.push(Taken {
                    item: head.clone(),
                    xid: None,
                });
            }
            return;
        }
        while !want.done() {
            if self.head(now_ms).is_none() {
                break;
            }
            let Some(item) = self.pop_front(mode) else {
                break;
            };
            let xid = match mode {
                Mode::Open { internal } => {
                    let xid = xids.next();
                    self.open.insert(xid, item.clone());
                    if !internal {
                        self.counters.transactions += 1;
                    }
                    Some(xid)
                }
                _ => None,
            };
            want.took(&item);
            out.push(Taken { item, xid });
        }
    }

    /// Puts an open item back among the ready ones, at its place in put order.
    fn reinsert(&mut self, item: Item) {
        self.log(Record::Abort { seq: item.seq });
        let at = self.ready.partition_point(|i| i.seq < item.seq);
        self.admit(&item);
        self.ready.insert(at, item);
    }

    /// Accounts for `item` joining the ready items in memory.
    fn admit(&mut self, item: &Item) {
        self.mem_bytes += item.size();
        if let Some(at) = item.expires_ms {
            self.next_expiry_ms = Some(self.next_expiry_ms.map_or(at, |next| next.min(at)));
        }
    }

    /// Confirms an open item: it is gone for good.
    fn confirm(&mut self, xid: u64) -> bool {
        match self.open.remove(&xid) {
            Some(item) => {
                self.log(Record::Remove {
                    seq: item.seq,
                    size: item.size() as u32,
                });
                true
            }
            None => false,
        }
    }

    fn is_full(&self) -> bool {
        self.ready_count() >= self.config.max_items
            || self.mem_bytes + self.disk.bytes >= self.config.max_size
    }

    fn push(&mut self, data: Bytes, now_ms: i64, expires_ms: Option<i64>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let size = data.len() as u64;
        let item = Item {
            seq,
            data,
            added_ms: now_ms,
            expires_ms,
        };
        self.log(Record::Add {
            seq,
            added_ms: now_ms,
            expires_ms,
            data: item.data.clone(),
        });
        let spill = self.journal.is_some()
            && (self.disk.count > 0
                || self.footprint() + size + ITEM_OVERHEAD > self.config.max_memory_size);
        if spill {
            if self.disk.count == 0 {
                self.disk.from = seq;
            }
            self.disk.count += 1;
            self.disk.bytes += size;
        } else {
            self.admit(&item);
            self.ready.push_back(item);
        }
        self.counters.total_items += 1;
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
        let next_seq = recovered.as_ref().map_or(1, |r| r.next_seq);
        let disk = match &recovered {
            Some(r) if r.items > 0 => DiskTail {
                count: r.items,
                bytes: r.bytes,
                from: r.first_live.unwrap_or(next_seq),
            },
            _ => DiskTail {
                count: 0,
                bytes: 0,
                from: next_seq,
            },
        };
        Queue {
            name,
            xids,
            state: Mutex::new(State {
                store: Store {
                    config,
                    ready: VecDeque::new(),
                    mem_bytes: 0,
                    next_expiry_ms: None,
                    disk,
                    open: HashMap::new(),
                    next_seq,
                    counters: QueueCounters::default(),
                    journal,
                    ack: None,
                    expiring: Vec::new(),
                    created_ms: recovered.as_ref().map_or_else(now_ms, |r| r.created_ms),
                },
                waiters: BTreeMap::new(),
                handed: HashMap::new(),
                next_waiter: 0,
                deleted: false,
            }),
        }
    }

    pub fn name(&self) -> &Arc<str> {
        &self.name
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
        let store = &mut st.store;
        let expires_ms = match store.config.max_age {
            Some(age) => {
                let cap = now.saturating_add(age.as_millis() as i64);
                Some(expires_ms.map_or(cap, |e| e.min(cap)))
            }
            None => expires_ms,
        };
        let mut outcome = PutOutcome {
            accepted: 0,
            first_seq: store.next_seq,
            refused: None,
        };
        for data in items {
            if data.len() as u64 > store.config.max_item_size {
                outcome.refused = Some(Refusal::TooLarge);
                break;
            }
            if store.is_full() {
                if !store.config.discard_old_when_full {
                    outcome.refused = Some(Refusal::Full);
                    break;
                }
                while store.is_full() && store.head(now).is_some() {
                    store.pop_front(Mode::Take);
                    store.counters.discarded += 1;
                }
            }
            store.push(data, now, expires_ms);
            outcome.accepted += 1;
        }
        self.serve_waiters(&mut st, now);
        Ok((outcome, st.store.ack.take()))
    }

    /// Takes back the items of a put whose journal write failed, if no reader
    /// has taken them yet. Returns how many were still there.
    pub fn revoke(&self, first_seq: u64, count: usize) -> usize {
        let mut st = self.lock();
        let store = &mut st.store;
        let end = first_seq + count as u64;
        let before = store.ready.len();
        let mut freed = 0;
        store.ready.retain(|i| {
            let gone = (first_seq..end).contains(&i.seq);
            if gone {
                freed += i.size();
            }
            !gone
        });
        store.mem_bytes -= freed;
        let mut revoked = before - store.ready.len();
        // Items that went straight to disk never reached it: the journal has
        // no data for them, so the read-back skips them; count them out.
        if store.disk.count > 0 && end > store.disk.from {
            let on_disk = end - first_seq.max(store.disk.from);
            store.disk.count = store.disk.count.saturating_sub(on_disk);
            revoked += on_disk as usize;
        }
        if let Some(journal) = &mut store.journal {
            journal.forget(first_seq, end);
        }
        store.ack = None;
        revoked
    }

    /// Reads up to `max` items (and about [`MAX_READ_BYTES`]), waiting until
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
        let mode = match read {
            // Held open until the read completes, so that a cancelled read can
            // put its items back where they were.
            ReadKind::Take if may_wait => Mode::Open { internal: true },
            ReadKind::Take => Mode::Take,
            ReadKind::Open => Mode::Open { internal: false },
            ReadKind::Peek => Mode::Peek,
        };
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
            let mut want = Want {
                items: max,
                bytes: MAX_READ_BYTES,
            };
            st.store
                .take_into(&mut want, mode, now, &self.xids, &mut pending.taken);
            if want.done() || !may_wait {
                return ControlFlow::Break(pending.complete(&mut st));
            }
            let id = st.next_waiter;
            st.next_waiter += 1;
            let wake = Arc::new(Notify::new());
            st.waiters.insert(
                id,
                Waiter {
                    want,
                    mode,
                    got: Vec::new(),
                    wake: wake.clone(),
                },
            );
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
        (count, st.store.ack.take())
    }

    /// Keeps, of `xids`, those still open.
    pub fn retain_open(&self, xids: &mut VecDeque<u64>) {
        let st = self.lock();
        xids.retain(|xid| st.store.open.contains_key(xid));
    }

    /// Aborts open items: they go back to the head, in put order. Returns how
    /// many were open.
    pub fn abort(&self, xids: &[u64]) -> (usize, Option<Ack>) {
        let mut st = self.lock();
        let mut count = 0;
        for xid in xids {
            if let Some(item) = st.store.open.remove(xid) {
                st.store.reinsert(item);
                st.store.counters.canceled_transactions += 1;
                count += 1;
            }
        }
        if count > 0 {
            self.serve_waiters(&mut st, now_ms());
        }
        (count, st.store.ack.take())
    }

    /// Removes every ready item, in memory and on disk; open transactions are
    /// untouched.
    ///
    /// When nothing else is left (no open reads, nothing being moved by
    /// expiry), `fresh` is asked for a new, empty journal (of a queue created
    /// at the time it is given) in place of the old one, which is then dropped whole rather than told about the flush:
    /// its disk space is freed at once and nothing has to be written, so a
    /// flush works on a full disk. (`fresh` returns `None` when it cannot
    /// replace the journal; the flush is then journaled as a record.)
    pub fn flush(&self, fresh: impl FnOnce(i64) -> Option<Journal>) -> Option<Ack> {
        let mut st = self.lock();
        let store = &mut st.store;
        let mut replaced = false;
        if store.journal.is_some()
            && store.open.is_empty()
            && store.expiring.is_empty()
            && let Some(journal) = fresh(store.created_ms)
        {
            if let Some(old) = store.journal.replace(journal) {
                old.destroy();
            }
            store.ack = None;
            replaced = true;
        }
        let items = std::mem::take(&mut store.ready);
        store.mem_bytes = 0;
        store.next_expiry_ms = None;
        store.disk = DiskTail {
            count: 0,
            bytes: 0,
            from: store.next_seq,
        };
        store.counters.total_flushes += 1;
        let below = store.next_seq;
        if !replaced {
            let keep = store
                .open
                .values()
                .map(|item| (item.seq, item.size() as u32))
                .collect();
            store.log(Record::Flush {
                below,
                keep: Some(keep),
            });
        }
        let ack = st.store.ack.take();
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
        let mut st = self.lock();
        let store = &mut st.store;
        let mut expired = 0;
        if store.next_expiry_ms.is_some_and(|next| next <= now) {
            let ready = std::mem::take(&mut store.ready);
            // A deep queue takes a while to look through.
            crate::offload::long_if(ready.len() > crate::offload::LONG_ITEMS, || {
                store.next_expiry_ms = None;
                store.mem_bytes = 0;
                store.ready = VecDeque::with_capacity(ready.len());
                for item in ready {
                    if expired < limit && item.is_expired(now) {
                        expired += 1;
                        store.expire(item);
                    } else {
                        store.admit(&item);
                        store.ready.push_back(item);
                    }
                }
            });
        }
        let target = store.config.expire_to_queue.clone();
        let mut moving = std::mem::take(&mut store.expiring);
        if target.is_none() {
            // No destination (any more): these are simply gone.
            for item in moving.drain(..) {
                store.log(Record::Remove {
                    seq: item.seq,
                    size: item.size() as u32,
                });
            }
        }
        Expired {
            count: expired,
            moving,
            target,
            ack: store.ack.take(),
        }
    }

    /// Items handed out by [`Queue::expire`] reached their new queue: they
    /// are gone from this one for good.
    pub fn moved(&self, items: &[Item]) -> Option<Ack> {
        let mut st = self.lock();
        for item in items {
            st.store.log(Record::Remove {
                seq: item.seq,
                size: item.size() as u32,
            });
        }
        st.store.ack.take()
    }

    /// Items handed out by [`Queue::expire`] could not be moved: keep them
    /// for the next attempt.
    pub fn unmoved(&self, items: Vec<Item>) {
        let mut st = self.lock();
        if !st.deleted {
            st.store.expiring.extend(items);
        }
    }

    /// Deletes the queue if it is empty, unused, and was created more than
    /// `max_age` ago (Kestrel's `max_queue_age`); returns whether it did.
    /// Checked and done under one hold of the lock, so a put cannot land in
    /// between (a put that comes after finds the queue deleted and retries).
    pub fn delete_if_empty_and_older_than(&self, max_age: std::time::Duration) -> bool {
        let mut st = self.lock();
        let store = &st.store;
        let idle = store.ready_count() == 0
            && store.open.is_empty()
            && store.expiring.is_empty()
            && st.waiters.is_empty()
            && now_ms().saturating_sub(store.created_ms) >= max_age.as_millis() as i64;
        if idle {
            let _ = self.delete_locked(&mut st);
        }
        idle
    }

    /// The settings in force.
    pub fn config(&self) -> Arc<QueueConfig> {
        self.lock().store.config.clone()
    }

    /// Marks the queue deleted and stops its journal: its items are
    /// dropped, parked readers return with what they have, and later calls
    /// through stale handles do nothing. Returns whether it had a journal
    /// (whose directory is the caller's to remove).
    pub fn delete(&self) -> bool {
        let (had_journal, items) = self.delete_locked(&mut self.lock());
        drop_items(items);
        had_journal
    }

    /// Marks the queue deleted; returns whether it had a journal, and its
    /// items for the caller to drop outside the lock.
    fn delete_locked(&self, st: &mut State) -> (bool, VecDeque<Item>) {
        st.deleted = true;
        let store = &mut st.store;
        let items = std::mem::take(&mut store.ready);
        store.mem_bytes = 0;
        store.disk = DiskTail::default();
        store.open.clear();
        let journal = store.journal.take();
        let had_journal = journal.is_some();
        if let Some(journal) = journal {
            journal.destroy();
        }
        let waiters = std::mem::take(&mut st.waiters);
        for (id, waiter) in waiters {
            waiter.wake.notify_one();
            st.handed.insert(id, waiter.got);
        }
        (had_journal, items)
    }

    pub fn set_config(&self, config: Arc<QueueConfig>) {
        self.lock().store.config = config;
    }

    /// The queue as stats and peek report it.
    pub fn stats(&self) -> QueueStats {
        let now = now_ms();
        let mut st = self.lock();
        // Looking does not change the queue: expired items are skipped, not
        // removed (the sweep and readers remove them).
        st.store.refill();
        let head = st.store.ready.iter().find(|i| !i.is_expired(now)).cloned();
        let store = &st.store;
        QueueStats {
            age_ms: head
                .as_ref()
                .map_or(0, |h| (now - h.added_ms).max(0) as u64),
            head: head.map(|h| h.data),
            items: store.ready_count(),
            bytes: store.mem_bytes + store.disk.bytes,
            mem_items: store.ready.len() as u64,
            mem_bytes: store.mem_bytes,
            journal_bytes: store.journal.as_ref().map_or(0, Journal::size),
            waiters: st.waiters.len() as u64,
            open_transactions: store.open.len() as u64,
            counters: store.counters.clone(),
        }
    }

    /// Checkpoints the journal if due (or, `now`, if it changed) and
    /// reclaims segments that no longer hold live data. Returns whether the
    /// journal still wants maintenance later. Blocking: run it off the async
    /// runtime.
    pub fn maintain_journal(&self, now: bool) -> std::io::Result<bool> {
        let job = match &mut self.lock().store.journal {
            Some(journal) => journal.checkpoint_job(now),
            None => return Ok(false),
        };
        if let Some(job) = job {
            job.run()?;
            if let Some(journal) = &mut self.lock().store.journal {
                journal.checkpoint_done(&job);
            }
        }
        loop {
            let job = match &mut self.lock().store.journal {
                Some(journal) => match journal.reclaim_job() {
                    Some(job) => job,
                    None => return Ok(journal.settle()),
                },
                None => return Ok(false),
            };
            let done = job.run()?;
            match &mut self.lock().store.journal {
                Some(journal) => journal.reclaim_done(done),
                None => return Ok(false),
            }
        }
    }

    /// Hands ready items to parked readers, oldest reader first, waking each
    /// one whose request is now complete.
    fn serve_waiters(&self, st: &mut State, now_ms: i64) {
        while let Some(mut entry) = st.waiters.first_entry() {
            let waiter = entry.get_mut();
            st.store.take_into(
                &mut waiter.want,
                waiter.mode,
                now_ms,
                &self.xids,
                &mut waiter.got,
            );
            if !waiter.want.done() {
                break;
            }
            let (id, waiter) = entry.remove_entry();
            waiter.wake.notify_one();
            st.handed.insert(id, waiter.got);
        }
    }
}

/// The items a read has taken so far, returned to the queue if the read is
/// dropped before it completes (its client went away).
/// Frees items taken out of a queue, after its lock is released: a deep
/// queue's items take a while to free.
fn drop_items(items: VecDeque<Item>) {
    crate::offload::long_if(items.len() > crate::offload::LONG_ITEMS, || drop(items));
}

struct PendingRead<'a> {
    queue: &'a Arc<Queue>,
    mode: Mode,
    taken: Vec<Taken>,
    waiter: Option<u64>,
}

impl PendingRead<'_> {
    fn collect(&mut self, st: &mut State) {
        if let Some(id) = self.waiter.take() {
            let got = match st.waiters.remove(&id) {
                Some(waiter) => waiter.got,
                None => st.handed.remove(&id).unwrap_or_default(),
            };
            self.taken.extend(got);
        }
    }

    /// Finishes the read: a take's items, held open meanwhile, are confirmed.
    fn complete(&mut self, st: &mut State) -> (Vec<Taken>, Option<Ack>) {
        self.collect(st);
        let mut taken = std::mem::take(&mut self.taken);
        if self.mode == (Mode::Open { internal: true }) {
            for t in &mut taken {
                if let Some(xid) = t.xid.take() {
                    st.store.confirm(xid);
                }
            }
        }
        (taken, st.store.ack.take())
    }
}

impl Drop for PendingRead<'_> {
    fn drop(&mut self) {
        if self.waiter.is_none() && self.taken.is_empty() {
            return;
        }
        let mut st = self.queue.lock();
        self.collect(&mut st);
        if st.deleted || self.mode == Mode::Peek {
            return;
        }
        let mut restored = false;
        for t in std::mem::take(&mut self.taken) {
            if let Some(item) = t.xid.and_then(|xid| st.store.open.remove(&xid)) {
                st.store.reinsert(item);
                restored = true;
            }
        }
        if restored {
            self.queue.serve_waiters(&mut st, now_ms());
        }
    }
}

#[cfg(test)]
mod tests;
