//! The Thrift codec: steps 1 and 3 of a call (see the adapter's top
//! comment), both run by the generated `process_<method>` functions:
//! [`decode`] records the call in the frame as a typed [`Command`],
//! [`encode`] writes an [`Outcome`] as the method's reply (over a canned
//! call of the method, so the arguments are not decoded twice). The one
//! reply written by hand is a successful `get`'s, the hot one, held byte for
//! byte to the generated encoding by a test. No I/O, nothing from the
//! service; a frame that holds no executable call is answered here, with a
//! `TApplicationException` that says why.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use thrift::protocol::{
    TBinaryOutputProtocol, TFieldIdentifier, TInputProtocol, TListIdentifier, TMessageIdentifier,
    TMessageType, TOutputProtocol, TSetIdentifier, TStructIdentifier, TType,
};
use thrift::{ApplicationError, ApplicationErrorKind};

use super::generated::{Item, KestrelSyncHandler, QueueInfo, Status, TKestrelProcessFunctions};
use super::input::FrameInput;

/// A call, decoded from the wire by generated code.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Put {
        queue: String,
        items: Vec<Vec<u8>>,
        expiration_msec: i32,
    },
    Get {
        queue: String,
        max_items: i32,
        timeout_msec: i32,
        auto_abort_msec: i32,
    },
    Confirm {
        queue: String,
        ids: BTreeSet<i64>,
    },
    Abort {
        queue: String,
        ids: BTreeSet<i64>,
    },
    Peek {
        queue: String,
    },
    FlushQueue {
        queue: String,
    },
    FlushAllQueues,
    DeleteQueue {
        queue: String,
    },
    CurrentStatus,
    SetStatus {
        status: Status,
    },
    GetVersion,
}

impl Command {
    /// Whether this is an admin call (`protocol_admin_commands`).
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Command::FlushAllQueues | Command::DeleteQueue { .. } | Command::SetStatus { .. }
        )
    }
}

/// An item a `get` returns: its data as the queue holds it (no copy), and
/// its id (0 unless opened with a deadline).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub data: Bytes,
    pub id: i64,
}

/// What a call's reply carries.
#[derive(Debug)]
pub enum Outcome {
    Count(thrift::Result<i32>),
    Items(thrift::Result<Vec<Delivery>>),
    Info(thrift::Result<QueueInfo>),
    Done(thrift::Result<()>),
    Status(thrift::Result<Status>),
    Version(thrift::Result<String>),
}

impl Outcome {
    /// Items the reply carries (to tell a long encoding from a short one).
    pub fn items(&self) -> usize {
        match self {
            Outcome::Items(Ok(items)) => items.len(),
            _ => 0,
        }
    }
}

/// Runs the generated processing function of the named method.
fn dispatch<H: KestrelSyncHandler>(
    handler: &H,
    ident: &TMessageIdentifier,
    i: &mut dyn TInputProtocol,
    o: &mut dyn TOutputProtocol,
) -> Option<thrift::Result<()>> {
    type P = TKestrelProcessFunctions;
    let seq = ident.sequence_number;
    Some(match ident.name.as_str() {
        "put" => P::process_put(handler, seq, i, o),
        "get" => P::process_get(handler, seq, i, o),
        "confirm" => P::process_confirm(handler, seq, i, o),
        "abort" => P::process_abort(handler, seq, i, o),
        "peek" => P::process_peek(handler, seq, i, o),
        "flush_queue" => P::process_flush_queue(handler, seq, i, o),
        "flush_all_queues" => P::process_flush_all_queues(handler, seq, i, o),
        "delete_queue" => P::process_delete_queue(handler, seq, i, o),
        "current_status" => P::process_current_status(handler, seq, i, o),
        "set_status" => P::process_set_status(handler, seq, i, o),
        "get_version" => P::process_get_version(handler, seq, i, o),
        _ => return None,
    })
}

/// Step 1's handler: records the arguments, answers with placeholders that
/// are thrown away.
#[derive(Default)]
struct Recorder(RefCell<Option<Command>>);

impl Recorder {
    fn record<T: Default>(&self, command: Command) -> thrift::Result<T> {
        *self.0.borrow_mut() = Some(command);
        Ok(T::default())
    }
}

