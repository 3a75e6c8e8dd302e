//! The data directory as a whole: created if missing, checked writable, and
//! held by one server at a time.
//!
//! Two servers writing the same journals would each believe it owns them and
//! lose each other's items, so the server takes an exclusive `flock` on
//! `<data_dir>/LOCK` before it opens anything else and keeps it for its whole
//! life. The kernel drops the lock with the process, however it ends
//! (`kill -9` included), so a stale `LOCK` file never blocks a restart. The
//! file holds the owner's pid, for the message a second server prints.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Why the data directory cannot be used. Every message names the absolute
/// path.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("data directory {path} is in use by pid {pid}")]
    InUse { path: PathBuf, pid: String },
    #[error("data directory {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
}

/// The locked data directory; the lock lasts as long as this value.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates `path` if needed, checks that files can be written in it, and
    /// locks it.
    pub fn open(path: &Path) -> Result<DataDir, DataDirError> {
        let io_err = |what, source| DataDirError::Io {
            path: absolute(path),
            what,
            source,
        };
        fs::create_dir_all(path).map_err(|e| io_err("cannot create it", e))?;
        let path = fs::canonicalize(path).map_err(|e| io_err("cannot resolve it", e))?;
        let io_err = |what, source| DataDirError::Io {
            path: path.clone(),
            what,
            source,
        };
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path.join("LOCK"))
            .map_err(|e| io_err("cannot open its LOCK file", e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = lock.read_to_string(&mut pid);
                let pid = match pid.trim() {
                    "" => "unknown".to_string(),
                    p => p.to_string(),
                };
                return Err(DataDirError::InUse { path, pid });
            }
            Err(TryLockError::Error(e)) => return Err(io_err("cannot lock it", e)),
        }
        let write_pid = |f: &mut File| -> io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            writeln!(f, "{}", std::process::id())?;
            f.flush()
        };
        write_pid(&mut lock).map_err(|e| io_err("cannot write to it", e))?;
        // The LOCK file proves that files can be created and written; the
        // journals need directories too.
        let probe = path.join(".probe");
        fs::create_dir(&probe)
            .and_then(|()| fs::remove_dir(&probe))
            .or_else(|e| match e.kind() {
                // Left by a server that died between the two calls.
                io::ErrorKind::AlreadyExists => fs::remove_dir(&probe),
                _ => Err(e),
            })
            .map_err(|e| io_err("cannot create directories in it", e))?;
        Ok(DataDir { path, _lock: lock })
    }

    /// The directory's absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `path` made absolute without touching the file system (for messages about
/// a directory that may not exist).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_owner_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDir::open(&dir.path().join("data")).unwrap();
        assert!(first.path().is_absolute());
        match DataDir::open(&dir.path().join("data")) {
            Err(DataDirError::InUse { path, pid }) => {
                assert_eq!(path, first.path());
                assert_eq!(pid, std::process::id().to_string());
            }
            other => panic!("{other:?}"),
        }
        drop(first);
        DataDir::open(&dir.path().join("data")).unwrap();
    }

    #[test]
    fn an_unwritable_directory_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        fs::write(&file, b"").unwrap();
        let e = DataDir::open(&file.join("data")).unwrap_err().to_string();
        assert!(e.contains(&*file.to_string_lossy()), "{e}");
    }
}
