//! What the presentation benches share: running the cube example (and
//! counting its system calls), the compositors they start, and the time
//! budgets of their rows.

// Each bench binary that includes this uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{mutter, sway, weston};

/// One cube run's figures.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Figures {
    pub(crate) fps: f64,
    pub(crate) cpu_ms: f64,
    pub(crate) latency_ms: Option<f64>,
    /// The same two after the start-up: from a fifth of the run (at most
    /// 30 frames) to its end (the cube's `steady_*` figures).
    pub(crate) steady_fps: Option<f64>,
    pub(crate) steady_cpu_ms: Option<f64>,
}

impl Figures {
    /// Frames per second in the steady state (the whole run's where the
    /// run was too short for one).
    pub(crate) fn steady_fps(&self) -> f64 {
        self.steady_fps.unwrap_or(self.fps)
    }

    /// CPU ms per frame in the steady state (as [`Figures::steady_fps`]).
    pub(crate) fn steady_cpu_ms(&self) -> f64 {
        self.steady_cpu_ms.unwrap_or(self.cpu_ms)
    }
}

pub(crate) fn cube_binary() -> PathBuf {
    // target/release/deps/present-<hash> -> target/release/examples/cube
    let exe = std::env::current_exe().expect("current_exe");
    let profile = exe.parent().unwrap().parent().unwrap();
    let cube = profile.join("examples").join("cube");
    assert!(
        cube.exists(),
        "{} is missing: cargo build --release --examples --all-features",
        cube.display()
    );
    cube
}

