//! Checkpoints: the journal's state at a point of the log, so that a restart
//! replays only what came after it.
//!
//! Two files, `checkpoint.0` and `checkpoint.1`, written alternately (each
//! through a temporary file, fsync and rename): if the newer one is damaged,
//! the older one still describes a state from which replay is correct, and
//! the journal never reclaims a segment that either of them still needs.
//!
//! A checkpoint also carries the queue's name, so that a queue whose
//! directory name is a hash (a long name) can still be identified, and its
//! own length, so that bytes appended to the file by accident do not make
//! an intact checkpoint unreadable.
//!
//! ```text
//! v2 := magic:u32 version:u32=2 len:u32 name_len:u16 name state crc:u32
//!       (len counts everything before the crc; bytes after it are ignored)
//! v1 := magic:u32 version:u32=1 state crc:u32    (read only; crc ends the file)
//! state := generation replay_segment replay_offset next_seq created_ms live_bytes:u64…
//!          runs:u64 (start end)*  open:u64 (seq:u64 size:u32)*
//!          segments:u64 (id size first_add last_add live_bytes)*
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use bytes::{Buf, BufMut, BytesMut};

use super::runs::Runs;

const MAGIC: u32 = 0x4b51_434b; // "KQCK"
const VERSION: u32 = 2;

/// What the journal knows about one segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentInfo {
    /// Bytes appended to it.
    pub size: u64,
    /// Sequence numbers of the first and last ADD in it, if any.
    pub adds: Option<(u64, u64)>,
    /// Bytes of the ADD records in it whose items are still live.
    pub live_bytes: u64,
}

/// Where replay starts: a segment and an offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// A checkpoint's contents.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// The queue's name (empty in a version-1 checkpoint).
    pub name: String,
    pub generation: u64,
    pub replay_from: Position,
    pub next_seq: u64,
    pub created_ms: i64,
    pub live_bytes: u64,
    pub live: Runs,
    /// Open items (sequence number, size): rolled back on recovery.
    pub open: BTreeMap<u64, u32>,
    pub segments: BTreeMap<u64, SegmentInfo>,
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_u32_le(MAGIC);
        out.put_u32_le(VERSION);
        out.put_u32_le(0); // length, filled in below
        let name = &self.name.as_bytes()[..self.name.len().min(u16::MAX as usize)];
        out.put_u16_le(name.len() as u16);
        out.put_slice(name);
        out.put_u64_le(self.generation);
        out.put_u64_le(self.replay_from.segment);
        out.put_u64_le(self.replay_from.offset);
        out.put_u64_le(self.next_seq);
        out.put_i64_le(self.created_ms);
        out.put_u64_le(self.live_bytes);
        out.put_u64_le(self.live.run_count() as u64);
        for (start, end) in self.live.runs() {
            out.put_u64_le(start);
            out.put_u64_le(end);
        }
        out.put_u64_le(self.open.len() as u64);
        for (&seq, &size) in &self.open {
            out.put_u64_le(seq);
            out.put_u32_le(size);
        }
        out.put_u64_le(self.segments.len() as u64);
        for (&id, s) in &self.segments {
            out.put_u64_le(id);
            out.put_u64_le(s.size);
            let (first, last) = s.adds.unwrap_or((u64::MAX, u64::MAX));
            out.put_u64_le(first);
            out.put_u64_le(last);
            out.put_u64_le(s.live_bytes);
        }
        let len = out.len() as u32;
        out[8..12].copy_from_slice(&len.to_le_bytes());
        let crc = crc32c::crc32c(&out);
        out.put_u32_le(crc);
        out.to_vec()
    }

    /// Decodes a checkpoint; `None` if it is damaged or not one.
    pub fn decode(bytes: &[u8]) -> Option<Checkpoint> {
        let mut head = bytes.get(..8)?;
        if head.get_u32_le() != MAGIC {
            return None;
        }
        let (body, name) = match head.get_u32_le() {
            1 => {
                let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
                check_crc(body, crc)?;
                (&body[8..], String::new())
            }
            2 => {
                let len = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?) as usize;
                let body = bytes.get(..len)?;
                check_crc(body, bytes.get(len..len.checked_add(4)?)?)?;
                let mut b = body.get(12..)?;
                let name_len = usize::from(u16::from_le_bytes(b.get(..2)?.try_into().ok()?));
                let name = String::from_utf8(b.get(2..2 + name_len)?.to_vec()).ok()?;
                b.advance(2 + name_len);
                (b, name)
            }
            _ => return None,
        };
        let mut c = decode_state(body)?;
        c.name = name;
        Some(c)
    }
}

fn check_crc(body: &[u8], crc: &[u8]) -> Option<()> {
    (crc32c::crc32c(body) == u32::from_le_bytes(crc.try_into().ok()?)).then_some(())
}

/// Decodes the state that follows the header, which must end exactly with it.
fn decode_state(mut b: &[u8]) -> Option<Checkpoint> {
    let need = |b: &[u8], n: u64| (b.len() as u64 >= n).then_some(());
    need(b, 56)?;
    let mut c = Checkpoint {
        generation: b.get_u64_le(),
        replay_from: Position {
            segment: b.get_u64_le(),
            offset: b.get_u64_le(),
        },
        next_seq: b.get_u64_le(),
        created_ms: b.get_i64_le(),
        live_bytes: b.get_u64_le(),
        ..Checkpoint::default()
    };
    let runs = b.get_u64_le();
    need(b, runs.checked_mul(16)?)?;
    c.live = Runs::from_runs((0..runs).map(|_| (b.get_u64_le(), b.get_u64_le())));
    need(b, 8)?;
    let open = b.get_u64_le();
    need(b, open.checked_mul(12)?)?;
    c.open = (0..open)
        .map(|_| (b.get_u64_le(), b.get_u32_le()))
        .collect();
    need(b, 8)?;
    let segments = b.get_u64_le();
    need(b, segments.checked_mul(40)?)?;
    for _ in 0..segments {
        let id = b.get_u64_le();
        let size = b.get_u64_le();
        let (first, last) = (b.get_u64_le(), b.get_u64_le());
        let live_bytes = b.get_u64_le();
        let adds = (first != u64::MAX).then_some((first, last));
        c.segments.insert(
            id,
            SegmentInfo {
                size,
                adds,
                live_bytes,
            },
        );
    }
    b.is_empty().then_some(c)
}

