//! The text codec: `\n`-terminated lines (a trailing `\r` is stripped) into
//! typed [`Request`]s, or the `-` reply a refused one earns; a `put` collects
//! its item lines, byte for byte, up to an empty line. No I/O, no queue
//! knowledge; at most one line and one `put` (within [`Limits`]) buffered.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::protocol::connection::Codec;

use crate::protocol::line::{self, Limits};

/// A parsed text-protocol request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Put {
        queue: String,
        /// How long after the put the items expire (never if `None`).
        expires_after: Option<Duration>,
        items: Vec<Bytes>,
    },
    Get {
        queue: String,
        timeout: Option<Duration>,
    },
    Peek {
        queue: String,
        timeout: Option<Duration>,
    },
    Monitor {
        queue: String,
        timeout: Duration,
    },
    Confirm {
        queue: String,
        count: usize,
    },
    Flush {
        queue: String,
    },
    Delete {
        queue: String,
    },
    Status {
        set: Option<String>,
    },
    Version,
    Shutdown,
    Quit,
}

impl Request {
    /// Whether this is an admin command (`protocol_admin_commands`).
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Request::Shutdown | Request::Delete { .. } | Request::Status { set: Some(_) }
        )
    }
}

/// What the codec yields: a request, or the `-` reply to a refused one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Request(Request),
    Error(String),
}

#[derive(Debug)]
enum State {
    Line,
    /// Collecting the item lines of a `put`, up to an empty line.
    Put {
        queue: String,
        expires_after: Option<Duration>,
        items: Vec<Bytes>,
        bytes: usize,
    },
    /// Reading past the rest of a refused `put`; `reason` is the reply.
    RefusedPut {
        reason: String,
    },
    /// Reading past the rest of an over-long line; then `reason` is the reply
    /// (or, inside a refused put, the put carries on).
    LongLine {
        then: Box<State>,
        reason: String,
    },
}

/// Frames text-protocol requests.
#[derive(Debug)]
pub struct TextCodec {
    limits: Limits,
    state: State,
    /// Bytes at the start of the buffer already searched for a line end, so
    /// a long line arriving in pieces is scanned once, not once per piece.
    scanned: usize,
}

impl TextCodec {
    pub fn new(limits: Limits) -> Self {
        TextCodec {
            limits,
            state: State::Line,
            scanned: 0,
        }
    }

    fn line_limit(&self) -> usize {
        match self.state {
            State::Line => self.limits.max_line,
            _ => self.limits.max_item,
        }
    }
}

impl Decoder for TextCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Self::Error> {
        loop {
            if let State::LongLine { .. } = self.state {
                self.scanned = 0;
                let Some(end) = buf.iter().position(|&b| b == b'\n') else {
                    buf.clear();
                    return Ok(None);
                };
                buf.advance(end + 1);
                let State::LongLine { then, reason } =
                    std::mem::replace(&mut self.state, State::Line)
                else {
                    unreachable!()
                };
                match *then {
                    State::Line => return Ok(Some(Frame::Error(reason))),
                    other => self.state = other,
                }
                continue;
            }
            let limit = self.line_limit();
            // The limit counts the line without its ending, LF or CRLF: the
            // window holds `limit` bytes, a `\r` and the `\n`.
            let window = &buf[..buf.len().min(limit + 2)];
            let crlf_at_limit = window.get(limit) == Some(&b'\r');
            let from = self.scanned.min(window.len());
            let Some(end) = window[from..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| from + i)
                .filter(|&end| end <= limit || crlf_at_limit)
            else {
                self.scanned = window.len();
                if buf.len() <= limit || (buf.len() == limit + 1 && crlf_at_limit) {
                    return Ok(None);
                }
                self.scanned = 0;

                let (then, reason) = match std::mem::replace(&mut self.state, State::Line) {
                    State::Line => (State::Line, format!("Line longer than {limit} bytes.")),
                    _ => (
                        State::RefusedPut {
                            reason: format!("Item longer than {limit} bytes."),
                        },
                        String::new(),
                    ),
                };
                self.state = State::LongLine {
                    then: Box::new(then),
                    reason,
                };
                continue;
            };
            self.scanned = 0;
            let mut line = buf.split_to(end + 1);
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            match &mut self.state {
                State::Line => match parse_line(&line) {
                    Ok(Parsed::Request(request)) => return Ok(Some(Frame::Request(request))),
                    Ok(Parsed::PutHeader {
                        queue,
                        expires_after,
                    }) => {
                        self.state = State::Put {
                            queue,
                            expires_after,
                            items: Vec::new(),
                            bytes: 0,
                        };
                    }
                    Err(message) => return Ok(Some(Frame::Error(message))),
                },
                State::Put { items, bytes, .. } => {
                    if line.is_empty() {
                        let State::Put {
                            queue,
                            expires_after,
                            items,
                            ..
                        } = std::mem::replace(&mut self.state, State::Line)
                        else {
                            unreachable!()
                        };
                        return Ok(Some(Frame::Request(Request::Put {
                            queue,
                            expires_after,
                            items,
                        })));
                    }
                    *bytes += line.len();
                    if items.len() >= self.limits.max_put_items
                        || *bytes > self.limits.max_put_bytes
                    {
                        let reason = format!(
                            "Too many items in one put (limit {} items, {} bytes); nothing was stored.",
                            self.limits.max_put_items, self.limits.max_put_bytes
                        );
                        self.state = State::RefusedPut { reason };
                    } else {
                        let len = line.len();
                        items.push(line::take_item(&mut line, len));
                    }
                }
                State::RefusedPut { .. } => {
                    if line.is_empty() {
                        let State::RefusedPut { reason } =
                            std::mem::replace(&mut self.state, State::Line)
                        else {
                            unreachable!()
                        };
                        return Ok(Some(Frame::Error(reason)));
                    }
                }
                State::LongLine { .. } => unreachable!("handled above"),
            }
        }
    }
}

