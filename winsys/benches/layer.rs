//! The Vulkan layer's benchmark (`cargo xtask bench layer`): the same
//! unmodified program with and without `VK_LAYER_WINSYS_wsi`, on the same
//! compositor, size, present mode and frame budget, in one run.
//!
//! Rows, per compositor (weston 14 gl: zero-copy wl_shm in FIFO, as it
//! composes on the CPU, explicit sync in MAILBOX; sway 1.12:
//! drm-syncobj; mutter 48: wl_shm, as its other rows — its llvmpipe crashes
//! on imported dma-bufs here), size (256x256, 1920x1080) and present mode
//! (FIFO, MAILBOX):
//!
//! - the cube example's `--wsi mesa` path (plain `VK_KHR_swapchain`)
//!   through the layer over the same without it (the driver's WSI):
//!   frames per second in the steady state — after a fifth of the run, at
//!   most 30 frames, and after each of its images was presented once (4
//!   asked; 6 made over explicit sync in MAILBOX), so that start-up,
//!   first compiles, the first recreation and the
//!   swapchain's fill weigh on neither side (the `--wsi mesa` path makes
//!   its swapchain inside the timed frames, the `--wsi winsys` path before
//!   them; the driver's WSI queues presents ahead of the compositor in the
//!   fill) — (goal: parity, >= 0.95, on weston and mutter,
//!   whose composition on the CPU is the bottleneck here; >= 1.0 on sway,
//!   >= 1.5 at 1920x1080) and latency from commit to presentation;
//! - CPU time per steady-state frame through the layer over the cube's
//!   own `--wsi winsys` path (goal <= 1.05: the layer costs nothing winsys's own
//!   swapchain does not);
//! - vkcube (vulkan-tools), timed: its frames per second with the layer
//!   over without (FIFO; start-up included in both, after an untimed
//!   two-frame run of each, so that vkcube's first shader compiles fall on
//!   neither);
//! - system calls per steady-state frame (weston and sway, 256x256, FIFO):
//!   the difference of two `strace -f -c` runs of 30 and 90 frames, with
//!   the layer over without (goal <= 1.0).
//!
//! Runs are interleaved in two rounds (layer, driver, winsys, then
//! winsys, driver, layer), each about `WINSYS_BENCH_RUN_SECONDS` (default
//! 6) seconds of frames, sized by the warm-up's rate. A row's ratio is of
//! the two rounds' means; its `ratio_low`/`ratio_high` are the rounds' own
//! ratios, and its verdict says `met` or `missed` only when both rounds
//! agree, `undecided` when the goal lies between them (run-to-run noise
//! on a shared TCG machine reaches 15-30%). Every row is appended to
//! `$WINSYS_BENCH_OUT` (default `target/bench/results.json`) as it is
//! measured.

#[path = "common/cube.rs"]
mod cube;
#[path = "common/report.rs"]
mod report;

#[path = "../../tests/common/mutter.rs"]
#[allow(dead_code)]
mod mutter;
#[path = "../../tests/common/sway.rs"]
#[allow(dead_code)]
mod sway;
#[path = "../../tests/common/weston.rs"]
#[allow(dead_code)]
mod weston;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cube::{
    cube_binary, frames_for, fresh_runs, mean, run_cube_env, run_program, run_seconds, selected,
    syscalls, Figures, Kind, Running,
};
use report::{Row, Rows};

const LAYER: &str = "VK_LAYER_WINSYS_wsi";

