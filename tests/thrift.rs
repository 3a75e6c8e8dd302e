//! The Thrift API over real sockets, through the generated Rust client.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::kestrel_gen::Status;
use common::{
    Server, TKestrelSyncClient, eventually, eventually_within, mc, message, stats,
    wait_for_connections,
};
use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TFieldIdentifier, TInputProtocol,
    TMessageIdentifier, TMessageType, TOutputProtocol, TStructIdentifier, TType,
};

/// A framed call built by hand: `args` writes the argument fields.
fn call_frame(
    name: &str,
    seq: i32,
    args: impl FnOnce(&mut TBinaryOutputProtocol<&mut Vec<u8>>),
) -> Vec<u8> {
    let mut frame = vec![0; 4];
    {
        let mut o = TBinaryOutputProtocol::new(&mut frame, true);
        o.write_message_begin(&TMessageIdentifier::new(name, TMessageType::Call, seq))
            .unwrap();
        o.write_struct_begin(&TStructIdentifier::new("args"))
            .unwrap();
        args(&mut o);
        o.write_field_stop().unwrap();
        o.write_struct_end().unwrap();
        o.write_message_end().unwrap();
    }
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    frame
}

fn items(names: &[&str]) -> Vec<Vec<u8>> {
    names.iter().map(|s| s.as_bytes().to_vec()).collect()
}

fn data(got: &[common::kestrel_gen::Item]) -> Vec<String> {
    got.iter()
        .map(|i| String::from_utf8(i.data.clone().unwrap()).unwrap())
        .collect()
}

/// Polls `peek` until `queue` has exactly `n` parked readers.
fn wait_for_waiters(client: &mut common::Client, queue: &str, n: i32) {
    eventually(&format!("{n} waiters"), || {
        client.peek(queue.into()).unwrap().waiters.unwrap() == n
    });
}

