//! Health checks of records (README "Health-checked records (fail-open)"), below the records and above nothing
//! but the config: the records hold what this module hands out and read
//! one atomic (or one `ArcSwap` load) per answer; the probing happens in
//! tasks of its own, so a probe never blocks the query path.
//!
//! - [`Endpoint`]: one probed address and port under one check (`probe.rs`
//!   does the connect, TLS handshake and HTTP `GET`), shared by every
//!   record that probes the same address with the same check — same port,
//!   SNI, path, CA and timing — and kept across reloads while any record
//!   still holds it. Its task ends by itself once the last holder is gone.
//! - [`TargetHealth`]: a health-checked CNAME record's target, resolved
//!   every `interval` through the running resolver (the [`TargetResolver`]
//!   that the app wires in: records, cache, upstream), each address it
//!   resolves to probed as an [`Endpoint`] with the record's check.

mod probe;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use hickory_proto::rr::Name;
use tokio::sync::watch;

use crate::config::HealthCheckConfig;
use probe::Probe;

/// Resolves a CNAME record's target for its health check, the way a client
/// of this server would get it: through the records, the cache and
/// upstream. The app implements it with the running resolver.
pub trait TargetResolver: Send + Sync {
    /// The A and AAAA addresses of `name`.
    fn addresses<'a>(&'a self, name: &'a Name) -> BoxFuture<'a, TargetLookup>;
}

/// What resolving a CNAME target gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetLookup {
    /// At least one address (A and AAAA together).
    Addresses(Vec<IpAddr>),
    /// NXDOMAIN, or neither A nor AAAA.
    NotFound,
    /// Upstream failed (SERVFAIL, timeout) and nothing stale could stand in.
    Failed,
}

/// One probed endpoint and its current verdict.
pub struct Endpoint {
    addr: SocketAddr,
    up: AtomicBool,
    /// Set once a probe has finished (for `/status`: `unchecked` before).
    checked: AtomicBool,
    /// Unix time in milliseconds of the last change of verdict; 0: none yet.
    changed_unix_ms: AtomicU64,
    changes: watch::Sender<u64>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("up", &self.is_up())
            .finish()
    }
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

    /// Whether a probe has finished yet (before the first, the address
    /// counts as up without having been seen).
    pub fn is_checked(&self) -> bool {
        self.checked.load(Ordering::Relaxed)
    }

    /// When the verdict last changed (unix milliseconds), `None` if it never has.
    pub fn changed_unix_ms(&self) -> Option<u64> {
        match self.changed_unix_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms),
        }
    }

    fn set(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
        self.changed_unix_ms.store(unix_ms(), Ordering::Relaxed);
        self.changes.send_modify(|generation| *generation += 1);
    }
}

/// Now, in milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Endpoint {
    fn probed(&self) {
        self.checked.store(true, Ordering::Relaxed);
    }
}

/// The health of a CNAME record's target: whether it resolves, and the
/// probes of the addresses it resolves to.
pub struct TargetHealth {
    target: Name,
    state: ArcSwap<TargetState>,
}

#[derive(Default)]
struct TargetState {
    /// False after `fall` resolutions in a row gave no address.
    resolves: bool,
    /// The probes of the addresses of the last resolution that gave any.
    endpoints: Vec<Arc<Endpoint>>,
}

impl fmt::Debug for TargetHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.load();
        f.debug_struct("TargetHealth")
            .field("target", &self.target)
            .field("resolves", &state.resolves)
            .field("endpoints", &state.endpoints)
            .finish()
    }
}

impl TargetHealth {
    /// Whether the record may answer: the target resolves and not every
    /// address it resolves to is down. Up until the first resolution has
    /// failed `fall` times, as an address is up until its probe has.
    pub fn is_up(&self) -> bool {
        let state = self.state.load();
        state.resolves && (state.endpoints.is_empty() || state.endpoints.iter().any(|e| e.is_up()))
    }

    /// The addresses the target resolves to now, each with its verdict
    /// (for `accel_dns_endpoint_up`).
    pub fn endpoints(&self) -> Vec<(IpAddr, bool)> {
        self.state
            .load()
            .endpoints
            .iter()
            .map(|e| (e.addr.ip(), e.is_up()))
            .collect()
    }

    /// Whether the target resolves (false after `fall` resolutions in a
    /// row gave no address).
    pub fn resolves(&self) -> bool {
        self.state.load().resolves
    }

