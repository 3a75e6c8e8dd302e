//! `kestrel import-kestrel`: moves the live items of Scala Kestrel 2.x
//! journals into this server's queues, offline, so a team leaving Kestrel
//! keeps every message without draining its queues through a client.
//!
//! Per queue, two passes over Kestrel's files, which are only ever read:
//! the first walks the records' headers and replays them as Kestrel did
//! ([`replay`]), keeping a reference per live item rather than its payload;
//! the second reads the payloads of the items that survived, in queue order,
//! and restores them through the service with their add times and expiries.
//! A damaged record ends its file's replay (everything before it counts) and
//! is reported; the next file goes on.

mod files;
pub mod record;
mod replay;
mod walk;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use crate::clock::now_ms;
use crate::config::QueuesConfig;
use crate::service::{QueueServer, RestoredItem, ServiceError};

pub use files::{QueueFiles, scan};
pub use replay::{ItemRef, Replay, Replayed};
pub use walk::{Walked, walk};

/// Payload bytes restored in one call: a batch shares one journal write.
const BATCH_BYTES: usize = 4 << 20;
/// Items restored in one call, for queues of tiny items.
const BATCH_ITEMS: usize = 16_384;
/// A run of payloads read with one `pread` when they lie this close together.
const READ_SPAN: u64 = 1 << 20;

/// A record that could not be read, and what of its file was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    pub file: PathBuf,
    pub offset: u64,
    /// Bytes from the damage to the end of the file, not replayed.
    pub bytes: u64,
    pub why: String,
}

/// What happened to one Kestrel queue.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueueReport {
    pub name: String,
    pub files: usize,
    /// Journal bytes read.
    pub journal_bytes: u64,
    pub items: u64,
    pub bytes: u64,
    /// Reads open at the end of the journal, put back at the head.
    pub rolled_back: usize,
    /// Items already expired, of which `moved` went to `moved_to` (the
    /// queue's `expire_to_queue`); the rest were dropped.
    pub expired: u64,
    pub moved: u64,
    pub moved_to: Option<String>,
    pub damaged: Vec<Damaged>,
    /// Files not replayed, and why.
    pub ignored: Vec<(PathBuf, &'static str)>,
    /// Why the queue was not imported at all.
    pub refused: Option<String>,
}

impl QueueReport {
    /// Whether anything of the queue was left behind (damage, refusal).
    pub fn skipped_anything(&self) -> bool {
        !self.damaged.is_empty() || self.refused.is_some()
    }

    /// Journal bytes not replayed because of damage.
    pub fn skipped_bytes(&self) -> u64 {
        self.damaged.iter().map(|d| d.bytes).sum()
    }
}

/// What an import does, and where progress goes.
pub struct Import<'a> {
    /// Only these queues (every queue if empty).
    pub only: &'a [String],
    /// `None` for a dry run: replay and report, write nothing.
    pub service: Option<&'a QueueServer>,
    /// The queues' settings, for a dry run to tell which items have expired.
    pub queues: &'a QueuesConfig,
    /// Told of journal bytes read and payload bytes restored.
    pub progress: &'a dyn Fn(u64),
    /// Told of the total once a queue's replay knows it.
    pub more_work: &'a dyn Fn(u64),
}

/// Why an import could not run.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: no such queue in the Kestrel directory")]
    NoSuchQueue(String),
    #[error("restoring {queue}: {source}")]
    Restore { queue: String, source: ServiceError },
}

