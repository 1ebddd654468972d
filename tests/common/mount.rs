//! A file system on a loop device over a sparse image file, for the root-only tests. The guard
//! unmounts and detaches in `Drop`, so a failing assertion leaves no mount or loop device.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::sh;

/// A mounted loop-device file system.
#[derive(Debug)]
pub struct LoopFs {
    pub device: String,
    pub mountpoint: PathBuf,
    pub fstype: &'static str,
    mounted: bool,
}

impl LoopFs {
    /// Creates a sparse `size_bytes` image at `image`, attaches it, makes `fstype` on it and
    /// mounts it on `mountpoint` (created if missing).
    pub fn create(
        image: &Path,
        size_bytes: u64,
        fstype: &'static str,
        mountpoint: &Path,
    ) -> anyhow::Result<LoopFs> {
        std::fs::File::create(image)
            .and_then(|f| f.set_len(size_bytes))
            .with_context(|| format!("creating image {}", image.display()))?;
        std::fs::create_dir_all(mountpoint)?;
        let image = image.to_str().context("image path is not UTF-8")?;
        let device = sh("losetup", &["--find", "--show", image])?;
        let mut fs = LoopFs {
            device,
            mountpoint: mountpoint.to_path_buf(),
            fstype,
            mounted: false,
        };
        match fstype {
            "ext4" => {
                // Small file systems default to 1 KiB blocks; LOGSHIP_TEST_EXT4_BLOCK overrides.
                let block =
                    std::env::var("LOGSHIP_TEST_EXT4_BLOCK").unwrap_or_else(|_| "1024".into());
                let opts = "lazy_itable_init=0,lazy_journal_init=0";
                sh(
                    "mkfs.ext4",
                    &["-q", "-F", "-b", &block, "-E", opts, &fs.device],
                )?
            }
            "xfs" => sh("mkfs.xfs", &["-q", "-f", &fs.device])?,
            other => anyhow::bail!("no mkfs for {other}"),
        };
        fs.mount()?;
        Ok(fs)
    }

    fn mountpoint_str(&self) -> &str {
        self.mountpoint.to_str().expect("mount point is UTF-8")
    }

    /// Mounts the file system.
    pub fn mount(&mut self) -> anyhow::Result<()> {
        assert!(!self.mounted, "{} is already mounted", self.device);
        sh(
            "mount",
            &["-t", self.fstype, &self.device, self.mountpoint_str()],
        )?;
        self.mounted = true;
        Ok(())
    }

    /// Unmounts, retrying briefly while the file system is busy.
    pub fn unmount(&mut self) -> anyhow::Result<()> {
        if !self.mounted {
            return Ok(());
        }
        let mut last = None;
        for _ in 0..50 {
            match sh("umount", &[self.mountpoint_str()]) {
                Ok(_) => {
                    self.mounted = false;
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(last.expect("at least one attempt"))
    }

    /// Shuts the file system down without flushing its journal: everything not yet made
    /// durable is lost, as in a power cut; every later write and fsync fails.
    pub fn power_cut(&self) -> anyhow::Result<()> {
        sh("xfs_io", &["-x", "-c", "shutdown", self.mountpoint_str()]).map(|_| ())
    }

    /// Runs `e2fsck -fy` (ext4 only) and tolerates "errors corrected" exit codes.
    pub fn fsck(&self) -> anyhow::Result<()> {
        assert!(!self.mounted, "fsck of a mounted file system");
        let out = std::process::Command::new("e2fsck")
            .args(["-f", "-y", &self.device])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(
            matches!(out.status.code(), Some(0..=2)),
            "e2fsck {} failed: {}: {text}",
            self.device,
            out.status
        );
        if out.status.code() != Some(0) {
            println!("e2fsck {} corrected errors:\n{text}", self.device);
        }
        Ok(())
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = self.unmount() {
                eprintln!("cleanup: {e:#}; detaching lazily");
                let _ = sh("umount", &["-l", self.mountpoint_str()]);
            }
        }
        if let Err(e) = sh("losetup", &["-d", &self.device]) {
            eprintln!("cleanup: {e:#}");
        }
    }
}

/// A tmpfs mounted on a directory; unmounted in `Drop`.
#[derive(Debug)]
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_bytes` on `path` (created if missing).
    pub fn mount(path: &Path, size_bytes: u64) -> anyhow::Result<Tmpfs> {
        std::fs::create_dir_all(path)?;
        let p = path.to_str().context("tmpfs path is not UTF-8")?;
        sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size_bytes}"),
                "tmpfs",
                p,
            ],
        )?;
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    /// Grows (or shrinks) the tmpfs.
    pub fn resize(&self, size_bytes: u64) -> anyhow::Result<()> {
        let p = self.path.to_str().expect("UTF-8 path");
        sh("mount", &["-o", &format!("remount,size={size_bytes}"), p]).map(|_| ())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let p = self.path.to_str().expect("UTF-8 path");
        if sh("umount", &[p]).is_err() {
            let _ = sh("umount", &["-l", p]);
        }
    }
}
