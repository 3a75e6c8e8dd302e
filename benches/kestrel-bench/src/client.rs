//! Blocking queue clients for each protocol, behind one trait, so every
//! scenario runs unchanged against memcache, Thrift or text servers.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::generated::{KestrelSyncClient, TKestrelSyncClient};
use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::transport::{
    ReadHalf, TFramedReadTransport, TFramedWriteTransport, TIoChannel, TTcpChannel, WriteHalf,
};

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

/// The operations the scenarios need.
pub trait Client: Send {
    /// Puts `items`; returns how many the server accepted.
    fn put(&mut self, queue: &str, items: &[Vec<u8>]) -> io::Result<usize>;
    /// Removes up to `max` items, waiting up to `timeout` (0: no wait).
    fn take(&mut self, queue: &str, max: usize, timeout: Duration) -> io::Result<Vec<Vec<u8>>>;
    /// Opens up to `max` items. Memcache and text open one at a time and
    /// confirm the previous item in the same request (`/close/open`), so a
    /// confirmed item is only final once the next `open` or `finish`.
    fn open(&mut self, queue: &str, max: usize, timeout: Duration) -> io::Result<Vec<Opened>>;
    /// Confirms opened items.
    fn confirm(&mut self, queue: &str, items: Vec<Opened>) -> io::Result<()>;
    /// Sends any confirm still deferred.
    fn finish(&mut self, queue: &str) -> io::Result<()>;
    /// Empties `queue`.
    fn flush(&mut self, queue: &str) -> io::Result<()>;
}

/// Connects a client of `protocol` to `addr`. `auto_abort` is the deadline
/// Thrift reads are opened with.
pub fn connect(
    protocol: Protocol,
    addr: SocketAddr,
    auto_abort: Duration,
) -> io::Result<Box<dyn Client>> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    Ok(match protocol {
        Protocol::Memcache => Box::new(Memcache::new(stream)?),
        Protocol::Text => Box::new(Text::new(stream)?),
        Protocol::Thrift => Box::new(Thrift::new(stream, auto_abort)?),
    })
}

