//! Random runs: one seed gives a cluster ([`ClusterSpec::from_seed`]) and a schedule
//! ([`Schedule::generate`]); the run plays the schedule (the fault phase), then ends the faults
//! and waits for convergence (skipped in hostile runs, whose network garbles frames on
//! purpose: they check safety only). A failure — a violated property, or a panic inside a
//! replica, a model or the simulator — comes back with its replay command and the last events.
//!
//! [`shrink`] makes a failure smaller: the fewest schedule steps that still fail the same way
//! (a binary search), then each fault class left out in turn if it still fails without it.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::time::Duration;

use super::cluster::Cluster;
use super::invariants::Violation;
use super::net::HostileFaults;
use super::schedule::{FaultClass, FaultSet, Schedule, DEFAULT_STEPS};
use super::spec::{sub_seed, ClusterSpec, Stream};
use crate::vocab::Rng;

/// How long convergence may take once the faults end.
pub const SETTLE_WITHIN: Duration = Duration::from_secs(60);
/// How long a hostile run goes on after its faults end (safety only).
const HOSTILE_TAIL: Duration = Duration::from_secs(2);
/// One seed in this many runs with hostile network faults.
const HOSTILE_ONE_IN: u64 = 10;

/// How to run a seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// Operations in the schedule.
    pub steps: usize,
    /// Fault classes left out.
    pub disabled: FaultSet,
    /// Hostile network faults: `None` as the seed says (one in ten).
    pub hostile: Option<bool>,
    /// Clusters that elect their primary ([`ClusterSpec::failover_from_seed`]).
    pub failover: bool,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            steps: DEFAULT_STEPS,
            disabled: FaultSet::default(),
            hostile: None,
            failover: false,
        }
    }
}

impl RunOptions {
    /// The flags that give these options to the `sim` example.
    pub fn flags(&self) -> String {
        let mut f = String::new();
        if self.steps != DEFAULT_STEPS {
            f.push_str(&format!(" --steps {}", self.steps));
        }
        for c in self.disabled.classes() {
            f.push_str(&format!(" --no-{}", c.name()));
        }
        if self.failover {
            f.push_str(" --failover");
        }
        match self.hostile {
            Some(true) => f.push_str(" --hostile"),
            Some(false) => f.push_str(" --no-hostile"),
            None => {}
        }
        f
    }
}

/// The command that replays `seed` with `options`.
pub fn replay_command(seed: u64, options: &RunOptions) -> String {
    format!(
        "cargo run --release -p logship-replicator --example sim -- --seed {seed}{}",
        options.flags()
    )
}

/// A run that held every property.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Hash of every event: equal for two runs of the same seed and options.
    pub trace_hash: u64,
    /// Events recorded.
    pub events: u64,
    /// Simulated time at the end.
    pub sim_time: Duration,
    /// How long convergence took (`None`: a hostile run, not checked).
    pub settled_in: Option<Duration>,
    /// Appends issued and acknowledged.
    pub appends: (usize, usize),
    /// The cluster, described.
    pub spec: String,
}

