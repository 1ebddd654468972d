//! The epoch local appends are written in: [`Log::set_epoch`], [`Log::append_in_epoch`], and
//! how [`Log::append_replicated`] and reopening carry it.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::io::Backend;
use crate::record::{decode_frame, encode_into, Frame};
use crate::segment::{segment_name, SEGMENT_HEADER_BYTES};
use crate::{Epoch, Error, Log, Lsn, Options};

fn options() -> Options {
    Options {
        create_if_missing: true,
        segment_size_bytes: 64 << 10,
        max_record_bytes: 8 << 10,
        max_batch_bytes: 16 << 10,
        max_queue_bytes: 256 << 10,
        backend: Backend::Portable,
        ..Options::default()
    }
}

fn open(dir: &Path) -> Log {
    Log::open(dir, options()).expect("open")
}

/// Every record's LSN and epoch, in order.
fn epochs(log: &Log) -> Vec<(u64, u64)> {
    log.read_from(Lsn::ZERO)
        .expect("reader")
        .map(|r| r.map(|r| (r.lsn.get(), r.epoch.get())).expect("record"))
        .collect()
}

fn append(log: &Log, n: usize) {
    for i in 0..n {
        drop(log.append(Bytes::from(format!("r{i}"))).expect("append"));
    }
    log.sync().expect("sync");
}

#[test]
fn appends_after_set_epoch_carry_it_and_reopen_keeps_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let log = open(&dir);
    assert_eq!(log.epoch(), Epoch(0));
    append(&log, 2);
    log.set_epoch(Epoch(3)).expect("raise");
    assert_eq!(log.epoch(), Epoch(3));
    append(&log, 2);
    let expected = vec![(1, 0), (2, 0), (3, 3), (4, 3)];
    assert_eq!(epochs(&log), expected);
    log.close().expect("close");

    let log = open(&dir);
    assert_eq!(epochs(&log), expected);
    assert_eq!(log.epoch(), Epoch(3), "the epoch of the last record");
    append(&log, 1);
    assert_eq!(epochs(&log).last(), Some(&(5, 3)));
}

#[test]
fn the_epoch_never_goes_back() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = open(tmp.path());
    log.set_epoch(Epoch(5)).expect("raise");
    log.set_epoch(Epoch(5)).expect("the same epoch again");
    match log.set_epoch(Epoch(4)) {
        Err(Error::StaleEpoch { current, requested }) => {
            assert_eq!((current, requested), (Epoch(5), Epoch(4)));
        }
        other => panic!("expected StaleEpoch, got {other:?}"),
    }
    assert_eq!(log.epoch(), Epoch(5));
}

#[test]
fn append_in_epoch_raises_or_refuses_in_one_step() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = open(tmp.path());
    let a = log.append_in_epoch(Epoch(2), Bytes::from_static(b"a"));
    drop(a.expect("newer epoch"));
    let b = log.append_in_epoch(Epoch(2), Bytes::from_static(b"b"));
    drop(b.expect("same epoch"));
    let refused = log.append_in_epoch(Epoch(1), Bytes::from_static(b"c"));
    assert!(
        matches!(refused, Err(Error::StaleEpoch { .. })),
        "{refused:?}"
    );
    log.sync().expect("sync");
    assert_eq!(epochs(&log), vec![(1, 2), (2, 2)]);
    assert_eq!(log.last_lsn(), Lsn(2), "nothing appended when refused");
}

#[test]
fn replicated_records_keep_their_epochs_and_raise_the_logs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("log");
    let log = open(&dir);
    log.set_epoch(Epoch(4)).expect("raise");
    let mut run = Vec::new();
    encode_into(&mut run, Lsn(1), Epoch(1), b"old");
    encode_into(&mut run, Lsn(2), Epoch(6), b"new");
    log.append_replicated(Bytes::from(run))
        .expect("append")
        .wait()
        .expect("durable");
    assert_eq!(epochs(&log), vec![(1, 1), (2, 6)]);
    assert_eq!(log.epoch(), Epoch(6));
    append(&log, 1);
    assert_eq!(epochs(&log).last(), Some(&(3, 6)));
    log.close().expect("close");
    assert_eq!(open(&dir).epoch(), Epoch(6));
}

#[test]
fn epochs_never_decrease_along_lsns_under_concurrent_appends() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = Arc::new(open(tmp.path()));
    let done = Arc::new(AtomicUsize::new(0));
    let appenders: Vec<_> = (0..4)
        .map(|_| {
            let (log, done) = (Arc::clone(&log), Arc::clone(&done));
            std::thread::spawn(move || {
                append(&log, 200);
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    let mut epoch = 0;
    while done.load(Ordering::SeqCst) < appenders.len() {
        epoch += 1;
        log.set_epoch(Epoch(epoch)).expect("raise");
        std::thread::yield_now();
    }
    for a in appenders {
        a.join().expect("appender");
    }
    let got = epochs(&log);
    assert_eq!(got.len(), 800);
    assert!(got.windows(2).all(|w| w[0].1 <= w[1].1), "{got:?}");
}

/// The epochs of the write markers in the segment that starts at `base`, in order.
fn marker_epochs(dir: &Path, base: Lsn) -> Vec<u64> {
    let bytes = std::fs::read(dir.join(segment_name(base))).expect("segment");
    let mut at = SEGMENT_HEADER_BYTES;
    let mut out = Vec::new();
    while let Ok(frame) = decode_frame(&bytes[at..]) {
        at += frame.encoded_len();
        if let Frame::Marker(m) = frame {
            out.push(m.epoch.get());
        }
    }
    out
}

#[test]
fn write_markers_carry_the_epoch_of_the_last_record_written() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = open(tmp.path());
    append(&log, 1);
    log.set_epoch(Epoch(7)).expect("raise");
    append(&log, 1);
    log.close().expect("close");
    let markers = marker_epochs(tmp.path(), Lsn(1));
    assert_eq!(markers.first(), Some(&0), "{markers:?}");
    assert_eq!(markers.last(), Some(&7), "{markers:?}");
}

#[test]
fn truncation_keeps_the_epoch() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = open(tmp.path());
    append(&log, 1);
    log.set_epoch(Epoch(2)).expect("raise");
    append(&log, 1);
    log.truncate_after(Lsn(1)).expect("truncate");
    assert_eq!(log.epoch(), Epoch(2));
    append(&log, 1);
    assert_eq!(epochs(&log), vec![(1, 0), (2, 2)]);
}
