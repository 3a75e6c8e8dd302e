//! What a read asks of a queue: how it takes items ([`ReadKind`], as callers
//! say it, and [`ReadMode`], as the store carries it out) and how many
//! ([`Want`], bounded by [`MAX_READ_BYTES`]).

use super::item::Item;

/// How a read takes items from the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKind {
    /// Remove the items for good.
    Take,
    /// Open the items: each gets a transaction id and stays owned by the queue
    /// until confirmed (removed) or aborted (put back at the head).
    Open,
    /// Return a copy of the head item, removing nothing.
    Peek,
}

/// How the store hands items to one read: the read's [`ReadKind`], except
/// that a `Take` that may have to wait is a `HeldTake`. Its items are held
/// open (journaled as opened, under transaction ids nobody else sees) until
/// the read completes, and only then removed, so that a read cancelled while
/// it waits can put back what it had taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    Take,
    HeldTake,
    Open,
    Peek,
}

impl ReadMode {
    /// The mode for a read of `kind` that may (`may_wait`) or may not park.
    pub fn new(kind: ReadKind, may_wait: bool) -> Self {
        match kind {
            ReadKind::Take if may_wait => ReadMode::HeldTake,
            ReadKind::Take => ReadMode::Take,
            ReadKind::Open => ReadMode::Open,
            ReadKind::Peek => ReadMode::Peek,
        }
    }

    /// Whether the items it takes become open transactions rather than
    /// leaving the queue at once.
    pub fn opens(self) -> bool {
        matches!(self, ReadMode::Open | ReadMode::HeldTake)
    }
}

/// Bytes of items one read takes at most (it always takes at least one item).
pub const MAX_READ_BYTES: u64 = 16 << 20;

/// What a read still wants: items, and bytes of them. A read ends when
/// either runs out, so one read never holds more than [`MAX_READ_BYTES`]
/// (plus one item), whatever count its client asked for.
#[derive(Debug, Clone, Copy)]
pub struct Want {
    items: usize,
    bytes: u64,
}

impl Want {
    /// Up to `items` items, and [`MAX_READ_BYTES`] of them.
    pub fn new(items: usize) -> Self {
        Want {
            items,
            bytes: MAX_READ_BYTES,
        }
    }

    pub fn done(&self) -> bool {
        self.items == 0 || self.bytes == 0
    }

    pub fn took(&mut self, item: &Item) {
        self.items -= 1;
        self.bytes = self.bytes.saturating_sub(item.size());
    }
}
