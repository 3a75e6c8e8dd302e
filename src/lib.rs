//! A durable message-queue server speaking Kestrel's Thrift, memcache and
//! text protocols.
//!
//! Layers, top to bottom: [`server`] accepts connections and hands each to a
//! [`protocol`] adapter; adapters call the [`service::QueueService`] trait;
//! the service runs on the [`queue`] engine, which keeps its items in the
//! [`journal`]. Beside the protocols, [`admin`] (HTTP), [`discovery`]
//! (ZooKeeper server sets) and [`import`] (Kestrel's journals) also only use
//! the service. Beneath them all are leaves that import nothing above
//! them: [`config`], [`stats`], [`status`], [`clock`] and [`name`]. No module
//! imports one that imports it back (`.ci/module-cycles` checks).

pub mod admin;
pub mod cli;
pub mod clock;
pub mod config;
pub mod data_dir;
pub mod discovery;
pub mod import;
pub mod journal;
pub mod logging;
pub mod memory;
pub mod name;
pub mod offload;
pub mod protocol;
pub mod queue;
pub mod server;
pub mod service;
pub mod stats;
pub mod status;

#[cfg(test)]
mod model_tests;
