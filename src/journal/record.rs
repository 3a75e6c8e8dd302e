//! Journal records: the only bytes the journal writes, each framed with its
//! length and a CRC32C so that a torn or damaged record is recognised and
//! never read as data.
//!
//! ```text
//! record := len:u32le crc:u32le body[len]     crc = crc32c(len bytes ++ body)
//! body   := kind:u8 payload
//!   ADD    1  seq:u64 added_ms:i64 expires_ms:i64 data     (expires_ms = i64::MIN: never)
//!   REMOVE 2  seq:u64 size:u32                              consumed for good
//!   OPEN   3  seq:u64 size:u32                              taken by a reliable read
//!   ABORT  4  seq:u64                                       an open item is back
//!   FLUSH  5  below:u64                                     every item under `below` not open is gone
//! ```
//!
//! Records name items by their sequence number, not by position, so a
//! record's meaning never depends on which other records survive: that is
//! what lets whole segments be deleted or rewritten.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes of framing before every body.
pub const HEADER: usize = 8;
/// Bytes of an ADD record besides its data.
pub const ADD_OVERHEAD: usize = HEADER + 1 + 24;
/// Bodies longer than this are damage, not data.
pub const MAX_BODY: usize = 1 << 30;

const ADD: u8 = 1;
const REMOVE: u8 = 2;
const OPEN: u8 = 3;
const ABORT: u8 = 4;
const FLUSH: u8 = 5;
const FLUSH_KEEPING: u8 = 6;
const NO_EXPIRY: i64 = i64::MIN;

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Add {
        seq: u64,
        added_ms: i64,
        expires_ms: Option<i64>,
        data: Bytes,
    },
    Remove {
        seq: u64,
        size: u32,
    },
    Open {
        seq: u64,
        size: u32,
    },
    Abort {
        seq: u64,
    },
    /// Everything put before `below` is gone, but for the reads open at the
    /// time. `keep` lists those (sequence number and size), so that replay
    /// does not depend on their OPEN records having reached the disk (a
    /// failed write may have lost one; a crash may have left stale ones);
    /// `None` in journals written before it did, where replay spares
    /// whatever its OPEN records say is open.
    Flush {
        below: u64,
        keep: Option<Vec<(u64, u32)>>,
    },
}

impl Record {
    /// Appends the framed record to `out`; returns its length.
    pub fn encode(&self, out: &mut BytesMut) -> usize {
        let start = out.len();
        out.put_u64_le(0); // length and crc, filled in below
        match self {
            Record::Add {
                seq,
                added_ms,
                expires_ms,
                data,
            } => {
                out.reserve(25 + data.len());
                out.put_u8(ADD);
                out.put_u64_le(*seq);
                out.put_i64_le(*added_ms);
                out.put_i64_le(expires_ms.unwrap_or(NO_EXPIRY));
                out.put_slice(data);
            }
            Record::Remove { seq, size } => {
                out.put_u8(REMOVE);
                out.put_u64_le(*seq);
                out.put_u32_le(*size);
            }
            Record::Open { seq, size } => {
                out.put_u8(OPEN);
                out.put_u64_le(*seq);
                out.put_u32_le(*size);
            }
            Record::Abort { seq } => {
                out.put_u8(ABORT);
                out.put_u64_le(*seq);
            }
            Record::Flush { below, keep: None } => {
                out.put_u8(FLUSH);
                out.put_u64_le(*below);
            }
            Record::Flush {
                below,
                keep: Some(keep),
            } => {
                out.reserve(9 + 12 * keep.len());
                out.put_u8(FLUSH_KEEPING);
                out.put_u64_le(*below);
                for &(seq, size) in keep {
                    out.put_u64_le(seq);
                    out.put_u32_le(size);
                }
            }
        }
        let len = (out.len() - start - HEADER) as u32;
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), &out[start + HEADER..]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        out.len() - start
    }

    /// The item sequence number the record is about (`below` for FLUSH).
    pub fn seq(&self) -> u64 {
        match self {
            Record::Add { seq, .. }
            | Record::Remove { seq, .. }
            | Record::Open { seq, .. }
            | Record::Abort { seq } => *seq,
            Record::Flush { below, .. } => *below,
        }
    }
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole, intact record and its framed length.
    Record(Record, usize),
    /// The buffer ends inside a record (or holds nothing): read more, or this is the end.
    Incomplete,
    /// Zeros where a record would start: the unwritten end of a file.
    End,
    /// Not a record: a torn write or damage.
    Corrupt(&'static str),
}

