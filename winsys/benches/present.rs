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
//! Compositors, at 256x256 and 1920x1080: weston 14 (gl renderer; FIFO and
//! MAILBOX with winsys's automatic choice — zero-copy wl_shm in FIFO, as
//! weston composes on the CPU, explicit sync in MAILBOX — and forced
//! implicit sync, and FIFO with forced explicit sync), sway 1.12 (drm-syncobj: acquire and release are timeline
//! points; FIFO and MAILBOX) and mutter 48 (FIFO through `wp_fifo_v1`,
//! wl_shm for both). The goals are per compositor class: where the
//! compositor waits for our fences synchronously (weston on llvmpipe, and
//! mutter's software upload of wl_shm) parity with Mesa's WSI (>= 0.95);
//! where it composes asynchronously (sway's drm-syncobj rows and the
//! implicit rows) >= 1.0 at 256x256 and >= 1.5 at 1920x1080.
//!
//! Machines of the same kind differ 3-5x in speed, so a row is a time
//! budget, not a frame count: each compositor's warm-up runs measure the
//! frame rate, and every run of the row then presents about
//! `WINSYS_BENCH_RUN_SECONDS` (default 6) seconds of frames (bounded
//! below so that a slow row still has frames to average). Each row is
//! appended to `$WINSYS_BENCH_OUT` (default `target/bench/results.json`)
//! as soon as it is measured, so a run that is killed keeps what it had;
//! a compositor that died is started again for the next row; every row
//! says how long it took.
//!
//! Run in the VM with `cargo xtask bench present` (needs the cube built in
//! release: xtask does it).

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

use std::path::Path;
use std::time::{Duration, Instant};

use cube::{
    cube_binary, frames_for, fresh_runs, mean, run_cube, run_seconds, selected, syscalls_per_frame,
    Kind, Running,
};
use report::{Row, Rows};

/// One row's configuration: what it is called, the arguments of both
/// WSIs, winsys's own, and the frame-rate goal.
struct Config {
    what: String,
    args: Vec<&'static str>,
    winsys_only: Vec<&'static str>,
    goal: &'static str,
}

/// The rows of one compositor at one size.
fn configs(kind: Kind, size: &'static str, large: bool) -> Vec<Config> {
    let base = vec!["--size", size, "--images", "4", "--timeout", "60"];
    let mailbox = || {
        let mut a = base.clone();
        a.extend(["--present-mode", "mailbox"]);
        a
    };
    // Asynchronous composition: ahead of Mesa's copy, by more at 1080p.
    let ahead = if large { ">= 1.5" } else { ">= 1.0" };
    let config =
        |what: String, args: Vec<&'static str>, winsys_only: &[&'static str], goal| Config {
            what,
            args,
            winsys_only: winsys_only.to_vec(),
            goal,
        };
    match kind {
        // weston's gl renderer on llvmpipe composes synchronously for a
        // surface with an acquire fence or a release request, so winsys's
        // FIFO takes zero-copy wl_shm there: parity is the goal for the
        // automatic choice; implicit sync composes asynchronously (and
        // is a choice, not the default: llvmpipe puts no fence in the
        // dma-buf that proves it finished reading).
        Kind::Weston => vec![
            config(format!("weston FIFO {size}"), base.clone(), &[], ">= 0.95"),
            config(format!("weston MAILBOX {size}"), mailbox(), &[], ">= 0.95"),
            config(
                format!("weston FIFO {size} (winsys implicit)"),
                base.clone(),
                &["--sync", "implicit"],
                ahead,
            ),
            config(
                format!("weston MAILBOX {size} (winsys implicit)"),
                mailbox(),
                &["--sync", "implicit"],
                ahead,
            ),
            config(
                format!("weston FIFO {size} (winsys explicit)"),
                base.clone(),
                &["--sync", "explicit"],
                "-",
            ),
        ],
        Kind::Sway => vec![
            config(
                format!("sway FIFO {size} (drm-syncobj)"),
                base.clone(),
                &[],
                ahead,
            ),
            config(
                format!("sway MAILBOX {size} (drm-syncobj)"),
                mailbox(),
                &[],
                ahead,
            ),
        ],
        // mutter's llvmpipe crashes on a second imported dma-buf here: its
        // winsys rows are the wl_shm path (as Mesa's are; winsys without a
        // copy).
        Kind::Mutter => vec![config(
            format!("mutter FIFO (wp_fifo_v1) {size}"),
            base.clone(),
            &["--sync", "shm"],
            ">= 0.95",
        )],
    }
}

