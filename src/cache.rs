//! The answer cache (README "How a query is answered", cache, "caching
//! rules") on quick_cache (see README "Design" for why not moka): entries keyed by lower-cased
//! name, type, class and the DO bit; each held as a [`WireAnswer`] with the
//! time it was stored, so a hit is served by patching TTLs in place. Entries
//! live for their TTL plus the `serve_stale` window; the caller decides when a
//! stale one may answer.
//!
//! The key is a 64-bit keyed hash of the question (no allocation per
//! lookup, 8 bytes per entry); every hit is checked against the question
//! held in the answer itself and the DO bit, so a hash collision can only
//! cost a miss, never a wrong answer.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, Name, RecordType};
use quick_cache::UnitWeighter;
use quick_cache::sync::DefaultLifecycle;

use crate::config::CacheConfig;
use crate::wire::{AnswerFacts, LowerName, TtlRule, WireAnswer};

/// How long an upstream SERVFAIL is remembered at most.
pub(crate) const SERVFAIL_TTL: Duration = Duration::from_secs(5);
/// Entries the store is sized for at start; it grows as it fills (an idle
/// server does not hold a table for `max_entries`).
const INITIAL_ENTRIES: u64 = 1024;
/// TTL of an answer served stale.
pub const STALE_TTL: u32 = 30;

/// What identifies a cached answer: a keyed hash of the lower-cased name,
/// the type, the class and the DO bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(u64);

impl CacheKey {
    /// The key's 64 bits (a keyed hash of the question).
    pub fn value(self) -> u64 {
        self.0
    }
}

// The key is already a keyed SipHash of the question: the store hashes it with
// the identity instead of hashing it a second time.
impl nohash_hasher::IsEnabled for CacheKey {}

/// The store's hasher for [`CacheKey`]: the key's own 64 bits.
type KeyHasher = nohash_hasher::BuildNoHashHasher<CacheKey>;

/// One cached answer.
#[derive(Debug)]
pub struct CacheEntry {
    /// The encoded answer.
    pub answer: WireAnswer,
    dnssec_ok: bool,
    stored_at: Instant,
    fresh_for: Duration,
    ttl_floor: u32,
    ttl_cap: u32,
    keep_for: Duration,
}

impl CacheEntry {
    /// A new entry stored now, fresh for `fresh_for`, with served TTLs
    /// bounded to `[ttl_floor, ttl_cap]` before ageing.
    pub fn new(
        answer: WireAnswer,
        dnssec_ok: bool,
        fresh_for: Duration,
        ttl_floor: u32,
        ttl_cap: u32,
        serve_stale: Duration,
    ) -> Self {
        Self {
            answer,
            dnssec_ok,
            stored_at: Instant::now(),
            fresh_for,
            ttl_floor,
            ttl_cap,
            keep_for: fresh_for.saturating_add(serve_stale),
        }
    }

    /// Seconds since it was stored.
    pub fn age(&self) -> Duration {
        self.stored_at.elapsed()
    }

    /// Whether it is still held: fresh, or inside the `serve_stale` window.
    pub fn is_kept(&self) -> bool {
        self.age() < self.keep_for
    }

    /// Whether it may still answer as a normal hit.
    pub fn is_fresh(&self) -> bool {
        self.age() < self.fresh_for
    }

    /// How its TTLs are written now.
    pub fn ttl_rule(&self) -> TtlRule {
        TtlRule::Aged {
            age: u32::try_from(self.age().as_secs()).unwrap_or(u32::MAX),
            min: self.ttl_floor,
            max: self.ttl_cap,
        }
    }
}

/// Result of a cache lookup.
#[derive(Debug)]
pub enum Lookup {
    /// A fresh entry.
    Fresh(Arc<CacheEntry>),
    /// An expired entry still inside the `serve_stale` window.
    Stale(Arc<CacheEntry>),
    /// Nothing usable.
    Miss,
}

/// The store under [`AnswerCache`]: quick_cache, bounded by entry count,
/// with the key's own 64 bits as its hash. Entries past their
/// `serve_stale` window are misses when read and are the first evicted.
type Store = quick_cache::sync::Cache<CacheKey, Arc<CacheEntry>, UnitWeighter, KeyHasher>;

/// The cache, or nothing when `max_entries = 0`.
#[derive(Clone)]
pub struct AnswerCache {
    inner: Option<Arc<Store>>,
    config: CacheConfig,
    hasher: RandomState,
}

impl std::fmt::Debug for AnswerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerCache")
            .field("config", &self.config)
            .finish()
    }
}

