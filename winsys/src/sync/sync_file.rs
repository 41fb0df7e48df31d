//! [`SyncFile`]: an owned sync_file fd.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::PollFlags;
use rustix::io::Errno;

use super::{monotonic_ns_after, poll_ready, Error, Result};
use crate::fd::{describe, owned_from_kernel};
use crate::uapi::{self, sync_file as sys};

/// A sync_file: an fd holding a snapshot of one or more `dma_fence`s.
///
/// It is signaled once all its fences are; it never goes back. Polling the fd
/// for `POLLIN` tells the same without blocking, so it fits any event loop
/// (see [`AsFd`]). Dropping it closes the fd; the fences live on in whatever
/// else references them.
///
/// Kernel docs: `Documentation/driver-api/sync_file.rst`.
pub struct SyncFile {
    fd: OwnedFd,
}

/// State of a fence or of a whole sync_file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceStatus {
    /// Not signaled yet.
    Active,
    /// Signaled without error.
    Signaled,
    /// Signaled with an error (the fence's producer failed).
    Error(Errno),
}

impl FenceStatus {
    fn from_raw(status: i32) -> Self {
        match status {
            0 => FenceStatus::Active,
            s if s > 0 => FenceStatus::Signaled,
            s => FenceStatus::Error(Errno::from_raw_os_error(-s)),
        }
    }
}

/// What `SYNC_IOC_FILE_INFO` tells about one fence of a sync_file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceInfo {
    /// The fence's timeline name (`obj_name`).
    pub timeline: String,
    /// The driver that created the fence.
    pub driver: String,
    /// The fence's state.
    pub status: FenceStatus,
    /// When it signaled (CLOCK_MONOTONIC), if it has.
    pub timestamp: Option<Duration>,
}

/// What `SYNC_IOC_FILE_INFO` tells about a sync_file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncFileInfo {
    /// The sync_file's name (set at merge, or by the driver).
    pub name: String,
    /// Combined state: signaled only when every fence is.
    pub status: FenceStatus,
    /// The fences inside, one entry each.
    pub fences: Vec<FenceInfo>,
}

impl SyncFile {
    /// Take ownership of `fd` after checking that it is a sync_file.
    ///
    /// A dma-buf, pipe, regular file, memfd or any other fd is refused with
    /// [`Error::NotSyncFile`] (and closed, as it was given by value).
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        Self::from_fd_with_status(fd).map(|(f, _)| f)
    }

    /// [`SyncFile::from_fd`] that also gives the combined state the check
    /// read (no extra system call): a fence from another process that has
    /// already signalled need not be waited for, imported or kept.
    pub(crate) fn from_fd_with_status(fd: OwnedFd) -> Result<(Self, FenceStatus)> {
        let status = check_sync_file(fd.as_fd())?;
        Ok((SyncFile { fd }, status))
    }

    /// Wrap `fd` without checking it; for fds a kernel ioctl just returned
    /// as sync_files.
    pub(crate) fn from_fd_unchecked(fd: OwnedFd) -> Self {
        SyncFile { fd }
    }

    /// Block until every fence is signaled, for at most `timeout` (`None`:
    /// no limit). A fence signaled with an error counts as signaled; see
    /// [`SyncFile::status`] to tell. Returns [`Error::Timeout`] on timeout.
    ///
    /// Uses poll(2) on the fd (`POLLIN`).
    pub fn wait(&self, timeout: Option<Duration>) -> Result<()> {
        match poll_ready(&self.fd, PollFlags::IN, timeout).map_err(Error::os("poll(sync_file)"))? {
            true => Ok(()),
            false => Err(Error::Timeout {
                what: "sync_file",
                timeout: timeout.unwrap_or(Duration::MAX),
            }),
        }
    }

    /// Whether every fence is signaled, without blocking.
    pub fn is_signaled(&self) -> Result<bool> {
        poll_ready(&self.fd, PollFlags::IN, Some(Duration::ZERO))
            .map_err(Error::os("poll(sync_file)"))
    }

    /// Combined state of the fences (a cheaper [`SyncFile::info`]).
    pub fn status(&self) -> Result<FenceStatus> {
        Ok(self.query_info()?.0)
    }

    /// A new sync_file that signals when both `self` and `other` have
    /// (`SYNC_IOC_MERGE`). `name` is truncated to 31 bytes.
    pub fn merge(&self, other: &SyncFile, name: &str) -> Result<SyncFile> {
        let mut arg = sys::sync_merge_data {
            name: uapi::string_to_c_chars(name),
            fd2: other.fd.as_raw_fd(),
            ..Default::default()
        };
        let fd = sys::SYNC_IOC_MERGE
            .call(&self.fd, &mut arg)
            .map_err(Error::os("SYNC_IOC_MERGE"))?;
        debug_assert_eq!(fd, 0);
        Ok(SyncFile::from_fd_unchecked(owned_from_kernel(arg.fence)))
    }

    /// The sync_file's name, state and every fence's driver, timeline, state
    /// and timestamp (`SYNC_IOC_FILE_INFO`, asked twice: count, then fill).
    pub fn info(&self) -> Result<SyncFileInfo> {
        let (_, name, count) = self.query_info()?;
        let mut fences = vec![sys::sync_fence_info::default(); count as usize];
        let mut arg = sys::sync_file_info {
            num_fences: count,
            sync_fence_info: fences.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: `sync_fence_info` points at `count` writable elements, the
        // number the kernel fills (it refuses a count below the real one).
        unsafe { sys::SYNC_IOC_FILE_INFO.call(&self.fd, &mut arg) }
            .map_err(Error::os("SYNC_IOC_FILE_INFO"))?;
        let filled = (arg.num_fences as usize).min(fences.len());
        Ok(SyncFileInfo {
            name,
            status: FenceStatus::from_raw(arg.status),
            fences: fences[..filled]
                .iter()
                .map(|f| {
                    let status = FenceStatus::from_raw(f.status);
                    FenceInfo {
                        timeline: uapi::c_chars_to_string(&f.obj_name),
                        driver: uapi::c_chars_to_string(&f.driver_name),
                        status,
                        timestamp: (status != FenceStatus::Active && f.timestamp_ns != 0)
                            .then(|| Duration::from_nanos(f.timestamp_ns)),
                    }
                })
                .collect(),
        })
    }

    fn query_info(&self) -> Result<(FenceStatus, String, u32)> {
        let mut arg = sys::sync_file_info::default();
        // SAFETY: num_fences = 0: the kernel writes no fence array.
        unsafe { sys::SYNC_IOC_FILE_INFO.call(&self.fd, &mut arg) }
            .map_err(Error::os("SYNC_IOC_FILE_INFO"))?;
        Ok((
            FenceStatus::from_raw(arg.status),
            uapi::c_chars_to_string(&arg.name),
            arg.num_fences,
        ))
    }

    /// Hint that the fences should signal within `from_now`
    /// (`SYNC_IOC_SET_DEADLINE`, Linux 6.5+). Drivers may boost clocks; it
    /// never changes correctness. [`Error::Unsupported`] on older kernels.
    pub fn set_deadline(&self, from_now: Duration) -> Result<()> {
        let mut arg = sys::sync_set_deadline {
            deadline_ns: monotonic_ns_after(from_now) as u64,
            pad: 0,
        };
        match sys::SYNC_IOC_SET_DEADLINE.call(&self.fd, &mut arg) {
            Ok(_) => Ok(()),
            Err(errno) if errno == Errno::NOTTY => Err(Error::Unsupported {
                what: "SYNC_IOC_SET_DEADLINE",
                errno,
            }),
            Err(errno) => Err(Error::Os {
                op: "SYNC_IOC_SET_DEADLINE",
                errno,
            }),
        }
    }

    /// A second, independent fd for the same fences (dup(2)).
    pub fn try_clone(&self) -> Result<SyncFile> {
        let fd = self.fd.try_clone().map_err(|e| Error::Os {
            op: "dup(sync_file)",
            errno: Errno::from_io_error(&e).unwrap_or(Errno::IO),
        })?;
        Ok(SyncFile { fd })
    }
}

