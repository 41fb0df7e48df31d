//! [`Syncobj`]: DRM sync objects, binary and timeline.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::event::EventfdFlags;
use rustix::io::Errno;

use super::{monotonic_ns_after, Error, Result, SyncFile};
use crate::device::DrmDevice;
use crate::fd::owned_from_kernel;
use crate::uapi::drm as sys;

/// What a wait on a timeline point waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    /// The point's fence has signaled (the work is done).
    Signaled,
    /// A fence has been attached for the point (the work is submitted):
    /// `DRM_SYNCOBJ_WAIT_FLAGS_WAIT_AVAILABLE`.
    Available,
    /// Like [`WaitFor::Signaled`], but a point without a fence yet is waited
    /// for instead of refused: `DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT`.
    SubmittedThenSignaled,
}

impl WaitFor {
    fn flags(self) -> u32 {
        match self {
            WaitFor::Signaled => 0,
            WaitFor::Available => sys::DRM_SYNCOBJ_WAIT_FLAGS_WAIT_AVAILABLE,
            WaitFor::SubmittedThenSignaled => sys::DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT,
        }
    }
}

/// A syncobj handle: a number valid only on the DRM fd that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct SyncobjHandle(u32);

impl SyncobjHandle {
    /// The raw handle number.
    pub fn raw(self) -> u32 {
        self.0
    }
}

/// A DRM sync object on one device (kernel docs: `drm_syncobj.c`).
///
/// A binary syncobj holds one fence (use point 0); a timeline syncobj holds
/// a fence per 64-bit point, points signaling in order. The handle is
/// destroyed on drop; exported fds keep the object alive elsewhere.
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use winsys::device::{DrmDevice, NodeKind};
/// use winsys::sync::{Syncobj, WaitFor};
///
/// let dev = Arc::new(DrmDevice::find("virtio_gpu", NodeKind::Render)?);
/// let timeline = Syncobj::new(&dev)?;
/// timeline.signal(1)?;                       // CPU-signal point 1
/// let fence = timeline.export_sync_file(1)?; // point 1 -> sync_file
/// timeline.import_sync_file(2, &fence)?;     // sync_file -> point 2
/// timeline.wait(2, WaitFor::Signaled, Some(Duration::from_secs(1)))?;
/// assert_eq!(timeline.query()?, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Syncobj {
    dev: Arc<DrmDevice>,
    handle: u32,
    /// A binary syncobj reused by every point <-> sync_file conversion
    /// (made on first use, destroyed with `self`), so the steady state
    /// creates nothing per frame.
    scratch: Mutex<Option<Box<Syncobj>>>,
}

impl Syncobj {
    /// A new syncobj without a fence (`DRM_IOCTL_SYNCOBJ_CREATE`): a
    /// timeline with no point signaled, or an unsignaled binary syncobj.
    /// [`Error::Unsupported`] when the driver has no syncobjs.
    pub fn new(dev: &Arc<DrmDevice>) -> Result<Self> {
        Self::create_flags(dev, 0)
    }

    /// A new syncobj holding an already signaled fence
    /// (`DRM_SYNCOBJ_CREATE_SIGNALED`).
    pub fn new_signaled(dev: &Arc<DrmDevice>) -> Result<Self> {
        Self::create_flags(dev, sys::DRM_SYNCOBJ_CREATE_SIGNALED)
    }

    fn create_flags(dev: &Arc<DrmDevice>, flags: u32) -> Result<Self> {
        let mut arg = sys::drm_syncobj_create { handle: 0, flags };
        sys::DRM_IOCTL_SYNCOBJ_CREATE
            .call(dev.as_fd(), &mut arg)
            .map_err(|errno| unsupported_or("DRM_IOCTL_SYNCOBJ_CREATE", errno))?;
        Ok(Self::adopt(dev, arg.handle))
    }

    fn adopt(dev: &Arc<DrmDevice>, handle: u32) -> Self {
        Syncobj {
            dev: dev.clone(),
            handle,
            scratch: Mutex::new(None),
        }
    }

