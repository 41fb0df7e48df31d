//! The Vulkan layer `VK_LAYER_WINSYS_wsi` (crate `winsys-layer`) under
//! unmodified apps, with the Khronos validation layer stacked above it
//! (its errors fail a test): vkcube (vulkan-tools) and the cube example's
//! `--wsi mesa` path (plain `VK_KHR_swapchain` through ash) on weston
//! (explicit sync), sway 1.12 (drm-syncobj), mutter (wl_shm, forced:
//! its llvmpipe crashes on imported dma-bufs here), pixman weston
//! (wl_shm) and the reference compositor (drm-syncobj). Each run proves
//! the frames came through winsys: the layer's report
//! (`WINSYS_LAYER_REPORT`) names the swapchain's sync mode and counts its
//! frames, and the compositor's output is read back while it shows the
//! app's picture.
//!
//! Also: a window system the layer does not serve (a headless surface)
//! and every non-WSI call behave as without it; a recreated swapchain
//! (`oldSwapchain`) hands the surface over; a killed compositor is a lost
//! surface within 1 s, never a hang; 2,000 frames leave fds and memory
//! flat.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::compositor::Compositor;
use common::mutter::Mutter;
use common::need;
use common::sway::Sway;
use common::weston::{capture, Shot, Weston};

const LAYER: &str = "VK_LAYER_WINSYS_wsi";

/// The layer installed as an explicit layer in a directory of its own
/// (by `winsys layer install`), and the report file its apps write.
struct Layer {
    dir: PathBuf,
    report: PathBuf,
}

impl Layer {
    fn install() -> Layer {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "winsys-layer-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let out = Command::new(common::built("", "winsys"))
            .args(["layer", "install", "--explicit", "--dir"])
            .arg(&dir)
            .output()
            .expect("run winsys layer install");
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "winsys layer install: {said}");
        let manifest = dir.join("VkLayer_winsys.json");
        let text = std::fs::read_to_string(&manifest).expect("the manifest");
        assert!(text.contains(LAYER), "{text}");
        println!("{said}");
        let report = dir.join("report.jsonl");
        Layer { dir, report }
    }

    /// The environment that puts an app on the layer, validation above it.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("VK_ADD_LAYER_PATH", self.dir.display().to_string()),
            (
                "VK_INSTANCE_LAYERS",
                format!("VK_LAYER_KHRONOS_validation:{LAYER}"),
            ),
            ("WINSYS_LAYER_REPORT", self.report.display().to_string()),
        ]
    }

    /// The report's lines of process `pid`.
    fn events(&self, pid: u32) -> Vec<String> {
        let text = std::fs::read_to_string(&self.report).unwrap_or_default();
        let tag = format!("\"pid\":{pid},");
        text.lines()
            .filter(|l| l.contains(&tag))
            .map(String::from)
            .collect()
    }
}

impl Drop for Layer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `"key":value` of a flat JSON line, quotes trimmed.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &line[at..];
    let end = if let Some(s) = rest.strip_prefix('"') {
        return s.split('"').next();
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(&rest[..end])
}

