//! Where queues live on disk: one directory per queue under
//! `<data_dir>/queues/`, and the rules that keep a queue's identity and its
//! records from ever being mixed up with another's.
//!
//! - **The directory name is the queue name**, with every byte outside
//!   `[a-z0-9_-]` written `%XX` (so names differ on case-insensitive file
//!   systems too): reversible, so one damaged file cannot make a queue
//!   forget its name. A name whose encoding is too long for a file name is
//!   shortened with a hash (`…~<hash>`); its real name is kept in a `NAME`
//!   file and in every checkpoint, and any one copy that hashes back to the
//!   directory name identifies it.
//! - **A directory whose queue cannot be identified is moved aside**, to
//!   `<dir>.unreadable-<unix time>`, with an ERROR saying what to do; it is
//!   never reused for a new queue.
//! - **Creation and deletion are atomic**: a queue directory appears by one
//!   `mkdir` (or, for a hashed name, by renaming a complete temporary
//!   directory into place) and disappears by one `rename` to
//!   `<dir>.deleted-<n>`, removed in the background. A crash or a full disk
//!   in between leaves a name with a `.` in it, which no queue can have, and
//!   which the next start removes.
//! - **Never two writers**: creating a queue whose directory already exists
//!   fails instead of writing into it.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::name;

/// Suffix of a directory moved aside because its queue could not be identified.
pub const UNREADABLE: &str = ".unreadable-";
/// Suffix of a deleted queue's directory, until it is removed.
const DELETED: &str = ".deleted-";
/// Suffix of a directory being created.
const CREATING: &str = ".creating";
/// The file holding a hashed directory's queue name.
pub const NAME_FILE: &str = "NAME";
/// Encoded names longer than this are shortened with a hash.
const MAX_DIR_NAME: usize = 200;

/// The directory name for `queue`'s journal.
pub fn dir_name(queue: &str) -> String {
    let mut out = String::new();
    for b in queue.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    if out.len() > MAX_DIR_NAME {
        // FNV-1a: any stable hash keeps long names apart.
        let hash = queue.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let mut cut = 160;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        let _ = write!(out, "~{hash:016x}");
    }
    out
}

