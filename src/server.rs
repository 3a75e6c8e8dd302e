//! Wires the server together: binds the listeners, runs an accept loop per
//! protocol and the background tasks, and shuts everything down in order.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::protocol;
use crate::queue::QueueCollection;
use crate::service::Kestrel;

/// How long shutdown waits for connections to finish their current call.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The signature every protocol's connection task has.
type Serve<F> = fn(Arc<Kestrel>, TcpStream, SocketAddr, Arc<ServerConfig>, CancellationToken) -> F;

/// A server whose listeners are bound: it accepts connections once run.
pub struct Server {
    config: Arc<ServerConfig>,
    service: Arc<Kestrel>,
    shutdown: CancellationToken,
    thrift: Option<TcpListener>,
    memcache: Option<TcpListener>,
    text: Option<TcpListener>,
}

impl Server {
    /// Binds every configured listener (port 0 picks a free port). The server
    /// runs until `shutdown` is cancelled, from outside or by a client's
    /// `shutdown` command.
    pub async fn bind(config: ServerConfig, shutdown: CancellationToken) -> io::Result<Server> {
        let thrift = bind(&config, config.thrift_port, "thrift").await?;
        let memcache = bind(&config, config.memcache_port, "memcache").await?;
        let text = bind(&config, config.text_port, "text").await?;
        let service = Arc::new(Kestrel::new(&config, shutdown.clone())?);
        Ok(Server {
            config: Arc::new(config),
            service,
            shutdown,
            thrift,
            memcache,
            text,
        })
    }

    /// The service, for signal handlers.
    pub fn service(&self) -> Arc<Kestrel> {
        self.service.clone()
    }

    /// Where each protocol listens, if enabled.
    pub fn addrs(&self) -> [(&'static str, Option<SocketAddr>); 3] {
        let addr = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
        [
            ("thrift", addr(&self.thrift)),
            ("memcache", addr(&self.memcache)),
            ("text", addr(&self.text)),
        ]
    }

    /// Serves until shutdown, then stops accepting, lets connections finish
    /// their current call, and stops background tasks.
    pub async fn run(self) -> io::Result<()> {
        let connections = TaskTracker::new();
        let background = TaskTracker::new();
        let shutdown = self.shutdown.clone();

        let auto_abort = self.service.auto_abort();
        let token = shutdown.clone();
        background.spawn(async move { auto_abort.run(token).await });
        let stop_syncing = Arc::new(AtomicBool::new(false));
        let syncer = {
            let (queues, stop) = (self.service.queues(), stop_syncing.clone());
            std::thread::Builder::new()
                .name("journal-sync".into())
                .spawn(move || journal_sync(queues, stop))?
        };
        background.spawn(journal_maintenance(self.service.queues(), shutdown.clone()));
        if let Some(every) = self.config.expiration_timer_frequency {
            background.spawn(expiry_sweep(self.service.queues(), every, shutdown.clone()));
        }

        let listeners: [(_, _, Serve<_>); 3] = [
            (self.thrift, "thrift", |s, t, p, c, x| {
                Box::pin(protocol::thrift::serve(s, t, p, c, x)) as ConnectionTask
            }),
            (self.memcache, "memcache", |s, t, p, c, x| {
                Box::pin(protocol::memcache::serve(s, t, p, c, x)) as ConnectionTask
            }),
            (self.text, "text", |s, t, p, c, x| {
                Box::pin(protocol::text::serve(s, t, p, c, x)) as ConnectionTask
            }),
        ];
        for (listener, name, serve) in listeners {
            let Some(listener) = listener else { continue };
            let service = self.service.clone();
            let config = self.config.clone();
            let token = shutdown.clone();
            background.spawn(accept_loop(
                listener,
                name,
                shutdown.clone(),
                connections.clone(),
                move |stream, peer| {
                    serve(service.clone(), stream, peer, config.clone(), token.clone())
                },
            ));
        }

        tracing::info!(version = crate::service::VERSION, "ready to serve");
        shutdown.cancelled().await;
        tracing::info!("shutting down");
        connections.close();
        background.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = connections.len(),
                "connections still open after {DRAIN_TIMEOUT:?}"
            );
        }
        background.wait().await;
        stop_syncing.store(true, Ordering::Release);
        if syncer.join().is_err() {
            tracing::error!("journal sync thread panicked");
        }
        let queues = self.service.queues();
        let flushed = tokio::task::spawn_blocking(move || {
            for q in queues.all() {
                if let Err(e) = q.maintain_journal(true) {
                    tracing::error!(queue = %q.name(), error = %e, "journal not flushed at shutdown");
                }
            }
        })
        .await;
        if flushed.is_err() {
            tracing::error!("journal flush at shutdown panicked");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// How often journals write what nobody waited for and check their fsync
/// interval, while some have data to fsync...
const SYNC_TICK: Duration = Duration::from_millis(10);
/// ...and while none has.
const IDLE_SYNC_TICK: Duration = Duration::from_millis(50);
/// How often journals are checkpointed (when due) and their segments reclaimed.
const MAINTENANCE_TICK: Duration = Duration::from_millis(200);

/// Background thread: writes journal records nobody waited for (aborts of
/// closed connections, expiries) and fsyncs each queue on its interval. A
/// plain thread that sleeps between rounds: handing 100 rounds a second to
/// the async runtime's blocking pool cost a futex storm for nothing.
fn journal_sync(queues: Arc<QueueCollection>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Acquire) {
        let mut dirty = false;
        for io in queues.all().iter().filter_map(|q| q.journal_io()) {
            dirty |= io.tick();
        }
        std::thread::sleep(if dirty { SYNC_TICK } else { IDLE_SYNC_TICK });
    }
}

/// Background task: expires items and deletes queues past `max_queue_age`.
async fn expiry_sweep(queues: Arc<QueueCollection>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => queues.sweep().await,
        }
    }
}

