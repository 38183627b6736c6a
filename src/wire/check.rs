//! Whether hickory-proto would decode a message, told without decoding it:
//! [`rdata_verdict`] walks the message with the one record walker
//! ([`Records`]) and applies, to the header, the question and the records
//! of the usual types, the rules that hickory-proto 0.26's
//! `Message::from_vec` applies — so that an upstream answer can be judged
//! malformed or not without building a `Message` (about 1 µs and 3
//! allocations per cache miss; see `upstream::accept_answer` and
//! `benches/upstream_answer.rs`).
//!
//! The reference is hickory's decode, not RFC 1035: the verdict is
//! [`Check::Valid`] only where `Message::from_vec` succeeds and
//! [`Check::Invalid`] only where it fails; anything this module does not
//! model exactly is [`Check::Unsure`], left to the decode. The fuzz target
//! `upstream_check` holds it to that. What hickory 0.26.3 does, as read in
//! its source (`op/message.rs`, `rr/record.rs`, `rr/record_data.rs`,
//! `rr/domain/name.rs`, `rr/rdata/*.rs`):
//!
//! - Header: 12 bytes; no flag, opcode or rcode is refused. Every question
//!   and record is read in order; bytes after the last record are ignored.
//! - Names (owners, the question, names inside RDATA): labels of up to 63
//!   bytes, the codes 0x40 and 0x80 refused, at most 255 bytes written out
//!   (root included); a compression pointer must point before the start of
//!   the piece of name it sits in, and every length byte of the piece it
//!   points to must lie before the start of the piece pointing to it —
//!   hence no loops. Class and type are any 16-bit values.
//! - Records: RDLENGTH within the message; RDLENGTH 0 is refused outside
//!   an UPDATE, except for OPT; OPT, SIG and TSIG are refused outside the
//!   additional section; an OPT needs the root as owner, and a second OPT
//!   is refused. RDATA is read from the message as a whole (a name may run
//!   past RDLENGTH) and what was read must be exactly RDLENGTH bytes: A 4,
//!   AAAA 16, CNAME/NS/PTR one name, MX 2 bytes and a name, SRV 6 bytes and
//!   a name, SOA two names and 20 bytes, TXT character-strings. DNAME is
//!   kept as opaque bytes by hickory 0.26 (any non-empty RDATA); it is said
//!   valid when it holds exactly one name, else left to the decode.
//! - OPT options: hickory's reader takes code and length pairs while bytes
//!   of RDLENGTH are left; an option length over RDLENGTH is refused, a
//!   code or length read across the end of RDATA makes the length wrong,
//!   an option cut by the end of RDATA is dropped silently (the record
//!   stands). The options it decodes by content (NSID, DAU, DHU, N3U,
//!   client subnet) are left to the decode.
//!
//! Left to the decode: an UPDATE, a QDCOUNT other than 1, and every other
//! record type (DNSSEC types, SVCB/HTTPS, CAA, …, which hickory parses by
//! content or, depending on its features, as opaque bytes).

use std::ops::Range;

use super::walk::{self, Records, Section, Walked};

/// What hickory-proto's `Message::from_vec` would make of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// It decodes.
    Valid,
    /// It fails to decode.
    Invalid,
    /// Not known without the decode.
    Unsure,
}

/// Record types, by their codes.
const A: u16 = 1;
const NS: u16 = 2;
const CNAME: u16 = 5;
const SOA: u16 = 6;
const PTR: u16 = 12;
const MX: u16 = 15;
const TXT: u16 = 16;
const SIG: u16 = 24;
const AAAA: u16 = 28;
const SRV: u16 = 33;
const DNAME: u16 = 39;
const OPT: u16 = 41;
const TSIG: u16 = 250;
/// ZERO, IXFR, AXFR, ANY: refused by hickory as record data.
const NOT_RECORD_DATA: [u16; 4] = [0, 251, 252, 255];

/// The opcode UPDATE, whose records may have RDLENGTH 0.
const OPCODE_UPDATE: u8 = 5;

