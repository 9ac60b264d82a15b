//! Cairn's write-ahead log: the file format that makes an acknowledged
//! write durable. It stores opaque, typed records in CRC-checked frames
//! inside preallocated segment files, makes a batch durable with one
//! fdatasync (group commit), and on open verifies every record and repairs
//! a tail torn by a crash.
//!
//! This crate is the bottom of the storage stack and must never depend on
//! anything above it: no raft, no mvcc, no gRPC. What a record means is the
//! caller's business.

mod record;
mod segment;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Buffered bytes are handed to the OS once they exceed this, even before
/// a sync, so memory stays bounded however large a batch is.
const WRITE_BUFFER_LIMIT: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// Size each segment file is preallocated to; a record never spans two
    /// segments, so this is also the largest possible frame.
    pub segment_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 * 1024 * 1024,
        }
    }
}

/// One record as stored: an opaque payload tagged with a caller-defined kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// Where a record starts: segment sequence number and byte offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RecordPosition {
    pub segment: u64,
    pub offset: u64,
}

/// The result of opening a WAL: the log ready for appends and everything
/// it held.
#[derive(Debug)]
pub struct Opened {
    pub wal: Wal,
    pub records: Vec<Record>,
    /// The segment each of `records` was read from, so a caller can tell which segments hold
    /// only records it no longer needs (see `purge_before`).
    pub record_segments: Vec<u64>,
    pub repaired_tail: Option<TailRepair>,
}

/// A torn tail that was cut off on open: the damaged record started at
/// `offset` in `segment`, and `discarded_bytes` is the span from there to
/// the last non-zero byte that was removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TailRepair {
    pub segment: u64,
    pub offset: u64,
    pub discarded_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O error: {0}")]
    Io(#[from] io::Error),
    #[error(
        "corrupt WAL segment {} at offset {offset}: {reason}",
        segment::file_name(*segment)
    )]
    Corrupt {
        segment: u64,
        offset: u64,
        reason: String,
    },
    #[error("record frame of {size} bytes exceeds the limit of {limit} bytes")]
    RecordTooLarge { size: u64, limit: u64 },
    #[error("invalid WAL options: {0}")]
    InvalidOptions(String),
    /// A write or sync failed earlier. The OS may have dropped the dirty
    /// pages, so a later successful fdatasync would not prove durability;
    /// the WAL must be reopened, which re-verifies what is on disk.
    #[error("an earlier WAL write or sync failed; the WAL must be reopened")]
    Failed,
}

/// An open write-ahead log, appending to its last segment.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    options: WalOptions,
    /// Oldest segment still on disk.
    first_segment: u64,
    /// Segment being appended to.
    segment: u64,
    file: File,
    /// Bytes of `segment` already handed to the OS.
    written: u64,
    /// Frames not yet handed to the OS; they follow `written`.
    buffer: Vec<u8>,
    /// Bytes were handed to the OS since the last fdatasync.
    unsynced: bool,
    failed: bool,
}

