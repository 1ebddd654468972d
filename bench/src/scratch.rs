//! The benchmark's scratch directory: created fresh under a parent the user chose, removed at the
//! end of the run, and also when the run fails (on drop).

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

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            if let Err(e) = std::fs::remove_dir_all(&path) {
                eprintln!("could not remove {}: {e}", path.display());
            }
        }
    }
}
