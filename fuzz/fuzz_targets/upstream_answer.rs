//! Bytes from an upstream → the path an upstream answer takes, on bytes as
//! the server does it: matched to the query's ID and question
//! (`wire::is_answer_to`, the anti-spoofing check), held as a `WireAnswer`
//! (`from_upstream`: OPT cut off the received bytes, or its decode and
//! `from_message` fallback), judged by the cache rules (`facts`, `store`),
//! read back from the cache, decoded as CNAME chasing does, and rendered for
//! a client's query (ID, question case, TTLs, OPT, truncation) as a
//! forwarded answer, a cache hit and a stale answer.
//!
//! Oracles: no panic; a UDP rendering fits the client's limit; the cache
//! never holds a truncated answer nor one for another question; and when
//! the upstream bytes are a valid DNS message, every rendering of them is too.
#![no_main]

use std::time::Duration;

use accel_dns::internals::cache::{AnswerCache, Lookup, STALE_TTL};
use accel_dns::config::CacheConfig;
use accel_dns::internals::wire::{self, ClientQuery, Inbound, TtlRule, WireAnswer};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use libfuzzer_sys::fuzz_target;

/// A cache of its own for each input, so that a run replays exactly and an
/// entry seen is always this input's.
fn cache() -> AnswerCache {
    AnswerCache::new(CacheConfig {
        max_entries: 16,
        min_ttl: Duration::from_secs(5),
        max_ttl: Duration::from_secs(86400),
        negative_max_ttl: Duration::from_secs(300),
        serve_stale: Duration::from_secs(3600),
    })
}

/// The client query this answer would be relayed to: same question, in
/// upper case, with or without EDNS (and DO).
fn client_query(question: &Query, edns: Option<(u16, bool)>) -> Option<(ClientQuery, Vec<u8>)> {
    let mut message = Message::new(0xBEEF, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    let mut asked = question.clone();
    let upper = question.name().to_ascii().to_ascii_uppercase();
    if let Ok(upper) = hickory_proto::rr::Name::from_ascii(upper) {
        asked.set_name(upper);
    }
    message.add_query(asked);
    if let Some((payload, dnssec_ok)) = edns {
        let mut opt = Edns::new();
        opt.set_max_payload(payload);
        opt.set_dnssec_ok(dnssec_ok);
        message.set_edns(opt);
    }
    let packet = message.to_vec().ok()?;
    match wire::parse_query(&packet) {
        Inbound::Query(query) => Some((query, packet)),
        _ => None,
    }
}

fn render_and_check(
    held: &WireAnswer,
    query: &ClientQuery,
    packet: &[u8],
    rule: TtlRule,
    must_decode: bool,
) {
    let mut out = Vec::new();
    for limit in [Some(query.udp_limit()), None] {
        held.render(query, wire::packet_question(packet), rule, limit, &mut out);
        assert!(out.len() >= 12);
        assert_eq!(out[0..2], query.id.to_be_bytes(), "the client's ID");
        if let Some(limit) = limit {
            assert!(
                out.len() <= limit,
                "{} bytes over a UDP limit of {limit}",
                out.len()
            );
        }
        if must_decode {
            let decoded = Message::from_vec(&out);
            assert!(
                decoded.is_ok(),
                "a valid upstream answer rendered into one that does not decode: {:?}\n{out:02x?}",
                decoded.err()
            );
            if let Ok(decoded) = decoded {
                assert_eq!(decoded.edns.is_some(), query.edns.is_some(), "OPT echoed");
                assert_eq!(decoded.queries.len(), 1);
            }
        }
    }
}

/// Whether `data` holds a byte pair that reads as a compression pointer to
/// an offset inside the header (an over-approximation: any such pair).
fn may_point_into_header(data: &[u8]) -> bool {
    data.windows(2)
        .skip(12)
        .any(|pair| pair[0] == 0xC0 && pair[1] < 12)
}

fuzz_target!(|data: &[u8]| {
    // What the server asked: the question the bytes carry (a spoofer or a
    // broken upstream controls everything else).
    let Some(question) = wire::packet_question(data) else {
        return;
    };
    let id = u16::from_be_bytes([data[0], data[1]]);
    let Ok(question_message) = Message::from_vec(&{
        let mut query = wire::encode_upstream_query(id, question, false);
        query[2] = 0x01;
        query
    }) else {
        return;
    };
    let Some(asked) = question_message.queries.first().cloned() else {
        return;
    };
    let asked_bytes = wire::question_bytes(asked.name(), asked.query_type(), asked.query_class());
    if !wire::is_answer_to(data, id, &asked_bytes) {
        return;
    }
    // Known limitation (docs/robustness.md): held bytes are relayed as
    // received, with the client's ID and flags patched in, so a compression
    // pointer into the header (offsets 0-11, which no real server emits)
    // decodes differently, or not at all, once relayed. Such inputs are
    // spared the must-decode oracle; every other check still applies.
    let valid = Message::from_vec(data).is_ok() && !may_point_into_header(data);
    let Ok(held) = WireAnswer::from_upstream(data.to_vec()) else {
        return;
    };
    assert!(held.len() >= 12);
    assert!(
        held.question().eq_ignore_ascii_case(&asked_bytes),
        "held under another question"
    );
    let _ = held.facts();
    let _ = held.to_message(TtlRule::Fixed(STALE_TTL));
    let faithful = TtlRule::Aged {
        age: 0,
        min: 0,
        max: u32::MAX,
    };
    let cache = cache();
    for edns in [
        None,
        Some((512, false)),
        Some((1232, true)),
        Some((4096, false)),
    ] {
        let Some((query, packet)) = client_query(&asked, edns) else {
            continue;
        };
        render_and_check(&held, &query, &packet, faithful, valid);
        render_and_check(&held, &query, &packet, TtlRule::Fixed(STALE_TTL), valid);

        // Through the cache, as a later hit or a stale rescue sees it.
        let dnssec_ok = query.dnssec_ok();
        let key = cache.key(
            asked.name(),
            asked.query_type(),
            asked.query_class(),
            dnssec_ok,
        );
        // (The stored entry is looked up again rather than taken from
        // `store`'s return value, whose shape is not this target's business.)
        let _ = cache.store(key, dnssec_ok, held.clone());
        if let Lookup::Fresh(entry) | Lookup::Stale(entry) =
            cache.get(&key, &asked_bytes, dnssec_ok)
        {
            assert!(
                entry.answer.question().eq_ignore_ascii_case(&asked_bytes),
                "the cache returned an answer to another question"
            );
            assert!(!entry.answer.truncated(), "a truncated answer was cached");
            render_and_check(&entry.answer, &query, &packet, entry.ttl_rule(), valid);
            let _ = entry.answer.to_message(entry.ttl_rule());
        }
    }
});
