//! Maintenance: checkpoints written when due, and consumed segments deleted
//! or rewritten with only their live items. Each job is built under the
//! queue's lock, run outside it (blocking I/O), and what it did recorded
//! under the lock again; `settle` says whether the journal still wants the
//! maintenance task.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::checkpoint::{self, Checkpoint, Position};
use super::files::{self, Files};
use super::segment::{self, Next, Reader};
use super::{
    CHECKPOINT_INTERVAL, CHECKPOINT_SEGMENTS, Journal, JournalIo, Mark, Record, disk, runs,
};

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
    let tmp = segment::rewrite_path(dir, id);
    disk::replace(dir, &tmp, &segment::path(dir, id), &out)?;
    Ok(Reclaimed {
        id,
        kept: Some((out.len() as u64, adds)),
    })
}

impl Journal {
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
        self.turnover.rewrites += 1;
        self.state.segment_rewritten(done.id, done.kept);
    }
}
