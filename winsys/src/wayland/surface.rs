//! A window on a compositor and the buffers shown in it: the protocol core
//! of presentation, under the Vulkan swapchain.
//!
//! A [`Surface`] is an `xdg_toplevel` (configured before first use) with a
//! fixed [`SyncMode`]. Buffers are dma-bufs
//! ([`Surface::add_dmabuf`], `zwp_linux_buffer_params_v1.create_immed`) or
//! wl_shm ([`Surface::add_shm`]). Each buffer has one explicit state
//! ([`BufferState`]): free, queued at the compositor, or released with a
//! fence still to wait for. [`Surface::present`] refuses a buffer the
//! compositor still holds, so a buffer is never written before its
//! release; [`Surface::wait_release`] waits for it (bounded).
//!
//! Per sync mode:
//! - [`SyncMode::ExplicitSync`]: every commit carries the acquire
//!   sync_file (`set_acquire_fence`) and asks for a release
//!   (`get_release`); the fenced release's sync_file must signal before the
//!   buffer is written again.
//! - [`SyncMode::Implicit`]: the acquire fence must already be in the
//!   dma-buf (attach it with [`Dmabuf::attach_fence`]); after
//!   `wl_buffer.release` the compositor's reads are in the dma-buf's fences.
//! - [`SyncMode::Shm`]: `wl_buffer.release` alone.
//!
//! - [`SyncMode::DrmSyncobj`]: the client's timelines are handed over
//!   once ([`Surface::add_timeline`]); every commit names an acquire point
//!   (signalled by the rendering) and a release point
//!   ([`Surface::present_with_points`]), or, for content complete already
//!   (a software device's rendering, waited for), the signalled point of
//!   a timeline kept for that ([`Surface::present_complete`]: no signal
//!   each frame); the buffer is free again when the
//!   release point signals: checked with one `DRM_IOCTL_SYNCOBJ_QUERY`,
//!   and waited for on the surface's one eventfd, told of the points it
//!   waits for and polled with the socket (a blocking bounded wait before
//!   Linux 6.6) — `wl_buffer.release` is undefined in this mode and not
//!   waited for.
//!
//! A dropped `Surface` destroys its buffers without waiting for their
//! releases: the compositor's import keeps their storage alive while it
//! reads. Storage the caller handed in ([`Surface::add_dmabuf`],
//! [`Surface::add_shm_memory`]) must not be written while its buffer is
//! unreleased, the `Surface` dropped or not. What the compositor still sends to the
//! surface's objects afterwards (a release fence, a frame callback, a
//! presentation feedback) is dropped as it arrives, its fds closed: it is
//! not kept on the surface's event queue, where nothing would take it.
//!
//! [`Dmabuf::attach_fence`]: crate::dmabuf::Dmabuf::attach_fence

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use wayland_client::protocol::{
    wl_buffer, wl_callback, wl_compositor, wl_registry, wl_shm, wl_shm_pool, wl_surface,
};
use wayland_client::{Connection, Dispatch, EventQueue, QueueHandle};
use wayland_protocols::wp::fifo::v1::client::{wp_fifo_manager_v1, wp_fifo_v1};
use wayland_protocols::wp::linux_dmabuf::zv1::client::{
    zwp_linux_buffer_params_v1 as params_v1, zwp_linux_dmabuf_feedback_v1 as feedback_v1,
    zwp_linux_dmabuf_v1 as dmabuf_v1,
};
use wayland_protocols::wp::linux_drm_syncobj::v1::client::{
    wp_linux_drm_syncobj_manager_v1 as syncobj_manager_v1,
    wp_linux_drm_syncobj_surface_v1 as syncobj_surface_v1,
    wp_linux_drm_syncobj_timeline_v1 as syncobj_timeline_v1,
};
use wayland_protocols::wp::linux_explicit_synchronization::zv1::client::{
    zwp_linux_buffer_release_v1 as release_v1,
    zwp_linux_explicit_synchronization_v1 as explicit_v1,
    zwp_linux_surface_synchronization_v1 as surface_sync_v1,
};
use wayland_protocols::wp::tearing_control::v1::client::{
    wp_tearing_control_manager_v1 as tearing_manager_v1, wp_tearing_control_v1 as tearing_v1,
};
use wayland_protocols::xdg::shell::client::{xdg_surface, xdg_toplevel, xdg_wm_base};

use super::owner::Owner;
use super::presentation::{Presentation, PresentationStats};
use super::sync::SyncMode;
use super::{roundtrip, Error, Registry, Result};
use crate::dmabuf::Dmabuf;
use crate::format::Fourcc;
use crate::sync::{Deadline, FenceStatus, SyncFile};
use crate::sync::{Syncobj, WaitFor};

/// A buffer of a [`Surface`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BufferId(usize);

/// A timeline handed to the compositor ([`Surface::add_timeline`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimelineId(usize);

/// Where a buffer is.
#[derive(Debug)]
pub enum BufferState {
    /// The client may write it.
    Free,
    /// Committed: the compositor may read it; writing it now would tear.
    WithCompositor,
    /// Released by the compositor, whose last read is still pending in
    /// this fence (explicit sync): wait for it before writing.
    Releasing(SyncFile),
}

struct Buffer {
    wl: wl_buffer::WlBuffer,
    state: BufferState,
    /// `wl_buffer.release` seen since the last commit.
    released: bool,
    /// Explicit sync: the release object's answer since the last commit
    /// (`Some(None)`: immediate release, or a fence that had signalled
    /// when it arrived).
    release_fence: Option<Option<SyncFile>>,
    dmabuf: bool,
    /// drm-syncobj: the release point of the last commit.
    release_point: Option<(TimelineId, u64)>,
    /// wl_shm of this surface's own memory: the pool's memfd, the bytes
    /// of the buffer and of a row.
    shm: Option<(OwnedFd, usize, usize)>,
}

#[derive(Default)]
struct State {
    reg: Registry,
    configured: bool,
    /// The size the compositor last asked for (0 = the client's choice).
    size: (i32, i32),
    closed: bool,
    frames_done: u64,
    buffers: Vec<Buffer>,
    /// A refusal by the compositor, told at the next call.
    failed: Option<Error>,
    /// The first buffer whose release "fence" was unusable, and why: from
    /// then on every call fails (nothing says when the compositor is done
    /// with that buffer).
    refused: Option<(usize, crate::sync::Error)>,
    /// Per-surface linux-dmabuf feedback: the round being parsed, the
    /// first one received, and whether a later one differed from it.
    feedback: super::feedback::FeedbackBuilder,
    first_feedback:
        Option<std::result::Result<super::feedback::Feedback, super::feedback::FeedbackError>>,
    feedback_changed: bool,
}

/// The window a [`Surface`] made for itself.
struct Role {
    wm: xdg_wm_base::XdgWmBase,
    xdg: xdg_surface::XdgSurface,
    toplevel: xdg_toplevel::XdgToplevel,
}