/// Option codes whose data hickory decodes by content (NSID, DAU, DHU,
/// N3U, client subnet), as the lean query parser leaves them too.
const OPTIONS_READ_BY_CONTENT: [u16; 5] = [3, 5, 6, 7, 8];

/// Longest name hickory reads, written out with its root label.
const MAX_NAME: usize = 255;

/// The verdict on `bytes` as a whole: whether hickory-proto's
/// `Message::from_vec` decodes it ([`Check::Valid`], [`Check::Invalid`]),
/// or [`Check::Unsure`] when only the decode can tell (see the module doc).
/// Never panics, allocates nothing.
pub fn rdata_verdict(bytes: &[u8]) -> Check {
    let (Some(&flags), Some([questions, ..])) = (bytes.get(2), walk::counts(bytes)) else {
        // No complete header.
        return Check::Invalid;
    };
    if (flags >> 3) & 0x0F == OPCODE_UPDATE || questions != 1 {
        return Check::Unsure;
    }
    let Some(qname) = name_at(bytes, 12) else {
        return Check::Invalid;
    };
    if qname.end + 4 > bytes.len() {
        return Check::Invalid;
    }
    let Some(records) = Records::new(bytes) else {
        return Check::Unsure;
    };
    if records.question_end() != qname.end + 4 {
        // The walker and the name reader disagree on the question: cannot
        // happen (both stop at the first pointer or the root); be safe.
        return Check::Unsure;
    }
    let mut verdict = Check::Valid;
    let mut opts = 0usize;
    for record in records {
        // A broken framing fails hickory's decode at the same record: the
        // records before it, if they decode, end where the walker says.
        let Ok(record) = record else {
            return Check::Invalid;
        };
        match record_verdict(bytes, &record, &mut opts) {
            Check::Valid => {}
            // Any record hickory refuses fails the whole message.
            Check::Invalid => return Check::Invalid,
            Check::Unsure => verdict = Check::Unsure,
        }
    }
    verdict
}

/// The verdict on one record (`opts`: OPT records seen so far), outside
/// an UPDATE.
fn record_verdict(bytes: &[u8], record: &Walked, opts: &mut usize) -> Check {
    let Some(owner) = name_at(bytes, record.offset) else {
        return Check::Invalid;
    };
    if owner.end != record.name.end {
        return Check::Unsure;
    }
    let rdata = &record.rdata;
    if record.rtype == OPT {
        if !owner.root || record.section != Section::Additional {
            return Check::Invalid;
        }
        *opts += 1;
        if *opts > 1 {
            return Check::Invalid;
        }
        return if rdata.is_empty() {
            Check::Valid
        } else {
            opt_options(bytes, rdata)
        };
    }
    if rdata.is_empty() {
        // hickory's "update" record (RFC 2136), refused outside an UPDATE.
        return Check::Invalid;
    }
    if record.section != Section::Additional && matches!(record.rtype, SIG | TSIG) {
        return Check::Invalid;
    }
    match record.rtype {
        A => length_is(rdata, 4),
        AAAA => length_is(rdata, 16),
        NS | CNAME | PTR => fills(bytes, rdata, &[Part::Name]),
        MX => fills(bytes, rdata, &[Part::Fixed(2), Part::Name]),
        SRV => fills(bytes, rdata, &[Part::Fixed(6), Part::Name]),
        SOA => fills(bytes, rdata, &[Part::Name, Part::Name, Part::Fixed(20)]),
        TXT => character_strings(bytes, rdata),
        DNAME => match fills(bytes, rdata, &[Part::Name]) {
            Check::Valid => Check::Valid,
            _ => Check::Unsure,
        },
        code if NOT_RECORD_DATA.contains(&code) => Check::Invalid,
        _ => Check::Unsure,
    }
}

/// Fixed-size RDATA: hickory reads `len` bytes, then compares with RDLENGTH.
fn length_is(rdata: &Range<usize>, len: usize) -> Check {
    ends_at(rdata.len() == len)
}

/// `Valid` if the RDATA was read to exactly its RDLENGTH, `Invalid` if not.
fn ends_at(exactly: bool) -> Check {
    if exactly {
        Check::Valid
    } else {
        Check::Invalid
    }
}

