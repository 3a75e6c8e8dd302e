//! What every protocol's connection task shares: the one loop that serves a
//! connection ([`serve`], over a protocol's [`Protocol`] handler), reading
//! requests through a codec into a bounded buffer, a reply buffer, the
//! connection's timers, and the rules for running a call.
//!
//! - **Input** is read straight into one buffer that grows with the bytes
//!   received (never with a length a client announced), is charged to the
//!   server-wide [`Budget`], and is given back while the connection waits
//!   between requests, so an idle connection holds no buffer at all.
//! - **Timers**: a connection that sends nothing for `client_timeout` is
//!   closed (idle); one whose request has started arriving but is not
//!   complete `request_timeout` later is closed too (a slow or stalled
//!   client cannot hold a buffer, or a connection slot, forever).
//! - **Replies** are appended to [`Connection::out`] and written when the
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
//! - **Closing** has one spelling: a handler returns [`Closed`] (the client
//!   left, asked to quit, or must be cut off), usually through `?` on
//!   [`Connection::run`] or [`Connection::flush`].

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::Shared;
use super::budget::Budget;
use crate::config::ServerConfig;
use crate::service::{QueueServer, QueueService, Session};
use crate::stats::{self, ConnectionGuard, Stats};

/// The connection is to close: the client left, asked to, or must be cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// What a handler's call returns: `Err(Closed)` ends the connection.
pub type Handled = Result<(), Closed>;

/// What one connection's requests run against.
pub struct Context<'a> {
    pub service: &'a QueueServer,
    /// The connection's open reads, aborted when the connection ends.
    pub session: Session,
    pub shared: &'a Shared,
}

/// A wire protocol, as the connection loop drives it: a codec that frames
/// requests and a handler that runs each on the service and appends its
/// reply to [`Connection::out`].
pub trait Protocol {
    /// Names the protocol in logs.
    const NAME: &'static str;
    type Codec: Codec + Send;

    fn codec(config: &ServerConfig) -> Self::Codec;

    /// Runs one request (or answers one the codec refused).
    fn handle(
        cx: &mut Context<'_>,
        conn: &mut Connection<'_, Self::Codec>,
        frame: <Self::Codec as Decoder>::Item,
    ) -> impl Future<Output = Handled> + Send;
}

/// Serves one connection of protocol `P` until the client leaves, a handler
/// closes it, or the server shuts down; replies still pending are written.
pub async fn serve<P: Protocol>(
    service: Arc<QueueServer>,
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
) {
    let codec = P::codec(&shared.config);
    let stats = service.counters();
    let mut conn = Connection::new(stream, peer, P::NAME, codec, stats, &shared);
    let mut cx = Context {
        service: &service,
        session: service.session(),
        shared: &shared,
    };
    while let Some(frame) = conn.next().await {
        if P::handle(&mut cx, &mut conn, frame).await.is_err() {
            break;
        }
    }
    // The client may be gone already: nothing more to do either way.
    let _ = conn.flush().await;
}

/// A protocol's request framing, as a connection drives it: a
/// [`Decoder`] that can also say whether a request is half received.
pub trait Codec: Decoder<Error = io::Error> {
    /// Whether a request has begun that is not complete, beyond what is
    /// still in the input buffer (a text `put` collecting its item lines).
    fn mid_request(&self) -> bool {
        false
    }

    /// Bytes the codec holds of a request being built, outside the buffer.
    fn held(&self) -> usize {
        0
    }
}

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

/// The input buffer's first allocation; it doubles from there as a large
/// request arrives.
const INITIAL_INPUT: usize = 8 * 1024;

/// Why a connection stopped reading.
#[derive(Debug)]
enum Stop {
    /// The client closed its side, or the connection failed.
    Gone(Option<io::Error>),
    Shutdown,
    Idle,
    RequestTimeout,
}

