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
//!
//! # The crate's surface
//!
//! Everything is crate-private but three modules for the binary
//! (`src/main.rs`): [`app`] (serve, and the helper subcommands), [`cli`] (the
//! command line) and [`config`] (the loader); and [`internals`], the one door
//! the integration tests, the benches and the fuzz targets use into the
//! engine.

// Keeps the surface this small: a `pub` item that nothing outside the crate
// can reach (through `app`, `cli`, `config` or `internals`) is an error;
// write it `pub(crate)` (or `pub(super)`), or re-export it from `internals`
// if a test, bench or fuzz target needs it.
#![deny(unreachable_pub)]
// The docs are for the people who work on the engine (`cargo doc
// --document-private-items`): links from the public modules into the private
// ones are meant.
#![allow(rustdoc::private_intra_doc_links)]

mod admin;
mod admin_client;
pub mod app;
mod cache;
mod chase;
pub mod cli;
mod commands;
pub mod config;
mod health;
mod inflight;
pub mod internals;
mod logging;
mod loop_guard;
mod metrics;
mod node_address;
mod node_resolv;
mod records;
mod registries;
mod reload;
mod reply;
mod request;
mod resolve;
mod server;
mod snapshot;
mod status;
mod unmapped;
mod upstream;
mod wire;
