//! The `logship` command-line tool: append stdin lines to a log, dump a log, verify a log.
//!
//! Exit codes: 0 success; 1 `verify` found corruption; 2 a usage error, an I/O error, or a
//! directory that is not a readable logship log. Every failure prints exactly one line,
//! `logship: error: ...`, on stderr (clap prints its own usage text for usage errors).
#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::init_tracing();
    let args = cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            cli::print_error(&e);
            ExitCode::from(cli::EXIT_ERROR)
        }
    }
}