fn slot_path(dir: &Path, generation: u64) -> std::path::PathBuf {
    dir.join(FILES[(generation % 2) as usize])
}

/// The file names of the two checkpoint slots.
pub const FILES: [&str; 2] = ["checkpoint.0", "checkpoint.1"];

/// The temporary file a checkpoint is written into before it replaces one.
pub const TMP: &str = "checkpoint.tmp";

/// A checkpoint file as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its name in the directory.
    pub file: String,
    /// Its size, or why it could not be read.
    pub size: Result<u64, String>,
    /// What it holds, if it is an intact checkpoint.
    pub contents: Option<Checkpoint>,
}

/// Reads the checkpoint files among `present` (file names in `dir`),
/// intact or not.
pub fn read(dir: &Path, present: &[String]) -> Vec<Stored> {
    present
        .iter()
        .filter(|name| FILES.contains(&name.as_str()))
        .map(|name| match fs::read(dir.join(name)) {
            Ok(bytes) => Stored {
                file: name.clone(),
                size: Ok(bytes.len() as u64),
                contents: Checkpoint::decode(&bytes),
            },
            Err(e) => Stored {
                file: name.clone(),
                size: Err(e.to_string()),
                contents: None,
            },
        })
        .collect()
}

/// The intact checkpoints among `stored`, newest first: the first is the
/// one recovery starts from.
pub fn newest_first(stored: Vec<Stored>) -> Vec<Checkpoint> {
    let mut found: Vec<Checkpoint> = stored.into_iter().filter_map(|s| s.contents).collect();
    found.sort_by_key(|c| std::cmp::Reverse(c.generation));
    found
}

/// The valid checkpoints among `present` (file names in `dir`), newest first.
pub fn load(dir: &Path, present: &[String]) -> Vec<Checkpoint> {
    newest_first(read(dir, present))
}

/// Writes `c` durably into the slot of its generation (replacing the older
/// of the two checkpoints).
pub fn store(dir: &Path, c: &Checkpoint) -> io::Result<()> {
    let tmp = dir.join(TMP);
    super::disk::replace(dir, &tmp, &slot_path(dir, c.generation), &c.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            name: "Jobs+audit".into(),
            generation: 7,
            replay_from: Position {
                segment: 3,
                offset: 4096,
            },
            next_seq: 1000,
            created_ms: 1_700_000_000_000,
            live_bytes: 12345,
            live: Runs::from_runs([(5, 10), (20, 1000)]),
            open: [(5, 3), (7, 9)].into_iter().collect(),
            segments: [
                (
                    1,
                    SegmentInfo {
                        size: 100,
                        adds: Some((1, 9)),
                        live_bytes: 50,
                    },
                ),
                (
                    3,
                    SegmentInfo {
                        size: 8192,
                        adds: None,
                        live_bytes: 0,
                    },
                ),
            ]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn round_trips_and_rejects_damage() {
        let bytes = sample().encode();
        assert_eq!(Checkpoint::decode(&bytes), Some(sample()));
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            assert_eq!(Checkpoint::decode(&damaged), None, "byte {i}");
        }
        assert_eq!(Checkpoint::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(Checkpoint::decode(&[]), None);
    }

    #[test]
    fn bytes_appended_after_a_checkpoint_are_ignored() {
        let mut bytes = sample().encode();
        bytes.extend_from_slice(&[0xa5; 37]);
        assert_eq!(Checkpoint::decode(&bytes), Some(sample()));
    }

    #[test]
    fn reads_version_one() {
        // Version 1: no length and no name; the crc ends the file.
        let v2 = sample().encode();
        let name_len = 2 + sample().name.len();
        let mut v1 = Vec::new();
        v1.extend_from_slice(&MAGIC.to_le_bytes());
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&v2[12 + name_len..v2.len() - 4]);
        let crc = crc32c::crc32c(&v1);
        v1.extend_from_slice(&crc.to_le_bytes());
        let read = Checkpoint::decode(&v1).unwrap();
        assert_eq!(
            read,
            Checkpoint {
                name: String::new(),
                ..sample()
            }
        );
    }

    #[test]
    fn newest_valid_checkpoint_wins() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = sample();
        store(dir.path(), &c).unwrap();
        c.generation = 8;
        c.next_seq = 2000;
        store(dir.path(), &c).unwrap();
        let both = FILES.map(String::from);
        let found = load(dir.path(), &both);
        assert_eq!(
            found.iter().map(|c| c.generation).collect::<Vec<_>>(),
            [8, 7]
        );
        // Damage the newer one: the older is still there.
        fs::write(dir.path().join("checkpoint.0"), b"garbage").unwrap();
        assert_eq!(
            load(dir.path(), &both)
                .iter()
                .map(|c| c.generation)
                .collect::<Vec<_>>(),
            [7]
        );
    }
}
