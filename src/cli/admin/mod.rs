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

use std::ffi::OsString;
use std::io::{self, BufRead, Write};
use std::os::unix::ffi::OsStringExt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

mod conn;
mod stats;

use conn::Conn;
use stats::{age_text, plural, size, stats};

use crate::protocol::thrift::generated::{Item, QueueInfo, Status, TKestrelSyncClient};

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
/// `--json` never alters an item a get has removed (nor one `dump-journal`
/// shows).
pub(super) fn item_json(data: &[u8]) -> Value {
    match std::str::from_utf8(data) {
        Ok(text) => Value::String(text.to_string()),
        Err(_) => {
            let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
            json!({ "hex": hex })
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
