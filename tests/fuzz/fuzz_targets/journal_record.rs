//! Any bytes where the journal expects a record, through the record decoder
//! that recovery and read-behind use.
//!
//! - Decoding never panics, and allocates nothing beyond the record's data.
//! - A record is only ever decoded from the bytes that encode it: what
//!   decodes re-encodes to exactly the bytes it was read from.
//! - `End` only ever stands for zeros, and `Incomplete` only for a buffer
//!   shorter than the record it starts.
//!
//! The first input byte says whether to fill in the checksums first: random
//! bytes almost never carry a right CRC32C, and the body parser sits behind it.
#![no_main]

use bytes::BytesMut;
use kestrel::journal::record::{Decoded, HEADER, MAX_BODY, decode};
use kestrel_fuzz::{fix_record_crcs, split_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ([mode], bytes) = split_header::<1>(data);
    let mut bytes = bytes.to_vec();
    if mode & 1 == 1 {
        fix_record_crcs(&mut bytes);
    }
    let claimed = bytes
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize);
    match decode(&bytes) {
        Decoded::Record(record, len) => {
            assert!(len <= bytes.len());
            let mut again = BytesMut::new();
            assert_eq!(record.encode(&mut again), len);
            assert_eq!(
                &again[..],
                &bytes[..len],
                "{record:?} re-encodes differently"
            );
        }
        Decoded::End => {
            assert!(bytes[..bytes.len().min(HEADER)].iter().all(|&b| b == 0));
        }
        Decoded::Incomplete => {
            assert!(
                bytes.len() < HEADER
                    || claimed.is_some_and(|len| len <= MAX_BODY && bytes.len() < HEADER + len),
                "incomplete, with {} bytes for a record of {claimed:?}",
                bytes.len()
            );
        }
        Decoded::Corrupt(_) => {}
    }
});
