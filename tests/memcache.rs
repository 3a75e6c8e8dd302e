//! The memcache dialect over raw sockets: every request, reply and rule.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Raw, Server, TKestrelSyncClient, get, mc, stats, store, value, wait_for_stat};

#[test]
fn set_get_and_the_bare_queue_name() {
    let server = Server::start();
    let mut c = mc(&server);
    store(&mut c, "jobs", "hello");
    // Flags are ignored; the VALUE line says 0 and names the bare queue.
    c.send("set jobs 42 0 5\r\nworld\r\n");
    assert_eq!(c.line(), "STORED");
    c.send("get jobs/t=10\r\n");
    assert_eq!(c.line(), "VALUE jobs 0 5");
    assert_eq!(c.bytes(7), b"hello\r\n");
    assert_eq!(c.line(), "END");
    assert_eq!(get(&mut c, "jobs").as_deref(), Some("world"));
    assert_eq!(get(&mut c, "jobs"), None);
    // gets is an alias; commands are case-insensitive, queue names are not.
    store(&mut c, "Jobs", "x");
    assert_eq!(get(&mut c, "jobs"), None);
    c.send("GETS Jobs\r\n");
    assert_eq!(value(&mut c).as_deref(), Some("x"));
    // Binary data with CR LF inside.
    c.send(b"set bin 0 0 6\r\na\r\n\x00\xffb\r\n");
    assert_eq!(c.line(), "STORED");
    c.send("get bin\r\n");
    assert_eq!(c.line(), "VALUE bin 0 6");
    assert_eq!(c.bytes(8), b"a\r\n\x00\xffb\r\n");
    assert_eq!(c.line(), "END");
}

#[test]
fn noreply_sets_and_pipelining() {
    let server = Server::start();
    let mut c = mc(&server);
    // One write: three sets (one noreply), two gets, a version.
    c.send("set p 0 0 1 noreply\r\na\r\nset p 0 0 1\r\nb\r\nset p 0 0 1\r\nc\r\nget p\r\nget p\r\nversion\r\n");
    assert_eq!(c.line(), "STORED");
    assert_eq!(c.line(), "STORED");
    assert_eq!(value(&mut c).as_deref(), Some("a"));
    assert_eq!(value(&mut c).as_deref(), Some("b"));
    assert!(c.line().starts_with("VERSION "));
    assert_eq!(get(&mut c, "p").as_deref(), Some("c"));
}

#[test]
fn expiry() {
    // The background sweep would race flush_expired for the expired items.
    let dir = tempfile::tempdir().unwrap();
    let env = [("KESTREL_EXPIRATION_TIMER_FREQUENCY", "off")];
    let server = Server::start_with_env(dir.path(), &[], &env);
    let mut c = mc(&server);
    // Absolute unix time (in the past), never, and relative seconds: only
    // the first has expired, however slowly these requests are served.
    c.send("set e 0 1000000 4\r\nold!\r\n");
    assert_eq!(c.line(), "STORED");
    c.send("set e 0 0 4\r\nkept\r\n");
    assert_eq!(c.line(), "STORED");
    c.send("set e 0 3600 5\r\nlater\r\n");
    assert_eq!(c.line(), "STORED");
    assert_eq!(c.ask("flush_expired e"), "1");
    c.send("set e 0 1 4\r\ngone\r\n");
    assert_eq!(c.line(), "STORED");
    std::thread::sleep(Duration::from_millis(1100)); // the 1-second item's lifetime
    assert_eq!(get(&mut c, "e").as_deref(), Some("kept"));
    assert_eq!(get(&mut c, "e").as_deref(), Some("later"));
    assert_eq!(get(&mut c, "e"), None);
    c.send("set f 0 1 1\r\nx\r\nset g 0 1 1\r\ny\r\n");
    assert_eq!((c.line(), c.line()), ("STORED".into(), "STORED".into()));
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(c.ask("flush_all_expired"), "2");
    assert_eq!(stats(&mut c)["queue_e_expired_items"], "2");
    assert_eq!(stats(&mut c)["queue_f_expired_items"], "1");
}

