//! What every protocol's connection task shares: a decoder over the read half,
//! a reply buffer over the write half, and the rules for running a call.
//!
//! - Replies are appended to [`Connection::out`] and written when the
//!   connection would otherwise wait for input (or once [`OUT_LIMIT`] bytes
//!   are pending), so pipelined requests are answered with one write per
//!   batch and a lone request with one write. A write that makes no progress
//!   for [`WRITE_STALL`] ends the connection.
//! - A call that may wait on other clients (a blocking get) runs under
//!   [`Connection::run`], which first writes the replies before it and then
//!   keeps reading while the call waits: a request pipelined behind it is
//!   read ahead, and if the client leaves or the server shuts down, the call
//!   is dropped — which takes nothing (see [`crate::service::Reading`]).
//!   Every other call only waits for the journal and runs to the end.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{Decoder, FramedRead};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::stats::{self, ConnectionGuard, Stats};

/// Requests read ahead behind a waiting call before the connection stops
/// reading (TCP flow control then holds the client back). One is enough to
/// notice a client that leaves, and bounds what a connection buffers.
const MAX_PIPELINED: usize = 1;

/// Pending replies past this size are written even if more requests are
/// ready, so a client that sends without reading cannot grow them.
const OUT_LIMIT: usize = 64 * 1024;

/// A reply write that makes no progress for this long ends the connection
/// (the client stopped reading).
const WRITE_STALL: Duration = Duration::from_secs(60);

/// One client connection of protocol `C`.
pub struct Connection<'a, C: Decoder> {
    pub peer: SocketAddr,
    protocol: &'static str,
    frames: FramedRead<Counted<'a>, C>,
    writer: OwnedWriteHalf,
    /// Replies not yet written.
    pub out: BytesMut,
    backlog: VecDeque<C::Item>,
    /// Resolves at shutdown; made once, because making one registers with
    /// the token under a lock every connection shares.
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    idle_timeout: Option<Duration>,
    /// When bytes last arrived (or the connection last started waiting for
    /// them): the idle timeout counts from here.
    activity: Activity,
    stats: &'a Stats,
    closed: bool,
    /// Keeps `curr_connections` true however the connection ends.
    _counted: ConnectionGuard<'a>,
}

impl<'a, C: Decoder> Connection<'a, C>
where
    C::Error: std::fmt::Display,
{
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        protocol: &'static str,
        codec: C,
        stats: &'a Stats,
        shutdown: CancellationToken,
    ) -> Self {
        // Replies are small and latency-bound: never wait for Nagle.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let (read_half, writer) = stream.into_split();
        let activity = Activity::new();
        Connection {
            peer,
            protocol,
            frames: FramedRead::new(
                Counted {
                    inner: read_half,
                    stats,
                    activity: activity.clone(),
                },
                codec,
            ),
            writer,
            out: BytesMut::with_capacity(4096),
            backlog: VecDeque::new(),
            shutdown: Box::pin(shutdown.cancelled_owned()),
            idle_timeout: None,
            activity,
            stats,
            closed: false,
            _counted: stats.connection(),
        }
    }

    /// Closes the connection when no request arrives for this long.
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The next request; `None` once the client left, sent something the
    /// codec cannot frame, stayed idle too long, or the server is shutting
    /// down. Pending replies are written before waiting.
    pub async fn next(&mut self) -> Option<C::Item> {
        if let Some(frame) = self.backlog.pop_front() {
            return Some(frame);
        }
        if self.closed {
            return None;
        }
        if !self.out.is_empty() {
            // Answer pipelined requests in one write: only flush when nothing
            // more is ready to be decoded, or enough is pending.
            if self.out.len() < OUT_LIMIT {
                if let Some(next) = self.frames.next().now_or_never() {
                    return self.accept(next);
                }
            }
            if !self.flush().await {
                return None;
            }
        }
        let idle_timeout = self.idle_timeout;
        let activity = self.activity.clone();
        activity.touch();
        // Idle means no bytes for that long: a large request arriving slowly
        // is not idle.
        let idle = async move {
            let Some(t) = idle_timeout else {
                return std::future::pending().await;
            };
            loop {
                let deadline = activity.last() + t;
                if tokio::time::Instant::now() >= deadline {
                    return;
                }
                tokio::time::sleep_until(deadline).await;
            }
        };
        let next = tokio::select! {
            _ = &mut self.shutdown => None,
            _ = idle => {
                tracing::debug!(peer = %self.peer, "{} connection idle too long; closing", self.protocol);
                None
            }
            next = self.frames.next() => next,
        };
        self.accept(next)
    }

    fn accept(&mut self, next: Option<Result<C::Item, C::Error>>) -> Option<C::Item> {
        match next {
            Some(Ok(frame)) => Some(frame),
            Some(Err(e)) => {
                tracing::warn!(peer = %self.peer, error = %e, "{} connection closed: unreadable input", self.protocol);
                self.closed = true;
                None
            }
            None => {
                self.closed = true;
                None
            }
        }
    }

    /// Runs `call` to completion while watching the connection; `None` if the
    /// client left or the server shut down first (the call is then dropped).
    /// Replies to earlier requests are written before the call waits.
    pub async fn run<F: Future>(&mut self, call: F) -> Option<F::Output> {
        tokio::pin!(call);
        if let Some(output) = (&mut call).now_or_never() {
            return Some(output);
        }
        if !self.flush().await {
            return None;
        }
        loop {
            let room = !self.closed && self.backlog.len() < MAX_PIPELINED;
            tokio::select! {
                biased;
                output = &mut call => return Some(output),
                _ = &mut self.shutdown => return None,
                next = self.frames.next(), if room => match next {
                    Some(Ok(frame)) => self.backlog.push_back(frame),
                    _ => {
                        self.closed = true;
                        return None;
                    }
                },
            }
        }
    }

    /// Writes the pending replies; `false` if the client is gone or stopped
    /// reading.
    pub async fn flush(&mut self) -> bool {
        while !self.out.is_empty() {
            let written = tokio::time::timeout(WRITE_STALL, self.writer.write(&self.out)).await;
            let error = match written {
                Ok(Ok(n)) if n > 0 => {
                    stats::add(&self.stats.bytes_written, n as u64);
                    self.out.advance(n);
                    continue;
                }
                Ok(Ok(_)) => io::Error::from(io::ErrorKind::WriteZero),
                Ok(Err(e)) => e,
                Err(_) => io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"),
            };
            tracing::debug!(peer = %self.peer, error = %error, "{} reply not delivered", self.protocol);
            self.closed = true;
            self.out.clear();
            return false;
        }
        true
    }
}

/// When a connection last saw input, shared by its reader and its idle timer.
#[derive(Clone)]
struct Activity {
    since: tokio::time::Instant,
    /// Milliseconds after `since`.
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            since: tokio::time::Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = self.since.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> tokio::time::Instant {
        self.since + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// The read half, counting bytes into `bytes_read` and noting activity.
struct Counted<'a> {
    inner: OwnedReadHalf,
    stats: &'a Stats,
    activity: Activity,
}

impl AsyncRead for Counted<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            stats::add(&this.stats.bytes_read, n as u64);
            this.activity.touch();
        }
        poll
    }
}
