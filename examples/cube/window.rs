//! The app's own window: a wl_surface with an xdg_toplevel role, on a
//! libwayland connection, handed to either WSI as raw handles (the way
//! winit or SDL hand theirs to ash-window).
//!
//! The window keeps what the compositor configured it to (a size, or none:
//! the app decides; fullscreen or maximized, where that size binds the
//! app), applied when the configure is acknowledged; the render loop
//! follows it by recreating its swapchain ([`Window::generation`]).

use std::ptr::NonNull;
use std::time::{Duration, Instant};

use raw_window_handle::{
    RawDisplayHandle, RawWindowHandle, WaylandDisplayHandle, WaylandWindowHandle,
};
use wayland_client::protocol::{wl_compositor, wl_registry, wl_surface};
use wayland_client::{Connection, Dispatch, EventQueue, Proxy, QueueHandle};
use wayland_protocols::xdg::shell::client::{xdg_surface, xdg_toplevel, xdg_wm_base};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// What one configure sequence said about the toplevel.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Configure {
    /// Width and height (0: the client decides).
    size: (u32, u32),
    /// Fullscreen or maximized: the size is then a bound the client must
    /// keep to (at most, or exactly), not a hint.
    constrained: bool,
}

#[derive(Default)]
struct State {
    compositor: Option<wl_compositor::WlCompositor>,
    wm: Option<xdg_wm_base::XdgWmBase>,
    configured: bool,
    closed: bool,
    /// The last `xdg_toplevel.configure`, applied (and acknowledged) at
    /// the `xdg_surface.configure` that ends its sequence.
    pending: Option<Configure>,
    /// The configure acknowledged last: what the next commit must fit.
    current: Configure,
    /// Bumped whenever an acknowledged configure changed the size or the
    /// states that bind it.
    generation: u64,
}

/// A toplevel window.
pub struct Window {
    pub conn: Connection,
    queue: EventQueue<State>,
    state: State,
    pub surface: wl_surface::WlSurface,
    toplevel: xdg_toplevel::XdgToplevel,
    xdg: xdg_surface::XdgSurface,
}

impl Window {
    /// Connect (to `display`, else WAYLAND_DISPLAY) and open a toplevel
    /// titled `title`, waiting (at most 10 s) for its first configure.
    pub fn open(display: Option<&str>, title: &str) -> Result<Self> {
        let conn = winsys::wayland::connect(display)?;
        let mut queue = conn.new_event_queue();
        let qh = queue.handle();
        let mut state = State::default();
        conn.display().get_registry(&qh, ());
        queue.roundtrip(&mut state)?;
        let compositor = state.compositor.clone().ok_or("no wl_compositor")?;
        let wm = state.wm.clone().ok_or("no xdg_wm_base")?;
        let surface = compositor.create_surface(&qh, ());
        let xdg = wm.get_xdg_surface(&surface, &qh, ());
        let toplevel = xdg.get_toplevel(&qh, ());
        toplevel.set_title(title.into());
        surface.commit();
        let start = Instant::now();
        while !state.configured {
            if start.elapsed() > Duration::from_secs(10) {
                return Err("the compositor did not configure the window in 10 s".into());
            }
            queue.blocking_dispatch(&mut state)?;
        }
        Ok(Window {
            conn,
            queue,
            state,
            surface,
            toplevel,
            xdg,
        })
    }

    /// The raw handles both WSIs take.
    pub fn raw_handles(&self) -> Result<(RawDisplayHandle, RawWindowHandle)> {
        let display = NonNull::new(self.conn.backend().display_ptr().cast())
            .ok_or("no libwayland display")?;
        let surface = NonNull::new(self.surface.id().as_ptr().cast()).ok_or("no wl_surface")?;
        Ok((
            RawDisplayHandle::Wayland(WaylandDisplayHandle::new(display)),
            RawWindowHandle::Wayland(WaylandWindowHandle::new(surface)),
        ))
    }

    /// The size the compositor configured the window to, as of the last
    /// configure acknowledged (`None`: 0x0, the app decides).
    pub fn configured_size(&self) -> Option<(u32, u32)> {
        match self.state.current.size {
            (w, h) if w > 0 && h > 0 => Some((w, h)),
            _ => None,
        }
    }

