//! A fault-injecting, in-memory file system for crash and error tests.
//!
//! Every file (an inode here) keeps two images: `live`, what reads see, and `durable`, what
//! survives a power loss. [`VfsFile::sync_data`] makes the live image durable (length included);
//! [`FaultyVfs::crash`] throws everything else away. The namespace is kept twice the same way: a
//! create, rename or remove is live at once and durable only after [`Vfs::sync_dir`] of the parent
//! directory. Directories themselves are durable as soon as they are created.
//!
//! Faults come from a [`FaultConfig`], changeable at runtime with [`FaultyVfs::set_faults`]:
//! - writes failing with EIO, ENOSPC past a byte budget, one short write (half the bytes reach the
//!   live image, then EIO);
//! - fdatasync failing with EIO, with Linux's behaviour after fsyncgate: the dirty ranges the
//!   failed call should have written are marked *lost*. The live image keeps them, the durable
//!   image never gets them, and a later sync that succeeds does not bring them back. An engine that
//!   retries fsync after a failure would believe lost data durable; tests use this to catch it.
//!   (<https://lwn.net/Articles/752063/>)
//! - reads of one named file failing with EIO: a bad sector under a sealed segment. The name is
//!   looked up at each read, so handles opened under an earlier name (a segment renamed into
//!   place) fail too; reads of every other file, and writes, go on working;
//! - torn crash: a crash keeps a random prefix, in write order, of the unsynced writes, possibly
//!   cut mid-record; reordered crash: a random subset of the unsynced 512-byte sectors instead.
//!
//! Invariants of an inode: `live` equals `durable` except on the pending writes (made since the
//! last sync attempt), the lost ranges, and the bytes at or above the shortest live length since
//! the last successful sync; so a sync copies only those, never the whole file. Pending and lost
//! ranges never overlap: a failed sync turns every pending write into a lost range, and a write
//! removes its range from the lost ones.
//!
//! After a crash every handle opened before it fails each call with EIO (the process died); new
//! opens see the post-crash state. All randomness comes from a seeded splitmix64, and every map is
//! ordered, so a seed replays the same crash.
//!
//! Not modelled: ordering of metadata between files, hard links, renaming directories, sparse
//! files (a write past the end fills the gap with zeros, which count as used bytes), and files
//! larger than [`MAX_FILE_BYTES`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::std_fs::PortableQueue;
use super::{IoBuf, OpenMode, QueueConfig, Vfs, VfsFile, WriteCompletion, WriteOp, WriteQueue};

/// Largest file the in-memory images hold; writes and resizes beyond fail with EFBIG.
pub const MAX_FILE_BYTES: u64 = 4 << 30;

/// Sector size of the reordered crash: sectors persist or vanish whole.
const SECTOR_BYTES: usize = 512;

/// Which faults to inject. `Default` injects none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultConfig {
    /// The Nth and every later `sync_data` (counted from when this config was set, 1-based; 0
    /// acts as 1) fails with EIO and marks the file's dirty ranges lost.
    pub fail_sync_after: Option<u64>,
    /// The Nth and every later write (counted as for `fail_sync_after`) fails with EIO, writing
    /// nothing.
    pub fail_write_after: Option<u64>,
    /// Writes and allocations that would take the total live bytes of all files above this fail
    /// with ENOSPC, writing nothing.
    pub enospc_after_bytes: Option<u64>,
    /// The next write puts only the first half of its bytes in the live image, then fails with
    /// EIO. Cleared once it fires.
    pub short_write_once: bool,
    /// At a crash, keep a random prefix of each file's unsynced writes (in write order).
    pub torn_crash: bool,
    /// At a crash, keep a random subset of each file's unsynced 512-byte sectors. Takes
    /// precedence over `torn_crash`.
    pub reorder_crash: bool,
    /// Every read of the file this path names when the faults are set (whichever name the file
    /// has later) fails with EIO, reading nothing: unreadable sectors belong to the file's
    /// blocks, so a new file put in its place (a repair) reads fine. Other calls on the file,
    /// and reads of other files, are unaffected.
    pub fail_reads_of: Option<PathBuf>,
    /// Seed of the random choices made at crashes.
    pub seed: u64,
}

/// An in-memory file system that injects faults and simulates power loss. Clones share state.
#[derive(Clone)]
pub struct FaultyVfs {
    state: Arc<Mutex<State>>,
    /// For a [`FaultyVfs::process`] handle: the crash epoch of the process it belongs to.
    process: Option<u64>,
}

impl fmt::Debug for FaultyVfs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("FaultyVfs")
            .field("files", &state.live_ns.len())
            .field("crashes", &state.epoch)
            .field("faults", &state.faults)
            .finish()
    }
}

impl Default for FaultyVfs {
    fn default() -> FaultyVfs {
        FaultyVfs::new(0)
    }
}

impl FaultyVfs {
    /// An empty file system with no faults; `seed` seeds the crash randomness.
    pub fn new(seed: u64) -> FaultyVfs {
        let faults = FaultConfig {
            seed,
            ..FaultConfig::default()
        };
        FaultyVfs {
            state: Arc::new(Mutex::new(State::new(faults))),
            process: None,
        }
    }

    /// A handle for one simulated process. After [`FaultyVfs::crash`], every call through it
    /// fails with EIO, not only the files it had open: a process does not outlive a power cut,
    /// so it must not go on creating and naming new files. Give it to the log under test; keep
    /// the plain handle to inspect the disk and to reopen after the crash.
    pub fn process(&self) -> FaultyVfs {
        FaultyVfs {
            state: Arc::clone(&self.state),
            process: Some(self.state.lock().epoch),
        }
    }