impl KestrelSyncHandler for Recorder {
    fn handle_put(
        &self,
        queue: String,
        items: Vec<Vec<u8>>,
        expiration_msec: i32,
    ) -> thrift::Result<i32> {
        self.record(Command::Put {
            queue,
            items,
            expiration_msec,
        })
    }
    fn handle_get(
        &self,
        queue: String,
        max_items: i32,
        timeout_msec: i32,
        auto_abort_msec: i32,
    ) -> thrift::Result<Vec<Item>> {
        self.record(Command::Get {
            queue,
            max_items,
            timeout_msec,
            auto_abort_msec,
        })
    }
    fn handle_confirm(&self, queue: String, ids: BTreeSet<i64>) -> thrift::Result<i32> {
        self.record(Command::Confirm { queue, ids })
    }
    fn handle_abort(&self, queue: String, ids: BTreeSet<i64>) -> thrift::Result<i32> {
        self.record(Command::Abort { queue, ids })
    }
    fn handle_peek(&self, queue: String) -> thrift::Result<QueueInfo> {
        self.record(Command::Peek { queue })
    }
    fn handle_flush_queue(&self, queue: String) -> thrift::Result<()> {
        self.record(Command::FlushQueue { queue })
    }
    fn handle_flush_all_queues(&self) -> thrift::Result<()> {
        self.record(Command::FlushAllQueues)
    }
    fn handle_delete_queue(&self, queue: String) -> thrift::Result<()> {
        self.record(Command::DeleteQueue { queue })
    }
    fn handle_current_status(&self) -> thrift::Result<Status> {
        self.record::<()>(Command::CurrentStatus)
            .map(|()| Status::NOT_CONFIGURED)
    }
    fn handle_set_status(&self, status: Status) -> thrift::Result<()> {
        self.record(Command::SetStatus { status })
    }
    fn handle_get_version(&self) -> thrift::Result<String> {
        self.record(Command::GetVersion)
    }
}

/// The IDL's methods and their arguments (field id, type).
const METHODS: &[(&str, &[(i16, TType)])] = &[
    (
        "put",
        &[(1, TType::String), (2, TType::List), (3, TType::I32)],
    ),
    (
        "get",
        &[
            (1, TType::String),
            (2, TType::I32),
            (3, TType::I32),
            (4, TType::I32),
        ],
    ),
    ("confirm", &[(1, TType::String), (2, TType::Set)]),
    ("abort", &[(1, TType::String), (2, TType::Set)]),
    ("peek", &[(1, TType::String)]),
    ("flush_queue", &[(1, TType::String)]),
    ("flush_all_queues", &[]),
    ("delete_queue", &[(1, TType::String)]),
    ("current_status", &[]),
    ("set_status", &[(1, TType::I32)]),
    ("get_version", &[]),
];

/// A call of `method` with every argument present and empty (an empty
/// string or container, zero), made once: what [`encode`] hands the
/// generated function in place of the real arguments.
fn canned_call(method: &str) -> Option<&'static [u8]> {
    static CANNED: OnceLock<Vec<(&'static str, Vec<u8>)>> = OnceLock::new();
    let all = CANNED.get_or_init(|| {
        METHODS
            .iter()
            .map(|&(name, args)| (name, write_call(name, args)))
            .collect()
    });
    all.iter()
        .find(|(name, _)| *name == method)
        .map(|(_, call)| call.as_slice())
}

fn write_call(name: &str, args: &[(i16, TType)]) -> Vec<u8> {
    let mut call = Vec::new();
    let mut o = TBinaryOutputProtocol::new(&mut call, true);
    let written = (|| -> thrift::Result<()> {
        o.write_message_begin(&TMessageIdentifier::new(name, TMessageType::Call, 0))?;
        o.write_struct_begin(&TStructIdentifier::new("args"))?;
        for &(id, ty) in args {
            o.write_field_begin(&TFieldIdentifier::new("arg", ty, id))?;
            match ty {
                TType::String => o.write_string("")?,
                TType::List => {
                    o.write_list_begin(&TListIdentifier::new(TType::String, 0))?;
                    o.write_list_end()?;
                }
                TType::Set => {
                    o.write_set_begin(&TSetIdentifier::new(TType::I64, 0))?;
                    o.write_set_end()?;
                }
                _ => o.write_i32(0)?,
            }
            o.write_field_end()?;
        }
        o.write_field_stop()?;
        o.write_struct_end()?;
        o.write_message_end()
    })();
    written.expect("writing into memory cannot fail");
    call
}

/// Step 3's handler: returns the outcome of the executed command.
struct Replier(RefCell<Option<Outcome>>);

fn mismatch<T>() -> thrift::Result<T> {
    Err(thrift::Error::Application(ApplicationError::new(
        ApplicationErrorKind::InternalError,
        "reply does not match the call",
    )))
}