/// Decodes the record at the start of `buf`. Pure: no I/O, no allocation
/// beyond the record's own data.
pub fn decode(buf: &[u8]) -> Decoded {
    if buf.len() < HEADER {
        return if buf.iter().all(|&b| b == 0) && !buf.is_empty() {
            Decoded::End
        } else {
            Decoded::Incomplete
        };
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if len == 0 && crc == 0 {
        return Decoded::End;
    }
    if len == 0 || len > MAX_BODY {
        return Decoded::Corrupt("impossible record length");
    }
    if buf.len() < HEADER + len {
        return Decoded::Incomplete;
    }
    let body = &buf[HEADER..HEADER + len];
    if crc32c::crc32c_append(crc32c::crc32c(&buf[0..4]), body) != crc {
        return Decoded::Corrupt("checksum mismatch");
    }
    match parse_body(body) {
        Some(record) if record.seq() > MAX_SEQ => Decoded::Corrupt("impossible sequence number"),
        Some(record) => Decoded::Record(record, HEADER + len),
        None => Decoded::Corrupt("malformed record body"),
    }
}

/// Sequence numbers count puts from 1; none comes anywhere near this, so a
/// record beyond it is damage (and `seq + 1` never overflows).
const MAX_SEQ: u64 = 1 << 62;

fn parse_body(mut body: &[u8]) -> Option<Record> {
    let kind = body.first().copied()?;
    body.advance(1);
    let need = |n: usize, body: &[u8]| (body.len() >= n).then_some(());
    Some(match kind {
        ADD => {
            need(24, body)?;
            let seq = body.get_u64_le();
            let added_ms = body.get_i64_le();
            let expires = body.get_i64_le();
            Record::Add {
                seq,
                added_ms,
                expires_ms: (expires != NO_EXPIRY).then_some(expires),
                data: Bytes::copy_from_slice(body),
            }
        }
        REMOVE | OPEN => {
            need(12, body)?;
            let (seq, size) = (body.get_u64_le(), body.get_u32_le());
            if !body.is_empty() {
                return None;
            }
            if kind == REMOVE {
                Record::Remove { seq, size }
            } else {
                Record::Open { seq, size }
            }
        }
        ABORT | FLUSH => {
            need(8, body)?;
            let n = body.get_u64_le();
            if !body.is_empty() {
                return None;
            }
            if kind == ABORT {
                Record::Abort { seq: n }
            } else {
                Record::Flush {
                    below: n,
                    keep: None,
                }
            }
        }
        FLUSH_KEEPING => {
            need(8, body)?;
            let below = body.get_u64_le();
            if !body.len().is_multiple_of(12) {
                return None;
            }
            // Sized by the bytes that are there, not by anything they say.
            let mut keep = Vec::with_capacity(body.len() / 12);
            while !body.is_empty() {
                let (seq, size) = (body.get_u64_le(), body.get_u32_le());
                if seq >= below {
                    return None;
                }
                keep.push((seq, size));
            }
            Record::Flush {
                below,
                keep: Some(keep),
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record> {
        vec![
            Record::Add {
                seq: 1,
                added_ms: 1_700_000_000_000,
                expires_ms: None,
                data: Bytes::from_static(b"hello"),
            },
            Record::Add {
                seq: 2,
                added_ms: 5,
                expires_ms: Some(0),
                data: Bytes::new(),
            },
            Record::Remove { seq: 1, size: 5 },
            Record::Open { seq: 2, size: 0 },
            Record::Abort { seq: 2 },
            Record::Flush {
                below: 3,
                keep: None,
            },
            Record::Flush {
                below: 9,
                keep: Some(vec![(2, 0), (5, 7)]),
            },
            Record::Flush {
                below: 9,
                keep: Some(Vec::new()),
            },
        ]
    }

    #[test]
    fn round_trips() {
        let mut buf = BytesMut::new();
        let lens: Vec<usize> = samples().iter().map(|r| r.encode(&mut buf)).collect();
        assert_eq!(lens[0], ADD_OVERHEAD + 5);
        let mut at = 0;
        for (record, len) in samples().into_iter().zip(lens) {
            assert_eq!(decode(&buf[at..]), Decoded::Record(record, len));
            at += len;
        }
        assert_eq!(decode(&buf[at..]), Decoded::Incomplete);
    }

    #[test]
    fn every_truncation_is_incomplete_and_every_bit_flip_is_caught() {
        let mut buf = BytesMut::new();
        let len = samples()[0].encode(&mut buf);
        for cut in 1..len {
            assert!(
                matches!(
                    decode(&buf[..cut]),
                    Decoded::Incomplete | Decoded::Corrupt(_)
                ),
                "cut at {cut}"
            );
        }
        for bit in 0..len * 8 {
            let mut damaged = buf.to_vec();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode(&damaged), Decoded::Record(..)),
                "flipping bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn an_impossible_sequence_number_is_damage() {
        let mut buf = BytesMut::new();
        Record::Abort { seq: u64::MAX }.encode(&mut buf);
        assert_eq!(decode(&buf), Decoded::Corrupt("impossible sequence number"));
    }

    #[test]
    fn zeros_mark_the_end() {
        assert_eq!(decode(&[0; 64]), Decoded::End);
        assert_eq!(decode(&[0; 3]), Decoded::End);
        assert_eq!(decode(&[]), Decoded::Incomplete);
    }
}
