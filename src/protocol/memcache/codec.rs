//! The memcache codec: frames and parses requests without I/O or queue
//! knowledge: bytes in, typed [`Request`]s (or the error reply a bad request
//! earns) out. It never buffers more than one line (up to `max_line`) or one
//! accepted data block (up to `max_item`); an oversized `set` is refused
//! before its data is read.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::protocol::connection::Codec;
use crate::protocol::line::{self, Limits};

/// Options of a `get`: `queue/t=500/open`, in any order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GetOptions {
    pub timeout: Option<Duration>,
    pub open: bool,
    pub close: bool,
    pub abort: bool,
    pub peek: bool,
}

/// A parsed memcache request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Set {
        queue: String,
        /// As sent: 0 never, under 1,000,000 seconds from now, else a Unix time.
        exptime: i64,
        data: Bytes,
        noreply: bool,
    },
    Get {
        /// The key exactly as sent (`jobs/close/open`), for a reply that
        /// echoes it.
        key: String,
        queue: String,
        options: GetOptions,
    },
    Monitor {
        queue: String,
        timeout: Duration,
        max_items: Option<usize>,
    },
    Confirm {
        queue: String,
        count: usize,
    },
    Delete {
        queue: String,
    },
    Flush {
        queue: String,
    },
    FlushAll,
    FlushExpired {
        queue: String,
    },
    FlushAllExpired,
    Stats,
    DumpStats {
        queues: Vec<String>,
    },
    Version,
    Status {
        set: Option<String>,
    },
    Reload,
    Shutdown,
    Quit,
}

impl Request {
    /// Whether this is an admin command (`protocol_admin_commands`).
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Request::Shutdown
                | Request::Reload
                | Request::FlushAll
                | Request::Delete { .. }
                | Request::Status { set: Some(_) }
        )
    }
}

/// What the codec yields: a request, or the reply to a request it refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Request(Request),
    /// `CLIENT_ERROR <reason>`.
    ClientError(String),
    /// A `set` announcing more than the item limit: refused, and the
    /// connection is closed (what follows the line is data no one will
    /// read, possibly gigabytes of it, and not worth skipping).
    TooLarge {
        limit: usize,
    },
}

/// A `set` line whose data block is still to come.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SetLine {
    queue: String,
    exptime: i64,
    len: usize,
    noreply: bool,
}

/// What a request line turned out to be.
enum Line {
    Request(Request),
    Set(SetLine),
    /// A `set` with a usable length but a bad field: this error is the
    /// reply, and its data is skipped.
    BadSet {
        len: usize,
        reason: String,
    },
}

#[derive(Debug)]
enum State {
    Line,
    Data(SetLine),
    /// Discarding `remaining` bytes of a refused data block (its reply is
    /// already out: a client need not send the data to hear the refusal).
    Skip {
        remaining: usize,
    },
    /// Discarding the rest of an over-long line.
    DiscardLine,
    /// Refused for good: the connection closes after the reply.
    Closed,
}

/// Frames memcache requests, never buffering more than one line (up to
/// `max_line`) or one accepted data block (up to `max_item`).
#[derive(Debug)]
pub struct McCodec {
    max_line: usize,
    max_item: usize,
    state: State,
}

impl McCodec {
    pub fn new(limits: Limits) -> Self {
        McCodec {
            max_line: limits.max_line,
            max_item: limits.max_item,
            state: State::Line,
        }
    }
}

