//! Wires the server together: binds the listeners, runs an accept loop per
//! protocol and the background tasks, and shuts everything down in order.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, Admin, Ports};
use crate::config::ServerConfig;
use crate::data_dir::DataDir;
use crate::discovery::{self, Endpoints};
use crate::protocol::connection::serve;
use crate::protocol::memcache::Memcache;
use crate::protocol::text::Text;
use crate::protocol::thrift::Thrift;
use crate::protocol::{Shared, budget::Budget};
use crate::queue::QueueCollection;
use crate::service::{QueueServer, QueueService};
use crate::stats;

/// The signature every protocol's connection task has.
type Serve<F> = fn(Arc<QueueServer>, TcpStream, SocketAddr, Arc<Shared>) -> F;

/// File descriptors kept back from connections and journal files: the
/// listeners, checkpoint and status writes, the log.
const RESERVED_FDS: usize = 64;

/// Refused connections that may be lingering at once (to deliver their
/// refusal before the close); past it, refusals are plain closes.
const MAX_REFUSING: usize = 64;

/// A server whose listeners are bound: it accepts connections once run.
pub struct Server {
    /// Held for the server's life: no other server may use the directory.
    _data_dir: DataDir,
    config: Arc<ServerConfig>,
    service: Arc<QueueServer>,
    shutdown: CancellationToken,
    thrift: Option<TcpListener>,
    memcache: Option<TcpListener>,
    text: Option<TcpListener>,
    admin: Option<TcpListener>,
}

impl Server {
    /// Locks the data directory, binds every configured listener (port 0
    /// picks a free port) and recovers the queues. The server runs until
    /// `shutdown` is cancelled, from outside or by a client's `shutdown`
    /// command.
    ///
    /// The directory comes first: a server that cannot own its data must not
    /// take ports (or clients) from one that does.
    pub async fn bind(mut config: ServerConfig, shutdown: CancellationToken) -> io::Result<Server> {
        let data_dir = DataDir::open(&config.data_dir).map_err(io::Error::other)?;
        config.data_dir = data_dir.path().to_path_buf();
        tracing::info!(data_dir = %config.data_dir.display(), "data directory locked");
        resolve_fd_limits(&mut config);
        let thrift = bind(&config, config.thrift_port, "thrift").await?;
        let memcache = bind(&config, config.memcache_port, "memcache").await?;
        let text = bind(&config, config.text_port, "text").await?;
        let admin = bind(&config, config.admin_port, "admin").await?;
        let service = Arc::new(QueueServer::new(&config, shutdown.clone())?);
        Ok(Server {
            _data_dir: data_dir,
            config: Arc::new(config),
            service,
            shutdown,
            thrift,
            memcache,
            text,
            admin,
        })
    }

    /// The service, for signal handlers.
    pub fn service(&self) -> Arc<QueueServer> {
        self.service.clone()
    }

    /// Where each protocol (and the admin port) listens, if enabled.
    pub fn addrs(&self) -> [(&'static str, Option<SocketAddr>); 4] {
        let addr = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
        [
            ("thrift", addr(&self.thrift)),
            ("memcache", addr(&self.memcache)),
            ("text", addr(&self.text)),
            ("admin", addr(&self.admin)),
        ]
    }

    /// Serves until shutdown, then stops accepting, lets connections finish
    /// their current call, and stops background tasks.
    pub async fn run(self) -> io::Result<()> {
        let addrs = self.addrs();
        let [thrift, memcache, text, admin] = addrs.map(|(_, a)| a.map(|a| a.port()));
        let ports = Ports {
            thrift,
            memcache,
            text,
            admin,
        };
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

        if let Some(listener) = self.admin {
            let admin = Admin::new(self.service.clone(), self.config.admin_token.clone(), ports);
            background.spawn(admin::serve(listener, Arc::new(admin), shutdown.clone()));
        }
        let shared = Arc::new(Shared::new(
            self.config.clone(),
            Budget::new(self.config.max_buffered_bytes),
            shutdown.clone(),
        ));
        let max_connections = self.config.max_connections.unwrap_or(usize::MAX);
        let gate = Gate {
            limit: max_connections,
            open: Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))),
            refusing: Arc::new(Semaphore::new(MAX_REFUSING)),
        };
        // What a refused client reads before the close (Thrift has no
        // message for it outside a call: the close says it).
        let listeners: [(_, _, Option<&'static [u8]>, Serve<_>); 3] = [
            (self.thrift, "thrift", None, |s, t, p, x| {
                Box::pin(serve::<Thrift>(s, t, p, x)) as ConnectionTask
            }),
            (
                self.memcache,
                "memcache",
                Some(b"SERVER_ERROR too many connections\r\n"),
                |s, t, p, x| Box::pin(serve::<Memcache>(s, t, p, x)) as ConnectionTask,
            ),
            (
                self.text,
                "text",
                Some(b"-Too many connections\n"),
                |s, t, p, x| Box::pin(serve::<Text>(s, t, p, x)) as ConnectionTask,
            ),
        ];
        for (listener, name, refusal, serve) in listeners {
            let Some(listener) = listener else { continue };
            let service = self.service.clone();
            let shared = shared.clone();
            background.spawn(accept_loop(
                Listener {
                    listener,
                    name,
                    refusal,
                    gate: gate.clone(),
                },
                self.service.clone(),
                shutdown.clone(),
                connections.clone(),
                move |stream, peer| serve(service.clone(), stream, peer, shared.clone()),
            ));
        }

        if let Some(zookeeper) = self.config.zookeeper.clone() {
            let endpoints = Endpoints::new(zookeeper.advertise.as_deref(), &addrs);
            background.spawn(discovery::register(
                zookeeper,
                endpoints,
                self.service.announced_status(),
                shutdown.clone(),
            ));
        }
        tracing::info!(version = crate::service::VERSION, "ready to serve");
        notify_systemd(sd_notify::NotifyState::Ready);
        shutdown.cancelled().await;
        notify_systemd(sd_notify::NotifyState::Stopping);
        // No new connection is accepted and no read starts or keeps waiting
        // (see the service's `get`); requests in flight finish, up to
        // `shutdown_timeout`.
        let drain = self.config.shutdown_timeout;
        tracing::info!(timeout = ?drain, "shutting down: letting requests in flight finish");
        connections.close();
        background.close();
        if tokio::time::timeout(drain, connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = connections.len(),
                "connections still open after shutdown_timeout ({drain:?}); stopping anyway"
            );
        }
        background.wait().await;
        stop_syncing.store(true, Ordering::Release);
        if syncer.join().is_err() {
            tracing::error!("journal sync thread panicked");
        }
        let service = self.service.clone();
        let flushed = tokio::task::spawn_blocking(move || {
            service.checkpoint_all();
        })
        .await;
        if flushed.is_err() {
            tracing::error!("journal flush at shutdown panicked");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Tells systemd (`Type=notify`) the server is ready or stopping; nothing
/// when it was not started by systemd.
fn notify_systemd(state: sd_notify::NotifyState) {
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::debug!(error = %e, "cannot notify systemd");
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
        let dirty = queues.sync_journals();
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
    let mut trimmer = crate::memory::Trimmer::default();
    let mut restless = Vec::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = wanted.notified() => {}
        }
        let queues = queues.clone();
        let done = tokio::task::spawn_blocking(move || {
            queues.maintain_journals(&mut restless);
            trimmer.check();
            (restless, trimmer)
        })
        .await;
        (restless, trimmer) = done.unwrap_or_default();
    }
}

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

