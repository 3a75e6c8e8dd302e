//! Any bytes as a Kestrel 2.x journal file, through the importer's record
//! parser and replay (`kestrel import-kestrel`).
//!
//! - Parsing and replay never panic, and allocate nothing from a length the
//!   bytes claim.
//! - Every record parsed lies within the bytes, and takes at least one.
//! - Every live item the replay keeps points at payload bytes inside the
//!   file, and no more items survive than records added them.
#![no_main]

use kestrel::import::Replay;
use kestrel::import::record::{Record, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut replay = Replay::default();
    let (mut pos, mut adds) = (0usize, 0usize);
    while pos < data.len() {
        let Ok((record, len)) = parse(&data[pos..], (data.len() - pos) as u64) else {
            break;
        };
        assert!(
            len >= 1 && pos as u64 + len <= data.len() as u64,
            "{record:?}: {len} bytes at {pos}"
        );
        adds += usize::from(matches!(record, Record::Add(_) | Record::Continue(..)));
        replay.apply(record, 0, pos as u64, 0);
        pos += len as usize;
    }
    let replayed = replay.finish();
    assert!(replayed.items.len() <= adds);
    for item in &replayed.items {
        assert!(
            item.offset + u64::from(item.len) <= data.len() as u64,
            "{item:?}"
        );
    }
});
