//! What the benchmark ran on: CPUs, kernel, memory, and the file system under the scratch
//! directory, read from `/proc` (so no `unsafe` `statfs`/`uname` calls are needed: the mount
//! table names the same file system type `statfs` would identify by its magic number).

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

/// File system types on which `fdatasync` does not reach a device, so figures mean nothing.
const MEMORY_FILE_SYSTEMS: [&str; 2] = ["tmpfs", "ramfs"];

/// The machine and the measured directory.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// CPUs this process may run on.
    pub nproc: usize,
    /// CPU model from `/proc/cpuinfo`.
    pub cpu: String,
    /// Total memory in MiB.
    pub memory_mib: u64,
    /// `uname -sr`.
    pub kernel: String,
    /// The scratch directory (absolute).
    pub dir: PathBuf,
    /// Type of the file system it is on, e.g. `ext4`.
    pub fs_type: String,
    /// The device or source of that file system, e.g. `/dev/vda`.
    pub fs_source: String,
    /// Mount options of that file system.
    pub mount_options: String,
}

impl Machine {
    /// Reads the machine's description; `dir` must exist.
    ///
    /// # Errors
    /// When `/proc` cannot be read or `dir` cannot be resolved.
    pub fn probe(dir: &Path) -> anyhow::Result<Machine> {
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        let mountinfo =
            std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
        let mount = mount_of(&mountinfo, &dir).unwrap_or_default();
        let release = read_trimmed("/proc/sys/kernel/osrelease")?;
        let ostype = read_trimmed("/proc/sys/kernel/ostype").unwrap_or_else(|_| "Linux".into());
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Ok(Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu: field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into()),
            memory_mib: kib_field(&meminfo, "MemTotal:").unwrap_or(0) / 1024,
            kernel: format!("{ostype} {release}"),
            dir,
            fs_type: mount.fs_type,
            fs_source: mount.source,
            mount_options: mount.options,
        })
    }

    /// The `command:`, `machine:` and `directory:` lines every report starts with.
    pub fn write_description(&self, out: &mut String, command: &str) {
        use std::fmt::Write as _;
        let _ = writeln!(out, "command: {command}");
        let _ = writeln!(
            out,
            "machine: {} CPUs ({}), {} MiB RAM, {}",
            self.nproc, self.cpu, self.memory_mib, self.kernel
        );
        let _ = writeln!(
            out,
            "directory: {} on {} ({}, {})",
            self.dir.display(),
            self.fs_type,
            self.fs_source,
            self.mount_options
        );
    }

    /// A warning to print when the directory's file system makes the figures meaningless.
    pub fn warning(&self) -> Option<String> {
        MEMORY_FILE_SYSTEMS
            .contains(&self.fs_type.as_str())
            .then(|| {
                format!(
                    "{} is on {}: fdatasync never reaches a disk there, so these figures do not \
                 measure durability; pass --dir on a disk-backed file system",
                    self.dir.display(),
                    self.fs_type
                )
            })
    }
}

/// Peak resident set size of this process (`VmHWM`), in KiB.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| kib_field(&s, "VmHWM:"))
        .unwrap_or(0)
}

/// Clock ticks per second of `/proc/<pid>/stat` times: `USER_HZ`, fixed at 100 in the Linux ABI.
const USER_HZ: u64 = 100;

/// CPU time (user + system, every thread) this process has used so far, at 10 ms resolution.
pub fn process_cpu_time() -> Duration {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| cpu_ticks(&s))
        .map_or(Duration::ZERO, |ticks| {
            Duration::from_millis(ticks * 1000 / USER_HZ)
        })
}

/// CPU time (user + system) used so far by this process's threads whose name starts with
/// `prefix` (names are cut at 15 bytes, as `/proc` keeps them); threads that ended are not
/// counted.
pub fn threads_cpu_time(prefix: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let ticks: u64 = tasks
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            if !comm.trim_end().starts_with(prefix) {
                return None;
            }
            cpu_ticks(&std::fs::read_to_string(dir.join("stat")).ok()?)
        })
        .sum();
    Duration::from_millis(ticks * 1000 / USER_HZ)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line.
