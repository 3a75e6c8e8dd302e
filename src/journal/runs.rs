//! A set of sequence numbers kept as sorted runs `[start, end)`.
//!
//! The live items of a queue are almost always one long run (put at the tail,
//! taken from the head) plus a few stragglers, so this is how a checkpoint
//! describes millions of items in a few bytes.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runs {
    /// start -> end (exclusive); runs never touch or overlap.
    runs: BTreeMap<u64, u64>,
    len: u64,
}

impl Runs {
    pub fn from_runs(runs: impl IntoIterator<Item = (u64, u64)>) -> Runs {
        let mut set = Runs::default();
        for (start, end) in runs {
            set.insert_range(start, end);
        }
        set
    }

    /// Number of sequence numbers in the set.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.runs.iter().map(|(&s, &e)| (s, e))
    }

    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.runs
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &end)| seq < end)
    }

    /// The smallest member at or after `seq`.
    pub fn next_at_or_after(&self, seq: u64) -> Option<u64> {
        if self.contains(seq) {
            return Some(seq);
        }
        self.runs.range(seq..).next().map(|(&s, _)| s)
    }

    pub fn first(&self) -> Option<u64> {
        self.runs.keys().next().copied()
    }

    /// The members in `[from, to)`, as runs cut to it, in order.
    pub fn within(&self, from: u64, to: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let to = to.max(from);
        let straddling = self.runs.range(..from).next_back().map(|(&s, &e)| (s, e));
        straddling
            .into_iter()
            .chain(self.runs.range(from..to).map(|(&s, &e)| (s, e)))
            .map(move |(s, e)| (s.max(from), e.min(to)))
            .filter(|(s, e)| s < e)
    }

    /// Whether any member lies in `[start, end)`.
    pub fn intersects(&self, start: u64, end: u64) -> bool {
        start < end && self.next_at_or_after(start).is_some_and(|s| s < end)
    }

    pub fn insert(&mut self, seq: u64) {
        self.insert_range(seq, seq + 1);
    }

    pub fn insert_range(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // Puts land at the tail: at or past the start of the last run, the
        // range extends it, or follows it, with no other run to absorb.
        if let Some(mut last) = self.runs.last_entry() {
            let (s, e) = (*last.key(), *last.get());
            if s <= start && start <= e {
                let grown = end.max(e);
                *last.get_mut() = grown;
                self.len += grown - e;
                return;
            }
            if start > e {
                self.runs.insert(start, end);
                self.len += end - start;
                return;
            }
        }
        // Absorb every run that overlaps or touches [start, end).
        let mut absorbed = 0;
        if let Some((&s, &e)) = self.runs.range(..=start).next_back()
            && e >= start
        {
            start = s;
            end = end.max(e);
            self.runs.remove(&s);
            absorbed += e - s;
        }
        while let Some((&s, &e)) = self.runs.range(start..=end).next() {
            end = end.max(e);
            self.runs.remove(&s);
            absorbed += e - s;
        }
        self.runs.insert(start, end);
        self.len = self.len - absorbed + (end - start);
    }

    /// Removes `seq`; returns whether it was a member.
    pub fn remove(&mut self, seq: u64) -> bool {
        // Reads take from the head: the first member needs no search.
        if let Some(first) = self.runs.first_entry()
            && *first.key() == seq
        {
            let e = first.remove();
            if seq + 1 < e {
                self.runs.insert(seq + 1, e);
            }
            self.len -= 1;
            return true;
        }
        let Some((&s, &e)) = self.runs.range(..=seq).next_back() else {
            return false;
        };
        if seq >= e {
            return false;
        }
        self.runs.remove(&s);
        if s < seq {
            self.runs.insert(s, seq);
        }
        if seq + 1 < e {
            self.runs.insert(seq + 1, e);
        }
        self.len -= 1;
        true
    }

    /// Removes every member below `below`.
    pub fn remove_below(&mut self, below: u64) {
        while let Some((&s, &e)) = self.runs.iter().next() {
            if s >= below {
                break;
            }
            self.runs.remove(&s);
            self.len -= e.min(below) - s;
            if e > below {
                self.runs.insert(below, e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_split_and_count() {
        let mut r = Runs::default();
        for seq in [1, 2, 3, 5, 6, 4] {
            r.insert(seq);
        }
        assert_eq!(r.runs().collect::<Vec<_>>(), [(1, 7)]);
        assert_eq!(r.len(), 6);
        assert!(r.remove(3));
        assert!(!r.remove(3));
        assert_eq!(r.runs().collect::<Vec<_>>(), [(1, 3), (4, 7)]);
        assert!(r.contains(2) && !r.contains(3) && r.contains(6) && !r.contains(7));
        assert_eq!(r.next_at_or_after(3), Some(4));
        assert!(r.intersects(3, 5) && !r.intersects(3, 4));
        r.remove_below(5);
        assert_eq!(r.runs().collect::<Vec<_>>(), [(5, 7)]);
        assert_eq!(r.len(), 2);
        r.insert_range(1, 10);
        assert_eq!((r.run_count(), r.len()), (1, 9));
    }

    #[test]
    fn runs_within_a_range_are_cut_to_it() {
        let r = Runs::from_runs([(1, 5), (8, 10), (20, 30)]);
        let within = |from, to| r.within(from, to).collect::<Vec<_>>();
        assert_eq!(within(3, 25), [(3, 5), (8, 10), (20, 25)]);
        assert_eq!(within(0, u64::MAX), [(1, 5), (8, 10), (20, 30)]);
        assert_eq!(within(5, 8), []);
        assert_eq!(within(9, 9), []);
        assert_eq!(within(25, 3), []);
    }

    #[test]
    fn matches_a_plain_set() {
        use std::collections::BTreeSet;
        let mut r = Runs::default();
        let mut s = BTreeSet::new();
        let mut x: u64 = 12345;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let seq = x % 200;
            match x % 3 {
                0 => {
                    r.remove(seq);
                    s.remove(&seq);
                }
                1 => {
                    r.remove_below(seq / 4);
                    s.retain(|&v| v >= seq / 4);
                }
                _ => {
                    r.insert(seq);
                    s.insert(seq);
                }
            }
            assert_eq!(r.len(), s.len() as u64);
        }
        let members: Vec<u64> = r.runs().flat_map(|(a, b)| a..b).collect();
        assert_eq!(members, s.into_iter().collect::<Vec<_>>());
    }

    /// A queue's pattern: appends at the tail, removals mostly at the head,
    /// some out of order (the fast paths), checked against a plain set.
    #[test]
    fn matches_a_plain_set_as_a_queue_uses_it() {
        use std::collections::BTreeSet;
        let mut r = Runs::default();
        let mut s = BTreeSet::new();
        let (mut tail, mut x): (u64, u64) = (0, 99);
        for _ in 0..20000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 8 {
                0..=3 => {
                    let n = 1 + x % 3;
                    let gap = u64::from(x % 16 == 4);
                    r.insert_range(tail + gap, tail + gap + n);
                    s.extend(tail + gap..tail + gap + n);
                    tail += gap + n;
                }
                4..=6 => {
                    if let Some(&head) = s.first() {
                        assert!(r.remove(head));
                        s.remove(&head);
                    }
                }
                _ => {
                    let seq = x % (tail + 1);
                    assert_eq!(r.remove(seq), s.remove(&seq));
                }
            }
            assert_eq!(r.len(), s.len() as u64);
        }
        let members: Vec<u64> = r.runs().flat_map(|(a, b)| a..b).collect();
        assert_eq!(members, s.into_iter().collect::<Vec<_>>());
    }
}
