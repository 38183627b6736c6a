//! CNAME records (README "How a query is answered", records): the answer
//! starts with the CNAME, and its target is resolved for the asked type —
//! through the records while they match, then upstream through the cache,
//! with the serve-stale rescue of a forwarded name — in the same answer.

use std::sync::Arc;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};

use crate::cache::{Lookup, STALE_TTL};
use crate::inflight::{InFlight, Question};
use crate::records::{Answer, CompiledRecord};
use crate::reply::add_addresses;
use crate::request::{Failure, Request};
use crate::snapshot::Snapshot;
use crate::upstream::UpstreamError;
use crate::wire::{self, TtlRule};

/// Longest chain of CNAME records followed inside the records.
pub(crate) const MAX_CNAME_CHAIN: usize = 8;

/// The whole answer to `request` whose name has the CNAME record `first`.
pub(crate) async fn chase(
    inflight: &InFlight,
    request: &Request,
    first: &Arc<CompiledRecord>,
) -> Result<Message, Failure> {
    let snapshot = &request.snapshot;
    let query = &request.query;
    let mut response = query.response(ResponseCode::NoError);
    let query_type = query.query_type();
    let mut owner = query.name().clone();
    let mut record = first.clone();
    let mut seen: Vec<Name> = vec![owner.clone()];
    loop {
        let target = match &record.answer {
            Answer::Cname(target) => target.clone(),
            Answer::Addresses { .. } => {
                add_addresses(&mut response, &owner, query_type, &record);
                return Ok(response);
            }
        };
        if seen.len() > MAX_CNAME_CHAIN || seen.contains(&target) {
            tracing::warn!(name = %query.name(), "CNAME loop or chain longer than {MAX_CNAME_CHAIN} in the records");
            return Err(Failure::CnameLoop);
        }
        response.add_answer(wire::cname_record(&owner, record.ttl, &target));
        seen.push(target.clone());
        owner = target;
        match snapshot
            .records
            .lookup(&owner, request.client.ip().to_canonical())
        {
            Some(next) => {
                if !Arc::ptr_eq(next, first) {
                    next.hits.inc();
                }
                record = next.clone();
            }
            None => break,
        }
    }
    let message = resolve_target(inflight, snapshot, &owner, query_type, query.dnssec_ok()).await?;
    if message.metadata.response_code == ResponseCode::ServFail {
        return Err(Failure::Upstream(UpstreamError::AllFailed));
    }
    response.metadata.response_code = message.metadata.response_code;
    response.add_answers(message.answers);
    response.add_authorities(message.authorities);
    Ok(response)
}

/// The answer for `name` and `query_type` from outside the records: a fresh
/// cache entry, else upstream (shared with identical misses), else, when
/// every upstream failed, what serve-stale keeps.
pub(crate) async fn resolve_target(
    inflight: &InFlight,
    snapshot: &Arc<Snapshot>,
    name: &Name,
    query_type: RecordType,
    dnssec_ok: bool,
) -> Result<Message, Failure> {
    let key = snapshot
        .cache
        .key(name, query_type, DNSClass::IN, dnssec_ok);
    let asked = wire::question_bytes(name, query_type, DNSClass::IN);
    let decoded = |m: Option<Message>| m.ok_or(Failure::Unencodable);
    if let Lookup::Fresh(entry) = snapshot.cache.get(&key, &asked, dnssec_ok) {
        return decoded(entry.answer.to_message(entry.ttl_rule()));
    }
    let Some(bytes) = wire::QuestionBytes::new(&asked) else {
        // A name is at most 255 bytes: never longer than a question.
        return Err(Failure::Unencodable);
    };
    let question = Question {
        key,
        bytes: &bytes,
        name,
        query_type,
        class: DNSClass::IN,
        dnssec_ok,
    };
    let failure = match inflight.fetch(snapshot, question).await {
        Ok(fetched) if fetched.wire().rcode() != ResponseCode::ServFail => {
            return decoded(fetched.wire().to_message(TtlRule::Aged {
                age: 0,
                min: 0,
                max: u32::MAX,
            }));
        }
        Ok(_) => UpstreamError::AllFailed,
        Err(error) => error,
    };
    // Every upstream failed: the target gets the same serve_stale rescue as
    // a forwarded name, or a CNAME record pointing at an accelerator would
    // fail while its target is still in the cache.
    match snapshot.cache.rescue(&key, &asked, dnssec_ok) {
        Some(entry) => decoded(entry.answer.to_message(TtlRule::Fixed(STALE_TTL))),
        None => Err(Failure::Upstream(failure)),
    }
}
