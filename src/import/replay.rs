//! Replaying a Kestrel queue's records as Kestrel's `PersistentQueue` did,
//! over item *references*: the queue that results says which payloads are
//! live and in what order, and holds a few dozen bytes per item whatever the
//! payloads weigh, so a journal of any size replays in bounded memory.

use std::collections::{HashMap, VecDeque};

use super::record::{Added, Record};

/// Where a live item's payload is, and its times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemRef {
    /// Index of the file in the queue's replay order.
    pub file: u32,
    /// Offset of the payload in that file.
    pub offset: u64,
    pub len: u32,
    pub added_ms: i64,
    pub expires_ms: Option<i64>,
}

/// A queue being replayed.
#[derive(Debug, Default)]
pub struct Replay {
    queue: VecDeque<ItemRef>,
    /// Open reads by xid, with the order they were opened in.
    open: HashMap<i32, (u64, ItemRef)>,
    opened: u64,
    xid: i32,
}

/// The replayed queue: its live items in order (reads still open put back
/// at the head, first opened first), and how many reads that was.
#[derive(Debug, PartialEq, Eq)]
pub struct Replayed {
    pub items: Vec<ItemRef>,
    pub rolled_back: usize,
}

impl Replay {
    /// Applies one record found at `offset` in file `file`; `now_ms` stamps
    /// legacy ADDs, which carry no add time (Kestrel stamped them at replay).
    pub fn apply(&mut self, record: Record, file: u32, offset: u64, now_ms: i64) {
        let item = |a: Added| ItemRef {
            file,
            offset: offset + a.data_at as u64,
            len: a.len,
            added_ms: a.added_ms.unwrap_or(now_ms),
            expires_ms: a.expires_ms,
        };
        match record {
            Record::Add(a) => self.queue.push_back(item(a)),
            // Kestrel ignores a remove of an empty queue.
            Record::Remove => {
                self.queue.pop_front();
            }
            Record::Open(xid) => {
                // The legacy record's xid is the next of the counter, as
                // Kestrel 1.x assigned it (2.x never writes the record).
                let xid = xid.unwrap_or_else(|| self.next_xid());
                self.xid = xid;
                if let Some(head) = self.queue.pop_front() {
                    self.opened += 1;
                    self.open.insert(xid, (self.opened, head));
                }
            }
            Record::SaveXid(xid) => self.xid = xid,
            Record::Unremove(xid) => {
                if let Some((_, item)) = self.open.remove(&xid) {
                    self.queue.push_front(item);
                }
            }
            Record::Confirm(xid) => {
                self.open.remove(&xid);
            }
            Record::Continue(xid, a) => {
                self.open.remove(&xid);
                self.queue.push_back(item(a));
            }
        }
    }

    fn next_xid(&self) -> i32 {
        match self.xid.wrapping_add(1) {
            0 => 1,
            n => n,
        }
    }

    /// Ends the replay: reads still open go back to the head, in the order
    /// they were opened.
    pub fn finish(mut self) -> Replayed {
        let mut open: Vec<(u64, ItemRef)> = self.open.into_values().collect();
        open.sort_by_key(|(order, _)| *order);
        let rolled_back = open.len();
        for (_, item) in open.into_iter().rev() {
            self.queue.push_front(item);
        }
        Replayed {
            items: self.queue.into(),
            rolled_back,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(n: u64) -> Record {
        Record::Add(Added {
            data_at: 21,
            len: n as u32,
            added_ms: Some(n as i64),
            expires_ms: None,
        })
    }

    fn lens(r: &Replayed) -> Vec<u32> {
        r.items.iter().map(|i| i.len).collect()
    }

    fn replay(records: &[Record]) -> Replayed {
        let mut replay = Replay::default();
        for (i, r) in records.iter().enumerate() {
            replay.apply(*r, 0, i as u64 * 100, 7);
        }
        replay.finish()
    }

    #[test]
    fn removes_take_the_head_and_confirms_finish_open_reads() {
        let r = replay(&[
            add(1),
            add(2),
            add(3),
            Record::Remove,
            Record::Open(Some(5)),
            Record::Confirm(5),
            Record::Remove,
            Record::Remove,
            add(4),
        ]);
        assert_eq!(lens(&r), [4]);
        assert_eq!(r.rolled_back, 0);
        assert_eq!(
            r.items[0].offset,
            8 * 100 + 21,
            "the payload's offset in the file"
        );
    }

    #[test]
    fn open_reads_go_back_to_the_head_in_their_original_order() {
        let r = replay(&[
            add(1),
            add(2),
            add(3),
            add(4),
            Record::Open(Some(9)),
            Record::Open(Some(3)),
            Record::Open(Some(4)),
            Record::Unremove(4),
        ]);
        // 3 was unremoved (back at the head); 1 and 2 were still open.
        assert_eq!(lens(&r), [1, 2, 3, 4]);
        assert_eq!(r.rolled_back, 2);
    }

    #[test]
    fn legacy_records_and_continue() {
        let r = replay(&[
            Record::Add(Added {
                data_at: 9,
                len: 1,
                added_ms: None,
                expires_ms: Some(5000),
            }),
            add(2),
            add(3),
            Record::SaveXid(10),
            Record::Open(None), // xid 11
            Record::Open(None), // xid 12
            Record::Confirm(11),
            Record::Continue(12, add(5).added().unwrap()),
            Record::Unremove(99), // unknown: ignored
        ]);
        assert_eq!(lens(&r), [3, 5]);
        let legacy = replay(&[Record::Add(Added {
            data_at: 9,
            len: 1,
            added_ms: None,
            expires_ms: None,
        })]);
        assert_eq!(
            legacy.items[0].added_ms, 7,
            "a legacy add is stamped at replay"
        );
    }

    #[test]
    fn removes_and_opens_of_an_empty_queue_are_ignored() {
        let r = replay(&[
            Record::Remove,
            Record::Open(Some(1)),
            add(1),
            Record::Unremove(1),
        ]);
        assert_eq!(lens(&r), [1]);
        assert_eq!(r.rolled_back, 0);
    }

    impl Record {
        fn added(self) -> Option<Added> {
            match self {
                Record::Add(a) => Some(a),
                _ => None,
            }
        }
    }
}
