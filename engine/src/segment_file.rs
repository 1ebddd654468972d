//! Opening one segment file: [`Opened`] holds it with its header checked against its name, and
//! [`read_all`] reads a file whole. Recovery, `verify`, the scanner, repair and `repair_meta`
//! open segments through here; judging the records inside is `segment_scan.rs`'s job.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::io::{OpenMode, Vfs, VfsFile};
use crate::segment::{
    segment_name, HeaderError, SegmentHeader, FORMAT_VERSION, SEGMENT_HEADER_BYTES,
};
use crate::types::Lsn;

/// An opened segment file with its checked header.
pub(crate) struct Opened {
    pub(crate) base: Lsn,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<dyn VfsFile>,
    pub(crate) header: SegmentHeader,
}

pub(crate) fn open_segment(vfs: &dyn Vfs, dir: &Path, base: Lsn, mode: OpenMode) -> Result<Opened> {
    let path = dir.join(segment_name(base));
    let file = vfs
        .open(&path, mode)
        .map_err(|e| Error::io("open", &path, e))?;
    let mut buf = [0u8; SEGMENT_HEADER_BYTES];
    let n = file
        .read_at(&mut buf, 0)
        .map_err(|e| Error::io("read", &path, e))?;
    let header = check_header(&path, base, &buf[..n])?;
    Ok(Opened {
        base,
        path,
        file,
        header,
    })
}

fn check_header(path: &Path, base: Lsn, bytes: &[u8]) -> Result<SegmentHeader> {
    let corrupt = |reason: String| Error::Corruption {
        segment: path.to_path_buf(),
        offset: 0,
        lsn: base,
        reason,
    };
    let header = match SegmentHeader::decode(bytes) {
        Ok(h) => h,
        // The log's marker was read, so the log is of a version this build reads, and so is
        // every segment any build wrote into it: another version here is a damaged header.
        Err(HeaderError::Version(found)) => {
            return Err(corrupt(format!(
                "segment header says format version {found} in a log of version {FORMAT_VERSION} \
                 or older: the header is damaged"
            )))
        }
        Err(HeaderError::Magic) => {
            return Err(corrupt("segment header has the wrong magic".into()))
        }
        Err(HeaderError::Truncated(n)) => {
            return Err(corrupt(format!("segment header truncated to {n} bytes")))
        }
        Err(HeaderError::Invalid(why)) => return Err(corrupt(why)),
    };
    if header.base_lsn != base {
        return Err(corrupt(format!(
            "header says base LSN {} but the file name says {base}",
            header.base_lsn
        )));
    }
    Ok(header)
}

/// Reads a whole file with `read_at` (not a map, so that an EIO is an error, not a SIGBUS).
pub(crate) fn read_all(file: &dyn VfsFile) -> Result<Vec<u8>> {
    let len = file.len().map_err(|e| Error::io("stat", file.path(), e))?;
    let len = usize::try_from(len).map_err(|_| Error::Corruption {
        segment: file.path().to_path_buf(),
        offset: 0,
        lsn: Lsn::ZERO,
        reason: format!("segment of {len} bytes is larger than this machine can address"),
    })?;
    let mut buf = zeroed_buffer(len);
    let n = file
        .read_at(&mut buf, 0)
        .map_err(|e| Error::io("read", file.path(), e))?;
    buf.truncate(n);
    Ok(buf)
}

/// Buffers from this size up ask for transparent huge pages.
const HUGE_BUFFER_BYTES: usize = 4 << 20;
/// The size of a transparent huge page on x86-64 and most arm64 kernels.
const HUGE_PAGE_BYTES: usize = 2 << 20;

/// A zeroed buffer of `len` bytes. Recovery reads the last segment whole into one at every open
/// (64 MiB by default): over its 2 MiB-aligned part it asks for transparent huge pages, so that
/// the read faults its memory in once per 2 MiB instead of once per 4 KiB where the kernel
/// grants them (`transparent_hugepage` set to `madvise` or `always`). Untouched until the read:
/// a large zeroed allocation is fresh pages of the kernel's, which it zeroes itself.
fn zeroed_buffer(len: usize) -> Vec<u8> {
    let buf = vec![0u8; len];
    if len >= HUGE_BUFFER_BYTES {
        let start = buf.as_ptr() as usize;
        let from = start.next_multiple_of(HUGE_PAGE_BYTES);
        let to = (start + len) / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
        if to > from {
            #[allow(unsafe_code)]
            // SAFETY: `from..to` lies inside `buf`'s allocation, alive for the call;
            // MADV_HUGEPAGE changes how its pages are backed, never what they hold. Refused
            // (no THP), it changes nothing, so its result is not needed.
            unsafe {
                libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE);
            }
        }
    }
    buf
}
