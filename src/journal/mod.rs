//! The journal: one queue's items on disk, so that every acknowledged item
//! survives a crash and a restart.
//!
//! On disk, a queue's directory holds numbered segment files of records (see
//! [`record`]) and two checkpoints (see [`checkpoint`]):
//!
//! - every change to the queue appends a record naming the item by its
//!   sequence number: ADD, REMOVE, OPEN, ABORT, FLUSH. Records are CRC32C'd, so
//!   a torn or damaged record is recognised, never read as data;
//! - a checkpoint copies the journal's view of the queue (which items are
//!   live and where their data is) at a point of the log, so a restart replays
//!   only the records after it, however deep the queue;
//! - items beyond the queue's memory budget stay on disk and are read back in
//!   order as the head drains ([`Journal::read_items`]);
//! - segments that hold no live item are deleted, and a segment whose live
//!   data fell under half its size is rewritten with just that data
//!   ([`Journal::reclaim_job`]), so the journal stays a small multiple of the
//!   live data whatever the history, open transactions included.
//!
//! The journal knows records, not queue policy: the queue engine decides what
//! happens and tells the journal, under the queue's lock.

mod activity;
#[doc(hidden)] // public for the fuzz targets only
pub mod checkpoint;
pub mod disk;
mod files;
mod io;
#[doc(hidden)] // public for the fuzz targets only
pub mod record;
mod runs;
mod segment;
mod state;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::config::JournalConfig;

pub use activity::Journals;
pub use io::{JournalIo, WriteError};
pub use record::Record;

use checkpoint::{Checkpoint, Position};
use files::Files;
use segment::{Next, Reader};
use state::LogState;

/// A checkpoint is due after this many segments' worth of log (so replay at
/// restart reads at most about that much, and reclamation trails the head by
/// about twice that)...
const CHECKPOINT_SEGMENTS: u64 = 2;
/// ...or this long after the last one, if anything was appended since, or if
/// the older checkpoint still lags the newer (so that, once a queue goes quiet,
/// both checkpoints catch up and every consumed segment can go).
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);
/// Recovery logs its progress every this many bytes replayed.
const PROGRESS_EVERY: u64 = 64 * 1024 * 1024;

/// An item as the journal stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredItem {
    pub seq: u64,
    pub added_ms: i64,
    pub expires_ms: Option<i64>,
    pub data: Bytes,
}

impl From<StoredItem> for Record {
    fn from(i: StoredItem) -> Record {
        Record::Add {
            seq: i.seq,
            added_ms: i.added_ms,
            expires_ms: i.expires_ms,
            data: i.data,
        }
    }
}

impl TryFrom<Record> for StoredItem {
    type Error = Record;

    fn try_from(r: Record) -> Result<StoredItem, Record> {
        match r {
            Record::Add {
                seq,
                added_ms,
                expires_ms,
                data,
            } => Ok(StoredItem {
                seq,
                added_ms,
                expires_ms,
                data,
            }),
            other => Err(other),
        }
    }
}

/// Items read back from disk.
#[derive(Debug, Default)]
pub struct ReadBatch {
    pub items: Vec<StoredItem>,
    /// Live items whose data could not be found (a damaged segment).
    pub lost: u64,
}

/// The queue as recovered from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub next_seq: u64,
    /// Live items (open ones rolled back into them) and their payload bytes.
    pub items: u64,
    pub bytes: u64,
    /// The lowest live sequence number.
    pub first_live: Option<u64>,
    pub created_ms: i64,
    /// Open transactions rolled back.
    pub rolled_back: u64,
}

/// A pending acknowledgement: resolves once the record is as durable as the
/// queue's sync mode requires.
#[derive(Clone)]
pub struct Ack {
    io: Arc<JournalIo>,
    lsn: u64,
}

impl Ack {
    pub async fn wait(self) -> Result<(), WriteError> {
        self.io.wait(self.lsn).await
    }
}

/// Where read-behind stopped: a reader, the sequence number after the last
/// ADD it read, and an item read but not taken (it did not fit the budget).
struct Cursor {
    reader: Reader,
    after: u64,
    held: Option<StoredItem>,
}

#[derive(Debug, Clone, Copy)]
struct Mark {
    generation: u64,
    replay_from: Position,
}

