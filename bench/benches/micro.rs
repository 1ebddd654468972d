//! Criterion micro-benchmarks of the CPU work on the append path: encoding a record (header,
//! CRC, copy), checksumming a payload, decoding (what recovery and readers do), and building a
//! group-commit batch (encoding N records into one reused buffer, as the writer does).
//!
//! Run: `cargo bench -p logship-bench --bench micro`. Names are `area::op/key=value`.

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    black_box, criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput,
};
use logship_engine::record::{self, RECORD_HEADER_BYTES};
use logship_engine::{Epoch, Lsn};

/// Payload sizes: a small row change, a page, a large blob.
const SIZES: [usize; 3] = [100, 4 << 10, 64 << 10];
/// Records per batch for `batch::build`: a modest group commit.
const BATCH_RECORDS: usize = 64;
/// A large group commit of small records.
const LARGE_BATCH_RECORDS: usize = 1024;

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(50);
}

fn record_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("record::encode");
    configure(&mut group);
    for size in SIZES {
        let payload = payload(size);
        let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("size={size}"), |b| {
            b.iter(|| {
                out.clear();
                record::encode_into(&mut out, Lsn(42), Epoch(1), black_box(&payload));
                black_box(out.len())
            });
        });
    }
    group.finish();
}

fn record_header(c: &mut Criterion) {
    // What an appender does: checksum the payload outside the lock, then build the header.
    let mut group = c.benchmark_group("record::header");
    configure(&mut group);
    for size in SIZES {
        let payload = payload(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("size={size}"), |b| {
            b.iter(|| {
                let crc = record::payload_crc(black_box(&payload));
                record::encode_header(Lsn(42), Epoch(1), &crc)
            });
        });
    }
    group.finish();
}

fn record_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("record::decode");
    configure(&mut group);
    for size in SIZES {
        let mut buf = Vec::new();
        record::encode_into(&mut buf, Lsn(42), Epoch(1), &payload(size));
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("size={size}"), |b| {
            b.iter(|| record::decode(black_box(&buf)).map(|r| r.payload.len()));
        });
    }
    group.finish();
}

fn crc(c: &mut Criterion) {
    let mut group = c.benchmark_group("crc::crc32fast");
    configure(&mut group);
    for size in SIZES {
        let payload = payload(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("size={size}"), |b| {
            b.iter(|| crc32fast::hash(black_box(&payload)));
        });
    }
    group.finish();
}

fn batch_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch::build");
    configure(&mut group);
    let cases = SIZES
        .iter()
        .map(|&size| (BATCH_RECORDS, size))
        .chain([(LARGE_BATCH_RECORDS, SIZES[0])]);
    for (records, size) in cases {
        let payloads: Vec<Vec<u8>> = (0..records).map(|_| payload(size)).collect();
        let mut out = Vec::with_capacity(records * (RECORD_HEADER_BYTES + size));
        group.throughput(Throughput::Bytes((records * size) as u64));
        group.bench_function(format!("records={records},size={size}"), |b| {
            b.iter(|| {
                out.clear();
                for (i, p) in payloads.iter().enumerate() {
                    record::encode_into(&mut out, Lsn(1 + i as u64), Epoch(1), black_box(p));
                }
                black_box(out.len())
            });
        });
    }
    group.finish();
}

criterion_group!(
    micro,
    record_encode,
    record_header,
    record_decode,
    crc,
    batch_build
);
criterion_main!(micro);
