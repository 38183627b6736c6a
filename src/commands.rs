//! The subcommands that do not serve: `status` (asks a running server) and
//! `lookup` (asks the system resolver). Each returns an error for `main`
//! to print once; `node-address` and `node-resolv` have modules of their
//! own ([`crate::node_address`], [`crate::node_resolv`]).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::admin_client;
use crate::status::Status;

/// How long `status` waits for the admin endpoint.
pub(crate) const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// `accel-dns status`: fetches `/status` from `admin` and prints the
/// table, or with `json` the body as it came.
pub async fn status(admin: SocketAddr, json: bool) -> anyhow::Result<()> {
    let (code, body) = admin_client::get(admin, "/status", STATUS_TIMEOUT)
        .await
        .with_context(|| {
            format!("cannot get the status of accel-dns at {admin} (is it running, with [admin] listen = \"{admin}\"? use --admin ADDR)")
        })?;
    if !code.is_success() {
        bail!("{admin}/status answered {code}: {}", body.trim());
    }
    if json {
        print!("{body}");
        return Ok(());
    }
    let status: Status = serde_json::from_str(&body)
        .with_context(|| format!("{admin}/status is not the status of this accel-dns version"))?;
    print!("{}", status.table());
    Ok(())
}

/// `accel-dns lookup NAME...`: resolves each name with the system resolver
/// (getaddrinfo, so /etc/hosts, resolv.conf and its search list apply, as
/// for any program) and prints `NAME ADDRESS` lines. Fails if a name has
/// no address.
pub async fn lookup(names: &[String]) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for name in names {
        match tokio::net::lookup_host((name.as_str(), 0)).await {
            Ok(found) => {
                let mut addresses: Vec<IpAddr> = found.map(|a| a.ip()).collect();
                addresses.dedup();
                if addresses.is_empty() {
                    failed.push(format!("{name}: no address"));
                }
                for address in addresses {
                    println!("{name} {address}");
                }
            }
            Err(error) => failed.push(format!("{name}: {error}")),
        }
    }
    if !failed.is_empty() {
        bail!("cannot resolve {}", failed.join("; "));
    }
    Ok(())
}
