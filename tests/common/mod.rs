//! Test harness: runs the real `kestrel` binary on 127.0.0.1 with ephemeral
//! ports and a temporary data directory, and connects real clients to it.
//!
//! One copy for the workspace: the server's integration tests have it as
//! `mod common;`, the Rust client's and the bench tool's tests as
//! `#[path = "../../../tests/common/mod.rs"] mod common;`. So it depends on
//! nothing of the server crate (only `thrift` and `tempfile`, which every one
//! of those crates has), and finds the binary with [`binary`].

#![allow(dead_code)]

/// The code `thrift --gen rs` generated from `idl/kestrel.thrift`, compiled
/// into the tests as into the server, the client and the bench tool.
#[path = "../../gen/rs/kestrel.rs"]
#[allow(clippy::all, clippy::pedantic, dead_code, missing_docs)]
#[rustfmt::skip]
pub mod kestrel_gen;

pub mod zookeeper;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::transport::{
    ReadHalf, TFramedReadTransport, TFramedWriteTransport, TIoChannel, TTcpChannel, WriteHalf,
};

pub use kestrel_gen::{KestrelSyncClient, TKestrelSyncClient};

/// The generated Rust client over framed transport and binary protocol.
pub type Client = KestrelSyncClient<
    TBinaryInputProtocol<TFramedReadTransport<ReadHalf<TTcpChannel>>>,
    TBinaryOutputProtocol<TFramedWriteTransport<WriteHalf<TTcpChannel>>>,
>;

/// How long the server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// What the server logs once it accepts connections.
const READY: &str = "ready to serve";

/// A running server process, killed when dropped.
pub struct Server {
    child: Child,
    pub thrift: SocketAddr,
    pub memcache: Option<SocketAddr>,
    pub text: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    dir: Option<tempfile::TempDir>,
    data_dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    log_events: Arc<Mutex<mpsc::Receiver<String>>>,
    /// The thread collecting the log; joined when the server is dropped, so
    /// the panic check sees every line the process wrote.
    log_reader: Option<std::thread::JoinHandle<()>>,
}

/// The `kestrel` binary under test. In the server package's own tests, the
/// one cargo built for them; elsewhere `KESTREL_BIN` when set (as for the
/// Python tests), else the workspace's build of the profile these tests were
/// built with, found next to the test executable (`<target>/<profile>/deps/`)
/// and built with `cargo build -p kestrel` first if it is not there. One that
/// is there is used as it is (`cargo test --workspace` keeps it current);
/// building it every time would rebuild it without the dev-dependencies'
/// features, only for the next `cargo test` to rebuild it back.
pub fn binary() -> PathBuf {
    if let Some(bin) = option_env!("CARGO_BIN_EXE_kestrel") {
        return bin.into();
    }
    if let Some(bin) = std::env::var_os("KESTREL_BIN") {
        return bin.into();
    }
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_binary).clone()
}

/// The workspace's `kestrel` beside this test executable, built if missing.
fn build_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable in <target>/<profile>/deps");
    let bin = profile_dir.join("kestrel");
    if bin.exists() {
        return bin;
    }
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build.args(["build", "--quiet", "-p", "kestrel", "--bin", "kestrel"]);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(profile) => {
            build.args(["--profile", profile]);
        }
        None => {}
    }
    let status = build.status().expect("run cargo");
    assert!(
        status.success() && bin.exists(),
        "could not build {} ({status}); build it, or set KESTREL_BIN",
        bin.display()
    );
    bin
}

impl Server {
    /// Starts a server with a fresh data directory.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts a server with a fresh data directory and extra arguments.
    pub fn start_with(args: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().to_path_buf();
        let mut server = Server::start_in(&data_dir, args);
        server.dir = Some(dir);
        server
    }

    /// Starts a server on an existing data directory (kept when it stops).
    pub fn start_in(data_dir: &Path, args: &[&str]) -> Server {
        Server::start_with_env(data_dir, args, &[])
    }

