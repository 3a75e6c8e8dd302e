//! Configuration and queue policies over real sockets: every setting rule,
//! every policy, in every protocol it touches.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::kestrel_gen::Status;
use common::{Raw, Server, TKestrelSyncClient, eventually, stat};

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

fn mc(server: &Server) -> Raw {
    Raw::connect(server.memcache.unwrap())
}

fn text(server: &Server) -> Raw {
    Raw::connect(server.text.unwrap())
}

fn set(c: &mut Raw, queue: &str, data: &str) -> String {
    c.send(format!("set {queue} 0 0 {}\r\n{data}\r\n", data.len()));
    c.line()
}

fn get(c: &mut Raw, key: &str) -> Option<String> {
    c.send(format!("get {key}\r\n"));
    let line = c.line();
    if line == "END" {
        return None;
    }
    let len: usize = line.rsplit(' ').next().unwrap().parse().unwrap();
    let data = c.bytes(len + 2);
    assert_eq!(c.line(), "END");
    Some(String::from_utf8(data[..len].to_vec()).unwrap())
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
    assert_eq!(set(&mut c, "q", "a"), "STORED");
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
    assert_eq!(set(&mut c, "q", "x"), "STORED");
    assert_eq!(get(&mut c, "q").as_deref(), Some("x"));
}

#[test]
fn reload_applies_queue_settings_live_and_refuses_a_bad_file() {
    let (_d, path) = config("[queues.r]\nmax_items = 1\n");
    let server = start(&path);
    let mut c = mc(&server);
    assert_eq!(set(&mut c, "r", "1"), "STORED");
    assert_eq!(set(&mut c, "r", "2"), "NOT_STORED");
    std::fs::write(&path, "[queues.r]\nmax_items = 3\n").unwrap();
    assert_eq!(c.ask("reload"), "Reloaded config.");
    assert_eq!(set(&mut c, "r", "2"), "STORED");
    // A broken file is refused; the running settings stay.
    std::fs::write(&path, "[queues.r]\nmax_items = \"many\"\n").unwrap();
    let reply = c.ask("reload");
    assert!(
        reply.starts_with("SERVER_ERROR") && reply.contains("max_items"),
        "{reply}"
    );
    assert_eq!(set(&mut c, "r", "3"), "STORED");
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
    assert_eq!(set(&mut c, "m", "a"), "STORED");
    assert_eq!(set(&mut c, "m", "b"), "STORED");
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
    assert_eq!(set(&mut c, "m", "c"), "STORED");
}

#[test]
fn a_full_queue_can_discard_its_oldest_items_instead() {
    let (_d, path) = config(
        "[default_queue]\nmax_items = 2\ndiscard_old_when_full = true\n[queues.bytes]\nmax_items = 100\nmax_size = 6\n",
    );
    let server = start(&path);
    let mut c = mc(&server);
    for item in ["a", "b", "c"] {
        assert_eq!(set(&mut c, "d", item), "STORED");
    }
    assert_eq!(get(&mut c, "d/peek").as_deref(), Some("b"));
    assert_eq!(stat(&mut c, "queue_d_discarded"), Some(1));
    for item in ["aaa", "bbb", "ccc"] {
        assert_eq!(set(&mut c, "bytes", item), "STORED");
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
    assert_eq!(set(&mut c, "s", "four"), "STORED");
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
    assert_eq!(set(&mut c, "capped", "short"), "STORED");
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
    assert_eq!(set(&mut c, "delay", "later"), "STORED");
    // Nothing is ready at first; the item shows up once its delay is over.
    assert_eq!(get(&mut c, "ready"), None);
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
    assert_eq!(set(&mut c, "news", "one"), "STORED");
    for q in ["news", "news+a", "news+b"] {
        assert_eq!(get(&mut c, q).as_deref(), Some("one"), "{q}");
    }
    server.stop();
    let server = Server::start_in(dir.path(), &[]);
    let mut c = mc(&server);
    assert_eq!(set(&mut c, "news", "two"), "STORED");
    assert_eq!(c.ask("delete news+b"), "DELETED");
    assert_eq!(set(&mut c, "news", "three"), "STORED");
    assert_eq!(get(&mut c, "news+a").as_deref(), Some("two"));
    assert_eq!(get(&mut c, "news+a").as_deref(), Some("three"));
    assert_eq!(get(&mut c, "news+b"), None);
    // A child can be used directly too.
    assert_eq!(set(&mut c, "news+a", "own"), "STORED");
    assert_eq!(get(&mut c, "news+a").as_deref(), Some("own"));
    assert_eq!(stat(&mut c, "queue_news_items"), Some(2));
}

#[test]
fn a_fanout_only_parent_stores_nothing() {
    let (_d, path) = config("[queues.feed]\nfanout_only = true\n");
    let server = start(&path);
    let mut c = mc(&server);
    assert_eq!(set(&mut c, "feed", "lost"), "STORED"); // no children yet: nowhere to go
    assert_eq!(get(&mut c, "feed+x"), None);
    assert_eq!(set(&mut c, "feed", "copied"), "STORED");
    assert_eq!(get(&mut c, "feed+x").as_deref(), Some("copied"));
    assert_eq!(stat(&mut c, "queue_feed_items"), Some(0));
    assert_eq!(get(&mut c, "feed"), None);
}

#[test]
fn aliases_route_puts_and_have_nothing_to_read() {
    let (_d, path) = config("[aliases]\nboth = [\"left\", \"right\"]\n");
    let server = start(&path);
    let mut c = mc(&server);
    assert_eq!(set(&mut c, "both", "x"), "STORED");
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
    assert_eq!(set(&mut c, "busy", "x"), "STORED");
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
    assert_eq!(set(&mut c, "q", "held"), "STORED");
    assert_eq!(set(&mut c, "q", "more"), "STORED");
    assert_eq!(get(&mut c, "q/open").as_deref(), Some("held"));

    assert_eq!(c.ask("status readonly"), "END");
    assert!(set(&mut c, "q", "no").starts_with("SERVER_ERROR"));
    x.send("put q:\nno\n\n");
    assert!(x.line().starts_with("-server is READONLY"));
    assert!(t.put("q".into(), vec![b"no".to_vec()], 0).is_err());
    assert_eq!(t.current_status().unwrap(), Status::READ_ONLY);
    let mut reader = mc(&server);
    assert_eq!(get(&mut reader, "q").as_deref(), Some("more")); // reads still work

    t.set_status(Status::QUIESCENT).unwrap();
    assert_eq!(x.ask("status"), ":QUIESCENT");
    assert!(c.ask("get q").starts_with("SERVER_ERROR"));
    assert!(x.ask("get q").starts_with("-server is QUIESCENT"));
    assert!(t.get("q".into(), 1, 0, 0).is_err());
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
    let (_d, path) = config("status_change_grace_period = \"400ms\"\n");
    let server = start(&path);
    let mut c = mc(&server);
    let asked = Instant::now();
    assert_eq!(c.ask("status readonly"), "END");
    assert_eq!(c.ask("status"), "UP");
    assert!(
        c.ask("status quiescent")
            .starts_with("SERVER_ERROR a change to READONLY is already pending")
    );
    eventually("READONLY", || c.ask("status") == "READONLY");
    assert!(asked.elapsed() >= Duration::from_millis(400));
    // Looser changes are immediate.
    assert_eq!(c.ask("status up"), "END");
    assert_eq!(c.ask("status"), "UP");
}