    /// Whether the last configure acknowledged made the window fullscreen
    /// or maximized: its size is then one the app's buffers must not
    /// exceed (fullscreen) or must match (maximized), not a hint.
    pub fn constrained(&self) -> bool {
        self.state.current.constrained
    }

    /// The size to render at: where the configure binds the app
    /// (fullscreen: at most that size; maximized: exactly), each dimension
    /// the compositor configured; otherwise, and for a 0 dimension,
    /// `fallback`'s (the app's own choice: for a floating or tiled window
    /// the configured size is a suggestion xdg-shell lets the client
    /// decline, and the cube keeps the size it was asked for, so that
    /// runs on different compositors compare the same work).
    pub fn size_or(&self, fallback: (u32, u32)) -> (u32, u32) {
        let (w, h) = self.state.current.size;
        if !self.state.current.constrained {
            return fallback;
        }
        (
            if w > 0 { w } else { fallback.0 },
            if h > 0 { h } else { fallback.1 },
        )
    }

    /// A counter that changes whenever a configure acknowledged (by
    /// [`Window::open`] or [`Window::pump`]) changes the configured size:
    /// a swapchain made at another generation may no longer fit. Between
    /// the acknowledgement and the next commit the app must resize, so
    /// check it after every `pump`, before presenting.
    pub fn generation(&self) -> u64 {
        self.state.generation
    }

    /// Handle what the compositor sent the window (pings, configures,
    /// close), never waiting; whether the window is still open.
    pub fn pump(&mut self) -> Result<bool> {
        self.conn.flush()?;
        if let Some(guard) = self.queue.prepare_read() {
            let ready = rustix::event::poll(
                &mut [rustix::event::PollFd::new(
                    &guard.connection_fd(),
                    rustix::event::PollFlags::IN,
                )],
                Some(&rustix::time::Timespec::default()),
            )?;
            if ready > 0 {
                guard.read()?;
            }
        }
        self.queue.dispatch_pending(&mut self.state)?;
        Ok(!self.state.closed)
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        self.toplevel.destroy();
        self.xdg.destroy();
        self.surface.destroy();
        let _ = self.conn.flush();
    }
}

impl Dispatch<wl_registry::WlRegistry, ()> for State {
    fn event(
        state: &mut Self,
        registry: &wl_registry::WlRegistry,
        event: wl_registry::Event,
        _: &(),
        _: &Connection,
        qh: &QueueHandle<Self>,
    ) {
        if let wl_registry::Event::Global {
            name,
            interface,
            version,
        } = event
        {
            match interface.as_str() {
                "wl_compositor" => {
                    state.compositor = Some(registry.bind(name, version.min(4), qh, ()))
                }
                // Version 2 has the tiled states: sway marks a tiled window
                // of a version-1 client maximized instead, which would
                // bind the cube to the tile's size.
                "xdg_wm_base" => state.wm = Some(registry.bind(name, version.min(2), qh, ())),
                _ => {}
            }
        }
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
            // The sequence's toplevel configure takes effect with the ack;
            // the app's next commit has to fit it.
            if let Some(configure) = state.pending.take() {
                if configure != state.current {
                    state.generation += 1;
                }
                state.current = configure;
            }
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
            xdg_toplevel::Event::Configure {
                width,
                height,
                states,
            } => {
                // An array of native-endian u32 state values.
                let constrained = states
                    .chunks_exact(4)
                    .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                    .any(|s| {
                        s == xdg_toplevel::State::Fullscreen as u32
                            || s == xdg_toplevel::State::Maximized as u32
                    });
                state.pending = Some(Configure {
                    size: (
                        u32::try_from(width).unwrap_or(0),
                        u32::try_from(height).unwrap_or(0),
                    ),
                    constrained,
                });
            }
            xdg_toplevel::Event::Close => state.closed = true,
            _ => {}
        }
    }
}

impl Dispatch<wl_compositor::WlCompositor, ()> for State {
    fn event(
        _: &mut Self,
        _: &wl_compositor::WlCompositor,
        _: wl_compositor::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
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
