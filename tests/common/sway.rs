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

impl Drop for Sway {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.wait();
    }
}
