//! `logship verify DIR`: checks every segment of a log without changing anything and prints a
//! summary.
//!
//! Exit 0 when the log is clean. A torn tail (the end of the last segment that no write marker
//! or durable floor proves was synced, cut off by a crash mid-write) is what recovery expects
//! after a crash: it is reported and still counts as clean. Exit 1 when a checksum or structure
//! check fails anywhere else (including records a marker or the floor proves were synced), each
//! failure printed with its file, offset and LSN. Exit 2 when the directory cannot be read or is
//! not a logship log. Segments of format version 1 (written before write markers) are judged by
//! the version-1 rule, and the report says so.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use logship::{TornTail, VerifyReport};

use super::EXIT_CORRUPT;

/// Arguments of `logship verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The log directory.
    dir: PathBuf,
}

/// Runs `logship verify`.
pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let report = match logship::verify(&args.dir) {
        Ok(report) => report,
        // Damage the verifier could not walk past (a segment header, the marker's checksum)
        // is still corruption, not a usage error.
        Err(e @ logship::Error::Corruption { .. }) => {
            println!("corrupt: {e}");
            return Ok(ExitCode::from(EXIT_CORRUPT));
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = io::stdout().lock();
    print_report(&mut out, &args.dir, &report).context("writing stdout")?;
    if report.corruptions.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(EXIT_CORRUPT))
    }
}

fn print_report(out: &mut impl Write, dir: &std::path::Path, r: &VerifyReport) -> io::Result<()> {
    writeln!(out, "log:           {}", dir.display())?;
    writeln!(out, "segments:      {}", r.segments)?;
    writeln!(out, "free segments: {}", r.free_segments)?;
    writeln!(out, "records:       {}", r.records)?;
    writeln!(out, "lsn range:     {}..={}", r.first_lsn, r.last_lsn)?;
    writeln!(out, "bytes:         {}", r.bytes)?;
    if r.durable_floor > logship::Lsn::ZERO {
        writeln!(
            out,
            "durable floor: LSN {} (closed cleanly: every record up to it was synced)",
            r.durable_floor
        )?;
    }
    if r.legacy_segments > 0 {
        writeln!(
            out,
            "format:        {} of {} segments are format version 1 (no write markers): their \
             tail is judged by the version-1 rule, which takes damage within max_unsynced_bytes \
             of the end of the written data for a torn write",
            r.legacy_segments, r.segments
        )?;
    }
    for q in &r.quarantined {
        writeln!(
            out,
            "quarantined:   {q} (a damaged segment's bytes set aside for forensics; not read)"
        )?;
    }
    match &r.torn_tail {
        Some(t) => print_torn_tail(out, t)?,
        None => writeln!(out, "torn tail:     none")?,
    }
    for c in &r.corruptions {
        writeln!(out, "corruption:    {c}")?;
    }
    let verdict = if r.corruptions.is_empty() {
        "clean"
    } else {
        "CORRUPT"
    };
    writeln!(out, "status:        {verdict}")
}

fn print_torn_tail(out: &mut impl Write, t: &TornTail) -> io::Result<()> {
    writeln!(
        out,
        "torn tail:     {} at offset {} (LSN {}): {} bytes, {} unproven records would be cut at open: {}",
        t.segment.display(),
        t.offset,
        t.lsn,
        t.bytes_zeroed,
        t.discarded_records,
        t.reason
    )
}