/// The queue name a directory name stands for, if the name is not hashed.
pub fn decode(dir: &str) -> Option<String> {
    if dir.contains('~') {
        return None;
    }
    let mut bytes = Vec::with_capacity(dir.len());
    let mut rest = dir.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// Whether `candidate` is the queue that lives in directory `dir`.
fn is_name_of(candidate: &str, dir: &str) -> bool {
    name::validate(candidate).is_ok() && dir_name(candidate) == dir
}

/// The directory of every queue.
#[derive(Debug)]
pub struct QueueDirs {
    root: PathBuf,
}

/// A queue directory found at startup.
#[derive(Debug)]
pub struct Found {
    pub name: String,
    pub path: PathBuf,
}

impl QueueDirs {
    /// Opens `root` (created if needed), clears what interrupted creations
    /// and deletions left, moves aside directories that cannot be
    /// identified, and returns the queues found.
    pub fn open(root: PathBuf) -> io::Result<(QueueDirs, Vec<Found>)> {
        fs::create_dir_all(&root).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot create {}: {e}", root.display()))
        })?;
        let dirs = QueueDirs { root };
        let mut found = Vec::new();
        let mut aside = 0;
        for entry in fs::read_dir(&dirs.root)? {
            let entry = entry?;
            let Ok(dir) = entry.file_name().into_string() else {
                continue;
            };
            let path = entry.path();
            if dir.contains(DELETED) || dir.ends_with(CREATING) {
                tracing::debug!(dir = %path.display(), "removing what an interrupted deletion or creation left");
                if let Err(e) = fs::remove_dir_all(&path) {
                    tracing::warn!(dir = %path.display(), error = %e, "cannot remove a leftover directory");
                }
                continue;
            }
            if dir.contains(UNREADABLE) {
                aside += 1;
                continue;
            }
            if dir.contains('.') || !entry.file_type()?.is_dir() {
                continue;
            }
            match identify(&path, &dir) {
                Some(name) => found.push(Found { name, path }),
                None => dirs.move_aside(&path),
            }
        }
        if aside > 0 {
            tracing::warn!(
                count = aside,
                dir = %dirs.root.display(),
                "directories moved aside earlier ({UNREADABLE}…) are still there; see docs/operations.md"
            );
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((dirs, found))
    }

    /// The directory `queue` lives in.
    pub fn path(&self, queue: &str) -> PathBuf {
        self.root.join(dir_name(queue))
    }

    /// Makes the directory of a new queue, durably at once if `sync`. Fails
    /// if it exists: whatever is in it belongs to someone else.
    pub fn create(&self, queue: &str, sync: bool) -> io::Result<PathBuf> {
        let dir = dir_name(queue);
        let path = self.root.join(&dir);
        if decode(&dir).is_some() {
            fs::create_dir(&path).map_err(|e| already(e, &path))?;
        } else {
            // A hashed name needs its NAME file from the first moment.
            let tmp = self.root.join(format!("{dir}{CREATING}"));
            let _ = fs::remove_dir_all(&tmp);
            let made = fs::create_dir(&tmp)
                .and_then(|()| fs::write(tmp.join(NAME_FILE), queue))
                .and_then(|()| match fs::symlink_metadata(&path) {
                    Ok(_) => Err(io::ErrorKind::AlreadyExists.into()),
                    Err(_) => fs::rename(&tmp, &path),
                });
            if let Err(e) = made {
                let _ = fs::remove_dir_all(&tmp);
                return Err(already(e, &path));
            }
        }
        if sync {
            fs::File::open(&self.root)?.sync_all()?;
        }
        Ok(path)
    }

    /// Empties a queue's directory for a fresh journal: the old one is
    /// renamed away and removed in the background, and a new one made. On a
    /// full disk, where the new one may need the old one's space, the old
    /// one is removed first.
    pub fn replace(&self, queue: &str, sync: bool) -> io::Result<PathBuf> {
        let path = self.path(queue);
        let doomed = doomed(&path);
        fs::rename(&path, &doomed)?;
        match self.create(queue, sync) {
            Ok(path) => {
                background(move || remove(&doomed));
                Ok(path)
            }
            Err(_) => {
                remove(&doomed);
                self.create(queue, sync)
            }
        }
    }

    /// Removes a queue's directory: at once from view (one rename), its
    /// files in the background.
    pub fn discard(&self, path: &Path) {
        let doomed = doomed(path);
        let target = match fs::rename(path, &doomed) {
            Ok(()) => doomed,
            Err(e) => {
                tracing::warn!(dir = %path.display(), error = %e, "cannot rename a deleted queue's directory; removing it in place");
                path.to_path_buf()
            }
        };
        background(move || remove(&target));
    }

    /// Moves a directory that cannot be identified out of the way.
    fn move_aside(&self, path: &Path) {
        let secs = crate::clock::now_ms() / 1000;
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!("{UNREADABLE}{secs}"));
        let aside = PathBuf::from(aside);
        match fs::rename(path, &aside) {
            Ok(()) => tracing::error!(
                dir = %path.display(),
                moved_to = %aside.display(),
                "cannot tell which queue this directory belongs to (its name does not decode and no NAME \
                 or checkpoint file names it); moved aside, its items are not served. To restore it, stop \
                 the server, write the queue's name into a NAME file in it and move it back; see \
                 docs/operations.md"
            ),
            Err(e) => tracing::error!(
                dir = %path.display(),
                error = %e,
                "cannot tell which queue this directory belongs to, nor move it aside; it is ignored"
            ),
        }
    }
}

/// The queue whose directory `path` is, identified as at startup; a
/// directory moved aside (`…{UNREADABLE}…`) or on its way out
/// (`…{DELETED}…`) is identified under the name it had.
pub fn queue_in(path: &Path) -> Option<String> {
    let dir = path.file_name()?.to_str()?;
    // No queue's directory name has a '.': what follows one was added.
    let had = dir.split('.').next()?;
    identify(path, had)
}

/// The name of the queue in `path` (directory name `dir`), from the first
/// copy that hashes back to the directory name: the name itself, the `NAME`
/// file, then the checkpoints.
fn identify(path: &Path, dir: &str) -> Option<String> {
    if let Some(name) = decode(dir) {
        return is_name_of(&name, dir).then_some(name);
    }
    let from_file = fs::read(path.join(NAME_FILE))
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    from_file
        .into_iter()
        .chain(crate::journal::stored_names(path))
        .find(|candidate| is_name_of(candidate, dir))
}

fn already(e: io::Error, path: &Path) -> io::Error {
    match e.kind() {
        io::ErrorKind::AlreadyExists => io::Error::new(
            e.kind(),
            format!(
                "{} already exists and belongs to no known queue; refusing to write into it",
                path.display()
            ),
        ),
        _ => e,
    }
}

