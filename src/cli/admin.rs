//! `kestrel admin`: the operator's command line for a running server.
//!
//! Owns the `admin` subcommand's arguments, what each command does, how it
//! prints (a table or raw items for people, one JSON object with `--json` for
//! scripts) and its exit codes. Queue, item, status and version commands go
//! over the Thrift port with the generated client; `stats` reads the admin
//! HTTP port's `/stats.json`, the only place that lists every queue.
//!
//! Everything here is blocking and bounded: a connection gets [`NET_TIMEOUT`]
//! to open and each reply as long as its request may wait plus
//! [`NET_TIMEOUT`], so a dead, wedged or wrong server makes a command fail
//! (exit 3) instead of hanging a script.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, BufRead, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::ffi::OsStringExt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::transport::{TFramedReadTransport, TFramedWriteTransport};

use crate::protocol::thrift::generated::{
    Item, KestrelSyncClient, QueueInfo, Status, TKestrelSyncClient,
};

/// How long a connection may take to open, and how long a reply may take
/// beyond what its request may wait on the server.
const NET_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the body of `/stats.json` may take to arrive: it grows with the
/// number of queues (about 40 names each), so it gets longer than a reply.
const STATS_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest Thrift reply frame accepted. Far above any real reply (a get
/// returns about 16 MiB at most), and below every length that printable text
/// makes when read as one: a memcache `ERROR`, an HTTP status line or a text
/// protocol `-…` all read as lengths of 512 MiB or more.
const MAX_REPLY_FRAME: i32 = 256 << 20;

/// Items sent in one `put` call when reading standard input, and the bytes
/// after which a batch is sent early: well inside the server's default
/// `max_frame_size` (16 MiB), so a long input streams in bounded memory.
const PUT_BATCH_ITEMS: usize = 1000;
const PUT_BATCH_BYTES: usize = 4 << 20;

/// The exit codes, shown by `kestrel admin --help`.
const EXIT_CODES: &str = "\
Exit codes:
  0  done (a get that found nothing is done too: it prints nothing)
  1  the server refused: an error reply, whose message is printed on
     stderr (a bad queue name, a status that forbids the command...); also
     a put of which not every item was accepted, and a failure to read
     standard input or write the output
  2  usage error: bad arguments
  3  cannot reach the server: no connection within 5 s, no reply in time,
     or a reply that is not Thrift (--server) or HTTP (--admin)

With --json every command prints one JSON object on stdout, and an error
is printed on stderr as {\"error\": MESSAGE, \"exit_code\": N}. Items are JSON
strings, or {\"hex\": \"...\"} when they are not UTF-8.";

/// Inspect and operate a running server: its queues, items and status.
#[derive(Args, Debug)]
#[command(after_help = EXIT_CODES)]
pub struct AdminArgs {
    /// The server's Thrift port, for every command but stats.
    #[arg(
        long,
        global = true,
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:2229",
        value_parser = host_port
    )]
    pub server: String,
    /// The server's admin HTTP port, for stats.
    #[arg(
        long,
        global = true,
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:2223",
        value_parser = host_port
    )]
    pub admin: String,
    /// Print one JSON object for scripts instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// An `admin` command.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// A table of the queues: items, bytes, open reads, waiters, age of the
    /// oldest item, journal size (from the admin HTTP port).
    Stats,
    /// A queue's figures and its head item, removing nothing.
    Peek {
        /// The queue (created if it does not exist, as any peek does).
        queue: String,
    },
    /// Add items to the tail of a queue.
    ///
    /// `put Q a b c` adds three items; `put Q -` adds one item per line of
    /// standard input (empty lines included, line ends removed). Prints how
    /// many items were accepted. Use `--` before items that start with `-`.
    Put {
        /// The queue (created if it does not exist).
        queue: String,
        /// The items, or `-` alone for the lines of standard input.
        #[arg(required = true, value_name = "ITEM", value_parser = clap::value_parser!(OsString))]
        items: Vec<OsString>,
        /// Expire the items this many milliseconds after the put.
        #[arg(long, value_name = "MS", value_parser = clap::value_parser!(i32).range(1..))]
        expiration: Option<i32>,
    },
    /// Remove items from the head of a queue and print them, one per line.
    Get {
        /// The queue.
        queue: String,
        /// Take up to N items.
        #[arg(
            short = 'n',
            long = "max-items",
            value_name = "N",
            default_value_t = 1,
            value_parser = clap::value_parser!(i32).range(1..)
        )]
        max_items: i32,
        /// Wait up to MS milliseconds for N items to arrive (0: take what
        /// is there now). Prints nothing, and exits 0, if none came.
        #[arg(
            long,
            value_name = "MS",
            default_value_t = 0,
            value_parser = clap::value_parser!(i32).range(0..)
        )]
        timeout: i32,
    },
    /// Remove every item of a queue (its open reads are left alone).
    Flush {
        /// The queue.
        queue: String,
    },
    /// Delete a queue, its journal and its stats.
    Delete {
        /// The queue.
        queue: String,
    },
    /// Print the server status, or set it.
    ///
    /// `readonly` refuses writes, `quiescent` reads and writes. A stricter
    /// status takes effect after the server's `status_change_grace_period`;
    /// the status printed is the one in force.
    Status {
        /// The status to set.
        status: Option<StatusName>,
    },
    /// Print the server's version.
    Version,
}

