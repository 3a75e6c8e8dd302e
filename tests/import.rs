//! `kestrel import-kestrel` on Kestrel 2.x journal files built here byte by
//! byte from the format (every opcode, rotated files, packs, a temporary
//! file, open reads, expiry, a torn tail, a bad opcode, a fanout child),
//! then the server started on the result and read over memcache and Thrift.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Server, TKestrelSyncClient, drain, get, mc, set};

/// Kestrel's opcodes (Journal.scala).
const ADD: u8 = 0;
const REMOVE: u8 = 1;
const ADDX: u8 = 2;
const REMOVE_TENTATIVE: u8 = 3;
const SAVE_XID: u8 = 4;
const UNREMOVE: u8 = 5;
const CONFIRM_REMOVE: u8 = 6;
const ADD_XID: u8 = 7;
const CONTINUE: u8 = 8;
const REMOVE_TENTATIVE_XID: u8 = 9;

/// A Kestrel journal file, record by record, little-endian.
#[derive(Default)]
struct Journal(Vec<u8>);

impl Journal {
    fn op(mut self, op: u8) -> Self {
        self.0.push(op);
        self
    }

    fn xid(mut self, op: u8, xid: i32) -> Self {
        self.0.push(op);
        self.0.extend(xid.to_le_bytes());
        self
    }

    /// The ADDX block: size, add time, expiry, data.
    fn block(mut self, data: &str, added_ms: i64, expires_ms: i64) -> Self {
        self.0.extend((data.len() as i32 + 16).to_le_bytes());
        self.0.extend(added_ms.to_le_bytes());
        self.0.extend(expires_ms.to_le_bytes());
        self.0.extend(data.as_bytes());
        self
    }

    fn addx(self, data: &str, added_ms: i64, expires_ms: i64) -> Self {
        self.op(ADDX).block(data, added_ms, expires_ms)
    }

    fn add(self, data: &str) -> Self {
        self.addx(data, now() - 1000, 0)
    }

    /// Starling's ADD: size, expiry in epoch seconds, data.
    fn legacy_add(mut self, data: &str, expires_secs: i32) -> Self {
        self.0.push(ADD);
        self.0.extend((data.len() as i32 + 4).to_le_bytes());
        self.0.extend(expires_secs.to_le_bytes());
        self.0.extend(data.as_bytes());
        self
    }

    fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend(bytes);
        self
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn write(&self, dir: &Path, name: &str) {
        std::fs::write(dir.join(name), &self.0).unwrap();
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

const HOUR: i64 = 3_600_000;

/// Builds a Kestrel queue directory; returns the offset of the torn tail in
/// `jobs` and of the bad opcode in `broken.5000`.
fn kestrel_dir(dir: &Path) -> (usize, usize) {
    // jobs: superseded rotated file, a pack, a rotated file, the live file.
    Journal::default().add("stale").write(dir, "jobs.1000");
    Journal::default()
        .addx("p0", now() - 2 * HOUR, 0)
        .xid(REMOVE_TENTATIVE_XID, 7) // p0 opened in the pack: still open at the end
        .add("a1")
        .add("a2")
        .write(dir, "jobs.2000.pack");
    Journal::default()
        .add("never: a temporary file")
        .write(dir, "jobs~~2500");
    Journal::default()
        .legacy_add("legacy", 0)
        .op(REMOVE) // a1
        .xid(SAVE_XID, 20)
        .op(REMOVE_TENTATIVE) // opens a2 as xid 21
        .xid(CONFIRM_REMOVE, 21)
        .xid(ADD_XID, 30)
        .block("ax", now() - HOUR, 0)
        .xid(REMOVE_TENTATIVE_XID, 31) // opens legacy
        .xid(UNREMOVE, 31) // legacy back at the head
        .write(dir, "jobs.3000");
    let live = Journal::default()
        .add("b1")
        .xid(REMOVE_TENTATIVE_XID, 40) // opens legacy
        .xid(CONTINUE, 40)
        .block("c1", now(), 0) // legacy confirmed, c1 appended
        .addx("e1", now() - HOUR, now() - 1000) // expired
        .addx("b2", now(), now() + HOUR)
        .xid(REMOVE_TENTATIVE_XID, 41); // opens ax: still open at the end
    let torn = live.len();
    live.raw(&Journal::default().add("torn").0[..10])
        .write(dir, "jobs");
    // broken: a bad opcode ends its rotated file; the live file goes on.
    let rotated = Journal::default().add("x1");
    let bad = rotated.len();
    rotated.raw(&[42]).add("never").write(dir, "broken.5000");
    Journal::default().add("x2").write(dir, "broken");
    // old: Starling's records only.
    Journal::default()
        .legacy_add("l1", 0)
        .legacy_add("l2", i32::MAX)
        .op(REMOVE_TENTATIVE) // xid 1: l1
        .xid(UNREMOVE, 1)
        .write(dir, "old");
    // delayed: an expired item moves to expire_to_queue.
    Journal::default()
        .addx("d1", now() - HOUR, now() - 1)
        .add("d2")
        .write(dir, "delayed");
    // feed and its fanout child, as Kestrel journals them.
    Journal::default().add("f1").write(dir, "feed");
    Journal::default().add("f1").write(dir, "feed+audit");
    (torn, bad)
}

fn import(args: &[&str]) -> Output {
    Command::new(common::binary())
        .arg("import-kestrel")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every file of `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn imports_kestrel_journals_as_kestrel_replayed_them() {
    let from = tempfile::tempdir().unwrap();
    let (torn, bad) = kestrel_dir(from.path());
    let before = snapshot(from.path());
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("kestrel.toml");
    std::fs::write(&config, "[queues.delayed]\nexpire_to_queue = \"ready\"\n").unwrap();
    let data_dir = data.path().join("data");
    let (from_s, data_s, config_s) = (
        from.path().to_str().unwrap(),
        data_dir.to_str().unwrap(),
        config.to_str().unwrap(),
    );

    // A dry run reports and writes nothing.
    let dry = import(&[
        "--from",
        from_s,
        "--data-dir",
        data_s,
        "--config",
        config_s,
        "--dry-run",
    ]);
    assert_eq!(dry.status.code(), Some(3), "{}", text(&dry));
    assert!(text(&dry).contains("would import"), "{}", text(&dry));
    assert!(!data_dir.exists(), "a dry run creates nothing");

    let run = import(&["--from", from_s, "--data-dir", data_s, "--config", config_s]);
    let out = text(&run);
    assert_eq!(
        run.status.code(),
        Some(3),
        "damage is in the exit status:\n{out}"
    );
    let line = |queue: &str| -> Vec<String> {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(queue))
            .unwrap_or_else(|| panic!("no line for {queue}:\n{out}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    // queue, files, journal bytes, items, bytes, rolled back, expired,
    // skipped (journal bytes not replayed because of damage)
    let jobs = line("jobs");
    assert_eq!(jobs[1], "3", "pack, rotated, live:\n{out}");
    assert_eq!(jobs[3..], ["5", "10", "2", "1", "10"], "{out}");
    assert_eq!(line("broken")[3..], ["2", "4", "0", "0", "27"], "{out}");
    assert!(out.contains(&format!("at offset {torn}")), "{out}");
    assert!(
        out.contains(&format!("broken.5000 at offset {bad} (unknown opcode 42)")),
        "{out}"
    );
    assert!(out.contains("jobs.1000: superseded by a pack"), "{out}");
    assert!(out.contains("jobs~~2500: a temporary file"), "{out}");
    assert!(
        out.contains("delayed: 1 expired items moved to ready"),
        "{out}"
    );
    assert_eq!(
        snapshot(from.path()),
        before,
        "Kestrel's files are never modified"
    );

    let server = Server::start_in(&data_dir, &["--config", config_s]);
    // Every replayed item, in Kestrel's order: open reads back at the head.
    let mut m = mc(&server);
    let mut jobs = Vec::new();
    while let Some(item) = get(&mut m, "jobs") {
        jobs.push(item);
    }
    assert_eq!(jobs, ["p0", "ax", "b1", "c1", "b2"]);
    assert_eq!(drain(&server, "broken"), ["x1", "x2"]);
    assert_eq!(drain(&server, "old"), ["l1", "l2"]);
    assert_eq!(drain(&server, "delayed"), ["d2"]);
    assert_eq!(drain(&server, "ready"), ["d1"]);
    // The fanout child is a child here too.
    set(&mut m, "feed", "f2");
    assert_eq!(drain(&server, "feed+audit"), ["f1", "f2"]);
    assert_eq!(drain(&server, "feed"), ["f1", "f2"]);
}

#[test]
fn add_times_survive_the_import() {
    let from = tempfile::tempdir().unwrap();
    Journal::default()
        .addx("old", now() - 2 * HOUR, 0)
        .write(from.path(), "aged");
    let data = tempfile::tempdir().unwrap();
    let data_s = data.path().to_str().unwrap();
    let run = import(&[
        "--from",
        from.path().to_str().unwrap(),
        "--data-dir",
        data_s,
    ]);
    assert!(run.status.success(), "{}", text(&run));
    let server = Server::start_in(data.path(), &[]);
    let age = server.client().peek("aged".into()).unwrap().age.unwrap();
    assert!(
        (2 * HOUR - 60_000..3 * HOUR).contains(&age),
        "the head item is two hours old: {age} ms"
    );
}

#[test]
fn refuses_while_a_server_runs_on_the_data_directory() {
    let from = tempfile::tempdir().unwrap();
    Journal::default().add("x").write(from.path(), "q");
    let server = Server::start();
    let run = import(&[
        "--from",
        from.path().to_str().unwrap(),
        "--data-dir",
        server.data_dir().to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));
    assert!(
        text(&run).contains(&server.pid().to_string()),
        "names the server holding the directory: {}",
        text(&run)
    );
    let mut m = mc(&server);
    assert_eq!(get(&mut m, "q"), None, "nothing was imported");
}

#[test]
fn only_the_queues_asked_for() {
    let from = tempfile::tempdir().unwrap();
    Journal::default().add("a").write(from.path(), "one");
    Journal::default().add("b").write(from.path(), "two");
    let data = tempfile::tempdir().unwrap();
    let (from_s, data_s) = (from.path().to_str().unwrap(), data.path().to_str().unwrap());
    let missing = import(&["--from", from_s, "--data-dir", data_s, "--queue", "three"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing).contains("three: no such queue"),
        "{}",
        text(&missing)
    );
    let run = import(&["--from", from_s, "--data-dir", data_s, "--queue", "two"]);
    assert!(run.status.success(), "{}", text(&run));
    let server = Server::start_in(data.path(), &[]);
    assert_eq!(drain(&server, "two"), ["b"]);
    assert!(drain(&server, "one").is_empty());
}