/// A piece of RDATA, read as hickory reads it.
#[derive(Debug, Clone, Copy)]
enum Part {
    /// That many bytes of integers.
    Fixed(usize),
    /// A domain name (compression allowed).
    Name,
}

/// RDATA made of `parts`, read from its start over the whole message (as
/// hickory reads it, past RDLENGTH if a name runs on); valid if every part
/// reads and together they are exactly RDLENGTH bytes.
fn fills(bytes: &[u8], rdata: &Range<usize>, parts: &[Part]) -> Check {
    let mut at = rdata.start;
    for part in parts {
        at = match part {
            Part::Fixed(len) => at + len,
            Part::Name => match name_at(bytes, at) {
                Some(name) => name.end,
                None => return Check::Invalid,
            },
        };
        if at > bytes.len() {
            return Check::Invalid;
        }
    }
    ends_at(at == rdata.end)
}

/// TXT: character-strings read while bytes of RDLENGTH are left; the last
/// one must end exactly at RDLENGTH.
fn character_strings(bytes: &[u8], rdata: &Range<usize>) -> Check {
    let mut at = rdata.start;
    while at < rdata.end {
        let Some(&len) = bytes.get(at) else {
            return Check::Invalid;
        };
        at += 1 + usize::from(len);
        if at > bytes.len() {
            return Check::Invalid;
        }
    }
    ends_at(at == rdata.end)
}

/// Where hickory's OPT reader stands between options.
#[derive(Debug, Clone, Copy)]
enum OptState {
    /// Before an option code.
    Code,
    /// After the code, before the length.
    Length(u16),
    /// Inside an option's data: its code and the bytes still to come.
    Data(u16, usize),
}

/// OPT RDATA (not empty), as hickory's reader takes it (see the module doc).
fn opt_options(bytes: &[u8], rdata: &Range<usize>) -> Check {
    let mut verdict = Check::Valid;
    let mut taken = |code: u16| {
        if OPTIONS_READ_BY_CONTENT.contains(&code) {
            verdict = Check::Unsure;
        }
    };
    let mut state = OptState::Code;
    let mut at = rdata.start;
    while at < rdata.end {
        state = match state {
            OptState::Code => {
                let Some(code) = walk::read_u16(bytes, at) else {
                    return Check::Invalid;
                };
                at += 2;
                OptState::Length(code)
            }
            OptState::Length(code) => {
                let Some(len) = walk::read_u16(bytes, at) else {
                    return Check::Invalid;
                };
                at += 2;
                let len = usize::from(len);
                if len > rdata.len() {
                    return Check::Invalid;
                }
                if len == 0 {
                    taken(code);
                    OptState::Code
                } else {
                    OptState::Data(code, len)
                }
            }
            OptState::Data(code, left) => {
                // Byte by byte in hickory, never past RDLENGTH: an option
                // cut by the end of RDATA is dropped.
                let step = left.min(rdata.end - at);
                at += step;
                if step == left {
                    taken(code);
                    OptState::Code
                } else {
                    OptState::Data(code, left - step)
                }
            }
        };
    }
    if at == rdata.end {
        verdict
    } else {
        // A code or length read across the end of RDATA.
        Check::Invalid
    }
}

/// A name as hickory's reader takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NameRead {
    /// Where the reader stands after it: past the root label, or past the
    /// first compression pointer.
    end: usize,
    /// Whether it is the root (no label).
    root: bool,
}

