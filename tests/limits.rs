//! Data-directory safety and resource limits (issue 10): what operators and
//! hostile clients can do, against the real binary over real sockets.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    Server, TKestrelSyncClient, binary, drain, eventually, mc, message, set, stat, store, text,
};

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// Point 1: a second server on the same data directory exits at once, and
/// the lock dies with its holder, even under `kill -9`.
#[test]
fn one_server_per_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start_in(dir.path(), &[]);
    let second = Command::new(binary())
        .args(["--listen", "127.0.0.1", "--thrift-port", "0"])
        .args([
            "--memcache-port",
            "0",
            "--text-port",
            "0",
            "--admin-port",
            "0",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    let abs = dir.path().canonicalize().unwrap();
    let expected = format!(
        "data directory {} is in use by pid {}",
        abs.display(),
        first.pid()
    );
    assert!(err.contains(&expected), "{err}");
    assert!(!err.contains("listening on"), "{err}");

    first.signal("KILL");
    drop(first);
    let third = Server::start_in(dir.path(), &[]);
    store(&mut mc(&third), "q", "x");
}

/// Point 2: the repro. Every file of a queue's directory gets
/// garbage appended after a `kill -9`; every acknowledged item survives any
/// number of restarts, and the queue keeps taking new ones.
#[test]
fn a_damaged_queue_directory_keeps_every_acknowledged_item() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), &[]);
    let mut c = mc(&server);
    let old: Vec<String> = (0..100).map(|i| format!("old-{i:03}")).collect();
    for it in &old {
        store(&mut c, "rot", it);
    }
    server.signal("KILL");
    drop(server);
    let qdir = dir.path().join("queues/rot");
    let mut damaged = 0;
    for entry in fs::read_dir(&qdir).unwrap() {
        let path = entry.unwrap().path();
        let garbage: Vec<u8> = (0..37u8).map(|i| i.wrapping_mul(97) ^ 0x5a).collect();
        fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&garbage)
            .unwrap();
        damaged += 1;
    }
    assert!(damaged > 0);

    let server = Server::start_in(dir.path(), &[]);
    let mut c = mc(&server);
    let new: Vec<String> = (0..10).map(|i| format!("new-{i:03}")).collect();
    for it in &new {
        store(&mut c, "rot", it);
    }
    assert!(server.stop().success());
    let server = Server::start_in(dir.path(), &[]);
    assert!(server.stop().success());
    let server = Server::start_in(dir.path(), &[]);
    let all: Vec<String> = old.into_iter().chain(new).collect();
    assert_eq!(drain(&server, "rot"), all);
}

/// Point 2: a directory whose queue cannot be identified is moved aside and
/// logged, never reused; a half-made one from a failed creation is removed.
#[test]
fn unidentifiable_and_half_made_directories_are_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let queues = dir.path().join("queues");
    fs::create_dir_all(queues.join("~~not-a-queue-name~~")).unwrap();
    fs::write(
        queues.join("~~not-a-queue-name~~/0000000000000001.log"),
        b"?",
    )
    .unwrap();
    fs::create_dir_all(queues.join("half.creating")).unwrap();
    let server = Server::start_in(dir.path(), &[]);
    let line = server.wait_for_log("unreadable", Duration::from_secs(10));
    assert!(line.contains("ERROR"), "{line}");
    let names: Vec<String> = fs::read_dir(&queues)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("~~not-a-queue-name~~.unreadable-")),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n == "~~not-a-queue-name~~"),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.ends_with(".creating")), "{names:?}");
}

/// Point 3: nothing listens until the data directory is usable, and the
/// error names its absolute path.
#[test]
fn ports_are_bound_only_after_the_data_directory_is_usable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    fs::write(&file, b"").unwrap();
    let out = Command::new(binary())
        .args(["--listen", "127.0.0.1", "--thrift-port", "0"])
        .args([
            "--memcache-port",
            "0",
            "--text-port",
            "0",
            "--admin-port",
            "0",
            "--data-dir",
        ])
        .arg(file.join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&file.join("data").display().to_string()),
        "{err}"
    );
    assert!(!err.contains("listening on"), "{err}");
}

