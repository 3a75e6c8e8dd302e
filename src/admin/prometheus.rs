//! `/metrics`: the same stats in Prometheus's text format (0.0.4), written
//! by `prometheus-client` from a collector that reads the service's stats
//! at each scrape: counters, gauges (per queue with a `queue` label) and the
//! latency histograms, whose buckets are the powers of two of a microsecond.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::service::{QueueServer, QueueService};
use crate::stats::{LatencySnapshots, ServerStats, Snapshot};
use crate::status::ServerStatus;

/// The registry `/metrics` encodes: one collector over the service.
pub fn registry(service: Arc<QueueServer>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Stats(service)));
    registry
}

/// Encodes `registry` as Prometheus text.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}

struct Stats(Arc<QueueServer>);

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stats")
    }
}

/// A value of one metric family: for the server (no labels) or a queue.
type Labels<'a> = Vec<(&'static str, &'a str)>;

/// Writes one family: its descriptor, then each labelled sample.
fn family<'a, T>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Labels<'a>, T)>,
    write: impl Fn(&mut MetricEncoder, &T) -> std::fmt::Result,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        write(&mut metric.encode_family(&labels)?, &value)?;
    }
    Ok(())
}

fn counter(m: &mut MetricEncoder, v: &u64) -> std::fmt::Result {
    m.encode_counter::<NoLabelSet, _, u64>(v, None)
}

fn gauge(m: &mut MetricEncoder, v: &u64) -> std::fmt::Result {
    m.encode_gauge(&(i64::try_from(*v).unwrap_or(i64::MAX)))
}

/// A histogram in seconds from one kept in microseconds: its buckets end at
/// the powers of two of a microsecond.
fn histogram(m: &mut MetricEncoder, s: &&Snapshot) -> std::fmt::Result {
    let mut below = 0;
    let buckets: Vec<(f64, u64)> = Snapshot::exponents()
        .map(|exp| {
            let at_most = s.at_most_power_of_two(exp);
            let bucket = (2f64.powi(exp as i32) * 1e-6, at_most - below);
            below = at_most;
            bucket
        })
        .collect();
    m.encode_histogram::<NoLabelSet>(s.sum as f64 * 1e-6, s.count, &buckets, None)
}

