//! Bytes from a client → `wire::parse_query` and the whole synchronous query
//! path of `Resolver::handle` (guard, ACL, views, records, CNAME records,
//! cache hits with TTL/ID/case patching, truncation, EDNS), over the fixed
//! configuration and pre-filled cache of `accel_dns_fuzz::fixture`. The first
//! input byte picks the client and the transport. Queries that need upstream
//! come back as `Handled::Pending` and are dropped: no network I/O.
#![no_main]

use accel_dns::internals::request::Handled;
use accel_dns_fuzz::{check_reply, fixture, split_query_input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((client, protocol, packet)) = split_query_input(data) else {
        return;
    };
    // The classifier alone, as the listeners' first look sees it.
    let _ = accel_dns::internals::wire::parse_query(packet);
    let _ = accel_dns::internals::wire::packet_question(packet);
    let fixture = fixture();
    let allowed = fixture.snapshot.allows(client.ip());
    let mut reply = Vec::new();
    match fixture.resolver.handle(packet, client, protocol, &mut reply) {
        Handled::Reply => check_reply(packet, &reply, protocol, allowed),
        Handled::Drop => {}
        Handled::Pending(pending) => {
            // Only an allowed client's well-formed query may cost an upstream query.
            assert!(allowed, "a refused client's query went towards upstream");
            drop(pending);
        }
    }
});
