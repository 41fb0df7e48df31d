//! A real compositor for the tests: weston 14, headless, started per test
//! on its own socket, stopped on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long weston may take to come up (several seconds under TCG).
pub const STARTUP: Duration = Duration::from_secs(90);

/// A running weston.
pub struct Weston {
    child: Child,
    /// Its socket name (under `XDG_RUNTIME_DIR`).
    pub socket: String,
    /// Its log file.
    pub log: PathBuf,
}

impl Weston {
    /// Start weston headless with `renderer` (`gl` or `pixman`) and the
    /// kiosk shell, output 256x256; return once it answers with its
    /// shell's global.
    pub fn start(renderer: &str) -> Result<Weston, String> {
        Self::start_sized(renderer, 256, 256)
    }

    /// [`Weston::start`] with a `width` x `height` output (the kiosk shell
    /// makes windows fullscreen: a client's buffers must not be larger).
    pub fn start_sized(renderer: &str, width: u32, height: u32) -> Result<Weston, String> {
        let weston = Self::spawn_sized(renderer, width, height)?;
        weston.wait_ready()?;
        Ok(weston)
    }

    fn spawn_sized(renderer: &str, width: u32, height: u32) -> Result<Weston, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let runtime = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .ok_or("XDG_RUNTIME_DIR is not set")?;
        let socket = format!(
            "winsys-weston-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let log = runtime.join(format!("{socket}.log"));
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new("weston")
            .args([
                "--backend=headless",
                &format!("--renderer={renderer}"),
                &format!("--socket={socket}"),
                "--idle-time=0",
                "--shell=kiosk",
                &format!("--width={width}"),
                &format!("--height={height}"),
                // Lets any client capture the output (weston_capture_v1
                // answers "unauthorized" otherwise).
                "--debug",
            ])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start weston: {e}"))?;
        Ok(Weston { child, socket, log })
    }

    /// [`Weston::start_sized`] without waiting for it: returned at once,
    /// maybe before its socket exists or its shell is loaded.
    pub fn spawn(renderer: &str, width: u32, height: u32) -> Result<Weston, String> {
        Self::spawn_sized(renderer, width, height)
    }