/// A status `admin status` can set.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusName {
    /// Everything allowed.
    Up,
    /// Writes (put, flush, delete) refused.
    Readonly,
    /// Reads and writes refused.
    Quiescent,
}

impl StatusName {
    fn word(self) -> &'static str {
        match self {
            StatusName::Up => "up",
            StatusName::Readonly => "readonly",
            StatusName::Quiescent => "quiescent",
        }
    }

    fn thrift(self) -> Status {
        match self {
            StatusName::Up => Status::UP,
            StatusName::Readonly => Status::READ_ONLY,
            StatusName::Quiescent => Status::QUIESCENT,
        }
    }
}

/// Checks an address is `HOST:PORT` before anything connects, so a missing
/// port is a usage error (exit 2), not an unreachable server.
fn host_port(text: &str) -> Result<String, String> {
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(text.to_string())
        }
        _ => Err(format!("{text:?} is not HOST:PORT (e.g. 127.0.0.1:2229)")),
    }
}

/// Runs an `admin` command and tells how it ended.
pub fn run(args: AdminArgs) -> ExitCode {
    let json = args.json;
    let mut out = Output::new(json);
    let result = dispatch(&args, &mut out);
    // What a command printed before it failed (items a get already took)
    // is flushed first: it must reach the user whatever comes next.
    let flushed = out.finish();
    match result.and(flushed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if json {
                eprintln!(
                    "{}",
                    json!({"error": failure.message, "exit_code": failure.code})
                );
            } else {
                eprintln!("kestrel admin: {}", failure.message);
            }
            ExitCode::from(failure.code)
        }
    }
}

fn dispatch(args: &AdminArgs, out: &mut Output) -> Result<(), Failure> {
    match &args.command {
        AdminCommand::Stats => stats(&args.admin, out),
        AdminCommand::Peek { queue } => peek(&args.server, queue, out),
        AdminCommand::Put {
            queue,
            items,
            expiration,
        } => put(&args.server, queue, items, expiration.unwrap_or(0), out),
        AdminCommand::Get {
            queue,
            max_items,
            timeout,
        } => get(&args.server, queue, *max_items, *timeout, out),
        AdminCommand::Flush { queue } => {
            let mut conn = Conn::open(&args.server)?;
            conn.call(|c| c.flush_queue(queue.clone()))?;
            out.text(format!("flushed {queue}"));
            out.json(json!({"queue": queue, "flushed": true}));
            Ok(())
        }
        AdminCommand::Delete { queue } => {
            let mut conn = Conn::open(&args.server)?;
            conn.call(|c| c.delete_queue(queue.clone()))?;
            out.text(format!("deleted {queue}"));
            out.json(json!({"queue": queue, "deleted": true}));
            Ok(())
        }
        AdminCommand::Status { status } => set_or_show_status(&args.server, *status, out),
        AdminCommand::Version => {
            let mut conn = Conn::open(&args.server)?;
            let version = conn.call(|c| c.get_version())?;
            out.text(&version);
            out.json(json!({"version": version}));
            Ok(())
        }
    }
}

