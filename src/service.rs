//! The service trait: the one interface every protocol adapter calls, and the
//! implementation that runs it on the queue engine.
//!
//! Adapters translate their wire format into these calls and the results back
//! into wire replies; everything a queue does (waiting, transactions, limits,
//! server status, stats) happens behind this trait. A [`QueueService::Session`]
//! stands for one client connection: reads it opens without a deadline belong
//! to it and go back to their queues when it is dropped, however the
//! connection ended.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::config::ServerConfig;
use crate::journal::Ack;
use crate::name::NameError;
use crate::offload;
use crate::queue::{AutoAbort, Capacity, Queue, QueueCollection, QueueError, ReadKind};
use crate::stats::{self, QueueStats, ServerStats, Stats};
use crate::status::{ChangePending, StatusKeeper};

/// The version every protocol reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Journal files held open when no limit was derived from the process's
/// (as in tests that build a service directly).
const DEFAULT_OPEN_FILES: usize = 256;

/// Longest a read may wait; longer timeouts are cut to this.
pub const MAX_WAIT: Duration = Duration::from_secs(30 * 24 * 3600);

pub use crate::status::ServerStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Write,
}

impl Op {
    fn allowed(self, status: ServerStatus) -> bool {
        match status {
            ServerStatus::Up => true,
            ServerStatus::ReadOnly => self == Op::Read,
            ServerStatus::Quiescent => false,
        }
    }
}

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
    #[error("{0}")]
    Storage(String),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    StatusChange(#[from] ChangePending),
}

impl From<QueueError> for ServiceError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::BadName(name) => ServiceError::BadName(name),
            other => ServiceError::Storage(other.to_string()),
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