/// A listener and how it admits connections.
struct Listener {
    listener: TcpListener,
    name: &'static str,
    /// Written to a connection refused at `max_connections`.
    refusal: Option<&'static [u8]>,
    gate: Gate,
}

/// The connection limit, shared by every listener.
#[derive(Clone)]
struct Gate {
    limit: usize,
    /// A permit per open connection.
    open: Arc<Semaphore>,
    /// A permit per refused connection still being closed.
    refusing: Arc<Semaphore>,
}

/// After an `accept` failure for want of file descriptors, the first wait
/// before trying again; it doubles up to [`MAX_ACCEPT_BACKOFF`].
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts connections and spawns `serve` for each until shutdown; beyond
/// `max_connections`, new connections are refused and existing ones go on.
async fn accept_loop<F, Fut>(
    l: Listener,
    service: Arc<QueueServer>,
    shutdown: CancellationToken,
    connections: TaskTracker,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let stats = service.counters();
    let mut backoff = ACCEPT_BACKOFF;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = l.listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF;
                accepted
            }
            Err(e) => {
                stats::add(&stats.accept_errors, 1);
                if !out_of_resources(&e) {
                    // The connection failed before it was accepted.
                    crate::throttled!(debug, error = %e, "{} accept failed", l.name);
                    continue;
                }
                crate::throttled!(warn, error = %e, retry_in = ?backoff, "{} accept failed: out of file descriptors or memory", l.name);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        match l.gate.open.clone().try_acquire_owned() {
            Ok(permit) => {
                tracing::trace!(%peer, "{} connection", l.name);
                let connection = serve(stream, peer);
                connections.spawn(async move {
                    connection.await;
                    drop(permit);
                });
            }
            Err(_) => {
                stats::add(&stats.rejected_connections, 1);
                crate::throttled!(warn, %peer, limit = l.gate.limit, "{}: too many connections (max_connections); refusing new ones", l.name);
                refuse(stream, l.refusal, &l.gate);
            }
        }
    }
}

/// Whether an accept failed for want of descriptors or memory (retrying at
/// once would fail again), rather than because of the one connection.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// How long a refused connection is given to take its refusal.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Tells a refused client why, then closes. The refusal is followed by a
/// half-close, and what the client already sent is read and dropped for a
/// moment, so that the close does not reset the connection before the
/// client has read the refusal.
fn refuse(stream: TcpStream, refusal: Option<&'static [u8]>, gate: &Gate) {
    let (Some(refusal), Ok(permit)) = (refusal, gate.refusing.clone().try_acquire_owned()) else {
        return;
    };
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = stream;
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            stream.write_all(refusal).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 512];
            while stream.read(&mut sink).await? > 0 {}
            io::Result::Ok(())
        })
        .await;
        drop(permit);
    });
}

/// Raises the soft file-descriptor limit to the hard one and fills in the
/// limits derived from it: `max_open_files` (journal files held open) and
/// `max_connections` (what is left, minus a reserve).
fn resolve_fd_limits(config: &mut ServerConfig) {
    let nofile = raise_fd_limit();
    let open_files = config
        .max_open_files
        .unwrap_or_else(|| (nofile / 8).clamp(16, 1024));
    let connections = config.max_connections.unwrap_or_else(|| {
        nofile
            .saturating_sub(open_files + RESERVED_FDS)
            .max(nofile / 4)
            .max(1)
    });
    if connections + open_files + RESERVED_FDS > nofile {
        tracing::warn!(
            max_connections = connections,
            max_open_files = open_files,
            limit = nofile,
            "the file descriptor limit is lower than these settings need; new connections will be refused by the system instead"
        );
    }
    tracing::info!(
        max_connections = connections,
        max_open_files = open_files,
        fd_limit = nofile,
        "limits"
    );
    config.max_open_files = Some(open_files);
    config.max_connections = Some(connections);
}

/// Raises `RLIMIT_NOFILE`'s soft limit to its hard limit; returns the soft
/// limit in force.
fn raise_fd_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
}
