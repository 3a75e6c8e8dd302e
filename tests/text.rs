//! The text protocol over raw sockets: every request and reply.

mod common;

use std::time::{Duration, Instant};

use common::{Raw, Server, eventually, mc, text};

fn ask(c: &mut Raw, line: &str) -> String {
    c.send(format!("{line}\n"));
    c.line()
}

#[test]
fn put_get_peek() {
    let server = Server::start();
    let mut c = text(&server);
    c.send("put q:\nhello\nworld\n\n");
    assert_eq!(c.line(), "+2");
    assert_eq!(ask(&mut c, "peek q"), ":hello");
    assert_eq!(ask(&mut c, "get q"), ":hello");
    // get confirms the previous read, then opens the next.
    assert_eq!(ask(&mut c, "get q"), ":world");
    assert_eq!(ask(&mut c, "get q"), "*");
    assert_eq!(ask(&mut c, "peek q"), "*");
    // CRLF line ends work too.
    c.send("put q:\r\ncrlf\r\n\r\n");
    assert_eq!(c.line(), "+1");
    assert_eq!(ask(&mut c, "get q 100"), ":crlf");
}

#[test]
fn items_are_stored_byte_for_byte() {
    let server = Server::start();
    let mut c = text(&server);
    c.send(b"put bin:\ncaf\xc3\xa9 \xff\xfe\x00x\n\n");
    assert_eq!(c.line(), "+1");
    c.send("get bin\n");
    assert_eq!(c.bytes(12), b":caf\xc3\xa9 \xff\xfe\x00x\n");
    // The same bytes through memcache.
    let mut m = mc(&server);
    c.send(b"put bin:\n\xe2\x82\xac\x80\n\n");
    assert_eq!(c.line(), "+1");
    assert_eq!(ask(&mut c, "confirm bin 1"), "+1");
    m.send("get bin\r\n");
    assert_eq!(m.line(), "VALUE bin 0 4");
    assert_eq!(m.bytes(6), b"\xe2\x82\xac\x80\r\n");
}

#[test]
fn put_with_expiry() {
    let server = Server::start();
    let mut c = text(&server);
    c.send("put e 1:\ngone\n\nput e 60000:\nkept\n\n");
    assert_eq!((c.line(), c.line()), ("+1".into(), "+1".into()));
    std::thread::sleep(Duration::from_millis(10)); // past the first item's 1 ms
    assert_eq!(ask(&mut c, "get e"), ":kept");
}

#[test]
fn blocking_get_and_timeout() {
    let server = Server::start();
    let mut c = text(&server);
    let start = Instant::now();
    assert_eq!(ask(&mut c, "get t 200"), "*");
    assert!(start.elapsed() >= Duration::from_millis(200));
    let mut waiter = text(&server);
    waiter.send("get t 20000\n");
    let mut m = mc(&server);
    eventually("a waiter on t", || {
        m.send("dump_stats t\r\n");
        m.lines_until("END").contains(&"  waiters=1".to_string())
    });
    c.send("put t:\nlate\n\n");
    assert_eq!(c.line(), "+1");
    assert_eq!(waiter.line(), ":late");
}

#[test]
fn monitor_and_confirm() {
    let server = Server::start();
    let mut c = text(&server);
    c.send("put m:\n1\n2\n3\n\n");
    assert_eq!(c.line(), "+3");
    c.send("monitor m 300\n");
    assert_eq!(c.lines_until("*"), [":1", ":2", ":3", "*"]);
    assert_eq!(
        ask(&mut c, "confirm m 4"),
        "-Not that many transactions open."
    );
    assert_eq!(ask(&mut c, "confirm m 2"), "+2");
    // The third is still open: it comes back when the connection closes.
    drop(c);
    let mut c = text(&server);
    eventually("the open read to be aborted", || {
        ask(&mut c, "peek m") == ":3"
    });
}

#[test]
fn open_reads_are_aborted_on_disconnect() {
    let server = Server::start();
    let mut c = text(&server);
    c.send("put d:\na\nb\n\n");
    assert_eq!(c.line(), "+2");
    let mut reader = text(&server);
    assert_eq!(ask(&mut reader, "get d"), ":a");
    assert_eq!(ask(&mut c, "peek d"), ":b");
    drop(reader);
    eventually("the open read to be aborted", || {
        ask(&mut c, "peek d") == ":a"
    });
}