impl Wal {
    /// Opens the WAL in `dir` (creating it if absent), verifies every
    /// record, repairs a torn tail, returns all valid records in order.
    pub fn open(dir: &Path, options: WalOptions) -> Result<Opened, WalError> {
        if options.segment_bytes < record::HEADER_LEN as u64 {
            return Err(WalError::InvalidOptions(format!(
                "segment_bytes is {}, but must hold at least a {}-byte record header",
                options.segment_bytes,
                record::HEADER_LEN
            )));
        }
        create_dir_durably(dir)?;
        let segments = segment::list(dir)?;
        for pair in segments.windows(2) {
            if pair[1] != pair[0] + 1 {
                return Err(WalError::Corrupt {
                    segment: pair[0] + 1,
                    offset: 0,
                    reason: format!(
                        "segment file is missing between {} and {}",
                        segment::file_name(pair[0]),
                        segment::file_name(pair[1])
                    ),
                });
            }
        }
        let Some((&last, earlier)) = segments.split_last() else {
            let first = 1;
            let file = segment::create(dir, first, options.segment_bytes)?;
            let wal = Wal::new(dir, options, first, first, file, 0);
            return Ok(Opened {
                wal,
                records: Vec::new(),
                record_segments: Vec::new(),
                repaired_tail: None,
            });
        };

        let mut records = Vec::new();
        let mut record_segments = Vec::new();
        let mut data = Vec::new();
        for &seq in earlier {
            data.clear();
            File::open(segment::path(dir, seq))?.read_to_end(&mut data)?;
            records.extend(segment::parse(seq, &data, false)?.records);
            record_segments.resize(records.len(), seq);
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(segment::path(dir, last))?;
        data.clear();
        file.read_to_end(&mut data)?;
        let contents = segment::parse(last, &data, true)?;
        records.extend(contents.records);
        record_segments.resize(records.len(), last);
        if contents.torn_tail.is_some() {
            // Cutting and re-growing zeroes the torn bytes, so they cannot
            // reappear after records appended over them.
            file.set_len(contents.end)?;
        }
        segment::preallocate(&file, options.segment_bytes)?;
        // Records read back may have reached only the page cache before the
        // previous process died; make them durable before anyone acts on
        // them, together with the repair.
        file.sync_all()?;
        file.seek(SeekFrom::Start(contents.end))?;

        let first = segments[0];
        let wal = Wal::new(dir, options, first, last, file, contents.end);
        Ok(Opened {
            wal,
            records,
            record_segments,
            repaired_tail: contents.torn_tail,
        })
    }

    fn new(
        dir: &Path,
        options: WalOptions,
        first_segment: u64,
        segment: u64,
        file: File,
        written: u64,
    ) -> Wal {
        Wal {
            dir: dir.to_path_buf(),
            options,
            first_segment,
            segment,
            file,
            written,
            buffer: Vec::new(),
            unsynced: false,
            failed: false,
        }
    }

    /// Buffers one record (does not write to the OS necessarily). Rotates
    /// to a new segment when the current one would exceed segment_bytes.
    pub fn append(&mut self, kind: u8, payload: &[u8]) -> Result<RecordPosition, WalError> {
        self.check_healthy()?;
        let frame_len = (record::HEADER_LEN + payload.len()) as u64;
        let limit = self
            .options
            .segment_bytes
            .min(record::HEADER_LEN as u64 + u64::from(u32::MAX));
        if frame_len > limit {
            return Err(WalError::RecordTooLarge {
                size: frame_len,
                limit,
            });
        }
        let result = self.append_frame(kind, payload, frame_len);
        self.failed = result.is_err();
        result
    }

    fn append_frame(
        &mut self,
        kind: u8,
        payload: &[u8],
        frame_len: u64,
    ) -> Result<RecordPosition, WalError> {
        if self.position().offset + frame_len > self.options.segment_bytes {
            self.rotate()?;
        }
        let position = self.position();
        record::encode(kind, payload, &mut self.buffer);
        if self.buffer.len() >= WRITE_BUFFER_LIMIT {
            self.write_buffer()?;
        }
        Ok(position)
    }

    /// Writes everything buffered and fdatasyncs it (File::sync_data).
    /// After Ok, every appended record survives a crash.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_healthy()?;
        let result = self.write_and_sync();
        self.failed = result.is_err();
        result
    }

    /// Deletes whole segment files that lie entirely before
    /// `position.segment` (used after a snapshot). The segment being
    /// appended to is never deleted.
    pub fn purge_before(&mut self, position: RecordPosition) -> Result<(), WalError> {
        let end = position.segment.min(self.segment);
        if self.first_segment >= end {
            return Ok(());
        }
        // Oldest first, so that a crash part-way leaves a gap-free run.
        while self.first_segment < end {
            fs::remove_file(segment::path(&self.dir, self.first_segment))?;
            self.first_segment += 1;
        }
        segment::sync_dir(&self.dir)?;
        Ok(())
    }