    fn wait_ready(&self) -> Result<(), String> {
        let t = Instant::now();
        let path = PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR").unwrap()).join(&self.socket);
        while t.elapsed() < STARTUP {
            if path.exists() {
                if let Ok(conn) = winsys::wayland::connect(Some(&self.socket)) {
                    if let Ok(r) = winsys::wayland::probe(&conn, Duration::from_secs(10)) {
                        if r.version("xdg_wm_base").is_some() {
                            println!("weston {} up after {:.1?}", self.socket, t.elapsed());
                            return Ok(());
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        Err(format!(
            "weston did not come up within {STARTUP:?}; its log:\n{log}"
        ))
    }
}

impl Weston {
    /// Whether it is still running (not exited, not killed).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kill it (SIGKILL) and reap it: its clients' connections break.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Weston {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// weston's output capture (`weston_capture_v1`), generated from
/// `tests/protocols/weston-capture.xml`.
#[allow(missing_docs, non_upper_case_globals, non_camel_case_types, unused)]
pub mod capture_protocol {
    use wayland_client;
    use wayland_client::protocol::*;

    pub mod __interfaces {
        use wayland_client::backend as wayland_backend;
        use wayland_client::protocol::__interfaces::*;
        wayland_scanner::generate_interfaces!("../tests/protocols/weston-capture.xml");
    }
    use self::__interfaces::*;

    wayland_scanner::generate_client_code!("../tests/protocols/weston-capture.xml");
}

use capture_protocol::{weston_capture_source_v1 as source_v1, weston_capture_v1 as capture_v1};
use wayland_client::protocol::{
    wl_buffer, wl_callback, wl_output, wl_registry, wl_shm, wl_shm_pool,
};
use wayland_client::{Connection, Dispatch, QueueHandle};

/// What the compositor shows on its output, read back as XRGB8888 rows.
pub struct Shot {
    pub width: u32,
    pub height: u32,
    /// Packed 4-byte pixels, row after row.
    pub pixels: Vec<u8>,
}

impl Shot {
    /// The pixel at (x, y) as `0xXXRRGGBB`.
    pub fn pixel(&self, x: u32, y: u32) -> u32 {
        let at = ((y * self.width + x) * 4) as usize;
        u32::from_le_bytes(self.pixels[at..at + 4].try_into().unwrap())
    }
}

#[derive(Default)]
struct CaptureState {
    globals: Vec<(u32, String, u32)>,
    synced: u32,
    formats: Vec<u32>,
    size: Option<(i32, i32)>,
    outcome: Option<Result<(), String>>,
}

/// Capture weston's (first) output over `conn` (the framebuffer source),
/// into a wl_shm buffer.
pub fn capture(conn: &Connection) -> Result<Shot, String> {
    let mut queue = conn.new_event_queue::<CaptureState>();
    let qh = queue.handle();
    let mut st = CaptureState::default();
    let registry = conn.display().get_registry(&qh, ());
    let sync = |queue: &mut wayland_client::EventQueue<CaptureState>, st: &mut CaptureState| {
        conn.display().sync(&queue.handle(), ());
        let target = st.synced + 1;
        while st.synced < target {
            queue.blocking_dispatch(st).map_err(|e| e.to_string())?;
        }
        Ok::<(), String>(())
    };
    sync(&mut queue, &mut st)?;
    let find = |name: &str| st.globals.iter().find(|g| g.1 == name).map(|g| (g.0, g.2));
    let (n, _) = find("weston_capture_v1").ok_or("no weston_capture_v1")?;
    let factory: capture_v1::WestonCaptureV1 = registry.bind(n, 1, &qh, ());
    let (n, _) = find("wl_output").ok_or("no wl_output")?;
    let output: wl_output::WlOutput = registry.bind(n, 1, &qh, ());
    let (n, _) = find("wl_shm").ok_or("no wl_shm")?;
    let shm: wl_shm::WlShm = registry.bind(n, 1, &qh, ());
    let source = factory.create(&output, capture_v1::Source::Framebuffer, &qh, ());
    sync(&mut queue, &mut st)?;
    let (w, h) = st.size.ok_or("no size event from the capture source")?;
    let xrgb = u32::from_le_bytes(*b"XR24");
    let argb = u32::from_le_bytes(*b"AR24");
    let (format, shm_format) = if st.formats.contains(&xrgb) {
        (xrgb, wl_shm::Format::Xrgb8888)
    } else if st.formats.contains(&argb) {
        (argb, wl_shm::Format::Argb8888)
    } else {
        return Err(format!("no 8-bit RGB capture format in {:x?}", st.formats));
    };
    let _ = format;
    let size = (w * h * 4) as usize;
    let memfd = rustix::fs::memfd_create("capture", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| e.to_string())?;
    rustix::fs::ftruncate(&memfd, size as u64).map_err(|e| e.to_string())?;
    let pool = shm.create_pool(std::os::fd::AsFd::as_fd(&memfd), size as i32, &qh, ());
    let buffer = pool.create_buffer(0, w, h, w * 4, shm_format, &qh, ());
    source.capture(&buffer);
    while st.outcome.is_none() {
        queue
            .blocking_dispatch(&mut st)
            .map_err(|e| e.to_string())?;
    }
    st.outcome.take().unwrap()?;
    let mut pixels = vec![0u8; size];
    rustix::io::pread(&memfd, &mut pixels, 0).map_err(|e| e.to_string())?;
    buffer.destroy();
    pool.destroy();
    source.destroy();
    factory.destroy();
    Ok(Shot {
        width: w as u32,
        height: h as u32,
        pixels,
    })
}

impl Dispatch<wl_registry::WlRegistry, ()> for CaptureState {
    fn event(
        s: &mut Self,
        _: &wl_registry::WlRegistry,
        e: wl_registry::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_registry::Event::Global {
            name,
            interface,
            version,
        } = e
        {
            s.globals.push((name, interface, version));
        }
    }
}

impl Dispatch<wl_callback::WlCallback, ()> for CaptureState {
    fn event(
        s: &mut Self,
        _: &wl_callback::WlCallback,
        e: wl_callback::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        if let wl_callback::Event::Done { .. } = e {
            s.synced += 1;
        }
    }
}

impl Dispatch<source_v1::WestonCaptureSourceV1, ()> for CaptureState {
    fn event(
        s: &mut Self,
        _: &source_v1::WestonCaptureSourceV1,
        e: source_v1::Event,
        _: &(),
        _: &Connection,
        _: &QueueHandle<Self>,
    ) {
        match e {
            source_v1::Event::Format { drm_format } => s.formats.push(drm_format),
            source_v1::Event::Size { width, height } => s.size = Some((width, height)),
            source_v1::Event::Complete => s.outcome = Some(Ok(())),
            source_v1::Event::Retry => {
                s.outcome = Some(Err("capture: retry (buffer incompatible)".into()))
            }
            source_v1::Event::Failed { msg } => {
                s.outcome = Some(Err(format!("capture failed: {msg:?}")))
            }
        }
    }
}

macro_rules! ignore_events {
    ($($t:ty),+) => {$(
        impl Dispatch<$t, ()> for CaptureState {
            fn event(_: &mut Self, _: &$t, _: <$t as wayland_client::Proxy>::Event, _: &(), _: &Connection, _: &QueueHandle<Self>) {}
        }
    )+};
}

ignore_events!(
    capture_v1::WestonCaptureV1,
    wl_output::WlOutput,
    wl_shm::WlShm,
    wl_shm_pool::WlShmPool,
    wl_buffer::WlBuffer
);
