//! Durability, against the real binary and real files: crashes (SIGKILL),
//! damaged journals, read-behind, bounded disk and restart of a deep queue.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use common::{Raw, Server};

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

    fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end().to_string())
    }

    fn set(&mut self, queue: &str, data: &str) -> std::io::Result<String> {
        self.writer
            .write_all(format!("set {queue} 0 0 {}\r\n{data}\r\n", data.len()).as_bytes())?;
        self.line()
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

/// What the crash test's clients know for sure.
#[derive(Default)]
struct Book {
    /// Puts answered STORED, per producer.
    acked: HashMap<u32, BTreeSet<u64>>,
    /// Puts whose answer was lost with the server.
    unsure_puts: HashSet<String>,
    /// Items whose confirm was answered.
    confirmed: HashSet<String>,
    /// Items whose confirm was sent but whose answer was lost with the server:
    /// gone or back in the queue, either is right.
    unsure_confirms: HashSet<String>,
    violations: Vec<String>,
}

fn item(producer: u32, seq: u64) -> String {
    format!("p{producer}-{seq:08}")
}

fn parse_item(item: &str) -> (u32, u64) {
    let (p, s) = item[1..].split_once('-').expect("tagged item");
    (p.parse().unwrap(), s.parse().unwrap())
}

/// Producers and reliable consumers run while the server is killed with
/// SIGKILL at random moments and restarted on the same data directory. At the
/// end, every acknowledged put is confirmed or still queued, exactly once and
/// in order per producer, and no confirmed item ever came back.
fn crash_test(sync: &str) {
    let dir = tempfile::tempdir().unwrap();
    let env = [("KESTREL_DEFAULT_QUEUE__SYNC_JOURNAL", sync)];
    let mut server = Server::start_with_env(dir.path(), &[], &env);
    let addr = Arc::new(RwLock::new(server.memcache.unwrap()));
    let book = Arc::new(Mutex::new(Book::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let connect = |addr: &RwLock<SocketAddr>, stop: &AtomicBool| -> Option<Conn> {
        loop {
            if let Ok(c) = Conn::open(*addr.read().unwrap()) {
                return Some(c);
            }
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            // The server is being restarted; its new port is published soon.
            std::thread::sleep(Duration::from_millis(5));
        }
    };

    let mut workers = Vec::new();
    for p in 0..2u32 {
        let (addr, book, stop) = (addr.clone(), book.clone(), stop.clone());
        workers.push(std::thread::spawn(move || {
            let mut conn = None;
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                let Some(c) = conn.as_mut() else {
                    conn = connect(&addr, &stop);
                    continue;
                };
                let it = item(p, seq);
                match c.set("crash", &it) {
                    Ok(reply) if reply == "STORED" => {
                        book.lock().unwrap().acked.entry(p).or_default().insert(seq);
                    }
                    Ok(reply) => panic!("put answered {reply:?}"),
                    Err(_) => {
                        book.lock().unwrap().unsure_puts.insert(it);
                        conn = None;
                    }
                }
                seq += 1;
            }
        }));
    }
    for _ in 0..2 {
        let (addr, book, stop) = (addr.clone(), book.clone(), stop.clone());
        workers.push(std::thread::spawn(move || {
            let mut conn: Option<Conn> = None;
            let mut holding: Option<String> = None;
            loop {
                let stopping = stop.load(Ordering::Relaxed);
                if conn.is_none() {
                    if stopping {
                        return;
                    }
                    conn = connect(&addr, &stop);
                    continue;
                }
                let c = conn.as_mut().unwrap();
                let key = match (&holding, stopping) {
                    (Some(_), true) => "crash/close",
                    (None, true) => return,
                    (Some(_), false) => "crash/close/open/t=50",
                    (None, false) => "crash/open/t=50",
                };
                match c.get(key) {
                    Ok(got) => {
                        let mut b = book.lock().unwrap();
                        if let Some(done) = holding.take()
                            && !b.confirmed.insert(done.clone())
                        {
                            b.violations.push(format!("{done} confirmed twice"));
                        }
                        if let Some(got) = got {
                            if b.confirmed.contains(&got) {
                                b.violations.push(format!(
                                    "{got} delivered after its confirm was acknowledged"
                                ));
                            }
                            holding = Some(got);
                        }
                    }
                    Err(_) => {
                        // Whether the confirm landed is unknown; the item may come back.
                        if let Some(unsure) = holding.take()
                            && key.contains("close")
                        {
                            book.lock().unwrap().unsure_confirms.insert(unsure);
                        }
                        conn = None;
                    }
                }
            }
        }));
    }

    let mut rng = 0x5eed_u64 ^ sync.len() as u64;
    for _ in 0..5 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(200 + rng % 400));
        server.signal("KILL");
        drop(server);
        server = Server::start_with_env(dir.path(), &[], &env);
        *addr.write().unwrap() = server.memcache.unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }

    // What is left in the queue, in order.
    let mut c = Conn::open(server.memcache.unwrap()).unwrap();
    let mut remaining = Vec::new();
    while let Some(it) = c.get("crash").unwrap() {
        remaining.push(it);
    }
    let book = book.lock().unwrap();
    assert!(book.violations.is_empty(), "{:?}", book.violations);
    let acked: usize = book.acked.values().map(BTreeSet::len).sum();
    assert!(acked > 100, "only {acked} puts were acknowledged");
    let mut seen = HashSet::new();
    let mut last_seq: HashMap<u32, u64> = HashMap::new();
    for it in &remaining {
        assert!(seen.insert(it.clone()), "{it} queued twice");
        assert!(
            !book.confirmed.contains(it),
            "{it} is queued but was confirmed"
        );
        let (p, s) = parse_item(it);
        if let Some(prev) = last_seq.insert(p, s) {
            assert!(prev < s, "producer {p}: {s} queued after {prev}");
        }
    }
    for (&p, seqs) in &book.acked {
        for &s in seqs {
            let it = item(p, s);
            assert!(
                book.confirmed.contains(&it)
                    || seen.contains(&it)
                    || book.unsure_confirms.contains(&it),
                "acknowledged put {it} was lost (sync {sync})"
            );
        }
    }
    eprintln!(
        "crash test (sync {sync}): {acked} puts acknowledged, {} confirmed, {} left, {} unsure",
        book.confirmed.len(),
        remaining.len(),
        book.unsure_puts.len()
    );
}

