//! What a run measures: latency histograms, the server's CPU time and
//! memory (from /proc, when its pid is given), and tagged payloads that let
//! consumers prove every item arrived exactly once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies in microseconds, 1 µs to 10 min at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// One line of results.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub target: String,
    pub protocol: String,
    pub connections: usize,
    pub item_size: usize,
    pub ops: u64,
    pub items: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub items_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub server_cpu_secs: Option<f64>,
    /// Server CPU time per request: on a shared machine, what the server
    /// takes from its clients, and so what decides throughput.
    pub server_cpu_us_per_op: Option<f64>,
    pub server_peak_rss_mib: Option<f64>,
    /// This process's CPU time during the run.
    pub client_cpu_secs: f64,
    /// The share of its threads' time the client was busy: near 1, the
    /// client, not the server, set the pace.
    pub client_busy: f64,
    /// `ok`, or what the verification found wrong; empty when not verified.
    pub verified: String,
    pub note: String,
}

impl Row {
    pub fn new(
        scenario: &str,
        ops: u64,
        items: u64,
        elapsed: Duration,
        latency: &Histogram<u64>,
    ) -> Row {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
        Row {
            scenario: scenario.into(),
            target: String::new(),
            protocol: String::new(),
            connections: 0,
            item_size: 0,
            ops,
            items,
            seconds: secs,
            ops_per_sec: ops as f64 / secs,
            items_per_sec: items as f64 / secs,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: latency.max() as f64 / 1000.0,
            server_cpu_secs: None,
            server_cpu_us_per_op: None,
            server_peak_rss_mib: None,
            client_cpu_secs: 0.0,
            client_busy: 0.0,
            verified: String::new(),
            note: String::new(),
        }
    }
}

/// Watches the server process: CPU seconds used and peak resident memory
/// between `start` and `stop`.
pub struct ServerProbe {
    pid: u32,
    cpu_at_start: f64,
    peak_rss_kib: Arc<AtomicU64>,
    running: Arc<AtomicBool>,
    sampler: Option<JoinHandle<()>>,
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / hz.max(1) as f64)
}