/// Why a command failed, and the exit code that says so.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// The server answered with an error, or refused part of a request.
    fn refused(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }

    /// Standard input or output failed: nothing to do with the server.
    fn local(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }

    /// No connection, no reply in time, or a reply in the wrong protocol.
    fn unreachable(message: impl Into<String>) -> Failure {
        Failure {
            code: 3,
            message: message.into(),
        }
    }
}

/// Collects what a command prints, as text lines or as its one JSON object,
/// so each command states both and `--json` picks.
struct Output {
    json: bool,
    stdout: io::BufWriter<io::Stdout>,
    value: Option<Value>,
    error: Option<io::Error>,
}

impl Output {
    fn new(json: bool) -> Output {
        Output {
            json,
            stdout: io::BufWriter::new(io::stdout()),
            value: None,
            error: None,
        }
    }

    /// A line for people (ignored with `--json`).
    fn text(&mut self, line: impl AsRef<str>) {
        self.raw(line.as_ref().as_bytes());
    }

    /// A line of bytes for people, as they are (an item).
    fn raw(&mut self, bytes: &[u8]) {
        if self.json || self.error.is_some() {
            return;
        }
        if let Err(e) = self
            .stdout
            .write_all(bytes)
            .and_then(|()| self.stdout.write_all(b"\n"))
        {
            self.error = Some(e);
        }
    }

    /// The JSON object (ignored without `--json`).
    fn json(&mut self, value: Value) {
        self.value = Some(value);
    }

    /// Writes the JSON object, if that is the mode, and flushes.
    fn finish(mut self) -> Result<(), Failure> {
        if self.json
            && let Some(value) = self.value.take()
            && self.error.is_none()
            && let Err(e) = writeln!(self.stdout, "{value}")
        {
            self.error = Some(e);
        }
        if self.error.is_none()
            && let Err(e) = self.stdout.flush()
        {
            self.error = Some(e);
        }
        match self.error {
            None => Ok(()),
            Some(e) => Err(Failure::local(format!("cannot write the output: {e}"))),
        }
    }
}

/// An item as JSON: a string when it is UTF-8, else its bytes in hex, so
/// `--json` never alters an item a get has removed.
fn item_json(data: &[u8]) -> Value {
    match std::str::from_utf8(data) {
        Ok(text) => Value::String(text.to_string()),
        Err(_) => {
            let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
            json!({ "hex": hex })
        }
    }
}

// --- Thrift -------------------------------------------------------------

type Client = KestrelSyncClient<
    TBinaryInputProtocol<TFramedReadTransport<ReplyReader>>,
    TBinaryOutputProtocol<TFramedWriteTransport<RequestWriter>>,
>;

/// A Thrift connection: the generated client, and the socket under it (to
/// set how long the next reply may take).
struct Conn {
    client: Client,
    socket: TcpStream,
    server: String,
}

