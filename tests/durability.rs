//! Durability, against the real binary and real files: crashes (SIGKILL),
//! damaged journals, read-behind, bounded disk and restart of a deep queue.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::{Raw, Server, TKestrelSyncClient, drain, eventually, mc, set, stat, store};
use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::transport::{TFramedReadTransport, TFramedWriteTransport};

/// A memcache connection whose failures are values, for clients that must
/// survive the server being killed.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        Ok(Conn {
            writer: s.try_clone()?,
            reader: BufReader::new(s),
        })
    }

    /// The next line; one cut short by the end of the stream is the end of
    /// the stream.
    fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        if !line.ends_with('\n') {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end().to_string())
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)
    }

    /// `get key`: the item, or `None` for `END`.
    fn get(&mut self, key: &str) -> std::io::Result<Option<String>> {
        self.writer.write_all(format!("get {key}\r\n").as_bytes())?;
        let line = self.line()?;
        if line == "END" {
            return Ok(None);
        }
        let len: usize = line
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("unexpected reply {line:?}"),
                )
            })?;
        let mut data = vec![0; len + 2];
        self.reader.read_exact(&mut data)?;
        data.truncate(len);
        let end = self.line()?;
        if end != "END" {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("expected END, got {end:?}"),
            ));
        }
        Ok(Some(String::from_utf8(data).expect("utf-8 item")))
    }
}

/// The crash test's sync modes, taken by the server's incarnations in turn:
/// a process crash must lose nothing acknowledged in any of them (what the
/// modes do differently is shown by `journal_fsyncs`, further down).
const CRASH_SYNC: [&str; 3] = ["always", "100ms", "never"];
/// Kills while the clients are busy (`CRASH_KILLS` in the environment
/// asks for more).
const KILLS: u64 = 24;
/// Puts each incarnation acknowledges before it may be killed...
const ACKS_PER_RUN: u64 = 600;
/// ...after which the kill comes within this many milliseconds, at random.
const KILL_DELAY_MS: u64 = 250;
/// The crash test's segment size (`max_journal_size`), small so that every
/// run rolls segments, writes checkpoints and reclaims consumed segments.
const SEGMENT_BYTES: u64 = 16 * 1024;
/// The length of every crash-test item: its tag, padded.
const ITEM_BYTES: usize = 100;
/// An ADD record's bytes besides the item's (length, checksum, kind,
/// sequence number, two times; docs/journal.md).
const ADD_OVERHEAD: u64 = 4 + 4 + 1 + 8 + 8 + 8;
// The acknowledged puts of one incarnation alone fill more than two
// segments: every run rolls a segment and owes a checkpoint.
const _: () = assert!(ACKS_PER_RUN * (ADD_OVERHEAD + ITEM_BYTES as u64) > 2 * SEGMENT_BYTES);

/// Item `seq` of `producer`: a tag that says both, padded to `ITEM_BYTES`.
fn item(producer: u32, seq: u64) -> String {
    format!("{:.<ITEM_BYTES$}", format!("p{producer}-{seq:08}"))
}

fn parse_item(item: &str) -> (u32, u64) {
    let tag = item.split('.').next().expect("a tag");
    let (p, s) = tag[1..].split_once('-').expect("a tagged item");
    (p.parse().unwrap(), s.parse().unwrap())
}

/// Varied numbers (kill delays, batch sizes) from a seed the test prints.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Which server the clients should talk to.
#[derive(Clone, Copy)]
struct Target {
    /// Counts the server processes of the test, from 1.
    incarnation: u64,
    memcache: SocketAddr,
    thrift: SocketAddr,
}

impl Target {
    fn of(server: &Server, incarnation: u64) -> Target {
        Target {
            incarnation,
            memcache: server.memcache.unwrap(),
            thrift: server.thrift,
        }
    }
}

/// What one incarnation's clients saw.
#[derive(Default, Clone, Copy)]
struct Run {
    /// Puts acknowledged.
    acks: u64,
    /// Puts sent whose answer never came.
    in_doubt: u64,
    /// Of those, puts wholly sent before the kill was ordered: the server
    /// had them, or had them in its socket, when it died.
    mid_write: u64,
}

/// What the crash test's clients know for sure.
#[derive(Default)]
struct Book {
    /// Acknowledged puts, per producer.
    acked: HashMap<u32, BTreeSet<u64>>,
    /// Puts sent but never acknowledged: stored or not, either is right.
    in_doubt: HashSet<String>,
    runs: HashMap<u64, Run>,
    /// Items whose confirm was acknowledged.
    confirmed: HashSet<String>,
    /// Items whose confirm was sent but never answered: gone or back in the
    /// queue, either is right.
    unsure_confirms: HashSet<String>,
    /// Items handed to a consumer (some more than once: the reads a kill
    /// interrupted come back).
    deliveries: u64,
    violations: Vec<String>,
}

/// State shared by the crash test's clients and its killer.
struct Crash {
    target: Mutex<Target>,
    /// Signalled when `target` changes or the test stops.
    changed: Condvar,
    /// The newest incarnation whose kill has been ordered (0: none).
    killed: AtomicU64,
    stop: AtomicBool,
    book: Mutex<Book>,
}

/// How long a client waits for a server before it declares a failure.
const NO_SERVER_TIMEOUT: Duration = Duration::from_secs(30);

