//! Differential: an upstream's datagram through the record walker's
//! verdict (`wire::rdata_verdict`, what `upstream::accept_answer` trusts
//! to skip the decode) and hickory's full decode (`Message::from_vec`, the
//! reference). Oracles: `Valid` ⇒ the decode succeeds, `Invalid` ⇒ it
//! fails (`Unsure` is left to the decode and says nothing); no panic.
#![no_main]

use accel_dns::internals::wire::{Check, rdata_verdict};
use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let verdict = rdata_verdict(data);
    match verdict {
        Check::Valid => {
            let decoded = Message::from_vec(data);
            assert!(
                decoded.is_ok(),
                "Valid, but hickory refuses it ({:?}): {data:02x?}",
                decoded.err()
            );
        }
        Check::Invalid => assert!(
            Message::from_vec(data).is_err(),
            "Invalid, but hickory decodes it: {data:02x?}"
        ),
        Check::Unsure => {}
    }
});