#[test]
fn crash_loses_nothing_acknowledged_with_interval_sync() {
    crash_test("100ms");
}

#[test]
fn crash_loses_nothing_acknowledged_with_sync_always() {
    crash_test("always");
}

#[test]
fn crash_loses_nothing_acknowledged_with_sync_never() {
    crash_test("never");
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
    let mut c = Raw::connect(server.memcache.unwrap());
    for i in 0..n {
        let it = format!("{queue}-{i:05}");
        c.send(format!("set {queue} 0 0 {}\r\n{it}\r\n", it.len()));
        assert_eq!(c.line(), "STORED");
    }
}

fn drain(server: &Server, queue: &str) -> Vec<String> {
    let mut c = Conn::open(server.memcache.unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(it) = c.get(queue).unwrap() {
        out.push(it);
    }
    out
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
    let mut c = Raw::connect(server.memcache.unwrap());
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

#[test]
fn read_behind_drains_a_large_backlog_in_order_within_the_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 64 * 1024;
    let server = Server::start_with_env(
        dir.path(),
        &[],
        &[("KESTREL_DEFAULT_QUEUE__MAX_MEMORY_SIZE", "64KiB")],
    );
    let mut c = Raw::connect(server.memcache.unwrap());
    let n = 4000;
    let pad = "x".repeat(1000);
    for i in 0..n {
        let it = format!("{i:06}{pad}");
        c.send(format!("set backlog 0 0 {}\r\n{it}\r\n", it.len()));
        assert_eq!(c.line(), "STORED");
        if i % 500 == 0 {
            assert!(queue_stat(&mut c, "backlog", "mem_bytes") <= limit);
        }
    }
    // Four megabytes queued, at most 64 KiB of it in memory.
    assert_eq!(queue_stat(&mut c, "backlog", "items"), n);
    assert!(queue_stat(&mut c, "backlog", "mem_bytes") <= limit);
    let mut reader = Conn::open(server.memcache.unwrap()).unwrap();
    for i in 0..n {
        let it = reader
            .get("backlog")
            .unwrap()
            .unwrap_or_else(|| panic!("item {i} missing"));
        assert_eq!(&it[..6], format!("{i:06}"));
        if i % 250 == 0 {
            assert!(queue_stat(&mut c, "backlog", "mem_bytes") <= limit);
        }
    }
    assert_eq!(reader.get("backlog").unwrap(), None);
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
    let mut producer = Raw::connect(server.memcache.unwrap());
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
            producer.send(format!("set cycle 0 0 {}\r\n{it}\r\n", it.len()));
            assert_eq!(producer.line(), "STORED");
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
    let mut c = Raw::connect(server.memcache.unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while queue_stat(&mut c, "cycle", "items") != held as u64 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_deep_queue_comes_back_with_its_counts_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), &[]);
    let addr = server.thrift;
    let n = 200_000;
    let mut c = server.client();
    use common::TKestrelSyncClient;
    for batch in 0..n / 1000 {
        let items: Vec<Vec<u8>> = (0..1000)
            .map(|i| format!("deep-{:07}", batch * 1000 + i).into_bytes())
            .collect();
        assert_eq!(c.put("deep".into(), items, 0).unwrap(), 1000);
    }
    let taken = c.get("deep".into(), 10, 0, 0).unwrap();
    assert_eq!(taken.len(), 10);
    drop(c);
    let _ = addr;
    server.signal("KILL");
    drop(server);

    let started = Instant::now();
    let server = Server::start_in(dir.path(), &[]);
    let ready = started.elapsed();
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
    eprintln!("deep queue: {n} items, restart to ready in {ready:?}");
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
    let mut c = Raw::connect(server.memcache.unwrap());
    c.send("set full 0 0 4\r\nlost\r\n");
    let reply = c.line();
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
    c.send("set full 0 0 4\r\nnext\r\n");
    assert_eq!(c.line(), "STORED");
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
    let mut reader = Raw::connect(server.memcache.unwrap());
    reader.send("get held/open\r\n");
    assert_eq!(reader.line(), "VALUE held 0 10");
    assert_eq!(reader.line(), "held-00000");
    assert_eq!(reader.line(), "END");
    let mut c = Raw::connect(server.memcache.unwrap());
    for queue in ["plain", "held"] {
        c.send(format!("flush {queue}\r\n"));
        assert_eq!(c.line(), "END");
        c.send(format!("set {queue} 0 0 5\r\nafter\r\n"));
        assert_eq!(c.line(), "STORED");
    }
    server.signal("KILL");
    drop(server);

    let server = Server::start_in(dir.path(), &[]);
    assert_eq!(drain(&server, "plain"), ["after"]);
    assert_eq!(drain(&server, "held"), ["held-00000", "after"]);
}