/// Point 4: past `max_connections` each protocol refuses in its own way,
/// and the connections already open keep being served.
#[test]
fn connections_beyond_the_limit_are_refused_per_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(dir.path(), &[], &[("KESTREL_MAX_CONNECTIONS", "2")]);
    let mut a = mc(&server);
    let mut b = text(&server);
    store(&mut a, "q", "x");
    b.send("peek q\n");
    assert_eq!(b.line(), ":x");

    let mut refused = mc(&server);
    assert_eq!(refused.line(), "SERVER_ERROR too many connections");
    refused.expect_closed();
    let mut refused = text(&server);
    assert_eq!(refused.line(), "-Too many connections");
    refused.expect_closed();
    let mut thrift = TcpStream::connect(server.thrift).unwrap();
    thrift
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(thrift.read(&mut [0u8; 16]).unwrap(), 0, "thrift not closed");

    store(&mut a, "q", "y");
    assert_eq!(stat(&mut a, "rejected_connections"), Some(3));
    drop(b);
    // A closed connection frees its place.
    eventually("a free connection slot", || {
        let mut c = text(&server);
        c.send("peek q\n");
        c.line() == ":x"
    });
}

/// Point 5: under a 2 GiB address-space limit, 500 connections that each
/// announce a 16 MiB Thrift frame and send nothing more do not take the
/// server down, and another client is served.
#[test]
fn announced_frame_lengths_reserve_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::launch(dir.path(), &[], &[], |cmd| {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe; nothing else runs here.
        unsafe {
            cmd.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 2 << 30,
                    rlim_max: 2 << 30,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let header = (16u32 * 1024 * 1024 - 1).to_be_bytes();
    let conns: Vec<TcpStream> = (0..500)
        .map(|_| {
            let mut s = TcpStream::connect(server.thrift).unwrap();
            s.write_all(&header).unwrap();
            s
        })
        .collect();
    let mut c = server.client();
    assert_eq!(c.put("q".into(), vec![b"alive".to_vec()], 0).unwrap(), 1);
    let got = c.get("q".into(), 1, 0, 0).unwrap();
    assert_eq!(got[0].data.as_deref(), Some(&b"alive"[..]));
    assert!(server.alive());
    drop(conns);
}

/// Point 6: a request that starts but trickles in slower than
/// `request_timeout` allows is cut off.
#[test]
fn a_slowly_dripping_request_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(dir.path(), &[], &[("KESTREL_REQUEST_TIMEOUT", "1s")]);
    let mut s = TcpStream::connect(server.memcache.unwrap()).unwrap();
    let request = b"set drip 0 0 100\r\n";
    let mut closed = false;
    // One byte every 200 ms: the request would take 3.6 s to arrive, and
    // each byte comes well within any idle timeout.
    for &b in request.iter().cycle().take(request.len() * 10) {
        if s.write_all(&[b]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if !closed {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        // Closed means an end of input or a reset; a read that times out
        // means the connection is still open.
        closed = match s.read(&mut buf) {
            Ok(n) => n == 0,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        };
    }
    assert!(closed, "a request dripping in for 36 s was not cut off");
    assert_eq!(stat(&mut mc(&server), "request_timeouts"), Some(1));
}

/// Point 7: `max_queues` refuses creation beyond it, and journal files held
/// open do not grow with the number of queues.
#[test]
fn queues_are_limited_and_do_not_each_hold_a_file_open() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("KESTREL_MAX_QUEUES", "300"),
        ("KESTREL_MAX_OPEN_FILES", "16"),
    ];
    let server = Server::start_with_env(dir.path(), &[], &env);
    let before = open_fds(server.pid());
    let mut c = mc(&server);
    for i in 0..300 {
        store(&mut c, &format!("q{i}"), "x");
    }
    let refused = set(&mut c, "one-too-many", "x");
    assert!(
        refused.starts_with("SERVER_ERROR") && refused.contains("max_queues"),
        "{refused}"
    );
    let mut thrift = server.client();
    let err = message(
        thrift
            .put("one-too-many".into(), vec![b"x".to_vec()], 0)
            .unwrap_err(),
    );
    assert!(err.contains("max_queues"), "{err}");
    assert_eq!(stat(&mut c, "rejected_creates"), Some(2));
    let after = open_fds(server.pid());
    assert!(
        after <= before + 20,
        "{before} fds before, {after} after 300 queues"
    );
    assert!(server.stop().success());

    let server = Server::start_with_env(dir.path(), &[], &env);
    assert!(open_fds(server.pid()) <= before + 20);
    assert_eq!(drain(&server, "q0"), ["x"]);
    assert_eq!(drain(&server, "q299"), ["x"]);
}

/// Point 8 (correctness side; the latency figure is a benchmark): a put and
/// a get of many items, which run in chunks off the request path, keep every
/// item in order while another client is served.
#[test]
fn a_big_batch_is_whole_and_in_order() {
    let server = Server::start();
    let n: i32 = 100_000;
    let items: Vec<Vec<u8>> = (0..n).map(|i| format!("{i:06}").into_bytes()).collect();
    let mut c = server.client();
    let mut other = mc(&server);
    assert_eq!(c.put("big".into(), items.clone(), 0).unwrap(), n);
    store(&mut other, "small", "x");
    let got = c.get("big".into(), n, 0, 0).unwrap();
    let got: Vec<Vec<u8>> = got.into_iter().map(|i| i.data.unwrap()).collect();
    assert_eq!(got, items);
}

/// Point 9: on a full disk, `flush` and `delete` free space, and reads and
/// confirms keep working. The data directory is a small tmpfs of its own.
#[test]
fn flush_and_delete_free_space_on_a_full_disk() {
    let disk = SmallDisk::mount();
    let mount = disk.0.path();
    let data = mount.join("data");
    let server = Server::start_in(&data, &[]);
    let mut c = mc(&server);
    let item = "x".repeat(16 * 1024);
    store(&mut c, "kept", "one");
    let mut stored = 0;
    loop {
        let reply = set(&mut c, "fill", &item);
        if reply != "STORED" {
            assert!(reply.starts_with("SERVER_ERROR"), "{reply}");
            break;
        }
        stored += 1;
        assert!(stored < 1000, "the 4 MiB disk never filled");
    }
    assert!(stored > 10);
    let free = || {
        let st = nix_statvfs(mount);
        st.0 * st.1
    };
    let full = free();
    // Reads and confirms work on the full disk.
    c.send("get kept/open\r\n");
    assert_eq!(c.line(), "VALUE kept 0 3");
    assert_eq!(c.line(), "one");
    assert_eq!(c.line(), "END");
    c.send("get kept/close\r\n");
    assert_eq!(c.line(), "END");

    c.send("flush fill\r\n");
    assert_eq!(c.line(), "END");
    eventually("space freed by the flush", || free() > full + 1024 * 1024);
    store(&mut c, "fill", "after");
    for _ in 0..stored {
        if set(&mut c, "other", &item) != "STORED" {
            break;
        }
    }
    let full = free();
    c.send("delete other\r\n");
    assert_eq!(c.line(), "DELETED");
    eventually("space freed by the delete", || free() > full + 1024 * 1024);
    assert!(server.stop().success());
    let server = Server::start_in(&data, &[]);
    assert_eq!(drain(&server, "fill"), ["after"]);
    assert_eq!(drain(&server, "kept"), Vec::<String>::new());
}

/// Free blocks and block size of the file system holding `path`.
fn nix_statvfs(path: &Path) -> (u64, u64) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed out-parameter.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    (st.f_bavail as u64, st.f_frsize as u64)
}