/// Reads the name at `at` by hickory-proto 0.26's rules (`Name::read`):
/// `None` where hickory refuses it — a label or pointer past the end of
/// the message, a label code 0x40 or 0x80, a pointer to or after the start
/// of the piece of name it sits in, a piece pointed to that reaches the
/// start of the piece pointing to it, more than 255 bytes written out.
fn name_at(bytes: &[u8], at: usize) -> Option<NameRead> {
    let mut at = at;
    // Where the piece being read starts (hickory's `name_start`), and the
    // bound its length bytes must stay below once a pointer was followed.
    let mut piece = at;
    let mut bound: Option<usize> = None;
    let mut end = None;
    let mut written = 1; // the root label
    let mut labels = 0usize;
    loop {
        if bound.is_some_and(|bound| at >= bound) {
            return None;
        }
        let len = *bytes.get(at)?;
        match len & 0xC0 {
            0x00 if len == 0 => {
                return Some(NameRead {
                    end: end.unwrap_or(at + 1),
                    root: labels == 0,
                });
            }
            0x00 => {
                let len = usize::from(len);
                at += 1 + len;
                written += 1 + len;
                if at > bytes.len() || written > MAX_NAME {
                    return None;
                }
                labels += 1;
            }
            0xC0 => {
                let low = *bytes.get(at + 1)?;
                let target = usize::from(len & 0x3F) << 8 | usize::from(low);
                if target >= piece {
                    return None;
                }
                end.get_or_insert(at + 2);
                bound = Some(piece);
                piece = target;
                at = target;
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
    use hickory_proto::rr::rdata::{A as RA, AAAA as RAAAA, CNAME as RCNAME, MX as RMX};
    use hickory_proto::rr::rdata::{NS as RNS, PTR as RPTR, SOA as RSOA, SRV as RSRV, TXT as RTXT};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::*;

    /// The verdict, after checking it against hickory's decode.
    fn verdict(bytes: &[u8]) -> Check {
        let check = rdata_verdict(bytes);
        let decoded = Message::from_vec(bytes);
        match check {
            Check::Valid => assert!(decoded.is_ok(), "Valid, but {decoded:?}: {bytes:02x?}"),
            Check::Invalid => assert!(decoded.is_err(), "Invalid, but decodes: {bytes:02x?}"),
            Check::Unsure => {}
        }
        check
    }

    /// A response header (ID 0x4242, RD RA) with one question `a.` A IN
    /// (offsets 12..19) and the given ANCOUNT, NSCOUNT, ARCOUNT.
    fn header(answers: u16, authorities: u16, additionals: u16) -> Vec<u8> {
        let mut out = vec![0x42, 0x42, 0x81, 0x80, 0, 1];
        for count in [answers, authorities, additionals] {
            out.extend_from_slice(&count.to_be_bytes());
        }
        out.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 1]);
        out
    }

    /// A record owned by the question's name (a pointer to offset 12).
    fn record(rtype: u16, rdata: &[u8]) -> Vec<u8> {
        let mut out = vec![0xC0, 12];
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 1, 44]);
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(rdata);
        out
    }

    /// One answer record of `rtype` with `rdata`.
    fn answer(rtype: u16, rdata: &[u8]) -> Vec<u8> {
        let mut out = header(1, 0, 0);
        out.extend_from_slice(&record(rtype, rdata));
        out
    }

    /// An OPT record (root owner, payload 1232) with `rdata`.
    fn opt(rdata: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 41, 4, 0xd0, 0, 0, 0, 0];
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(rdata);
        out
    }

    /// `b.` written out, then a pointer to the question (`b.a.`).
    const B_A: [u8; 4] = [1, b'b', 0xC0, 12];

    #[test]
    fn a_and_aaaa_need_their_exact_length() {
        assert_eq!(verdict(&answer(A, &[192, 0, 2, 1])), Check::Valid);
        assert_eq!(verdict(&answer(A, &[192, 0, 2])), Check::Invalid);
        assert_eq!(verdict(&answer(A, &[192, 0, 2, 1, 5])), Check::Invalid);
        assert_eq!(verdict(&answer(A, &[])), Check::Invalid);
        assert_eq!(verdict(&answer(AAAA, &[0x20; 16])), Check::Valid);
        assert_eq!(verdict(&answer(AAAA, &[0x20; 4])), Check::Invalid);
        // RDLENGTH 3 with a fourth byte after it (the next record's first):
        // hickory reads it, then finds the length wrong.
        let mut short = header(2, 0, 0);
        short.extend_from_slice(&record(A, &[192, 0, 2]));
        short.extend_from_slice(&record(A, &[192, 0, 2, 1]));
        assert_eq!(verdict(&short), Check::Invalid);
    }

    #[test]
    fn names_in_rdata_must_fill_it_exactly() {
        for rtype in [NS, CNAME, PTR] {
            assert_eq!(verdict(&answer(rtype, &B_A)), Check::Valid);
            assert_eq!(verdict(&answer(rtype, &[1, b'b', 0])), Check::Valid);
            // The name overruns RDLENGTH (it ends in the next bytes).
            let mut overrun = header(1, 0, 0);
            let mut rec = record(rtype, &B_A);
            rec[11] = 3;
            overrun.extend_from_slice(&rec);
            assert_eq!(verdict(&overrun), Check::Invalid);
            // The name ends before RDLENGTH does.
            assert_eq!(verdict(&answer(rtype, &[1, b'b', 0, 7])), Check::Invalid);
            // The name runs off the message.
            assert_eq!(verdict(&answer(rtype, &[5, b'b'])), Check::Invalid);
        }
        assert_eq!(verdict(&answer(MX, &[0, 10, 0xC0, 12])), Check::Valid);
        assert_eq!(verdict(&answer(MX, &[0, 10])), Check::Invalid);
        assert_eq!(verdict(&answer(MX, &[0xC0, 12])), Check::Invalid);
        assert_eq!(
            verdict(&answer(SRV, &[0, 1, 0, 2, 0, 53, 0xC0, 12])),
            Check::Valid
        );
        assert_eq!(
            verdict(&answer(SRV, &[0, 1, 0, 2, 0xC0, 12])),
            Check::Invalid
        );
        let mut soa = B_A.to_vec();
        soa.extend_from_slice(&[0xC0, 12]);
        soa.extend_from_slice(&[0; 20]);
        assert_eq!(verdict(&answer(SOA, &soa)), Check::Valid);
        assert_eq!(verdict(&answer(SOA, &soa[..soa.len() - 1])), Check::Invalid);
        soa.push(0);
        assert_eq!(verdict(&answer(SOA, &soa)), Check::Invalid);
        // DNAME: opaque bytes to hickory 0.26; valid when it is a name.
        assert_eq!(verdict(&answer(DNAME, &B_A)), Check::Valid);
        assert_eq!(verdict(&answer(DNAME, &[5, b'b'])), Check::Unsure);
        assert_eq!(verdict(&answer(DNAME, &[])), Check::Invalid);
    }

    #[test]
    fn compression_pointers_point_backwards_without_loops() {
        // An owner pointing forward, at the record's own RDATA.
        let mut forward = header(1, 0, 0);
        let at = forward.len() as u8;
        let mut rec = record(A, &[192, 0, 2, 1]);
        rec[1] = at + 12;
        forward.extend_from_slice(&rec);
        assert_eq!(verdict(&forward), Check::Invalid);
        // An owner pointing at itself.
        let mut itself = header(1, 0, 0);
        let mut rec = record(A, &[6, 6, 6, 6]);
        rec[1] = at;
        itself.extend_from_slice(&rec);
        assert_eq!(verdict(&itself), Check::Invalid);
        // Two pointers that point at each other: an owner at 19 pointing at
        // the CNAME target at 31, which points back at 19.
        let mut pair = header(1, 0, 0);
        pair.extend_from_slice(&[0xC0, 31, 0, 5, 0, 1, 0, 0, 1, 44, 0, 2, 0xC0, 19]);
        assert_eq!(verdict(&pair), Check::Invalid);
        // A pointer to the start of its own piece of name.
        let mut middle = header(1, 0, 0);
        middle.extend_from_slice(&record(CNAME, &[1, b'b', 0xC0, 31]));
        assert_eq!(verdict(&middle), Check::Invalid);
        // A pointer chain going backwards: valid.
        let mut chain = header(2, 0, 0);
        chain.extend_from_slice(&record(CNAME, &B_A));
        chain.extend_from_slice(&record(CNAME, &[1, b'c', 0xC0, 31]));
        assert_eq!(verdict(&chain), Check::Valid);
        // A pointer back to a piece that runs on into the piece pointing to
        // it: the owner at 35 is `c` and a pointer to 33, where the A
        // record's last two bytes read as the label `z`, which runs on into
        // 35 — refused by hickory (overlapping labels), else a loop.
        let mut overlap = header(2, 0, 0);
        overlap.extend_from_slice(&record(A, &[192, 0, 1, b'z']));
        overlap.extend_from_slice(&[1, b'c', 0xC0, 33, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 1, 2, 3, 4]);
        assert_eq!(verdict(&overlap), Check::Invalid);
        // The same pointer from a piece that starts later: `z` ends before
        // it, at the start of the next record's owner (the pointer to 12).
        let mut before = header(2, 0, 0);
        before.extend_from_slice(&record(A, &[192, 0, 1, b'z']));
        before.extend_from_slice(&[0xC0, 12, 0, 5, 0, 1, 0, 0, 1, 44, 0, 4, 1, b'c', 0xC0, 33]);
        assert_eq!(verdict(&before), Check::Valid);
        // A pointer to offset 0 (the header as labels: 0x42 is a reserved code).
        assert_eq!(verdict(&answer(CNAME, &[0xC0, 0])), Check::Invalid);
    }

    #[test]
    fn label_codes_and_name_length() {
        assert_eq!(verdict(&answer(CNAME, &[0x40, 0])), Check::Invalid);
        assert_eq!(verdict(&answer(CNAME, &[0x80, 0])), Check::Invalid);
        // 127 labels of 1 byte: 255 bytes with the root, the longest name.
        let mut longest: Vec<u8> = (0..127).flat_map(|_| [1, b'x']).collect();
        longest.push(0);
        assert_eq!(verdict(&answer(CNAME, &longest)), Check::Valid);
        // One more byte (a label of 2) is too long.
        let mut long = vec![2, b'x', b'x'];
        long.extend_from_slice(&longest[2..]);
        assert_eq!(verdict(&answer(CNAME, &long)), Check::Invalid);
        // Too long only through a pointer: 127 labels, then `a.` (3 bytes);
        // with 126 labels it is 255 bytes again.
        let mut through: Vec<u8> = (0..127).flat_map(|_| [1, b'x']).collect();
        through.extend_from_slice(&[0xC0, 12]);
        assert_eq!(verdict(&answer(CNAME, &through)), Check::Invalid);
        through.drain(..2);
        assert_eq!(verdict(&answer(CNAME, &through)), Check::Valid);
    }

    #[test]
    fn txt_strings_fill_rdata() {
        assert_eq!(verdict(&answer(TXT, &[3, b'a', b'b', b'c'])), Check::Valid);
        assert_eq!(verdict(&answer(TXT, &[0])), Check::Valid);
        assert_eq!(
            verdict(&answer(TXT, &[1, b'a', 2, b'b', b'c'])),
            Check::Valid
        );
        // A string overrunning RDLENGTH, inside the message and past it.
        let mut overrun = header(1, 0, 1);
        overrun.extend_from_slice(&record(TXT, &[1, b'a', 5, b'b']));
        overrun.extend_from_slice(&opt(&[]));
        assert_eq!(verdict(&overrun), Check::Invalid);
        assert_eq!(verdict(&answer(TXT, &[9, b'a'])), Check::Invalid);
        assert_eq!(verdict(&answer(TXT, &[])), Check::Invalid);
    }

    #[test]
    fn opt_records_and_their_options() {
        let with = |rdata: &[u8]| {
            let mut out = header(0, 0, 1);
            out.extend_from_slice(&opt(rdata));
            out
        };
        assert_eq!(verdict(&with(&[])), Check::Valid);
        // A cookie and padding: read as unknown options.
        assert_eq!(
            verdict(&with(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 12, 0, 0])),
            Check::Valid
        );
        // Client subnet: read by content, left to the decode.
        assert_eq!(verdict(&with(&[0, 8, 0, 4, 0, 1, 24, 0])), Check::Unsure);
        // An option length over RDLENGTH.
        assert_eq!(verdict(&with(&[0, 10, 0, 9, 1, 2, 3, 4])), Check::Invalid);
        // An option cut by the end of RDATA: dropped, the OPT stands.
        assert_eq!(verdict(&with(&[0, 10, 0, 4, 1, 2])), Check::Valid);
        // A code alone, then a code with half a length.
        assert_eq!(verdict(&with(&[0, 10])), Check::Valid);
        assert_eq!(verdict(&with(&[0, 10, 0])), Check::Invalid);
        assert_eq!(verdict(&with(&[0])), Check::Invalid);
        // A non-root owner, two OPTs, an OPT in the answer section.
        let mut owned = header(0, 0, 1);
        owned.extend_from_slice(&record(OPT, &[]));
        assert_eq!(verdict(&owned), Check::Invalid);
        let mut two = header(0, 0, 2);
        two.extend_from_slice(&opt(&[]));
        two.extend_from_slice(&opt(&[]));
        assert_eq!(verdict(&two), Check::Invalid);
        let mut in_answer = header(1, 0, 0);
        in_answer.extend_from_slice(&opt(&[]));
        assert_eq!(verdict(&in_answer), Check::Invalid);
    }

    #[test]
    fn header_question_framing_and_trailing_bytes() {
        let good = answer(A, &[192, 0, 2, 1]);
        assert_eq!(verdict(&[]), Check::Invalid);
        assert_eq!(verdict(&good[..11]), Check::Invalid);
        assert_eq!(verdict(&good[..12]), Check::Invalid);
        assert_eq!(verdict(&good[..18]), Check::Invalid);
        for cut in 19..good.len() {
            assert_eq!(verdict(&good[..cut]), Check::Invalid, "cut at {cut}");
        }
        // hickory ignores what follows the last record.
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0xff; 7]);
        assert_eq!(verdict(&trailing), Check::Valid);
        // One record too many announced.
        let mut lying = good.clone();
        lying[7] = 2;
        assert_eq!(verdict(&lying), Check::Invalid);
        // Flags and rcodes are not refused; other question counts and
        // UPDATE are left to the decode.
        let mut flags = good.clone();
        flags[2..4].copy_from_slice(&[0xff, 0x7f]);
        flags[2] &= !(0x0F << 3);
        assert_eq!(verdict(&flags), Check::Valid);
        let mut two = good.clone();
        two[5] = 2;
        assert_eq!(verdict(&two), Check::Unsure);
        let mut update = good.clone();
        update[2] = 0x80 | OPCODE_UPDATE << 3;
        assert_eq!(verdict(&update), Check::Unsure);
        // SIG and TSIG outside the additional section; ANY as data.
        assert_eq!(verdict(&answer(SIG, &[1, 2, 3])), Check::Invalid);
        assert_eq!(verdict(&answer(TSIG, &[1, 2, 3])), Check::Invalid);
        assert_eq!(verdict(&answer(255, &[1])), Check::Invalid);
        // Another type: the decode's business.
        assert_eq!(verdict(&answer(46, &[1, 2, 3])), Check::Unsure);
    }

    fn name(text: &str) -> Name {
        Name::from_ascii(text).expect("name")
    }

    /// Answers as hickory encodes them (compressed names, OPT last).
    fn encoded_messages() -> Vec<Vec<u8>> {
        let response = |qname: &str, qtype: RecordType, rcode: ResponseCode| {
            let mut m = Message::new(0x4242, MessageType::Response, OpCode::Query);
            m.metadata.recursion_desired = true;
            m.metadata.recursion_available = true;
            m.metadata.response_code = rcode;
            m.add_query(Query::query(name(qname), qtype));
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            edns.set_dnssec_ok(true);
            m.set_edns(edns);
            m
        };
        let soa = |zone: &str| {
            let data = RSOA::new(
                name("ns1.example."),
                name("hostmaster.example."),
                2024010101,
                3600,
                600,
                86400,
                300,
            );
            Record::from_rdata(name(zone), 300, RData::SOA(data))
        };
        let mut out = Vec::new();
        let mut chain = response("www.example.com.", RecordType::A, ResponseCode::NoError);
        chain.add_answer(Record::from_rdata(
            name("www.example.com."),
            300,
            RData::CNAME(RCNAME(name("edge.cdn.example.net."))),
        ));
        for i in 1..=2 {
            chain.add_answer(Record::from_rdata(
                name("edge.cdn.example.net."),
                60,
                RData::A(RA(Ipv4Addr::new(192, 0, 2, i))),
            ));
        }
        out.push(chain);
        let mut nx = response("gone.example.", RecordType::A, ResponseCode::NXDomain);
        nx.add_authority(soa("example."));
        out.push(nx);
        let mut aaaa = response("v6.example.", RecordType::AAAA, ResponseCode::NoError);
        aaaa.add_answer(Record::from_rdata(
            name("v6.example."),
            300,
            RData::AAAA(RAAAA(Ipv6Addr::LOCALHOST)),
        ));
        out.push(aaaa);
        let mut mx = response("mail.example.", RecordType::MX, ResponseCode::NoError);
        mx.add_answer(Record::from_rdata(
            name("mail.example."),
            300,
            RData::MX(RMX::new(10, name("mx1.mail.example."))),
        ));
        mx.add_authority(Record::from_rdata(
            name("example."),
            300,
            RData::NS(RNS(name("ns1.example."))),
        ));
        mx.add_additional(Record::from_rdata(
            name("mx1.mail.example."),
            300,
            RData::A(RA(Ipv4Addr::new(192, 0, 2, 25))),
        ));
        out.push(mx);
        let mut txt = response("big.example.", RecordType::TXT, ResponseCode::NoError);
        txt.add_answer(Record::from_rdata(
            name("big.example."),
            300,
            RData::TXT(RTXT::new(vec!["t".repeat(255), String::new(), "x".into()])),
        ));
        out.push(txt);
        let mut srv = response("_sip._udp.example.", RecordType::SRV, ResponseCode::NoError);
        srv.add_answer(Record::from_rdata(
            name("_sip._udp.example."),
            300,
            RData::SRV(RSRV::new(10, 5, 5060, name("sip.example."))),
        ));
        out.push(srv);
        let mut ptr = response(
            "1.2.0.192.in-addr.arpa.",
            RecordType::PTR,
            ResponseCode::NoError,
        );
        ptr.add_answer(Record::from_rdata(
            name("1.2.0.192.in-addr.arpa."),
            300,
            RData::PTR(RPTR(name("host.example."))),
        ));
        out.push(ptr);
        let mut nodata = response("example.", RecordType::AAAA, ResponseCode::NoError);
        nodata.add_authority(soa("example."));
        out.push(nodata);
        let mut cookie = response("c.example.", RecordType::A, ResponseCode::NoError);
        if let Some(edns) = cookie.edns.as_mut() {
            edns.options_mut().insert(EdnsOption::Unknown(
                u16::from(EdnsCode::Cookie),
                vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
            ));
        }
        out.push(cookie);
        let mut plain = response("root.", RecordType::NS, ResponseCode::NoError);
        plain.edns = None;
        plain.add_answer(Record::from_rdata(
            Name::root(),
            300,
            RData::NS(RNS(name("a.root-servers.net."))),
        ));
        out.push(plain);
        out.into_iter()
            .map(|m| m.to_vec().expect("encode"))
            .collect()
    }

    #[test]
    fn every_encoded_hickory_message_is_valid() {
        for bytes in encoded_messages() {
            assert!(Message::from_vec(&bytes).is_ok());
            assert_eq!(rdata_verdict(&bytes), Check::Valid, "{bytes:02x?}");
        }
    }

    #[test]
    fn a_subnet_option_is_left_to_the_decode() {
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.add_query(Query::query(name("a."), RecordType::A));
        let mut edns = Edns::new();
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(
                Ipv4Addr::new(192, 0, 2, 0).into(),
                24,
                0,
            )));
        m.set_edns(edns);
        let bytes = m.to_vec().expect("encode");
        assert_eq!(verdict(&bytes), Check::Unsure);
    }
}