macro_rules! reply_with {
    ($self:ident, $variant:ident) => {
        match $self.0.borrow_mut().take() {
            Some(Outcome::$variant(result)) => result,
            _ => mismatch(),
        }
    };
}

impl KestrelSyncHandler for Replier {
    fn handle_put(&self, _: String, _: Vec<Vec<u8>>, _: i32) -> thrift::Result<i32> {
        reply_with!(self, Count)
    }
    fn handle_get(&self, _: String, _: i32, _: i32, _: i32) -> thrift::Result<Vec<Item>> {
        reply_with!(self, Items).map(|items| {
            items
                .into_iter()
                .map(|d| Item::new(d.data.to_vec(), d.id))
                .collect()
        })
    }
    fn handle_confirm(&self, _: String, _: BTreeSet<i64>) -> thrift::Result<i32> {
        reply_with!(self, Count)
    }
    fn handle_abort(&self, _: String, _: BTreeSet<i64>) -> thrift::Result<i32> {
        reply_with!(self, Count)
    }
    fn handle_peek(&self, _: String) -> thrift::Result<QueueInfo> {
        reply_with!(self, Info)
    }
    fn handle_flush_queue(&self, _: String) -> thrift::Result<()> {
        reply_with!(self, Done)
    }
    fn handle_flush_all_queues(&self) -> thrift::Result<()> {
        reply_with!(self, Done)
    }
    fn handle_delete_queue(&self, _: String) -> thrift::Result<()> {
        reply_with!(self, Done)
    }
    fn handle_current_status(&self) -> thrift::Result<Status> {
        reply_with!(self, Status)
    }
    fn handle_set_status(&self, _: Status) -> thrift::Result<()> {
        reply_with!(self, Done)
    }
    fn handle_get_version(&self) -> thrift::Result<String> {
        reply_with!(self, Version)
    }
}

