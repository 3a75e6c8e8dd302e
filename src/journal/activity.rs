//! What every journal of a server shares: the open-file cache, and the lists
//! of journals that have background work waiting.
//!
//! A journal lists itself when it gets work (records appended that nobody has
//! written or fsynced yet; a checkpoint or a segment reclamation to come) and
//! leaves the list once done, so a background pass costs what is active, not
//! what exists: 100,000 idle queues cost the syncer and the maintenance task
//! nothing.

use std::sync::{Arc, Mutex, MutexGuard};

use super::files::Files;

/// A journal with records to write or fsync, as the background syncer sees
/// it (the journal's writer, [`JournalIo`](super::io::JournalIo)).
pub(super) trait Unsynced: Send + Sync {
    /// Writes what is pending and fsyncs if due; whether something is left
    /// to fsync later. The journal lists itself again if it still has work.
    fn tick_listed(&self) -> bool;
}

/// The journals of one server.
pub struct Journals {
    files: Arc<Files>,
    /// Journals with records to write or fsync, each listed once.
    unsynced: Mutex<Vec<Arc<dyn Unsynced>>>,
    /// Queues whose journal wants maintenance, each listed once.
    restless: Mutex<Vec<Arc<str>>>,
    /// Rung when a checkpoint is due by size: sooner than the next pass.
    wanted: Arc<tokio::sync::Notify>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Journals {
    /// Journals holding at most `max_open_files` segment files open.
    pub fn new(max_open_files: usize) -> Arc<Journals> {
        Arc::new(Journals {
            files: Files::new(max_open_files),
            unsynced: Mutex::new(Vec::new()),
            restless: Mutex::new(Vec::new()),
            wanted: Arc::new(tokio::sync::Notify::new()),
        })
    }

    pub fn files(&self) -> &Arc<Files> {
        &self.files
    }

    /// Rung when a journal wants maintenance before the next periodic pass.
    pub fn maintenance_wanted(&self) -> Arc<tokio::sync::Notify> {
        self.wanted.clone()
    }

    pub(super) fn want_maintenance_now(&self) {
        self.wanted.notify_one();
    }

    pub(super) fn list_unsynced(&self, io: Arc<dyn Unsynced>) {
        lock(&self.unsynced).push(io);
    }

    pub(super) fn list_restless(&self, queue: Arc<str>) {
        lock(&self.restless).push(queue);
    }

    /// One pass of the background syncer: writes what nobody waited for and
    /// fsyncs what is due, for every journal listed. Returns whether some
    /// journal still has something to fsync later.
    pub fn sync_pass(&self) -> bool {
        let listed = std::mem::take(&mut *lock(&self.unsynced));
        let mut dirty = false;
        for io in listed {
            dirty |= io.tick_listed();
        }
        dirty
    }

    /// Lets go of the journals listed, without writing what they hold: a
    /// listed journal holds these lists (through its `Arc<Journals>`), so a
    /// server dropped with work pending would otherwise never free them nor
    /// close their files.
    pub fn abandon(&self) {
        lock(&self.unsynced).clear();
        lock(&self.restless).clear();
    }

    /// Takes the queues that asked for maintenance since the last call. The
    /// caller keeps each until its journal is at rest.
    pub fn take_restless(&self) -> Vec<Arc<str>> {
        std::mem::take(&mut *lock(&self.restless))
    }
}