/// One short run of each WSI on a freshly started compositor, figures
/// dropped: the first cube on a compositor pays for what every later one
/// finds ready (the driver's shader JIT and cache, the compositor's
/// shaders and first imports; measured here: a first 60-frame FIFO run at
/// 21 fps and 18 ms CPU per frame, the next ones at 34-36 fps and 8-10 ms),
/// and would otherwise always fall on the same WSI's first run. Returns
/// the lower of the two frame rates: what the row budgets are sized by.
fn warm_up(
    cube: &Path,
    socket: &str,
    size: &'static str,
    frames: u32,
    winsys_only: &[&str],
) -> Option<f64> {
    let n = frames.to_string();
    let mut slowest: Option<f64> = None;
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
        match run_cube(cube, socket, &args) {
            Ok(f) => slowest = Some(slowest.map_or(f.fps, |s| s.min(f.fps))),
            Err(e) => println!("warm-up {wsi} {size}: {e}"),
        }
    }
    slowest
}

/// How one configuration ended.
enum Outcome {
    /// Its rows, and the lower frame rate of the two WSIs (the next
    /// row's budget is sized by it).
    Rows(Vec<Row>, f64),
    /// The baseline failed (Mesa's WSI on mutter sometimes times out in
    /// vkAcquireNextImageKHR here): no rows, not a failure of winsys.
    NoBaseline(String),
    /// A winsys run failed.
    Failed(String),
}

/// The rows of one configuration: winsys and Mesa interleaved, `frames`
/// frames each.
fn compare(cube: &Path, socket: &str, c: &Config, frames: u32) -> Outcome {
    let n = frames.to_string();
    let mut common = vec!["--frames", n.as_str()];
    common.extend_from_slice(&c.args);
    let with = |wsi: &'static str| {
        let mut a = common.clone();
        a.extend_from_slice(&["--wsi", wsi]);
        if wsi == "winsys" {
            a.extend_from_slice(&c.winsys_only);
        }
        a
    };
    // Once a run failed, the row's outcome is known: the runs left are
    // not made (a stalled run costs minutes).
    let w1 = run_cube(cube, socket, &with("winsys"));
    let m1 = w1
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|_| run_cube(cube, socket, &with("mesa")));
    let m2 = match &m1 {
        Ok(_) => run_cube(cube, socket, &with("mesa")),
        Err(e) => Err(e.clone()),
    };
    let w2 = match (&w1, &m2) {
        (Ok(_), Ok(_)) => run_cube(cube, socket, &with("winsys")),
        (Err(e), _) => Err(e.clone()),
        // The baseline failed: the row has no rows either way.
        (Ok(a), Err(_)) => Ok(*a),
    };
    let w = match (w1, w2) {
        (Ok(a), Ok(b)) => mean(a, b),
        (Err(e), _) | (_, Err(e)) => return Outcome::Failed(e),
    };
    let m = match (m1, m2) {
        (Ok(a), Ok(b)) => mean(a, b),
        (Err(e), _) | (_, Err(e)) => {
            return Outcome::NoBaseline(format!("{e} (winsys: {w:?})"));
        }
    };
    println!("{}: winsys {w:?}, mesa {m:?}", c.what);
    let row = |name: &str, unit: &'static str, v: f64, b: f64, goal: &'static str| Row {
        spread: None,
        name: format!("cube {}: {name}, winsys", c.what),
        value: v,
        unit,
        baseline: format!("Mesa's WSI ({name})"),
        baseline_value: b,
        ratio: if b > 0.0 { v / b } else { f64::NAN },
        goal,
    };
    let mut rows = vec![
        row("frames per second", "fps", w.fps, m.fps, c.goal),
        row("CPU time per frame", "ms", w.cpu_ms, m.cpu_ms, "-"),
    ];
    if let (Some(wl), Some(ml)) = (w.latency_ms, m.latency_ms) {
        rows.push(row("commit-to-presentation latency", "ms", wl, ml, "-"));
    }
    Outcome::Rows(rows, w.fps.min(m.fps))
}