impl Conn {
    fn open(server: &str) -> Result<Conn, Failure> {
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
    fn allow(&mut self, wait: Duration) -> Result<(), Failure> {
        self.socket
            .set_read_timeout(Some(wait + NET_TIMEOUT))
            .map_err(|e| Failure::unreachable(format!("connection to {}: {e}", self.server)))
    }

    /// Makes one call, turning its error into a [`Failure`].
    fn call<T>(&mut self, f: impl FnOnce(&mut Client) -> thrift::Result<T>) -> Result<T, Failure> {
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
fn refused(e: &io::Error) -> bool {
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
struct ReplyReader {
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
struct RequestWriter {
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

fn peek(server: &str, queue: &str, out: &mut Output) -> Result<(), Failure> {
    let mut conn = Conn::open(server)?;
    let info: QueueInfo = conn.call(|c| c.peek(queue.to_string()))?;
    let n = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
    let n32 = |v: Option<i32>| v.unwrap_or(0).max(0) as u64;
    let (items, bytes, journal) = (n(info.items), n(info.bytes), n(info.journal_bytes));
    let (age, waiters, open) = (n(info.age), n32(info.waiters), n32(info.open_transactions));
    for (label, value) in [
        ("queue", queue.to_string()),
        ("items", items.to_string()),
        ("bytes", size(bytes)),
        ("open reads", open.to_string()),
        ("waiters", waiters.to_string()),
        ("age", age_text(age)),
        ("journal", size(journal)),
    ] {
        out.text(format!("{label:<11}{value}"));
    }
    if let Some(head) = &info.head_item {
        let mut line = format!("{:<11}", "head").into_bytes();
        line.extend_from_slice(head);
        out.raw(&line);
    }
    out.json(json!({
        "queue": queue,
        "items": items,
        "bytes": bytes,
        "open_transactions": open,
        "waiters": waiters,
        "age_msec": age,
        "journal_size": journal,
        "head": info.head_item.as_deref().map(item_json),
    }));
    Ok(())
}

fn put(
    server: &str,
    queue: &str,
    items: &[OsString],
    expiration: i32,
    out: &mut Output,
) -> Result<(), Failure> {
    let mut conn = Conn::open(server)?;
    let mut offered = 0usize;
    let mut accepted = 0usize;
    // Sends one batch; false once the queue refused part of it.
    let mut send = |batch: Vec<Vec<u8>>, conn: &mut Conn| -> Result<bool, Failure> {
        let len = batch.len();
        offered += len;
        let n = conn
            .call(|c| c.put(queue.to_string(), batch, expiration))
            .map_err(|f| match accepted {
                0 => f,
                done => Failure {
                    message: format!("{} ({done} items were put before)", f.message),
                    ..f
                },
            })?;
        let n = usize::try_from(n).unwrap_or(0).min(len);
        accepted += n;
        Ok(n == len)
    };
    if items.len() == 1 && items[0] == "-" {
        let mut stdin = io::stdin().lock();
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        loop {
            let mut line = Vec::new();
            let read = stdin
                .read_until(b'\n', &mut line)
                .map_err(|e| Failure::local(format!("cannot read standard input: {e}")))?;
            if read == 0 {
                break;
            }
            if line.last() == Some(&b'\n') {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
            }
            batch_bytes += line.len();
            batch.push(line);
            if batch.len() >= PUT_BATCH_ITEMS || batch_bytes >= PUT_BATCH_BYTES {
                batch_bytes = 0;
                if !send(std::mem::take(&mut batch), &mut conn)? {
                    break;
                }
            }
        }
        if !batch.is_empty() {
            send(batch, &mut conn)?;
        }
    } else {
        let batch = items.iter().map(|i| i.clone().into_vec()).collect();
        send(batch, &mut conn)?;
    }
    out.text(if accepted == offered {
        format!("put {accepted} {} on {queue}", plural(accepted, "item"))
    } else {
        format!("put {accepted} of {offered} items on {queue}")
    });
    out.json(json!({"queue": queue, "offered": offered, "accepted": accepted}));
    if accepted < offered {
        return Err(Failure::refused(format!(
            "{queue} accepted {accepted} of {offered} items: it is full, or an item is larger \
             than its limit"
        )));
    }
    Ok(())
}

fn get(
    server: &str,
    queue: &str,
    max_items: i32,
    timeout_ms: i32,
    out: &mut Output,
) -> Result<(), Failure> {
    let mut conn = Conn::open(server)?;
    let deadline = Instant::now() + Duration::from_millis(timeout_ms as u64);
    let mut taken: Vec<Item> = Vec::new();
    // One call returns at most about 16 MiB, so a large N takes several; each
    // waits only for what is left of the timeout. An empty reply ends it.
    let result = loop {
        let want = max_items - taken.len() as i32;
        let wait = deadline.saturating_duration_since(Instant::now());
        if let Err(f) = conn.allow(wait) {
            break Err(f);
        }
        let wait_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        match conn.call(|c| c.get(queue.to_string(), want, wait_ms, 0)) {
            Ok(items) if items.is_empty() => break Ok(()),
            Ok(items) => {
                taken.extend(items);
                if taken.len() as i32 >= max_items {
                    break Ok(());
                }
            }
            Err(f) => break Err(f),
        }
    };
    // Items taken are gone from the server: print them even if a later call failed.
    let data: Vec<&[u8]> = taken
        .iter()
        .map(|i| i.data.as_deref().unwrap_or_default())
        .collect();
    for d in &data {
        out.raw(d);
    }
    out.json(json!({
        "queue": queue,
        "items": data.iter().map(|d| item_json(d)).collect::<Vec<_>>(),
    }));
    result
}

fn set_or_show_status(
    server: &str,
    status: Option<StatusName>,
    out: &mut Output,
) -> Result<(), Failure> {
    let mut conn = Conn::open(server)?;
    if let Some(status) = status {
        conn.call(|c| c.set_status(status.thrift()))?;
    }
    let current = conn.call(|c| c.current_status())?;
    let word = match current {
        Status::UP => "up",
        Status::READ_ONLY => "readonly",
        Status::QUIESCENT => "quiescent",
        Status(other) => {
            return Err(Failure::unreachable(format!(
                "{server} reports an unknown status ({other})"
            )));
        }
    };
    out.text(word);
    match status {
        Some(wanted) => {
            // Said on stderr for people; the JSON says it with two fields.
            if wanted.word() != word && !out.json {
                eprintln!(
                    "kestrel admin: {} takes effect after the server's status_change_grace_period",
                    wanted.word()
                );
            }
            out.json(json!({"status": word, "requested": wanted.word()}));
        }
        None => out.json(json!({"status": word})),
    }
    Ok(())
}

// --- Stats over HTTP ------------------------------------------------------

/// One queue's row of `stats`, from the `q/<name>/…` gauges of `/stats.json`.
#[derive(Default)]
struct QueueRow {
    items: u64,
    bytes: u64,
    open_transactions: u64,
    waiters: u64,
    age_msec: u64,
    journal_size: u64,
}

fn stats(admin: &str, out: &mut Output) -> Result<(), Failure> {
    let report = fetch_stats(admin)?;
    let Some(gauges) = report.get("gauges").and_then(Value::as_object) else {
        return Err(Failure::refused(format!(
            "{admin}/stats.json has no gauges: is it a Kestrel admin port?"
        )));
    };
    let mut queues: BTreeMap<&str, QueueRow> = BTreeMap::new();
    for (key, value) in gauges {
        // Queue names never contain '/', so the last one ends the name.
        let Some((name, field)) = key.strip_prefix("q/").and_then(|k| k.rsplit_once('/')) else {
            continue;
        };
        let value = value.as_u64().unwrap_or(0);
        let row = queues.entry(name).or_default();
        match field {
            "items" => row.items = value,
            "bytes" => row.bytes = value,
            "open_transactions" => row.open_transactions = value,
            "waiters" => row.waiters = value,
            "age_msec" => row.age_msec = value,
            "journal_size" => row.journal_size = value,
            _ => {}
        }
    }
    let mut table = vec![
        [
            "QUEUE",
            "ITEMS",
            "BYTES",
            "OPEN READS",
            "WAITERS",
            "AGE",
            "JOURNAL",
        ]
        .map(String::from),
    ];
    for (name, q) in &queues {
        table.push([
            name.to_string(),
            q.items.to_string(),
            size(q.bytes),
            q.open_transactions.to_string(),
            q.waiters.to_string(),
            age_text(q.age_msec),
            size(q.journal_size),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| {
            table
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &table {
        let mut line = format!("{:<w$}", row[0], w = widths[0]);
        for (cell, w) in row.iter().zip(&widths).skip(1) {
            line.push_str(&format!("  {cell:>w$}"));
        }
        out.text(line);
    }
    out.json(json!({
        "queues": queues.iter().map(|(name, q)| json!({
            "name": name,
            "items": q.items,
            "bytes": q.bytes,
            "open_transactions": q.open_transactions,
            "waiters": q.waiters,
            "age_msec": q.age_msec,
            "journal_size": q.journal_size,
        })).collect::<Vec<_>>(),
    }));
    Ok(())
}

/// `GET /stats.json` from the admin port, parsed.
fn fetch_stats(admin: &str) -> Result<Value, Failure> {
    let url = format!("http://{admin}/stats.json");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(NET_TIMEOUT))
        .timeout_recv_response(Some(NET_TIMEOUT))
        .timeout_recv_body(Some(STATS_BODY_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let http_failure = |e: ureq::Error| match e {
        ureq::Error::Timeout(_) => Failure::unreachable(format!("no reply from {admin} in time")),
        ureq::Error::Io(e) if refused(&e) => {
            Failure::unreachable(format!("cannot connect to {admin}: {e}"))
        }
        ureq::Error::Io(e) => Failure::unreachable(format!("connection to {admin} lost: {e}")),
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
            Failure::unreachable(format!("cannot connect to {admin}: {e}"))
        }
        ureq::Error::Protocol(e) => Failure::unreachable(format!(
            "{admin} does not answer as HTTP (is it the admin port?): {e}"
        )),
        other => Failure::unreachable(format!("{url}: {other}")),
    };
    let mut response = agent.get(&url).call().map_err(http_failure)?;
    let status = response.status();
    let body = response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_string()
        .map_err(http_failure)?;
    if !status.is_success() {
        return Err(Failure::refused(format!(
            "{url} answered {status}: {}",
            body.trim()
        )));
    }
    serde_json::from_str(&body).map_err(|e| {
        Failure::refused(format!(
            "{url} is not Kestrel's stats ({e}): is it the admin port?"
        ))
    })
}

// --- Formatting -------------------------------------------------------------

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

/// Bytes for people: `912 B`, `1.5 KiB`, `3.0 GiB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A duration in milliseconds for people: `381ms`, `12.3s`, `5m03s`,
/// `2h05m`, `3d04h`.
fn age_text(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_read_naturally() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
        assert_eq!(age_text(381), "381ms");
        assert_eq!(age_text(12_345), "12.3s");
        assert_eq!(age_text(303_000), "5m03s");
        assert_eq!(age_text(7_500_000), "2h05m");
        assert_eq!(age_text(273_600_000), "3d04h");
    }

    #[test]
    fn addresses_need_a_port() {
        assert!(host_port("127.0.0.1:2229").is_ok());
        assert!(host_port("[::1]:2229").is_ok());
        assert!(host_port("kestrel-1:2229").is_ok());
        assert!(host_port("127.0.0.1").is_err());
        assert!(host_port(":2229").is_err());
        assert!(host_port("host:port").is_err());
    }

    #[test]
    fn items_in_json_are_lossless() {
        assert_eq!(item_json(b"caf\xc3\xa9"), json!("café"));
        assert_eq!(item_json(b"\xff\x00a"), json!({"hex": "ff0061"}));
    }
}