    /// EIO if this is a process handle whose process a crash ended.
    fn alive(&self, state: &State) -> io::Result<()> {
        match self.process {
            Some(epoch) if epoch != state.epoch => Err(errno(libc::EIO)),
            _ => Ok(()),
        }
    }

    /// Replaces the faults, restarts the `fail_*_after` counts and reseeds the RNG.
    pub fn set_faults(&self, faults: FaultConfig) {
        let mut state = self.state.lock();
        state.rng = SplitMix64(faults.seed);
        state.syncs_since_set = 0;
        state.writes_since_set = 0;
        state.unreadable =
            (faults.fail_reads_of.as_deref()).and_then(|p| state.live_ns.get(p).copied());
        state.faults = faults;
    }

    /// The faults in force (`short_write_once` is false once it has fired).
    pub fn faults(&self) -> FaultConfig {
        self.state.lock().faults.clone()
    }

    /// `sync_data` calls made on live handles, failed ones included.
    pub fn syncs(&self) -> u64 {
        self.state.lock().syncs
    }

    /// Writes made on live handles, failed ones included.
    pub fn writes(&self) -> u64 {
        self.state.lock().writes
    }

    /// Live bytes of all files, removed ones still open included: what
    /// [`FaultConfig::enospc_after_bytes`] counts. Setting that budget to this value fills the
    /// disk: allocating or growing a file then fails, overwriting allocated bytes does not.
    pub fn used_bytes(&self) -> u64 {
        self.state.lock().live_bytes()
    }

    /// Reads failed by [`FaultConfig::fail_reads_of`] so far.
    pub fn read_faults(&self) -> u64 {
        self.state.lock().read_faults
    }

    /// Simulates power loss: each file whose name is durable gets its durable image back (plus
    /// torn or reordered unsynced bytes when configured), the namespace reverts to its durable
    /// state, and every handle opened before fails from now on.
    pub fn crash(&self) {
        self.state.lock().crash();
    }

    /// The length the file at `path` would have after a crash now (torn bytes aside), or `None`
    /// if its name is not durable.
    pub fn durable_len(&self, path: impl AsRef<Path>) -> Option<u64> {
        let state = self.state.lock();
        let id = state.durable_ns.get(path.as_ref())?;
        Some(state.inodes[id].durable.len() as u64)
    }

    /// The bytes the file at `path` would hold after a crash now (torn bytes aside), or `None` if
    /// its name is not durable.
    pub fn durable_bytes(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        let state = self.state.lock();
        let id = state.durable_ns.get(path.as_ref())?;
        Some(state.inodes[id].durable.clone())
    }

    /// Bit rot: XORs the byte at `offset` of the file at `path` with `xor_mask`, in both images
    /// (where each image is long enough).
    ///
    /// # Panics
    /// If no file is at `path` (live or durable), or neither image reaches `offset`: a test bug.
    pub fn corrupt(&self, path: impl AsRef<Path>, offset: u64, xor_mask: u8) {
        let path = path.as_ref();
        let mut state = self.state.lock();
        let id = state
            .live_ns
            .get(path)
            .or_else(|| state.durable_ns.get(path));
        let Some(&id) = id else {
            panic!("corrupt: no file at {}", path.display());
        };
        let inode = state.inode_mut(id);
        let mut hit = false;
        for image in [&mut inode.live, &mut inode.durable] {
            if let Some(byte) = usize::try_from(offset)
                .ok()
                .and_then(|at| image.get_mut(at))
            {
                *byte ^= xor_mask;
                hit = true;
            }
        }
        assert!(
            hit,
            "corrupt: offset {offset} past the end of {}",
            path.display()
        );
    }
}

impl Vfs for FaultyVfs {
    fn name(&self) -> &'static str {
        "faulty"
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        self.alive(&state)?;
        state.create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let state = self.state.lock();
        self.alive(&state)?;
        state.list_dir(path)
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.state.lock().dirs.contains(path)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>> {
        let (inode, epoch) = {
            let mut state = self.state.lock();
            self.alive(&state)?;
            state.open(path, mode)?
        };
        Ok(Arc::new(FaultyFile {
            state: Arc::clone(&self.state),
            inode,
            epoch,
            path: path.to_path_buf(),
            writable: mode != OpenMode::Read,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        self.alive(&state)?;
        state.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        self.alive(&state)?;
        state.remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        self.alive(&state)?;
        state.sync_dir(path)
    }

    fn write_queue(&self, config: &QueueConfig) -> io::Result<Box<dyn WriteQueue>> {
        Ok(Box::new(FaultyQueue {
            inner: PortableQueue::new(config),
        }))
    }
}

/// A handle on an inode, valid until the next crash.
struct FaultyFile {
    state: Arc<Mutex<State>>,
    inode: u64,
    /// The crash count when opened; a different current count means the handle is dead.
    epoch: u64,
    path: PathBuf,
    writable: bool,
}

impl fmt::Debug for FaultyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyFile")
            .field("path", &self.path)
            .field("inode", &self.inode)
            .field("epoch", &self.epoch)
            .field("writable", &self.writable)
            .finish()
    }
}

impl FaultyFile {
    /// Locks the state and checks that no crash happened since the open.
    fn alive(&self) -> io::Result<parking_lot::MutexGuard<'_, State>> {
        let state = self.state.lock();
        if state.epoch != self.epoch {
            return Err(errno(libc::EIO));
        }
        Ok(state)
    }

    fn writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(errno(libc::EBADF))
        }
    }
}

impl Drop for FaultyFile {
    fn drop(&mut self) {
        self.state.lock().release(self.inode, self.epoch);
    }
}