/// One queue's journal. Owned by the queue and used under its lock.
pub struct Journal {
    dir: PathBuf,
    /// The queue's name, kept in every checkpoint.
    name: Arc<str>,
    journals: Arc<Journals>,
    /// This journal's id among the open files.
    id: u64,
    config: JournalConfig,
    state: LogState,
    io: Arc<JournalIo>,
    /// The segment receiving appends.
    active: u64,
    /// The durable checkpoints, newest first (at most two).
    marks: Vec<Mark>,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// Read-behind position.
    cursor: Option<Cursor>,
    /// Number of write failures seen, to move to a fresh segment after one.
    failures_seen: u64,
    /// On the maintenance task's list (so listed once).
    restless: bool,
    /// Segments replayed at recovery and not yet fsynced: the first
    /// checkpoint relies on them, so it fsyncs them first.
    replayed: Vec<u64>,
}

/// A checkpoint to write, built under the queue's lock and written outside it.
pub struct CheckpointJob {
    dir: PathBuf,
    io: Arc<JournalIo>,
    checkpoint: Checkpoint,
    /// Segments written before this run of the server, to fsync first.
    replayed: Vec<u64>,
}

impl CheckpointJob {
    /// Makes the log durable up to the checkpoint, then stores it (blocking).
    pub fn run(&self) -> std::io::Result<()> {
        for &id in &self.replayed {
            let path = segment::path(&self.dir, id);
            match fs::File::open(&path) {
                Ok(f) => disk::sync_data(&f, &path)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.io.sync_now().map_err(std::io::Error::other)?;
        checkpoint::store(&self.dir, &self.checkpoint)
    }
}

/// Segment reclamation to do outside the queue's lock.
pub struct ReclaimJob {
    dir: PathBuf,
    files: Arc<Files>,
    journal: u64,
    id: u64,
    work: Reclaim,
}

enum Reclaim {
    /// A segment with no live item left.
    Delete,
    /// A segment mostly consumed: keep only its live ADDs.
    Rewrite { live: runs::Runs },
}

/// What a reclamation did: the segment's new size and ADD range, or `None`
/// when it is gone.
pub struct Reclaimed {
    id: u64,
    kept: Option<(u64, Option<(u64, u64)>)>,
}

impl ReclaimJob {
    /// Does the I/O (blocking).
    pub fn run(self) -> std::io::Result<Reclaimed> {
        let done = match &self.work {
            Reclaim::Delete => {
                disk::remove(&segment::path(&self.dir, self.id))?;
                Reclaimed {
                    id: self.id,
                    kept: None,
                }
            }
            Reclaim::Rewrite { live } => self.rewrite(live)?,
        };
        // The old file is gone: whoever opens the segment next gets the new one.
        self.files.forget(files::Key {
            journal: self.journal,
            segment: self.id,
        });
        Ok(done)
    }

    /// Rewrites the segment with only the ADDs of `live` items, atomically.
    fn rewrite(&self, live: &runs::Runs) -> std::io::Result<Reclaimed> {
        rewrite(&self.files, self.journal, &self.dir, self.id, live)
    }
}

/// Rewrites segment `id` with only the ADDs of `live` items, atomically.
fn rewrite(
    files: &Arc<Files>,
    journal: u64,
    dir: &Path,
    id: u64,
    live: &runs::Runs,
) -> std::io::Result<Reclaimed> {
    let mut reader = Reader::open(files, journal, dir, id, 0)?;
    let mut out = BytesMut::new();
    let mut adds: Option<(u64, u64)> = None;
    loop {
        match reader.next()? {
            Next::Record {
                record: record @ Record::Add { .. },
                ..
            } if live.contains(record.seq()) => {
                let seq = record.seq();
                adds = Some(adds.map_or((seq, seq), |(first, _)| (first, seq)));
                record.encode(&mut out);
            }
            Next::Record { .. } | Next::Skipped(_) => {}
            Next::End { .. } => break,
        }
    }
    let tmp = dir.join(format!("{id:016x}.rewrite"));
    disk::replace(dir, &tmp, &segment::path(dir, id), &out)?;
    Ok(Reclaimed {
        id,
        kept: Some((out.len() as u64, adds)),
    })
}

impl Journal {
    /// Starts an empty journal for queue `name` in `dir`, which must exist.
    /// Nothing is written until the first record: an empty directory is an
    /// empty queue.
    pub fn create(
        dir: &Path,
        config: JournalConfig,
        name: &str,
        journals: &Arc<Journals>,
        created_ms: i64,
    ) -> Journal {
        Journal::new(
            dir,
            config,
            name,
            journals,
            LogState::new(created_ms),
            1,
            Vec::new(),
        )
    }

    fn new(
        dir: &Path,
        config: JournalConfig,
        name: &str,
        journals: &Arc<Journals>,
        state: LogState,
        active: u64,
        marks: Vec<Mark>,
    ) -> Journal {
        let id = journals.files().journal_id();
        Journal {
            dir: dir.to_path_buf(),
            name: Arc::from(name),
            journals: journals.clone(),
            id,
            config,
            state,
            io: JournalIo::new(dir.to_path_buf(), config.sync, journals.clone(), id),
            active,
            marks,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            cursor: None,
            failures_seen: 0,
            restless: false,
            replayed: Vec::new(),
        }
    }

    /// Opens the journal of queue `name` in `dir`: loads the newest valid
    /// checkpoint, replays the log after it (cutting a torn or damaged tail
    /// off) and rolls back open transactions. Writes nothing unless a tail
    /// must be cut: after a clean stop, opening costs a few small reads.
    pub fn recover(
        dir: &Path,
        config: JournalConfig,
        name: &str,
        journals: &Arc<Journals>,
    ) -> std::io::Result<(Journal, Recovery)> {
        let listing = segment::list_dir(dir)?;
        let checkpoints = checkpoint::load(dir, &listing.checkpoints);
        let on_disk = listing.segments;
        let (mut state, replay_from) = match checkpoints.first() {
            Some(c) => (LogState::from_checkpoint(c), c.replay_from),
            None => {
                if !on_disk.is_empty() && !listing.checkpoints.is_empty() {
                    tracing::warn!(queue = name, "no valid checkpoint: replaying every segment");
                }
                let first = on_disk.first().copied().unwrap_or(1);
                (
                    LogState::new(crate::clock::now_ms()),
                    Position {
                        segment: first,
                        offset: 0,
                    },
                )
            }
        };
        let marks: Vec<Mark> = checkpoints
            .iter()
            .map(|c| Mark {
                generation: c.generation,
                replay_from: c.replay_from,
            })
            .collect();
        let gone: Vec<u64> = state
            .segments
            .keys()
            .copied()
            .filter(|id| on_disk.binary_search(id).is_err())
            .collect();
        for id in gone {
            state.segment_rewritten(id, None);
        }

        let started = Instant::now();
        let mut replayed = 0u64;
        let mut next_report = PROGRESS_EVERY;
        let mut total = None;
        let files = journals.files();
        let journal = files.journal_id();
        let mut touched = Vec::new();
        for &id in on_disk.iter().filter(|&&id| id >= replay_from.segment) {
            let offset = if id == replay_from.segment {
                replay_from.offset
            } else {
                0
            };
            state.segments.entry(id).or_default().size = offset;
            let mut reader = Reader::open(files, journal, dir, id, offset)?;
            if reader.at_end() {
                continue;
            }
            touched.push(id);
            loop {
                match reader.next()? {
                    Next::Record { record, len } => {
                        state.apply(&record, id, len);
                        replayed += len;
                        if replayed >= next_report {
                            next_report += PROGRESS_EVERY;
                            let total = *total
                                .get_or_insert_with(|| replay_size(dir, &on_disk, replay_from));
                            tracing::info!(
                                queue = name,
                                "replaying journal: {} of {} MiB",
                                replayed >> 20,
                                total >> 20
                            );
                        }
                    }
                    Next::Skipped(d) => warn_skipped(dir, id, &d),
                    Next::End { valid_len, damage } => {
                        if damage.is_some() {
                            // A damaged length field reads like a torn tail:
                            // look for intact records after it before cutting.
                            if let Next::Skipped(d) = reader.resync()? {
                                warn_skipped(dir, id, &d);
                                continue;
                            }
                        }
                        // What the file holds, skipped damage included: new
                        // records go after it.
                        state.segments.entry(id).or_default().size = valid_len;
                        if let Some(d) = damage {
                            tracing::warn!(
                                queue = name,
                                segment = id,
                                offset = d.offset,
                                bytes = d.len,
                                "torn or damaged journal tail truncated at the last good record"
                            );
                            disk::truncate(&segment::path(dir, id), valid_len)?;
                        }
                        break;
                    }
                }
            }
        }
        if replayed > PROGRESS_EVERY {
            tracing::info!(queue = name, mib = replayed >> 20, elapsed = ?started.elapsed(), "journal replayed");
        }
        files.forget_journal(journal);
        let active = on_disk
            .last()
            .copied()
            .unwrap_or(replay_from.segment)
            .max(replay_from.segment);
        let rolled_back = state.open.len() as u64;
        state.open.clear();
        let recovery = Recovery {
            next_seq: state.next_seq,
            items: state.live.len(),
            bytes: state.live_bytes,
            first_live: state.live.first(),
            created_ms: state.created_ms,
            rolled_back,
        };
        let mut journal = Journal::new(dir, config, name, journals, state, active, marks);
        // Replayed records (and rolled-back reads) are not in a checkpoint
        // yet: the next maintenance pass writes one, after fsyncing them.
        if replayed > 0 || rolled_back > 0 {
            journal.since_checkpoint = replayed.max(1);
        }
        journal.replayed = touched;
        // The first maintenance pass sees whether there is anything to do.
        journal.list();
        Ok((journal, recovery))
    }

    /// Appends a record; returns what to wait on before acknowledging it.
    pub fn append(&mut self, record: Record) -> Ack {
        let failures = self.io.failures();
        if failures != self.failures_seen {
            // Records were dropped from the current segment: continue in a
            // fresh one so sizes and offsets stay true.
            self.failures_seen = failures;
            self.active += 1;
        }
        let active_size = self.state.segments.get(&self.active).map_or(0, |s| s.size);
        if active_size > 0 && active_size >= self.config.segment_size {
            self.active += 1;
        }
        let (len, lsn) = self.io.push(self.active, &record);
        self.state.apply(&record, self.active, len);
        self.since_checkpoint += len;
        self.list();
        if self.since_checkpoint >= CHECKPOINT_SEGMENTS * self.config.segment_size {
            self.journals.want_maintenance_now();
        }
        Ack {
            io: self.io.clone(),
            lsn,
        }
    }

    /// Puts the queue on the maintenance task's list, unless it is there.
    fn list(&mut self) {
        if !self.restless {
            self.restless = true;
            self.journals.list_restless(self.name.clone());
        }
    }

    /// Whether the journal still wants maintenance: a checkpoint to write or
    /// to catch up, or a segment to reclaim. When not, it leaves the
    /// maintenance task's list until its next append.
    pub fn settle(&mut self) -> bool {
        self.restless = self.since_checkpoint > 0
            || self.lagging()
            || !self.replayed.is_empty()
            || self.reclaim_job().is_some();
        self.restless
    }

    /// Forgets items in `[from, to)` whose ADD never reached the disk.
    pub fn forget(&mut self, from: u64, to: u64) {
        self.state.lose(from, to);
    }

    /// Bytes on disk (segments and checkpoints).
    pub fn size(&self) -> u64 {
        self.state.size()
    }

    /// Reads back live items from `from` on, in order, until their data (and
    /// `per_item` bytes for each) reaches `budget` bytes (at least one item).
    pub fn read_items(
        &mut self,
        from: u64,
        budget: u64,
        per_item: u64,
    ) -> std::io::Result<ReadBatch> {
        let mut batch = ReadBatch::default();
        let mut bytes = 0u64;
        let Some(mut want) = self.state.live.next_at_or_after(from) else {
            return Ok(batch);
        };
        let Some(target) = self.state.segment_at_or_after(want) else {
            batch.lost += self.state.lose(want, u64::MAX);
            return Ok(batch);
        };
        if let Some(cursor) = &mut self.cursor
            && !cursor.reader.unpark()?
        {
            // Its segment was rewritten since: start that segment over.
            self.cursor = None;
        }
        let reusable = self.cursor.as_ref().is_some_and(|c| {
            let next = c.held.as_ref().map_or(c.after, |h| h.seq);
            c.reader.id == target && next <= want
        });
        if !reusable {
            self.cursor = Some(Cursor {
                reader: self.open_reader(target)?,
                after: 0,
                held: None,
            });
        }
        let mut refreshed = None;
        loop {
            let cursor = self.cursor.as_mut().expect("opened above");
            let next = match cursor.held.take() {
                Some(item) => Next::Record {
                    record: item.into(),
                    len: 0,
                },
                None => cursor.reader.next()?,
            };
            match next {
                Next::Record {
                    record: add @ Record::Add { .. },
                    ..
                } => {
                    let seq = add.seq();
                    cursor.after = cursor.after.max(seq + 1);
                    if seq < want {
                        continue;
                    }
                    if seq > want {
                        batch.lost += self.state.lose(want, seq);
                    }
                    if self.state.live.contains(seq) {
                        let item = StoredItem::try_from(add).expect("an ADD record");
                        let size = item.data.len() as u64 + per_item;
                        if !batch.items.is_empty() && bytes + size > budget {
                            // Over budget: keep it for next time.
                            cursor.held = Some(item);
                            break;
                        }
                        bytes += size;
                        batch.items.push(item);
                    }
                    match self.state.live.next_at_or_after(seq + 1) {
                        Some(next) => want = next,
                        None => break,
                    }
                }
                Next::Record { .. } => {}
                Next::Skipped(d) => warn_skipped(&self.dir, cursor.reader.id, &d),
                Next::End { damage, valid_len } => {
                    let id = cursor.reader.id;
                    // Short of what was appended to the segment: the rest may
                    // still be waiting to be written, or have been written
                    // after the reader last looked at the file's length (it was
                    // the active segment then). Write, look again, once.
                    let appended = self.state.segments.get(&id).map_or(0, |s| s.size);
                    if valid_len < appended && refreshed != Some(id) {
                        refreshed = Some(id);
                        self.io.write_now();
                        cursor.reader.refresh_len()?;
                        continue;
                    }
                    if damage.is_some() {
                        // Damage recovery stepped over: so do we.
                        if let Next::Skipped(d) = cursor.reader.resync()? {
                            warn_skipped(&self.dir, id, &d);
                            continue;
                        }
                    }
                    if id >= self.active {
                        batch.lost += self.state.lose(want, u64::MAX);
                        break;
                    }
                    if let Some(d) = damage {
                        tracing::warn!(
                            dir = %self.dir.display(),
                            segment = id,
                            offset = d.offset,
                            bytes = d.len,
                            "damaged journal segment tail skipped; DATA MAY HAVE BEEN LOST"
                        );
                    }
                    match self
                        .state
                        .segments
                        .range(id + 1..)
                        .next()
                        .map(|(&next, _)| next)
                    {
                        Some(next) => {
                            self.cursor = Some(Cursor {
                                reader: self.open_reader(next)?,
                                after: 0,
                                held: None,
                            })
                        }
                        None => {
                            batch.lost += self.state.lose(want, u64::MAX);
                            break;
                        }
                    }
                }
            }
        }
        if let Some(cursor) = &mut self.cursor {
            // Kept for the next read, without a file or a buffer meanwhile.
            cursor.reader.park();
        }
        if batch.lost > 0 {
            tracing::warn!(queue = %self.name, items = batch.lost, "queued items lost to journal damage");
        }
        Ok(batch)
    }

    fn open_reader(&self, id: u64) -> std::io::Result<Reader> {
        if id >= self.active {
            // Its records may still be pending.
            self.io.write_now();
        }
        match Reader::open(self.journals.files(), self.id, &self.dir, id, 0) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Nothing was ever written to it: the active segment before
                // its first write, or an older one whose every write failed
                // (a batch that failed in the segment before it). An empty
                // reader: what the log says is in it was never stored.
                fs::File::create(segment::path(&self.dir, id))?;
                Reader::open(self.journals.files(), self.id, &self.dir, id, 0)
            }
            other => other,
        }
    }

