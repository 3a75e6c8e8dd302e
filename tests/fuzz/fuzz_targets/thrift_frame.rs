//! Any frame a client can send: decoding never panics and never allocates more
//! than a small multiple of the frame's size (libFuzzer's -rss_limit_mb and -malloc_limit_mb
//! catch an allocation sized from a wire length).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    match kestrel::protocol::thrift::decode_frame(frame) {
        Ok(_command) => {}
        Err(reply) => assert!(reply.len() >= 4),
    }
});
