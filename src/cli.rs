//! The command line (README "Command line"): `serve` (the default), `check` and
//! `registries`; the helpers around a running server: `status`, and for
//! deployments that ship nothing but this binary, `node-address`,
//! `node-resolv` and `lookup` (README "Command line").

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

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
    /// Show a running server's state (its admin endpoint's /status).
    Status {
        /// The admin endpoint of the server.
        #[arg(long, value_name = "ADDR", default_value = crate::config::DEFAULT_ADMIN_LISTEN)]
        admin: SocketAddr,
        /// Print the raw JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Add, remove or show the node-local address accel-dns answers on (Linux).
    NodeAddress {
        /// What to do.
        #[command(subcommand)]
        action: NodeAddressAction,
    },
    /// Keep the node's resolv.conf pointed at accel-dns while, and only while, it is ready.
    NodeResolv(NodeResolvArgs),
    /// Resolve names through the system resolver and print their addresses.
    Lookup {
        /// Names to resolve.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
}

/// `accel-dns node-address ...`
#[derive(Debug, Subcommand)]
pub enum NodeAddressAction {
    /// Add ADDR (as /32 or /128) to the device, creating a dummy link if needed.
    Add(NodeAddressArgs),
    /// Remove ADDR from the device (and the device, if this tool made it and it is empty).
    Del(NodeAddressArgs),
    /// Print the device's addresses, or whether ADDR is on it.
    Show {
        /// The address to look for (default: list them all).
        addr: Option<IpAddr>,
        /// The device.
        #[arg(long, default_value = DEFAULT_NODE_DEVICE)]
        dev: String,
    },
}

/// The default device of `node-address`.
pub const DEFAULT_NODE_DEVICE: &str = "accel-dns0";

/// The address and device of `node-address add|del`.
#[derive(Debug, clap::Args)]
pub struct NodeAddressArgs {
    /// The address (for example 169.254.20.53).
    pub addr: IpAddr,
    /// The device (a dummy link, made if missing).
    #[arg(long, default_value = DEFAULT_NODE_DEVICE)]
    pub dev: String,
}

/// `accel-dns node-resolv ...`: the options of `accel-dns-node-resolv.sh`.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeResolvArgs {
    /// The address the node's resolver asks first.
    #[arg(long, default_value = "169.254.20.53")]
    pub address: IpAddr,
    /// The admin endpoint whose /readyz says whether accel-dns is ready.
    #[arg(long, value_name = "ADDR", default_value = crate::config::DEFAULT_ADMIN_LISTEN)]
    pub admin: SocketAddr,
    /// How often to look.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// The resolver file to rewrite.
    #[arg(long, default_value = "/host/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// Where the original is kept (default: RESOLV_CONF.accel-dns-orig).
    #[arg(long)]
    pub backup: Option<PathBuf>,
    /// Look once and exit (leaves the file as that look set it).
    #[arg(long)]
    pub once: bool,
}