impl Crash {
    fn new(target: Target) -> Crash {
        Crash {
            target: Mutex::new(target),
            changed: Condvar::new(),
            killed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            book: Mutex::default(),
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// Whether the kill of `incarnation` has been ordered.
    fn killed(&self, incarnation: u64) -> bool {
        self.killed.load(Ordering::SeqCst) >= incarnation
    }

    /// The server to connect to: the newest, once it is up and not being
    /// killed. `None` when the test stops.
    fn target(&self) -> Option<Target> {
        let deadline = Instant::now() + NO_SERVER_TIMEOUT;
        let mut target = self.target.lock().unwrap();
        loop {
            if self.stopping() {
                return None;
            }
            if !self.killed(target.incarnation) {
                return Some(*target);
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                drop(target);
                self.fail(format!("no server for {NO_SERVER_TIMEOUT:?}"));
                return None;
            };
            target = self.changed.wait_timeout(target, left).unwrap().0;
        }
    }

    fn publish(&self, target: Target) {
        *self.target.lock().unwrap() = target;
        self.changed.notify_all();
    }

    /// Records a violation and stops the test.
    fn fail(&self, what: String) {
        self.book.lock().unwrap().violations.push(what);
        self.stop();
    }

    /// Whether a connection to `incarnation` that ended with `kind` was
    /// ended by its kill: only the end of the stream, a reset or a refusal
    /// (a broken pipe: a write into a reset connection) while its kill is
    /// under way is. Anything else fails the test.
    fn lost(&self, incarnation: u64, kind: io::ErrorKind, what: &str) -> bool {
        use io::ErrorKind::*;
        let killed = self.killed(incarnation);
        if killed
            && matches!(
                kind,
                UnexpectedEof
                    | ConnectionReset
                    | ConnectionAborted
                    | ConnectionRefused
                    | BrokenPipe
            )
        {
            return true;
        }
        let when = if killed { "after" } else { "before" };
        self.fail(format!(
            "{what} on server {incarnation}: {kind:?} {when} its kill was ordered"
        ));
        false
    }

    fn acked(&self, incarnation: u64, producer: u32, seqs: impl IntoIterator<Item = u64>) {
        let mut b = self.book.lock().unwrap();
        let acked = b.acked.entry(producer).or_default();
        let before = acked.len();
        acked.extend(seqs);
        let n = (acked.len() - before) as u64;
        b.runs.entry(incarnation).or_default().acks += n;
    }

    fn in_doubt(&self, incarnation: u64, items: Vec<String>, sent_before_kill: bool) {
        let mut b = self.book.lock().unwrap();
        let n = items.len() as u64;
        b.in_doubt.extend(items);
        let run = b.runs.entry(incarnation).or_default();
        run.in_doubt += n;
        if sent_before_kill {
            run.mid_write += n;
        }
    }

    /// Records items handed to a consumer; none may have been confirmed.
    fn delivered<'a>(&self, items: impl IntoIterator<Item = &'a String>) {
        let mut b = self.book.lock().unwrap();
        for it in items {
            b.deliveries += 1;
            if b.confirmed.contains(it) {
                b.violations
                    .push(format!("{it} delivered after its confirm was acknowledged"));
            }
        }
    }

    fn confirmed(&self, items: Vec<String>) {
        let mut b = self.book.lock().unwrap();
        for it in items {
            if !b.confirmed.insert(it.clone()) {
                b.violations.push(format!("{it} confirmed twice"));
            }
        }
    }

    fn unsure(&self, items: Vec<String>) {
        self.book.lock().unwrap().unsure_confirms.extend(items);
    }

    /// Waits until `incarnation` has acknowledged `ACKS_PER_RUN` puts; false
    /// if the test failed meanwhile.
    fn wait_for_acks(&self, incarnation: u64) -> bool {
        let deadline = Instant::now() + NO_SERVER_TIMEOUT;
        loop {
            if self.stopping() {
                return false;
            }
            let acks = self
                .book
                .lock()
                .unwrap()
                .runs
                .get(&incarnation)
                .map_or(0, |r| r.acks);
            if acks >= ACKS_PER_RUN {
                return true;
            }
            if Instant::now() > deadline {
                self.fail(format!(
                    "server {incarnation} acknowledged {acks} puts in {NO_SERVER_TIMEOUT:?}"
                ));
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Opens a memcache connection to `t`; `None` if the kill explains the failure.
fn open_memcache(crash: &Crash, t: Target) -> Option<Conn> {
    match Conn::open(t.memcache) {
        Ok(c) => Some(c),
        Err(e) => {
            crash.lost(t.incarnation, e.kind(), "memcache connect");
            None
        }
    }
}

/// Puts one item at a time over memcache.
fn memcache_producer(crash: &Crash, producer: u32) {
    let mut seq = 0;
    while let Some(t) = crash.target() {
        let Some(mut conn) = open_memcache(crash, t) else {
            continue;
        };
        while !crash.stopping() {
            let it = item(producer, seq);
            seq += 1;
            let sent = conn.send(format!("set crash 0 0 {}\r\n{it}\r\n", it.len()).as_bytes());
            // Checked after the request left: if the kill was not ordered yet,
            // the server had the request (or had it in its socket) when it died.
            let before_kill = !crash.killed(t.incarnation);
            match sent.and_then(|()| conn.line()) {
                Ok(reply) if reply == "STORED" => crash.acked(t.incarnation, producer, [seq - 1]),
                Ok(reply) => return crash.fail(format!("set {it} answered {reply:?}")),
                Err(e) => {
                    crash.in_doubt(t.incarnation, vec![it], before_kill);
                    crash.lost(t.incarnation, e.kind(), "memcache set");
                    break;
                }
            }
        }
    }
}

/// Reads reliably over memcache: each get confirms the item before.
fn memcache_consumer(crash: &Crash) {
    while let Some(t) = crash.target() {
        let Some(mut conn) = open_memcache(crash, t) else {
            continue;
        };
        let mut holding: Option<String> = None;
        while !crash.stopping() {
            let key = if holding.is_some() {
                "crash/close/open/t=50"
            } else {
                "crash/open/t=50"
            };
            match conn.get(key) {
                Ok(got) => {
                    if let Some(done) = holding.take() {
                        crash.confirmed(vec![done]);
                    }
                    if let Some(got) = got {
                        crash.delivered([&got]);
                        holding = Some(got);
                    }
                }
                Err(e) => {
                    // Whether the close landed is unknown; the item may come back.
                    crash.unsure(holding.take().into_iter().collect());
                    crash.lost(t.incarnation, e.kind(), "memcache get");
                    break;
                }
            }
        }
    }
}

/// What a Thrift connection's socket saw, to tell a kill from a fault (the
/// thrift crate folds I/O errors into its own kinds).
#[derive(Default)]
struct Seen {
    /// The first I/O error or end of stream.
    error: Option<io::ErrorKind>,
    /// Whether the last request was wholly sent before its server's kill was ordered.
    sent_before_kill: bool,
}

/// A Thrift connection's socket, noting what it sees.
struct Tap {
    stream: TcpStream,
    seen: Arc<Mutex<Seen>>,
    crash: Arc<Crash>,
    incarnation: u64,
}

impl Read for Tap {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.stream.read(buf);
        let end = match &read {
            Ok(0) if !buf.is_empty() => Some(io::ErrorKind::UnexpectedEof),
            Ok(_) => None,
            Err(e) => Some(e.kind()),
        };
        if let Some(kind) = end {
            self.seen.lock().unwrap().error.get_or_insert(kind);
        }
        read
    }
}

impl Write for Tap {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.stream.write(buf);
        let mut seen = self.seen.lock().unwrap();
        match &written {
            Ok(_) => seen.sent_before_kill = !self.crash.killed(self.incarnation),
            Err(e) => {
                seen.error.get_or_insert(e.kind());
            }
        }
        written
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

type TappedClient = common::kestrel_gen::KestrelSyncClient<
    TBinaryInputProtocol<TFramedReadTransport<Tap>>,
    TBinaryOutputProtocol<TFramedWriteTransport<Tap>>,
>;

/// A Thrift client of one incarnation.
struct Thrift {
    client: TappedClient,
    seen: Arc<Mutex<Seen>>,
    incarnation: u64,
}

impl Thrift {
    /// Connects to `t`; `None` if the kill explains the failure.
    fn open(crash: &Arc<Crash>, t: Target) -> Option<Thrift> {
        let connect = || -> io::Result<(TcpStream, TcpStream)> {
            let s = TcpStream::connect(t.thrift)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
            Ok((s.try_clone()?, s))
        };
        let (r, w) = match connect() {
            Ok(halves) => halves,
            Err(e) => {
                crash.lost(t.incarnation, e.kind(), "thrift connect");
                return None;
            }
        };
        let seen = Arc::new(Mutex::new(Seen::default()));
        let tap = |stream| Tap {
            stream,
            seen: seen.clone(),
            crash: crash.clone(),
            incarnation: t.incarnation,
        };
        Some(Thrift {
            client: common::kestrel_gen::KestrelSyncClient::new(
                TBinaryInputProtocol::new(TFramedReadTransport::new(tap(r)), true),
                TBinaryOutputProtocol::new(TFramedWriteTransport::new(tap(w)), true),
            ),
            seen,
            incarnation: t.incarnation,
        })
    }

    /// Sorts out a failed call: `Some(sent_before_kill)` when the kill
    /// explains it; otherwise the test fails.
    fn failed(&self, crash: &Crash, e: thrift::Error, what: &str) -> Option<bool> {
        let seen = self.seen.lock().unwrap();
        match (&e, seen.error) {
            (thrift::Error::Transport(_), Some(kind)) => crash
                .lost(self.incarnation, kind, what)
                .then_some(seen.sent_before_kill),
            _ => {
                crash.fail(format!("{what} on server {}: {e:?}", self.incarnation));
                None
            }
        }
    }
}

/// Puts batches of 1 to 8 items over Thrift.
fn thrift_producer(crash: &Arc<Crash>, producer: u32, mut rng: Rng) {
    let mut seq = 0;
    while let Some(t) = crash.target() {
        let Some(mut c) = Thrift::open(crash, t) else {
            continue;
        };
        while !crash.stopping() {
            let n = 1 + rng.below(8);
            let seqs = seq..seq + n;
            seq += n;
            let items: Vec<String> = seqs.clone().map(|s| item(producer, s)).collect();
            let data = items.iter().map(|i| i.clone().into_bytes()).collect();
            match c.client.put("crash".into(), data, 0) {
                Ok(k) if k as u64 == n => crash.acked(t.incarnation, producer, seqs),
                Ok(k) => return crash.fail(format!("put of {n} items accepted {k}")),
                Err(e) => {
                    if let Some(before_kill) = c.failed(crash, e, "thrift put") {
                        crash.in_doubt(t.incarnation, items, before_kill);
                    }
                    break;
                }
            }
        }
    }
}

/// Reads 1 to 8 items at a time over Thrift, opened (auto-abort far off),
/// then confirms them.
fn thrift_consumer(crash: &Arc<Crash>, mut rng: Rng) {
    while let Some(t) = crash.target() {
        let Some(mut c) = Thrift::open(crash, t) else {
            continue;
        };
        while !crash.stopping() {
            let max = 1 + rng.below(8) as i32;
            let got = match c.client.get("crash".into(), max, 50, 60_000) {
                Ok(got) => got,
                Err(e) => {
                    // Whatever it opened is rolled back by the restart.
                    c.failed(crash, e, "thrift get");
                    break;
                }
            };
            let mut ids = BTreeSet::new();
            let mut items = Vec::new();
            for it in got {
                ids.insert(it.id.expect("an opened item has an id"));
                items.push(String::from_utf8(it.data.expect("data")).expect("utf-8 item"));
            }
            crash.delivered(&items);
            if items.is_empty() {
                continue;
            }
            match c.client.confirm("crash".into(), ids.clone()) {
                Ok(k) if k as usize == ids.len() => crash.confirmed(items),
                Ok(k) => return crash.fail(format!("confirm of {} ids confirmed {k}", ids.len())),
                Err(e) => {
                    crash.unsure(items);
                    c.failed(crash, e, "thrift confirm");
                    break;
                }
            }
        }
    }
}

/// A queue's journal files, as a kill left them or as the server keeps them.
#[derive(Default)]
struct Disk {
    /// The highest segment number yet (numbers are never reused).
    newest: u64,
    /// Segments present: their inode numbers (a rewrite renames a new file
    /// over the old one) and lengths.
    segments: BTreeMap<u64, (u64, u64)>,
    /// The newest checkpoint: its generation, and the segment and offset
    /// replay starts from.
    checkpoint: Checkpoint,
}

#[derive(Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Checkpoint {
    generation: u64,
    segment: u64,
    offset: u64,
}

impl Checkpoint {
    /// Decodes the head of a version-2 checkpoint (the format is in
    /// docs/journal.md).
    fn decode(bytes: &[u8]) -> Checkpoint {
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        assert_eq!((u32_at(0), u32_at(4)), (0x4b51_434b, 2), "a v2 checkpoint");
        let name_len = u16::from_le_bytes([bytes[12], bytes[13]]) as usize;
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let at = 14 + name_len;
        Checkpoint {
            generation: u64_at(at),
            segment: u64_at(at + 8),
            offset: u64_at(at + 16),
        }
    }
}

impl Disk {
    fn read(dir: &Path) -> Disk {
        use std::os::unix::fs::MetadataExt;
        let mut disk = Disk::default();
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            if let Some(stem) = name.strip_suffix(".log") {
                let id = u64::from_str_radix(stem, 16).unwrap();
                disk.newest = disk.newest.max(id);
                match entry.metadata() {
                    Ok(m) => disk.segments.insert(id, (m.ino(), m.len())),
                    // Reclaimed meanwhile by a running server.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => panic!("{name}: {e}"),
                };
            } else if name.starts_with("checkpoint.") && name != "checkpoint.tmp" {
                let c = Checkpoint::decode(&fs::read(entry.path()).unwrap());
                disk.checkpoint = disk.checkpoint.max(c);
            }
        }
        disk
    }

    /// Segments deleted since the journal began: numbers run from 1.
    fn deleted(&self) -> u64 {
        self.newest - self.segments.len() as u64
    }

    /// Whether the newest checkpoint covers the whole log: a restart would
    /// replay nothing.
    fn covered(&self) -> bool {
        let end = self.segments.get(&self.newest).map_or(0, |&(_, len)| len);
        (self.checkpoint.segment, self.checkpoint.offset) == (self.newest, end)
    }
}

/// What happened to the journal during one incarnation.
#[derive(Debug, Default, Clone, Copy)]
struct JournalWork {
    rolls: u64,
    checkpoints: u64,
    reclaimed: u64,
}

impl JournalWork {
    fn between(before: &Disk, after: &Disk) -> JournalWork {
        let rewritten = after
            .segments
            .iter()
            .filter(|(id, (ino, _))| before.segments.get(id).is_some_and(|(old, _)| old != ino))
            .count() as u64;
        JournalWork {
            rolls: after.newest - before.newest,
            checkpoints: after.checkpoint.generation - before.checkpoint.generation,
            reclaimed: after.deleted() - before.deleted() + rewritten,
        }
    }
}

/// Producers (memcache one item at a time, Thrift in batches) and reliable
/// consumers (memcache `/open` and `/close`, Thrift `get` with auto-abort and
/// `confirm`) run while the server is killed with SIGKILL, each time after
/// `ACKS_PER_RUN` acknowledged puts and a random delay, and restarted on the
/// same data directory with the next sync mode. Small segments make every
/// run roll segments, checkpoint and reclaim. A client error is accepted
/// only when a kill explains it. At the end, what is queued was put (acked or
/// in doubt), once and in order per producer; every acknowledged put not
/// consumed is there, and no item whose confirm was acknowledged came back.
#[test]
fn kills_lose_nothing_acknowledged_and_bring_back_nothing_confirmed() {
    let started = Instant::now();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let wanted = std::env::var("CRASH_KILLS").map_or(KILLS, |v| v.parse().expect("CRASH_KILLS"));
    eprintln!("crash test: seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let qdir = queue_dir(dir.path(), "crash");
    let segment = format!("{SEGMENT_BYTES}");
    let start = |incarnation: u64| {
        let sync = CRASH_SYNC[incarnation as usize % CRASH_SYNC.len()];
        let env = [
            ("KESTREL_DEFAULT_QUEUE__SYNC_JOURNAL", sync),
            ("KESTREL_DEFAULT_QUEUE__MAX_JOURNAL_SIZE", segment.as_str()),
            // The backlog waits on disk: reads cross read-behind too.
            ("KESTREL_DEFAULT_QUEUE__MAX_MEMORY_SIZE", "64KiB"),
        ];
        Server::start_with_env(dir.path(), &[], &env)
    };
    let mut server = start(1);
    let crash = Arc::new(Crash::new(Target::of(&server, 1)));
    let mut rng = Rng(seed);
    let mut workers = Vec::new();
    for p in 0..2 {
        let crash = crash.clone();
        workers.push(std::thread::spawn(move || memcache_producer(&crash, p)));
    }
    for p in 2..4 {
        let (crash, rng) = (crash.clone(), Rng(seed.rotate_left(p)));
        workers.push(std::thread::spawn(move || thrift_producer(&crash, p, rng)));
    }
    let consumer = crash.clone();
    workers.push(std::thread::spawn(move || memcache_consumer(&consumer)));
    let (consumer, consumer_rng) = (crash.clone(), Rng(seed.rotate_left(7)));
    workers.push(std::thread::spawn(move || {
        thrift_consumer(&consumer, consumer_rng)
    }));

    // disk[i]: the journal as the kill of incarnation i left it.
    let mut disk = vec![Disk::default()];
    let mut kills = 0;
    for incarnation in 1.. {
        if !crash.wait_for_acks(incarnation) || incarnation > wanted {
            break;
        }
        std::thread::sleep(Duration::from_millis(rng.below(KILL_DELAY_MS)));
        crash.killed.store(incarnation, Ordering::SeqCst);
        // Dropping a server kills it with SIGKILL (straight from this
        // process: the kill lands as soon after the order as can be).
        drop(server);
        kills += 1;
        disk.push(Disk::read(&qdir));
        server = start(incarnation + 1);
        crash.publish(Target::of(&server, incarnation + 1));
    }
    crash.stop();
    for w in workers {
        w.join().unwrap();
    }
    let book = crash.book.lock().unwrap();
    assert!(book.violations.is_empty(), "{:#?}", book.violations);
    assert_eq!(kills, wanted);
    // A last kill with nothing in flight rolls back the reads the consumers
    // left open; then the queue is read out.
    drop(server);
    disk.push(Disk::read(&qdir));
    let server = start(wanted + 2);
    let remaining = drain(&server, "crash");

    let mut queued = HashSet::new();
    let mut last_seq: HashMap<u32, u64> = HashMap::new();
    for it in &remaining {
        assert!(queued.insert(it.as_str()), "{it} queued twice");
        let (p, s) = parse_item(it);
        assert!(
            book.acked.get(&p).is_some_and(|a| a.contains(&s)) || book.in_doubt.contains(it),
            "{it} is queued but was never put"
        );
        assert!(
            !book.confirmed.contains(it),
            "{it} is queued but was confirmed"
        );
        if let Some(prev) = last_seq.insert(p, s) {
            assert!(prev < s, "producer {p}: {s} queued after {prev}");
        }
    }
    let mut acked = 0;
    for (&p, seqs) in &book.acked {
        for &s in seqs {
            acked += 1;
            let it = item(p, s);
            assert!(
                queued.contains(it.as_str())
                    || book.confirmed.contains(&it)
                    || book.unsure_confirms.contains(&it),
                "acknowledged put {it} was lost"
            );
        }
    }

    let runs: Vec<Run> = (1..=wanted)
        .map(|i| book.runs.get(&i).copied().unwrap_or_default())
        .collect();
    let in_doubt: u64 = runs.iter().map(|r| r.in_doubt).sum();
    let mid_write: u64 = runs.iter().map(|r| r.mid_write).sum();
    let kills_mid_write = runs.iter().filter(|r| r.mid_write > 0).count();
    let survivors = book
        .in_doubt
        .iter()
        .filter(|it| queued.contains(it.as_str()))
        .count();
    let work: Vec<JournalWork> = disk
        .windows(2)
        .map(|w| JournalWork::between(&w[0], &w[1]))
        .collect();
    let with = |f: fn(&JournalWork) -> u64| work.iter().filter(|w| f(w) > 0).count();
    let total = |f: fn(&JournalWork) -> u64| work.iter().map(f).sum::<u64>();
    eprintln!(
        "crash test: {kills} kills in {:?}; {acked} puts acknowledged, {in_doubt} in doubt \
         ({mid_write} wholly sent before the kill, in {kills_mid_write} kills; {survivors} of them queued at the end), \
         {} confirmed, {} confirms unsure, {} deliveries, {} left; journal: {} rolls, {} checkpoints, \
         {} segments reclaimed (runs with each: {}, {}, {} of {})",
        started.elapsed(),
        book.confirmed.len(),
        book.unsure_confirms.len(),
        book.deliveries,
        remaining.len(),
        total(|w| w.rolls),
        total(|w| w.checkpoints),
        total(|w| w.reclaimed),
        with(|w| w.rolls),
        with(|w| w.checkpoints),
        with(|w| w.reclaimed),
        work.len(),
    );
    // Kills landed while puts were on their way: some of the in-doubt puts
    // were wholly sent before the kill was ordered.
    assert!(mid_write > 0, "no kill landed while a put was in flight");
    assert!(
        kills_mid_write as u64 * 2 >= kills,
        "only {kills_mid_write} of {kills} kills landed while a put was in flight"
    );
    // Every run's acknowledged puts fill more than two segments: each rolled
    // one, and most runs were killed after a checkpoint and a reclamation.
    for (i, w) in work.iter().enumerate() {
        assert!(w.rolls > 0, "run {} rolled no segment: {w:?}", i + 1);
    }
    let runs_total = work.len();
    assert!(
        with(|w| w.checkpoints) * 2 >= runs_total,
        "checkpoints in {} of {runs_total} runs",
        with(|w| w.checkpoints)
    );
    assert!(
        with(|w| w.reclaimed) * 2 >= runs_total,
        "reclamations in {} of {runs_total} runs",
        with(|w| w.reclaimed)
    );
}

/// The server's `journal_fsyncs`: fsyncs of journal segments, checkpoints
/// and journal directories since it started.
fn fsyncs(c: &mut Raw) -> u64 {
    stat(c, "journal_fsyncs").expect("journal_fsyncs in stats")
}

/// The fsyncs of one checkpoint of a journal with one segment: the segment
/// (the log it covers), the checkpoint file and the directory.
const CHECKPOINT_FSYNCS: u64 = 3;

/// A queue's checkpoints so far (the newest one's generation; 0 for none).
fn checkpoints(qdir: &Path) -> u64 {
    Disk::read(qdir).checkpoint.generation
}

fn start_synced(dir: &Path, sync: &str) -> Server {
    Server::start_with_env(dir, &[], &[("KESTREL_DEFAULT_QUEUE__SYNC_JOURNAL", sync)])
}

fn put(c: &mut Raw, queue: &str, i: usize) {
    store(c, queue, &format!("{i:06}"));
}

/// Sends `n` sets in one write, then reads their replies.
fn put_pipelined(c: &mut Raw, queue: &str, n: usize) {
    let sets: String = (0..n)
        .map(|i| format!("set {queue} 0 0 6\r\n{i:06}\r\n"))
        .collect();
    c.send(sets);
    for _ in 0..n {
        assert_eq!(c.line(), "STORED");
    }
}

/// `sync_journal = always`: the counter read after each acknowledgement has
/// moved, and over the run there is exactly one fsync per put besides the
/// directory's (when the segment was created) and the checkpoints'.
#[test]
fn sync_always_acknowledges_each_put_after_its_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_synced(dir.path(), "always");
    let mut c = mc(&server);
    assert_eq!(fsyncs(&mut c), 0);
    let puts = 200;
    for i in 0..puts {
        let before = fsyncs(&mut c);
        put(&mut c, "always", i);
        let after = fsyncs(&mut c);
        assert!(after > before, "put {i} acknowledged without an fsync");
    }
    let qdir = queue_dir(dir.path(), "always");
    let expected = || puts as u64 + 1 + CHECKPOINT_FSYNCS * checkpoints(&qdir);
    // A checkpoint may be half-way: wait until the counts agree.
    eventually("one fsync per put", || fsyncs(&mut c) == expected());
}

/// An interval (`100ms`): a put is acknowledged before any fsync, the
/// journal is fsynced soon after without anything else happening, and a
/// burst of puts costs at most one fsync per interval.
#[test]
fn sync_interval_fsyncs_once_per_interval_not_per_put() {
    let dir = tempfile::tempdir().unwrap();
    let interval = Duration::from_millis(100);
    let server = start_synced(dir.path(), "100ms");
    let qdir = queue_dir(dir.path(), "interval");
    let mut c = mc(&server);
    let sent = Instant::now();
    put(&mut c, "interval", 0);
    // The queue's first checkpoint (which fsyncs too) comes 2 s after the
    // queue was created, later than `sent`: an fsync seen before then is
    // the interval's. Two seconds is twenty intervals.
    let by = sent + Duration::from_secs(2);
    loop {
        let (n, seen) = (fsyncs(&mut c), Instant::now());
        if n > 0 {
            assert!(
                seen < by,
                "the first fsync came {:?} after the put",
                seen - sent
            );
            assert_eq!(n, 1, "one put, one fsync");
            assert_eq!(checkpoints(&qdir), 0);
            break;
        }
        assert!(seen < by, "no fsync {:?} after a put", seen - sent);
        std::thread::sleep(Duration::from_millis(5));
    }

    // A stream of puts over ten intervals.
    let (before, checkpoints_before) = (fsyncs(&mut c), checkpoints(&qdir));
    let started = Instant::now();
    let mut puts = 0;
    while started.elapsed() < 10 * interval {
        put_pipelined(&mut c, "interval", 100);
        puts += 100;
    }
    let elapsed = started.elapsed();
    let after = fsyncs(&mut c);
    let made = after - before;
    let checkpointed = checkpoints(&qdir) - checkpoints_before;
    // At most one fsync per interval begun, and each checkpoint's (one may
    // be half-way).
    let intervals = (elapsed.as_micros() / interval.as_micros()) as u64 + 1;
    let bound = intervals + CHECKPOINT_FSYNCS * (checkpointed + 1);
    eprintln!("interval sync: {puts} puts in {elapsed:?}, {made} fsyncs (bound {bound})");
    assert!(
        made <= bound,
        "{made} fsyncs for {puts} puts in {elapsed:?}"
    );
    // The last puts are fsynced too, with nothing more asked of the server.
    eventually("the stream's tail fsynced", || fsyncs(&mut c) > after);
}

/// `never`: the only fsyncs are the checkpoints'.
#[test]
fn sync_never_fsyncs_only_for_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_synced(dir.path(), "never");
    let qdir = queue_dir(dir.path(), "never");
    let mut c = mc(&server);
    let puts = 2000;
    put_pipelined(&mut c, "never", puts);
    // One checkpoint may be half-way.
    let made = fsyncs(&mut c);
    assert!(
        made <= CHECKPOINT_FSYNCS * (checkpoints(&qdir) + 1),
        "{made} fsyncs"
    );
    // The queue's first checkpoint comes 2 s after it was created; then
    // every fsync is accounted for.
    eventually("a checkpoint, and only its fsyncs", || {
        let made = fsyncs(&mut c);
        let n = checkpoints(&qdir);
        n > 0 && made == CHECKPOINT_FSYNCS * n
    });
}

fn queue_dir(data: &Path, queue: &str) -> PathBuf {
    data.join("queues").join(queue)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut s: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    s.sort();
    s
}

fn fill(server: &Server, queue: &str, n: usize) {
    let mut c = mc(server);
    for i in 0..n {
        store(&mut c, queue, &format!("{queue}-{i:05}"));
    }
}

fn expected(queue: &str, range: impl Iterator<Item = usize>) -> Vec<String> {
    range.map(|i| format!("{queue}-{i:05}")).collect()
}

#[test]
fn a_torn_tail_is_truncated_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), &[]);
    fill(&server, "torn", 100);
    server.signal("KILL");
    drop(server);
    let seg = segments(&queue_dir(dir.path(), "torn")).pop().unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 5).unwrap();
    drop(f);
    fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(b"\xde\xad\xbe\xef torn")
        .unwrap();

    let server = Server::start_in(dir.path(), &[]);
    assert_eq!(drain(&server, "torn"), expected("torn", 0..99));
    let log = server.log().join("\n");
    assert!(
        log.contains("journal tail") && log.contains("torn"),
        "no warning about the damage:\n{log}"
    );
    // New items go after the good ones and survive another restart.
    fill(&server, "torn", 1);
    server.signal("KILL");
    drop(server);
    let server = Server::start_in(dir.path(), &[]);
    assert_eq!(drain(&server, "torn"), expected("torn", 0..1));
}

