//! One segment file: its name, its creation with preallocated space, and
//! the verification of its contents when the WAL is opened.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::record::{self, Decoded};
use crate::{Record, TailRepair, WalError};

/// File name of segment `seq`: 16 lowercase hex digits, so that names sort
/// in sequence order.
pub(crate) fn file_name(seq: u64) -> String {
    format!("{seq:016x}.wal")
}

pub(crate) fn path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(file_name(seq))
}

/// Inverse of [`file_name`]; `None` for files that are not segments.
fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    let canonical = digits.len() == 16
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !canonical {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// Sequence numbers of the segment files in `dir`, ascending.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for entry in fs::read_dir(dir)? {
        if let Some(seq) = entry?.file_name().to_str().and_then(parse_file_name) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Creates segment `seq`, preallocated to `bytes`, and makes both its
/// contents and its directory entry durable.
pub(crate) fn create(dir: &Path, seq: u64, bytes: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path(dir, seq))?;
    preallocate(&file, bytes)?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(file)
}

/// Grows `file` to at least `bytes` of zeros and reserves its blocks, so
/// that appends neither change the file size (which fdatasync would have to
/// flush) nor run out of space halfway through a segment.
pub(crate) fn preallocate(file: &File, bytes: u64) -> io::Result<()> {
    if file.metadata()?.len() < bytes {
        file.set_len(bytes)?;
    }
    reserve_blocks(file, bytes)
}

#[cfg(target_os = "linux")]
fn reserve_blocks(file: &File, bytes: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment size exceeds off_t"))?;
    // SAFETY: the descriptor belongs to `file`, which outlives the call.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
        0 => Ok(()),
        // The filesystem cannot reserve blocks; the zero-filled length
        // from set_len is still in place.
        libc::EOPNOTSUPP => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

#[cfg(not(target_os = "linux"))]
fn reserve_blocks(_file: &File, _bytes: u64) -> io::Result<()> {
    Ok(())
}

/// Makes changes to the entries of `dir` (created or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The verified contents of one segment.
#[derive(Debug)]
pub(crate) struct Contents {
    pub(crate) records: Vec<Record>,
    /// Offset just past the last valid record: where appending continues.
    pub(crate) end: u64,
    /// Set when a torn record at the end of the last segment must be cut off.
    pub(crate) torn_tail: Option<TailRepair>,
}

/// Verifies and decodes the bytes of segment `seq`.
///
/// After the last record, the rest of a segment must be zero (its unused
/// preallocated space). A damaged record is accepted as a torn tail only in
/// the last segment and only if nothing but zeros follows it: a crash can
/// tear the final write, but it cannot produce damage with good data after
/// it, and dropping records that were acknowledged is never acceptable.
pub(crate) fn parse(seq: u64, data: &[u8], is_last: bool) -> Result<Contents, WalError> {
    let corrupt = |offset: usize, reason: String| WalError::Corrupt {
        segment: seq,
        offset: offset as u64,
        reason,
    };
    let mut records = Vec::new();
    let mut at = 0;
    loop {
        let rest = &data[at..];
        match record::decode(rest) {
            Decoded::Record { kind, payload } => {
                records.push(Record {
                    kind,
                    payload: payload.to_vec(),
                });
                at += record::HEADER_LEN + payload.len();
            }
            Decoded::End => {
                if let Some(stray) = first_nonzero(rest) {
                    return Err(corrupt(
                        at,
                        format!(
                            "records end here but non-zero data follows at offset {}",
                            at + stray
                        ),
                    ));
                }
                return Ok(Contents {
                    records,
                    end: at as u64,
                    torn_tail: None,
                });
            }
            Decoded::Damaged(damage) => {
                let extent = damage.extent(rest.len()).min(rest.len());
                let reason = damage.describe();
                if !is_last {
                    return Err(corrupt(
                        at,
                        format!("{reason} in a segment that is not the last one"),
                    ));
                }
                if let Some(stray) = first_nonzero(&rest[extent..]) {
                    return Err(corrupt(
                        at,
                        format!(
                            "{reason}, and non-zero data follows at offset {}, \
                             so this is not a torn tail",
                            at + extent + stray
                        ),
                    ));
                }
                let discarded = rest.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                return Ok(Contents {
                    records,
                    end: at as u64,
                    torn_tail: Some(TailRepair {
                        segment: seq,
                        offset: at as u64,
                        discarded_bytes: discarded as u64,
                    }),
                });
            }
        }
    }
}

fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_sort_in_sequence_order_and_parse_back() {
        let names: Vec<String> = [1u64, 0xf, 0x10, u64::MAX].map(file_name).into();
        assert_eq!(names[0], "0000000000000001.wal");
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, names);
        for (name, seq) in names.iter().zip([1u64, 0xf, 0x10, u64::MAX]) {
            assert_eq!(parse_file_name(name), Some(seq));
        }
    }

    #[test]
    fn foreign_file_names_are_not_segments() {
        for name in [
            "000000000000000A.wal",
            "+00000000000000a.wal",
            "1.wal",
            "0000000000000001.tmp",
            "0000000000000001.wal.bak",
        ] {
            assert_eq!(parse_file_name(name), None, "{name}");
        }
    }

    #[test]
    fn zeros_after_the_end_are_required() {
        let mut data = Vec::new();
        record::encode(1, b"a", &mut data);
        data.extend_from_slice(&[0; 64]);
        let contents = parse(3, &data, false).unwrap();
        assert_eq!(contents.records.len(), 1);
        assert_eq!(contents.end, (record::HEADER_LEN + 1) as u64);

        data[50] = 9;
        let err = parse(3, &data, true).unwrap_err();
        assert!(err.to_string().contains("offset 50"), "{err}");
    }
}
