//! Forwarding-loop detection (README "How a query is answered", upstream). For each upstream, a query for a
//! random, never-reused name is sent through that upstream alone; if the
//! same name then arrives here as a client query, that upstream forwards
//! our queries back to us (a node resolver such as systemd-resolved pointed
//! at this server does exactly that). It is then taken out of use, the loop
//! is logged, and the looped query is refused so the loop ends at once.
//!
//! The guard outlives every snapshot, so what it holds must never keep a
//! snapshot's upstreams alive: an entry is removed when its probe ends *or
//! is cancelled* (a reload cancels the probes of the old snapshot), and it
//! holds its upstream weakly. A probe cancelled by a reload used to leave its
//! entry behind, holding the old pool's 16 sockets and reader tasks for the
//! life of the process, and every later query took the guard's lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hickory_proto::rr::{DNSClass, Name, RecordType};

use crate::upstream::UpstreamServer;
use crate::wire::question_bytes;

/// How often every upstream is probed again while a configuration runs.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(60);

/// Names of probes in flight and the upstream each went to.
#[derive(Debug, Default)]
pub struct LoopGuard {
    pending: Mutex<HashMap<Name, Weak<UpstreamServer>>>,
    count: AtomicUsize,
}

impl LoopGuard {
    /// If `name` is one of our probes, the upstream it went through: a loop.
    /// One atomic load when no probe is in flight.
    pub fn looped_through(&self, name: &Name) -> Option<Arc<UpstreamServer>> {
        if self.count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.get(name).and_then(Weak::upgrade)
    }

    /// How many probes are in flight (one per upstream of the running
    /// snapshot at most, once the probes of replaced snapshots are gone).
    pub fn pending(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Probes `server` once: registers a fresh random name, sends it through
    /// that server, and forgets the name when the exchange is over or the
    /// probe is dropped before (cancelled by a reload or a shutdown).
    pub async fn probe(&self, server: &Arc<UpstreamServer>, budget: Duration) {
        let name = probe_name();
        let registered = Registered::new(self, name, server);
        let question = question_bytes(&registered.name, RecordType::HINFO, DNSClass::IN);
        let _ = server.exchange(&question, false, budget).await;
        drop(registered);
    }

    fn set(&self, name: Name, server: Weak<UpstreamServer>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.insert(name, server);
        self.count.store(pending.len(), Ordering::Relaxed);
    }

    fn forget(&self, name: &Name) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.remove(name);
        self.count.store(pending.len(), Ordering::Relaxed);
    }
}

/// One probe's entry in the guard, removed when dropped: at the end of the
/// exchange, and also when the probe's future is dropped half-way.
struct Registered<'a> {
    guard: &'a LoopGuard,
    name: Name,
}

impl<'a> Registered<'a> {
    fn new(guard: &'a LoopGuard, name: Name, server: &Arc<UpstreamServer>) -> Self {
        guard.set(name.clone(), Arc::downgrade(server));
        Self { guard, name }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.guard.forget(&self.name);
    }
}

/// `<random>.<random>.accel-dns-loop-probe.` : unique, and obviously ours in
/// an upstream's logs.
fn probe_name() -> Name {
    let text = format!(
        "{:016x}.{:016x}.accel-dns-loop-probe.",
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    Name::from_ascii(text).unwrap_or_else(|_| Name::root())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::upstream::UpstreamPool;
    use tokio::sync::Semaphore;

    async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for: {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A pool of one upstream that never answers: a socket bound and never
    /// read (kept alive by the caller).
    fn black_hole_pool() -> (std::net::UdpSocket, UpstreamPool) {
        let black_hole = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = black_hole.local_addr().expect("addr");
        let pool = UpstreamPool::new(
            &[addr],
            Duration::from_secs(30),
            Arc::new(Semaphore::new(8)),
            &Metrics::new(),
        );
        (black_hole, pool)
    }

    /// Regression (issue 11): a probe cancelled half-way (a reload cancels
    /// the old snapshot's probes) left its entry behind, and the entry held
    /// the old upstream, its 16 sockets and reader tasks, for ever.
    #[tokio::test]
    async fn a_cancelled_probe_leaves_no_entry_and_keeps_no_upstream_alive() {
        let (_black_hole, pool) = black_hole_pool();
        let server = pool.servers()[0].clone();
        let weak = Arc::downgrade(&server);
        drop(pool);
        let guard = Arc::new(LoopGuard::default());
        let probing = {
            let guard = guard.clone();
            tokio::spawn(async move { guard.probe(&server, Duration::from_secs(30)).await })
        };
        wait_for("the probe is registered", || guard.pending() == 1).await;
        probing.abort();
        let _ = probing.await;
        assert_eq!(guard.pending(), 0, "the cancelled probe's entry is gone");
        assert!(
            guard.pending.lock().expect("lock").is_empty(),
            "nothing left in the map"
        );
        assert!(
            weak.upgrade().is_none(),
            "nothing keeps the upstream of a cancelled probe alive"
        );
    }

    #[tokio::test]
    async fn a_probe_name_arriving_as_a_query_names_its_upstream() {
        let (black_hole, pool) = black_hole_pool();
        let addr = black_hole.local_addr().expect("addr");
        let guard = LoopGuard::default();
        let server = pool.servers()[0].clone();
        let name = probe_name();
        let registered = Registered::new(&guard, name.clone(), &server);
        let found = guard.looped_through(&name).map(|s| s.addr);
        assert_eq!(found, Some(addr));
        assert!(guard.looped_through(&probe_name()).is_none());
        drop(registered);
        assert!(guard.looped_through(&name).is_none());
    }
}
