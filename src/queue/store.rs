//! The items of one queue and everything done to them: the ready items in put
//! order, the open transactions, limits, expiry, read-behind, and the journal
//! records that tell of each change.
//!
//! Plain synchronous state, with no lock and nothing to wait for, so that it
//! can be tested on its own: [`Queue`](super::Queue) keeps it behind its mutex
//! and parks readers. Every change is applied in memory and appended to the
//! journal in the same step, so memory and log agree on the order of events;
//! the acknowledgement of the newest record waits in [`Store::take_ack`] for
//! the caller, who waits on it outside the lock before acknowledging.
//!
//! Read-behind: once the in-memory items (with their per-item overhead)
//! reach `max_memory_size`, new items are only journaled (counted, not
//! kept); as the head drains below half the budget, items are read back from
//! the journal in order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use super::item::Item;
use super::read::{ReadMode, Want};
use super::report::{Expired, PutOutcome, Refusal, Taken};
use super::xid::XidSource;
use crate::clock::now_ms;
use crate::config::QueueConfig;
use crate::journal::{Ack, Journal, Record, Recovery, Turnover};
use crate::stats::{QueueCounters, QueueStats};

/// Most item bytes read back from the journal at a time.
const REFILL_CHUNK: u64 = 1024 * 1024;

/// What an item in memory costs besides its bytes: its entry in the queue
/// and its allocation's header.
const ITEM_OVERHEAD: u64 = 80;

/// Ready items on disk only (read-behind): everything with a sequence number
/// from `from` on that is still live.
#[derive(Debug, Default, Clone, Copy)]
struct DiskTail {
    count: u64,
    bytes: u64,
    from: u64,
}

impl DiskTail {
    /// Nothing on disk; the next item to spill will be `next_seq`.
    fn empty(next_seq: u64) -> Self {
        DiskTail {
            count: 0,
            bytes: 0,
            from: next_seq,
        }
    }
}

/// The items themselves: ready ones in sequence order (in memory, then on
/// disk), and open ones by transaction id.
pub struct Store {
    config: Arc<QueueConfig>,
    xids: Arc<XidSource>,
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

impl Store {
    /// A store, empty or as recovered from its journal (whose items stay on
    /// disk until reads want them).
    pub fn new(
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
            _ => DiskTail::empty(next_seq),
        };
        Store {
            config,
            xids,
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
        }
    }

    pub fn config(&self) -> &Arc<QueueConfig> {
        &self.config
    }

    pub fn set_config(&mut self, config: Arc<QueueConfig>) {
        self.config = config;
    }

    /// The acknowledgement of the records appended since the last call, if
    /// any: it resolves once the newest of them is durable.
    pub fn take_ack(&mut self) -> Option<Ack> {
        self.ack.take()
    }

    /// The journal, for its maintenance.
    pub fn journal_mut(&mut self) -> Option<&mut Journal> {
        self.journal.as_mut()
    }

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

    /// No item in it at all: none ready, none open, none being moved by
    /// expiry.
    pub fn is_empty(&self) -> bool {
        self.ready_count() == 0 && self.open.is_empty() && self.expiring.is_empty()
    }

