//! The release tracker: every use the compositor makes of a client's
//! buffer, and exactly one release when the buffer is replaced or dropped.
//!
//! Each use (a render pass that sampled the buffer, a scanout) is a
//! sync_file that signals when that use is over, or a timeline point that
//! may not have a fence yet ([`ReleaseTracker::add_use_point`]); the
//! tracker merges them into one fence. A point is taken in once it has
//! materialized: poll [`ReleaseTracker::materialized_fd`] and release once
//! [`ReleaseTracker::is_materialized`] holds, and the release never waits. When the buffer's commit is replaced, [`ReleaseTracker::release`]
//! (or dropping the tracker) delivers the release the client asked for:
//!
//! | client's sync | delivered as |
//! |---|---|
//! | drm-syncobj release point | the merged fence imported at the point (temporary syncobj + transfer), or the point signaled from the CPU when there was no use |
//! | explicit-sync v1 | the callback gets [`Release::AfterFence`] (send `fenced_release`) or [`Release::Now`] (`immediate_release`) |
//! | implicit | the merged fence imported into the dma-buf as a READ fence, so the client's next write waits for it, then the callback gets [`Release::Now`] (send `wl_buffer.release`); on kernels without the import, [`Release::AfterFence`]: send it once the fence signals |
//!
//! The tracker owns its release: no path drops it. A tracker dropped
//! without [`ReleaseTracker::release`] delivers on drop; a failed import
//! into a timeline falls back to waiting for the fence (bounded by
//! [`FALLBACK_WAIT`]) and signaling the point from the CPU.
//!
//! ```no_run
//! use winsys::server::release::{Release, ReleaseTo, ReleaseTracker};
//! # fn buffer() -> winsys::dmabuf::Dmabuf { unimplemented!() }
//! # fn render_done() -> winsys::sync::SyncFile { unimplemented!() }
//!
//! let mut tracker = ReleaseTracker::new(ReleaseTo::Implicit {
//!     dmabuf: buffer(),
//!     then: Box::new(|release| match release {
//!         Release::Now => { /* wl_buffer.release */ }
//!         Release::AfterFence(fence) => { /* poll it, then wl_buffer.release */ }
//!     }),
//! });
//! tracker.add_use(render_done())?;
//! // ...the client commits another buffer:
//! tracker.release()?;
//! # Ok::<(), winsys::server::Error>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::{Error, Result};
use crate::dmabuf::{Access, Dmabuf};
use crate::sync::{SyncFile, Syncobj, WaitFor};

/// How long a release whose fence cannot be imported waits for it on the
/// CPU before signaling anyway (an error path only).
pub const FALLBACK_WAIT: Duration = Duration::from_secs(1);

/// What the compositor tells the client, through its callback.
#[derive(Debug)]
pub enum Release {
    /// The client may reuse the buffer now.
    Now,
    /// The client may reuse the buffer once this fence signals.
    AfterFence(SyncFile),
}

/// The compositor's way of sending a [`Release`] (its protocol objects).
pub type Deliver = Box<dyn FnOnce(Release) + Send>;

/// Where the release goes.
pub enum ReleaseTo {
    /// `wp_linux_drm_syncobj_v1`: the commit's release point (the client's
    /// timeline imported on the compositor's DRM device).
    Timeline {
        /// The timeline.
        timeline: Arc<Syncobj>,
        /// The point.
        point: u64,
    },
    /// `zwp_linux_explicit_synchronization_v1` (or any fence-taking
    /// protocol): the callback sends `fenced_release` or `immediate_release`.
    Fence(Deliver),
    /// Implicit sync: reads go into the dma-buf, then the callback sends
    /// `wl_buffer.release`.
    Implicit {
        /// The client's buffer.
        dmabuf: Dmabuf,
        /// Sends the release.
        then: Deliver,
    },
}

impl fmt::Debug for ReleaseTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReleaseTo::Timeline { timeline, point } => f
                .debug_struct("Timeline")
                .field("timeline", timeline)
                .field("point", point)
                .finish(),
            ReleaseTo::Fence(_) => f.write_str("Fence(..)"),
            ReleaseTo::Implicit { dmabuf, .. } => {
                f.debug_struct("Implicit").field("dmabuf", dmabuf).finish()
            }
        }
    }
}

/// How a release went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    /// Nothing was left to wait for: the point was signaled, or the
    /// callback got [`Release::Now`] with no fence imported.
    Immediately,
    /// The merged fence went into the client's timeline point or dma-buf.
    FenceImported,
    /// The callback got [`Release::AfterFence`].
    FenceSent,
    /// A timeline import failed: the fence was waited for (at most
    /// [`FALLBACK_WAIT`]) and the point signaled from the CPU.
    CpuFallback,
}

/// One buffer commit's uses and its release.
#[derive(Debug)]
#[must_use = "dropping the tracker releases the buffer at once"]
pub struct ReleaseTracker {
    to: Option<ReleaseTo>,
    uses: Option<SyncFile>,
    count: usize,
    /// Uses on timeline points without a fence yet, and an eventfd for
    /// the first of them.
    points: Vec<(Arc<Syncobj>, u64)>,
    waiting: Option<OwnedFd>,
}

impl ReleaseTracker {
    /// Track a committed buffer whose release goes to `to`.
    pub fn new(to: ReleaseTo) -> Self {
        ReleaseTracker {
            to: Some(to),
            uses: None,
            count: 0,
            points: Vec::new(),
            waiting: None,
        }
    }