/// The request histograms of a latency set, by `op` label.
fn requests(l: &LatencySnapshots) -> [(&'static str, &Snapshot); 4] {
    [
        ("put", &l.set),
        ("get_hit", &l.get_hit),
        ("get_miss", &l.get_miss),
        ("get_timeout", &l.get_timeout),
    ]
}

impl Collector for Stats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let s: ServerStats = self.0.stats();
        let status = self.0.status();
        let e = &mut encoder;
        for (name, help, value) in [
            ("total_items", "Items put", s.total_items),
            ("cmd_get", "Get requests", s.cmd_get),
            ("cmd_set", "Items in put requests", s.cmd_set),
            ("cmd_peek", "Peek requests", s.cmd_peek),
            ("get_hits", "Reads that returned items", s.get_hits),
            ("get_misses", "Reads that returned none", s.get_misses),
            ("bytes_read", "Bytes received from clients", s.bytes_read),
            ("bytes_written", "Bytes sent to clients", s.bytes_written),
            (
                "total_connections",
                "Connections accepted",
                s.total_connections,
            ),
            ("queue_creates", "Queues created", s.queue_creates),
            ("queue_deletes", "Queues deleted", s.queue_deletes),
            ("queue_expires", "Queues deleted for age", s.queue_expires),
            (
                "rejected_connections",
                "Connections refused at max_connections",
                s.rejected_connections,
            ),
            ("accept_errors", "Failed accepts", s.accept_errors),
            (
                "request_timeouts",
                "Connections closed by request_timeout",
                s.request_timeouts,
            ),
            (
                "protocol_errors",
                "Malformed or oversized requests",
                s.protocol_errors,
            ),
            (
                "rejected_open_reads",
                "Reads held back by max_open_transactions",
                s.rejected_open_reads,
            ),
            (
                "rejected_creates",
                "Queue creations refused at max_queues",
                s.rejected_creates,
            ),
            (
                "journal_fsyncs",
                "fsyncs of journal files and directories",
                s.journal_fsyncs,
            ),
        ] {
            let name = format!("kestrel_{name}");
            family(
                e,
                &name,
                help,
                MetricType::Counter,
                [(Labels::new(), value)],
                counter,
            )?;
        }
        let items = s.queues.iter().map(|(_, q)| q.items).sum();
        let bytes = s.queues.iter().map(|(_, q)| q.bytes).sum();
        for (name, help, value) in [
            ("connections", "Open client connections", s.curr_connections),
            ("items", "Items in all queues", items),
            ("bytes", "Bytes of items in all queues", bytes),
            ("open_files", "Journal files held open", s.open_files),
            (
                "uptime_seconds",
                "Seconds since the server started",
                s.uptime_secs,
            ),
        ] {
            let name = format!("kestrel_{name}");
            family(
                e,
                &name,
                help,
                MetricType::Gauge,
                [(Labels::new(), value)],
                gauge,
            )?;
        }
        let statuses = [
            ServerStatus::Up,
            ServerStatus::ReadOnly,
            ServerStatus::Quiescent,
        ]
        .map(|st| (vec![("status", st.word())], u64::from(st == status)));
        family(
            e,
            "kestrel_status",
            "The server status (1 for the one in force)",
            MetricType::Gauge,
            statuses,
            gauge,
        )?;

        let queues = &s.queues;
        type QueueGauge = fn(&crate::stats::QueueStats) -> u64;
        let queue_gauges: [(&str, &str, QueueGauge); 7] = [
            ("items", "Items in the queue", |q| q.items),
            ("bytes", "Bytes of items in the queue", |q| q.bytes),
            ("journal_bytes", "Bytes of the queue's journal", |q| {
                q.journal_bytes
            }),
            ("mem_items", "Items of the queue held in memory", |q| {
                q.mem_items
            }),
            ("mem_bytes", "Bytes of the queue held in memory", |q| {
                q.mem_bytes
            }),
            ("waiters", "Reads waiting on the queue", |q| q.waiters),
            (
                "open_transactions",
                "Items of the queue opened and not yet confirmed",
                |q| q.open_transactions,
            ),
        ];
        for (name, help, read) in queue_gauges {
            let samples = queues.iter().map(|(n, q)| (vec![("queue", &**n)], read(q)));
            family(
                e,
                &format!("kestrel_queue_{name}"),
                help,
                MetricType::Gauge,
                samples,
                gauge,
            )?;
        }
        let ages = queues
            .iter()
            .map(|(n, q)| (vec![("queue", &**n)], q.age_ms as f64 / 1000.0));
        family(
            e,
            "kestrel_queue_age_seconds",
            "Age of the queue's head item",
            MetricType::Gauge,
            ages,
            |m, age: &f64| m.encode_gauge(age),
        )?;
        let queue_counters: [(&str, &str, QueueGauge); 11] = [
            ("put_items", "Items put into the queue", |q| {
                q.counters.total_items
            }),
            ("put_bytes", "Bytes put into the queue", |q| {
                q.requests.put_bytes
            }),
            ("get_hits", "Reads of the queue that returned items", |q| {
                q.requests.get_items_hit
            }),
            ("get_misses", "Reads of the queue that returned none", |q| {
                q.requests.get_items_miss
            }),
            ("expired_items", "Items of the queue that expired", |q| {
                q.counters.expired_items
            }),
            ("discarded", "Items dropped to make room", |q| {
                q.counters.discarded
            }),
            ("transactions", "Items opened by reliable reads", |q| {
                q.counters.transactions
            }),
            ("canceled_transactions", "Opened items put back", |q| {
                q.counters.canceled_transactions
            }),
            ("flushes", "Times the queue was flushed", |q| {
                q.counters.total_flushes
            }),
            (
                "journal_rewrites",
                "Journal segments of the queue reclaimed (deleted or rewritten)",
                |q| q.counters.journal_rewrites,
            ),
            (
                "journal_rotations",
                "Journal segments of the queue started",
                |q| q.counters.journal_rotations,
            ),
        ];
        for (name, help, read) in queue_counters {
            let samples = queues.iter().map(|(n, q)| (vec![("queue", &**n)], read(q)));
            family(
                e,
                &format!("kestrel_queue_{name}"),
                help,
                MetricType::Counter,
                samples,
                counter,
            )?;
        }

        let server = requests(&s.latencies).map(|(op, h)| (vec![("op", op)], h));
        family(
            e,
            "kestrel_request_duration_seconds",
            "Time to serve a request, by operation",
            MetricType::Histogram,
            server,
            histogram,
        )?;
        let delivery = [(Labels::new(), &s.latencies.delivery)];
        family(
            e,
            "kestrel_delivery_seconds",
            "Time from an item's put to the read that handed it out",
            MetricType::Histogram,
            delivery,
            histogram,
        )?;
        let per_queue = queues.iter().flat_map(|(n, q)| {
            requests(&q.requests.latencies).map(|(op, h)| (vec![("queue", &**n), ("op", op)], h))
        });
        family(
            e,
            "kestrel_queue_request_duration_seconds",
            "Time to serve a request on the queue, by operation",
            MetricType::Histogram,
            per_queue,
            histogram,
        )?;
        let per_queue_delivery = queues
            .iter()
            .map(|(n, q)| (vec![("queue", &**n)], &q.requests.latencies.delivery));
        family(
            e,
            "kestrel_queue_delivery_seconds",
            "Time from an item's put to the read that handed it out, on the queue",
            MetricType::Histogram,
            per_queue_delivery,
            histogram,
        )?;
        Ok(())
    }
}