    /// Where the next appended record will start.
    pub fn position(&self) -> RecordPosition {
        RecordPosition {
            segment: self.segment,
            offset: self.written + self.buffer.len() as u64,
        }
    }

    fn check_healthy(&self) -> Result<(), WalError> {
        if self.failed {
            return Err(WalError::Failed);
        }
        Ok(())
    }

    fn write_buffer(&mut self) -> Result<(), WalError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.file.write_all(&self.buffer)?;
        self.written += self.buffer.len() as u64;
        self.unsynced = true;
        self.buffer.clear();
        // A single huge record must not pin its memory for the WAL's lifetime.
        self.buffer.shrink_to(WRITE_BUFFER_LIMIT);
        Ok(())
    }

    fn write_and_sync(&mut self) -> Result<(), WalError> {
        self.write_buffer()?;
        if self.unsynced {
            self.file.sync_data()?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Seals the current segment and continues in a fresh one. The old
    /// segment is synced first: `sync` only covers the current file, and
    /// on open a segment followed by another must be complete.
    fn rotate(&mut self) -> Result<(), WalError> {
        self.write_and_sync()?;
        let next = self.segment + 1;
        self.file = segment::create(&self.dir, next, self.options.segment_bytes)?;
        self.segment = next;
        self.written = 0;
        Ok(())
    }
}

/// Creates `dir` if needed, making its entry in the parent durable too.
fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => segment::sync_dir(parent),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn options(segment_bytes: u64) -> WalOptions {
        WalOptions { segment_bytes }
    }

    fn open(dir: &Path, segment_bytes: u64) -> Opened {
        Wal::open(dir, options(segment_bytes)).expect("open WAL")
    }

    /// Payloads of varied lengths, including empty, with recognisable bytes.
    fn payloads(count: usize) -> Vec<Record> {
        (0..count)
            .map(|i| Record {
                kind: (i % 3) as u8 + 1,
                payload: (0..(i * 7) % 40).map(|j| (i * 31 + j) as u8 | 1).collect(),
            })
            .collect()
    }

    fn append_all(wal: &mut Wal, records: &[Record]) -> Vec<RecordPosition> {
        records
            .iter()
            .map(|r| wal.append(r.kind, &r.payload).expect("append"))
            .collect()
    }

    fn write_at(dir: &Path, seq: u64, offset: u64, bytes: &[u8]) {
        let file = OpenOptions::new()
            .write(true)
            .open(segment::path(dir, seq))
            .unwrap();
        file.write_all_at(bytes, offset).unwrap();
    }

    fn read_segment(dir: &Path, seq: u64) -> Vec<u8> {
        fs::read(segment::path(dir, seq)).unwrap()
    }

    fn flip_byte(dir: &Path, seq: u64, offset: u64) {
        let byte = read_segment(dir, seq)[offset as usize];
        write_at(dir, seq, offset, &[byte ^ 0x20]);
    }

    fn corrupt_fields(err: WalError) -> (u64, u64, String) {
        let message = err.to_string();
        match err {
            WalError::Corrupt {
                segment, offset, ..
            } => (segment, offset, message),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn synced_records_come_back_in_order_and_appends_continue_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let first = payloads(50);
        let mut wal = open(dir.path(), 1 << 20).wal;
        let positions = append_all(&mut wal, &first);
        assert!(positions.windows(2).all(|p| p[0] < p[1]));
        wal.sync().unwrap();
        drop(wal);

        let opened = open(dir.path(), 1 << 20);
        assert_eq!(opened.records, first);
        assert_eq!(opened.repaired_tail, None);
        let mut wal = opened.wal;
        let second = payloads(10);
        let resumed = wal.append(second[0].kind, &second[0].payload).unwrap();
        assert!(resumed > *positions.last().unwrap());
        append_all(&mut wal, &second[1..]);
        wal.sync().unwrap();
        drop(wal);

        let opened = open(dir.path(), 1 << 20);
        assert_eq!(opened.records, [first, second].concat());
        assert_eq!(segment::list(dir.path()).unwrap(), [1]);
    }

    #[test]
    fn a_missing_directory_is_created_with_one_preallocated_segment() {
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join("a/b/wal");
        let opened = open(&wal_dir, 4096);
        assert!(opened.records.is_empty());
        assert_eq!(segment::list(&wal_dir).unwrap(), [1]);
        assert_eq!(read_segment(&wal_dir, 1).len(), 4096);
    }

    #[test]
    fn records_buffered_but_never_synced_are_not_promised() {
        let dir = tempfile::tempdir().unwrap();
        let records = payloads(20);
        let mut wal = open(dir.path(), 1 << 20).wal;
        append_all(&mut wal, &records[..10]);
        wal.sync().unwrap();
        append_all(&mut wal, &records[10..]);
        drop(wal);
        assert_eq!(open(dir.path(), 1 << 20).records, records[..10]);
    }

    #[test]
    fn a_large_unsynced_batch_is_written_in_bounded_chunks_and_reads_back_as_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let payload = vec![7u8; 100 * 1024];
        let mut wal = open(dir.path(), 8 << 20).wal;
        wal.append(1, b"synced").unwrap();
        wal.sync().unwrap();
        for _ in 0..25 {
            wal.append(2, &payload).unwrap();
        }
        // The buffer overflowed at least twice, so part of the batch is
        // already in the file though nothing was synced.
        assert!(wal.written > 2 * WRITE_BUFFER_LIMIT as u64);
        assert!(wal.buffer.len() < WRITE_BUFFER_LIMIT);
        drop(wal);

        let records = open(dir.path(), 8 << 20).records;
        assert_eq!(records[0].payload, b"synced");
        assert!(records.len() > 1 && records.len() < 26, "{}", records.len());
        assert!(
            records[1..]
                .iter()
                .all(|r| r.kind == 2 && r.payload == payload)
        );
    }

    #[test]
    fn small_segments_rotate_and_purge_removes_only_earlier_files() {
        let dir = tempfile::tempdir().unwrap();
        let records = payloads(200);
        let mut wal = open(dir.path(), 256).wal;
        let positions = append_all(&mut wal, &records);
        wal.sync().unwrap();
        let segments = segment::list(dir.path()).unwrap();
        assert!(segments.len() > 5, "{segments:?}");
        assert_eq!(
            segments,
            (1..=*segments.last().unwrap()).collect::<Vec<_>>()
        );
        for seq in &segments {
            assert_eq!(read_segment(dir.path(), *seq).len(), 256);
        }
        drop(wal);

        let mut wal = open(dir.path(), 256).wal;
        let keep = positions[120];
        wal.purge_before(keep).unwrap();
        let remaining = segment::list(dir.path()).unwrap();
        assert_eq!(remaining.first(), Some(&keep.segment));
        assert_eq!(remaining.last(), segments.last());
        drop(wal);

        let reopened = open(dir.path(), 256);
        let first_kept = positions
            .iter()
            .position(|p| p.segment == keep.segment)
            .unwrap();
        assert_eq!(reopened.records, records[first_kept..]);
        let expected_segments: Vec<u64> =
            positions[first_kept..].iter().map(|p| p.segment).collect();
        assert_eq!(
            reopened.record_segments, expected_segments,
            "each record names its segment"
        );
    }

    #[test]
    fn purge_never_deletes_the_segment_being_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = open(dir.path(), 64).wal;
        for _ in 0..10 {
            wal.append(1, &[9; 30]).unwrap();
        }
        wal.sync().unwrap();
        let current = wal.position().segment;
        wal.purge_before(RecordPosition {
            segment: current + 5,
            offset: 0,
        })
        .unwrap();
        assert_eq!(segment::list(dir.path()).unwrap(), [current]);
        wal.append(1, b"after purge").unwrap();
        wal.sync().unwrap();
        drop(wal);
        let records = open(dir.path(), 64).records;
        assert_eq!(records.last().unwrap().payload, b"after purge");
    }

    #[test]
    fn oversized_records_are_refused_without_harming_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = open(dir.path(), 100).wal;
        let err = wal.append(1, &[1; 88]).unwrap_err();
        assert!(
            matches!(
                err,
                WalError::RecordTooLarge {
                    size: 101,
                    limit: 100
                }
            ),
            "{err}"
        );
        wal.append(1, &[1; 87]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        assert_eq!(open(dir.path(), 100).records.len(), 1);
    }

    /// Writes `records` in one segment, syncs, and returns where each starts
    /// plus the offset just past the last one.
    fn write_one_segment(dir: &Path, records: &[Record]) -> (Vec<u64>, u64) {
        let mut wal = open(dir, 4096).wal;
        let positions = append_all(&mut wal, records);
        wal.sync().unwrap();
        assert!(positions.iter().all(|p| p.segment == 1));
        let end = wal.position().offset;
        (positions.iter().map(|p| p.offset).collect(), end)
    }

    fn assert_repaired_and_appendable(dir: &Path, expected: &[Record], cut_at: u64) {
        let opened = open(dir, 4096);
        assert_eq!(opened.records, expected);
        let repair = opened.repaired_tail.expect("torn tail reported");
        assert_eq!((repair.segment, repair.offset), (1, cut_at));
        assert!(repair.discarded_bytes > 0);
        let mut wal = opened.wal;
        assert_eq!(wal.append(5, b"after repair").unwrap().offset, cut_at);
        wal.sync().unwrap();
        drop(wal);

        let reopened = open(dir, 4096);
        assert_eq!(reopened.repaired_tail, None);
        assert_eq!(reopened.records[..expected.len()], *expected);
        assert_eq!(
            reopened.records[expected.len()..],
            [Record {
                kind: 5,
                payload: b"after repair".to_vec()
            }]
        );
    }

    #[test]
    fn a_file_truncated_mid_record_is_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let records = payloads(10);
        let (starts, end) = write_one_segment(dir.path(), &records);
        let last = starts[9];
        let file = OpenOptions::new()
            .write(true)
            .open(segment::path(dir.path(), 1))
            .unwrap();
        file.set_len(last + (end - last) / 2).unwrap();
        drop(file);
        assert_repaired_and_appendable(dir.path(), &records[..9], last);
        assert_eq!(read_segment(dir.path(), 1).len(), 4096);
    }

    #[test]
    fn a_last_record_with_zeroed_tail_is_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let records = payloads(10);
        let (starts, end) = write_one_segment(dir.path(), &records);
        let last = starts[9];
        let half = last + (end - last) / 2;
        write_at(dir.path(), 1, half, &vec![0; (end - half) as usize]);
        assert_repaired_and_appendable(dir.path(), &records[..9], last);
    }

    #[test]
    fn a_flipped_byte_in_the_last_record_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let records = payloads(10);
        let (starts, end) = write_one_segment(dir.path(), &records);
        flip_byte(dir.path(), 1, end - 1);
        assert_repaired_and_appendable(dir.path(), &records[..9], starts[9]);
    }

    #[test]
    fn a_flipped_byte_before_valid_records_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let records = payloads(10);
        let (starts, _) = write_one_segment(dir.path(), &records);
        // Payload byte of record 5, then its length field: the header
        // checksum keeps a damaged length from hiding the records after it.
        for offset in [starts[6] - 1, starts[5]] {
            let copy = tempfile::tempdir().unwrap();
            fs::copy(segment::path(dir.path(), 1), segment::path(copy.path(), 1)).unwrap();
            flip_byte(copy.path(), 1, offset);
            let err = Wal::open(copy.path(), options(4096)).unwrap_err();
            let (segment, at, message) = corrupt_fields(err);
            assert_eq!((segment, at), (1, starts[5]));
            assert!(message.contains("0000000000000001.wal"), "{message}");
            assert!(
                message.contains(&format!("offset {}", starts[5])),
                "{message}"
            );
        }
    }

    #[test]
    fn damage_in_an_earlier_segment_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = open(dir.path(), 128).wal;
        let positions = append_all(&mut wal, &payloads(30));
        wal.sync().unwrap();
        drop(wal);
        let in_first: Vec<_> = positions.iter().filter(|p| p.segment == 1).collect();
        let last_of_first = in_first.last().unwrap();
        // Even the final record of a sealed segment cannot be a torn tail.
        flip_byte(dir.path(), 1, last_of_first.offset + 4);
        let (segment, offset, message) =
            corrupt_fields(Wal::open(dir.path(), options(128)).unwrap_err());
        assert_eq!((segment, offset), (1, last_of_first.offset));
        assert!(message.contains("not the last"), "{message}");
    }

    #[test]
    fn data_after_a_zeroed_record_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let records = payloads(10);
        let (starts, _) = write_one_segment(dir.path(), &records);
        let len = (starts[5] - starts[4]) as usize;
        write_at(dir.path(), 1, starts[4], &vec![0; len]);
        let (segment, offset, _) =
            corrupt_fields(Wal::open(dir.path(), options(4096)).unwrap_err());
        assert_eq!((segment, offset), (1, starts[4]));
    }

    #[test]
    fn a_missing_segment_in_the_middle_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = open(dir.path(), 128).wal;
        append_all(&mut wal, &payloads(40));
        wal.sync().unwrap();
        drop(wal);
        assert!(segment::list(dir.path()).unwrap().len() >= 3);
        fs::remove_file(segment::path(dir.path(), 2)).unwrap();
        let (segment, _, message) =
            corrupt_fields(Wal::open(dir.path(), options(128)).unwrap_err());
        assert_eq!(segment, 2);
        assert!(message.contains("missing"), "{message}");
    }

    /// A crash can persist any prefix of the bytes written after the last
    /// sync. For every cut point, with the rest either gone or zero, the WAL
    /// must return exactly the records that lie wholly before the cut, and
    /// accept appends after them.
    #[test]
    fn every_cut_point_yields_exactly_the_complete_records_before_it() {
        let source = tempfile::tempdir().unwrap();
        let records = payloads(12);
        let (starts, end) = write_one_segment(source.path(), &records);
        let original = read_segment(source.path(), 1);
        for cut in 0..=end {
            for zero_fill in [false, true] {
                let dir = tempfile::tempdir().unwrap();
                let mut bytes = original.clone();
                if zero_fill {
                    bytes[cut as usize..].fill(0);
                } else {
                    bytes.truncate(cut as usize);
                }
                fs::write(segment::path(dir.path(), 1), &bytes).unwrap();

                let complete = starts
                    .iter()
                    .skip(1)
                    .chain([&end])
                    .filter(|&&e| e <= cut)
                    .count();
                let torn_start = starts.get(complete).copied().unwrap_or(end);
                let torn = !record::is_zero(&original[torn_start as usize..cut as usize]);
                let opened = open(dir.path(), 4096);
                assert_eq!(opened.records, records[..complete], "cut {cut}");
                assert_eq!(
                    opened.repaired_tail.map(|r| r.offset),
                    torn.then_some(torn_start),
                    "cut {cut}"
                );
                let mut wal = opened.wal;
                wal.append(9, b"next").unwrap();
                wal.sync().unwrap();
                drop(wal);
                let reopened = open(dir.path(), 4096).records;
                assert_eq!(reopened.len(), complete + 1, "cut {cut}");
                assert_eq!(reopened[complete].payload, b"next", "cut {cut}");
            }
        }
    }
}
