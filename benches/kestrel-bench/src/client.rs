//! Async queue clients for each protocol, behind one type, so every scenario
//! runs unchanged against memcache, Thrift or text servers.
//!
//! The clients are cheap on purpose: on a machine where client and server
//! share the cores, every microsecond the client spends is one the server
//! does not get, and a blocking thread per connection was the limit before
//! the server was (its context switches cost more than the requests). So
//! each connection is a task on a single-threaded runtime, builds its
//! requests into a reused buffer and reads replies through one buffered
//! reader, one request in flight.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TFieldIdentifier, TInputProtocol, TListIdentifier,
    TMessageIdentifier, TMessageType, TOutputProtocol, TSetIdentifier, TStructIdentifier, TType,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::generated::Item;
use thrift::protocol::TSerializable;

/// Which wire protocol a target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Memcache,
    Thrift,
    Text,
}

/// An item read reliably: confirm it, or leave it to be aborted.
#[derive(Debug)]
pub struct Opened {
    pub data: Vec<u8>,
    id: i64,
}

/// One connection to a target, in the protocol it speaks.
pub enum Client {
    Memcache(Memcache),
    Text(Text),
    Thrift(Thrift),
}

/// Longest time a client thread may go without any reply before the run
/// fails: a server that stops answering fails it instead of hanging it.
/// Watched per thread (see [`watchdog`]), not with a timer per request.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

thread_local! {
    /// Replies read on this thread: what [`watchdog`] watches.
    static REPLIES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Resolves with an error once no connection on this thread has read a
/// reply for [`REPLY_TIMEOUT`]; run it beside the thread's connections.
pub async fn watchdog() -> io::Error {
    let mut last = (REPLIES.get(), tokio::time::Instant::now());
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let replies = REPLIES.get();
        if replies != last.0 {
            last = (replies, tokio::time::Instant::now());
        } else if last.1.elapsed() >= REPLY_TIMEOUT {
            return io::Error::new(io::ErrorKind::TimedOut, "no reply in 120 s");
        }
    }
}

/// Connects a client of `protocol` to `addr`. `auto_abort` is the deadline
/// Thrift reads are opened with.
pub async fn connect(
    protocol: Protocol,
    addr: SocketAddr,
    auto_abort: Duration,
) -> io::Result<Client> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let conn = Conn::new(stream);
    Ok(match protocol {
        Protocol::Memcache => Client::Memcache(Memcache {
            conn,
            close_pending: false,
        }),
        Protocol::Text => Client::Text(Text {
            conn,
            confirm_pending: false,
        }),
        Protocol::Thrift => Client::Thrift(Thrift {
            conn,
            frame: Vec::new(),
            seq: 0,
            auto_abort,
        }),
    })
}

impl Client {
    /// Puts `items`; returns how many the server accepted.
    pub async fn put(&mut self, queue: &str, items: &[Vec<u8>]) -> io::Result<usize> {
        match self {
            Client::Memcache(c) => c.put(queue, items).await,
            Client::Text(c) => c.put(queue, items).await,
            Client::Thrift(c) => c.put(queue, items).await,
        }
    }

    /// Removes up to `max` items, waiting up to `timeout` (0: no wait).
    pub async fn take(
        &mut self,
        queue: &str,
        max: usize,
        timeout: Duration,
    ) -> io::Result<Vec<Vec<u8>>> {
        match self {
            Client::Memcache(c) => c.take(queue, max, timeout).await,
            Client::Text(c) => {
                // Text reads are always reliable: open, and let the next get confirm.
                let opened = c.open(queue, timeout).await?;
                c.confirm_pending |= !opened.is_empty();
                Ok(opened.into_iter().map(|o| o.data).collect())
            }
            Client::Thrift(c) => c
                .get(queue, max, timeout, Duration::ZERO)
                .await
                .map(|items| items.into_iter().map(|o| o.data).collect()),
        }
    }

    /// Opens up to `max` items. Memcache and text open one at a time and
    /// confirm the previous item in the same request (`/close/open`), so a
    /// confirmed item is only final once the next `open` or `finish`.
    pub async fn open(
        &mut self,
        queue: &str,
        max: usize,
        timeout: Duration,
    ) -> io::Result<Vec<Opened>> {
        match self {
            Client::Memcache(c) => c.open(queue, timeout).await,
            Client::Text(c) => c.open(queue, timeout).await,
            Client::Thrift(c) => {
                let auto_abort = c.auto_abort.max(Duration::from_millis(1));
                c.get(queue, max, timeout, auto_abort).await
            }
        }
    }

