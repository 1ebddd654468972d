//! `logship repair DIR --from HOST:PORT`: repairs a damaged log, offline, with the records of a
//! healthy node of the same cluster, fetched from its client port (`listen_client`; a primary or
//! a follower).
//!
//! Steps: `verify` first, printing what is damaged (a clean log without a torn tail ends there,
//! exit 0, without contacting the remote). Then the log is opened with
//! [`RecoveryMode::Salvage`]: on damage in the last segment's synced records, the open copies
//! that segment to a quarantine file and cuts the log before the damage; a damaged sealed
//! segment header marks that segment damaged. One scrub pass then checks every frame of the
//! sealed segments and marks those it finds damaged. Each damaged sealed segment is replaced
//! whole with the remote's copy of its LSNs ([`Log::repair_segment`], which keeps the damaged
//! bytes in a `quarantine-*.seg` file), and the cut records are appended again from the remote
//! ([`Log::append_replicated`]), as far as the log held them (the node catches up the rest when
//! it rejoins). Last, the log is closed and verified again.
//!
//! The scrub pass stands in for `full_scan_on_open`: a sealed segment that the full scan at open
//! finds damaged is recorded as ending at its last good record, not at the LSN before the next
//! segment, so [`Log::repair_segment`] would build a segment too short to read back. The
//! scrubber marks the segment with its whole range.
//!
//! Nothing the remote sends goes in unchecked. The client checks each record's CRC against its
//! bytes; here each record must carry the next LSN expected, and re-encoding its LSN, epoch and
//! payload must reproduce that CRC, so the bytes written are exactly those a node of this build
//! writes. Before the cut tail is refilled, the remote's record at the log's new last LSN must
//! have the local record's CRC: otherwise the two logs diverged and appending would splice two
//! histories.
//!
//! Exit codes: 0 when the log verifies clean afterwards; 1 when damage remains (including damage
//! the salvage open cannot set aside, such as a damaged `logship.meta`) or the remote's records
//! were refused (diverged history, a record out of sequence or that does not re-encode to its
//! CRC); 2 for usage, I/O and connection errors, a log open elsewhere (the engine's lock),
//! and a remote that cannot supply a range (purged there, or its own copy is damaged), which the
//! error line names.
//!
//! It does not catch the log up past what it held, never repairs a log a running node has open,
//! and does not choose a remote: the operator names a healthy one.

use std::fmt;
use std::io::{self, Write};
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use logship::options::{
    max_record_bytes_fitting, DEFAULT_MAX_RECORD_BYTES, DEFAULT_SEGMENT_SIZE_BYTES,
    MIN_SEGMENT_SIZE_BYTES,
};
use logship::record::{self, MAX_PAYLOAD_BYTES, RECORD_HEADER_BYTES};
use logship::segment::{classify, EntryKind};
use logship::{
    Bytes, Client, Corruption, DamagedSegment, Log, Lsn, Options, Record, RecoveryMode,
    SalvageAction, ScrubOptions,
};

use super::EXIT_CORRUPT;

/// Bytes asked for per read of the remote (its client port caps a read at 8 MiB).
const READ_PIECE_BYTES: u32 = 4 << 20;
/// Bytes asked for when only one record is wanted (at least one whole record comes back).
const ONE_RECORD_READ_BYTES: u32 = 64 << 10;
/// Bytes the scrub pass reads per step.
const SCRUB_STEP_BYTES: usize = 16 << 20;
/// Default bound on connecting and on each answer, in milliseconds.
const DEFAULT_TIMEOUT_MS: u64 = 5_000;

/// Arguments of `logship repair`.
#[derive(Debug, clap::Args)]
pub struct RepairArgs {
    /// The log directory. Its node must be stopped.
    dir: PathBuf,
    /// Client port (`listen_client`) of a healthy node of the same cluster.
    #[arg(long, value_name = "HOST:PORT")]
    from: String,
    /// Bound on connecting to the remote and on each of its answers, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_TIMEOUT_MS)]
    timeout_ms: u64,
    #[command(flatten)]
    connect: super::ConnectArgs,
}