#[test]
fn reliable_reads_open_close_abort_peek() {
    let server = Server::start();
    let mut c = mc(&server);
    for item in ["one", "two", "three"] {
        store(&mut c, "r", item);
    }
    assert_eq!(get(&mut c, "r/peek").as_deref(), Some("one"));
    assert_eq!(get(&mut c, "r/open").as_deref(), Some("one"));
    // A plain get while this connection holds an open read on the queue.
    assert_eq!(c.ask("get r"), "ERROR");
    // Another connection sees the next item.
    let mut other = mc(&server);
    assert_eq!(get(&mut other, "r/peek").as_deref(), Some("two"));
    // Abort puts it back at the head.
    assert_eq!(c.ask("get r/abort"), "END");
    assert_eq!(get(&mut other, "r/peek").as_deref(), Some("one"));
    // close/open: confirm the previous, open the next.
    assert_eq!(get(&mut c, "r/open").as_deref(), Some("one"));
    assert_eq!(get(&mut c, "r/close/open").as_deref(), Some("two"));
    assert_eq!(get(&mut c, "r/open/close").as_deref(), Some("three"));
    assert_eq!(c.ask("get r/close"), "END");
    // Nothing open: close and abort are no-ops.
    assert_eq!(c.ask("get r/close"), "END");
    assert_eq!(c.ask("get r/abort"), "END");
    assert_eq!(get(&mut c, "r"), None);
    let s = stats(&mut c);
    assert_eq!(
        (
            s["queue_r_items"].as_str(),
            s["queue_r_open_transactions"].as_str()
        ),
        ("0", "0")
    );
    assert_eq!(s["queue_r_transactions"], "4");
    assert_eq!(s["queue_r_canceled_transactions"], "1");
}

#[test]
fn forbidden_option_combinations_and_missing_names() {
    const OPEN_OR_CLOSE: &str = "CLIENT_ERROR peek and abort cannot be combined with open or close";
    let server = Server::start();
    let mut c = mc(&server);
    for (key, reply) in [
        ("q/peek/open", OPEN_OR_CLOSE),
        ("q/peek/close", OPEN_OR_CLOSE),
        ("q/abort/open", OPEN_OR_CLOSE),
        ("q/abort/close", OPEN_OR_CLOSE),
        (
            "q/peek/abort",
            "CLIENT_ERROR peek and abort cannot be combined",
        ),
        ("/open", "CLIENT_ERROR missing queue name"),
    ] {
        assert_eq!(c.ask(&format!("get {key}")), reply, "{key}");
    }
    assert_eq!(c.ask("get"), "CLIENT_ERROR missing queue name");
    assert_eq!(
        c.ask("get bad.name"),
        "CLIENT_ERROR invalid queue name: queue name contains '.', which is not allowed \
         ('/', '.', '~', whitespace, control and format characters are not)"
    );
    assert!(c.ask("version").starts_with("VERSION "));
}

#[test]
fn open_reads_are_limited_per_connection_and_queue() {
    let server = Server::start();
    let mut c = mc(&server);
    for i in 0..101 {
        store(&mut c, "lim", &i.to_string());
    }
    store(&mut c, "other", "x");
    for i in 0..100 {
        assert_eq!(get(&mut c, "lim/open"), Some(i.to_string()));
    }
    assert_eq!(c.ask("get lim/open"), "ERROR");
    // The limit is per queue.
    assert_eq!(get(&mut c, "other/open").as_deref(), Some("x"));
    assert_eq!(c.ask("confirm lim 100"), "END");
    assert_eq!(get(&mut c, "lim/open").as_deref(), Some("100"));
}

#[test]
fn disconnect_aborts_open_reads_in_order() {
    let server = Server::start();
    let mut c = mc(&server);
    for item in ["a", "b", "c", "d"] {
        store(&mut c, "d", item);
    }
    let mut reader = mc(&server);
    assert_eq!(get(&mut reader, "d/open").as_deref(), Some("a"));
    let mut other = mc(&server);
    assert_eq!(get(&mut other, "d/open").as_deref(), Some("b"));
    assert_eq!(get(&mut reader, "d/open").as_deref(), Some("c"));
    drop(reader);
    wait_for_stat(&mut c, "queue_d_open_transactions", "1");
    // a and c are back, ahead of d and in their original order.
    assert_eq!(get(&mut c, "d").as_deref(), Some("a"));
    assert_eq!(get(&mut c, "d").as_deref(), Some("c"));
    assert_eq!(get(&mut c, "d").as_deref(), Some("d"));
}

