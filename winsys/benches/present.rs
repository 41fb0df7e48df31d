//! Presentation benchmark: `examples/cube` through winsys against the same
//! cube through Mesa's own WSI (`--wsi mesa`), on the same compositor,
//! size, present mode and frame count, in one run.
//!
//! Rows (each winsys's figure over Mesa's in the same run, runs
//! interleaved winsys / Mesa / Mesa / winsys, figures averaged):
//! frames per second, CPU time per frame (all the process's threads,
//! the driver's included), latency from commit to presentation
//! (`wp_presentation`), and system calls per presented frame (a separate,
//! shorter run under `strace -f -c`, which slows a process down).
//!
//! Compositors: weston 14 (gl renderer; FIFO and MAILBOX) and mutter 48
//! (FIFO through `wp_fifo_v1`), at 256x256 and 1920x1080, each compositor
//! warmed up first by one short run of each WSI. Under TCG a 1080p frame
//! takes a quarter of a second or more: the frame counts keep the whole
//! run within the bench's 10-minute bound (about 7 minutes).
//!
//! Run in the VM with `cargo xtask bench present` (needs the cube built in
//! release: xtask does it). The rows are appended to
//! `$WINSYS_BENCH_OUT` (default `target/bench/results.json`).

#[path = "common/report.rs"]
mod report;

#[path = "../../tests/common/mutter.rs"]
#[allow(dead_code)]
mod mutter;
#[path = "../../tests/common/weston.rs"]
#[allow(dead_code)]
mod weston;

use std::path::{Path, PathBuf};

use report::Row;
use std::process::Command;
use std::time::Instant;

/// One cube run's figures.
#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    fps: f64,
    cpu_ms: f64,
    latency_ms: Option<f64>,
}