#[test]
fn flush_delete_status_version() {
    let server = Server::start();
    let mut c = text(&server);
    c.send("put f:\nx\n\n");
    assert_eq!(c.line(), "+1");
    assert_eq!(ask(&mut c, "flush f"), "+0");
    assert_eq!(ask(&mut c, "peek f"), "*");
    assert_eq!(ask(&mut c, "delete f"), "+0");
    assert_eq!(
        ask(&mut c, "version"),
        format!(":{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(ask(&mut c, "status"), ":UP");
    assert_eq!(ask(&mut c, "status readonly"), "+0");
    assert_eq!(ask(&mut c, "status"), ":READONLY");
    c.send("put f:\nx\n\n");
    assert_eq!(c.line(), "-server is READONLY: put refused");
    assert_eq!(ask(&mut c, "status quiescent"), "+0");
    assert_eq!(ask(&mut c, "get f"), "-server is QUIESCENT: get refused");
    assert_eq!(ask(&mut c, "status sideways"), "-Unknown status.");
    assert_eq!(ask(&mut c, "status up"), "+0");
    assert_eq!(ask(&mut c, "status"), ":UP");
}

#[test]
fn errors_name_what_is_wrong() {
    let server = Server::start();
    let mut c = text(&server);
    assert_eq!(ask(&mut c, "get"), "-Queue name required.");
    assert_eq!(ask(&mut c, "peek"), "-Queue name required.");
    assert_eq!(ask(&mut c, "flush"), "-Queue name required.");
    assert_eq!(ask(&mut c, "delete"), "-Queue name required.");
    assert_eq!(ask(&mut c, "monitor q"), "-Queue name & timeout required.");
    assert_eq!(ask(&mut c, "confirm q"), "-Queue name & count required.");
    assert_eq!(ask(&mut c, "get q soon"), "-Error parsing timeout.");
    assert_eq!(ask(&mut c, "put q x:"), "-Error parsing expiration time.");
    assert_eq!(ask(&mut c, "stats"), "-Unknown command: stats");
    assert_eq!(
        ask(&mut c, "get bad/name"),
        "-invalid queue name: queue name contains '/', which is not allowed \
         ('/', '.', '~', whitespace, control and format characters are not)"
    );
    let long = format!("get {}", "x".repeat(10_000));
    assert_eq!(ask(&mut c, &long), "-Line longer than 8192 bytes.");
    assert_eq!(
        ask(&mut c, "version"),
        format!(":{}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn big_puts_are_not_cut_off() {
    let server = Server::start();
    let mut c = text(&server);
    let mut put = String::from("put big:\n");
    for i in 0..5000 {
        put += &format!("item-{i}\n");
    }
    put += "\n";
    c.send(put);
    assert_eq!(c.line(), "+5000");
    // Over the limit (10,000 items): refused whole, with a reason.
    let mut put = String::from("put big:\n");
    for i in 0..10_001 {
        put += &format!("x{i}\n");
    }
    put += "\n";
    c.send(put);
    assert_eq!(
        c.line(),
        "-Too many items in one put (limit 10000 items, 16777216 bytes); nothing was stored."
    );
    let mut m = mc(&server);
    m.send("dump_stats big\r\n");
    assert!(m.lines_until("END").contains(&"  items=5000".to_string()));
}

/// docs/protocol.md: a put of more than `max_frame_size` bytes is refused
/// whole, with a reason, and the connection goes on.
#[test]
fn max_frame_size_caps_a_put() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("KESTREL_MAX_FRAME_SIZE", "1000")];
    let server = Server::start_with_env(dir.path(), &[], &env);
    let mut c = text(&server);
    let item = |i: usize| format!("{i:0100}");
    // Ten items of 100 bytes: exactly the limit.
    let at_limit: String = (0..10).map(|i| item(i) + "\n").collect();
    c.send(format!("put cap:\n{at_limit}\n"));
    assert_eq!(c.line(), "+10");
    // Eleven are one item over it: nothing of them is stored.
    let over: String = (10..21).map(|i| item(i) + "\n").collect();
    c.send(format!("put cap:\n{over}\n"));
    assert_eq!(
        c.line(),
        "-Too many items in one put (limit 10000 items, 1000 bytes); nothing was stored."
    );
    let mut m = mc(&server);
    assert_eq!(common::stat(&mut m, "queue_cap_items"), Some(10));
    // The same connection is still in step.
    assert_eq!(ask(&mut c, "peek cap"), format!(":{}", item(0)));
}

#[test]
fn quit_and_shutdown() {
    let server = Server::start();
    let mut c = text(&server);
    c.send("quit\n");
    c.expect_closed();
    let mut c = text(&server);
    assert_eq!(ask(&mut c, "shutdown"), "+0");
    c.expect_closed();
    server.wait_for_log("stopped", Duration::from_secs(20));
}