/// Why the remote's records were not used (exit 1): they do not continue this log as it was.
#[derive(Debug)]
enum Refusal {
    /// The record before the cut differs here and on the remote.
    Diverged { lsn: Lsn, local: u32, remote: u32 },
    /// The remote sent a record other than the next LSN expected.
    OutOfSequence { expected: Lsn, found: Lsn },
    /// Re-encoding the remote's record gives another CRC than the one it sent.
    Reencoded { lsn: Lsn, remote: u32, encoded: u32 },
    /// A payload larger than any record can hold.
    TooLarge { lsn: Lsn, len: usize },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Diverged { lsn, local, remote } => write!(
                f,
                "the logs diverged: LSN {lsn} has CRC {local:#010x} here and {remote:#010x} on \
                 the remote"
            ),
            Refusal::OutOfSequence { expected, found } => write!(
                f,
                "the remote sent LSN {found} where {expected} was expected"
            ),
            Refusal::Reencoded {
                lsn,
                remote,
                encoded,
            } => write!(
                f,
                "the remote's record {lsn} carries CRC {remote:#010x} but re-encodes to \
                 {encoded:#010x}: it is not a record as this build writes it"
            ),
            Refusal::TooLarge { lsn, len } => write!(
                f,
                "the remote's record {lsn} has a payload of {len} bytes, above {MAX_PAYLOAD_BYTES}"
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// Runs `logship repair`.
pub fn run(args: RepairArgs) -> anyhow::Result<ExitCode> {
    say(format_args!("log:       {}", args.dir.display()))?;
    if logship::repair_meta(&args.dir)? {
        say(format_args!(
            "repaired:  logship.meta was damaged: rewritten (its bytes kept in quarantine-meta-*.seg)"
        ))?;
    }
    if !damage_before(&args.dir)? {
        say(format_args!("status:    clean, nothing to repair"))?;
        return Ok(ExitCode::SUCCESS);
    }
    let log = match open_salvage(&args.dir) {
        Ok(log) => log,
        Err(e) if is_corruption(&e) => {
            say(format_args!("corrupt:   {e:#}"))?;
            say(format_args!(
                "status:    CORRUPT (damage the salvage open cannot set aside)"
            ))?;
            return Ok(ExitCode::from(EXIT_CORRUPT));
        }
        Err(e) => return Err(e),
    };
    scrub(&log, &args.dir)?;
    let mut remote = Remote::new(
        args.from,
        Duration::from_millis(args.timeout_ms),
        args.connect.load()?,
    );
    let repaired = repair(&log, &mut remote);
    let closed = log.close();
    let refused = match repaired {
        Ok(()) => false,
        Err(e) if e.chain().any(|c| c.is::<Refusal>()) => {
            say(format_args!("refused:   {e:#}"))?;
            true
        }
        Err(e) => return Err(e),
    };
    closed.context("closing the log")?;
    verify_after(&args.dir, refused)
}

fn is_corruption(e: &anyhow::Error) -> bool {
    e.downcast_ref::<logship::Error>()
        .is_some_and(logship::Error::is_corruption)
}

/// Prints one line on stdout (a closed stdout is an error, not a panic).
fn say(line: fmt::Arguments<'_>) -> anyhow::Result<()> {
    writeln!(io::stdout(), "{line}").context("writing stdout")
}

/// Verifies the log and prints what is damaged. False when there is nothing to repair.
fn damage_before(dir: &Path) -> anyhow::Result<bool> {
    let report = match logship::verify(dir) {
        Ok(r) => r,
        // Damage the verifier could not walk past; the salvage open judges it.
        Err(e @ logship::Error::Corruption { .. }) => {
            say(format_args!("damaged:   {e}"))?;
            return Ok(true);
        }
        Err(e) => return Err(e.into()),
    };
    for c in &report.corruptions {
        say(format_args!("damaged:   {c}"))?;
    }
    if let Some(t) = &report.torn_tail {
        say(format_args!(
            "torn tail: {} at offset {} (LSN {}): {} unproven records, cut at open",
            t.segment.display(),
            t.offset,
            t.lsn,
            t.discarded_records
        ))?;
    }
    Ok(!report.corruptions.is_empty() || report.torn_tail.is_some())
}

/// Opens the log setting its damage aside ([`RecoveryMode::Salvage`]).
fn open_salvage(dir: &Path) -> anyhow::Result<Log> {
    let segment_size_bytes = segment_size(&segment_files(dir));
    let options = Options {
        create_if_missing: false,
        recovery: RecoveryMode::Salvage,
        // The scrub pass checks the sealed segments' records instead (see the module docs).
        full_scan_on_open: false,
        segment_size_bytes,
        max_record_bytes: max_record_bytes(segment_size_bytes),
        ..Options::default()
    };
    match Log::open(dir, options) {
        Ok(log) => Ok(log),
        Err(e @ logship::Error::Locked { .. }) => {
            Err(anyhow::Error::new(e).context("stop the node that has the log open, then repair"))
        }
        Err(e) => Err(e.into()),
    }
}

/// Each segment file's base LSN and length (those that cannot be read are left out: the open
/// reports them).
fn segment_files(dir: &Path) -> Vec<(Lsn, u64)> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| match classify(&e.file_name().to_string_lossy()) {
            EntryKind::Segment(base) => Some((base, e.metadata().ok()?.len())),
            _ => None,
        })
        .collect()
}

