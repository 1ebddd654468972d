//! Fuzzing harnesses, shared by the cargo-fuzz targets in `fuzz/` and the corpus replay test
//! `engine/tests/fuzz_corpus.rs`; [`replay`] is the replay machinery every crate's
//! `fuzz_corpus` test uses. Hidden from the docs and not part of the API.
//!
//! Each harness takes arbitrary bytes and asserts properties of the engine. A harness never
//! panics on bad input: a panic is a finding, either an engine bug or a wrong property. Inputs
//! are capped at [`MAX_INPUT_BYTES`] and every loop is bounded by the input, so one run allocates
//! a bounded amount.
//!
//! - [`record_decode`]: the record codec. Decoding arbitrary bytes agrees with
//!   `decode_header`, a decoded record re-encodes to exactly the bytes it came from, and every
//!   single-bit flip outside the length field is rejected.
//! - [`segment_recovery`]: opening a log whose one segment holds fuzzed bytes. Recovery either
//!   refuses with a typed error or yields dense, readable LSNs; `verify` agrees with it; an append
//!   then gets the next LSN and survives a reopen. The first byte picks how the segment is made:
//!   raw bytes after a valid header, a whole raw file, raw bytes after a checksummed header with
//!   fuzzed fields, or valid records and one mutation. When the segment is built from records
//!   and then damaged without adding bytes (bit flips, truncation, lost sectors), a model predicts
//!   recovery's decision exactly: a torn tail within the segment's unsynced window is cut at the
//!   first damaged record, and damage followed by valid records beyond the window is corruption.
//! - [`header_codecs`]: the segment header and the `logship.meta` marker decode without panicking
//!   and, when they decode, re-encode to the same bytes.

pub mod replay;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::io::{Backend, FaultyVfs, OpenMode, Vfs};
use crate::log::Log;
use crate::options::Options;
use crate::record::{self, DecodeError, RecordRef, RECORD_HEADER_BYTES};
use crate::recovery::RecoveryReport;
use crate::segment::{
    segment_name, LogMeta, SegmentHeader, FORMAT_VERSION, LEGACY_FORMAT_VERSION, META_BYTES,
    META_FILE, SEGMENT_HEADER_BYTES,
};
use crate::types::{Epoch, Lsn};
use crate::verify::{verify_with, VerifyReport};

/// Inputs are cut to this many bytes.
pub const MAX_INPUT_BYTES: usize = 64 << 10;

/// Records decoded from one `record_decode` input at most (each is at least 32 bytes anyway).
const MAX_RECORDS_WALKED: usize = MAX_INPUT_BYTES / RECORD_HEADER_BYTES;
/// Single-bit flips tried on each decoded record.
const FLIPS_PER_RECORD: usize = 4;

/// Segment size of the fuzzed log.
const SEGMENT_BYTES: usize = 64 << 10;
/// Largest payload the fuzzed log accepts.
const MAX_RECORD_BYTES: usize = 8 << 10;
/// The unsynced window the writer of the fuzzed log uses: two buffers of one maximum record.
const WRITER_WINDOW_BYTES: u64 = 2 * (MAX_RECORD_BYTES + RECORD_HEADER_BYTES) as u64;
/// Windows a fuzzed segment header may declare. Those below the writer's make it roll over to a
/// new segment before its first append.
const WINDOWS_BYTES: [u64; 4] = [4 << 10, 8 << 10, WRITER_WINDOW_BYTES, 32 << 10];
/// Records built in the records shape at most.
const MAX_BUILT_RECORDS: usize = 64;
/// Largest payload built in the records shape.
const MAX_BUILT_PAYLOAD_BYTES: usize = 1024;
/// Sector size of the lost-sectors mutation (the fault-injecting file system's).
const SECTOR_BYTES: usize = 512;
/// The fuzzed log's directory on the in-memory file system.
const DIR: &str = "/fuzz/log";
/// Payload appended after recovery.
const APPENDED: &[u8] = b"appended after recovery";

