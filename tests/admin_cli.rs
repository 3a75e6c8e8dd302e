//! `kestrel admin`, run as an operator runs it: the real binary against a
//! real server, checking what it prints, what it changes on the server (seen
//! through the Thrift client, not the CLI) and its exit codes.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Server, TKestrelSyncClient, drain, eventually};
use serde_json::{Value, json};

/// Longest any CLI run may take before the test fails (and kills it).
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The CLI's own connect and reply timeout (`NET_TIMEOUT` in the source).
const NET_TIMEOUT: Duration = Duration::from_secs(5);

/// One finished run of `kestrel admin …`.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    /// Asserts the run exited 0 and returns it.
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "{self:#?}");
        self
    }

    /// Asserts the exit code and returns the run.
    fn code(self, code: i32) -> Run {
        assert_eq!(self.code, code, "{self:#?}");
        self
    }

    /// Stdout as the one JSON object `--json` prints.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// A `kestrel admin` process started with these addresses, not waited for.
struct Pending {
    child: Child,
    started: Instant,
}

fn spawn(thrift: &str, admin: &str, args: &[&str], stdin: Option<&[u8]>) -> Pending {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kestrel"))
        .args(["admin", "--server", thrift, "--admin", admin])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kestrel admin");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input).unwrap();
        // Dropping the pipe is the end of input.
    }
    Pending { child, started }
}

impl Pending {
    /// Waits for the process (killing it, and failing, after [`RUN_LIMIT`]).
    fn finish(self) -> Run {
        let pid = self.child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(self.child.wait_with_output());
        });
        let output = match rx.recv_timeout(RUN_LIMIT) {
            Ok(output) => output.expect("wait for kestrel admin"),
            Err(_) => {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                panic!("kestrel admin still running after {RUN_LIMIT:?}");
            }
        };
        Run {
            code: output.status.code().expect("exited, not killed"),
            stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
            stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
            elapsed: self.started.elapsed(),
        }
    }
}

fn addrs(server: &Server) -> (String, String) {
    (
        server.thrift.to_string(),
        server.admin.expect("admin port").to_string(),
    )
}

/// Runs `kestrel admin ARGS` against `server`.
fn admin(server: &Server, args: &[&str]) -> Run {
    let (thrift, http) = addrs(server);
    spawn(&thrift, &http, args, None).finish()
}

/// Runs `kestrel admin ARGS` against `server` with `input` on stdin.
fn admin_with_input(server: &Server, args: &[&str], input: &[u8]) -> Run {
    let (thrift, http) = addrs(server);
    spawn(&thrift, &http, args, Some(input)).finish()
}

/// Starts `kestrel admin ARGS` against `server` without waiting for it.
fn admin_spawn(server: &Server, args: &[&str]) -> Pending {
    let (thrift, http) = addrs(server);
    spawn(&thrift, &http, args, None)
}

/// An address nothing listens on: a port the kernel just handed out and
/// took back.
fn dead_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

/// A queue's item count, asked over Thrift directly.
fn items(server: &Server, queue: &str) -> i64 {
    server.client().peek(queue.into()).unwrap().items.unwrap()
}

/// The `stats --json` row of `queue`, if it is listed.
fn stats_row(server: &Server, queue: &str) -> Option<Value> {
    let stats = admin(server, &["--json", "stats"]).ok().json();
    stats["queues"]
        .as_array()
        .expect("queues array")
        .iter()
        .find(|q| q["name"] == queue)
        .cloned()
}

#[test]
fn put_items_from_arguments_then_get_them_in_order() {
    let server = Server::start();
    let r = admin(&server, &["put", "jobs", "a", "b c", "d"]).ok();
    assert_eq!(r.stdout, "put 3 items on jobs\n");
    assert_eq!(items(&server, "jobs"), 3);

    let r = admin(&server, &["get", "jobs", "-n", "2"]).ok();
    assert_eq!(r.stdout, "a\nb c\n");
    let r = admin(&server, &["get", "jobs", "--max-items", "10"]).ok();
    assert_eq!(r.stdout, "d\n", "-n is at most N");
    let r = admin(&server, &["get", "jobs"]).ok();
    assert_eq!(r.stdout, "", "an empty queue prints nothing and exits 0");
    assert!(r.stderr.is_empty(), "{r:#?}");

    // Items that look like flags follow `--`.
    admin(&server, &["put", "jobs", "--", "-x"]).ok();
    assert_eq!(drain(&server, "jobs"), ["-x"]);

    // --expiration reaches the server: an item that expires in 1 ms is
    // never returned once that millisecond is over.
    admin(&server, &["put", "jobs", "--expiration", "1", "brief"]).ok();
    std::thread::sleep(Duration::from_millis(20)); // the expiry itself is under test
    assert_eq!(admin(&server, &["get", "jobs"]).ok().stdout, "");
}