    /// Confirms opened items.
    pub async fn confirm(&mut self, queue: &str, items: Vec<Opened>) -> io::Result<()> {
        match self {
            Client::Memcache(c) => c.close_pending |= !items.is_empty(),
            Client::Text(c) => c.confirm_pending |= !items.is_empty(),
            Client::Thrift(c) => c.confirm(queue, &items).await?,
        }
        Ok(())
    }

    /// Sends any confirm still deferred.
    pub async fn finish(&mut self, queue: &str) -> io::Result<()> {
        match self {
            Client::Memcache(c) => {
                if std::mem::take(&mut c.close_pending) {
                    c.get(queue, "/close", Duration::ZERO).await?;
                }
            }
            Client::Text(c) => {
                if std::mem::take(&mut c.confirm_pending) {
                    c.conn.request(format_args!("confirm {queue} 1\n")).await?;
                    c.conn.read_line().await?;
                }
            }
            Client::Thrift(_) => {}
        }
        Ok(())
    }

    /// Empties `queue`.
    pub async fn flush(&mut self, queue: &str) -> io::Result<()> {
        match self {
            Client::Memcache(Memcache { conn, .. }) => {
                conn.request(format_args!("flush {queue}\r\n")).await?;
                conn.read_line().await.map(drop)
            }
            Client::Text(Text { conn, .. }) => {
                conn.request(format_args!("flush {queue}\n")).await?;
                conn.read_line().await.map(drop)
            }
            Client::Thrift(c) => c.flush(queue).await,
        }
    }
}

fn protocol_error(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// A connection: replies through one buffer, requests built in another that
/// is reused, so a request costs one `write` and no allocation.
pub struct Conn {
    stream: BufReader<TcpStream>,
    request: Vec<u8>,
    line: Vec<u8>,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream: BufReader::with_capacity(256 * 1024, stream),
            request: Vec::with_capacity(4096),
            line: Vec::with_capacity(256),
        }
    }

    /// Sends what [`Conn::request`] holds.
    async fn send(&mut self) -> io::Result<()> {
        self.stream.get_mut().write_all(&self.request).await
    }

    /// Sends a one-line request.
    async fn request(&mut self, line: std::fmt::Arguments<'_>) -> io::Result<()> {
        self.request.clear();
        self.request.write_fmt(line)?;
        self.send().await
    }

    /// The next line of the reply, without its line end.
    async fn read_line(&mut self) -> io::Result<&[u8]> {
        self.line.clear();
        if self.stream.read_until(b'\n', &mut self.line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        REPLIES.set(REPLIES.get() + 1);
        while matches!(self.line.last(), Some(b'\n' | b'\r')) {
            self.line.pop();
        }
        Ok(&self.line)
    }

    async fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.stream.read_exact(buf).await?;
        REPLIES.set(REPLIES.get() + 1);
        Ok(())
    }
}

pub struct Memcache {
    conn: Conn,
    /// An opened item waits for `/close` in the next request.
    close_pending: bool,
}

impl Memcache {
    async fn put(&mut self, queue: &str, items: &[Vec<u8>]) -> io::Result<usize> {
        let request = &mut self.conn.request;
        request.clear();
        for item in items {
            request.extend_from_slice(b"set ");
            request.extend_from_slice(queue.as_bytes());
            request.extend_from_slice(b" 0 0 ");
            request.extend_from_slice(itoa::Buffer::new().format(item.len()).as_bytes());
            request.extend_from_slice(b"\r\n");
            request.extend_from_slice(item);
            request.extend_from_slice(b"\r\n");
        }
        self.conn.send().await?;
        let mut stored = 0;
        for _ in items {
            match self.conn.read_line().await? {
                b"STORED" => stored += 1,
                b"NOT_STORED" => {}
                other => {
                    return Err(protocol_error(format!(
                        "set: {:?}",
                        String::from_utf8_lossy(other)
                    )));
                }
            }
        }
        Ok(stored)
    }

    /// Sends `get <queue><options>[/t=ms]` and reads a `VALUE` block or `END`.
    async fn get(
        &mut self,
        queue: &str,
        options: &str,
        timeout: Duration,
    ) -> io::Result<Option<Vec<u8>>> {
        let request = &mut self.conn.request;
        request.clear();
        request.extend_from_slice(b"get ");
        request.extend_from_slice(queue.as_bytes());
        request.extend_from_slice(options.as_bytes());
        if !timeout.is_zero() {
            request.extend_from_slice(b"/t=");
            request.extend_from_slice(itoa::Buffer::new().format(timeout.as_millis()).as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        self.conn.send().await?;
        let line = self.conn.read_line().await?;
        if line == b"END" {
            return Ok(None);
        }
        let len: usize = std::str::from_utf8(line)
            .ok()
            .filter(|l| l.starts_with("VALUE "))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                protocol_error(format!(
                    "unexpected reply {:?}",
                    String::from_utf8_lossy(line)
                ))
            })?;
        let mut data = vec![0; len + 2];
        self.conn.read_exact(&mut data).await?;
        data.truncate(len);
        match self.conn.read_line().await? {
            b"END" => Ok(Some(data)),
            other => Err(protocol_error(format!(
                "expected END, got {:?}",
                String::from_utf8_lossy(other)
            ))),
        }
    }