/// Decodes arbitrary bytes as a sequence of records and checks the codec's properties.
///
/// # Panics
/// When a property fails: that is a finding.
pub fn record_decode(data: &[u8]) {
    let data = &data[..data.len().min(MAX_INPUT_BYTES)];
    let mut offset = 0;
    for _ in 0..MAX_RECORDS_WALKED {
        match check_record(&data[offset..]) {
            Some(len) => offset += len,
            None => return,
        }
    }
}

/// Checks one decode at the start of `buf`; returns the record's length when it is valid.
fn check_record(buf: &[u8]) -> Option<usize> {
    let header = record::decode_header(buf);
    let rec = match record::decode(buf) {
        Ok(rec) => rec,
        Err(e) => {
            check_rejection(buf, header, e);
            return None;
        }
    };
    assert_eq!(header, Ok(rec.header), "decode and decode_header disagree");
    let len = rec.encoded_len();
    let mut out = Vec::with_capacity(len);
    record::encode_into(&mut out, rec.header.lsn, rec.header.epoch, rec.payload);
    assert!(
        out == buf[..len],
        "record {} re-encodes to other bytes: decoded {:02x?}, encoded {:02x?}",
        rec.header.lsn,
        &buf[..len.min(64)],
        &out[..len.min(64)]
    );
    assert_eq!(
        record::decode(&out),
        Ok(rec),
        "a re-encoded record decodes differently"
    );
    assert!(
        matches!(
            record::decode(&buf[..len - 1]),
            Err(DecodeError::Incomplete { .. })
        ),
        "record {} decodes with its last byte missing",
        rec.header.lsn
    );
    check_flips(&out, rec);
    Some(len)
}

/// `decode` failed with `e`: it must be for the reason `decode_header` and the length give.
fn check_rejection(
    buf: &[u8],
    header: std::result::Result<record::RecordHeader, DecodeError>,
    e: DecodeError,
) {
    let h = match header {
        Err(he) => {
            assert_eq!(
                e, he,
                "decode and decode_header refuse for different reasons"
            );
            return;
        }
        Ok(h) => h,
    };
    let needed = record::encoded_len(h.payload_len as usize);
    if buf.len() < needed {
        let available = buf.len();
        assert_eq!(e, DecodeError::Incomplete { needed, available });
    } else {
        assert!(
            matches!(e, DecodeError::Checksum { .. }),
            "a complete record with a valid header failed with {e:?}, not a checksum mismatch"
        );
    }
}

/// CRC-32 detects every single-bit error in a message of fixed length, so flipping any bit after
/// the length field (which would change the length) must make the record invalid.
fn check_flips(encoded: &[u8], rec: RecordRef<'_>) {
    let bits = (encoded.len() - 4) * 8;
    let mut copy = encoded.to_vec();
    for i in 0..FLIPS_PER_RECORD.min(bits) {
        let bit = 32 + (rec.header.crc as usize).wrapping_add(i * 7919) % bits;
        copy[bit / 8] ^= 1 << (bit % 8);
        assert!(
            record::decode(&copy).is_err(),
            "record {} still decodes with bit {bit} flipped",
            rec.header.lsn
        );
        copy[bit / 8] ^= 1 << (bit % 8);
    }
}

/// Decodes `data` as a segment header and as a `logship.meta` marker; a successful decode must
/// re-encode to the same bytes.
///
/// # Panics
/// When a property fails: that is a finding.
pub fn header_codecs(data: &[u8]) {
    if let Ok(h) = SegmentHeader::decode(data) {
        let encoded = h.encode();
        assert!(
            encoded[..] == data[..SEGMENT_HEADER_BYTES],
            "segment header {h:?} re-encodes to other bytes: {:02x?} vs {:02x?}",
            &data[..SEGMENT_HEADER_BYTES],
            encoded
        );
        assert_eq!(SegmentHeader::decode(&encoded), Ok(h));
    }
    if let Ok(m) = LogMeta::decode(data) {
        let encoded = m.encode();
        assert!(
            encoded[..] == data[..META_BYTES],
            "logship.meta {m:?} re-encodes to other bytes: {:02x?} vs {:02x?}",
            &data[..META_BYTES],
            encoded
        );
        assert_eq!(LogMeta::decode(&encoded), Ok(m));
    }
}