#[test]
fn put_dash_reads_one_item_per_line_of_stdin() {
    let server = Server::start();
    let r = admin_with_input(&server, &["put", "lines", "-"], b"one\ntwo\r\n\nlast").ok();
    assert_eq!(r.stdout, "put 4 items on lines\n");
    assert_eq!(drain(&server, "lines"), ["one", "two", "", "last"]);

    // Enough lines to take several put calls, in order.
    let input: String = (0..2500).map(|i| format!("item-{i}\n")).collect();
    let r = admin_with_input(&server, &["--json", "put", "lines", "-"], input.as_bytes()).ok();
    assert_eq!(
        r.json(),
        json!({"queue": "lines", "offered": 2500, "accepted": 2500})
    );
    let got = drain(&server, "lines");
    let want: Vec<String> = (0..2500).map(|i| format!("item-{i}")).collect();
    assert_eq!(got, want);

    let r = admin_with_input(&server, &["put", "lines", "-"], b"").ok();
    assert_eq!(r.stdout, "put 0 items on lines\n");
}

#[test]
fn json_items_are_strings_or_hex_for_bytes_that_are_not_utf8() {
    let server = Server::start();
    let items = vec!["naïve".as_bytes().to_vec(), b"\xff\x00a".to_vec()];
    assert_eq!(server.client().put("bin".into(), items, 0).unwrap(), 2);
    let peeked = admin(&server, &["--json", "peek", "bin"]).ok().json();
    assert_eq!(peeked["head"], "naïve");
    let r = admin(&server, &["--json", "get", "bin", "-n", "2"]).ok();
    assert_eq!(
        r.json(),
        json!({"queue": "bin", "items": ["naïve", {"hex": "ff0061"}]})
    );
}

#[test]
fn get_with_a_timeout_on_an_empty_queue_waits_that_long_and_prints_nothing() {
    let server = Server::start();
    let r = admin(&server, &["get", "empty", "--timeout", "400"]).ok();
    assert_eq!(r.stdout, "");
    assert!(r.elapsed >= Duration::from_millis(400), "{r:#?}");
    assert!(r.elapsed < Duration::from_secs(4), "{r:#?}");

    let r = admin(&server, &["--json", "get", "empty", "--timeout", "100"]).ok();
    assert_eq!(r.json(), json!({"queue": "empty", "items": []}));
}

#[test]
fn a_waiting_get_returns_what_is_put_meanwhile_and_stats_shows_it_waiting() {
    let server = Server::start();
    let waiting = admin_spawn(&server, &["get", "later", "-n", "2", "--timeout", "30000"]);
    eventually("the CLI's get to wait on the queue", || {
        stats_row(&server, "later").is_some_and(|q| q["waiters"] == 1)
    });
    let table = admin(&server, &["stats"]).ok().stdout;
    let row = table
        .lines()
        .find(|l| l.starts_with("later"))
        .expect("a row for the queue");
    let cells: Vec<&str> = row.split_whitespace().collect();
    // later, items 0, "0 B", open reads 0, waiters 1, …
    assert_eq!(&cells[..6], ["later", "0", "0", "B", "0", "1"], "{table}");

    admin(&server, &["put", "later", "first", "second"]).ok();
    let r = waiting.finish().ok();
    assert_eq!(r.stdout, "first\nsecond\n");
    assert!(r.elapsed < Duration::from_secs(20), "{r:#?}");
}

