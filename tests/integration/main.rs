//! The integration tests: one binary, one module per area, sharing the
//! harness in `common` (server in process on 127.0.0.1:0, fake upstream in
//! process, deadlines instead of sleeps).

mod admin;
mod bad_edns;
mod cache;
mod cli;
mod common;
mod drain;
mod forwarding;
mod guard;
mod health;
mod hostile_clients;
mod hostile_upstreams;
mod node_address;
mod registries;
mod reload;
mod reload_hygiene;
mod serving;
mod single_flight_bounds;
mod smoke;
mod source_ports;
mod status;
mod unmapped;
mod views;