    /// The probes of the addresses the target resolves to now (for `/status`).
    pub fn probes(&self) -> Vec<Arc<Endpoint>> {
        self.state.load().endpoints.clone()
    }

    /// The CNAME target.
    pub fn target(&self) -> &Name {
        &self.target
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EndpointKey {
    addr: SocketAddr,
    check: HealthCheckConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TargetKey {
    target: Name,
    check: HealthCheckConfig,
}

type ResolverSlot = Option<Weak<dyn TargetResolver>>;

struct Inner {
    endpoints: Mutex<HashMap<EndpointKey, Weak<Endpoint>>>,
    targets: Mutex<HashMap<TargetKey, Weak<TargetHealth>>>,
    /// Bumped whenever any endpoint or target changes state.
    changes: watch::Sender<u64>,
    /// The resolver CNAME targets are resolved through, once wired in.
    resolver: watch::Sender<ResolverSlot>,
}

/// Hands out shared endpoints and CNAME target checks and starts their
/// tasks. Cloning gives another handle to the same registry.
#[derive(Clone)]
pub struct HealthRegistry {
    inner: Arc<Inner>,
}

impl fmt::Debug for HealthRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoints = lock(&self.inner.endpoints).len();
        let targets = lock(&self.inner.targets).len();
        f.debug_struct("HealthRegistry")
            .field("endpoints", &endpoints)
            .field("targets", &targets)
            .finish()
    }
}

impl Default for HealthRegistry {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                endpoints: Mutex::default(),
                targets: Mutex::default(),
                changes: watch::Sender::new(0),
                resolver: watch::Sender::new(None),
            }),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl HealthRegistry {
    /// Wakes whenever an endpoint or a CNAME target changes state (for the
    /// per-record log).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Wires in the resolver that CNAME targets are resolved through. Held
    /// weakly: the resolver owns the records, which own the checks. Until
    /// it is set, target checks wait (and count nothing).
    pub fn set_resolver(&self, resolver: Weak<dyn TargetResolver>) {
        self.inner.resolver.send_replace(Some(resolver));
    }

    /// The endpoint for `ip` under `check`: the running one if a record
    /// already probes it with the same check, else a new one whose probe
    /// task starts now (outside a runtime, e.g. in `check`, none starts).
    pub fn endpoint(&self, ip: IpAddr, check: &HealthCheckConfig) -> Arc<Endpoint> {
        let key = EndpointKey {
            addr: SocketAddr::new(ip, check.port),
            check: check.clone(),
        };
        let mut map = lock(&self.inner.endpoints);
        map.retain(|_, weak| weak.strong_count() > 0);
        if let Some(existing) = map.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        let endpoint = Arc::new(Endpoint {
            addr: key.addr,
            up: AtomicBool::new(true),
            checked: AtomicBool::new(false),
            changed_unix_ms: AtomicU64::new(0),
            changes: self.inner.changes.clone(),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let probe = Probe::new(key.addr, check);
            runtime.spawn(probe_loop(Arc::downgrade(&endpoint), probe, check.clone()));
        }
        map.insert(key, Arc::downgrade(&endpoint));
        endpoint
    }

    /// The health of the CNAME target `target` under `check`: the running
    /// one if a record already checks it so (a reload keeps its state),
    /// else a new one whose task starts now.
    pub fn target(&self, target: &Name, check: &HealthCheckConfig) -> Arc<TargetHealth> {
        let key = TargetKey {
            target: target.clone(),
            check: check.clone(),
        };
        let mut map = lock(&self.inner.targets);
        map.retain(|_, weak| weak.strong_count() > 0);
        if let Some(existing) = map.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        let health = Arc::new(TargetHealth {
            target: target.clone(),
            state: ArcSwap::from_pointee(TargetState {
                resolves: true,
                endpoints: Vec::new(),
            }),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(target_loop(
                Arc::downgrade(&health),
                check.clone(),
                self.clone(),
            ));
        }
        map.insert(key, Arc::downgrade(&health));
        health
    }

    fn changed(&self) {
        self.inner
            .changes
            .send_modify(|generation| *generation += 1);
    }
}

/// Counts consecutive results and says when a verdict flips.
#[derive(Debug, Default)]
struct Streak {
    failures: u32,
    successes: u32,
}

impl Streak {
    /// Records one result; returns the new verdict if it changes from `up`.
    fn record(&mut self, ok: bool, up: bool, check: &HealthCheckConfig) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (!up && self.successes >= check.rise).then_some(true)
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (up && self.failures >= check.fall).then_some(false)
        }
    }
}