impl Codec for TextCodec {
    fn mid_request(&self) -> bool {
        !matches!(self.state, State::Line)
    }

    fn held(&self) -> usize {
        match &self.state {
            State::Put { bytes, .. } => *bytes,
            _ => 0,
        }
    }
}

enum Parsed {
    Request(Request),
    PutHeader {
        queue: String,
        expires_after: Option<Duration>,
    },
}

fn word(w: &[u8]) -> Result<String, String> {
    line::text(w).ok_or_else(|| "Queue name is not valid UTF-8.".to_string())
}

fn millis(w: &[u8], what: &str) -> Result<Duration, String> {
    line::number(w)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("Error parsing {what}."))
}

/// Parses one command line (without its line end).
fn parse_line(line: &[u8]) -> Result<Parsed, String> {
    let (line, has_colon) = match line.strip_suffix(b":") {
        Some(rest) => (rest, true),
        None => (line, false),
    };
    let Some((command, args)) = line::split_command(line) else {
        return Err("Empty command.".into());
    };
    let args = &args[..];
    let queue = || {
        args.first()
            .ok_or_else(|| "Queue name required.".to_string())
            .and_then(|q| word(q))
    };
    let optional_timeout = || args.get(1).map(|t| millis(t, "timeout")).transpose();
    let request = match &*command {
        "put" => {
            if !has_colon {
                return Err(
                    "put needs a ':' at the end of its line; items follow, one per line, \
                            ended by an empty line."
                        .into(),
                );
            }
            let expires_after = args
                .get(1)
                .map(|t| millis(t, "expiration time"))
                .transpose()?;
            return Ok(Parsed::PutHeader {
                queue: queue()?,
                expires_after,
            });
        }
        "get" => Request::Get {
            queue: queue()?,
            timeout: optional_timeout()?,
        },
        "peek" => Request::Peek {
            queue: queue()?,
            timeout: optional_timeout()?,
        },
        "monitor" => {
            let (Some(q), Some(t)) = (args.first(), args.get(1)) else {
                return Err("Queue name & timeout required.".into());
            };
            Request::Monitor {
                queue: word(q)?,
                timeout: millis(t, "timeout")?,
            }
        }
        "confirm" => {
            let (Some(q), Some(n)) = (args.first(), args.get(1)) else {
                return Err("Queue name & count required.".into());
            };
            let count = line::number(n).ok_or_else(|| "Error parsing count.".to_string())?;
            Request::Confirm {
                queue: word(q)?,
                count,
            }
        }
        "flush" => Request::Flush { queue: queue()? },
        "delete" => Request::Delete { queue: queue()? },
        "status" => Request::Status {
            set: args
                .first()
                .map(|s| String::from_utf8_lossy(s).into_owned()),
        },
        "version" => Request::Version,
        "shutdown" => Request::Shutdown,
        "quit" => Request::Quit,
        _ => return Err(format!("Unknown command: {command}")),
    };
    Ok(Parsed::Request(request))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_line: 64,
            max_item: 32,
            max_put_items: 3,
            max_put_bytes: 1000,
        }
    }

    fn decode_all(input: &[u8]) -> Vec<Frame> {
        let mut codec = TextCodec::new(limits());
        let mut buf = BytesMut::from(input);
        let mut frames = Vec::new();
        while let Some(frame) = codec.decode(&mut buf).unwrap() {
            frames.push(frame);
        }
        frames
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn the_line_limits_count_the_line_without_its_crlf() {
        // Found by the text fuzz target: an item of exactly max_item bytes
        // was stored when it ended in LF and refused when it ended in CRLF.
        let item = "i".repeat(32);
        for end in ["\n", "\r\n"] {
            let input = format!("put q:{end}{item}{end}{end}");
            assert_eq!(
                decode_all(input.as_bytes()),
                [Frame::Request(Request::Put {
                    queue: "q".into(),
                    expires_after: None,
                    items: vec![b(&item)],
                })],
                "{end:?}"
            );
        }
        let long = format!("put q:\r\n{item}i\r\n\r\nversion\r\n");
        assert_eq!(
            decode_all(long.as_bytes()),
            [
                Frame::Error("Item longer than 32 bytes.".into()),
                Frame::Request(Request::Version)
            ]
        );
        let line = format!("get {}\r\n", "q".repeat(60));
        assert!(matches!(
            &decode_all(line.as_bytes())[..],
            [Frame::Request(Request::Get { .. })]
        ));
        let line = format!("get {}\r\n", "q".repeat(61));
        assert_eq!(
            decode_all(line.as_bytes()),
            [Frame::Error("Line longer than 64 bytes.".into())]
        );
    }

    #[test]
    fn input_in_pieces_frames_as_input_at_once() {
        let input = b"put q 500:\r\nab\xffc\r\nsecond\n\nget q 100\nPEEK q\n";
        let mut codec = TextCodec::new(limits());
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for &byte in input.iter() {
            buf.extend_from_slice(&[byte]);
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(frames, decode_all(input));
    }

    #[test]
    fn parses_puts_with_items_byte_for_byte() {
        let frames = decode_all(b"put q 500:\r\nab\xffc\r\nsecond\n\nget q 100\nPEEK q\n");
        assert_eq!(
            frames,
            [
                Frame::Request(Request::Put {
                    queue: "q".into(),
                    expires_after: Some(Duration::from_millis(500)),
                    items: vec![Bytes::from_static(b"ab\xffc"), b("second")],
                }),
                Frame::Request(Request::Get {
                    queue: "q".into(),
                    timeout: Some(Duration::from_millis(100))
                }),
                Frame::Request(Request::Peek {
                    queue: "q".into(),
                    timeout: None
                }),
            ]
        );
    }

    #[test]
    fn refuses_puts_over_the_item_limit_whole() {
        let frames = decode_all(b"put q:\n1\n2\n3\n4\n5\n\nversion\n");
        assert_eq!(frames.len(), 2);
        assert!(
            matches!(&frames[0], Frame::Error(m) if m.starts_with("Too many items in one put"))
        );
        assert_eq!(frames[1], Frame::Request(Request::Version));
    }

    #[test]
    fn refuses_over_long_lines_and_items() {
        let mut input = b"get ".to_vec();
        input.extend(vec![b'x'; 100]);
        input.extend_from_slice(b"\nput q:\n");
        input.extend(vec![b'y'; 40]);
        input.extend_from_slice(b"\nok\n\nversion\n");
        let frames = decode_all(&input);
        assert_eq!(frames[0], Frame::Error("Line longer than 64 bytes.".into()));
        assert_eq!(frames[1], Frame::Error("Item longer than 32 bytes.".into()));
        assert_eq!(frames[2], Frame::Request(Request::Version));
    }

    #[test]
    fn missing_and_bad_arguments_say_what_is_wrong() {
        let error = |line: &str| match decode_all(line.as_bytes()).as_slice() {
            [Frame::Error(m)] => m.clone(),
            other => panic!("{line:?}: {other:?}"),
        };
        assert_eq!(error("get\n"), "Queue name required.");
        assert_eq!(error("monitor q\n"), "Queue name & timeout required.");
        assert_eq!(error("confirm q\n"), "Queue name & count required.");
        assert_eq!(error("confirm q x\n"), "Error parsing count.");
        assert_eq!(error("get q soon\n"), "Error parsing timeout.");
        assert_eq!(error("put q abc:\n"), "Error parsing expiration time.");
        assert_eq!(error("frobnicate q\n"), "Unknown command: frobnicate");
        assert!(error("put q\n").starts_with("put needs a ':'"));
    }
}
