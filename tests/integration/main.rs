//! The integration tests: one binary, one module per area, sharing the
//! harness in `common` (server in process on 127.0.0.1:0, fake upstream in
//! process, deadlines instead of sleeps).

mod common;
mod cache;
mod cli;
mod forwarding;
mod guard;
mod serving;
mod smoke;
