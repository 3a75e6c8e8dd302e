//! The scenarios: each drives workers with one connection apiece (tasks on
//! one single-threaded runtime, or on one per `--client-threads`) and turns
//! what they measured into result rows.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::{self, Client, Protocol};
use crate::measure::{ClientProbe, Payloads, Row, ServerProbe, Tally, histogram};

/// Evaluates `$op` (an `.await`ed request) and records how long it took in
/// the histogram `$h`.
macro_rules! timed {
    ($h:expr, $op:expr) => {{
        let start = Instant::now();
        let out = $op;
        let _ = $h.record((start.elapsed().as_micros() as u64).max(1));
        out
    }};
}

/// Where a scenario runs, and how results are labelled.
pub struct Target {
    pub protocol: Protocol,
    pub addr: SocketAddr,
    pub label: String,
    pub queue: String,
    pub server_pid: Option<u32>,
    /// Deadline of Thrift reliable reads.
    pub auto_abort: Duration,
    pub progress: bool,
    /// Threads the client's connections are spread over, one runtime each.
    pub client_threads: usize,
}

impl Target {
    async fn connect(&self) -> io::Result<Client> {
        client::connect(self.protocol, self.addr, self.auto_abort)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("connect to {}: {e}", self.addr)))
    }

    fn payloads(&self, seed: u64) -> Payloads {
        Payloads::new(seed, self.protocol == Protocol::Text)
    }

    /// Runs `body` with a progress bar over `total` units and a server probe,
    /// and labels the row it returns.
    fn measure(
        &self,
        name: &str,
        total: u64,
        connections: usize,
        size: usize,
        body: impl FnOnce(&AtomicU64) -> io::Result<Row>,
    ) -> io::Result<Row> {
        let done = AtomicU64::new(0);
        let bar = if self.progress {
            ProgressBar::new(total)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("{msg:>24} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
                .expect("template")
                .progress_chars("=> "),
        );
        bar.set_message(format!("{} {name}", self.label));
        let probe = self.server_pid.map(ServerProbe::start);
        let client = ClientProbe::start();
        let row = std::thread::scope(|s| {
            let ticker = s.spawn(|| {
                while !bar.is_finished() {
                    bar.set_position(done.load(Ordering::Relaxed));
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            let row = body(&done);
            bar.finish_and_clear();
            let _ = ticker.join();
            row
        });
        let mut row = row?;
        client.stop(&mut row, self.client_threads);
        if let Some(probe) = probe {
            probe.stop(&mut row);
        }
        row.target = self.label.clone();
        row.protocol = format!("{:?}", self.protocol).to_lowercase();
        row.connections = connections;
        row.item_size = size;
        Ok(row)
    }
}

/// What one worker measured.
struct Work {
    latency: Histogram<u64>,
    ops: u64,
    items: u64,
    /// Gets that found nothing.
    misses: u64,
    tally: Tally,
}

impl Default for Work {
    fn default() -> Self {
        Work {
            latency: histogram(),
            ops: 0,
            items: 0,
            misses: 0,
            tally: Tally::default(),
        }
    }
}

/// Runs `n` workers, each a future on a single-threaded runtime (spread
/// over `t.client_threads` threads), and merges what they measured.
fn workers<F, Fut>(t: &Target, n: usize, work: F) -> io::Result<(Work, Duration)>
where
    F: Fn(usize) -> Fut + Sync,
    Fut: Future<Output = io::Result<Work>>,
{
    let threads = t.client_threads.clamp(1, n.max(1));
    let start = Instant::now();
    let results: Vec<io::Result<Work>> = std::thread::scope(|s| {
        let work = &work;
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                s.spawn(move || {
                    block_on(async {
                        let all = futures_util::future::join_all((k..n).step_by(threads).map(work));
                        tokio::select! {
                            done = all => done,
                            stalled = client::watchdog() => vec![Err(stalled)],
                        }
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Err(io::Error::other("worker panicked"))])
            })
            .collect()
    });
    let elapsed = start.elapsed();
    let mut total = Work::default();
    for r in results {
        let w = r?;
        total.latency.add(&w.latency).expect("same bounds");
        total.ops += w.ops;
        total.items += w.items;
        total.misses += w.misses;
        total.tally.merge(w.tally);
    }
    Ok((total, elapsed))
}

/// Runs `f` to completion on a fresh single-threaded runtime.
fn block_on<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(f)
}

/// [`block_on`], failing if the server stops answering (see
/// [`client::watchdog`]).
fn block_on_watched<T>(f: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    block_on(async {
        tokio::select! {
            done = f => done,
            stalled = client::watchdog() => Err(stalled),
        }
    })
}

/// Splits `total` into `n` shares that differ by at most one.
fn share(total: u64, n: usize, i: usize) -> u64 {
    total / n as u64 + u64::from((i as u64) < total % n as u64)
}

fn queue_name(base: &str, queues: usize, k: u64) -> String {
    if queues <= 1 {
        base.to_string()
    } else {
        format!("{base}_{}", k % queues as u64)
    }
}

/// Puts `count` items into `queue` quickly (batches of 100) to build a backlog.
fn fill(t: &Target, queue: &str, count: u64, size: usize, loaders: usize) -> io::Result<Duration> {
    let (_, elapsed) = workers(t, loaders, |i| async move {
        let mut c = t.connect().await?;
        let mut payloads = t.payloads(1000 + i as u64);
        let mine = share(count, loaders, i);
        let mut done = 0;
        while done < mine {
            let n = (mine - done).min(100);
            let batch: Vec<Vec<u8>> = (0..n)
                .map(|k| payloads.item(9000 + i as u32, done + k, size))
                .collect();
            let accepted = c.put(queue, &batch).await? as u64;
            if accepted < n {
                return Err(io::Error::other(format!(
                    "backlog fill: {accepted} of {n} accepted"
                )));
            }
            done += n;
        }
        Ok(Work::default())
    })?;
    Ok(elapsed)
}

/// Empties `queues` through one connection.
fn flush_queues(t: &Target, queues: &[String]) -> io::Result<()> {
    block_on_watched(async {
        let mut c = t.connect().await?;
        for q in queues {
            c.flush(q).await?;
        }
        Ok(())
    })
}

/// `flood`: every connection alternates a put and a get (Kestrel's and
/// darner's classic mixed load), over one queue or several.
pub fn flood(
    t: &Target,
    connections: usize,
    sets: u64,
    size: usize,
    queues: usize,
    prefill: u64,
) -> io::Result<Row> {
    let names: &Vec<String> = &(0..queues.max(1) as u64)
        .map(|k| queue_name(&t.queue, queues, k))
        .collect();
    flush_queues(t, names)?;
    for name in names {
        fill(t, name, prefill, size, 1)?;
    }
    t.measure("flood", sets, connections, size, |done| {
        let (w, elapsed) = workers(t, connections, |i| async move {
            let mut c = t.connect().await?;
            let mut payloads = t.payloads(i as u64);
            let mut w = Work::default();
            for n in 0..share(sets, connections, i) {
                let queue = &names[((n + i as u64) % names.len() as u64) as usize];
                let item = payloads.item(i as u32, n, size);
                timed!(w.latency, c.put(queue, &[item]).await?);
                let got = timed!(w.latency, c.take(queue, 1, Duration::ZERO).await?);
                w.ops += 2;
                w.items += 1;
                w.misses += u64::from(got.is_empty());
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(w)
        })?;
        let mut row = Row::new("flood", w.ops, w.items, elapsed, &w.latency);
        row.note = format!(
            "prefill {prefill}, {queues} queue(s), {} empty gets",
            w.misses
        );
        Ok(row)
    })
}

/// `put-many`: clients putting as fast as they can, `batch` items per request.
pub fn put_many(
    t: &Target,
    clients: usize,
    items: u64,
    size: usize,
    batch: usize,
) -> io::Result<Row> {
    t.measure("put-many", items, clients, size, |done| {
        let (w, elapsed) = workers(t, clients, |i| async move {
            let mut c = t.connect().await?;
            let mut payloads = t.payloads(i as u64);
            let mut w = Work::default();
            let mine = share(items, clients, i);
            let mut seq = 0;
            while seq < mine {
                let n = (mine - seq).min(batch as u64);
                let request: Vec<Vec<u8>> = (0..n)
                    .map(|k| payloads.item(i as u32, seq + k, size))
                    .collect();
                let accepted = timed!(w.latency, c.put(&t.queue, &request).await?);
                w.ops += 1;
                w.items += accepted as u64;
                seq += n;
                done.fetch_add(n, Ordering::Relaxed);
            }
            Ok(w)
        })?;
        let mut row = Row::new("put-many", w.ops, w.items, elapsed, &w.latency);
        row.note = format!("{batch} item(s) per request");
        if w.items < items {
            row.verified = format!("FAILED: {} of {items} accepted", w.items);
        }
        Ok(row)
    })
}

/// `drain`: clients reading a backlog out until the queue is empty.
pub fn drain(t: &Target, clients: usize, batch: usize) -> io::Result<Row> {
    t.measure("drain", 0, clients, 0, |done| {
        let (w, elapsed) = workers(t, clients, |_| async move {
            let mut c = t.connect().await?;
            let mut w = Work::default();
            loop {
                let got = timed!(w.latency, c.take(&t.queue, batch, Duration::ZERO).await?);
                if got.is_empty() {
                    break;
                }
                w.ops += 1;
                w.items += got.len() as u64;
                done.fetch_add(got.len() as u64, Ordering::Relaxed);
            }
            Ok(w)
        })?;
        Ok(Row::new("drain", w.ops, w.items, elapsed, &w.latency))
    })
}

/// `reliable` and `leaky`: producers put tagged items while consumers read
/// them reliably (open, then confirm). Leaky consumers walk away from
/// `leak_percent` of their items unconfirmed (memcache and text by
/// disconnecting, Thrift by letting the auto-abort deadline pass); those come
/// back and are read again. At the end every item must have been confirmed
/// exactly once.
pub fn reliable(
    t: &Target,
    producers: usize,
    consumers: usize,
    per_producer: u64,
    size: usize,
    batch: usize,
    leak_percent: u32,
) -> io::Result<Row> {
    let name = if leak_percent > 0 {
        "leaky"
    } else {
        "reliable"
    };
    let total = per_producer * producers as u64;
    flush_queues(t, std::slice::from_ref(&t.queue))?;
    let confirmed = &AtomicU64::new(0);
    t.measure(name, total, producers + consumers, size, |done| {
        let (w, elapsed) = workers(t, producers + consumers, |i| async move {
            let mut w = Work::default();
            let mut c = t.connect().await?;
            if i < producers {
                let mut payloads = t.payloads(i as u64);
                for seq in 0..per_producer {
                    let item = payloads.item(i as u32, seq, size);
                    if timed!(w.latency, c.put(&t.queue, &[item]).await?) != 1 {
                        return Err(io::Error::other("put refused"));
                    }
                    w.ops += 1;
                }
                return Ok(w);
            }
            let mut dice = t.payloads(77 + i as u64);
            let mut last_progress = Instant::now();
            while confirmed.load(Ordering::Relaxed) < total {
                let opened = timed!(
                    w.latency,
                    c.open(&t.queue, batch, Duration::from_millis(100)).await?
                );
                w.ops += 1;
                if opened.is_empty() {
                    if last_progress.elapsed() > Duration::from_secs(60) {
                        return Err(io::Error::other("no item for 60 s; items lost?"));
                    }
                    continue;
                }
                last_progress = Instant::now();
                let mut keep = Vec::new();
                let mut leaked = false;
                for item in opened {
                    if dice.chance(leak_percent) {
                        leaked = true;
                    } else {
                        w.tally.add(&item.data);
                        keep.push(item);
                    }
                }
                let n = keep.len() as u64;
                timed!(w.latency, c.confirm(&t.queue, keep).await?);
                if leaked && t.protocol != Protocol::Thrift {
                    // Hang up: the server puts the open read back.
                    c.finish(&t.queue).await?;
                    c = t.connect().await?;
                }
                w.items += n;
                confirmed.fetch_add(n, Ordering::Relaxed);
                done.fetch_add(n, Ordering::Relaxed);
            }
            c.finish(&t.queue).await?;
            Ok(w)
        })?;
        let mut row = Row::new(name, w.ops, w.items, elapsed, &w.latency);
        row.verified = w.tally.verify(producers as u32, per_producer);
        row.note = format!("{producers} producers, {consumers} consumers, batch {batch}");
        if leak_percent > 0 {
            row.note += &format!(", {leak_percent}% left unconfirmed");
        }
        Ok(row)
    })
}

/// `backlog`: put+get pairs on top of a queue already holding `depth` items,
/// one row per depth (the queue grows from one depth to the next).
pub fn backlog(
    t: &Target,
    depths: &[u64],
    connections: usize,
    pairs: u64,
    size: usize,
) -> io::Result<Vec<Row>> {
    flush_queues(t, std::slice::from_ref(&t.queue))?;
    let mut current = 0;
    let mut rows = Vec::new();
    for &depth in depths {
        let grow = depth.saturating_sub(current);
        let fill_time = fill(t, &t.queue, grow, size, 4)?;
        current = current.max(depth);
        let mut row = t.measure(
            &format!("backlog {depth}"),
            pairs,
            connections,
            size,
            |done| {
                let (w, elapsed) = workers(t, connections, |i| async move {
                    let mut c = t.connect().await?;
                    let mut payloads = t.payloads(50 + i as u64);
                    let mut w = Work::default();
                    for n in 0..share(pairs, connections, i) {
                        let item = payloads.item(i as u32, n, size);
                        timed!(w.latency, c.put(&t.queue, &[item]).await?);
                        let got = timed!(w.latency, c.take(&t.queue, 1, Duration::ZERO).await?);
                        w.ops += 2;
                        w.items += got.len() as u64;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(w)
                })?;
                Ok(Row::new("backlog", w.ops, w.items, elapsed, &w.latency))
            },
        )?;
        row.scenario = format!("backlog {depth}");
        row.note = format!("filling {grow} items took {:.1} s", fill_time.as_secs_f64());
        rows.push(row);
    }
    Ok(rows)
}

/// `fairness`: small puts (and gets) while other clients push large items;
/// the row that matters is the small puts' latency.
pub fn fairness(
    t: &Target,
    small_clients: usize,
    large_clients: usize,
    small_size: usize,
    large_size: usize,
    duration: Duration,
) -> io::Result<Vec<Row>> {
    let small_queue = &format!("{}_small", t.queue);
    let large_queue = &format!("{}_large", t.queue);
    flush_queues(t, &[small_queue.clone(), large_queue.clone()])?;
    let large = &std::sync::Mutex::new(None);
    let row = t.measure(
        "fairness",
        0,
        small_clients + large_clients,
        small_size,
        |done| {
            let (w, elapsed) = workers(t, small_clients + large_clients, |i| async move {
                let mut c = t.connect().await?;
                let mut payloads = t.payloads(300 + i as u64);
                let mut w = Work::default();
                let start = Instant::now();
                let (queue, size) = if i < small_clients {
                    (small_queue, small_size)
                } else {
                    (large_queue, large_size)
                };
                let mut put_latency = histogram();
                let mut n = 0;
                while start.elapsed() < duration {
                    let item = payloads.item(i as u32, n, size);
                    timed!(put_latency, c.put(queue, &[item]).await?);
                    c.take(queue, 1, Duration::ZERO).await?;
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                w.latency = put_latency;
                w.ops = n;
                w.items = n;
                if i >= small_clients {
                    // Large clients report separately; keep them out of the small row.
                    let mut l = large.lock().expect("lock");
                    let (lat, ops) = l.get_or_insert_with(|| (histogram(), 0u64));
                    lat.add(&w.latency).expect("bounds");
                    *ops += n;
                    return Ok(Work::default());
                }
                Ok(w)
            })?;
            let mut row = Row::new("fairness small puts", w.ops, w.items, elapsed, &w.latency);
            row.note =
                format!("{small_clients} x {small_size} B beside {large_clients} x {large_size} B");
            Ok(row)
        },
    )?;
    let mut row = row;
    row.connections = small_clients;
    let mut rows = vec![row];
    if let Some((lat, ops)) = large.lock().expect("lock").take() {
        let mut big = Row::new("fairness large puts", ops, ops, duration, &lat);
        big.target = rows[0].target.clone();
        big.protocol = rows[0].protocol.clone();
        big.connections = large_clients;
        big.item_size = large_size;
        rows.push(big);
    }
    Ok(rows)
}

/// `batch`: puts then gets of `batch` items per call.
pub fn batch(
    t: &Target,
    clients: usize,
    items: u64,
    size: usize,
    batch: usize,
) -> io::Result<Vec<Row>> {
    flush_queues(t, std::slice::from_ref(&t.queue))?;
    let mut put = put_many(t, clients, items, size, batch)?;
    put.scenario = "batch put".into();
    let mut get = drain(t, clients, batch)?;
    get.scenario = "batch get".into();
    get.item_size = size;
    get.note = format!("{batch} item(s) per request");
    if get.items != items {
        get.verified = format!("FAILED: got {} of {items}", get.items);
    }
    Ok(vec![put, get])
}

/// `first-get`: how long until the target serves an item, counted from the
/// start of this process (start it alongside the server).
pub fn first_get(t: &Target, timeout: Duration) -> io::Result<Row> {
    // Not watched for replies: a server may take long to start. Bounded by
    // the timeout given, and a reply's worth more.
    let limit = timeout + client::REPLY_TIMEOUT;
    let run = async {
        let start = Instant::now();
        let mut latency = histogram();
        // Nothing announces that the server is listening: try until it is.
        let mut client = loop {
            match t.connect().await {
                Ok(c) => break c,
                Err(_) if start.elapsed() < timeout => {
                    tokio::time::sleep(Duration::from_millis(1)).await
                }
                Err(e) => return Err(e),
            }
        };
        let connected = start.elapsed();
        loop {
            let got = timed!(
                latency,
                client.take(&t.queue, 1, Duration::from_millis(100)).await?
            );
            if !got.is_empty() {
                break;
            }
            if start.elapsed() > timeout {
                return Err(io::Error::other("no item served before the timeout"));
            }
        }
        let mut row = Row::new("first-get", 1, 1, start.elapsed(), &latency);
        row.target = t.label.clone();
        row.protocol = format!("{:?}", t.protocol).to_lowercase();
        row.note = format!("connected after {:.3} s", connected.as_secs_f64());
        Ok(row)
    };
    block_on(async {
        tokio::time::timeout(limit, run)
            .await
            .unwrap_or_else(|_| Err(io::Error::other("no item served before the timeout")))
    })
}
