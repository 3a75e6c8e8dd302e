//! Configuration and queue policies over real sockets: every setting rule,
//! every policy, in every protocol it touches.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::kestrel_gen::Status;
use common::{
    Server, TKestrelSyncClient, drain, eventually, get, mc, message, set, stat, stats, store, text,
};

/// Writes `toml` as the config file in a fresh directory.
fn config(toml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kestrel.toml");
    std::fs::write(&path, toml).unwrap();
    (dir, path)
}

fn start(path: &Path) -> Server {
    Server::start_with(&["--config", path.to_str().unwrap()])
}

#[test]
fn queue_settings_inherit_default_then_queue_then_fanout_child() {
    let (_d, path) = config(
        r#"
        [default_queue]
        max_items = 3
        [queues.small]
        max_items = 1
        [queues."small+child"]
        max_items = 2
        "#,
    );
    let server = start(&path);
    let mut c = mc(&server);
    for (queue, limit) in [("other", 3), ("small", 1), ("small+child", 2)] {
        for i in 0..limit {
            assert_eq!(set(&mut c, queue, &format!("{i}")), "STORED", "{queue}");
        }
        assert_eq!(set(&mut c, queue, "over"), "NOT_STORED", "{queue}");
    }
}

#[test]
fn environment_beats_the_file_and_the_command_line_beats_both() {
    let (dir, path) = config("[default_queue]\nmax_items = 3\n");
    let server = Server::start_with_env(
        dir.path(),
        &["--config", path.to_str().unwrap()],
        &[
            ("KESTREL_DEFAULT_QUEUE__MAX_ITEMS", "1"),
            ("KESTREL_MEMCACHE_PORT", "off"),
        ],
    );
    // The harness's --memcache-port 0 overrides KESTREL_MEMCACHE_PORT=off.
    let mut c = mc(&server);
    store(&mut c, "q", "a");
    assert_eq!(set(&mut c, "q", "b"), "NOT_STORED");
}

#[test]
fn a_bad_config_file_stops_startup_naming_file_key_and_problem() {
    let (dir, path) = config("[default_queue]\nmax_size = \"ten bytes\"\n");
    let out = Command::new(common::binary())
        .args(["--config", path.to_str().unwrap(), "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(path.to_str().unwrap()), "{err}");
    assert!(err.contains("max_size"), "{err}");
    assert!(err.contains("bad size"), "{err}");
}

#[test]
fn the_shipped_config_file_loads() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kestrel.toml");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), &["--config", shipped.to_str().unwrap()]);
    let mut c = mc(&server);
    store(&mut c, "q", "x");
    assert_eq!(get(&mut c, "q").as_deref(), Some("x"));
}

#[test]
fn reload_applies_queue_settings_live_and_refuses_a_bad_file() {
    let (_d, path) = config("[queues.r]\nmax_items = 1\n");
    let server = start(&path);
    let mut c = mc(&server);
    store(&mut c, "r", "1");
    assert_eq!(set(&mut c, "r", "2"), "NOT_STORED");
    std::fs::write(&path, "[queues.r]\nmax_items = 3\n").unwrap();
    assert_eq!(c.ask("reload"), "Reloaded config.");
    store(&mut c, "r", "2");
    // A broken file is refused; the running settings stay.
    std::fs::write(&path, "[queues.r]\nmax_items = \"many\"\n").unwrap();
    let reply = c.ask("reload");
    assert!(
        reply.starts_with("SERVER_ERROR") && reply.contains("max_items"),
        "{reply}"
    );
    store(&mut c, "r", "3");
    assert_eq!(set(&mut c, "r", "4"), "NOT_STORED");
    // SIGHUP reloads too; items and connections survive.
    std::fs::write(&path, "[queues.r]\nmax_items = 4\n").unwrap();
    server.signal("HUP");
    eventually("the SIGHUP reload", || set(&mut c, "r", "4") == "STORED");
    assert_eq!(stat(&mut c, "queue_r_items"), Some(4));
}

#[test]
fn a_full_queue_refuses_puts_in_every_protocol() {
    let (_d, path) = config("[default_queue]\nmax_items = 2\n");
    let server = start(&path);
    let mut c = mc(&server);
    store(&mut c, "m", "a");
    store(&mut c, "m", "b");
    assert_eq!(set(&mut c, "m", "c"), "NOT_STORED");
    let mut t = server.client();
    assert_eq!(
        t.put(
            "t".into(),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()],
            0
        )
        .unwrap(),
        2
    );
    let mut x = text(&server);
    x.send("put x:\na\nb\nc\n\n");
    assert_eq!(x.line(), "+2");
    assert_eq!(get(&mut c, "m").as_deref(), Some("a"));
    store(&mut c, "m", "c");
}

