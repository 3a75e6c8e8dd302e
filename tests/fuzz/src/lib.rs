//! Helpers the fuzz targets share.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Cuts `data` into the pieces a socket might deliver it in: each byte of
/// `cuts` says how long the next piece is (1 to 256 bytes), and the rest
/// comes in one piece. So one input tests both what is said and how it
/// arrives.
pub fn pieces<'a>(data: &'a [u8], cuts: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    for &cut in cuts {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at((usize::from(cut) + 1).min(rest.len()));
        out.push(piece);
        rest = tail;
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// Splits an input into a header of `n` bytes (zero-padded when short) and
/// the rest.
pub fn split_header<const N: usize>(data: &[u8]) -> ([u8; N], &[u8]) {
    let mut header = [0u8; N];
    let n = N.min(data.len());
    header[..n].copy_from_slice(&data[..n]);
    (header, &data[n..])
}

/// A scratch directory of this process on tmpfs (so thousands of journal
/// recoveries a second cost no disk), emptied before each use.
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        // run.sh names one (and removes it after); by hand, a per-process one.
        let dir = match std::env::var_os("KESTREL_FUZZ_SCRATCH") {
            Some(dir) => PathBuf::from(dir),
            None if Path::new("/dev/shm").is_dir() => {
                PathBuf::from(format!("/dev/shm/kestrel-fuzz-{}", std::process::id()))
            }
            None => std::env::temp_dir().join(format!("kestrel-fuzz-{}", std::process::id())),
        };
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    });
    for entry in std::fs::read_dir(dir).expect("scratch directory") {
        std::fs::remove_file(entry.expect("entry").path()).expect("remove");
    }
    dir
}

/// Fills in the CRC32C of every record that `bytes` frames, front to back,
/// until a length does not fit: random bytes almost never carry a right
/// checksum, and without this the fuzzer would never get past it to the
/// code behind.
pub fn fix_record_crcs(bytes: &mut [u8]) {
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        if len == 0 || at + 8 + len > bytes.len() {
            break;
        }
        let crc = crc32c::crc32c_append(
            crc32c::crc32c(&bytes[at..at + 4]),
            &bytes[at + 8..at + 8 + len],
        );
        bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        at += 8 + len;
    }
}

/// Recovery of the journal in `dir` through the real `Journal::recover`,
/// then every live item read back from disk through read-behind: the
/// recovery's figures, the items in the order they come back, and how many
/// live items read-behind could not find.
pub fn recover(
    dir: &Path,
) -> (
    kestrel::journal::Recovery,
    Vec<kestrel::journal::StoredItem>,
    u64,
) {
    use kestrel::config::{JournalConfig, SyncMode};
    use kestrel::journal::{Journal, Journals};
    let config = JournalConfig {
        sync: SyncMode::Never,
        segment_size: 1 << 20,
    };
    let journals = Journals::new(4);
    let (mut journal, recovery) =
        Journal::recover(dir, config, "fuzz", &journals).expect("recovery on tmpfs");
    let read = journal
        .read_items(0, u64::MAX, 0)
        .expect("read-behind on tmpfs");
    (recovery, read.items, read.lost)
}

/// Recovers `dir` again and asserts it gives what the first recovery gave:
/// whatever recovery cut from a damaged file, what it left is stable.
pub fn assert_recovers_the_same(
    dir: &Path,
    first: &kestrel::journal::Recovery,
    items: &[kestrel::journal::StoredItem],
) {
    let (again, items_again, _) = recover(dir);
    assert_eq!(
        (again.next_seq, again.items, again.bytes, again.first_live),
        (first.next_seq, first.items, first.bytes, first.first_live)
    );
    assert_eq!(items_again, items, "a second recovery differs");
}

/// The name of segment 1's file.
pub const SEGMENT: &str = "0000000000000001.log";
