//! Any frame a client can send on the Thrift port, decoded as the server
//! decodes it: by the generated `process_*` functions reading the arguments
//! through the length-checked `FrameInput`.
//!
//! - Decoding never panics and never allocates more than a small multiple of
//!   the frame's size (run with `-malloc_limit_mb`: an allocation sized from
//!   a wire length fails the target).
//! - A frame that decodes to a call means what the generated client would
//!   send for that call: the call written back by the generated client's
//!   argument writers decodes to the same call.
//! - A frame that does not is answered with one well-formed frame holding a
//!   `TApplicationException` with a message.
#![no_main]

use kestrel::protocol::thrift::generated::{KestrelSyncClient, TKestrelSyncClient};
use kestrel::protocol::thrift::codec::{Command, decode_frame};
use libfuzzer_sys::fuzz_target;
use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol, TInputProtocol, TMessageType};

fuzz_target!(|frame: &[u8]| {
    match decode_frame(frame) {
        Ok(command) => {
            let again = decode_frame(&written_by_client(&command));
            assert_eq!(
                again.as_ref(),
                Ok(&command),
                "re-encoded call means something else"
            );
        }
        Err(reply) => check_exception(&reply),
    }
});

/// The message the generated client writes for `command`.
fn written_by_client(command: &Command) -> Vec<u8> {
    let mut wire = Vec::new();
    {
        // The client then waits for a reply: from an empty input it fails,
        // after the call is written.
        let no_reply = TBinaryInputProtocol::new(&[][..], true);
        let out = TBinaryOutputProtocol::new(&mut wire, true);
        let mut client = KestrelSyncClient::new(no_reply, out);
        let c = command.clone();
        let sent = match c {
            Command::Put {
                queue,
                items,
                expiration_msec,
            } => client.put(queue, items, expiration_msec).map(drop),
            Command::Get {
                queue,
                max_items,
                timeout_msec,
                auto_abort_msec,
            } => client
                .get(queue, max_items, timeout_msec, auto_abort_msec)
                .map(drop),
            Command::Confirm { queue, ids } => client.confirm(queue, ids).map(drop),
            Command::Abort { queue, ids } => client.abort(queue, ids).map(drop),
            Command::Peek { queue } => client.peek(queue).map(drop),
            Command::FlushQueue { queue } => client.flush_queue(queue),
            Command::FlushAllQueues => client.flush_all_queues(),
            Command::DeleteQueue { queue } => client.delete_queue(queue),
            Command::CurrentStatus => client.current_status().map(drop),
            Command::SetStatus { status } => client.set_status(status),
            Command::GetVersion => client.get_version().map(drop),
        };
        assert!(sent.is_err(), "a reply was read from nothing");
    }
    wire
}

/// `reply` is one frame: its length, then an exception message with a reason.
fn check_exception(reply: &[u8]) {
    let (len, message) = reply.split_at(4);
    assert_eq!(
        u32::from_be_bytes(len.try_into().unwrap()) as usize,
        message.len(),
        "reply frame length"
    );
    let mut input = TBinaryInputProtocol::new(message, true);
    let ident = input.read_message_begin().expect("reply header");
    assert_eq!(ident.message_type, TMessageType::Exception);
    let error =
        thrift::Error::read_application_error_from_in_protocol(&mut input).expect("exception body");
    assert!(!error.message.is_empty(), "an exception says why");
}