#[test]
fn a_full_queue_can_discard_its_oldest_items_instead() {
    let (_d, path) = config(
        "[default_queue]\nmax_items = 2\ndiscard_old_when_full = true\n[queues.bytes]\nmax_items = 100\nmax_size = 6\n",
    );
    let server = start(&path);
    let mut c = mc(&server);
    for item in ["a", "b", "c"] {
        store(&mut c, "d", item);
    }
    assert_eq!(get(&mut c, "d/peek").as_deref(), Some("b"));
    assert_eq!(stat(&mut c, "queue_d_discarded"), Some(1));
    for item in ["aaa", "bbb", "ccc"] {
        store(&mut c, "bytes", item);
    }
    assert_eq!(
        (
            stat(&mut c, "queue_bytes_items"),
            stat(&mut c, "queue_bytes_bytes")
        ),
        (Some(2), Some(6))
    );
}

#[test]
fn items_over_max_item_size_are_always_refused() {
    let (_d, path) = config("[default_queue]\nmax_item_size = 4\ndiscard_old_when_full = true\n");
    let server = start(&path);
    let mut c = mc(&server);
    store(&mut c, "s", "four");
    assert_eq!(set(&mut c, "s", "fives"), "NOT_STORED");
    let mut t = server.client();
    assert_eq!(
        t.put(
            "s".into(),
            vec![b"ok".to_vec(), b"too long".to_vec(), b"ok".to_vec()],
            0
        )
        .unwrap(),
        1
    );
    let mut x = text(&server);
    x.send("put s:\nlonger\n\n");
    assert_eq!(x.line(), "+0");
}

#[test]
fn expiry_in_every_protocol_and_max_age_caps_it() {
    let (_d, path) = config("[queues.capped]\nmax_age = \"300ms\"\n");
    let server = start(&path);
    let mut c = mc(&server);
    c.send("set e 0 1 4\r\nmemc\r\n");
    assert_eq!(c.line(), "STORED");
    let mut t = server.client();
    t.put("e".into(), vec![b"thrift".to_vec()], 1000).unwrap();
    let mut x = text(&server);
    x.send("put e 1000:\ntext\n\n");
    assert_eq!(x.line(), "+1");
    c.send("set e 0 3600 4\r\nkept\r\n");
    assert_eq!(c.line(), "STORED");
    // max_age caps even "never".
    store(&mut c, "capped", "short");
    std::thread::sleep(Duration::from_millis(1100)); // lifetimes under test: 1 s and 300 ms
    assert_eq!(get(&mut c, "e").as_deref(), Some("kept"));
    assert_eq!(get(&mut c, "e"), None);
    assert_eq!(get(&mut c, "capped"), None);
    assert_eq!(stat(&mut c, "queue_e_expired_items"), Some(3));
}

#[test]
fn expire_to_queue_makes_a_delay_queue() {
    let (_d, path) = config(
        "expiration_timer_frequency = \"50ms\"\n[queues.delay]\nmax_age = \"200ms\"\nexpire_to_queue = \"ready\"\n",
    );
    let server = start(&path);
    let mut c = mc(&server);
    let start = Instant::now();
    store(&mut c, "delay", "later");
    // The item shows up once its delay is over, never before: the get that
    // finds it ends at least 200 ms after the put began, however fast or
    // slow the machine is.
    assert_eq!(get(&mut c, "ready/t=5000").as_deref(), Some("later"));
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert_eq!(stat(&mut c, "queue_delay_items"), Some(0));
    assert_eq!(stat(&mut c, "queue_delay_expired_items"), Some(1));
}

