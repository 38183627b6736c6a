//! The one reader of a DNS message's record framing (RFC 1035 §4.1): the
//! question's end, then every resource record's owner name, TYPE, CLASS,
//! TTL and RDATA, section by section. Every part of `wire` that looks at
//! records without decoding them (holding an upstream answer, patching TTLs,
//! cutting an OPT, the FORMERR check of a malformed OPT) walks with
//! [`Records`], so that the framing rules live in one place.

use std::ops::Range;

/// The section a record was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Section {
    /// The answer section.
    Answer,
    /// The authority section.
    Authority,
    /// The additional section.
    Additional,
}

/// One resource record, as offsets into the message it was walked in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Walked {
    /// Offset of the record's first byte (its owner name).
    pub offset: usize,
    /// The owner name as written (a compression pointer is not followed).
    pub name: Range<usize>,
    /// TYPE.
    pub rtype: u16,
    /// CLASS (the UDP payload size, for OPT).
    pub class: u16,
    /// Offset of the 4-byte TTL field (extended rcode, version and flags, for OPT).
    pub ttl_at: usize,
    /// The TTL as written.
    pub ttl: u32,
    /// The RDATA.
    pub rdata: Range<usize>,
    /// The section it is in.
    pub section: Section,
    /// Its position among all records of the message, from 0.
    pub index: usize,
}

impl Walked {
    /// Where the record ends (the next one starts).
    pub(super) fn end(&self) -> usize {
        self.rdata.end
    }
}

/// The framing does not hold: a name or a record runs past the end, or a
/// label length is one of the reserved codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("DNS message framing does not hold")]
pub(crate) struct Broken;

/// The big-endian `u16` at `at`.
pub(crate) fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

/// The header's four counts: QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT.
pub(crate) fn counts(bytes: &[u8]) -> Option<[u16; 4]> {
    Some([
        read_u16(bytes, 4)?,
        read_u16(bytes, 6)?,
        read_u16(bytes, 8)?,
        read_u16(bytes, 10)?,
    ])
}

/// The offset just past the name at `at`; a compression pointer ends the
/// name (it is not followed). `None` on a reserved label code or when the
/// name runs out of bytes before its end.
pub(crate) fn skip_name(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *bytes.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xC0 == 0xC0 => return Some(at + 2),
            l if l < 64 => at += 1 + l as usize,
            _ => return None,
        }
    }
}

/// The offset just past the name at `at` if it is written out label by
/// label, without a compression pointer (how a sane query writes its
/// question). `None` on a pointer, a reserved label code or a short packet.
pub(crate) fn plain_name_end(bytes: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *bytes.get(at)? as usize;
        if len == 0 {
            return Some(at + 1);
        }
        if len > 63 {
            return None;
        }
        at += 1 + len;
    }
}

/// Where the first question (`QNAME QTYPE QCLASS`, from offset 12) ends,
/// if it lies within `bytes`.
pub(crate) fn question_end(bytes: &[u8]) -> Option<usize> {
    let end = skip_name(bytes, 12)? + 4;
    (end <= bytes.len()).then_some(end)
}

/// An iterator over the records of a message with one question: yields
/// every record of the answer, authority and additional sections in order
/// (OPT included), then ends; yields [`Broken`] once and ends if the
/// framing does not hold.
#[derive(Debug, Clone)]
pub(crate) struct Records<'a> {
    bytes: &'a [u8],
    at: usize,
    index: usize,
    answers: usize,
    authorities: usize,
    total: usize,
    question_end: usize,
}

impl<'a> Records<'a> {
    /// Starts after the question of `bytes`; `None` unless QDCOUNT is 1 and
    /// the question lies within the message.
    pub(super) fn new(bytes: &'a [u8]) -> Option<Self> {
        let [questions, answers, authorities, additionals] = counts(bytes)?;
        if questions != 1 {
            return None;
        }
        let question_end = question_end(bytes)?;
        let (answers, authorities) = (usize::from(answers), usize::from(authorities));
        Some(Self {
            bytes,
            at: question_end,
            index: 0,
            answers,
            authorities,
            total: answers + authorities + usize::from(additionals),
            question_end,
        })
    }