#[test]
fn every_method() {
    let server = Server::start();
    let mut c = server.client();

    assert_eq!(c.get_version().unwrap(), env!("CARGO_PKG_VERSION"));
    assert_eq!(c.current_status().unwrap(), Status::UP);

    assert_eq!(c.put("jobs".into(), items(&["a", "b", "c"]), 0).unwrap(), 3);
    let info = c.peek("jobs".into()).unwrap();
    assert_eq!(info.head_item.as_deref(), Some(&b"a"[..]));
    assert_eq!(
        (info.items, info.bytes, info.waiters, info.open_transactions),
        (Some(3), Some(3), Some(0), Some(0))
    );
    assert!(info.age.unwrap() >= 0);

    let got = c.get("jobs".into(), 2, 0, 0).unwrap();
    assert_eq!(data(&got), ["a", "b"]);
    assert!(got.iter().all(|i| i.id == Some(0)));

    let opened = c.get("jobs".into(), 1, 0, 60_000).unwrap();
    assert_eq!(data(&opened), ["c"]);
    let id = opened[0].id.unwrap();
    assert_ne!(id, 0);
    assert_eq!(c.peek("jobs".into()).unwrap().open_transactions, Some(1));
    assert_eq!(
        c.abort("jobs".into(), BTreeSet::from([id, 999])).unwrap(),
        1
    );
    let again = c.get("jobs".into(), 1, 0, 60_000).unwrap();
    assert_eq!(data(&again), ["c"]);
    assert_eq!(
        c.confirm("jobs".into(), BTreeSet::from([again[0].id.unwrap()]))
            .unwrap(),
        1
    );
    assert_eq!(
        c.confirm("jobs".into(), BTreeSet::from([again[0].id.unwrap()]))
            .unwrap(),
        0
    );
    assert!(c.get("jobs".into(), 5, 0, 0).unwrap().is_empty());
    assert!(c.get("jobs".into(), 0, 0, 0).unwrap().is_empty());
    assert!(c.get("jobs".into(), -3, 0, 0).unwrap().is_empty());

    c.put("jobs".into(), items(&["x", "y"]), 0).unwrap();
    c.put("other".into(), items(&["z"]), 0).unwrap();
    c.flush_queue("jobs".into()).unwrap();
    assert_eq!(c.peek("jobs".into()).unwrap().items, Some(0));
    assert_eq!(c.peek("other".into()).unwrap().items, Some(1));
    c.put("jobs".into(), items(&["x"]), 0).unwrap();
    c.flush_all_queues().unwrap();
    assert_eq!(c.peek("jobs".into()).unwrap().items, Some(0));
    assert_eq!(c.peek("other".into()).unwrap().items, Some(0));

    c.put("doomed".into(), items(&["x"]), 0).unwrap();
    c.delete_queue("doomed".into()).unwrap();
    assert_eq!(c.peek("doomed".into()).unwrap().items, Some(0));
    // Neither flush nor delete creates a queue: no stats, no directory.
    c.flush_queue("ghost".into()).unwrap();
    c.delete_queue("ghost2".into()).unwrap();
    let s = stats(&mut mc(&server));
    assert!(s.contains_key("queue_jobs_items"), "stats name queues");
    for ghost in ["ghost", "ghost2"] {
        assert!(!s.contains_key(&format!("queue_{ghost}_items")), "{ghost}");
        assert!(!server.data_dir().join("queues").join(ghost).exists());
    }

    c.set_status(Status::READ_ONLY).unwrap();
    assert_eq!(c.current_status().unwrap(), Status::READ_ONLY);
    let refused = message(c.put("jobs".into(), items(&["x"]), 0).unwrap_err());
    assert_eq!(refused, "server is READONLY: put refused");
    c.set_status(Status::QUIESCENT).unwrap();
    let refused = message(c.get("jobs".into(), 1, 0, 0).unwrap_err());
    assert_eq!(refused, "server is QUIESCENT: get refused");
    let refused = message(c.set_status(Status::NOT_CONFIGURED).unwrap_err());
    assert_eq!(refused, "status 0 cannot be set"); // 0: NOT_CONFIGURED
    c.set_status(Status::UP).unwrap();
    assert_eq!(c.put("jobs".into(), items(&["ok"]), 0).unwrap(), 1);
}

#[test]
fn expiry_hides_items() {
    let server = Server::start();
    let mut c = server.client();
    c.put("exp".into(), items(&["short"]), 1).unwrap();
    c.put("exp".into(), items(&["long"]), 60_000).unwrap();
    // The first item's expiry (1 ms) is long past once this get runs.
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(data(&c.get("exp".into(), 5, 0, 0).unwrap()), ["long"]);
}

#[test]
fn bad_queue_names_are_refused_with_a_reason() {
    let server = Server::start();
    let mut c = server.client();
    for name in ["", "a/b", "a.b", "a~b", "a b", &"x".repeat(256)] {
        let e = message(c.put(name.into(), items(&["x"]), 0).unwrap_err());
        assert!(e.contains("invalid queue name"), "{name:?}: {e}");
    }
    // The connection is still usable.
    assert_eq!(c.put("fine".into(), items(&["x"]), 0).unwrap(), 1);
}

#[test]
fn blocking_get_is_satisfied_by_a_later_put() {
    let server = Server::start();
    let addr = server.thrift;
    let reader = std::thread::spawn(move || {
        let mut c = common::client(addr);
        let start = Instant::now();
        let got = c.get("later".into(), 1, 10_000, 0).unwrap();
        (data(&got), start.elapsed())
    });
    let mut c = server.client();
    wait_for_waiters(&mut c, "later", 1);
    c.put("later".into(), items(&["hello"]), 0).unwrap();
    let (got, waited) = reader.join().unwrap();
    assert_eq!(got, ["hello"]);
    assert!(waited < Duration::from_secs(10));
}

