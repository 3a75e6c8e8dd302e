//! The memcache adapter (Kestrel's port 22133): the ASCII memcache dialect
//! Kestrel clients speak, with queues as keys.
//!
//! [`codec`] frames and parses requests; [`Memcache`] runs each on the
//! service and writes the reply. Beyond Kestrel: lines are limited in length,
//! bad numbers and missing arguments get `CLIENT_ERROR <reason>` instead of a
//! silent disconnect, an oversized `set` is refused without being buffered,
//! and `noreply` works.

pub mod codec;

use std::time::Duration;

use bytes::{BufMut, BytesMut};

use super::connection::{Closed, Connection, Context, Handled, Protocol};
use super::line::Limits;
use crate::config::{ServerConfig, ValueKey};
use crate::service::{
    Expiry, GetRequest, QueueService, Read, ServiceError, Settling, Transactions,
};
use crate::stats::{self, QueueStats, ServerStats};
use crate::status::ServerStatus;
pub use codec::{Frame, GetOptions, McCodec, Request};

/// Expiry times at or above this are absolute Unix times (memcache's rule).
const ABSOLUTE_EXPIRY: i64 = 1_000_000;

/// The server-wide stats, named and ordered as Kestrel's memcache `stats`.
fn server_fields(s: &ServerStats) -> Vec<(&'static str, String)> {
    let curr_items: u64 = s.queues.iter().map(|(_, q)| q.items).sum();
    let bytes: u64 = s.queues.iter().map(|(_, q)| q.bytes).sum();
    vec![
        ("uptime", s.uptime_secs.to_string()),
        ("time", s.time_secs.to_string()),
        ("version", s.version.to_string()),
        ("curr_items", curr_items.to_string()),
        ("total_items", s.total_items.to_string()),
        ("bytes", bytes.to_string()),
        (
            "reserved_memory_ratio",
            // Kestrel's format; 0 when the machine's memory is unknown.
            format!("{:.3}", s.reserved_memory_ratio().unwrap_or(0.0)),
        ),
        ("curr_connections", s.curr_connections.to_string()),
        ("total_connections", s.total_connections.to_string()),
        ("cmd_get", s.cmd_get.to_string()),
        ("cmd_set", s.cmd_set.to_string()),
        ("cmd_peek", s.cmd_peek.to_string()),
        ("get_hits", s.get_hits.to_string()),
        ("get_misses", s.get_misses.to_string()),
        ("bytes_read", s.bytes_read.to_string()),
        ("bytes_written", s.bytes_written.to_string()),
        ("queue_creates", s.queue_creates.to_string()),
        ("queue_deletes", s.queue_deletes.to_string()),
        ("queue_expires", s.queue_expires.to_string()),
        ("rejected_connections", s.rejected_connections.to_string()),
        ("accept_errors", s.accept_errors.to_string()),
        ("request_timeouts", s.request_timeouts.to_string()),
        ("protocol_errors", s.protocol_errors.to_string()),
        ("rejected_open_reads", s.rejected_open_reads.to_string()),
        ("rejected_creates", s.rejected_creates.to_string()),
        ("open_files", s.open_files.to_string()),
        ("journal_fsyncs", s.journal_fsyncs.to_string()),
    ]
}

