//! Protocol adapters: each turns its wire format into calls on the
//! [`QueueService`](crate::service::QueueService) and the results back into
//! replies. No queue logic lives here.

mod connection;
pub mod memcache;
pub mod text;
pub mod thrift;
