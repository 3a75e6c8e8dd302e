//! Thrift's framed transport: a 4-byte big-endian length, then the message.
//!
//! Unlike a general length-delimited codec, this one never reserves room for
//! a frame from its announced length: a client that sends a header claiming
//! 16 MiB and nothing more holds only what it sent. The connection's buffer
//! grows with the bytes that actually arrive, under the server's budget.

use std::io;

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

use crate::protocol::connection::Codec;

/// Frames of at most `max` bytes.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    pub max: usize,
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        let Some(header) = buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*header) as usize;
        if len > self.max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "frame of {len} bytes is larger than max_frame_size ({} bytes)",
                    self.max
                ),
            ));
        }
        if buf.len() < 4 + len {
            return Ok(None);
        }
        buf.advance(4);
        Ok(Some(buf.split_to(len)))
    }
}

impl Codec for FrameCodec {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_arrive_whole_and_announced_lengths_reserve_nothing() {
        let mut codec = FrameCodec { max: 1 << 24 };
        let mut buf = BytesMut::from(&[0u8, 0x40, 0, 0][..]);
        let before = buf.capacity();
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert_eq!(buf.capacity(), before, "nothing reserved for the frame");
        let mut buf = BytesMut::from(&b"\0\0\0\x03abc\0\0\0\x01"[..]);
        assert_eq!(
            codec.decode(&mut buf).unwrap().as_deref(),
            Some(&b"abc"[..])
        );
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"z");
        assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some(&b"z"[..]));
    }

    #[test]
    fn a_frame_over_the_limit_is_an_error() {
        let mut codec = FrameCodec { max: 10 };
        let mut buf = BytesMut::from(&b"\0\0\0\x0b"[..]);
        let e = codec.decode(&mut buf).unwrap_err();
        assert!(e.to_string().contains("larger than max_frame_size"), "{e}");
    }
}
