//! The queue engine: named FIFO queues with blocking reads, transactions
//! (open, confirm, abort), expiry and limits. It knows nothing of protocols;
//! the service layer drives it.

mod collection;
pub mod dirs;
mod fifo;
mod item;
mod reaper;

pub use collection::{Capacity, Delivery, Lifecycle, Placed, QueueCollection, QueueError};
pub use fifo::{PutOutcome, Queue, ReadKind, Refusal, Taken, XidSource};
pub use item::Item;
pub use reaper::AutoAbort;
