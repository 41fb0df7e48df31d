//! The acquire gate: a client's buffer and its acquire condition turned
//! into ONE pollable fd, so a compositor holds the commit in its event loop
//! and never blocks on a client's fence.
//!
//! | client's sync | gate fd | ready for [`ReadyWhen::Materialized`] |
//! |---|---|---|
//! | implicit, kernel 6.0+ | a READ snapshot of every plane, merged (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE`) | at once |
//! | implicit, older kernel | epoll over the dma-bufs (poll(POLLIN) waits for their writers) | when signaled |
//! | explicit-sync v1 acquire fence | the sync_file | at once |
//! | drm-syncobj acquire point | `DRM_IOCTL_SYNCOBJ_EVENTFD` (6.6+) | when the point has a fence |
//!
//! The snapshot is what Mutter does: fences a client attaches later do not
//! hold the commit (over-synchronizing), and every plane counts (KWin
//! checks plane 0 only). With [`ReadyWhen::Materialized`] the compositor
//! takes [`AcquireGate::into_sync_file`] and lets the GPU wait, as
//! wlroots does for syncobj points; with [`ReadyWhen::Signaled`] the work is
//! done before the commit applies.
//!
//! ```no_run
//! use std::os::fd::AsFd;
//! use winsys::server::acquire::{Acquire, AcquireGate, ReadyWhen};
//! # fn client_buffer() -> winsys::dmabuf::Dmabuf { unimplemented!() }
//!
//! let dmabuf = client_buffer();
//! let mut gate = AcquireGate::new(&dmabuf, Acquire::Implicit, ReadyWhen::Signaled)?;
//! // Register gate.fd() for readability in the event loop; on wake-up:
//! if gate.is_ready()? {
//!     // apply the held commit
//! }
//! # Ok::<(), winsys::server::Error>(())
//! ```

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use rustix::event::epoll;
use rustix::event::{EventfdFlags, PollFlags};
use rustix::io::Errno;

use super::{Error, Result};
use crate::dmabuf::{Access, Dmabuf, ImplicitFence};
use crate::sync::{SyncFile, Syncobj, WaitFor};

/// What a commit's buffer must wait for before the compositor reads it.
#[derive(Debug)]
pub enum Acquire {
    /// Implicit sync: the writers in the dma-bufs' reservation objects.
    Implicit,
    /// `zwp_linux_explicit_synchronization_v1`: the acquire fence.
    Fence(SyncFile),
    /// `wp_linux_drm_syncobj_v1`: a point on the client's timeline
    /// (imported on the compositor's DRM device).
    Timeline {
        /// The timeline.
        timeline: Arc<Syncobj>,
        /// The point.
        point: u64,
    },
}

/// When the gate opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyWhen {
    /// When the client's work is done (the compositor then reads at once).
    Signaled,
    /// When the client's work is submitted: a fence exists, which the
    /// compositor hands to its GPU ([`AcquireGate::into_sync_file`]).
    /// Where there can be no fence (implicit sync on a kernel before
    /// 6.0) this is the same as [`ReadyWhen::Signaled`].
    Materialized,
}

/// A commit's acquire condition as one pollable fd.
#[derive(Debug)]
pub struct AcquireGate {
    kind: Kind,
    when: ReadyWhen,
    ready: bool,
}

#[derive(Debug)]
enum Kind {
    /// A sync_file (snapshot or the client's fence); for `Materialized`
    /// an always-readable eventfd stands beside it as the gate fd.
    Fence {
        fence: SyncFile,
        open: Option<OwnedFd>,
    },
    /// Kernels without the dma-buf sync_file ioctls: an epoll set of the
    /// dma-bufs still being written; when it empties an always-readable
    /// eventfd joins it.
    Poll {
        epoll: OwnedFd,
        pending: Vec<OwnedFd>,
    },
    /// A timeline point and an eventfd for it.
    Timeline {
        timeline: Arc<Syncobj>,
        point: u64,
        eventfd: OwnedFd,
    },
}

fn os(op: &'static str) -> impl FnOnce(Errno) -> Error {
    move |errno| Error::Os { op, errno }
}

/// An eventfd that is readable from the start and stays so.
fn open_eventfd() -> Result<OwnedFd> {
    rustix::event::eventfd(1, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).map_err(os("eventfd"))
}

