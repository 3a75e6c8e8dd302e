//! Getting appended records onto disk: a pending buffer that appends fill
//! under the queue's lock, and a writer that empties it with one `write` per
//! segment touched and, when the queue's durability asks for it, one `fsync`
//! for everybody.
//!
//! Group commit without a thread: a task that needs its record on disk
//! becomes the writer if nobody is writing, and otherwise waits for the
//! writer's progress; the writer takes everything pending, so one write and
//! one fsync cover every connection that appended meanwhile.

use std::collections::{BTreeSet, VecDeque};
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use bytes::BytesMut;
use tokio::sync::watch;

use super::activity::{Journals, Unsynced};
use super::disk;
use super::files::Key;
use super::record::Record;
use super::segment;
use crate::config::SyncMode;

/// A write that failed: records in `(from, to]` (log positions) are not on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failure {
    pub from: u64,
    pub to: u64,
    pub message: Arc<str>,
}

/// How far the log has got, in bytes appended since the journal was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub written: u64,
    pub synced: u64,
    /// Recent failed ranges, oldest first. A waiter may look only after
    /// several more writes, so one slot is not enough: a later failure would
    /// hide an earlier one and a failed record would be acknowledged.
    pub failures: Vec<Failure>,
}

/// Failed ranges kept; past it the two oldest merge (a record between them
/// that was written may then be reported failed: safe, never the reverse).
const FAILURES_KEPT: usize = 16;

impl Progress {
    fn fail(&mut self, failure: Failure) {
        if self.failures.len() == FAILURES_KEPT {
            let oldest = self.failures.remove(0);
            self.failures[0].from = oldest.from;
        }
        self.failures.push(failure);
    }

    /// The failure covering the record that ends at `lsn`, if any.
    fn failure_at(&self, lsn: u64) -> Option<&Failure> {
        self.failures.iter().find(|f| f.from < lsn && lsn <= f.to)
    }
}

/// While writes are not shared, one wait in this many still yields first,
/// to find out whether they could be again.
const PROBE_EVERY: u32 = 16;

/// Counts a task in [`JournalIo::wait`] for as long as it is there.
struct Waiting<'a>(&'a AtomicU32);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicU32) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A journal write failed; the message says how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("journal write failed: {0}")]
pub struct WriteError(pub Arc<str>);

struct Chunk {
    segment: u64,
    bytes: BytesMut,
    /// Log position at the end of the chunk.
    end: u64,
}

#[derive(Default)]
struct Pending {
    chunks: VecDeque<Chunk>,
    appended: u64,
    /// Buffers of chunks already written, cleared, for the next chunks: a
    /// batch then encodes its records into memory that is already there
    /// instead of allocating and growing a buffer per batch.
    spare: Vec<BytesMut>,
}

/// Written chunks' buffers kept for reuse, and the largest kept (a burst's
/// big buffer is freed, not held by an idle queue).
const SPARE_CHUNKS: usize = 2;
const SPARE_CHUNK_BYTES: usize = 64 * 1024;

/// The segment being appended to, and its length.
struct Current {
    segment: u64,
    len: u64,
}

#[derive(Default)]
struct Writer {
    current: Option<Current>,
    /// Segments written since their last fsync.
    unsynced: BTreeSet<u64>,
    progress: Progress,
    last_sync: Option<Instant>,
}

