//! The command line (SPEC §2): `serve` (the default), `check` and
//! `registries`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// accel-dns: a DNS forwarding proxy that answers registry names with
/// accelerated addresses or a CNAME, forwards the rest, caches, and reloads
/// its mapping live.
#[derive(Debug, Parser)]
#[command(name = "accel-dns", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (TOML). Default: $ACCEL_DNS_CONFIG, else the built-in defaults.
    #[arg(
        long,
        short = 'c',
        global = true,
        value_name = "PATH",
        env = "ACCEL_DNS_CONFIG"
    )]
    pub config: Option<PathBuf>,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server in the foreground.
    Serve,
    /// Validate the configuration and the files it names, print a summary, bind nothing.
    Check,
    /// Print the built-in registry bundles: names, zones, sources and dates. Needs no config.
    Registries,
}