#[test]
fn the_sweep_expires_items_nobody_reads_a_few_at_a_time() {
    let (_d, path) =
        config("expiration_timer_frequency = \"1s\"\n[queues.swept]\nmax_expire_sweep = 2\n");
    let server = start(&path);
    let mut t = server.client();
    t.put("swept".into(), (0..5).map(|i| vec![i]).collect(), 1)
        .unwrap();
    let mut c = mc(&server);
    let mut seen = vec![0];
    eventually("all five expired", || {
        let n = stat(&mut c, "queue_swept_expired_items").unwrap();
        if n != *seen.last().unwrap() {
            seen.push(n);
        }
        n == 5
    });
    // One sweep a second, two items per sweep, and nobody read the queue.
    for pair in seen.windows(2) {
        assert!(
            pair[1] - pair[0] <= 2,
            "a sweep expired more than two: {seen:?}"
        );
    }
    assert_eq!(stat(&mut c, "queue_swept_items"), Some(0));
}

#[test]
fn fanout_children_get_copies_and_are_remembered_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), &[]);
    let mut c = mc(&server);
    assert_eq!(get(&mut c, "news+a"), None); // children exist once used
    assert_eq!(get(&mut c, "news+b"), None);
    store(&mut c, "news", "one");
    for q in ["news", "news+a", "news+b"] {
        assert_eq!(get(&mut c, q).as_deref(), Some("one"), "{q}");
    }
    server.stop();
    let server = Server::start_in(dir.path(), &[]);
    let mut c = mc(&server);
    store(&mut c, "news", "two");
    assert_eq!(c.ask("delete news+b"), "DELETED");
    store(&mut c, "news", "three");
    assert_eq!(get(&mut c, "news+a").as_deref(), Some("two"));
    assert_eq!(get(&mut c, "news+a").as_deref(), Some("three"));
    assert_eq!(get(&mut c, "news+b"), None);
    // A child can be used directly too.
    store(&mut c, "news+a", "own");
    assert_eq!(get(&mut c, "news+a").as_deref(), Some("own"));
    assert_eq!(stat(&mut c, "queue_news_items"), Some(2));
}

#[test]
fn a_fanout_only_parent_stores_nothing() {
    let (_d, path) = config("[queues.feed]\nfanout_only = true\n");
    let server = start(&path);
    let mut c = mc(&server);
    store(&mut c, "feed", "lost"); // no children yet: nowhere to go
    assert_eq!(get(&mut c, "feed+x"), None);
    store(&mut c, "feed", "copied");
    assert_eq!(get(&mut c, "feed+x").as_deref(), Some("copied"));
    assert_eq!(stat(&mut c, "queue_feed_items"), Some(0));
    assert_eq!(get(&mut c, "feed"), None);
}

#[test]
fn aliases_route_puts_and_have_nothing_to_read() {
    let (_d, path) = config("[aliases]\nboth = [\"left\", \"right\"]\n");
    let server = start(&path);
    let mut c = mc(&server);
    store(&mut c, "both", "x");
    assert_eq!(get(&mut c, "both"), None);
    assert_eq!(get(&mut c, "left").as_deref(), Some("x"));
    assert_eq!(get(&mut c, "right").as_deref(), Some("x"));
    let mut t = server.client();
    assert_eq!(t.put("both".into(), vec![b"y".to_vec()], 0).unwrap(), 1);
    assert!(t.get("both".into(), 5, 0, 0).unwrap().is_empty());
    assert_eq!(c.ask("flush both"), "END");
    assert_eq!(stat(&mut c, "queue_left_items"), Some(1));
}

#[test]
fn empty_queues_older_than_max_queue_age_are_deleted() {
    let (_d, path) = config(
        "expiration_timer_frequency = \"50ms\"\n[default_queue]\nmax_queue_age = \"300ms\"\n",
    );
    let server = start(&path);
    let mut c = mc(&server);
    assert_eq!(get(&mut c, "idle"), None);
    store(&mut c, "busy", "x");
    eventually("the idle queue to go", || {
        stat(&mut c, "queue_idle_items").is_none()
    });
    assert_eq!(stat(&mut c, "queue_expires"), Some(1));
    assert_eq!(stat(&mut c, "queue_busy_items"), Some(1));
}