/// Waits for a journal acknowledgement that the client must hear about.
async fn durable(ack: Option<Ack>) -> Result<(), ServiceError> {
    match ack {
        Some(ack) => ack
            .wait()
            .await
            .map_err(|e| ServiceError::Storage(e.to_string())),
        None => Ok(()),
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
    Remove,
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
}

impl Reading {
    /// A reading of items that need no journal wait.
    pub fn ready(items: Vec<Delivered>) -> Reading {
        Reading { items, ack: None }
    }

    /// Waits until the read is journaled; the items, to deliver.
    pub async fn finish(self) -> Vec<Delivered> {
        settled(self.ack, "read").await;
        self.items
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

/// The operations of a Kestrel queue server, independent of any wire format.
///
/// Methods that change state resolve once the change is acknowledged, so an
/// adapter can reply as soon as the future completes.
pub trait QueueService: Send + Sync + 'static {
    /// Per-connection state: the reads this connection holds open.
    type Session: Send;

    /// A fresh session for a new connection.
    fn session(&self) -> Self::Session;

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
        session: &mut Self::Session,
        queue: &str,
        request: GetRequest,
    ) -> impl Future<Output = Result<Reading, ServiceError>> + Send;

    /// Removes open items for good; returns how many were confirmed.
    fn confirm(
        &self,
        session: &mut Self::Session,
        queue: &str,
        which: Transactions,
    ) -> impl Future<Output = Result<usize, ServiceError>> + Send;

    /// Puts open items back at the head; returns how many were aborted.
    fn abort(
        &self,
        session: &mut Self::Session,
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

    /// Starts a clean shutdown of the whole server.
    fn shutdown(&self);

    /// Counters adapters bump for connections and bytes on the wire.
    fn counters(&self) -> &Stats;
}

/// The server's service: the queue engine plus status, stats and auto-abort.
pub struct Kestrel {
    queues: Arc<QueueCollection>,
    auto_abort: Arc<AutoAbort>,
    status: StatusKeeper,
    stats: Stats,
    max_open_transactions: usize,
    shutdown: CancellationToken,
    /// Where queue settings are re-read from on reload.
    config_file: Option<std::path::PathBuf>,
}

impl Kestrel {
    /// A service for `config`; its `shutdown` cancels `shutdown`.
    pub fn new(config: &ServerConfig, shutdown: CancellationToken) -> std::io::Result<Self> {
        Ok(Kestrel {
            queues: Arc::new(QueueCollection::open(
                &config.data_dir,
                config.queues.clone(),
                Capacity {
                    max_queues: config.max_queues,
                    max_open_files: config.max_open_files.unwrap_or(DEFAULT_OPEN_FILES),
                },
            )?),
            auto_abort: Arc::new(AutoAbort::default()),
            status: StatusKeeper::load(
                config.status_path(),
                config.default_status,
                config.status_change_grace_period,
            ),
            stats: Stats::default(),
            max_open_transactions: config.max_open_transactions.max(1),
            shutdown,
            config_file: config.config_file.clone(),
        })
    }

    /// The queues, for the server's background tasks.
    pub fn queues(&self) -> Arc<QueueCollection> {
        self.queues.clone()
    }

    /// The auto-abort timer, whose `run` the server spawns.
    pub fn auto_abort(&self) -> Arc<AutoAbort> {
        self.auto_abort.clone()
    }

    /// Counts and logs a read held back by `max_open_transactions`.
    fn open_read_limit(&self, queue: &str) {
        stats::add(&self.stats.rejected_open_reads, 1);
        crate::throttled!(
            info,
            queue,
            limit = self.max_open_transactions,
            "a connection reached max_open_transactions on a queue; confirm or abort its reads first"
        );
    }

    fn check(&self, op: Op, action: &'static str) -> Result<(), ServiceError> {
        let status = self.status();
        if op.allowed(status) {
            Ok(())
        } else {
            Err(ServiceError::Unavailable { status, action })
        }
    }
}

/// The reads one connection holds open, per queue, oldest first.
pub struct Session {
    /// Opened for the session: confirmed or aborted through it, aborted
    /// when it ends.
    open: HashMap<Arc<str>, OpenReads>,
    /// Opened with a deadline (Thrift): they outlive the session, but count
    /// against its open-read limit while they stay open.
    timed: HashMap<Arc<str>, OpenReads>,
}

struct OpenReads {
    /// The queue instance they were opened on (a queue deleted and created
    /// again under the same name is another instance).
    queue: Arc<Queue>,
    xids: VecDeque<u64>,
}

impl Session {
    fn open_count(&self, queue: &Arc<Queue>) -> usize {
        match self.open.get(queue.name()) {
            Some(reads) if Arc::ptr_eq(&reads.queue, queue) => reads.xids.len(),
            _ => 0,
        }
    }

    /// How many reads this session opened with a deadline on `queue` are
    /// still open (not confirmed, aborted or timed out since).
    fn timed_count(&mut self, queue: &Arc<Queue>) -> usize {
        match self.timed.get_mut(queue.name()) {
            Some(reads) if Arc::ptr_eq(&reads.queue, queue) => {
                queue.retain_open(&mut reads.xids);
                reads.xids.len()
            }
            _ => 0,
        }
    }

    fn record(&mut self, queue: &Arc<Queue>, xids: impl IntoIterator<Item = u64>) {
        Self::add(&mut self.open, queue, xids);
    }

    fn record_timed(&mut self, queue: &Arc<Queue>, xids: impl IntoIterator<Item = u64>) {
        Self::add(&mut self.timed, queue, xids);
    }

    fn add(
        map: &mut HashMap<Arc<str>, OpenReads>,
        queue: &Arc<Queue>,
        xids: impl IntoIterator<Item = u64>,
    ) {
        let reads = map
            .entry(queue.name().clone())
            .or_insert_with(|| OpenReads {
                queue: queue.clone(),
                xids: VecDeque::new(),
            });
        if !Arc::ptr_eq(&reads.queue, queue) {
            *reads = OpenReads {
                queue: queue.clone(),
                xids: VecDeque::new(),
            };
        }
        reads.xids.extend(xids);
    }

    /// Takes the oldest `n` (or all) open reads on `queue` out of the session.
    fn take(&mut self, queue: &str, n: Option<usize>) -> Result<Option<Held>, ServiceError> {
        let Some(reads) = self.open.get_mut(queue) else {
            return match n {
                Some(wanted) if wanted > 0 => Err(ServiceError::NotEnoughOpen { wanted, open: 0 }),
                _ => Ok(None),
            };
        };
        let n = n.unwrap_or(reads.xids.len());
        if n > reads.xids.len() {
            return Err(ServiceError::NotEnoughOpen {
                wanted: n,
                open: reads.xids.len(),
            });
        }
        let held = Held {
            queue: reads.queue.clone(),
            xids: reads.xids.drain(..n).collect(),
        };
        if reads.xids.is_empty() {
            self.open.remove(queue);
        }
        Ok(Some(held))
    }
}

/// Open reads taken out of a session to be confirmed or aborted.
struct Held {
    queue: Arc<Queue>,
    xids: Vec<u64>,
}

impl Drop for Session {
    fn drop(&mut self) {
        for (name, reads) in self.open.drain() {
            let xids: Vec<u64> = reads.xids.into();
            // Not awaited: an abort that misses the disk is rolled back by
            // recovery anyway.
            let (n, _) = reads.queue.abort(&xids);
            if n > 0 {
                tracing::debug!(queue = %name, items = n, "connection closed: open reads aborted");
            }
        }
    }
}

impl Kestrel {
    /// Confirms or aborts, as `apply` does to the queue.
    async fn settle(
        &self,
        session: &mut Session,
        queue: &str,
        which: Transactions,
        apply: impl Fn(&Queue, &[u64]) -> (usize, Option<Ack>),
    ) -> Result<usize, ServiceError> {
        crate::name::validate(queue)?;
        let (count, ack) = match which {
            Transactions::Ids(ids) => self
                .queues
                .get(queue)
                .map_or((0, None), |q| apply(&q, &ids)),
            Transactions::Oldest(n) => session
                .take(queue, Some(n))?
                .map_or((0, None), |h| apply(&h.queue, &h.xids)),
            Transactions::All => session
                .take(queue, None)?
                .map_or((0, None), |h| apply(&h.queue, &h.xids)),
        };
        settled(ack, "confirm or abort").await;
        Ok(count)
    }
}

impl QueueService for Kestrel {
    type Session = Session;

    fn session(&self) -> Session {
        Session {
            open: HashMap::new(),
            timed: HashMap::new(),
        }
    }

    async fn put(
        &self,
        queue: &str,
        items: Vec<Bytes>,
        expiry: Expiry,
    ) -> Result<usize, ServiceError> {
        self.check(Op::Write, "put")?;
        stats::add(&self.stats.cmd_set, items.len() as u64);
        let deadline = expiry.deadline_ms();
        // A big batch goes in by chunks, as long work, so that the queue's
        // lock is never held long and other connections are served
        // meanwhile; the acknowledgements are awaited at the end, so one
        // journal write and fsync still cover the whole batch.
        let long = items.len() > offload::LONG_ITEMS;
        let mut accepted = 0;
        let mut placed = Vec::new();
        for (i, chunk) in items.chunks(offload::LONG_ITEMS).enumerate() {
            if i > 0 {
                tokio::task::yield_now().await;
            }
            let put = offload::long_if(long, || self.queues.put(queue, chunk, deadline));
            let delivery = match put {
                Ok(delivery) => delivery,
                Err(e) if i == 0 => return Err(e.into()),
                // The queue went away mid-batch: the client hears what went in.
                Err(_) => break,
            };
            accepted += delivery.accepted;
            placed.extend(delivery.placed);
            if delivery.accepted < chunk.len() {
                break;
            }
        }
        let mut failure = None;
        for placed in placed {
            let (q, outcome) = (placed.queue, placed.outcome);
            if let Err(e) = durable(placed.ack).await {
                // Not on disk: take the items back (those no reader has taken
                // yet) so a refused put does not deliver them.
                let revoked = q.revoke(outcome.first_seq, outcome.accepted);
                tracing::error!(queue = %q.name(), items = outcome.accepted, revoked, error = %e, "put refused: journal write failed");
                if placed.primary {
                    failure = Some(e);
                }
            } else if let Some(why) = outcome.refused {
                tracing::debug!(queue = %q.name(), accepted = outcome.accepted, ?why, "put refused");
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        stats::add(&self.stats.total_items, accepted as u64);
        Ok(accepted)
    }

    async fn get(
        &self,
        session: &mut Session,
        queue: &str,
        request: GetRequest,
    ) -> Result<Reading, ServiceError> {
        self.check(Op::Read, "get")?;
        if self.queues.is_alias(queue) {
            // Aliases only route puts; there is nothing to read from one.
            return Ok(Reading::ready(Vec::new()));
        }
        let q = self.queues.get_or_create(queue)?;
        let mut max = request.max_items;
        let kind = match request.read {
            Read::Remove => {
                if session.open_count(&q) > 0 {
                    return Err(ServiceError::OpenReadPending);
                }
                ReadKind::Take
            }
            Read::Open => {
                let limit = self.max_open_transactions;
                let open = session.open_count(&q);
                if open >= limit {
                    self.open_read_limit(queue);
                    return Err(ServiceError::TooManyOpenReads { limit });
                }
                max = max.min(limit - open);
                ReadKind::Open
            }
            Read::OpenWithTimeout(_) => {
                // As Kestrel did over Thrift: at the limit a get returns
                // nothing, below it at most what the limit leaves.
                let limit = self.max_open_transactions;
                let open = session.timed_count(&q);
                if open >= limit {
                    self.open_read_limit(queue);
                    return Ok(Reading::ready(Vec::new()));
                }
                max = max.min(limit - open);
                ReadKind::Open
            }
            Read::Peek => ReadKind::Peek,
        };
        let counter = if kind == ReadKind::Peek {
            &self.stats.cmd_peek
        } else {
            &self.stats.cmd_get
        };
        stats::add(counter, 1);
        let deadline = request.timeout.map(|t| Instant::now() + t.min(MAX_WAIT));
        let (taken, ack) = q.get(max, deadline, kind).await;
        let hit = if taken.is_empty() {
            &self.stats.get_misses
        } else {
            &self.stats.get_hits
        };
        stats::add(hit, 1);
        let xids = taken.iter().filter_map(|t| t.xid);
        match request.read {
            Read::Open => session.record(&q, xids),
            Read::OpenWithTimeout(after) => {
                let xids: Vec<u64> = xids.collect();
                session.record_timed(&q, xids.iter().copied());
                self.auto_abort
                    .schedule(Instant::now() + after.min(MAX_WAIT), q.clone(), xids);
            }
            Read::Remove | Read::Peek => {}
        }
        // Opened items are owned (by the session or a deadline) from here
        // on, so a client that leaves before `finish` cannot strand them.
        let expose_ids = matches!(request.read, Read::OpenWithTimeout(_));
        let items = taken
            .into_iter()
            .map(|t| Delivered {
                data: t.item.data,
                id: t.xid.filter(|_| expose_ids),
            })
            .collect();
        Ok(Reading { items, ack })
    }

    async fn confirm(
        &self,
        session: &mut Session,
        queue: &str,
        which: Transactions,
    ) -> Result<usize, ServiceError> {
        self.settle(session, queue, which, Queue::confirm).await
    }

    async fn abort(
        &self,
        session: &mut Session,
        queue: &str,
        which: Transactions,
    ) -> Result<usize, ServiceError> {
        self.settle(session, queue, which, Queue::abort).await
    }

    fn peek(&self, queue: &str) -> Result<QueueStats, ServiceError> {
        self.check(Op::Read, "peek")?;
        stats::add(&self.stats.cmd_peek, 1);
        if self.queues.is_alias(queue) {
            return Ok(QueueStats::default());
        }
        Ok(self.queues.get_or_create(queue)?.stats())
    }

    async fn flush(&self, queue: &str) -> Result<(), ServiceError> {
        self.check(Op::Write, "flush")?;
        crate::name::validate(queue)?;
        if self.queues.is_alias(queue) {
            return Ok(());
        }
        match self.queues.get(queue) {
            Some(q) => durable(self.queues.flush(&q)).await,
            None => Ok(()),
        }
    }

    async fn flush_all(&self) -> Result<(), ServiceError> {
        self.check(Op::Write, "flush_all")?;
        for q in self.queues.all() {
            durable(self.queues.flush(&q)).await?;
        }
        Ok(())
    }

    async fn flush_expired(&self, queue: Option<&str>) -> Result<u64, ServiceError> {
        self.check(Op::Write, "flush_expired")?;
        let queues = match queue {
            Some(name) => {
                crate::name::validate(name)?;
                self.queues.get(name).into_iter().collect()
            }
            None => self.queues.all(),
        };
        let mut total = 0;
        for q in queues {
            total += self.queues.expire(&q, u64::MAX).await;
        }
        Ok(total)
    }

    async fn delete(&self, queue: &str) -> Result<(), ServiceError> {
        self.check(Op::Write, "delete")?;
        crate::name::validate(queue)?;
        if self.queues.is_alias(queue) {
            return Ok(());
        }
        self.queues.delete(queue);
        Ok(())
    }

    fn status(&self) -> ServerStatus {
        self.status.current()
    }

    async fn set_status(&self, status: ServerStatus) -> Result<(), ServiceError> {
        Ok(self.status.set(status)?)
    }

    fn stats(&self) -> ServerStats {
        let lifecycle = self.queues.lifecycle();
        let s = &self.stats;
        ServerStats {
            uptime_secs: s.uptime_secs(),
            time_secs: (now_ms() / 1000) as u64,
            version: VERSION,
            curr_connections: stats::get(&s.curr_connections),
            total_connections: stats::get(&s.total_connections),
            cmd_get: stats::get(&s.cmd_get),
            cmd_set: stats::get(&s.cmd_set),
            cmd_peek: stats::get(&s.cmd_peek),
            get_hits: stats::get(&s.get_hits),
            get_misses: stats::get(&s.get_misses),
            bytes_read: stats::get(&s.bytes_read),
            bytes_written: stats::get(&s.bytes_written),
            rejected_connections: stats::get(&s.rejected_connections),
            accept_errors: stats::get(&s.accept_errors),
            request_timeouts: stats::get(&s.request_timeouts),
            protocol_errors: stats::get(&s.protocol_errors),
            rejected_open_reads: stats::get(&s.rejected_open_reads),
            total_items: stats::get(&s.total_items),
            queue_creates: lifecycle.creates,
            queue_deletes: lifecycle.deletes,
            queue_expires: lifecycle.expires,
            rejected_creates: lifecycle.rejected_creates,
            open_files: lifecycle.open_files,
            journal_fsyncs: lifecycle.fsyncs,
            queues: self
                .queues
                .all()
                .into_iter()
                .map(|q| (q.name().clone(), q.stats()))
                .collect(),
        }
    }

    fn counters(&self) -> &Stats {
        &self.stats
    }

    fn reload(&self) -> Result<(), ServiceError> {
        let fresh = crate::config::load(self.config_file.as_deref(), None)
            .map_err(|e| ServiceError::Config(e.0))?;
        self.queues.reconfigure(fresh.queues);
        tracing::info!("configuration reloaded");
        Ok(())
    }

    fn shutdown(&self) {
        self.shutdown.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A get, finished: the items it delivers.
    async fn read(
        k: &Kestrel,
        session: &mut Session,
        queue: &str,
        request: GetRequest,
    ) -> Result<Vec<Delivered>, ServiceError> {
        Ok(k.get(session, queue, request).await?.finish().await)
    }

    /// A service with journaled queues in a temporary directory.
    fn service() -> (Kestrel, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            max_open_transactions: 2,
            data_dir: dir.path().to_path_buf(),
            ..ServerConfig::default()
        };
        (
            Kestrel::new(&config, CancellationToken::new()).unwrap(),
            dir,
        )
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn req(max_items: usize, read: Read) -> GetRequest {
        GetRequest {
            max_items,
            timeout: None,
            read,
        }
    }

    #[tokio::test]
    async fn session_reads_are_aborted_when_the_session_ends() {
        let (k, _dir) = service();
        k.put("q", vec![b("a"), b("b")], Expiry::Never)
            .await
            .unwrap();
        let mut s = k.session();
        let got = read(&k, &mut s, "q", req(1, Read::Open)).await.unwrap();
        assert_eq!((got[0].data.as_ref(), got[0].id), (&b"a"[..], None));
        assert!(matches!(
            read(&k, &mut s, "q", req(1, Read::Remove)).await,
            Err(ServiceError::OpenReadPending)
        ));
        drop(s);
        let mut s2 = k.session();
        let got = read(&k, &mut s2, "q", req(2, Read::Remove)).await.unwrap();
        assert_eq!(
            got.iter().map(|d| d.data.clone()).collect::<Vec<_>>(),
            [b("a"), b("b")]
        );
    }

    #[tokio::test]
    async fn open_read_limit_is_per_session_and_queue() {
        let (k, _dir) = service();
        k.put("q", vec![b("a"), b("b"), b("c")], Expiry::Never)
            .await
            .unwrap();
        let mut s = k.session();
        assert_eq!(
            read(&k, &mut s, "q", req(5, Read::Open))
                .await
                .unwrap()
                .len(),
            2
        );
        assert!(matches!(
            read(&k, &mut s, "q", req(1, Read::Open)).await,
            Err(ServiceError::TooManyOpenReads { limit: 2 })
        ));
        assert!(matches!(
            k.confirm(&mut s, "q", Transactions::Oldest(3)).await,
            Err(ServiceError::NotEnoughOpen { wanted: 3, open: 2 })
        ));
        assert_eq!(
            k.confirm(&mut s, "q", Transactions::Oldest(1))
                .await
                .unwrap(),
            1
        );
        assert_eq!(k.abort(&mut s, "q", Transactions::All).await.unwrap(), 1);
        let mut s2 = k.session();
        let got = read(&k, &mut s2, "q", req(5, Read::Remove)).await.unwrap();
        assert_eq!(
            got.iter().map(|d| d.data.clone()).collect::<Vec<_>>(),
            [b("b"), b("c")]
        );
    }

    #[tokio::test]
    async fn status_gates_reads_and_writes_but_not_settling() {
        let (k, _dir) = service();
        k.put("q", vec![b("a")], Expiry::Never).await.unwrap();
        let mut s = k.session();
        let id = read(
            &k,
            &mut s,
            "q",
            req(1, Read::OpenWithTimeout(Duration::from_secs(60))),
        )
        .await
        .unwrap()[0]
            .id;
        k.set_status(ServerStatus::ReadOnly).await.unwrap();
        assert!(matches!(
            k.put("q", vec![b("x")], Expiry::Never).await,
            Err(ServiceError::Unavailable { .. })
        ));
        assert!(k.peek("q").is_ok());
        k.set_status(ServerStatus::Quiescent).await.unwrap();
        assert!(read(&k, &mut s, "q", req(1, Read::Remove)).await.is_err());
        assert!(k.peek("q").is_err());
        assert_eq!(
            k.confirm(&mut s, "q", Transactions::Ids(vec![id.unwrap()]))
                .await
                .unwrap(),
            1
        );
    }
}
