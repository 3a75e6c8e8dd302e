//! Any bytes in a checkpoint file, through the decoder recovery uses.
//!
//! - Decoding never panics, and never allocates more than the file's size
//!   warrants (counts are checked against the bytes left before anything is
//!   built from them; run with `-malloc_limit_mb`).
//! - A checkpoint that decodes is a fixed point: written again (always as
//!   version 2) it decodes to the same checkpoint, and that writes the same
//!   bytes again.
//! - A version-2 checkpoint, the one the server writes, re-encodes to
//!   exactly the bytes it was read from when its contents are in the form
//!   the server writes them (sorted, disjoint runs; ordered ids).
//!
//! The first input byte says whether to fill in the checksum (at the place
//! the header's length field, or for version 1 the end of the file, puts it)
//! so that the fuzzer gets past it to the state decoder.
#![no_main]

use kestrel::journal::checkpoint::Checkpoint;
use kestrel_fuzz::split_header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ([mode], bytes) = split_header::<1>(data);
    let mut bytes = bytes.to_vec();
    if mode & 1 == 1 {
        fix_crc(&mut bytes);
    }
    let Some(checkpoint) = Checkpoint::decode(&bytes) else {
        return;
    };
    let written = checkpoint.encode();
    assert_eq!(Checkpoint::decode(&written).as_ref(), Some(&checkpoint));
    assert_eq!(
        Checkpoint::decode(&written).map(|c| c.encode()),
        Some(written.clone())
    );
    let version = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
    if version == 2 && canonical(&bytes) {
        let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        assert_eq!(
            written,
            bytes[..len + 4],
            "{checkpoint:?} re-encodes differently"
        );
    }
});

fn fix_crc(bytes: &mut [u8]) {
    if bytes.len() < 12 {
        return;
    }
    match u32::from_le_bytes(bytes[4..8].try_into().unwrap()) {
        1 => {
            let end = bytes.len() - 4;
            let crc = crc32c::crc32c(&bytes[..end]);
            bytes[end..].copy_from_slice(&crc.to_le_bytes());
        }
        _ => {
            let len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
            if len.checked_add(4).is_some_and(|end| end <= bytes.len()) {
                let crc = crc32c::crc32c(&bytes[..len]);
                bytes[len..len + 4].copy_from_slice(&crc.to_le_bytes());
            }
        }
    }
}

/// Whether a decodable version-2 checkpoint lists its runs, open items and
/// segments as the encoder does: runs non-empty, ascending and not touching;
/// open items and segments in strictly ascending order.
fn canonical(bytes: &[u8]) -> bool {
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let name_len = usize::from(u16::from_le_bytes(bytes[12..14].try_into().unwrap()));
    let mut at = 14 + name_len + 6 * 8;
    let runs = u64_at(at) as usize;
    at += 8;
    let mut last_end = None;
    for _ in 0..runs {
        let (start, end) = (u64_at(at), u64_at(at + 8));
        if start >= end || last_end.is_some_and(|e| start <= e) {
            return false;
        }
        last_end = Some(end);
        at += 16;
    }
    let open = u64_at(at) as usize;
    at += 8;
    let mut last = None;
    for _ in 0..open {
        let seq = u64_at(at);
        if last.is_some_and(|l| seq <= l) {
            return false;
        }
        last = Some(seq);
        at += 12;
    }
    let segments = u64_at(at) as usize;
    at += 8;
    let mut last = None;
    for _ in 0..segments {
        let (id, first) = (u64_at(at), u64_at(at + 16));
        // "No ADD" is written as first = last = MAX: any other last is lost.
        if last.is_some_and(|l| id <= l) || (first == u64::MAX && u64_at(at + 24) != u64::MAX) {
            return false;
        }
        last = Some(id);
        at += 40;
    }
    true
}
