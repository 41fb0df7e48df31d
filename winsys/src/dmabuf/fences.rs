//! The implicit <-> explicit bridge on a dma-buf.
//!
//! A dma-buf's reservation object holds the fences of everyone using it
//! (implicit sync). Linux 6.0 added two ioctls to cross over:
//!
//! - `DMA_BUF_IOCTL_EXPORT_SYNC_FILE`: a [`SyncFile`] snapshot of the fences
//!   an access must wait for ([`Access::Read`]: the writers; a write access:
//!   everyone). Fences attached later are not in it.
//! - `DMA_BUF_IOCTL_IMPORT_SYNC_FILE`: add a sync_file's fences as read
//!   ([`Access::Read`]) or write fences, so implicit-sync users wait for
//!   explicit work.
//!
//! [`Dmabuf::export_sync_file`] and [`Dmabuf::import_sync_file`] are the
//! raw operations ([`Error::Unsupported`] on older kernels).
//! [`Dmabuf::implicit_fence`] and [`Dmabuf::attach_fence`] are the uniform
//! ones every caller can use: on a kernel without the ioctls (probed once,
//! see [`crate::sync::probe`]) they fall back to poll()-based waiting
//! and to waiting for the fence on the CPU, never to a silent no-op.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::PollFlags;
use rustix::io::Errno;

use super::{check_dmabuf, Access, Dmabuf, Error, Result};
use crate::fd::owned_from_kernel;
use crate::sync::{probe, SyncFile};
use crate::uapi::dma_buf as sys;

/// Snapshot the fences of the dma-buf `fd` that `access` must wait for, as a
/// [`SyncFile`] (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE`). No pending fence gives an
/// already signaled sync_file.
///
/// `fd` is checked to be a dma-buf first ([`Error::NotDmabuf`]).
pub fn export_sync_file(fd: impl AsFd, access: Access) -> Result<SyncFile> {
    let fd = fd.as_fd();
    check_dmabuf(fd).map_err(|e| e.for_plane(0))?;
    export_checked(fd, access)
}

fn export_checked(fd: BorrowedFd<'_>, access: Access) -> Result<SyncFile> {
    let mut arg = sys::dma_buf_export_sync_file {
        flags: access.sync_flags() as u32,
        fd: -1,
    };
    match sys::DMA_BUF_IOCTL_EXPORT_SYNC_FILE.call(fd, &mut arg) {
        Ok(_) => Ok(SyncFile::from_fd_unchecked(owned_from_kernel(arg.fd))),
        Err(errno) if probe::is_unsupported(errno) => {
            probe::record_dmabuf_sync_file(false);
            Err(Error::Unsupported {
                what: "DMA_BUF_IOCTL_EXPORT_SYNC_FILE",
                errno,
            })
        }
        Err(errno) => Err(Error::Os {
            op: "DMA_BUF_IOCTL_EXPORT_SYNC_FILE",
            errno,
        }),
    }
}

/// Add `fence` to the dma-buf `fd` as a read fence ([`Access::Read`]) or a
/// write fence (otherwise) (`DMA_BUF_IOCTL_IMPORT_SYNC_FILE`). The caller
/// keeps `fence`.
pub fn import_sync_file(fd: impl AsFd, fence: &SyncFile, access: Access) -> Result<()> {
    let fd = fd.as_fd();
    check_dmabuf(fd).map_err(|e| e.for_plane(0))?;
    import_checked(fd, fence, access)
}

fn import_checked(fd: BorrowedFd<'_>, fence: &SyncFile, access: Access) -> Result<()> {
    let mut arg = sys::dma_buf_import_sync_file {
        flags: access.sync_flags() as u32,
        fd: fence.as_fd().as_raw_fd(),
    };
    match sys::DMA_BUF_IOCTL_IMPORT_SYNC_FILE.call(fd, &mut arg) {
        Ok(_) => Ok(()),
        Err(errno) if probe::is_unsupported(errno) => {
            probe::record_dmabuf_sync_file(false);
            Err(Error::Unsupported {
                what: "DMA_BUF_IOCTL_IMPORT_SYNC_FILE",
                errno,
            })
        }
        Err(errno) => Err(Error::Os {
            op: "DMA_BUF_IOCTL_IMPORT_SYNC_FILE",
            errno,
        }),
    }
}

/// What [`Dmabuf::implicit_fence`] gives: the fences an access must wait
/// for, as a sync_file where the kernel can export one, or else as a poll()
/// on the dma-bufs themselves. Both wait with a timeout and both are
/// pollable fds for event loops ([`ImplicitFence::poll_fds`]).
#[derive(Debug)]
pub enum ImplicitFence {
    /// A snapshot of the fences (fences attached later are not included).
    SyncFile(SyncFile),
    /// Fallback for kernels without `DMA_BUF_IOCTL_EXPORT_SYNC_FILE`: polls
    /// the dma-bufs (dups of their fds) for the access. Unlike a snapshot
    /// this also waits for fences attached after it was made.
    Poll {
        /// The dma-bufs, each once.
        fds: Vec<OwnedFd>,
        /// The access waited for.
        access: Access,
    },
}

