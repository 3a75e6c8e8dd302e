//! Read-behind: items past the queue's memory budget are read back from
//! the segments, in order, as the head drains.

use std::fs;

use super::segment::{self, Next, Reader};
use super::{Cursor, Journal, Record, StoredItem, warn_skipped};

/// Items read back from disk.
#[derive(Debug, Default)]
pub struct ReadBatch {
    pub items: Vec<StoredItem>,
    /// Live items whose data could not be found (a damaged segment).
    pub lost: u64,
}

impl Journal {
    /// Reads back live items from `from` on, in order, until their data (and
    /// `per_item` bytes for each) reaches `budget` bytes (at least one item).
    pub fn read_items(
        &mut self,
        from: u64,
        budget: u64,
        per_item: u64,
    ) -> std::io::Result<ReadBatch> {
        let mut batch = ReadBatch::default();
        let mut bytes = 0u64;
        let Some(mut want) = self.state.live.next_at_or_after(from) else {
            return Ok(batch);
        };
        let Some(target) = self.state.segment_at_or_after(want) else {
            batch.lost += self.state.lose(want, u64::MAX);
            return Ok(batch);
        };
        if let Some(cursor) = &mut self.cursor
            && !cursor.reader.unpark()?
        {
            // Its segment was rewritten since: start that segment over.
            self.cursor = None;
        }
        let reusable = self.cursor.as_ref().is_some_and(|c| {
            let next = c.held.as_ref().map_or(c.after, |h| h.seq);
            c.reader.id == target && next <= want
        });
        if !reusable {
            self.cursor = Some(Cursor {
                reader: self.open_reader(target)?,
                after: 0,
                held: None,
            });
        }
        let mut refreshed = None;
        loop {
            let cursor = self.cursor.as_mut().expect("opened above");
            let next = match cursor.held.take() {
                Some(item) => Next::Record {
                    record: item.into(),
                    len: 0,
                },
                None => cursor.reader.next()?,
            };
            match next {
                Next::Record {
                    record: add @ Record::Add { .. },
                    ..
                } => {
                    let seq = add.seq();
                    cursor.after = cursor.after.max(seq + 1);
                    if seq < want {
                        continue;
                    }
                    if seq > want {
                        batch.lost += self.state.lose(want, seq);
                    }
                    if self.state.live.contains(seq) {
                        let item = StoredItem::try_from(add).expect("an ADD record");
                        let size = item.data.len() as u64 + per_item;
                        if !batch.items.is_empty() && bytes + size > budget {
                            // Over budget: keep it for next time.
                            cursor.held = Some(item);
                            break;
                        }
                        bytes += size;
                        batch.items.push(item);
                    }
                    match self.state.live.next_at_or_after(seq + 1) {
                        Some(next) => want = next,
                        None => break,
                    }
                }
                Next::Record { .. } => {}
                Next::Skipped(d) => warn_skipped(&self.dir, cursor.reader.id, &d),
                Next::End { damage, valid_len } => {
                    let id = cursor.reader.id;
                    // Short of what was appended to the segment: the rest may
                    // still be waiting to be written, or have been written
                    // after the reader last looked at the file's length (it was
                    // the active segment then). Write, look again, once.
                    let appended = self.state.segments.get(&id).map_or(0, |s| s.size);
                    if valid_len < appended && refreshed != Some(id) {
                        refreshed = Some(id);
                        self.io.write_now();
                        cursor.reader.refresh_len()?;
                        continue;
                    }
                    if damage.is_some() {
                        // Damage recovery stepped over: so do we.
                        if let Next::Skipped(d) = cursor.reader.resync()? {
                            warn_skipped(&self.dir, id, &d);
                            continue;
                        }
                    }
                    if id >= self.active {
                        batch.lost += self.state.lose(want, u64::MAX);
                        break;
                    }
                    if let Some(d) = damage {
                        tracing::warn!(
                            dir = %self.dir.display(),
                            segment = id,
                            offset = d.offset,
                            bytes = d.len,
                            "damaged journal segment tail skipped; DATA MAY HAVE BEEN LOST"
                        );
                    }
                    match self
                        .state
                        .segments
                        .range(id + 1..)
                        .next()
                        .map(|(&next, _)| next)
                    {
                        Some(next) => {
                            self.cursor = Some(Cursor {
                                reader: self.open_reader(next)?,
                                after: 0,
                                held: None,
                            })
                        }
                        None => {
                            batch.lost += self.state.lose(want, u64::MAX);
                            break;
                        }
                    }
                }
            }
        }
        if let Some(cursor) = &mut self.cursor {
            // Kept for the next read, without a file or a buffer meanwhile.
            cursor.reader.park();
        }
        if batch.lost > 0 {
            tracing::warn!(queue = %self.name, items = batch.lost, "queued items lost to journal damage");
        }
        Ok(batch)
    }

    fn open_reader(&self, id: u64) -> std::io::Result<Reader> {
        if id >= self.active {
            // Its records may still be pending.
            self.io.write_now();
        }
        match Reader::open(self.journals.files(), self.id, &self.dir, id, 0) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Nothing was ever written to it: the active segment before
                // its first write, or an older one whose every write failed
                // (a batch that failed in the segment before it). An empty
                // reader: what the log says is in it was never stored.
                fs::File::create(segment::path(&self.dir, id))?;
                Reader::open(self.journals.files(), self.id, &self.dir, id, 0)
            }
            other => other,
        }
    }
}