fn cpu_ticks(stat: &str) -> Option<u64> {
    user_system_ticks(stat).map(|(u, s)| u + s)
}

/// utime and stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its closing parenthesis.
fn user_system_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// One thread's CPU time so far: on the CPU to the nanosecond (`/proc/<pid>/task/<tid>/schedstat`,
/// the scheduler's own account), and its user and system parts at `/proc`'s 10 ms resolution.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadCpu {
    /// Thread id.
    pub tid: u32,
    /// Its name (cut at 15 bytes, as `/proc` keeps it).
    pub name: String,
    /// Time on a CPU.
    pub run: Duration,
    /// User time (10 ms ticks).
    pub user: Duration,
    /// System time (10 ms ticks).
    pub system: Duration,
}

/// Every live thread of this process with its CPU time so far, by thread id.
pub fn threads_cpu() -> Vec<ThreadCpu> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut out: Vec<ThreadCpu> = tasks
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let tid = dir.file_name()?.to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(dir.join("comm")).ok()?;
            let (user, system) =
                user_system_ticks(&std::fs::read_to_string(dir.join("stat")).ok()?)?;
            let run_ns = std::fs::read_to_string(dir.join("schedstat"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(ThreadCpu {
                tid,
                name: name.trim_end().to_string(),
                run: Duration::from_nanos(run_ns),
                user: Duration::from_millis(user * 1000 / USER_HZ),
                system: Duration::from_millis(system * 1000 / USER_HZ),
            })
        })
        .collect();
    out.sort_by_key(|t| t.tid);
    out
}

/// What each thread of `after` used since `before` (a thread new since counts from zero; one
/// that ended is left out), busiest first.
pub fn threads_cpu_since(before: &[ThreadCpu], after: &[ThreadCpu]) -> Vec<ThreadCpu> {
    let mut out: Vec<ThreadCpu> = after
        .iter()
        .map(|a| {
            let b = before.iter().find(|b| b.tid == a.tid);
            let since =
                |f: fn(&ThreadCpu) -> Duration| f(a).saturating_sub(b.map_or(Duration::ZERO, f));
            ThreadCpu {
                tid: a.tid,
                name: a.name.clone(),
                run: since(|t| t.run),
                user: since(|t| t.user),
                system: since(|t| t.system),
            }
        })
        .collect();
    out.sort_by_key(|t| std::cmp::Reverse(t.run));
    out
}

/// One line of the mount table.
#[derive(Debug, Default, PartialEq, Eq)]
struct Mount {
    point: PathBuf,
    fs_type: String,
    source: String,
    options: String,
}

/// The mount that holds `path` (absolute, resolved): the longest mount point that is a prefix of
/// it; of mounts stacked on one point, the last (topmost).
fn mount_of(mountinfo: &str, path: &Path) -> Option<Mount> {
    let mut best: Option<Mount> = None;
    for line in mountinfo.lines() {
        let Some(mount) = parse_mountinfo_line(line) else {
            continue;
        };
        if !path.starts_with(&mount.point) {
            continue;
        }
        let depth = |m: &Mount| {
            m.point
                .components()
                .filter(|c| *c != Component::RootDir)
                .count()
        };
        let deeper = match &best {
            None => true,
            Some(b) => depth(&mount) >= depth(b),
        };
        if deeper {
            best = Some(mount);
        }
    }
    best
}

/// `36 35 98:0 /root /mnt rw,noatime master:1 - ext4 /dev/vda rw,errors=remount-ro`
fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let point = left.split(' ').nth(4)?;
    let mut right = right.split(' ');
    Some(Mount {
        point: PathBuf::from(unescape_octal(point)),
        fs_type: right.next()?.to_string(),
        source: right.next().unwrap_or("").to_string(),
        options: left.split(' ').nth(5).unwrap_or("").to_string(),
    })
}

/// The mount table escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_trimmed(path: &str) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {path}"))?
        .trim()
        .to_string())
}

