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
//! [`SyncMode::DrmSyncobj`] is not here yet.
//!
//! [`Dmabuf::attach_fence`]: crate::dmabuf::Dmabuf::attach_fence

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use wayland_client::protocol::{
    wl_buffer, wl_callback, wl_compositor, wl_registry, wl_shm, wl_shm_pool, wl_surface,
};
use wayland_client::{Connection, Dispatch, EventQueue, QueueHandle};
use wayland_protocols::wp::linux_dmabuf::zv1::client::{
    zwp_linux_buffer_params_v1 as params_v1, zwp_linux_dmabuf_v1 as dmabuf_v1,
};
use wayland_protocols::wp::linux_explicit_synchronization::zv1::client::{
    zwp_linux_buffer_release_v1 as release_v1,
    zwp_linux_explicit_synchronization_v1 as explicit_v1,
    zwp_linux_surface_synchronization_v1 as surface_sync_v1,
};
use wayland_protocols::xdg::shell::client::{xdg_surface, xdg_toplevel, xdg_wm_base};

use super::sync::SyncMode;
use super::{roundtrip, Error, HasRegistry, Registry, Result};
use crate::dmabuf::Dmabuf;
use crate::sync::{Deadline, SyncFile};

/// A buffer of a [`Surface`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BufferId(usize);

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
    /// (`Some(None)`: immediate release).
    release_fence: Option<Option<SyncFile>>,
    dmabuf: bool,
    /// wl_shm: the pool's memfd and the bytes of the buffer.
    shm: Option<(OwnedFd, usize)>,
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
    failed: Option<String>,
}

/// A toplevel window presenting buffers in one [`SyncMode`].
pub struct Surface {
    conn: Connection,
    queue: EventQueue<State>,
    state: State,
    qh: QueueHandle<State>,
    surface: wl_surface::WlSurface,
    _xdg_surface: xdg_surface::XdgSurface,
    _toplevel: xdg_toplevel::XdgToplevel,
    wm: xdg_wm_base::XdgWmBase,
    dmabuf: Option<dmabuf_v1::ZwpLinuxDmabufV1>,
    shm: Option<wl_shm::WlShm>,
    surface_sync: Option<surface_sync_v1::ZwpLinuxSurfaceSynchronizationV1>,
    mode: SyncMode,
    timeout: Duration,
    frames_asked: u64,
}