/// Probes until the endpoint is no longer used by any record.
async fn probe_loop(endpoint: Weak<Endpoint>, probe: Probe, check: HealthCheckConfig) {
    let mut streak = Streak::default();
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let what = describe(&check);
    loop {
        ticker.tick().await;
        if endpoint.strong_count() == 0 {
            return;
        }
        let result = probe.run().await;
        let Some(endpoint) = endpoint.upgrade() else {
            return;
        };
        endpoint.probed();
        let addr = endpoint.addr;
        match (
            streak.record(result.is_ok(), endpoint.is_up(), &check),
            result,
        ) {
            (Some(true), _) => {
                endpoint.set(true);
                tracing::warn!(endpoint = %addr, check = %what, successes = streak.successes, "health check: endpoint is up again, back in the answers");
            }
            (Some(false), Err(error)) => {
                endpoint.set(false);
                tracing::warn!(endpoint = %addr, check = %what, failures = streak.failures, %error, "health check: endpoint is down, removed from the answers");
            }
            (_, Err(error)) => {
                tracing::debug!(endpoint = %addr, check = %what, %error, "health check: probe failed");
            }
            _ => {}
        }
    }
}

/// Resolves a CNAME target every `interval` until no record holds it, and
/// keeps its address probes in step with what it resolves to.
async fn target_loop(
    health: Weak<TargetHealth>,
    check: HealthCheckConfig,
    registry: HealthRegistry,
) {
    let mut wired = registry.inner.resolver.subscribe();
    let resolver = match wired.wait_for(Option::is_some).await {
        Ok(slot) => slot.clone(),
        Err(_) => return,
    };
    let Some(resolver) = resolver else { return };
    let mut streak = Streak::default();
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(target) = health.upgrade().map(|h| h.target.clone()) else {
            return;
        };
        // The resolver gone means the server is gone.
        let Some(running) = resolver.upgrade() else {
            return;
        };
        let lookup = running.addresses(&target).await;
        drop(running);
        let Some(health) = health.upgrade() else {
            return;
        };
        let state = health.state.load_full();
        let (ok, mut addresses) = match &lookup {
            TargetLookup::Addresses(list) => (true, list.clone()),
            TargetLookup::NotFound | TargetLookup::Failed => (false, Vec::new()),
        };
        addresses.sort();
        addresses.dedup();
        let flip = streak.record(ok, state.resolves, &check);
        let resolves = flip.unwrap_or(state.resolves);
        let endpoints = if ok {
            addresses
                .iter()
                .map(|ip| registry.endpoint(*ip, &check))
                .collect()
        } else if resolves {
            // A failure short of `fall`: the last addresses stay probed.
            state.endpoints.clone()
        } else {
            Vec::new()
        };
        let before: Vec<SocketAddr> = state.endpoints.iter().map(|e| e.addr).collect();
        let after: Vec<SocketAddr> = endpoints.iter().map(|e| e.addr).collect();
        if flip.is_none() && before == after {
            continue;
        }
        match flip {
            Some(false) => {
                tracing::warn!(target = %target, failures = streak.failures, result = ?lookup, "health check: the CNAME target does not resolve")
            }
            Some(true) => {
                tracing::warn!(target = %target, addresses = ?after, "health check: the CNAME target resolves again")
            }
            None => {
                tracing::info!(target = %target, addresses = ?after, "health check: the CNAME target resolves to other addresses")
            }
        }
        health.state.store(Arc::new(TargetState {
            resolves,
            endpoints,
        }));
        registry.changed();
    }
}

/// What a check probes, for the log: `tcp`, `tls registry-1.docker.io`,
/// `tls registry-1.docker.io GET /v2/`, `http GET /v2/`.
fn describe(check: &HealthCheckConfig) -> String {
    let mut text = match &check.tls {
        Some(tls) => format!("tls {}", tls.server_name.to_ascii().trim_end_matches('.')),
        None if check.http.is_some() => "http".to_string(),
        None => "tcp".to_string(),
    };
    if let Some(http) = &check.http {
        text.push_str(" GET ");
        text.push_str(&http.path);
    }
    text
}

#[cfg(test)]
mod tests;