/// A run that failed.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// The options it ran with.
    pub options: RunOptions,
    /// What failed.
    pub violation: Violation,
    /// Simulated time of the failure.
    pub at: Duration,
    /// The last events, formatted.
    pub trace: Vec<String>,
    /// The cluster, described.
    pub spec: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} failed at {:?}: {}",
            self.seed, self.at, self.violation
        )?;
        writeln!(f, "cluster: {}", self.spec)?;
        writeln!(f, "replay: {}", replay_command(self.seed, &self.options))?;
        writeln!(f, "last events:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// Whether `seed` runs with hostile network faults by default.
pub fn hostile_by_seed(seed: u64) -> bool {
    Rng::new(sub_seed(seed, Stream::Spec, 1)).below(HOSTILE_ONE_IN) == 0
}

/// The cluster `seed` runs, with the network faults the options leave in.
pub fn spec_for(seed: u64, options: &RunOptions) -> ClusterSpec {
    let mut spec = if options.failover {
        ClusterSpec::failover_from_seed(seed)
    } else {
        ClusterSpec::from_seed(seed)
    };
    if options.disabled.contains(FaultClass::Spike) {
        spec.net.spike_per_million = 0;
    }
    if options.disabled.contains(FaultClass::Reset) {
        spec.net.reset_per_million = 0;
    }
    if options.hostile.unwrap_or_else(|| hostile_by_seed(seed)) {
        spec.net.hostile = HostileFaults {
            duplicate_per_million: 2_000,
            reorder_per_million: 2_000,
            drop_per_million: 1_000,
        };
    }
    spec
}

/// Runs `seed`; `echo` prints every event.
///
/// # Errors
/// The [`Failure`], with its replay command.
pub fn run_seed(seed: u64, options: &RunOptions, echo: bool) -> Result<RunReport, Box<Failure>> {
    install_panic_hook();
    let spec = spec_for(seed, options);
    let described = spec.describe();
    let hostile = !spec.net.hostile.is_none();
    let schedule = Schedule::generate(&spec, options.steps, options.disabled);
    let mut cluster = Cluster::new(spec);
    cluster.echo_trace(echo);
    IN_SIM.with(|s| s.set(true));
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| drive(&mut cluster, &schedule, hostile)));
    IN_SIM.with(|s| s.set(false));
    let result = match outcome {
        Ok(r) => r,
        Err(_) => {
            let m = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| "a panic".into());
            Err(Violation::new("panic", m))
        }
    };
    match result {
        Ok(settled_in) => Ok(report(seed, &cluster, settled_in, described)),
        Err(violation) => Err(Box::new(Failure {
            seed,
            options: *options,
            violation,
            at: cluster.now(),
            trace: cluster.trace().last().map(ToString::to_string).collect(),
            spec: described,
        })),
    }
}

fn drive(
    c: &mut Cluster,
    schedule: &Schedule,
    hostile: bool,
) -> Result<Option<Duration>, Violation> {
    for (at, op) in &schedule.ops {
        c.run_until(*at)?;
        c.apply(*op);
    }
    c.run_for(Duration::from_millis(100))?;
    if hostile {
        c.end_faults();
        c.run_for(HOSTILE_TAIL)?;
        c.check_invariants()?;
        return Ok(None);
    }
    let took = c.settle(SETTLE_WITHIN)?;
    c.check_invariants()?;
    Ok(Some(took))
}

fn report(seed: u64, c: &Cluster, settled_in: Option<Duration>, spec: String) -> RunReport {
    let issued = c.clients().all().count();
    let acked = (c.clients().all())
        .filter(|(_, op)| matches!(op.outcome, super::clients::ClientOutcome::Acked { .. }))
        .count();
    RunReport {
        seed,
        trace_hash: c.trace().hash(),
        events: c.trace().events(),
        sim_time: c.now(),
        settled_in,
        appends: (issued, acked),
        spec,
    }
}

/// The smallest failing configuration found for `failure`: fewer steps, then fewer fault
/// classes, keeping the same violated property.
pub fn shrink(failure: &Failure) -> Failure {
    let seed = failure.seed;
    let same = |o: &RunOptions| match run_seed(seed, o, false) {
        Err(f) if f.violation.invariant == failure.violation.invariant => Some(*f),
        _ => None,
    };
    let mut best = failure.clone();
    let (mut lo, mut hi) = (0, failure.options.steps);
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        let o = RunOptions {
            steps: mid,
            ..best.options
        };
        match same(&o) {
            Some(f) => {
                hi = mid;
                best = f;
            }
            None => lo = mid,
        }
    }
    for class in FaultClass::ALL {
        if best.options.disabled.contains(class) {
            continue;
        }
        let o = RunOptions {
            disabled: best.options.disabled.with(class),
            ..best.options
        };
        if let Some(f) = same(&o) {
            best = f;
        }
    }
    best
}

thread_local! {
    static IN_SIM: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A panic inside a run is recorded for its report instead of printed; other panics (a test's
/// own assertions) go to the hook that was installed before.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if IN_SIM.with(Cell::get) {
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
            } else {
                previous(info);
            }
        }));
    });
}