impl Import<'_> {
    /// Imports every queue of the Kestrel queue directory `from` (or those
    /// in `only`); reports them by name.
    pub async fn run(&self, from: &Path) -> Result<Vec<QueueReport>, ImportError> {
        let mut queues = scan(from).map_err(|e| ImportError::Read(from.to_path_buf(), e))?;
        if !self.only.is_empty() {
            if let Some(missing) = self.only.iter().find(|q| !queues.contains_key(*q)) {
                return Err(ImportError::NoSuchQueue(missing.clone()));
            }
            queues.retain(|name, _| self.only.contains(name));
        }
        let total: u64 = queues
            .values()
            .flat_map(|q| &q.files)
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        (self.more_work)(total);
        // Queues whose expired items move elsewhere go last, so those items
        // land behind the items their target queue already had, as if they
        // had expired after the move.
        let mut order: Vec<(String, QueueFiles)> = queues.into_iter().collect();
        order.sort_by_key(|(name, _)| self.queues.for_queue(name).expire_to_queue.is_some());
        let mut reports = Vec::new();
        for (name, files) in order {
            reports.push(self.queue(name, files).await?);
        }
        reports.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(reports)
    }

    async fn queue(&self, name: String, files: QueueFiles) -> Result<QueueReport, ImportError> {
        let mut report = QueueReport {
            name: name.clone(),
            files: files.files.len(),
            ignored: files.ignored,
            ..QueueReport::default()
        };
        if let Err(e) = crate::name::validate(&name) {
            report.refused = Some(format!("not a valid queue name here: {e}"));
            return Ok(report);
        }
        let now = now_ms();
        let mut replay = Replay::default();
        let mut opened = Vec::new();
        for (i, path) in files.files.iter().enumerate() {
            let file = File::open(path).map_err(|e| ImportError::Read(path.clone(), e))?;
            let walked = walk(&file, i as u32, &mut replay, now, self.progress)
                .map_err(|e| ImportError::Read(path.clone(), e))?;
            report.journal_bytes += walked.read;
            if let Some((offset, why)) = walked.damage {
                report.damaged.push(Damaged {
                    file: path.clone(),
                    offset,
                    bytes: walked.len - offset,
                    why: why.to_string(),
                });
            }
            opened.push(file);
        }
        let Replayed { items, rolled_back } = replay.finish();
        report.rolled_back = rolled_back;
        let live: u64 = items.iter().map(|i| u64::from(i.len)).sum();
        let Some(service) = self.service else {
            let config = self.queues.for_queue(&name);
            let (expired, kept): (Vec<&ItemRef>, Vec<&ItemRef>) = items.iter().partition(|i| {
                config
                    .expiry(i.added_ms, i.expires_ms)
                    .is_some_and(|at| at <= now)
            });
            report.items = kept.len() as u64;
            report.bytes = kept.iter().map(|i| u64::from(i.len)).sum();
            report.expired = expired.len() as u64;
            if let Some(target) = config
                .expire_to_queue
                .as_ref()
                .filter(|_| !expired.is_empty())
            {
                report.moved = report.expired;
                report.moved_to = Some(target.clone());
            }
            return Ok(report);
        };
        (self.more_work)(live);
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        for run in runs(&items) {
            let chunk = read_run(&opened[run[0].file as usize], run)
                .map_err(|e| ImportError::Read(files.files[run[0].file as usize].clone(), e))?;
            for item in run {
                let at = (item.offset - run[0].offset) as usize;
                batch.push(RestoredItem {
                    data: chunk.slice(at..at + item.len as usize),
                    added_ms: item.added_ms,
                    expires_ms: item.expires_ms,
                });
                batch_bytes += item.len as usize;
                if batch_bytes >= BATCH_BYTES || batch.len() >= BATCH_ITEMS {
                    self.restore(service, &name, &mut batch, &mut report)
                        .await?;
                    (self.progress)(batch_bytes as u64);
                    batch_bytes = 0;
                }
            }
        }
        self.restore(service, &name, &mut batch, &mut report)
            .await?;
        (self.progress)(batch_bytes as u64);
        Ok(report)
    }

    async fn restore(
        &self,
        service: &QueueServer,
        name: &str,
        batch: &mut Vec<RestoredItem>,
        report: &mut QueueReport,
    ) -> Result<(), ImportError> {
        if batch.is_empty() {
            return Ok(());
        }
        let items = std::mem::take(batch);
        let restored =
            service
                .restore(name, items)
                .await
                .map_err(|source| ImportError::Restore {
                    queue: name.to_string(),
                    source,
                })?;
        report.items += restored.stored as u64;
        report.bytes += restored.stored_bytes;
        report.expired += restored.expired as u64;
        report.moved += restored.moved as u64;
        report.moved_to = restored.moved_to.or(report.moved_to.take());
        Ok(())
    }
}

/// Splits `items` into runs whose payloads lie in one file, in order and
/// close together, so each run is read with one `pread`.
fn runs(items: &[ItemRef]) -> impl Iterator<Item = &[ItemRef]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        let first = rest.first()?;
        let mut end = 1;
        while let Some(next) = rest.get(end) {
            let prev = &rest[end - 1];
            let contiguous = next.file == first.file
                && next.offset >= prev.offset + u64::from(prev.len)
                && next.offset + u64::from(next.len) - first.offset <= READ_SPAN;
            if !contiguous {
                break;
            }
            end += 1;
        }
        let (run, tail) = rest.split_at(end);
        rest = tail;
        Some(run)
    })
}

/// Reads the bytes spanning `run`'s payloads (and the record headers
/// between them) with one `pread`.
fn read_run(file: &File, run: &[ItemRef]) -> std::io::Result<Bytes> {
    let (first, last) = (&run[0], &run[run.len() - 1]);
    let len = (last.offset + u64::from(last.len) - first.offset) as usize;
    let mut buf = BytesMut::zeroed(len);
    file.read_exact_at(&mut buf, first.offset)?;
    Ok(buf.freeze())
}

/// The reports of a run, summed.
pub fn totals(reports: &[QueueReport]) -> QueueReport {
    let mut t = QueueReport {
        name: "total".into(),
        ..QueueReport::default()
    };
    for r in reports {
        t.files += r.files;
        t.journal_bytes += r.journal_bytes;
        t.items += r.items;
        t.bytes += r.bytes;
        t.rolled_back += r.rolled_back;
        t.expired += r.expired;
        t.moved += r.moved;
        t.damaged.extend(r.damaged.iter().cloned());
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(file: u32, offset: u64, len: u32) -> ItemRef {
        ItemRef {
            file,
            offset,
            len,
            added_ms: 0,
            expires_ms: None,
        }
    }

    #[test]
    fn payloads_close_together_in_one_file_are_read_as_one_run() {
        let items = [
            at(0, 21, 10),
            at(0, 52, 10),
            at(1, 21, 10),
            at(1, 10, 5), // behind the previous one: a new run
            at(1, 2 << 20, 5),
        ];
        let runs: Vec<usize> = runs(&items).map(<[ItemRef]>::len).collect();
        assert_eq!(runs, [2, 1, 1, 1]);
    }
}
