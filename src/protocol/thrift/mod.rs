//! The Thrift adapter (Kestrel's port 2229): framed transport, binary
//! protocol, served from the code `thrift --gen rs` generates from
//! `idl/kestrel.thrift`.
//!
//! The generated handler trait is synchronous, but a `get` may wait for
//! seconds and a `put` must wait for its journal write. So every call runs in
//! three steps, and only the middle one is ours:
//!
//! 1. **decode** ([`codec::decode`]) — the generated `process_<method>`
//!    function reads the arguments (through [`input::FrameInput`], which
//!    bounds every wire length by the frame) and hands them to a handler that
//!    only records them as a typed [`Command`];
//! 2. **execute** (here) — the command runs, asynchronously, on the
//!    [`QueueService`];
//!    a waiting `get` parks here without holding a thread, while the
//!    connection keeps watching its socket so a client that leaves cancels
//!    its get (nothing is taken until the wait ends; items taken are always
//!    delivered);
//! 3. **encode** ([`codec::encode`]) — the same generated function runs again
//!    on the same frame with a handler that returns the outcome, and writes
//!    the reply.
//!
//! Decoding twice costs a second pass over the arguments (measured: noise next
//! to the round trip); in exchange, every byte on the wire is read and
//! written by generated code, and no handler ever blocks.

/// The code `thrift --gen rs` generated from `idl/kestrel.thrift` (in
/// `gen/rs/`): types, the client used by tests and the bench tool, and the
/// argument/result codecs this adapter serves from.
#[path = "../../../gen/rs/kestrel.rs"]
#[allow(clippy::all, clippy::pedantic, dead_code, missing_docs)]
#[rustfmt::skip]
pub mod generated;
pub mod codec;
mod frame;
mod input;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use thrift::{ApplicationError, ApplicationErrorKind};

use self::codec::{Command, Delivery, Outcome};
use self::frame::FrameCodec;
use self::generated::{QueueInfo, Status};
use super::connection::{Closed, Connection, Context, Handled, Protocol};
use crate::config::ServerConfig;
use crate::offload;
use crate::service::{Expiry, GetRequest, QueueService, Read, ServiceError, Transactions};
use crate::stats;
use crate::status::ServerStatus;

/// The Thrift protocol, as the connection loop runs it.
pub struct Thrift;

impl Protocol for Thrift {
    const NAME: &'static str = "thrift";
    type Codec = FrameCodec;

    fn codec(config: &ServerConfig) -> FrameCodec {
        FrameCodec {
            max: config.max_frame_size,
        }
    }

    async fn handle(
        cx: &mut Context<'_>,
        conn: &mut Connection<'_, FrameCodec>,
        frame: bytes::BytesMut,
    ) -> Handled {
        // A big frame takes a while to decode: done as long work.
        let long = frame.len() >= offload::LONG_BYTES;
        let Some(command) = offload::long_if(long, || codec::decode(&frame, &mut conn.out)) else {
            stats::add(&cx.service.counters().protocol_errors, 1);
            return Ok(());
        };
        let outcome = execute(cx, conn, command).await?;
        let long = outcome.items() > offload::LONG_ITEMS;
        offload::long_if(long, || codec::encode(&frame, outcome, &mut conn.out));
        Ok(())
    }
}

/// The one place a refused call becomes a Thrift reply: a
/// `TApplicationException` whose message says why.
fn app_error(e: ServiceError) -> thrift::Error {
    thrift::Error::Application(ApplicationError::new(
        ApplicationErrorKind::Unknown,
        e.to_string(),
    ))
}

fn bad_argument(message: String) -> thrift::Error {
    thrift::Error::Application(ApplicationError::new(
        ApplicationErrorKind::Unknown,
        message,
    ))
}

fn millis(ms: i32) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms as u64))
}

