//! The journal's own view of a queue: which items are live, which are open,
//! and which segment holds each item's data. Built by applying records, both
//! as they are appended and when they are replayed, so the two always agree;
//! a checkpoint is a copy of it.

use std::collections::BTreeMap;

use super::checkpoint::{Checkpoint, Position, SegmentInfo};
use super::record::{ADD_OVERHEAD, Record};
use super::runs::Runs;

#[derive(Debug, Clone, Default)]
pub struct LogState {
    pub next_seq: u64,
    pub created_ms: i64,
    /// Items put and not yet removed: ready or open.
    pub live: Runs,
    pub live_bytes: u64,
    /// Open items and their sizes.
    pub open: BTreeMap<u64, u32>,
    pub segments: BTreeMap<u64, SegmentInfo>,
    /// First ADD sequence number of a segment -> its id (ADDs are appended in
    /// sequence order, so each segment holds one ascending range).
    by_seq: BTreeMap<u64, u64>,
}

impl LogState {
    pub fn new(created_ms: i64) -> Self {
        LogState {
            next_seq: 1,
            created_ms,
            ..LogState::default()
        }
    }

    pub fn from_checkpoint(c: &Checkpoint) -> Self {
        let mut s = LogState {
            next_seq: c.next_seq,
            created_ms: c.created_ms,
            live: c.live.clone(),
            live_bytes: c.live_bytes,
            open: c.open.clone(),
            segments: c.segments.clone(),
            by_seq: BTreeMap::new(),
        };
        s.reindex();
        s
    }

    pub fn to_checkpoint(&self, name: &str, generation: u64, replay_from: Position) -> Checkpoint {
        Checkpoint {
            name: name.to_string(),
            generation,
            replay_from,
            next_seq: self.next_seq,
            created_ms: self.created_ms,
            live_bytes: self.live_bytes,
            live: self.live.clone(),
            open: self.open.clone(),
            segments: self.segments.clone(),
        }
    }

    fn reindex(&mut self) {
        self.by_seq = self
            .segments
            .iter()
            .filter_map(|(&id, s)| s.adds.map(|(first, _)| (first, id)))
            .collect();
    }

    /// The segment whose ADD range covers `seq`, or the first one after it.
    pub fn segment_at_or_after(&self, seq: u64) -> Option<u64> {
        if let Some((_, &id)) = self.by_seq.range(..=seq).next_back()
            && self
                .segments
                .get(&id)
                .and_then(|s| s.adds)
                .is_some_and(|(_, last)| seq <= last)
        {
            return Some(id);
        }
        self.by_seq.range(seq + 1..).next().map(|(_, &id)| id)
    }

    /// The segment holding the ADD of `seq`.
    fn segment_of(&self, seq: u64) -> Option<u64> {
        let (_, &id) = self.by_seq.range(..=seq).next_back()?;
        let (_, last) = self.segments.get(&id)?.adds?;
        (seq <= last).then_some(id)
    }

    fn release(&mut self, seq: u64, size: u32) {
        self.live_bytes = self.live_bytes.saturating_sub(u64::from(size));
        if let Some(id) = self.segment_of(seq)
            && let Some(s) = self.segments.get_mut(&id)
        {
            s.live_bytes = s
                .live_bytes
                .saturating_sub((ADD_OVERHEAD as u64) + u64::from(size));
        }
    }

    /// Applies a record that sits in `segment` and takes `len` bytes there.
    pub fn apply(&mut self, record: &Record, segment: u64, len: u64) {
        let info = self.segments.entry(segment).or_default();
        info.size += len;
        match record {
            Record::Add { seq, data, .. } => {
                let seq = *seq;
                info.live_bytes += len;
                let first = match info.adds {
                    Some((first, last)) => {
                        info.adds = Some((first, last.max(seq)));
                        first
                    }
                    None => {
                        info.adds = Some((seq, seq));
                        seq
                    }
                };
                self.by_seq.insert(first, segment);
                if !self.live.contains(seq) {
                    self.live.insert(seq);
                    self.live_bytes += data.len() as u64;
                }
                self.next_seq = self.next_seq.max(seq + 1);
            }
            Record::Remove { seq, size } => {
                if self.live.remove(*seq) {
                    self.open.remove(seq);
                    self.release(*seq, *size);
                }
            }
            Record::Open { seq, size } => {
                if self.live.contains(*seq) {
                    self.open.insert(*seq, *size);
                }
            }
            Record::Abort { seq } => {
                self.open.remove(seq);
            }
            Record::Flush { below, keep } => {
                // Everything under `below` goes but the reads open then:
                // those the record lists, or (older journals) those the
                // OPEN records say.
                let open: Vec<(u64, u32)> = match keep {
                    Some(keep) => keep
                        .iter()
                        .filter(|(seq, _)| self.live.contains(*seq))
                        .copied()
                        .collect(),
                    None => self.open.iter().map(|(&s, &z)| (s, z)).collect(),
                };
                self.live.remove_below(*below);
                for s in self.segments.values_mut() {
                    s.live_bytes = 0;
                }
                self.live_bytes = 0;
                self.open = open.iter().copied().collect();
                for (seq, size) in open {
                    self.live.insert(seq);
                    self.live_bytes += u64::from(size);
                    if let Some(id) = self.segment_of(seq)
                        && let Some(s) = self.segments.get_mut(&id)
                    {
                        s.live_bytes += ADD_OVERHEAD as u64 + u64::from(size);
                    }
                }
            }
        }
    }