#[test]
fn a_flipped_bit_costs_one_item_and_other_queues_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), &[]);
    fill(&server, "flip", 100);
    fill(&server, "intact", 100);
    server.signal("KILL");
    drop(server);
    let seg = segments(&queue_dir(dir.path(), "flip")).pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let at = bytes
        .windows(10)
        .position(|w| w == b"flip-00050")
        .expect("item 50 on disk");
    bytes[at + 7] ^= 0x04;
    fs::write(&seg, bytes).unwrap();

    let server = Server::start_in(dir.path(), &[]);
    let mut want = expected("flip", 0..100);
    want.remove(50);
    assert_eq!(drain(&server, "flip"), want);
    assert_eq!(drain(&server, "intact"), expected("intact", 0..100));
    server.wait_for_log("DATA MAY HAVE BEEN LOST", Duration::from_secs(10));
}

#[test]
fn an_unreadable_journal_leaves_the_other_queues_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), &[]);
    fill(&server, "broken", 10);
    fill(&server, "healthy", 10);
    server.stop();
    // A directory where a segment file should be: reading it fails.
    let seg = segments(&queue_dir(dir.path(), "broken")).pop().unwrap();
    fs::remove_file(&seg).unwrap();
    fs::create_dir(&seg).unwrap();

    let server = Server::start_in(dir.path(), &[]);
    server.wait_for_log("could not be recovered", Duration::from_secs(10));
    assert_eq!(drain(&server, "healthy"), expected("healthy", 0..10));
    let mut c = mc(&server);
    let reply = c.ask("get broken");
    assert!(
        reply.starts_with("SERVER_ERROR queue broken is unavailable"),
        "{reply}"
    );
    c.send("set broken 0 0 1\r\nx\r\n");
    assert!(c.line().starts_with("SERVER_ERROR"));
    // Its files are left for an operator, untouched.
    assert!(seg.is_dir());
}