/// Appends one reply frame to `out`: `write` writes the message, and its
/// 4-byte length is filled in after.
fn write_frame(out: &mut BytesMut, write: impl FnOnce(&mut dyn TOutputProtocol)) {
    let start = out.len();
    out.put_u32(0);
    write(&mut TBinaryOutputProtocol::new((&mut *out).writer(), true));
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a `TApplicationException` reply to `out`.
fn write_exception(
    out: &mut BytesMut,
    ident: &TMessageIdentifier,
    kind: ApplicationErrorKind,
    message: String,
) {
    let error = thrift::Error::Application(ApplicationError::new(kind, message));
    // Writing into memory cannot fail.
    write_frame(out, |o| {
        let _ = thrift::server::handle_process_result(ident, Err(error), o);
    });
}

/// A decoding error's own message (thrift's `Display` prints only its kind).
fn describe(e: &thrift::Error) -> String {
    match e {
        thrift::Error::Protocol(p) => p.message.clone(),
        thrift::Error::Application(a) => a.message.clone(),
        other => other.to_string(),
    }
}

/// Step 1 over a frame: either a command to execute, or `None` when the
/// frame could not be decoded or named no method; its reply is then in `out`.
pub fn decode(frame: &[u8], out: &mut BytesMut) -> Option<Command> {
    let mut input = FrameInput::new(frame);
    let ident = match input.read_message_begin() {
        Ok(ident) => ident,
        Err(e) => {
            let unnamed = TMessageIdentifier::new("", TMessageType::Exception, 0);
            let message = format!("unreadable message header: {}", describe(&e));
            write_exception(out, &unnamed, ApplicationErrorKind::ProtocolError, message);
            return None;
        }
    };
    if ident.message_type != TMessageType::Call {
        let message = format!("expected a call, got a {:?} message", ident.message_type);
        write_exception(
            out,
            &ident,
            ApplicationErrorKind::InvalidMessageType,
            message,
        );
        return None;
    }
    let recorder = Recorder::default();
    // The placeholder reply the recorder causes is thrown away.
    let mut discard = TBinaryOutputProtocol::new(std::io::sink(), true);
    match dispatch(&recorder, &ident, &mut input, &mut discard) {
        Some(Ok(())) => {
            let command = recorder.0.into_inner();
            if command.is_none() {
                let message = "call not recorded".to_string();
                write_exception(out, &ident, ApplicationErrorKind::InternalError, message);
            }
            command
        }
        Some(Err(e)) => {
            tracing::debug!(method = %ident.name, error = %e, "undecodable thrift arguments");
            let message = format!(
                "cannot decode the arguments of {}: {}",
                ident.name,
                describe(&e)
            );
            write_exception(out, &ident, ApplicationErrorKind::ProtocolError, message);
            None
        }
        None => {
            tracing::debug!(method = %ident.name, "unknown thrift method");
            let message = format!("unknown method {}", ident.name);
            write_exception(out, &ident, ApplicationErrorKind::UnknownMethod, message);
            None
        }
    }
}

/// Decodes one frame: the call it carries, or, when it carries none that can
/// be executed, the complete reply frame (an exception) to send instead.
pub fn decode_frame(frame: &[u8]) -> Result<Command, Vec<u8>> {
    let mut reply = BytesMut::new();
    decode(frame, &mut reply).ok_or_else(|| reply.to_vec())
}

/// Step 3 for the call in `frame`: appends the outcome as the method's reply.
///
/// The generated function writes the reply, as it does in any Kestrel
/// server; it reads the method's arguments first, so it is given a canned
/// call of the method (every argument present and empty, see
/// [`canned_call`]) rather than the frame: decoding a put's items a second
/// time only to throw them away was half of a batch put's cost.
pub fn encode(frame: &[u8], outcome: Outcome, out: &mut BytesMut) {
    let Ok(ident) = FrameInput::new(frame).read_message_begin() else {
        unreachable!("step 1 read this same header");
    };
    if let Outcome::Items(Ok(items)) = &outcome {
        write_items(out, &ident, items);
        return;
    }
    encode_generated(&ident, outcome, out);
}

/// The reply to a successful `get`, written directly: what the generated
/// `KestrelGetResult` writes (a test holds the two byte for byte), without
/// copying every item into the generated `Item` and writing it through
/// `io::Write` field by field — that was most of a batch get's cost.
fn write_items(out: &mut BytesMut, ident: &TMessageIdentifier, items: &[Delivery]) {
    const VERSION_1: u32 = 0x8001_0000;
    const REPLY: u32 = 2;
    let (list, stop, i64_type, binary) = (15u8, 0u8, 10u8, 11u8);
    let size: usize = items.iter().map(|i| 18 + i.data.len()).sum();
    out.reserve(4 + 16 + ident.name.len() + 8 + size + 2);
    let start = out.len();
    out.put_u32(0);
    out.put_u32(VERSION_1 | REPLY);
    out.put_u32(ident.name.len() as u32);
    out.put_slice(ident.name.as_bytes());
    out.put_i32(ident.sequence_number);
    // Field 0 (success): a list of Item structs.
    out.put_u8(list);
    out.put_i16(0);
    out.put_u8(12);
    out.put_i32(items.len() as i32);
    for item in items {
        out.put_u8(binary);
        out.put_i16(1);
        out.put_u32(item.data.len() as u32);
        out.put_slice(&item.data);
        out.put_u8(i64_type);
        out.put_i16(2);
        out.put_i64(item.id);
        out.put_u8(stop);
    }
    out.put_u8(stop);
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Step 3 through the generated function of the call's method.
fn encode_generated(ident: &TMessageIdentifier, outcome: Outcome, out: &mut BytesMut) {
    let Some(canned) = canned_call(&ident.name) else {
        unreachable!("step 1 dispatched this method");
    };
    let mut input = FrameInput::new(canned);
    let _ = input.read_message_begin();
    let replier = Replier(RefCell::new(Some(outcome)));
    let start = out.len();
    let mut encoded = false;
    write_frame(out, |o| {
        encoded = matches!(dispatch(&replier, ident, &mut input, o), Some(Ok(())))
    });
    if !encoded {
        out.truncate(start);
        let message = "reply could not be encoded".to_string();
        write_exception(out, ident, ApplicationErrorKind::InternalError, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_has_a_canned_call_that_the_generated_code_accepts() {
        for &(name, _) in METHODS {
            let canned = canned_call(name).unwrap();
            let mut reply = BytesMut::new();
            assert!(decode(canned, &mut reply).is_some(), "{name}: {reply:?}");
        }
        // And nothing dispatches that has no canned call.
        let ident = TMessageIdentifier::new("nonesuch", TMessageType::Call, 0);
        let mut input = FrameInput::new(&[]);
        let mut sink = TBinaryOutputProtocol::new(std::io::sink(), true);
        assert!(dispatch(&Recorder::default(), &ident, &mut input, &mut sink).is_none());
        assert!(canned_call("nonesuch").is_none());
    }

    #[test]
    fn a_get_reply_is_written_as_the_generated_code_writes_it() {
        let ident = TMessageIdentifier::new("get", TMessageType::Call, 77);
        for items in [
            vec![],
            vec![Delivery {
                data: Bytes::new(),
                id: 0,
            }],
            vec![
                Delivery {
                    data: Bytes::from_static(b"first"),
                    id: i64::MAX,
                },
                Delivery {
                    data: Bytes::from(vec![0xff; 300]),
                    id: -1,
                },
            ],
        ] {
            let (mut direct, mut generated) = (BytesMut::new(), BytesMut::new());
            write_items(&mut direct, &ident, &items);
            encode_generated(&ident, Outcome::Items(Ok(items)), &mut generated);
            assert_eq!(direct, generated);
        }
    }

    /// METHODS names the IDL's methods, with their argument ids, in order.
    #[test]
    fn methods_match_the_idl() {
        let idl =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/idl/kestrel.thrift"))
                .unwrap();
        let service = idl.split("service Kestrel").nth(1).unwrap();
        let from_idl: Vec<(String, Vec<i16>)> = service
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('/') && !l.starts_with('*'))
            .filter_map(|l| {
                let (head, args) = l.split_once('(')?;
                let args = args.split_once(')')?.0;
                let ids = args
                    .split(',')
                    .filter(|a| !a.trim().is_empty())
                    .map(|a| a.trim().split(':').next().unwrap().trim().parse().unwrap())
                    .collect();
                Some((head.split_whitespace().last()?.to_string(), ids))
            })
            .collect();
        let table: Vec<(String, Vec<i16>)> = METHODS
            .iter()
            .map(|(m, args)| (m.to_string(), args.iter().map(|a| a.0).collect()))
            .collect();
        assert_eq!(table, from_idl);
    }

    fn call(name: &str, body: impl FnOnce(&mut TBinaryOutputProtocol<&mut Vec<u8>>)) -> Vec<u8> {
        let mut buf = Vec::new();
        {
            let mut o = TBinaryOutputProtocol::new(&mut buf, true);
            o.write_message_begin(&TMessageIdentifier::new(name, TMessageType::Call, 1))
                .unwrap();
            o.write_struct_begin(&TStructIdentifier::new("args"))
                .unwrap();
            body(&mut o);
            o.write_field_stop().unwrap();
        }
        buf
    }

    fn decoded(frame: &[u8]) -> (Option<Command>, Vec<u8>) {
        match decode_frame(frame) {
            Ok(command) => (Some(command), Vec::new()),
            Err(reply) => (None, reply),
        }
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    #[test]
    fn decodes_a_get_without_its_defaulted_arguments() {
        let frame = call("get", |o| {
            o.write_field_begin(&TFieldIdentifier::new("queue_name", TType::String, 1))
                .unwrap();
            o.write_string("jobs").unwrap();
            o.write_field_begin(&TFieldIdentifier::new("max_items", TType::I32, 2))
                .unwrap();
            o.write_i32(3).unwrap();
        });
        let (command, _) = decoded(&frame);
        assert_eq!(
            command,
            Some(Command::Get {
                queue: "jobs".into(),
                max_items: 3,
                timeout_msec: 0,
                auto_abort_msec: 0
            })
        );
    }

    #[test]
    fn unknown_methods_and_bad_arguments_get_exceptions() {
        let (command, reply) = decoded(&call("__can__finagle__trace__v3__", |_| {}));
        assert!(command.is_none());
        assert!(contains(
            &reply,
            "unknown method __can__finagle__trace__v3__"
        ));

        // get without its required queue name.
        let (command, reply) = decoded(&call("get", |_| {}));
        assert!(command.is_none());
        assert!(contains(&reply, "cannot decode the arguments of get"));

        let (command, reply) = decoded(&[0x80, 0x01, 0x00, 0x01, 0x7f, 0xff, 0xff, 0xff]);
        assert!(command.is_none());
        assert!(contains(&reply, "unreadable message header"));
    }

    #[test]
    fn hostile_lengths_are_refused_before_allocation() {
        // The 31-byte frame that aborts thrift 0.17's own protocol reader.
        let frame = call("put", |o| {
            o.write_field_begin(&TFieldIdentifier::new("items", TType::List, 2))
                .unwrap();
            o.write_byte(11).unwrap();
            o.write_i32(0x7fff_ffff).unwrap();
        });
        let (command, reply) = decoded(&frame);
        assert!(command.is_none());
        assert!(
            contains(&reply, "does not fit"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
    }
}