#[test]
fn a_waiting_get_is_cancelled_on_disconnect_without_consuming() {
    let server = Server::start();
    let mut c = mc(&server);
    let mut waiter = mc(&server);
    waiter.send("get w/t=60000\r\n");
    wait_for_stat(&mut c, "queue_w_waiters", "1");
    drop(waiter);
    wait_for_stat(&mut c, "queue_w_waiters", "0");
    store(&mut c, "w", "x");
    assert_eq!(stats(&mut c)["queue_w_items"], "1");
    // A live waiter gets the next item.
    let mut live = mc(&server);
    live.send("get w/t=60000/open\r\n");
    assert_eq!(value(&mut live).as_deref(), Some("x"));
}

#[test]
fn blocking_get_with_timeout() {
    let server = Server::start();
    let mut c = mc(&server);
    let start = Instant::now();
    assert_eq!(get(&mut c, "t/t=200"), None);
    assert!(start.elapsed() >= Duration::from_millis(200));
    let mut waiter = mc(&server);
    waiter.send("get t/t=20000\r\n");
    wait_for_stat(&mut c, "queue_t_waiters", "1");
    store(&mut c, "t", "late");
    assert_eq!(value(&mut waiter).as_deref(), Some("late"));
}

#[test]
fn monitor_then_confirm() {
    let server = Server::start();
    let mut c = mc(&server);
    for item in ["1", "2", "3"] {
        store(&mut c, "m", item);
    }
    c.send("monitor m 1 2\r\n");
    assert_eq!(value(&mut c).as_deref(), Some("1"));
    assert_eq!(value(&mut c).as_deref(), Some("2"));
    assert_eq!(c.line(), "END");
    assert_eq!(stats(&mut c)["queue_m_open_transactions"], "2");
    assert_eq!(c.ask("confirm m 3"), "ERROR");
    assert_eq!(c.ask("confirm m 2"), "END");
    assert_eq!(c.ask("confirm m 0"), "ERROR");
    // Without max_items: up to the open-read limit, until the time is up.
    let start = Instant::now();
    c.send("monitor m 1\r\n");
    assert_eq!(value(&mut c).as_deref(), Some("3"));
    assert_eq!(c.line(), "END");
    assert!(start.elapsed() >= Duration::from_secs(1));
    // Disconnecting aborts the monitored reads.
    drop(c);
    let mut c = mc(&server);
    wait_for_stat(&mut c, "queue_m_items", "1");
}

#[test]
fn delete_flush_and_flush_all() {
    let server = Server::start();
    let mut c = mc(&server);
    store(&mut c, "a", "1");
    store(&mut c, "b", "2");
    assert_eq!(c.ask("flush a"), "END");
    assert_eq!(get(&mut c, "a"), None);
    assert_eq!(c.ask("flush_all"), "Flushed all queues.");
    assert_eq!(get(&mut c, "b"), None);
    store(&mut c, "gone", "x");
    assert_eq!(c.ask("delete gone"), "DELETED");
    assert_eq!(c.ask("delete never_existed"), "DELETED");
    assert!(!stats(&mut c).contains_key("queue_never_existed_items"));
    assert!(!stats(&mut c).contains_key("queue_gone_items"));
}

