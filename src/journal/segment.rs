//! Segment files: naming, and reading records back in order, stepping over
//! damage.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{self, Decoded, Record};

/// The file of segment `id` in `dir`.
pub fn path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.log"))
}

/// The segment ids present in `dir`, in order.
pub fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(hex) = name.strip_suffix(".log")
            && let Ok(id) = u64::from_str_radix(hex, 16)
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Bytes skipped over because they did not hold intact records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub len: u64,
}

/// What reading the next record found.
#[derive(Debug)]
pub enum Next {
    Record {
        record: Record,
        len: u64,
    },
    /// Damaged bytes were skipped; intact records follow.
    Skipped(Damage),
    /// No more records: `damage` is a torn or damaged tail, if there was one.
    End {
        valid_len: u64,
        damage: Option<Damage>,
    },
}

/// Reads one segment front to back through a buffer, never trusting a
/// length it has not checked.
pub struct Reader {
    pub id: u64,
    file: File,
    file_len: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_at: u64,
    /// Offset of the next record.
    pub offset: u64,
}

const CHUNK: usize = 256 * 1024;

impl Reader {
    pub fn open(dir: &Path, id: u64, offset: u64) -> io::Result<Reader> {
        let file = File::open(path(dir, id))?;
        let file_len = file.metadata()?.len();
        Ok(Reader {
            id,
            file,
            file_len,
            buf: Vec::new(),
            buf_at: offset,
            offset,
        })
    }

    /// Rereads the file's length (the segment being appended to grows).
    pub fn refresh_len(&mut self) -> io::Result<()> {
        self.file_len = self.file.metadata()?.len();
        Ok(())
    }

    /// Makes at least `n` bytes from `offset` available, if the file has them.
    fn fill(&mut self, n: usize) -> io::Result<&[u8]> {
        let start = (self.offset - self.buf_at) as usize;
        if self.buf.len() - start < n && self.buf_at + (self.buf.len() as u64) < self.file_len {
            self.buf.drain(..start);
            self.buf_at = self.offset;
            let want = n.max(CHUNK).min((self.file_len - self.buf_at) as usize);
            let have = self.buf.len();
            if want > have {
                self.buf.resize(want, 0);
                let got =
                    read_at_most(&self.file, &mut self.buf[have..], self.buf_at + have as u64)?;
                self.buf.truncate(have + got);
            }
        }
        let start = (self.offset - self.buf_at) as usize;
        Ok(&self.buf[start..])
    }

    /// The next record, or what stands in its place.
    pub fn next(&mut self) -> io::Result<Next> {
        let mut want = record::HEADER;
        loop {
            let available = self.fill(want)?;
            match record::decode(available) {
                Decoded::Record(record, len) => {
                    self.offset += len as u64;
                    return Ok(Next::Record {
                        record,
                        len: len as u64,
                    });
                }
                Decoded::Incomplete
                    if available.len() >= want && want < record::HEADER + record::MAX_BODY =>
                {
                    // The header is in; fetch the whole body.
                    let len =
                        u32::from_le_bytes(available[..4].try_into().expect("4 bytes")) as usize;
                    want = record::HEADER + len;
                }
                Decoded::Incomplete | Decoded::End => {
                    let valid_len = self.offset;
                    let damage =
                        (self.file_len > valid_len && !self.rest_is_zero()?).then_some(Damage {
                            offset: valid_len,
                            len: self.file_len - valid_len,
                        });
                    return Ok(Next::End { valid_len, damage });
                }
                Decoded::Corrupt(_) => return self.resync(),
            }
        }
    }

