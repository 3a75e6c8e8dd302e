//! Kestrel 2.x journal records, parsed from their headers alone: a record is
//! a 1-byte opcode and little-endian fields, and an item's payload is only
//! located (offset and length), never copied or allocated here. So a length a
//! damaged file claims costs nothing until it is checked against the file.

/// The opcodes of Kestrel's `Journal.scala`.
pub mod op {
    /// Legacy (starling) add: i32 size, then i32 expiry (epoch seconds) and data.
    pub const ADD: u8 = 0;
    pub const REMOVE: u8 = 1;
    /// i32 size, then i64 add time (ms), i64 expiry (ms, 0 none) and data.
    pub const ADDX: u8 = 2;
    /// Legacy: open the head, xid implicit.
    pub const REMOVE_TENTATIVE: u8 = 3;
    pub const SAVE_XID: u8 = 4;
    pub const UNREMOVE: u8 = 5;
    pub const CONFIRM_REMOVE: u8 = 6;
    /// i32 xid, then an ADDX block.
    pub const ADD_XID: u8 = 7;
    /// i32 xid (confirmed), then an ADDX block (appended).
    pub const CONTINUE: u8 = 8;
    pub const REMOVE_TENTATIVE_XID: u8 = 9;
}

/// The longest header: opcode, xid, size, add time, expiry.
pub const MAX_HEADER: usize = 1 + 4 + 4 + 8 + 8;

/// An item a record adds: where its payload is, and its times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    /// Offset of the payload from the start of the record.
    pub data_at: usize,
    pub len: u32,
    /// `None` for a legacy ADD, which Kestrel stamps with the replay time.
    pub added_ms: Option<i64>,
    pub expires_ms: Option<i64>,
}

/// One record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// ADD, ADDX, ADD_XID: append an item.
    Add(Added),
    /// Remove the head.
    Remove,
    /// Open the head as read `xid` (`None`: the legacy record, whose xid
    /// comes from the counter).
    Open(Option<i32>),
    SaveXid(i32),
    /// Put open read `xid` back at the head.
    Unremove(i32),
    /// Finish open read `xid`.
    Confirm(i32),
    /// Finish open read `xid` and append an item.
    Continue(i32, Added),
}

/// Why the bytes at an offset are not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    #[error("unknown opcode {0}")]
    Opcode(u8),
    #[error("item block of {0} bytes is shorter than its header")]
    ShortBlock(i32),
    #[error("the record runs past the end of the file")]
    Truncated,
}

/// Parses the record at the start of `head`, whose file has `left` bytes from
/// there on (`head` holds at least `min(left, MAX_HEADER)` of them). Returns
/// the record and its full length, payload included.
pub fn parse(head: &[u8], left: u64) -> Result<(Record, u64), Damage> {
    let mut r = Fields { head, at: 0 };
    let opcode = r.u8()?;
    let record = match opcode {
        op::ADD => Record::Add(r.block(true)?),
        op::REMOVE => Record::Remove,
        op::ADDX => Record::Add(r.block(false)?),
        op::REMOVE_TENTATIVE => Record::Open(None),
        op::SAVE_XID => Record::SaveXid(r.i32()?),
        op::UNREMOVE => Record::Unremove(r.i32()?),
        op::CONFIRM_REMOVE => Record::Confirm(r.i32()?),
        op::ADD_XID => {
            r.i32()?;
            Record::Add(r.block(false)?)
        }
        op::CONTINUE => {
            let xid = r.i32()?;
            Record::Continue(xid, r.block(false)?)
        }
        op::REMOVE_TENTATIVE_XID => Record::Open(Some(r.i32()?)),
        n => return Err(Damage::Opcode(n)),
    };
    let len = match record {
        Record::Add(a) | Record::Continue(_, a) => a.data_at as u64 + u64::from(a.len),
        _ => r.at as u64,
    };
    if len > left {
        return Err(Damage::Truncated);
    }
    Ok((record, len))
}

