//! Every queue of the server, by name, and where their journals live.
//!
//! Journals sit under `<data_dir>/queues/`, one directory per queue. The
//! directory name is the queue name with every byte outside `[a-z0-9_-]`
//! written as `%XX` (so names differ on case-insensitive file systems too),
//! shortened with a hash when too long; a `NAME` file inside holds the real
//! name.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::Bytes;

use super::fifo::{PutOutcome, Queue, XidSource};
use super::item::now_ms;
use super::name::{self, NameError};
use crate::config::{QueueConfig, QueuesConfig};
use crate::journal::{Ack, Journal};

/// Queue lifecycle counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lifecycle {
    pub creates: u64,
    pub deletes: u64,
    /// Queues deleted for staying empty past their `max_queue_age`.
    pub expires: u64,
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
    pub placed: Vec<Placed>,
}

/// Waits for an acknowledgement whose failure only needs logging.
async fn wait_logged(ack: Option<Ack>, what: &str) {
    if let Some(ack) = ack
        && let Err(e) = ack.wait().await
    {
        tracing::warn!(error = %e, "{what} not journaled");
    }
}

/// Why a queue could not be used.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("invalid queue name: {0}")]
    BadName(#[from] NameError),
    #[error("queue {name} is unavailable: {reason}")]
    Unavailable { name: String, reason: String },
}

/// The named queues, created on first use.
pub struct QueueCollection {
    /// `<data_dir>/queues`, where journals live.
    dir: PathBuf,
    /// By name; a fanout parent's children are the range `"p+".."p,"`.
    queues: RwLock<BTreeMap<Arc<str>, Arc<Queue>>>,
    /// Queues whose journal exists but could not be opened: refused until an
    /// operator repairs them, never overwritten.
    broken: RwLock<HashMap<Arc<str>, String>>,
    xids: Arc<XidSource>,
    config: RwLock<Arc<QueuesConfig>>,
    creates: AtomicU64,
    deletes: AtomicU64,
    expires: AtomicU64,
    /// Journals ring this when they want maintenance now.
    maintenance: Arc<tokio::sync::Notify>,
}

/// The directory name for `queue`'s journal.
pub fn dir_name(queue: &str) -> String {
    let mut out = String::new();
    for b in queue.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    if out.len() > 200 {
        // FNV-1a: any stable hash keeps long names apart; NAME holds the truth.
        let hash = queue.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let mut cut = 160;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        let _ = write!(out, "~{hash:016x}");
    }
    out
}

fn lock_err<T>(r: Result<T, std::sync::PoisonError<T>>) -> T {
    r.unwrap_or_else(|e| e.into_inner())
}