    /// Forgets items whose data could not be found (a damaged segment).
    pub fn lose(&mut self, from: u64, to: u64) -> u64 {
        let mut lost = 0;
        let mut at = from;
        while let Some(seq) = self.live.next_at_or_after(at) {
            if seq >= to {
                break;
            }
            self.live.remove(seq);
            self.open.remove(&seq);
            lost += 1;
            at = seq + 1;
        }
        lost
    }

    /// A segment was rewritten to hold only live ADDs, or deleted.
    pub fn segment_rewritten(&mut self, id: u64, kept: Option<(u64, Option<(u64, u64)>)>) {
        match kept {
            Some((size, adds)) => {
                if let Some(s) = self.segments.get_mut(&id) {
                    s.size = size;
                    s.adds = adds;
                }
            }
            None => {
                self.segments.remove(&id);
            }
        }
        self.reindex();
    }

    /// Bytes of every segment.
    pub fn size(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn add(seq: u64, n: usize) -> Record {
        Record::Add {
            seq,
            added_ms: 0,
            expires_ms: None,
            data: Bytes::from(vec![0u8; n]),
        }
    }

    #[test]
    fn tracks_live_items_and_their_segments() {
        let mut s = LogState::new(0);
        let len = |n: usize| (ADD_OVERHEAD + n) as u64;
        s.apply(&add(1, 10), 1, len(10));
        s.apply(&add(2, 20), 1, len(20));
        s.apply(&add(3, 30), 2, len(30));
        assert_eq!((s.live.len(), s.live_bytes, s.next_seq), (3, 60, 4));
        assert_eq!(s.segment_at_or_after(2), Some(1));
        assert_eq!(s.segment_at_or_after(3), Some(2));
        s.apply(&Record::Open { seq: 1, size: 10 }, 2, 20);
        s.apply(&Record::Remove { seq: 2, size: 20 }, 2, 20);
        assert_eq!(s.segments[&1].live_bytes, len(10));
        s.apply(
            &Record::Flush {
                below: 4,
                keep: None,
            },
            2,
            16,
        );
        // Only the open item survives a flush.
        assert_eq!(s.live.runs().collect::<Vec<_>>(), [(1, 2)]);
        assert_eq!(s.live_bytes, 10);
        assert_eq!(
            (s.segments[&1].live_bytes, s.segments[&2].live_bytes),
            (len(10), 0)
        );
        s.apply(&Record::Remove { seq: 1, size: 10 }, 2, 20);
        assert_eq!(s.live.len(), 0);
        assert_eq!(s.segments[&1].live_bytes, 0);
    }

    #[test]
    fn a_flush_keeps_the_reads_it_lists_whatever_the_open_records_say() {
        let mut s = LogState::new(0);
        for seq in 1..=3 {
            s.apply(&add(seq, 10), 1, (ADD_OVERHEAD + 10) as u64);
        }
        // A stale OPEN (rolled back by a restart since) and a missing one
        // (its write failed): the list alone decides.
        s.apply(&Record::Open { seq: 1, size: 10 }, 1, 20);
        s.apply(
            &Record::Flush {
                below: 4,
                keep: Some(vec![(2, 10)]),
            },
            1,
            30,
        );
        assert_eq!(s.live.runs().collect::<Vec<_>>(), [(2, 3)]);
        assert_eq!(s.live_bytes, 10);
        assert_eq!(s.open.keys().copied().collect::<Vec<_>>(), [2]);
    }
}