#[test]
fn status_in_every_protocol_and_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), &[]);
    let (mut c, mut x, mut t) = (mc(&server), text(&server), server.client());
    store(&mut c, "q", "held");
    store(&mut c, "q", "more");
    assert_eq!(get(&mut c, "q/open").as_deref(), Some("held"));

    assert_eq!(c.ask("status readonly"), "END");
    assert_eq!(
        set(&mut c, "q", "no"),
        "SERVER_ERROR server is READONLY: put refused"
    );
    x.send("put q:\nno\n\n");
    assert_eq!(x.line(), "-server is READONLY: put refused");
    let refused = message(t.put("q".into(), vec![b"no".to_vec()], 0).unwrap_err());
    assert_eq!(refused, "server is READONLY: put refused");
    assert_eq!(
        c.ask("flush q"),
        "SERVER_ERROR server is READONLY: flush refused"
    );
    assert_eq!(t.current_status().unwrap(), Status::READ_ONLY);
    let mut reader = mc(&server);
    assert_eq!(get(&mut reader, "q").as_deref(), Some("more")); // reads still work

    t.set_status(Status::QUIESCENT).unwrap();
    assert_eq!(x.ask("status"), ":QUIESCENT");
    assert_eq!(
        c.ask("get q"),
        "SERVER_ERROR server is QUIESCENT: get refused"
    );
    assert_eq!(x.ask("get q"), "-server is QUIESCENT: get refused");
    let refused = message(t.get("q".into(), 1, 0, 0).unwrap_err());
    assert_eq!(refused, "server is QUIESCENT: get refused");
    assert_eq!(c.ask("get q/close"), "END"); // confirming still works
    assert_eq!(stat(&mut c, "queue_q_open_transactions"), Some(0));

    server.stop();
    let server = Server::start_in(dir.path(), &[]);
    let mut c = mc(&server);
    assert_eq!(c.ask("status"), "QUIESCENT");
    let mut x = text(&server);
    assert_eq!(x.ask("status up"), "+0");
    assert_eq!(c.ask("status"), "UP");
}

#[test]
fn a_stricter_status_waits_out_the_grace_period() {
    // Long enough for the two round trips made inside it on a loaded machine.
    let (_d, path) = config("status_change_grace_period = \"3s\"\n");
    let server = start(&path);
    let mut c = mc(&server);
    let asked = Instant::now();
    assert_eq!(c.ask("status readonly"), "END");
    assert_eq!(c.ask("status"), "UP");
    assert_eq!(
        c.ask("status quiescent"),
        "SERVER_ERROR a change to READONLY is already pending"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "the test was too slow"
    );
    eventually("READONLY", || c.ask("status") == "READONLY");
    assert!(asked.elapsed() >= Duration::from_secs(3));
    // Looser changes are immediate.
    assert_eq!(c.ask("status up"), "END");
    assert_eq!(c.ask("status"), "UP");
}