impl AnswerCache {
    /// An empty cache with these bounds.
    pub fn new(config: CacheConfig) -> Self {
        let inner = (config.max_entries > 0).then(|| {
            let entries = usize::try_from(config.max_entries.min(INITIAL_ENTRIES)).unwrap_or(1);
            Arc::new(Store::with(
                entries,
                config.max_entries,
                UnitWeighter,
                KeyHasher::default(),
                DefaultLifecycle::default(),
            ))
        });
        Self {
            inner,
            config,
            hasher: RandomState::new(),
        }
    }

    /// The key of a question. The hash is keyed per process, so nobody can
    /// aim queries at one slot.
    pub fn key(
        &self,
        name: &Name,
        query_type: RecordType,
        class: DNSClass,
        dnssec_ok: bool,
    ) -> CacheKey {
        self.key_of(&LowerName::of(name), query_type, class, dnssec_ok)
    }

    /// [`AnswerCache::key`] of a name already lower-cased (the query path
    /// makes it once for the cache and the unmapped-names report).
    pub fn key_of(
        &self,
        name: &LowerName,
        query_type: RecordType,
        class: DNSClass,
        dnssec_ok: bool,
    ) -> CacheKey {
        let mut hasher = self.hasher.build_hasher();
        hasher.write(name.as_bytes());
        hasher.write_u16(u16::from(query_type));
        hasher.write_u16(u16::from(class));
        hasher.write_u8(u8::from(dnssec_ok));
        CacheKey(hasher.finish())
    }

    /// The bounds in force.
    pub fn config(&self) -> CacheConfig {
        self.config
    }

    /// A cache with new bounds that keeps the entries of this one (as many
    /// as fit): a reload never empties the cache.
    pub fn reconfigured(&self, config: CacheConfig) -> Self {
        if config.max_entries == self.config.max_entries {
            return Self {
                inner: self.inner.clone(),
                config,
                hasher: self.hasher.clone(),
            };
        }
        let mut next = Self::new(config);
        next.hasher = self.hasher.clone();
        if let (Some(old), Some(new)) = (&self.inner, &next.inner) {
            for (key, value) in old
                .iter()
                .filter(|(_, entry)| entry.is_kept())
                .take(usize::try_from(config.max_entries).unwrap_or(usize::MAX))
            {
                new.insert(key, value);
            }
        }
        next
    }

    /// Looks `key` up; `question` (wire `QNAME QTYPE QCLASS`, any case) and
    /// `dnssec_ok` must match the entry, so a hash collision is a miss.
    pub fn get(&self, key: &CacheKey, question: &[u8], dnssec_ok: bool) -> Lookup {
        let Some(cache) = &self.inner else {
            return Lookup::Miss;
        };
        match cache.get(key).filter(|entry| entry.is_kept()) {
            Some(entry)
                if entry.dnssec_ok != dnssec_ok
                    || !entry.answer.question().eq_ignore_ascii_case(question) =>
            {
                Lookup::Miss
            }
            Some(entry) if entry.is_fresh() => Lookup::Fresh(entry),
            Some(entry) => Lookup::Stale(entry),
            None => Lookup::Miss,
        }
    }

    /// The entry that answers when every upstream failed: fresh or still in
    /// the `serve_stale` window, and not itself a SERVFAIL (README "How a
    /// query is answered", upstream).
    pub fn rescue(
        &self,
        key: &CacheKey,
        question: &[u8],
        dnssec_ok: bool,
    ) -> Option<Arc<CacheEntry>> {
        match self.get(key, question, dnssec_ok) {
            Lookup::Fresh(entry) | Lookup::Stale(entry)
                if entry.answer.rcode() != ResponseCode::ServFail =>
            {
                Some(entry)
            }
            _ => None,
        }
    }

    /// Stores an upstream answer under the rules of README "How a query is answered", caching rules. Returns the
    /// stored entry, or the answer back when it is not to be cached.
    pub fn store(
        &self,
        key: CacheKey,
        dnssec_ok: bool,
        answer: WireAnswer,
    ) -> Result<Arc<CacheEntry>, WireAnswer> {
        let Some(cache) = self.inner.as_ref() else {
            return Err(answer);
        };
        let Some(policy) = self.policy(&answer.facts()) else {
            return Err(answer);
        };
        // A remembered failure must never push out an answer kept for serve-stale.
        if answer.rcode() == ResponseCode::ServFail
            && cache.peek(&key).is_some_and(|entry| entry.is_kept())
        {
            return Err(answer);
        }
        let entry = Arc::new(CacheEntry::new(
            answer,
            dnssec_ok,
            policy.fresh_for,
            policy.floor,
            policy.cap,
            self.config.serve_stale,
        ));
        cache.insert(key, entry.clone());
        Ok(entry)
    }

