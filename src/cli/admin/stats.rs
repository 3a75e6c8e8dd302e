//! `kestrel admin stats`: every queue's row, read from the admin HTTP
//! port's `/stats.json`, as a table for people or JSON for scripts; and the
//! units people read sizes and ages in.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::conn::refused;
use super::{Failure, NET_TIMEOUT, Output, STATS_BODY_TIMEOUT};

/// One queue's row of `stats`, from the `q/<name>/…` gauges of `/stats.json`.
#[derive(Default)]
struct QueueRow {
    items: u64,
    bytes: u64,
    open_transactions: u64,
    waiters: u64,
    age_msec: u64,
    journal_size: u64,
}

pub(super) fn stats(admin: &str, out: &mut Output) -> Result<(), Failure> {
    let report = fetch_stats(admin)?;
    let Some(gauges) = report.get("gauges").and_then(Value::as_object) else {
        return Err(Failure::refused(format!(
            "{admin}/stats.json has no gauges: is it a Kestrel admin port?"
        )));
    };
    let mut queues: BTreeMap<&str, QueueRow> = BTreeMap::new();
    for (key, value) in gauges {
        // Queue names never contain '/', so the last one ends the name.
        let Some((name, field)) = key.strip_prefix("q/").and_then(|k| k.rsplit_once('/')) else {
            continue;
        };
        let value = value.as_u64().unwrap_or(0);
        let row = queues.entry(name).or_default();
        match field {
            "items" => row.items = value,
            "bytes" => row.bytes = value,
            "open_transactions" => row.open_transactions = value,
            "waiters" => row.waiters = value,
            "age_msec" => row.age_msec = value,
            "journal_size" => row.journal_size = value,
            _ => {}
        }
    }
    let mut table = vec![
        [
            "QUEUE",
            "ITEMS",
            "BYTES",
            "OPEN READS",
            "WAITERS",
            "AGE",
            "JOURNAL",
        ]
        .map(String::from),
    ];
    for (name, q) in &queues {
        table.push([
            name.to_string(),
            q.items.to_string(),
            size(q.bytes),
            q.open_transactions.to_string(),
            q.waiters.to_string(),
            age_text(q.age_msec),
            size(q.journal_size),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| {
            table
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &table {
        let mut line = format!("{:<w$}", row[0], w = widths[0]);
        for (cell, w) in row.iter().zip(&widths).skip(1) {
            line.push_str(&format!("  {cell:>w$}"));
        }
        out.text(line);
    }
    out.json(json!({
        "queues": queues.iter().map(|(name, q)| json!({
            "name": name,
            "items": q.items,
            "bytes": q.bytes,
            "open_transactions": q.open_transactions,
            "waiters": q.waiters,
            "age_msec": q.age_msec,
            "journal_size": q.journal_size,
        })).collect::<Vec<_>>(),
    }));
    Ok(())
}

/// `GET /stats.json` from the admin port, parsed.
fn fetch_stats(admin: &str) -> Result<Value, Failure> {
    let url = format!("http://{admin}/stats.json");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(NET_TIMEOUT))
        .timeout_recv_response(Some(NET_TIMEOUT))
        .timeout_recv_body(Some(STATS_BODY_TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let http_failure = |e: ureq::Error| match e {
        ureq::Error::Timeout(_) => Failure::unreachable(format!("no reply from {admin} in time")),
        ureq::Error::Io(e) if refused(&e) => {
            Failure::unreachable(format!("cannot connect to {admin}: {e}"))
        }
        ureq::Error::Io(e) => Failure::unreachable(format!("connection to {admin} lost: {e}")),
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
            Failure::unreachable(format!("cannot connect to {admin}: {e}"))
        }
        ureq::Error::Protocol(e) => Failure::unreachable(format!(
            "{admin} does not answer as HTTP (is it the admin port?): {e}"
        )),
        other => Failure::unreachable(format!("{url}: {other}")),
    };
    let mut response = agent.get(&url).call().map_err(http_failure)?;
    let status = response.status();
    let body = response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_string()
        .map_err(http_failure)?;
    if !status.is_success() {
        return Err(Failure::refused(format!(
            "{url} answered {status}: {}",
            body.trim()
        )));
    }
    serde_json::from_str(&body).map_err(|e| {
        Failure::refused(format!(
            "{url} is not Kestrel's stats ({e}): is it the admin port?"
        ))
    })
}

// --- Formatting -------------------------------------------------------------

pub(super) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

/// Bytes for people: `912 B`, `1.5 KiB`, `3.0 GiB`.
pub(super) fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A duration in milliseconds for people: `381ms`, `12.3s`, `5m03s`,
/// `2h05m`, `3d04h`.
pub(super) fn age_text(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_read_naturally() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
        assert_eq!(age_text(381), "381ms");
        assert_eq!(age_text(12_345), "12.3s");
        assert_eq!(age_text(303_000), "5m03s");
        assert_eq!(age_text(7_500_000), "2h05m");
        assert_eq!(age_text(273_600_000), "3d04h");
    }
}