/// configuration.md: with `expire_to_queue` the move is crash-safe (the
/// item is in the target queue before it leaves its own): a `kill -9`
/// before, during or after the moves loses nothing acknowledged; it may
/// deliver an item twice.
#[test]
fn expire_to_queue_loses_nothing_across_a_crash() {
    let (dir, path) = config(
        "expiration_timer_frequency = \"50ms\"\n[queues.delay]\nmax_age = \"300ms\"\nexpire_to_queue = \"ready\"\n",
    );
    let args = ["--config", path.to_str().unwrap()];
    let data = dir.path().join("data");
    let server = Server::start_in(&data, &args);
    let mut c = mc(&server);
    let moved: Vec<String> = (0..100).map(|i| format!("moved-{i:03}")).collect();
    for it in &moved {
        store(&mut c, "delay", it);
    }
    eventually("the first batch moved", || {
        stat(&mut c, "queue_ready_items") == Some(100)
    });
    // The second batch is acknowledged, then the server is killed while
    // its items wait out their delay or are being moved.
    let waiting: Vec<String> = (0..100).map(|i| format!("waiting-{i:03}")).collect();
    for it in &waiting {
        store(&mut c, "delay", it);
    }
    server.signal("KILL");
    drop(server);

    let server = Server::start_in(&data, &args);
    let mut c = mc(&server);
    eventually("the delay queue emptied after the restart", || {
        stat(&mut c, "queue_delay_items") == Some(0)
    });
    let found = drain(&server, "ready");
    let acked: std::collections::BTreeSet<&String> = moved.iter().chain(&waiting).collect();
    let found_set: std::collections::BTreeSet<&String> = found.iter().collect();
    assert_eq!(found_set, acked, "every acknowledged item, nothing else");
    // The first batch had been moved whole before the crash: it is there once.
    let first: Vec<&String> = found.iter().filter(|i| i.starts_with("moved-")).collect();
    assert_eq!(first, moved.iter().collect::<Vec<_>>());
}

/// configuration.md: `keep_journal = false` keeps the queue in memory only:
/// lost on restart, and its journal is removed at startup; other queues
/// keep theirs.
#[test]
fn keep_journal_false_keeps_a_queue_in_memory_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Journaled first (the default), so that there is a journal to remove.
    let server = Server::start_in(&data, &[]);
    let mut c = mc(&server);
    store(&mut c, "mem", "journaled");
    store(&mut c, "disk", "kept");
    assert!(server.stop().success());
    assert!(data.join("queues/mem").is_dir());

    let path = dir.path().join("kestrel.toml");
    std::fs::write(&path, "[queues.mem]\nkeep_journal = false\n").unwrap();
    let args = ["--config", path.to_str().unwrap()];
    let server = Server::start_in(&data, &args);
    assert!(
        !data.join("queues/mem").exists(),
        "journal removed at startup"
    );
    let mut c = mc(&server);
    assert_eq!(get(&mut c, "mem"), None);
    store(&mut c, "mem", "in memory");
    store(&mut c, "mem", "lost");
    assert_eq!(get(&mut c, "mem").as_deref(), Some("in memory"));
    assert!(!data.join("queues/mem").exists(), "nothing written");
    assert!(server.stop().success());

    let server = Server::start_in(&data, &args);
    assert_eq!(drain(&server, "mem"), Vec::<String>::new());
    assert_eq!(drain(&server, "disk"), ["kept"]);
}

