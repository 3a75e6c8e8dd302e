//! The server's life as an operator sees it: a SIGTERM drains (waiting gets
//! return empty, nothing is handed out after the signal, what was put stays),
//! logs as text or JSON at a level that a reload changes, and ordinary
//! disconnects are not worth an `info` line.

mod common;

use std::time::Duration;

use common::{
    Server, TKestrelSyncClient, eventually, get, mc, stat, store, text, wait_for_connections,
};

/// SIGTERM while a get waits and a producer races the signal: the waiter is
/// answered empty, the producer's item (if it was acknowledged) is not handed
/// out but is there after a restart, and the process exits 0.
#[test]
fn sigterm_answers_waiting_gets_empty_and_hands_out_nothing_after_the_signal() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), &[]);
    let mut waiter = mc(&server);
    waiter.send("get jobs/t=60000\r\n");
    let mut thrift_waiter = server.client();
    let mut producer = mc(&server);
    let mut watch = mc(&server);
    eventually("the get waits", || {
        stat(&mut watch, "queue_jobs_waiters") == Some(1)
    });
    let thrift = std::thread::spawn(move || thrift_waiter.get("jobs".into(), 1, 60_000, 0));
    eventually("both gets wait", || {
        stat(&mut watch, "queue_jobs_waiters") == Some(2)
    });

    // An idle connection that never sent a byte.
    let mut silent = mc(&server);
    stat(&mut watch, "curr_connections");

    let signalled = std::time::Instant::now();
    server.signal("TERM");
    server.wait_for_log("signal received", Duration::from_secs(10));
    // A put racing the signal: refused (connection closed) or stored, never
    // delivered to the waiters.
    producer.try_send("set jobs 0 0 4\r\nlate\r\n");
    assert_eq!(waiter.line(), "END", "the waiting get is answered empty");
    let got = thrift.join().unwrap().expect("the Thrift get is answered");
    assert!(
        got.is_empty(),
        "nothing handed out after the signal: {got:?}"
    );
    let stored = producer.try_line().as_deref() == Some("STORED");
    // Idle connections are closed at the signal, whether they made requests
    // before or never sent anything: not at the drain deadline (10 s), when
    // the server would close them anyway.
    watch.expect_closed();
    silent.expect_closed();
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "idle connections closed {:?} after the signal",
        signalled.elapsed()
    );

    let mut server = server;
    let status = server.wait();
    assert!(status.success(), "exit status {status:?}");
    server.wait_for_log("stopped", Duration::from_secs(1));

    let again = Server::start_in(dir.path(), &[]);
    let mut c = mc(&again);
    let expected = stored.then(|| "late".to_string());
    assert_eq!(
        get(&mut c, "jobs"),
        expected,
        "the raced put is kept iff acknowledged"
    );
}

/// `--log-format json`: every line is one JSON object with a message.
#[test]
fn json_logs_are_one_object_per_line() {
    let server = Server::start_with(&["--log-format", "json"]);
    let mut c = mc(&server);
    store(&mut c, "q", "x");
    drop(c);
    let lines = server.log();
    assert!(lines.len() >= 5, "{lines:?}");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(v["fields"]["message"].is_string(), "{line}");
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
}

/// Clients that come and go, politely or not, log nothing at `info`.
#[test]
fn a_disconnect_logs_nothing_at_info() {
    let server = Server::start();
    let mut watch = mc(&server);
    wait_for_connections(&mut watch, 1);
    let before = server.log().len();
    for _ in 0..3 {
        let mut c = mc(&server);
        store(&mut c, "q", "x");
        drop(c); // closed mid-session
        let mut t = text(&server);
        t.send("get q\n");
        drop(t); // closed with an open read and a reply unread
        let mut thrift = server.client();
        thrift.put("q".into(), vec![b"y".to_vec()], 0).unwrap();
        drop(thrift);
    }
    wait_for_connections(&mut watch, 1);
    let after = server.log();
    assert_eq!(
        after[before..],
        [] as [String; 0],
        "nothing logged for disconnects"
    );
}

/// `log_level` applies again on every reload, without a restart
/// (`RUST_LOG` is not set, so the setting rules).
#[test]
fn the_log_level_follows_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kestrel.toml");
    let data = dir.path().join("data");
    std::fs::write(&file, "log_level = \"info\"\n").unwrap();
    let server = Server::start_with_env(
        &data,
        &["--config", file.to_str().unwrap()],
        &[("RUST_LOG", "")],
    );
    let mut c = mc(&server);
    let reloaded = |server: &Server| {
        let log = server.log();
        log.iter()
            .filter(|l| l.contains("configuration reloaded"))
            .count()
    };
    // At `warn`, a reload's own `info` line is held back...
    std::fs::write(&file, "log_level = \"warn\"\n").unwrap();
    assert_eq!(c.ask("reload"), "Reloaded config.");
    assert_eq!(c.ask("reload"), "Reloaded config.");
    assert_eq!(reloaded(&server), 0);
    // ...and at `debug` it is written again.
    std::fs::write(&file, "log_level = \"debug\"\n").unwrap();
    assert_eq!(c.ask("reload"), "Reloaded config.");
    server.wait_for_log("configuration reloaded", Duration::from_secs(10));
    // A bad level is refused on one line, and the running one kept.
    std::fs::write(&file, "log_level = \"loud[\"\n").unwrap();
    let refused = c.ask("reload");
    assert!(
        refused.starts_with("SERVER_ERROR") && refused.contains("log_level"),
        "{refused}"
    );
    server.wait_for_log("reload refused", Duration::from_secs(10));
}
