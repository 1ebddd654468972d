//! `logship dump DIR`: prints records as text or JSON lines.
//!
//! Text: `LSN<TAB>epoch<TAB>len<TAB>payload`, the payload as UTF-8 (invalid sequences replaced by
//! U+FFFD) with `\`, tab, newline, carriage return and other control characters escaped, so
//! that each record is exactly one line. JSON lines:
//! `{"lsn":1,"epoch":0,"len":5,"crc":123,"payload_b64":"aGVsbG8="}`, the payload in standard
//! base64 with padding, byte for byte.
//!
//! Dump reads with the engine's read-only scanner (`logship::scan`): it takes no lock and changes
//! nothing, so it can read a log that another process is appending to (records that process has
//! written but not yet synced may be printed) or a backup copy. It stops quietly at a torn tail
//! and fails with the corruption's file, offset and LSN at damage a crash cannot explain.

use std::fmt::Write as _;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine as _;
use clap::ValueEnum;
use logship::{Lsn, Record};

/// Write buffer for stdout.
const OUTPUT_BUFFER_BYTES: usize = 256 * 1024;

/// `--format`.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum Format {
    /// Tab-separated, payload escaped.
    #[default]
    Text,
    /// One JSON object per line, payload in base64.
    Jsonl,
}

/// Arguments of `logship dump`.
#[derive(Debug, clap::Args)]
pub struct DumpArgs {
    /// The log directory.
    dir: PathBuf,
    /// First LSN to print (default: the log's first).
    #[arg(long, value_name = "LSN")]
    from: Option<u64>,
    /// Print at most this many records.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Runs `logship dump`.
pub fn run(args: DumpArgs) -> anyhow::Result<ExitCode> {
    let from = args.from.map_or(Lsn::ZERO, Lsn);
    let limit = args.limit.unwrap_or(u64::MAX);
    let mut out = BufWriter::with_capacity(OUTPUT_BUFFER_BYTES, io::stdout().lock());
    let mut line = String::new();
    for record in logship::scan(&args.dir, from)?.take(usize::try_from(limit).unwrap_or(usize::MAX))
    {
        let record = record?;
        line.clear();
        format_record(&mut line, &record, args.format);
        out.write_all(line.as_bytes()).context("writing stdout")?;
    }
    out.flush().context("writing stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// Appends one record's line, newline included, to `line`.
fn format_record(line: &mut String, record: &Record, format: Format) {
    let (lsn, epoch, len, crc) = (record.lsn, record.epoch, record.payload.len(), record.crc);
    // Writing to a String cannot fail.
    match format {
        Format::Text => {
            let _ = write!(line, "{lsn}\t{epoch}\t{len}\t");
            escape_payload(line, &record.payload);
        }
        Format::Jsonl => {
            let _ = write!(
                line,
                r#"{{"lsn":{lsn},"epoch":{epoch},"len":{len},"crc":{crc},"payload_b64":""#
            );
            base64::engine::general_purpose::STANDARD.encode_string(&record.payload, line);
            line.push_str("\"}");
        }
    }
    line.push('\n');
}

fn escape_payload(line: &mut String, payload: &[u8]) {
    for c in String::from_utf8_lossy(payload).chars() {
        match c {
            '\\' => line.push_str("\\\\"),
            '\t' => line.push_str("\\t"),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(line, "\\u{{{:x}}}", c as u32);
            }
            c => line.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logship::{Bytes, Epoch};

    fn record(payload: &'static [u8]) -> Record {
        Record {
            lsn: Lsn(7),
            epoch: Epoch(0),
            crc: 42,
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn text_escapes_control_characters() {
        let mut line = String::new();
        format_record(&mut line, &record(b"a\tb\\c\n\x01\xff"), Format::Text);
        assert_eq!(line, "7\t0\t8\ta\\tb\\\\c\\n\\u{1}\u{fffd}\n");
    }

    #[test]
    fn jsonl_is_valid_json_with_base64_payload() {
        let mut line = String::new();
        format_record(&mut line, &record(b"hello"), Format::Jsonl);
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).expect("valid JSON");
        assert_eq!(v["lsn"], 7);
        assert_eq!(v["crc"], 42);
        assert_eq!(v["len"], 5);
        assert_eq!(v["payload_b64"], "aGVsbG8=");
    }
}
