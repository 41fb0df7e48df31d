//! Our own reference compositor (`examples/compositor`) for the tests:
//! started per test on its own socket with the Khronos validation layer,
//! its output read back from the PNG it writes, its stats line parsed from
//! its log, stopped on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long it may take to come up (lavapipe and the validation layer
/// under TCG).
pub const STARTUP: Duration = Duration::from_secs(90);

/// A running reference compositor.
pub struct Compositor {
    child: Child,
    /// Its socket name (under `XDG_RUNTIME_DIR`).
    pub socket: String,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
    /// The PNG of its output.
    pub png: PathBuf,
}

/// The figures of its last stats line.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    pub frames: u64,
    pub applied: u64,
    pub held: u64,
    pub releases: u64,
    pub protocol_errors: u64,
    pub longest_stall_ms: f64,
    pub surfaces: u64,
}

/// The output as RGB rows.
pub struct Png {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl Png {
    /// Decode an RGB PNG.
    pub fn read(path: &std::path::Path) -> Option<Png> {
        let file = std::fs::File::open(path).ok()?;
        let decoder = png::Decoder::new(std::io::BufReader::new(file));
        let mut reader = decoder.read_info().ok()?;
        let mut rgb = vec![0u8; reader.output_buffer_size()];
        let info = reader.next_frame(&mut rgb).ok()?;
        rgb.truncate(info.buffer_size());
        Some(Png {
            width: info.width,
            height: info.height,
            rgb,
        })
    }

    /// The pixel at (x, y) as 0xRRGGBB.
    pub fn pixel(&self, x: u32, y: u32) -> u32 {
        let i = (y * self.width + x) as usize * 3;
        u32::from_be_bytes([0, self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]])
    }
}

impl Compositor {
    /// Start it with a 256x256 output, `env` added to its environment.
    pub fn start(env: &[(&str, &str)]) -> Result<Compositor, String> {
        Self::start_with(env, &[])
    }

    /// [`Compositor::start`] with `args` added to its command line.
    pub fn start_with(env: &[(&str, &str)], args: &[&str]) -> Result<Compositor, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let runtime = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .ok_or("XDG_RUNTIME_DIR is not set")?;
        let socket = format!(
            "winsys-compositor-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let log = runtime.join(format!("{socket}.log"));
        let png = runtime.join(format!("{socket}.png"));
        let bin = super::built("examples", "compositor");
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .args(["--socket", &socket, "--png"])
            .arg(&png)
            .arg("--validation")
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start the compositor: {e}"))?;
        let mut c = Compositor {
            child,
            socket,
            log,
            png,
        };
        let t = Instant::now();
        let path = runtime.join(&c.socket);
        while t.elapsed() < STARTUP {
            if let Ok(Some(status)) = c.child.try_wait() {
                return Err(format!(
                    "the compositor exited ({status}):\n{}",
                    c.log_text()
                ));
            }
            if path.exists() {
                if let Ok(conn) = winsys::wayland::connect(Some(&c.socket)) {
                    if winsys::wayland::probe(&conn, Duration::from_secs(20)).is_ok() {
                        println!("compositor {} up after {:.1?}", c.socket, t.elapsed());
                        return Ok(c);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("the compositor did not come up:\n{}", c.log_text()))
    }

    /// [`Compositor::start`] with `at`, `--stall-on-syncobj-surface` or
    /// `--stall-on-default-feedback`: it stops answering once the first
    /// drm-syncobj surface object, or the first request for linux-dmabuf's
    /// default feedback from a client with a surface, reaches it, until
    /// [`Stall::release`].
    pub fn start_stalling(at: &str) -> Result<(Compositor, Stall), String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "winsys-stall-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let stall = Stall { dir };
        let go = stall.go();
        let go = go.to_str().ok_or("a temporary path that is no string")?;
        let c = Self::start_with(&[], &[at, go])?;
        Ok((c, stall))
    }

    /// Wait (at most two minutes) until it says it stalled
    /// ([`Compositor::start_stalling`]).
    pub fn wait_stalled(&self) {
        let t = Instant::now();
        while !self.log_text().contains("compositor: stalled until") {
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "the compositor never stalled:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The figures of its last stats line (printed once a second when
    /// they change).
    pub fn stats(&self) -> Option<Stats> {
        let text = self.log_text();
        let line = text
            .lines()
            .rev()
            .find(|l| l.starts_with("compositor: stats"))?;
        let mut s = Stats::default();
        for field in line.split_whitespace() {
            let Some((k, v)) = field.split_once('=') else {
                continue;
            };
            let n = || v.parse::<u64>().unwrap_or(0);
            match k {
                "frames" => s.frames = n(),
                "applied" => s.applied = n(),
                "held" => s.held = n(),
                "releases" => s.releases = n(),
                "protocol_errors" => s.protocol_errors = n(),
                "longest_stall_ms" => s.longest_stall_ms = v.parse().unwrap_or(f64::MAX),
                "surfaces" => s.surfaces = n(),
                _ => {}
            }
        }
        Some(s)
    }

    /// Wait (at most `timeout`) until a stats line satisfies `ok`.
    pub fn wait_stats(
        &self,
        timeout: Duration,
        ok: impl Fn(&Stats) -> bool,
    ) -> Result<Stats, String> {
        let t = Instant::now();
        loop {
            let s = self.stats();
            if let Some(s) = s.filter(|s| ok(s)) {
                return Ok(s);
            }
            if t.elapsed() > timeout {
                return Err(format!(
                    "stats never matched; last {s:?}; log:\n{}",
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last PNG it wrote.
    pub fn output(&self) -> Option<Png> {
        Png::read(&self.png)
    }

    /// Open fds of the compositor process, the fewest seen over half a
    /// second: fds it holds for a moment (the PNG writer's file, every
    /// 250 ms) are left out, a leaked one stays.
    pub fn settled_fds(&self) -> usize {
        let t = Instant::now();
        let mut fewest = self.open_fds();
        while t.elapsed() < Duration::from_millis(500) && fewest > 0 {
            std::thread::sleep(Duration::from_millis(20));
            fewest = fewest.min(self.open_fds());
        }
        fewest
    }

    /// [`Compositor::settled_fds`] once it is down to `baseline` or less,
    /// or after `within` (then more than `baseline`: a leak).
    pub fn fds_down_to(&self, baseline: usize, within: Duration) -> usize {
        let t = Instant::now();
        let mut n = self.settled_fds();
        while n > baseline && t.elapsed() < within {
            n = self.settled_fds();
        }
        n
    }

    /// Open fds of the compositor process now.
    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// What its open fds are (`/proc/PID/fd` link targets, sorted): for
    /// failure messages.
    pub fn fd_targets(&self) -> Vec<String> {
        let dir = format!("/proc/{}/fd", self.child.id());
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .map(|t| t.display().to_string())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// The stall of a compositor from [`Compositor::start_stalling`].
pub struct Stall {
    dir: PathBuf,
}

impl Stall {
    fn go(&self) -> PathBuf {
        self.dir.join("go")
    }

    /// Let the compositor go on.
    pub fn release(&self) {
        std::fs::write(self.go(), b"").expect("write the stall's release file");
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Compositor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
