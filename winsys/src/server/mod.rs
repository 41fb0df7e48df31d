//! The compositor's side (feature `server`): building blocks for taking
//! buffers and fences from clients it does not trust, independent of any
//! event loop or protocol crate.
//!
//! A commit reads forward through them:
//!
//! ```text
//! params (validate the planes) -> Dmabuf -> acquire gate (one pollable fd)
//!   -> composite (the GPU waits for the gate's fence) -> release tracker
//!   (every use merged -> the client's release point / fence / dma-buf)
//! ```
//!
//! | module | what |
//! |---|---|
//! | [`params`] | `zwp_linux_buffer_params_v1` checks, each refusal with its protocol code |
//! | [`syncobj`] | `wp_linux_drm_syncobj_surface_v1` commit rules |
//! | [`feedback`] | the sealed format table and tranches of linux-dmabuf feedback |
//! | [`acquire`] | [`AcquireGate`](acquire::AcquireGate): implicit, fence or timeline acquire as one fd |
//! | [`release`] | [`ReleaseTracker`](release::ReleaseTracker): exactly one release per commit |
//!
//! What the kernel offers (the dma-buf sync_file ioctls, syncobj eventfd,
//! timelines) is probed by [`crate::sync::probe`] and
//! [`DrmDevice::has_syncobj_timeline`](crate::device::DrmDevice::has_syncobj_timeline):
//! advertise `wp_linux_drm_syncobj_manager_v1` only where
//! [`probe::syncobj_eventfd`](crate::sync::probe::syncobj_eventfd) holds,
//! since the acquire gate needs the eventfd for timeline points.

use std::time::Duration;

use rustix::io::Errno;

pub mod acquire;
pub mod feedback;
pub mod params;
pub mod release;
pub mod syncobj;

/// Errors of the server building blocks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A sync_file or syncobj operation failed.
    #[error(transparent)]
    Sync(#[from] crate::sync::Error),
    /// A dma-buf operation failed.
    #[error(transparent)]
    Dmabuf(#[from] crate::dmabuf::Error),
    /// A request that cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
    /// A bounded wait ran out.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// The timeout.
        timeout: Duration,
    },
    /// A system call failed.
    #[error("{op} failed: {errno}")]
    Os {
        /// The call.
        op: &'static str,
        /// The kernel's errno.
        errno: Errno,
    },
}

impl Error {
    /// The errno behind this error, where there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Sync(e) => e.errno(),
            Error::Dmabuf(e) => e.errno(),
            Error::Os { errno, .. } => Some(*errno),
            Error::Timeout { .. } => Some(Errno::TIME),
            Error::Invalid(_) => None,
        }
    }
}

/// Result of the server building blocks.
pub type Result<T, E = Error> = std::result::Result<T, E>;