    /// Entries held and still inside their `serve_stale` window.
    pub fn entry_count(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| {
            c.iter().filter(|(_, entry)| entry.is_kept()).count() as u64
        })
    }

    fn policy(&self, facts: &AnswerFacts) -> Option<Policy> {
        if facts.truncated {
            return None;
        }
        let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        match facts.rcode {
            ResponseCode::ServFail => Some(Policy {
                fresh_for: SERVFAIL_TTL,
                floor: 0,
                cap: secs(SERVFAIL_TTL),
            }),
            ResponseCode::NoError if facts.answers > 0 => {
                let (floor, cap) = (secs(self.config.min_ttl), secs(self.config.max_ttl));
                let ttl = facts.smallest_ttl?.clamp(floor.min(cap), cap);
                (ttl > 0).then(|| Policy {
                    fresh_for: Duration::from_secs(u64::from(ttl)),
                    floor,
                    cap,
                })
            }
            ResponseCode::NoError | ResponseCode::NXDomain => {
                let (record_ttl, minimum) = facts.soa?;
                let ttl = record_ttl
                    .min(minimum)
                    .min(secs(self.config.negative_max_ttl));
                (ttl > 0).then(|| Policy {
                    fresh_for: Duration::from_secs(u64::from(ttl)),
                    floor: 0,
                    cap: ttl,
                })
            }
            _ => None,
        }
    }
}

struct Policy {
    fresh_for: Duration,
    floor: u32,
    cap: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::RData;
    use hickory_proto::rr::rdata::SOA;
    use hickory_proto::rr::{Name, Record};

    fn config(max_entries: u64) -> CacheConfig {
        CacheConfig {
            max_entries,
            min_ttl: Duration::ZERO,
            max_ttl: Duration::from_secs(3600),
            negative_max_ttl: Duration::from_secs(60),
            serve_stale: Duration::ZERO,
        }
    }

    fn message(rcode: ResponseCode, with_soa: bool) -> Message {
        let name = Name::from_ascii("x.example.").expect("name");
        let mut m = Message::new(0, MessageType::Response, OpCode::Query);
        m.metadata.response_code = rcode;
        m.add_query(Query::query(name.clone(), RecordType::A));
        if with_soa {
            let soa = SOA::new(name.clone(), name.clone(), 1, 1, 1, 1, 300);
            m.add_authority(Record::from_rdata(name, 900, RData::SOA(soa)));
        }
        m
    }

    const QUESTION: &[u8] = b"\x01x\x07example\x00\x00\x01\x00\x01";

    fn key(cache: &AnswerCache, n: u8) -> CacheKey {
        let name = Name::from_ascii(format!("n{n}.example.")).expect("name");
        cache.key(&name, RecordType::A, DNSClass::IN, false)
    }

    #[test]
    fn negative_answers_need_a_soa_and_are_capped() {
        let cache = AnswerCache::new(config(10));
        let without = message(ResponseCode::NXDomain, false);
        let wire = WireAnswer::from_message(&without).expect("wire");
        assert!(cache.store(key(&cache, 1), false, wire).is_err());
        let with = message(ResponseCode::NXDomain, true);
        let wire = WireAnswer::from_message(&with).expect("wire");
        let entry = cache.store(key(&cache, 1), false, wire).expect("stored");
        assert_eq!(entry.fresh_for, Duration::from_secs(60));
        assert!(matches!(
            cache.get(&key(&cache, 1), QUESTION, false),
            Lookup::Fresh(_)
        ));
    }

    #[test]
    fn the_cache_never_exceeds_max_entries() {
        let cache = AnswerCache::new(config(5));
        let m = message(ResponseCode::NXDomain, true);
        for n in 0..50 {
            let wire = WireAnswer::from_message(&m).expect("wire");
            let _ = cache.store(key(&cache, n), false, wire);
        }
        assert!(cache.entry_count() <= 5, "{}", cache.entry_count());
    }

    #[test]
    fn disabled_cache_holds_nothing() {
        let cache = AnswerCache::new(config(0));
        let m = message(ResponseCode::NXDomain, true);
        let wire = WireAnswer::from_message(&m).expect("wire");
        assert!(cache.store(key(&cache, 1), false, wire).is_err());
        assert!(matches!(
            cache.get(&key(&cache, 1), QUESTION, false),
            Lookup::Miss
        ));
    }
}
