//! Every queue of the server, by name: created on first use (up to
//! `max_queues`), recovered at start, deleted on request. Their journals
//! live under `<data_dir>/queues/` as [`dirs`](super::dirs) lays out, and
//! share one cache of open files.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use smallvec::SmallVec;
use std::time::Instant;

use bytes::Bytes;

use super::dirs::{Found, QueueDirs};
use super::fifo::Queue;
use super::report::PutOutcome;
use super::xid::XidSource;
use crate::clock::now_ms;
use crate::config::{QueueConfig, QueuesConfig, SyncMode};
use crate::journal::{Ack, Journal, Journals, Recovery};
use crate::name::{self, NameError};

/// Queue lifecycle counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lifecycle {
    pub creates: u64,
    pub deletes: u64,
    /// Queues deleted for staying empty past their `max_queue_age`.
    pub expires: u64,
    /// Creations refused at `max_queues`.
    pub rejected_creates: u64,
    /// Journal files held open now.
    pub open_files: u64,
    /// fsyncs of journal files and directories so far.
    pub fsyncs: u64,
}

/// One queue's share of a put.
pub struct Placed {
    pub queue: Arc<Queue>,
    pub outcome: PutOutcome,
    pub ack: Option<Ack>,
    /// The queue the client named (or an alias's destination), as opposed to
    /// a fanout copy whose failure the client does not hear about.
    pub primary: bool,
}

/// Where a put's items went.
pub struct Delivery {
    /// How many items the client is told were accepted.
    pub accepted: usize,
    /// The queue put into, and its fanout children: one, usually, kept
    /// inline (every put makes one of these).
    pub placed: SmallVec<[Placed; 1]>,
}

/// Waits for an acknowledgement whose failure only needs logging.
async fn wait_logged(ack: Option<Ack>, what: &str) {
    if let Some(ack) = ack
        && let Err(e) = ack.wait().await
    {
        crate::throttled!(warn, error = %e, "{what} not journaled");
    }
}

/// What [`QueueCollection::restore`] did; durable once `acks` are awaited.
pub struct Restore {
    pub stored: usize,
    pub stored_bytes: u64,
    /// Items already expired, of which `moved` went to `moved_to` (the
    /// rest were dropped, or refused by a full target).
    pub expired: usize,
    pub moved: usize,
    pub moved_to: Option<String>,
    pub acks: Vec<Ack>,
}

/// Why a queue could not be used.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("invalid queue name: {0}")]
    BadName(#[from] NameError),
    #[error("queue {name} is unavailable: {reason}")]
    Unavailable { name: String, reason: String },
    #[error("too many queues (max_queues is {limit}); queue {name} was not created")]
    TooMany { name: String, limit: usize },
}

/// A journal opened at start, or why it could not be.
type Recovered = io::Result<(Journal, Recovery)>;

/// How many queues, and open journal files, the collection may have.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    pub max_queues: usize,
    pub max_open_files: usize,
}

/// Queues the sweep looks at between two yields to other tasks.
const SWEEP_BATCH: usize = 1024;

/// The named queues, created on first use.
pub struct QueueCollection {
    /// `<data_dir>/queues`, where journals live.
    dirs: QueueDirs,
    journals: Arc<Journals>,
    max_queues: usize,
    /// By name; a fanout parent's children are the range `"p+".."p,"`.
    queues: RwLock<BTreeMap<Arc<str>, Arc<Queue>>>,
    /// Some queue's name has a `+` (it is, or was, somebody's child): until
    /// then a put looks for no children, which would cost it two names made
    /// and a lookup. Never cleared; a stale `true` only costs the lookup.
    any_child: AtomicBool,
    /// Queues whose journal exists but could not be opened: refused until an
    /// operator repairs them, never overwritten.
    broken: RwLock<HashMap<Arc<str>, String>>,
    xids: Arc<XidSource>,
    config: RwLock<Arc<QueuesConfig>>,
    creates: AtomicU64,
    deletes: AtomicU64,
    expires: AtomicU64,
    rejected_creates: AtomicU64,
}

fn lock_err<T>(r: Result<T, std::sync::PoisonError<T>>) -> T {
    r.unwrap_or_else(|e| e.into_inner())
}

impl Drop for QueueCollection {
    fn drop(&mut self) {
        self.journals.abandon();
    }
}