/// The size of the newest segment file, so that segments the repair starts match the node's;
/// the engine default when there is none to go by.
fn segment_size(files: &[(Lsn, u64)]) -> u64 {
    files
        .iter()
        .max_by_key(|(base, _)| *base)
        .map(|&(_, len)| len)
        .filter(|&len| len >= MIN_SEGMENT_SIZE_BYTES)
        .unwrap_or(DEFAULT_SEGMENT_SIZE_BYTES)
}

/// One scrub pass: checks every frame of the log from the device, marking the segments it
/// finds damaged.
fn scrub(log: &Log, dir: &Path) -> anyhow::Result<()> {
    // Every step checks at least one frame (32 bytes or more) or moves to the next segment.
    let files = segment_files(dir);
    let bytes: u64 = files.iter().map(|&(_, len)| len).sum();
    let bound = bytes / RECORD_HEADER_BYTES as u64 + 2 * files.len() as u64 + 2;
    let mut scrubber = log.scrubber(ScrubOptions::default());
    for _ in 0..bound {
        let step = scrubber
            .step(SCRUB_STEP_BYTES)
            .context("scrubbing the log")?;
        if step.pass_finished {
            return Ok(());
        }
    }
    anyhow::bail!("the scrub pass did not end within {bound} steps")
}

/// The default record limit, lowered so that one record fits in a segment (as `append` does).
fn max_record_bytes(segment_size_bytes: u64) -> usize {
    let fits = usize::try_from(max_record_bytes_fitting(segment_size_bytes)).unwrap_or(usize::MAX);
    fits.clamp(1, DEFAULT_MAX_RECORD_BYTES)
}

/// Repairs every damaged sealed segment, then refills a cut tail: in that order, so that the
/// record the tail check compares is readable even when it lies in a damaged segment.
fn repair(log: &Log, remote: &mut Remote) -> anyhow::Result<()> {
    if let Some(t) = &log.recovery_report().torn_tail {
        say(format_args!(
            "cut:       torn tail of {} at LSN {} ({} bytes zeroed)",
            t.segment.display(),
            t.lsn,
            t.bytes_zeroed
        ))?;
    }
    for d in log.damaged_segments() {
        repair_segment(log, remote, &d)?;
    }
    let cut = log
        .recovery_report()
        .salvaged
        .iter()
        .find_map(|s| match &s.action {
            SalvageAction::CutAndQuarantined {
                quarantine,
                records_cut,
            } => Some(Cut {
                corruption: s.corruption.clone(),
                quarantine: quarantine.clone(),
                records_cut: *records_cut,
            }),
            SalvageAction::MarkedDamaged => None,
        });
    match cut {
        Some(cut) => restore_tail(log, remote, &cut),
        None => Ok(()),
    }
}

/// Replaces one damaged sealed segment with the remote's copy of exactly its LSNs.
fn repair_segment(log: &Log, remote: &mut Remote, d: &DamagedSegment) -> anyhow::Result<()> {
    if !d.sealed {
        // The engine repairs sealed segments: damage in the active one is repaired by sealing
        // it first.
        log.seal_active().context("sealing the active segment")?;
    }
    let mut pieces = Vec::new();
    remote.fetch(d.first, d.last, d.last, &mut |piece| {
        pieces.push(piece);
        Ok(())
    })?;
    let report = log
        .repair_segment(d.first, &pieces)
        .with_context(|| format!("repairing {}", d.corruption.segment.display()))?;
    assert!(
        report.first == d.first && report.last == d.last,
        "repaired {}..={} for damaged {}..={}",
        report.first,
        report.last,
        d.first,
        d.last
    );
    say(format_args!(
        "repaired:  {} (LSN {}..={}) from {}; damaged bytes kept in {}",
        report.segment.display(),
        report.first,
        report.last,
        remote.spec,
        report.quarantine.display()
    ))
}

