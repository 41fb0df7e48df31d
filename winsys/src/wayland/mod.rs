//! The Wayland client side (feature `wayland`, `wayland-client`): what a
//! compositor offers and how a client should share buffers and fences with
//! it.
//!
//! - [`probe`](fn@probe): a compositor's globals and its linux-dmabuf
//!   feedback, every wait bounded;
//! - [`feedback`]: the feedback parsed and validated (format table, main
//!   device, tranches), and the pick of format + modifier for a client;
//! - [`sync`]: the sync mode, best first — drm-syncobj timelines, explicit
//!   sync_files, implicit fences in the dma-buf, wl_shm (for FIFO on a
//!   compositor that composes on the CPU, wl_shm right after drm-syncobj)
//!   — or forced.
//!
//! - [`surface`]: a toplevel window presenting dma-buf or wl_shm buffers
//!   in one sync mode, each buffer's state explicit, never reused before
//!   its release.
//!
//! The Vulkan swapchain builds on these.
//!
//! ```no_run
//! use std::time::Duration;
//! use winsys::wayland::{self, sync::{self, Abilities}};
//!
//! let conn = wayland::connect(None)?;
//! let report = wayland::probe(&conn, Duration::from_secs(5))?;
//! let can = Abilities { timeline_syncobj: false, sync_file: true, dmabuf: true };
//! let mode = sync::choose(&report.offer(), &can, None)?;
//! println!("would present with {mode}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Duration;

use rustix::io::Errno;

/// [`HasRegistry`] and the `wl_registry` / `wl_display.sync` events for
/// an event state whose `reg` field is its [`Registry`]: the same three
/// impls every state here needs.
macro_rules! registry_state {
    ($state:ty) => {
        impl $crate::wayland::HasRegistry for $state {
            fn registry(&self) -> &$crate::wayland::Registry {
                &self.reg
            }
        }

        impl wayland_client::Dispatch<wayland_client::protocol::wl_registry::WlRegistry, ()>
            for $state
        {
            fn event(
                state: &mut Self,
                _: &wayland_client::protocol::wl_registry::WlRegistry,
                event: wayland_client::protocol::wl_registry::Event,
                _: &(),
                _: &wayland_client::Connection,
                _: &wayland_client::QueueHandle<Self>,
            ) {
                state.reg.on_registry(event);
            }
        }

        /// `wl_display.sync` callbacks carry `()`.
        impl wayland_client::Dispatch<wayland_client::protocol::wl_callback::WlCallback, ()>
            for $state
        {
            fn event(
                state: &mut Self,
                _: &wayland_client::protocol::wl_callback::WlCallback,
                event: wayland_client::protocol::wl_callback::Event,
                _: &(),
                _: &wayland_client::Connection,
                _: &wayland_client::QueueHandle<Self>,
            ) {
                state.reg.on_sync(event);
            }
        }
    };
}
pub(crate) use registry_state;

pub mod feedback;
mod owner;
pub mod presentation;
mod probe;
pub mod surface;
#[cfg(feature = "vulkan")]
pub mod swapchain;
pub mod sync;

pub use probe::{connect, probe, GlobalInfo, Report};

/// A connection over the app's own `wl_display` (a guest backend: winsys
/// talks on event queues of its own and never closes the display), from
/// the raw handle that windowing libraries and `VkWaylandSurfaceCreateInfoKHR`
/// give (feature `raw-window-handle`). Another kind of handle:
/// [`Error::Wayland`].
///
/// # Safety
///
/// The `wl_display` must stay valid while the connection and everything
/// made on it live, and must come from the libwayland-client this process
/// loads (the one winsys dlopens).
#[cfg(feature = "raw-window-handle")]
pub unsafe fn connection_from_raw(
    display: raw_window_handle::RawDisplayHandle,
) -> Result<wayland_client::Connection> {
    let raw_window_handle::RawDisplayHandle::Wayland(d) = display else {
        return Err(Error::Wayland(
            "the raw display handle is not a Wayland display".into(),
        ));
    };
    // SAFETY: the caller guarantees a live wl_display of this process's
    // libwayland-client for as long as the connection lives.
    let backend = unsafe {
        wayland_client::backend::Backend::from_foreign_display(d.display.as_ptr().cast())
    };
    Ok(wayland_client::Connection::from_backend(backend))
}