impl VfsFile for FaultyFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut state = self.alive()?;
        state.check_read(self.inode)?;
        let live = &state.inode_mut(self.inode).live;
        let Some(tail) = usize::try_from(offset).ok().and_then(|at| live.get(at..)) else {
            return Ok(0);
        };
        let n = tail.len().min(buf.len());
        buf[..n].copy_from_slice(&tail[..n]);
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.alive()?;
        self.writable()?;
        state.write(self.inode, buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.alive()?.sync(self.inode)
    }

    fn len(&self) -> io::Result<u64> {
        let mut state = self.alive()?;
        Ok(state.inode_mut(self.inode).live.len() as u64)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let mut state = self.alive()?;
        self.writable()?;
        let len = checked_len(len)?;
        state.check_space(self.inode, len)?;
        let live = &mut state.inode_mut(self.inode).live;
        if live.len() < len {
            live.resize(len, 0);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.alive()?;
        self.writable()?;
        let len = checked_len(len)?;
        state.inode_mut(self.inode).set_len(len);
        Ok(())
    }

    fn map(&self) -> Option<io::Result<memmap2::Mmap>> {
        None
    }

    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

/// The faulty hot path: the portable queue's inline write + fdatasync, run through faulty files.
#[derive(Debug)]
struct FaultyQueue {
    inner: PortableQueue,
}

impl WriteQueue for FaultyQueue {
    fn name(&self) -> &'static str {
        "faulty"
    }

    fn take_buffer(&mut self) -> Option<IoBuf> {
        self.inner.take_buffer()
    }

    fn give_back(&mut self, buf: IoBuf) {
        self.inner.give_back(buf);
    }

    fn submit(&mut self, op: WriteOp) -> io::Result<()> {
        self.inner.submit(op)
    }

    fn wait(&mut self, min_complete: usize, out: &mut Vec<WriteCompletion>) -> io::Result<()> {
        self.inner.wait(min_complete, out)
    }

    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }
}

/// Everything behind the lock: inodes, both namespaces, faults and counters.
struct State {
    inodes: BTreeMap<u64, Inode>,
    /// Names as the running process sees them.
    live_ns: BTreeMap<PathBuf, u64>,
    /// Names as they would be after a crash.
    durable_ns: BTreeMap<PathBuf, u64>,
    /// Directories (always durable).
    dirs: BTreeSet<PathBuf>,
    next_inode: u64,
    /// Crashes so far; handles from an older epoch are dead.
    epoch: u64,
    faults: FaultConfig,
    rng: SplitMix64,
    syncs: u64,
    writes: u64,
    syncs_since_set: u64,
    writes_since_set: u64,
    /// Reads failed by `fail_reads_of`.
    read_faults: u64,
    /// The inode `fail_reads_of` named when the faults were set.
    unreadable: Option<u64>,
}

impl State {
    fn new(faults: FaultConfig) -> State {
        State {
            inodes: BTreeMap::new(),
            live_ns: BTreeMap::new(),
            durable_ns: BTreeMap::new(),
            dirs: BTreeSet::new(),
            next_inode: 1,
            epoch: 0,
            rng: SplitMix64(faults.seed),
            faults,
            syncs: 0,
            writes: 0,
            syncs_since_set: 0,
            writes_since_set: 0,
            read_faults: 0,
            unreadable: None,
        }
    }

    fn inode_mut(&mut self, id: u64) -> &mut Inode {
        self.inodes
            .get_mut(&id)
            .expect("an inode lives while a handle or a name refers to it")
    }

    /// Total live bytes of all files, including removed ones still open.
    fn live_bytes(&self) -> u64 {
        self.inodes.values().map(|i| i.live.len() as u64).sum()
    }

    /// ENOSPC if growing inode `id` to `new_len` would exceed the byte budget.
    fn check_space(&self, id: u64, new_len: usize) -> io::Result<()> {
        let Some(limit) = self.faults.enospc_after_bytes else {
            return Ok(());
        };
        let current = self.inodes.get(&id).map_or(0, |i| i.live.len());
        let growth = new_len.saturating_sub(current) as u64;
        if self.live_bytes() + growth > limit {
            return Err(errno(libc::ENOSPC));
        }
        Ok(())
    }

    /// EIO if inode `id` is the one `fail_reads_of` named.
    fn check_read(&mut self, id: u64) -> io::Result<()> {
        if self.unreadable == Some(id) {
            self.read_faults += 1;
            return Err(errno(libc::EIO));
        }
        Ok(())
    }

    fn write(&mut self, id: u64, buf: &[u8], offset: u64) -> io::Result<()> {
        self.writes += 1;
        self.writes_since_set += 1;
        if tripped(self.faults.fail_write_after, self.writes_since_set) {
            return Err(errno(libc::EIO));
        }
        let start = checked_len(offset)?;
        let end = start
            .checked_add(buf.len())
            .ok_or_else(|| errno(libc::EFBIG))?;
        checked_len(end as u64)?;
        self.check_space(id, end)?;
        if self.faults.short_write_once {
            self.faults.short_write_once = false;
            self.inode_mut(id).write(start, &buf[..buf.len() / 2]);
            return Err(errno(libc::EIO));
        }
        self.inode_mut(id).write(start, buf);
        Ok(())
    }

    fn sync(&mut self, id: u64) -> io::Result<()> {
        self.syncs += 1;
        self.syncs_since_set += 1;
        let fail = tripped(self.faults.fail_sync_after, self.syncs_since_set);
        let inode = self.inode_mut(id);
        if fail {
            inode.sync_failed();
            return Err(errno(libc::EIO));
        }
        inode.sync_ok();
        Ok(())
    }

    fn crash(&mut self) {
        self.epoch += 1;
        let durable: BTreeSet<u64> = self.durable_ns.values().copied().collect();
        self.inodes.retain(|id, _| durable.contains(id));
        let mode = CrashMode::of(&self.faults);
        for inode in self.inodes.values_mut() {
            inode.crash(mode, &mut self.rng);
        }
        self.live_ns = self.durable_ns.clone();
    }

