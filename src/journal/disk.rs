//! Every write, fsync, truncation and rename the journal makes, in one place.
//!
//! One place so that fsyncs are counted (`journal_fsyncs` in the stats: the
//! only way to see from outside that `sync_journal = always` fsyncs before
//! each acknowledgement and an interval does not), and so that tests can
//! make any one of these calls fail or stop short ([`faults`]) to put a
//! crash or a full disk at an exact point instead of racing a timer.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// fsyncs of journal files and directories made by this process.
static FSYNCS: AtomicU64 = AtomicU64::new(0);

/// How many fsyncs (of segments, checkpoints and journal directories) this
/// process has made.
pub fn fsyncs() -> u64 {
    FSYNCS.load(Ordering::Relaxed)
}

fn synced<T>(result: io::Result<T>) -> io::Result<T> {
    FSYNCS.fetch_add(1, Ordering::Relaxed);
    result
}

/// Appends `bytes` to `file`, a segment (opened for append) of the journal in
/// `dir`.
pub fn append(file: &File, dir: &Path, bytes: &[u8]) -> io::Result<()> {
    #[cfg(test)]
    if let Some(fault) = faults::take(dir, faults::Op::Write) {
        return faults::write_short(file, bytes, fault);
    }
    #[cfg(not(test))]
    let _ = dir;
    let mut file = file;
    file.write_all(bytes)
}

/// fsyncs the data of `file`, which is `path`.
pub fn sync_data(file: &File, path: &Path) -> io::Result<()> {
    #[cfg(test)]
    if let Some(fault) = faults::take(path, faults::Op::Sync) {
        return Err(fault.error());
    }
    synced(file.sync_data())?;
    #[cfg(test)]
    faults::note_synced(path, file.metadata()?.len());
    #[cfg(not(test))]
    let _ = path;
    Ok(())
}

/// fsyncs a directory, so that the names created, renamed or removed in it
/// survive a power failure.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    if let Some(fault) = faults::take(dir, faults::Op::Sync) {
        return Err(fault.error());
    }
    synced(File::open(dir)?.sync_all())
}

/// Cuts `path` to `len` bytes and makes that durable.
pub fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let f = fs::OpenOptions::new().write(true).open(path)?;
    f.set_len(len)?;
    synced(f.sync_all())?;
    #[cfg(test)]
    faults::note_synced(path, len);
    Ok(())
}

/// Cuts the end of a write that failed half-way off `file`, so that it ends
/// with whole records. Best effort: recovery cuts a torn tail anyway.
pub fn cut(file: &File, len: u64) {
    let _ = file.set_len(len);
}

/// Replaces `target` (in `dir`) by a file holding `bytes`, atomically and
/// durably: written to `tmp`, fsynced, renamed over `target`, and the
/// directory fsynced. A crash at any point leaves either the old or the new
/// file whole.
pub fn replace(dir: &Path, tmp: &Path, target: &Path, bytes: &[u8]) -> io::Result<()> {
    {
        let mut f = File::create(tmp)?;
        #[cfg(test)]
        if let Some(fault) = faults::take(tmp, faults::Op::Write) {
            return faults::write_short(&f, bytes, fault);
        }
        f.write_all(bytes)?;
        #[cfg(test)]
        if let Some(fault) = faults::take(tmp, faults::Op::Sync) {
            return Err(fault.error());
        }
        synced(f.sync_all())?;
    }
    #[cfg(test)]
    if let Some(fault) = faults::take(target, faults::Op::Rename) {
        return Err(fault.error());
    }
    fs::rename(tmp, target)?;
    sync_dir(dir)?;
    #[cfg(test)]
    faults::note_synced(target, bytes.len() as u64);
    Ok(())
}

/// Removes a segment file; one that is already gone is fine.
pub fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    #[cfg(test)]
    faults::forget(path);
    Ok(())
}

/// Faults for tests: arm one for the files under a directory, and the next
/// matching call there fails (or, for a write, stores only a prefix first).
/// Also remembers, per file, the length at its last fsync, so that a test
/// can simulate a power failure by cutting every file back to it.
#[cfg(test)]
pub mod faults {
    use std::collections::HashMap;
    use std::fs::File;
    use std::io::{self, Write};
    use std::path::{Path, PathBuf};
    use std::sync::{LazyLock, Mutex, MutexGuard};

    /// The kind of call a fault hits.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Op {
        Write,
        Sync,
        Rename,
    }

    /// What the call does instead of succeeding.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Fault {
        /// Fails with this OS error (e.g. `libc::ENOSPC`, `libc::EIO`).
        Fail(i32),
        /// A write stores at most this many bytes, then fails with ENOSPC.
        Short(usize),
    }

    impl Fault {
        pub(super) fn error(self) -> io::Error {
            match self {
                Fault::Fail(errno) => io::Error::from_raw_os_error(errno),
                Fault::Short(_) => io::Error::from_raw_os_error(libc::ENOSPC),
            }
        }
    }

    struct Armed {
        under: PathBuf,
        op: Op,
        /// Matching calls still to let through before firing.
        skip: u32,
        fault: Fault,
    }

    #[derive(Default)]
    struct Registry {
        armed: Vec<Armed>,
        fired: HashMap<PathBuf, u64>,
        synced: HashMap<PathBuf, u64>,
    }

    fn registry() -> MutexGuard<'static, Registry> {
        static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);
        REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the call `op` on a file under `under` fail after `skip`
    /// matching calls have gone through. Faults fire once each.
    pub fn arm(under: &Path, op: Op, skip: u32, fault: Fault) {
        registry().armed.push(Armed {
            under: under.to_path_buf(),
            op,
            skip,
            fault,
        });
    }

    /// Removes the faults armed under `under` that have not fired.
    pub fn disarm(under: &Path) {
        registry().armed.retain(|a| !a.under.starts_with(under));
    }

    /// How many faults have fired under `under`.
    pub fn fired(under: &Path) -> u64 {
        registry()
            .fired
            .iter()
            .filter(|(p, _)| p.starts_with(under))
            .map(|(_, n)| n)
            .sum()
    }

    /// The length `path` had at its last fsync in this process, if any.
    pub fn synced_len(path: &Path) -> Option<u64> {
        registry().synced.get(path).copied()
    }

    pub(super) fn take(path: &Path, op: Op) -> Option<Fault> {
        let mut r = registry();
        let i = r.armed.iter_mut().position(|a| {
            a.op == op && path.starts_with(&a.under) && {
                let due = a.skip == 0;
                a.skip = a.skip.saturating_sub(1);
                due
            }
        })?;
        let armed = r.armed.remove(i);
        *r.fired.entry(armed.under).or_default() += 1;
        Some(armed.fault)
    }

    pub(super) fn write_short(file: &File, bytes: &[u8], fault: Fault) -> io::Result<()> {
        if let Fault::Short(n) = fault {
            let mut file = file;
            file.write_all(&bytes[..n.min(bytes.len())])?;
        }
        Err(fault.error())
    }

    pub(super) fn note_synced(path: &Path, len: u64) {
        registry().synced.insert(path.to_path_buf(), len);
    }

    pub(super) fn forget(path: &Path) {
        registry().synced.remove(path);
    }
}
