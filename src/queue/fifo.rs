//! One queue: its ready items in put order, its open transactions, and the
//! readers parked on it.
//!
//! All state sits behind one `std::sync::Mutex` that is never held across an
//! `.await`. Blocked readers are *served by the writer*: a put (or an abort)
//! that finds parked readers takes the items for them under the same lock and
//! wakes each reader once its request is complete, so readers are served in
//! arrival order, an item can never be taken twice, and a parked reader costs
//! a map entry and a `Notify` — no task is polled until it has something.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::item::{Item, now_ms};
use crate::config::QueueConfig;

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

/// An item handed to a reader; `xid` is set when it was opened.
#[derive(Debug, Clone)]
pub struct Taken {
    pub item: Item,
    pub xid: Option<u64>,
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
}

/// A consistent snapshot of one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueSnapshot {
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
    pub counters: QueueCounters,
}

/// Why a put stopped before its last item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The queue is at `max_items` or `max_size`.
    Full,
    /// The item is larger than `max_item_size`.
    TooLarge,
}

/// What a put did: how many items went in, and why the rest did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    pub accepted: usize,
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

/// The items themselves: ready ones in sequence order, and open ones by id.
struct Store {
    config: Arc<QueueConfig>,
    ready: VecDeque<Item>,
    bytes: u64,
    open: HashMap<u64, Item>,
    next_seq: u64,
    counters: QueueCounters,
}

struct Waiter {
    wants: usize,
    read: ReadKind,
    got: Vec<Taken>,
    wake: Arc<Notify>,
}

impl Store {
    /// Drops expired items at the head and returns the first live one.
    fn head(&mut self, now_ms: i64) -> Option<&Item> {
        while self.ready.front().is_some_and(|i| i.is_expired(now_ms)) {
            self.pop_front();
            self.counters.expired_items += 1;
        }
        self.ready.front()
    }

    fn pop_front(&mut self) -> Option<Item> {
        let item = self.ready.pop_front()?;
        self.bytes -= item.size();
        Some(item)
    }

    /// Takes items for a reader until it holds `wants` or the queue runs dry.
    fn take_into(
        &mut self,
        wants: usize,
        read: ReadKind,
        now_ms: i64,
        xids: &XidSource,
        out: &mut Vec<Taken>,
    ) {
        if read == ReadKind::Peek {
            if out.is_empty() {
                if let Some(head) = self.head(now_ms) {
                    out.push(Taken {
                        item: head.clone(),
                        xid: None,
                    });
                }
            }
            return;
        }
        while out.len() < wants {
            if self.head(now_ms).is_none() {
                break;
            }
            let Some(item) = self.pop_front() else { break };
            let xid = (read == ReadKind::Open).then(|| {
                let xid = xids.next();
                self.open.insert(xid, item.clone());
                self.counters.transactions += 1;
                xid
            });
            out.push(Taken { item, xid });
        }
    }

    /// Puts an item back among the ready ones, at its place in put order.
    fn reinsert(&mut self, item: Item) {
        let at = self.ready.partition_point(|i| i.seq < item.seq);
        self.bytes += item.size();
        self.ready.insert(at, item);
    }

    fn is_full(&self) -> bool {
        self.ready.len() as u64 >= self.config.max_items || self.bytes >= self.config.max_size
    }
}