    /// Returns the inode and epoch of a new handle on `path`.
    fn open(&mut self, path: &Path, mode: OpenMode) -> io::Result<(u64, u64)> {
        if self.dirs.contains(path) {
            return Err(errno(libc::EISDIR));
        }
        let id = match (mode, self.live_ns.get(path)) {
            (OpenMode::CreateNew, Some(_)) => return Err(errno(libc::EEXIST)),
            (OpenMode::CreateNew, None) => self.create(path)?,
            (_, Some(&id)) => id,
            (_, None) => return Err(errno(libc::ENOENT)),
        };
        self.inode_mut(id).handles += 1;
        Ok((id, self.epoch))
    }

    fn create(&mut self, path: &Path) -> io::Result<u64> {
        self.check_parent(path)?;
        let id = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(id, Inode::default());
        self.live_ns.insert(path.to_path_buf(), id);
        Ok(id)
    }

    /// ENOENT unless the parent directory of `path` exists.
    fn check_parent(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(parent) if self.dirs.contains(parent) => Ok(()),
            _ => Err(errno(libc::ENOENT)),
        }
    }

    /// Forgets handles dropped in the current epoch (older handles were forgotten at the crash).
    fn release(&mut self, id: u64, epoch: u64) {
        if epoch != self.epoch {
            return;
        }
        let inode = self.inode_mut(id);
        assert!(inode.handles > 0, "inode {id}: handle count underflow");
        inode.handles -= 1;
        self.collect(id);
    }

    /// Frees inode `id` once no name (live or durable) and no handle refers to it.
    fn collect(&mut self, id: u64) {
        let named = |ns: &BTreeMap<PathBuf, u64>| ns.values().any(|&v| v == id);
        let open = self.inodes.get(&id).is_some_and(|i| i.handles > 0);
        if !open && !named(&self.live_ns) && !named(&self.durable_ns) {
            self.inodes.remove(&id);
        }
    }

    fn create_dir_all(&mut self, path: &Path) -> io::Result<()> {
        if self.live_ns.contains_key(path) {
            return Err(errno(libc::EEXIST));
        }
        let ancestors: Vec<&Path> = path
            .ancestors()
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if ancestors.iter().any(|p| self.live_ns.contains_key(*p)) {
            return Err(errno(libc::ENOTDIR));
        }
        for dir in ancestors {
            self.dirs.insert(dir.to_path_buf());
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        if !self.dirs.contains(path) {
            let code = if self.live_ns.contains_key(path) {
                libc::ENOTDIR
            } else {
                libc::ENOENT
            };
            return Err(errno(code));
        }
        let files = self.live_ns.keys();
        let children = files
            .chain(self.dirs.iter())
            .filter(|p| p.parent() == Some(path));
        let names = children.filter_map(|p| p.file_name());
        Ok(names.map(|n| n.to_string_lossy().into_owned()).collect())
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        if self.dirs.contains(from) {
            return Err(errno(libc::EXDEV));
        }
        if self.dirs.contains(to) {
            return Err(errno(libc::EISDIR));
        }
        if !self.live_ns.contains_key(from) {
            return Err(errno(libc::ENOENT));
        }
        self.check_parent(to)?;
        if from == to {
            return Ok(());
        }
        let id = self
            .live_ns
            .remove(from)
            .expect("presence checked just above");
        if let Some(replaced) = self.live_ns.insert(to.to_path_buf(), id) {
            self.collect(replaced);
        }
        Ok(())
    }

    fn remove_file(&mut self, path: &Path) -> io::Result<()> {
        if self.dirs.contains(path) {
            return Err(errno(libc::EISDIR));
        }
        let id = self
            .live_ns
            .remove(path)
            .ok_or_else(|| errno(libc::ENOENT))?;
        self.collect(id);
        Ok(())
    }

    /// Makes the live entries of directory `path` its durable entries.
    fn sync_dir(&mut self, path: &Path) -> io::Result<()> {
        if !self.dirs.contains(path) {
            return Err(errno(libc::ENOENT));
        }
        let in_dir = |p: &Path| p.parent() == Some(path);
        let forgotten: Vec<u64> = self
            .durable_ns
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(_, &id)| id)
            .collect();
        self.durable_ns.retain(|p, _| !in_dir(p));
        for (p, &id) in self.live_ns.iter().filter(|(p, _)| in_dir(p)) {
            self.durable_ns.insert(p.clone(), id);
        }
        for id in forgotten {
            self.collect(id);
        }
        Ok(())
    }
}

/// One file's data: both images and what separates them.
#[derive(Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last sync attempt, in order, with their bytes (for torn crashes).
    pending: Vec<PendingWrite>,
    /// Ranges a failed sync dropped: never copied to the durable image, until rewritten.
    lost: Vec<Range<usize>>,
    /// The shortest live length since the last successful sync.
    low_water_len: usize,
    /// Open handles of the current epoch.
    handles: usize,
}

/// An unsynced write.
struct PendingWrite {
    offset: usize,
    data: Vec<u8>,
}

impl PendingWrite {
    fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.data.len()
    }
}

impl Inode {
    fn write(&mut self, offset: usize, data: &[u8]) {
        let range = offset..offset + data.len();
        if self.live.len() < range.end {
            self.live.resize(range.end, 0);
        }
        self.live[range.clone()].copy_from_slice(data);
        self.lost = self
            .lost
            .iter()
            .flat_map(|lost| uncovered(std::slice::from_ref(&range), lost.clone()))
            .collect();
        self.pending.push(PendingWrite {
            offset,
            data: data.to_vec(),
        });
    }