fn cube_binary() -> PathBuf {
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

fn field(json: &str, key: &str) -> Option<f64> {
    let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &json[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

/// Run the cube; its figures, or why it failed (a bench row is never made
/// of a broken run).
fn run_cube(cube: &Path, socket: &str, args: &[&str]) -> Result<Figures, String> {
    let out = Command::new(cube)
        .args(args)
        .arg("--json")
        .env("WAYLAND_DISPLAY", socket)
        .output()
        .expect("run the cube");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        return Err(format!("cube {args:?} failed: {last}"));
    }
    let json = stdout.lines().last().unwrap_or_default();
    Ok(Figures {
        fps: field(json, "fps").ok_or("no fps")?,
        cpu_ms: field(json, "cpu_ms_per_frame").ok_or("no cpu_ms_per_frame")?,
        latency_ms: field(json, "latency_mean_ms"),
    })
}

/// System calls per presented frame of a `frames`-frame cube run, counted
/// by `strace -f -c` (all threads).
fn syscalls_per_frame(cube: &Path, socket: &str, args: &[&str], frames: u32) -> Option<f64> {
    let summary = std::env::temp_dir().join(format!("winsys-strace-{}", std::process::id()));
    let n = frames.to_string();
    let status = Command::new("strace")
        .args(["-f", "-c", "-o"])
        .arg(&summary)
        .arg(cube)
        .args(args)
        .args(["--frames", &n])
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
    let calls: f64 = total.split_whitespace().nth(3)?.parse().ok()?;
    Some(calls / f64::from(frames))
}

/// One short run of each WSI on a freshly started compositor, figures
/// dropped: the first cube on a compositor pays for what every later one
/// finds ready (the driver's shader JIT and cache, the compositor's
/// shaders and first imports; measured here: a first 60-frame FIFO run at
/// 21 fps and 18 ms CPU per frame, the next ones at 34-36 fps and 8-10 ms),
/// and would otherwise always fall on the same WSI's first run.
/// `winsys_only`: the winsys run's own arguments, as in [`compare`].
fn warm_up(cube: &Path, socket: &str, size: &'static str, frames: u32, winsys_only: &[&str]) {
    let n = frames.to_string();
    for wsi in ["winsys", "mesa"] {
        let mut args = vec![
            "--size",
            size,
            "--timeout",
            "60",
            "--frames",
            &n,
            "--wsi",
            wsi,
        ];
        if wsi == "winsys" {
            args.extend_from_slice(winsys_only);
        }
        if let Err(e) = run_cube(cube, socket, &args) {
            println!("warm-up {wsi} {size}: {e}");
        }
    }
}

fn mean(a: Figures, b: Figures) -> Figures {
    Figures {
        fps: (a.fps + b.fps) / 2.0,
        cpu_ms: (a.cpu_ms + b.cpu_ms) / 2.0,
        latency_ms: a.latency_ms.zip(b.latency_ms).map(|(x, y)| (x + y) / 2.0),
    }
}

/// The rows of one configuration: winsys and Mesa interleaved (`args` for
/// both, `winsys_only` for winsys's runs).
#[allow(clippy::too_many_arguments)]
fn compare(
    cube: &Path,
    socket: &str,
    what: &str,
    args: &[&'static str],
    winsys_only: &[&'static str],
    frames: u32,
    goal_fps: &'static str,
    rows: &mut Vec<Row>,
    failures: &mut Vec<String>,
) {
    let n = frames.to_string();
    let mut common = vec!["--frames", n.as_str()];
    common.extend_from_slice(args);
    let with = |wsi: &'static str| {
        let mut a = common.clone();
        a.extend_from_slice(&["--wsi", wsi]);
        if wsi == "winsys" {
            a.extend_from_slice(winsys_only);
        }
        a
    };
    let t = Instant::now();
    let w1 = run_cube(cube, socket, &with("winsys"));
    let m1 = run_cube(cube, socket, &with("mesa"));
    let m2 = run_cube(cube, socket, &with("mesa"));
    let w2 = run_cube(cube, socket, &with("winsys"));
    // A winsys run that fails fails the bench; a failing baseline (Mesa's
    // WSI on mutter sometimes times out in vkAcquireNextImageKHR here)
    // only leaves the configuration without rows.
    let w = match (w1, w2) {
        (Ok(a), Ok(b)) => mean(a, b),
        (Err(e), _) | (_, Err(e)) => {
            println!("{what}: FAILED: {e}");
            failures.push(format!("{what}: {e}"));
            return;
        }
    };
    let m = match (m1, m2) {
        (Ok(a), Ok(b)) => mean(a, b),
        (Err(e), _) | (_, Err(e)) => {
            println!("{what}: no rows, the baseline failed: {e} (winsys: {w:?})");
            return;
        }
    };
    println!("{what}: winsys {w:?}, mesa {m:?} ({:.1?})", t.elapsed());
    let row = |name: &str, unit: &'static str, v: f64, b: f64, goal: &'static str| Row {
        name: format!("cube {what}: {name}, winsys"),
        value: v,
        unit,
        baseline: format!("Mesa's WSI ({name})"),
        baseline_value: b,
        ratio: if b > 0.0 { v / b } else { f64::NAN },
        goal,
    };
    rows.push(row("frames per second", "fps", w.fps, m.fps, goal_fps));
    rows.push(row("CPU time per frame", "ms", w.cpu_ms, m.cpu_ms, "-"));
    if let (Some(wl), Some(ml)) = (w.latency_ms, m.latency_ms) {
        rows.push(row("commit-to-presentation latency", "ms", wl, ml, "-"));
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test` runs benches without --bench: nothing to do.
        return;
    }
    let started = Instant::now();
    let cube = cube_binary();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    const SMALL: &str = "256x256";
    const LARGE: &str = "1920x1080";

    // Each size on an output of its own size (weston's kiosk shell makes
    // the window fullscreen; a larger buffer is a protocol error).
    for (size, (w, h), frames, warm, fifo_goal) in [
        (SMALL, (256, 256), 120, 30, ">= 1.0"),
        (LARGE, (1920, 1080), 32, 3, ">= 1.5"),
    ] {
        let weston = weston::Weston::start_sized("gl", w, h).expect("weston (gl)");
        let s = weston.socket.as_str();
        warm_up(&cube, s, size, warm, &[]);
        // Generous bounds: under TCG a 1080p frame takes seconds.
        let base = ["--size", size, "--images", "4", "--timeout", "60"];
        compare(
            &cube,
            s,
            &format!("weston FIFO {size}"),
            &base,
            &[],
            frames,
            fifo_goal,
            &mut rows,
            &mut failures,
        );
        let mut mailbox = base.to_vec();
        mailbox.extend(["--present-mode", "mailbox"]);
        compare(
            &cube,
            s,
            &format!("weston MAILBOX {size}"),
            &mailbox,
            &[],
            frames,
            ">= 1.0",
            &mut rows,
            &mut failures,
        );
        // The same with winsys forced to implicit sync: what explicit
        // sync costs on this bed (weston's gl renderer on llvmpipe
        // composes synchronously for a surface with an acquire fence
        // or a release request: llvmpipe finishes all rendering to
        // wait for or export a native fence).
        compare(
            &cube,
            s,
            &format!("weston FIFO {size} (winsys implicit)"),
            &base,
            &["--sync", "implicit"],
            frames,
            "-",
            &mut rows,
            &mut failures,
        );
        compare(
            &cube,
            s,
            &format!("weston MAILBOX {size} (winsys implicit)"),
            &mailbox,
            &["--sync", "implicit"],
            frames,
            "-",
            &mut rows,
            &mut failures,
        );
        if size == SMALL {
            for wsi in ["winsys", "mesa"] {
                let mut a = base.to_vec();
                a.extend(["--wsi", wsi]);
                let per = syscalls_per_frame(&cube, s, &a, 60);
                println!("syscalls per frame, weston FIFO {size}, {wsi}: {per:?}");
                if let Some(per) = per {
                    rows.push(Row {
                        name: format!("cube weston FIFO {size}: syscalls per frame, {wsi}"),
                        value: per,
                        unit: "calls",
                        baseline: "-".into(),
                        baseline_value: f64::NAN,
                        ratio: f64::NAN,
                        goal: "-",
                    });
                }
            }
        }
        drop(weston);
        // mutter's llvmpipe crashes on a second imported dma-buf here: its
        // winsys rows are the wl_shm path (as Mesa's are; winsys without a copy).
        let mutter = mutter::Mutter::start_sized(w, h).expect("mutter");
        warm_up(
            &cube,
            mutter.socket.as_str(),
            size,
            warm,
            &["--sync", "shm"],
        );
        compare(
            &cube,
            mutter.socket.as_str(),
            &format!("mutter FIFO (wp_fifo_v1) {size}"),
            &base,
            &["--sync", "shm"],
            frames,
            fifo_goal,
            &mut rows,
            &mut failures,
        );
    }
    // Pair the two syscall rows into one with a ratio.
    if let (Some(w), Some(m)) = (
        rows.iter()
            .position(|r| r.name.ends_with("syscalls per frame, winsys")),
        rows.iter()
            .position(|r| r.name.ends_with("syscalls per frame, mesa")),
    ) {
        let (wv, mv) = (rows[w].value, rows[m].value);
        rows[w].baseline = "Mesa's WSI (syscalls per frame)".into();
        rows[w].baseline_value = mv;
        rows[w].ratio = wv / mv;
        rows.remove(m);
    }

    report::print_table(&rows);
    let out = report::write(&rows);
    println!("wrote {}", out.display());
    println!("presentation bench done in {:.1?}", started.elapsed());
    if !failures.is_empty() {
        eprintln!("failed configurations (no rows):");
        for f in &failures {
            eprintln!("  {f}");
        }
        std::process::exit(1);
    }
}