impl Queue {
    pub fn new(name: Arc<str>, config: Arc<QueueConfig>, xids: Arc<XidSource>) -> Self {
        Queue {
            name,
            xids,
            state: Mutex::new(State {
                store: Store {
                    config,
                    ready: VecDeque::new(),
                    bytes: 0,
                    open: HashMap::new(),
                    next_seq: 1,
                    counters: QueueCounters::default(),
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
    ) -> Result<PutOutcome, Deleted> {
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
                while store.is_full() && store.pop_front().is_some() {
                    store.counters.discarded += 1;
                }
            }
            let seq = store.next_seq;
            store.next_seq += 1;
            store.bytes += data.len() as u64;
            store.ready.push_back(Item {
                seq,
                data,
                added_ms: now,
                expires_ms,
            });
            store.counters.total_items += 1;
            outcome.accepted += 1;
        }
        self.serve_waiters(&mut st, now);
        Ok(outcome)
    }

    /// Reads up to `max` items, waiting until `deadline` for the rest when
    /// fewer are ready. Peeks return at most one item.
    ///
    /// Cancel-safe: if the returned future is dropped, every item it had taken
    /// goes back (opened ones are aborted, removed ones return to their place).
    pub async fn get(
        self: &Arc<Self>,
        max: usize,
        deadline: Option<Instant>,
        read: ReadKind,
    ) -> Vec<Taken> {
        let max = if read == ReadKind::Peek {
            max.min(1)
        } else {
            max
        };
        if max == 0 {
            return Vec::new();
        }
        let mut pending = PendingRead {
            queue: self,
            read,
            taken: Vec::new(),
            waiter: None,
        };
        let wake = {
            let now = now_ms();
            let mut st = self.lock();
            if st.deleted {
                return Vec::new();
            }
            st.store
                .take_into(max, read, now, &self.xids, &mut pending.taken);
            let must_wait =
                pending.taken.len() < max && deadline.is_some_and(|d| d > Instant::now());
            if !must_wait {
                return std::mem::take(&mut pending.taken);
            }
            let id = st.next_waiter;
            st.next_waiter += 1;
            let wake = Arc::new(Notify::new());
            st.waiters.insert(
                id,
                Waiter {
                    wants: max - pending.taken.len(),
                    read,
                    got: Vec::new(),
                    wake: wake.clone(),
                },
            );
            pending.waiter = Some(id);
            wake
        };
        if let Some(deadline) = deadline {
            // Woken once: when the request is complete or the queue is deleted.
            let _ = tokio::time::timeout_at(deadline, wake.notified()).await;
        }
        pending.finish()
    }

    /// Confirms open items: they are gone for good. Returns how many were open.
    pub fn confirm(&self, xids: &[u64]) -> usize {
        let mut st = self.lock();
        xids.iter()
            .filter(|xid| st.store.open.remove(xid).is_some())
            .count()
    }

    /// Aborts open items: they go back to the head, in put order. Returns how
    /// many were open.
    pub fn abort(&self, xids: &[u64]) -> usize {
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
        count
    }

    /// Removes every ready item; open transactions are untouched.
    pub fn flush(&self) {
        let mut st = self.lock();
        st.store.ready.clear();
        st.store.bytes = 0;
        st.store.counters.total_flushes += 1;
    }

    /// Drops every expired ready item, wherever it sits in the queue (Kestrel
    /// only looked at the head). Returns how many were dropped.
    pub fn flush_expired(&self) -> u64 {
        let now = now_ms();
        let mut st = self.lock();
        let store = &mut st.store;
        let before = store.ready.len();
        let mut freed = 0;
        store.ready.retain(|item| {
            let expired = item.is_expired(now);
            if expired {
                freed += item.size();
            }
            !expired
        });
        let dropped = (before - store.ready.len()) as u64;
        store.bytes -= freed;
        store.counters.expired_items += dropped;
        dropped
    }

    /// Marks the queue deleted: its items are dropped, parked readers return
    /// with what they have, and later calls through stale handles do nothing.
    pub fn delete(&self) {
        let mut st = self.lock();
        st.deleted = true;
        st.store.ready.clear();
        st.store.bytes = 0;
        st.store.open.clear();
        let waiters = std::mem::take(&mut st.waiters);
        for (id, waiter) in waiters {
            waiter.wake.notify_one();
            st.handed.insert(id, waiter.got);
        }
    }

    pub fn set_config(&self, config: Arc<QueueConfig>) {
        self.lock().store.config = config;
    }

    pub fn snapshot(&self) -> QueueSnapshot {
        let now = now_ms();
        let mut st = self.lock();
        let head = st.store.head(now).cloned();
        let store = &st.store;
        QueueSnapshot {
            age_ms: head
                .as_ref()
                .map_or(0, |h| (now - h.added_ms).max(0) as u64),
            head: head.map(|h| h.data),
            items: store.ready.len() as u64,
            bytes: store.bytes,
            mem_items: store.ready.len() as u64,
            mem_bytes: store.bytes,
            journal_bytes: 0,
            waiters: st.waiters.len() as u64,
            open_transactions: store.open.len() as u64,
            counters: store.counters.clone(),
        }
    }

    /// Hands ready items to parked readers, oldest reader first, waking each
    /// one whose request is now complete.
    fn serve_waiters(&self, st: &mut State, now_ms: i64) {
        while let Some(mut entry) = st.waiters.first_entry() {
            let waiter = entry.get_mut();
            st.store.take_into(
                waiter.wants,
                waiter.read,
                now_ms,
                &self.xids,
                &mut waiter.got,
            );
            if waiter.got.len() < waiter.wants {
                break;
            }
            let (id, waiter) = entry.remove_entry();
            waiter.wake.notify_one();
            st.handed.insert(id, waiter.got);
        }
    }

    /// Returns items a cancelled take or open had taken: opened ones are
    /// aborted, removed ones go back to their place.
    fn restore(&self, st: &mut State, taken: Vec<Taken>) {
        if st.deleted {
            return;
        }
        let mut restored = false;
        for t in taken {
            match t.xid {
                Some(xid) => {
                    if let Some(item) = st.store.open.remove(&xid) {
                        st.store.reinsert(item);
                        restored = true;
                    }
                }
                None => {
                    st.store.reinsert(t.item);
                    restored = true;
                }
            }
        }
        if restored {
            self.serve_waiters(st, now_ms());
        }
    }
}

/// The items a read has taken so far, returned to the queue if the read is
/// dropped before it completes (its client went away).
struct PendingRead<'a> {
    queue: &'a Arc<Queue>,
    read: ReadKind,
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

    fn finish(mut self) -> Vec<Taken> {
        let mut st = self.queue.lock();
        self.collect(&mut st);
        drop(st);
        std::mem::take(&mut self.taken)
    }
}

impl Drop for PendingRead<'_> {
    fn drop(&mut self) {
        if self.waiter.is_none() && self.taken.is_empty() {
            return;
        }
        let mut st = self.queue.lock();
        self.collect(&mut st);
        let taken = std::mem::take(&mut self.taken);
        if self.read != ReadKind::Peek {
            self.queue.restore(&mut st, taken);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn queue() -> Arc<Queue> {
        Arc::new(Queue::new(
            "q".into(),
            Arc::new(QueueConfig::default()),
            Arc::new(XidSource::new()),
        ))
    }

    fn put(q: &Queue, items: &[&str]) -> PutOutcome {
        q.put(
            items.iter().map(|s| Bytes::copy_from_slice(s.as_bytes())),
            None,
        )
        .unwrap()
    }

    fn data(taken: &[Taken]) -> Vec<String> {
        taken
            .iter()
            .map(|t| String::from_utf8(t.item.data.to_vec()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn fifo_take() {
        let q = queue();
        assert_eq!(put(&q, &["a", "b", "c"]).accepted, 3);
        assert_eq!(data(&q.get(2, None, ReadKind::Take).await), ["a", "b"]);
        assert_eq!(data(&q.get(5, None, ReadKind::Take).await), ["c"]);
        assert!(q.get(5, None, ReadKind::Take).await.is_empty());
    }

    #[tokio::test]
    async fn abort_returns_items_to_head_in_order() {
        let q = queue();
        put(&q, &["a", "b", "c"]);
        let opened = q.get(2, None, ReadKind::Open).await;
        let xids: Vec<u64> = opened.iter().map(|t| t.xid.unwrap()).collect();
        assert_ne!(xids[0], xids[1]);
        assert_eq!(q.snapshot().open_transactions, 2);
        // Abort in reverse: put order is kept anyway.
        assert_eq!(q.abort(&[xids[1]]), 1);
        assert_eq!(q.abort(&[xids[0], 12345]), 1);
        assert_eq!(data(&q.get(3, None, ReadKind::Take).await), ["a", "b", "c"]);
        assert_eq!(q.snapshot().counters.canceled_transactions, 2);
    }

    #[tokio::test]
    async fn confirm_removes_for_good() {
        let q = queue();
        put(&q, &["a"]);
        let opened = q.get(1, None, ReadKind::Open).await;
        let xid = opened[0].xid.unwrap();
        assert_eq!(q.confirm(&[xid]), 1);
        assert_eq!(q.confirm(&[xid]), 0);
        assert_eq!(q.abort(&[xid]), 0);
        assert!(q.get(1, None, ReadKind::Take).await.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn parked_readers_are_served_in_arrival_order() {
        let q = queue();
        let deadline = Some(Instant::now() + Duration::from_secs(10));
        let mut readers = Vec::new();
        for _ in 0..3 {
            let q2 = q.clone();
            readers.push(tokio::spawn(async move {
                q2.get(1, deadline, ReadKind::Take).await
            }));
            // Let the reader park before the next one arrives.
            while q.snapshot().waiters < readers.len() as u64 {
                tokio::task::yield_now().await;
            }
        }
        put(&q, &["a", "b", "c"]);
        let mut got = Vec::new();
        for r in readers {
            got.extend(data(&r.await.unwrap()));
        }
        assert_eq!(got, ["a", "b", "c"]);
        assert_eq!(q.snapshot().waiters, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_get_waits_until_deadline_for_the_whole_batch() {
        let q = queue();
        put(&q, &["a"]);
        let start = Instant::now();
        let got = q
            .get(3, Some(start + Duration::from_millis(500)), ReadKind::Take)
            .await;
        assert_eq!(data(&got), ["a"]);
        assert!(Instant::now() >= start + Duration::from_millis(500));
        assert_eq!(q.snapshot().waiters, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_reader_leaves_no_ghost_and_loses_nothing() {
        let q = queue();
        put(&q, &["a"]);
        let deadline = Some(Instant::now() + Duration::from_secs(10));
        let q2 = q.clone();
        // Takes "a", then parks for a second item.
        let reader = tokio::spawn(async move { q2.get(2, deadline, ReadKind::Take).await });
        while q.snapshot().waiters == 0 {
            tokio::task::yield_now().await;
        }
        reader.abort();
        assert!(reader.await.unwrap_err().is_cancelled());
        let snap = q.snapshot();
        assert_eq!((snap.waiters, snap.items), (0, 1));
        put(&q, &["b"]);
        assert_eq!(data(&q.get(2, None, ReadKind::Take).await), ["a", "b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_reader_aborts_items_handed_to_it() {
        let q = queue();
        let deadline = Some(Instant::now() + Duration::from_secs(10));
        let q2 = q.clone();
        let reader = tokio::spawn(async move { q2.get(1, deadline, ReadKind::Open).await });
        while q.snapshot().waiters == 0 {
            tokio::task::yield_now().await;
        }
        // The put hands "a" to the parked reader, which is cancelled before it
        // picks it up: "a" must come back.
        reader.abort();
        put(&q, &["a"]);
        let _ = reader.await;
        let snap = q.snapshot();
        assert_eq!((snap.items, snap.open_transactions), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn peek_waiters_see_the_item_and_leave_it() {
        let q = queue();
        let deadline = Some(Instant::now() + Duration::from_secs(10));
        let q2 = q.clone();
        let peeker = tokio::spawn(async move { q2.get(1, deadline, ReadKind::Peek).await });
        let q3 = q.clone();
        while q.snapshot().waiters == 0 {
            tokio::task::yield_now().await;
        }
        let taker = tokio::spawn(async move { q3.get(1, deadline, ReadKind::Take).await });
        while q.snapshot().waiters < 2 {
            tokio::task::yield_now().await;
        }
        put(&q, &["a"]);
        assert_eq!(data(&peeker.await.unwrap()), ["a"]);
        assert_eq!(data(&taker.await.unwrap()), ["a"]);
        assert_eq!(q.snapshot().items, 0);
    }

    #[tokio::test]
    async fn expired_items_are_never_returned() {
        let q = queue();
        let past = now_ms() - 1;
        q.put([Bytes::from_static(b"old")], Some(past)).unwrap();
        put(&q, &["new"]);
        q.put([Bytes::from_static(b"old2")], Some(past)).unwrap();
        put(&q, &["newer"]);
        assert_eq!(
            data(&q.get(5, None, ReadKind::Take).await),
            ["new", "newer"]
        );
        assert_eq!(q.snapshot().counters.expired_items, 2);
    }

    #[tokio::test]
    async fn limits_refuse_or_discard() {
        let config = QueueConfig {
            max_items: 2,
            max_item_size: 3,
            ..QueueConfig::default()
        };
        let q = Queue::new(
            "q".into(),
            Arc::new(config.clone()),
            Arc::new(XidSource::new()),
        );
        assert_eq!(
            put(&q, &["a", "b", "c"]),
            PutOutcome {
                accepted: 2,
                refused: Some(Refusal::Full)
            }
        );
        assert_eq!(
            put(&q, &["long"]),
            PutOutcome {
                accepted: 0,
                refused: Some(Refusal::TooLarge)
            }
        );
        q.set_config(Arc::new(QueueConfig {
            discard_old_when_full: true,
            ..config
        }));
        assert_eq!(put(&q, &["c"]).accepted, 1);
        let snap = q.snapshot();
        assert_eq!((snap.items, snap.counters.discarded), (2, 1));
        assert_eq!(snap.head.as_deref(), Some(&b"b"[..]));
    }

    #[tokio::test]
    async fn deleted_queue_refuses_puts() {
        let q = queue();
        put(&q, &["a"]);
        q.delete();
        assert_eq!(q.put([Bytes::from_static(b"x")], None), Err(Deleted));
        assert!(q.get(1, None, ReadKind::Take).await.is_empty());
    }
}
