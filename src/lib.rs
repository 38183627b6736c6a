//! accel-dns: a DNS forwarding proxy for registry acceleration.
//!
//! A query travels one way through the modules:
//!
//! ```text
//! server/ (UDP, TCP) → resolve::handle: wire (parse) → loop guard → ACL → records → cache
//!                                        ↓ miss                 ↓ CNAME record
//!                      resolve::finish:  inflight → upstream/   chase (records, cache, upstream)
//!                                        → cache → wire (answer), reply (answers made here)
//! ```
//!
//! `request` holds the types those parts share (the query in flight, its
//! transport, the one failure type); nothing below `resolve` imports it.
//!
//! The running configuration is one immutable [`snapshot::Snapshot`] behind an
//! `ArcSwap`, replaced whole by [`reload`]; [`config`] is the only loader (start,
//! `check`, reload). [`admin`] serves health, [`metrics`] and [`status`]; [`health`] probes
//! health-checked record addresses; [`loop_guard`] finds forwarding loops;
//! [`registries`] holds the built-in bundles of registry names; [`unmapped`]
//! reports the names of watched zones that no record covers.

pub mod admin;
pub mod admin_client;
pub mod app;
pub mod cache;
pub mod chase;
pub mod cli;
pub mod commands;
pub mod config;
pub mod health;
pub mod inflight;
pub mod logging;
pub mod loop_guard;
pub mod metrics;
pub mod node_address;
pub mod node_resolv;
pub mod records;
pub mod registries;
pub mod reload;
pub mod reply;
pub mod request;
pub mod resolve;
pub mod server;
pub mod snapshot;
pub mod status;
pub mod unmapped;
pub mod upstream;
pub mod wire;
