//! The text adapter (Kestrel's port 2222): a line protocol for people with
//! telnet or nc. Replies are `+<n>` (a count), `-<message>` (an error),
//! `:<item>` (an item) or `*` (no item).
//!
//! Every read is reliable: `get`, `peek` and `monitor` first confirm the reads
//! this connection holds open on the queue, and the reads they open go back
//! to the queue if the connection closes. Beyond Kestrel: items are stored
//! byte for byte, and a `put` over the item-count limit is refused with a
//! message instead of being silently cut. [`codec`] frames and parses
//! requests; [`Text`] runs each on the service and writes the reply.

pub mod codec;

use std::time::Duration;

use bytes::{BufMut, BytesMut};

use super::connection::{Closed, Connection, Context, Handled, Protocol};
use super::line::Limits;
use crate::config::ServerConfig;
use crate::service::{Expiry, GetRequest, QueueService, Read, ServiceError, Transactions};
use crate::stats;
use crate::status::ServerStatus;
pub use codec::{Frame, Request, TextCodec};

/// The one place a refused call becomes a text reply.
fn error_reply(e: &ServiceError) -> String {
    match e {
        ServiceError::NotEnoughOpen { .. } => "-Not that many transactions open.".into(),
        other => format!("-{other}"),
    }
}

fn reply(out: &mut BytesMut, text: &str) {
    out.reserve(text.len() + 1);
    out.put_slice(text.as_bytes());
    out.put_u8(b'\n');
}

fn item(out: &mut BytesMut, data: &[u8]) {
    out.reserve(data.len() + 2);
    out.put_u8(b':');
    out.put_slice(data);
    out.put_u8(b'\n');
}

/// The text protocol, as the connection loop runs it.
pub struct Text;

impl Protocol for Text {
    const NAME: &'static str = "text";
    type Codec = TextCodec;

    fn codec(config: &ServerConfig) -> TextCodec {
        TextCodec::new(Limits::new(config))
    }

    async fn handle(
        cx: &mut Context<'_>,
        conn: &mut Connection<'_, TextCodec>,
        frame: Frame,
    ) -> Handled {
        match frame {
            Frame::Request(request) => execute(cx, conn, request).await,
            Frame::Error(message) => {
                stats::add(&cx.service.counters().protocol_errors, 1);
                reply(&mut conn.out, &format!("-{message}"));
                Ok(())
            }
        }
    }
}

/// Runs one request and appends its reply.
async fn execute(
    cx: &mut Context<'_>,
    conn: &mut Connection<'_, TextCodec>,
    request: Request,
) -> Handled {
    if request.is_admin()
        && let Err(e) = super::admin_command(cx)
    {
        reply(&mut conn.out, &error_reply(&e));
        return Ok(());
    }
    let (service, session) = (cx.service, &mut cx.session);
    let text = match request {
        Request::Put {
            queue,
            expires_after,
            items,
        } => {
            let expiry = expires_after.map_or(Expiry::Never, Expiry::After);
            match service.put(&queue, items, expiry).await {
                Ok(n) => format!("+{n}"),
                Err(e) => error_reply(&e),
            }
        }
        Request::Get { queue, timeout } => {
            return read_one(cx, conn, &queue, timeout, Read::Open).await;
        }
        Request::Peek { queue, timeout } => {
            return read_one(cx, conn, &queue, timeout, Read::Peek).await;
        }
        Request::Monitor { queue, timeout } => {
            if let Err(e) = service.confirm(session, &queue, Transactions::All).await {
                reply(&mut conn.out, &error_reply(&e));
                return Ok(());
            }
            super::monitor(cx, conn, &queue, timeout, None, item).await?;
            "*".into()
        }
        Request::Confirm { queue, count } => {
            match service
                .confirm(session, &queue, Transactions::Oldest(count))
                .await
            {
                Ok(n) => format!("+{n}"),
                Err(e) => error_reply(&e),
            }
        }
        Request::Flush { queue } => match service.flush(&queue).await {
            Ok(()) => "+0".into(),
            Err(e) => error_reply(&e),
        },
        Request::Delete { queue } => match service.delete(&queue).await {
            Ok(()) => "+0".into(),
            Err(e) => error_reply(&e),
        },
        Request::Status { set: None } => format!(":{}", service.status().word()),
        Request::Status { set: Some(name) } => match ServerStatus::parse(&name) {
            Some(status) => match service.set_status(status).await {
                Ok(()) => "+0".into(),
                Err(e) => error_reply(&e),
            },
            None => "-Unknown status.".into(),
        },
        Request::Version => format!(":{}", service.version()),
        Request::Shutdown => {
            reply(&mut conn.out, "+0");
            // Told or not, the server stops.
            let _ = conn.flush().await;
            tracing::info!(peer = %conn.peer, "shutdown requested over the text protocol");
            service.shutdown();
            return Err(Closed);
        }
        Request::Quit => return Err(Closed),
    };
    reply(&mut conn.out, &text);
    Ok(())
}

/// `get` and `peek`: confirm this connection's open reads on the queue, then
/// read one item (opened, or peeked). Appends `:<item>` or `*`.
async fn read_one(
    cx: &mut Context<'_>,
    conn: &mut Connection<'_, TextCodec>,
    queue: &str,
    timeout: Option<Duration>,
    read: Read,
) -> Handled {
    let (service, session) = (cx.service, &mut cx.session);
    // The confirm's journal wait is shared with the read that follows.
    let confirmed = match service.confirm_later(session, queue, Transactions::All) {
        Ok((_, settling)) => settling,
        Err(e) => {
            reply(&mut conn.out, &error_reply(&e));
            return Ok(());
        }
    };
    let request = GetRequest {
        max_items: 1,
        timeout,
        read,
    };
    match conn.run(service.get(session, queue, request)).await? {
        Ok(reading) => match reading.after(confirmed).finish().await.first() {
            Some(found) => item(&mut conn.out, &found.data),
            None => reply(&mut conn.out, "*"),
        },
        Err(e) => {
            confirmed.wait().await;
            reply(&mut conn.out, &error_reply(&e));
        }
    }
    Ok(())
}
