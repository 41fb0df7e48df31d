//! The app's own window: a wl_surface with an xdg_toplevel role, on a
//! libwayland connection, handed to either WSI as raw handles (the way
//! winit or SDL hand theirs to ash-window).

use std::ptr::NonNull;
use std::time::{Duration, Instant};

use raw_window_handle::{
    RawDisplayHandle, RawWindowHandle, WaylandDisplayHandle, WaylandWindowHandle,
};
use wayland_client::protocol::{wl_compositor, wl_registry, wl_surface};
use wayland_client::{Connection, Dispatch, EventQueue, Proxy, QueueHandle};
use wayland_protocols::xdg::shell::client::{xdg_surface, xdg_toplevel, xdg_wm_base};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

#[derive(Default)]
struct State {
    compositor: Option<wl_compositor::WlCompositor>,
    wm: Option<xdg_wm_base::XdgWmBase>,
    configured: bool,
    closed: bool,
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
                "xdg_wm_base" => state.wm = Some(registry.bind(name, 1, qh, ())),
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
        if let xdg_toplevel::Event::Close = event {
            state.closed = true;
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