impl Decoder for McCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Self::Error> {
        loop {
            match &mut self.state {
                State::Line => {
                    // The limit counts the line without its ending, LF or
                    // CRLF: the window holds `max_line` bytes, a `\r` and the `\n`.
                    let window = &buf[..buf.len().min(self.max_line + 2)];
                    let crlf_at_limit = window.get(self.max_line) == Some(&b'\r');
                    let Some(end) = window
                        .iter()
                        .position(|&b| b == b'\n')
                        .filter(|&end| end <= self.max_line || crlf_at_limit)
                    else {
                        if buf.len() > self.max_line + usize::from(crlf_at_limit) {
                            self.state = State::DiscardLine;
                            let reason = format!("line longer than {} bytes", self.max_line);
                            return Ok(Some(Frame::ClientError(reason)));
                        }
                        return Ok(None);
                    };
                    // Parsed in place, then stepped over: splitting the
                    // line off would share the buffer (an allocation).
                    let parsed = parse_line(trim_eol(&buf[..=end]));
                    buf.advance(end + 1);
                    match parsed {
                        Ok(Line::Request(request)) => return Ok(Some(Frame::Request(request))),
                        Ok(Line::Set(SetLine { len, .. }) | Line::BadSet { len, .. })
                            if len > self.max_item =>
                        {
                            self.state = State::Closed;
                            return Ok(Some(Frame::TooLarge {
                                limit: self.max_item,
                            }));
                        }
                        Ok(Line::Set(set)) => self.state = State::Data(set),
                        Ok(Line::BadSet { len, reason }) => {
                            self.state = State::Skip {
                                remaining: len.saturating_add(2),
                            };
                            return Ok(Some(Frame::ClientError(reason)));
                        }
                        Err(reason) => return Ok(Some(Frame::ClientError(reason))),
                    }
                }
                State::Data(set) => {
                    let len = set.len;
                    // The block is exactly `len` bytes, then "\r\n": anything
                    // else means the client's count and its data disagree, and
                    // storing either reading of it would store the wrong item.
                    match buf.get(len..len + 2) {
                        None => return Ok(None),
                        Some(b"\r\n") => {}
                        _ => {
                            buf.advance(len);
                            self.state = State::DiscardLine;
                            return Ok(Some(Frame::ClientError("bad data chunk".into())));
                        }
                    }
                    let data = line::take_item(buf, len);
                    buf.advance(2);
                    let State::Data(set) = std::mem::replace(&mut self.state, State::Line) else {
                        unreachable!()
                    };
                    let request = Request::Set {
                        queue: set.queue,
                        exptime: set.exptime,
                        data,
                        noreply: set.noreply,
                    };
                    return Ok(Some(Frame::Request(request)));
                }
                State::Skip { remaining } => {
                    let n = (*remaining).min(buf.len());
                    buf.advance(n);
                    *remaining -= n;
                    if *remaining > 0 {
                        return Ok(None);
                    }
                    self.state = State::Line;
                }
                State::Closed => {
                    buf.clear();
                    return Ok(None);
                }
                State::DiscardLine => match buf.iter().position(|&b| b == b'\n') {
                    Some(end) => {
                        buf.advance(end + 1);
                        self.state = State::Line;
                    }
                    None => {
                        buf.clear();
                        return Ok(None);
                    }
                },
            }
        }
    }
}