    /// Where the question ends (the first record starts).
    pub(super) fn question_end(&self) -> usize {
        self.question_end
    }

    /// How many records the header announces.
    pub(super) fn total(&self) -> usize {
        self.total
    }

    /// Where the walk stands: after the last record yielded.
    pub(super) fn position(&self) -> usize {
        self.at
    }

    fn record(&self) -> Option<Walked> {
        let offset = self.at;
        let name_end = skip_name(self.bytes, offset)?;
        let rtype = read_u16(self.bytes, name_end)?;
        let class = read_u16(self.bytes, name_end + 2)?;
        let ttl_at = name_end + 4;
        let ttl = u32::from_be_bytes(self.bytes.get(ttl_at..ttl_at + 4)?.try_into().ok()?);
        let rdlength = usize::from(read_u16(self.bytes, name_end + 8)?);
        let rdata = name_end + 10..name_end + 10 + rdlength;
        if rdata.end > self.bytes.len() {
            return None;
        }
        let section = if self.index < self.answers {
            Section::Answer
        } else if self.index < self.answers + self.authorities {
            Section::Authority
        } else {
            Section::Additional
        };
        Some(Walked {
            offset,
            name: offset..name_end,
            rtype,
            class,
            ttl_at,
            ttl,
            rdata,
            section,
            index: self.index,
        })
    }
}

impl Iterator for Records<'_> {
    type Item = Result<Walked, Broken>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.total {
            return None;
        }
        match self.record() {
            Some(record) => {
                self.at = record.end();
                self.index += 1;
                Some(Ok(record))
            }
            None => {
                // Fused: a broken record ends the walk.
                self.index = self.total;
                Some(Err(Broken))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header with one question `a.` A IN and the given counts.
    fn message(answers: u16, additionals: u16) -> Vec<u8> {
        let mut out = vec![0, 1, 0x81, 0x80, 0, 1];
        out.extend_from_slice(&answers.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&additionals.to_be_bytes());
        out.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 1]);
        out
    }

    #[test]
    fn walks_every_section_with_offsets() {
        let mut bytes = message(1, 1);
        // a. A IN 300 192.0.2.1, the owner a pointer to the question.
        bytes.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 192, 0, 2, 1]);
        // OPT, payload 1232, DO.
        bytes.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0x80, 0, 0, 0]);
        let records = Records::new(&bytes).expect("walkable");
        assert_eq!(records.question_end(), 19);
        let walked: Vec<Walked> = records.map(|r| r.expect("framing")).collect();
        assert_eq!(walked.len(), 2);
        assert_eq!(walked[0].name, 19..21);
        assert_eq!(
            (walked[0].rtype, walked[0].class, walked[0].ttl),
            (1, 1, 300)
        );
        assert_eq!(walked[0].rdata, 31..35);
        assert_eq!(walked[0].section, Section::Answer);
        assert_eq!((walked[1].offset, walked[1].rtype), (35, 41));
        assert_eq!(walked[1].class, 1232);
        assert_eq!(walked[1].section, Section::Additional);
        assert_eq!(walked[1].end(), bytes.len());
    }

    #[test]
    fn a_record_past_the_end_breaks_the_walk_once() {
        let mut bytes = message(2, 0);
        bytes.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 9, 192, 0, 2, 1]);
        let mut records = Records::new(&bytes).expect("question");
        assert_eq!(records.next(), Some(Err(Broken)));
        assert_eq!(records.next(), None);
    }

    #[test]
    fn names_and_questions() {
        let bytes = message(0, 0);
        assert_eq!(question_end(&bytes), Some(bytes.len()));
        assert_eq!(question_end(&bytes[..bytes.len() - 1]), None);
        assert_eq!(plain_name_end(&[0xC0, 12], 0), None);
        assert_eq!(skip_name(&[0xC0, 12], 0), Some(2));
        assert_eq!(skip_name(&[0x40], 0), None);
        assert!(Records::new(&bytes[..11]).is_none());
    }
}