/// The value of the first `key : value` line.
fn field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
}

/// The number of a `Key:   1234 kB` line.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread named `name` that spins until dropped.
    struct Spinning {
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Spinning {
        fn start(name: &str) -> Spinning {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let spin = std::sync::Arc::clone(&stop);
            let thread = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    while !spin.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
                .expect("spawn");
            Spinning {
                stop,
                thread: Some(thread),
            }
        }
    }

    impl Drop for Spinning {
        fn drop(&mut self) {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                t.join().expect("join");
            }
        }
    }

    #[test]
    fn a_named_threads_cpu_time_is_counted_while_it_runs() {
        let spinning = Spinning::start("cpu-count-test");
        let t0 = std::time::Instant::now();
        let mut counted = Duration::ZERO;
        while counted < Duration::from_millis(20) && t0.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(50));
            counted = threads_cpu_time("cpu-count-te");
        }
        assert_eq!(threads_cpu_time("no-such-thread-"), Duration::ZERO);
        drop(spinning);
        assert!(counted >= Duration::from_millis(20), "{counted:?}");
    }

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
23 22 0:21 / /tmp rw,nosuid - tmpfs tmpfs rw,size=100k
24 22 0:22 / /data/my\\040dir rw - xfs /dev/vdb rw
25 22 0:23 / /tmp rw - overlay overlay rw";

    #[test]
    fn longest_prefix_wins_and_topmost_of_stacked_mounts() {
        let root = mount_of(MOUNTINFO, Path::new("/srv/log/target")).unwrap();
        assert_eq!(
            (root.fs_type.as_str(), root.source.as_str()),
            ("ext4", "/dev/vda")
        );
        let tmp = mount_of(MOUNTINFO, Path::new("/tmp/x")).unwrap();
        assert_eq!(tmp.fs_type, "overlay");
        let spaced = mount_of(MOUNTINFO, Path::new("/data/my dir/a")).unwrap();
        assert_eq!(spaced.fs_type, "xfs");
    }

    #[test]
    fn prefix_matches_whole_components_only() {
        let m = mount_of(MOUNTINFO, Path::new("/tmpfoo")).unwrap();
        assert_eq!(m.fs_type, "ext4");
    }

    #[test]
    fn cpu_ticks_skip_the_command_name() {
        let stat = "42 (my (odd) cmd) S 1 42 42 0 -1 4194304 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(user_system_ticks(stat), Some((250, 75)));
    }

    #[test]
    fn each_thread_s_cpu_since_a_snapshot_is_its_own() {
        let before = threads_cpu();
        let spinning = Spinning::start("cpu-since-test");
        let t0 = std::time::Instant::now();
        let mut seen = None;
        while seen.is_none() && t0.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(20));
            let since = threads_cpu_since(&before, &threads_cpu());
            assert!(since.windows(2).all(|w| w[0].run >= w[1].run), "{since:?}");
            seen = since
                .into_iter()
                .find(|t| t.name == "cpu-since-test" && t.run >= Duration::from_millis(30));
        }
        drop(spinning);
        assert!(
            seen.is_some(),
            "the spinning thread's time was never counted"
        );
    }

    #[test]
    fn a_thread_new_since_the_snapshot_counts_from_zero_and_an_ended_one_is_left_out() {
        let t = |tid, ms| ThreadCpu {
            tid,
            name: format!("t{tid}"),
            run: Duration::from_millis(ms),
            user: Duration::from_millis(ms / 2),
            system: Duration::from_millis(ms / 2),
        };
        let since = threads_cpu_since(&[t(1, 10), t(2, 40)], &[t(1, 30), t(3, 5)]);
        assert_eq!(since, vec![t(1, 20), t(3, 5)]);
    }

    #[test]
    fn kib_fields_parse() {
        let status = "Name:\tx\nVmHWM:\t   12345 kB\nVmRSS:\t 100 kB\n";
        assert_eq!(kib_field(status, "VmHWM:"), Some(12345));
        assert_eq!(kib_field(status, "VmPeak:"), None);
    }
}
