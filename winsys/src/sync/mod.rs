//! Explicit synchronization: sync_file fds and DRM syncobj timelines.
//!
//! - [`SyncFile`] owns a `sync_file` fd (a snapshot of one or more
//!   `dma_fence`s): wait with a timeout, poll for readiness in an event loop,
//!   merge, inspect, set a deadline hint.
//! - [`Syncobj`] is a DRM sync object on a [`DrmDevice`](crate::device::DrmDevice):
//!   binary or timeline, with conversions between timeline points and
//!   sync_files, waits, queries, signals and eventfd notification.
//! - [`probe`] says once, for the whole process, which kernel interfaces exist.
//!
//! Every wait takes a timeout (`None` = unbounded) and has an fd-based form
//! for event loops: a [`SyncFile`] is itself pollable (`POLLIN` = signaled),
//! and [`Syncobj::eventfd`] gives an eventfd for a timeline point.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;

pub mod probe;
mod sync_file;
mod syncobj;

pub use sync_file::{FenceInfo, FenceStatus, SyncFile, SyncFileInfo};
pub use syncobj::{Syncobj, SyncobjHandle, WaitFor};

/// Errors of the sync module: sync_files and syncobjs.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The fd given as a sync_file is not one.
    #[error("fd is not a sync_file ({what})")]
    NotSyncFile {
        /// What the fd turned out to be, or the failing check.
        what: String,
    },
    /// A wait did not finish within its timeout.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The running kernel or driver lacks an interface.
    #[error("{what} is not supported by this kernel or device ({errno})")]
    Unsupported {
        /// The missing interface.
        what: &'static str,
        /// The errno that said so (`ENOTTY`, `EOPNOTSUPP`, `ENODEV`, ...).
        errno: Errno,
    },
    /// A timeline point that has no fence yet (not submitted).
    #[error("timeline point {point} has no fence yet (not submitted)")]
    PointNotSubmitted {
        /// The point asked for.
        point: u64,
    },
    /// An argument the kernel would reject, caught first.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// A system call failed.
    #[error("{op} failed: {errno}")]
    Os {
        /// The call (ioctl name or syscall).
        op: &'static str,
        /// The kernel's errno.
        errno: Errno,
    },
}

impl Error {
    pub(crate) fn os(op: &'static str) -> impl FnOnce(Errno) -> Error {
        move |errno| Error::Os { op, errno }
    }

    /// The errno behind this error, where there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Os { errno, .. } | Error::Unsupported { errno, .. } => Some(*errno),
            Error::Timeout { .. } => Some(Errno::TIME),
            _ => None,
        }
    }
}

/// Result of the sync module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// When a wait must give up: `timeout` from now, or never.
///
/// A timeout too large to add to the clock (`Duration::MAX`, say) means
/// "no limit", exactly like `None`; nothing here panics or wraps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(Option<Instant>);

impl Deadline {
    /// `timeout` from now (`None`, or one past the clock's range: never).
    pub(crate) fn after(timeout: Option<Duration>) -> Self {
        Deadline(timeout.and_then(|t| Instant::now().checked_add(t)))
    }

    /// Time left (`None`: no limit).
    pub(crate) fn remaining(&self) -> Option<Duration> {
        self.0.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether the deadline has passed.
    pub(crate) fn passed(&self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }
}

/// A poll(2)/ppoll timeout for `d` (saturating; `None`: no limit).
pub(crate) fn timespec(d: Option<Duration>) -> Option<rustix::time::Timespec> {
    d.map(|r| rustix::time::Timespec {
        tv_sec: i64::try_from(r.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: r.subsec_nanos() as _,
    })
}

/// Poll one fd for `events` until ready or `timeout` (`None`: forever).
///
/// Returns `Ok(true)` when ready, `Ok(false)` on timeout. `EINTR` restarts
/// the poll with the remaining time. See poll(2).
pub(crate) fn poll_ready(
    fd: impl AsFd,
    events: PollFlags,
    timeout: Option<Duration>,
) -> Result<bool, Errno> {
    let deadline = Deadline::after(timeout);
    loop {
        let ts = timespec(deadline.remaining());
        let mut fds = [PollFd::new(&fd, events)];
        match rustix::event::poll(&mut fds, ts.as_ref()) {
            Ok(0) => return Ok(false),
            Ok(_) => {
                let revents = fds[0].revents();
                if revents.contains(PollFlags::NVAL) {
                    return Err(Errno::BADF);
                }
                return Ok(true);
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// CLOCK_MONOTONIC now plus `after`, in nanoseconds (the clock the kernel's
/// fence deadlines and syncobj timeouts use).
pub(crate) fn monotonic_ns_after(after: Duration) -> i64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let now_ns = now.tv_sec as i128 * 1_000_000_000 + now.tv_nsec as i128;
    (now_ns + after.as_nanos() as i128).min(i64::MAX as i128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_timeouts_mean_no_limit() {
        assert_eq!(Deadline::after(Some(Duration::MAX)).remaining(), None);
        assert_eq!(Deadline::after(None).remaining(), None);
        assert!(!Deadline::after(Some(Duration::MAX)).passed());
        assert!(Deadline::after(Some(Duration::ZERO)).passed());
        let ts = timespec(Some(Duration::MAX)).unwrap();
        assert_eq!(ts.tv_sec, i64::MAX);
        assert!(ts.tv_nsec < 1_000_000_000);
        assert_eq!(monotonic_ns_after(Duration::MAX), i64::MAX);
    }

    #[test]
    fn poll_with_duration_max_returns_when_ready() {
        let (r, w) = rustix::pipe::pipe().unwrap();
        rustix::io::write(&w, b"x").unwrap();
        assert!(poll_ready(&r, PollFlags::IN, Some(Duration::MAX)).unwrap());
        assert!(!poll_ready(&w, PollFlags::IN, Some(Duration::ZERO)).unwrap());
    }
}
