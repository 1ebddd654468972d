//! A bound on every stage of a run. Each stage names itself and its budget; if it is still
//! running when the budget is spent, the watchdog prints what was stuck, removes the scratch
//! directory (best effort: nodes may still hold files in it) and exits the process with
//! [`STUCK_EXIT_CODE`]. Threads blocked inside a node cannot be cancelled, so ending the
//! process is the only bound that always holds; the stages' own timeouts (cluster start,
//! commits, catch-up) report ordinary failures long before this fires.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Exit code of a run the watchdog ended.
pub const STUCK_EXIT_CODE: i32 = 3;
/// How often the watchdog looks at the clock.
const CHECK_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Stage {
    what: String,
    budget: Duration,
    deadline: Instant,
}

#[derive(Debug, Default)]
struct Shared {
    stage: Mutex<Option<Stage>>,
    stop: AtomicBool,
}

/// The watchdog thread and the current stage.
#[derive(Debug)]
pub struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts watching; `scratch` is removed if the watchdog ends the process.
    pub fn start(scratch: PathBuf) -> Watchdog {
        let shared = Arc::new(Shared::default());
        let watched = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("bench-watchdog".into())
            .spawn(move || watch(&watched, &scratch))
            .expect("spawning the watchdog thread");
        Watchdog {
            shared,
            thread: Some(thread),
        }
    }

    /// Starts a stage that must end within `budget` (when the next stage starts, or at
    /// [`Watchdog::idle`]).
    pub fn stage(&self, what: impl Into<String>, budget: Duration) {
        let stage = Stage {
            what: what.into(),
            budget,
            deadline: Instant::now() + budget,
        };
        *self.shared.stage.lock().expect("watchdog lock") = Some(stage);
    }

    /// No stage is running.
    pub fn idle(&self) {
        *self.shared.stage.lock().expect("watchdog lock") = None;
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn watch(shared: &Shared, scratch: &PathBuf) {
    while !shared.stop.load(Ordering::SeqCst) {
        std::thread::sleep(CHECK_INTERVAL);
        let stage = shared.stage.lock().expect("watchdog lock");
        let Some(stage) = stage.as_ref() else {
            continue;
        };
        if Instant::now() < stage.deadline {
            continue;
        }
        eprintln!(
            "logship-bench replicate: STUCK: {} did not finish within {:?}; ending the run \
             (exit code {STUCK_EXIT_CODE})",
            stage.what, stage.budget
        );
        if let Err(e) = std::fs::remove_dir_all(scratch) {
            eprintln!("could not remove {}: {e}", scratch.display());
        }
        std::process::exit(STUCK_EXIT_CODE);
    }
}
