//! Protocol adapters: each turns its wire format into calls on the
//! [`QueueService`] and the results back into replies. No queue logic lives
//! here.
//!
//! Each protocol is a pure codec (bytes to a typed request, no I/O, nothing
//! from the service: `memcache/codec.rs`, `text/codec.rs`, `thrift/codec.rs`)
//! and an executor that runs requests on the service (the protocol's
//! `mod.rs`). [`connection`] holds the one connection loop they all run in;
//! [`line`] what the two line protocols parse alike; [`budget`] the memory
//! every connection's partial requests share.

pub mod budget;
pub mod connection;
pub mod line;
pub mod memcache;
pub mod text;
pub mod thrift;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::service::{QueueService, ServiceError};
use budget::Budget;
use connection::{Codec, Connection, Context, Handled};

/// What every connection of the server shares, whatever its protocol.
pub struct Shared {
    pub config: Arc<ServerConfig>,
    /// Memory all partial requests hold together.
    pub budget: Budget,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Closes (its sender is dropped) when `shutdown` is cancelled: what a
    /// connection checks each time it waits, with one atomic load where
    /// polling the token's future takes two locks (see `Connection::wait`).
    pub stopping: watch::Receiver<()>,
}

impl Shared {
    /// Shared state for connections that stop when `shutdown` is cancelled.
    /// Spawns the task that turns the cancellation into `stopping`.
    pub fn new(config: Arc<ServerConfig>, budget: Budget, shutdown: CancellationToken) -> Shared {
        let (stop, stopping) = watch::channel(());
        let cancelled = shutdown.clone();
        tokio::spawn(async move {
            cancelled.cancelled().await;
            drop(stop);
        });
        Shared {
            config,
            budget,
            shutdown,
            stopping,
        }
    }
}

/// `monitor` (memcache and text): runs the service's monitor reads in turn,
/// writing each item with `write` and sending it as it comes, until one
/// finds nothing or is refused.
async fn monitor<C: Codec>(
    cx: &mut Context<'_>,
    conn: &mut Connection<'_, C>,
    queue: &str,
    timeout: Duration,
    max_items: Option<usize>,
    write: impl Fn(&mut BytesMut, &[u8]),
) -> Handled {
    let mut monitor = cx.service.monitor(timeout, max_items);
    while let Some(request) = monitor.next_read() {
        let read = cx.service.get(&mut cx.session, queue, request);
        let Ok(reading) = conn.run(read).await? else {
            break;
        };
        let Some(item) = reading.finish().await.into_iter().next() else {
            break;
        };
        write(&mut conn.out, &item.data);
        conn.flush().await?;
    }
    Ok(())
}

/// Lets an admin command (shutdown, reload, flush every queue, delete, set
/// the status) through unless `protocol_admin_commands` is off, leaving
/// control to the token-protected admin port.
fn admin_command(cx: &Context<'_>) -> Result<(), ServiceError> {
    if cx.shared.config.protocol_admin_commands {
        Ok(())
    } else {
        Err(ServiceError::AdminCommandsOff)
    }
}