    async fn take(
        &mut self,
        queue: &str,
        max: usize,
        timeout: Duration,
    ) -> io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        while out.len() < max {
            let wait = if out.is_empty() {
                timeout
            } else {
                Duration::ZERO
            };
            match self.get(queue, "", wait).await? {
                Some(item) => out.push(item),
                None => break,
            }
        }
        Ok(out)
    }

    async fn open(&mut self, queue: &str, timeout: Duration) -> io::Result<Vec<Opened>> {
        let options = if std::mem::take(&mut self.close_pending) {
            "/close/open"
        } else {
            "/open"
        };
        let item = self.get(queue, options, timeout).await?;
        Ok(item
            .map(|data| Opened { data, id: 0 })
            .into_iter()
            .collect())
    }
}

pub struct Text {
    conn: Conn,
    /// `get` confirms the previous item itself; only the last needs `confirm`.
    confirm_pending: bool,
}

impl Text {
    async fn put(&mut self, queue: &str, items: &[Vec<u8>]) -> io::Result<usize> {
        let request = &mut self.conn.request;
        request.clear();
        writeln!(request, "put {queue}:")?;
        for item in items {
            request.extend_from_slice(item);
            request.push(b'\n');
        }
        request.push(b'\n');
        self.conn.send().await?;
        let line = self.conn.read_line().await?;
        std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.strip_prefix('+'))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| protocol_error(format!("put: {:?}", String::from_utf8_lossy(line))))
    }

    async fn open(&mut self, queue: &str, timeout: Duration) -> io::Result<Vec<Opened>> {
        self.confirm_pending = false;
        if timeout.is_zero() {
            self.conn.request(format_args!("get {queue}\n")).await?;
        } else {
            let ms = timeout.as_millis();
            self.conn
                .request(format_args!("get {queue} {ms}\n"))
                .await?;
        }
        let line = self.conn.read_line().await?;
        match line.first() {
            Some(b':') => Ok(vec![Opened {
                data: line[1..].to_vec(),
                id: 0,
            }]),
            Some(b'*') => Ok(Vec::new()),
            _ => Err(protocol_error(format!(
                "get: {:?}",
                String::from_utf8_lossy(line)
            ))),
        }
    }
}

/// Kestrel's Thrift service over framed transport and the strict binary
/// protocol, written and read through the `thrift` crate's protocol types
/// (the generated client is blocking; the calls here are the four the
/// scenarios make, with the IDL's field ids).
pub struct Thrift {
    conn: Conn,
    frame: Vec<u8>,
    seq: i32,
    auto_abort: Duration,
}

/// Largest reply frame accepted (a batch get of big items fits).
const MAX_FRAME: usize = 256 << 20;

fn thrift_io(e: thrift::Error) -> io::Error {
    match e {
        thrift::Error::Transport(t) => io::Error::other(t.message),
        thrift::Error::Application(a) => io::Error::other(a.message),
        other => io::Error::other(other.to_string()),
    }
}

