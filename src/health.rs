//! TCP health checks of record addresses (SPEC §8). One probe task per
//! distinct (address, port, check settings), shared by every record that
//! uses it and kept across reloads while any record still does; the task
//! ends by itself once the last record holding its [`Endpoint`] is gone.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::config::HealthCheckConfig;

/// One probed endpoint and its current verdict.
#[derive(Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    up: AtomicBool,
    changes: watch::Sender<u64>,
}

impl Endpoint {
    /// Whether the address is in the answers.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The probed address and port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn set(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
        self.changes.send_modify(|generation| *generation += 1);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct EndpointKey {
    addr: SocketAddr,
    check: HealthCheckConfig,
}

/// Hands out shared endpoints and starts their probes.
#[derive(Debug)]
pub struct HealthRegistry {
    endpoints: Mutex<HashMap<EndpointKey, Weak<Endpoint>>>,
    /// Bumped whenever any endpoint goes down or comes back.
    changes: watch::Sender<u64>,
}

impl Default for HealthRegistry {
    fn default() -> Self {
        Self {
            endpoints: Mutex::default(),
            changes: watch::Sender::new(0),
        }
    }
}

impl HealthRegistry {
    /// Wakes whenever an endpoint changes state (for the per-record log).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The endpoint for `ip` under `check`: the running one if a record
    /// already probes it with the same settings, else a new one whose probe
    /// task starts now (outside a runtime, e.g. in `check`, none starts).
    pub fn endpoint(&self, ip: IpAddr, check: HealthCheckConfig) -> Arc<Endpoint> {
        let key = EndpointKey {
            addr: SocketAddr::new(ip, check.port),
            check,
        };
        let mut map = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, weak| weak.strong_count() > 0);
        if let Some(existing) = map.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        let endpoint = Arc::new(Endpoint {
            addr: key.addr,
            up: AtomicBool::new(true),
            changes: self.changes.clone(),
        });
        map.insert(key, Arc::downgrade(&endpoint));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(probe_loop(Arc::downgrade(&endpoint), check));
        }
        endpoint
    }
}

/// Probes until the endpoint is no longer used by any record.
async fn probe_loop(endpoint: Weak<Endpoint>, check: HealthCheckConfig) {
    let mut failures = 0u32;
    let mut successes = 0u32;
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(addr) = endpoint.upgrade().map(|e| e.addr) else {
            return;
        };
        let ok = probe(addr, check.timeout).await;
        let Some(endpoint) = endpoint.upgrade() else {
            return;
        };
        if ok {
            failures = 0;
            successes = successes.saturating_add(1);
            if !endpoint.is_up() && successes >= check.rise {
                endpoint.set(true);
                tracing::warn!(endpoint = %addr, successes, "health check: endpoint is up again, back in the answers");
            }
        } else {
            successes = 0;
            failures = failures.saturating_add(1);
            if endpoint.is_up() && failures >= check.fall {
                endpoint.set(false);
                tracing::warn!(endpoint = %addr, failures, "health check: endpoint is down, removed from the answers");
            }
        }
    }
}

async fn probe(addr: SocketAddr, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(port: u16) -> HealthCheckConfig {
        HealthCheckConfig {
            port,
            interval: Duration::from_millis(20),
            timeout: Duration::from_millis(200),
            fall: 2,
            rise: 1,
        }
    }

    #[tokio::test]
    async fn endpoints_are_shared_and_go_down_and_up() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let registry = HealthRegistry::default();
        let ip: IpAddr = [127, 0, 0, 1].into();
        let first = registry.endpoint(ip, check(port));
        let second = registry.endpoint(ip, check(port));
        assert!(Arc::ptr_eq(&first, &second));
        assert!(first.is_up());
        drop(listener);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while first.is_up() {
            assert!(tokio::time::Instant::now() < deadline, "never went down");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("rebind");
        while !first.is_up() {
            assert!(tokio::time::Instant::now() < deadline, "never came back");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