/// Background task: checkpoints journals and reclaims their consumed
/// segments, and gives memory back to the OS once queues have drained.
async fn journal_maintenance(queues: Arc<QueueCollection>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(MAINTENANCE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let wanted = queues.maintenance_wanted();
    let mut trimmer = MemoryTrimmer::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = wanted.notified() => {}
        }
        let queues = queues.clone();
        let done = tokio::task::spawn_blocking(move || {
            for q in queues.all() {
                if let Err(e) = q.maintain_journal(false) {
                    tracing::warn!(queue = %q.name(), error = %e, "journal maintenance failed");
                }
            }
            trimmer.check(queues.memory_bytes());
            trimmer
        })
        .await;
        trimmer = done.unwrap_or_default();
    }
}

/// Hands freed heap memory back to the OS after the items held in memory
/// shrank to under half their peak. glibc keeps freed memory for reuse, so a
/// server that once held a deep queue in memory would otherwise stay that big.
#[derive(Default)]
struct MemoryTrimmer {
    peak: u64,
}

impl MemoryTrimmer {
    /// Freeing less than this is not worth a pass over the heap.
    const MIN_FREED: u64 = 16 * 1024 * 1024;

    fn check(&mut self, held: u64) {
        self.peak = self.peak.max(held);
        if self.peak - held >= Self::MIN_FREED && held * 2 < self.peak {
            trim_heap();
            self.peak = held;
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    // SAFETY: malloc_trim only returns free heap pages to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

/// A connection task, boxed so the three protocols share one accept loop.
type ConnectionTask = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

async fn bind(
    config: &ServerConfig,
    port: Option<u16>,
    name: &str,
) -> io::Result<Option<TcpListener>> {
    let Some(port) = port else {
        tracing::info!("{name} disabled");
        return Ok(None);
    };
    let addr = SocketAddr::new(config.listen, port);
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        io::Error::new(e.kind(), format!("cannot listen for {name} on {addr}: {e}"))
    })?;
    tracing::info!("{name} listening on {}", listener.local_addr()?);
    Ok(Some(listener))
}

/// Accepts connections and spawns `serve` for each until shutdown.
async fn accept_loop<F, Fut>(
    listener: TcpListener,
    name: &'static str,
    shutdown: CancellationToken,
    connections: TaskTracker,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::trace!(%peer, "{name} connection");
                    connections.spawn(serve(stream, peer));
                }
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "{name} accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}