/// The layer installed (as an explicit layer) in a directory of its own,
/// by the release `winsys` beside the cube.
fn install_layer(cube: &Path) -> PathBuf {
    let release = cube
        .parent()
        .and_then(Path::parent)
        .expect("target/release");
    let dir = std::env::temp_dir().join(format!("winsys-bench-layer-{}", std::process::id()));
    let out = std::process::Command::new(release.join("winsys"))
        .args(["layer", "install", "--explicit", "--dir"])
        .arg(&dir)
        .output()
        .expect("run winsys layer install");
    assert!(
        out.status.success(),
        "winsys layer install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// What a run presents through.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Via {
    /// `--wsi mesa` through the layer.
    Layer,
    /// `--wsi mesa`: the driver's WSI.
    Driver,
    /// `--wsi winsys`: winsys's own swapchain.
    Winsys,
}

struct Bench {
    cube: PathBuf,
    layer_dir: String,
    rows: Rows,
    failures: Vec<String>,
}

impl Bench {
    fn env(&self, path: Via, kind: Kind) -> Vec<(&'static str, String)> {
        let mut env = Vec::new();
        if path == Via::Layer {
            env.push(("VK_ADD_LAYER_PATH", self.layer_dir.clone()));
            env.push(("VK_INSTANCE_LAYERS", LAYER.to_string()));
            if kind == Kind::Mutter {
                env.push(("WINSYS_LAYER_SYNC", "shm".to_string()));
            }
        }
        env
    }

    fn cube_run(
        &self,
        socket: &str,
        kind: Kind,
        path: Via,
        args: &[&str],
    ) -> Result<Figures, String> {
        let mut all = args.to_vec();
        match path {
            Via::Layer | Via::Driver => all.extend(["--wsi", "mesa"]),
            Via::Winsys => {
                all.extend(["--wsi", "winsys"]);
                if kind == Kind::Mutter {
                    all.extend(["--sync", "shm"]);
                }
            }
        }
        let env = self.env(path, kind);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_cube_env(&self.cube, socket, &all, &env)
    }

    /// A row of `v` over `b` (means of the rounds), with the spread of the
    /// rounds' own ratios (`vs` over `bs`, round by round).
    fn row(
        &mut self,
        name: String,
        unit: &'static str,
        (v, vs): (f64, &[f64]),
        base: &str,
        (b, bs): (f64, &[f64]),
        goal: &'static str,
    ) {
        self.rows.push(Row {
            name,
            value: v,
            unit,
            baseline: base.into(),
            baseline_value: b,
            ratio: if b > 0.0 { v / b } else { f64::NAN },
            goal,
            spread: report::spread(vs, bs),
        });
    }

    /// The cube rows of one compositor, size and present mode.
    fn cube_rows(
        &mut self,
        socket: &str,
        kind: Kind,
        what: &str,
        args: &[&str],
        goal: &'static str,
    ) -> Option<f64> {
        let mut figures: Vec<(Via, Figures)> = Vec::new();
        for path in [
            Via::Layer,
            Via::Driver,
            Via::Winsys,
            Via::Winsys,
            Via::Driver,
            Via::Layer,
        ] {
            match self.cube_run(socket, kind, path, args) {
                Ok(f) => figures.push((path, f)),
                Err(e) => {
                    println!("{what}: {path:?}: {e}");
                    self.failures.push(format!("{what} ({path:?}): {e}"));
                    return None;
                }
            }
        }
        // The runs of one path, round by round (round 1: the first three
        // runs, round 2: the last three; each path runs once in each).
        let runs = |p: Via| -> Vec<Figures> {
            figures
                .iter()
                .filter(|(q, _)| *q == p)
                .map(|(_, f)| *f)
                .collect()
        };
        let (ls, ds, ws) = (runs(Via::Layer), runs(Via::Driver), runs(Via::Winsys));
        let (l, d, w) = (mean(ls[0], ls[1]), mean(ds[0], ds[1]), mean(ws[0], ws[1]));
        println!("{what}: layer {l:?}, driver {d:?}, winsys {w:?}");
        let fps: Vec<f64> = ls.iter().map(Figures::steady_fps).collect();
        let base_fps: Vec<f64> = ds.iter().map(Figures::steady_fps).collect();
        let cpu: Vec<f64> = ls.iter().map(Figures::steady_cpu_ms).collect();
        let base_cpu: Vec<f64> = ws.iter().map(Figures::steady_cpu_ms).collect();
        // Steady state: start-up (the swapchain's creation is inside the
        // timed frames of the `--wsi mesa` path, outside them on the
        // `--wsi winsys` path) and first compiles left out of both.
        self.row(
            format!("layer {what}: frames per second (steady), cube through the layer"),
            "fps",
            (l.steady_fps(), &fps),
            "the driver's WSI (fps)",
            (d.steady_fps(), &base_fps),
            goal,
        );
        self.row(
            format!("layer {what}: CPU time per frame (steady), cube through the layer"),
            "ms",
            (l.steady_cpu_ms(), &cpu),
            "winsys's own swapchain (CPU ms/frame)",
            (w.steady_cpu_ms(), &base_cpu),
            "<= 1.05",
        );
        if let (Some(a), Some(b)) = (l.latency_ms, d.latency_ms) {
            let lat = |v: &[Figures]| -> Vec<f64> {
                v.iter().map(|f| f.latency_ms.unwrap_or(f64::NAN)).collect()
            };
            self.row(
                format!("layer {what}: commit-to-presentation latency, cube through the layer"),
                "ms",
                (a, &lat(&ls)),
                "the driver's WSI (latency)",
                (b, &lat(&ds)),
                "-",
            );
        }
        Some(l.fps.min(d.fps))
    }

    /// One vkcube run through `path` (the layer or the driver's WSI): its
    /// output and wall time.
    fn vkcube(
        &self,
        socket: &str,
        kind: Kind,
        path: Via,
        args: &[&str],
    ) -> Result<(String, Duration), String> {
        let env = self.env(path, kind);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_program(Path::new("vkcube"), socket, args, &env)
    }

    /// vkcube timed with and without the layer: `frames` frames each.
    fn vkcube_row(
        &mut self,
        socket: &str,
        kind: Kind,
        what: &str,
        size: (u32, u32),
        frames: u32,
        goal: &'static str,
    ) {
        let (w, h, n) = (size.0.to_string(), size.1.to_string(), frames.to_string());
        let args = ["--wsi", "wayland", "--width", &w, "--height", &h, "--c", &n];
        // Warm-up, untimed: vkcube's first run compiles its pipelines into
        // Mesa's shader cache (about 3.5 s at 256x256 on this bed, on
        // either path), which would otherwise fall on the first timed run.
        let warm = [
            "--wsi", "wayland", "--width", &w, "--height", &h, "--c", "2",
        ];
        for path in [Via::Driver, Via::Layer] {
            if let Err(e) = self.vkcube(socket, kind, path, &warm) {
                println!("{what}: vkcube warm-up {path:?}: {e}");
            }
        }
        let mut fps = Vec::new();
        for path in [Via::Layer, Via::Driver, Via::Driver, Via::Layer] {
            match self.vkcube(socket, kind, path, &args) {
                Ok((_, t)) => fps.push((path, f64::from(frames) / t.as_secs_f64())),
                Err(e) => {
                    println!("{what}: vkcube {path:?}: {e}");
                    self.failures.push(format!("{what} vkcube ({path:?}): {e}"));
                    return;
                }
            }
        }
        // Round by round: L D, then D L.
        let of = |p: Via| -> Vec<f64> {
            fps.iter()
                .filter(|(q, _)| *q == p)
                .map(|(_, f)| *f)
                .collect()
        };
        let avg = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (l, d) = (of(Via::Layer), of(Via::Driver));
        self.row(
            format!(
                "layer {what}: vkcube frames per second (start-up included), through the layer"
            ),
            "fps",
            (avg(&l), &l),
            "the driver's WSI (vkcube fps)",
            (avg(&d), &d),
            goal,
        );
    }

    /// System calls per steady-state frame of the cube (FIFO), with the
    /// layer over without: 90-frame run minus 30-frame run.
    fn syscall_row(&mut self, socket: &str, kind: Kind, what: &str, size: &str) {
        let mut per = Vec::new();
        for path in [Via::Layer, Via::Driver] {
            let env = self.env(path, kind);
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let count = |frames: &str| {
                let args = [
                    "--wsi",
                    "mesa",
                    "--size",
                    size,
                    "--timeout",
                    "60",
                    "--frames",
                    frames,
                ];
                syscalls(&self.cube, socket, &args, &env)
            };
            match (count("30"), count("90")) {
                (Some(a), Some(b)) => per.push((b - a) / 60.0),
                _ => {
                    println!("{what}: strace of {path:?} failed");
                    return;
                }
            }
        }
        println!(
            "{what}: syscalls per steady frame: layer {:.1}, driver {:.1}",
            per[0], per[1]
        );
        self.row(
            format!("layer {what}: system calls per steady-state frame, cube through the layer"),
            "calls",
            (per[0], &[]),
            "the driver's WSI (calls per frame)",
            (per[1], &[]),
            "<= 1.0",
        );
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test` runs benches without --bench: nothing to do.
        return;
    }
    let started = Instant::now();
    let cube = cube_binary();
    let layer_dir = install_layer(&cube).display().to_string();
    let seconds = run_seconds();
    let mut bench = Bench {
        cube,
        layer_dir,
        rows: Rows::default(),
        failures: Vec::new(),
    };
    let mut took: Vec<(String, Duration)> = Vec::new();
    println!("layer bench: about {seconds} s of frames per run, 6 runs per row");
    for (size, (w, h), warm, (min, max)) in [
        ("256x256", (256u32, 256u32), 30u32, (30u32, 600u32)),
        // At least 6 frames after the 6 of the swapchain's fill (MAILBOX
        // over explicit sync; the cube's steady state starts after them).
        ("1920x1080", (1920, 1080), 3, (12, 120)),
    ] {
        for kind in [Kind::Weston, Kind::Sway, Kind::Mutter] {
            if !selected(kind, size) {
                continue;
            }
            let t = Instant::now();
            fresh_runs(kind, w, h);
            let comp = match Running::start(kind, w, h) {
                Ok(c) => c,
                Err(e) => {
                    println!("{kind:?} {size}: FAILED to start: {e}");
                    bench
                        .failures
                        .push(format!("{kind:?} {size}: cannot start: {e}"));
                    continue;
                }
            };
            let socket = comp.socket().to_string();
            // Warm-up: one short run of each path (the first run on a
            // compositor pays for the driver's and compositor's first
            // compiles); the slowest rate sizes the runs.
            let n = warm.to_string();
            let warm_args = ["--size", size, "--timeout", "60", "--frames", &n];
            let mut fps: Option<f64> = None;
            for path in [Via::Layer, Via::Driver, Via::Winsys] {
                match bench.cube_run(&socket, kind, path, &warm_args) {
                    Ok(f) => fps = Some(fps.map_or(f.fps, |s: f64| s.min(f.fps))),
                    Err(e) => println!("warm-up {kind:?} {size} {path:?}: {e}"),
                }
            }
            println!(
                "{kind:?} {size}: warm-up in {:.1?}, {fps:?} fps",
                t.elapsed()
            );
            // Asynchronous composition (sway): ahead of the driver's copy.
            let goal = match (kind, h > 256) {
                (Kind::Sway, true) => ">= 1.5",
                (Kind::Sway, false) => ">= 1.0",
                _ => ">= 0.95",
            };
            let name = format!("{kind:?}").to_lowercase();
            for mode in ["fifo", "mailbox"] {
                let t = Instant::now();
                let frames = frames_for(fps, seconds, min, max).to_string();
                let args = [
                    "--size",
                    size,
                    "--images",
                    "4",
                    "--timeout",
                    "60",
                    "--present-mode",
                    mode,
                    "--frames",
                    &frames,
                ];
                let what = format!("{name} {} {size}", mode.to_uppercase());
                if let Some(measured) = bench.cube_rows(&socket, kind, &what, &args, goal) {
                    fps = Some(measured);
                }
                took.push((what, t.elapsed()));
            }
            let t = Instant::now();
            let what = format!("{name} FIFO {size}");
            let frames = frames_for(fps, seconds, min, max);
            bench.vkcube_row(&socket, kind, &what, (w, h), frames, goal);
            if h == 256 && kind != Kind::Mutter {
                bench.syscall_row(&socket, kind, &what, size);
            }
            took.push((format!("{what} (vkcube, syscalls)"), t.elapsed()));
            drop(comp);
        }
    }
    report::print_table(&bench.rows);
    println!();
    println!("time per row:");
    for (what, dt) in &took {
        println!("  {what:<48} {dt:>8.1?}");
    }
    println!("rows in {}", report::out_path().display());
    println!("layer bench done in {:.1?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&bench.layer_dir);
    if !bench.failures.is_empty() {
        eprintln!("failed configurations (no rows):");
        for f in &bench.failures {
            eprintln!("  {f}");
        }
        std::process::exit(1);
    }
}