#[test]
fn get_times_out_empty() {
    let server = Server::start();
    let mut c = server.client();
    let start = Instant::now();
    assert!(c.get("empty".into(), 1, 300, 0).unwrap().is_empty());
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(c.peek("empty".into()).unwrap().waiters, Some(0));
}

#[test]
fn auto_abort_returns_the_item_to_the_head() {
    let server = Server::start();
    let mut c = server.client();
    c.put("aa".into(), items(&["first", "second"]), 0).unwrap();
    let opened = c.get("aa".into(), 1, 0, 200).unwrap();
    assert_eq!(data(&opened), ["first"]);
    // Not confirmed: 200 ms later it is back, in front of "second".
    eventually_within(Duration::from_secs(10), "the auto-abort", || {
        c.peek("aa".into()).unwrap().open_transactions == Some(0)
    });
    let got = c.get("aa".into(), 2, 0, 0).unwrap();
    assert_eq!(data(&got), ["first", "second"]);
    let id = opened[0].id.unwrap();
    assert_eq!(c.confirm("aa".into(), BTreeSet::from([id])).unwrap(), 0);
}

#[test]
fn confirm_from_a_second_connection() {
    let server = Server::start();
    let mut a = server.client();
    let mut b = server.client();
    a.put("shared".into(), items(&["x"]), 0).unwrap();
    let opened = a.get("shared".into(), 1, 0, 60_000).unwrap();
    let mut m = mc(&server);
    drop(a);
    // Only b and m are left once the server has seen a go.
    wait_for_connections(&mut m, 2);
    let id = opened[0].id.unwrap();
    // Thrift transactions outlive their connection.
    assert_eq!(b.peek("shared".into()).unwrap().open_transactions, Some(1));
    assert_eq!(b.confirm("shared".into(), BTreeSet::from([id])).unwrap(), 1);
    let info = b.peek("shared".into()).unwrap();
    assert_eq!((info.items, info.open_transactions), (Some(0), Some(0)));
}

#[test]
fn ids_are_unique_across_queues() {
    let server = Server::start();
    let mut c = server.client();
    let mut seen = HashSet::new();
    for q in ["q1", "q2", "q3"] {
        c.put(q.into(), items(&["a", "b", "c"]), 0).unwrap();
    }
    for q in ["q1", "q2", "q3"] {
        for item in c.get(q.into(), 3, 0, 60_000).unwrap() {
            let id = item.id.unwrap();
            assert_ne!(id, 0);
            assert!(seen.insert(id), "id {id} handed out twice");
        }
    }
    assert_eq!(seen.len(), 9);
}

#[test]
fn oversized_frame_is_refused_while_others_keep_working() {
    let server = Server::start();
    let mut good = server.client();
    good.put("q".into(), items(&["x"]), 0).unwrap();

    let mut bad = TcpStream::connect(server.thrift).unwrap();
    // Claims a 1 GiB frame; the server must refuse it without allocating it.
    bad.write_all(&(1u32 << 30).to_be_bytes()).unwrap();
    bad.write_all(b"\x80\x01\x00\x01").unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        bad.read(&mut buf).unwrap(),
        0,
        "connection should be closed"
    );
    server.wait_for_log("unreadable input", Duration::from_secs(10));

    assert_eq!(good.put("q".into(), items(&["y"]), 0).unwrap(), 1);
    assert_eq!(server.client().peek("q".into()).unwrap().items, Some(2));
}

