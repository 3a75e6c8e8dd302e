//! Wires the server together: binds the listeners, runs an accept loop per
//! protocol and the background tasks, and shuts everything down in order.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::protocol;
use crate::service::Kestrel;

/// How long shutdown waits for connections to finish their current call.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A server whose listeners are bound: it accepts connections once run.
pub struct Server {
    config: ServerConfig,
    service: Arc<Kestrel>,
    thrift: Option<TcpListener>,
}

impl Server {
    /// Binds every configured listener (port 0 picks a free port).
    pub async fn bind(config: ServerConfig) -> io::Result<Server> {
        let thrift = match config.thrift_port {
            Some(port) => Some(bind(&config, port, "thrift").await?),
            None => None,
        };
        for (port, name) in [
            (config.memcache_port, "memcache"),
            (config.text_port, "text"),
        ] {
            if let Some(port) = port {
                tracing::info!(port, "{name} protocol not available yet; port ignored");
            }
        }
        let service = Arc::new(Kestrel::new(&config));
        Ok(Server {
            config,
            service,
            thrift,
        })
    }

    /// The address the Thrift listener is bound to.
    pub fn thrift_addr(&self) -> Option<SocketAddr> {
        self.thrift.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets
    /// connections finish their current call, and stops background tasks.
    pub async fn run(self, shutdown: CancellationToken) -> io::Result<()> {
        let connections = TaskTracker::new();
        let background = TaskTracker::new();

        let auto_abort = self.service.auto_abort();
        let token = shutdown.clone();
        background.spawn(async move { auto_abort.run(token).await });

        if let Some(listener) = self.thrift {
            let service = self.service.clone();
            let max_frame = self.config.max_frame_size;
            let token = shutdown.clone();
            background.spawn(accept_loop(
                listener,
                "thrift",
                shutdown.clone(),
                connections.clone(),
                move |stream, peer| {
                    protocol::thrift::serve(service.clone(), stream, peer, max_frame, token.clone())
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
                "connections still open after {DRAIN_TIMEOUT:?}; closing them"
            );
        }
        background.wait().await;
        tracing::info!("stopped");
        Ok(())
    }
}

async fn bind(config: &ServerConfig, port: u16, name: &str) -> io::Result<TcpListener> {
    let addr = SocketAddr::new(config.listen, port);
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        io::Error::new(e.kind(), format!("cannot listen for {name} on {addr}: {e}"))
    })?;
    tracing::info!("{name} listening on {}", listener.local_addr()?);
    Ok(listener)
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