    fn rest_is_zero(&mut self) -> io::Result<bool> {
        let mut at = self.offset;
        let mut chunk = vec![0u8; CHUNK];
        while at < self.file_len {
            let n = read_at_most(&self.file, &mut chunk, at)?;
            if n == 0 {
                break;
            }
            if chunk[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += n as u64;
        }
        Ok(true)
    }

    /// Looks for the next offset where an intact record starts: `Skipped`
    /// up to it, or `End` if there is none.
    pub fn resync(&mut self) -> io::Result<Next> {
        let damaged_at = self.offset;
        let mut at = damaged_at + 1;
        while at + record::HEADER as u64 <= self.file_len {
            self.offset = at;
            let available = self.fill(record::HEADER)?;
            let claims = u32::from_le_bytes(available[..4].try_into().expect("4 bytes")) as usize;
            if claims > 0 && claims <= record::MAX_BODY {
                let available = self.fill(record::HEADER + claims)?;
                if let Decoded::Record(..) = record::decode(available) {
                    return Ok(Next::Skipped(Damage {
                        offset: damaged_at,
                        len: at - damaged_at,
                    }));
                }
            }
            at += 1;
        }
        self.offset = damaged_at;
        Ok(Next::End {
            valid_len: damaged_at,
            damage: Some(Damage {
                offset: damaged_at,
                len: self.file_len - damaged_at,
            }),
        })
    }
}

fn read_at_most(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], at + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};

    fn add(seq: u64, data: &'static [u8]) -> Record {
        Record::Add {
            seq,
            added_ms: 1,
            expires_ms: None,
            data: Bytes::from_static(data),
        }
    }

    fn write(dir: &Path, id: u64, records: &[Record]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        for r in records {
            r.encode(&mut buf);
        }
        std::fs::write(path(dir, id), &buf).unwrap();
        buf.to_vec()
    }

    fn read_all(dir: &Path, id: u64) -> (Vec<u64>, Vec<Damage>, u64) {
        let mut r = Reader::open(dir, id, 0).unwrap();
        let (mut seqs, mut damage) = (Vec::new(), Vec::new());
        loop {
            match r.next().unwrap() {
                Next::Record { record, .. } => seqs.push(record.seq()),
                Next::Skipped(d) => damage.push(d),
                Next::End {
                    valid_len,
                    damage: tail,
                } => {
                    damage.extend(tail);
                    return (seqs, damage, valid_len);
                }
            }
        }
    }

    #[test]
    fn reads_records_then_stops_at_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = write(
            dir.path(),
            1,
            &[add(1, b"one"), add(2, b"two"), add(3, b"three")],
        );
        let whole = bytes.len() as u64;
        assert_eq!(read_all(dir.path(), 1), (vec![1, 2, 3], vec![], whole));
        // Tear the last record.
        std::fs::write(path(dir.path(), 1), &bytes[..bytes.len() - 2]).unwrap();
        let third = (record::ADD_OVERHEAD + 5) as u64;
        let (seqs, damage, valid) = read_all(dir.path(), 1);
        assert_eq!((seqs, valid), (vec![1, 2], whole - third));
        assert_eq!(
            damage,
            [Damage {
                offset: whole - third,
                len: third - 2
            }]
        );
        // Zeros after the records are the unwritten end, not damage.
        let mut padded = bytes.clone();
        padded.extend([0; 100]);
        std::fs::write(path(dir.path(), 1), &padded).unwrap();
        assert_eq!(read_all(dir.path(), 1), (vec![1, 2, 3], vec![], whole));
    }

    #[test]
    fn steps_over_a_damaged_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = write(
            dir.path(),
            2,
            &[add(1, b"one"), add(2, b"two"), add(3, b"three")],
        );
        let second = record::ADD_OVERHEAD + 3;
        bytes[second + 12] ^= 0xff; // inside the second record's body
        std::fs::write(path(dir.path(), 2), &bytes).unwrap();
        let (seqs, damage, _) = read_all(dir.path(), 2);
        assert_eq!(seqs, [1, 3]);
        assert_eq!(
            damage,
            [Damage {
                offset: second as u64,
                len: second as u64
            }]
        );
    }

    #[test]
    fn lists_segments_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for id in [3, 1, 0x10] {
            write(dir.path(), id, &[]);
        }
        std::fs::write(dir.path().join("checkpoint.0"), b"x").unwrap();
        assert_eq!(list(dir.path()).unwrap(), [1, 3, 0x10]);
    }
}