    fn set_len(&mut self, len: usize) {
        self.live.resize(len, 0);
        self.low_water_len = self.low_water_len.min(len);
        self.pending.retain(|p| p.offset < len);
        for p in &mut self.pending {
            p.data.truncate(len - p.offset);
        }
        for lost in &mut self.lost {
            lost.end = lost.end.min(len);
        }
        self.lost.retain(|r| !r.is_empty());
    }

    /// A successful fdatasync: the durable image catches up with the live one, except on lost
    /// ranges, which keep their old durable bytes (or zeros past the old durable end).
    fn sync_ok(&mut self) {
        let keep = self.durable.len().min(self.low_water_len);
        self.durable.truncate(keep);
        self.durable.resize(self.live.len(), 0);
        self.copy_to_durable(keep..self.live.len());
        let pending = std::mem::take(&mut self.pending);
        for p in &pending {
            let range = p.range();
            self.copy_to_durable(range.start..range.end.min(self.live.len()));
        }
        self.low_water_len = self.live.len();
    }

    /// A failed fdatasync: the kernel drops the dirty pages' error state, so what they held
    /// never reaches the disk, even if a later sync succeeds.
    fn sync_failed(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        self.lost.extend(pending.iter().map(PendingWrite::range));
        self.lost = merge(std::mem::take(&mut self.lost));
    }

    fn copy_to_durable(&mut self, range: Range<usize>) {
        for piece in uncovered(&self.lost, range) {
            self.durable[piece.clone()].copy_from_slice(&self.live[piece]);
        }
    }

    /// Power loss: keeps what the crash mode lets through of the pending writes, then the
    /// durable image becomes the live one.
    fn crash(&mut self, mode: CrashMode, rng: &mut SplitMix64) {
        let pending = std::mem::take(&mut self.pending);
        match mode {
            CrashMode::Clean => {}
            CrashMode::TornPrefix => self.keep_prefix(&pending, rng),
            CrashMode::SectorSubset => self.keep_sectors(&pending, rng),
        }
        self.live = self.durable.clone();
        self.lost.clear();
        self.low_water_len = self.live.len();
        self.handles = 0;
    }

    /// Keeps the first k unsynced bytes in write order, k uniform in 0..=total.
    fn keep_prefix(&mut self, pending: &[PendingWrite], rng: &mut SplitMix64) {
        let total: usize = pending.iter().map(|p| p.data.len()).sum();
        let mut left = rng.below(total as u64 + 1) as usize;
        for p in pending {
            if left == 0 {
                break;
            }
            let n = p.data.len().min(left);
            persist(&mut self.durable, p.offset, &p.data[..n]);
            left -= n;
        }
    }

    /// Keeps each unsynced 512-byte sector (aligned to the file) with probability one half.
    fn keep_sectors(&mut self, pending: &[PendingWrite], rng: &mut SplitMix64) {
        for p in pending {
            let range = p.range();
            let mut at = range.start;
            while at < range.end {
                let sector_end = ((at / SECTOR_BYTES + 1) * SECTOR_BYTES).min(range.end);
                if rng.next_u64() & 1 == 1 {
                    let bytes = &p.data[at - range.start..sector_end - range.start];
                    persist(&mut self.durable, at, bytes);
                }
                at = sector_end;
            }
        }
    }
}

/// Which unsynced bytes a crash keeps.
#[derive(Clone, Copy, Debug)]
enum CrashMode {
    /// None.
    Clean,
    /// A prefix in write order.
    TornPrefix,
    /// A random subset of sectors.
    SectorSubset,
}

impl CrashMode {
    fn of(faults: &FaultConfig) -> CrashMode {
        if faults.reorder_crash {
            CrashMode::SectorSubset
        } else if faults.torn_crash {
            CrashMode::TornPrefix
        } else {
            CrashMode::Clean
        }
    }
}

/// Writes `bytes` at `offset` of a durable image, zero-filling any gap.
fn persist(image: &mut Vec<u8>, offset: usize, bytes: &[u8]) {
    let end = offset + bytes.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[offset..end].copy_from_slice(bytes);
}

/// The parts of `range` that no range of `holes` covers, in order.
fn uncovered(holes: &[Range<usize>], range: Range<usize>) -> Vec<Range<usize>> {
    let mut pieces = vec![range];
    for hole in holes {
        pieces = pieces
            .into_iter()
            .flat_map(|p| {
                let left = p.start..p.end.min(hole.start);
                let right = p.start.max(hole.end)..p.end;
                [left, right]
            })
            .filter(|p| !p.is_empty())
            .collect();
    }
    pieces
}

