//! Framing of one record on disk and its checksums.
//!
//! A frame is a 13-byte header followed by the payload:
//!
//! | bytes | field                                   |
//! |-------|-----------------------------------------|
//! | 0..4  | payload length, u32 LE                  |
//! | 4     | kind                                    |
//! | 5..9  | CRC32 of kind + payload, u32 LE         |
//! | 9..13 | CRC32 of header bytes 0..9, u32 LE      |
//!
//! The header has its own checksum so that a damaged length is recognised
//! as damage instead of being trusted: recovery must know exactly where a
//! bad record ends to tell a torn tail from corruption followed by good
//! records. Because the header checksum of nine zero bytes is not zero, an
//! all-zero header can never be a real record; it marks the end of the
//! written part of a (zero-preallocated) segment.

use crc32fast::Hasher;

/// Length of the frame header that precedes every payload.
pub(crate) const HEADER_LEN: usize = 13;

/// Bytes of the header covered by the header checksum.
const CHECKED_HEADER_LEN: usize = 9;

/// Appends the frame for one record to `out`.
///
/// The caller guarantees that `payload.len()` fits in a u32.
pub(crate) fn encode(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("payload length checked by the caller");
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&payload_crc(kind, payload).to_le_bytes());
    let header_crc = crc32fast::hash(&out[start..start + CHECKED_HEADER_LEN]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// What lies at the start of a byte slice.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    /// A complete record whose checksums match.
    Record { kind: u8, payload: &'a [u8] },
    /// Zeros (or nothing): no record was ever written here.
    End,
    /// A record that is incomplete or fails a checksum.
    Damaged(Damage),
}

/// Why the bytes at a position are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Damage {
    /// Fewer than a header's worth of bytes remain and they are not all zero.
    TruncatedHeader,
    /// The header checksum fails, so the length cannot be trusted.
    BadHeader,
    /// The header is valid but the payload runs past the end of the data.
    TruncatedPayload { len: u32 },
    /// The header is valid but the payload checksum fails.
    BadPayload { len: u32 },
}

impl Damage {
    /// Number of bytes, from the record's start, that can be attributed to
    /// the damaged record. `available` is how many bytes remain from there.
    pub(crate) fn extent(self, available: usize) -> usize {
        match self {
            Damage::TruncatedHeader | Damage::TruncatedPayload { .. } => available,
            Damage::BadHeader => HEADER_LEN,
            Damage::BadPayload { len } => HEADER_LEN.saturating_add(len as usize),
        }
    }

    pub(crate) fn describe(self) -> String {
        match self {
            Damage::TruncatedHeader => "record header is cut off by the end of the file".into(),
            Damage::BadHeader => "record header checksum mismatch".into(),
            Damage::TruncatedPayload { len } => {
                format!("record with a {len}-byte payload is cut off by the end of the file")
            }
            Damage::BadPayload { len } => {
                format!("checksum mismatch in record with a {len}-byte payload")
            }
        }
    }
}

/// Decodes the record that starts at `buf[0]`.
pub(crate) fn decode(buf: &[u8]) -> Decoded<'_> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return if is_zero(buf) {
            Decoded::End
        } else {
            Decoded::Damaged(Damage::TruncatedHeader)
        };
    };
    if is_zero(header) {
        return Decoded::End;
    }
    if crc32fast::hash(&header[..CHECKED_HEADER_LEN]) != read_u32(header, 9) {
        return Decoded::Damaged(Damage::BadHeader);
    }
    let len = read_u32(header, 0);
    let kind = header[4];
    let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN.saturating_add(len as usize)) else {
        return Decoded::Damaged(Damage::TruncatedPayload { len });
    };
    if payload_crc(kind, payload) != read_u32(header, 5) {
        return Decoded::Damaged(Damage::BadPayload { len });
    }
    Decoded::Record { kind, payload }
}

pub(crate) fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

fn payload_crc(kind: u8, payload: &[u8]) -> u32 {
    let mut hasher = Hasher::new();
    hasher.update(&[kind]);
    hasher.update(payload);
    hasher.finalize()
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(kind, payload, &mut out);
        out
    }

    #[test]
    fn round_trips_including_empty_payload_and_kind_zero() {
        for (kind, payload) in [(7u8, &b"hello"[..]), (0, &[][..]), (255, &[0u8; 40][..])] {
            let bytes = frame(kind, payload);
            assert_eq!(bytes.len(), HEADER_LEN + payload.len());
            assert_eq!(decode(&bytes), Decoded::Record { kind, payload });
        }
    }

    #[test]
    fn zeros_and_empty_input_are_the_end() {
        assert_eq!(decode(&[]), Decoded::End);
        assert_eq!(decode(&[0; 5]), Decoded::End);
        assert_eq!(decode(&[0; 100]), Decoded::End);
    }

    #[test]
    fn a_zero_header_never_passes_its_checksum() {
        assert_ne!(crc32fast::hash(&[0; CHECKED_HEADER_LEN]), 0);
    }

    #[test]
    fn damaged_length_is_caught_by_the_header_checksum() {
        let mut bytes = frame(1, b"payload");
        bytes[2] ^= 0x40;
        assert_eq!(decode(&bytes), Decoded::Damaged(Damage::BadHeader));
    }

    #[test]
    fn damaged_payload_and_truncation_are_told_apart() {
        let mut bytes = frame(1, b"payload");
        *bytes.last_mut().unwrap() ^= 1;
        assert_eq!(
            decode(&bytes),
            Decoded::Damaged(Damage::BadPayload { len: 7 })
        );

        let bytes = frame(1, b"payload");
        assert_eq!(
            decode(&bytes[..bytes.len() - 1]),
            Decoded::Damaged(Damage::TruncatedPayload { len: 7 })
        );
        assert_eq!(
            decode(&bytes[..5]),
            Decoded::Damaged(Damage::TruncatedHeader)
        );
    }
}