    /// Whether another checkpoint would let segments go: reclamation waits
    /// until both checkpoints have moved past a segment, so recovery from
    /// either stays correct.
    fn lagging(&self) -> bool {
        match self.marks.as_slice() {
            [newer, older] => newer.replay_from != older.replay_from,
            [only] => {
                let floor = only.replay_from.segment;
                self.state.segments.range(..floor).next().is_some()
            }
            _ => false,
        }
    }

    /// A checkpoint to write, if one is due, or, `now`, if anything happened
    /// since the last (a clean stop checkpoints every journal that changed,
    /// and leaves the others untouched).
    pub fn checkpoint_job(&mut self, now: bool) -> Option<CheckpointJob> {
        let changed = self.since_checkpoint > 0 || self.lagging() || !self.replayed.is_empty();
        let due = self.since_checkpoint >= CHECKPOINT_SEGMENTS * self.config.segment_size
            || (changed && (now || self.last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL));
        if !due {
            return None;
        }
        let generation = self.marks.first().map_or(0, |m| m.generation) + 1;
        let offset = self.state.segments.get(&self.active).map_or(0, |s| s.size);
        let replay_from = Position {
            segment: self.active,
            offset,
        };
        let checkpoint = self
            .state
            .to_checkpoint(&self.name, generation, replay_from);
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Some(CheckpointJob {
            dir: self.dir.clone(),
            io: self.io.clone(),
            checkpoint,
            replayed: self.replayed.clone(),
        })
    }