/// Wait for `child` at most `limit` (killed after it): its output.
fn finish(mut child: Child, limit: Duration) -> (Output, bool) {
    let t = Instant::now();
    let mut in_time = true;
    while matches!(child.try_wait(), Ok(None)) {
        if t.elapsed() > limit {
            in_time = false;
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (child.wait_with_output().unwrap(), in_time)
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Start `program` on `socket` through the layer.
fn spawn(
    layer: &Layer,
    socket: &str,
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Child {
    Command::new(program)
        .args(args)
        .envs(layer.env())
        .envs(env.iter().copied())
        .env("WAYLAND_DISPLAY", socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()))
}

/// vkcube at 256x256 (the size of the test compositors' outputs).
fn vkcube_args(frames: u32) -> Vec<String> {
    [
        "--wsi", "wayland", "--width", "256", "--height", "256", "--c",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([frames.to_string()])
    .collect()
}

/// The report's checks of one app run: one swapchain (at least) created
/// and destroyed in `sync` mode, `frames` presented in all.
fn assert_reported(layer: &Layer, pid: u32, sync: &str, frames: u64, said: &str) {
    let events = layer.events(pid);
    println!("layer report of {pid}:\n{}", events.join("\n"));
    let created: Vec<_> = events
        .iter()
        .filter(|l| field(l, "event") == Some("create"))
        .collect();
    let destroyed: Vec<_> = events
        .iter()
        .filter(|l| field(l, "event") == Some("destroy"))
        .collect();
    assert!(
        !created.is_empty(),
        "no swapchain through the layer:\n{said}"
    );
    assert_eq!(created.len(), destroyed.len(), "every swapchain destroyed");
    for l in &created {
        assert_eq!(field(l, "sync"), Some(sync), "{l}");
    }
    let total: u64 = destroyed
        .iter()
        .map(|l| field(l, "frames").unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, frames, "frames presented through the layer");
}

fn assert_no_validation_errors(said: &str) {
    assert!(
        !said.contains("Validation Error"),
        "the validation layer reported errors:\n{said}"
    );
}

/// vkcube presents `frames` frames through the layer and exits 0, the
/// validation layer silent; the report shows `sync`.
fn vkcube_runs(layer: &Layer, socket: &str, sync: &str, frames: u32, env: &[(&str, &str)]) {
    let args = vkcube_args(frames);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = spawn(layer, socket, Path::new("vkcube"), &args, env);
    let pid = child.id();
    let (out, in_time) = finish(child, Duration::from_secs(300));
    let said = text(&out);
    println!("vkcube {args:?}:\n{said}");
    assert!(in_time, "vkcube did not finish within 300 s");
    assert!(out.status.success(), "vkcube failed: {}", out.status);
    assert_no_validation_errors(&said);
    assert_reported(layer, pid, sync, u64::from(frames), &said);
}

/// A picture read back: width, height, and the pixel at (x, y).
type Picture = (u32, u32, Box<dyn Fn(u32, u32) -> u32>);

/// Distinct colours of a picture.
fn colours(width: u32, height: u32, pixel: impl Fn(u32, u32) -> u32) -> usize {
    let mut seen = std::collections::HashSet::new();
    for y in 0..height {
        for x in 0..width {
            seen.insert(pixel(x, y) & 0xff_ffff);
        }
    }
    seen.len()
}

/// vkcube's picture: its textured cube has many colours (a clear-colour
/// frame, or nothing, has one or two).
const VKCUBE_COLOURS: usize = 40;

/// vkcube runs (through the layer) until `grab` reads the compositor's
/// output back showing its picture; then it is stopped.
fn vkcube_is_shown(
    layer: &Layer,
    socket: &str,
    env: &[(&str, &str)],
    grab: impl Fn() -> Option<Picture>,
) {
    let args = vkcube_args(1_000_000);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = spawn(layer, socket, Path::new("vkcube"), &args, env);
    let t = Instant::now();
    let mut last = 0;
    let shown = loop {
        if t.elapsed() > Duration::from_secs(120) {
            break false;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("vkcube exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(500));
        if let Some((w, h, pixel)) = grab() {
            last = colours(w, h, pixel);
            if last >= VKCUBE_COLOURS {
                break true;
            }
        }
    };
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let said = text(&out);
    println!("vkcube until shown:\n{said}");
    assert_no_validation_errors(&said);
    assert!(
        shown,
        "the output never showed vkcube's picture (last: {last} colours)"
    );
    println!("the compositor shows vkcube's picture ({last} colours)");
}

fn shot(s: Shot) -> Option<Picture> {
    let (w, h) = (s.width, s.height);
    Some((w, h, Box::new(move |x, y| s.pixel(x, y))))
}

#[test]
fn vkcube_through_the_layer_on_weston_gl_with_explicit_sync() {
    let _one = common::one_at_a_time();
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let layer = Layer::install();
    vkcube_runs(&layer, &weston.socket, "explicit", 30, &[]);
    let conn = winsys::wayland::connect(Some(&weston.socket)).unwrap();
    vkcube_is_shown(&layer, &weston.socket, &[], || {
        capture(&conn).ok().and_then(shot)
    });
}

#[test]
fn vkcube_through_the_layer_on_pixman_weston_with_wl_shm() {
    let _one = common::one_at_a_time();
    let weston = need!(Weston::start("pixman"), "weston (pixman renderer)");
    let layer = Layer::install();
    vkcube_runs(&layer, &weston.socket, "shm", 30, &[]);
    let conn = winsys::wayland::connect(Some(&weston.socket)).unwrap();
    vkcube_is_shown(&layer, &weston.socket, &[], || {
        capture(&conn).ok().and_then(shot)
    });
}

#[test]
fn vkcube_through_the_layer_on_sway_with_drm_syncobj() {
    let _one = common::one_at_a_time();
    let sway = need!(Sway::start(), "sway 1.12 on virtio-gpu");
    let layer = Layer::install();
    vkcube_runs(&layer, &sway.socket, "syncobj", 30, &[]);
    vkcube_is_shown(&layer, &sway.socket, &[], || {
        common::sway::screencopy(&sway.socket).ok().and_then(shot)
    });
}

#[test]
fn vkcube_through_the_layer_on_mutter_with_wl_shm() {
    let _one = common::one_at_a_time();
    let mutter = need!(Mutter::start(), "mutter");
    let layer = Layer::install();
    // mutter 48's llvmpipe crashes on a second imported dma-buf here (see
    // tests/swapchain.rs): the layer is told to use wl_shm, as the other
    // mutter tests force it. mutter paces with wp_fifo_v1.
    let shm = [("WINSYS_LAYER_SYNC", "shm")];
    vkcube_runs(&layer, &mutter.socket, "shm", 30, &shm);
    let report = std::fs::read_to_string(&layer.report).unwrap_or_default();
    let created = report
        .lines()
        .find(|l| field(l, "event") == Some("create"))
        .unwrap();
    assert_eq!(field(created, "fifo_protocol"), Some("true"), "{created}");
}

#[test]
fn vkcube_through_the_layer_on_the_reference_compositor() {
    let _one = common::one_at_a_time();
    let c = need!(Compositor::start(&[]), "the reference compositor");
    let layer = Layer::install();
    vkcube_runs(&layer, &c.socket, "syncobj", 30, &[]);
    vkcube_is_shown(&layer, &c.socket, &[], || {
        c.output().map(|png| {
            let (w, h) = (png.width, png.height);
            let pixel: Box<dyn Fn(u32, u32) -> u32> = Box::new(move |x, y| png.pixel(x, y));
            (w, h, pixel)
        })
    });
    let s = c.stats().unwrap();
    assert_eq!(s.protocol_errors, 0, "{}", c.log_text());
}

/// The cube example's `--wsi mesa` run through the layer; its JSON line.
fn mesa_cube(layer: &Layer, socket: &str, args: &[&str]) -> (u32, String, String) {
    let mut all = vec!["--wsi", "mesa", "--json", "--validation", "--timeout", "30"];
    all.extend_from_slice(args);
    let child = spawn(layer, socket, &common::built("examples", "cube"), &all, &[]);
    let pid = child.id();
    let (out, in_time) = finish(child, Duration::from_secs(300));
    let said = text(&out);
    println!("cube {all:?}:\n{said}");
    assert!(in_time, "the cube did not finish within 300 s");
    assert!(out.status.success(), "the cube failed: {}", out.status);
    assert_no_validation_errors(&said);
    let json = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    (pid, json, said)
}

#[test]
fn the_cube_through_vk_khr_swapchain_presents_through_the_layer() {
    let _one = common::one_at_a_time();
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let layer = Layer::install();
    let (pid, json, said) = mesa_cube(&layer, &weston.socket, &["--frames", "30"]);
    assert_eq!(field(&json, "wsi"), Some("mesa"), "{json}");
    assert_eq!(field(&json, "frames"), Some("30"), "{json}");
    assert_reported(&layer, pid, "explicit", 30, &said);
    // What weston shows: the example's own pixel check (only the clear
    // colour and exact face colours, several faces).
    let conn = winsys::wayland::connect(Some(&weston.socket)).unwrap();
    let all = ["--wsi", "mesa", "--frames", "100000", "--timeout", "30"];
    let mut child = spawn(
        &layer,
        &weston.socket,
        &common::built("examples", "cube"),
        &all,
        &[],
    );
    let t = Instant::now();
    let mut last = String::new();
    let faces = loop {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "weston never showed a cube frame: {last}"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the cube exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(500));
        let shot = capture(&conn).unwrap();
        let (w, h) = (shot.width.min(256), shot.height.min(256));
        match common::cube_frame(w, h, |x, y| shot.pixel(x, y)) {
            Ok(f) => break f,
            Err(what) => last = what,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    println!("weston shows a cube frame through the layer: face pixels {faces:?}");
}

#[test]
fn a_headless_surface_and_every_other_call_pass_through_untouched() {
    let probe = common::built("examples", "vkprobe");
    let run = |layer: Option<&Layer>| {
        let mut cmd = Command::new(&probe);
        if let Some(l) = layer {
            cmd.envs(l.env());
        }
        let out = cmd.output().expect("run vkprobe");
        let said = text(&out);
        println!("vkprobe (layer: {}):\n{said}", layer.is_some());
        assert!(out.status.success(), "vkprobe failed: {said}");
        assert_no_validation_errors(&said);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap()
            .to_string()
    };
    let without = run(None);
    let layer = Layer::install();
    let with = run(Some(&layer));
    for key in [
        "device",
        "copy",
        "headless_frames",
        "headless_images",
        "present_modes",
    ] {
        assert_eq!(
            field(&with, key),
            field(&without, key),
            "{key}: {with} vs {without}"
        );
    }
    assert_eq!(field(&with, "copy"), Some("ok"));
    assert_eq!(field(&with, "headless_frames"), Some("3"));
    // The layer is there (it hides what its swapchains cannot do) and
    // still kept out of the headless swapchain (no report).
    if field(&without, "swapchain_maintenance1") == Some("true") {
        assert_eq!(
            field(&with, "swapchain_maintenance1"),
            Some("false"),
            "{with}"
        );
    }
    assert!(
        std::fs::read_to_string(&layer.report)
            .unwrap_or_default()
            .is_empty(),
        "the layer made a swapchain for a headless surface"
    );
}

/// A window recreated at a new size (sway tiles a second window beside
/// it, and vkcube follows the configure with `oldSwapchain`): the old
/// swapchain is retired, hands the surface's sync objects over, and the
/// new one presents.
#[test]
fn a_recreated_swapchain_takes_the_surface_over() {
    let _one = common::one_at_a_time();
    let sway = need!(Sway::start(), "sway 1.12 on virtio-gpu");
    let layer = Layer::install();
    let args = ["--wsi", "wayland", "--c", "1000000"];
    let mut first = spawn(&layer, &sway.socket, Path::new("vkcube"), &args, &[]);
    let pid = first.id();
    let created = |n: usize| {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(120) {
            let c = layer
                .events(pid)
                .iter()
                .filter(|l| field(l, "event") == Some("create"))
                .count();
            if c >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    };
    assert!(created(1), "vkcube made no swapchain");
    // A second window: sway splits the output, vkcube gets a narrower
    // configure and recreates its swapchain.
    let mut second = Command::new("weston-simple-shm")
        .env("WAYLAND_DISPLAY", &sway.socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start weston-simple-shm");
    let recreated = created(2);
    std::thread::sleep(Duration::from_secs(2));
    let alive = matches!(first.try_wait(), Ok(None));
    let _ = second.kill();
    let _ = second.wait();
    let _ = first.kill();
    let out = first.wait_with_output().unwrap();
    let said = text(&out);
    println!("vkcube:\n{said}");
    let events = layer.events(pid);
    println!("layer report:\n{}", events.join("\n"));
    assert!(recreated, "vkcube never recreated its swapchain");
    assert!(alive, "vkcube died after the recreation");
    assert_no_validation_errors(&said);
    let destroyed: Vec<_> = events
        .iter()
        .filter(|l| field(l, "event") == Some("destroy"))
        .collect();
    assert!(
        !destroyed.is_empty(),
        "the old swapchain was never destroyed"
    );
    assert_eq!(
        field(destroyed[0], "retired"),
        Some("true"),
        "{}",
        destroyed[0]
    );
    let widths: Vec<_> = events
        .iter()
        .filter(|l| field(l, "event") == Some("create"))
        .map(|l| field(l, "width").unwrap().to_string())
        .collect();
    assert_ne!(widths[0], widths[1], "the new swapchain has the new size");
}

fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The compositor killed under an app presenting through the layer: its
/// next acquire or present fails with `VK_ERROR_SURFACE_LOST_KHR` within
/// 1 s (a broken socket wakes the wait at once) — or within two of the
/// app's frames where a frame takes longer (vkcube with validation under
/// an emulated CPU): an app calls into the swapchain once per frame; the
/// app is not hung.
#[test]
fn a_killed_compositor_is_a_lost_surface_within_a_second() {
    let _one = common::one_at_a_time();
    let mut weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let layer = Layer::install();
    let args = vkcube_args(1_000_000);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = spawn(&layer, &weston.socket, Path::new("vkcube"), &args, &[]);
    let pid = child.id();
    let t = Instant::now();
    while !layer
        .events(pid)
        .iter()
        .any(|l| field(l, "event") == Some("create"))
    {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "vkcube made no swapchain"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Frames flowing.
    std::thread::sleep(Duration::from_secs(2));
    let killed = monotonic_ns();
    weston.kill();
    let (out, in_time) = finish(child, Duration::from_secs(60));
    println!("vkcube:\n{}", text(&out));
    let events = layer.events(pid);
    println!("layer report:\n{}", events.join("\n"));
    assert!(in_time, "vkcube hung after its compositor died");
    let lost = events
        .iter()
        .find(|l| field(l, "event") == Some("lost"))
        .expect("the layer reported no lost surface");
    let num = |k: &str| -> u64 { field(lost, k).unwrap().parse().unwrap() };
    let after = Duration::from_nanos(num("monotonic_ns").saturating_sub(killed));
    let frame = Duration::from_nanos(num("age_ns") / num("frames").max(1));
    println!(
        "surface lost {after:?} after the kill ({}); a frame took {frame:?}",
        field(lost, "call").unwrap()
    );
    let bound = Duration::from_secs(1).max(frame * 2);
    assert!(
        after < bound,
        "lost only {after:?} after the kill (bound {bound:?})"
    );
}

/// 2,000 frames of the cube (`--wsi mesa`, MAILBOX) through the layer: open
/// fds and heap the same after the first 100 frames and at the end, and
/// RSS growing no more than with the driver's own WSI over the same
/// frames (lavapipe's own RSS grows by some 20 MiB over such a run here,
/// with the driver's WSI as with the layer).
#[test]
fn two_thousand_frames_through_the_layer_leak_nothing() {
    let _one = common::one_at_a_time();
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let layer = Layer::install();
    let args = [
        "--frames",
        "2000",
        "--present-mode",
        "mailbox",
        "--size",
        "64x64",
    ];
    let (pid, json, said) = mesa_cube(&layer, &weston.socket, &args);
    assert_reported(&layer, pid, "explicit", 2000, &said);
    let figures = |json: &str| {
        let num = |k: &str| -> i64 {
            field(json, k)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{k} in {json}"))
        };
        (
            num("end_fds") - num("warm_fds"),
            num("end_heap_kib") - num("warm_heap_kib"),
            num("end_rss_kib") - num("warm_rss_kib"),
        )
    };
    let (fds, heap, rss) = figures(&json);
    // The same frames with the driver's WSI (the validation layer on too).
    let mut cube = Command::new(common::built("examples", "cube"));
    cube.args(["--wsi", "mesa", "--json", "--validation", "--timeout", "30"])
        .args(args)
        .env("WAYLAND_DISPLAY", &weston.socket);
    let (out, in_time) = finish(
        cube.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(600),
    );
    assert!(
        in_time && out.status.success(),
        "the driver's run failed:\n{}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (_, driver_heap, driver_rss) = figures(stdout.lines().last().unwrap());
    println!(
        "frames 100 -> 2000 through the layer: fds {fds:+}, heap {heap:+} KiB, RSS {rss:+} KiB; \
         with the driver's WSI: heap {driver_heap:+} KiB, RSS {driver_rss:+} KiB"
    );
    // A frame in flight holds a release fence or two.
    assert!(fds.abs() <= 4, "fds changed by {fds}");
    assert!(heap <= 1024, "heap grew {heap} KiB");
    assert!(
        rss <= driver_rss.max(0) + 8192,
        "RSS grew {rss} KiB (driver's WSI: {driver_rss} KiB)"
    );
}
