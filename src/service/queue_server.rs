//! [`QueueServer`], the one implementation of [`QueueService`]: the queue
//! engine ([`QueueCollection`]) with the server's status, counters, open-read
//! limit and auto-abort timer around it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use smallvec::SmallVec;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    Delivered, Expiry, GetRequest, MAX_WAIT, Monitor, QueueService, Read, Reading, Restored,
    RestoredItem, ServiceError, Session, Settling, Transactions, VERSION,
};
use crate::clock::now_ms;
use crate::config::ServerConfig;
use crate::journal::Ack;
use crate::offload;
use crate::queue::{AutoAbort, Capacity, Queue, QueueCollection, ReadKind, Taken};
use crate::stats::{self, QueueStats, ServerStats, Stats};
use crate::status::{ServerStatus, StatusKeeper};

/// Microseconds since `started`.
fn micros(started: std::time::Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Journal files held open when no limit was derived from the process's
/// (as in tests that build a service directly).
const DEFAULT_OPEN_FILES: usize = 256;

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

/// Waits for a journal acknowledgement that the client must hear about.
async fn durable(ack: Option<Ack>) -> Result<(), ServiceError> {
    match ack {
        Some(ack) => Ok(ack.wait().await?),
        None => Ok(()),
    }
}

/// The server's service: the queue engine plus status, stats and
/// auto-abort, behind [`QueueService`].
pub struct QueueServer {
    queues: Arc<QueueCollection>,
    auto_abort: Arc<AutoAbort>,
    status: StatusKeeper,
    stats: Stats,
    max_open_transactions: usize,
    /// Whether requests record their latencies (`record_latencies`).
    record_latencies: bool,
    shutdown: CancellationToken,
    /// Where queue settings are re-read from on reload.
    config_file: Option<std::path::PathBuf>,
}

impl QueueServer {
    /// A service for `config`; its `shutdown` cancels `shutdown`.
    pub fn new(config: &ServerConfig, shutdown: CancellationToken) -> std::io::Result<Self> {
        Ok(QueueServer {
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
            record_latencies: config.record_latencies,
            shutdown,
            config_file: config.config_file.clone(),
        })
    }

    /// The queues, for the server's background tasks.
    pub fn queues(&self) -> Arc<QueueCollection> {
        self.queues.clone()
    }

    /// Appends items to `queue` as another server held them (an import):
    /// add times and expiries kept, no limit or status applied, no fanout;
    /// items already expired go to the queue's `expire_to_queue` or nowhere.
    /// Returns once they are journaled.
    pub async fn restore(
        &self,
        queue: &str,
        items: Vec<RestoredItem>,
    ) -> Result<Restored, ServiceError> {
        let items = items
            .into_iter()
            .map(|i| (i.data, i.added_ms, i.expires_ms))
            .collect();
        let restore = self.queues.restore(queue, items, now_ms())?;
        for ack in restore.acks {
            ack.wait().await?;
        }
        Ok(Restored {
            stored: restore.stored,
            stored_bytes: restore.stored_bytes,
            expired: restore.expired,
            moved: restore.moved,
            moved_to: restore.moved_to,
        })
    }

    /// Checkpoints every queue's journal, which makes it durable and the
    /// next start quick: what a clean stop (or the end of an import) does
    /// last. Returns whether every queue's was; failures are logged.
    pub fn checkpoint_all(&self) -> bool {
        let mut all = true;
        for q in self.queues.all() {
            if let Err(e) = q.maintain_journal(true) {
                tracing::error!(queue = %q.name(), error = %e, "journal not checkpointed");
                all = false;
            }
        }
        all
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

    /// Counts a read as a hit or a miss, server-wide and on its queue, and
    /// records how long it took and how long its items waited since their put.
    fn count_read(
        &self,
        q: &Queue,
        taken: &[Taken],
        timeout: Option<Duration>,
        kind: ReadKind,
        started: std::time::Instant,
    ) {
        let m = q.metrics().get();
        let (server, queue) = if taken.is_empty() {
            (&self.stats.get_misses, &m.get_items_miss)
        } else {
            (&self.stats.get_hits, &m.get_items_hit)
        };
        stats::add(server, 1);
        stats::add(queue, 1);
        if !self.record_latencies {
            return;
        }
        for latencies in [&self.stats.latencies, &m.latencies] {
            let took = micros(started);
            if !taken.is_empty() {
                latencies.get_hit.record(took);
            } else if timeout.is_some_and(|t| !t.is_zero()) {
                latencies.get_timeout.record(took);
            } else {
                latencies.get_miss.record(took);
            }
        }
        if kind != ReadKind::Peek && !taken.is_empty() {
            // Items are stamped with the wall clock, in milliseconds.
            let now = now_ms();
            for t in taken {
                let waited = now.saturating_sub(t.item.added_ms).max(0) as u64 * 1000;
                self.stats.latencies.delivery.record(waited);
                m.latencies.delivery.record(waited);
            }
        }
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

impl QueueServer {
    /// Confirms or aborts, as `apply` does to the queue; the journal wait
    /// is the caller's.
    fn settle(
        &self,
        session: &mut Session,
        queue: &str,
        which: Transactions,
        apply: impl Fn(&Queue, &[u64]) -> (usize, Option<Ack>),
    ) -> Result<(usize, Settling), ServiceError> {
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
        Ok((count, Settling(ack)))
    }
}

impl QueueService for QueueServer {
    fn session(&self) -> Session {
        Session::new()
    }

    async fn put(
        &self,
        queue: &str,
        items: Vec<Bytes>,
        expiry: Expiry,
    ) -> Result<usize, ServiceError> {
        self.check(Op::Write, "put")?;
        let started = std::time::Instant::now();
        stats::add(&self.stats.cmd_set, items.len() as u64);
        let deadline = expiry.deadline_ms();
        // A big batch goes in by chunks, as long work, so that the queue's
        // lock is never held long and other connections are served
        // meanwhile; the acknowledgements are awaited at the end, so one
        // journal write and fsync still cover the whole batch.
        let long = items.len() > offload::LONG_ITEMS;
        let mut accepted = 0;
        let mut placed: SmallVec<[_; 1]> = SmallVec::new();
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
            placed.extend(delivery.placed.into_iter().map(|p| {
                let bytes: usize = chunk[..p.outcome.accepted].iter().map(Bytes::len).sum();
                (p, bytes as u64)
            }));
            if delivery.accepted < chunk.len() {
                break;
            }
        }
        let mut failure = None;
        for (placed, bytes) in placed {
            let (q, outcome) = (placed.queue, placed.outcome);
            let stored = durable(placed.ack).await;
            if stored.is_ok() {
                let m = q.metrics().get();
                stats::add(&m.put_bytes, bytes);
                if self.record_latencies {
                    m.latencies.set.record(micros(started));
                }
            }
            if let Err(e) = stored {
                // Not on disk: take the items back (those no reader has taken
                // yet) so a refused put does not deliver them.
                let revoked = q.revoke(outcome.first_seq, outcome.accepted);
                crate::throttled!(error, queue = %q.name(), items = outcome.accepted, revoked, error = %e, "put refused: journal write failed");
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
        if self.record_latencies {
            self.stats.latencies.set.record(micros(started));
        }
        Ok(accepted)
    }

    async fn get(
        &self,
        session: &mut Session,
        queue: &str,
        request: GetRequest,
    ) -> Result<Reading, ServiceError> {
        self.check(Op::Read, "get")?;
        if self.queues.is_alias(queue) || self.shutdown.is_cancelled() {
            // Aliases only route puts; there is nothing to read from one.
            // Once the server stops, no read starts.
            return Ok(Reading::ready(Vec::new()));
        }
        let q = self.queues.get_or_create(queue)?;
        let mut max = request.max_items;
        let kind = match request.read {
            Read::Take => {
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
        let started = std::time::Instant::now();
        let deadline = request.timeout.map(|t| Instant::now() + t.min(MAX_WAIT));
        // A read still waiting when the server starts to stop returns
        // empty: nothing is handed out after the signal (the read's future
        // is dropped, which takes nothing). One that needs no wait (checked
        // stopping above) is done at once, without registering with the
        // shutdown signal, which takes two locks.
        let read = q.get(max, deadline, kind);
        tokio::pin!(read);
        let (taken, ack) = match (&mut read).now_or_never() {
            Some(read) => read,
            None => tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => (Vec::new(), None),
                read = read => read,
            },
        };
        self.count_read(&q, &taken, request.timeout, kind, started);
        let xids = taken.iter().filter_map(|t| t.xid);
        match request.read {
            Read::Open => session.record(&q, xids),
            Read::OpenWithTimeout(after) => {
                let xids: Vec<u64> = xids.collect();
                session.record_timed(&q, xids.iter().copied());
                self.auto_abort
                    .schedule(Instant::now() + after.min(MAX_WAIT), q.clone(), xids);
            }
            Read::Take | Read::Peek => {}
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
        Ok(Reading {
            items,
            ack,
            before: Settling::done(),
        })
    }

    async fn confirm(
        &self,
        session: &mut Session,
        queue: &str,
        which: Transactions,
    ) -> Result<usize, ServiceError> {
        let (count, settling) = self.confirm_later(session, queue, which)?;
        settling.wait().await;
        Ok(count)
    }

    fn confirm_later(
        &self,
        session: &mut Session,
        queue: &str,
        which: Transactions,
    ) -> Result<(usize, Settling), ServiceError> {
        self.settle(session, queue, which, Queue::confirm)
    }

    async fn abort(
        &self,
        session: &mut Session,
        queue: &str,
        which: Transactions,
    ) -> Result<usize, ServiceError> {
        let (count, settling) = self.settle(session, queue, which, Queue::abort)?;
        settling.wait().await;
        Ok(count)
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

    fn announced_status(&self) -> tokio::sync::watch::Receiver<ServerStatus> {
        self.status.announced()
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
            physical_memory: crate::memory::physical(),
            latencies: s.latencies.snapshot(),
            queues: self
                .queues
                .all()
                .into_iter()
                .map(|q| {
                    let mut stats = q.stats();
                    stats.children = self
                        .queues
                        .children(q.name())
                        .iter()
                        .map(|child| child.name().clone())
                        .collect();
                    (q.name().clone(), stats)
                })
                .collect(),
        }
    }

    fn counters(&self) -> &Stats {
        &self.stats
    }

    fn reload(&self) -> Result<(), ServiceError> {
        let fresh = crate::config::load(self.config_file.as_deref(), None).inspect_err(|e| {
            tracing::error!(error = %e, "reload refused; the running configuration is kept");
        })?;
        crate::logging::configure(&fresh);
        self.queues.reconfigure(fresh.queues);
        tracing::info!("configuration reloaded");
        Ok(())
    }

    fn monitor(&self, timeout: Duration, max_items: Option<usize>) -> Monitor {
        Monitor {
            deadline: Instant::now() + timeout.min(MAX_WAIT),
            left: max_items.unwrap_or(self.max_open_transactions),
        }
    }

    fn shutdown(&self) {
        self.shutdown.cancel();
    }
}

#[cfg(test)]
mod tests;
