//! Differential: a client's bytes through the lean query parser
//! (`wire::parsers::parse_lean`) and the full hickory decode
//! (`wire::parsers::parse_full`, the reference). Whenever the lean parser
//! decides, its verdict — dropped, rejected with which rcode and answer, or
//! accepted with which ID, RD, CD, question (name bytes and case, type,
//! class) and EDNS facts — must be the full decode's; and `parse_query`
//! must always give the full decode's verdict.
#![no_main]

use accel_dns::internals::wire::parse_query;
use accel_dns::internals::wire::parsers::{Verdict, parse_full, parse_lean};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|packet: &[u8]| {
    let full = Verdict::of(&parse_full(packet));
    if let Some(lean) = parse_lean(packet) {
        assert_eq!(
            Verdict::of(&lean),
            full,
            "lean and full parsers disagree on {packet:02x?}"
        );
    }
    assert_eq!(Verdict::of(&parse_query(packet)), full);
});