/// Point 11: names with Unicode control or format characters are refused
/// on every protocol, with the error any bad name gets.
#[test]
fn control_and_format_characters_are_refused_in_names() {
    let server = Server::start();
    let mut c = mc(&server);
    let mut text = text(&server);
    let mut thrift = server.client();
    for name in [
        "evil\u{202E}txt",
        "\u{FEFF}bom",
        "line\u{2028}sep",
        "nul\u{7}bell",
    ] {
        let reply = set(&mut c, name, "x");
        assert!(
            reply.starts_with("CLIENT_ERROR invalid queue name"),
            "{name:?}: {reply}"
        );
        text.send(format!("put {name}:\nx\n\n"));
        let reply = text.line();
        assert!(
            reply.starts_with("-") && reply.contains("invalid queue name"),
            "{name:?}: {reply}"
        );
        let err = message(thrift.put(name.into(), vec![b"x".to_vec()], 0).unwrap_err());
        assert!(err.contains("invalid queue name"), "{name:?}: {err}");
    }
    assert!(
        !server.data_dir().join("queues").exists()
            || fs::read_dir(server.data_dir().join("queues"))
                .unwrap()
                .count()
                == 0
    );
}

/// Point 12: `KESTREL_*` variables that are not settings (as Kubernetes
/// sets for a Service named `kestrel`) are ignored with one warning; a typo
/// in the config file still stops the server.
#[test]
fn foreign_kestrel_variables_are_ignored_but_config_typos_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("KESTREL_PORT", "tcp://10.0.0.7:2229"),
        ("KESTREL_SERVICE_HOST", "10.0.0.7"),
        ("KESTREL_PORT_2229_TCP_ADDR", "10.0.0.7"),
    ];
    let server = Server::start_with_env(dir.path(), &[], &env);
    store(&mut mc(&server), "q", "x");
    let warnings: Vec<String> = server
        .log()
        .into_iter()
        .filter(|l| l.contains("KESTREL_PORT"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(server.stop().success());

    let config = dir.path().join("kestrel.toml");
    fs::write(&config, "max_queuez = 5\n").unwrap();
    let out = Command::new(binary())
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_queuez"));
}

/// Point 13: `max_open_transactions` bounds a connection's open reads over
/// Thrift too: at the limit a get returns nothing, as Kestrel's did.
#[test]
fn thrift_open_reads_are_limited_per_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(dir.path(), &[], &[("KESTREL_MAX_OPEN_TRANSACTIONS", "2")]);
    let mut c = server.client();
    let items: Vec<Vec<u8>> = (0..5).map(|i| vec![b'a' + i]).collect();
    assert_eq!(c.put("q".into(), items, 0).unwrap(), 5);
    assert_eq!(c.get("q".into(), 5, 0, 60_000).unwrap().len(), 2);
    assert!(c.get("q".into(), 5, 0, 60_000).unwrap().is_empty());
    assert_eq!(stat(&mut mc(&server), "rejected_open_reads"), Some(1));
    // Another connection has its own allowance.
    let mut other = server.client();
    assert_eq!(other.get("q".into(), 5, 0, 60_000).unwrap().len(), 2);
}