#[test]
fn peek_shows_the_queue_and_its_head_and_removes_nothing() {
    let server = Server::start();
    admin(&server, &["put", "jobs", "head item", "second"]).ok();
    let r = admin(&server, &["peek", "jobs"]).ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "queue      jobs", "{}", r.stdout);
    assert!(lines.contains(&"items      2"), "{}", r.stdout);
    assert!(lines.contains(&"bytes      15 B"), "{}", r.stdout);
    assert!(lines.contains(&"open reads 0"), "{}", r.stdout);
    assert!(lines.contains(&"waiters    0"), "{}", r.stdout);
    assert_eq!(lines.last(), Some(&"head       head item"), "{}", r.stdout);

    let peeked = admin(&server, &["peek", "jobs", "--json"]).ok().json();
    assert_eq!(peeked["queue"], "jobs");
    assert_eq!(peeked["items"], 2);
    assert_eq!(peeked["bytes"], 15);
    assert_eq!(peeked["open_transactions"], 0);
    assert_eq!(peeked["waiters"], 0);
    assert_eq!(peeked["head"], "head item");
    assert!(peeked["age_msec"].is_u64() && peeked["journal_size"].is_u64());
    assert_eq!(drain(&server, "jobs"), ["head item", "second"]);

    let r = admin(&server, &["peek", "jobs"]).ok();
    assert!(r.stdout.contains("items      0\n"), "{}", r.stdout);
    assert!(!r.stdout.contains("head"), "an empty queue has no head");
    let peeked = admin(&server, &["--json", "peek", "jobs"]).ok().json();
    assert_eq!(peeked["head"], Value::Null);
}

#[test]
fn stats_lists_every_queue_in_an_aligned_table_and_as_json() {
    let server = Server::start();
    admin(&server, &["put", "alpha", "a", "bb", "ccc"]).ok();
    admin(&server, &["put", "beta", "x"]).ok();
    // An open read on beta, from a client that stays connected.
    let mut reader = server.client();
    let open = reader.get("beta".into(), 1, 0, 60_000).unwrap();
    assert_eq!(open.len(), 1);

    let r = admin(&server, &["stats"]).ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", r.stdout);
    let header: Vec<&str> = lines[0].split("  ").filter(|c| !c.is_empty()).collect();
    assert_eq!(
        header.iter().map(|c| c.trim()).collect::<Vec<_>>(),
        [
            "QUEUE",
            "ITEMS",
            "BYTES",
            "OPEN READS",
            "WAITERS",
            "AGE",
            "JOURNAL"
        ],
        "{}",
        r.stdout
    );
    assert!(
        lines.iter().all(|l| l.len() == lines[0].len()),
        "columns are aligned:\n{}",
        r.stdout
    );
    let alpha: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        &alpha[..6],
        ["alpha", "3", "6", "B", "0", "0"],
        "{}",
        r.stdout
    );
    let beta: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        &beta[..6],
        ["beta", "0", "0", "B", "1", "0"],
        "{}",
        r.stdout
    );

    let stats = admin(&server, &["stats", "--json"]).ok().json();
    let queues = stats["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 2);
    assert_eq!(queues[0]["name"], "alpha");
    assert_eq!(queues[0]["items"], 3);
    assert_eq!(queues[0]["bytes"], 6);
    assert_eq!(queues[1]["name"], "beta");
    assert_eq!(queues[1]["items"], 0);
    assert_eq!(queues[1]["open_transactions"], 1);
    for q in queues {
        for field in ["waiters", "age_msec", "journal_size"] {
            assert!(q[field].is_u64(), "{field} in {q}");
        }
    }
}

#[test]
fn flush_empties_a_queue_and_delete_removes_it() {
    let server = Server::start();
    admin(&server, &["put", "jobs", "a", "b"]).ok();
    let r = admin(&server, &["flush", "jobs"]).ok();
    assert_eq!(r.stdout, "flushed jobs\n");
    assert_eq!(items(&server, "jobs"), 0);

    admin(&server, &["put", "jobs", "c"]).ok();
    let r = admin(&server, &["--json", "flush", "jobs"]).ok();
    assert_eq!(r.json(), json!({"queue": "jobs", "flushed": true}));
    assert_eq!(items(&server, "jobs"), 0);

    admin(&server, &["put", "doomed", "x"]).ok();
    assert!(stats_row(&server, "doomed").is_some());
    let r = admin(&server, &["delete", "doomed"]).ok();
    assert_eq!(r.stdout, "deleted doomed\n");
    assert!(stats_row(&server, "doomed").is_none(), "the queue is gone");

    admin(&server, &["put", "doomed", "y"]).ok();
    let r = admin(&server, &["delete", "doomed", "--json"]).ok();
    assert_eq!(r.json(), json!({"queue": "doomed", "deleted": true}));
    assert!(stats_row(&server, "doomed").is_none());
}