/// Reads an input front to back; reads past the end give zeros.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(std::array::from_fn(|_| self.byte()))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

/// How the segment file is made from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// A valid header, then the input's bytes.
    RawTail,
    /// A valid header, valid records, then one mutation chosen by the input.
    Records,
    /// The input is the whole file, header included, at its own length.
    RawFile,
    /// A header with a valid checksum whose fields come from the input, then the input's bytes:
    /// what a buggy or hostile writer could leave, past the checksum that stops random damage.
    HeaderFields,
}

/// What recovery must do with a segment built by [`Shape::Records`] and damaged without new
/// bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Open succeeds with `last` records; a torn tail is reported at `(offset, discarded)`.
    Recovered { last: u64, torn: Option<(u64, u64)> },
    /// Open refuses with corruption at `offset`.
    Corrupt { offset: u64 },
}

/// What the harness knows about the segment it built.
#[derive(Debug, Default)]
struct Model {
    /// Payloads of LSN 1, 2, ... as built.
    payloads: Vec<Vec<u8>>,
    /// Records 1..=intact lie before the first damaged byte: recovery must return them as built.
    intact: u64,
    /// Recovery's exact decision, where the model can predict it.
    outcome: Option<Outcome>,
}

/// Builds a log directory whose one segment holds the fuzzed bytes, opens it, and checks
/// recovery, reads, `verify`, an append and a reopen.
///
/// # Panics
/// When a property fails: that is a finding.
pub fn segment_recovery(data: &[u8]) {
    let data = &data[..data.len().min(MAX_INPUT_BYTES)];
    header_codecs(data);
    let (shape, segment, model) = build_segment(&mut Input(data));
    let vfs = FaultyVfs::new(0);
    make_log_dir(&vfs, &segment);
    let before = verify_with(&vfs, Path::new(DIR));
    let scanned = scan_all(&vfs);
    match Log::open(DIR, options(&vfs)) {
        Err(e) => check_refusal(&e, &before, &model, shape),
        Ok(log) => {
            check_recovered(&log, &before, &model);
            check_scan_agrees(&log, scanned);
            append_and_reopen(log, &vfs);
        }
    }
}

/// The read-only scanner over the directory as built (it must never panic).
fn scan_all(vfs: &FaultyVfs) -> Result<Vec<(Lsn, Vec<u8>)>> {
    let scanner =
        crate::scan::scan_with(std::sync::Arc::new(vfs.clone()), Path::new(DIR), Lsn::ZERO)?;
    scanner
        .map(|r| r.map(|r| (r.lsn, r.payload.to_vec())))
        .collect()
}

/// Where open recovers the log, a read-only scan of it beforehand returns exactly its records.
fn check_scan_agrees(log: &Log, scanned: Result<Vec<(Lsn, Vec<u8>)>>) {
    let scanned = match scanned {
        Ok(s) => s,
        Err(e) => panic!("open recovered the log but a read-only scan failed: {e}"),
    };
    let read: Vec<(Lsn, Vec<u8>)> = log
        .read_from(Lsn::FIRST)
        .expect("reader")
        .map(|r| r.map(|r| (r.lsn, r.payload.to_vec())).expect("record"))
        .collect();
    assert_eq!(scanned, read, "the scanner and the recovered log disagree");
}

/// The segment file's bytes, in the shape and with the window the first byte selects.
fn build_segment(input: &mut Input<'_>) -> (Shape, Vec<u8>, Model) {
    let selector = input.byte();
    let window = WINDOWS_BYTES[usize::from(selector / 4) % WINDOWS_BYTES.len()];
    // Segments without markers: the rules of both versions agree on them.
    let version = if selector & 0x40 != 0 {
        LEGACY_FORMAT_VERSION
    } else {
        FORMAT_VERSION
    };
    match selector % 4 {
        0 => (
            Shape::RawTail,
            raw_tail(segment_header(window, version), input),
            Model::default(),
        ),
        1 => {
            let (image, model) = build_records(input, window, version);
            (Shape::Records, image, model)
        }
        2 => {
            let image = input.rest();
            header_codecs(image);
            (Shape::RawFile, image.to_vec(), Model::default())
        }
        _ => {
            let header = SegmentHeader {
                format_version: version,
                base_lsn: Lsn::FIRST,
                created_unix_nanos: input.u64(),
                segment_size_bytes: input.u64(),
                max_unsynced_bytes: input.u64(),
                epoch: Epoch(input.u64()),
            };
            let image = raw_tail(header.encode(), input);
            (Shape::HeaderFields, image, Model::default())
        }
    }
}