impl AsFd for SyncFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<SyncFile> for OwnedFd {
    fn from(s: SyncFile) -> OwnedFd {
        s.fd
    }
}

impl fmt::Debug for SyncFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SyncFile")
            .field(&self.fd.as_raw_fd())
            .finish()
    }
}

/// Check that `fd` is a sync_file: an anonymous inode that answers
/// `SYNC_IOC_FILE_INFO`; its combined state, as that answer tells.
fn check_sync_file(fd: BorrowedFd<'_>) -> Result<FenceStatus> {
    let st = rustix::fs::fstatfs(fd).map_err(|errno| match errno {
        Errno::BADF => Error::NotSyncFile {
            what: "closed or invalid fd (EBADF)".into(),
        },
        errno => Error::Os {
            op: "fstatfs",
            errno,
        },
    })?;
    if st.f_type as u32 != sys::ANON_INODE_FS_MAGIC {
        return Err(Error::NotSyncFile {
            what: describe(fd, st.f_type as u32),
        });
    }
    let mut arg = sys::sync_file_info::default();
    // SAFETY: num_fences = 0: the kernel writes no fence array.
    match unsafe { sys::SYNC_IOC_FILE_INFO.call(fd, &mut arg) } {
        Ok(_) => Ok(FenceStatus::from_raw(arg.status)),
        Err(_) => Err(Error::NotSyncFile {
            what: describe(fd, st.f_type as u32),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::vgem::Vgem;
    use crate::dmabuf::Access;
    use crate::format::Fourcc;

    /// The state read by the sync_file check follows a real fence: active
    /// while vgem's write fence is pending, signalled after (in the VM;
    /// skipped without vgem unless `WINSYS_REQUIRE_DEVICES=1`).
    #[test]
    fn the_check_reads_whether_the_fence_has_signalled() {
        let vgem = match Vgem::open() {
            Ok(v) => v,
            Err(e) if std::env::var_os("WINSYS_REQUIRE_DEVICES").is_some_and(|v| v == "1") => {
                panic!("required device missing: vgem: {e}")
            }
            Err(e) => {
                println!("SKIP: vgem unavailable: {e}");
                return;
            }
        };
        let buf = vgem.create(16, 16, Fourcc::XRGB8888).expect("vgem buffer");
        let fence = buf.attach_fence(Access::Write).expect("vgem fence");
        let pending = buf.dmabuf().export_sync_file(Access::Read).expect("export");
        let dup = || OwnedFd::from(pending.try_clone().expect("dup"));
        let (_, status) = SyncFile::from_fd_with_status(dup()).expect("a sync_file");
        assert_eq!(status, FenceStatus::Active);
        fence.signal().expect("signal");
        let (_, status) = SyncFile::from_fd_with_status(dup()).expect("a sync_file");
        assert_eq!(status, FenceStatus::Signaled);
        let not_one = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        assert!(matches!(
            SyncFile::from_fd_with_status(not_one),
            Err(Error::NotSyncFile { .. })
        ));
    }
}