/// The syscall row of weston FIFO at `size`: winsys's count over Mesa's.
fn syscall_row(cube: &Path, socket: &str, size: &'static str) -> Option<Row> {
    let base = ["--size", size, "--images", "4", "--timeout", "60"];
    let mut per = Vec::new();
    for wsi in ["winsys", "mesa"] {
        let mut a = base.to_vec();
        a.extend(["--wsi", wsi]);
        let n = syscalls_per_frame(cube, socket, &a, 60);
        println!("syscalls per frame, weston FIFO {size}, {wsi}: {n:?}");
        per.push(n?);
    }
    Some(Row {
        spread: None,
        name: format!("cube weston FIFO {size}: syscalls per frame, winsys"),
        value: per[0],
        unit: "calls",
        baseline: "Mesa's WSI (syscalls per frame)".into(),
        baseline_value: per[1],
        ratio: per[0] / per[1],
        // Start-up included (60 frames): what a steady frame costs is
        // measured apart (docs/benchmarks.md).
        goal: "-",
    })
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test` runs benches without --bench: nothing to do.
        return;
    }
    let started = Instant::now();
    let cube = cube_binary();
    let seconds = run_seconds();
    let mut all_rows = Rows::default(); // each row written as it is measured
    let mut failures = Vec::new();
    let mut took: Vec<(String, Duration)> = Vec::new();
    println!("presentation bench: about {seconds} s of frames per run, 4 runs per row");

    for (size, (w, h), warm, (min, max)) in [
        ("256x256", (256, 256), 30, (30, 600)),
        ("1920x1080", (1920, 1080), 3, (6, 120)),
    ] {
        for kind in [Kind::Weston, Kind::Sway, Kind::Mutter] {
            if !selected(kind, size) {
                continue;
            }
            // Mutter and weston take wl_shm from winsys's warm-up the way
            // their rows do; sway its default (drm-syncobj).
            let warm_args: &[&str] = if kind == Kind::Mutter {
                &["--sync", "shm"]
            } else {
                &[]
            };
            let t = Instant::now();
            fresh_runs(kind, w, h);
            let mut comp = match Running::start(kind, w, h) {
                Ok(c) => c,
                Err(e) => {
                    println!("{kind:?} {size}: FAILED to start: {e}");
                    failures.push(format!("{kind:?} {size}: cannot start: {e}"));
                    continue;
                }
            };
            let mut fps = warm_up(&cube, comp.socket(), size, warm, warm_args);
            println!(
                "{kind:?} {size}: warm-up in {:.1?}, {fps:?} fps",
                t.elapsed()
            );
            if kind == Kind::Weston && size == "256x256" {
                if let Some(row) = syscall_row(&cube, comp.socket(), size) {
                    all_rows.push(row);
                }
            }
            for c in configs(kind, size, h > 256) {
                let t = Instant::now();
                let mut outcome = None;
                for attempt in 1..=2 {
                    if !comp.alive() {
                        println!("{kind:?} died: starting it again for {}", c.what);
                        match Running::start(kind, w, h) {
                            Ok(new) => comp = new,
                            Err(e) => {
                                outcome = Some(Outcome::Failed(format!("restart: {e}")));
                                break;
                            }
                        }
                        fps = warm_up(&cube, comp.socket(), size, warm, warm_args).or(fps);
                    }
                    let frames = frames_for(fps, seconds, min, max);
                    let o = compare(&cube, comp.socket(), &c, frames);
                    // A run that failed because the compositor died is
                    // tried once more on a new one.
                    let retry = !matches!(o, Outcome::Rows(..)) && !comp.alive() && attempt == 1;
                    outcome = Some(o);
                    if !retry {
                        break;
                    }
                }
                let dt = t.elapsed();
                match outcome {
                    Some(Outcome::Rows(rows, measured)) => {
                        // A warm-up run's rate is low (it pays for the
                        // driver's first compiles): the rows measure better.
                        fps = Some(measured);
                        for r in rows {
                            all_rows.push(r);
                        }
                        println!("{}: row done in {dt:.1?} (written)", c.what);
                    }
                    Some(Outcome::NoBaseline(e)) => {
                        println!("{}: no rows, the baseline failed: {e} ({dt:.1?})", c.what);
                    }
                    Some(Outcome::Failed(e)) => {
                        println!("{}: FAILED: {e} ({dt:.1?})", c.what);
                        failures.push(format!("{}: {e}", c.what));
                    }
                    None => {}
                }
                took.push((c.what.clone(), dt));
            }
        }
    }

    report::print_table(&all_rows);
    println!();
    println!("time per row:");
    for (what, dt) in &took {
        println!("  {what:<48} {dt:>8.1?}");
    }
    println!("rows in {}", report::out_path().display());
    println!("presentation bench done in {:.1?}", started.elapsed());
    if !failures.is_empty() {
        eprintln!("failed configurations (no rows):");
        for f in &failures {
            eprintln!("  {f}");
        }
        std::process::exit(1);
    }
}