#[derive(Clone, Copy)]
enum Target<'a> {
    Toplevel(&'a str),
    Existing(&'a wl_surface::WlSurface),
}

/// A [`Target`] with the globals its role needs, found.
enum Found<'a> {
    Toplevel {
        title: &'a str,
        /// `wl_compositor`'s `(name, version)`.
        compositor: (u32, u32),
        /// `xdg_wm_base`'s `(name, version)`.
        wm: (u32, u32),
    },
    Existing(&'a wl_surface::WlSurface),
}

/// A window presenting buffers in one [`SyncMode`]: a toplevel of its own,
/// or the app's surface.
pub struct Surface {
    conn: Connection,
    queue: EventQueue<State>,
    state: State,
    qh: QueueHandle<State>,
    surface: wl_surface::WlSurface,
    /// The registry the globals were bound from (later binds reuse it).
    registry: wl_registry::WlRegistry,
    /// Our own toplevel (`None`: the app's surface, its role is the app's).
    role: Option<Role>,
    dmabuf: Option<dmabuf_v1::ZwpLinuxDmabufV1>,
    shm: Option<wl_shm::WlShm>,
    surface_sync: Option<surface_sync_v1::ZwpLinuxSurfaceSynchronizationV1>,
    /// drm-syncobj: the manager and this surface's syncobj object.
    syncobj: Option<(
        syncobj_manager_v1::WpLinuxDrmSyncobjManagerV1,
        syncobj_surface_v1::WpLinuxDrmSyncobjSurfaceV1,
    )>,
    /// Each timeline, its proxy, and the highest point used on it so far.
    timelines: Vec<(
        Syncobj,
        syncobj_timeline_v1::WpLinuxDrmSyncobjTimelineV1,
        u64,
    )>,
    /// [`Surface::add_done_timeline`]: a timeline whose point 1 signalled
    /// when it was added, the acquire point of content already complete.
    done: Option<TimelineId>,
    /// The eventfd every wait for a release point polls, once one did.
    waker: Option<Waker>,
    /// Whether the kernel cannot tell an eventfd of a point (before
    /// Linux 6.6): the waits block on each point in turn.
    no_waker: bool,
    /// `wp_fifo_v1` pacing, once [`Surface::use_fifo`] found it.
    fifo: Option<(wp_fifo_manager_v1::WpFifoManagerV1, wp_fifo_v1::WpFifoV1)>,
    /// The `async` presentation hint, once [`Surface::allow_tearing`] set it.
    tearing: Option<(
        tearing_manager_v1::WpTearingControlManagerV1,
        tearing_v1::WpTearingControlV1,
    )>,
    presentation: Option<Presentation>,
    surface_feedback: Option<feedback_v1::ZwpLinuxDmabufFeedbackV1>,
    mode: SyncMode,
    timeout: Duration,
    frames_asked: u64,
    /// Whether commits ask for a frame callback
    /// ([`Surface::request_frame_callbacks`]).
    frame_callbacks: bool,
    /// The format of new wl_shm buffers ([`Surface::set_shm_format`]).
    shm_format: ShmFormat,
    /// Whether [`Surface::retire`] gave up the per-surface objects.
    retired: bool,
    /// The owner of the objects that may hear from the compositor after
    /// this surface is gone (releases, frame callbacks, the registry).
    owner: Owner,
}

/// The one eventfd every wait for a release point on a surface polls
/// (drm-syncobj, Linux 6.6+), instead of one made and closed per wait:
/// each point is told to it once, and it is drained after it fired.
#[derive(Debug)]
struct Waker {
    fd: OwnedFd,
    /// The points told to it and not seen reached yet, one per timeline.
    armed: Vec<(TimelineId, u64)>,
    /// Whether it may have fired since it was last drained.
    fired: bool,
}

impl Surface {
    /// A toplevel titled `title` on `conn`'s compositor for `mode`, bound
    /// to the globals that mode needs ([`Error::MissingGlobal`] if one is
    /// absent) and configured by the compositor; every wait for the
    /// compositor is bounded by `timeout`.
    pub fn new(conn: &Connection, title: &str, mode: SyncMode, timeout: Duration) -> Result<Self> {
        Self::build(conn, Target::Toplevel(title), mode, timeout)
    }

    /// Present into the app's own `surface` (of `conn`), whose role (a
    /// toplevel, a subsurface, ...) and configure events stay the app's:
    /// [`Surface::configured_size`] is then `None`, and the app resizes.
    /// The surface must outlive this `Surface`, which never destroys it.
    pub fn for_surface(
        conn: &Connection,
        surface: &wl_surface::WlSurface,
        mode: SyncMode,
        timeout: Duration,
    ) -> Result<Self> {
        Self::build(conn, Target::Existing(surface), mode, timeout)
    }

    fn build(
        conn: &Connection,
        target: Target<'_>,
        mode: SyncMode,
        timeout: Duration,
    ) -> Result<Self> {
        if let Target::Existing(surface) = target {
            use wayland_client::Proxy;
            if surface.backend().upgrade().as_ref() != Some(&conn.backend()) {
                return Err(Error::Wayland(
                    "the wl_surface belongs to another connection (or is gone)".into(),
                ));
            }
        }
        let mut queue: EventQueue<State> = conn.new_event_queue();
        let qh = queue.handle();
        let mut state = State::default();
        let owner = Owner::new();
        let registry = owner.registry(conn, &qh)?;
        roundtrip(conn, &owner, &mut queue, &mut state, timeout)?;
        // Every global the mode needs is found before any is bound: a
        // missing one leaves nothing behind on the compositor.
        let global = |name: &'static str, max: u32| state.reg.global(name, max);
        let need =
            |name: &'static str, max: u32| global(name, max).ok_or(Error::MissingGlobal(name));
        let dmabuf = match mode {
            SyncMode::Shm => None,
            _ => Some(need("zwp_linux_dmabuf_v1", 5)?),
        };
        if dmabuf.is_some_and(|(_, v)| v < 2) {
            return Err(Error::MissingGlobal("zwp_linux_dmabuf_v1 version 2"));
        }
        let shm = global("wl_shm", 1);
        if shm.is_none() && mode == SyncMode::Shm {
            return Err(Error::MissingGlobal("wl_shm"));
        }
        let explicit = match mode {
            SyncMode::ExplicitSync => Some(need("zwp_linux_explicit_synchronization_v1", 2)?),
            _ => None,
        };
        let syncobj_manager = match mode {
            SyncMode::DrmSyncobj => Some(need("wp_linux_drm_syncobj_manager_v1", 1)?),
            _ => None,
        };
        let presentation = global(super::presentation::GLOBAL.0, super::presentation::GLOBAL.1);
        let target = match target {
            Target::Existing(surface) => Found::Existing(surface),
            Target::Toplevel(title) => Found::Toplevel {
                title,
                compositor: need("wl_compositor", 4)?,
                wm: need("xdg_wm_base", 2)?,
            },
        };
        // From here on, a failure drops the `Surface`, whose Drop destroys
        // what was made: a retry on the app's surface can make its
        // per-surface objects again.
        let dmabuf =
            dmabuf.map(|(n, v)| registry.bind::<dmabuf_v1::ZwpLinuxDmabufV1, _, _>(n, v, &qh, ()));
        let shm = shm.map(|(n, v)| registry.bind::<wl_shm::WlShm, _, _>(n, v, &qh, ()));
        let (surface, role) = match target {
            Found::Existing(surface) => (surface.clone(), None),
            Found::Toplevel {
                title,
                compositor: (cn, cv),
                wm: (wn, wv),
            } => {
                let compositor: wl_compositor::WlCompositor = registry.bind(cn, cv, &qh, ());
                let wm: xdg_wm_base::XdgWmBase = registry.bind(wn, wv, &qh, ());
                let surface = compositor.create_surface(&qh, ());
                let xdg = wm.get_xdg_surface(&surface, &qh, ());
                let toplevel = xdg.get_toplevel(&qh, ());
                toplevel.set_title(title.into());
                (surface, Some(Role { wm, xdg, toplevel }))
            }
        };
        // The global is needed only to make the surface's object.
        let surface_sync = explicit.map(|(n, v)| {
            let ex: explicit_v1::ZwpLinuxExplicitSynchronizationV1 = registry.bind(n, v, &qh, ());
            let sync = ex.get_synchronization(&surface, &qh, ());
            ex.destroy();
            sync
        });
        let syncobj = syncobj_manager.map(|(n, v)| {
            let m: syncobj_manager_v1::WpLinuxDrmSyncobjManagerV1 = registry.bind(n, v, &qh, ());
            let s = m.get_surface(&surface, &qh, ());
            (m, s)
        });
        let mut made = Surface {
            conn: conn.clone(),
            queue,
            state,
            qh,
            surface,
            registry,
            role,
            dmabuf,
            shm,
            surface_sync,
            syncobj,
            timelines: Vec::new(),
            done: None,
            waker: None,
            no_waker: false,
            fifo: None,
            tearing: None,
            presentation: None,
            surface_feedback: None,
            owner,
            mode,
            timeout,
            frames_asked: 0,
            frame_callbacks: true,
            shm_format: ShmFormat::XRGB8888,
            retired: false,
        };
        if made.role.is_some() {
            made.surface.commit();
            let deadline = Deadline::after(Some(timeout));
            while !made.state.configured {
                let left = deadline.remaining().unwrap_or(timeout);
                if left.is_zero() {
                    return Err(Error::Timeout {
                        what: "the first xdg_surface.configure",
                        timeout,
                    });
                }
                roundtrip(conn, &made.owner, &mut made.queue, &mut made.state, left)?;
            }
        }
        // Bound through this surface's registry: no registry (and no
        // roundtrip for the globals) of its own.
        made.presentation = presentation
            .map(|g| Presentation::from_global(conn, &made.registry, g, &made.surface, timeout))
            .transpose()?;
        // Feedback for this surface (v4+): a change later (a scanout
        // tranche appears, the device goes) makes the swapchain suboptimal.
        made.surface_feedback = made
            .dmabuf
            .as_ref()
            .filter(|d| wayland_client::Proxy::version(*d) >= 4)
            .map(|d| d.get_surface_feedback(&made.surface, &made.qh, ()));
        Ok(made)
    }

    /// [`roundtrip`] on this surface's queue, bounded by its timeout.
    fn roundtrip(&mut self) -> Result<()> {
        roundtrip(
            &self.conn,
            &self.owner,
            &mut self.queue,
            &mut self.state,
            self.timeout,
        )
    }

    /// What `wp_presentation` said about the frames presented so far
    /// (`None`: the compositor offers no `wp_presentation`).
    pub fn presentation(&mut self) -> Result<Option<PresentationStats>> {
        self.presentation.as_mut().map(|p| p.stats()).transpose()
    }

    /// The compositor's presentation clock (`None`: no `wp_presentation`,
    /// or a clock this process cannot read).
    pub fn presentation_clock(&self) -> Option<rustix::time::ClockId> {
        self.presentation.as_ref().and_then(Presentation::clock)
    }

    /// Bound the waits that take no timeout of their own by `timeout`
    /// from now on.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The sync mode.
    pub fn mode(&self) -> SyncMode {
        self.mode
    }

    /// Offer `dmabuf` to the compositor as a buffer (`create_immed`). A
    /// buffer it refuses is a protocol error that [`Surface::present`] and
    /// the waits report as [`Error::Wayland`].
    pub fn add_dmabuf(&mut self, dmabuf: &Dmabuf) -> Result<BufferId> {
        let factory = self.dmabuf.as_ref().ok_or(Error::MissingGlobal(
            "zwp_linux_dmabuf_v1 (this surface is wl_shm)",
        ))?;
        let params = factory.create_params(&self.qh, ());
        let modifier = dmabuf.modifier().0;
        for (i, p) in dmabuf.planes().iter().enumerate() {
            params.add(
                p.fd(),
                i as u32,
                p.offset(),
                p.stride(),
                (modifier >> 32) as u32,
                modifier as u32,
            );
        }
        let id = BufferId(self.state.buffers.len());
        let wl = params.create_immed(
            dmabuf.width() as i32,
            dmabuf.height() as i32,
            dmabuf.format().0,
            params_v1::Flags::empty(),
            &self.qh,
            id,
        );
        self.state.buffers.push(Buffer {
            wl,
            state: BufferState::Free,
            released: false,
            release_fence: None,
            dmabuf: true,
            release_point: None,
            shm: None,
        });
        // A refusal arrives as a `failed` event (on the live params object)
        // or a protocol error.
        let answered = self.roundtrip();
        params.destroy();
        answered?;
        self.check_failed()?;
        Ok(id)
    }

    /// The format of the wl_shm buffers made from now on: `XRGB8888` (the
    /// default), `ARGB8888` (premultiplied alpha, which the compositor
    /// blends) — the two every compositor takes (`wl_shm`'s required
    /// formats) — or another single-plane format the compositor announced
    /// ([`Report::shm_formats`](super::probe::Report::shm_formats); one it
    /// did not is a protocol error). A format winsys knows no layout of,
    /// or of several planes: [`Error::Wayland`] naming the format.
    pub fn set_shm_format(&mut self, format: Fourcc) -> Result<()> {
        self.shm_format = shm_format(format)?;
        Ok(())
    }

    /// A wl_shm buffer of `width` x `height` in its own memfd pool, rows
    /// of the format's pixels unpadded ([`Surface::set_shm_format`]:
    /// XRGB8888 unless set); fill it with [`Surface::write_shm`].
    pub fn add_shm(&mut self, width: u32, height: u32) -> Result<BufferId> {
        let cpp = self.shm_format.cpp;
        let (stride, size) = shm_layout(width, height, u64::from(width) * u64::from(cpp), cpp)?;
        let memfd = rustix::fs::memfd_create("winsys-shm", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|errno| Error::Io {
                op: "memfd_create",
                errno,
            })?;
        rustix::fs::ftruncate(&memfd, size as u64).map_err(|errno| Error::Io {
            op: "ftruncate(shm pool)",
            errno,
        })?;
        let id = self.shm_buffer(memfd.as_fd(), size, 0, (width, height), stride)?;
        self.state.buffers[id.0].shm = Some((memfd, size as usize, stride as usize));
        Ok(id)
    }

    /// A wl_shm buffer (XRGB8888, or [`Surface::set_shm_format`]'s) over
    /// memory the caller owns and fills:
    /// `height` rows of `stride` bytes from `offset` in `memfd` (e.g. the
    /// memfd behind a udmabuf the GPU renders into: no copy at all). The
    /// compositor reads those bytes whenever it holds the buffer, so the
    /// caller writes them only while it is [`BufferState::Free`], and
    /// makes a device's writes visible first
    /// ([`Dmabuf::sync_for_cpu_read`](crate::dmabuf::Dmabuf::sync_for_cpu_read)).
    /// [`Surface::write_shm`] refuses such a buffer.
    pub fn add_shm_memory(
        &mut self,
        memfd: std::os::fd::BorrowedFd<'_>,
        offset: u64,
        (width, height): (u32, u32),
        stride: u32,
    ) -> Result<BufferId> {
        let (stride, size) = shm_layout(width, height, u64::from(stride), self.shm_format.cpp)?;
        let too_big =
            || Error::Wayland(format!("a wl_shm pool past i32 bytes ({offset} + {size})"));
        let offset = i32::try_from(offset).map_err(|_| too_big())?;
        let pool = offset.checked_add(size).ok_or_else(too_big)?;
        let st = rustix::fs::fstat(memfd).map_err(|errno| Error::Io {
            op: "fstat(shm memory)",
            errno,
        })?;
        if st.st_size < i64::from(pool) {
            return Err(Error::Wayland(format!(
                "{pool} bytes of wl_shm memory asked of a {}-byte file",
                st.st_size
            )));
        }
        self.shm_buffer(memfd, pool, offset, (width, height), stride)
    }

    fn shm_buffer(
        &mut self,
        memfd: std::os::fd::BorrowedFd<'_>,
        pool_size: i32,
        offset: i32,
        (width, height): (u32, u32),
        stride: i32,
    ) -> Result<BufferId> {
        let shm = self.shm.as_ref().ok_or(Error::MissingGlobal("wl_shm"))?;
        let pool = shm.create_pool(memfd, pool_size, &self.qh, ());
        let id = BufferId(self.state.buffers.len());
        let (w, h) = (width as i32, height as i32);
        let wl = pool.create_buffer(offset, w, h, stride, self.shm_format.code, &self.qh, id);
        pool.destroy();
        self.state.buffers.push(Buffer {
            wl,
            state: BufferState::Free,
            released: false,
            release_fence: None,
            dmabuf: false,
            release_point: None,
            shm: None,
        });
        Ok(id)
    }

    /// Write `bytes` (rows of the buffer's format, packed) into a free wl_shm buffer of
    /// [`Surface::add_shm`].
    pub fn write_shm(&mut self, id: BufferId, bytes: &[u8]) -> Result<()> {
        let (_, size, row) = self.own_shm(id)?;
        if bytes.len() != size {
            return Err(Error::Wayland(format!(
                "{} bytes for a wl_shm buffer of {size}",
                bytes.len()
            )));
        }
        self.write_shm_rows(id, bytes, row)
    }

    /// Write the buffer's rows from `src`, one every `src_stride` bytes
    /// (e.g. straight from a mapping of a dma-buf with a padded stride),
    /// into a free wl_shm buffer of [`Surface::add_shm`]: one copy, by the
    /// kernel (`pwrite`, or `pwritev` of the rows when strides differ).
    pub fn write_shm_rows(&mut self, id: BufferId, src: &[u8], src_stride: usize) -> Result<()> {
        if !matches!(self.buffer_ref(id)?.state, BufferState::Free) {
            return Err(Error::BufferBusy(id.0));
        }
        let (fd, size, row) = self.own_shm(id)?;
        let rows = size / row;
        let need = src_stride.saturating_mul(rows - 1).saturating_add(row);
        if src_stride < row || src.len() < need {
            return Err(Error::Wayland(format!(
                "{} bytes at a stride of {src_stride} cannot hold {rows} rows of {row} bytes",
                src.len()
            )));
        }
        let io = |errno| Error::Io {
            op: "pwrite(shm pool)",
            errno,
        };
        if src_stride == row {
            return pwrite_all(fd, &src[..size], 0).map_err(io);
        }
        // IOV_MAX rows per call; a short write goes on from the first row
        // it did not finish (rewriting its start: the same bytes).
        let mut at = 0;
        while at < rows {
            let end = (at + 1024).min(rows);
            let slices: Vec<std::io::IoSlice<'_>> = (at..end)
                .map(|r| std::io::IoSlice::new(&src[r * src_stride..r * src_stride + row]))
                .collect();
            let n = rustix::io::pwritev(fd, &slices, (at * row) as u64).map_err(io)?;
            if n == 0 {
                return Err(io(rustix::io::Errno::IO));
            }
            at += n / row;
        }
        Ok(())
    }

    /// The state of buffer `id`.
    pub fn state(&self, id: BufferId) -> Option<&BufferState> {
        self.state.buffers.get(id.0).map(|b| &b.state)
    }

    /// The memfd, size and row bytes of a wl_shm buffer of
    /// [`Surface::add_shm`].
    fn own_shm(&self, id: BufferId) -> Result<(&OwnedFd, usize, usize)> {
        match &self.buffer_ref(id)?.shm {
            Some((fd, size, row)) => Ok((fd, *size, *row)),
            None => Err(Error::Wayland(format!(
                "buffer {} is not wl_shm of its own",
                id.0
            ))),
        }
    }

    fn buffer_ref(&self, id: BufferId) -> Result<&Buffer> {
        self.state
            .buffers
            .get(id.0)
            .ok_or(Error::Wayland(format!("no buffer {}", id.0)))
    }

    fn buffer(&mut self, id: BufferId) -> Result<&mut Buffer> {
        self.state
            .buffers
            .get_mut(id.0)
            .ok_or(Error::Wayland(format!("no buffer {}", id.0)))
    }

    fn check_failed(&mut self) -> Result<()> {
        match self.state.failed.take() {
            Some(e) => Err(e),
            None => match &self.state.refused {
                Some((buffer, source)) => Err(Error::BadReleaseFence {
                    buffer: *buffer,
                    source: source.clone(),
                }),
                None => Ok(()),
            },
        }
    }

    /// Show buffer `id` (whole-surface damage, a frame callback, commit).
    /// Explicit sync: `acquire` is the fence the compositor waits for
    /// before reading; `None` when the contents are complete already (the
    /// compositor then treats this commit as implicitly synchronized), and
    /// a release is asked for either way. Implicit sync and wl_shm: must be
    /// `None` (the fence is in the dma-buf, or the CPU wrote an shm
    /// buffer). drm-syncobj: use [`Surface::present_with_points`] (or
    /// [`Surface::present_complete`]).
    ///
    /// [`Error::BufferBusy`] if the compositor still holds the buffer (or
    /// its release fence has not been waited for): a buffer is never
    /// handed over twice.
    pub fn present(&mut self, id: BufferId, acquire: Option<SyncFile>) -> Result<()> {
        self.check_not_retired()?;
        self.dispatch_pending()?;
        let mode = self.mode;
        let qh = self.qh.clone();
        let b = self.buffer(id)?;
        if !matches!(b.state, BufferState::Free) {
            return Err(Error::BufferBusy(id.0));
        }
        match (mode, acquire, b.dmabuf) {
            (SyncMode::DrmSyncobj, _, _) => {
                return Err(Error::Wayland(
                    "drm-syncobj commits carry timeline points: present_with_points or present_complete".into(),
                ))
            }
            (SyncMode::ExplicitSync, _, false) => {
                return Err(Error::Wayland(
                    "explicit sync needs a dma-buf buffer".into(),
                ))
            }
            (SyncMode::ExplicitSync, fence, true) => {
                let sync = self.surface_sync.as_ref().expect("bound for explicit sync");
                // No fence: the contents are complete; this commit is then
                // implicitly synchronized. A release is asked for either way.
                if let Some(fence) = fence {
                    sync.set_acquire_fence(fence.as_fd());
                }
                // A surface already gone cannot commit either: nothing to
                // release then.
                let _: Option<release_v1::ZwpLinuxBufferReleaseV1> =
                    self.owner
                        .make(sync, surface_sync_v1::Request::GetRelease {}, &qh, id);
            }
            (_, Some(_), _) => {
                return Err(Error::Wayland(format!(
                    "{mode} sync takes no acquire fence (it is in the dma-buf)"
                )))
            }
            (_, None, _) => {}
        }
        self.commit_buffer(id, None)
    }

    /// Hand `timeline` (a syncobj with timeline points) to the compositor
    /// (`wp_linux_drm_syncobj_manager_v1.import_timeline`) for
    /// [`Surface::present_with_points`]. A timeline the compositor refuses
    /// is a protocol error, reported here.
    pub fn add_timeline(&mut self, timeline: Syncobj) -> Result<TimelineId> {
        let (manager, _) = self.syncobj.as_ref().ok_or(Error::Wayland(
            "timelines are for drm-syncobj surfaces".into(),
        ))?;
        let fd = timeline
            .export()
            .map_err(|e| Error::Wayland(e.to_string()))?;
        let proxy = manager.import_timeline(fd.as_fd(), &self.qh, ());
        drop(fd);
        self.timelines.push((timeline, proxy, 0));
        self.roundtrip()?;
        self.check_failed()?;
        Ok(TimelineId(self.timelines.len() - 1))
    }

    /// Hand the compositor a timeline (a new syncobj of the timelines'
    /// device) whose point 1 is signalled here first: the acquire point of
    /// [`Surface::present_complete`], so that content already complete
    /// needs no signal of its own each frame. Once per surface; later calls
    /// return the same timeline.
    pub fn add_done_timeline(&mut self, timeline: Syncobj) -> Result<TimelineId> {
        if let Some(done) = self.done {
            return Ok(done);
        }
        timeline
            .signal(1)
            .map_err(|e| Error::Wayland(e.to_string()))?;
        let id = self.add_timeline(timeline)?;
        // Point 1 is taken for good: no caller may use it again.
        self.timelines[id.0].2 = 1;
        self.done = Some(id);
        Ok(id)
    }

    /// Pace commits with `wp_fifo_v1` when the compositor offers it: each
    /// commit waits in the compositor for the previous one to be shown
    /// (`wait_barrier`) and sets a barrier of its own (`set_barrier`), so
    /// no content update is skipped and the client never blocks on a
    /// frame callback (a hidden surface still gets its commits applied).
    /// Whether it is offered (the app then paces with frame callbacks).
    pub fn use_fifo(&mut self) -> Result<bool> {
        if self.fifo.is_some() {
            return Ok(true);
        }
        let Some((name, version)) = self.state.reg.global("wp_fifo_manager_v1", 1) else {
            return Ok(false);
        };
        let manager: wp_fifo_manager_v1::WpFifoManagerV1 =
            self.registry.bind(name, version, &self.qh, ());
        let fifo = manager.get_fifo(&self.surface, &self.qh, ());
        self.fifo = Some((manager, fifo));
        // A surface another party already paces is a protocol error: found
        // here, not at the first commit.
        self.roundtrip()?;
        Ok(true)
    }

    /// Ask the compositor to show this surface's updates at once, tearing
    /// allowed (`wp_tearing_control_v1`, hint `async`), when it offers
    /// that; whether it does. (A hint: the compositor may still wait for
    /// vblank.)
    pub fn allow_tearing(&mut self) -> Result<bool> {
        if self.tearing.is_some() {
            return Ok(true);
        }
        let Some((name, version)) = self.state.reg.global("wp_tearing_control_manager_v1", 1)
        else {
            return Ok(false);
        };
        let manager: tearing_manager_v1::WpTearingControlManagerV1 =
            self.registry.bind(name, version, &self.qh, ());
        let control = manager.get_tearing_control(&self.surface, &self.qh, ());
        control.set_presentation_hint(tearing_v1::PresentationHint::Async);
        self.tearing = Some((manager, control));
        self.roundtrip()?;
        Ok(true)
    }

    /// Whether the `async` presentation hint is set
    /// ([`Surface::allow_tearing`]).
    pub fn tearing(&self) -> bool {
        self.tearing.is_some()
    }

    /// Whether commits are paced by `wp_fifo_v1` ([`Surface::use_fifo`]).
    pub fn fifo(&self) -> bool {
        self.fifo.is_some()
    }

    /// The syncobj behind `id`.
    pub fn timeline(&self, id: TimelineId) -> Option<&Syncobj> {
        self.timelines.get(id.0).map(|(t, _, _)| t)
    }

    /// drm-syncobj: show buffer `id` once `acquire` on `timeline` signals;
    /// the compositor signals `release` on it when done with the buffer
    /// (`acquire < release`; each must be a point not used before).
    pub fn present_with_points(
        &mut self,
        id: BufferId,
        timeline: TimelineId,
        acquire: u64,
        release: u64,
    ) -> Result<()> {
        if Some(timeline) == self.done {
            return Err(Error::Wayland(
                "the done timeline is for present_complete".into(),
            ));
        }
        // The acquire point must be new too: it comes before the release
        // point on the same timeline.
        if acquire >= release || acquire <= self.last_point(timeline)? {
            return Err(Error::Wayland(format!(
                "points {acquire} (acquire) < {release} (release) must be new on timeline {}",
                timeline.0
            )));
        }
        self.commit_points(id, (timeline, acquire), (timeline, release))
    }

    /// drm-syncobj for a buffer whose content is complete already (its
    /// rendering waited for): [`Surface::present_with_points`] with point 1
    /// of the [done timeline](Surface::add_done_timeline) as the acquire
    /// point, signalled long ago, so the frame costs no signal. The
    /// compositor signals `release` on `timeline` when done with the
    /// buffer (a point not used before on it).
    pub fn present_complete(
        &mut self,
        id: BufferId,
        timeline: TimelineId,
        release: u64,
    ) -> Result<()> {
        let done = self.done.ok_or(Error::Wayland(
            "no done timeline: add_done_timeline first".into(),
        ))?;
        if timeline == done {
            return Err(Error::Wayland(
                "the done timeline takes no release points".into(),
            ));
        }
        self.commit_points(id, (done, 1), (timeline, release))
    }

    /// The highest point used on `timeline` so far.
    fn last_point(&self, timeline: TimelineId) -> Result<u64> {
        self.timelines
            .get(timeline.0)
            .map(|(_, _, last)| *last)
            .ok_or(Error::Wayland(format!("no timeline {}", timeline.0)))
    }

    /// Commit buffer `id` with its acquire and release points (each a
    /// timeline and a point): what [`Surface::present_with_points`] and
    /// [`Surface::present_complete`] share. The release point must be new
    /// on its timeline: a reused or lower one could count as signalled
    /// before the compositor is done.
    fn commit_points(
        &mut self,
        id: BufferId,
        acquire: (TimelineId, u64),
        release: (TimelineId, u64),
    ) -> Result<()> {
        self.check_not_retired()?;
        self.dispatch_pending()?;
        let (_, sync) = self.syncobj.as_ref().ok_or(Error::Wayland(
            "timeline points are for drm-syncobj surfaces".into(),
        ))?;
        let last = self.last_point(release.0)?;
        if release.1 <= last {
            return Err(Error::Wayland(format!(
                "release point {} must be new: timeline {} is at {last}",
                release.1, release.0 .0
            )));
        }
        self.last_point(acquire.0)?;
        self.check_syncobj_buffer(id)?;
        let split = |p: u64| ((p >> 32) as u32, p as u32);
        let (hi, lo) = split(acquire.1);
        sync.set_acquire_point(&self.timelines[acquire.0 .0].1, hi, lo);
        let (hi, lo) = split(release.1);
        sync.set_release_point(&self.timelines[release.0 .0].1, hi, lo);
        self.timelines[release.0 .0].2 = release.1;
        self.commit_buffer(id, Some(release))
    }

    /// A buffer that may be committed with timeline points: free, and a
    /// dma-buf.
    fn check_syncobj_buffer(&self, id: BufferId) -> Result<()> {
        let b = self.buffer_ref(id)?;
        if !matches!(b.state, BufferState::Free) {
            return Err(Error::BufferBusy(id.0));
        }
        if !b.dmabuf {
            return Err(Error::Wayland("drm-syncobj needs a dma-buf buffer".into()));
        }
        Ok(())
    }

    fn commit_buffer(
        &mut self,
        id: BufferId,
        release_point: Option<(TimelineId, u64)>,
    ) -> Result<()> {
        let b = self.buffer(id)?;
        b.state = BufferState::WithCompositor;
        b.released = false;
        b.release_fence = None;
        b.release_point = release_point;
        let wl = b.wl.clone();
        self.surface.attach(Some(&wl), 0, 0);
        if wayland_client::Proxy::version(&self.surface) >= 4 {
            self.surface.damage_buffer(0, 0, i32::MAX, i32::MAX);
        } else {
            // An app's surface bound below v4 (no damage_buffer).
            self.surface.damage(0, 0, i32::MAX, i32::MAX);
        }
        if self.frame_callbacks {
            let _: Option<wl_callback::WlCallback> = self.owner.make(
                &self.surface,
                wl_surface::Request::Frame {},
                &self.qh,
                FrameCallback,
            );
        }
        if let Some((_, fifo)) = &self.fifo {
            fifo.wait_barrier();
            fifo.set_barrier();
        }
        if let Some(p) = &mut self.presentation {
            // Sent with the commit (the flush below).
            p.ask()?;
        }
        self.frames_asked += 1;
        self.surface.commit();
        self.queue.flush().map_err(Error::wayland)?;
        Ok(())
    }

    /// Whether commits ask for frame callbacks (the default). Only FIFO
    /// pacing without `wp_fifo_v1` needs them; without them the compositor
    /// has one object less to create and call per commit, and
    /// [`Surface::wait_frame`] and [`Surface::frames_done`] go by the
    /// `wp_presentation` feedback instead (presented or discarded). Turning
    /// them off needs `wp_presentation`; whether commits ask for them now.
    pub fn request_frame_callbacks(&mut self, on: bool) -> bool {
        self.frame_callbacks = on || self.presentation.is_none();
        self.frame_callbacks
    }

    /// Wait (at most the surface's timeout) until the compositor has shown
    /// (or, MAILBOX, replaced) every frame presented so far: frame
    /// callbacks, or the presentation feedback where commits ask for no
    /// callbacks ([`Surface::request_frame_callbacks`]).
    pub fn wait_frame(&mut self) -> Result<()> {
        self.wait_frame_for(self.timeout)
    }

    fn wait_frame_for(&mut self, timeout: Duration) -> Result<()> {
        self.wait_frames_done(self.frames_asked, timeout)
    }

    /// Commits so far that asked the compositor to say when they are
    /// shown (frame callback or presentation feedback): the numbers
    /// [`Surface::wait_frames_done`] takes.
    pub fn frames_asked(&self) -> u64 {
        self.frames_asked
    }

    /// Wait (at most `timeout`, [`Error::Timeout`] after it) until the
    /// compositor has shown (or replaced) the first `target` frames asked
    /// ([`Surface::frames_asked`]), by the same signal as
    /// [`Surface::frames_done`].
    pub fn wait_frames_done(&mut self, target: u64, timeout: Duration) -> Result<()> {
        match (&mut self.presentation, self.frame_callbacks) {
            (Some(p), false) => {
                let r = p.wait_answered(target, timeout).map(drop);
                self.check_failed()?;
                r
            }
            _ => self.wait_until_within("a frame callback", timeout, |s| s.frames_done >= target),
        }
    }

    /// Like [`Surface::wait_frame`], but at most `patience`, and a callback
    /// that does not come in time (a hidden or occluded window gets none)
    /// is `Ok(false)`, not an error: FIFO pacing must never block a render
    /// thread without bound.
    pub fn wait_frame_within(&mut self, patience: Duration) -> Result<bool> {
        match self.wait_frame_for(patience) {
            Ok(()) => Ok(true),
            Err(Error::Timeout { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Wait (at most the surface's timeout) until the compositor released
    /// buffer `id`, then (explicit sync) until its release fence signals;
    /// the buffer is then [`BufferState::Free`].
    pub fn wait_release(&mut self, id: BufferId) -> Result<()> {
        self.wait_release_within(id, self.timeout)
    }

    /// [`Surface::wait_release`] bounded by `timeout` instead.
    pub fn wait_release_within(&mut self, id: BufferId, timeout: Duration) -> Result<()> {
        let b = self.buffer(id)?;
        if let (BufferState::WithCompositor, Some((t, point))) = (&b.state, b.release_point) {
            self.wait_point(t, point, timeout)?;
            self.buffer(id)?.state = BufferState::Free;
            return Ok(());
        }
        let mode = self.mode;
        self.wait_until_within("the buffer's release", timeout, |s| {
            released_by_event(&s.buffers[id.0], mode)
        })?;
        let b = self.buffer(id)?;
        if let BufferState::WithCompositor = b.state {
            b.state = match b.release_fence.take().flatten() {
                Some(fence) => BufferState::Releasing(fence),
                None => BufferState::Free,
            };
        }
        if let BufferState::Releasing(fence) = &b.state {
            fence
                .wait(Some(timeout))
                .map_err(|e| Error::Wayland(e.to_string()))?;
            b.state = BufferState::Free;
        }
        Ok(())
    }

    /// Like [`Surface::wait_release_within`], but the release fence (explicit
    /// sync) is handed to the caller instead of waited for on the CPU: the
    /// buffer is free once the compositor released it, and the caller
    /// must make its next write wait for the returned fence (e.g. a GPU
    /// semaphore wait), so that the CPU need not block on the compositor's
    /// GPU work. `None`: nothing to wait for (no fence, or one that has
    /// signalled by now).
    pub fn take_release_within(
        &mut self,
        id: BufferId,
        timeout: Duration,
    ) -> Result<Option<SyncFile>> {
        let b = self.buffer(id)?;
        if b.release_point.is_some() || self.mode != SyncMode::ExplicitSync {
            self.wait_release_within(id, timeout)?;
            return Ok(None);
        }
        self.wait_until_within("the buffer's release", timeout, |s| {
            released_by_event(&s.buffers[id.0], SyncMode::ExplicitSync)
        })?;
        let b = self.buffer(id)?;
        let fence = match std::mem::replace(&mut b.state, BufferState::Free) {
            BufferState::WithCompositor => b.release_fence.take().flatten(),
            BufferState::Releasing(f) => Some(f),
            BufferState::Free => None,
        };
        // One poll instead of an import and a wait on the GPU (usually a
        // dup, an import, a poll and closes): the compositor's work tends
        // to be done by the time its buffer comes back round.
        Ok(fence.filter(|f| !matches!(f.is_signaled(), Ok(true))))
    }

    /// The first of `ids` (in that order) that the compositor has
    /// released, waiting (at most `timeout`) until one is: it is then
    /// free, and (explicit sync) its release fence is handed over as by
    /// [`Surface::take_release_within`]. Whichever the compositor lets go
    /// of first is taken, not necessarily the oldest: a compositor showing
    /// the oldest one (MAILBOX replaces newer ones unseen) releases the
    /// others long before it.
    pub fn take_any_release_within(
        &mut self,
        ids: &[BufferId],
        timeout: Duration,
    ) -> Result<(BufferId, Option<SyncFile>)> {
        let what = "the release of any queued buffer";
        if ids.is_empty() {
            return Err(Error::Wayland("no buffers to wait for a release of".into()));
        }
        let deadline = Deadline::after(Some(timeout));
        let mut turn = 0;
        let mut waited = false;
        loop {
            // Emptied before the points are asked: one reached after this
            // wakes the poll below.
            self.drain_waker();
            // What was read already (the waits below read the socket).
            self.dispatch_pending()?;
            let mut ready = None;
            for &id in ids {
                if self.release_ready(id)? {
                    ready = Some(id);
                    break;
                }
            }
            if let Some(id) = ready {
                let b = self.buffer(id)?;
                if let Some((t, point)) = b.release_point {
                    // `release_ready` just saw its point signalled: free,
                    // with nothing left to wait for.
                    b.state = BufferState::Free;
                    self.reached(t, point);
                    return Ok((id, None));
                }
                let left = deadline.remaining().unwrap_or(timeout);
                return Ok((id, self.take_release_within(id, left)?));
            }
            // A wait that woke for something else past the deadline.
            if waited && deadline.passed() {
                return Err(Error::Timeout { what, timeout });
            }
            waited = true;
            // Each wait reads the socket at least once, also when no time
            // is left, and ends in Error::Timeout once the deadline passed.
            let left = deadline.remaining().unwrap_or(timeout);
            // drm-syncobj: the surface's eventfd, told of every release
            // point and polled with the socket; without it (before Linux
            // 6.6) bounded blocking waits on each point in turn.
            let points: Vec<(TimelineId, u64)> = ids
                .iter()
                .filter_map(|id| self.state.buffers.get(id.0)?.release_point)
                .collect();
            if points.is_empty() {
                let mode = self.mode;
                let ids = ids.to_vec();
                let r = super::dispatch_until(&mut self.queue, &mut self.state, what, left, |s| {
                    s.broken()
                        || ids
                            .iter()
                            .any(|id| released_by_event(&s.buffers[id.0], mode))
                });
                self.check_failed()?;
                r?;
                continue;
            }
            if !self.arm(&points) {
                // Turns of at most 5 ms on each point in order, so that a
                // later image released first is not missed.
                let (t, p) = points[turn % points.len()];
                turn += 1;
                let slice = left.min(Duration::from_millis(5));
                match self.wait_point(t, p, slice) {
                    Err(Error::Timeout { .. }) if !deadline.passed() => continue,
                    Err(Error::Timeout { .. }) => return Err(Error::Timeout { what, timeout }),
                    other => other?,
                }
                continue;
            }
            self.wait_waker(what, left)?;
        }
    }

    /// Whether buffer `id` may be taken back now without waiting: its
    /// release point signalled (drm-syncobj), or its release event (and,
    /// explicit sync, its release fence or immediate release) arrived.
    fn release_ready(&self, id: BufferId) -> Result<bool> {
        let b = self.buffer_ref(id)?;
        if !matches!(b.state, BufferState::WithCompositor) {
            return Ok(true);
        }
        match b.release_point {
            Some((t, point)) => {
                let value = self.timelines[t.0]
                    .0
                    .query()
                    .map_err(|e| Error::Wayland(e.to_string()))?;
                Ok(value >= point)
            }
            None => Ok(released_by_event(b, self.mode)),
        }
    }

    /// Wait (at most `timeout`) until `point` of timeline `t` signals,
    /// reading the compositor's messages meanwhile: the surface's eventfd
    /// polled with the socket, or (before Linux 6.6) a bounded blocking
    /// wait for the point.
    fn wait_point(&mut self, t: TimelineId, point: u64, timeout: Duration) -> Result<()> {
        let what = "the buffer's release point";
        let query = |s: &Self| {
            s.timelines[t.0]
                .0
                .query()
                .map_err(|e| Error::Wayland(e.to_string()))
        };
        self.drain_waker();
        if query(self)? >= point {
            self.reached(t, point);
            return Ok(());
        }
        if self.arm(&[(t, point)]) {
            let deadline = Deadline::after(Some(timeout));
            loop {
                let left = deadline.remaining().unwrap_or(timeout);
                match self.wait_waker(what, left) {
                    Err(Error::Timeout { .. }) => return Err(Error::Timeout { what, timeout }),
                    r => r?,
                }
                // The eventfd may have woken for another point: emptied,
                // then asked again.
                self.drain_waker();
                if query(self)? >= point {
                    self.reached(t, point);
                    return Ok(());
                }
                if deadline.passed() {
                    return Err(Error::Timeout { what, timeout });
                }
            }
        }
        self.dispatch_pending()?;
        self.timelines[t.0]
            .0
            .wait(point, WaitFor::SubmittedThenSignaled, Some(timeout))
            .map_err(|e| match e {
                crate::sync::Error::Timeout { .. } => Error::Timeout { what, timeout },
                e => Error::Wayland(e.to_string()),
            })
    }

    /// Tell the surface's eventfd (made on first use) of each of `points`
    /// not told yet (`DRM_IOCTL_SYNCOBJ_EVENTFD`). `false`: this kernel
    /// cannot (before Linux 6.6), or no eventfd could be made.
    fn arm(&mut self, points: &[(TimelineId, u64)]) -> bool {
        if self.no_waker {
            return false;
        }
        if self.waker.is_none() {
            let flags =
                rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK;
            match rustix::event::eventfd(0, flags) {
                Ok(fd) => {
                    self.waker = Some(Waker {
                        fd,
                        armed: Vec::new(),
                        fired: false,
                    })
                }
                Err(_) => return false,
            }
        }
        let Some(waker) = &mut self.waker else {
            return false;
        };
        for &(t, point) in points {
            if waker.armed.contains(&(t, point)) {
                continue;
            }
            match self.timelines[t.0]
                .0
                .notify(point, WaitFor::Signaled, waker.fd.as_fd())
            {
                Ok(()) => {}
                Err(_) => {
                    // On an eventfd of ours, the kernel's answer that it
                    // cannot (ENOTTY, or EINVAL for an unknown DRM ioctl
                    // before Linux 6.6): found once, not at every wait.
                    self.no_waker = true;
                    self.waker = None;
                    return false;
                }
            }
            // A timeline's points are reached in order: the older one
            // told of is reached first (and then fires unwatched).
            waker.armed.retain(|(u, _)| *u != t);
            waker.armed.push((t, point));
        }
        true
    }

    /// `point` of timeline `t` was seen reached: if the eventfd was told
    /// of it, it fired (or is about to), and is drained before its next
    /// poll.
    fn reached(&mut self, t: TimelineId, point: u64) {
        if let Some(waker) = &mut self.waker {
            let before = waker.armed.len();
            waker.armed.retain(|&(u, p)| u != t || p > point);
            waker.fired |= waker.armed.len() < before;
        }
    }

    /// Empty the surface's eventfd if it fired since it was last emptied.
    /// Only ever right before release points are asked, never between
    /// asking and polling: a point reached in between would be emptied
    /// away unseen, and the poll would sleep through it.
    fn drain_waker(&mut self) {
        if let Some(waker) = self.waker.as_mut().filter(|w| w.fired) {
            // Its counter back to 0; nothing else can fail on an eventfd
            // of ours (EAGAIN: it had not fired after all).
            let _ = rustix::io::read(&waker.fd, &mut [0u8; 8]);
            waker.fired = false;
        }
    }

    /// Poll the surface's eventfd ([`Surface::arm`]) with the socket, at
    /// most `timeout`, reading the compositor's messages meanwhile.
    fn wait_waker(&mut self, what: &'static str, timeout: Duration) -> Result<()> {
        let Some(waker) = &mut self.waker else {
            return Err(Error::Wayland(
                "no release point was told to the eventfd".into(),
            ));
        };
        super::dispatch_until_or(
            &mut self.queue,
            &mut self.state,
            what,
            timeout,
            |s| s.broken(),
            &[waker.fd.as_fd()],
        )?;
        // Done without a timeout: it is readable (or the surface broke).
        waker.fired = true;
        self.check_failed()
    }

    /// Give up this surface's objects of the per-`wl_surface` protocols —
    /// explicit sync, drm-syncobj (and its timelines), `wp_fifo_v1`,
    /// tearing control, the dma-buf feedback — each of which allows one
    /// per `wl_surface` at a time, so that a new `Surface` on the same
    /// `wl_surface` (a recreated swapchain) can make its own. Presents fail
    /// from then on ([`Error::Retired`]); the buffers stay until the
    /// `Surface` is dropped (the compositor may still show the last one).
    pub fn retire(&mut self) {
        if self.retired {
            return;
        }
        self.retired = true;
        if let Some(sync) = self.surface_sync.take() {
            sync.destroy();
        }
        if let Some((manager, sync)) = self.syncobj.take() {
            sync.destroy();
            for (_, t, _) in &self.timelines {
                t.destroy();
            }
            manager.destroy();
        }
        if let Some(fb) = self.surface_feedback.take() {
            fb.destroy();
        }
        if let Some((manager, fifo)) = self.fifo.take() {
            fifo.destroy();
            manager.destroy();
        }
        if let Some((manager, control)) = self.tearing.take() {
            control.destroy();
            manager.destroy();
        }
        let _ = self.conn.flush();
    }

    /// Whether [`Surface::retire`] was called.
    pub fn retired(&self) -> bool {
        self.retired
    }

    fn check_not_retired(&self) -> Result<()> {
        match self.retired {
            true => Err(Error::Retired),
            false => Ok(()),
        }
    }

    /// Whether the window is this surface's own toplevel (not the app's
    /// `wl_surface`).
    pub fn owns_window(&self) -> bool {
        self.role.is_some()
    }

    /// Take the buffer off the window (attach nothing, commit): the
    /// compositor then releases the buffer it showed. On a toplevel this
    /// unmaps it (the app's own surface would have to be configured
    /// again before its next buffer: see [`Surface::owns_window`]).
    pub fn detach(&mut self) -> Result<()> {
        self.surface.attach(None, 0, 0);
        self.surface.commit();
        self.queue.flush().map_err(Error::wayland)
    }

    /// Frames the compositor has called back for (without frame
    /// callbacks: whose presentation feedback arrived, presented or
    /// discarded).
    pub fn frames_done(&self) -> u64 {
        match (&self.presentation, self.frame_callbacks) {
            (Some(p), false) => {
                let s = p.known();
                s.presented + s.discarded
            }
            _ => self.state.frames_done,
        }
    }

    /// The size the compositor last configured the window to, if it named
    /// one (`None`: the client chooses).
    pub fn configured_size(&mut self) -> Result<Option<(u32, u32)>> {
        self.dispatch_pending()?;
        Ok(match self.state.size {
            (w, h) if w > 0 && h > 0 => Some((w as u32, h as u32)),
            _ => None,
        })
    }

    /// Whether the compositor's feedback for this surface changed since
    /// its first round (linux-dmabuf v4+): buffers allocated for the old one
    /// may no longer be the best (or importable) choice.
    pub fn feedback_changed(&mut self) -> Result<bool> {
        self.dispatch_pending()?;
        Ok(self.state.feedback_changed)
    }

    /// Whether the compositor asked to close the window.
    pub fn closed(&self) -> bool {
        self.state.closed
    }

    fn dispatch_pending(&mut self) -> Result<()> {
        self.queue
            .dispatch_pending(&mut self.state)
            .map_err(Error::dispatch)?;
        // Presentation answers read meanwhile too (frames_done counts them
        // where commits ask for no frame callbacks).
        if let Some(p) = &mut self.presentation {
            p.dispatch_pending()?;
        }
        self.check_failed()
    }

    fn wait_until_within(
        &mut self,
        what: &'static str,
        timeout: Duration,
        done: impl Fn(&State) -> bool,
    ) -> Result<()> {
        // A failure read meanwhile ends the wait: it is the answer.
        let done = |s: &State| s.broken() || done(s);
        super::dispatch_until(&mut self.queue, &mut self.state, what, timeout, done)?;
        self.check_failed()
    }
}

impl Drop for Surface {
    fn drop(&mut self) {
        // Role objects before the surface (wl_surface v6: defunct_role_object),
        // and the wm_base too, so no ping goes unanswered on a connection
        // that outlives this surface.
        if let Some(sync) = &self.surface_sync {
            sync.destroy();
        }
        if let Some((manager, sync)) = &self.syncobj {
            sync.destroy();
            for (_, t, _) in &self.timelines {
                t.destroy();
            }
            manager.destroy();
        }
        self.presentation = None;
        if let Some(fb) = &self.surface_feedback {
            fb.destroy();
        }
        if let Some((manager, fifo)) = &self.fifo {
            fifo.destroy();
            manager.destroy();
        }
        if let Some((manager, control)) = &self.tearing {
            control.destroy();
            manager.destroy();
        }
        if let Some(role) = &self.role {
            role.toplevel.destroy();
            role.xdg.destroy();
        }
        for b in &self.state.buffers {
            b.wl.destroy();
        }
        if let Some(role) = &self.role {
            self.surface.destroy();
            role.wm.destroy();
        }
        if let Some(dmabuf) = &self.dmabuf {
            dmabuf.destroy();
        }
        // Nothing this surface made hears anything more on its queue, and
        // what it heard so far is taken (a release fence closed).
        self.owner.leave(&mut self.queue, &mut self.state);
        let _ = self.conn.flush();
    }
}

/// A wl_shm format: its code on the wire and its bytes per pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ShmFormat {
    code: wl_shm::Format,
    cpp: u32,
}

impl ShmFormat {
    const XRGB8888: ShmFormat = ShmFormat {
        code: wl_shm::Format::Xrgb8888,
        cpp: 4,
    };
}

/// The wl_shm code of `format` (wl_shm's own for the two every compositor
/// takes, ARGB8888 and XRGB8888; the DRM code for the rest) and its bytes
/// per pixel: formats of one plane whose layout winsys knows; others:
/// [`Error::Wayland`] naming the format. Whether the compositor takes it
/// is its own list's to say ([`Report::shm_formats`](super::probe::Report::shm_formats)).
pub(crate) fn shm_format(format: Fourcc) -> Result<ShmFormat> {
    let refuse = |why: &str| {
        Err(Error::Wayland(format!(
            "no wl_shm buffers of {format}: {why}"
        )))
    };
    let cpp = match format.planes() {
        Some([plane]) => plane.cpp,
        Some(_) => return refuse("more than one plane"),
        None => return refuse("a layout winsys does not know"),
    };
    let code = match format {
        Fourcc::XRGB8888 => wl_shm::Format::Xrgb8888,
        Fourcc::ARGB8888 => wl_shm::Format::Argb8888,
        other => match wl_shm::Format::try_from(other.0) {
            Ok(code) => code,
            Err(()) => return refuse("not a wl_shm format"),
        },
    };
    Ok(ShmFormat { code, cpp })
}

/// `(stride, size)` of a wl_shm buffer of `height` rows of `stride` bytes
/// (at least `width` pixels of `cpp` bytes), each within an `i32`.
fn shm_layout(width: u32, height: u32, stride: u64, cpp: u32) -> Result<(i32, i32)> {
    if width == 0 || height == 0 {
        return Err(Error::Wayland("an empty wl_shm buffer".into()));
    }
    if stride < u64::from(width) * u64::from(cpp) {
        return Err(Error::Wayland(format!(
            "a stride of {stride} bytes for {width} pixels of {cpp}"
        )));
    }
    let too_big = || Error::Wayland(format!("a {width}x{height} wl_shm buffer is too large"));
    let stride = i32::try_from(stride).map_err(|_| too_big())?;
    let size = i32::try_from(i64::from(stride) * i64::from(height)).map_err(|_| too_big())?;
    Ok((stride, size))
}

/// `pwrite` all of `buf` at `offset` (a short write goes on).
fn pwrite_all(fd: &OwnedFd, mut buf: &[u8], mut offset: u64) -> rustix::io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::pwrite(fd, buf, offset)? {
            0 => return Err(rustix::io::Errno::IO),
            n => {
                buf = &buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// Whether the compositor's events released `b` (not through a timeline
/// point): `wl_buffer.release`, and with explicit sync also the release
/// object's answer (fenced or immediate).
fn released_by_event(b: &Buffer, mode: SyncMode) -> bool {
    match b.state {
        BufferState::WithCompositor => {
            b.released && (mode != SyncMode::ExplicitSync || b.release_fence.is_some())
        }
        _ => true,
    }
}

impl State {
    /// Whether a call must fail ([`Surface::check_failed`]'s errors): a
    /// wait ends on it.
    fn broken(&self) -> bool {
        self.failed.is_some() || self.refused.is_some()
    }
}

/// User data of frame callbacks (told apart from sync callbacks).
struct FrameCallback;

impl Dispatch<wl_callback::WlCallback, FrameCallback> for State {
    fn event(
        state: &mut Self,
        _: &wl_callback::WlCallback,
        event: wl_callback::Event,
        _: &FrameCallback,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_callback::Event::Done { .. } = event {
            state.frames_done += 1;
        }
    }
}

impl Dispatch<wl_surface::WlSurface, ()> for State {
    fn event(
        _: &mut Self,
        _: &wl_surface::WlSurface,
        _: wl_surface::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
    }
}

impl Dispatch<xdg_wm_base::XdgWmBase, ()> for State {
    fn event(
        _: &mut Self,
        wm: &xdg_wm_base::XdgWmBase,
        event: xdg_wm_base::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let xdg_wm_base::Event::Ping { serial } = event {
            wm.pong(serial);
        }
    }
}

impl Dispatch<xdg_surface::XdgSurface, ()> for State {
    fn event(
        state: &mut Self,
        xdg: &xdg_surface::XdgSurface,
        event: xdg_surface::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let xdg_surface::Event::Configure { serial } = event {
            xdg.ack_configure(serial);
            state.configured = true;
        }
    }
}

impl Dispatch<xdg_toplevel::XdgToplevel, ()> for State {
    fn event(
        state: &mut Self,
        _: &xdg_toplevel::XdgToplevel,
        event: xdg_toplevel::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        match event {
            xdg_toplevel::Event::Close => state.closed = true,
            xdg_toplevel::Event::Configure { width, height, .. } => state.size = (width, height),
            _ => {}
        }
    }
}

impl Dispatch<wl_buffer::WlBuffer, BufferId> for State {
    fn event(
        state: &mut Self,
        _: &wl_buffer::WlBuffer,
        event: wl_buffer::Event,
        id: &BufferId,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_buffer::Event::Release = event {
            if let Some(b) = state.buffers.get_mut(id.0) {
                b.released = true;
            }
        }
    }
}

impl Dispatch<params_v1::ZwpLinuxBufferParamsV1, ()> for State {
    fn event(
        state: &mut Self,
        _: &params_v1::ZwpLinuxBufferParamsV1,
        event: params_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let (params_v1::Event::Failed, None) = (event, &state.failed) {
            state.failed = Some(Error::Wayland(
                "the compositor refused the dma-buf (zwp_linux_buffer_params_v1.failed)".into(),
            ));
        }
    }
}

impl Dispatch<release_v1::ZwpLinuxBufferReleaseV1, BufferId> for State {
    fn event(
        state: &mut Self,
        _: &release_v1::ZwpLinuxBufferReleaseV1,
        event: release_v1::Event,
        id: &BufferId,
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        let fence = match event {
            // A fence already signalled is as good as an immediate release:
            // dropped here, it costs no import, wait or fd later (the check
            // that it is a sync_file read its state).
            release_v1::Event::FencedRelease { fence } => {
                match SyncFile::from_fd_with_status(fence) {
                    Ok((f, FenceStatus::Active)) => Some(f),
                    Ok(_) => None,
                    Err(source) => {
                        // Nothing tells when the compositor is done with
                        // the buffer: it stays the compositor's (never
                        // reused), and every later call fails.
                        state.refused.get_or_insert((id.0, source));
                        return;
                    }
                }
            }
            _ => None,
        };
        if let Some(b) = state.buffers.get_mut(id.0) {
            b.release_fence = Some(fence);
        }
    }
}

impl Dispatch<feedback_v1::ZwpLinuxDmabufFeedbackV1, ()> for State {
    fn event(
        state: &mut Self,
        _: &feedback_v1::ZwpLinuxDmabufFeedbackV1,
        event: feedback_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let Some(round) = state.feedback.feed(event) {
            match &state.first_feedback {
                None => state.first_feedback = Some(round),
                Some(first) if *first != round => state.feedback_changed = true,
                Some(_) => {}
            }
        }
    }
}

macro_rules! no_events {
    ($($t:ty),+) => {$(
        impl Dispatch<$t, ()> for State {
            fn event(_: &mut Self, _: &$t, _: <$t as wayland_client::Proxy>::Event, _: &(), _: &Connection, _: &QueueHandle<Self>) {}
        }
    )+};
}

no_events!(
    wl_compositor::WlCompositor,
    wl_shm::WlShm,
    wl_shm_pool::WlShmPool,
    dmabuf_v1::ZwpLinuxDmabufV1,
    explicit_v1::ZwpLinuxExplicitSynchronizationV1,
    surface_sync_v1::ZwpLinuxSurfaceSynchronizationV1,
    syncobj_manager_v1::WpLinuxDrmSyncobjManagerV1,
    syncobj_surface_v1::WpLinuxDrmSyncobjSurfaceV1,
    syncobj_timeline_v1::WpLinuxDrmSyncobjTimelineV1,
    wp_fifo_manager_v1::WpFifoManagerV1,
    wp_fifo_v1::WpFifoV1,
    tearing_manager_v1::WpTearingControlManagerV1,
    tearing_v1::WpTearingControlV1
);

super::registry_state!(State);

#[cfg(test)]
mod tests {
    use super::{shm_format, shm_layout, wl_shm, Fourcc};
    use crate::wayland::Error;

    #[test]
    fn shm_formats_are_wl_shms_codes_with_their_pixel_sizes() {
        let code = |f: Fourcc| shm_format(f).map(|s| (s.code, s.cpp));
        // wl_shm's own codes for the two required formats, DRM's for the rest.
        assert_eq!(
            code(Fourcc::XRGB8888).unwrap(),
            (wl_shm::Format::Xrgb8888, 4)
        );
        assert_eq!(
            code(Fourcc::ARGB8888).unwrap(),
            (wl_shm::Format::Argb8888, 4)
        );
        assert_eq!(
            code(Fourcc::ABGR8888).unwrap(),
            (wl_shm::Format::Abgr8888, 4)
        );
        assert_eq!(code(Fourcc::RGB565).unwrap(), (wl_shm::Format::Rgb565, 2));
        assert_eq!(
            code(Fourcc::RGBA5551).unwrap(),
            (wl_shm::Format::Rgba5551, 2)
        );
        assert_eq!(
            code(Fourcc::XBGR16161616F).unwrap(),
            (wl_shm::Format::Xbgr16161616f, 8)
        );
        assert_eq!(Fourcc::ABGR8888.0, wl_shm::Format::Abgr8888 as u32);
        for (f, why) in [
            (Fourcc::NV12, "more than one plane"),
            (Fourcc(0x1234_5678), "layout winsys does not know"),
        ] {
            let e = shm_format(f).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(&f.to_string()), "{e}");
        }
    }

    #[test]
    fn shm_layout_takes_padded_rows_and_refuses_what_wl_shm_cannot_hold() {
        assert_eq!(shm_layout(256, 256, 1024, 4).unwrap(), (1024, 256 * 1024));
        // A padded stride (as a driver's LINEAR layout may have).
        assert_eq!(shm_layout(100, 10, 512, 4).unwrap(), (512, 5120));
        assert_eq!(shm_layout(100, 10, 800, 8).unwrap(), (800, 8000));
        let refused = |r: Result<(i32, i32), Error>, what: &str| match r {
            Err(Error::Wayland(m)) => assert!(m.contains(what), "{m}"),
            other => panic!("{other:?}"),
        };
        refused(shm_layout(0, 10, 0, 4), "empty");
        refused(shm_layout(10, 0, 40, 4), "empty");
        refused(shm_layout(100, 10, 399, 4), "stride of 399");
        refused(shm_layout(100, 10, 799, 8), "pixels of 8");
        // Past i32: the stride, and the whole buffer.
        refused(shm_layout(1, 1, 1 << 31, 4), "too large");
        refused(shm_layout(16384, 65536, 65536, 4), "too large");
    }
}