/// Where the salvage open cut the last segment.
#[derive(Debug)]
struct Cut {
    corruption: Corruption,
    quarantine: PathBuf,
    records_cut: u64,
}

/// Appends again, from the remote, the records the open cut from the last segment.
fn restore_tail(log: &Log, remote: &mut Remote, cut: &Cut) -> anyhow::Result<()> {
    let last = log.last_lsn();
    let damaged = cut.corruption.lsn;
    // The log held the records before the damaged one and the intact ones after it, and (when
    // the damage was a record's) the damaged record: take it too if the remote has it.
    let required = Lsn(damaged.get().saturating_add(cut.records_cut)).prev();
    let wanted = Lsn(damaged.get().saturating_add(cut.records_cut));
    let from = last.next();
    check_same_history(log, remote, last)
        .with_context(|| format!("restoring LSN {from}..={wanted}"))?;
    remote.fetch(from, required, wanted, &mut |piece| {
        log.append_replicated(piece)?.wait()?;
        Ok(())
    })?;
    let end = log.last_lsn();
    assert!(
        end >= required.max(last),
        "restored up to {end}, below {required}"
    );
    say(format_args!(
        "restored:  {} cut at LSN {damaged}: LSN {from}..={end} ({} records) from {}; damaged \
         bytes kept in {}",
        cut.corruption.segment.display(),
        end.get() - last.get(),
        remote.spec,
        cut.quarantine.display()
    ))
}

/// The remote's record at `last` must be the local one (same CRC): else the logs diverged.
fn check_same_history(log: &Log, remote: &mut Remote, last: Lsn) -> anyhow::Result<()> {
    if last == Lsn::ZERO || last < log.first_lsn() {
        // Nothing local left to compare with: the log was cut to empty.
        return Ok(());
    }
    let local = log
        .read_from(last)?
        .next()
        .with_context(|| format!("LSN {last} cannot be read back from the log"))??;
    let theirs = remote.record_at(last)?;
    if theirs.crc != local.crc {
        return Err(Refusal::Diverged {
            lsn: last,
            local: local.crc,
            remote: theirs.crc,
        }
        .into());
    }
    Ok(())
}

/// The remote node, connected on first use.
#[derive(Debug)]
struct Remote {
    /// `HOST:PORT` as given.
    spec: String,
    timeout: Duration,
    /// TLS and the client key (the remote needs the `read` grant).
    held: super::Held,
    client: Option<Client>,
}

impl Remote {
    fn new(spec: String, timeout: Duration, held: super::Held) -> Remote {
        Remote {
            spec,
            timeout,
            held,
            client: None,
        }
    }

    fn client(&mut self) -> anyhow::Result<&mut Client> {
        let client = match self.client.take() {
            Some(c) => c,
            None => {
                let addr = self
                    .spec
                    .to_socket_addrs()
                    .with_context(|| format!("resolving {}", self.spec))?
                    .next()
                    .with_context(|| format!("{} resolves to no address", self.spec))?;
                Client::connect_as(addr, self.timeout, self.held.credentials())
                    .with_context(|| format!("the remote {}", self.spec))?
            }
        };
        Ok(self.client.insert(client))
    }

    /// The remote's record at `lsn`.
    fn record_at(&mut self, lsn: Lsn) -> anyhow::Result<Record> {
        let spec = self.spec.clone();
        let records = self
            .client()?
            .read(lsn, ONE_RECORD_READ_BYTES)
            .with_context(|| format!("{spec} could not supply LSN {lsn}"))?;
        records
            .into_iter()
            .next()
            .filter(|r| r.lsn == lsn)
            .with_context(|| format!("{spec} does not hold LSN {lsn}"))
    }

    /// Reads LSNs from `from` on in pieces and hands each piece, checked and re-encoded, to
    /// `sink`: through `wanted` when the remote holds it, and at least through `required`.
    fn fetch(
        &mut self,
        from: Lsn,
        required: Lsn,
        wanted: Lsn,
        sink: &mut dyn FnMut(Bytes) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        assert!(
            required <= wanted,
            "required {required} above wanted {wanted}"
        );
        let spec = self.spec.clone();
        let client = self.client()?;
        let mut next = from;
        // Bounded: every piece takes at least one record, else the loop ends.
        while next <= wanted {
            let records = client
                .read(next, READ_PIECE_BYTES)
                .with_context(|| format!("{spec} could not supply LSN {from}..={wanted}"))?;
            if records.is_empty() {
                anyhow::ensure!(
                    next > required,
                    "{spec} does not hold LSN {next}..={required}: its log ends before {next}"
                );
                return Ok(());
            }
            let (piece, last) = reencode(&records, next, wanted)?;
            sink(piece)?;
            next = last.next();
        }
        Ok(())
    }
}

