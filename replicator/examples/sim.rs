//! The cluster simulator from the command line.
//!
//! ```text
//! cargo run --release -p logship-replicator --example sim -- --seeds 20000 [--from S]
//! cargo run --release -p logship-replicator --example sim -- --seed S [--trace]
//! ```
//!
//! `--seeds N` runs seeds `S..S+N` (`--from S`, default 0) on every core, prints seeds per
//! second, and on the first failure shrinks it, prints its replay command and its last events,
//! and exits with status 1. `--seed S` replays one seed and reports it; `--trace` prints every
//! event. Both take the run options a replay command carries: `--steps N`, `--no-<class>` for
//! each fault class left out (crash, primary-crash, torn, clean-restart, partition, reset, spike, eio,
//! slow-disk, clock), `--hostile` / `--no-hostile`, `--failover` (clusters that elect their primary). `--no-shrink` skips shrinking;
//! `--threads N` overrides the core count.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use logship_replicator::sim::{replay_command, run_seed, shrink, Failure, FaultClass, RunOptions};

#[derive(Debug)]
struct Args {
    seed: Option<u64>,
    seeds: u64,
    from: u64,
    options: RunOptions,
    trace: bool,
    shrink: bool,
    keep_going: bool,
    threads: usize,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        seed: None,
        seeds: 0,
        from: 0,
        options: RunOptions::default(),
        trace: false,
        shrink: true,
        keep_going: false,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            v.parse().map_err(|e| format!("{name} {v}: {e}"))
        };
        match flag.as_str() {
            "--seed" => a.seed = Some(value("--seed")?),
            "--seeds" => a.seeds = value("--seeds")?,
            "--from" => a.from = value("--from")?,
            "--steps" => a.options.steps = value("--steps")? as usize,
            "--threads" => a.threads = (value("--threads")? as usize).max(1),
            "--trace" => a.trace = true,
            "--no-shrink" => a.shrink = false,
            "--keep-going" => a.keep_going = true,
            "--hostile" => a.options.hostile = Some(true),
            "--failover" => a.options.failover = true,
            "--no-hostile" => a.options.hostile = Some(false),
            other => match other.strip_prefix("--no-").and_then(FaultClass::from_name) {
                Some(c) => a.options.disabled = a.options.disabled.with(c),
                None => return Err(format!("unknown argument {other:?}")),
            },
        }
    }
    if a.seed.is_none() && a.seeds == 0 {
        return Err("give --seed S or --seeds N".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sim: {e}");
            return ExitCode::from(2);
        }
    };
    match args.seed {
        Some(seed) => replay(seed, &args),
        None => many(&args),
    }
}

fn replay(seed: u64, args: &Args) -> ExitCode {
    let started = Instant::now();
    match run_seed(seed, &args.options, args.trace) {
        Ok(r) => {
            println!(
                "seed {seed}: ok in {:?} ({} events, {:?} simulated)",
                started.elapsed(),
                r.events,
                r.sim_time
            );
            println!("cluster: {}", r.spec);
            println!(
                "appends issued {} acknowledged {}; converged {:?} after the faults",
                r.appends.0, r.appends.1, r.settled_in
            );
            println!("trace hash {:016x}", r.trace_hash);
            ExitCode::SUCCESS
        }
        Err(f) => {
            report_failure(&f, args.shrink);
            ExitCode::FAILURE
        }
    }
}

fn report_failure(f: &Failure, do_shrink: bool) {
    println!("{f}");
    if do_shrink {
        println!("shrinking...");
        let small = shrink(f);
        println!(
            "smallest failing configuration: {}",
            small.options.flags().trim()
        );
        println!("{small}");
        println!(
            "replay the smallest: {}",
            replay_command(small.seed, &small.options)
        );
    }
    println!("replay: {}", replay_command(f.seed, &f.options));
}

fn many(args: &Args) -> ExitCode {
    let next = Arc::new(AtomicU64::new(args.from));
    let done = Arc::new(AtomicU64::new(0));
    let failed_count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let failure: Arc<Mutex<Option<Box<Failure>>>> = Arc::new(Mutex::new(None));
    let end = args.from + args.seeds;
    let started = Instant::now();
    let threads: Vec<_> = (0..args.threads)
        .map(|_| {
            let (next, done, stop, failure) =
                (next.clone(), done.clone(), stop.clone(), failure.clone());
            let failed_count = failed_count.clone();
            let (options, keep_going) = (args.options, args.keep_going);
            std::thread::spawn(move || loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end || stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Err(f) = run_seed(seed, &options, false) {
                    if keep_going {
                        println!("FAIL seed {seed}: {}", f.violation);
                        failed_count.fetch_add(1, Ordering::Relaxed);
                        done.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    stop.store(true, Ordering::Relaxed);
                    let mut slot = failure.lock().expect("no panics while held");
                    let earliest = match &*slot {
                        Some(g) => f.seed < g.seed,
                        None => true,
                    };
                    if earliest {
                        *slot = Some(f);
                    }
                    return;
                }
                done.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect();
    progress(&done, &stop, args.seeds, started);
    for t in threads {
        t.join()
            .expect("a simulation thread panicked outside a run");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    let kept_going = failed_count.load(Ordering::Relaxed);
    println!(
        "{n} seeds run, {} failed, in {elapsed:.1} s: {:.0} seeds/s on {} threads",
        kept_going,
        n as f64 / elapsed,
        args.threads
    );
    let failed = failure.lock().expect("threads joined").take();
    match failed {
        None if kept_going > 0 => ExitCode::FAILURE,
        None => ExitCode::SUCCESS,
        Some(f) => {
            report_failure(&f, args.shrink);
            ExitCode::FAILURE
        }
    }
}

/// Prints progress every few seconds until every seed ran or one failed.
fn progress(done: &AtomicU64, stop: &AtomicBool, total: u64, started: Instant) {
    let mut last = Instant::now();
    while done.load(Ordering::Relaxed) < total && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(100));
        if last.elapsed().as_secs() >= 5 {
            last = Instant::now();
            let n = done.load(Ordering::Relaxed);
            let rate = n as f64 / started.elapsed().as_secs_f64();
            eprintln!("{n}/{total} seeds, {rate:.0} seeds/s");
        }
    }
}