/// One client connection of protocol `C`.
pub struct Connection<'a, C: Codec> {
    pub peer: SocketAddr,
    protocol: &'static str,
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    codec: C,
    input: BytesMut,
    /// What this connection has charged to the budget.
    charged: usize,
    budget: &'a Budget,
    /// Replies not yet written.
    pub out: BytesMut,
    backlog: VecDeque<C::Item>,
    /// Resolves at shutdown; made once, because making one registers with
    /// the token under a lock every connection shares.
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Whether the server is stopping: read each time the connection waits
    /// ([`Shared::stopping`]); `stop_signal` wakes this task when it does,
    /// polled once, on the first wait, to register the task's waker.
    stopping: watch::Receiver<()>,
    stop_signal: Pin<Box<dyn Future<Output = ()> + Send>>,
    watching_stop: bool,
    idle_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
    /// When bytes last arrived: idleness counts from here.
    last_input: Instant,
    /// When the request being received began to arrive.
    partial_since: Option<Instant>,
    stats: &'a Stats,
    closed: bool,
    /// Keeps `curr_connections` true however the connection ends.
    _counted: ConnectionGuard<'a>,
}

impl<'a, C: Codec> Connection<'a, C> {
    fn new(
        stream: TcpStream,
        peer: SocketAddr,
        protocol: &'static str,
        codec: C,
        stats: &'a Stats,
        shared: &'a Shared,
    ) -> Self {
        // Replies are small and latency-bound: never wait for Nagle.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let (reader, writer) = stream.into_split();
        Connection {
            peer,
            protocol,
            reader,
            writer,
            codec,
            input: BytesMut::new(),
            charged: 0,
            budget: &shared.budget,
            out: BytesMut::new(),
            backlog: VecDeque::new(),
            shutdown: Box::pin(shared.shutdown.clone().cancelled_owned()),
            stopping: shared.stopping.clone(),
            stop_signal: {
                let mut stopping = shared.stopping.clone();
                Box::pin(async move {
                    // Resolves (with an error) when the sender is dropped.
                    let _ = stopping.changed().await;
                })
            },
            watching_stop: false,
            idle_timeout: shared.config.client_timeout,
            request_timeout: shared.config.request_timeout,
            last_input: Instant::now(),
            partial_since: None,
            stats,
            closed: false,
            _counted: stats.connection(),
        }
    }

    /// The next request; `None` once the client left, sent something the
    /// codec cannot frame, stayed idle too long, was too slow with a
    /// request, or the server is shutting down. Pending replies are written
    /// before waiting.
    pub async fn next(&mut self) -> Option<C::Item> {
        if let Some(frame) = self.backlog.pop_front() {
            return Some(frame);
        }
        if self.closed {
            return None;
        }
        loop {
            if self.out.len() >= OUT_LIMIT && self.flush().await.is_err() {
                return None;
            }
            match self.decode() {
                Ok(Some(frame)) => {
                    if self.out.capacity() == 0 {
                        self.out = spare::take();
                    }
                    return Some(frame);
                }
                Ok(None) => {}
                Err(e) => {
                    self.refuse_input(&e);
                    return None;
                }
            }
            // Answer pipelined requests with one write: before flushing,
            // take in whatever more has already arrived.
            let read = match self.out.is_empty() {
                true => Ok(false),
                false => self.try_read(),
            };
            let read = match read {
                Ok(true) => Ok(()),
                Ok(false) if self.flush().await.is_err() => return None,
                Ok(false) => self.read_more(true).await,
                Err(stop) => Err(stop),
            };
            if let Err(stop) = read {
                self.stopped(stop);
                return None;
            }
        }
    }

    /// Decodes the next request from what has arrived, keeping the budget
    /// and the request timer in step with what is buffered.
    fn decode(&mut self) -> io::Result<Option<C::Item>> {
        let frame = self.codec.decode(&mut self.input);
        let partial = !self.input.is_empty() || self.codec.mid_request();
        let decoded = frame.as_ref().is_ok_and(Option::is_some);
        if !partial {
            self.partial_since = None;
        } else if decoded || self.partial_since.is_none() {
            // What remains began after the request just decoded.
            self.partial_since = Some(Instant::now());
        }
        self.recharge();
        frame
    }

    fn recharge(&mut self) {
        let held = self.input.capacity() + self.codec.held();
        self.budget.recharge(self.charged, held);
        self.charged = held;
    }