/// Re-encodes `records` from `first` on, through `through` at most: each must carry the next LSN
/// and re-encode to the CRC the remote sent. Returns the encoded records and the last LSN taken.
fn reencode(records: &[Record], first: Lsn, through: Lsn) -> Result<(Bytes, Lsn), Refusal> {
    let mut out = Vec::new();
    let mut next = first;
    for r in records {
        if next > through {
            break;
        }
        if r.lsn != next {
            return Err(Refusal::OutOfSequence {
                expected: next,
                found: r.lsn,
            });
        }
        if r.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(Refusal::TooLarge {
                lsn: r.lsn,
                len: r.payload.len(),
            });
        }
        let start = out.len();
        record::encode_into(&mut out, r.lsn, r.epoch, &r.payload);
        let encoded = record::decode_header(&out[start..])
            .expect("a record encoded just above has a valid header")
            .crc;
        if encoded != r.crc {
            return Err(Refusal::Reencoded {
                lsn: r.lsn,
                remote: r.crc,
                encoded,
            });
        }
        next = next.next();
    }
    assert!(
        next > first,
        "no record taken: first={first} through={through} records={}",
        records.len()
    );
    Ok((Bytes::from(out), next.prev()))
}

/// Verifies the log again and prints the outcome. Exit 1 when damage remains or the repair was
/// refused.
fn verify_after(dir: &Path, refused: bool) -> anyhow::Result<ExitCode> {
    let report = match logship::verify(dir) {
        Ok(r) => r,
        Err(e @ logship::Error::Corruption { .. }) => {
            say(format_args!("corrupt:   {e}"))?;
            say(format_args!("status:    CORRUPT"))?;
            return Ok(ExitCode::from(EXIT_CORRUPT));
        }
        Err(e) => return Err(e.into()),
    };
    for c in &report.corruptions {
        say(format_args!("corrupt:   {c}"))?;
    }
    say(format_args!(
        "after:     {} segments, {} records, LSN {}..={}, {} quarantined files",
        report.segments,
        report.records,
        report.first_lsn,
        report.last_lsn,
        report.quarantined.len()
    ))?;
    let status = match (report.is_clean(), refused) {
        (true, false) => "clean",
        (true, true) => "clean, but the records cut at the damage were not restored",
        (false, _) => "CORRUPT",
    };
    say(format_args!("status:    {status}"))?;
    if report.is_clean() && !refused {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(EXIT_CORRUPT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logship::Epoch;

    fn rec(lsn: u64, payload: &'static [u8]) -> Record {
        let mut buf = Vec::new();
        record::encode_into(&mut buf, Lsn(lsn), Epoch(3), payload);
        let crc = record::decode_header(&buf).expect("header").crc;
        Record {
            lsn: Lsn(lsn),
            epoch: Epoch(3),
            crc,
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn reencode_takes_the_range_and_stops_at_its_end() {
        let records = [rec(5, b"a"), rec(6, b"bb"), rec(7, b"ccc")];
        let (bytes, last) = reencode(&records, Lsn(5), Lsn(6)).expect("valid records");
        assert_eq!(last, Lsn(6));
        let lsns: Vec<Lsn> = record::run(&bytes)
            .map(|r| r.expect("valid").1.header.lsn)
            .collect();
        assert_eq!(lsns, [Lsn(5), Lsn(6)]);
    }

    #[test]
    fn reencode_refuses_a_gap_and_a_crc_that_does_not_reencode() {
        let records = [rec(5, b"a"), rec(7, b"c")];
        assert!(matches!(
            reencode(&records, Lsn(5), Lsn(9)),
            Err(Refusal::OutOfSequence {
                expected: Lsn(6),
                found: Lsn(7)
            })
        ));
        let mut other = rec(5, b"a");
        other.crc ^= 1;
        assert!(matches!(
            reencode(&[other], Lsn(5), Lsn(5)),
            Err(Refusal::Reencoded { lsn: Lsn(5), .. })
        ));
    }
}
