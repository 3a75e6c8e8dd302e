//! What the queue engine reports back to its callers: the items a read got,
//! what a put did, what an expiry pass did, and that a queue was deleted
//! under a caller's feet. Plain data, shared by the store that fills them in
//! and the [`Queue`](super::Queue) API that hands them out.

use super::item::Item;
use crate::journal::Ack;

/// An item handed to a reader; `xid` is set when it was opened.
#[derive(Debug, Clone)]
pub struct Taken {
    pub item: Item,
    pub xid: Option<u64>,
}

/// Why a put stopped before its last item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The queue is at `max_items` or `max_size`.
    Full,
    /// The item is larger than `max_item_size`.
    TooLarge,
}

/// What a put did: how many items went in (with sequence numbers from
/// `first_seq` on), and why the rest did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    pub accepted: usize,
    pub first_seq: u64,
    pub refused: Option<Refusal>,
}

/// What an expiry pass did.
pub struct Expired {
    /// Items that expired.
    pub count: u64,
    /// Those to move to `target`.
    pub moving: Vec<Item>,
    pub target: Option<String>,
    pub ack: Option<Ack>,
}

/// The queue was deleted while the caller held on to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted;