/// Reads one stat of `queue` through memcache `dump_stats`.
fn queue_stat(c: &mut Raw, queue: &str, name: &str) -> u64 {
    c.send(format!("dump_stats {queue}\r\n"));
    let lines = c.lines_until("END");
    let prefix = format!("  {name}=");
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in {lines:?}"))
        .parse()
        .unwrap()
}

/// The server's resident memory (`VmRSS` in /proc/PID/status), in bytes.
fn rss(server: &Server) -> u64 {
    let status = fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix(" kB"))
        .expect("VmRSS in kB")
        .parse()
        .unwrap();
    kib * 1024
}

/// Sixteen megabytes queued with `max_memory_size = 64KiB`: the queue's own
/// counters stay within the limit, and so does the process: its resident
/// memory grows by far less than the backlog, filling and draining.
#[test]
fn read_behind_drains_a_large_backlog_in_order_within_the_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 64 * 1024;
    let server = Server::start_with_env(
        dir.path(),
        &[],
        &[("KESTREL_DEFAULT_QUEUE__MAX_MEMORY_SIZE", "64KiB")],
    );
    let mut c = mc(&server);
    let n = 16_000;
    let pad = "x".repeat(1000);
    let batch = 100;
    let mut base = 0;
    let mut peak = 0;
    for start in (0..n).step_by(batch) {
        let sets: String = (start..start + batch)
            .map(|i| {
                let it = format!("{i:06}{pad}");
                format!("set backlog 0 0 {}\r\n{it}\r\n", it.len())
            })
            .collect();
        c.send(sets);
        for _ in 0..batch {
            assert_eq!(c.line(), "STORED");
        }
        if start == 10 * batch {
            // Past start-up and the first segment's buffers.
            base = rss(&server);
        }
        if start % 1000 == 0 {
            assert!(queue_stat(&mut c, "backlog", "mem_bytes") <= limit);
            peak = peak.max(rss(&server));
        }
    }
    // Sixteen megabytes queued, at most 64 KiB of it in memory.
    assert_eq!(queue_stat(&mut c, "backlog", "items"), n as u64);
    assert!(queue_stat(&mut c, "backlog", "mem_bytes") <= limit);
    let filled = rss(&server);
    let mut reader = Conn::open(server.memcache.unwrap()).unwrap();
    for i in 0..n {
        let it = reader
            .get("backlog")
            .unwrap()
            .unwrap_or_else(|| panic!("item {i} missing"));
        assert_eq!(&it[..6], format!("{i:06}"));
        if i % 1000 == 0 {
            assert!(queue_stat(&mut c, "backlog", "mem_bytes") <= limit);
            peak = peak.max(rss(&server));
        }
    }
    assert_eq!(reader.get("backlog").unwrap(), None);
    eprintln!("read-behind: VmRSS {base} at start, {filled} filled, peak {peak}");
    // Room for read-behind's 1 MiB reads and the allocator's slack; holding
    // the backlog would take four times as much.
    let slack = 4 << 20;
    assert!(
        peak <= base + slack,
        "VmRSS grew from {base} to {peak} for a 16 MB backlog"
    );
}

fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn journal_size_stays_bounded_through_fill_and_drain_cycles_with_open_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        dir.path(),
        &[],
        &[("KESTREL_DEFAULT_QUEUE__MAX_JOURNAL_SIZE", "64KiB")],
    );
    let qdir = queue_dir(dir.path(), "cycle");
    let mut producer = mc(&server);
    let mut consumer = Conn::open(server.memcache.unwrap()).unwrap();
    // A connection that keeps reads open for the whole test.
    let mut holder = Conn::open(server.memcache.unwrap()).unwrap();
    let pad = "y".repeat(200);
    let mut written = 0u64;
    let mut peak = 0u64;
    let cycles = 40;
    for cycle in 0..cycles {
        for i in 0..500 {
            let it = format!("{cycle:03}-{i:04}-{pad}");
            written += it.len() as u64;
            store(&mut producer, "cycle", &it);
        }
        if cycle % 4 == 0 {
            assert!(holder.get("cycle/open").unwrap().is_some());
        }
        while consumer.get("cycle/close/open").unwrap().is_some() {}
        peak = peak.max(dir_bytes(&qdir));
    }
    let held = cycles / 4;
    let live = held as u64 * (pad.len() as u64 + 9);
    // Reclamation trails the checkpoints by a couple of seconds: wait for it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let bound = 2 * live + 3 * 64 * 1024 + 4096;
    while dir_bytes(&qdir) > bound {
        assert!(
            Instant::now() < deadline,
            "journal still {} bytes, bound {bound}",
            dir_bytes(&qdir)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "disk bound: {written} bytes written in {cycles} cycles; peak journal {peak} bytes; settled at {} bytes \
         for {live} live bytes ({held} open reads)",
        dir_bytes(&qdir)
    );
    // Mid-run too, the journal trails by a fixed number of segments, not by
    // what was written: a checkpoint every two segments, reclamation behind
    // the older of two checkpoints, plus however long a maintenance pass
    // takes to come round (without reclamation it would be the 5.8 MB written).
    assert!(
        peak <= 2 * live + 16 * 64 * 1024,
        "peak {peak} for {written} written"
    );
    // The held reads are still there and come back when their connection closes.
    drop(holder);
    let mut c = mc(&server);
    eventually("the held reads to come back", || {
        queue_stat(&mut c, "cycle", "items") == held as u64
    });
}

