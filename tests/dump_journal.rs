//! `kestrel dump-journal`, run as an operator runs it: the real binary on a
//! queue directory that a real server wrote (over memcache and Thrift),
//! stopped and while it runs; on journals damaged by hand; and on
//! directories that are not a queue's.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Server, TKestrelSyncClient, mc, store};

/// One finished run of `kestrel dump-journal …`.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn dump(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(common::binary())
        .arg("dump-journal")
        .arg(dir)
        .args(args)
        .output()
        .expect("run kestrel dump-journal");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Run {
    fn code(self, code: i32) -> Run {
        assert_eq!(self.code, code, "{self:#?}");
        self
    }

    /// Stdout's lines, each split into its words.
    fn words(&self) -> Vec<Vec<&str>> {
        self.stdout
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect()
    }

    /// `--records` output as (offset, kind, seq) per record.
    fn records(&self) -> Vec<(u64, String, u64)> {
        self.words()
            .iter()
            .filter_map(|w| {
                let seq = w.iter().find_map(|f| f.strip_prefix("seq="))?;
                Some((
                    w[1].parse().unwrap(),
                    w[2].to_string(),
                    seq.parse().unwrap(),
                ))
            })
            .collect()
    }

    /// `--items` output as (seq, state, data) per item.
    fn items(&self) -> Vec<(u64, String, String)> {
        self.stdout
            .lines()
            .map(|line| {
                let field = |name: &str| {
                    line.split(' ')
                        .find_map(|f| f.strip_prefix(name))
                        .unwrap_or_else(|| panic!("no {name} in {line}"))
                        .to_string()
                };
                let (_, data) = line.split_once(" data=").unwrap();
                (
                    field("seq=").parse().unwrap(),
                    field("state="),
                    data.to_string(),
                )
            })
            .collect()
    }

    /// The summary's line that starts with `label`.
    fn line(&self, label: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no line {label:?}:\n{}", self.stdout))
    }
}

fn queue_dir(data: &Path, queue: &str) -> PathBuf {
    data.join("queues").join(queue)
}

/// Every file of `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

/// Six items put over memcache and Thrift (seqs 1-6: "one" … "five" and a
/// binary one), the first taken, the second opened and held open by the
/// returned connection.
fn fill(server: &Server) -> common::Raw {
    let mut c = mc(server);
    for item in ["one", "two", "three"] {
        store(&mut c, "jobs", item);
    }
    let mut t = server.client();
    let items = vec![b"four".to_vec(), b"five".to_vec(), b"\xff\x00bin".to_vec()];
    assert_eq!(t.put("jobs".into(), items, 0).unwrap(), 3);
    assert_eq!(common::get(&mut c, "jobs").as_deref(), Some("one"));
    let mut open = mc(server);
    assert_eq!(common::get(&mut open, "jobs/open").as_deref(), Some("two"));
    open
}

/// What the queue serves, taken over Thrift, as bytes.
fn drain(server: &Server, queue: &str) -> Vec<Vec<u8>> {
    let mut c = server.client();
    let got = c.get(queue.into(), 100, 0, 0).unwrap();
    got.into_iter().map(|i| i.data.unwrap()).collect()
}