/// The I/O side of one queue's journal, shared by the queue (which appends),
/// the tasks waiting for acknowledgements, and the background syncer.
pub struct JournalIo {
    dir: PathBuf,
    /// Where the segment files are held open (this journal's id there), and
    /// the syncer's list.
    journals: Arc<Journals>,
    id: u64,
    me: Weak<JournalIo>,
    /// On the syncer's list (so listed once).
    listed: AtomicBool,
    sync: SyncMode,
    pending: Mutex<Pending>,
    writer: Mutex<Writer>,
    progress: watch::Sender<Progress>,
    /// `progress`'s positions and whether it ever recorded a failure,
    /// mirrored for the waiters' common case (see `settled`).
    written_to: AtomicU64,
    synced_to: AtomicU64,
    failed_once: AtomicBool,
    /// Tasks in [`JournalIo::wait`] now, whether the last write they did
    /// was shared by several, and how many waits there were (see `wait`).
    waiting: AtomicU32,
    shared: AtomicBool,
    waits: AtomicU32,
    closed: AtomicBool,
    failures: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl JournalIo {
    pub fn new(dir: PathBuf, sync: SyncMode, journals: Arc<Journals>, id: u64) -> Arc<JournalIo> {
        Arc::new_cyclic(|me| JournalIo {
            dir,
            journals,
            id,
            me: me.clone(),
            listed: AtomicBool::new(false),
            sync,
            pending: Mutex::new(Pending::default()),
            writer: Mutex::new(Writer::default()),
            progress: watch::Sender::new(Progress::default()),
            written_to: AtomicU64::new(0),
            synced_to: AtomicU64::new(0),
            failed_once: AtomicBool::new(false),
            waiting: AtomicU32::new(0),
            shared: AtomicBool::new(true),
            waits: AtomicU32::new(0),
            closed: AtomicBool::new(false),
            failures: AtomicU64::new(0),
        })
    }

    pub fn sync_mode(&self) -> SyncMode {
        self.sync
    }

    /// Encodes `record` into the pending buffer of `segment`; returns its
    /// length and the log position at its end.
    pub fn push(&self, segment: u64, record: &Record) -> (u64, u64) {
        let mut p = lock(&self.pending);
        let end = p.appended;
        if p.chunks.back().is_none_or(|c| c.segment != segment) {
            let bytes = p.spare.pop().unwrap_or_default();
            p.chunks.push_back(Chunk {
                segment,
                bytes,
                end,
            });
        }
        let chunk = p.chunks.back_mut().expect("just ensured");
        let len = record.encode(&mut chunk.bytes) as u64;
        chunk.end += len;
        p.appended += len;
        let end = p.appended;
        drop(p);
        self.list();
        (len, end)
    }

    /// Puts the journal on the syncer's list, unless it is there already.
    fn list(&self) {
        if !self.listed.load(Ordering::Acquire)
            && !self.listed.swap(true, Ordering::AcqRel)
            && let Some(me) = self.me.upgrade()
        {
            self.journals.list_unsynced(me);
        }
    }

    /// How many writes have failed since the journal was opened.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Acquire)
    }

    pub fn has_pending(&self) -> bool {
        !lock(&self.pending).chunks.is_empty()
    }