/// Starts a server on `dir`; returns it and the time it took to be ready to
/// serve (the harness returns once the server logs so).
fn timed_start(dir: &Path, env: &[(&str, &str)]) -> (Server, Duration) {
    let started = Instant::now();
    let server = Server::start_with_env(dir, &[], env);
    (server, started.elapsed())
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Restart time does not grow with depth. A queue of 200,000 items (nine
/// segments) killed right after it was filled replays only the log after
/// its newest checkpoint (at most about two segments): ready within 1 s.
/// Once a checkpoint covers its log, it is ready within three times what a
/// queue of ten items takes. It comes back whole and in order.
#[test]
fn a_deep_queue_restarts_as_fast_as_a_small_one_with_its_counts_and_order() {
    let env = [("KESTREL_DEFAULT_QUEUE__MAX_JOURNAL_SIZE", "1MiB")];
    let small = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(small.path(), &[], &env);
    fill(&server, "small", 10);
    drop(server);
    let deep = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(deep.path(), &[], &env);
    let n = 200_000;
    let mut c = server.client();
    for batch in 0..n / 1000 {
        let items: Vec<Vec<u8>> = (0..1000)
            .map(|i| format!("deep-{:07}", batch * 1000 + i).into_bytes())
            .collect();
        assert_eq!(c.put("deep".into(), items, 0).unwrap(), 1000);
    }
    let taken = c.get("deep".into(), 10, 0, 0).unwrap();
    assert_eq!(taken.len(), 10);
    drop(c);
    // Dropping the server kills it (SIGKILL).
    drop(server);
    let qdir = queue_dir(deep.path(), "deep");
    assert!(
        Disk::read(&qdir).newest >= 9,
        "the queue spans nine segments"
    );

    let (server, after_kill) = timed_start(deep.path(), &env);
    assert!(
        after_kill <= Duration::from_secs(1),
        "ready {after_kill:?} after a kill"
    );
    // The server checkpoints what it replayed (2 s after it started).
    eventually("a checkpoint covering the log", || {
        Disk::read(&qdir).covered()
    });
    drop(server);

    // Interleaved, so that whatever else loads the machine weighs on both.
    let (mut small_times, mut deep_times) = (Vec::new(), Vec::new());
    let mut server = None;
    for _ in 0..3 {
        let (s, t) = timed_start(small.path(), &env);
        small_times.push(t);
        drop(s);
        drop(server.take());
        assert!(Disk::read(&qdir).covered());
        let (s, t) = timed_start(deep.path(), &env);
        deep_times.push(t);
        server = Some(s);
    }
    eprintln!(
        "restart to ready: deep after a kill {after_kill:?}; checkpointed: small {small_times:?}, deep {deep_times:?}"
    );
    let (small_time, deep_time) = (median(small_times), median(deep_times));
    assert!(
        deep_time <= 3 * small_time && deep_time <= Duration::from_secs(1),
        "a deep queue ready in {deep_time:?}, a small one in {small_time:?}"
    );
    let server = server.unwrap();
    let mut c = server.client();
    let info = c.peek("deep".into()).unwrap();
    assert_eq!(info.items, Some(n as i64 - 10));
    assert_eq!(info.head_item.as_deref(), Some(&b"deep-0000010"[..]));
    let mut next = 10;
    loop {
        let got = c.get("deep".into(), 1000, 0, 0).unwrap();
        if got.is_empty() {
            break;
        }
        for it in got {
            assert_eq!(it.data.unwrap(), format!("deep-{next:07}").into_bytes());
            next += 1;
        }
    }
    assert_eq!(next, n);
}

#[test]
fn a_full_disk_refuses_the_put_and_keeps_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), &[]);
    fill(&server, "full", 3);
    server.stop();
    // The next segment the journal writes to is /dev/full: every write fails
    // with ENOSPC, as on a full disk.
    let qdir = queue_dir(dir.path(), "full");
    let last = segments(&qdir).pop().unwrap();
    let stem = last.file_stem().unwrap().to_str().unwrap();
    let next = u64::from_str_radix(stem, 16).unwrap() + 1;
    std::os::unix::fs::symlink("/dev/full", qdir.join(format!("{next:016x}.log"))).unwrap();

    let server = Server::start_in(dir.path(), &[]);
    let mut c = mc(&server);
    let reply = set(&mut c, "full", "lost");
    assert!(
        reply.starts_with("SERVER_ERROR journal write failed"),
        "{reply}"
    );
    server.wait_for_log("journal write failed", Duration::from_secs(10));
    // Reads keep working, and the refused item is not delivered.
    assert_eq!(queue_stat(&mut c, "full", "items"), 3);
    let mut reader = Conn::open(server.memcache.unwrap()).unwrap();
    assert_eq!(reader.get("full").unwrap().as_deref(), Some("full-00000"));
    // Once writes succeed again (the journal moves to a fresh segment), puts do.
    store(&mut c, "full", "next");
    server.stop();
    let server = Server::start_in(dir.path(), &[]);
    assert_eq!(drain(&server, "full"), ["full-00001", "full-00002", "next"]);
}

/// A flush survives `kill -9` both ways it is kept: a queue with nothing
/// open gets a fresh journal directory, one with an open read gets a FLUSH
/// record; either way the flushed items stay gone, the open one comes back
/// and what came after the flush is kept.
#[test]
fn a_flush_is_durable_with_and_without_open_reads() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), &[]);
    fill(&server, "plain", 3);
    fill(&server, "held", 3);
    let mut reader = mc(&server);
    reader.send("get held/open\r\n");
    assert_eq!(reader.line(), "VALUE held 0 10");
    assert_eq!(reader.line(), "held-00000");
    assert_eq!(reader.line(), "END");
    let mut c = mc(&server);
    for queue in ["plain", "held"] {
        c.send(format!("flush {queue}\r\n"));
        assert_eq!(c.line(), "END");
        store(&mut c, queue, "after");
    }
    server.signal("KILL");
    drop(server);

    let server = Server::start_in(dir.path(), &[]);
    assert_eq!(drain(&server, "plain"), ["after"]);
    assert_eq!(drain(&server, "held"), ["held-00000", "after"]);
}