impl QueueCollection {
    /// Opens the queues journaled under `data_dir`, recovering each; a queue
    /// whose journal cannot be opened is logged and refused, and does not stop
    /// the others.
    pub fn open(data_dir: &Path, config: QueuesConfig, capacity: Capacity) -> io::Result<Self> {
        let (dirs, found) = QueueDirs::open(data_dir.join("queues"))?;
        let collection = QueueCollection {
            dirs,
            journals: Journals::new(capacity.max_open_files),
            max_queues: capacity.max_queues,
            queues: RwLock::new(BTreeMap::new()),
            any_child: AtomicBool::new(false),
            broken: RwLock::new(HashMap::new()),
            xids: Arc::new(XidSource::new()),
            config: RwLock::new(Arc::new(config)),
            creates: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            expires: AtomicU64::new(0),
            rejected_creates: AtomicU64::new(0),
        };
        collection.recover_all(found);
        Ok(collection)
    }

    /// Recovers every queue found, several at a time: after a clean stop
    /// each takes a few small reads, and a server with 100,000 queues must
    /// be back in seconds.
    fn recover_all(&self, found: Vec<Found>) {
        let started = Instant::now();
        let mut journaled = Vec::with_capacity(found.len());
        for Found { name, path } in found {
            if self.queue_config(&name).journal().is_some() {
                journaled.push((name, path));
            } else {
                tracing::info!(queue = %name, "queue is memory-only now: removing its journal");
                self.dirs.discard(&path);
            }
        }
        let next = AtomicUsize::new(0);
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get() * 2)
            .min(journaled.len().max(1));
        let recovered: Vec<Vec<(usize, Recovered)>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some((name, path)) = journaled.get(i) else {
                                return done;
                            };
                            let config = self.queue_config(name).journal().expect("journaled");
                            done.push((i, Journal::recover(path, config, name, &self.journals)));
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_default())
                .collect()
        });
        let (mut queues, mut items) = (0u64, 0u64);
        let mut map = lock_err(self.queues.write());
        for (i, result) in recovered.into_iter().flatten() {
            let (name, path) = &journaled[i];
            let name: Arc<str> = Arc::from(name.as_str());
            match result {
                Ok((journal, recovery)) => {
                    if recovery.rolled_back > 0 {
                        tracing::info!(queue = %name, items = recovery.rolled_back, "open transactions rolled back");
                    }
                    queues += 1;
                    items += recovery.items;
                    let queue = Queue::new(
                        name.clone(),
                        self.queue_config(&name),
                        self.xids.clone(),
                        Some(journal),
                        Some(recovery),
                    );
                    self.note_child(&name);
                    map.insert(name, Arc::new(queue));
                }
                Err(e) => {
                    tracing::error!(queue = %name, dir = %path.display(), error = %e, "journal could not be recovered; queue unavailable until repaired (see docs/operations.md)");
                    lock_err(self.broken.write()).insert(name, e.to_string());
                }
            }
        }
        tracing::info!(queues, items, elapsed = ?started.elapsed(), "journals recovered");
    }

    /// Rung when a journal wants maintenance before the next periodic pass.
    pub fn maintenance_wanted(&self) -> Arc<tokio::sync::Notify> {
        self.journals.maintenance_wanted()
    }

    /// One pass of the background syncer (see [`Journals::sync_pass`]).
    pub fn sync_journals(&self) -> bool {
        self.journals.sync_pass()
    }

    /// One maintenance pass over the queues whose journals asked for it
    /// (blocking). `restless` carries the queues still wanting it from one
    /// pass to the next; a queue leaves it once its journal is at rest.
    pub fn maintain_journals(&self, restless: &mut Vec<Arc<str>>) {
        restless.extend(self.journals.take_restless());
        restless.sort_unstable();
        restless.dedup();
        restless.retain(|name| {
            let Some(q) = self.get(name) else {
                return false;
            };
            q.maintain_journal(false).unwrap_or_else(|e| {
                crate::throttled!(warn, queue = %name, error = %e, "journal maintenance failed; retrying");
                true
            })
        });
    }

    /// The resolved settings of `queue`.
    pub fn queue_config(&self, queue: &str) -> Arc<QueueConfig> {
        Arc::new(lock_err(self.config.read()).for_queue(queue))
    }

    /// The queue policies in force.
    pub fn config(&self) -> Arc<QueuesConfig> {
        lock_err(self.config.read()).clone()
    }

    /// Applies new queue policies to every queue, live. (Journal placement
    /// and durability settings of an existing queue apply from its next start.)
    pub fn reconfigure(&self, config: QueuesConfig) {
        *lock_err(self.config.write()) = Arc::new(config);
        for q in self.all() {
            q.set_config(self.queue_config(q.name()));
        }
    }

    /// The queue called `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<Queue>> {
        lock_err(self.queues.read()).get(name).cloned()
    }

    /// The queue called `name`, created if needed.
    pub fn get_or_create(&self, queue: &str) -> Result<Arc<Queue>, QueueError> {
        if let Some(q) = self.get(queue) {
            return Ok(q);
        }
        name::validate(queue)?;
        if let Some(reason) = lock_err(self.broken.read()).get(queue) {
            return Err(QueueError::Unavailable {
                name: queue.into(),
                reason: reason.clone(),
            });
        }
        let mut queues = lock_err(self.queues.write());
        if let Some(q) = queues.get(queue) {
            return Ok(q.clone());
        }
        if queues.len() >= self.max_queues {
            self.rejected_creates.fetch_add(1, Ordering::Relaxed);
            crate::throttled!(
                warn,
                queue,
                limit = self.max_queues,
                "max_queues reached: queue not created"
            );
            return Err(QueueError::TooMany {
                name: queue.into(),
                limit: self.max_queues,
            });
        }
        let config = self.queue_config(queue);
        let journal = match config.journal() {
            Some(journal_config) => {
                let dir = self
                    .dirs
                    .create(queue, journal_config.sync == SyncMode::Always)
                    .map_err(|e| {
                        crate::throttled!(error, queue, error = %e, "cannot create the queue's journal");
                        QueueError::Unavailable {
                            name: queue.into(),
                            reason: format!("cannot create its journal: {e}"),
                        }
                    })?;
                Some(Journal::create(
                    &dir,
                    journal_config,
                    queue,
                    &self.journals,
                    now_ms(),
                ))
            }
            None => None,
        };
        let name: Arc<str> = Arc::from(queue);
        let q = Arc::new(Queue::new(
            name.clone(),
            config,
            self.xids.clone(),
            journal,
            None,
        ));
        self.note_child(&name);
        queues.insert(name, q.clone());
        self.creates.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(queue, "queue created");
        Ok(q)
    }

    /// Puts `items` where `name` sends them: the queue itself (unless it is
    /// `fanout_only`) and every fanout child `name+…`, or, for an alias, each
    /// of its destinations (fanouts included). `accepted` is what the client
    /// hears: the queue's count, or for an alias the smallest destination's.
    pub fn put(
        &self,
        name: &str,
        items: &[Bytes],
        expires_ms: Option<i64>,
    ) -> Result<Delivery, QueueError> {
        let config = self.config();
        let Some(targets) = config.aliases.get(name) else {
            return self.put_with_fanout(name, items, expires_ms);
        };
        let mut delivery = Delivery {
            accepted: items.len(),
            placed: SmallVec::new(),
        };
        for target in targets {
            let d = self.put_with_fanout(target, items, expires_ms)?;
            delivery.accepted = delivery.accepted.min(d.accepted);
            delivery.placed.extend(d.placed);
        }
        Ok(delivery)
    }

    fn put_with_fanout(
        &self,
        name: &str,
        items: &[Bytes],
        expires_ms: Option<i64>,
    ) -> Result<Delivery, QueueError> {
        let q = self.get_or_create(name)?;
        let mut delivery = Delivery {
            accepted: items.len(),
            placed: SmallVec::new(),
        };
        if !q.config().fanout_only {
            let write = self.put_one(name, items, expires_ms)?;
            delivery.accepted = write.outcome.accepted;
            delivery.placed.push(write);
        }
        for child in self.children(name) {
            if let Ok((outcome, ack)) = child.put(items.iter().cloned(), expires_ms) {
                delivery.placed.push(Placed {
                    queue: child,
                    outcome,
                    ack,
                    primary: false,
                });
            }
        }
        Ok(delivery)
    }

    /// Puts into `name` alone.
    fn put_one(
        &self,
        name: &str,
        items: &[Bytes],
        expires_ms: Option<i64>,
    ) -> Result<Placed, QueueError> {
        loop {
            // A queue deleted between lookup and put is looked up (created) again.
            let queue = self.get_or_create(name)?;
            if let Ok((outcome, ack)) = queue.put(items.iter().cloned(), expires_ms) {
                return Ok(Placed {
                    queue,
                    outcome,
                    ack,
                    primary: true,
                });
            }
        }
    }

    /// Appends items to `name` alone (no fanout: children have items of
    /// their own) as another server held them: add times and expiries kept,
    /// no limit applied. Items already expired at `now_ms` go where the
    /// queue's expiry sends them: to `expire_to_queue`, starting a new life
    /// there with no expiry of their own, or nowhere.
    pub fn restore(
        &self,
        name: &str,
        items: Vec<(Bytes, i64, Option<i64>)>,
        now_ms: i64,
    ) -> Result<Restore, QueueError> {
        let config = self.queue_config(name);
        let (expired, live): (Vec<_>, Vec<_>) =
            items.into_iter().partition(|(_, added, expires)| {
                config
                    .expiry(*added, *expires)
                    .is_some_and(|at| at <= now_ms)
            });
        let mut restore = Restore {
            stored: live.len(),
            stored_bytes: live.iter().map(|(d, ..)| d.len() as u64).sum(),
            expired: expired.len(),
            moved: 0,
            moved_to: None,
            acks: Vec::new(),
        };
        loop {
            let queue = self.get_or_create(name)?;
            if let Ok(ack) = queue.restore(live.iter().cloned()) {
                restore.acks.extend(ack);
                break;
            }
        }
        if let Some(target) = config
            .expire_to_queue
            .as_deref()
            .filter(|_| !expired.is_empty())
        {
            let data: Vec<Bytes> = expired.into_iter().map(|(d, ..)| d).collect();
            let placed = self.put_one(target, &data, None)?;
            restore.moved = placed.outcome.accepted;
            restore.acks.extend(placed.ack);
            restore.moved_to = Some(target.to_string());
        }
        Ok(restore)
    }

    /// Whether `name` is an alias (aliases mask queues of the same name).
    pub fn is_alias(&self, name: &str) -> bool {
        lock_err(self.config.read()).aliases.contains_key(name)
    }

    /// Marks that a child may exist once a queue named like one appears.
    fn note_child(&self, name: &str) {
        if name.contains('+') {
            self.any_child.store(true, Ordering::Release);
        }
    }

    /// The fanout children of `parent` (`parent+…`).
    pub fn children(&self, parent: &str) -> Vec<Arc<Queue>> {
        if !self.any_child.load(Ordering::Acquire) {
            return Vec::new();
        }
        let (from, to) = (format!("{parent}+"), format!("{parent},"));
        let queues = lock_err(self.queues.read());
        queues
            .range::<str, _>((
                std::ops::Bound::Included(&*from),
                std::ops::Bound::Excluded(&*to),
            ))
            .map(|(_, q)| q.clone())
            .collect()
    }

    /// Expires up to `limit` items of `queue`, moving those bound for
    /// `expire_to_queue` there (put, durable, then confirmed gone from here,
    /// so a crash in between can deliver one twice but never lose one).
    /// Returns how many expired.
    pub async fn expire(&self, queue: &Arc<Queue>, limit: u64) -> u64 {
        let expired = queue.expire(limit);
        wait_logged(expired.ack, "expiry").await;
        let (Some(target), false) = (expired.target, expired.moving.is_empty()) else {
            return expired.count;
        };
        let data: Vec<Bytes> = expired.moving.iter().map(|i| i.data.clone()).collect();
        // Moved items start a new life in the target: no expiry but its own.
        let write = match self.put_one(&target, &data, None) {
            Ok(write) => write,
            Err(e) => {
                tracing::warn!(queue = %queue.name(), target, error = %e, "expired items not moved; will retry");
                queue.unmoved(expired.moving);
                return expired.count;
            }
        };
        let mut moving = expired.moving;
        let failed = match write.ack {
            Some(ack) => ack.wait().await.is_err(),
            None => false,
        };
        let unmoved = if failed {
            write
                .queue
                .revoke(write.outcome.first_seq, write.outcome.accepted);
            moving.split_off(0)
        } else {
            moving.split_off(write.outcome.accepted)
        };
        wait_logged(queue.moved(&moving), "expiry move").await;
        if !unmoved.is_empty() {
            tracing::warn!(queue = %queue.name(), target, items = unmoved.len(), "expired items not moved; will retry");
            queue.unmoved(unmoved);
        }
        expired.count
    }

    /// The background sweep: expires items (at most `max_expire_sweep` per
    /// queue) and deletes queues left empty past their `max_queue_age`.
    pub async fn sweep(&self) {
        for (i, q) in self.all().into_iter().enumerate() {
            if i % SWEEP_BATCH == SWEEP_BATCH - 1 {
                // Thousands of queues take a while: let connections in.
                tokio::task::yield_now().await;
            }
            let config = q.config();
            self.expire(&q, config.max_expire_sweep).await;
            if let Some(age) = config.max_queue_age
                && q.delete_if_empty_and_older_than(age)
            {
                self.forget(&q);
                tracing::info!(queue = %q.name(), "empty queue older than max_queue_age deleted");
            }
        }
    }

    /// Removes `queue` and its journal. Returns whether it existed.
    pub fn delete(&self, queue: &str) -> bool {
        let deleted = self.remove(queue);
        if deleted {
            tracing::info!(queue, "queue deleted");
        }
        deleted
    }

    /// Removes `queue` and deletes it. Returns whether it existed. A queue
    /// refused as unavailable can be deleted too: its files go.
    fn remove(&self, queue: &str) -> bool {
        let mut queues = lock_err(self.queues.write());
        let Some(q) = queues.remove(queue) else {
            drop(queues);
            if lock_err(self.broken.write()).remove(queue).is_none() {
                return false;
            }
            self.dirs.discard(&self.dirs.path(queue));
            self.deletes.fetch_add(1, Ordering::Relaxed);
            return true;
        };
        self.deletes.fetch_add(1, Ordering::Relaxed);
        self.destroy(&q);
        true
    }

    /// Deletes `q`'s items and journal. Called under the write lock, so that
    /// its directory is out of the way before the name can be created again.
    fn destroy(&self, q: &Queue) {
        if q.delete() {
            q.with_files_still(|| self.dirs.discard(&self.dirs.path(q.name())));
        }
    }

    /// Drops `q`, deleted for its age, from the collection (unless a queue of
    /// the same name has replaced it meanwhile), counting it as deleted and
    /// expired in the same step, so stats never see one without the other.
    fn forget(&self, q: &Arc<Queue>) {
        let mut queues = lock_err(self.queues.write());
        if queues
            .get(q.name())
            .is_some_and(|held| Arc::ptr_eq(held, q))
        {
            queues.remove(q.name());
            q.with_files_still(|| self.dirs.discard(&self.dirs.path(q.name())));
            self.deletes.fetch_add(1, Ordering::Relaxed);
            self.expires.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Removes every ready item of `q` (see [`Queue::flush`]): a queue with
    /// nothing open starts a fresh journal in a fresh directory, so the
    /// flush frees its disk space at once and works on a full disk.
    pub fn flush(&self, q: &Queue) -> Option<Ack> {
        let config = self.queue_config(q.name()).journal();
        q.flush(|created_ms| {
            let config = config?;
            let sync = config.sync == SyncMode::Always;
            match self.dirs.replace(q.name(), sync) {
                Ok(dir) => Some(Journal::create(&dir, config, q.name(), &self.journals, created_ms)),
                Err(e) => {
                    crate::throttled!(warn, queue = %q.name(), error = %e, "cannot start a fresh journal; flush journaled instead");
                    None
                }
            }
        })
    }

    /// Every queue, sorted by name.
    pub fn all(&self) -> Vec<Arc<Queue>> {
        lock_err(self.queues.read()).values().cloned().collect()
    }

    pub fn lifecycle(&self) -> Lifecycle {
        Lifecycle {
            creates: self.creates.load(Ordering::Relaxed),
            deletes: self.deletes.load(Ordering::Relaxed),
            expires: self.expires.load(Ordering::Relaxed),
            rejected_creates: self.rejected_creates.load(Ordering::Relaxed),
            open_files: self.journals.files().open_count() as u64,
            fsyncs: crate::journal::disk::fsyncs(),
        }
    }
}