#[test]
fn summary_records_and_items_show_what_a_restart_serves() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(data.path(), &[]);
    let _open = fill(&server);
    // Killed with the read open: its OPEN has no ABORT after it.
    server.signal("KILL");
    server.wait();
    let dir = queue_dir(data.path(), "jobs");
    let before = snapshot(&dir);

    let summary = dump(&dir, &[]).code(0);
    assert_eq!(summary.line("queue"), "queue         jobs");
    let row: Vec<&str> = summary
        .line("0000000000000001.log")
        .split_whitespace()
        .collect();
    // segment, bytes, records, ADD, REMOVE, OPEN, ABORT, FLUSH, adds, live
    assert_eq!(row[2..], ["8", "6", "1", "1", "0", "0", "1-6", "5"]);
    assert_eq!(
        summary.line("  items"),
        "  items       5 (21 bytes), 1 open read rolled back among them"
    );
    assert_eq!(summary.line("  seqs"), "  seqs        from 2, next 7");
    assert_eq!(summary.line("damage"), "damage        none");

    let records = dump(&dir, &["--records"]).code(0);
    let kinds: Vec<(String, u64)> = records
        .records()
        .into_iter()
        .map(|(_, kind, seq)| (kind, seq))
        .collect();
    let mut expected: Vec<(String, u64)> = (1..=6).map(|s| ("ADD".into(), s)).collect();
    expected.extend([("REMOVE".into(), 1), ("OPEN".into(), 2)]);
    assert_eq!(kinds, expected, "{}", records.stdout);
    assert!(
        records
            .stdout
            .lines()
            .all(|l| l.starts_with("0000000000000001.log "))
    );
    // Each record starts where the one before ended.
    let offsets: Vec<u64> = records.records().iter().map(|r| r.0).collect();
    assert_eq!((offsets[0], offsets[1]), (0, 36));

    let items = dump(&dir, &["--items"]).code(0);
    let expected_items = [
        (2, "open", "two"),
        (3, "ready", "three"),
        (4, "ready", "four"),
        (5, "ready", "five"),
        (6, "ready", "\\xff\\u{0}bin"),
    ]
    .map(|(s, st, d)| (s, st.to_string(), d.to_string()));
    assert_eq!(items.items(), expected_items);
    let json = dump(&dir, &["--items", "--json"]).code(0);
    let lines: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["data"], "two");
    assert_eq!(lines[0]["open"], true);
    assert_eq!(lines[4]["data"]["hex"], "ff0062696e");
    let summary: serde_json::Value = serde_json::from_str(&dump(&dir, &["--json"]).stdout).unwrap();
    assert_eq!(summary["recovered"]["items"], 5);
    assert_eq!(summary["segments"][0]["kinds"]["OPEN"], 1);
    assert_eq!(summary["damage"], false);

    assert_eq!(snapshot(&dir), before, "dump-journal writes nothing");
    // A restart serves exactly what --items listed, in that order.
    let server = Server::start_in(data.path(), &[]);
    let served = drain(&server, "jobs");
    let listed: Vec<Vec<u8>> = vec![
        b"two".to_vec(),
        b"three".to_vec(),
        b"four".to_vec(),
        b"five".to_vec(),
        b"\xff\x00bin".to_vec(),
    ];
    assert_eq!(served, listed);
    server.stop();
    // The clean stop after that wrote a checkpoint, which the summary shows.
    let summary = dump(&dir, &[]).code(0);
    assert!(
        summary.stdout.contains("generation") && summary.stdout.contains("next seq      7"),
        "{}",
        summary.stdout
    );
}

#[test]
fn it_reads_a_journal_while_the_server_writes_it() {
    let data = tempfile::tempdir().unwrap();
    // Small segments, so that rollover and reclamation happen meanwhile.
    let server = Server::start_with_env(
        data.path(),
        &[],
        &[
            ("KESTREL_DEFAULT_QUEUE__MAX_JOURNAL_SIZE", "16KiB"),
            ("KESTREL_DEFAULT_QUEUE__SYNC_JOURNAL", "never"),
        ],
    );
    let _open = fill(&server);
    let dir = queue_dir(data.path(), "jobs");
    let items = dump(&dir, &["--items"]).code(0);
    assert_eq!(items.items()[0], (2, "open".into(), "two".into()));

    // A producer and a consumer run while the journal is dumped again and
    // again: a record being written is never damage, items stay in order.
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut c = server.client();
            while !stop.load(Ordering::Relaxed) {
                let batch = (0..20)
                    .map(|i| format!("item {i:04}").into_bytes())
                    .collect();
                c.put("jobs".into(), batch, 0).unwrap();
            }
        });
        s.spawn(|| {
            let mut c = server.client();
            while !stop.load(Ordering::Relaxed) {
                c.get("jobs".into(), 15, 0, 0).unwrap();
            }
        });
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut runs = 0;
        while Instant::now() < deadline || runs < 5 {
            for mode in [&[][..], &["--records"], &["--items"]] {
                let run = dump(&dir, mode);
                assert_eq!(run.code, 0, "{mode:?}: {run:#?}");
                if mode == ["--items"] {
                    let seqs: Vec<u64> = run.items().iter().map(|i| i.0).collect();
                    assert!(seqs.is_sorted(), "{seqs:?}");
                }
            }
            runs += 1;
        }
        stop.store(true, Ordering::Relaxed);
    });
    let summary = dump(&dir, &[]).code(0);
    assert!(summary.line("segment").contains("bytes"));
    // The server was never disturbed: it still serves, and holds its lock.
    let mut c = mc(&server);
    store(&mut c, "after", "x");
    assert_eq!(common::get(&mut c, "after").as_deref(), Some("x"));
}