fn millis(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

fn field(
    p: &mut dyn TOutputProtocol,
    name: &str,
    ty: TType,
    id: i16,
    value: impl FnOnce(&mut dyn TOutputProtocol) -> thrift::Result<()>,
) -> thrift::Result<()> {
    p.write_field_begin(&TFieldIdentifier::new(name, ty, id))?;
    value(p)?;
    p.write_field_end()
}

impl Thrift {
    /// Sends one call (its arguments written by `args`) and reads the reply
    /// frame; `success` reads the result's field 0, when there is one.
    async fn call<T>(
        &mut self,
        name: &str,
        args: impl FnOnce(&mut dyn TOutputProtocol) -> thrift::Result<()>,
        success: impl FnOnce(&mut dyn TInputProtocol) -> thrift::Result<T>,
    ) -> io::Result<Option<T>> {
        self.seq = self.seq.wrapping_add(1);
        let out = &mut self.conn.request;
        out.clear();
        out.extend_from_slice(&[0; 4]);
        {
            let mut p = TBinaryOutputProtocol::new(&mut *out, true);
            p.write_message_begin(&TMessageIdentifier::new(name, TMessageType::Call, self.seq))
                .and_then(|()| p.write_struct_begin(&TStructIdentifier::new("args")))
                .and_then(|()| args(&mut p))
                .and_then(|()| p.write_field_stop())
                .and_then(|()| p.write_struct_end())
                .and_then(|()| p.write_message_end())
                .map_err(thrift_io)?;
        }
        let len = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&len.to_be_bytes());
        self.conn.send().await?;

        let mut len = [0; 4];
        self.conn.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(protocol_error(format!(
                "{name}: reply frame of {len} bytes"
            )));
        }
        let mut frame = std::mem::take(&mut self.frame);
        frame.resize(len, 0);
        let read = self.conn.read_exact(&mut frame).await;
        self.frame = frame;
        read?;

        let mut p = TBinaryInputProtocol::new(&self.frame[..], true);
        let reply = p.read_message_begin().map_err(thrift_io)?;
        if reply.message_type == TMessageType::Exception {
            let e = thrift::Error::read_application_error_from_in_protocol(&mut p);
            return Err(thrift_io(e.map_or_else(|e| e, thrift::Error::Application)));
        }
        let mut value = None;
        let mut success = Some(success);
        p.read_struct_begin().map_err(thrift_io)?;
        loop {
            let f = p.read_field_begin().map_err(thrift_io)?;
            if f.field_type == TType::Stop {
                break;
            }
            match (f.id, success.take()) {
                (Some(0), Some(read)) => value = Some(read(&mut p).map_err(thrift_io)?),
                (_, s) => {
                    success = s;
                    p.skip(f.field_type).map_err(thrift_io)?;
                }
            }
            p.read_field_end().map_err(thrift_io)?;
        }
        Ok(value)
    }

    async fn put(&mut self, queue: &str, items: &[Vec<u8>]) -> io::Result<usize> {
        let stored = self
            .call(
                "put",
                |p| {
                    field(p, "queue_name", TType::String, 1, |p| p.write_string(queue))?;
                    field(p, "items", TType::List, 2, |p| {
                        p.write_list_begin(&TListIdentifier::new(
                            TType::String,
                            items.len() as i32,
                        ))?;
                        for item in items {
                            p.write_bytes(item)?;
                        }
                        p.write_list_end()
                    })?;
                    field(p, "expiration_msec", TType::I32, 3, |p| p.write_i32(0))
                },
                |p| p.read_i32(),
            )
            .await?;
        stored
            .map(|n| n.max(0) as usize)
            .ok_or_else(|| protocol_error("put: no result".into()))
    }

    async fn get(
        &mut self,
        queue: &str,
        max: usize,
        timeout: Duration,
        auto_abort: Duration,
    ) -> io::Result<Vec<Opened>> {
        let items = self
            .call(
                "get",
                |p| {
                    field(p, "queue_name", TType::String, 1, |p| p.write_string(queue))?;
                    field(p, "max_items", TType::I32, 2, |p| p.write_i32(max as i32))?;
                    field(p, "timeout_msec", TType::I32, 3, |p| {
                        p.write_i32(millis(timeout))
                    })?;
                    field(p, "auto_abort_msec", TType::I32, 4, |p| {
                        p.write_i32(millis(auto_abort))
                    })
                },
                |p| {
                    let list = p.read_list_begin()?;
                    let mut items = Vec::with_capacity(list.size.clamp(0, 1024) as usize);
                    for _ in 0..list.size {
                        let item = Item::read_from_in_protocol(p)?;
                        items.push(Opened {
                            data: item.data.unwrap_or_default(),
                            id: item.id.unwrap_or(0),
                        });
                    }
                    p.read_list_end()?;
                    Ok(items)
                },
            )
            .await?;
        items.ok_or_else(|| protocol_error("get: no result".into()))
    }

    async fn confirm(&mut self, queue: &str, items: &[Opened]) -> io::Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        self.call(
            "confirm",
            |p| {
                field(p, "queue_name", TType::String, 1, |p| p.write_string(queue))?;
                field(p, "ids", TType::Set, 2, |p| {
                    p.write_set_begin(&TSetIdentifier::new(TType::I64, items.len() as i32))?;
                    for item in items {
                        p.write_i64(item.id)?;
                    }
                    p.write_set_end()
                })
            },
            |p| p.read_i32(),
        )
        .await
        .map(drop)
    }

    async fn flush(&mut self, queue: &str) -> io::Result<()> {
        self.call(
            "flush_queue",
            |p| field(p, "queue_name", TType::String, 1, |p| p.write_string(queue)),
            |_| Ok(()),
        )
        .await
        .map(drop)
    }
}
