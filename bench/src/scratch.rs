//! The benchmark's scratch directory: created fresh under a parent the user chose, removed at the
//! end of the run, and also when the run fails (on drop). A run killed outright (SIGKILL, or
//! Ctrl-C, which does not unwind) leaves its directory, gigabytes for a catch-up case: the next
//! run in the same parent removes those whose process is gone.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

/// A directory this process created and will remove.
#[derive(Debug)]
pub struct Scratch {
    path: Option<PathBuf>,
}

impl Scratch {
    /// Creates `parent/logship-bench-<pid>-<nanos>` (and `parent` if needed).
    ///
    /// # Errors
    /// When the directory cannot be created or already exists.
    pub fn create(parent: &Path) -> anyhow::Result<Scratch> {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        for left in left_by_dead_runs(parent) {
            match std::fs::remove_dir_all(&left) {
                Ok(()) => eprintln!(
                    "removed {}, left by a run that is no longer running",
                    left.display()
                ),
                Err(e) => eprintln!("could not remove {}: {e}", left.display()),
            }
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = parent.join(format!("logship-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Scratch { path: Some(path) })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.path
            .as_deref()
            .expect("the path is only taken by remove, which consumes self")
    }

    /// Removes the directory and everything in it.
    ///
    /// # Errors
    /// When removal fails.
    pub fn remove(mut self) -> anyhow::Result<()> {
        let path = self.path.take().expect("remove runs once");
        std::fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))
    }
}

/// The scratch directories in `parent` whose run's process no longer exists. Without `/proc`
/// it cannot tell, and finds none; a directory whose process id now belongs to another process
/// is kept.
fn left_by_dead_runs(parent: &Path) -> Vec<PathBuf> {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| {
            let name = e.file_name();
            let pid = name.to_str().and_then(scratch_pid);
            pid.is_some_and(|pid| !proc.join(pid.to_string()).exists())
        })
        .map(|e| e.path())
        .collect()
}

/// The process id in a scratch directory's name, `logship-bench-<pid>-<nanos>`.
fn scratch_pid(name: &str) -> Option<u32> {
    let (pid, nanos) = name.strip_prefix("logship-bench-")?.split_once('-')?;
    nanos.parse::<u32>().ok()?;
    pid.parse().ok()
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            if let Err(e) = std::fs::remove_dir_all(&path) {
                eprintln!("could not remove {}: {e}", path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_run_removes_the_directories_of_runs_that_are_gone_and_only_those() {
        let parent = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        let dead = parent.path().join(format!("logship-bench-{gone}-123"));
        let alive = parent
            .path()
            .join(format!("logship-bench-{}-456", std::process::id()));
        let other = parent
            .path()
            .join(format!("logship-bench-{gone}-notanumber"));
        for d in [&dead, &alive, &other] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("segment"), b"bytes").unwrap();
        }
        let scratch = Scratch::create(parent.path()).unwrap();
        assert!(!dead.exists(), "a dead run's directory stays");
        assert!(alive.exists() && other.exists());
        assert!(scratch.path().exists());
        scratch.remove().unwrap();
    }

    #[test]
    fn only_scratch_names_have_a_process_id() {
        assert_eq!(scratch_pid("logship-bench-42-123456789"), Some(42));
        assert_eq!(scratch_pid("logship-bench-42"), None);
        assert_eq!(scratch_pid("logship-bench-x-1"), None);
        assert_eq!(scratch_pid("other-42-1"), None);
    }
}