/// Resident memory of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl ServerProbe {
    pub fn start(pid: u32) -> ServerProbe {
        let peak = Arc::new(AtomicU64::new(rss_kib(pid).unwrap_or(0)));
        let running = Arc::new(AtomicBool::new(true));
        let sampler = {
            let (peak, running) = (peak.clone(), running.clone());
            std::thread::spawn(move || {
                while running.load(Ordering::Relaxed) {
                    if let Some(rss) = rss_kib(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        ServerProbe {
            pid,
            cpu_at_start: cpu_seconds(pid).unwrap_or(0.0),
            peak_rss_kib: peak,
            running,
            sampler: Some(sampler),
        }
    }

    /// Fills the row's server columns.
    pub fn stop(mut self, row: &mut Row) {
        self.running.store(false, Ordering::Relaxed);
        if let Some(s) = self.sampler.take() {
            let _ = s.join();
        }
        row.server_cpu_secs = cpu_seconds(self.pid).map(|end| end - self.cpu_at_start);
        row.server_cpu_us_per_op = row
            .server_cpu_secs
            .filter(|_| row.ops > 0)
            .map(|cpu| cpu * 1e6 / row.ops as f64);
        row.server_peak_rss_mib = Some(self.peak_rss_kib.load(Ordering::Relaxed) as f64 / 1024.0);
    }
}

/// This process's own CPU time over a run.
pub struct ClientProbe {
    cpu_at_start: f64,
}

fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

impl ClientProbe {
    pub fn start() -> ClientProbe {
        ClientProbe {
            cpu_at_start: own_cpu_seconds(),
        }
    }

    /// Fills the row's client columns; `threads` is how many threads ran
    /// the connections.
    pub fn stop(self, row: &mut Row, threads: usize) {
        row.client_cpu_secs = own_cpu_seconds() - self.cpu_at_start;
        row.client_busy = row.client_cpu_secs / (row.seconds * threads.max(1) as f64);
    }
}

/// Payloads: a tag naming the producer and sequence number, then random
/// filler, different for every item so compression flatters nobody. Text
/// protocol items must not contain line ends, so filler is then drawn from
/// 64 printable characters.
pub struct Payloads {
    state: u64,
    printable: bool,
}

const TAG_LEN: usize = 17;
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

impl Payloads {
    pub fn new(seed: u64, printable: bool) -> Payloads {
        Payloads {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            printable,
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u32) -> bool {
        percent > 0 && (self.next() % 100) < u64::from(percent)
    }

    /// An item of `size` bytes (at least the tag's 17) tagged (producer, seq).
    pub fn item(&mut self, producer: u32, seq: u64, size: usize) -> Vec<u8> {
        // The tag "pPPPPsSSSSSSSSSS.", written digit by digit: the client's
        // time is the server's on a shared machine.
        let mut item = Vec::with_capacity(size.max(TAG_LEN));
        item.push(b'p');
        push_digits(&mut item, u64::from(producer % 10_000), 4);
        item.push(b's');
        push_digits(&mut item, seq % 10_000_000_000, 10);
        item.push(b'.');
        item.truncate(size.max(TAG_LEN));
        while item.len() < size {
            let r = self.next().to_le_bytes();
            let n = (size - item.len()).min(8);
            if self.printable {
                item.extend(r[..n].iter().map(|b| ALPHABET[(*b & 63) as usize]));
            } else {
                item.extend_from_slice(&r[..n]);
            }
        }
        item
    }
}

/// Appends `n` as exactly `width` decimal digits (zero-padded).
fn push_digits(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for d in out[start..].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// The (producer, seq) tag of an item made by [`Payloads::item`].
pub fn tag(item: &[u8]) -> Option<(u32, u64)> {
    let tag = std::str::from_utf8(item.get(..TAG_LEN)?).ok()?;
    let producer = tag.get(1..5)?.parse().ok()?;
    let seq = tag.get(6..16)?.parse().ok()?;
    Some((producer, seq))
}

/// Counts how often each tagged item was seen; checks exactly-once delivery
/// of `producers` × `per_producer` items.
#[derive(Default)]
pub struct Tally {
    seen: HashMap<(u32, u64), u32>,
    untagged: u64,
}

impl Tally {
    pub fn add(&mut self, item: &[u8]) {
        match tag(item) {
            Some(t) => *self.seen.entry(t).or_insert(0) += 1,
            None => self.untagged += 1,
        }
    }

    pub fn merge(&mut self, other: Tally) {
        for (t, n) in other.seen {
            *self.seen.entry(t).or_insert(0) += n;
        }
        self.untagged += other.untagged;
    }

    /// `ok`, or what is wrong.
    pub fn verify(&self, producers: u32, per_producer: u64) -> String {
        let twice = self.seen.values().filter(|&&n| n > 1).count();
        let missing = (0..producers)
            .flat_map(|p| (0..per_producer).map(move |s| (p, s)))
            .filter(|t| !self.seen.contains_key(t))
            .count();
        let unexpected = self
            .seen
            .keys()
            .filter(|(p, s)| *p >= producers || *s >= per_producer)
            .count();
        if twice == 0 && missing == 0 && unexpected == 0 && self.untagged == 0 {
            "ok".into()
        } else {
            format!(
                "FAILED: {missing} missing, {twice} more than once, {unexpected} unexpected, {} untagged",
                self.untagged
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_fill_differs() {
        let mut p = Payloads::new(1, true);
        let a = p.item(3, 42, 64);
        let b = p.item(3, 43, 64);
        assert_eq!(a.len(), 64);
        assert_eq!(tag(&a), Some((3, 42)));
        assert_eq!(&a[..TAG_LEN], b"p0003s0000000042.");
        assert_ne!(a[TAG_LEN..], b[TAG_LEN..]);
        assert!(!a.contains(&b'\n') && !a.contains(&b'\r'));
    }

    #[test]
    fn tally_finds_missing_and_duplicates() {
        let mut p = Payloads::new(7, false);
        let mut t = Tally::default();
        for s in 0..10 {
            t.add(&p.item(0, s, 32));
        }
        assert_eq!(t.verify(1, 10), "ok");
        t.add(&p.item(0, 3, 32));
        assert!(t.verify(1, 11).contains("1 missing, 1 more than once"));
    }
}