pub(crate) fn field(json: &str, key: &str) -> Option<f64> {
    let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &json[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

/// Run `program` with `args` and `env` on `socket` (or a compositor of
/// its own, [`fresh_runs`]), once the compositor is idle, cut off after
/// [`run_limit`]: its stdout and how long it ran, or why it failed (a
/// bench row is never made of a broken run).
pub(crate) fn run_program(
    program: &Path,
    socket: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<(String, Duration), String> {
    let (socket, _fresh) = run_target(socket)?;
    let socket = socket.as_str();
    settle();
    let t = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .env("WAYLAND_DISPLAY", socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    // A run that stalls (each of its waits may take the cube's whole
    // --timeout) would hold the bench far past its row budget: it is cut
    // off, and the row says so.
    let limit = run_limit();
    while child.try_wait().ok().flatten().is_none() {
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{} {args:?} cut off after {limit:?}",
                program.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let elapsed = t.elapsed();
    let out = child.wait_with_output().expect("the program's output");
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        return Err(format!("{} {args:?} failed: {last}", program.display()));
    }
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), elapsed))
}

/// The compositor kind and size whose every run gets a compositor of its
/// own ([`fresh_runs`]).
static FRESH: std::sync::Mutex<Option<(Kind, u32, u32)>> = std::sync::Mutex::new(None);

/// Say which compositor the next rows run on (`kind`, an output of `w` x
/// `h`). mutter 48 headless at 1920x1080 shows the first window it maps
/// within seconds but every later one only after a stall of 60-100 s
/// under TCG (measured: the cube's 60 s waits ran out for the layer, the
/// driver's WSI and winsys's own swapchain alike, and waiting for mutter
/// to go idle first did not help): there every run ([`run_program`],
/// [`syscalls`]) starts a mutter of its own and presents to it instead
/// of the row's compositor.
pub(crate) fn fresh_runs(kind: Kind, w: u32, h: u32) {
    let fresh = (kind == Kind::Mutter && h > 256).then_some((kind, w, h));
    *FRESH
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
}

/// The socket a run presents to: `socket`, or that of a compositor
/// started for this run ([`fresh_runs`]), which the returned value keeps
/// running until the run is done.
fn run_target(socket: &str) -> Result<(String, Option<Running>), String> {
    let fresh = *FRESH
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match fresh {
        None => Ok((socket.to_string(), None)),
        Some((kind, w, h)) => {
            let c = Running::start(kind, w, h)?;
            Ok((c.socket().to_string(), Some(c)))
        }
    }
}

/// The compositors the benches run.
const COMPOSITORS: [&str; 3] = ["weston", "sway", "mutter"];

/// CPU time (clock ticks) of the running compositors so far.
fn compositor_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .filter_map(|stat| {
            // "pid (comm) state ppid ... utime stime ...": comm may hold spaces.
            let (head, tail) = stat.rsplit_once(") ")?;
            let comm = head.split_once(" (")?.1;
            COMPOSITORS.contains(&comm).then_some(())?;
            let f: Vec<&str> = tail.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// Wait (at most 2 minutes) until the compositor is idle — under a tenth
/// of a CPU over half a second — so that a run does not share the CPUs
/// with what the compositor still does for the run before. mutter 48
/// headless at 1920x1080 keeps both vCPUs busy for tens of seconds after
/// a window closes (measured: about 1,600 ticks in 8 s, 30 s on), and a
/// run started meanwhile waited past the cube's 60 s timeouts.
fn settle() {
    const SAMPLE: Duration = Duration::from_millis(500);
    let t = Instant::now();
    loop {
        let a = compositor_ticks();
        std::thread::sleep(SAMPLE);
        let busy = compositor_ticks().saturating_sub(a);
        if busy < 5 {
            break;
        }
        if t.elapsed() > Duration::from_secs(120) {
            println!(
                "the compositor is still busy after {:.0?}; running anyway",
                t.elapsed()
            );
            return;
        }
    }
    if t.elapsed() > Duration::from_secs(2) {
        println!("waited {:.1?} for the compositor to settle", t.elapsed());
    }
}

/// Run the cube with `env`; its figures.
pub(crate) fn run_cube_env(
    cube: &Path,
    socket: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<Figures, String> {
    let mut all = args.to_vec();
    all.push("--json");
    let (stdout, _) = run_program(cube, socket, &all, env)?;
    let json = stdout.lines().last().unwrap_or_default();
    Ok(Figures {
        fps: field(json, "fps").ok_or("no fps")?,
        cpu_ms: field(json, "cpu_ms_per_frame").ok_or("no cpu_ms_per_frame")?,
        latency_ms: field(json, "latency_mean_ms"),
        steady_fps: field(json, "steady_fps"),
        steady_cpu_ms: field(json, "steady_cpu_ms_per_frame"),
    })
}

/// Run the cube; its figures.
pub(crate) fn run_cube(cube: &Path, socket: &str, args: &[&str]) -> Result<Figures, String> {
    run_cube_env(cube, socket, args, &[])
}

/// System calls of a whole run of `program` (all threads), counted by
/// `strace -f -c`.
pub(crate) fn syscalls(
    program: &Path,
    socket: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Option<f64> {
    let (socket, _fresh) = run_target(socket).ok()?;
    let socket = socket.as_str();
    settle();
    let summary = std::env::temp_dir().join(format!("winsys-strace-{}", std::process::id()));
    let status = Command::new("strace")
        .args(["-f", "-c", "-o"])
        .arg(&summary)
        .arg(program)
        .args(args)
        .envs(env.iter().copied())
        .env("WAYLAND_DISPLAY", socket)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    let text = std::fs::read_to_string(&summary).ok()?;
    let _ = std::fs::remove_file(&summary);
    if !status.success() {
        return None;
    }
    // The last line: "100.00 <secs> <usecs/call> <calls> <errors> total".
    let total = text
        .lines()
        .rev()
        .find(|l| l.trim_end().ends_with("total"))?;
    total.split_whitespace().nth(3)?.parse().ok()
}

/// System calls per presented frame of a `frames`-frame cube run, counted
/// by `strace -f -c` (all threads).
pub(crate) fn syscalls_per_frame(
    cube: &Path,
    socket: &str,
    args: &[&str],
    frames: u32,
) -> Option<f64> {
    let n = frames.to_string();
    let mut all = args.to_vec();
    all.extend(["--frames", &n]);
    Some(syscalls(cube, socket, &all, &[])? / f64::from(frames))
}

/// The compositors of the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Weston,
    Sway,
    Mutter,
}

/// A running compositor of the bench, stopped on drop.
pub(crate) enum Running {
    Weston(weston::Weston),
    Sway(sway::Sway),
    Mutter(mutter::Mutter),
}

impl Running {
    /// Start `kind` for windows of `w` x `h` (weston's kiosk shell and
    /// mutter's virtual monitor get an output of that size; sway keeps
    /// virtio-gpu's output and tiles the window).
    pub(crate) fn start(kind: Kind, w: u32, h: u32) -> Result<Running, String> {
        let t = Instant::now();
        let r = match kind {
            Kind::Weston => Running::Weston(weston::Weston::start_sized("gl", w, h)?),
            Kind::Sway => Running::Sway(sway::Sway::start()?),
            Kind::Mutter => Running::Mutter(mutter::Mutter::start_sized(w, h)?),
        };
        println!("{kind:?} up in {:.1?}", t.elapsed());
        Ok(r)
    }

    pub(crate) fn socket(&self) -> &str {
        match self {
            Running::Weston(c) => &c.socket,
            Running::Sway(c) => &c.socket,
            Running::Mutter(c) => &c.socket,
        }
    }

    pub(crate) fn alive(&mut self) -> bool {
        match self {
            Running::Weston(c) => c.alive(),
            Running::Sway(c) => c.alive(),
            Running::Mutter(c) => c.alive(),
        }
    }
}

pub(crate) fn mean(a: Figures, b: Figures) -> Figures {
    Figures {
        fps: (a.fps + b.fps) / 2.0,
        cpu_ms: (a.cpu_ms + b.cpu_ms) / 2.0,
        latency_ms: a.latency_ms.zip(b.latency_ms).map(|(x, y)| (x + y) / 2.0),
        steady_fps: a.steady_fps.zip(b.steady_fps).map(|(x, y)| (x + y) / 2.0),
        steady_cpu_ms: a
            .steady_cpu_ms
            .zip(b.steady_cpu_ms)
            .map(|(x, y)| (x + y) / 2.0),
    }
}

/// Whether the rows of `kind` at `size` are to be measured:
/// `WINSYS_BENCH_ONLY` (e.g. `mutter 1920x1080`, or `sway`) keeps the
/// compositor-and-size pairs whose name contains it; unset, all.
pub(crate) fn selected(kind: Kind, size: &str) -> bool {
    let name = format!("{kind:?} {size}").to_lowercase();
    std::env::var("WINSYS_BENCH_ONLY").map_or(true, |only| name.contains(&only.to_lowercase()))
}

/// The seconds of frames each run of a row presents.
pub(crate) fn run_seconds() -> f64 {
    std::env::var("WINSYS_BENCH_RUN_SECONDS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(6.0)
}

/// The longest a single cube run may take: its start-up (seconds under
/// emulation) and its frames' budget, many times over.
pub(crate) fn run_limit() -> Duration {
    Duration::from_secs_f64((run_seconds() * 20.0).max(180.0))
}

/// Frames for a run of about `seconds` at `fps`, within `min..=max`.
pub(crate) fn frames_for(fps: Option<f64>, seconds: f64, min: u32, max: u32) -> u32 {
    match fps {
        Some(f) if f.is_finite() && f > 0.0 => ((f * seconds).round() as u32).clamp(min, max),
        _ => min,
    }
}