/// Reads little-endian fields off a record's header.
struct Fields<'a> {
    head: &'a [u8],
    at: usize,
}

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], Damage> {
        let bytes = self
            .head
            .get(self.at..self.at + N)
            .ok_or(Damage::Truncated)?;
        self.at += N;
        Ok(bytes.try_into().expect("N bytes"))
    }

    fn u8(&mut self) -> Result<u8, Damage> {
        Ok(self.take::<1>()?[0])
    }

    fn i32(&mut self) -> Result<i32, Damage> {
        Ok(i32::from_le_bytes(self.take()?))
    }

    fn i64(&mut self) -> Result<i64, Damage> {
        Ok(i64::from_le_bytes(self.take()?))
    }

    /// An item block: i32 size, then the times and the payload. A legacy
    /// block holds an i32 expiry in epoch seconds; a current one i64 add
    /// time and expiry in ms.
    fn block(&mut self, legacy: bool) -> Result<Added, Damage> {
        let size = self.i32()?;
        let times = if legacy { 4 } else { 16 };
        if size < times {
            return Err(Damage::ShortBlock(size));
        }
        let (added_ms, expires_ms) = if legacy {
            let secs = self.i32()?;
            (None, (secs != 0).then(|| i64::from(secs) * 1000))
        } else {
            let added = self.i64()?;
            let expiry = self.i64()?;
            (Some(added), (expiry != 0).then_some(expiry))
        };
        Ok(Added {
            data_at: self.at,
            len: (size - times) as u32,
            added_ms,
            expires_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addx(added: i64, expiry: i64, data: &[u8]) -> Vec<u8> {
        let mut r = vec![op::ADDX];
        r.extend((data.len() as i32 + 16).to_le_bytes());
        r.extend(added.to_le_bytes());
        r.extend(expiry.to_le_bytes());
        r.extend(data);
        r
    }

    #[test]
    fn parses_every_opcode_with_its_length() {
        let r = addx(1000, 0, b"hello");
        assert_eq!(
            r.len(),
            21 + 5,
            "an ADDX is 21 bytes plus its data, as Kestrel's tests say"
        );
        assert_eq!(
            parse(&r, r.len() as u64),
            Ok((
                Record::Add(Added {
                    data_at: 21,
                    len: 5,
                    added_ms: Some(1000),
                    expires_ms: None
                }),
                26
            ))
        );
        let mut legacy = vec![op::ADD];
        legacy.extend(7i32.to_le_bytes());
        legacy.extend(1_700_000_000i32.to_le_bytes());
        legacy.extend(b"abc");
        let (rec, len) = parse(&legacy, 12).unwrap();
        assert_eq!(len, 12);
        assert_eq!(
            rec,
            Record::Add(Added {
                data_at: 9,
                len: 3,
                added_ms: None,
                expires_ms: Some(1_700_000_000_000)
            })
        );
        let xid = |o: u8| {
            let mut r = vec![o];
            r.extend(42i32.to_le_bytes());
            r
        };
        assert_eq!(parse(&[op::REMOVE], 1), Ok((Record::Remove, 1)));
        assert_eq!(
            parse(&[op::REMOVE_TENTATIVE], 1),
            Ok((Record::Open(None), 1))
        );
        assert_eq!(parse(&xid(op::SAVE_XID), 5), Ok((Record::SaveXid(42), 5)));
        assert_eq!(parse(&xid(op::UNREMOVE), 5), Ok((Record::Unremove(42), 5)));
        assert_eq!(
            parse(&xid(op::CONFIRM_REMOVE), 5),
            Ok((Record::Confirm(42), 5))
        );
        assert_eq!(
            parse(&xid(op::REMOVE_TENTATIVE_XID), 5),
            Ok((Record::Open(Some(42)), 5))
        );
        for (o, want) in [(op::ADD_XID, None), (op::CONTINUE, Some(42))] {
            let mut r = xid(o);
            r.extend(&addx(5, 9, b"xy")[1..]);
            let (rec, len) = parse(&r, r.len() as u64).unwrap();
            assert_eq!(len, 25 + 2);
            let added = Added {
                data_at: 25,
                len: 2,
                added_ms: Some(5),
                expires_ms: Some(9),
            };
            match want {
                None => assert_eq!(rec, Record::Add(added)),
                Some(x) => assert_eq!(rec, Record::Continue(x, added)),
            }
        }
    }

    #[test]
    fn damage_is_named_and_never_trusted() {
        assert_eq!(parse(&[10], 1), Err(Damage::Opcode(10)));
        assert_eq!(parse(&[op::UNREMOVE, 1, 2], 3), Err(Damage::Truncated));
        let r = addx(1, 0, b"hello");
        assert_eq!(parse(&r, r.len() as u64 - 1), Err(Damage::Truncated));
        let mut huge = addx(1, 0, b"");
        huge[1..5].copy_from_slice(&i32::MAX.to_le_bytes());
        assert_eq!(parse(&huge, huge.len() as u64), Err(Damage::Truncated));
        let mut short = addx(1, 0, b"");
        short[1..5].copy_from_slice(&8i32.to_le_bytes());
        assert_eq!(parse(&short, 100), Err(Damage::ShortBlock(8)));
        short[1..5].copy_from_slice(&(-5i32).to_le_bytes());
        assert_eq!(parse(&short, 100), Err(Damage::ShortBlock(-5)));
    }
}