    /// Starts a server on `data_dir` with `env` as its only `KESTREL_*`
    /// variables (the server reads those as settings).
    pub fn start_with_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::launch(data_dir, args, env, |_| {})
    }

    /// Starts a server as [`Server::start_with_env`] does, letting `adjust`
    /// change the command first (e.g. to set resource limits).
    pub fn launch(
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        adjust: impl FnOnce(&mut Command),
    ) -> Server {
        let mut command = Command::new(binary());
        adjust(&mut command);
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("KESTREL_")) {
            command.env_remove(key);
        }
        command.envs(env.iter().copied());
        let mut child = command
            .args([
                "--listen",
                "127.0.0.1",
                "--thrift-port",
                "0",
                "--memcache-port",
                "0",
                "--text-port",
                "0",
            ])
            // The admin port is an ephemeral one too, unless the test sets it.
            .args(
                ["--admin-port", "0"]
                    .iter()
                    .filter(|_| !args.contains(&"--admin-port")),
            )
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            // The test's own RUST_LOG (even an empty one) wins.
            .envs(
                Some((
                    "RUST_LOG",
                    std::env::var("TEST_SERVER_LOG").unwrap_or_else(|_| "info".into()),
                ))
                .filter(|_| !env.iter().any(|(k, _)| *k == "RUST_LOG")),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kestrel");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        let log_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("TEST_SERVER_ECHO").is_some() {
                    eprintln!("[kestrel] {line}");
                }
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        // Every listener logs its address before the server logs that it is ready.
        let mut addrs = std::collections::HashMap::new();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| {
                    // Not left running: it would hold what the test holds
                    // (ports, the data directory, inherited descriptors).
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "server did not start; log:\n{}",
                        log.lock().unwrap().join("\n")
                    )
                });
            if let Some((proto, addr)) = listening(&line) {
                addrs.insert(proto, addr);
            }
            if line.contains(READY) {
                break;
            }
        }
        Server {
            child,
            thrift: addrs["thrift"],
            memcache: addrs.get("memcache").copied(),
            text: addrs.get("text").copied(),
            admin: addrs.get("admin").copied(),
            dir: None,
            data_dir: data_dir.to_path_buf(),
            log,
            log_events: Arc::new(Mutex::new(rx)),
            log_reader: Some(log_reader),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A connected generated Rust client with TCP_NODELAY.
    pub fn client(&self) -> Client {
        client(self.thrift)
    }

    /// Waits until the server logs a line containing `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let rx = self.log_events.lock().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no log line with {needle:?}; log:\n{}",
                    self.log.lock().unwrap().join("\n")
                ),
            }
        }
    }

    /// Every line logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Sends a signal by name (`TERM`, `KILL`) with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits for the process to exit (after a signal sent with [`Server::signal`]).
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait")
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.child.wait().expect("wait")
    }
}

/// Whether `line` is what the runtime's panic hook writes for a thread
/// that panics (`thread 'NAME' (TID) panicked at FILE:LINE:COL:`), as
/// opposed to a log line that merely names a queue "panicked".
fn is_panic(line: &str) -> bool {
    line.starts_with("thread '") && line.contains(" panicked at ")
}

impl Drop for Server {
    /// Kills the server, then fails the test if its log holds a panic: a
    /// panicking connection task or background thread can go unnoticed by
    /// every client-side assertion.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.log_reader.take() {
            let _ = reader.join();
        }
        if std::thread::panicking() {
            return;
        }
        let log = self.log.lock().unwrap();
        assert!(
            !log.iter().any(|l| is_panic(l)),
            "the server panicked; log:\n{}",
            log.join("\n")
        );
    }
}

fn listening(line: &str) -> Option<(&'static str, SocketAddr)> {
    for proto in ["thrift", "memcache", "text", "admin"] {
        let marker = format!("{proto} listening on ");
        if let Some(at) = line.find(&marker) {
            // Text logs end the address with a space; JSON logs with a quote.
            let addr = line[at + marker.len()..]
                .split(|c: char| c.is_whitespace() || c == '"')
                .next()?;
            return Some((proto, addr.parse().ok()?));
        }
    }
    None
}

/// A generated Rust client connected to `addr`.
pub fn client(addr: SocketAddr) -> Client {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).unwrap();
    let channel = TTcpChannel::with_stream(stream);
    let (r, w) = channel.split().unwrap();
    KestrelSyncClient::new(
        TBinaryInputProtocol::new(TFramedReadTransport::new(r), true),
        TBinaryOutputProtocol::new(TFramedWriteTransport::new(w), true),
    )
}