impl Codec for McCodec {
    fn mid_request(&self) -> bool {
        !matches!(self.state, State::Line | State::Closed)
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn text(word: &[u8], what: &str) -> Result<String, String> {
    line::text(word).ok_or_else(|| format!("{what} is not valid UTF-8"))
}

fn number<T: std::str::FromStr>(word: Option<&&[u8]>, what: &str) -> Result<T, String> {
    let word = word.ok_or_else(|| format!("missing {what}"))?;
    line::number(word).ok_or_else(|| format!("bad {what} {:?}", String::from_utf8_lossy(word)))
}

fn queue_arg(word: Option<&&[u8]>) -> Result<String, String> {
    text(word.ok_or("missing queue name")?, "queue name")
}

/// Parses one request line (without its line end).
fn parse_line(line: &[u8]) -> Result<Line, String> {
    let Some((command, args)) = line::split_command(line) else {
        return Err("empty command line".into());
    };
    let args = &args[..];
    let request = match &*command {
        "set" => return parse_set(args),
        "get" | "gets" => parse_get(args)?,
        "monitor" => Request::Monitor {
            queue: queue_arg(args.first())?,
            timeout: Duration::from_secs(number(args.get(1), "timeout")?),
            max_items: args
                .get(2)
                .map(|_| number(args.get(2), "max_items"))
                .transpose()?,
        },
        "confirm" => Request::Confirm {
            queue: queue_arg(args.first())?,
            count: number(args.get(1), "count")?,
        },
        "delete" => Request::Delete {
            queue: queue_arg(args.first())?,
        },
        "flush" => Request::Flush {
            queue: queue_arg(args.first())?,
        },
        "flush_all" => Request::FlushAll,
        "flush_expired" => Request::FlushExpired {
            queue: queue_arg(args.first())?,
        },
        "flush_all_expired" => Request::FlushAllExpired,
        "stats" => Request::Stats,
        "dump_stats" => Request::DumpStats {
            queues: args
                .iter()
                .map(|q| text(q, "queue name"))
                .collect::<Result<_, _>>()?,
        },
        "version" => Request::Version,
        "status" => Request::Status {
            set: args.first().map(|s| text(s, "status")).transpose()?,
        },
        "reload" => Request::Reload,
        "shutdown" => Request::Shutdown,
        "quit" => Request::Quit,
        other => return Err(format!("unknown command {other:?}")),
    };
    Ok(Line::Request(request))
}

fn parse_set(args: &[&[u8]]) -> Result<Line, String> {
    let len: usize = number(args.get(3), "byte count")?;
    let fields = || -> Result<SetLine, String> {
        let queue = queue_arg(args.first())?;
        let _flags: u32 = number(args.get(1), "flags")?;
        let exptime: i64 = number(args.get(2), "expiration time")?;
        let noreply = match args.get(4) {
            None => false,
            Some(&b"noreply") => true,
            Some(other) => return Err(format!("unexpected {:?}", String::from_utf8_lossy(other))),
        };
        Ok(SetLine {
            queue,
            exptime,
            len,
            noreply,
        })
    };
    Ok(match fields() {
        Ok(set) => Line::Set(set),
        Err(reason) => Line::BadSet { len, reason },
    })
}

fn parse_get(args: &[&[u8]]) -> Result<Request, String> {
    // Kestrel serves only the first key of a multi-key get.
    let key = text(args.first().ok_or("missing queue name")?, "queue name")?;
    let mut parts = key.split('/');
    let queue = parts.next().unwrap_or_default().to_string();
    if queue.is_empty() {
        return Err("missing queue name".into());
    }
    let mut options = GetOptions::default();
    for option in parts {
        match option {
            "open" => options.open = true,
            "close" => options.close = true,
            "abort" => options.abort = true,
            "peek" => options.peek = true,
            t if t.starts_with("t=") => {
                let ms: u64 = t[2..].parse().map_err(|_| format!("bad timeout {t:?}"))?;
                options.timeout = Some(Duration::from_millis(ms));
            }
            // Kestrel ignores options it does not know.
            _ => {}
        }
    }
    if (options.peek || options.abort) && (options.open || options.close) {
        return Err("peek and abort cannot be combined with open or close".into());
    }
    if options.peek && options.abort {
        return Err("peek and abort cannot be combined".into());
    }
    Ok(Request::Get {
        key,
        queue,
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_line: usize, max_item: usize) -> Limits {
        Limits {
            max_line,
            max_item,
            max_put_items: 0,
            max_put_bytes: 0,
        }
    }

    fn decode_all(input: &[u8], max_item: usize) -> Vec<Frame> {
        let mut codec = McCodec::new(limits(64, max_item));
        let mut buf = BytesMut::from(input);
        let mut frames = Vec::new();
        while let Some(frame) = codec.decode(&mut buf).unwrap() {
            frames.push(frame);
        }
        frames
    }

    fn request(line: &str) -> Request {
        match decode_all(line.as_bytes(), 1024).as_slice() {
            [Frame::Request(r)] => r.clone(),
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    fn client_error(line: &str) -> String {
        match decode_all(line.as_bytes(), 1024).as_slice() {
            [Frame::ClientError(reason)] => reason.clone(),
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    #[test]
    fn parses_sets_with_data_blocks_and_pipelining() {
        let frames = decode_all(
            b"set q 5 0 3\r\nabc\r\nSET q 0 10 2 noreply\nxy\r\nget q\r\n",
            1024,
        );
        assert_eq!(
            frames,
            [
                Frame::Request(Request::Set {
                    queue: "q".into(),
                    exptime: 0,
                    data: Bytes::from_static(b"abc"),
                    noreply: false
                }),
                Frame::Request(Request::Set {
                    queue: "q".into(),
                    exptime: 10,
                    data: Bytes::from_static(b"xy"),
                    noreply: true
                }),
                Frame::Request(Request::Get {
                    key: "q".into(),
                    queue: "q".into(),
                    options: GetOptions::default()
                }),
            ]
        );
    }

    #[test]
    fn the_line_limit_counts_the_line_without_its_crlf() {
        // Found by the memcache fuzz target: a line of exactly the limit was
        // read when it ended in LF and refused when it ended in CRLF.
        let line = format!("get {}", "q".repeat(60));
        for end in ["\n", "\r\n"] {
            assert_eq!(
                request(&format!("{line}{end}")),
                Request::Get {
                    key: "q".repeat(60),
                    queue: "q".repeat(60),
                    options: GetOptions::default()
                },
                "{end:?}"
            );
        }
        let reason = client_error(&format!("{line}q\r\n"));
        assert_eq!(reason, "line longer than 64 bytes");
        // Waiting for the rest of a line at the limit is not refusing it.
        let mut codec = McCodec::new(limits(64, 1024));
        let mut buf = BytesMut::from(format!("{line}\r").as_bytes());
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn data_may_contain_line_ends_and_arrive_in_pieces() {
        let mut codec = McCodec::new(limits(64, 1024));
        let mut buf = BytesMut::new();
        for piece in [&b"set q 0 0 4\r"[..], b"\na\r", b"\nb", b"\r", b"\n"] {
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
            buf.extend_from_slice(piece);
        }
        match codec.decode(&mut buf).unwrap() {
            Some(Frame::Request(Request::Set { data, .. })) => assert_eq!(&data[..], b"a\r\nb"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oversized_sets_end_the_stream_without_buffering() {
        for line in [&b"set q 0 0 10\r\n0123"[..], b"set q bad 0 10\r\n0123"] {
            let mut codec = McCodec::new(limits(64, 4));
            let mut buf = BytesMut::from(line);
            assert_eq!(
                codec.decode(&mut buf).unwrap(),
                Some(Frame::TooLarge { limit: 4 })
            );
            buf.extend_from_slice(b"456789\r\nversion\r\n");
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
            assert!(buf.is_empty(), "nothing after the refusal is kept");
        }
    }

    #[test]
    fn bad_input_gets_a_reason() {
        assert_eq!(client_error("add q 0 0 1\r\n"), "unknown command \"add\"");
        assert_eq!(client_error("set q 0 0\r\n"), "missing byte count");
        assert_eq!(client_error("set q 0 0 x\r\n"), "bad byte count \"x\"");
        assert_eq!(client_error("confirm q\r\n"), "missing count");
        assert_eq!(client_error("monitor q soon\r\n"), "bad timeout \"soon\"");
        assert_eq!(client_error("get\r\n"), "missing queue name");
        assert_eq!(client_error("get /open\r\n"), "missing queue name");
        assert_eq!(client_error("get q/t=abc\r\n"), "bad timeout \"t=abc\"");
        assert_eq!(client_error("\r\n"), "empty command line");
        // A bad field with a usable length: the data block is skipped.
        assert_eq!(
            decode_all(b"set q x 0 1\r\nz\r\nversion\r\n", 1024),
            [
                Frame::ClientError("bad flags \"x\"".into()),
                Frame::Request(Request::Version)
            ]
        );
    }

    #[test]
    fn forbidden_option_combinations() {
        for key in [
            "q/peek/open",
            "q/peek/close",
            "q/abort/open",
            "q/close/abort",
            "q/peek/abort",
        ] {
            assert!(
                client_error(&format!("get {key}\r\n")).contains("cannot be combined"),
                "{key}"
            );
        }
        let opts = |key: &str| match request(&format!("get {key}\r\n")) {
            Request::Get { options, .. } => options,
            other => panic!("{other:?}"),
        };
        // The key is kept as sent, options and all; the queue is bare.
        match request("get q/close/open/t=5 other\r\n") {
            Request::Get { key, queue, .. } => {
                assert_eq!((key.as_str(), queue.as_str()), ("q/close/open/t=5", "q"))
            }
            other => panic!("{other:?}"),
        }
        let o = opts("q/t=500/close/open/whatever");
        assert_eq!(
            (o.timeout, o.open, o.close),
            (Some(Duration::from_millis(500)), true, true)
        );
        assert!(opts("q/peek/t=1").peek);
    }

    #[test]
    fn long_lines_are_refused_and_the_stream_resyncs() {
        let mut input = vec![b'x'; 100];
        input.extend_from_slice(b" more\r\nversion\r\n");
        assert_eq!(
            decode_all(&input, 1024),
            [
                Frame::ClientError("line longer than 64 bytes".into()),
                Frame::Request(Request::Version)
            ]
        );
    }

    #[test]
    fn a_data_block_must_end_exactly_at_its_length_with_crlf() {
        for input in [
            &b"set q 0 0 1\r\nabc\r\nversion\r\n"[..],
            // One byte short: "d1\r" would be stored as the item.
            b"set q 0 0 3\r\nd1\r\nversion\r\n",
            // A bare LF after the data is not the terminator either.
            b"set q 0 0 2\r\nd1\nversion\r\n",
        ] {
            assert_eq!(
                decode_all(input, 1024),
                [
                    Frame::ClientError("bad data chunk".into()),
                    Frame::Request(Request::Version)
                ],
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