    /// Stops all I/O (the queue was deleted); pending records are dropped
    /// and counted as done, so that nobody waits for them.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let appended = {
            let mut p = lock(&self.pending);
            p.chunks.clear();
            p.appended
        };
        let mut w = lock(&self.writer);
        w.current = None;
        w.unsynced.clear();
        self.journals.files().forget_journal(self.id);
        w.progress.written = w.progress.written.max(appended);
        w.progress.synced = w.progress.synced.max(appended);
        self.publish(w);
    }

    fn key(&self, segment: u64) -> Key {
        Key {
            journal: self.id,
            segment,
        }
    }

    /// The file of `segment`, which becomes the one appended to.
    fn file(&self, w: &mut Writer, segment: u64) -> io::Result<Arc<File>> {
        let path = || segment::path(&self.dir, segment);
        let (file, created) = self.journals.files().open(self.key(segment), path, true)?;
        if created && self.sync == SyncMode::Always {
            disk::sync_dir(&self.dir)?;
        }
        if w.current.as_ref().is_none_or(|c| c.segment != segment) {
            let len = file.metadata()?.len();
            if let Some(old) = w.current.replace(Current { segment, len }) {
                // Kept for the next fsync, which a checkpoint makes in every
                // mode: a checkpoint must never claim more than the disk holds.
                w.unsynced.insert(old.segment);
            }
        }
        Ok(file)
    }

    /// Writes everything pending. Runs as the writer (holding its lock).
    fn write_pending(&self, w: &mut Writer) {
        let mut chunks = std::mem::take(&mut lock(&self.pending).chunks);
        if self.closed.load(Ordering::Acquire) {
            if let Some(last) = chunks.back() {
                w.progress.written = last.end;
                w.progress.synced = last.end;
            }
            return;
        }
        self.write_chunks(w, &chunks);
        // Hand the buffers (and the list) back for the next batch.
        let mut p = lock(&self.pending);
        for chunk in chunks.drain(..) {
            let mut bytes = chunk.bytes;
            if p.spare.len() < SPARE_CHUNKS && bytes.capacity() <= SPARE_CHUNK_BYTES {
                bytes.clear();
                p.spare.push(bytes);
            }
        }
        if p.chunks.is_empty() && p.chunks.capacity() == 0 {
            p.chunks = chunks;
        }
    }

    /// Writes `chunks` in order; a failure drops the rest of the batch.
    fn write_chunks(&self, w: &mut Writer, chunks: &VecDeque<Chunk>) {
        let mut failed: Option<(u64, String)> = None;
        for chunk in chunks {
            if failed.is_some() {
                // Later chunks of a failed batch are dropped with it.
                w.progress.written = chunk.end;
                continue;
            }
            let start = w.progress.written;
            let result = self.file(w, chunk.segment).and_then(|file| {
                let current = w.current.as_mut().expect("set by file()");
                match disk::append(&file, &self.dir, &chunk.bytes) {
                    Ok(()) => {
                        current.len += chunk.bytes.len() as u64;
                        Ok(())
                    }
                    Err(e) => {
                        // Cut a partial write off so the file ends with whole records.
                        disk::cut(&file, current.len);
                        Err(e)
                    }
                }
            });
            if let Err(e) = result {
                crate::throttled!(error, dir = %self.dir.display(), error = %e, "journal write failed; records not stored");
                failed = Some((start, e.to_string()));
            }
            w.progress.written = chunk.end;
        }
        if let Some((from, message)) = failed {
            let to = w.progress.written;
            w.progress.fail(Failure {
                from,
                to,
                message: message.into(),
            });
            self.failures.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// fsyncs every file written since the last fsync.
    fn sync_files(&self, w: &mut Writer) {
        let target = w.progress.written;
        let mut result = Ok(());
        let current = w.current.as_ref().map(|c| c.segment);
        for segment in std::mem::take(&mut w.unsynced).into_iter().chain(current) {
            let path = segment::path(&self.dir, segment);
            result = result.and(
                match self
                    .journals
                    .files()
                    .open(self.key(segment), || &path, false)
                {
                    Ok((file, _)) => disk::sync_data(&file, &path),
                    // Nothing was ever written to it.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(e),
                },
            );
        }
        match result {
            Ok(()) => w.progress.synced = target,
            Err(e) => {
                crate::throttled!(error, dir = %self.dir.display(), error = %e, "journal fsync failed");
                let from = w.progress.synced;
                w.progress.fail(Failure {
                    from,
                    to: target,
                    message: e.to_string().into(),
                });
                w.progress.synced = target;
            }
        }
        w.last_sync = Some(Instant::now());
    }

    fn publish(&self, w: MutexGuard<'_, Writer>) {
        let progress = w.progress.clone();
        // Release the writer before telling waiters, so a waiter that finds
        // its record still unwritten can become the writer.
        drop(w);
        // The failure flag first: a waiter that sees the new positions sees
        // it too (see `settled`). fetch_max: two publishers may finish out of
        // order, and the positions only ever grow.
        if !progress.failures.is_empty() {
            self.failed_once.store(true, Ordering::Release);
        }
        self.synced_to.fetch_max(progress.synced, Ordering::AcqRel);
        self.written_to
            .fetch_max(progress.written, Ordering::AcqRel);
        self.progress.send_replace(progress);
    }

    /// Whether the record ending at `lsn` is durable as the sync mode
    /// requires (`Some(Ok)`), failed (`Some(Err)`), or not yet (`None`).
    /// While no write ever failed this is two atomic loads, not the watch.
    fn settled(&self, lsn: u64) -> Option<Result<(), WriteError>> {
        let reached = match self.sync {
            SyncMode::Always => &self.synced_to,
            _ => &self.written_to,
        };
        // Positions before the flag: publish sets the flag before it moves them.
        let reached = reached.load(Ordering::Acquire);
        if !self.failed_once.load(Ordering::Acquire) {
            return (reached >= lsn).then_some(Ok(()));
        }
        let p = self.progress.borrow();
        if let Some(f) = p.failure_at(lsn) {
            return Some(Err(WriteError(f.message.clone())));
        }
        let done = match self.sync {
            SyncMode::Always => p.synced >= lsn,
            _ => p.written >= lsn,
        };
        done.then_some(Ok(()))
    }

    /// Waits until the record ending at `lsn` is durable as the sync mode
    /// requires, writing (and fsyncing) it ourselves if nobody else is.
    pub async fn wait(&self, lsn: u64) -> Result<(), WriteError> {
        let _waiting = Waiting::enter(&self.waiting);
        // Before writing, let the other tasks that are ready to run append
        // their records too: one write then covers all of them. Worth it
        // only while writes are shared: alone (one connection), the yield
        // costs a pass of the event loop per request and saves nothing, so
        // then only every [`PROBE_EVERY`]th wait yields, to notice company.
        let probe = self
            .waits
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(PROBE_EVERY);
        let mut yielded = !(probe || self.shared.load(Ordering::Relaxed));
        loop {
            if let Some(done) = self.settled(lsn) {
                return done;
            }
            if !yielded {
                yielded = true;
                tokio::task::yield_now().await;
                continue;
            }
            if self.closed.load(Ordering::Acquire) {
                // The queue is gone, and its records with it.
                return Ok(());
            }
            if let Ok(mut w) = self.writer.try_lock() {
                let pending = lock(&self.pending)
                    .appended
                    .saturating_sub(w.progress.written);
                let long = pending >= crate::offload::LONG_BYTES as u64;
                crate::offload::long_if(long, || self.write_pending(&mut w));
                if self.sync == SyncMode::Always && w.progress.synced < w.progress.written {
                    crate::offload::long(|| self.sync_files(&mut w));
                }
                // Others waited with us: this write served more than one.
                let company = self.waiting.load(Ordering::Relaxed) > 1;
                self.shared.store(company, Ordering::Relaxed);
                self.publish(w);
                continue;
            }
            // Another task is writing: wait for its progress. Subscribed
            // before looking again, so a publish in between is not missed.
            let mut rx = self.progress.subscribe();
            if let Some(done) = self.settled(lsn) {
                return done;
            }
            if rx.changed().await.is_err() {
                return Ok(());
            }
        }
    }

    /// Writes and fsyncs everything appended so far (blocking).
    pub fn sync_now(&self) -> Result<(), WriteError> {
        let target = lock(&self.pending).appended;
        let mut w = lock(&self.writer);
        self.write_pending(&mut w);
        self.sync_files(&mut w);
        let failed = w.progress.failure_at(target).cloned();
        self.publish(w);
        match failed {
            Some(f) => Err(WriteError(f.message)),
            None => Ok(()),
        }
    }

    /// Writes everything pending (blocking), without fsync: used before
    /// reading back records that may still be pending.
    pub fn write_now(&self) {
        let mut w = lock(&self.writer);
        self.write_pending(&mut w);
        self.publish(w);
    }

    /// Background duty: write what nobody waited for, and fsync when the
    /// interval has passed. Never blocks on a busy writer. Returns whether
    /// anything is left to fsync later.
    fn tick(&self) -> bool {
        let Ok(mut w) = self.writer.try_lock() else {
            return true;
        };
        if self.has_pending() {
            self.write_pending(&mut w);
        }
        let mut dirty = false;
        if let SyncMode::Every(interval) = self.sync {
            dirty = w.progress.synced < w.progress.written;
            let due = w.last_sync.is_none_or(|at| at.elapsed() >= interval);
            if due && dirty {
                self.sync_files(&mut w);
                dirty = false;
            }
        }
        self.publish(w);
        dirty
    }
}

impl Unsynced for JournalIo {
    /// The syncer's visit to a listed journal: takes it off the list first,
    /// so that a record appended meanwhile lists it again, and puts it back
    /// if something is left to fsync. Returns whether it was put back.
    fn tick_listed(&self) -> bool {
        self.listed.store(false, Ordering::Release);
        let dirty = self.tick();
        if dirty {
            self.list();
        }
        dirty
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    fn add(seq: u64) -> Record {
        Record::Add {
            seq,
            added_ms: 0,
            expires_ms: None,
            data: Bytes::from_static(b"data"),
        }
    }

    #[tokio::test]
    async fn waiting_writes_and_everyone_pending_is_written_together() {
        let dir = tempfile::tempdir().unwrap();
        let io = JournalIo::new(
            dir.path().to_path_buf(),
            SyncMode::Always,
            Journals::new(4),
            1,
        );
        let (_, a) = io.push(1, &add(1));
        let (_, b) = io.push(1, &add(2));
        let (_, c) = io.push(2, &add(3));
        io.wait(a).await.unwrap();
        // One writer took everything, across both segments.
        assert!(!io.has_pending());
        io.wait(c).await.unwrap();
        let p = io.progress.borrow().clone();
        assert_eq!((p.written, p.synced), (c, c));
        assert!(b < c);
        let one = std::fs::read(segment::path(dir.path(), 1)).unwrap();
        let two = std::fs::read(segment::path(dir.path(), 2)).unwrap();
        assert_eq!((one.len() as u64, two.len() as u64), (b, c - b));
    }

    #[tokio::test]
    async fn a_failed_write_is_reported_to_its_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let io = JournalIo::new(
            dir.path().join("missing"),
            SyncMode::Never,
            Journals::new(4),
            1,
        );
        let (_, lsn) = io.push(1, &add(1));
        let err = io.wait(lsn).await.unwrap_err();
        assert!(err.to_string().contains("journal write failed"), "{err}");
    }

    #[tokio::test]
    async fn a_failure_is_not_hidden_by_a_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let io = JournalIo::new(
            dir.path().join("missing"),
            SyncMode::Never,
            Journals::new(4),
            1,
        );
        let (_, first) = io.push(1, &add(1));
        io.write_now();
        let (_, second) = io.push(1, &add(2));
        io.write_now();
        // The first waiter looks only now, after both writes failed.
        assert!(io.wait(first).await.is_err());
        assert!(io.wait(second).await.is_err());
    }

    #[tokio::test]
    async fn closing_releases_waiters_of_records_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let io = JournalIo::new(
            dir.path().to_path_buf(),
            SyncMode::Never,
            Journals::new(4),
            1,
        );
        let (_, lsn) = io.push(1, &add(1));
        io.close();
        let waited = tokio::time::timeout(Duration::from_secs(10), io.wait(lsn)).await;
        assert_eq!(waited, Ok(Ok(())));
    }
}