    /// Run `f` with this syncobj's reusable binary scratch syncobj.
    fn with_scratch<T>(&self, f: impl FnOnce(&Syncobj) -> Result<T>) -> Result<T> {
        let mut slot = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(Box::new(Syncobj::new(&self.dev)?));
        }
        f(slot.as_deref().expect("just filled"))
    }

    /// Import a syncobj fd (from [`Syncobj::export`], possibly from another
    /// process) as a handle on `dev` (`DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE`).
    pub fn import(dev: &Arc<DrmDevice>, fd: impl AsFd) -> Result<Self> {
        let mut arg = sys::drm_syncobj_handle {
            fd: fd.as_fd().as_raw_fd(),
            ..Default::default()
        };
        sys::DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE
            .call(dev.as_fd(), &mut arg)
            .map_err(|errno| unsupported_or("DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE", errno))?;
        Ok(Self::adopt(dev, arg.handle))
    }

    /// An fd for the whole syncobj, to share it with another process or
    /// device (`DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD`).
    pub fn export(&self) -> Result<OwnedFd> {
        let mut arg = sys::drm_syncobj_handle {
            handle: self.handle,
            ..Default::default()
        };
        // The kernel always makes the fd close-on-exec; it takes no fd flags.
        self.ioctl_handle_to_fd(&mut arg)?;
        Ok(owned_from_kernel(arg.fd))
    }

    /// The handle, valid on [`Syncobj::device`]'s fd only.
    pub fn handle(&self) -> SyncobjHandle {
        SyncobjHandle(self.handle)
    }

    /// The device the handle lives on.
    pub fn device(&self) -> &Arc<DrmDevice> {
        &self.dev
    }

    /// Put `fence`'s fences at `point` (0: replace a binary syncobj's fence).
    ///
    /// Timeline points go through a binary scratch syncobj (made once per
    /// `Syncobj`, then reused) and `DRM_IOCTL_SYNCOBJ_TRANSFER` (6.12 has
    /// no point in FD_TO_HANDLE). Points must be added in increasing order.
    pub fn import_sync_file(&self, point: u64, fence: &SyncFile) -> Result<()> {
        if point == 0 {
            return self.import_sync_file_binary(fence);
        }
        self.with_scratch(|tmp| {
            tmp.import_sync_file_binary(fence)?;
            tmp.transfer(0, self, point)
        })
    }

    fn import_sync_file_binary(&self, fence: &SyncFile) -> Result<()> {
        let mut arg = sys::drm_syncobj_handle {
            handle: self.handle,
            flags: sys::DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE,
            fd: fence.as_fd().as_raw_fd(),
            pad: 0,
        };
        sys::DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE
            .call(self.dev.as_fd(), &mut arg)
            .map_err(Error::os(
                "DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE(IMPORT_SYNC_FILE)",
            ))?;
        Ok(())
    }

    /// A sync_file for the fence at `point` (0: a binary syncobj's fence).
    ///
    /// [`Error::PointNotSubmitted`] when no fence was attached for it yet.
    pub fn export_sync_file(&self, point: u64) -> Result<SyncFile> {
        if point == 0 {
            return self.export_sync_file_binary(0);
        }
        self.with_scratch(|tmp| {
            self.transfer(point, tmp, 0).map_err(|e| match e.errno() {
                Some(Errno::INVAL) => Error::PointNotSubmitted { point },
                _ => e,
            })?;
            tmp.export_sync_file_binary(point)
        })
    }

    fn export_sync_file_binary(&self, point: u64) -> Result<SyncFile> {
        let mut arg = sys::drm_syncobj_handle {
            handle: self.handle,
            flags: sys::DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_EXPORT_SYNC_FILE,
            ..Default::default()
        };
        match sys::DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD.call(self.dev.as_fd(), &mut arg) {
            Ok(_) => Ok(SyncFile::from_fd_unchecked(owned_from_kernel(arg.fd))),
            Err(Errno::INVAL) => Err(Error::PointNotSubmitted { point }),
            Err(errno) => Err(Error::Os {
                op: "DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD(EXPORT_SYNC_FILE)",
                errno,
            }),
        }
    }

    fn ioctl_handle_to_fd(&self, arg: &mut sys::drm_syncobj_handle) -> Result<()> {
        sys::DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD
            .call(self.dev.as_fd(), arg)
            .map_err(Error::os("DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD"))?;
        Ok(())
    }

    /// Copy the fence at `src_point` of `self` to `dst_point` of `dst`
    /// (`DRM_IOCTL_SYNCOBJ_TRANSFER`; point 0 = binary). Both on one device.
    pub fn transfer(&self, src_point: u64, dst: &Syncobj, dst_point: u64) -> Result<()> {
        if !Arc::ptr_eq(&self.dev, &dst.dev) {
            return Err(Error::InvalidArgument(
                "syncobj transfer between different device fds",
            ));
        }
        let mut arg = sys::drm_syncobj_transfer {
            src_handle: self.handle,
            dst_handle: dst.handle,
            src_point,
            dst_point,
            flags: 0,
            pad: 0,
        };
        sys::DRM_IOCTL_SYNCOBJ_TRANSFER
            .call(self.dev.as_fd(), &mut arg)
            .map_err(Error::os("DRM_IOCTL_SYNCOBJ_TRANSFER"))?;
        Ok(())
    }

    /// Wait until `point` reaches `what`, for at most `timeout` (`None`: no
    /// limit) (`DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT`). [`Error::Timeout`] on
    /// timeout; [`Error::PointNotSubmitted`] for [`WaitFor::Signaled`] on a
    /// point without a fence.
    pub fn wait(&self, point: u64, what: WaitFor, timeout: Option<Duration>) -> Result<()> {
        let handles = [self.handle];
        let points = [point];
        let mut arg = sys::drm_syncobj_timeline_wait {
            handles: handles.as_ptr() as u64,
            points: points.as_ptr() as u64,
            timeout_nsec: timeout.map_or(i64::MAX, monotonic_ns_after),
            count_handles: 1,
            flags: what.flags() | sys::DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL,
            ..Default::default()
        };
        // SAFETY: `handles` and `points` are live arrays of `count_handles`
        // (1) elements, only read by the kernel.
        match unsafe { sys::DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT.call(self.dev.as_fd(), &mut arg) } {
            Ok(_) => Ok(()),
            Err(Errno::TIME) => Err(Error::Timeout {
                what: "syncobj timeline point",
                timeout: timeout.unwrap_or(Duration::MAX),
            }),
            Err(Errno::INVAL) if what == WaitFor::Signaled => {
                Err(Error::PointNotSubmitted { point })
            }
            Err(errno) => Err(Error::Os {
                op: "DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT",
                errno,
            }),
        }
    }

    /// The last signaled point (`DRM_IOCTL_SYNCOBJ_QUERY`).
    pub fn query(&self) -> Result<u64> {
        self.query_flags(0)
    }

    /// The last submitted point, signaled or not
    /// (`DRM_SYNCOBJ_QUERY_FLAGS_LAST_SUBMITTED`).
    pub fn query_last_submitted(&self) -> Result<u64> {
        self.query_flags(sys::DRM_SYNCOBJ_QUERY_FLAGS_LAST_SUBMITTED)
    }

    fn query_flags(&self, flags: u32) -> Result<u64> {
        let handles = [self.handle];
        let mut points = [0u64];
        let mut arg = sys::drm_syncobj_timeline_array {
            handles: handles.as_ptr() as u64,
            points: points.as_mut_ptr() as u64,
            count_handles: 1,
            flags,
        };
        // SAFETY: one readable handle, one writable point.
        unsafe { sys::DRM_IOCTL_SYNCOBJ_QUERY.call(self.dev.as_fd(), &mut arg) }
            .map_err(Error::os("DRM_IOCTL_SYNCOBJ_QUERY"))?;
        Ok(points[0])
    }

    /// Signal `point` from the CPU now (`DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL`).
    pub fn signal(&self, point: u64) -> Result<()> {
        let handles = [self.handle];
        let points = [point];
        let mut arg = sys::drm_syncobj_timeline_array {
            handles: handles.as_ptr() as u64,
            points: points.as_ptr() as u64,
            count_handles: 1,
            flags: 0,
        };
        // SAFETY: one readable handle and one readable point.
        unsafe { sys::DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL.call(self.dev.as_fd(), &mut arg) }
            .map_err(Error::os("DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL"))?;
        Ok(())
    }

    /// An eventfd that becomes readable when `point` reaches `what`
    /// ([`WaitFor::Signaled`] or [`WaitFor::Available`]), for event loops
    /// (`DRM_IOCTL_SYNCOBJ_EVENTFD`, Linux 6.6+).
    pub fn eventfd(&self, point: u64, what: WaitFor) -> Result<OwnedFd> {
        Self::check_eventfd_wait(what)?;
        let efd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(Error::os("eventfd"))?;
        self.register_eventfd(point, what, efd.as_fd())?;
        Ok(efd)
    }

    /// Add 1 to `eventfd`'s counter when `point` reaches `what`
    /// ([`WaitFor::Signaled`] or [`WaitFor::Available`];
    /// `DRM_IOCTL_SYNCOBJ_EVENTFD`, Linux 6.6+): one eventfd, drained by
    /// its owner after it fired, can serve every wait of an event loop
    /// instead of one made per wait ([`Syncobj::eventfd`]). The kernel
    /// keeps its own reference to the eventfd until the point is reached
    /// or this syncobj is destroyed, so a registration outlives a wait
    /// that ended otherwise; an fd that is no eventfd is
    /// [`Error::Os`] `EINVAL`.
    pub fn notify(&self, point: u64, what: WaitFor, eventfd: BorrowedFd<'_>) -> Result<()> {
        Self::check_eventfd_wait(what)?;
        self.register_eventfd(point, what, eventfd)
    }

    /// `DRM_IOCTL_SYNCOBJ_EVENTFD` itself, `what` checked by the caller.
    fn register_eventfd(&self, point: u64, what: WaitFor, eventfd: BorrowedFd<'_>) -> Result<()> {
        let mut arg = sys::drm_syncobj_eventfd {
            handle: self.handle,
            flags: what.flags(),
            point,
            fd: eventfd.as_raw_fd(),
            pad: 0,
        };
        sys::DRM_IOCTL_SYNCOBJ_EVENTFD
            .call(self.dev.as_fd(), &mut arg)
            .map_err(|errno| unsupported_or("DRM_IOCTL_SYNCOBJ_EVENTFD", errno))?;
        Ok(())
    }

    fn check_eventfd_wait(what: WaitFor) -> Result<()> {
        if what == WaitFor::SubmittedThenSignaled {
            return Err(Error::InvalidArgument(
                "eventfd waits for Signaled or Available",
            ));
        }
        if super::probe::eventfd_disabled() {
            return Err(Error::Unsupported {
                what: "DRM_IOCTL_SYNCOBJ_EVENTFD",
                errno: rustix::io::Errno::NOTTY,
            });
        }
        Ok(())
    }
}

impl Drop for Syncobj {
    fn drop(&mut self) {
        let mut arg = sys::drm_syncobj_destroy {
            handle: self.handle,
            pad: 0,
        };
        // Nothing to do on failure: the handle is gone either way when the
        // device fd closes.
        let _ = sys::DRM_IOCTL_SYNCOBJ_DESTROY.call(self.dev.as_fd(), &mut arg);
    }
}

impl fmt::Debug for Syncobj {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Syncobj")
            .field("device", &self.dev.path())
            .field("handle", &self.handle)
            .finish()
    }
}

fn unsupported_or(op: &'static str, errno: Errno) -> Error {
    match errno {
        Errno::OPNOTSUPP | Errno::NODEV | Errno::NOTTY => Error::Unsupported { what: op, errno },
        errno => Error::Os { op, errno },
    }
}
