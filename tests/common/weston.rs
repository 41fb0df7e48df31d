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
    /// kiosk shell; return once it answers with its shell's global.
    pub fn start(renderer: &str) -> Result<Weston, String> {
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
                "--width=256",
                "--height=256",
            ])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start weston: {e}"))?;
        let weston = Weston { child, socket, log };
        weston.wait_ready()?;
        Ok(weston)
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

impl Drop for Weston {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
