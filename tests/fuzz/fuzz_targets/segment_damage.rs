//! A segment of known records, written whole, then damaged (cut at any byte,
//! bits flipped, garbage inserted, a range zeroed), replayed by the real
//! `Journal::recover` (on tmpfs) and read back through read-behind.
//!
//! The input drives a generator: a history of ADD, OPEN, ABORT and REMOVE
//! records as the queue engine writes them (ascending sequence numbers, a
//! REMOVE or OPEN only for an item that is live), then up to four damages.
//! Recovery must give back:
//! - every item whose ADD lies wholly before the first damaged byte and
//!   that no REMOVE anywhere in the history consumed (open ones rolled back);
//! - nothing else but items that were written and not consumed by a REMOVE
//!   lying before the damage (a record after the damage may or may not
//!   survive it);
//! - each item byte for byte as written, in ascending order, with the
//!   recovery's counts matching and no live item missing on disk;
//! - the same again when the recovered directory is recovered once more.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Bytes, BytesMut};
use kestrel::journal::{Record, StoredItem};
use kestrel_fuzz::{SEGMENT, assert_recovers_the_same, recover, scratch_dir};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// A record as written: its bytes are `[start, end)` of the file.
struct Written {
    record: Record,
    end: usize,
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(history) = history(&mut u) else {
        return;
    };
    let mut file = BytesMut::new();
    let written: Vec<Written> = history
        .into_iter()
        .map(|record| {
            record.encode(&mut file);
            Written {
                record,
                end: file.len(),
            }
        })
        .collect();
    let mut file = file.to_vec();
    let first_damage = damage(&mut u, &mut file).unwrap_or(usize::MAX);

    let mut adds = BTreeMap::new();
    let mut consumed = BTreeSet::new();
    let mut consumed_before_damage = BTreeSet::new();
    let mut whole_before_damage = BTreeSet::new();
    for w in &written {
        match &w.record {
            Record::Add { seq, .. } => {
                let item = StoredItem::try_from(w.record.clone()).expect("an ADD");
                adds.insert(*seq, item);
                if w.end <= first_damage {
                    whole_before_damage.insert(*seq);
                }
            }
            Record::Remove { seq, .. } => {
                consumed.insert(*seq);
                if w.end <= first_damage {
                    consumed_before_damage.insert(*seq);
                }
            }
            _ => {}
        }
    }

    let dir = scratch_dir();
    std::fs::write(dir.join(SEGMENT), &file).unwrap();
    let (recovery, items, lost) = recover(dir);
    assert_eq!(lost, 0, "live items missing on disk");
    assert_eq!(recovery.items, items.len() as u64);
    assert_eq!(
        recovery.bytes,
        items.iter().map(|i| i.data.len() as u64).sum::<u64>()
    );
    assert!(
        items.windows(2).all(|w| w[0].seq < w[1].seq),
        "out of order"
    );
    let back: BTreeSet<u64> = items.iter().map(|i| i.seq).collect();
    for item in &items {
        assert_eq!(adds.get(&item.seq), Some(item), "an item not as written");
        assert!(
            !consumed_before_damage.contains(&item.seq),
            "item {} was removed before the damage",
            item.seq
        );
        assert!(item.seq < recovery.next_seq);
    }
    for seq in whole_before_damage.difference(&consumed) {
        assert!(
            back.contains(seq),
            "item {seq}, written whole before the damage, is missing"
        );
    }

    if first_damage == usize::MAX {
        return;
    }
    // What recovery left of a damaged file recovers the same.
    assert_recovers_the_same(dir, &recovery, &items);
});

/// Records as the engine writes them.
fn history(u: &mut Unstructured) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    let mut next_seq = 1u64;
    // Live items (seq -> size), and which of them are open.
    let mut live: BTreeMap<u64, u32> = BTreeMap::new();
    let mut open: BTreeSet<u64> = BTreeSet::new();
    let pick = |u: &mut Unstructured, from: Vec<u64>| -> Result<Option<u64>> {
        Ok(if from.is_empty() {
            None
        } else {
            Some(from[u.choose_index(from.len())?])
        })
    };
    for _ in 0..u.int_in_range(1..=40)? {
        let record = match u.int_in_range(0..=9)? {
            0..=4 => {
                let len = u.int_in_range(0..=64)?;
                let data = Bytes::copy_from_slice(u.bytes(len)?);
                let expires_ms = match u.arbitrary::<Option<i64>>()? {
                    Some(i64::MIN) => None,
                    other => other,
                };
                let seq = next_seq;
                next_seq += u.int_in_range(1..=3)?;
                live.insert(seq, data.len() as u32);
                Record::Add {
                    seq,
                    added_ms: u.arbitrary()?,
                    expires_ms,
                    data,
                }
            }
            5..=6 => {
                let Some(seq) = pick(u, live.keys().copied().collect())? else {
                    continue;
                };
                open.remove(&seq);
                Record::Remove {
                    seq,
                    size: live.remove(&seq).expect("live"),
                }
            }
            7..=8 => {
                let closed = live.keys().filter(|s| !open.contains(s)).copied().collect();
                let Some(seq) = pick(u, closed)? else {
                    continue;
                };
                open.insert(seq);
                Record::Open {
                    seq,
                    size: live[&seq],
                }
            }
            _ => {
                let Some(seq) = pick(u, open.iter().copied().collect())? else {
                    continue;
                };
                open.remove(&seq);
                Record::Abort { seq }
            }
        };
        records.push(record);
    }
    Ok(records)
}

/// Damages `file` as far as the input goes; returns the offset of its first
/// damaged byte, if any.
fn damage(u: &mut Unstructured, file: &mut Vec<u8>) -> Option<usize> {
    let mut first = None;
    let _input_ran_out = damage_into(u, file, &mut first);
    first
}

fn damage_into(u: &mut Unstructured, file: &mut Vec<u8>, first: &mut Option<usize>) -> Result<()> {
    for _ in 0..u.int_in_range(0..=4)? {
        let at = u.int_in_range(0..=file.len())?;
        match u.int_in_range(0..=3)? {
            0 => file.truncate(at),
            1 if at < file.len() => file[at] ^= 1 << u.int_in_range(0..=7)?,
            2 => {
                let len = u.int_in_range(1..=24)?;
                let garbage = u.bytes(len)?.to_vec();
                file.splice(at..at, garbage);
            }
            3 if at < file.len() => {
                let end = (at + u.int_in_range(1..=64)?).min(file.len());
                file[at..end].fill(0);
            }
            _ => continue,
        }
        *first = Some(first.map_or(at, |f| f.min(at)));
    }
    Ok(())
}