/// Errors of the Wayland side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The compositor's socket could not be reached.
    #[error("cannot connect to the Wayland compositor at {socket}: {why}")]
    Connect {
        /// The socket path or name.
        socket: String,
        /// Why.
        why: String,
    },
    /// The connection failed or the compositor sent a protocol error.
    #[error("Wayland connection: {0}")]
    Wayland(String),
    /// The compositor did not answer in time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// The bound.
        timeout: Duration,
    },
    /// A system call failed.
    #[error("{op} failed: {errno}")]
    Io {
        /// The call.
        op: &'static str,
        /// The errno.
        errno: Errno,
    },
    /// The compositor lacks a global the operation needs.
    #[error("the compositor offers no {0}")]
    MissingGlobal(&'static str),
    /// The surface (or swapchain) was retired: a newer one on the same
    /// `wl_surface` took over the per-surface protocol objects.
    #[error("retired: a newer swapchain took over the surface")]
    Retired,
    /// A buffer the compositor still holds (or whose release fence has not
    /// been waited for) was to be written or presented again.
    #[error("buffer {0} is still with the compositor")]
    BufferBusy(usize),
    /// A swapchain image used out of turn (e.g. presented without being
    /// acquired).
    #[cfg(feature = "vulkan")]
    #[error("swapchain image {index} is {state:?}; {wanted} needs otherwise")]
    ImageState {
        /// The image.
        index: usize,
        /// Where it is.
        state: swapchain::ImageState,
        /// What was asked.
        wanted: &'static str,
    },
    /// A Vulkan operation of the swapchain failed.
    #[cfg(feature = "vulkan")]
    #[error("Vulkan: {0}")]
    Vulkan(Box<crate::vulkan::Error>),
    /// The compositor's feedback was malformed.
    #[error(transparent)]
    Feedback(#[from] feedback::FeedbackError),
    /// A CPU access to an image's dma-buf failed (the wl_shm copy).
    #[error(transparent)]
    Dmabuf(#[from] crate::dmabuf::Error),
    /// The sync mode asked for is not available.
    #[error(transparent)]
    Unavailable(#[from] sync::Unavailable),
    /// The compositor's release fence for a buffer
    /// (`zwp_linux_buffer_release_v1.fenced_release`) is not a sync_file:
    /// nothing tells when it is done reading, so the buffer stays its own,
    /// and every later call on the surface fails with this error.
    #[error("the compositor's release fence for buffer {buffer} is unusable: {source}")]
    BadReleaseFence {
        /// The buffer ([`surface::BufferId`]'s index).
        buffer: usize,
        /// Why the fd was refused (e.g. not a sync_file).
        source: crate::sync::Error,
    },
}

impl Error {
    fn wayland(e: impl std::fmt::Display) -> Error {
        Error::Wayland(e.to_string())
    }

    fn dispatch(e: wayland_client::DispatchError) -> Error {
        Error::Wayland(e.to_string())
    }
}

/// Result of the Wayland side.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The registry's globals and the count of answered `wl_display.sync`s:
/// the part of every event state here that talks to the registry.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub(crate) globals: Vec<GlobalInfo>,
    pub(crate) synced: u32,
}

impl Registry {
    /// A `wl_registry` event.
    pub(crate) fn on_registry(&mut self, event: wayland_client::protocol::wl_registry::Event) {
        use wayland_client::protocol::wl_registry::Event;
        match event {
            Event::Global {
                name,
                interface,
                version,
            } => self.globals.push(GlobalInfo {
                name,
                interface,
                version,
            }),
            Event::GlobalRemove { name } => self.globals.retain(|g| g.name != name),
            _ => {}
        }
    }

    /// A `wl_callback` event of a `wl_display.sync`.
    pub(crate) fn on_sync(&mut self, event: wayland_client::protocol::wl_callback::Event) {
        if let wayland_client::protocol::wl_callback::Event::Done { .. } = event {
            self.synced += 1;
        }
    }

    /// `(name, version)` of `interface`, the version capped at `max`.
    pub(crate) fn global(&self, interface: &str, max: u32) -> Option<(u32, u32)> {
        self.globals
            .iter()
            .find(|g| g.interface == interface)
            .map(|g| (g.name, g.version.min(max)))
    }
}

/// An event state with a [`Registry`].
pub(crate) trait HasRegistry {
    fn registry(&self) -> &Registry;
}

/// `wl_display.sync`, then dispatch until its callback fires, at most
/// `timeout`: a compositor that stops answering is a typed error, not a
/// hang. The callback is `owner`'s ([`owner`]): an answer that comes after
/// a timeout, once the owner is gone, is dropped, not left on its queue.
pub(crate) fn roundtrip<S>(
    conn: &wayland_client::Connection,
    owner: &owner::Owner,
    queue: &mut wayland_client::EventQueue<S>,
    state: &mut S,
    timeout: Duration,
) -> Result<()>
where
    S: HasRegistry
        + wayland_client::Dispatch<wayland_client::protocol::wl_callback::WlCallback, ()>
        + 'static,
{
    let target = state.registry().synced + 1;
    owner
        .make::<wayland_client::protocol::wl_callback::WlCallback, _, _, _>(
            &conn.display(),
            wayland_client::protocol::wl_display::Request::Sync {},
            &queue.handle(),
            (),
        )
        .ok_or_else(|| Error::Wayland("the connection is gone".into()))?;
    dispatch_until(
        queue,
        state,
        "the compositor's answer (wl_display.sync)",
        timeout,
        |s: &S| s.registry().synced >= target,
    )
}

/// Dispatch `queue`'s events into `state` until `done` holds, reading the
/// socket only while it has data within `timeout` ([`Error::Timeout`]
/// naming `what` otherwise): the one bounded wait every part of the
/// Wayland side uses, so no compositor can hang a caller.
pub(crate) fn dispatch_until<S>(
    queue: &mut wayland_client::EventQueue<S>,
    state: &mut S,
    what: &'static str,
    timeout: Duration,
    done: impl Fn(&S) -> bool,
) -> Result<()> {
    dispatch_until_or(queue, state, what, timeout, done, &[])
}

/// [`dispatch_until`], also done when one of `extra` becomes readable (an
/// eventfd of a syncobj point): the compositor's messages (a protocol
/// error, its death) are still read while waiting for them.
pub(crate) fn dispatch_until_or<S>(
    queue: &mut wayland_client::EventQueue<S>,
    state: &mut S,
    what: &'static str,
    timeout: Duration,
    done: impl Fn(&S) -> bool,
    extra: &[std::os::fd::BorrowedFd<'_>],
) -> Result<()> {
    use rustix::event::{PollFd, PollFlags};
    let deadline = crate::sync::Deadline::after(Some(timeout));
    // The socket is read at least once, so a zero timeout still sees what
    // has arrived.
    let mut first = true;
    loop {
        queue.flush().map_err(Error::wayland)?;
        queue.dispatch_pending(state).map_err(Error::dispatch)?;
        if done(state) {
            return Ok(());
        }
        // Checked here too: a busy socket keeps poll() ready past the end.
        if deadline.passed() && !first {
            return Err(Error::Timeout { what, timeout });
        }
        first = false;
        let Some(guard) = queue.prepare_read() else {
            continue;
        };
        let socket = guard.connection_fd();
        let mut fds = vec![PollFd::new(&socket, PollFlags::IN)];
        fds.extend(extra.iter().map(|fd| PollFd::new(fd, PollFlags::IN)));
        // No limit (Duration::MAX) polls in hour-long steps.
        let hour = Duration::from_secs(3600);
        let left = deadline.remaining().unwrap_or(hour).min(hour);
        let spec = rustix::time::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos() as _,
        };
        match rustix::event::poll(&mut fds, Some(&spec)) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(errno) => {
                return Err(Error::Io {
                    op: "poll(wayland socket)",
                    errno,
                })
            }
        }
        let socket_ready = !fds[0].revents().is_empty();
        let extra_ready = fds[1..].iter().any(|f| !f.revents().is_empty());
        drop(fds);
        if socket_ready {
            guard.read().map_err(Error::wayland)?;
        } else {
            drop(guard);
        }
        if extra_ready {
            queue.dispatch_pending(state).map_err(Error::dispatch)?;
            return Ok(());
        }
        if !socket_ready && deadline.passed() {
            return Err(Error::Timeout { what, timeout });
        }
    }
}