    /// Reads more input into the buffer, waiting for it (and for memory to
    /// hold it) under the connection's timers. `idle` says whether the
    /// connection counts as idle while it waits.
    async fn read_more(&mut self, idle: bool) -> Result<(), Stop> {
        loop {
            if self.try_read()? {
                return Ok(());
            }
            if self.input.is_empty() && self.input.capacity() > 0 {
                // Nothing pending: give the buffers back while the client thinks.
                spare::give(std::mem::take(&mut self.input));
                self.recharge();
                if self.out.is_empty() {
                    spare::give(std::mem::take(&mut self.out));
                }
            }
            self.wait(idle, Wait::Readable).await?;
            if self.input.capacity() == self.input.len() {
                let more = self.input.capacity().max(INITIAL_INPUT);
                self.wait(idle, Wait::Memory(more)).await?;
                if self.input.capacity() == 0 {
                    self.input = spare::take();
                }
                self.input.reserve(more);
                self.recharge();
            }
        }
    }

    /// Reads what has arrived, if the buffer has room, without waiting;
    /// whether anything was read.
    ///
    /// Through the stream's `poll_read` (polled once) rather than
    /// `try_read`: a read that fills less than the room it was given tells
    /// tokio the socket is drained, so the next attempt (the look for
    /// pipelined requests before replying) costs no syscall and the
    /// connection goes straight to waiting for epoll. A lone request then
    /// costs one read, not a read and a read that finds nothing.
    fn try_read(&mut self) -> Result<bool, Stop> {
        while self.input.capacity() > self.input.len() {
            match self.reader.read_buf(&mut self.input).now_or_never() {
                None => break,
                Some(Ok(0)) => return Err(Stop::Gone(None)),
                Some(Ok(n)) => {
                    stats::add(&self.stats.bytes_read, n as u64);
                    if self.idle_timeout.is_some() {
                        // Only the idle timer reads it: no clock read without one.
                        self.last_input = Instant::now();
                    }
                    return Ok(true);
                }
                Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Some(Err(e)) => return Err(Stop::Gone(Some(e))),
            }
        }
        Ok(false)
    }

    /// Waits for `what` under the shutdown, request and idle timers.
    async fn wait(&mut self, idle: bool, what: Wait) -> Result<(), Stop> {
        let request_deadline = self
            .partial_since
            .zip(self.request_timeout)
            .map(|(since, t)| since + t);
        let idle_deadline = match (idle, self.partial_since, self.idle_timeout) {
            (true, None, Some(t)) => Some(self.last_input + t),
            _ => None,
        };
        let timer = |deadline: Option<Instant>| async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        if !self.watching_stop {
            // Registers this task's waker for the stop, once (and never
            // polls the signal again, finished or not): the task keeps its
            // waker, and each later wait only reads the flag.
            self.watching_stop = true;
            let signal = &mut self.stop_signal;
            let done = std::future::poll_fn(|cx| Poll::Ready(signal.as_mut().poll(cx).is_ready()));
            if done.await {
                return Err(Stop::Shutdown);
            }
        }
        let stopping = &self.stopping;
        let stopped = std::future::poll_fn(|_| match stopping.has_changed() {
            Err(_) => Poll::Ready(()),
            Ok(_) => Poll::Pending,
        });
        let (reader, budget, held) = (&self.reader, self.budget, self.charged);
        let ready = async move {
            match what {
                Wait::Readable => reader.readable().await,
                Wait::Memory(more) => {
                    budget.wait_for(held, more).await;
                    Ok(())
                }
            }
        };
        tokio::select! {
            biased;
            _ = stopped => Err(Stop::Shutdown),
            _ = timer(request_deadline) => Err(Stop::RequestTimeout),
            _ = timer(idle_deadline) => Err(Stop::Idle),
            ready = ready => ready.map_err(|e| Stop::Gone(Some(e))),
        }
    }

    /// Closes the connection for the reason `stop` gives, logging it.
    fn stopped(&mut self, stop: Stop) {
        self.closed = true;
        match stop {
            Stop::Gone(None) | Stop::Shutdown => {}
            Stop::Gone(Some(e)) => {
                tracing::debug!(peer = %self.peer, error = %e, "{} connection failed", self.protocol)
            }
            Stop::Idle => {
                tracing::debug!(peer = %self.peer, "{} connection idle too long; closing", self.protocol)
            }
            Stop::RequestTimeout => {
                stats::add(&self.stats.request_timeouts, 1);
                crate::throttled!(
                    info,
                    peer = %self.peer,
                    timeout = ?self.request_timeout.unwrap_or_default(),
                    "{} request not complete within request_timeout; connection closed",
                    self.protocol
                );
            }
        }
        self.release();
    }

