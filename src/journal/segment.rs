//! Segment files: naming, and reading records back in order, stepping over
//! damage.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::files::{Files, Key};
use super::record::{self, Decoded, Record};

/// The file name of segment `id`.
pub fn file_name(id: u64) -> String {
    format!("{id:016x}.log")
}

/// The file of segment `id` in `dir`.
pub fn path(dir: &Path, id: u64) -> PathBuf {
    dir.join(file_name(id))
}

/// Suffix of the temporary file a segment is rewritten into.
const REWRITE: &str = ".rewrite";

/// The temporary file segment `id` in `dir` is rewritten into before it
/// replaces the segment.
pub fn rewrite_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}{REWRITE}"))
}

/// What a journal directory holds, from one listing.
#[derive(Debug, Default)]
pub struct Listing {
    /// Segment ids, in order.
    pub segments: Vec<u64>,
    /// Names of the checkpoint files present.
    pub checkpoints: Vec<String>,
    /// Names of the entries the journal did not write (neither segments,
    /// checkpoints, nor their temporary files), in order: the queue's
    /// `NAME` file, or what tells a directory that is not a journal's.
    pub others: Vec<String>,
}

/// Lists `dir`'s segments and checkpoint files.
pub fn list_dir(dir: &Path) -> io::Result<Listing> {
    let mut listing = Listing::default();
    let hex_id = |hex: &str| hex.len() == 16 && u64::from_str_radix(hex, 16).is_ok();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(hex) = name.strip_suffix(".log")
            && let Ok(id) = u64::from_str_radix(hex, 16)
        {
            listing.segments.push(id);
        } else if super::checkpoint::FILES.contains(&&*name) {
            listing.checkpoints.push(name.into_owned());
        } else if name != super::checkpoint::TMP && !name.strip_suffix(REWRITE).is_some_and(hex_id)
        {
            listing.others.push(name.into_owned());
        }
    }
    listing.segments.sort_unstable();
    listing.others.sort_unstable();
    Ok(listing)
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
///
/// The file comes from the server's [`Files`] cache. A reader kept between
/// uses (read-behind) is [`park`](Reader::park)ed, holding neither a file
/// nor a buffer, and [`unpark`](Reader::unpark)ed before it reads again.
pub struct Reader {
    pub id: u64,
    files: Arc<Files>,
    key: Key,
    path: PathBuf,
    /// The file, held while reading.
    file: Option<Arc<File>>,
    /// Its inode: a segment rewritten meanwhile is another file.
    ino: u64,
    file_len: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_at: u64,
    /// Offset of the next record.
    pub offset: u64,
}

const CHUNK: usize = 256 * 1024;

impl Reader {
    /// A reader of segment `id` of the journal `journal` in `dir`, from `offset`.
    pub fn open(
        files: &Arc<Files>,
        journal: u64,
        dir: &Path,
        id: u64,
        offset: u64,
    ) -> io::Result<Reader> {
        let key = Key {
            journal,
            segment: id,
        };
        let path = path(dir, id);
        let (file, _) = files.open(key, || &path, false)?;
        let meta = file.metadata()?;
        Ok(Reader {
            id,
            files: files.clone(),
            key,
            path,
            file: Some(file),
            ino: meta.ino(),
            file_len: meta.len(),
            buf: Vec::new(),
            buf_at: offset,
            offset,
        })
    }

    /// The file, reopened through the cache if parked.
    fn file(&mut self) -> io::Result<Arc<File>> {
        if let Some(file) = &self.file {
            return Ok(file.clone());
        }
        let (file, _) = self.files.open(self.key, || &self.path, false)?;
        if file.metadata()?.ino() != self.ino {
            return Err(io::Error::other(format!(
                "{} was replaced while being read",
                self.path.display()
            )));
        }
        self.file = Some(file.clone());
        Ok(file)
    }

    /// Lets go of the file and the buffer until the next read.
    pub fn park(&mut self) {
        self.file = None;
        self.buf = Vec::new();
        self.buf_at = self.offset;
    }

    /// Takes the file back after [`park`](Reader::park): `false` if the
    /// segment was replaced meanwhile (rewritten), so that this reader's
    /// offsets no longer apply.
    pub fn unpark(&mut self) -> io::Result<bool> {
        if self.file.is_some() {
            return Ok(true);
        }
        let (file, _) = self.files.open(self.key, || &self.path, false)?;
        let meta = file.metadata()?;
        if meta.ino() != self.ino {
            return Ok(false);
        }
        self.file_len = meta.len();
        self.file = Some(file);
        Ok(true)
    }