impl AcquireGate {
    /// A gate for `dmabuf` committed with `acquire`.
    pub fn new(dmabuf: &Dmabuf, acquire: Acquire, when: ReadyWhen) -> Result<Self> {
        let kind = match acquire {
            Acquire::Fence(fence) => Self::fence_kind(fence, when)?,
            Acquire::Implicit => match dmabuf.implicit_fence(Access::Read)? {
                ImplicitFence::SyncFile(fence) => Self::fence_kind(fence, when)?,
                ImplicitFence::Poll { fds, .. } => {
                    let epoll =
                        epoll::create(epoll::CreateFlags::CLOEXEC).map_err(os("epoll_create1"))?;
                    for fd in &fds {
                        epoll::add(
                            &epoll,
                            fd,
                            epoll::EventData::new_u64(0),
                            epoll::EventFlags::IN,
                        )
                        .map_err(os("epoll_ctl(ADD, dma-buf)"))?;
                    }
                    Kind::Poll {
                        epoll,
                        pending: fds,
                    }
                }
            },
            Acquire::Timeline { timeline, point } => {
                let what = match when {
                    ReadyWhen::Signaled => WaitFor::Signaled,
                    ReadyWhen::Materialized => WaitFor::Available,
                };
                let eventfd = timeline.eventfd(point, what)?;
                Kind::Timeline {
                    timeline,
                    point,
                    eventfd,
                }
            }
        };
        let mut gate = AcquireGate {
            kind,
            when,
            ready: false,
        };
        gate.is_ready()?;
        Ok(gate)
    }

    fn fence_kind(fence: SyncFile, when: ReadyWhen) -> Result<Kind> {
        let open = match when {
            ReadyWhen::Signaled => None,
            ReadyWhen::Materialized => Some(open_eventfd()?),
        };
        Ok(Kind::Fence { fence, open })
    }

    /// The fd to poll for readability (`POLLIN`): readable once the gate
    /// is open, and from then on. It stays the same fd for the gate's life.
    pub fn fd(&self) -> BorrowedFd<'_> {
        match &self.kind {
            Kind::Fence {
                open: Some(open), ..
            } => open.as_fd(),
            Kind::Fence { fence, .. } => fence.as_fd(),
            Kind::Poll { epoll, .. } => epoll.as_fd(),
            Kind::Timeline { eventfd, .. } => eventfd.as_fd(),
        }
    }

    /// Whether the gate is open, without blocking.
    pub fn is_ready(&mut self) -> Result<bool> {
        if self.ready {
            return Ok(true);
        }
        self.ready = match &mut self.kind {
            Kind::Fence { open: Some(_), .. } => true,
            Kind::Fence { fence, .. } => fence.is_signaled()?,
            Kind::Timeline { eventfd, .. } => readable(eventfd.as_fd())?,
            Kind::Poll { epoll, pending } => {
                let mut still = Vec::new();
                for fd in pending.drain(..) {
                    if readable(fd.as_fd())? {
                        epoll::delete(&*epoll, &fd).map_err(os("epoll_ctl(DEL, dma-buf)"))?;
                    } else {
                        still.push(fd);
                    }
                }
                *pending = still;
                if pending.is_empty() {
                    let open = open_eventfd()?;
                    epoll::add(
                        &*epoll,
                        &open,
                        epoll::EventData::new_u64(1),
                        epoll::EventFlags::IN,
                    )
                    .map_err(os("epoll_ctl(ADD, eventfd)"))?;
                    pending.push(open);
                    true
                } else {
                    false
                }
            }
        };
        Ok(self.ready)
    }

    /// Block until the gate opens, for at most `timeout` (tests, tools;
    /// an event loop polls [`AcquireGate::fd`] instead).
    pub fn wait(&mut self, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        while !self.is_ready()? {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout {
                    what: "the acquire gate",
                    timeout,
                });
            }
            crate::sync::poll_ready(self.fd(), PollFlags::IN, Some(left))
                .map_err(os("poll(acquire gate)"))?;
        }
        Ok(())
    }

    /// How the gate was asked to open.
    pub fn ready_when(&self) -> ReadyWhen {
        self.when
    }

    /// The fence the compositor's GPU work must wait for before it reads
    /// the buffer, once the gate is open; `None` where nothing is left to
    /// wait for (the poll fallback only opens when the writers are done).
    /// [`Error::Invalid`] before the gate is open.
    pub fn into_sync_file(mut self) -> Result<Option<SyncFile>> {
        if !self.is_ready()? {
            return Err(Error::Invalid(
                "the acquire gate is not open yet: no fence to hand on".into(),
            ));
        }
        match self.kind {
            Kind::Fence { fence, .. } => Ok(Some(fence)),
            Kind::Poll { .. } => Ok(None),
            Kind::Timeline {
                timeline, point, ..
            } => Ok(Some(timeline.export_sync_file(point)?)),
        }
    }
}

/// Whether `fd` polls readable now.
fn readable(fd: BorrowedFd<'_>) -> Result<bool> {
    crate::sync::poll_ready(fd, PollFlags::IN, Some(Duration::ZERO)).map_err(os("poll"))
}