/// `header`, the rest of the input, zeros up to the segment size.
fn raw_tail(header: [u8; SEGMENT_HEADER_BYTES], input: &mut Input<'_>) -> Vec<u8> {
    let mut image = header.to_vec();
    image.extend_from_slice(input.rest());
    image.resize(SEGMENT_BYTES.max(image.len()), 0);
    image
}

fn segment_header(window: u64, version: u32) -> [u8; SEGMENT_HEADER_BYTES] {
    SegmentHeader {
        format_version: version,
        base_lsn: Lsn::FIRST,
        created_unix_nanos: 0,
        segment_size_bytes: SEGMENT_BYTES as u64,
        max_unsynced_bytes: window,
        epoch: Epoch(0),
    }
    .encode()
}

/// A payload whose bytes depend on its LSN, so that a record read at the wrong place differs.
fn payload(lsn: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (lsn.wrapping_mul(31).wrapping_add(i as u64 * 7) % 251) as u8)
        .collect()
}

/// [`Shape::Records`]: valid records, then one mutation; returns the image and its model.
fn build_records(input: &mut Input<'_>, window: u64, version: u32) -> (Vec<u8>, Model) {
    let mut image = segment_header(window, version).to_vec();
    let mut spans = Vec::new();
    let mut payloads = Vec::new();
    let count = usize::from(input.byte()) % MAX_BUILT_RECORDS + 1;
    for lsn in 1..=count as u64 {
        let len = usize::from(input.u16()) % (MAX_BUILT_PAYLOAD_BYTES + 1);
        if image.len() + record::encoded_len(len) > SEGMENT_BYTES {
            break;
        }
        let p = payload(lsn, len);
        let start = image.len();
        record::encode_into(&mut image, Lsn(lsn), Epoch(0), &p);
        spans.push((start, image.len()));
        payloads.push(p);
    }
    let end = image.len();
    image.resize(SEGMENT_BYTES, 0);
    let original = image.clone();
    let adds_bytes = mutate(&mut image, end, input);
    let intact = spans
        .iter()
        .take_while(|&&(s, e)| original[s..e] == image[s..e])
        .count();
    let outcome = (!adds_bytes).then(|| predict(&original, &image, &spans, window));
    let model = Model {
        payloads,
        intact: intact as u64,
        outcome,
    };
    (image, model)
}

/// Damages the records in `image[SEGMENT_HEADER_BYTES..end]`, choosing where from the end so that
/// small inputs reach the unsynced window. Returns whether the mutation wrote new bytes (garbage)
/// rather than only flipping or zeroing existing ones.
fn mutate(image: &mut [u8], end: usize, input: &mut Input<'_>) -> bool {
    let body = end - SEGMENT_HEADER_BYTES;
    let from_end = |input: &mut Input<'_>| end - 1 - usize::from(input.u16()) % body;
    match input.byte() % 4 {
        0 => {
            for _ in 0..input.byte() % 8 + 1 {
                let at = from_end(input);
                image[at] ^= input.byte().max(1);
            }
            false
        }
        1 => {
            let at = from_end(input);
            image[at..].fill(0);
            false
        }
        2 => {
            let at = from_end(input);
            let garbage = input.rest();
            let n = garbage.len().min(image.len() - at);
            image[at..at + n].copy_from_slice(&garbage[..n]);
            true
        }
        _ => {
            let last_sector = (end - 1) / SECTOR_BYTES;
            for _ in 0..input.byte() % 4 + 1 {
                let sector = last_sector - usize::from(input.byte()) % (last_sector + 1);
                let start = (sector * SECTOR_BYTES).max(SEGMENT_HEADER_BYTES);
                image[start..(sector + 1) * SECTOR_BYTES].fill(0);
            }
            false
        }
    }
}