    /// Whether nothing is left to read (as of the file's length when
    /// opened or last refreshed).
    pub fn at_end(&self) -> bool {
        self.offset >= self.file_len
    }

    /// Rereads the file's length (the segment being appended to grows).
    pub fn refresh_len(&mut self) -> io::Result<()> {
        self.file_len = self.file()?.metadata()?.len();
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
                let file = self.file()?;
                self.buf.resize(want, 0);
                let got = read_at_most(&file, &mut self.buf[have..], self.buf_at + have as u64)?;
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

    /// The next record as recovery reads it: as [`next`](Reader::next),
    /// but damage that merely looked like the end (a damaged length field
    /// reads like a torn tail) is [`Skipped`](Next::Skipped) when intact
    /// records follow it, so `End` reports only damage that nothing intact
    /// follows.
    pub fn next_past_damage(&mut self) -> io::Result<Next> {
        match self.next()? {
            Next::End {
                damage: Some(_), ..
            } => self.resync(),
            next => Ok(next),
        }
    }

    /// Whether the damaged tail that [`Next::End`] just reported is the
    /// start of one record that the file ends inside: a write still in
    /// progress (the server appends to its newest segment meanwhile), or one
    /// a crash cut short. Otherwise the tail is bytes that are not a record.
    pub fn tail_is_cut_short(&mut self) -> io::Result<bool> {
        let at = self.offset;
        let available = self.fill(record::HEADER)?;
        let Some(header) = available.get(..4) else {
            // The file ends inside a record's header.
            return Ok(true);
        };
        let claims = u32::from_le_bytes(header.try_into().expect("4 bytes")) as usize;
        Ok(claims > 0
            && claims <= record::MAX_BODY
            && at + (record::HEADER + claims) as u64 > self.file_len)
    }

    /// The file's length as this reader sees it (when opened, or last
    /// refreshed).
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    fn rest_is_zero(&mut self) -> io::Result<bool> {
        let file = self.file()?;
        let mut at = self.offset;
        let mut chunk = vec![0u8; CHUNK.min((self.file_len - at) as usize)];
        while at < self.file_len {
            let n = read_at_most(&file, &mut chunk, at)?;
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
        let files = Files::new(4);
        let mut r = Reader::open(&files, files.journal_id(), dir, id, 0).unwrap();
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
        for temporary in [
            rewrite_path(dir.path(), 3),
            dir.path().join("checkpoint.tmp"),
        ] {
            std::fs::write(temporary, b"x").unwrap();
        }
        for other in ["NAME", "notes.txt", "x.rewrite"] {
            std::fs::write(dir.path().join(other), b"x").unwrap();
        }
        std::fs::create_dir(dir.path().join("queues")).unwrap();
        let listing = list_dir(dir.path()).unwrap();
        assert_eq!(listing.segments, [1, 3, 0x10]);
        assert_eq!(listing.checkpoints, ["checkpoint.0"]);
        assert_eq!(listing.others, ["NAME", "notes.txt", "queues", "x.rewrite"]);
    }

    #[test]
    fn a_tail_cut_short_is_told_from_bytes_that_are_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = write(dir.path(), 1, &[add(1, b"one"), add(2, b"two")]);
        let second = record::ADD_OVERHEAD + 3;
        let tail = |file: &[u8]| {
            std::fs::write(path(dir.path(), 1), file).unwrap();
            let files = Files::new(4);
            let mut r = Reader::open(&files, files.journal_id(), dir.path(), 1, 0).unwrap();
            loop {
                match r.next_past_damage().unwrap() {
                    Next::Record { .. } => {}
                    Next::Skipped(d) => panic!("skipped {d:?}"),
                    Next::End { damage, .. } => {
                        return damage.map(|d| (d.offset, r.tail_is_cut_short().unwrap()));
                    }
                }
            }
        };
        assert_eq!(tail(&bytes), None);
        // Cut inside the second record's body, then inside its header.
        assert_eq!(tail(&bytes[..bytes.len() - 2]), Some((second as u64, true)));
        assert_eq!(tail(&bytes[..second + 3]), Some((second as u64, true)));
        // Its length damaged: the record would end past the file.
        let mut long = bytes.clone();
        long[second + 1] ^= 0x01;
        assert_eq!(tail(&long), Some((second as u64, true)));
        // Garbage that claims an impossible length, or whose checksum fails.
        let mut garbage = bytes.clone();
        garbage[second + 3] = 0xff;
        assert_eq!(tail(&garbage), Some((second as u64, false)));
        let mut flipped = bytes.clone();
        flipped[second + 12] ^= 0xff;
        assert_eq!(tail(&flipped), Some((second as u64, false)));
    }
}
