//! accel-dns: a DNS forwarding proxy for registry acceleration.
//!
//! A query travels one way through the modules:
//!
//! ```text
//! server (UDP/TCP) → resolve::handle: wire (parse) → ACL → records → cache
//!                                      ↓ miss / CNAME target
//!                    resolve::finish: single-flight → upstream → cache → wire (answer)
//! ```
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
pub mod cli;
pub mod commands;
pub mod config;
pub mod health;
pub mod logging;
pub mod loop_guard;
pub mod metrics;
pub mod node_address;
pub mod node_resolv;
pub mod records;
pub mod registries;
pub mod reload;
pub mod resolve;
pub mod server;
pub mod snapshot;
pub mod status;
pub mod udp_batch;
pub mod udp_pool;
pub mod unmapped;
pub mod upstream;
pub mod wire;