/// Recovery's decision on records damaged without new bytes: the scan stops at the first damaged
/// record `k`; intact records after it ending more than `window` bytes past its start are
/// corruption, otherwise the tail is torn (or clean, when `k`'s header is all zeros and nothing
/// follows) and the log keeps `1..k`.
fn predict(original: &[u8], mutated: &[u8], spans: &[(usize, usize)], window: u64) -> Outcome {
    let intact = |&(s, e): &(usize, usize)| original[s..e] == mutated[s..e];
    let Some(k) = spans.iter().position(|span| !intact(span)) else {
        let last = spans.len() as u64;
        return Outcome::Recovered { last, torn: None };
    };
    let pos = spans[k].0;
    let later: Vec<&(usize, usize)> = spans[k + 1..].iter().filter(|s| intact(s)).collect();
    if let Some(&&(_, last_end)) = later.last() {
        if (last_end - pos) as u64 > window {
            return Outcome::Corrupt { offset: pos as u64 };
        }
    }
    let head = &mutated[pos..(pos + RECORD_HEADER_BYTES).min(mutated.len())];
    let torn = (!later.is_empty() || head.iter().any(|&b| b != 0))
        .then_some((pos as u64, later.len() as u64));
    Outcome::Recovered {
        last: k as u64,
        torn,
    }
}

fn write_file(vfs: &FaultyVfs, path: &Path, bytes: &[u8]) {
    let file = vfs
        .open(path, OpenMode::CreateNew)
        .expect("creating a file in a fresh in-memory directory");
    if !bytes.is_empty() {
        file.write_all_at(bytes, 0)
            .expect("writing below MAX_FILE_BYTES with no faults");
    }
    file.sync_data().expect("syncing with no faults");
}

fn make_log_dir(vfs: &FaultyVfs, segment: &[u8]) {
    let dir = Path::new(DIR);
    vfs.create_dir_all(dir).expect("in-memory mkdir");
    let meta = LogMeta {
        format_version: FORMAT_VERSION,
        created_unix_nanos: 0,
    };
    write_file(vfs, &dir.join(META_FILE), &meta.encode());
    write_file(vfs, &dir.join(segment_name(Lsn::FIRST)), segment);
    vfs.sync_dir(dir).expect("in-memory directory sync");
}

fn options(vfs: &FaultyVfs) -> Options {
    Options {
        vfs: Some(Arc::new(vfs.clone())),
        create_if_missing: false,
        segment_size_bytes: SEGMENT_BYTES as u64,
        max_record_bytes: MAX_RECORD_BYTES,
        max_batch_bytes: 4096,
        max_queue_bytes: 64 << 10,
        prezero_segments: false,
        backend: Backend::Portable,
        ..Options::default()
    }
}

/// Open refused: for a reason the input explains, and `verify` saw the same damage.
fn check_refusal(e: &Error, before: &Result<VerifyReport>, model: &Model, shape: Shape) {
    match e {
        Error::Corruption { offset, .. } => {
            if let Some(outcome) = model.outcome {
                assert_eq!(
                    outcome,
                    Outcome::Corrupt { offset: *offset },
                    "open refused ({e}) where the model predicts otherwise"
                );
            }
            let report = before
                .as_ref()
                .expect("verify of a log that open calls corrupt");
            assert!(
                !report.is_clean(),
                "open refused ({e}) but verify found the log clean: {report:?}"
            );
        }
        Error::UnsupportedVersion { .. } if shape == Shape::RawFile => {
            assert!(
                matches!(before, Err(Error::UnsupportedVersion { .. })),
                "open refused ({e}) but verify said {before:?}"
            );
        }
        _ => panic!("open failed with an error the input cannot explain: {e}"),
    }
}