    /// Milliseconds since the queue was created (by its first run, for a
    /// recovered one).
    pub fn age_ms(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.created_ms)
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
            self.disk = DiskTail::empty(self.next_seq);
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
                    self.expire_item(item);
                }
                _ => break,
            }
        }
        self.ready.front()
    }

    /// Disposes of an expired item already out of `ready`: dropped, or set
    /// aside to move to `expire_to_queue`.
    fn expire_item(&mut self, item: Item) {
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
    fn pop_front(&mut self, mode: ReadMode) -> Option<Item> {
        let item = self.ready.pop_front()?;
        self.mem_bytes -= item.size();
        let (seq, size) = (item.seq, item.size() as u32);
        if mode.opens() {
            self.log(Record::Open { seq, size });
        } else {
            self.log(Record::Remove { seq, size });
        }
        Some(item)
    }

    /// Takes items for a reader until it has what it wants or the queue runs
    /// dry. A peek copies the head, once per read.
    pub fn take_into(
        &mut self,
        want: &mut Want,
        mode: ReadMode,
        now_ms: i64,
        out: &mut Vec<Taken>,
    ) {
        if mode == ReadMode::Peek {
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
            let xid = if mode.opens() {
                let xid = self.xids.next();
                self.open.insert(xid, item.clone());
                // A held take is not a transaction its client knows of.
                if mode == ReadMode::Open {
                    self.counters.transactions += 1;
                }
                Some(xid)
            } else {
                None
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

    /// Confirms an open item: it is gone for good. Returns whether it was
    /// open.
    pub fn confirm(&mut self, xid: u64) -> bool {
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

    pub fn is_open(&self, xid: u64) -> bool {
        self.open.contains_key(&xid)
    }

    /// Aborts an open transaction: its item goes back to the head, in put
    /// order. Returns whether it was open.
    pub fn abort(&mut self, xid: u64) -> bool {
        let aborted = self.put_back(xid);
        if aborted {
            self.counters.canceled_transactions += 1;
        }
        aborted
    }

    /// Puts an open item back among the ready ones without counting an
    /// aborted transaction: it was held for a read that did not complete.
    /// Returns whether it was open.
    pub fn put_back(&mut self, xid: u64) -> bool {
        match self.open.remove(&xid) {
            Some(item) => {
                self.reinsert(item);
                true
            }
            None => false,
        }
    }

    fn is_full(&self) -> bool {
        self.ready_count() >= self.config.max_items
            || self.mem_bytes + self.disk.bytes >= self.config.max_size
    }

    /// Appends `items` in order, each expiring at `expires_ms` or after
    /// `max_age`, whichever comes first. Stops at the first item the queue
    /// refuses; a full queue that discards old items drops from the head to
    /// make room instead.
    pub fn put(
        &mut self,
        items: impl IntoIterator<Item = Bytes>,
        expires_ms: Option<i64>,
        now_ms: i64,
    ) -> PutOutcome {
        let expires_ms = self.config.expiry(now_ms, expires_ms);
        let mut outcome = PutOutcome {
            accepted: 0,
            first_seq: self.next_seq,
            refused: None,
        };
        for data in items {
            if data.len() as u64 > self.config.max_item_size {
                outcome.refused = Some(Refusal::TooLarge);
                break;
            }
            if self.is_full() {
                if !self.config.discard_old_when_full {
                    outcome.refused = Some(Refusal::Full);
                    break;
                }
                while self.is_full() && self.head(now_ms).is_some() {
                    self.pop_front(ReadMode::Take);
                    self.counters.discarded += 1;
                }
            }
            self.push(data, now_ms, expires_ms);
            outcome.accepted += 1;
        }
        outcome
    }

    /// Appends items as another server held them: with their own add times
    /// and expiries (capped by `max_age` from their add time), and past
    /// every limit, since what the other server acknowledged must not be
    /// refused now.
    pub fn restore(&mut self, items: impl IntoIterator<Item = (Bytes, i64, Option<i64>)>) {
        for (data, added_ms, expires_ms) in items {
            let expires_ms = self.config.expiry(added_ms, expires_ms);
            self.push(data, added_ms, expires_ms);
        }
    }

    /// Appends one item: kept in memory while it fits the memory budget and
    /// nothing is on disk before it, journaled only otherwise.
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

    /// Takes back the items of a put whose journal write failed, if no reader
    /// has taken them yet. Returns how many were still there.
    pub fn revoke(&mut self, first_seq: u64, count: usize) -> usize {
        let end = first_seq + count as u64;
        let before = self.ready.len();
        let mut freed = 0;
        self.ready.retain(|i| {
            let gone = (first_seq..end).contains(&i.seq);
            if gone {
                freed += i.size();
            }
            !gone
        });
        self.mem_bytes -= freed;
        let mut revoked = before - self.ready.len();
        // Items that went straight to disk never reached it: the journal has
        // no data for them, so the read-back skips them; count them out.
        if self.disk.count > 0 && end > self.disk.from {
            let on_disk = end - first_seq.max(self.disk.from);
            self.disk.count = self.disk.count.saturating_sub(on_disk);
            revoked += on_disk as usize;
        }
        if let Some(journal) = &mut self.journal {
            journal.forget(first_seq, end);
        }
        self.ack = None;
        revoked
    }

    /// Removes every ready item, in memory and on disk; open transactions are
    /// untouched. Returns the items removed from memory, for the caller to
    /// drop outside the lock.
    ///
    /// When nothing else is left (no open reads, nothing being moved by
    /// expiry), `fresh` is asked for a new, empty journal (of a queue created
    /// at the time it is given) in place of the old one, which is then
    /// dropped whole rather than told about the flush: its disk space is
    /// freed at once and nothing has to be written, so a flush works on a
    /// full disk. (`fresh` returns `None` when it cannot replace the journal;
    /// the flush is then journaled as a record.)
    pub fn flush(&mut self, fresh: impl FnOnce(i64) -> Option<Journal>) -> VecDeque<Item> {
        let mut replaced = false;
        if self.journal.is_some()
            && self.open.is_empty()
            && self.expiring.is_empty()
            && let Some(journal) = fresh(self.created_ms)
        {
            if let Some(old) = self.journal.replace(journal) {
                // The queue's stats go on counting from where it left off.
                count_turnover(&mut self.counters, old.turnover());
                old.destroy();
            }
            self.ack = None;
            replaced = true;
        }
        let items = std::mem::take(&mut self.ready);
        self.mem_bytes = 0;
        self.next_expiry_ms = None;
        self.disk = DiskTail::empty(self.next_seq);
        self.counters.total_flushes += 1;
        let below = self.next_seq;
        if !replaced {
            let keep = self
                .open
                .values()
                .map(|item| (item.seq, item.size() as u32))
                .collect();
            self.log(Record::Flush {
                below,
                keep: Some(keep),
            });
        }
        items
    }

    /// Expires up to `limit` items held in memory that are expired at
    /// `now_ms`, wherever they sit in the queue (Kestrel only looked at the
    /// head); items still on disk are checked as they are read back. Items
    /// bound for `expire_to_queue` are handed back to move: see
    /// [`Store::moved`] and [`Store::unmoved`].
    pub fn expire(&mut self, now_ms: i64, limit: u64) -> Expired {
        let mut expired = 0;
        if self.next_expiry_ms.is_some_and(|next| next <= now_ms) {
            let ready = std::mem::take(&mut self.ready);
            // A deep queue takes a while to look through.
            crate::offload::long_if(ready.len() > crate::offload::LONG_ITEMS, || {
                self.next_expiry_ms = None;
                self.mem_bytes = 0;
                self.ready = VecDeque::with_capacity(ready.len());
                for item in ready {
                    if expired < limit && item.is_expired(now_ms) {
                        expired += 1;
                        self.expire_item(item);
                    } else {
                        self.admit(&item);
                        self.ready.push_back(item);
                    }
                }
            });
        }
        let target = self.config.expire_to_queue.clone();
        let mut moving = std::mem::take(&mut self.expiring);
        if target.is_none() {
            // No destination (any more): these are simply gone.
            for item in moving.drain(..) {
                self.log(Record::Remove {
                    seq: item.seq,
                    size: item.size() as u32,
                });
            }
        }
        Expired {
            count: expired,
            moving,
            target,
            ack: self.ack.take(),
        }
    }

    /// Items handed out by [`Store::expire`] reached their new queue: they
    /// are gone from this one for good.
    pub fn moved(&mut self, items: &[Item]) {
        for item in items {
            self.log(Record::Remove {
                seq: item.seq,
                size: item.size() as u32,
            });
        }
    }

    /// Items handed out by [`Store::expire`] could not be moved: they are
    /// kept for the next attempt.
    pub fn unmoved(&mut self, items: Vec<Item>) {
        self.expiring.extend(items);
    }

    /// Empties the store for a deleted queue and destroys its journal.
    /// Returns whether it had a journal, and the items that were in memory,
    /// for the caller to drop outside the lock.
    pub fn delete(&mut self) -> (bool, VecDeque<Item>) {
        let items = std::mem::take(&mut self.ready);
        self.mem_bytes = 0;
        self.disk = DiskTail::default();
        self.open.clear();
        let journal = self.journal.take();
        let had_journal = journal.is_some();
        if let Some(journal) = journal {
            journal.destroy();
        }
        (had_journal, items)
    }

    /// The queue as stats and peek report it, with `waiters` parked readers.
    pub fn stats(&mut self, now_ms: i64, waiters: u64) -> QueueStats {
        // Looking does not change the queue: expired items are skipped, not
        // removed (the sweep and readers remove them).
        self.refill();
        let head = self.ready.iter().find(|i| !i.is_expired(now_ms)).cloned();
        let mut counters = self.counters.clone();
        if let Some(journal) = &self.journal {
            count_turnover(&mut counters, journal.turnover());
        }
        QueueStats {
            age_ms: head
                .as_ref()
                .map_or(0, |h| (now_ms - h.added_ms).max(0) as u64),
            head: head.map(|h| h.data),
            items: self.ready_count(),
            bytes: self.mem_bytes + self.disk.bytes,
            mem_items: self.ready.len() as u64,
            mem_bytes: self.mem_bytes,
            journal_bytes: self.journal.as_ref().map_or(0, Journal::size),
            waiters,
            open_transactions: self.open.len() as u64,
            max_memory_size: self.config.max_memory_size,
            children: Vec::new(),
            counters,
            requests: Default::default(),
        }
    }
}

/// Adds what a journal did to its segments to the queue's counters.
fn count_turnover(counters: &mut QueueCounters, t: Turnover) {
    counters.journal_rotations += t.rotations;
    counters.journal_rewrites += t.rewrites;
}

#[cfg(test)]
mod tests;
