//! Opening a journal: the newest valid checkpoint, then the log after it
//! replayed, a torn or damaged tail cut off, and open transactions rolled
//! back into the queue.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::config::JournalConfig;

use super::checkpoint::{self, Checkpoint, Position};
use super::files::Files;
use super::segment::{self, Damage, Next, Reader};
use super::state::LogState;
use super::{Journal, Journals, Mark, disk, warn_skipped};

/// Recovery logs its progress every this many bytes replayed.
const PROGRESS_EVERY: u64 = 64 * 1024 * 1024;

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

impl Journal {
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
        if checkpoints.is_empty() && !listing.segments.is_empty() && !listing.checkpoints.is_empty()
        {
            tracing::warn!(queue = name, "no valid checkpoint: replaying every segment");
        }
        let marks: Vec<Mark> = checkpoints
            .iter()
            .map(|c| Mark {
                generation: c.generation,
                replay_from: c.replay_from,
            })
            .collect();
        let Replay {
            mut state,
            from,
            bytes: replayed,
            touched,
            tails,
        } = replay(
            dir,
            name,
            checkpoints.first(),
            &listing.segments,
            journals.files(),
        )?;
        for (id, d) in tails {
            tracing::warn!(
                queue = name,
                segment = id,
                offset = d.offset,
                bytes = d.len,
                "torn or damaged journal tail truncated at the last good record"
            );
            disk::truncate(&segment::path(dir, id), d.offset)?;
        }
        let active = listing
            .segments
            .last()
            .copied()
            .unwrap_or(from.segment)
            .max(from.segment);
        let recovery = roll_back(&mut state);
        let rolled_back = recovery.rolled_back;
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
}

/// The log as recovery reads it: the newest intact checkpoint's state with
/// every record after it applied, open reads not yet rolled back. One
/// [`replay`] serves [`Journal::recover`] and the read-only
/// [`inspect`](super::inspect) alike, so that what an operator is shown is
/// what a start would find.
pub(super) struct Replay {
    pub state: LogState,
    /// Where replay started.
    pub from: Position,
    /// Bytes of records replayed.
    pub bytes: u64,
    /// Segments that had records to replay.
    pub touched: Vec<u64>,
    /// The torn or damaged tails found, with their segment: nothing intact
    /// follows them, and recovery cuts the segment off where they start.
    pub tails: Vec<(u64, Damage)>,
}

/// Replays the log of queue `name` in `dir`, whose segments are `on_disk`,
/// after `newest`, the newest intact checkpoint (from the first segment
/// when there is none), reading the segments through `files`. Reads only:
/// what to cut is returned in [`Replay::tails`]. Damage with intact records
/// after it is stepped over and logged.
pub(super) fn replay(
    dir: &Path,
    name: &str,
    newest: Option<&Checkpoint>,
    on_disk: &[u64],
    files: &Arc<Files>,
) -> std::io::Result<Replay> {
    let (mut state, from) = match newest {
        Some(c) => (LogState::from_checkpoint(c), c.replay_from),
        None => (
            LogState::new(crate::clock::now_ms()),
            Position {
                segment: on_disk.first().copied().unwrap_or(1),
                offset: 0,
            },
        ),
    };
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
    let journal = files.journal_id();
    let mut touched = Vec::new();
    let mut tails = Vec::new();
    for &id in on_disk.iter().filter(|&&id| id >= from.segment) {
        let offset = if id == from.segment { from.offset } else { 0 };
        state.segments.entry(id).or_default().size = offset;
        let mut reader = Reader::open(files, journal, dir, id, offset)?;
        if reader.at_end() {
            continue;
        }
        touched.push(id);
        loop {
            match reader.next_past_damage()? {
                Next::Record { record, len } => {
                    state.apply(&record, id, len);
                    replayed += len;
                    if replayed >= next_report {
                        next_report += PROGRESS_EVERY;
                        let total = *total.get_or_insert_with(|| replay_size(dir, on_disk, from));
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
                    // What the file holds, skipped damage included: new
                    // records go after it.
                    state.segments.entry(id).or_default().size = valid_len;
                    tails.extend(damage.map(|d| (id, d)));
                    break;
                }
            }
        }
    }
    if replayed > PROGRESS_EVERY {
        tracing::info!(queue = name, mib = replayed >> 20, elapsed = ?started.elapsed(), "journal replayed");
    }
    files.forget_journal(journal);
    Ok(Replay {
        state,
        from,
        bytes: replayed,
        touched,
        tails,
    })
}

/// Rolls the reads open in `state` back into the queue, as a start does;
/// returns what the queue then holds.
pub(super) fn roll_back(state: &mut LogState) -> Recovery {
    let rolled_back = state.open.len() as u64;
    state.open.clear();
    Recovery {
        next_seq: state.next_seq,
        items: state.live.len(),
        bytes: state.live_bytes,
        first_live: state.live.first(),
        created_ms: state.created_ms,
        rolled_back,
    }
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
