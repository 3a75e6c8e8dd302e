//! Any byte stream a client can send on the text port, arriving in any
//! pieces, through the text codec.
//!
//! - The codec never panics, and between requests it never holds more than
//!   one line (its limits), whatever it was sent.
//! - How the bytes arrive does not matter: the stream cut into pieces (the
//!   first bytes of the input say where) yields exactly the frames the whole
//!   stream does (this covers the codec's memory of how far it has scanned).
//! - Every request means what it says: written back to the wire, it decodes,
//!   from exactly those bytes, to the same request.
#![no_main]

use bytes::BytesMut;
use kestrel::protocol::line::Limits;
use kestrel::protocol::text::{Frame, Request, TextCodec};
use kestrel_fuzz::{pieces, split_header};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

/// Small limits, so that the fuzzer reaches them.
const LIMITS: Limits = Limits {
    max_line: 200,
    max_item: 300,
    max_put_items: 8,
    max_put_bytes: 1000,
};

fuzz_target!(|data: &[u8]| {
    let (cuts, stream) = split_header::<8>(data);
    let whole = decode(LIMITS, &[stream]);
    let cut = decode(LIMITS, &pieces(stream, &cuts));
    assert_eq!(
        whole, cut,
        "the same bytes in other pieces decode differently"
    );
    for frame in &whole {
        if let Frame::Request(request) = frame {
            let wire = encode(request);
            // Roomier limits: a status word of invalid UTF-8 comes back
            // longer (each bad byte a U+FFFD).
            let roomy = Limits {
                max_line: 4 * LIMITS.max_line,
                ..LIMITS
            };
            assert_eq!(
                decode(roomy, &[&wire]),
                [Frame::Request(request.clone())],
                "{:?} re-encoded as {:?}",
                request,
                String::from_utf8_lossy(&wire)
            );
        }
    }
});

/// Every frame the codec yields as the pieces arrive, as a connection reads them.
fn decode(limits: Limits, pieces: &[&[u8]]) -> Vec<Frame> {
    let mut codec = TextCodec::new(limits);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        while let Some(frame) = codec.decode(&mut buf).expect("the codec never fails") {
            frames.push(frame);
        }
        assert!(
            buf.len() <= limits.max_line.max(limits.max_item),
            "{} bytes held between requests",
            buf.len()
        );
    }
    frames
}

/// The request as a client would write it. Lines end in CRLF, so a `\r`
/// that ends an argument survives (the codec strips one); a line whose last
/// argument ends in `:` gets another, as the codec strips one.
fn encode(request: &Request) -> Vec<u8> {
    let line = |text: String| {
        let mut text = text.into_bytes();
        if text.ends_with(b":") {
            text.push(b':');
        }
        text.extend_from_slice(b"\r\n");
        text
    };
    let timeout = |t: &Option<std::time::Duration>| match t {
        Some(t) => format!(" {}", t.as_millis()),
        None => String::new(),
    };
    match request {
        Request::Put {
            queue,
            expires_after,
            items,
        } => {
            let expiry = timeout(expires_after);
            let mut out = format!("put {queue}{expiry}:\r\n").into_bytes();
            for item in items {
                out.extend_from_slice(item);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
            out
        }
        Request::Get { queue, timeout: t } => line(format!("get {queue}{}", timeout(t))),
        Request::Peek { queue, timeout: t } => line(format!("peek {queue}{}", timeout(t))),
        Request::Monitor { queue, timeout } => {
            line(format!("monitor {queue} {}", timeout.as_millis()))
        }
        Request::Confirm { queue, count } => line(format!("confirm {queue} {count}")),
        Request::Flush { queue } => line(format!("flush {queue}")),
        Request::Delete { queue } => line(format!("delete {queue}")),
        Request::Status { set: None } => line("status".into()),
        Request::Status { set: Some(s) } => line(format!("status {s}")),
        Request::Version => line("version".into()),
        Request::Shutdown => line("shutdown".into()),
        Request::Quit => line("quit".into()),
    }
}