fn protocol_error(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// A line-based connection: buffered reads, whole-request writes.
struct Lines {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    line: Vec<u8>,
}

impl Lines {
    fn new(stream: TcpStream) -> io::Result<Self> {
        Ok(Lines {
            writer: stream.try_clone()?,
            reader: BufReader::with_capacity(256 * 1024, stream),
            line: Vec::new(),
        })
    }

    fn read_line(&mut self) -> io::Result<&[u8]> {
        self.line.clear();
        if self.reader.read_until(b'\n', &mut self.line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        while matches!(self.line.last(), Some(b'\n' | b'\r')) {
            self.line.pop();
        }
        Ok(&self.line)
    }
}

struct Memcache {
    conn: Lines,
    request: Vec<u8>,
    /// An opened item waits for `/close` in the next request.
    close_pending: bool,
}

impl Memcache {
    fn new(stream: TcpStream) -> io::Result<Self> {
        Ok(Memcache {
            conn: Lines::new(stream)?,
            request: Vec::new(),
            close_pending: false,
        })
    }

    /// Sends `get key` and reads a `VALUE` block or `END`.
    fn get(&mut self, key: &str) -> io::Result<Option<Vec<u8>>> {
        self.conn
            .writer
            .write_all(format!("get {key}\r\n").as_bytes())?;
        let line = self.conn.read_line()?;
        if line == b"END" {
            return Ok(None);
        }
        let header = String::from_utf8_lossy(line).into_owned();
        let len: usize = header
            .strip_prefix("VALUE ")
            .and_then(|rest| rest.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| protocol_error(format!("unexpected reply {header:?}")))?;
        let mut data = vec![0; len + 2];
        self.conn.reader.read_exact(&mut data)?;
        data.truncate(len);
        match self.conn.read_line()? {
            b"END" => Ok(Some(data)),
            other => Err(protocol_error(format!(
                "expected END, got {:?}",
                String::from_utf8_lossy(other)
            ))),
        }
    }

    fn options(timeout: Duration) -> String {
        if timeout.is_zero() {
            String::new()
        } else {
            format!("/t={}", timeout.as_millis())
        }
    }
}

impl Client for Memcache {
    fn put(&mut self, queue: &str, items: &[Vec<u8>]) -> io::Result<usize> {
        self.request.clear();
        for item in items {
            self.request
                .extend_from_slice(format!("set {queue} 0 0 {}\r\n", item.len()).as_bytes());
            self.request.extend_from_slice(item);
            self.request.extend_from_slice(b"\r\n");
        }
        self.conn.writer.write_all(&self.request)?;
        let mut stored = 0;
        for _ in items {
            match self.conn.read_line()? {
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

    fn take(&mut self, queue: &str, max: usize, timeout: Duration) -> io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        while out.len() < max {
            let wait = if out.is_empty() {
                timeout
            } else {
                Duration::ZERO
            };
            match self.get(&format!("{queue}{}", Self::options(wait)))? {
                Some(item) => out.push(item),
                None => break,
            }
        }
        Ok(out)
    }

    fn open(&mut self, queue: &str, _max: usize, timeout: Duration) -> io::Result<Vec<Opened>> {
        let close = if std::mem::take(&mut self.close_pending) {
            "/close"
        } else {
            ""
        };
        let item = self.get(&format!("{queue}{close}/open{}", Self::options(timeout)))?;
        Ok(item
            .map(|data| Opened { data, id: 0 })
            .into_iter()
            .collect())
    }

    fn confirm(&mut self, _queue: &str, items: Vec<Opened>) -> io::Result<()> {
        self.close_pending |= !items.is_empty();
        Ok(())
    }

    fn finish(&mut self, queue: &str) -> io::Result<()> {
        if std::mem::take(&mut self.close_pending) {
            self.get(&format!("{queue}/close"))?;
        }
        Ok(())
    }

    fn flush(&mut self, queue: &str) -> io::Result<()> {
        self.conn
            .writer
            .write_all(format!("flush {queue}\r\n").as_bytes())?;
        self.conn.read_line().map(drop)
    }
}

struct Text {
    conn: Lines,
    /// `get` confirms the previous item itself; only the last needs `confirm`.
    confirm_pending: bool,
}

impl Text {
    fn new(stream: TcpStream) -> io::Result<Self> {
        Ok(Text {
            conn: Lines::new(stream)?,
            confirm_pending: false,
        })
    }

    fn item_reply(&mut self) -> io::Result<Option<Vec<u8>>> {
        let line = self.conn.read_line()?;
        match line.first() {
            Some(b':') => Ok(Some(line[1..].to_vec())),
            Some(b'*') => Ok(None),
            _ => Err(protocol_error(format!(
                "get: {:?}",
                String::from_utf8_lossy(line)
            ))),
        }
    }
}

impl Client for Text {
    fn put(&mut self, queue: &str, items: &[Vec<u8>]) -> io::Result<usize> {
        let mut request = format!("put {queue}:\n").into_bytes();
        for item in items {
            request.extend_from_slice(item);
            request.push(b'\n');
        }
        request.push(b'\n');
        self.conn.writer.write_all(&request)?;
        let line = self.conn.read_line()?;
        std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.strip_prefix('+'))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| protocol_error(format!("put: {:?}", String::from_utf8_lossy(line))))
    }

    fn take(&mut self, queue: &str, max: usize, timeout: Duration) -> io::Result<Vec<Vec<u8>>> {
        // Text reads are always reliable: open, and let the next get confirm.
        let opened = self.open(queue, max, timeout)?;
        let data = opened.iter().map(|o| o.data.clone()).collect();
        self.confirm(queue, opened)?;
        Ok(data)
    }

    fn open(&mut self, queue: &str, _max: usize, timeout: Duration) -> io::Result<Vec<Opened>> {
        self.confirm_pending = false;
        let wait = if timeout.is_zero() {
            String::new()
        } else {
            format!(" {}", timeout.as_millis())
        };
        self.conn
            .writer
            .write_all(format!("get {queue}{wait}\n").as_bytes())?;
        Ok(self
            .item_reply()?
            .map(|data| Opened { data, id: 0 })
            .into_iter()
            .collect())
    }

    fn confirm(&mut self, _queue: &str, items: Vec<Opened>) -> io::Result<()> {
        self.confirm_pending |= !items.is_empty();
        Ok(())
    }

    fn finish(&mut self, queue: &str) -> io::Result<()> {
        if std::mem::take(&mut self.confirm_pending) {
            self.conn
                .writer
                .write_all(format!("confirm {queue} 1\n").as_bytes())?;
            self.conn.read_line()?;
        }
        Ok(())
    }

    fn flush(&mut self, queue: &str) -> io::Result<()> {
        self.conn
            .writer
            .write_all(format!("flush {queue}\n").as_bytes())?;
        self.conn.read_line().map(drop)
    }
}

type ThriftClient = KestrelSyncClient<
    TBinaryInputProtocol<TFramedReadTransport<ReadHalf<TTcpChannel>>>,
    TBinaryOutputProtocol<TFramedWriteTransport<WriteHalf<TTcpChannel>>>,
>;

/// The generated Thrift client.
struct Thrift {
    client: ThriftClient,
    auto_abort: Duration,
}

impl Thrift {
    fn new(stream: TcpStream, auto_abort: Duration) -> io::Result<Self> {
        let (r, w) = TTcpChannel::with_stream(stream)
            .split()
            .map_err(thrift_io)?;
        let client = KestrelSyncClient::new(
            TBinaryInputProtocol::new(TFramedReadTransport::new(r), true),
            TBinaryOutputProtocol::new(TFramedWriteTransport::new(w), true),
        );
        Ok(Thrift { client, auto_abort })
    }
}

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

impl Client for Thrift {
    fn put(&mut self, queue: &str, items: &[Vec<u8>]) -> io::Result<usize> {
        self.client
            .put(queue.into(), items.to_vec(), 0)
            .map(|n| n as usize)
            .map_err(thrift_io)
    }

    fn take(&mut self, queue: &str, max: usize, timeout: Duration) -> io::Result<Vec<Vec<u8>>> {
        let items = self
            .client
            .get(queue.into(), max as i32, millis(timeout), 0)
            .map_err(thrift_io)?;
        Ok(items
            .into_iter()
            .map(|i| i.data.unwrap_or_default())
            .collect())
    }

    fn open(&mut self, queue: &str, max: usize, timeout: Duration) -> io::Result<Vec<Opened>> {
        let items = self
            .client
            .get(
                queue.into(),
                max as i32,
                millis(timeout),
                millis(self.auto_abort).max(1),
            )
            .map_err(thrift_io)?;
        Ok(items
            .into_iter()
            .map(|i| Opened {
                data: i.data.unwrap_or_default(),
                id: i.id.unwrap_or(0),
            })
            .collect())
    }

    fn confirm(&mut self, queue: &str, items: Vec<Opened>) -> io::Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let ids = items.iter().map(|o| o.id).collect();
        self.client
            .confirm(queue.into(), ids)
            .map(drop)
            .map_err(thrift_io)
    }

    fn finish(&mut self, _queue: &str) -> io::Result<()> {
        Ok(())
    }

    fn flush(&mut self, queue: &str) -> io::Result<()> {
        self.client.flush_queue(queue.into()).map_err(thrift_io)
    }
}
