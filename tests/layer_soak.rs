//! The Vulkan layer over time (see tests/layer.rs for the apps on each
//! compositor): a recreated swapchain (`oldSwapchain`) hands the surface
//! over; a killed compositor is a lost surface within 1 s, never a hang;
//! 2,000 frames leave fds and memory flat, and so do swapchains made anew
//! every few frames.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::layer::{
    assert_no_validation_errors, assert_reported, field, finish, mesa_cube, spawn, spawn_vkcube,
    text, Layer,
};
use common::need;
use common::sway::Sway;
use common::weston::Weston;

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
            let c = layer.events_of(pid, "create").len();
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
    println!("layer report:\n{}", layer.events(pid).join("\n"));
    assert!(recreated, "vkcube never recreated its swapchain");
    assert!(alive, "vkcube died after the recreation");
    assert_no_validation_errors(&said);
    let destroyed = layer.events_of(pid, "destroy");
    assert!(
        !destroyed.is_empty(),
        "the old swapchain was never destroyed"
    );
    assert_eq!(
        field(&destroyed[0], "retired"),
        Some("true"),
        "{}",
        destroyed[0]
    );
    let widths: Vec<_> = layer
        .events_of(pid, "create")
        .iter()
        .map(|l| field(l, "width").unwrap().to_string())
        .collect();
    // vkcube may first recreate at the old size (a suboptimal present
    // before sway's configure arrives): some later swapchain has the new
    // size.
    assert!(
        widths[1..].iter().any(|w| *w != widths[0]),
        "no new swapchain has the new size: {widths:?}"
    );
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
    let child = spawn_vkcube(&layer, &weston.socket, 1_000_000, &[]);
    let pid = child.id();
    let t = Instant::now();
    while layer.events_of(pid, "create").is_empty() {
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
    println!("layer report:\n{}", layer.events(pid).join("\n"));
    assert!(in_time, "vkcube hung after its compositor died");
    let lost = layer
        .events_of(pid, "lost")
        .into_iter()
        .next()
        .expect("the layer reported no lost surface");
    let num = |k: &str| -> u64 { field(&lost, k).unwrap().parse().unwrap() };
    let after = Duration::from_nanos(num("monotonic_ns").saturating_sub(killed));
    let frame = Duration::from_nanos(num("age_ns") / num("frames").max(1));
    println!(
        "surface lost {after:?} after the kill ({}); a frame took {frame:?}",
        field(&lost, "call").unwrap()
    );
    let bound = Duration::from_secs(1).max(frame * 2);
    assert!(
        after < bound,
        "lost only {after:?} after the kill (bound {bound:?})"
    );
}

/// 2,000 frames of the cube (`--wsi mesa`, MAILBOX) through the layer:
/// open fds and the main heap the same after the first 100 frames and at
/// the end, and RSS within a bound no per-frame leak of a Vulkan object
/// stays under.
///
/// RSS alone is no leak signal here: with the driver's own WSI the same
/// 1,900 frames grew it by 8.9 to 20.7 MiB in three runs (lavapipe's
/// threads allocate in arenas of their own, which the cube's heap figure,
/// glibc's main arena, does not count, and freed pages stay resident).
/// The bound, 64 MiB, is 35 KiB a frame: one leaked 256x256 image a frame
/// (256 KiB) would be 475 MiB.
#[test]
fn two_thousand_frames_through_the_layer_leak_nothing() {
    let _one = common::one_at_a_time();
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let layer = Layer::forcing("explicit");
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
    let (fds, heap, rss) = (
        grown(&json, "fds"),
        grown(&json, "heap_kib"),
        grown(&json, "rss_kib"),
    );
    println!(
        "frames 100 -> 2000 through the layer: fds {fds:+}, heap {heap:+} KiB, RSS {rss:+} KiB"
    );
    // A frame in flight holds a release fence or two.
    assert!(fds.abs() <= 4, "fds changed by {fds}");
    assert!(heap <= 1024, "heap grew {heap} KiB");
    assert!(rss <= 64 * 1024, "RSS grew {rss} KiB");
}

/// A window being resized makes a swapchain anew at every step, with
/// `oldSwapchain`: 99 swapchains in 300 frames (the cube's
/// `--recreate-every 3`, explicit sync on weston) leave no fd and no
/// memory behind. Compared between frame 100 and the end (66
/// recreations): the release fences of the images a replaced swapchain
/// still had queued, and whatever else the compositor says to a surface
/// that is gone, must not pile up.
#[test]
fn swapchains_made_anew_every_few_frames_through_the_layer_leave_nothing_behind() {
    let _one = common::one_at_a_time();
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let layer = Layer::forcing("explicit");
    let args = [
        "--frames",
        "300",
        "--size",
        "64x64",
        "--recreate-every",
        "3",
    ];
    let (pid, json, said) = mesa_cube(&layer, &weston.socket, &args);
    assert_reported(&layer, pid, "explicit", 300, &said);
    assert_eq!(number(&json, "recreated"), 99, "swapchains made anew");
    let retired = layer
        .events_of(pid, "destroy")
        .iter()
        .filter(|l| field(l, "retired") == Some("true"))
        .count();
    assert_eq!(retired, 99, "every replaced swapchain was retired first");
    let (fds, heap) = (grown(&json, "fds"), grown(&json, "heap_kib"));
    println!("frames 100 -> 300, 66 swapchains made anew through the layer: fds {fds:+}, heap {heap:+} KiB");
    // One fd a recreation would be 66; a frame in flight holds one or two.
    assert!(fds.abs() <= 4, "fds changed by {fds}");
    // Before the surfaces' late events were dropped (wayland::owner), this
    // grew by 8 KiB a swapchain (+313 to +397 KiB over 40): 528 KiB here.
    // Since, +71 to +83 KiB over 40 in six of seven runs, once +224.
    assert!(heap <= 384, "heap grew {heap} KiB");
}

/// The number `key` of the cube's JSON figures.
fn number(json: &str, key: &str) -> i64 {
    field(json, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} in {json}"))
}

/// How much `what` (`fds`, `heap_kib`, `rss_kib`) grew from the cube's
/// warm sample (frame 100) to its end.
fn grown(json: &str, what: &str) -> i64 {
    number(json, &format!("end_{what}")) - number(json, &format!("warm_{what}"))
}