/// A call the server does not know, sent by hand: the reply is an
/// UNKNOWN_METHOD exception, and the connection keeps working.
#[test]
fn unknown_method_is_answered_and_the_connection_survives() {
    let server = Server::start();
    let mut stream = TcpStream::connect(server.thrift).unwrap();
    stream.set_nodelay(true).unwrap();
    let call = |stream: &mut TcpStream, name: &str| {
        let frame = call_frame(name, 42, |_| {});
        stream.write_all(&frame).unwrap();
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).unwrap();
        let mut reply = vec![0; u32::from_be_bytes(len) as usize];
        stream.read_exact(&mut reply).unwrap();
        let mut i = TBinaryInputProtocol::new(&reply[..], true);
        let ident = i.read_message_begin().unwrap();
        let result = match ident.message_type {
            TMessageType::Exception => {
                Err(thrift::Error::read_application_error_from_in_protocol(&mut i).unwrap())
            }
            _ => Ok(()),
        };
        (ident, result)
    };
    for probe in ["__can__finagle__trace__v3__", "no_such_method"] {
        let (ident, result) = call(&mut stream, probe);
        assert_eq!((ident.name.as_str(), ident.sequence_number), (probe, 42));
        assert_eq!(
            result.unwrap_err().kind,
            thrift::ApplicationErrorKind::UnknownMethod
        );
    }
    // get_version on the same connection still works.
    let (ident, result) = call(&mut stream, "get_version");
    assert_eq!(
        (ident.name.as_str(), ident.message_type),
        ("get_version", TMessageType::Reply)
    );
    assert!(result.is_ok());
    // Undecodable arguments: get without a queue name.
    let (_, result) = call(&mut stream, "get");
    assert_eq!(
        result.unwrap_err().kind,
        thrift::ApplicationErrorKind::ProtocolError
    );
    let (_, result) = call(&mut stream, "get_version");
    assert!(result.is_ok());
}

#[test]
fn hostile_frames_do_not_take_the_server_down() {
    let server = Server::start();
    // put(items = list<binary> claiming 2^31-1 elements) in 31 bytes, then a
    // negative string length, then garbage.
    let hostile: [&[u8]; 3] = [
        b"\x80\x01\x00\x01\x00\x00\x00\x03put\x00\x00\x00\x01\x0f\x00\x02\x0b\x7f\xff\xff\xff",
        b"\x80\x01\x00\x01\x00\x00\x00\x03get\x00\x00\x00\x01\x0b\x00\x01\xff\xff\xff\xff",
        b"\xde\xad\xbe\xef",
    ];
    for frame in hostile {
        let mut s = TcpStream::connect(server.thrift).unwrap();
        s.write_all(&(frame.len() as u32).to_be_bytes()).unwrap();
        s.write_all(frame).unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut reply = vec![0; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut reply).unwrap();
        // A strict-header exception reply: version 0x8001, message type 3.
        assert_eq!(&reply[..4], b"\x80\x01\x00\x03", "{reply:?}");
    }
    let mut c = server.client();
    assert_eq!(c.put("alive".into(), items(&["x"]), 0).unwrap(), 1);
}

#[test]
fn a_reader_that_disconnects_while_waiting_leaves_no_ghost() {
    let server = Server::start();
    let mut c = server.client();
    // get("ghosts", 1, timeout 60 s), sent by hand so the socket can be closed
    // while the call waits.
    let frame = call_frame("get", 1, |o| {
        o.write_field_begin(&TFieldIdentifier::new("queue_name", TType::String, 1))
            .unwrap();
        o.write_string("ghosts").unwrap();
        o.write_field_begin(&TFieldIdentifier::new("max_items", TType::I32, 2))
            .unwrap();
        o.write_i32(1).unwrap();
        o.write_field_begin(&TFieldIdentifier::new("timeout_msec", TType::I32, 3))
            .unwrap();
        o.write_i32(60_000).unwrap();
    });
    let mut ghost = TcpStream::connect(server.thrift).unwrap();
    ghost.write_all(&frame).unwrap();
    wait_for_waiters(&mut c, "ghosts", 1);
    drop(ghost);
    wait_for_waiters(&mut c, "ghosts", 0);

    let addr = server.thrift;
    let live = std::thread::spawn(move || {
        common::client(addr)
            .get("ghosts".into(), 1, 30_000, 0)
            .unwrap()
    });
    wait_for_waiters(&mut c, "ghosts", 1);
    c.put("ghosts".into(), items(&["x"]), 0).unwrap();
    assert_eq!(data(&live.join().unwrap()), ["x"]);
    assert_eq!(c.peek("ghosts".into()).unwrap().items, Some(0));
}