/// A 4 MiB tmpfs of its own, unmounted when dropped.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount() -> SmallDisk {
        let mount = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(mount.path())
            .status()
            .unwrap();
        assert!(status.success(), "this test mounts a tmpfs: run it as root");
        SmallDisk(mount)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// What a full disk refuses with, in every protocol (after the prefix).
const NO_SPACE: &str = "journal write failed: No space left on device (os error 28)";

/// Puts small items to `queue` with `put` until one is refused; returns the
/// refusal and the items acknowledged before it. (A full file system can
/// still take a small write into a page it has already given a file.)
fn put_until_refused(
    queue: &str,
    tag: &str,
    mut put: impl FnMut(&str, &str) -> Result<(), String>,
) -> (String, Vec<String>) {
    let mut acked = Vec::new();
    for i in 0..10_000 {
        let item = format!("{tag}-{i}");
        match put(queue, &item) {
            Ok(()) => acked.push(item),
            Err(refusal) => return (refusal, acked),
        }
    }
    panic!("{tag}: 10,000 puts accepted on a full disk");
}

/// operations.md and journal.md: on a full disk a put is refused with the
/// reason in every protocol (memcache `SERVER_ERROR journal write failed:
/// …`, text `-journal write failed: …`, a Thrift exception), nothing refused
/// is delivered, confirms and aborts keep working in every protocol, and
/// puts succeed again once space is freed, without a restart.
#[test]
fn a_full_disk_refuses_puts_with_the_reason_and_reads_settle_in_every_protocol() {
    let disk = SmallDisk::mount();
    let data = disk.0.path().join("data");
    let server = Server::start_in(&data, &[]);
    let mut c = mc(&server);
    let mut x = text(&server);
    let mut t = server.client();
    let first: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
    for it in &first {
        store(&mut c, "kept", it);
    }
    // Reads opened before the disk fills: k0, k1 over Thrift, k2 over
    // memcache, k3 over text.
    let opened = t.get("kept".into(), 2, 0, 600_000).unwrap();
    let ids: Vec<i64> = opened.iter().map(|i| i.id.unwrap()).collect();
    assert_eq!(ids.len(), 2);
    c.send("get kept/open\r\n");
    assert_eq!(c.lines_until("END"), ["VALUE kept 0 2", "k2", "END"]);
    x.send("get kept\n");
    assert_eq!(x.line(), ":k3");

    let big = "x".repeat(16 * 1024);
    let mut filled = 0;
    while set(&mut c, "fill", &big) == "STORED" {
        filled += 1;
        assert!(filled < 1000, "the 4 MiB disk never filled");
    }
    // Every protocol refuses, naming the cause.
    let (refusal, mut acked) =
        put_until_refused("kept", "mc", |q, item| match set(&mut c, q, item) {
            r if r == "STORED" => Ok(()),
            r => Err(r),
        });
    assert_eq!(refusal, format!("SERVER_ERROR {NO_SPACE}"));
    let (refusal, more) = put_until_refused("kept", "text", |q, item| {
        x.send(format!("put {q}:\n{item}\n\n"));
        match x.line() {
            r if r == "+1" => Ok(()),
            r => Err(r),
        }
    });
    assert_eq!(refusal, format!("-{NO_SPACE}"));
    acked.extend(more);
    let (refusal, more) = put_until_refused("kept", "thrift", |q, item| {
        match t.put(q.into(), vec![item.as_bytes().to_vec()], 0) {
            Ok(1) => Ok(()),
            Ok(n) => Err(format!("accepted {n}")),
            Err(e) => Err(message(e)),
        }
    });
    assert_eq!(refusal, NO_SPACE);
    acked.extend(more);

    // Confirms and aborts work on the full disk, in every protocol.
    assert_eq!(t.confirm("kept".into(), [ids[0]].into()).unwrap(), 1);
    assert_eq!(t.abort("kept".into(), [ids[1]].into()).unwrap(), 1);
    assert_eq!(c.ask("get kept/close"), "END");
    x.send("confirm kept 1\n");
    assert_eq!(x.line(), "+1");
    assert_eq!(stat(&mut c, "queue_kept_open_transactions"), Some(0));

    // Space freed: puts succeed again in every protocol, no restart.
    assert_eq!(c.ask("delete fill"), "DELETED");
    eventually("puts accepted again", || {
        set(&mut c, "kept", "mc-after") == "STORED"
    });
    x.send("put kept:\ntext-after\n\n");
    assert_eq!(x.line(), "+1");
    assert_eq!(
        t.put("kept".into(), vec![b"thrift-after".to_vec()], 0)
            .unwrap(),
        1
    );
    // The aborted k1 is back at the head, k4 was never read; the refused
    // items are nowhere.
    let mut expected: Vec<String> = vec!["k1".into(), "k4".into()];
    expected.extend(acked);
    expected.extend(["mc-after", "text-after", "thrift-after"].map(String::from));
    assert_eq!(drain(&server, "kept"), expected);
    assert!(server.stop().success());
}