/// docs/protocol.md and operations.md: names are case-sensitive, up to 255
/// bytes, and a name whose encoding is too long for a file name is stored
/// under a shortened one; each queue is its own across clean and unclean
/// restarts.
#[test]
fn capitals_and_long_names_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    // Capitals are %XX-encoded on disk: 255 of them take 765 bytes, three
    // times what a file name may be. The two long ones differ only at the end.
    let long_a = format!("{}a", "Q".repeat(254));
    let long_b = format!("{}b", "Q".repeat(254));
    let names = ["Jobs", "jobs", "JOBS", &long_a, &long_b, &"z".repeat(255)];
    let server = Server::start_in(dir.path(), &[]);
    let mut t = server.client();
    for (i, name) in names.iter().enumerate() {
        let items = vec![format!("first-{i}").into_bytes()];
        assert_eq!(t.put(name.to_string(), items, 0).unwrap(), 1, "{name}");
    }
    server.signal("KILL");
    drop(server);
    let server = Server::start_in(dir.path(), &[]);
    let mut t = server.client();
    for (i, name) in names.iter().enumerate() {
        let items = vec![format!("second-{i}").into_bytes()];
        assert_eq!(t.put(name.to_string(), items, 0).unwrap(), 1, "{name}");
    }
    assert!(server.stop().success());

    let server = Server::start_in(dir.path(), &[]);
    let listed = stats(&mut mc(&server));
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            listed
                .get(&format!("queue_{name}_items"))
                .map(String::as_str),
            Some("2"),
            "{name}"
        );
        assert_eq!(
            drain(&server, name),
            [format!("first-{i}"), format!("second-{i}")],
            "{name}"
        );
    }
    // One directory per queue, each a valid file name.
    let dirs: Vec<String> = std::fs::read_dir(dir.path().join("queues"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(dirs.len(), names.len(), "{dirs:?}");
    assert!(dirs.iter().all(|d| d.len() <= 255), "{dirs:?}");
}

/// configuration.md: a put to an alias is stored if every destination
/// stored it; flush and delete of an alias do nothing.
#[test]
fn an_alias_put_is_stored_only_if_every_destination_stored_it() {
    let (_d, path) =
        config("[aliases]\nboth = [\"left\", \"right\"]\n[queues.right]\nmax_items = 1\n");
    let server = start(&path);
    let mut c = mc(&server);
    store(&mut c, "both", "first");
    // right is full now: the alias does not claim the second was stored.
    assert_eq!(set(&mut c, "both", "second"), "NOT_STORED");
    let mut t = server.client();
    assert_eq!(t.put("both".into(), vec![b"third".to_vec()], 0).unwrap(), 0);
    let mut x = text(&server);
    x.send("put both:\nfourth\n\n");
    assert_eq!(x.line(), "+0");
    assert_eq!(stat(&mut c, "queue_right_items"), Some(1));
    // Delete and flush of the alias touch neither destination.
    assert_eq!(c.ask("delete both"), "DELETED");
    assert_eq!(c.ask("flush both"), "END");
    t.delete_queue("both".into()).unwrap();
    x.send("delete both\n");
    assert_eq!(x.line(), "+0");
    assert_eq!(get(&mut c, "right").as_deref(), Some("first"));
    assert_eq!(get(&mut c, "left").as_deref(), Some("first"));
    // Room again: the alias stores in both.
    store(&mut c, "both", "fifth");
    assert_eq!(get(&mut c, "right").as_deref(), Some("fifth"));
    assert!(!server.data_dir().join("queues/both").exists());
}

/// configuration.md: the sweep deletes a queue past `max_queue_age` only
/// once it is empty: no items, open reads or waiting readers.
#[test]
fn max_queue_age_spares_queues_with_open_reads_or_waiters() {
    let (_d, path) = config(
        "expiration_timer_frequency = \"50ms\"\n[default_queue]\nmax_queue_age = \"300ms\"\n",
    );
    let server = start(&path);
    let mut c = mc(&server);
    // "held": empty, but one read is open on it.
    let mut holder = mc(&server);
    store(&mut holder, "held", "x");
    assert_eq!(get(&mut holder, "held/open").as_deref(), Some("x"));
    // "awaited": empty, but a reader waits on it.
    let mut waiter = mc(&server);
    waiter.send("get awaited/t=60000\r\n");
    eventually("the waiter", || {
        stat(&mut c, "queue_awaited_waiters") == Some(1)
    });
    // Two probes, each made after the one before was deleted: once the
    // second is gone, a whole sweep ran after both queues under test were
    // past their age.
    for probe in ["probe1", "probe2"] {
        assert_eq!(get(&mut c, probe), None);
        eventually(probe, || {
            stat(&mut c, &format!("queue_{probe}_items")).is_none()
        });
    }
    assert_eq!(stat(&mut c, "queue_expires"), Some(2));
    assert_eq!(stat(&mut c, "queue_held_open_transactions"), Some(1));
    assert_eq!(stat(&mut c, "queue_awaited_waiters"), Some(1));
    // Both still work as queues, and go once nothing holds them.
    store(&mut c, "awaited", "fed");
    waiter.send("");
    assert_eq!(waiter.line(), "VALUE awaited 0 3");
    assert_eq!((waiter.line(), waiter.line()), ("fed".into(), "END".into()));
    assert_eq!(holder.ask("get held/close"), "END");
    eventually("both deleted", || {
        let s = stats(&mut c);
        !s.contains_key("queue_held_items") && !s.contains_key("queue_awaited_items")
    });
    assert_eq!(stat(&mut c, "queue_expires"), Some(4));
}
