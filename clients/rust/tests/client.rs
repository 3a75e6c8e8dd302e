//! The client against real servers on loopback, started by the workspace's
//! test harness (tests/common: the `kestrel` binary from `KESTREL_BIN` or the
//! workspace's build).

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Server;
use kestrel_client::{Client, Config, ConsumeError, Error};

fn client(servers: &[SocketAddr]) -> Client {
    Client::new(
        servers.iter().copied(),
        Config {
            retry_after: Duration::from_millis(200),
            ..Config::default()
        },
    )
    .unwrap()
}

#[test]
fn binary_items_round_trip() {
    let server = Server::start();
    let mut c = client(&[server.thrift]);
    let item = vec![0u8, 255, 10, 13, 0, 1];
    assert_eq!(
        c.put("rt", &[item.clone(), b"second".to_vec()], None)
            .unwrap(),
        2
    );
    assert_eq!(
        c.get("rt", 5, Duration::ZERO).unwrap(),
        [item, b"second".to_vec()]
    );
    assert_eq!(c.peek("rt").unwrap().items, Some(0));
    assert!(!c.version().unwrap().is_empty());
    assert_eq!(c.status().unwrap(), kestrel_client::Status::UP);
}

#[test]
fn a_get_times_out_empty() {
    let server = Server::start();
    let mut c = client(&[server.thrift]);
    let start = Instant::now();
    assert!(
        c.get("empty", 1, Duration::from_millis(300))
            .unwrap()
            .is_empty()
    );
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[test]
fn consume_confirms_what_the_handler_handled_and_puts_back_what_failed() {
    let server = Server::start();
    let mut c = client(&[server.thrift]);
    c.put("work", &[b"one".to_vec(), b"two".to_vec()], None)
        .unwrap();
    // The handler fails on the first item: it stays in the queue.
    let failed = c.consume("work", 1, Duration::ZERO, Duration::from_secs(30), |_| {
        Err("boom")
    });
    assert!(matches!(failed, Err(ConsumeError::Handler("boom"))));
    let info = c.peek("work").unwrap();
    assert_eq!((info.items, info.open_transactions), (Some(2), Some(0)));
    // Handled items are confirmed: gone for good.
    let mut seen = Vec::new();
    let handled = c
        .consume("work", 5, Duration::ZERO, Duration::from_secs(30), |item| {
            seen.push(item.to_vec());
            Ok::<(), ()>(())
        })
        .unwrap();
    assert_eq!((handled, seen), (2, vec![b"one".to_vec(), b"two".to_vec()]));
    let info = c.peek("work").unwrap();
    assert_eq!((info.items, info.open_transactions), (Some(0), Some(0)));
    // Nothing to consume: nothing handled.
    let nothing = c.consume("work", 1, Duration::ZERO, Duration::from_secs(1), |_| {
        Ok::<(), ()>(())
    });
    assert_eq!(nothing.unwrap(), 0);
}

#[test]
fn a_confirm_that_comes_after_the_deadline_is_reported_not_confirmed() {
    let server = Server::start();
    let mut c = client(&[server.thrift]);
    let mut watch = client(&[server.thrift]);
    c.put("late", &[b"slow".to_vec()], None).unwrap();
    // The handler outlives the item's deadline: the server puts the item
    // back before the confirm arrives, which then confirms nothing.
    let result = c.consume(
        "late",
        1,
        Duration::ZERO,
        Duration::from_millis(100),
        |_| {
            let start = Instant::now();
            while watch.peek("late").unwrap().open_transactions != Some(0) {
                assert!(start.elapsed() < Duration::from_secs(10), "never aborted");
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok::<(), ()>(())
        },
    );
    match result {
        Err(ConsumeError::Client(Error::NotConfirmed {
            confirmed: 0,
            sent: 1,
            ..
        })) => {}
        other => panic!("expected NotConfirmed, got {other:?}"),
    }
    // The item is back, and a timely consume confirms it for good.
    let handled = c
        .consume("late", 1, Duration::ZERO, Duration::from_secs(30), |item| {
            assert_eq!(item, b"slow");
            Ok::<(), ()>(())
        })
        .unwrap();
    assert_eq!(handled, 1);
    let info = c.peek("late").unwrap();
    assert_eq!((info.items, info.open_transactions), (Some(0), Some(0)));
}

#[test]
fn with_two_servers_one_stopped_mid_run_nothing_acknowledged_is_lost() {
    let dir_a = tempfile::tempdir().unwrap();
    let a = Server::start_in(dir_a.path(), &[]);
    let b = Server::start();
    let mut c = client(&[a.thrift, b.thrift]);
    let mut acked = Vec::new();
    let mut a = Some(a);
    for i in 0..200 {
        if i == 100 {
            // Stop server A: the client carries on with B.
            a.take().unwrap().stop();
        }
        let item = format!("item-{i:03}").into_bytes();
        if c.put("two", std::slice::from_ref(&item), None).unwrap() == 1 {
            acked.push(item);
        }
    }
    assert_eq!(
        acked.len(),
        200,
        "every put was acknowledged by one server or the other"
    );
    // Gets keep working with A down.
    let taken = c.get("two", 1, Duration::from_millis(500)).unwrap();
    assert_eq!(taken.len(), 1);
    // Bring A back (new port) and collect everything from both.
    let a = Server::start_in(dir_a.path(), &[]);
    let mut all = Vec::new();
    let mut reader = client(&[a.thrift, b.thrift]);
    loop {
        let got = reader.get("two", 100, Duration::ZERO).unwrap();
        if got.is_empty() {
            break;
        }
        all.extend(got);
    }
    // Every acknowledged item exactly once: found, or taken above.
    all.extend(taken);
    all.sort();
    acked.sort();
    assert_eq!(all, acked);
}

#[test]
fn a_server_that_refuses_reads_does_not_stop_gets_from_the_others() {
    let (a, b) = (Server::start(), Server::start());
    client(&[b.thrift])
        .put("q", &[b"one".to_vec(), b"two".to_vec()], None)
        .unwrap();
    client(&[a.thrift])
        .set_status(kestrel_client::Status::QUIESCENT)
        .unwrap();
    // Round-robin: each server comes first once; A refuses, B answers.
    let mut c = client(&[a.thrift, b.thrift]);
    for expected in [b"one", b"two"] {
        assert_eq!(c.get("q", 1, Duration::ZERO).unwrap(), [expected.to_vec()]);
    }
    assert!(c.get("q", 1, Duration::ZERO).unwrap().is_empty());
    // With only refusing servers the refusal comes back without waiting
    // out the timeout.
    let start = Instant::now();
    let refused = client(&[a.thrift]).get("q", 1, Duration::from_secs(30));
    assert!(
        matches!(refused, Err(kestrel_client::Error::Refused { .. })),
        "{refused:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(10));
}
