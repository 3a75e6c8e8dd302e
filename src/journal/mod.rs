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
//!
//! [`inspect`] looks at a journal without changing it, for `kestrel
//! dump-journal`, through the same replay as recovery.

mod activity;
#[doc(hidden)] // public for the fuzz targets only
pub mod checkpoint;
pub mod disk;
mod files;
pub mod inspect;
mod io;
mod maintain;
mod read_behind;
#[doc(hidden)] // public for the fuzz targets only
pub mod record;
mod recover;
mod runs;
mod segment;
mod state;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::JournalConfig;

pub use activity::Journals;
pub use io::{JournalIo, WriteError};
pub use maintain::{CheckpointJob, ReclaimJob, Reclaimed};
pub use read_behind::ReadBatch;
pub use record::Record;
pub use recover::Recovery;

use checkpoint::Position;
use segment::Reader;
use state::LogState;

/// A checkpoint is due after this many segments' worth of log (so replay at
/// restart reads at most about that much, and reclamation trails the head by
/// about twice that)...
const CHECKPOINT_SEGMENTS: u64 = 2;
/// ...or this long after the last one, if anything was appended since, or if
/// the older checkpoint still lags the newer (so that, once a queue goes quiet,
/// both checkpoints catch up and every consumed segment can go).
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);

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

/// What a journal did to its segments since it was opened, for the queue's
/// stats (Kestrel's `journal_rotations` and `journal_rewrites`). Counted in
/// memory only, as Kestrel did: a restart starts again from zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Turnover {
    /// New segments started: the active one reached `max_journal_size` (or a
    /// failed write left it with records missing), as Kestrel rotated its
    /// journal file.
    pub rotations: u64,
    /// Segments reclaimed: deleted once none of their items was live, or
    /// rewritten with only their live items. Kestrel's rewrite of the whole
    /// journal freed the space of consumed items; this journal does that a
    /// segment at a time.
    pub rewrites: u64,
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
    turnover: Turnover,
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
            turnover: Turnover::default(),
        }
    }

    /// Appends a record; returns what to wait on before acknowledging it.
    pub fn append(&mut self, record: Record) -> Ack {
        let failures = self.io.failures();
        if failures != self.failures_seen {
            // Records were dropped from the current segment: continue in a
            // fresh one so sizes and offsets stay true.
            self.failures_seen = failures;
            self.rotate();
        }
        let active_size = self.state.segments.get(&self.active).map_or(0, |s| s.size);
        if active_size > 0 && active_size >= self.config.segment_size {
            self.rotate();
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

    /// Moves appends on to a new segment.
    fn rotate(&mut self) {
        self.active += 1;
        self.turnover.rotations += 1;
    }

    /// What the journal did to its segments since it was opened.
    pub fn turnover(&self) -> Turnover {
        self.turnover
    }

    /// Puts the queue on the maintenance task's list, unless it is there.
    fn list(&mut self) {
        if !self.restless {
            self.restless = true;
            self.journals.list_restless(self.name.clone());
        }
    }

    /// Forgets items in `[from, to)` whose ADD never reached the disk.
    pub fn forget(&mut self, from: u64, to: u64) {
        self.state.lose(from, to);
    }

    /// Bytes on disk (segments and checkpoints).
    pub fn size(&self) -> u64 {
        self.state.size()
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
