//! A structural check of a DICOM data set before it reaches the DICOM parser: every
//! element, item and sequence must fit in its container and nesting stays shallow.
//!
//! Written here because dicom-parser 0.10 can loop forever, growing memory, on
//! some malformed nestings (found by fuzzing); this walk reads only headers and
//! lengths, so it stops on any input.

use dicom_core::Tag;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_dictionary_std::StandardDataDictionary;

/// Deepest nesting of sequences accepted.
pub const MAX_NESTING: usize = 32;
const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_END: (u16, u16) = (0xFFFE, 0xE0DD);
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);

/// What is wrong with a data set's structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The data ends before its elements do.
    Truncated(String),
    /// Lengths or nesting that cannot be right.
    Malformed(String),
}

/// How the data set is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    pub explicit_vr: bool,
    pub big_endian: bool,
}

struct Walker<'a> {
    bytes: &'a [u8],
    at: usize,
    encoding: Encoding,
}

/// What a container ends with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// A byte offset.
    At(usize),
    /// A delimiter tag.
    Delimiter((u16, u16)),
}

impl Walker<'_> {
    fn u16(&self, at: usize) -> Result<u16, Problem> {
        let b = self.bytes.get(at..at + 2).ok_or_else(ends_in_header)?;
        let b = [b[0], b[1]];
        Ok(if self.encoding.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    fn u32(&self, at: usize) -> Result<u32, Problem> {
        let b = self.bytes.get(at..at + 4).ok_or_else(ends_in_header)?;
        let b = [b[0], b[1], b[2], b[3]];
        Ok(if self.encoding.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn tag(&self) -> Result<(u16, u16), Problem> {
        Ok((self.u16(self.at)?, self.u16(self.at + 2)?))
    }

    /// Reads an element header: (tag, is a sequence, length).
    fn header(&mut self) -> Result<((u16, u16), bool, u32), Problem> {
        let tag = self.tag()?;
        if tag.0 == 0xFFFE {
            let len = self.u32(self.at + 4)?;
            self.at += 8;
            return Ok((tag, false, len));
        }
        if self.encoding.explicit_vr {
            let vr = self
                .bytes
                .get(self.at + 4..self.at + 6)
                .ok_or_else(ends_in_header)?;
            let short = has_short_length(vr);
            let (len, size) = if short {
                (self.u16(self.at + 6)? as u32, 8)
            } else {
                (self.u32(self.at + 8)?, 12)
            };
            self.at += size;
            // UN of undefined length holds an implicit-VR sequence.
            let sequence = vr == b"SQ" || (vr == b"UN" && len == UNDEFINED);
            Ok((tag, sequence, len))
        } else {
            let len = self.u32(self.at + 4)?;
            self.at += 8;
            let is_sq = StandardDataDictionary
                .by_tag(Tag(tag.0, tag.1))
                .is_some_and(|e| e.vr().relaxed() == dicom_core::VR::SQ);
            Ok((tag, is_sq || (len == UNDEFINED && tag != PIXEL_DATA), len))
        }
    }

    /// The offset `len` bytes on, which must not pass `end`.
    fn after(&self, len: u32, end: usize, what: &str) -> Result<usize, Problem> {
        let next = self.at.saturating_add(len as usize);
        if next > self.bytes.len() {
            Err(Problem::Truncated(format!(
                "{what} of {len} bytes at offset {} ends after the data ({} bytes)",
                self.at,
                self.bytes.len()
            )))
        } else if next > end {
            Err(Problem::Malformed(format!(
                "{what} of {len} bytes at offset {} runs past its container",
                self.at
            )))
        } else {
            Ok(next)
        }
    }

    fn skip(&mut self, len: u32, end: usize) -> Result<(), Problem> {
        self.at = self.after(len, end, "a value")?;
        Ok(())
    }

    fn container_end(&self, len: u32, end: usize) -> Result<End, Problem> {
        if len == UNDEFINED {
            return Ok(End::Delimiter(SEQUENCE_END));
        }
        Ok(End::At(self.after(len, end, "a container")?))
    }

    /// Walks elements until `end` (an offset or an item delimiter).
    fn data_set(&mut self, end: End, limit: usize, depth: usize) -> Result<(), Problem> {
        loop {
            match end {
                End::At(stop) if self.at >= stop => return Ok(()),
                End::Delimiter(_) if self.at >= self.bytes.len() => {
                    return Err(Problem::Truncated(
                        "the data ends before an item delimiter".into(),
                    ));
                }
                End::Delimiter(_) if self.at >= limit => {
                    return Err(Problem::Malformed(
                        "an item delimiter is missing in its container".into(),
                    ));
                }
                _ => {}
            }
            let (tag, sequence, len) = self.header()?;
            if End::Delimiter(tag) == end {
                return Ok(());
            }
            if tag.0 == 0xFFFE {
                return Err(Problem::Malformed(format!(
                    "an item tag {:04X},{:04X} where an element was expected",
                    tag.0, tag.1
                )));
            }
            if tag == PIXEL_DATA && len == UNDEFINED {
                self.fragments(limit)?;
            } else if sequence {
                self.sequence(len, limit, depth + 1)?;
            } else if len == UNDEFINED {
                return Err(Problem::Malformed(format!(
                    "element {:04X},{:04X} has an undefined length",
                    tag.0, tag.1
                )));
            } else {
                self.skip(len, limit)?;
            }
        }
    }

    fn sequence(&mut self, len: u32, limit: usize, depth: usize) -> Result<(), Problem> {
        if depth > MAX_NESTING {
            return Err(Problem::Malformed(format!(
                "sequences nested more than {MAX_NESTING} deep"
            )));
        }
        let end = self.container_end(len, limit)?;
        let inner_limit = match end {
            End::At(stop) => stop,
            End::Delimiter(_) => limit,
        };
        loop {
            if let End::At(stop) = end
                && self.at >= stop
            {
                return Ok(());
            }
            let (tag, _, item_len) = self.header()?;
            if End::Delimiter(tag) == end {
                return Ok(());
            }
            if tag != ITEM {
                return Err(Problem::Malformed(format!(
                    "tag {:04X},{:04X} inside a sequence where an item was expected",
                    tag.0, tag.1
                )));
            }
            let item_end = match self.container_end(item_len, inner_limit)? {
                End::At(stop) => End::At(stop),
                End::Delimiter(_) => End::Delimiter(ITEM_END),
            };
            self.data_set(item_end, inner_limit, depth)?;
        }
    }

    /// Encapsulated pixel data: items of defined length until the delimiter.
    fn fragments(&mut self, limit: usize) -> Result<(), Problem> {
        loop {
            let (tag, _, len) = self.header()?;
            match tag {
                SEQUENCE_END => return Ok(()),
                ITEM if len != UNDEFINED => self.skip(len, limit)?,
                _ => {
                    return Err(Problem::Malformed(
                        "encapsulated pixel data holds something other than fragments".into(),
                    ));
                }
            }
        }
    }
}

/// Checks the file meta group at the start of `bytes` (after "DICM") the way
/// the meta parser reads it: the group length first, then elements (of any
/// group) until that many bytes are read; every value must fit in the data,
/// because the meta parser reserves declared lengths before reading.
pub fn check_meta_group(bytes: &[u8]) -> Result<(), Problem> {
    let mut walker = Walker {
        bytes,
        at: 0,
        encoding: Encoding {
            explicit_vr: true,
            big_endian: false,
        },
    };
    let (tag, _, len) = walker.header()?;
    if tag != (0x0002, 0x0000) || len != 4 {
        return Err(Problem::Malformed(
            "the file meta group does not start with its group length".into(),
        ));
    }
    let group_length = walker.u32(walker.at)? as usize;
    walker.at += 4;
    let start = walker.at;
    while walker.at - start < group_length {
        let (_, _, len) = walker.header()?;
        if len == UNDEFINED {
            return Err(Problem::Malformed(
                "an element of the file meta group has an undefined length".into(),
            ));
        }
        walker.skip(len, bytes.len())?;
    }
    Ok(())
}

fn ends_in_header() -> Problem {
    Problem::Truncated("the data ends inside an element header".into())
}

/// Checks the structure of a data set (the bytes after the file meta group).
pub fn check(data_set: &[u8], encoding: Encoding) -> Result<(), Problem> {
    let mut walker = Walker {
        bytes: data_set,
        at: 0,
        encoding,
    };
    walker.data_set(End::At(data_set.len()), data_set.len(), 0)
}

/// Whether an element of this explicit VR has a 2-byte length. Only these VRs
/// do; the parser reads any other, unknown ones included (as UN), with a 4-byte
/// length.
pub(super) fn has_short_length(vr: &[u8]) -> bool {
    matches!(
        vr,
        b"AE"
            | b"AS"
            | b"AT"
            | b"CS"
            | b"DA"
            | b"DS"
            | b"DT"
            | b"FL"
            | b"FD"
            | b"IS"
            | b"LO"
            | b"LT"
            | b"PN"
            | b"SH"
            | b"SL"
            | b"SS"
            | b"ST"
            | b"TM"
            | b"UI"
            | b"UL"
            | b"US"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LE: Encoding = Encoding {
        explicit_vr: true,
        big_endian: false,
    };

    fn element(group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut out = [group.to_le_bytes(), elem.to_le_bytes()].concat();
        out.extend_from_slice(vr);
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    fn sequence(items: &[Vec<u8>], undefined: bool) -> Vec<u8> {
        let body: Vec<u8> = items
            .iter()
            .flat_map(|item| {
                let mut out = [0xFFFEu16.to_le_bytes(), 0xE000u16.to_le_bytes()].concat();
                out.extend_from_slice(&(item.len() as u32).to_le_bytes());
                out.extend_from_slice(item);
                out
            })
            .collect();
        let mut out = [0x0062u16.to_le_bytes(), 0x0002u16.to_le_bytes()].concat();
        out.extend_from_slice(b"SQ\0\0");
        let len = if undefined {
            UNDEFINED
        } else {
            body.len() as u32
        };
        out.extend_from_slice(&len.to_le_bytes());
        out.extend(body);
        if undefined {
            out.extend(
                [
                    0xFFFEu16.to_le_bytes(),
                    0xE0DDu16.to_le_bytes(),
                    [0, 0],
                    [0, 0],
                ]
                .concat(),
            );
        }
        out
    }

    #[test]
    fn accepts_sound_nesting() {
        let leaf = element(0x0062, 0x0004, b"US", &[1, 0]);
        let data = [
            element(0x0008, 0x0060, b"CS", b"SEG "),
            sequence(&[leaf.clone(), leaf], true),
        ]
        .concat();
        assert_eq!(check(&data, LE), Ok(()));
        let data = sequence(
            &[sequence(&[element(0x0008, 0x0100, b"SH", b"1234")], false)],
            false,
        );
        assert_eq!(check(&data, LE), Ok(()));
    }

    #[test]
    fn rejects_overruns_missing_delimiters_and_deep_nesting() {
        let mut data = element(0x0008, 0x0060, b"CS", b"SEG ");
        data[6] = 200; // length past the end
        assert!(matches!(check(&data, LE), Err(Problem::Truncated(_))));
        let data = [
            element(0x0008, 0x0060, b"CS", b"SEG "),
            element(0x0008, 0x0070, b"LO", b"AI"),
        ]
        .concat();
        let mut inner = sequence(&[data], false);
        inner[26] = 60; // the item's first value claims more than the item holds
        assert!(
            matches!(check(&[inner, vec![0; 64]].concat(), LE), Err(Problem::Malformed(m)) if m.contains("runs past"))
        );

        let mut open = sequence(&[element(0x0062, 0x0004, b"US", &[1, 0])], true);
        open.truncate(open.len() - 8);
        assert!(matches!(check(&open, LE), Err(Problem::Truncated(_))));

        let mut nested = element(0x0062, 0x0004, b"US", &[1, 0]);
        for _ in 0..40 {
            nested = sequence(&[nested], false);
        }
        assert!(
            matches!(check(&nested, LE), Err(Problem::Malformed(m)) if m.contains("nested more than"))
        );

        let truncated = &sequence(&[element(0x0062, 0x0004, b"US", &[1, 0])], false)[..10];
        assert!(check(truncated, LE).is_err());
    }
}
