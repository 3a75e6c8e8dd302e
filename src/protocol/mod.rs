//! Protocol adapters: each turns its wire format into calls on the
//! [`QueueService`](crate::service::QueueService) and the results back into
//! replies. No queue logic lives here.

pub mod budget;
mod connection;
pub mod memcache;
pub mod text;
pub mod thrift;

use std::time::Duration;

use std::sync::Arc;

use bytes::BytesMut;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::service::{GetRequest, QueueService, Read};
use budget::Budget;
use connection::{Codec, Connection};

/// What every connection of the server shares, whatever its protocol.
pub struct Shared {
    pub config: Arc<ServerConfig>,
    /// Memory all partial requests hold together.
    pub budget: Budget,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
}

/// `monitor` (memcache and text): opens items one at a time until `timeout`
/// has passed, `max` are open, or the service says no more (for instance the
/// connection's open-read limit), writing each with `write` and sending it as
/// it comes. `None` if the client left meanwhile.
async fn monitor<S: QueueService, C: Codec>(
    service: &S,
    session: &mut S::Session,
    conn: &mut Connection<'_, C>,
    queue: &str,
    timeout: Duration,
    max: usize,
    write: impl Fn(&mut BytesMut, &[u8]),
) -> Option<()> {
    let deadline = tokio::time::Instant::now() + timeout.min(crate::service::MAX_WAIT);
    for _ in 0..max {
        let timeout = Some(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let request = GetRequest {
            max_items: 1,
            timeout,
            read: Read::Open,
        };
        let Ok(reading) = conn.run(service.get(session, queue, request)).await? else {
            break;
        };
        match reading.finish().await.first() {
            Some(item) => {
                write(&mut conn.out, &item.data);
                if !conn.flush().await {
                    return None;
                }
            }
            None => break,
        }
    }
    Some(())
}

/// Items up to this size are copied out of a connection's read buffer
/// rather than sliced from it: a queued slice keeps the whole buffer
/// allocated, so a small item could pin many times its size.
const COPY_BELOW: usize = 4096;

/// Takes the first `len` bytes of `buf` as an item of its own.
fn take_item(buf: &mut BytesMut, len: usize) -> bytes::Bytes {
    if len < COPY_BELOW {
        let item = bytes::Bytes::copy_from_slice(&buf[..len]);
        bytes::Buf::advance(buf, len);
        item
    } else {
        buf.split_to(len).freeze()
    }
}

/// Splits a memcache or text command line at spaces: the command,
/// lowercased, and its arguments. `None` for a blank line.
fn split_command(line: &[u8]) -> Option<(String, Vec<&[u8]>)> {
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let command = String::from_utf8_lossy(words.next()?).to_ascii_lowercase();
    Some((command, words.collect()))
}