#[test]
fn damage_is_reported_where_it_is_and_exits_3() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[]);
    drop(fill(&server));
    server.stop();
    let dir = queue_dir(data.path(), "jobs");
    let segment = dir.join("0000000000000001.log");
    let intact = dump(&dir, &["--records"]).code(0);
    let records = intact.records();
    let third = records.iter().find(|r| r.2 == 3 && r.1 == "ADD").unwrap().0;
    let fourth = records.iter().find(|r| r.2 == 4 && r.1 == "ADD").unwrap().0;

    // A flipped byte inside the third item's record, and a torn record at
    // the end (as a crash mid-write leaves it).
    let mut bytes = std::fs::read(&segment).unwrap();
    let end = bytes.len() as u64;
    bytes[third as usize + 12] ^= 0xff;
    bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3, 4, 5]);
    std::fs::write(&segment, &bytes).unwrap();

    let run = dump(&dir, &["--records"]).code(3);
    let damaged = format!(
        "0000000000000001.log {third:>10} DAMAGED bytes={} (no intact record; a start steps over these bytes)",
        fourth - third
    );
    assert!(run.stdout.lines().any(|l| l == damaged), "{}", run.stdout);
    let torn = run.stdout.lines().last().unwrap();
    assert!(
        torn.starts_with(&format!("0000000000000001.log {end:>10} TORN    bytes=9 ")),
        "{torn}"
    );
    assert!(!run.records().iter().any(|r| r.2 == 3 && r.1 == "ADD"));
    assert!(
        run.stderr.contains("1 live item has no intact record"),
        "{}",
        run.stderr
    );

    let items = dump(&dir, &["--items"]).code(3);
    let seqs: Vec<u64> = items.items().iter().map(|i| i.0).collect();
    // The open read was aborted when its connection closed.
    assert_eq!(seqs, [2, 4, 5, 6], "item 3 is lost, the rest served");
    assert!(
        items.stderr.contains(&format!("{third:>10} DAMAGED")),
        "{}",
        items.stderr
    );

    let summary = dump(&dir, &[]).code(3);
    assert!(
        summary.stdout.contains(&format!(
            "  offset {third}: DAMAGED, {} bytes",
            fourth - third
        )),
        "{}",
        summary.stdout
    );
    assert!(
        summary
            .stdout
            .contains(&format!("  offset {end}: TORN, 9 bytes"))
    );
    assert_eq!(summary.line("damage"), "damage        FOUND (above)");

    // A torn tail alone, at the end of the newest segment, is not damage.
    bytes[third as usize + 12] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();
    dump(&dir, &[]).code(0);
    // A damaged checkpoint is.
    let checkpoint = snapshot(&dir)
        .into_iter()
        .find(|(p, _)| p.to_string_lossy().contains("checkpoint."))
        .unwrap()
        .0;
    std::fs::write(&checkpoint, b"garbage").unwrap();
    let run = dump(&dir, &[]).code(3);
    assert!(
        run.stdout.contains("is DAMAGED: not an intact checkpoint"),
        "{}",
        run.stdout
    );

    let after = snapshot(&dir);
    dump(&dir, &["--records"]);
    assert_eq!(snapshot(&dir), after, "dump-journal cuts nothing off");
}

#[test]
fn it_refuses_what_is_not_a_queue_directory() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), &[]);
    drop(fill(&server));
    server.stop();
    let queues = data.path().join("queues");
    let refused = |path: &Path, why: &str| {
        let run = dump(path, &[]).code(1);
        assert!(run.stdout.is_empty(), "{run:#?}");
        assert!(run.stderr.contains(why), "{why:?} not in {run:#?}");
        assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
    };
    refused(data.path(), "is not a queue's directory (it holds \"LOCK\"");
    refused(&queues, "is not a queue's directory (it holds \"jobs\"");
    refused(
        &queues.join("jobs/0000000000000001.log"),
        "is not a directory",
    );
    refused(&queues.join("missing"), "No such file or directory");
    let odd = data.path().join("Not a queue");
    std::fs::create_dir(&odd).unwrap();
    refused(
        &odd,
        "its name is not a queue's and it holds no journal file",
    );
    std::fs::write(queues.join("jobs/notes.txt"), "mine").unwrap();
    refused(
        &queues.join("jobs"),
        "it holds \"notes.txt\", which no journal writes",
    );
    let json = dump(&odd, &["--json"]).code(1);
    let error: serde_json::Value = serde_json::from_str(json.stderr.trim()).unwrap();
    assert_eq!(error["exit_code"], 1);
    // Usage errors are clap's.
    dump(&queues, &["--full"]).code(2);
    dump(&queues, &["--records", "--items"]).code(2);
}
