//! `logship append DIR`: each line of stdin (without its `\n`) becomes one record; each record's
//! LSN is printed on its own line once the record is durable (with `--durability buffered`: once
//! it is queued).
//!
//! Appends are pipelined so that group commit works: a reader thread reads stdin and appends
//! without waiting, handing each record's completion to the main thread through a bounded
//! channel; the main thread waits on the completions in LSN order and prints. Stdout is flushed
//! before the printer blocks, so a printed LSN is never held back behind one not yet durable,
//! and nothing is printed before it is durable.
//!
//! The first failure (an append refused, stdin unreadable, stdout closed, a completion that
//! resolves `Poisoned`) ends the command with exit code 2; LSNs printed before it stand.

use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread;

use anyhow::Context;
use clap::ValueEnum;
use logship::options::DEFAULT_MAX_RECORD_BYTES;
use logship::{Bytes, Completion, Durability, Log, Options};

use super::BackendArg;

/// Completions handed from the reader to the printer and not printed yet. Bounds memory when
/// stdin is faster than the disk; the engine's own queue bound applies behind it.
const PENDING_ACKS_CAPACITY: usize = 64 * 1024;
/// Read buffer for stdin.
const INPUT_BUFFER_BYTES: usize = 256 * 1024;
/// Write buffer for stdout.
const OUTPUT_BUFFER_BYTES: usize = 64 * 1024;

/// `--durability`.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum DurabilityArg {
    /// Print an LSN once its record is fdatasync'ed.
    #[default]
    Durable,
    /// Print an LSN once its record is queued; everything is synced before exit.
    Buffered,
}

/// Arguments of `logship append`.
#[derive(Debug, clap::Args)]
pub struct AppendArgs {
    /// The log directory.
    dir: PathBuf,
    /// When an LSN is printed.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Durable)]
    durability: DurabilityArg,
    /// Create the log if the directory is missing or empty.
    #[arg(long)]
    create: bool,
    /// Hot-path I/O backend.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    /// Size of each new segment file in bytes (at least 65536). Also bounds a record's size.
    #[arg(long, value_name = "BYTES", default_value_t = logship::options::DEFAULT_SEGMENT_SIZE_BYTES)]
    segment_size: u64,
}

/// One item for the printer: a record's completion, or the failure that ended reading.
type Pending = anyhow::Result<Completion>;

/// Runs `logship append`.
pub fn run(args: AppendArgs) -> anyhow::Result<ExitCode> {
    let options = Options {
        create_if_missing: args.create,
        segment_size_bytes: args.segment_size,
        max_record_bytes: max_record_bytes(args.segment_size),
        backend: args.backend.to_backend(),
        ..Options::default()
    };
    let log = Arc::new(Log::open(&args.dir, options)?);
    let durability = match args.durability {
        DurabilityArg::Durable => Durability::Durable,
        DurabilityArg::Buffered => Durability::Buffered,
    };
    let (tx, rx) = sync_channel(PENDING_ACKS_CAPACITY);
    let reader_log = Arc::clone(&log);
    let reader = thread::Builder::new()
        .name("logship-stdin".into())
        .spawn(move || read_and_append(&reader_log, durability, &tx))
        .context("spawning the stdin reader thread")?;
    // On an error the reader may be blocked reading stdin: return without joining it.
    print_acks(&rx)?;
    if reader.join().is_err() {
        anyhow::bail!("the stdin reader thread panicked");
    }
    let log = Arc::into_inner(log).expect("the reader thread has exited and dropped its handle");
    log.close()?;
    Ok(ExitCode::SUCCESS)
}

/// The default record limit, lowered so that one record fits in a small segment. Never 0, so
/// that a segment size below the minimum is what the engine's validation names.
fn max_record_bytes(segment_size_bytes: u64) -> usize {
    let fits = logship::options::max_record_bytes_fitting(segment_size_bytes);
    let fits = usize::try_from(fits).unwrap_or(usize::MAX);
    fits.clamp(1, DEFAULT_MAX_RECORD_BYTES)
}

/// Reads stdin to its end, appending each line; stops at the first failure, after handing it on.
fn read_and_append(log: &Log, durability: Durability, tx: &SyncSender<Pending>) {
    let mut input = BufReader::with_capacity(INPUT_BUFFER_BYTES, io::stdin());
    loop {
        let mut line = Vec::new();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                let _ = tx.send(Err(anyhow::Error::new(e).context("reading stdin")));
                return;
            }
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        let pending = log
            .append_with(Bytes::from(line), durability)
            .map(logship::Append::into_completion)
            .map_err(anyhow::Error::from);
        let failed = pending.is_err();
        // A closed channel means the printer failed and reports why.
        if tx.send(pending).is_err() || failed {
            return;
        }
    }
}

/// Waits on each completion in order and prints its LSN, until the reader is done.
fn print_acks(rx: &Receiver<Pending>) -> anyhow::Result<()> {
    let mut out = BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, io::stdout().lock());
    loop {
        let pending = match rx.try_recv() {
            Ok(p) => p,
            Err(TryRecvError::Empty) => {
                out.flush().context("writing stdout")?;
                match rx.recv() {
                    Ok(p) => p,
                    Err(_) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        let completion = pending?;
        if !completion.is_done() {
            out.flush().context("writing stdout")?;
        }
        let lsn = completion.wait()?;
        writeln!(out, "{lsn}").context("writing stdout")?;
    }
    out.flush().context("writing stdout")
}