impl QueueCollection {
    /// Opens the queues journaled under `data_dir`, recovering each; a queue
    /// whose journal cannot be opened is logged and refused, and does not stop
    /// the others.
    pub fn open(data_dir: &Path, config: QueuesConfig) -> io::Result<Self> {
        let dir = data_dir.join("queues");
        fs::create_dir_all(&dir).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
        })?;
        let collection = QueueCollection {
            dir,
            queues: RwLock::new(BTreeMap::new()),
            broken: RwLock::new(HashMap::new()),
            xids: Arc::new(XidSource::new()),
            config: RwLock::new(Arc::new(config)),
            creates: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            expires: AtomicU64::new(0),
            maintenance: Arc::new(tokio::sync::Notify::new()),
        };
        collection.recover_all()?;
        Ok(collection)
    }

    fn recover_all(&self) -> io::Result<()> {
        let started = Instant::now();
        let (mut queues, mut items) = (0u64, 0u64);
        let mut entries: Vec<PathBuf> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        entries.sort();
        for path in entries {
            let name = match fs::read_to_string(path.join("NAME")) {
                Ok(name) => name,
                Err(e) => {
                    tracing::warn!(dir = %path.display(), error = %e, "journal directory without a readable NAME; skipped");
                    continue;
                }
            };
            if let Err(e) = name::validate(&name) {
                tracing::warn!(dir = %path.display(), error = %e, "journal directory with a bad queue name; skipped");
                continue;
            }
            let name: Arc<str> = Arc::from(name.as_str());
            let config = self.queue_config(&name);
            let Some(journal_config) = config.journal() else {
                tracing::info!(queue = %name, "queue is memory-only now: removing its journal");
                fs::remove_dir_all(&path)?;
                continue;
            };
            match Journal::recover(&path, journal_config, &name) {
                Ok((mut journal, recovery)) => {
                    journal.set_waker(self.maintenance.clone());
                    if recovery.rolled_back > 0 {
                        tracing::info!(queue = %name, items = recovery.rolled_back, "open transactions rolled back");
                    }
                    queues += 1;
                    items += recovery.items;
                    let queue = Queue::new(
                        name.clone(),
                        config,
                        self.xids.clone(),
                        Some(journal),
                        Some(recovery),
                    );
                    lock_err(self.queues.write()).insert(name, Arc::new(queue));
                }
                Err(e) => {
                    tracing::error!(queue = %name, dir = %path.display(), error = %e, "journal could not be recovered; queue unavailable until repaired");
                    lock_err(self.broken.write()).insert(name, e.to_string());
                }
            }
        }
        tracing::info!(queues, items, elapsed = ?started.elapsed(), "journals recovered");
        Ok(())
    }

    /// Rung when a journal wants maintenance before the next periodic pass.
    pub fn maintenance_wanted(&self) -> Arc<tokio::sync::Notify> {
        self.maintenance.clone()
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
        let config = self.queue_config(queue);
        let journal = match config.journal() {
            Some(journal_config) => {
                Some(self.create_journal(queue, journal_config).map_err(|e| {
                    tracing::error!(queue, error = %e, "cannot create the queue's journal");
                    QueueError::Unavailable {
                        name: queue.into(),
                        reason: format!("cannot create its journal: {e}"),
                    }
                })?)
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
        queues.insert(name, q.clone());
        self.creates.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(queue, "queue created");
        Ok(q)
    }

    fn create_journal(
        &self,
        queue: &str,
        config: crate::journal::JournalConfig,
    ) -> io::Result<Journal> {
        let dir = self.dir.join(dir_name(queue));
        fs::create_dir_all(&dir)?;
        match fs::read_to_string(dir.join("NAME")) {
            Ok(existing) if existing != queue => {
                return Err(io::Error::other(format!(
                    "{} belongs to queue {existing:?}",
                    dir.display()
                )));
            }
            Ok(_) => {
                // Left behind by a deletion that did not finish: start afresh.
                for entry in fs::read_dir(&dir)? {
                    let path = entry?.path();
                    if path.file_name().is_some_and(|n| n != "NAME") {
                        fs::remove_file(path)?;
                    }
                }
            }
            Err(_) => {
                let tmp = dir.join("NAME.tmp");
                fs::write(&tmp, queue)?;
                fs::File::open(&tmp)?.sync_all()?;
                fs::rename(&tmp, dir.join("NAME"))?;
            }
        }
        let mut journal = Journal::create(&dir, config, now_ms())?;
        journal.set_waker(self.maintenance.clone());
        Ok(journal)
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
            placed: Vec::new(),
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
            placed: Vec::new(),
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

    /// Whether `name` is an alias (aliases mask queues of the same name).
    pub fn is_alias(&self, name: &str) -> bool {
        lock_err(self.config.read()).aliases.contains_key(name)
    }

    /// The fanout children of `parent` (`parent+…`).
    pub fn children(&self, parent: &str) -> Vec<Arc<Queue>> {
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
        for q in self.all() {
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

    /// Removes `queue` and deletes it. Returns whether it existed.
    fn remove(&self, queue: &str) -> bool {
        let mut queues = lock_err(self.queues.write());
        let Some(q) = queues.remove(queue) else {
            return false;
        };
        self.deletes.fetch_add(1, Ordering::Relaxed);
        drop(queues);
        q.delete();
        true
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
            self.deletes.fetch_add(1, Ordering::Relaxed);
            self.expires.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Memory every queue's items take.
    pub fn memory_bytes(&self) -> u64 {
        self.all().iter().map(|q| q.memory_bytes()).sum()
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_names_are_safe_and_distinct() {
        assert_eq!(dir_name("jobs-1_x"), "jobs-1_x");
        assert_eq!(dir_name("Jobs"), "%4Aobs");
        assert_eq!(dir_name("a+b"), "a%2Bb");
        assert_eq!(dir_name("é"), "%C3%A9");
        let long_a = "A".repeat(255);
        let long_b = format!("{}B", "A".repeat(254));
        assert!(dir_name(&long_a).len() <= 200 && dir_name(&long_a) != dir_name(&long_b));
    }
}
