//! `kestrel-bench`: a load generator that speaks Kestrel's three protocols,
//! including what generic memcache tools cannot: reliable reads
//! (`/close/open`, Thrift confirm), blocking gets, deep backlogs and batches.
//!
//! Every scenario prints a table row (ops/s, items/s, latency percentiles,
//! and the server's CPU seconds and peak RSS when `--server-pid` is given);
//! `--json FILE` also writes the rows for scripts.

mod client;
mod measure;
mod scenario;

/// The code `thrift --gen rs` generated from `idl/kestrel.thrift` (in
/// `gen/rs/`), compiled in here as the Rust client (clients/rust) compiles it.
/// The smallest dependency of the three: the server's copy
/// (`kestrel::protocol::thrift::generated`) would bring the whole server and
/// tokio along, and the client keeps the stubs private behind an API of its
/// own (several servers, reconnects, `consume` with a handler), not the raw
/// one call per request the bench times. `thrift` is needed either way.
#[path = "../../../gen/rs/kestrel.rs"]
#[allow(clippy::all, clippy::pedantic, dead_code, missing_docs)]
#[rustfmt::skip]
mod generated;

use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use client::Protocol;
use measure::Row;
use scenario::Target;

#[derive(Debug, Parser)]
#[command(version, about = "Load generator for Kestrel-protocol queue servers")]
struct Args {
    /// Server address (default: 127.0.0.1 and the protocol's Kestrel port).
    #[arg(long, global = true)]
    target: Option<String>,
    /// Protocol the target speaks.
    #[arg(long, global = true, value_enum, default_value = "memcache")]
    protocol: Protocol,
    /// Queue to use (scenarios with several queues add a suffix).
    #[arg(long, global = true, default_value = "bench")]
    queue: String,
    /// Name of the target in the results (default: its address).
    #[arg(long, global = true)]
    label: Option<String>,
    /// The server's process id: report its CPU seconds and peak RSS.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Also write the result rows as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, global = true)]
    quiet: bool,
    /// Deadline, in ms, of items read reliably over Thrift.
    #[arg(long, global = true, default_value_t = 2000)]
    auto_abort_ms: u64,
    /// Threads the connections are spread over (async, one runtime each).
    /// One keeps the client's share of a small machine small; the `client
    /// busy` column says when that one thread set the pace.
    #[arg(long, global = true, default_value_t = 1)]
    client_threads: usize,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Each connection alternates a put and a get (the classic Kestrel/darner flood).
    Flood {
        #[arg(long, default_value_t = 10)]
        connections: usize,
        /// Puts in total (as many gets follow).
        #[arg(long, default_value_t = 100_000)]
        items: u64,
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Spread the load over this many queues.
        #[arg(long, default_value_t = 1)]
        queues: usize,
        /// Items put in each queue before the clock starts.
        #[arg(long, default_value_t = 512)]
        prefill: u64,
    },
    /// Clients putting as fast as they can.
    PutMany {
        #[arg(long, default_value_t = 10)]
        clients: usize,
        #[arg(long, default_value_t = 100_000)]
        items: u64,
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Items per request (a Thrift list, or pipelined memcache sets).
        #[arg(long, default_value_t = 1)]
        batch: usize,
    },
    /// Clients reading the queue out until it is empty.
    Drain {
        #[arg(long, default_value_t = 10)]
        clients: usize,
        #[arg(long, default_value_t = 1)]
        batch: usize,
    },
    /// Producers and reliable consumers (open, confirm); verifies every item
    /// was confirmed exactly once.
    Reliable {
        #[arg(long, default_value_t = 4)]
        producers: usize,
        #[arg(long, default_value_t = 4)]
        consumers: usize,
        /// Items each producer puts.
        #[arg(long, default_value_t = 10_000)]
        items: u64,
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Items per reliable read (Thrift; memcache and text read one).
        #[arg(long, default_value_t = 1)]
        batch: usize,
    },
    /// Like reliable, but consumers leave a share of their items unconfirmed
    /// (disconnecting, or letting the Thrift deadline pass); verifies every
    /// item was still confirmed exactly once.
    Leaky {
        #[arg(long, default_value_t = 4)]
        producers: usize,
        #[arg(long, default_value_t = 4)]
        consumers: usize,
        #[arg(long, default_value_t = 5_000)]
        items: u64,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Percent of items left unconfirmed.
        #[arg(long, default_value_t = 5)]
        drop_percent: u32,
    },
    /// Put+get pairs on top of a backlog of each given depth (the queue
    /// grows from one depth to the next).
    Backlog {
        /// Comma-separated depths.
        #[arg(long, value_delimiter = ',', default_value = "0,100000,1000000")]
        depths: Vec<u64>,
        #[arg(long, default_value_t = 10)]
        connections: usize,
        /// Put+get pairs measured at each depth.
        #[arg(long, default_value_t = 100_000)]
        pairs: u64,
        #[arg(long, default_value_t = 1024)]
        size: usize,
    },
    /// Latency of small puts while other clients push large items.
    Fairness {
        #[arg(long, default_value_t = 10)]
        clients: usize,
        #[arg(long, default_value_t = 1)]
        large_clients: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 8 * 1024 * 1024)]
        large_size: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Waits for the target to accept connections, then times the first get
    /// that returns an item (for restart measurements: start it together
    /// with the server).
    FirstGet {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Puts, then gets, of `batch` items per call.
    Batch {
        #[arg(long, default_value_t = 4)]
        clients: usize,
        #[arg(long, default_value_t = 1_000_000)]
        items: u64,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 100)]
        batch: usize,
    },
}

