//! A binary-protocol reader over one received frame that never trusts a
//! length from the wire, and that supplies the IDL's argument defaults.
//!
//! The `thrift` 0.17 `TBinaryInputProtocol` sizes allocations from wire
//! lengths (a 31-byte frame claiming a list of two billion items aborts the
//! process). Here every string, binary, list, set and map length is checked
//! against the bytes left in the frame before anything is allocated, and
//! containers hold at most [`MAX_ELEMENTS`]: the decoded values of a frame
//! take a small multiple of its size at most (a list of empty binaries costs
//! 4 bytes on the wire and a few dozen decoded).
//!
//! The generated processor also treats every argument as required, while
//! Kestrel's server used the IDL defaults for omitted ones. [`ARG_DEFAULTS`]
//! lists the arguments with defaults; when the argument struct of such a
//! method ends without one of them, the reader reports it as present with
//! its default value, so clients that omit it keep working.

use std::convert::TryFrom;

use thrift::protocol::{
    TFieldIdentifier, TInputProtocol, TListIdentifier, TMapIdentifier, TMessageIdentifier,
    TMessageType, TSetIdentifier, TStructIdentifier, TType,
};
use thrift::{ProtocolErrorKind, new_protocol_error};

/// Arguments with an IDL default (`= 0`), per method: (method, field ids).
/// Every one is an `i32` defaulting to 0. Kept in step with
/// `idl/kestrel.thrift` by a test that reads the IDL.
pub const ARG_DEFAULTS: &[(&str, &[i16])] = &[("put", &[3]), ("get", &[3, 4])];

/// Most elements in one list, set or map: a million items or ids per call is
/// far beyond any batch, and bounds what a frame of tiny elements decodes to.
pub const MAX_ELEMENTS: usize = 1 << 20;

/// Smallest encoding of a value of each type, used to bound element counts.
fn min_size(t: TType) -> usize {
    match t {
        TType::Bool | TType::I08 | TType::Struct => 1,
        TType::I16 => 2,
        TType::I32 | TType::String => 4,
        TType::I64 | TType::Double => 8,
        TType::List | TType::Set => 5,
        TType::Map => 6,
        _ => 1,
    }
}

fn ttype(b: u8) -> thrift::Result<TType> {
    Ok(match b {
        0 => TType::Stop,
        2 => TType::Bool,
        3 => TType::I08,
        4 => TType::Double,
        6 => TType::I16,
        8 => TType::I32,
        10 => TType::I64,
        11 => TType::String,
        12 => TType::Struct,
        13 => TType::Map,
        14 => TType::Set,
        15 => TType::List,
        other => return Err(invalid(format!("unknown field type {other}"))),
    })
}

fn invalid(message: String) -> thrift::Error {
    new_protocol_error(ProtocolErrorKind::InvalidData, message)
}

/// Reads one Thrift message from a frame's bytes.
pub struct FrameInput<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Struct nesting: the arguments struct is depth 1.
    depth: u32,
    /// Defaults of the method being read.
    defaults: &'static [i16],
    /// Argument field ids seen so far (ids 0 to 63).
    seen: u64,
    /// A defaulted argument was reported; its value is read next.
    default_pending: bool,
}

impl<'a> FrameInput<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        FrameInput {
            buf,
            pos: 0,
            depth: 0,
            defaults: &[],
            seen: 0,
            default_pending: false,
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> thrift::Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(new_protocol_error(
                ProtocolErrorKind::SizeLimit,
                format!(
                    "{n} bytes needed at offset {}, {} left in the frame",
                    self.pos,
                    self.remaining()
                ),
            ));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> thrift::Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A length or count from the wire, checked to fit in what is left when
    /// each unit takes at least `unit` bytes.
    fn length(&mut self, unit: usize) -> thrift::Result<usize> {
        let n = i32::from_be_bytes(self.array()?);
        let n = usize::try_from(n).map_err(|_| {
            new_protocol_error(
                ProtocolErrorKind::NegativeSize,
                format!("negative length {n}"),
            )
        })?;
        if n.saturating_mul(unit) > self.remaining() {
            return Err(new_protocol_error(
                ProtocolErrorKind::SizeLimit,
                format!(
                    "length {n} does not fit in the {} bytes left in the frame",
                    self.remaining()
                ),
            ));
        }
        Ok(n)
    }

    /// An element count, checked against the frame and [`MAX_ELEMENTS`].
    fn count(&mut self, unit: usize) -> thrift::Result<usize> {
        let n = self.length(unit)?;
        if n > MAX_ELEMENTS {
            return Err(new_protocol_error(
                ProtocolErrorKind::SizeLimit,
                format!("{n} elements; at most {MAX_ELEMENTS} are accepted in one call"),
            ));
        }
        Ok(n)
    }

    fn bytes_value(&mut self) -> thrift::Result<&'a [u8]> {
        let n = self.length(1)?;
        self.take(n)
    }

    /// The next argument with a default that the struct did not carry.
    fn missing_default(&self) -> Option<i16> {
        self.defaults
            .iter()
            .copied()
            .find(|&id| self.seen & (1u64 << id) == 0)
    }
}

