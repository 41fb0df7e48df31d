//! sway 1.12 (wlroots 0.20), the compositor of the test bed that offers
//! `wp_linux_drm_syncobj_manager_v1`: the DRM backend on virtio-gpu's
//! virtual connector (its headless backend cannot allocate output buffers
//! on a render node here), no seat, no input devices.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long sway may take to come up under TCG.
pub const STARTUP: Duration = Duration::from_secs(90);

/// A running sway, stopped on drop.
pub struct Sway {
    child: Child,
    /// Its socket, as an absolute path (a `WAYLAND_DISPLAY` value).
    pub socket: String,
    /// Its log file.
    pub log: PathBuf,
}

/// The primary node of the virtio_gpu device (`/dev/dri/cardN`).
pub fn virtio_gpu_card() -> Result<PathBuf, String> {
    winsys::device::DrmDevice::find("virtio_gpu", winsys::device::NodeKind::Primary)
        .map(|d| d.path().to_path_buf())
        .map_err(|e| e.to_string())
}

impl Sway {
    /// Start sway on virtio-gpu's card node with an empty config, in a
    /// runtime directory of its own; return once it answers.
    pub fn start() -> Result<Sway, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let card = virtio_gpu_card()?;
        let runtime = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .ok_or("XDG_RUNTIME_DIR is not set")?;
        let dir = runtime.join(format!(
            "winsys-sway-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| e.to_string())?;
        let config = dir.join("config");
        std::fs::write(&config, "default_border none\n").map_err(|e| e.to_string())?;
        let log = dir.join("sway.log");
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new("sway")
            .arg("-c")
            .arg(&config)
            .env("XDG_RUNTIME_DIR", &dir)
            .env("LIBSEAT_BACKEND", "noop")
            .env("WLR_BACKENDS", "drm")
            .env("WLR_DRM_DEVICES", &card)
            .env("WLR_RENDERER", "gles2")
            .env("WLR_LIBINPUT_NO_DEVICES", "1")
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("DISPLAY")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start sway: {e}"))?;
        let mut sway = Sway {
            child,
            socket: String::new(),
            log,
        };
        let t = Instant::now();
        while t.elapsed() < STARTUP {
            if let Ok(Some(status)) = sway.child.try_wait() {
                let text = std::fs::read_to_string(&sway.log).unwrap_or_default();
                return Err(format!("sway exited ({status}); its log:\n{text}"));
            }
            let socket = std::fs::read_dir(&dir).ok().and_then(|d| {
                d.flatten().map(|e| e.path()).find(|p| {
                    let n = p.file_name().unwrap().to_string_lossy();
                    n.starts_with("wayland-") && !n.ends_with(".lock")
                })
            });
            if let Some(path) = socket {
                let name = path.display().to_string();
                if let Ok(conn) = winsys::wayland::connect(Some(&name)) {
                    if let Ok(r) = winsys::wayland::probe(&conn, Duration::from_secs(20)) {
                        if r.version("xdg_wm_base").is_some() {
                            println!("sway {name} up after {:.1?}", t.elapsed());
                            sway.socket = name;
                            return Ok(sway);
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let text = std::fs::read_to_string(&sway.log).unwrap_or_default();
        Err(format!(
            "sway did not come up within {STARTUP:?}; its log:\n{text}"
        ))
    }
}

impl Sway {
    /// Whether it is still running (not exited, not killed).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Sway {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.wait();
    }
}

/// sway's (first) output read back with `zwlr_screencopy_manager_v1` into
/// a wl_shm buffer, rows top-down (a `y_invert` frame is flipped).
pub fn screencopy(socket: &str) -> Result<super::weston::Shot, String> {
    use wayland_client::globals::{registry_queue_init, GlobalListContents};
    use wayland_client::protocol::{wl_buffer, wl_output, wl_registry, wl_shm, wl_shm_pool};
    use wayland_client::{delegate_noop, Connection, Dispatch, QueueHandle, WEnum};
    use wayland_protocols_wlr::screencopy::v1::client::{
        zwlr_screencopy_frame_v1 as frame_v1, zwlr_screencopy_manager_v1 as manager_v1,
    };

    #[derive(Default)]
    struct St {
        buffer: Option<(wl_shm::Format, u32, u32, u32)>,
        buffer_done: bool,
        y_invert: bool,
        outcome: Option<Result<(), String>>,
    }
    impl Dispatch<wl_registry::WlRegistry, GlobalListContents> for St {
        fn event(
            _: &mut Self,
            _: &wl_registry::WlRegistry,
            _: wl_registry::Event,
            _: &GlobalListContents,
            _: &Connection,
            _: &QueueHandle<Self>,
        ) {
        }
    }
    impl Dispatch<frame_v1::ZwlrScreencopyFrameV1, ()> for St {
        fn event(
            st: &mut Self,
            _: &frame_v1::ZwlrScreencopyFrameV1,
            event: frame_v1::Event,
            _: &(),
            _: &Connection,
            _: &QueueHandle<Self>,
        ) {
            match event {
                frame_v1::Event::Buffer {
                    format: WEnum::Value(f),
                    width,
                    height,
                    stride,
                } => st.buffer = Some((f, width, height, stride)),
                frame_v1::Event::BufferDone => st.buffer_done = true,
                frame_v1::Event::Flags {
                    flags: WEnum::Value(f),
                } => st.y_invert = f.contains(frame_v1::Flags::YInvert),
                frame_v1::Event::Ready { .. } => st.outcome = Some(Ok(())),
                frame_v1::Event::Failed => st.outcome = Some(Err("screencopy failed".into())),
                _ => {}
            }
        }
    }
    delegate_noop!(St: ignore wl_output::WlOutput);
    delegate_noop!(St: ignore wl_shm::WlShm);
    delegate_noop!(St: wl_shm_pool::WlShmPool);
    delegate_noop!(St: ignore wl_buffer::WlBuffer);
    delegate_noop!(St: manager_v1::ZwlrScreencopyManagerV1);

    let conn = winsys::wayland::connect(Some(socket)).map_err(|e| e.to_string())?;
    let (globals, mut queue) = registry_queue_init::<St>(&conn).map_err(|e| e.to_string())?;
    let qh = queue.handle();
    let manager: manager_v1::ZwlrScreencopyManagerV1 =
        globals.bind(&qh, 1..=3, ()).map_err(|e| e.to_string())?;
    let output: wl_output::WlOutput = globals.bind(&qh, 1..=4, ()).map_err(|e| e.to_string())?;
    let shm: wl_shm::WlShm = globals.bind(&qh, 1..=1, ()).map_err(|e| e.to_string())?;
    let frame = manager.capture_output(0, &output, &qh, ());
    let mut st = St::default();
    let v3 = wayland_client::Proxy::version(&frame) >= 3;
    while st.buffer.is_none() || (v3 && !st.buffer_done) {
        queue
            .blocking_dispatch(&mut st)
            .map_err(|e| e.to_string())?;
    }
    let (format, w, h, stride) = st.buffer.expect("a buffer event");
    // XBGR/ABGR (sway's gles2 renderer) keep R first in memory: swapped
    // below into the XRGB byte order of a Shot.
    let swap_rb = match format {
        wl_shm::Format::Xrgb8888 | wl_shm::Format::Argb8888 => false,
        wl_shm::Format::Xbgr8888 | wl_shm::Format::Abgr8888 => true,
        other => return Err(format!("screencopy offers {other:?}, not 8-bit RGB")),
    };
    let size = (stride * h) as usize;
    let memfd = rustix::fs::memfd_create("screencopy", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| e.to_string())?;
    rustix::fs::ftruncate(&memfd, size as u64).map_err(|e| e.to_string())?;
    let pool = shm.create_pool(std::os::fd::AsFd::as_fd(&memfd), size as i32, &qh, ());
    let buffer = pool.create_buffer(0, w as i32, h as i32, stride as i32, format, &qh, ());
    frame.copy(&buffer);
    while st.outcome.is_none() {
        queue
            .blocking_dispatch(&mut st)
            .map_err(|e| e.to_string())?;
    }
    st.outcome.take().expect("an outcome")?;
    let mut raw = vec![0u8; size];
    rustix::io::pread(&memfd, &mut raw, 0).map_err(|e| e.to_string())?;
    let row = (w * 4) as usize;
    let mut pixels = Vec::with_capacity(row * h as usize);
    for y in 0..h as usize {
        let src = if st.y_invert { h as usize - 1 - y } else { y };
        pixels.extend_from_slice(&raw[src * stride as usize..][..row]);
    }
    if swap_rb {
        for px in pixels.chunks_exact_mut(4) {
            px.swap(0, 2);
        }
    }
    frame.destroy();
    buffer.destroy();
    pool.destroy();
    Ok(super::weston::Shot {
        width: w,
        height: h,
        pixels,
    })
}
