//! A read-only look at one queue's journal, for operators and bug reports
//! (`kestrel dump-journal`): the checkpoint files as they are, the records
//! of every segment, and the queue as a start would recover it.
//!
//! The queue is computed by recovery's own [`replay`] and [`roll_back`], so
//! what is shown is what a start would find. Every file is opened for
//! reading only and nothing is written: a torn tail that recovery would
//! cut is reported, not cut. No lock is taken, so the server that owns the
//! journal may be running: its newest segment grows meanwhile (a record
//! being written shows as a tail [cut short](Tail::cut_short)), and it may
//! write checkpoints and reclaim segments, in which case the look is taken
//! again (up to [`ATTEMPTS`] times).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::checkpoint::{self, Position, Stored};
use super::files::Files;
use super::record::Record;
use super::recover::{Recovery, replay, roll_back};
use super::runs::Runs;
use super::segment::{self, Next, Reader};

pub use super::segment::{Damage, file_name};

/// Looks taken before giving up on a consistent one, when the server writes
/// a checkpoint or reclaims a segment while the journal is being read.
const ATTEMPTS: usize = 5;

/// Files held open at once: a look reads one segment at a time.
const OPEN_FILES: usize = 4;

/// One queue's journal as found on disk, and the queue recovery would make
/// of it.
pub struct Inspection {
    dir: PathBuf,
    files: Arc<Files>,
    journal: u64,
    /// The checkpoint files present, intact or not, in name order.
    pub checkpoints: Vec<Stored>,
    /// The generation of the checkpoint a start would replay from: the
    /// newest intact one, if any.
    pub generation: Option<u64>,
    /// The segments, in order.
    pub segments: Vec<u64>,
    /// The entries the journal did not write, in order: the queue's `NAME`
    /// file, or what tells that this is not a journal's directory.
    pub others: Vec<String>,
    /// Where replay starts.
    pub replay_from: Position,
    /// Bytes of records a start would replay.
    pub replayed: u64,
    /// The queue as a start would recover it.
    pub recovery: Recovery,
    /// The reads open in the journal (sequence number and size), which a
    /// start rolls back into the queue.
    pub open: BTreeMap<u64, u32>,
    /// The live items after the roll-back.
    live: Runs,
}

impl Inspection {
    /// Looks at the journal in `dir`, reading only.
    pub fn open(dir: &Path) -> io::Result<Inspection> {
        let files = Files::read_only(OPEN_FILES);
        let mut attempt = 1;
        loop {
            match Inspection::look(dir, &files) {
                // A segment reclaimed between the listing and its reading.
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < ATTEMPTS => {}
                Ok(look) if attempt < ATTEMPTS && look.moved_on() => {}
                other => return other,
            }
            attempt += 1;
        }
    }

    fn look(dir: &Path, files: &Arc<Files>) -> io::Result<Inspection> {
        let listing = segment::list_dir(dir)?;
        let checkpoints = checkpoint::read(dir, &listing.checkpoints);
        let newest = checkpoint::newest_first(checkpoints.clone())
            .into_iter()
            .next();
        let name = newest.as_ref().map_or("", |c| c.name.as_str());
        let mut replayed = replay(dir, name, newest.as_ref(), &listing.segments, files)?;
        let open = replayed.state.open.clone();
        let recovery = roll_back(&mut replayed.state);
        Ok(Inspection {
            dir: dir.to_path_buf(),
            files: files.clone(),
            journal: files.journal_id(),
            checkpoints,
            generation: newest.map(|c| c.generation),
            segments: listing.segments,
            others: listing.others,
            replay_from: replayed.from,
            replayed: replayed.bytes,
            recovery,
            open,
            live: replayed.state.live,
        })
    }

    /// Whether the server wrote a checkpoint since this look was taken: it
    /// may have reclaimed segments meanwhile, so records this look counts
    /// on may be gone.
    fn moved_on(&self) -> bool {
        let present = checkpoint::FILES.map(String::from);
        let now = checkpoint::newest_first(checkpoint::read(&self.dir, &present));
        now.first().map(|c| c.generation) != self.generation
    }

    /// Whether the item `seq` is in the queue a start would recover.
    pub fn is_live(&self, seq: u64) -> bool {
        self.live.contains(seq)
    }

    /// The items in `[from, to)` of the queue a start would recover, as
    /// runs of sequence numbers `[start, end)`.
    pub fn live_within(&self, from: u64, to: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.live.within(from, to)
    }

    /// Reads segment `id` front to back; `None` if it is gone (reclaimed by
    /// the server since it was listed).
    pub fn records(&self, id: u64) -> io::Result<Option<Records>> {
        match Reader::open(&self.files, self.journal, &self.dir, id, 0) {
            Ok(reader) => Ok(Some(Records { reader })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// One segment's records, read as recovery reads them, up to the file's
/// length when it was opened.
pub struct Records {
    reader: Reader,
}

/// What a segment holds next.
#[derive(Debug)]
pub enum Entry {
    /// An intact record, at `offset`, `len` bytes long.
    Record {
        offset: u64,
        len: u64,
        record: Record,
    },
    /// Bytes that hold no intact record, with intact records after them:
    /// recovery steps over them.
    Damaged(Damage),
    /// The end: `valid_len` bytes of records (damage stepped over
    /// included), then the tail recovery would cut off, if any.
    End { valid_len: u64, tail: Option<Tail> },
}

/// Bytes after a segment's last intact record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    pub damage: Damage,
    /// Whether they are the start of one record the file ends inside: one
    /// being written, if the segment is the newest and the server runs, or
    /// one a crash cut short. Otherwise they are not a record.
    pub cut_short: bool,
}

impl Records {
    /// The segment's size, as this reader sees it.
    pub fn file_len(&self) -> u64 {
        self.reader.file_len()
    }

    /// The next record, or what stands in its place.
    pub fn next_entry(&mut self) -> io::Result<Entry> {
        let offset = self.reader.offset;
        Ok(match self.reader.next_past_damage()? {
            Next::Record { record, len } => Entry::Record {
                offset,
                len,
                record,
            },
            Next::Skipped(damage) => Entry::Damaged(damage),
            Next::End { valid_len, damage } => Entry::End {
                valid_len,
                tail: match damage {
                    Some(damage) => Some(Tail {
                        damage,
                        cut_short: self.reader.tail_is_cut_short()?,
                    }),
                    None => None,
                },
            },
        })
    }
}
