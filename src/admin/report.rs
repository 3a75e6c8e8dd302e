//! The server's stats as Kestrel's Ostrich admin port reported them:
//! counters, gauges, metrics (latency histograms) and labels, each by its
//! Ostrich name, global and per queue (`q/<name>/…`); as JSON
//! (`/stats.json`) or text (`/stats.txt`), whole or as the change over a
//! window.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{Map, Value, json};

use crate::stats::{LatencySnapshots, ServerStats, Snapshot, Unit};
use crate::status::ServerStatus;

/// One reading of every stat.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub counters: BTreeMap<String, u64>,
    pub gauges: BTreeMap<String, u64>,
    /// In microseconds, with the unit each is reported in.
    pub metrics: BTreeMap<String, (Unit, Snapshot)>,
    pub labels: BTreeMap<String, String>,
}

impl Report {
    pub fn new(s: &ServerStats, status: ServerStatus) -> Report {
        let mut r = Report::default();
        for (name, value) in [
            ("total_items", s.total_items),
            ("cmd_get", s.cmd_get),
            ("cmd_set", s.cmd_set),
            ("cmd_peek", s.cmd_peek),
            ("get_hits", s.get_hits),
            ("get_misses", s.get_misses),
            ("bytes_read", s.bytes_read),
            ("bytes_written", s.bytes_written),
            ("total_connections", s.total_connections),
            ("queue_creates", s.queue_creates),
            ("queue_deletes", s.queue_deletes),
            ("queue_expires", s.queue_expires),
            ("rejected_connections", s.rejected_connections),
            ("accept_errors", s.accept_errors),
            ("request_timeouts", s.request_timeouts),
            ("protocol_errors", s.protocol_errors),
            ("rejected_open_reads", s.rejected_open_reads),
            ("rejected_creates", s.rejected_creates),
            ("journal_fsyncs", s.journal_fsyncs),
        ] {
            r.counters.insert(name.into(), value);
        }
        let items = s.queues.iter().map(|(_, q)| q.items).sum();
        let bytes = s.queues.iter().map(|(_, q)| q.bytes).sum();
        for (name, value) in [
            ("connections", s.curr_connections),
            ("items", items),
            ("bytes", bytes),
            ("open_files", s.open_files),
            ("uptime", s.uptime_secs),
            (
                "status/readable",
                u64::from(status != ServerStatus::Quiescent),
            ),
            ("status/writeable", u64::from(status == ServerStatus::Up)),
        ] {
            r.gauges.insert(name.into(), value);
        }
        r.add_metrics("", &s.latencies);
        for (queue, q) in &s.queues {
            let c = &q.counters;
            let req = &q.requests;
            for (name, value) in [
                ("total_items", c.total_items),
                ("put_items", c.total_items),
                ("put_bytes", req.put_bytes),
                ("get_items_hit", req.get_items_hit),
                ("get_items_miss", req.get_items_miss),
                ("transactions", c.transactions),
                ("canceled_transactions", c.canceled_transactions),
                ("expired_items", c.expired_items),
                ("discarded", c.discarded),
                ("total_flushes", c.total_flushes),
                ("journal_rewrites", c.journal_rewrites),
                ("journal_rotations", c.journal_rotations),
            ] {
                r.counters.insert(format!("q/{queue}/{name}"), value);
            }
            for (name, value) in [
                ("items", q.items),
                ("bytes", q.bytes),
                ("journal_size", q.journal_bytes),
                ("mem_items", q.mem_items),
                ("mem_bytes", q.mem_bytes),
                ("age_msec", q.age_ms),
                ("waiters", q.waiters),
                ("open_transactions", q.open_transactions),
            ] {
                r.gauges.insert(format!("q/{queue}/{name}"), value);
            }
            r.add_metrics(&format!("q/{queue}/"), &req.latencies);
        }
        r.labels.insert("version".into(), s.version.into());
        r.labels.insert("status".into(), status.word().into());
        r
    }

    fn add_metrics(&mut self, prefix: &str, latencies: &LatencySnapshots) {
        for (name, unit, snapshot) in latencies.named() {
            self.metrics
                .insert(format!("{prefix}{name}"), (unit, snapshot.clone()));
        }
    }

    /// This report with its counters and metrics as the change since
    /// `earlier` (gauges and labels stay as they are now). A queue created
    /// since counts from zero.
    pub fn since(&self, earlier: &Report) -> Report {
        let counters = self
            .counters
            .iter()
            .map(|(k, v)| {
                let then = earlier.counters.get(k).copied().unwrap_or(0);
                (k.clone(), v.saturating_sub(then))
            })
            .collect();
        let metrics = self
            .metrics
            .iter()
            .map(|(k, (unit, v))| {
                let since = match earlier.metrics.get(k) {
                    Some((_, then)) => v.since(then),
                    None => v.clone(),
                };
                (k.clone(), (*unit, since))
            })
            .collect();
        Report {
            counters,
            gauges: self.gauges.clone(),
            metrics,
            labels: self.labels.clone(),
        }
    }

    /// Ostrich's `/stats.json`.
    pub fn to_json(&self) -> Value {
        let metrics: Map<String, Value> = self
            .metrics
            .iter()
            .map(|(k, (unit, m))| (k.clone(), metric_json(*unit, m)))
            .collect();
        json!({
            "counters": self.counters,
            "gauges": self.gauges,
            "metrics": metrics,
            "labels": self.labels,
        })
    }

    /// Ostrich's `/stats.txt`: a section per kind, a `name: value` line per
    /// stat, names sorted.
    pub fn to_text(&self) -> String {
        let mut out = String::from("counters:\n");
        for (k, v) in &self.counters {
            let _ = writeln!(out, "  {k}: {v}");
        }
        out.push_str("gauges:\n");
        for (k, v) in &self.gauges {
            let _ = writeln!(out, "  {k}: {v}");
        }
        out.push_str("labels:\n");
        for (k, v) in &self.labels {
            let _ = writeln!(out, "  {k}: {v}");
        }
        out.push_str("metrics:\n");
        for (k, (unit, m)) in &self.metrics {
            let fields: Vec<String> = metric_fields(*unit, m)
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            let _ = writeln!(out, "  {k}: ({})", fields.join(", "));
        }
        out
    }
}

/// A metric's fields, in Ostrich's (alphabetical) order, in `unit`.
fn metric_fields(unit: Unit, m: &Snapshot) -> [(&'static str, u64); 11] {
    let scale = |us: u64| match unit {
        Unit::Micros => us,
        Unit::Millis => us / 1000,
    };
    [
        ("average", scale(m.average())),
        ("count", m.count),
        ("maximum", scale(m.maximum())),
        ("minimum", scale(m.minimum())),
        ("p50", scale(m.percentile(0.5))),
        ("p90", scale(m.percentile(0.9))),
        ("p95", scale(m.percentile(0.95))),
        ("p99", scale(m.percentile(0.99))),
        ("p999", scale(m.percentile(0.999))),
        ("p9999", scale(m.percentile(0.9999))),
        ("sum", scale(m.sum)),
    ]
}

fn metric_json(unit: Unit, m: &Snapshot) -> Value {
    Value::Object(
        metric_fields(unit, m)
            .iter()
            .map(|(name, value)| (name.to_string(), json!(value)))
            .collect(),
    )
}
