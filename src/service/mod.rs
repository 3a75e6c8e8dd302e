//! The service: the one interface every protocol adapter calls
//! ([`QueueService`]), the wire-free requests and results it speaks in, and
//! why it refuses a call ([`ServiceError`]).
//!
//! Adapters translate their wire format into these calls and the results back
//! into wire replies; everything a queue does (waiting, transactions, limits,
//! server status, stats) happens behind this trait, in [`QueueServer`]. A
//! [`Session`] stands for one client connection: reads it opens without a
//! deadline belong to it and go back to their queues when it is dropped,
//! however the connection ended.

mod queue_server;
mod session;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use tokio::time::Instant;

use crate::clock::now_ms;
use crate::config::ConfigError;
use crate::journal::{Ack, WriteError};
use crate::name::NameError;
use crate::queue::QueueError;
use crate::stats::{QueueStats, ServerStats, Stats};
use crate::status::{ChangePending, ServerStatus};

pub use queue_server::QueueServer;
pub use session::Session;

/// The version every protocol reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Longest a read may wait; longer timeouts are cut to this.
pub const MAX_WAIT: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why the service refused a call. Each adapter maps these to its wire
/// replies in one place.
#[derive(Debug, Error)]
pub enum ServiceError {
    #[error("invalid queue name: {0}")]
    BadName(#[from] NameError),
    #[error("server is {status}: {action} refused")]
    Unavailable {
        status: ServerStatus,
        action: &'static str,
    },
    #[error("this connection has an open read on the queue; confirm or abort it first")]
    OpenReadPending,
    #[error("too many open reads on this queue (limit {limit})")]
    TooManyOpenReads { limit: usize },
    #[error("{wanted} open reads requested but only {open} open")]
    NotEnoughOpen { wanted: usize, open: usize },
    /// The queue cannot be created or opened (`max_queues`, or its journal).
    #[error(transparent)]
    Queue(QueueError),
    /// The journal write the call waited for failed: nothing was stored.
    #[error(transparent)]
    Journal(#[from] WriteError),
    /// A reload found the configuration file wrong; nothing changed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    StatusChange(#[from] ChangePending),
    /// An admin command (shutdown, reload, flush all, delete, status) on a
    /// client protocol while `protocol_admin_commands` is off.
    #[error(
        "admin commands are off on this port (protocol_admin_commands = false); use the admin HTTP port"
    )]
    AdminCommandsOff,
}

impl From<QueueError> for ServiceError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::BadName(name) => ServiceError::BadName(name),
            other => ServiceError::Queue(other),
        }
    }
}

/// Waits for a journal acknowledgement. Reads, confirms and aborts keep
/// working when the disk does not (their records are best-effort: at worst an
/// item is delivered again after a restart), so their failures are only logged.
async fn settled(ack: Option<Ack>, what: &str) {
    if let Some(ack) = ack
        && let Err(e) = ack.wait().await
    {
        tracing::warn!(error = %e, "{what} not journaled");
    }
}

/// When put items expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Never,
    /// This long after the put.
    After(Duration),
    /// At this time, in milliseconds since the Unix epoch.
    At(i64),
}

impl Expiry {
    fn deadline_ms(self) -> Option<i64> {
        match self {
            Expiry::Never => None,
            Expiry::After(d) => {
                Some(now_ms().saturating_add(d.as_millis().min(i64::MAX as u128) as i64))
            }
            Expiry::At(ms) => Some(ms),
        }
    }
}

/// How a get takes its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Remove them for good (at-most-once).
    Take,
    /// Open them for this session: they stay invisible to others until the
    /// session confirms them, and go back to the head if it aborts them or ends.
    Open,
    /// Open them with a deadline: confirmable or abortable by id from any
    /// session, and put back by themselves when the deadline passes.
    OpenWithTimeout(Duration),
    /// Return a copy of the head item without removing it.
    Peek,
}

/// A get: up to `max_items` items, waiting up to `timeout` for them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetRequest {
    pub max_items: usize,
    pub timeout: Option<Duration>,
    pub read: Read,
}

/// An item as another server held it, to be restored with its times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredItem {
    pub data: Bytes,
    /// When it was first put, in ms since the Unix epoch.
    pub added_ms: i64,
    pub expires_ms: Option<i64>,
}

/// What a restore stored; see [`QueueServer::restore`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    pub stored: usize,
    pub stored_bytes: u64,
    /// Already expired: `moved` of them went to `moved_to`, the rest nowhere.
    pub expired: usize,
    pub moved: usize,
    pub moved_to: Option<String>,
}

/// An item handed to a client. `id` is set for `Read::OpenWithTimeout` (the
/// id to confirm or abort); session-owned opens are named by order instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub data: Bytes,
    pub id: Option<u64>,
}

/// Items a get has taken but not yet handed over. [`Reading::finish`] waits
/// until the read is journaled and yields the items.
///
/// The wait is a step of its own so that an adapter can give up waiting *for*
/// items (the client left, the server stops) without ever dropping items
/// already taken: it runs [`QueueService::get`] under its connection's watch,
/// and `finish` to the end, then replies.
#[must_use = "the items are lost unless finished and delivered"]
pub struct Reading {
    items: Vec<Delivered>,
    ack: Option<Ack>,
    /// A confirm made just before, waited for with the read.
    before: Settling,
}

impl Reading {
    /// A reading of items that need no journal wait.
    pub fn ready(items: Vec<Delivered>) -> Reading {
        Reading {
            items,
            ack: None,
            before: Settling::done(),
        }
    }

    /// This reading, waiting for `earlier` too when it finishes.
    pub fn after(mut self, earlier: Settling) -> Reading {
        self.before = earlier;
        self
    }