/// Open succeeded: the report, the model, `verify` and a full read agree.
fn check_recovered(log: &Log, before: &Result<VerifyReport>, model: &Model) {
    let last = log.last_lsn();
    let report = log.recovery_report();
    assert_eq!(
        report.last_lsn, last,
        "report and log disagree on the last LSN"
    );
    assert_eq!(log.first_lsn(), Lsn::FIRST);
    assert!(
        last.get() >= model.intact,
        "recovered up to {last} but records up to {} were intact",
        model.intact
    );
    match model.outcome {
        None => {}
        Some(Outcome::Corrupt { offset }) => {
            panic!("open recovered up to {last}; the model predicts corruption at {offset}")
        }
        Some(Outcome::Recovered { last: want, torn }) => {
            assert_eq!(last, Lsn(want), "recovered the wrong number of records");
            let got = report
                .torn_tail
                .as_ref()
                .map(|t| (t.offset, t.discarded_records));
            assert_eq!(
                got, torn,
                "torn tail (offset, discarded) differs from the model"
            );
            if let Some(t) = &report.torn_tail {
                assert_eq!(t.lsn, last.next(), "torn tail names the wrong LSN");
            }
        }
    }
    check_verify_agrees(before, report);
    check_reads(log, model);
}

/// `verify` on the directory before open must find what recovery found.
fn check_verify_agrees(before: &Result<VerifyReport>, report: &RecoveryReport) {
    let v = match before {
        Ok(v) => v,
        Err(e) => panic!("open recovered the log but verify failed: {e}"),
    };
    assert!(
        v.is_clean(),
        "open recovered the log but verify reports {v:?}"
    );
    assert_eq!(v.last_lsn, report.last_lsn, "verify and recovery disagree");
    let torn = |t: &crate::recovery::TornTail| (t.offset, t.lsn, t.discarded_records);
    assert_eq!(
        v.torn_tail.as_ref().map(torn),
        report.torn_tail.as_ref().map(torn),
        "verify and recovery see different torn tails"
    );
}

/// Every recovered record reads back, densely, and the intact ones as built.
fn check_reads(log: &Log, model: &Model) {
    let last = log.last_lsn();
    let mut next = Lsn::FIRST;
    for item in log
        .read_from(Lsn::FIRST)
        .expect("reading from the first LSN")
    {
        let rec = item.unwrap_or_else(|e| panic!("reading recovered record {next}: {e}"));
        assert_eq!(rec.lsn, next, "records are not dense");
        assert!(next <= last, "read record {next} past the last LSN {last}");
        if next.get() <= model.intact {
            let want = &model.payloads[(next.get() - 1) as usize];
            assert!(
                rec.payload[..] == want[..],
                "record {next} read back changed"
            );
        }
        next = next.next();
    }
    assert_eq!(next.prev(), last, "the reader stopped before the last LSN");
}

/// Appends one record, closes, verifies, reopens: the record is there with the next LSN.
fn append_and_reopen(log: Log, vfs: &FaultyVfs) {
    let want = log.last_lsn().next();
    let lsn = log
        .append(Bytes::from_static(APPENDED))
        .expect("append after recovery")
        .wait()
        .expect("append after recovery becomes durable");
    assert_eq!(
        lsn, want,
        "the first append after recovery got the wrong LSN"
    );
    log.close().expect("close after one append");
    let v = verify_with(vfs, Path::new(DIR)).expect("verify after append");
    assert!(v.is_clean(), "verify after an append reports {v:?}");
    assert_eq!(v.last_lsn, lsn, "verify after append: wrong last LSN");
    assert_eq!(
        v.records,
        lsn.get(),
        "verify after append: wrong record count"
    );
    let log = Log::open(DIR, options(vfs)).expect("reopen after append");
    assert_eq!(log.last_lsn(), lsn, "reopen lost the appended record");
    let rec = log
        .read_from(lsn)
        .expect("reader at the appended LSN")
        .next()
        .expect("the appended record is readable")
        .expect("the appended record reads back");
    assert!(rec.payload[..] == *APPENDED, "the appended record changed");
    log.close().expect("close after reopen");
}