impl Surface {
    /// A toplevel titled `title` on `conn`'s compositor for `mode`, bound
    /// to the globals that mode needs ([`Error::MissingGlobal`] if one is
    /// absent) and configured by the compositor; every wait for the
    /// compositor is bounded by `timeout`.
    pub fn new(conn: &Connection, title: &str, mode: SyncMode, timeout: Duration) -> Result<Self> {
        let mut queue: EventQueue<State> = conn.new_event_queue();
        let qh = queue.handle();
        let mut state = State::default();
        let registry = conn.display().get_registry(&qh, ());
        roundtrip(conn, &mut queue, &mut state, timeout)?;
        let global = |state: &State, name: &'static str, max: u32| state.reg.global(name, max);
        let need = |g: Option<(u32, u32)>, name: &'static str| g.ok_or(Error::MissingGlobal(name));
        let (n, v) = need(global(&state, "wl_compositor", 4), "wl_compositor")?;
        let compositor: wl_compositor::WlCompositor = registry.bind(n, v, &qh, ());
        let (n, v) = need(global(&state, "xdg_wm_base", 2), "xdg_wm_base")?;
        let wm: xdg_wm_base::XdgWmBase = registry.bind(n, v, &qh, ());
        let dmabuf = match mode {
            SyncMode::Shm => None,
            _ => {
                let (n, v) = need(
                    global(&state, "zwp_linux_dmabuf_v1", 3),
                    "zwp_linux_dmabuf_v1",
                )?;
                if v < 2 {
                    return Err(Error::MissingGlobal("zwp_linux_dmabuf_v1 version 2"));
                }
                Some(registry.bind::<dmabuf_v1::ZwpLinuxDmabufV1, _, _>(n, v, &qh, ()))
            }
        };
        let shm = match global(&state, "wl_shm", 1) {
            Some((n, v)) => Some(registry.bind::<wl_shm::WlShm, _, _>(n, v, &qh, ())),
            None if mode == SyncMode::Shm => return Err(Error::MissingGlobal("wl_shm")),
            None => None,
        };
        let surface = compositor.create_surface(&qh, ());
        let surface_sync = match mode {
            SyncMode::ExplicitSync => {
                let (n, v) = need(
                    global(&state, "zwp_linux_explicit_synchronization_v1", 2),
                    "zwp_linux_explicit_synchronization_v1",
                )?;
                let ex: explicit_v1::ZwpLinuxExplicitSynchronizationV1 =
                    registry.bind(n, v, &qh, ());
                Some(ex.get_synchronization(&surface, &qh, ()))
            }
            SyncMode::DrmSyncobj => {
                return Err(Error::Wayland(
                    "drm-syncobj presentation is not implemented yet".into(),
                ))
            }
            _ => None,
        };
        let xdg = wm.get_xdg_surface(&surface, &qh, ());
        let toplevel = xdg.get_toplevel(&qh, ());
        toplevel.set_title(title.into());
        surface.commit();
        let deadline = Deadline::after(Some(timeout));
        while !state.configured {
            let left = deadline.remaining().unwrap_or(timeout);
            if left.is_zero() {
                return Err(Error::Timeout {
                    what: "the first xdg_surface.configure",
                    timeout,
                });
            }
            roundtrip(conn, &mut queue, &mut state, left)?;
        }
        Ok(Surface {
            conn: conn.clone(),
            queue,
            state,
            qh,
            surface,
            _xdg_surface: xdg,
            _toplevel: toplevel,
            wm,
            dmabuf,
            shm,
            surface_sync,
            mode,
            timeout,
            frames_asked: 0,
        })
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
            shm: None,
        });
        // A refusal arrives as a `failed` event (on the live params object)
        // or a protocol error.
        let answered = roundtrip(&self.conn, &mut self.queue, &mut self.state, self.timeout);
        params.destroy();
        answered?;
        self.check_failed()?;
        Ok(id)
    }

    /// A wl_shm buffer of `width` x `height` XRGB8888 in its own memfd
    /// pool; fill it with [`Surface::write_shm`].
    pub fn add_shm(&mut self, width: u32, height: u32) -> Result<BufferId> {
        let shm = self.shm.as_ref().ok_or(Error::MissingGlobal("wl_shm"))?;
        let stride = width as usize * 4;
        let size = stride * height as usize;
        let memfd = rustix::fs::memfd_create("winsys-shm", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|errno| Error::Io {
                op: "memfd_create",
                errno,
            })?;
        rustix::fs::ftruncate(&memfd, size as u64).map_err(|errno| Error::Io {
            op: "ftruncate(shm pool)",
            errno,
        })?;
        let pool = shm.create_pool(memfd.as_fd(), size as i32, &self.qh, ());
        let id = BufferId(self.state.buffers.len());
        let wl = pool.create_buffer(
            0,
            width as i32,
            height as i32,
            stride as i32,
            wl_shm::Format::Xrgb8888,
            &self.qh,
            id,
        );
        pool.destroy();
        self.state.buffers.push(Buffer {
            wl,
            state: BufferState::Free,
            released: false,
            release_fence: None,
            dmabuf: false,
            shm: Some((memfd, size)),
        });
        Ok(id)
    }

    /// Write `bytes` (XRGB8888 rows, packed) into a free wl_shm buffer.
    pub fn write_shm(&mut self, id: BufferId, bytes: &[u8]) -> Result<()> {
        let b = self.buffer(id)?;
        if !matches!(b.state, BufferState::Free) {
            return Err(Error::BufferBusy(id.0));
        }
        let Some((fd, size)) = &b.shm else {
            return Err(Error::Wayland(format!("buffer {} is not wl_shm", id.0)));
        };
        if bytes.len() != *size {
            return Err(Error::Wayland(format!(
                "{} bytes for a wl_shm buffer of {size}",
                bytes.len()
            )));
        }
        let n = rustix::io::pwrite(fd, bytes, 0).map_err(|errno| Error::Io {
            op: "pwrite(shm pool)",
            errno,
        })?;
        if n != bytes.len() {
            return Err(Error::Io {
                op: "pwrite(shm pool)",
                errno: rustix::io::Errno::IO,
            });
        }
        Ok(())
    }

    /// The state of buffer `id`.
    pub fn state(&self, id: BufferId) -> Option<&BufferState> {
        self.state.buffers.get(id.0).map(|b| &b.state)
    }

    fn buffer(&mut self, id: BufferId) -> Result<&mut Buffer> {
        self.state
            .buffers
            .get_mut(id.0)
            .ok_or(Error::Wayland(format!("no buffer {}", id.0)))
    }

    fn check_failed(&mut self) -> Result<()> {
        match self.state.failed.take() {
            Some(why) => Err(Error::Wayland(why)),
            None => Ok(()),
        }
    }

    /// Show buffer `id` (whole-surface damage, a frame callback, commit).
    /// Explicit sync: `acquire` is the fence the compositor waits for
    /// before reading; `None` when the contents are complete already (the
    /// compositor then treats this commit as implicitly synchronized), and
    /// a release is asked for either way. Other modes: must be `None` (the
    /// fence is in the dma-buf, or the CPU wrote an shm buffer).
    ///
    /// [`Error::BufferBusy`] if the compositor still holds the buffer (or
    /// its release fence has not been waited for): a buffer is never
    /// handed over twice.
    pub fn present(&mut self, id: BufferId, acquire: Option<SyncFile>) -> Result<()> {
        self.dispatch_pending()?;
        let mode = self.mode;
        let qh = self.qh.clone();
        let b = self.buffer(id)?;
        if !matches!(b.state, BufferState::Free) {
            return Err(Error::BufferBusy(id.0));
        }
        match (mode, acquire, b.dmabuf) {
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
                sync.get_release(&qh, id);
            }
            (_, Some(_), _) => {
                return Err(Error::Wayland(format!(
                    "{mode} sync takes no acquire fence (it is in the dma-buf)"
                )))
            }
            (_, None, _) => {}
        }
        let b = self.buffer(id)?;
        b.state = BufferState::WithCompositor;
        b.released = false;
        b.release_fence = None;
        let wl = b.wl.clone();
        self.surface.attach(Some(&wl), 0, 0);
        self.surface.damage_buffer(0, 0, i32::MAX, i32::MAX);
        self.surface.frame(&self.qh, FrameCallback);
        self.frames_asked += 1;
        self.surface.commit();
        self.queue.flush().map_err(Error::wayland)?;
        Ok(())
    }

    /// Wait (at most the surface's timeout) until the compositor has shown
    /// every frame presented so far (frame callbacks).
    pub fn wait_frame(&mut self) -> Result<()> {
        let target = self.frames_asked;
        self.wait_until("a frame callback", |s| s.frames_done >= target)
    }

    /// Like [`Surface::wait_frame`], but at most `patience`, and a callback
    /// that does not come in time (a hidden or occluded window gets none)
    /// is `Ok(false)`, not an error: FIFO pacing must never block a render
    /// thread without bound.
    pub fn wait_frame_within(&mut self, patience: Duration) -> Result<bool> {
        let target = self.frames_asked;
        match self.wait_until_within("a frame callback", patience, |s| s.frames_done >= target) {
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
        self.buffer(id)?;
        let mode = self.mode;
        let explicit = mode == SyncMode::ExplicitSync;
        self.wait_until_within("the buffer's release", timeout, |s| {
            let b = &s.buffers[id.0];
            match b.state {
                BufferState::WithCompositor => {
                    b.released && (!explicit || b.release_fence.is_some())
                }
                _ => true,
            }
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

    /// Take the buffer off the window (attach nothing, commit): the
    /// compositor then releases the buffer it showed.
    pub fn detach(&mut self) -> Result<()> {
        self.surface.attach(None, 0, 0);
        self.surface.commit();
        self.queue.flush().map_err(Error::wayland)
    }

    /// Frames the compositor has called back for.
    pub fn frames_done(&self) -> u64 {
        self.state.frames_done
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

    /// Whether the compositor asked to close the window.
    pub fn closed(&self) -> bool {
        self.state.closed
    }

    fn dispatch_pending(&mut self) -> Result<()> {
        self.queue
            .dispatch_pending(&mut self.state)
            .map_err(Error::dispatch)?;
        self.check_failed()
    }

    fn wait_until(&mut self, what: &'static str, done: impl Fn(&State) -> bool) -> Result<()> {
        self.wait_until_within(what, self.timeout, done)
    }

    fn wait_until_within(
        &mut self,
        what: &'static str,
        timeout: Duration,
        done: impl Fn(&State) -> bool,
    ) -> Result<()> {
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
        self._toplevel.destroy();
        self._xdg_surface.destroy();
        for b in &self.state.buffers {
            b.wl.destroy();
        }
        self.surface.destroy();
        self.wm.destroy();
        let _ = self.conn.flush();
    }
}

impl HasRegistry for State {
    fn registry(&self) -> &Registry {
        &self.reg
    }
}

impl Dispatch<wl_registry::WlRegistry, ()> for State {
    fn event(
        state: &mut Self,
        _: &wl_registry::WlRegistry,
        event: wl_registry::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        state.reg.on_registry(event);
    }
}

/// `wl_display.sync` callbacks carry `()`; frame callbacks [`FrameCallback`].
impl Dispatch<wl_callback::WlCallback, ()> for State {
    fn event(
        state: &mut Self,
        _: &wl_callback::WlCallback,
        event: wl_callback::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        state.reg.on_sync(event);
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
        if let params_v1::Event::Failed = event {
            state.failed = Some(
                "the compositor refused the dma-buf (zwp_linux_buffer_params_v1.failed)".into(),
            );
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
            release_v1::Event::FencedRelease { fence } => SyncFile::from_fd(fence).ok(),
            _ => None,
        };
        if let Some(b) = state.buffers.get_mut(id.0) {
            b.release_fence = Some(fence);
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
    surface_sync_v1::ZwpLinuxSurfaceSynchronizationV1
);