fn resolve(args: &Args) -> Result<SocketAddr, String> {
    let target = args.target.clone().unwrap_or_else(|| {
        let port = match args.protocol {
            Protocol::Memcache => 22133,
            Protocol::Thrift => 2229,
            Protocol::Text => 2222,
        };
        format!("127.0.0.1:{port}")
    });
    target
        .to_socket_addrs()
        .map_err(|e| format!("{target}: {e}"))?
        .next()
        .ok_or_else(|| format!("{target}: no address"))
}

fn run(t: &Target, scenario: &Scenario) -> std::io::Result<Vec<Row>> {
    Ok(match *scenario {
        Scenario::Flood {
            connections,
            items,
            size,
            queues,
            prefill,
        } => {
            vec![scenario::flood(
                t,
                connections,
                items,
                size,
                queues,
                prefill,
            )?]
        }
        Scenario::PutMany {
            clients,
            items,
            size,
            batch,
        } => vec![scenario::put_many(t, clients, items, size, batch)?],
        Scenario::Drain { clients, batch } => vec![scenario::drain(t, clients, batch)?],
        Scenario::Reliable {
            producers,
            consumers,
            items,
            size,
            batch,
        } => {
            vec![scenario::reliable(
                t, producers, consumers, items, size, batch, 0,
            )?]
        }
        Scenario::Leaky {
            producers,
            consumers,
            items,
            size,
            batch,
            drop_percent,
        } => {
            vec![scenario::reliable(
                t,
                producers,
                consumers,
                items,
                size,
                batch,
                drop_percent,
            )?]
        }
        Scenario::Backlog {
            ref depths,
            connections,
            pairs,
            size,
        } => scenario::backlog(t, depths, connections, pairs, size)?,
        Scenario::Fairness {
            clients,
            large_clients,
            size,
            large_size,
            seconds,
        } => scenario::fairness(
            t,
            clients,
            large_clients,
            size,
            large_size,
            Duration::from_secs(seconds),
        )?,
        Scenario::Batch {
            clients,
            items,
            size,
            batch,
        } => scenario::batch(t, clients, items, size, batch)?,
        Scenario::FirstGet { timeout } => {
            vec![scenario::first_get(t, Duration::from_secs(timeout))?]
        }
    })
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<22} {:<14} {:<8} {:>5} {:>7} {:>10} {:>8} {:>11} {:>11} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>7}  note",
        "scenario",
        "target",
        "proto",
        "conns",
        "size",
        "items",
        "secs",
        "ops/s",
        "items/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "cpu s",
        "cpu µs/op",
        "rss MiB",
        "client"
    );
    for r in rows {
        let opt = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |v| format!("{v:.p$}"));
        let mut note = r.note.clone();
        if !r.verified.is_empty() {
            note = format!("verified {}; {note}", r.verified);
        }
        println!(
            "{:<22} {:<14} {:<8} {:>5} {:>7} {:>10} {:>8.2} {:>11.0} {:>11.0} {:>8.3} {:>8.3} {:>8.3} {:>8.1} {:>8} {:>9} {:>8} {:>6.0}%  {}",
            r.scenario,
            r.target,
            r.protocol,
            r.connections,
            r.item_size,
            r.items,
            r.seconds,
            r.ops_per_sec,
            r.items_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.max_ms,
            opt(r.server_cpu_secs, 2),
            opt(r.server_cpu_us_per_op, 1),
            opt(r.server_peak_rss_mib, 1),
            r.client_busy * 100.0,
            note
        );
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let addr = match resolve(&args) {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("kestrel-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let target = Target {
        protocol: args.protocol,
        addr,
        label: args.label.clone().unwrap_or_else(|| addr.to_string()),
        queue: args.queue.clone(),
        server_pid: args.server_pid,
        auto_abort: Duration::from_millis(args.auto_abort_ms),
        progress: !args.quiet && std::io::stderr().is_terminal(),
        client_threads: args.client_threads.max(1),
    };
    let rows = match run(&target, &args.scenario) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("kestrel-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    print_table(&rows);
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&rows).expect("rows serialize");
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("kestrel-bench: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if rows.iter().any(|r| r.verified.starts_with("FAILED")) {
        eprintln!("kestrel-bench: verification failed");
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}
