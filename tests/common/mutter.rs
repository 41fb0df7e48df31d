//! mutter 48 headless, the second real compositor of the tests: linux-dmabuf
//! version 3 (no feedback), implicit sync only, wp_fifo_v1.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// mutter takes ~25 s to come up under TCG.
pub const STARTUP: Duration = Duration::from_secs(180);

/// A running mutter (and its private session bus), stopped on drop.
pub struct Mutter {
    child: Child,
    /// Its Wayland socket name (under `XDG_RUNTIME_DIR`).
    pub socket: String,
    /// Its log file.
    pub log: PathBuf,
}

impl Mutter {
    /// Start `dbus-run-session -- mutter --headless --wayland --no-x11`
    /// with a 256x256 virtual monitor; return once it answers.
    pub fn start() -> Result<Mutter, String> {
        Self::start_sized(256, 256)
    }

    /// [`Mutter::start`] with a `width` x `height` virtual monitor.
    pub fn start_sized(width: u32, height: u32) -> Result<Mutter, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let runtime = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .ok_or("XDG_RUNTIME_DIR is not set")?;
        let socket = format!(
            "winsys-mutter-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let log = runtime.join(format!("{socket}.log"));
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new("dbus-run-session")
            .args([
                "--",
                "mutter",
                "--headless",
                "--wayland",
                "--no-x11",
                "--virtual-monitor",
                &format!("{width}x{height}"),
                &format!("--wayland-display={socket}"),
            ])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(log_file)
            // Its own process group: the session bus and mutter go together.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start mutter: {e}"))?;
        let mutter = Mutter { child, socket, log };
        let t = Instant::now();
        let path = runtime.join(&mutter.socket);
        while t.elapsed() < STARTUP {
            if path.exists() {
                if let Ok(conn) = winsys::wayland::connect(Some(&mutter.socket)) {
                    if let Ok(r) = winsys::wayland::probe(&conn, Duration::from_secs(20)) {
                        if r.version("xdg_wm_base").is_some() {
                            println!("mutter {} up after {:.1?}", mutter.socket, t.elapsed());
                            return Ok(mutter);
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let text = std::fs::read_to_string(&mutter.log).unwrap_or_default();
        Err(format!(
            "mutter did not come up within {STARTUP:?}; its log:\n{text}"
        ))
    }
}

impl Mutter {
    /// Whether it is still running (not exited, not killed).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Mutter {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.wait();
    }
}
