//! `accel-dns node-address add|del|show` (README "Command line"): puts the
//! node-local address that accel-dns answers on (169.254.20.53 on a
//! Kubernetes node, as NodeLocal DNSCache does with 169.254.20.10) on a
//! dummy link, through rtnetlink — what the DaemonSet's init container did
//! with busybox's `ip`, so the deployment needs no image but accel-dns.
//!
//! - `add`: makes the dummy link if it is missing (on `lo` when the kernel
//!   has no dummy links), sets it up, adds `ADDR/32` (`/128`) unless it is
//!   already there: running it twice changes nothing.
//! - `del`: removes the address; then the dummy link too once it holds no
//!   address but its own IPv6 link-local one. `lo` is never removed.
//! - `show`: the device's addresses, or whether `ADDR` is on it.
//!
//! Linux only; elsewhere each action says so and fails.

use crate::cli::NodeAddressAction;

/// Runs one `node-address` action.
pub async fn run(action: NodeAddressAction) -> anyhow::Result<()> {
    imp::run(action).await
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::NodeAddressAction;

    pub(super) async fn run(_action: NodeAddressAction) -> anyhow::Result<()> {
        anyhow::bail!("node-address needs Linux (rtnetlink)")
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::net::IpAddr;

    use anyhow::{Context, bail};
    use futures_util::TryStreamExt;
    use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
    use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
    use rtnetlink::{Handle, LinkDummy, LinkUnspec};

    use super::NodeAddressAction;

    /// The fallback device when the kernel has no dummy links.
    const LOOPBACK: &str = "lo";

    pub(super) async fn run(action: NodeAddressAction) -> anyhow::Result<()> {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("cannot open a netlink socket")?;
        let driver = tokio::spawn(connection);
        let result = match action {
            NodeAddressAction::Add(args) => add(&handle, &args.dev, args.addr).await,
            NodeAddressAction::Del(args) => del(&handle, &args.dev, args.addr).await,
            NodeAddressAction::Show { addr, dev } => show(&handle, &dev, addr).await,
        };
        driver.abort();
        result
    }

    fn errno(error: &rtnetlink::Error) -> Option<i32> {
        match error {
            rtnetlink::Error::NetlinkError(message) => message.code.map(|c| -c.get()),
            _ => None,
        }
    }

    /// The link named `name`, `None` if there is none.
    async fn link(handle: &Handle, name: &str) -> anyhow::Result<Option<LinkMessage>> {
        match handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_next()
            .await
        {
            Ok(found) => Ok(found),
            Err(error) if errno(&error) == Some(libc::ENODEV) => Ok(None),
            Err(error) => Err(error).with_context(|| format!("cannot look up the link {name}")),
        }
    }

    fn is_dummy(link: &LinkMessage) -> bool {
        link.attributes.iter().any(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos
                .iter()
                .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Dummy))),
            _ => false,
        })
    }

    /// The address a message carries (IFA_LOCAL for IPv4, else IFA_ADDRESS).
    fn address_of(message: &AddressMessage) -> Option<IpAddr> {
        let local = message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        local.or_else(|| {
            message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        })
    }

    async fn addresses(handle: &Handle, index: u32) -> anyhow::Result<Vec<AddressMessage>> {
        handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .context("cannot list the addresses")
    }

    fn host_prefix(addr: IpAddr) -> u8 {
        if addr.is_ipv4() { 32 } else { 128 }
    }

    async fn add(handle: &Handle, dev: &str, addr: IpAddr) -> anyhow::Result<()> {
        let mut name = dev.to_string();
        let link = match link(handle, dev).await? {
            Some(link) => link,
            None => {
                if on_loopback(handle, addr).await? {
                    println!("{addr} is already on {LOOPBACK} (no {dev}: no dummy links here)");
                    return Ok(());
                }
                match handle
                    .link()
                    .add(LinkDummy::new(dev).build())
                    .execute()
                    .await
                {
                    Ok(()) => println!("created the dummy link {dev}"),
                    Err(error) if errno(&error) == Some(libc::EEXIST) => {}
                    Err(error) => {
                        eprintln!(
                            "cannot create the dummy link {dev} ({error}): no dummy links in this kernel? adding {addr} to {LOOPBACK}"
                        );
                        name = LOOPBACK.to_string();
                    }
                }
                match self::link(handle, &name).await? {
                    Some(link) => link,
                    None => bail!("the link {name} is missing"),
                }
            }
        };
        let index = link.header.index;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .with_context(|| format!("cannot set {name} up"))?;
        let present = addresses(handle, index)
            .await?
            .iter()
            .any(|m| address_of(m) == Some(addr));
        if present {
            println!("{addr} is already on {name}");
            return Ok(());
        }
        match handle
            .address()
            .add(index, addr, host_prefix(addr))
            .execute()
            .await
        {
            Ok(()) => println!("added {addr}/{} to {name}", host_prefix(addr)),
            Err(error) if errno(&error) == Some(libc::EEXIST) => {
                println!("{addr} is already on {name}")
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot add {addr} to {name}"));
            }
        }
        Ok(())
    }

    async fn del(handle: &Handle, dev: &str, addr: IpAddr) -> anyhow::Result<()> {
        // `add` may have fallen back to lo: look there too.
        let mut removed = false;
        for name in [dev, LOOPBACK] {
            let Some(link) = link(handle, name).await? else {
                continue;
            };
            let index = link.header.index;
            let mut left = 0;
            for message in addresses(handle, index).await? {
                match address_of(&message) {
                    Some(ip) if ip == addr => {
                        handle
                            .address()
                            .del(message)
                            .execute()
                            .await
                            .with_context(|| format!("cannot remove {addr} from {name}"))?;
                        println!("removed {addr} from {name}");
                        removed = true;
                    }
                    Some(IpAddr::V6(ip)) if ip.is_unicast_link_local() => {}
                    _ => left += 1,
                }
            }
            if name != LOOPBACK && left == 0 && is_dummy(&link) {
                handle
                    .link()
                    .del(index)
                    .execute()
                    .await
                    .with_context(|| format!("cannot remove the link {name}"))?;
                println!("removed the empty dummy link {name}");
            }
            if removed {
                break;
            }
        }
        if !removed {
            println!("{addr} is not on {dev}: nothing to remove");
        }
        Ok(())
    }

    /// Whether `addr` is on `lo` (where `add` puts it without dummy links).
    async fn on_loopback(handle: &Handle, addr: IpAddr) -> anyhow::Result<bool> {
        let Some(lo) = link(handle, LOOPBACK).await? else {
            return Ok(false);
        };
        Ok(addresses(handle, lo.header.index)
            .await?
            .iter()
            .any(|m| address_of(m) == Some(addr)))
    }

    async fn show(handle: &Handle, dev: &str, addr: Option<IpAddr>) -> anyhow::Result<()> {
        let (dev, link) = match link(handle, dev).await? {
            Some(link) => (dev, link),
            // Without dummy links, `add` used lo.
            None => match link(handle, LOOPBACK).await? {
                Some(lo) if addr.is_some() => {
                    eprintln!("no link {dev}: looking on {LOOPBACK}");
                    (LOOPBACK, lo)
                }
                _ => bail!("no link {dev}"),
            },
        };
        let up = link
            .header
            .flags
            .contains(rtnetlink::packet_route::link::LinkFlags::Up);
        let list = addresses(handle, link.header.index).await?;
        match addr {
            Some(addr) => {
                if !list.iter().any(|m| address_of(m) == Some(addr)) {
                    bail!("{addr} is not on {dev}");
                }
                println!("{dev} {} {addr}", if up { "up" } else { "down" });
            }
            None => {
                println!("{dev} {}", if up { "up" } else { "down" });
                for message in &list {
                    if let Some(ip) = address_of(message) {
                        println!("  {ip}/{}", message.header.prefix_len);
                    }
                }
            }
        }
        Ok(())
    }
}