    /// Records that `job` is durable: replay may now start from it.
    pub fn checkpoint_done(&mut self, job: &CheckpointJob) {
        let mark = Mark {
            generation: job.checkpoint.generation,
            replay_from: job.checkpoint.replay_from,
        };
        tracing::debug!(
            dir = %self.dir.display(),
            generation = mark.generation,
            segment = mark.replay_from.segment,
            offset = mark.replay_from.offset,
            "journal checkpoint written"
        );
        self.marks.insert(0, mark);
        self.marks.truncate(2);
        self.replayed.retain(|id| !job.replayed.contains(id));
    }

    /// The next segment worth reclaiming, if any. Only segments that both
    /// checkpoints have moved past qualify, so recovery from either stays
    /// correct.
    pub fn reclaim_job(&self) -> Option<ReclaimJob> {
        let floor = self.marks.iter().map(|m| m.replay_from.segment).min()?;
        if self.marks.len() < 2 {
            return None;
        }
        for (&id, info) in self.state.segments.range(..floor) {
            if id >= self.active {
                break;
            }
            let live = info
                .adds
                .is_some_and(|(first, last)| self.state.live.intersects(first, last + 1));
            let work = if !live {
                Reclaim::Delete
            } else if info.live_bytes * 2 < info.size {
                Reclaim::Rewrite {
                    live: self.state.live.clone(),
                }
            } else {
                continue;
            };
            return Some(ReclaimJob {
                dir: self.dir.clone(),
                files: self.journals.files().clone(),
                journal: self.id,
                id,
                work,
            });
        }
        None
    }