/// A raw line-protocol client (memcache, text) with a read timeout, so a
/// missing reply fails the test instead of hanging it.
pub struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        use std::io::Write;
        self.stream.write_all(bytes.as_ref()).expect("send");
    }

    /// Sends `bytes` if the connection still takes them; whether it did.
    pub fn try_send(&mut self, bytes: impl AsRef<[u8]>) -> bool {
        use std::io::Write;
        self.stream.write_all(bytes.as_ref()).is_ok()
    }

    /// The next line, or `None` if the connection closes (or fails) first.
    pub fn try_line(&mut self) -> Option<String> {
        use std::io::Read;
        while !self.buf.contains(&b'\n') {
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
        Some(self.line())
    }

    /// Half-closes the connection: the server sees the end of input, and can
    /// still reply (what `nc -N` does once its input is sent).
    pub fn shutdown_write(&mut self) {
        self.stream.shutdown(std::net::Shutdown::Write).unwrap();
    }

    fn fill(&mut self) -> usize {
        use std::io::Read;
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk).expect("read (timed out?)");
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// The next line, without its `\r\n` or `\n`.
    pub fn line(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return String::from_utf8_lossy(&line).into_owned();
            }
            assert!(self.fill() > 0, "connection closed; expected a line");
        }
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill() > 0, "connection closed; expected {n} bytes");
        }
        self.buf.drain(..n).collect()
    }

    /// Sends `line` with `\r\n` and returns the first reply line.
    pub fn ask(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n"));
        self.line()
    }

    /// Lines up to and including `last`.
    pub fn lines_until(&mut self, last: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            let done = line == last;
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    /// Asserts the server closed the connection.
    pub fn expect_closed(&mut self) {
        assert!(
            self.buf.is_empty(),
            "unread data: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        assert_eq!(self.fill(), 0, "connection still open");
    }
}

/// A memcache connection to `server`.
pub fn mc(server: &Server) -> Raw {
    Raw::connect(server.memcache.expect("memcache listener"))
}

/// A text-protocol connection to `server`.
pub fn text(server: &Server) -> Raw {
    Raw::connect(server.text.expect("text listener"))
}

/// A memcache `set` of `data` on `queue`; returns the reply line.
pub fn set(c: &mut Raw, queue: &str, data: &str) -> String {
    c.send(format!("set {queue} 0 0 {}\r\n{data}\r\n", data.len()));
    c.line()
}

/// A memcache `set` that must be answered `STORED`.
pub fn store(c: &mut Raw, queue: &str, data: &str) {
    assert_eq!(set(c, queue, data), "STORED");
}

/// A memcache `get key`: the item, or `None` for `END`.
pub fn get(c: &mut Raw, key: &str) -> Option<String> {
    c.send(format!("get {key}\r\n"));
    value(c)
}

/// Reads a memcache `VALUE` reply (or `END`): the item, if any.
pub fn value(c: &mut Raw) -> Option<String> {
    let line = c.line();
    if line == "END" {
        return None;
    }
    let parts: Vec<&str> = line.split(' ').collect();
    assert_eq!(
        (parts.len(), parts[0], parts[2]),
        (4, "VALUE", "0"),
        "{line}"
    );
    let len: usize = parts[3].parse().unwrap();
    let data = c.bytes(len + 2);
    assert_eq!(&data[len..], b"\r\n");
    assert_eq!(c.line(), "END");
    Some(String::from_utf8(data[..len].to_vec()).unwrap())
}

/// The server's `stats` over memcache, by name.
pub fn stats(c: &mut Raw) -> std::collections::HashMap<String, String> {
    c.send("stats\r\n");
    c.lines_until("END")
        .into_iter()
        .filter_map(|l| {
            l.strip_prefix("STAT ").map(|r| {
                let (k, v) = r.split_once(' ').unwrap();
                (k.to_string(), v.to_string())
            })
        })
        .collect()
}

/// One numeric `stats` value.
pub fn stat(c: &mut Raw, name: &str) -> Option<u64> {
    stats(c).get(name).map(|v| v.parse().unwrap())
}

/// Waits until the server counts `n` open connections (the one `c` asks
/// on included): a disconnect's effects are asserted only once the server
/// has ended that connection's session.
pub fn wait_for_connections(c: &mut Raw, n: u64) {
    eventually(&format!("{n} connections"), || {
        stat(c, "curr_connections") == Some(n)
    });
}

/// Waits until the `stats` value `name` reads `value`.
pub fn wait_for_stat(c: &mut Raw, name: &str, value: &str) {
    eventually(&format!("{name} to become {value}"), || {
        stats(c).get(name).map(String::as_str) == Some(value)
    });
}

/// Polls `cond` (a server-side state with no event to wait on) until it
/// holds; fails after 20 s.
pub fn eventually(what: &str, cond: impl FnMut() -> bool) {
    eventually_within(Duration::from_secs(20), what, cond);
}

/// [`eventually`] with a deadline of `timeout`.
pub fn eventually_within(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The message of a `TApplicationException` (thrift's `Display` shows only its kind).
pub fn message(e: thrift::Error) -> String {
    match e {
        thrift::Error::Application(a) => a.message,
        other => panic!("expected an application exception, got {other:?}"),
    }
}

/// Every item `queue` has now, taken over Thrift, in order.
pub fn drain(server: &Server, queue: &str) -> Vec<String> {
    let mut c = server.client();
    let mut out = Vec::new();
    loop {
        let got = c.get(queue.into(), 1000, 0, 0).unwrap();
        if got.is_empty() {
            return out;
        }
        out.extend(
            got.into_iter()
                .map(|i| String::from_utf8(i.data.unwrap()).unwrap()),
        );
    }
}