    /// Record a use that is over when `fence` signals (merged with the
    /// earlier ones into one sync_file).
    pub fn add_use(&mut self, fence: SyncFile) -> Result<()> {
        self.merge(fence)?;
        self.count += 1;
        Ok(())
    }

    /// Record a use that is over when `point` of `timeline` signals (the
    /// compositor's own render timeline, say), whether or not the point
    /// has a fence yet.
    pub fn add_use_point(&mut self, timeline: Arc<Syncobj>, point: u64) -> Result<()> {
        self.count += 1;
        self.points.push((timeline, point));
        self.is_materialized()?;
        Ok(())
    }

    /// Whether every use has a fence (no point is still waiting for its
    /// submission): then [`ReleaseTracker::release`] does not wait.
    pub fn is_materialized(&mut self) -> Result<bool> {
        let mut still = Vec::new();
        for (timeline, point) in std::mem::take(&mut self.points) {
            match timeline.export_sync_file(point) {
                Ok(fence) => self.merge(fence)?,
                Err(crate::sync::Error::PointNotSubmitted { .. }) => still.push((timeline, point)),
                Err(e) => return Err(e.into()),
            }
        }
        self.points = still;
        // Before Linux 6.6 there is no eventfd to poll: `materialized_fd`
        // is then `None` and the release waits (bounded) instead.
        self.waiting = match self.points.first() {
            None => None,
            Some((timeline, point)) => match timeline.eventfd(*point, WaitFor::Available) {
                Ok(fd) => Some(fd),
                Err(crate::sync::Error::Unsupported { .. }) => None,
                Err(e) => return Err(e.into()),
            },
        };
        Ok(self.points.is_empty())
    }

    /// An fd that polls readable when the first outstanding point has a
    /// fence (`DRM_IOCTL_SYNCOBJ_EVENTFD`, Linux 6.6+); `None` when nothing
    /// is outstanding or the kernel has no such eventfd. Call
    /// [`ReleaseTracker::is_materialized`] on wake-up.
    pub fn materialized_fd(&self) -> Option<BorrowedFd<'_>> {
        self.waiting.as_ref().map(|fd| fd.as_fd())
    }

    /// Uses recorded so far.
    pub fn uses(&self) -> usize {
        self.count
    }

    /// Merge `fence` into the uses; on failure the earlier uses stay.
    fn merge(&mut self, fence: SyncFile) -> Result<()> {
        let merged = match &self.uses {
            None => fence,
            Some(prev) => prev.merge(&fence, "winsys-release")?,
        };
        self.uses = Some(merged);
        Ok(())
    }

    /// Deliver the release now (the buffer was replaced or its surface
    /// went away). A use point without a fence yet is waited for on the
    /// CPU, each at most [`FALLBACK_WAIT`] (a point never submitted is then
    /// left out); release once [`ReleaseTracker::is_materialized`] holds to
    /// never wait.
    pub fn release(mut self) -> Result<Delivered> {
        self.deliver()
    }

    fn deliver(&mut self) -> Result<Delivered> {
        let Some(to) = self.to.take() else {
            return Err(Error::Invalid("the release was delivered already".into()));
        };
        for (timeline, point) in std::mem::take(&mut self.points) {
            if timeline
                .wait(point, WaitFor::Available, Some(FALLBACK_WAIT))
                .is_ok()
            {
                if let Ok(fence) = timeline.export_sync_file(point) {
                    if let Ok(copy) = fence.try_clone() {
                        if self.merge(copy).is_err() {
                            // Cannot merge it: wait for it here instead.
                            let _ = fence.wait(Some(FALLBACK_WAIT));
                        }
                    }
                }
            }
        }
        self.waiting = None;
        let uses = self.uses.take();
        match to {
            ReleaseTo::Timeline { timeline, point } => match uses {
                None => {
                    timeline.signal(point)?;
                    Ok(Delivered::Immediately)
                }
                Some(fence) => match timeline.import_sync_file(point, &fence) {
                    Ok(()) => Ok(Delivered::FenceImported),
                    Err(import) => {
                        let waited = fence.wait(Some(FALLBACK_WAIT));
                        timeline.signal(point)?;
                        match waited {
                            Ok(()) => Ok(Delivered::CpuFallback),
                            Err(_) => Err(import.into()),
                        }
                    }
                },
            },
            ReleaseTo::Fence(send) => Ok(match uses {
                None => {
                    send(Release::Now);
                    Delivered::Immediately
                }
                Some(fence) => {
                    send(Release::AfterFence(fence));
                    Delivered::FenceSent
                }
            }),
            ReleaseTo::Implicit { dmabuf, then } => {
                let Some(fence) = uses else {
                    then(Release::Now);
                    return Ok(Delivered::Immediately);
                };
                let sync_file_ioctls =
                    crate::sync::probe::dmabuf_sync_file(dmabuf.planes()[0].fd());
                let imported = if sync_file_ioctls {
                    match dmabuf.import_sync_file(&fence, Access::Read) {
                        Ok(()) => true,
                        Err(crate::dmabuf::Error::Unsupported { .. }) => false,
                        Err(e) => {
                            // Still release: the client waits for the fence.
                            then(Release::AfterFence(fence));
                            return Err(e.into());
                        }
                    }
                } else {
                    false
                };
                if imported {
                    then(Release::Now);
                    Ok(Delivered::FenceImported)
                } else {
                    then(Release::AfterFence(fence));
                    Ok(Delivered::FenceSent)
                }
            }
        }
    }
}

impl Drop for ReleaseTracker {
    fn drop(&mut self) {
        if self.to.is_some() {
            let _ = self.deliver();
        }
    }
}