/// A fresh name for a directory on its way out: skipped, and removed if
/// still there, at the next start.
fn doomed(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut doomed = path.as_os_str().to_owned();
    doomed.push(format!(
        "{DELETED}{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    PathBuf::from(doomed)
}

fn remove(dir: &Path) {
    if let Err(e) = fs::remove_dir_all(dir) {
        tracing::error!(dir = %dir.display(), error = %e, "cannot remove a deleted queue's files; remove them by hand");
    }
}

/// Runs blocking cleanup off the caller's path: on the runtime's blocking
/// pool when there is one, else in place.
fn background(f: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn_blocking(f);
        }
        Err(_) => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_names_are_safe_distinct_and_reversible() {
        assert_eq!(dir_name("jobs-1_x"), "jobs-1_x");
        assert_eq!(dir_name("Jobs"), "%4Aobs");
        assert_eq!(dir_name("a+b"), "a%2Bb");
        assert_eq!(dir_name("é"), "%C3%A9");
        for name in ["jobs-1_x", "Jobs", "a+b", "é", "Q%41"] {
            assert_eq!(decode(&dir_name(name)).as_deref(), Some(name));
        }
        let long_a = "A".repeat(255);
        let long_b = format!("{}B", "A".repeat(254));
        assert!(dir_name(&long_a).len() <= MAX_DIR_NAME && dir_name(&long_a) != dir_name(&long_b));
        assert_eq!(decode(&dir_name(&long_a)), None);
        // Not canonical, so not a queue's directory.
        assert!(!is_name_of(&decode("%4aobs").unwrap(), "%4aobs"));
    }

    #[test]
    fn a_directory_is_identified_by_its_path_even_once_moved_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let (dirs, _) = QueueDirs::open(tmp.path().join("queues")).unwrap();
        let long = "H".repeat(250);
        let hashed = dirs.create(&long, false).unwrap();
        assert_eq!(
            queue_in(&dirs.create("Jobs", false).unwrap()).as_deref(),
            Some("Jobs")
        );
        assert_eq!(queue_in(&hashed).as_deref(), Some(long.as_str()));
        let mut aside = hashed.clone().into_os_string();
        aside.push(format!("{UNREADABLE}1700000000"));
        fs::rename(&hashed, &aside).unwrap();
        assert_eq!(queue_in(Path::new(&aside)).as_deref(), Some(long.as_str()));
        assert_eq!(
            queue_in(&tmp.path().join("queues")).as_deref(),
            Some("queues")
        );
        assert_eq!(queue_in(&tmp.path().join("Not%41queue")), None);
    }

    #[test]
    fn a_replaced_directory_is_empty_and_keeps_its_identity() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("queues");
        let (dirs, _) = QueueDirs::open(root.clone()).unwrap();
        let long = "R".repeat(250);
        for name in ["plain", long.as_str()] {
            let path = dirs.create(name, false).unwrap();
            fs::write(path.join("0000000000000001.log"), b"old records").unwrap();
            assert_eq!(dirs.replace(name, false).unwrap(), path);
            let left: Vec<_> = fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|f| f != NAME_FILE)
                .collect();
            assert!(left.is_empty(), "{left:?}");
        }
        // Outside a runtime the old directories are removed at once; the
        // replaced ones are found again under their names.
        assert_eq!(fs::read_dir(&root).unwrap().count(), 2);
        let (_, found) = QueueDirs::open(root).unwrap();
        let mut names: Vec<String> = found.into_iter().map(|f| f.name).collect();
        names.sort();
        assert_eq!(names, [long.clone(), "plain".to_string()]);
    }

    #[test]
    fn unidentifiable_directories_are_moved_aside_and_leftovers_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("queues");
        let (dirs, found) = QueueDirs::open(root.clone()).unwrap();
        assert!(found.is_empty());
        let long = "L".repeat(250);
        for q in ["jobs", "Jobs", &long] {
            dirs.create(q, false).unwrap();
        }
        assert!(
            dirs.create("jobs", false).is_err(),
            "never into an existing directory"
        );
        // A hashed directory whose NAME is damaged, and no checkpoint.
        let other = "M".repeat(250);
        let hashed = root.join(dir_name(&other));
        fs::create_dir(&hashed).unwrap();
        fs::write(hashed.join(NAME_FILE), "garbage").unwrap();
        fs::create_dir(root.join(format!("x{DELETED}1-1"))).unwrap();
        fs::create_dir(root.join(format!("y{CREATING}"))).unwrap();
        let (_, found) = QueueDirs::open(root.clone()).unwrap();
        let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["Jobs", &long, "jobs"]);
        let left: Vec<String> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains('.'))
            .collect();
        assert_eq!(left.len(), 1);
        assert!(left[0].starts_with(&format!("{}{UNREADABLE}", dir_name(&other))));
    }
}
