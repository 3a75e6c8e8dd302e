//! Puts and gets 64-byte items against a server and prints the round trips
//! per second:
//!
//!     cargo run -p kestrel-client --release --example roundtrip -- 127.0.0.1:2229 5

use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let server = args.next().unwrap_or_else(|| "127.0.0.1:2229".into());
    let seconds: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let mut client =
        kestrel_client::Client::new([server.as_str()], Default::default()).expect("server address");
    client.flush("client_roundtrip").expect("server reachable");
    let item = vec![b'x'; 64];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs_f64(seconds) {
        client
            .put("client_roundtrip", std::slice::from_ref(&item), None)
            .expect("put");
        let got = client
            .get("client_roundtrip", 1, Duration::ZERO)
            .expect("get");
        assert_eq!(got.len(), 1);
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    println!(
        "rust client: {n} round trips (put + get, 64 B) in {seconds} s: {rate:.0} round trips/s"
    );
}
