//! What the two line protocols (memcache and text) parse alike: their
//! limits, command lines split into words, numbers and names in those words,
//! and items cut out of the input buffer. Pure functions over bytes; each
//! protocol words its own error replies.

use std::borrow::Cow;

use bytes::{Buf, Bytes, BytesMut};

use crate::config::ServerConfig;

/// Limits on what one request may make the server buffer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest command line, without its line end.
    pub max_line: usize,
    /// Largest item (a memcache data block, a text item line).
    pub max_item: usize,
    /// Most items in one text `put`.
    pub max_put_items: usize,
    /// Most bytes in one text `put`.
    pub max_put_bytes: usize,
}

impl Limits {
    pub fn new(config: &ServerConfig) -> Limits {
        Limits {
            max_line: config.max_line_size,
            max_item: config.max_item_size,
            max_put_items: config.text_max_put_items,
            max_put_bytes: config.max_frame_size,
        }
    }
}

/// Most arguments a command of either protocol reads (`set q flags
/// exptime bytes noreply`); words past them are ignored, as they were when
/// every word was kept.
pub const MAX_ARGS: usize = 6;

/// A command line's arguments, kept in place: every request is split, and
/// a `Vec` of them was an allocation per request.
#[derive(Debug, Default)]
pub struct Args<'a> {
    words: [&'a [u8]; MAX_ARGS],
    len: usize,
}

impl<'a> std::ops::Deref for Args<'a> {
    type Target = [&'a [u8]];

    fn deref(&self) -> &[&'a [u8]] {
        &self.words[..self.len]
    }
}

/// Splits a command line at spaces: the command, lowercased (borrowed
/// unless it had capitals or was not UTF-8), and its first [`MAX_ARGS`]
/// arguments. `None` for a blank line.
pub fn split_command(line: &[u8]) -> Option<(Cow<'_, str>, Args<'_>)> {
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let first = words.next()?;
    let command = match std::str::from_utf8(first) {
        Ok(c) if !c.bytes().any(|b| b.is_ascii_uppercase()) => Cow::Borrowed(c),
        _ => Cow::Owned(String::from_utf8_lossy(first).to_ascii_lowercase()),
    };
    let mut args = Args::default();
    for (slot, word) in args.words.iter_mut().zip(words) {
        *slot = word;
        args.len += 1;
    }
    Some((command, args))
}

/// A word as a number, if it is one.
pub fn number<T: std::str::FromStr>(word: &[u8]) -> Option<T> {
    std::str::from_utf8(word).ok()?.parse().ok()
}

/// A word as text (a queue name, a status), if it is UTF-8.
pub fn text(word: &[u8]) -> Option<String> {
    String::from_utf8(word.to_vec()).ok()
}

/// Items up to this size are copied out of a connection's read buffer
/// rather than sliced from it: a queued slice keeps the whole buffer
/// allocated, so a small item could pin many times its size.
const COPY_BELOW: usize = 4096;

/// Takes the first `len` bytes of `buf` as an item of its own.
pub fn take_item(buf: &mut BytesMut, len: usize) -> Bytes {
    if len < COPY_BELOW {
        let item = Bytes::copy_from_slice(&buf[..len]);
        buf.advance(len);
        item
    } else {
        buf.split_to(len).freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_at_runs_of_spaces_and_the_command_is_lowercased() {
        let (command, args) = split_command(b"  GET  q/open   x").unwrap();
        assert_eq!(command, "get");
        assert_eq!(*args, [&b"q/open"[..], b"x"]);
        assert!(matches!(command, Cow::Owned(_)));
        let (command, args) = split_command(b"set q 0 0 5 noreply extra more").unwrap();
        assert!(matches!(command, Cow::Borrowed("set")));
        assert_eq!(args.len(), MAX_ARGS);
        assert_eq!(args[MAX_ARGS - 1], b"extra");
        assert!(split_command(b"   ").is_none());
        assert_eq!(number::<u32>(b"42"), Some(42));
        assert_eq!(number::<u32>(b"-1"), None);
        assert_eq!(text(b"\xff"), None);
    }

    #[test]
    fn small_items_are_copied_and_large_ones_sliced() {
        let mut buf = BytesMut::from(&b"abcdef"[..]);
        assert_eq!(take_item(&mut buf, 2), Bytes::from_static(b"ab"));
        assert_eq!(&buf[..], b"cdef");
        let mut big = BytesMut::from(vec![7u8; COPY_BELOW + 10].as_slice());
        let item = take_item(&mut big, COPY_BELOW);
        assert_eq!(item.len(), COPY_BELOW);
        assert_eq!(big.len(), 10);
    }
}
