//! Any byte stream a client can send on the memcache port, arriving in any
//! pieces, through the memcache codec.
//!
//! - The codec never panics, and between requests it never holds more than
//!   one line or one data block (its limits), whatever it was sent.
//! - How the bytes arrive does not matter: the stream cut into pieces (the
//!   first bytes of the input say where) yields exactly the frames the whole
//!   stream does.
//! - Every request means what it says: written back to the wire, it decodes,
//!   from exactly those bytes, to the same request (a get's options written
//!   in a canonical order, its key being the key of that line). A get's key
//!   is what the client sent: its queue, then any options.
#![no_main]

use std::time::Duration;

use bytes::BytesMut;
use kestrel::protocol::line::Limits;
use kestrel::protocol::memcache::{Frame, GetOptions, McCodec, Request};
use kestrel_fuzz::{pieces, split_header};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

/// Small limits, so that the fuzzer reaches them.
const MAX_LINE: usize = 200;
const MAX_ITEM: usize = 300;

fuzz_target!(|data: &[u8]| {
    let (cuts, stream) = split_header::<8>(data);
    let whole = decode(&[stream]);
    let cut = decode(&pieces(stream, &cuts));
    assert_eq!(
        whole, cut,
        "the same bytes in other pieces decode differently"
    );
    for frame in &whole {
        if let Frame::Request(request) = frame {
            if let Request::Get { key, queue, .. } = request {
                assert!(
                    key == queue || key.starts_with(&format!("{queue}/")),
                    "key {key:?} of queue {queue:?}"
                );
            }
            let wire = encode(request);
            assert_eq!(
                decode(&[&wire]),
                [Frame::Request(canonical(request))],
                "{:?} re-encoded as {:?}",
                request,
                String::from_utf8_lossy(&wire)
            );
        }
    }
});

/// Every frame the codec yields as the pieces arrive, as a connection reads them.
fn decode(pieces: &[&[u8]]) -> Vec<Frame> {
    let mut codec = McCodec::new(Limits {
        max_line: MAX_LINE,
        max_item: MAX_ITEM,
        max_put_items: 0,
        max_put_bytes: 0,
    });
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        while let Some(frame) = codec.decode(&mut buf).expect("the codec never fails") {
            frames.push(frame);
        }
        assert!(
            buf.len() <= MAX_LINE.max(MAX_ITEM + 1),
            "{} bytes held between requests",
            buf.len()
        );
    }
    frames
}

/// The request as a client would write it.
fn encode(request: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    let line = match request {
        Request::Set {
            queue,
            exptime,
            data,
            noreply,
        } => {
            let noreply = if *noreply { " noreply" } else { "" };
            out.extend_from_slice(
                format!("set {queue} 0 {exptime} {}{noreply}\r\n", data.len()).as_bytes(),
            );
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
            return out;
        }
        Request::Get { queue, options, .. } => format!("get {}", get_key(queue, options)),
        Request::Monitor {
            queue,
            timeout,
            max_items,
        } => match max_items {
            Some(max) => format!("monitor {queue} {} {max}", timeout.as_secs()),
            None => format!("monitor {queue} {}", timeout.as_secs()),
        },
        Request::Confirm { queue, count } => format!("confirm {queue} {count}"),
        Request::Delete { queue } => format!("delete {queue}"),
        Request::Flush { queue } => format!("flush {queue}"),
        Request::FlushAll => "flush_all".into(),
        Request::FlushExpired { queue } => format!("flush_expired {queue}"),
        Request::FlushAllExpired => "flush_all_expired".into(),
        Request::Stats => "stats".into(),
        Request::DumpStats { queues } => {
            let mut line = "dump_stats".to_string();
            for q in queues {
                line += " ";
                line += q;
            }
            line
        }
        Request::Version => "version".into(),
        Request::Status { set: None } => "status".into(),
        Request::Status { set: Some(s) } => format!("status {s}"),
        Request::Reload => "reload".into(),
        Request::Shutdown => "shutdown".into(),
        Request::Quit => "quit".into(),
    };
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

/// A get's key with its options in a canonical order.
fn get_key(queue: &str, options: &GetOptions) -> String {
    let mut key = queue.to_string();
    if let Some(t) = options.timeout {
        key += &format!("/t={}", millis(t));
    }
    for (on, name) in [
        (options.open, "open"),
        (options.close, "close"),
        (options.abort, "abort"),
        (options.peek, "peek"),
    ] {
        if on {
            key += "/";
            key += name;
        }
    }
    key
}

/// The request as [`encode`] writes it: a get's key in canonical form.
fn canonical(request: &Request) -> Request {
    match request {
        Request::Get { queue, options, .. } => Request::Get {
            key: get_key(queue, options),
            queue: queue.clone(),
            options: *options,
        },
        other => other.clone(),
    }
}

fn millis(d: Duration) -> u128 {
    d.as_millis()
}