    /// Records what a reclamation did.
    pub fn reclaim_done(&mut self, done: Reclaimed) {
        match done.kept {
            Some((size, _)) => {
                tracing::debug!(dir = %self.dir.display(), segment = done.id, size, "journal segment rewritten")
            }
            None => {
                tracing::debug!(dir = %self.dir.display(), segment = done.id, "journal segment deleted")
            }
        }
        if self.cursor.as_ref().is_some_and(|c| c.reader.id == done.id) {
            // Its offsets belong to the old file.
            self.cursor = None;
        }
        self.state.segment_rewritten(done.id, done.kept);
    }

    /// Stops the journal's I/O for good (its queue was deleted) and closes
    /// its files; the directory is the caller's to remove.
    pub fn destroy(self) {
        self.io.close();
    }
}

/// The queue names the checkpoints in `dir` carry, newest first (to
/// identify a directory whose name is a hash).
pub fn stored_names(dir: &Path) -> Vec<String> {
    checkpoint::load(dir, &checkpoint::FILES.map(String::from))
        .into_iter()
        .map(|c| c.name)
        .filter(|n| !n.is_empty())
        .collect()
}

/// Bytes to replay from `from` on, for progress reports.
fn replay_size(dir: &Path, on_disk: &[u64], from: Position) -> u64 {
    on_disk
        .iter()
        .filter(|&&id| id >= from.segment)
        .filter_map(|&id| fs::metadata(segment::path(dir, id)).ok().map(|m| m.len()))
        .sum::<u64>()
        .saturating_sub(from.offset)
}

/// Logs damaged records stepped over, in recovery and read-behind alike.
fn warn_skipped(dir: &Path, segment: u64, d: &segment::Damage) {
    tracing::warn!(
        dir = %dir.display(),
        segment,
        offset = d.offset,
        bytes = d.len,
        "damaged journal records skipped; DATA MAY HAVE BEEN LOST"
    );
}

#[cfg(test)]
mod tests;