    /// Closes the connection after input the codec could not frame.
    fn refuse_input(&mut self, e: &io::Error) {
        stats::add(&self.stats.protocol_errors, 1);
        crate::throttled!(warn, peer = %self.peer, error = %e, "{} connection closed: unreadable input", self.protocol);
        self.closed = true;
        self.release();
    }

    /// Gives every buffered input byte back.
    fn release(&mut self) {
        spare::give(std::mem::take(&mut self.input));
        self.budget.recharge(self.charged, 0);
        self.charged = 0;
    }

    /// Runs `call` to completion while watching the connection; [`Closed`]
    /// if the client left or the server shut down first (the call is then
    /// dropped). Replies to earlier requests are written before the call waits.
    pub async fn run<F: Future>(&mut self, call: F) -> Result<F::Output, Closed> {
        tokio::pin!(call);
        if let Some(output) = (&mut call).now_or_never() {
            return Ok(output);
        }
        self.flush().await?;
        loop {
            if self.closed || self.backlog.len() >= MAX_PIPELINED {
                return tokio::select! {
                    biased;
                    output = &mut call => Ok(output),
                    _ = &mut self.shutdown => Err(Closed),
                };
            }
            let read_ahead = async {
                loop {
                    match self.decode() {
                        Ok(Some(frame)) => return Ok(frame),
                        Ok(None) => {}
                        Err(e) => return Err(Err(e)),
                    }
                    self.read_more(false).await.map_err(Ok)?;
                }
            };
            tokio::select! {
                biased;
                output = &mut call => return Ok(output),
                next = read_ahead => match next {
                    Ok(frame) => self.backlog.push_back(frame),
                    Err(Ok(Stop::Shutdown)) => {
                        self.closed = true;
                        return Err(Closed);
                    }
                    Err(Ok(stop)) => {
                        self.stopped(stop);
                        return Err(Closed);
                    }
                    Err(Err(e)) => {
                        self.refuse_input(&e);
                        return Err(Closed);
                    }
                },
            }
        }
    }

    /// Writes the pending replies; [`Closed`] if the client is gone or
    /// stopped reading.
    pub async fn flush(&mut self) -> Handled {
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
            self.out = BytesMut::new();
            self.release();
            return Err(Closed);
        }
        if self.out.capacity() > OUT_LIMIT {
            // A large reply went out: do not keep its buffer for small ones.
            self.out = BytesMut::new();
        }
        Ok(())
    }
}

impl<C: Codec> Drop for Connection<'_, C> {
    fn drop(&mut self) {
        self.release();
    }
}

/// Buffers that connections gave back while waiting for their clients,
/// kept for the next connection on the same thread that has a request to
/// read or answer. A connection holds no buffer between requests (so idle
/// ones cost nothing), but allocating and freeing 8 KiB around every
/// request was a tenth of the server's time under load. At most
/// [`spare::KEPT`] per thread, each [`INITIAL_INPUT`] bytes: outside any
/// connection's budget, and bounded.
mod spare {
    use std::cell::RefCell;

    use bytes::BytesMut;

    use super::INITIAL_INPUT;

    pub const KEPT: usize = 64;

    thread_local! {
        static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    }

    /// A buffer with room for [`INITIAL_INPUT`] bytes, reused if one is kept.
    pub fn take() -> BytesMut {
        SPARE
            .with_borrow_mut(Vec::pop)
            .unwrap_or_else(|| BytesMut::with_capacity(INITIAL_INPUT))
    }

    /// Keeps `buf` for reuse if it is empty and of the usual size, else frees it.
    pub fn give(mut buf: BytesMut) {
        if !buf.is_empty() || buf.capacity() == 0 {
            return;
        }
        // Reclaims the room already read past, in place when nothing else
        // shares the allocation (a frozen slice of it does: then it is left
        // to that slice and not kept).
        if !buf.try_reclaim(INITIAL_INPUT) || buf.capacity() != INITIAL_INPUT {
            return;
        }
        SPARE.with_borrow_mut(|spare| {
            if spare.len() < KEPT {
                spare.push(buf);
            }
        });
    }
}

/// What a connection waits for.
#[derive(Debug, Clone, Copy)]
enum Wait {
    Readable,
    /// Room in the budget to grow the input buffer by this much.
    Memory(usize),
}