/// One queue's stats, named and ordered as Kestrel's `queue_<name>_<stat>`
/// (a fanout parent's `children` follows them: see [`children`]).
fn queue_fields(q: &QueueStats) -> [(&'static str, u64); 16] {
    let c = &q.counters;
    [
        ("items", q.items),
        ("bytes", q.bytes),
        ("total_items", c.total_items),
        ("logsize", q.journal_bytes),
        ("expired_items", c.expired_items),
        ("mem_items", q.mem_items),
        ("mem_bytes", q.mem_bytes),
        ("age", q.age_ms),
        ("discarded", c.discarded),
        ("waiters", q.waiters),
        ("open_transactions", q.open_transactions),
        ("transactions", c.transactions),
        ("canceled_transactions", c.canceled_transactions),
        ("total_flushes", c.total_flushes),
        ("journal_rewrites", c.journal_rewrites),
        ("journal_rotations", c.journal_rotations),
    ]
}

/// A fanout parent's `children` stat, as Kestrel printed it after the
/// others: its children's names, comma-separated. `None` for a queue
/// without children.
fn children(q: &QueueStats) -> Option<String> {
    (!q.children.is_empty()).then(|| q.children.join(","))
}

/// The one place a refused call becomes a memcache reply.
fn error_reply(e: &ServiceError) -> String {
    match e {
        ServiceError::BadName(_) | ServiceError::AdminCommandsOff => format!("CLIENT_ERROR {e}"),
        ServiceError::OpenReadPending
        | ServiceError::TooManyOpenReads { .. }
        | ServiceError::NotEnoughOpen { .. } => "ERROR".into(),
        ServiceError::Unavailable { .. }
        | ServiceError::Queue(_)
        | ServiceError::Journal(_)
        | ServiceError::Config(_)
        | ServiceError::StatusChange(_) => format!("SERVER_ERROR {e}"),
    }
}

fn line(out: &mut BytesMut, text: &str) {
    out.reserve(text.len() + 2);
    out.put_slice(text.as_bytes());
    out.put_slice(b"\r\n");
}

fn value(out: &mut BytesMut, key: &str, data: &[u8]) {
    out.reserve(key.len() + data.len() + 32);
    out.put_slice(b"VALUE ");
    out.put_slice(key.as_bytes());
    out.put_slice(b" 0 ");
    out.put_slice(itoa::Buffer::new().format(data.len()).as_bytes());
    out.put_slice(b"\r\n");
    out.put_slice(data);
    out.put_slice(b"\r\nEND\r\n");
}

/// The memcache protocol, as the connection loop runs it.
pub struct Memcache;

impl Protocol for Memcache {
    const NAME: &'static str = "memcache";
    type Codec = McCodec;

    fn codec(config: &ServerConfig) -> McCodec {
        McCodec::new(Limits::new(config))
    }

    async fn handle(
        cx: &mut Context<'_>,
        conn: &mut Connection<'_, McCodec>,
        frame: Frame,
    ) -> Handled {
        let stats = cx.service.counters();
        match frame {
            Frame::Request(request) => execute(cx, conn, request).await,
            Frame::ClientError(reason) => {
                stats::add(&stats.protocol_errors, 1);
                line(&mut conn.out, &format!("CLIENT_ERROR {reason}"));
                Ok(())
            }
            Frame::TooLarge { limit } => {
                stats::add(&stats.protocol_errors, 1);
                crate::throttled!(info, peer = %conn.peer, limit, "memcache set over max_item_size; connection closed");
                line(
                    &mut conn.out,
                    &format!("SERVER_ERROR object too large for cache (limit {limit} bytes)"),
                );
                Err(Closed)
            }
        }
    }
}

/// When a `set`'s items expire, by memcache's rule: 0 never, a negative
/// time at once, under [`ABSOLUTE_EXPIRY`] that many seconds from now, else
/// at that Unix time.
fn expiry(exptime: i64) -> Expiry {
    match exptime {
        0 => Expiry::Never,
        t if t < 0 => Expiry::At(0),
        t if t < ABSOLUTE_EXPIRY => Expiry::After(Duration::from_secs(t as u64)),
        t => Expiry::At(t.saturating_mul(1000)),
    }
}

/// Runs one request and appends its reply.
async fn execute(
    cx: &mut Context<'_>,
    conn: &mut Connection<'_, McCodec>,
    request: Request,
) -> Handled {
    if request.is_admin()
        && let Err(e) = super::admin_command(cx)
    {
        line(&mut conn.out, &error_reply(&e));
        return Ok(());
    }
    let (service, session) = (cx.service, &mut cx.session);
    let reply: String = match request {
        Request::Set {
            queue,
            exptime,
            data,
            noreply,
        } => {
            let reply = match service.put(&queue, vec![data], expiry(exptime)).await {
                Ok(1) => "STORED".into(),
                Ok(_) => "NOT_STORED".into(),
                Err(e) => error_reply(&e),
            };
            if noreply {
                return Ok(());
            }
            reply
        }
        Request::Get {
            key,
            queue,
            options,
        } => {
            // The VALUE line names the bare queue, as Kestrel's did, or the
            // key as sent, for clients that check it (memcache_value_key).
            let reply_key = match cx.shared.config.memcache_value_key {
                ValueKey::Bare => &queue,
                ValueKey::Full => &key,
            };
            return get(cx, conn, &queue, reply_key, options).await;
        }
        Request::Monitor {
            queue,
            timeout,
            max_items,
        } => {
            let write = |out: &mut BytesMut, data: &[u8]| value(out, &queue, data);
            super::monitor(cx, conn, &queue, timeout, max_items, write).await?;
            "END".into()
        }
        Request::Confirm { queue, count } => {
            match service
                .confirm(session, &queue, Transactions::Oldest(count))
                .await
            {
                Ok(_) if count > 0 => "END".into(),
                Ok(_) => "ERROR".into(),
                Err(e) => error_reply(&e),
            }
        }
        Request::Delete { queue } => match service.delete(&queue).await {
            Ok(()) => "DELETED".into(),
            Err(e) => error_reply(&e),
        },
        Request::Flush { queue } => match service.flush(&queue).await {
            Ok(()) => "END".into(),
            Err(e) => error_reply(&e),
        },
        Request::FlushAll => match service.flush_all().await {
            Ok(()) => "Flushed all queues.".into(),
            Err(e) => error_reply(&e),
        },
        Request::FlushExpired { queue } => match service.flush_expired(Some(&queue)).await {
            Ok(n) => n.to_string(),
            Err(e) => error_reply(&e),
        },
        Request::FlushAllExpired => match service.flush_expired(None).await {
            Ok(n) => n.to_string(),
            Err(e) => error_reply(&e),
        },
        Request::Stats => {
            let stats = service.stats();
            let mut text = String::new();
            for (name, value) in server_fields(&stats) {
                text += &format!("STAT {name} {value}\r\n");
            }
            let budget = &cx.shared.budget;
            text += &format!("STAT buffered_bytes {}\r\n", budget.used());
            text += &format!("STAT buffer_waits {}\r\n", budget.stalls());
            for (queue, q) in &stats.queues {
                for (name, value) in queue_fields(q) {
                    text += &format!("STAT queue_{queue}_{name} {value}\r\n");
                }
                if let Some(children) = children(q) {
                    text += &format!("STAT queue_{queue}_children {children}\r\n");
                }
            }
            text + "END"
        }
        Request::DumpStats { queues } => {
            let stats = service.stats();
            let mut text = String::new();
            for (queue, q) in stats.queues.iter().filter(|(name, _)| {
                queues.is_empty() || queues.iter().any(|wanted| wanted.as_str() == &**name)
            }) {
                text += &format!("queue '{queue}' {{\r\n");
                for (name, value) in queue_fields(q) {
                    text += &format!("  {name}={value}\r\n");
                }
                if let Some(children) = children(q) {
                    text += &format!("  children={children}\r\n");
                }
                text += "}\r\n";
            }
            text + "END"
        }
        Request::Version => format!("VERSION {}", service.version()),
        Request::Status { set: None } => service.status().word().to_string(),
        Request::Status { set: Some(name) } => match ServerStatus::parse(&name) {
            Some(status) => match service.set_status(status).await {
                Ok(()) => "END".into(),
                Err(e) => error_reply(&e),
            },
            None => format!("CLIENT_ERROR unknown status {name:?} (up, readonly or quiescent)"),
        },
        Request::Reload => match service.reload() {
            Ok(()) => "Reloaded config.".into(),
            Err(e) => error_reply(&e),
        },
        Request::Shutdown => {
            tracing::info!(peer = %conn.peer, "shutdown requested over memcache");
            service.shutdown();
            return Err(Closed);
        }
        Request::Quit => return Err(Closed),
    };
    line(&mut conn.out, &reply);
    Ok(())
}

/// `get queue/options`: the transaction options first, then the read.
/// Appends the reply, an item's `VALUE` line naming `reply_key`.
async fn get(
    cx: &mut Context<'_>,
    conn: &mut Connection<'_, McCodec>,
    queue: &str,
    reply_key: &str,
    options: GetOptions,
) -> Handled {
    let (service, session) = (cx.service, &mut cx.session);
    // A close's journal wait is shared with the open that follows it.
    let mut closing = Settling::done();
    if options.close {
        // Closing with nothing open is not an error (Kestrel ignores it).
        let reply = match service.confirm_later(session, queue, Transactions::Oldest(1)) {
            Ok((_, settling)) if options.open => {
                closing = settling;
                None
            }
            Ok((_, settling)) => {
                settling.wait().await;
                Some("END".into())
            }
            Err(ServiceError::NotEnoughOpen { .. }) if !options.open => Some("END".into()),
            Err(ServiceError::NotEnoughOpen { .. }) => None,
            Err(e) => Some(error_reply(&e)),
        };
        if let Some(reply) = reply {
            line(&mut conn.out, &reply);
            return Ok(());
        }
    }
    if options.abort {
        let reply = match service.abort(session, queue, Transactions::Oldest(1)).await {
            Ok(_) | Err(ServiceError::NotEnoughOpen { .. }) => "END".into(),
            Err(e) => error_reply(&e),
        };
        line(&mut conn.out, &reply);
        return Ok(());
    }
    let read = if options.open {
        Read::Open
    } else if options.peek {
        Read::Peek
    } else {
        Read::Take
    };
    let request = GetRequest {
        max_items: 1,
        timeout: options.timeout,
        read,
    };
    match conn.run(service.get(session, queue, request)).await? {
        Ok(reading) => match reading.after(closing).finish().await.first() {
            Some(item) => value(&mut conn.out, reply_key, &item.data),
            None => line(&mut conn.out, "END"),
        },
        Err(e) => {
            closing.wait().await;
            line(&mut conn.out, &error_reply(&e));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_times_follow_memcache_rules() {
        assert_eq!(expiry(0), Expiry::Never);
        assert_eq!(expiry(999_999), Expiry::After(Duration::from_secs(999_999)));
        assert_eq!(expiry(1_000_000), Expiry::At(1_000_000_000));
        assert_eq!(expiry(-1), Expiry::At(0));
        assert_eq!(expiry(i64::MAX), Expiry::At(i64::MAX));
    }
}
