//! The journal files held open, across every queue of the server: a bounded
//! cache, so that file descriptors do not grow with the number of queues.
//!
//! A journal asks for the file of one of its segments when it writes,
//! fsyncs or reads back; the cache opens it on a miss and closes the least
//! recently used file when full. A file in use stays open until its user is
//! done (the cache hands out `Arc`s), so the bound can be exceeded only by
//! the files in use at that moment. A segment that is deleted or replaced
//! must be [`Files::forget`]ten so the next open sees the new file.

use std::fs::{File, OpenOptions};
use std::io;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;

/// A segment of one journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub journal: u64,
    pub segment: u64,
}

/// The open-file cache.
pub struct Files {
    cache: Mutex<LruCache<Key, Arc<File>>>,
    next_journal: AtomicU64,
    /// Opens files for reading only and never creates one: for looking at
    /// a journal that a running server may own ([`super::inspect`]).
    read_only: bool,
}

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Files")
            .field("open", &self.open_count())
            .finish()
    }
}

impl Files {
    /// A cache holding at most `capacity` files open.
    pub fn new(capacity: usize) -> Arc<Files> {
        Files::with_access(capacity, false)
    }

    /// A cache that opens files for reading only and creates none, whatever
    /// [`Files::open`] is asked.
    pub fn read_only(capacity: usize) -> Arc<Files> {
        Files::with_access(capacity, true)
    }

    fn with_access(capacity: usize, read_only: bool) -> Arc<Files> {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Arc::new(Files {
            cache: Mutex::new(LruCache::new(capacity)),
            next_journal: AtomicU64::new(1),
            read_only,
        })
    }

    fn lock(&self) -> MutexGuard<'_, LruCache<Key, Arc<File>>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh journal id, for keys.
    pub fn journal_id(&self) -> u64 {
        self.next_journal.fetch_add(1, Ordering::Relaxed)
    }

    /// The file of `key` at `path`, opened for reading and appending (only
    /// reading, in a [read-only](Files::read_only) cache); if `create`,
    /// created when missing (never in a read-only cache). Also says whether
    /// this call created it. The path is only made on a miss: every journal
    /// write looks its file up here, and most find it.
    pub fn open<P: AsRef<Path>>(
        &self,
        key: Key,
        path: impl FnOnce() -> P,
        create: bool,
    ) -> io::Result<(Arc<File>, bool)> {
        if let Some(file) = self.lock().get(&key) {
            return Ok((file.clone(), false));
        }
        let path = path();
        let path = path.as_ref();
        // Opened outside the lock: every journal shares it.
        let mut options = OpenOptions::new();
        options.read(true).append(!self.read_only);
        let (file, created) = match create && !self.read_only {
            false => (options.open(path)?, false),
            true => match options.clone().create_new(true).open(path) {
                Ok(file) => (file, true),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => (options.open(path)?, false),
                Err(e) => return Err(e),
            },
        };
        let file = Arc::new(file);
        let evicted = {
            let mut cache = self.lock();
            if let Some(raced) = cache.get(&key) {
                return Ok((raced.clone(), created));
            }
            cache.push(key, file.clone())
        };
        // Closed (if no one else holds it) outside the lock.
        drop(evicted);
        Ok((file, created))
    }

    /// Closes the file of `key` (its segment was deleted or replaced).
    pub fn forget(&self, key: Key) {
        let removed = self.lock().pop(&key);
        drop(removed);
    }

    /// Closes every file of `journal` (its queue was deleted).
    pub fn forget_journal(&self, journal: u64) {
        let removed: Vec<Arc<File>> = {
            let mut cache = self.lock();
            let keys: Vec<Key> = cache
                .iter()
                .map(|(k, _)| *k)
                .filter(|k| k.journal == journal)
                .collect();
            keys.iter().filter_map(|k| cache.pop(k)).collect()
        };
        drop(removed);
    }

    /// Files the cache holds open.
    pub fn open_count(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_most_its_capacity_and_reopens_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::new(2);
        let j = files.journal_id();
        let key = |segment| Key {
            journal: j,
            segment,
        };
        let path = |n: u64| dir.path().join(format!("{n}"));
        assert!(files.open(key(1), || path(1), false).is_err());
        let (_, created) = files.open(key(1), || path(1), true).unwrap();
        assert!(created);
        files.open(key(2), || path(2), true).unwrap();
        files.open(key(3), || path(3), true).unwrap();
        assert_eq!(files.open_count(), 2);
        // Evicted, then opened again without being created again.
        let (_, created) = files.open(key(1), || path(1), true).unwrap();
        assert!(!created);
        files.forget_journal(j);
        assert_eq!(files.open_count(), 0);
    }

    #[test]
    fn a_read_only_cache_neither_writes_nor_creates() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let files = Files::read_only(2);
        let j = files.journal_id();
        let key = |segment| Key {
            journal: j,
            segment,
        };
        let missing = dir.path().join("missing");
        assert!(files.open(key(1), || &missing, true).is_err());
        assert!(!missing.exists());
        let there = dir.path().join("there");
        std::fs::write(&there, b"records").unwrap();
        let (file, created) = files.open(key(2), || &there, true).unwrap();
        assert!(!created);
        assert!((&*file).write_all(b"more").is_err());
        assert_eq!(std::fs::read(&there).unwrap(), b"records");
    }
}
