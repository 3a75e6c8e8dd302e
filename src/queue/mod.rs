//! The queue engine: named FIFO queues with blocking reads, transactions
//! (open, confirm, abort), expiry and limits. It knows nothing of protocols;
//! the service layer drives it.
//!
//! [`QueueCollection`] holds the queues by name; one [`Queue`] (`fifo`) keeps
//! its items in a synchronous store (`store`) and its blocked readers in
//! `waiters`; `read` says what a read asks for and `report` what the engine
//! answers; `reaper` aborts open reads whose deadline passed.

mod collection;
pub mod dirs;
mod fifo;
mod item;
mod read;
mod reaper;
mod report;
mod store;
mod waiters;
mod xid;

pub use collection::{Capacity, Delivery, Lifecycle, Placed, QueueCollection, QueueError, Restore};
pub use fifo::Queue;
pub use item::Item;
pub use read::ReadKind;
pub use reaper::AutoAbort;
pub use report::{PutOutcome, Refusal, Taken};
pub use xid::XidSource;