impl ImplicitFence {
    /// A poll-based fence for `access` on the dma-buf `fd` (the fallback form,
    /// usable on any kernel).
    pub fn poll_based(fd: impl AsFd, access: Access) -> Result<Self> {
        Ok(ImplicitFence::Poll {
            fds: vec![dup_dmabuf(fd.as_fd())?],
            access,
        })
    }

    /// The fds and poll(2) events that say "signaled" once all are ready
    /// (POLLIN for a sync_file or a read access, POLLOUT for a write access
    /// on a dma-buf).
    pub fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        match self {
            ImplicitFence::SyncFile(s) => vec![(s.as_fd(), PollFlags::IN)],
            ImplicitFence::Poll { fds, access } => {
                let events = if access.writes() {
                    PollFlags::OUT
                } else {
                    PollFlags::IN
                };
                fds.iter().map(|fd| (fd.as_fd(), events)).collect()
            }
        }
    }

    /// Wait until signaled, for at most `timeout` (`None`: no limit);
    /// [`Error::Timeout`] on timeout.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<()> {
        let deadline = crate::sync::Deadline::after(timeout);
        for (fd, events) in self.poll_fds() {
            let left = deadline.remaining();
            if !crate::sync::poll_ready(fd, events, left).map_err(Error::os("poll(fence)"))? {
                return Err(Error::Timeout {
                    what: "dma-buf implicit fence",
                    timeout: timeout.unwrap_or(Duration::MAX),
                });
            }
        }
        Ok(())
    }

    /// Whether it is signaled now.
    pub fn is_signaled(&self) -> Result<bool> {
        match self.wait(Some(Duration::ZERO)) {
            Ok(()) => Ok(true),
            Err(Error::Timeout { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The sync_file, if this is one.
    pub fn into_sync_file(self) -> Option<SyncFile> {
        match self {
            ImplicitFence::SyncFile(s) => Some(s),
            ImplicitFence::Poll { .. } => None,
        }
    }
}

fn dup_dmabuf(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    check_dmabuf(fd).map_err(|e| e.for_plane(0))?;
    fd.try_clone_to_owned().map_err(|e| Error::Os {
        op: "dup(dma-buf)",
        errno: Errno::from_io_error(&e).unwrap_or(Errno::IO),
    })
}

/// How [`Dmabuf::attach_fence`] made implicit-sync users wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// The fence is in the dma-buf's reservation object.
    Imported,
    /// The kernel cannot import fences: the fence was waited for on the CPU
    /// before returning, so the work it guards is already done.
    WaitedOnCpu,
}

impl Dmabuf {
    /// Snapshot the fences `access` must wait for, merged over every
    /// distinct dma-buf of the image (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE`).
    /// [`Error::Unsupported`] on kernels without it.
    pub fn export_sync_file(&self, access: Access) -> Result<SyncFile> {
        let mut merged: Option<SyncFile> = None;
        for fd in self.distinct_fds() {
            let next = export_checked(fd.as_fd(), access)?;
            merged = Some(match merged {
                None => next,
                Some(prev) => prev.merge(&next, "winsys-dmabuf")?,
            });
        }
        Ok(merged.expect("a Dmabuf has at least one plane"))
    }

    /// Add `fence` to every distinct dma-buf of the image as a read fence
    /// ([`Access::Read`]) or write fence (`DMA_BUF_IOCTL_IMPORT_SYNC_FILE`).
    /// [`Error::Unsupported`] on kernels without it.
    pub fn import_sync_file(&self, fence: &SyncFile, access: Access) -> Result<()> {
        for fd in self.distinct_fds() {
            import_checked(fd.as_fd(), fence, access)?;
        }
        Ok(())
    }

    /// The fences `access` must wait for, on any kernel: a sync_file
    /// snapshot where the kernel exports one, else a poll()-based fence.
    pub fn implicit_fence(&self, access: Access) -> Result<ImplicitFence> {
        let first = self.planes()[0].fd();
        if probe::dmabuf_sync_file(first) {
            match self.export_sync_file(access) {
                Ok(s) => return Ok(ImplicitFence::SyncFile(s)),
                Err(Error::Unsupported { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let fds = self
            .distinct_fds()
            .map(|fd| dup_dmabuf(fd.as_fd()))
            .collect::<Result<_>>()?;
        Ok(ImplicitFence::Poll { fds, access })
    }

    /// Make implicit-sync users of the image wait for `fence`, on any
    /// kernel: import it as a read/write fence, or, where the kernel cannot,
    /// wait for it on the CPU (at most `timeout`) before returning.
    pub fn attach_fence(
        &self,
        fence: &SyncFile,
        access: Access,
        timeout: Option<Duration>,
    ) -> Result<Attached> {
        if probe::dmabuf_sync_file(self.planes()[0].fd()) {
            match self.import_sync_file(fence, access) {
                Ok(()) => return Ok(Attached::Imported),
                Err(Error::Unsupported { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        fence.wait(timeout)?;
        Ok(Attached::WaitedOnCpu)
    }
}