/// Sorts ranges and joins the overlapping or touching ones.
fn merge(mut ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    ranges.retain(|r| !r.is_empty());
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// True when the `count`th call (1-based) reaches a `fail_*_after` threshold.
fn tripped(threshold: Option<u64>, count: u64) -> bool {
    threshold.is_some_and(|n| count >= n)
}

/// A file length or offset as an index into the images; EFBIG past [`MAX_FILE_BYTES`].
fn checked_len(len: u64) -> io::Result<usize> {
    if len > MAX_FILE_BYTES {
        return Err(errno(libc::EFBIG));
    }
    usize::try_from(len).map_err(|_| errno(libc::EFBIG))
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// splitmix64 (Steele, Lea, Flood 2014): tiny, seedable, good enough to pick crash outcomes.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is negligible here).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::FailedStep;

    const DIR: &str = "/db";

    fn setup() -> (FaultyVfs, PathBuf) {
        let vfs = FaultyVfs::new(7);
        vfs.create_dir_all(Path::new(DIR)).expect("mkdir");
        (vfs, Path::new(DIR).join("seg"))
    }

    /// Creates `path` durably (name synced) and returns a writable handle.
    fn create_durable(vfs: &FaultyVfs, path: &Path) -> Arc<dyn VfsFile> {
        let file = vfs.open(path, OpenMode::CreateNew).expect("create");
        vfs.sync_dir(Path::new(DIR)).expect("sync_dir");
        file
    }

    fn contents(vfs: &FaultyVfs, path: &Path) -> Vec<u8> {
        let file = vfs.open(path, OpenMode::Read).expect("open");
        let mut buf = vec![0; file.len().expect("len") as usize];
        assert_eq!(file.read_at(&mut buf, 0).expect("read"), buf.len());
        buf
    }

    fn faults(f: impl FnOnce(&mut FaultConfig)) -> FaultConfig {
        let mut config = FaultConfig::default();
        f(&mut config);
        config
    }

    #[test]
    fn unsynced_bytes_vanish_at_crash() {
        let (vfs, path) = setup();
        let file = create_durable(&vfs, &path);
        file.write_all_at(b"hello", 0).expect("write");
        assert_eq!(contents(&vfs, &path), b"hello");
        vfs.crash();
        assert_eq!(contents(&vfs, &path), b"");
    }

    #[test]
    fn synced_bytes_survive_crash() {
        let (vfs, path) = setup();
        let file = create_durable(&vfs, &path);
        file.write_all_at(b"hello", 0).expect("write");
        file.sync_data().expect("sync");
        file.write_all_at(b" world", 5).expect("write");
        vfs.crash();
        assert_eq!(contents(&vfs, &path), b"hello");
        assert_eq!(vfs.durable_len(&path), Some(5));
    }

    #[test]
    fn created_file_without_sync_dir_vanishes_at_crash() {
        let (vfs, path) = setup();
        let file = vfs.open(&path, OpenMode::CreateNew).expect("create");
        file.write_all_at(b"data", 0).expect("write");
        file.sync_data().expect("sync");
        assert_eq!(vfs.durable_len(&path), None);
        vfs.crash();
        let err = vfs.open(&path, OpenMode::Read).expect_err("gone");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn torn_crash_keeps_a_prefix() {
        let payload: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8 + 1).collect();
        let mut cut_mid_write = false;
        for seed in 0..32 {
            let (vfs, path) = setup();
            vfs.set_faults(faults(|f| (f.torn_crash, f.seed) = (true, seed)));
            let file = create_durable(&vfs, &path);
            file.write_all_at(b"synced", 0).expect("write");
            file.sync_data().expect("sync");
            file.write_all_at(&payload[..400], 6).expect("write");
            file.write_all_at(&payload[400..], 406).expect("write");
            vfs.crash();
            let got = contents(&vfs, &path);
            assert_eq!(&got[..6], b"synced", "seed {seed}");
            let kept = got.len() - 6;
            assert_eq!(&got[6..], &payload[..kept], "seed {seed}: not a prefix");
            cut_mid_write |= kept != 0 && kept != 400 && kept != payload.len();
        }
        assert!(cut_mid_write, "no seed tore a write");
    }

    #[test]
    fn reorder_crash_keeps_whole_sectors() {
        let (vfs, path) = setup();
        vfs.set_faults(faults(|f| (f.reorder_crash, f.seed) = (true, 3)));
        let file = create_durable(&vfs, &path);
        file.write_all_at(&[0xAA; 4096], 0).expect("write");
        file.sync_data().expect("sync");
        file.write_all_at(&[0xBB; 4096], 0).expect("write");
        vfs.crash();
        let got = contents(&vfs, &path);
        let new_sectors = got.chunks(SECTOR_BYTES).filter(|s| s[0] == 0xBB).count();
        for sector in got.chunks(SECTOR_BYTES) {
            assert!(sector.iter().all(|&b| b == sector[0]), "sector split");
        }
        assert!(
            new_sectors > 0 && new_sectors < 8,
            "kept {new_sectors} of 8"
        );
    }

    #[test]
    fn rename_without_sync_dir_is_undone_by_crash() {
        let (vfs, path) = setup();
        let file = create_durable(&vfs, &path);
        file.write_all_at(b"x", 0).expect("write");
        file.sync_data().expect("sync");
        let to = Path::new(DIR).join("renamed");
        vfs.rename(&path, &to).expect("rename");
        assert_eq!(vfs.list_dir(Path::new(DIR)).expect("ls"), ["renamed"]);
        vfs.crash();
        assert_eq!(vfs.list_dir(Path::new(DIR)).expect("ls"), ["seg"]);
        assert_eq!(contents(&vfs, &path), b"x");

        vfs.rename(&path, &to).expect("rename");
        vfs.sync_dir(Path::new(DIR)).expect("sync_dir");
        vfs.crash();
        assert_eq!(vfs.list_dir(Path::new(DIR)).expect("ls"), ["renamed"]);
        assert_eq!(contents(&vfs, &to), b"x");
    }

    #[test]
    fn remove_without_sync_dir_is_undone_by_crash() {
        let (vfs, path) = setup();
        create_durable(&vfs, &path);
        vfs.remove_file(&path).expect("remove");
        assert!(vfs.list_dir(Path::new(DIR)).expect("ls").is_empty());
        vfs.crash();
        assert_eq!(vfs.list_dir(Path::new(DIR)).expect("ls"), ["seg"]);
    }

    #[test]
    fn failed_sync_then_successful_sync_still_loses_the_data() {
        let (vfs, path) = setup();
        let file = create_durable(&vfs, &path);
        file.write_all_at(b"old!", 0).expect("write");
        file.sync_data().expect("sync");
        file.write_all_at(b"new!tail", 0).expect("write");
        vfs.set_faults(faults(|f| f.fail_sync_after = Some(1)));
        let err = file.sync_data().expect_err("injected");
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        vfs.set_faults(FaultConfig::default());
        file.sync_data().expect("the retry succeeds, as on Linux");
        assert_eq!(
            contents(&vfs, &path),
            b"new!tail",
            "the page cache keeps it"
        );
        vfs.crash();
        assert_eq!(contents(&vfs, &path), b"old!\0\0\0\0");
    }

    #[test]
    fn rewriting_lost_bytes_makes_them_durable_again() {
        let (vfs, path) = setup();
        let file = create_durable(&vfs, &path);
        file.write_all_at(b"abcd", 0).expect("write");
        vfs.set_faults(faults(|f| f.fail_sync_after = Some(1)));
        file.sync_data().expect_err("injected");
        vfs.set_faults(FaultConfig::default());
        file.write_all_at(b"BC", 1).expect("write");
        file.sync_data().expect("sync");
        vfs.crash();
        assert_eq!(contents(&vfs, &path), b"\0BC\0");
    }

    #[test]
    fn handles_fail_after_crash() {
        let (vfs, path) = setup();
        let file = create_durable(&vfs, &path);
        file.write_all_at(b"abc", 0).expect("write");
        file.sync_data().expect("sync");
        vfs.crash();
        let eio =
            |r: io::Result<()>| assert_eq!(r.expect_err("dead").raw_os_error(), Some(libc::EIO));
        eio(file.write_all_at(b"x", 0));
        eio(file.sync_data());
        eio(file.read_at(&mut [0; 3], 0).map(drop));
        eio(file.len().map(drop));
        eio(file.set_len(0));
        eio(file.allocate(10));
        drop(file);
        let fresh = vfs.open(&path, OpenMode::ReadWrite).expect("reopen");
        assert_eq!(fresh.len().expect("len"), 3);
    }

    #[test]
    fn enospc_past_the_byte_budget() {
        let (vfs, path) = setup();
        let file = create_durable(&vfs, &path);
        vfs.set_faults(faults(|f| f.enospc_after_bytes = Some(100)));
        file.write_all_at(&[1; 80], 0).expect("fits");
        let err = file.write_all_at(&[2; 30], 80).expect_err("full");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(file.len().expect("len"), 80, "nothing written");
        file.write_all_at(&[3; 80], 0)
            .expect("overwrite needs no space");
        let err = file.allocate(101).expect_err("full");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        file.allocate(100).expect("fits exactly");
    }

    #[test]
    fn a_budget_of_the_used_bytes_is_a_full_disk() {
        let (vfs, path) = setup();
        let file = create_durable(&vfs, &path);
        file.allocate(64).expect("allocate");
        file.write_all_at(&[1; 10], 0).expect("write");
        assert_eq!(vfs.used_bytes(), 64);
        vfs.set_faults(faults(|f| f.enospc_after_bytes = Some(vfs.used_bytes())));
        file.write_all_at(&[2; 54], 10)
            .expect("allocated bytes are written in place");
        let err = file.write_all_at(&[3], 64).expect_err("full");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        let other = Path::new(DIR).join("other");
        let err = create_durable(&vfs, &other).allocate(1).expect_err("full");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(vfs.used_bytes(), 64);
    }

    #[test]
    fn write_and_sync_failures_count_from_when_set() {
        let (vfs, path) = setup();
        let file = create_durable(&vfs, &path);
        file.write_all_at(b"a", 0).expect("write");
        vfs.set_faults(faults(|f| f.fail_write_after = Some(2)));
        file.write_all_at(b"b", 1).expect("first since set");
        file.write_all_at(b"c", 2).expect_err("second");
        file.write_all_at(b"d", 3).expect_err("third");
        assert_eq!(vfs.writes(), 4);
        assert_eq!(contents(&vfs, &path), b"ab");
        vfs.set_faults(faults(|f| f.fail_sync_after = Some(2)));
        file.sync_data().expect("first");
        file.sync_data().expect_err("second");
        assert_eq!(vfs.syncs(), 2);
    }

    #[test]
    fn reads_of_the_named_file_fail_until_cleared() {
        let (vfs, path) = setup();
        let tmp = Path::new(DIR).join("tmp");
        let file = create_durable(&vfs, &tmp);
        file.write_all_at(b"sealed", 0).expect("write");
        vfs.rename(&tmp, &path).expect("rename into place");
        let other = create_durable(&vfs, &Path::new(DIR).join("other"));
        other.write_all_at(b"fine", 0).expect("write");
        vfs.set_faults(faults(|f| f.fail_reads_of = Some(path.clone())));
        let mut buf = [0u8; 6];
        for handle in [&file, &vfs.open(&path, OpenMode::Read).expect("open")] {
            let err = handle.read_at(&mut buf, 0).expect_err("injected");
            assert_eq!(err.raw_os_error(), Some(libc::EIO));
        }
        assert_eq!(buf, [0; 6], "a failed read fills nothing");
        assert_eq!(vfs.read_faults(), 2);
        assert_eq!(contents(&vfs, &Path::new(DIR).join("other")), b"fine");
        file.write_all_at(b"S", 0).expect("writes are unaffected");
        assert_eq!(file.len().expect("len"), 6);
        vfs.set_faults(FaultConfig::default());
        assert_eq!(contents(&vfs, &path), b"Sealed");
        assert_eq!(vfs.read_faults(), 2);
    }

    #[test]
    fn short_write_once_writes_half_then_fails() {
        let (vfs, path) = setup();
        let file = create_durable(&vfs, &path);
        vfs.set_faults(faults(|f| f.short_write_once = true));
        file.write_all_at(b"12345678", 0).expect_err("short");
        assert_eq!(contents(&vfs, &path), b"1234");
        assert!(!vfs.faults().short_write_once);
        file.write_all_at(b"12345678", 0).expect("armed once only");
    }

    #[test]
    fn open_modes_and_errors() {
        let (vfs, path) = setup();
        let kind = |r: io::Result<Arc<dyn VfsFile>>| r.expect_err("must fail").kind();
        assert_eq!(
            kind(vfs.open(&path, OpenMode::Read)),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            kind(vfs.open(&path, OpenMode::ReadWrite)),
            io::ErrorKind::NotFound
        );
        let orphan = Path::new("/nodir/seg");
        assert_eq!(
            kind(vfs.open(orphan, OpenMode::CreateNew)),
            io::ErrorKind::NotFound
        );
        create_durable(&vfs, &path);
        assert_eq!(
            kind(vfs.open(&path, OpenMode::CreateNew)),
            io::ErrorKind::AlreadyExists
        );
        let reader = vfs.open(&path, OpenMode::Read).expect("open");
        assert_eq!(reader.path(), path.as_path());
        assert!(reader.map().is_none() && reader.raw_fd().is_none());
        assert_eq!(
            reader.write_all_at(b"x", 0).expect_err("ro").raw_os_error(),
            Some(libc::EBADF)
        );
        assert!(vfs.is_dir(Path::new("/")) && vfs.is_dir(Path::new(DIR)) && !vfs.is_dir(&path));
    }

    #[test]
    fn truncation_is_durable_only_after_sync() {
        let (vfs, path) = setup();
        let file = create_durable(&vfs, &path);
        file.write_all_at(b"abcdef", 0).expect("write");
        file.sync_data().expect("sync");
        file.set_len(2).expect("truncate");
        file.allocate(4).expect("extend");
        assert_eq!(contents(&vfs, &path), b"ab\0\0");
        assert_eq!(vfs.durable_bytes(&path).expect("durable"), b"abcdef");
        file.sync_data().expect("sync");
        assert_eq!(vfs.durable_bytes(&path).expect("durable"), b"ab\0\0");
    }

    #[test]
    fn corrupt_flips_bits_in_both_images() {
        let (vfs, path) = setup();
        let file = create_durable(&vfs, &path);
        file.write_all_at(&[0x0F; 4], 0).expect("write");
        file.sync_data().expect("sync");
        vfs.corrupt(&path, 2, 0xFF);
        assert_eq!(contents(&vfs, &path), [0x0F, 0x0F, 0xF0, 0x0F]);
        vfs.crash();
        assert_eq!(contents(&vfs, &path), [0x0F, 0x0F, 0xF0, 0x0F]);
    }

    #[test]
    fn removed_files_are_freed_when_unreferenced() {
        let (vfs, path) = setup();
        let file = vfs.open(&path, OpenMode::CreateNew).expect("create");
        vfs.remove_file(&path).expect("remove");
        file.write_all_at(b"still open", 0)
            .expect("write to an unlinked file");
        assert_eq!(vfs.state.lock().inodes.len(), 1);
        drop(file);
        assert!(vfs.state.lock().inodes.is_empty());
    }

    #[test]
    fn queue_runs_operations_through_the_faults() {
        let (vfs, path) = setup();
        let file = create_durable(&vfs, &path);
        let config = QueueConfig {
            depth: 2,
            buffer_bytes: 64,
            dir: None,
        };
        let mut queue = vfs.write_queue(&config).expect("queue");
        assert_eq!(queue.name(), "faulty");
        let mut submit = |token, offset, sync| {
            let mut buf = queue.take_buffer().expect("free buffer");
            buf.extend_from_slice(b"rec!");
            let op = WriteOp {
                token,
                file: Arc::clone(&file),
                offset,
                buf,
                sync,
            };
            queue.submit(op).expect("submit");
            let mut done = Vec::new();
            queue.wait(1, &mut done).expect("wait");
            done.pop()
                .expect("one completion")
                .result
                .map_err(|(step, _)| step)
        };
        assert_eq!(submit(1, 0, true), Ok(()));
        vfs.set_faults(faults(|f| f.fail_sync_after = Some(1)));
        assert_eq!(submit(2, 4, true), Err(FailedStep::Sync));
        vfs.set_faults(faults(|f| f.fail_write_after = Some(1)));
        assert_eq!(submit(3, 8, false), Err(FailedStep::Write));
        vfs.crash();
        assert_eq!(contents(&vfs, &path), b"rec!");
    }

    #[test]
    fn same_seed_same_crash() {
        let run = |seed| {
            let (vfs, path) = setup();
            vfs.set_faults(faults(|f| (f.torn_crash, f.seed) = (true, seed)));
            let file = create_durable(&vfs, &path);
            file.write_all_at(&[9; 10_000], 0).expect("write");
            vfs.crash();
            vfs.durable_len(&path)
        };
        assert_eq!(run(42), run(42));
    }

    /// Guards the crash tests against a log that outlives its simulated power cut: a writer in
    /// the middle of a rollover used to go on creating, naming and writing new files forever.
    #[test]
    fn a_process_handle_dies_entirely_at_a_crash() {
        let vfs = FaultyVfs::new(9);
        let dir = Path::new("/p");
        vfs.create_dir_all(dir).expect("mkdir");
        let process = vfs.process();
        let f = process
            .open(&dir.join("a"), OpenMode::CreateNew)
            .expect("open");
        f.write_all_at(b"x", 0).expect("write");
        vfs.crash();
        let eio = |r: io::Result<()>| r.expect_err("dead process").raw_os_error();
        assert_eq!(
            eio(process
                .open(&dir.join("b"), OpenMode::CreateNew)
                .map(|_| ())),
            Some(libc::EIO)
        );
        assert_eq!(eio(process.sync_dir(dir)), Some(libc::EIO));
        assert_eq!(
            eio(process.rename(&dir.join("a"), &dir.join("c"))),
            Some(libc::EIO)
        );
        // The machine itself, and a process started after the crash, work.
        vfs.open(&dir.join("b"), OpenMode::CreateNew)
            .expect("plain handle");
        vfs.process().sync_dir(dir).expect("new process");
    }
}
