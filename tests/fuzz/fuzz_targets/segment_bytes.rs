//! Any bytes as a journal segment file, replayed by the real
//! `Journal::recover` (on tmpfs) and read back through read-behind.
//!
//! - Recovery and read-behind never panic, whatever the file holds.
//! - Every item that comes back was in the file whole: its ADD record, encoded
//!   again, is a run of the file's bytes.
//! - Items come back in ascending sequence order, and read-behind accounts
//!   for every live item recovery counted (found or reported lost).
//! - Recovery only ever cuts the file (what remains is a prefix of it), and
//!   recovering the result again gives the same queue.
//!
//! The first input byte says whether to fill in the checksums of the records
//! the bytes frame, so that the fuzzer builds files of intact records too.
#![no_main]

use bytes::BytesMut;
use kestrel::journal::Record;
use kestrel_fuzz::{
    SEGMENT, assert_recovers_the_same, fix_record_crcs, recover, scratch_dir, split_header,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ([mode], bytes) = split_header::<1>(data);
    let mut file = bytes.to_vec();
    if mode & 1 == 1 {
        fix_record_crcs(&mut file);
    }
    let dir = scratch_dir();
    std::fs::write(dir.join(SEGMENT), &file).unwrap();

    let (recovery, items, lost) = recover(dir);
    assert_eq!(items.len() as u64 + lost, recovery.items);
    assert!(
        items.windows(2).all(|w| w[0].seq < w[1].seq),
        "out of order"
    );
    for item in &items {
        assert!(item.seq < recovery.next_seq);
        let mut add = BytesMut::new();
        Record::from(item.clone()).encode(&mut add);
        assert!(
            file.windows(add.len()).any(|w| w == &add[..]),
            "item {} was never written whole",
            item.seq
        );
    }
    let left = std::fs::read(dir.join(SEGMENT)).unwrap();
    assert!(
        file.starts_with(&left),
        "recovery changed the file, not just cut it"
    );

    if left.len() == file.len() {
        return;
    }
    // Something was cut: what remains must recover the same.
    assert_recovers_the_same(dir, &recovery, &items);
});
