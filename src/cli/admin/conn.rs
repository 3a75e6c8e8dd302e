//! The Thrift connection `kestrel admin` talks over: bounded in time (a
//! dead or wedged server fails the command instead of hanging it) and in
//! memory (a wrong port's reply is refused, not allocated).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::transport::{TFramedReadTransport, TFramedWriteTransport};

use super::{Failure, MAX_REPLY_FRAME, NET_TIMEOUT};
use crate::protocol::thrift::generated::KestrelSyncClient;

pub(super) type Client = KestrelSyncClient<
    TBinaryInputProtocol<TFramedReadTransport<ReplyReader>>,
    TBinaryOutputProtocol<TFramedWriteTransport<RequestWriter>>,
>;

/// A Thrift connection: the generated client, and the socket under it (to
/// set how long the next reply may take).
pub(super) struct Conn {
    client: Client,
    socket: TcpStream,
    server: String,
}

impl Conn {
    pub(super) fn open(server: &str) -> Result<Conn, Failure> {
        let socket = connect(server)?;
        let _ = socket.set_nodelay(true);
        let setup = |e: io::Error| Failure::unreachable(format!("connection to {server}: {e}"));
        socket.set_read_timeout(Some(NET_TIMEOUT)).map_err(setup)?;
        socket.set_write_timeout(Some(NET_TIMEOUT)).map_err(setup)?;
        let reader = ReplyReader {
            socket: socket.try_clone().map_err(setup)?,
            server: server.to_string(),
            header: [0; 4],
            header_len: 0,
            body_left: 0,
        };
        let writer = RequestWriter {
            socket: socket.try_clone().map_err(setup)?,
            server: server.to_string(),
        };
        let client = KestrelSyncClient::new(
            TBinaryInputProtocol::new(TFramedReadTransport::new(reader), true),
            TBinaryOutputProtocol::new(TFramedWriteTransport::new(writer), true),
        );
        Ok(Conn {
            client,
            socket,
            server: server.to_string(),
        })
    }

    /// Lets the next replies take `wait` (what the request may wait on the
    /// server) plus [`NET_TIMEOUT`].
    pub(super) fn allow(&mut self, wait: Duration) -> Result<(), Failure> {
        self.socket
            .set_read_timeout(Some(wait + NET_TIMEOUT))
            .map_err(|e| Failure::unreachable(format!("connection to {}: {e}", self.server)))
    }

    /// Makes one call, turning its error into a [`Failure`].
    pub(super) fn call<T>(
        &mut self,
        f: impl FnOnce(&mut Client) -> thrift::Result<T>,
    ) -> Result<T, Failure> {
        f(&mut self.client).map_err(|e| match e {
            // The server's own refusal: its message is the whole story.
            thrift::Error::Application(a) => Failure::refused(a.message),
            // The reader and writer below word these completely.
            thrift::Error::Transport(t) => Failure::unreachable(t.message),
            thrift::Error::Protocol(p) => Failure::unreachable(format!(
                "{} does not answer as a Kestrel Thrift server: {}",
                self.server, p.message
            )),
            thrift::Error::User(u) => Failure::refused(u.to_string()),
        })
    }
}

/// Opens a TCP connection to `HOST:PORT`, trying each address it resolves
/// to for at most [`NET_TIMEOUT`].
fn connect(addr: &str) -> Result<TcpStream, Failure> {
    let addrs = addr
        .to_socket_addrs()
        .map_err(|e| Failure::unreachable(format!("cannot resolve {addr}: {e}")))?;
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, NET_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(Failure::unreachable(match last {
        Some(e) if is_timeout(&e) => {
            format!("cannot connect to {addr}: no answer within {NET_TIMEOUT:?}")
        }
        Some(e) => format!("cannot connect to {addr}: {e}"),
        None => format!("cannot connect to {addr}: it resolves to no address"),
    }))
}

/// Whether an I/O error is a failure to connect (nothing listens there).
pub(super) fn refused(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::AddrNotAvailable
    )
}

/// Whether an I/O error is a socket timeout (`SO_RCVTIMEO` reports
/// `WouldBlock` on Unix, `TimedOut` elsewhere).
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The reading half of a Thrift connection, under `TFramedReadTransport`.
///
/// That transport allocates whatever length a frame announces; pointed at
/// the wrong port it would take text (memcache's `ERROR`, an HTTP status
/// line) for a length of a gigabyte. This reader follows the frames, refuses
/// an impossible length, and words every failure for an operator: the
/// transport passes the message on as it is.
pub(super) struct ReplyReader {
    socket: TcpStream,
    server: String,
    header: [u8; 4],
    header_len: usize,
    body_left: usize,
}

impl ReplyReader {
    fn explain(&self, e: io::Error) -> io::Error {
        let message = if is_timeout(&e) {
            let waited = self
                .socket
                .read_timeout()
                .ok()
                .flatten()
                .unwrap_or_default();
            format!("no reply from {} within {waited:?}", self.server)
        } else {
            format!("connection to {} lost: {e}", self.server)
        };
        io::Error::new(e.kind(), message)
    }
}

impl Read for ReplyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let in_body = self.body_left > 0;
        let want = if in_body {
            self.body_left
        } else {
            4 - self.header_len
        };
        let n = want.min(buf.len());
        let got = self
            .socket
            .read(&mut buf[..n])
            .map_err(|e| self.explain(e))?;
        if got == 0 {
            // The transport reads only when it expects a reply.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} closed the connection without a reply (is it the Thrift port?)",
                    self.server
                ),
            ));
        }
        if in_body {
            self.body_left -= got;
            return Ok(got);
        }
        self.header[self.header_len..self.header_len + got].copy_from_slice(&buf[..got]);
        self.header_len += got;
        if self.header_len == 4 {
            self.header_len = 0;
            let len = i32::from_be_bytes(self.header);
            if !(0..=MAX_REPLY_FRAME).contains(&len) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} does not answer as a Kestrel Thrift server (is it the Thrift port?)",
                        self.server
                    ),
                ));
            }
            self.body_left = len as usize;
        }
        Ok(got)
    }
}

/// The writing half of a Thrift connection, wording its failures as
/// [`ReplyReader`] does.
pub(super) struct RequestWriter {
    socket: TcpStream,
    server: String,
}

impl RequestWriter {
    fn explain(&self, e: io::Error) -> io::Error {
        let message = if is_timeout(&e) {
            format!(
                "{} is not taking the request (nothing sent for {NET_TIMEOUT:?})",
                self.server
            )
        } else {
            format!("connection to {} lost: {e}", self.server)
        };
        io::Error::new(e.kind(), message)
    }
}

impl Write for RequestWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.socket.write(buf).map_err(|e| self.explain(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush().map_err(|e| self.explain(e))
    }
}

// --- Commands -------------------------------------------------------------
