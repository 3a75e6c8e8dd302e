//! Walking one Kestrel journal file from start to end (or to its first
//! damaged record), feeding each record to a [`Replay`]. Reads go through
//! one buffer of [`CHUNK`] bytes: headers are parsed in it, and payloads
//! are stepped over, so the file is read once, sequentially, and nothing
//! is allocated per record.

use std::fs::File;
use std::io::{self, Read};

use super::record::{self, Damage, MAX_HEADER};
use super::replay::Replay;

/// Bytes read from the file at a time.
const CHUNK: usize = 1 << 20;

/// How a walk ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Walked {
    /// The file's length.
    pub len: u64,
    /// Bytes of whole records replayed.
    pub read: u64,
    /// Where replay stopped, and why, if before the end.
    pub damage: Option<(u64, Damage)>,
}

/// Replays the records of `file` (number `index` in its queue's replay
/// order) into `replay`; `progress` hears of bytes as they are read.
pub fn walk(
    mut file: &File,
    index: u32,
    replay: &mut Replay,
    now_ms: i64,
    progress: &dyn Fn(u64),
) -> io::Result<Walked> {
    let len = file.metadata()?.len();
    let mut buf = vec![0u8; CHUNK];
    // buf[start..end] holds the file's bytes from `pos` on.
    let (mut start, mut end, mut pos) = (0usize, 0usize, 0u64);
    let mut filled = 0u64;
    while pos < len {
        if end - start < MAX_HEADER && filled < len {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
            while end < buf.len() && filled < len {
                let n = file.read(&mut buf[end..])?;
                if n == 0 {
                    break;
                }
                end += n;
                filled += n as u64;
                progress(n as u64);
            }
        }
        let (rec, rec_len) = match record::parse(&buf[start..end], len - pos) {
            Ok(parsed) => parsed,
            Err(damage) => {
                return Ok(Walked {
                    len,
                    read: pos,
                    damage: Some((pos, damage)),
                });
            }
        };
        replay.apply(rec, index, pos, now_ms);
        pos += rec_len;
        let in_buf = (end - start) as u64;
        if rec_len <= in_buf {
            start += rec_len as usize;
        } else {
            // The payload runs past the buffer: step over the rest of it.
            let skip = rec_len - in_buf;
            start = 0;
            end = 0;
            let mut left = skip;
            while left > 0 {
                let n = (&mut file).take(left).read(&mut buf)?;
                if n == 0 {
                    break;
                }
                left -= n as u64;
                filled += n as u64;
                progress(n as u64);
            }
        }
    }
    Ok(Walked {
        len,
        read: pos,
        damage: None,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::super::record::op;
    use super::*;

    fn addx(data: &[u8]) -> Vec<u8> {
        let mut r = vec![op::ADDX];
        r.extend((data.len() as i32 + 16).to_le_bytes());
        r.extend(7i64.to_le_bytes());
        r.extend(0i64.to_le_bytes());
        r.extend(data);
        r
    }

    fn walk_bytes(bytes: &[u8]) -> (Walked, Vec<u32>) {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        std::io::Seek::rewind(&mut file).unwrap();
        let mut replay = Replay::default();
        let walked = walk(&file, 0, &mut replay, 0, &|_| {}).unwrap();
        let lens = replay.finish().items.iter().map(|i| i.len).collect();
        (walked, lens)
    }

    #[test]
    fn payloads_bigger_than_the_buffer_are_stepped_over() {
        let mut bytes = addx(&vec![1u8; CHUNK * 2 + 5]);
        bytes.extend(addx(b"small"));
        bytes.push(op::REMOVE);
        let (walked, lens) = walk_bytes(&bytes);
        assert_eq!(walked.damage, None);
        assert_eq!(walked.read, bytes.len() as u64);
        assert_eq!(lens, [5]);
    }

    #[test]
    fn many_small_records_across_buffer_boundaries() {
        let mut bytes = Vec::new();
        for i in 0..100_000u32 {
            bytes.extend(addx(&i.to_le_bytes()));
        }
        bytes.extend(std::iter::repeat_n(op::REMOVE, 99_999));
        let (walked, lens) = walk_bytes(&bytes);
        assert_eq!((walked.damage, lens), (None, vec![4]));
    }

    #[test]
    fn a_torn_tail_or_a_bad_opcode_stops_at_the_last_whole_record() {
        let mut bytes = addx(b"one");
        let good = bytes.len() as u64;
        bytes.extend(&addx(b"two")[..10]);
        let (walked, lens) = walk_bytes(&bytes);
        assert_eq!(walked.damage, Some((good, Damage::Truncated)));
        assert_eq!(walked.read, good);
        assert_eq!(lens, [3]);
        let mut bytes = addx(b"one");
        bytes.push(42);
        bytes.extend(addx(b"never"));
        let (walked, _) = walk_bytes(&bytes);
        assert_eq!(walked.damage, Some((good, Damage::Opcode(42))));
    }
}