impl TInputProtocol for FrameInput<'_> {
    fn read_message_begin(&mut self) -> thrift::Result<TMessageIdentifier> {
        let first = self.array::<4>()?;
        let (name, kind) = if first[0] & 0x80 != 0 {
            // Strict header: version, message type, then the name.
            if first[0..2] != [0x80, 0x01] {
                return Err(new_protocol_error(
                    ProtocolErrorKind::BadVersion,
                    format!("bad protocol version {:02x}{:02x}", first[0], first[1]),
                ));
            }
            (self.read_string()?, first[3])
        } else {
            // Old unversioned header: the name's length comes first.
            self.pos -= 4;
            let name = self.read_string()?;
            (name, self.read_byte()?)
        };
        let message_type = TMessageType::try_from(kind)?;
        let sequence_number = self.read_i32()?;
        self.defaults = ARG_DEFAULTS
            .iter()
            .find(|(m, _)| *m == name)
            .map_or(&[], |(_, ids)| ids);
        Ok(TMessageIdentifier::new(name, message_type, sequence_number))
    }

    fn read_message_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }

    fn read_struct_begin(&mut self) -> thrift::Result<Option<TStructIdentifier>> {
        self.depth += 1;
        Ok(None)
    }

    fn read_struct_end(&mut self) -> thrift::Result<()> {
        self.depth = self.depth.saturating_sub(1);
        Ok(())
    }

    fn read_field_begin(&mut self) -> thrift::Result<TFieldIdentifier> {
        let field_type = ttype(self.read_byte()?)?;
        if field_type == TType::Stop {
            if self.depth == 1
                && let Some(id) = self.missing_default()
            {
                // Leave the stop byte for the next call and report the
                // defaulted argument first.
                self.pos -= 1;
                self.seen |= 1u64 << id;
                self.default_pending = true;
                return Ok(TFieldIdentifier::new::<Option<String>, String, i16>(
                    None,
                    TType::I32,
                    id,
                ));
            }
            return Ok(
                TFieldIdentifier::new::<Option<String>, String, Option<i16>>(
                    None,
                    TType::Stop,
                    None,
                ),
            );
        }
        let id = i16::from_be_bytes(self.array()?);
        if self.depth == 1 && (0..64).contains(&id) {
            self.seen |= 1u64 << id;
        }
        Ok(TFieldIdentifier::new::<Option<String>, String, i16>(
            None, field_type, id,
        ))
    }

    fn read_field_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }

    fn read_bool(&mut self) -> thrift::Result<bool> {
        Ok(self.read_byte()? != 0)
    }

    fn read_bytes(&mut self) -> thrift::Result<Vec<u8>> {
        Ok(self.bytes_value()?.to_vec())
    }

    fn read_i8(&mut self) -> thrift::Result<i8> {
        Ok(self.read_byte()? as i8)
    }

    fn read_i16(&mut self) -> thrift::Result<i16> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn read_i32(&mut self) -> thrift::Result<i32> {
        if std::mem::take(&mut self.default_pending) {
            return Ok(0);
        }
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn read_i64(&mut self) -> thrift::Result<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn read_double(&mut self) -> thrift::Result<f64> {
        Ok(f64::from_be_bytes(self.array()?))
    }

    fn read_string(&mut self) -> thrift::Result<String> {
        let bytes = self.bytes_value()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| invalid("string is not valid UTF-8".into()))
    }

    fn read_list_begin(&mut self) -> thrift::Result<TListIdentifier> {
        let element_type = ttype(self.read_byte()?)?;
        let size = self.count(min_size(element_type))?;
        Ok(TListIdentifier::new(element_type, size as i32))
    }

    fn read_list_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }

    fn read_set_begin(&mut self) -> thrift::Result<TSetIdentifier> {
        let element_type = ttype(self.read_byte()?)?;
        let size = self.count(min_size(element_type))?;
        Ok(TSetIdentifier::new(element_type, size as i32))
    }

    fn read_set_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }

    fn read_map_begin(&mut self) -> thrift::Result<TMapIdentifier> {
        let key_type = ttype(self.read_byte()?)?;
        let value_type = ttype(self.read_byte()?)?;
        let size = self.count(min_size(key_type) + min_size(value_type))?;
        Ok(TMapIdentifier::new(key_type, value_type, size as i32))
    }

    fn read_map_end(&mut self) -> thrift::Result<()> {
        Ok(())
    }

    fn read_byte(&mut self) -> thrift::Result<u8> {
        Ok(self.array::<1>()?[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thrift::protocol::{TBinaryOutputProtocol, TOutputProtocol};

    fn message(
        strict: bool,
        name: &str,
        body: impl FnOnce(&mut TBinaryOutputProtocol<&mut Vec<u8>>),
    ) -> Vec<u8> {
        let mut buf = Vec::new();
        {
            let mut o = TBinaryOutputProtocol::new(&mut buf, strict);
            o.write_message_begin(&TMessageIdentifier::new(name, TMessageType::Call, 7))
                .unwrap();
            body(&mut o);
        }
        buf
    }

    #[test]
    fn reads_strict_and_unversioned_headers() {
        for strict in [true, false] {
            let buf = message(strict, "get_version", |o| {
                o.write_struct_begin(&TStructIdentifier::new("args"))
                    .unwrap();
                o.write_field_stop().unwrap();
            });
            let mut i = FrameInput::new(&buf);
            let ident = i.read_message_begin().unwrap();
            assert_eq!(
                (ident.name.as_str(), ident.sequence_number),
                ("get_version", 7)
            );
            assert_eq!(ident.message_type, TMessageType::Call);
        }
    }

    #[test]
    fn refuses_lengths_longer_than_the_frame() {
        // A list claiming i32::MAX binaries, in a frame of a few bytes.
        let buf = message(true, "put", |o| {
            o.write_struct_begin(&TStructIdentifier::new("args"))
                .unwrap();
            o.write_field_begin(&TFieldIdentifier::new("items", TType::List, 2))
                .unwrap();
            o.write_byte(11).unwrap();
            o.write_i32(i32::MAX).unwrap();
        });
        let mut i = FrameInput::new(&buf);
        i.read_message_begin().unwrap();
        i.read_struct_begin().unwrap();
        i.read_field_begin().unwrap();
        assert!(i.read_list_begin().is_err());

        for len in [i32::MAX, -1, 5] {
            let mut buf = vec![0x80, 0x01, 0x00, 0x01];
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(b"put");
            assert!(FrameInput::new(&buf).read_message_begin().is_err(), "{len}");
        }
    }

    #[test]
    fn refuses_more_elements_than_the_limit() {
        // Empty binaries take 4 bytes each: the frame holds them all, the
        // limit does not.
        let n = MAX_ELEMENTS + 1;
        let buf = message(true, "put", |o| {
            o.write_struct_begin(&TStructIdentifier::new("args"))
                .unwrap();
            o.write_field_begin(&TFieldIdentifier::new("items", TType::List, 2))
                .unwrap();
            o.write_byte(11).unwrap();
            o.write_i32(n as i32).unwrap();
            for _ in 0..n {
                o.write_bytes(&[]).unwrap();
            }
        });
        let mut i = FrameInput::new(&buf);
        i.read_message_begin().unwrap();
        i.read_struct_begin().unwrap();
        i.read_field_begin().unwrap();
        match i.read_list_begin() {
            Err(thrift::Error::Protocol(e)) => assert!(e.message.contains("at most"), "{e:?}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn supplies_defaults_for_omitted_arguments() {
        let buf = message(true, "get", |o| {
            o.write_struct_begin(&TStructIdentifier::new("args"))
                .unwrap();
            o.write_field_begin(&TFieldIdentifier::new("queue_name", TType::String, 1))
                .unwrap();
            o.write_string("q").unwrap();
            o.write_field_begin(&TFieldIdentifier::new("max_items", TType::I32, 2))
                .unwrap();
            o.write_i32(5).unwrap();
            o.write_field_begin(&TFieldIdentifier::new("auto_abort_msec", TType::I32, 4))
                .unwrap();
            o.write_i32(9).unwrap();
            o.write_field_stop().unwrap();
        });
        let mut i = FrameInput::new(&buf);
        i.read_message_begin().unwrap();
        i.read_struct_begin().unwrap();
        let mut fields = Vec::new();
        loop {
            let f = i.read_field_begin().unwrap();
            if f.field_type == TType::Stop {
                break;
            }
            let value = match f.field_type {
                TType::String => i.read_string().unwrap(),
                _ => i.read_i32().unwrap().to_string(),
            };
            fields.push((f.id.unwrap(), value));
        }
        assert_eq!(
            fields,
            [
                (1, "q".into()),
                (2, "5".into()),
                (4, "9".into()),
                (3, "0".into())
            ]
        );
        assert_eq!(i.remaining(), 0);
    }

    /// ARG_DEFAULTS must list exactly the `= 0` arguments of the IDL.
    #[test]
    fn defaults_match_the_idl() {
        let idl =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/idl/kestrel.thrift"))
                .unwrap();
        let mut from_idl: Vec<(String, Vec<i16>)> = Vec::new();
        for line in idl
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('/') && !l.starts_with('*'))
        {
            let Some((head, args)) = line.split_once('(') else {
                continue;
            };
            let Some(method) = head.split_whitespace().last() else {
                continue;
            };
            let ids: Vec<i16> = args
                .split(',')
                .filter(|a| a.contains('='))
                .map(|a| a.trim().split(':').next().unwrap().trim().parse().unwrap())
                .collect();
            if !ids.is_empty() {
                from_idl.push((method.to_string(), ids));
            }
        }
        let table: Vec<(String, Vec<i16>)> = ARG_DEFAULTS
            .iter()
            .map(|(m, ids)| (m.to_string(), ids.to_vec()))
            .collect();
        assert_eq!(table, from_idl);
    }
}