#[test]
fn stats_are_true_after_a_known_sequence() {
    let server = Server::start();
    let mut c = mc(&server);
    store(&mut c, "s", "abc");
    store(&mut c, "s", "de");
    assert_eq!(get(&mut c, "s").as_deref(), Some("abc"));
    assert_eq!(get(&mut c, "s/peek").as_deref(), Some("de"));
    assert_eq!(get(&mut c, "empty"), None);
    let s = stats(&mut c);
    for name in [
        "uptime",
        "time",
        "version",
        "curr_items",
        "total_items",
        "bytes",
        "curr_connections",
        "total_connections",
        "cmd_get",
        "cmd_set",
        "cmd_peek",
        "get_hits",
        "get_misses",
        "bytes_read",
        "bytes_written",
        "queue_creates",
        "queue_deletes",
        "queue_expires",
    ] {
        assert!(s.contains_key(name), "missing stat {name}");
    }
    let want = [
        ("curr_items", "1"),
        ("total_items", "2"),
        ("bytes", "2"),
        ("curr_connections", "1"),
        ("cmd_get", "2"),
        ("cmd_set", "2"),
        ("cmd_peek", "1"),
        ("get_hits", "2"),
        ("get_misses", "1"),
        ("queue_creates", "2"),
        ("queue_deletes", "0"),
        ("queue_s_items", "1"),
        ("queue_s_bytes", "2"),
        ("queue_s_total_items", "2"),
        ("queue_s_mem_items", "1"),
        ("queue_s_mem_bytes", "2"),
        ("queue_s_waiters", "0"),
        ("queue_s_open_transactions", "0"),
        ("queue_s_discarded", "0"),
        ("queue_s_expired_items", "0"),
        ("queue_s_total_flushes", "0"),
        ("queue_empty_items", "0"),
    ];
    for (name, value) in want {
        assert_eq!(s[name], value, "{name}");
    }
    for name in ["logsize", "age", "transactions", "canceled_transactions"] {
        assert!(s.contains_key(&format!("queue_s_{name}")), "{name}");
    }
    let read: u64 = s["bytes_read"].parse().unwrap();
    assert!(read > 50, "bytes_read {read}");
    assert!(s["bytes_written"].parse::<u64>().unwrap() > 30);
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn dump_stats() {
    let server = Server::start();
    let mut c = mc(&server);
    store(&mut c, "x", "12345");
    store(&mut c, "y", "1");
    c.send("dump_stats x\r\n");
    let lines = c.lines_until("END");
    assert_eq!(lines[0], "queue 'x' {");
    assert_eq!(lines[1], "  items=1");
    assert_eq!(lines[2], "  bytes=5");
    assert!(lines.contains(&"  open_transactions=0".to_string()));
    assert_eq!(lines[lines.len() - 2], "}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("queue '")).count(), 1);
    c.send("dump_stats\r\n");
    let all = c.lines_until("END");
    let names: Vec<&String> = all.iter().filter(|l| l.starts_with("queue '")).collect();
    assert_eq!(names, ["queue 'x' {", "queue 'y' {"]);
}

/// The per-queue stats in Kestrel's order (`dump_stats`), with a fanout
/// parent's `children` last.
const QUEUE_STATS: [&str; 16] = [
    "items",
    "bytes",
    "total_items",
    "logsize",
    "expired_items",
    "mem_items",
    "mem_bytes",
    "age",
    "discarded",
    "waiters",
    "open_transactions",
    "transactions",
    "canceled_transactions",
    "total_flushes",
    "journal_rewrites",
    "journal_rotations",
];

/// `dump_stats <queue>` as `(name, value)` pairs, in order.
fn dump_stats_of(c: &mut Raw, queue: &str) -> Vec<(String, String)> {
    c.send(format!("dump_stats {queue}\r\n"));
    let lines = c.lines_until("END");
    assert_eq!(lines[0], format!("queue '{queue}' {{"));
    assert_eq!(lines[lines.len() - 2..], ["}", "END"]);
    lines[1..lines.len() - 2]
        .iter()
        .map(|l| {
            let (k, v) = l.strip_prefix("  ").unwrap().split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn journal_rotations_and_rewrites_count_what_the_journal_did() {
    // Segments of 4 KiB: a 4-byte item and four of 1000 bytes fill the
    // first (5 ADD records of 33 bytes each, plus the data: 4169 bytes).
    let dir = tempfile::tempdir().unwrap();
    let env = [("KESTREL_DEFAULT_QUEUE__MAX_JOURNAL_SIZE", "4KiB")];
    let server = Server::start_with_env(dir.path(), &[], &env);
    let mut c = mc(&server);
    let turnover = |c: &mut Raw| {
        let s = stats(c);
        (
            s["queue_j_journal_rotations"].clone(),
            s["queue_j_journal_rewrites"].clone(),
        )
    };
    store(&mut c, "j", "keep");
    let big = "x".repeat(1000);
    for _ in 0..4 {
        store(&mut c, "j", &big);
    }
    assert_eq!(turnover(&mut c), ("0".into(), "0".into()));
    // Opening the small item is the first record of segment 2.
    let mut holder = mc(&server);
    assert_eq!(get(&mut holder, "j/open").as_deref(), Some("keep"));
    assert_eq!(turnover(&mut c), ("1".into(), "0".into()));
    // The four big items go in one read (one step under the queue's lock):
    // segment 1 is left with the open item alone, and is rewritten down to
    // it once both checkpoints have moved past it.
    let mut thrift = server.client();
    assert_eq!(thrift.get("j".into(), 4, 0, 0).unwrap().len(), 4);
    wait_for_stat(&mut c, "queue_j_journal_rewrites", "1");
    // Confirmed, the item is gone and so is segment 1: deleted.
    assert_eq!(holder.ask("get j/close"), "END");
    wait_for_stat(&mut c, "queue_j_journal_rewrites", "2");
    assert_eq!(turnover(&mut c), ("1".into(), "2".into()));
    // A flush that drops the journal whole does not reset the counts.
    assert_eq!(c.ask("flush j"), "END");
    let s = dump_stats_of(&mut c, "j");
    let names: Vec<&str> = s.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, QUEUE_STATS);
    assert_eq!(
        s[QUEUE_STATS.len() - 3..],
        [
            ("total_flushes".into(), "1".into()),
            ("journal_rewrites".into(), "2".into()),
            ("journal_rotations".into(), "1".into()),
        ]
    );
}

#[test]
fn a_fanout_parent_lists_its_children() {
    let server = Server::start();
    let mut c = mc(&server);
    store(&mut c, "p", "x");
    for queue in ["p+b", "p+a", "pq"] {
        assert_eq!(get(&mut c, queue), None); // creates it
    }
    let s = stats(&mut c);
    assert_eq!(s["queue_p_children"], "p+a,p+b");
    for queue in ["p+a", "p+b", "pq"] {
        assert!(
            !s.contains_key(&format!("queue_{queue}_children")),
            "{queue}"
        );
        assert!(s.contains_key(&format!("queue_{queue}_journal_rotations")));
    }
    // In dump_stats, after the other stats (Kestrel's place for it).
    let p = dump_stats_of(&mut c, "p");
    let names: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names[..QUEUE_STATS.len()], QUEUE_STATS);
    assert_eq!(
        p[QUEUE_STATS.len()..],
        [("children".into(), "p+a,p+b".into())]
    );
    assert_eq!(dump_stats_of(&mut c, "pq").len(), QUEUE_STATS.len());
    // The children are what a put reaches: a deleted one is gone from the list.
    assert_eq!(c.ask("delete p+a"), "DELETED");
    assert_eq!(stats(&mut c)["queue_p_children"], "p+b");
}

#[test]
fn reserved_memory_ratio_weighs_the_queues_budgets_against_the_machine() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("KESTREL_DEFAULT_QUEUE__MAX_MEMORY_SIZE", "3GiB")];
    let server = Server::start_with_env(dir.path(), &[], &env);
    let mut c = mc(&server);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("MemTotal in /proc/meminfo");
    let budget = 3u64 << 30;
    let ratio = |queues: u64| format!("{:.3}", (queues * budget) as f64 / (kib * 1024) as f64);
    let ordered = |c: &mut Raw| -> Vec<(String, String)> {
        c.send("stats\r\n");
        c.lines_until("END")
            .iter()
            .filter_map(|l| l.strip_prefix("STAT "))
            .map(|l| {
                let (k, v) = l.split_once(' ').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    };
    // Kestrel's place: right after `bytes`.
    let s = ordered(&mut c);
    let names: Vec<&str> = s.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names[3..8],
        [
            "curr_items",
            "total_items",
            "bytes",
            "reserved_memory_ratio",
            "curr_connections"
        ]
    );
    assert_eq!(s[6].1, "0.000");
    store(&mut c, "a", "1");
    assert_eq!(stats(&mut c)["reserved_memory_ratio"], ratio(1));
    assert_eq!(get(&mut c, "b"), None);
    assert_eq!(stats(&mut c)["reserved_memory_ratio"], ratio(2));
}

#[test]
fn value_lines_name_the_bare_queue_or_the_key_as_sent() {
    for (setting, full) in [(None, false), (Some("bare"), false), (Some("full"), true)] {
        let dir = tempfile::tempdir().unwrap();
        let env: Vec<(&str, &str)> = setting
            .map(|s| ("KESTREL_MEMCACHE_VALUE_KEY", s))
            .into_iter()
            .collect();
        let server = Server::start_with_env(dir.path(), &[], &env);
        let mut c = mc(&server);
        for item in ["one", "two", "three", "four"] {
            store(&mut c, "q", item);
        }
        let read = |c: &mut Raw, key: &str, item: &str| {
            c.send(format!("get {key}\r\n"));
            let echoed = if full { key } else { "q" };
            assert_eq!(
                c.line(),
                format!("VALUE {echoed} 0 {}", item.len()),
                "{setting:?}"
            );
            assert_eq!(value_rest(c, item.len()), item);
        };
        read(&mut c, "q/peek", "one");
        read(&mut c, "q/open", "one");
        read(&mut c, "q/close/open/t=10", "two");
        read(&mut c, "q/open/close", "three");
        assert_eq!(c.ask("get q/close"), "END");
        read(&mut c, "q", "four");
        // Only the first key of a multi-key get is served, and echoed.
        store(&mut c, "q", "five");
        c.send("get q/t=1 other\r\n");
        let echoed = if full { "q/t=1" } else { "q" };
        assert_eq!(c.line(), format!("VALUE {echoed} 0 4"));
        assert_eq!(value_rest(&mut c, 4), "five");
        // monitor names the queue either way: that is the key it was sent.
        store(&mut c, "q", "six");
        c.send("monitor q 1 1\r\n");
        assert_eq!(c.line(), "VALUE q 0 3");
        assert_eq!(value_rest(&mut c, 3), "six");
        assert_eq!(c.line(), "END");
    }
}

/// The data and `END` after a `VALUE` line announcing `len` bytes.
fn value_rest(c: &mut Raw, len: usize) -> String {
    let data = c.bytes(len + 2);
    assert_eq!(&data[len..], b"\r\n");
    assert_eq!(c.line(), "END");
    String::from_utf8(data[..len].to_vec()).unwrap()
}

#[test]
fn version_status_reload() {
    let server = Server::start();
    let mut c = mc(&server);
    assert_eq!(
        c.ask("version"),
        format!("VERSION {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(c.ask("status"), "UP");
    assert_eq!(c.ask("reload"), "Reloaded config.");
    assert_eq!(c.ask("status readonly"), "END");
    assert_eq!(c.ask("status"), "READONLY");
    assert_eq!(
        c.ask("set q 0 0 1\r\nx"),
        "SERVER_ERROR server is READONLY: put refused"
    );
    assert_eq!(get(&mut c, "q"), None);
    assert_eq!(c.ask("status QUIESCENT"), "END");
    assert_eq!(
        c.ask("get q"),
        "SERVER_ERROR server is QUIESCENT: get refused"
    );
    assert_eq!(
        c.ask("status down"),
        "CLIENT_ERROR unknown status \"down\" (up, readonly or quiescent)"
    );
    assert_eq!(c.ask("status up"), "END");
    store(&mut c, "q", "ok");
}

#[test]
fn quiescent_still_confirms_open_reads() {
    let server = Server::start();
    let mut c = mc(&server);
    store(&mut c, "qq", "x");
    assert_eq!(get(&mut c, "qq/open").as_deref(), Some("x"));
    assert_eq!(c.ask("status quiescent"), "END");
    assert_eq!(
        c.ask("get qq/open"),
        "SERVER_ERROR server is QUIESCENT: get refused"
    );
    assert_eq!(c.ask("get qq/close"), "END");
    assert_eq!(c.ask("status up"), "END");
    assert_eq!(stats(&mut c)["queue_qq_open_transactions"], "0");
    assert_eq!(get(&mut c, "qq"), None);
}

#[test]
fn unknown_commands_and_bad_input() {
    let server = Server::start();
    let mut c = mc(&server);
    assert_eq!(c.ask("add q 0 0 1"), "CLIENT_ERROR unknown command \"add\"");
    assert_eq!(c.ask("incr q 1"), "CLIENT_ERROR unknown command \"incr\"");
    assert_eq!(
        c.ask("set q 0 0 abc"),
        "CLIENT_ERROR bad byte count \"abc\""
    );
    assert_eq!(c.ask("set q 0"), "CLIENT_ERROR missing byte count");
    assert_eq!(c.ask("confirm q x"), "CLIENT_ERROR bad count \"x\"");
    assert_eq!(c.ask("confirm q"), "CLIENT_ERROR missing count");
    assert_eq!(c.ask("monitor q"), "CLIENT_ERROR missing timeout");
    assert_eq!(c.ask("get q/t=soon"), "CLIENT_ERROR bad timeout \"t=soon\"");
    assert_eq!(c.ask("delete"), "CLIENT_ERROR missing queue name");
    // A bad field with a usable byte count: the data block is skipped.
    c.send("set q x 0 3\r\nabc\r\n");
    assert_eq!(c.line(), "CLIENT_ERROR bad flags \"x\"");
    // A line over 8 KiB.
    c.send(format!("get {}\r\n", "x".repeat(10_000)));
    assert_eq!(c.line(), "CLIENT_ERROR line longer than 8192 bytes");
    // Bad data block terminator.
    c.send("set q 0 0 1\r\nabc\r\n");
    assert_eq!(c.line(), "CLIENT_ERROR bad data chunk");
    // The connection is still fine.
    store(&mut c, "q", "ok");
    assert_eq!(get(&mut c, "q").as_deref(), Some("ok"));
}

#[test]
fn an_oversized_set_is_refused_and_the_connection_closed() {
    let server = Server::start();
    let mut c = mc(&server);
    // One byte over the 16 MiB default item limit: refused on its line,
    // before any data, and nothing after it is read.
    let len = 16 * 1024 * 1024 + 1;
    c.send(format!("set big 0 0 {len}\r\nzzzz"));
    assert_eq!(
        c.line(),
        "SERVER_ERROR object too large for cache (limit 16777216 bytes)"
    );
    c.expect_closed();
    let mut other = mc(&server);
    assert_eq!(get(&mut other, "big"), None);
    assert_eq!(stats(&mut other)["protocol_errors"], "1");
}

#[test]
fn a_data_block_must_end_with_crlf_at_its_announced_length() {
    let server = Server::start();
    let mut c = mc(&server);
    // Announces 3 bytes but sends 2 and a line end: "d1\r" must not be
    // stored. (The server knows only once the 5 bytes it expects are in.)
    c.send("set bc 0 0 3\r\nd1\r\nset bc 0 0 2\r\nok\r\n");
    assert_eq!(c.line(), "CLIENT_ERROR bad data chunk");
    assert_eq!(c.line(), "STORED");
    assert_eq!(get(&mut c, "bc").as_deref(), Some("ok"));
    assert_eq!(get(&mut c, "bc"), None);
}

#[test]
fn quit_closes_the_connection() {
    let server = Server::start();
    let mut c = mc(&server);
    c.send("quit\r\n");
    c.expect_closed();
}

#[test]
fn shutdown_stops_the_server_cleanly() {
    let server = Server::start();
    let mut c = mc(&server);
    store(&mut c, "q", "x");
    c.send("shutdown\r\n");
    c.expect_closed();
    server.wait_for_log("stopped", Duration::from_secs(20));
}

#[test]
fn worker_loops_drain_a_queue_exactly_once() {
    let server = Server::start();
    let mut producer = mc(&server);
    let total = 2000;
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let addr = server.memcache.unwrap();
            std::thread::spawn(move || {
                let mut c = Raw::connect(addr);
                let mut seen = Vec::new();
                // The normal worker loop: confirm the previous item, open the next.
                while let Some(item) = {
                    c.send("get work/close/open/t=2000\r\n");
                    value(&mut c)
                } {
                    seen.push(item);
                }
                assert_eq!(c.ask("get work/close"), "END");
                seen
            })
        })
        .collect();
    for i in 0..total {
        store(&mut producer, "work", &format!("item-{i}"));
    }
    let mut all = HashSet::new();
    let mut count = 0;
    for w in workers {
        for item in w.join().unwrap() {
            count += 1;
            assert!(all.insert(item.clone()), "{item} delivered twice");
        }
    }
    assert_eq!((count, all.len()), (total, total));
    let s = stats(&mut producer);
    assert_eq!(
        (
            s["queue_work_items"].as_str(),
            s["queue_work_open_transactions"].as_str()
        ),
        ("0", "0")
    );
}

#[test]
fn a_client_that_half_closes_after_its_gets_still_gets_every_item() {
    // `printf 'get q\r\n...' | nc -N`: the end of input arrives while gets
    // wait for their removal to be journaled (fsync'd, here, to make the wait
    // long); every item taken must be sent.
    let dir = tempfile::tempdir().unwrap();
    let always = [("KESTREL_DEFAULT_QUEUE__SYNC_JOURNAL", "always")];
    let server = Server::start_with_env(dir.path(), &[], &always);
    let mut c = mc(&server);
    for i in 0..20 {
        store(&mut c, "half", &format!("item{i:02}"));
    }
    let mut once = mc(&server);
    once.send("get half\r\n".repeat(20));
    once.shutdown_write();
    for i in 0..20 {
        assert_eq!(value(&mut once).as_deref(), Some(&*format!("item{i:02}")));
    }
    once.expect_closed();
    assert_eq!(get(&mut c, "half"), None);
}

#[test]
fn replies_before_a_blocking_get_are_sent_while_it_waits() {
    let server = Server::start();
    let mut c = mc(&server);
    // One packet: a set, then a get that waits for an item.
    c.send("set a 0 0 1\r\nx\r\nget b/t=10000\r\n");
    // STORED comes now, not when the get ends ...
    assert_eq!(c.line(), "STORED");
    // ... so the client can react to it, here by feeding the waiting get.
    store(&mut mc(&server), "b", "fed");
    assert_eq!(value(&mut c).as_deref(), Some("fed"));
}

#[test]
fn absurd_numbers_are_refused_without_harm() {
    let server = Server::start();
    let mut c = mc(&server);
    store(&mut c, "big", "x");
    c.send("monitor big 18446744073709551615 1\r\n");
    assert_eq!(value(&mut c).as_deref(), Some("x"));
    assert_eq!(c.line(), "END");
    c.send("set big 0 0 18446744073709551615\r\n");
    assert_eq!(
        c.line(),
        "SERVER_ERROR object too large for cache (limit 16777216 bytes)"
    );
    c.expect_closed();
    // The server is unharmed; the read the closed connection held open is back.
    let mut other = mc(&server);
    store(&mut other, "big", "y");
    assert_eq!(get(&mut other, "big").as_deref(), Some("x"));
    assert_eq!(get(&mut other, "big").as_deref(), Some("y"));
}

#[test]
fn client_timeout_closes_idle_connections_but_not_slow_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("KESTREL_CLIENT_TIMEOUT", "3s")];
    let server = Server::start_with_env(dir.path(), &[], &env);
    // An upload that takes longer than the timeout, but never pauses for
    // more than a third of it, is not idle. (The pauses are the behaviour
    // under test; each leaves two seconds to a loaded machine.)
    let started = Instant::now();
    let mut slow = mc(&server);
    slow.send("set slow 0 0 6\r\n");
    for piece in ["ab", "cd", "ef", "\r\n"] {
        std::thread::sleep(Duration::from_secs(1));
        slow.send(piece);
    }
    assert_eq!(slow.line(), "STORED");
    assert!(started.elapsed() > Duration::from_secs(3));
    // A connection that sends nothing is closed.
    let started = Instant::now();
    let mut idle = mc(&server);
    idle.expect_closed();
    assert!(started.elapsed() >= Duration::from_secs(3));
}
