//! Forwarding-loop detection (SPEC §4.5). For each upstream, a query for a
//! random, never-reused name is sent through that upstream alone; if the
//! same name then arrives here as a client query, that upstream forwards
//! our queries back to us (a node resolver such as systemd-resolved pointed
//! at this server does exactly that). It is then taken out of use, the loop
//! is logged, and the looped query is refused so the loop ends at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::rr::{DNSClass, Name, RecordType};

use crate::upstream::UpstreamServer;
use crate::wire::question_bytes;

/// How often every upstream is probed again while a configuration runs.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(60);

/// Names of probes in flight and the upstream each went to.
#[derive(Debug, Default)]
pub struct LoopGuard {
    pending: Mutex<HashMap<Name, Arc<UpstreamServer>>>,
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
        pending.get(name).cloned()
    }

    /// Probes `server` once: registers a fresh random name, sends it through
    /// that server, and forgets the name when the exchange is over.
    pub async fn probe(&self, server: &Arc<UpstreamServer>, budget: Duration) {
        let name = probe_name();
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.insert(name.clone(), server.clone());
            self.count.store(pending.len(), Ordering::Relaxed);
        }
        let question = question_bytes(&name, RecordType::HINFO, DNSClass::IN);
        let _ = server.exchange(&question, false, budget).await;
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.remove(&name);
        self.count.store(pending.len(), Ordering::Relaxed);
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