#[test]
fn status_is_shown_and_set() {
    let server = Server::start();
    assert_eq!(admin(&server, &["status"]).ok().stdout, "up\n");
    assert_eq!(
        admin(&server, &["status", "readonly"]).ok().stdout,
        "readonly\n"
    );
    assert_eq!(admin(&server, &["status"]).ok().stdout, "readonly\n");
    assert_eq!(
        server.client().current_status().unwrap(),
        common::kestrel_gen::Status::READ_ONLY
    );

    // The server now refuses puts: exit 1 with its own message.
    let refusal = common::message(
        server
            .client()
            .put("jobs".into(), vec![b"x".to_vec()], 0)
            .unwrap_err(),
    );
    let r = admin(&server, &["put", "jobs", "x"]).code(1);
    assert!(r.stderr.contains(&refusal), "{refusal:?} in {r:#?}");

    let r = admin(&server, &["--json", "status", "quiescent"]).ok();
    assert_eq!(
        r.json(),
        json!({"status": "quiescent", "requested": "quiescent"})
    );
    assert_eq!(admin(&server, &["get", "jobs"]).code(1).stdout, "");
    admin(&server, &["status", "up"]).ok();
    let r = admin(&server, &["status", "--json"]).ok();
    assert_eq!(r.json(), json!({"status": "up"}));
    admin(&server, &["put", "jobs", "x"]).ok();
}

#[test]
fn a_stricter_status_waiting_out_its_grace_period_is_reported_as_pending() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kestrel.toml");
    std::fs::write(&config, "status_change_grace_period = \"1h\"\n").unwrap();
    let server = Server::start_with(&["--config", config.to_str().unwrap()]);
    let r = admin(&server, &["status", "readonly"]).ok();
    assert_eq!(r.stdout, "up\n", "the status in force");
    assert!(r.stderr.contains("status_change_grace_period"), "{r:#?}");
    let r = admin(&server, &["--json", "status", "readonly"]).ok();
    assert_eq!(r.json(), json!({"status": "up", "requested": "readonly"}));
}

#[test]
fn version_is_the_servers() {
    let server = Server::start();
    let version = server.client().get_version().unwrap();
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    assert_eq!(
        admin(&server, &["version"]).ok().stdout,
        format!("{version}\n")
    );
    let r = admin(&server, &["version", "--json"]).ok();
    assert_eq!(r.json(), json!({ "version": version }));
}

#[test]
fn a_bad_queue_name_exits_1_with_the_servers_message() {
    let server = Server::start();
    let message = common::message(server.client().peek("bad/name".into()).unwrap_err());
    assert!(message.contains("queue name"), "{message}");
    for args in [
        &["peek", "bad/name"][..],
        &["put", "bad/name", "x"],
        &["get", "bad/name"],
        &["flush", "bad/name"],
        &["delete", "bad/name"],
    ] {
        let r = admin(&server, args).code(1);
        assert_eq!(r.stdout, "", "{args:?}");
        assert_eq!(r.stderr, format!("kestrel admin: {message}\n"), "{args:?}");
    }
    let r = admin(&server, &["--json", "get", "bad/name"]).code(1);
    let error: Value = serde_json::from_str(&r.stderr).expect("a JSON error on stderr");
    assert_eq!(error, json!({"error": message, "exit_code": 1}));
}