fn saturate_i32(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn ids(set: BTreeSet<i64>) -> Transactions {
    Transactions::Ids(
        set.into_iter()
            .filter_map(|id| u64::try_from(id).ok())
            .collect(),
    )
}

/// Runs a command on the service; [`Closed`] if the client left, or the
/// server stopped, while a get waited.
async fn execute(
    cx: &mut Context<'_>,
    conn: &mut Connection<'_, FrameCodec>,
    command: Command,
) -> Result<Outcome, Closed> {
    if command.is_admin()
        && let Err(e) = super::admin_command(cx)
    {
        // Every admin call (set_status, flush_all_queues, delete_queue)
        // returns nothing but its exception.
        return Ok(Outcome::Done(Err(app_error(e))));
    }
    let (service, session) = (cx.service, &mut cx.session);
    Ok(match command {
        Command::Put {
            queue,
            items,
            expiration_msec,
        } => {
            let expiry = millis(expiration_msec).map_or(Expiry::Never, Expiry::After);
            let long = items.len() > offload::LONG_ITEMS;
            let items = offload::long_if(long, || items.into_iter().map(Bytes::from).collect());
            Outcome::Count(
                service
                    .put(&queue, items, expiry)
                    .await
                    .map(|n| saturate_i32(n as u64))
                    .map_err(app_error),
            )
        }
        Command::Get {
            queue,
            max_items,
            timeout_msec,
            auto_abort_msec,
        } => {
            let read = millis(auto_abort_msec).map_or(Read::Take, Read::OpenWithTimeout);
            let request = GetRequest {
                max_items: usize::try_from(max_items).unwrap_or(0),
                timeout: millis(timeout_msec),
                read,
            };
            let items = match conn.run(service.get(session, &queue, request)).await? {
                Ok(reading) => {
                    let delivered = reading.finish().await;
                    let long = delivered.len() > offload::LONG_ITEMS;
                    Ok(offload::long_if(long, || {
                        delivered
                            .into_iter()
                            .map(|d| Delivery {
                                data: d.data,
                                id: d.id.map_or(0, |id| id as i64),
                            })
                            .collect()
                    }))
                }
                Err(e) => Err(app_error(e)),
            };
            Outcome::Items(items)
        }
        Command::Confirm { queue, ids: set } => Outcome::Count(
            service
                .confirm(session, &queue, ids(set))
                .await
                .map(|n| saturate_i32(n as u64))
                .map_err(app_error),
        ),
        Command::Abort { queue, ids: set } => Outcome::Count(
            service
                .abort(session, &queue, ids(set))
                .await
                .map(|n| saturate_i32(n as u64))
                .map_err(app_error),
        ),
        Command::Peek { queue } => {
            Outcome::Info(service.peek(&queue).map_err(app_error).map(|s| {
                QueueInfo::new(
                    s.head.map(|h| h.to_vec()),
                    s.items as i64,
                    s.bytes as i64,
                    s.journal_bytes as i64,
                    s.age_ms as i64,
                    saturate_i32(s.waiters),
                    saturate_i32(s.open_transactions),
                )
            }))
        }
        Command::FlushQueue { queue } => {
            Outcome::Done(service.flush(&queue).await.map_err(app_error))
        }
        Command::FlushAllQueues => Outcome::Done(service.flush_all().await.map_err(app_error)),
        Command::DeleteQueue { queue } => {
            Outcome::Done(service.delete(&queue).await.map_err(app_error))
        }
        Command::CurrentStatus => Outcome::Status(Ok(match service.status() {
            ServerStatus::Up => Status::UP,
            ServerStatus::ReadOnly => Status::READ_ONLY,
            ServerStatus::Quiescent => Status::QUIESCENT,
        })),
        Command::SetStatus { status } => {
            let status = match status {
                Status::UP => Ok(ServerStatus::Up),
                Status::READ_ONLY => Ok(ServerStatus::ReadOnly),
                Status::QUIESCENT => Ok(ServerStatus::Quiescent),
                Status(other) => Err(bad_argument(format!("status {other} cannot be set"))),
            };
            Outcome::Done(match status {
                Ok(status) => service.set_status(status).await.map_err(app_error),
                Err(e) => Err(e),
            })
        }
        Command::GetVersion => Outcome::Version(Ok(service.version().to_string())),
    })
}