    /// Waits until the read (and what it was made [after](Reading::after))
    /// is journaled; the items, to deliver.
    pub async fn finish(self) -> Vec<Delivered> {
        self.before.wait().await;
        settled(self.ack, "read").await;
        self.items
    }
}

/// A confirm whose journal records are appended but not yet waited for
/// (see [`QueueService::confirm_later`]).
#[must_use = "wait for it, or hand it to the read that follows"]
pub struct Settling(Option<Ack>);

impl Settling {
    /// Nothing to wait for.
    pub fn done() -> Settling {
        Settling(None)
    }

    /// Waits until the confirm is journaled (a failure is logged: the item
    /// then comes back after a restart, as an unconfirmed read does).
    pub async fn wait(self) {
        settled(self.0, "confirm or abort").await;
    }
}

/// Which open transactions a confirm or abort applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transactions {
    /// These ids, whoever opened them; unknown ids are ignored.
    Ids(Vec<u64>),
    /// This session's `n` oldest open reads on the queue; refused (nothing
    /// done) if it holds fewer.
    Oldest(usize),
    /// Every read this session holds open on the queue.
    All,
}

/// A `monitor`: reads of one item each, opened for the session, until its
/// deadline passes or its count is used up. The adapter runs them in turn,
/// sending each item as it comes, and stops early when a read finds nothing
/// or is refused (the session's open-read limit).
#[derive(Debug)]
pub struct Monitor {
    deadline: Instant,
    left: usize,
}

impl Monitor {
    /// The next read to run, or `None` once the monitor is done.
    pub fn next_read(&mut self) -> Option<GetRequest> {
        self.left = self.left.checked_sub(1)?;
        Some(GetRequest {
            max_items: 1,
            timeout: Some(self.deadline.saturating_duration_since(Instant::now())),
            read: Read::Open,
        })
    }
}

/// The operations of a Kestrel queue server, independent of any wire format.
///
/// Methods that change state resolve once the change is acknowledged, so an
/// adapter can reply as soon as the future completes.
pub trait QueueService: Send + Sync + 'static {
    /// A fresh session for a new connection: the reads it opens without a
    /// deadline belong to it (see [`Session`]).
    fn session(&self) -> Session;

    /// Appends `items` to `queue` in order; returns how many were accepted
    /// (the count stops at the first refused item).
    fn put(
        &self,
        queue: &str,
        items: Vec<Bytes>,
        expiry: Expiry,
    ) -> impl Future<Output = Result<usize, ServiceError>> + Send;

    /// Reads from `queue` as `request` says, waiting if it has a timeout.
    /// Dropping the future while it waits takes nothing; the items it
    /// resolves to are delivered through [`Reading::finish`].
    fn get(
        &self,
        session: &mut Session,
        queue: &str,
        request: GetRequest,
    ) -> impl Future<Output = Result<Reading, ServiceError>> + Send;

    /// Removes open items for good; returns how many were confirmed.
    fn confirm(
        &self,
        session: &mut Session,
        queue: &str,
        which: Transactions,
    ) -> impl Future<Output = Result<usize, ServiceError>> + Send;

    /// Confirms as [`confirm`](QueueService::confirm) does, leaving the
    /// journal wait to the returned [`Settling`]: Kestrel's `get
    /// q/close/open` confirms and reads in one request, and hands it to the
    /// read ([`Reading::after`]) so that one wait, and usually one journal
    /// write, covers both. The reply must not go out before it is waited for.
    fn confirm_later(
        &self,
        session: &mut Session,
        queue: &str,
        which: Transactions,
    ) -> Result<(usize, Settling), ServiceError>;

    /// Puts open items back at the head; returns how many were aborted.
    fn abort(
        &self,
        session: &mut Session,
        queue: &str,
        which: Transactions,
    ) -> impl Future<Output = Result<usize, ServiceError>> + Send;

    /// Describes `queue` (creating it), including its head item.
    fn peek(&self, queue: &str) -> Result<QueueStats, ServiceError>;

    /// Removes every ready item of `queue`, if it exists.
    fn flush(&self, queue: &str) -> impl Future<Output = Result<(), ServiceError>> + Send;

    /// Flushes every queue.
    fn flush_all(&self) -> impl Future<Output = Result<(), ServiceError>> + Send;

    /// Drops the expired items of `queue` (of every queue if `None`); returns
    /// how many were dropped.
    fn flush_expired(
        &self,
        queue: Option<&str>,
    ) -> impl Future<Output = Result<u64, ServiceError>> + Send;

    /// Removes `queue` entirely, if it exists.
    fn delete(&self, queue: &str) -> impl Future<Output = Result<(), ServiceError>> + Send;

    fn status(&self) -> ServerStatus;

    /// Follows the status clients should be steered by: a stricter status
    /// from the moment it is set (before its grace period ends), a looser one
    /// as it applies. Server-set membership follows this.
    fn announced_status(&self) -> tokio::sync::watch::Receiver<ServerStatus>;

    fn set_status(
        &self,
        status: ServerStatus,
    ) -> impl Future<Output = Result<(), ServiceError>> + Send;

    fn version(&self) -> &'static str {
        VERSION
    }

    fn stats(&self) -> ServerStats;

    /// Re-reads the queue settings.
    fn reload(&self) -> Result<(), ServiceError>;

    /// A `monitor` of up to `max_items` items (the open-read limit if
    /// `None`) over the next `timeout`: the reads to run one after another.
    fn monitor(&self, timeout: Duration, max_items: Option<usize>) -> Monitor;

    /// Starts a clean shutdown of the whole server.
    fn shutdown(&self);

    /// Counters adapters bump for connections and bytes on the wire.
    fn counters(&self) -> &Stats;
}
