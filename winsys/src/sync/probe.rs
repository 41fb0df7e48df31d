//! What the running kernel supports, probed once per process and cached.
//!
//! The dma-buf sync_file ioctls (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE` /
//! `IMPORT_SYNC_FILE`, Linux 6.0+) can only be asked on a dma-buf, so the
//! probe runs on the first dma-buf winsys is given (as Mesa does) and the
//! answer holds for the process. `ENOTTY` (and `ENOSYS`, `EBADF` as Mesa
//! counts them) mean unsupported.
//!
//! Setting the environment variable `WINSYS_NO_DMABUF_SYNC_FILE=1` before the
//! first probe makes winsys behave as on a kernel without the ioctls: every
//! caller then takes the poll/CPU-wait fallback. The test suite uses it to
//! prove the fallback on a kernel that has the ioctls.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::io::Errno;

use crate::uapi::dma_buf as sys;

/// Environment variable that forces the "no dma-buf sync_file ioctls" path.
pub const DISABLE_DMABUF_SYNC_FILE_ENV: &str = "WINSYS_NO_DMABUF_SYNC_FILE";

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;

static DMABUF_SYNC_FILE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Whether the kernel has the dma-buf sync_file ioctls, probing on `dmabuf`
/// the first time (an `EXPORT_SYNC_FILE(READ)` whose result is closed).
pub fn dmabuf_sync_file(dmabuf: BorrowedFd<'_>) -> bool {
    match DMABUF_SYNC_FILE.load(Ordering::Relaxed) {
        YES => true,
        NO => false,
        _ => {
            let supported =
                if std::env::var_os(DISABLE_DMABUF_SYNC_FILE_ENV).is_some_and(|v| v == "1") {
                    false
                } else {
                    let mut arg = sys::dma_buf_export_sync_file {
                        flags: sys::DMA_BUF_SYNC_READ as u32,
                        fd: -1,
                    };
                    match sys::DMA_BUF_IOCTL_EXPORT_SYNC_FILE.call(dmabuf, &mut arg) {
                        Ok(_) => {
                            drop(crate::fd::owned_from_kernel(arg.fd));
                            true
                        }
                        Err(e) => !is_unsupported(e),
                    }
                };
            record_dmabuf_sync_file(supported);
            supported
        }
    }
}

/// The cached answer, if a probe has run.
pub fn dmabuf_sync_file_cached() -> Option<bool> {
    match DMABUF_SYNC_FILE.load(Ordering::Relaxed) {
        YES => Some(true),
        NO => Some(false),
        _ => None,
    }
}

pub(crate) fn record_dmabuf_sync_file(supported: bool) {
    DMABUF_SYNC_FILE.store(if supported { YES } else { NO }, Ordering::Relaxed);
}

/// Set to `1`, winsys behaves as on a kernel before 6.6 without
/// `DRM_IOCTL_SYNCOBJ_EVENTFD` ([`syncobj_eventfd`] is `false`,
/// [`Syncobj::eventfd`](crate::sync::Syncobj::eventfd) fails as
/// unsupported): how tests reach the bounded blocking waits that replace
/// the eventfds there, on a kernel that has them.
pub const DISABLE_SYNCOBJ_EVENTFD_ENV: &str = "WINSYS_NO_SYNCOBJ_EVENTFD";

pub(crate) fn eventfd_disabled() -> bool {
    std::env::var_os(DISABLE_SYNCOBJ_EVENTFD_ENV).is_some_and(|v| v == "1")
}

/// Errnos that mean "this kernel has no such ioctl".
pub(crate) fn is_unsupported(errno: Errno) -> bool {
    matches!(errno, Errno::NOTTY | Errno::NOSYS | Errno::BADF)
}

/// Whether the kernel has `DRM_IOCTL_SYNCOBJ_EVENTFD` (Linux 6.6), asked
/// on `dev`: the ioctl with handle 0 (never a valid handle) gives `ENOENT`
/// where it exists, `EINVAL` (an unknown DRM ioctl) or `ENOTTY` where not.
/// A driver without syncobjs gives `EOPNOTSUPP`: `false` as well.
pub fn syncobj_eventfd(dev: &crate::device::DrmDevice) -> bool {
    if eventfd_disabled() {
        return false;
    }
    let mut arg = crate::uapi::drm::drm_syncobj_eventfd {
        handle: 0,
        flags: 0,
        point: 0,
        fd: -1,
        pad: 0,
    };
    matches!(
        crate::uapi::drm::DRM_IOCTL_SYNCOBJ_EVENTFD.call(dev, &mut arg),
        Err(Errno::NOENT)
    )
}