#[test]
fn two_hundred_waiting_gets_are_served_by_two_hundred_puts() {
    let server = Server::start();
    let addr = server.thrift;
    let readers: Vec<_> = (0..200)
        .map(|_| {
            std::thread::spawn(move || {
                common::client(addr)
                    .get("crowd".into(), 1, 60_000, 0)
                    .unwrap()
            })
        })
        .collect();
    let mut c = server.client();
    wait_for_waiters(&mut c, "crowd", 200);
    for i in 0..200 {
        assert_eq!(
            c.put("crowd".into(), vec![format!("item-{i}").into_bytes()], 0)
                .unwrap(),
            1
        );
    }
    let mut seen = HashSet::new();
    for r in readers {
        let got = r.join().unwrap();
        assert_eq!(got.len(), 1);
        assert!(
            seen.insert(data(&got).remove(0)),
            "an item was delivered twice"
        );
    }
    assert_eq!(seen.len(), 200);
    let info = c.peek("crowd".into()).unwrap();
    assert_eq!((info.items, info.waiters), (Some(0), Some(0)));
}

/// The README's promise: transaction ids are never reused, even across
/// restarts, clean or not. Each run opens many reads at once (ids handed out
/// faster than the clock ticks) and restarts at once.
#[test]
fn transaction_ids_are_never_reused_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("KESTREL_MAX_OPEN_TRANSACTIONS", "2000")];
    let mut seen = HashSet::new();
    for (run, end) in ["TERM", "KILL", "KILL", "TERM"].into_iter().enumerate() {
        let server = Server::start_with_env(dir.path(), &[], &env);
        let mut c = server.client();
        let fresh: Vec<Vec<u8>> = (0..500)
            .map(|i| format!("{run}-{i}").into_bytes())
            .collect();
        assert_eq!(c.put("ids".into(), fresh, 0).unwrap(), 500);
        // The reads left open by the previous run are back, and opened again.
        let opened = c.get("ids".into(), 2000, 0, 600_000).unwrap();
        assert_eq!(opened.len(), 500 * (run + 1) - 100 * run);
        for item in &opened {
            let id = item.id.unwrap();
            assert_ne!(id, 0);
            assert!(seen.insert(id), "run {run}: id {id} handed out before");
        }
        // Some are confirmed for good, the rest stay open through the restart.
        let confirmed: BTreeSet<i64> = opened[..100].iter().map(|i| i.id.unwrap()).collect();
        assert_eq!(c.confirm("ids".into(), confirmed).unwrap(), 100);
        if end == "KILL" {
            server.signal("KILL");
            drop(server);
        } else {
            assert!(server.stop().success());
        }
    }
}

/// With `protocol_admin_commands = false`, the admin calls are refused with
/// a reason and change nothing; the other calls go on working.
#[test]
fn admin_calls_are_refused_when_protocol_admin_commands_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        dir.path(),
        &[],
        &[("KESTREL_PROTOCOL_ADMIN_COMMANDS", "false")],
    );
    let mut c = server.client();
    assert_eq!(c.put("jobs".into(), items(&["a"]), 0).unwrap(), 1);
    for refused in [
        c.set_status(Status::READ_ONLY).unwrap_err(),
        c.delete_queue("jobs".into()).unwrap_err(),
        c.flush_all_queues().unwrap_err(),
    ] {
        let m = message(refused);
        assert!(m.contains("protocol_admin_commands = false"), "{m}");
    }
    assert_eq!(c.current_status().unwrap(), Status::UP);
    c.flush_queue("other".into()).unwrap();
    assert_eq!(data(&c.get("jobs".into(), 1, 0, 0).unwrap()), ["a"]);
}