#[test]
fn a_put_the_queue_partly_refuses_exits_1_saying_how_many_were_put() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kestrel.toml");
    std::fs::write(&config, "[queues.small]\nmax_items = 2\n").unwrap();
    let server = Server::start_with(&["--config", config.to_str().unwrap()]);
    let r = admin(&server, &["put", "small", "a", "b", "c"]).code(1);
    assert_eq!(r.stdout, "put 2 of 3 items on small\n");
    assert!(r.stderr.contains("accepted 2 of 3"), "{r:#?}");
    let r = admin_with_input(&server, &["--json", "put", "small", "-"], b"d\n").code(1);
    assert_eq!(
        r.json(),
        json!({"queue": "small", "offered": 1, "accepted": 0})
    );
    assert_eq!(drain(&server, "small"), ["a", "b"]);
}

#[test]
fn an_unreachable_server_exits_3_at_once() {
    let dead = dead_addr();
    for args in [
        &["version"][..],
        &["status"],
        &["peek", "q"],
        &["put", "q", "x"],
        &["get", "q", "--timeout", "60000"],
        &["flush", "q"],
        &["delete", "q"],
        &["stats"],
    ] {
        let r = spawn(&dead, &dead, args, None).finish().code(3);
        assert!(r.stdout.is_empty(), "{r:#?}");
        assert!(
            r.stderr.starts_with("kestrel admin: cannot connect to "),
            "{r:#?}"
        );
        assert!(r.stderr.contains(&dead), "{r:#?}");
        assert!(r.elapsed < NET_TIMEOUT, "{r:#?}");
    }
    let r = spawn(&dead, &dead, &["--json", "version"], None)
        .finish()
        .code(3);
    let error: Value = serde_json::from_str(&r.stderr).expect("a JSON error on stderr");
    assert_eq!(error["exit_code"], 3);
}

#[test]
fn a_server_that_never_answers_exits_3_after_the_reply_timeout() {
    // Accepts connections and reads nothing, as a wedged process would.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent: SocketAddr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().collect();
        drop(held);
    });
    let silent = silent.to_string();
    let thrift = spawn(&silent, &silent, &["version"], None);
    let http = spawn(&silent, &silent, &["stats"], None);
    for r in [thrift.finish(), http.finish()] {
        let r = r.code(3);
        assert!(r.stderr.contains("no reply from"), "{r:#?}");
        assert!(r.elapsed >= NET_TIMEOUT, "{r:#?}");
        assert!(r.elapsed < NET_TIMEOUT * 4, "{r:#?}");
    }
}

#[test]
fn the_wrong_port_exits_3_naming_the_protocol() {
    let server = Server::start();
    let (thrift, http) = addrs(&server);
    // A Thrift request to the HTTP port, an HTTP one to the Thrift port:
    // each answers (or hangs up) at once, in the wrong protocol.
    let r = spawn(&http, &thrift, &["version"], None).finish().code(3);
    assert!(
        r.stderr
            .contains("does not answer as a Kestrel Thrift server"),
        "{r:#?}"
    );
    assert!(r.elapsed < NET_TIMEOUT, "{r:#?}");
    let r = spawn(&http, &thrift, &["stats"], None).finish().code(3);
    assert!(r.stderr.contains(&thrift), "{r:#?}");
    assert!(r.elapsed < NET_TIMEOUT, "{r:#?}");
}

#[test]
fn usage_errors_exit_2_and_help_lists_the_exit_codes() {
    let server = Server::start();
    for args in [
        &[][..],
        &["get"],
        &["get", "q", "-n", "0"],
        &["get", "q", "--timeout", "-1"],
        &["put", "q"],
        &["status", "sideways"],
        &["--server", "127.0.0.1", "version"],
        &["frobnicate"],
    ] {
        let r = admin(&server, args).code(2);
        assert!(
            r.stdout.is_empty() && !r.stderr.is_empty(),
            "{args:?}: {r:#?}"
        );
    }
    let help = admin(&server, &["--help"]).ok().stdout;
    for needle in [
        "Exit codes:",
        "0  done",
        "1  the server refused",
        "2  usage error",
        "3  cannot reach the server",
    ] {
        assert!(help.contains(needle), "{needle:?} in\n{help}");
    }
    for command in [
        "stats", "peek", "put", "get", "flush", "delete", "status", "version",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "{command} in\n{help}"
        );
    }
}
