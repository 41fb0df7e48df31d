//! The Vulkan layer `VK_LAYER_WINSYS_wsi` (crate `winsys-layer`) under
//! unmodified apps, with the Khronos validation layer stacked above it
//! (its errors fail a test): vkcube (vulkan-tools) and the cube example's
//! `--wsi mesa` path (plain `VK_KHR_swapchain` through ash) on weston gl
//! (zero-copy wl_shm in FIFO, as it composes on the CPU; explicit sync in
//! MAILBOX, and forced), sway 1.12 (drm-syncobj), mutter (wl_shm, forced:
//! its llvmpipe crashes on imported dma-bufs here), pixman weston
//! (wl_shm) and the reference compositor (drm-syncobj). Each run proves
//! the frames came through winsys: the layer's report
//! (`WINSYS_LAYER_REPORT`) names the swapchain's sync mode and counts its
//! frames, and the compositor's output is read back while it shows the
//! app's picture.
//!
//! The surface formats: the layer offers at least what the driver's WSI
//! offers of the cube's list (Mesa's formats), and each shows the cube in
//! its own colours.
//!
//! Also: a window system the layer does not serve (a headless surface)
//! and every non-WSI call behave as without it; one surface switched
//! between FIFO and MAILBOX (`oldSwapchain`) changes its sync mode
//! (wl_shm, explicit) and goes on; `winsys info` reports the
//! layer; a compositor that stalls during a swapchain's creation keeps
//! the surface on winsys. tests/layer_soak.rs: recreation, a killed compositor, 2,000
//! frames. tests/layer_fallback.rs: a driver without what winsys needs
//! (5.10's lavapipe) gets the driver's WSI.

mod common;

use std::process::Command;
use std::time::Duration;

use common::layer::{
    assert_no_validation_errors, assert_reported, field, finish, finishes_cleanly, mesa_cube,
    mesa_cube_env, shot, spawn, spawn_vkcube, text, vkcube_is_shown, Layer, LAYER,
};

use common::compositor::{Compositor, Stall};
use common::mutter::Mutter;
use common::need;
use common::sway::Sway;
use common::weston::{capture, Shot, Weston};

/// vkcube presents `frames` frames through the layer and exits 0, the
/// validation layer silent; the report shows `sync`.
fn vkcube_runs(layer: &Layer, socket: &str, sync: &str, frames: u32, env: &[(&str, &str)]) {
    vkcube_finishes(
        layer,
        spawn_vkcube(layer, socket, frames, env),
        sync,
        frames,
    );
}

/// [`vkcube_runs`]'s checks of a vkcube started with `frames` frames;
/// what it said.
fn vkcube_finishes(layer: &Layer, child: std::process::Child, sync: &str, frames: u32) -> String {
    let (pid, _, said) = finishes_cleanly(child, &format!("vkcube --c {frames}"));
    assert_reported(layer, pid, sync, u64::from(frames), &said);
    said
}

#[test]
fn vkcube_through_the_layer_on_weston_gl_with_explicit_sync() {
    let _one = common::one_at_a_time();
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let layer = Layer::forcing("explicit");
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
    // What winsys cannot do here (drm-syncobj forced on a compositor
    // without dma-bufs), the driver's own WSI does: vkcube still runs.
    let env = [("WINSYS_LAYER_SYNC", "syncobj")];
    let child = spawn_vkcube(&layer, &weston.socket, 10, &env);
    let pid = child.id();
    let (out, in_time) = finish(child, Duration::from_secs(300));
    let said = text(&out);
    println!("vkcube --c 10 with {env:?}:\n{said}");
    assert!(in_time && out.status.success(), "vkcube failed: {said}");
    assert_no_validation_errors(&said);
    assert!(
        said.contains("the driver's own WSI presents to this surface"),
        "{said}"
    );
    assert!(layer.events(pid).is_empty(), "{:?}", layer.events(pid));
    // The present ids the layer gives (lavapipe has none) hold on the
    // driver's swapchain too: waited for once the driver took the present.
    let all = [
        "--wsi",
        "mesa",
        "--validation",
        "--frames",
        "20",
        "--present-wait",
    ];
    let cube = common::built("examples", "cube");
    let child = spawn(&layer, &weston.socket, &cube, &all, &env);
    let (out, in_time) = finish(child, Duration::from_secs(300));
    let said = text(&out);
    println!("cube {all:?} with {env:?}:\n{said}");
    assert!(
        in_time && out.status.success(),
        "the cube failed ({}): {said}",
        out.status
    );
    assert_no_validation_errors(&said);
    assert!(said.contains("cube: present waits: 18 succeeded"), "{said}");
    assert!(
        said.contains("the driver's own WSI presents to this surface"),
        "{said}"
    );
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
    formats_beyond_b8g8r8a8(&layer, &sway.socket, "syncobj", &[]);
    // R5G5B5A1, which weston does not take (the every-format test's) and
    // sway takes on wl_shm alone (not over linux-dmabuf here): that
    // swapchain presents through wl_shm, and sway shows the cube in its
    // colours, red and blue where they belong.
    // The cube's 256x256 buffer at the tile's top-left (sway fills the
    // rest of the tile with black).
    let grab = || {
        let shot = common::sway::screencopy(&sway.socket).ok()?;
        Some((shot.width.min(256), shot.height.min(256), shot))
    };
    let &(format, drm, steps) = CUBE_FORMATS
        .iter()
        .find(|f| f.0 == "R5G5B5A1_UNORM_PACK16")
        .unwrap();
    let check = |w, h, p: &dyn Fn(u32, u32) -> u32| {
        common::cube_frame_near(w, h, p, common::CUBE_CLEAR, steps)
    };
    let (pid, faces) = shows_the_cube(&layer, &sway.socket, &["--format", format], &check, &grab);
    assert_swapchains_of(&layer, pid, format, drm, "shm");
    println!("sway shows the {format} cube ({drm}): face pixels {faces:?}");
}

/// On the compositor at `socket`, the layer offers at least every format
/// of the cube's list that the driver's WSI offers there, R8G8B8A8 among
/// them, and the cube presents in `R8G8B8A8_UNORM` through it (`sync`,
/// DRM XBGR8888; validation on).
fn formats_beyond_b8g8r8a8(layer: &Layer, socket: &str, sync: &str, env: &[(&str, &str)]) {
    let ours = surface_formats(Some(layer), socket, env);
    let mesa = surface_formats(None, socket, &[]);
    println!("the layer offers {ours:?}, the driver's WSI {mesa:?}");
    assert_offers_what_the_driver_does(&ours, &mesa);
    assert!(ours.iter().any(|f| f == "R8G8B8A8_UNORM"), "{ours:?}");
    let args = ["--frames", "10", "--format", "R8G8B8A8_UNORM"];
    let (pid, _, said) = mesa_cube_env(layer, socket, &args, env);
    assert_reported(layer, pid, sync, 10, &said);
    for l in &layer.events_of(pid, "create") {
        assert_eq!(field(l, "drm_format"), Some("XBGR8888"), "{l}");
    }
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
    formats_beyond_b8g8r8a8(&layer, &mutter.socket, "shm", &shm);
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
    // It takes XRGB8888 and ARGB8888 alone: the layer offers B8G8R8A8.
    let ours = surface_formats(Some(&layer), &c.socket, &[]);
    assert_eq!(ours, ["B8G8R8A8_SRGB", "B8G8R8A8_UNORM"]);
    let s = c.stats().unwrap();
    assert_eq!(s.protocol_errors, 0, "{}", c.log_text());
}

#[test]
fn a_compositor_slow_to_answer_a_swapchains_creation_keeps_the_surface_on_winsys() {
    let _one = common::one_at_a_time();
    // The compositor stops answering once the swapchain's drm-syncobj
    // surface object reaches it, until released.
    let (c, stall) = need!(
        Compositor::start_stalling("--stall-on-syncobj-surface"),
        "the reference compositor"
    );
    // Held past the 5 s that bound a frame's waits (the layer's wait began
    // before the stall): the creation must wait on, not give the surface
    // to the driver's WSI.
    vkcube_past_a_stall(&c, stall, Duration::from_secs(7));
}

/// vkcube (10 frames) through the layer on `c`, which stalls; `hold`
/// after it says so, the stall ends. vkcube must finish through winsys
/// (drm-syncobj), the surface never handed to the driver's WSI; its
/// output.
fn vkcube_past_a_stall(c: &Compositor, stall: Stall, hold: Duration) -> String {
    let layer = Layer::install();
    let child = spawn_vkcube(&layer, &c.socket, 10, &[]);
    c.wait_stalled();
    std::thread::sleep(hold);
    stall.release();
    let said = vkcube_finishes(&layer, child, "syncobj", 10);
    assert!(!said.contains("the driver's own WSI"), "{said}");
    said
}

#[test]
fn a_compositor_that_does_not_answer_the_formats_query_gets_b8g8r8a8_and_the_app_goes_on() {
    let _one = common::one_at_a_time();
    let (c, stall) = need!(
        Compositor::start_stalling("--stall-on-default-feedback"),
        "the reference compositor"
    );
    // The first default feedback asked for is the layer's formats query.
    // Held past its 5 s: the formats are offered without an answer; past
    // twice that, so that a second query at the two-call idiom's second
    // call would give up too.
    let said = vkcube_past_a_stall(&c, stall, Duration::from_secs(13));
    // Once, not again at the two-call idiom's second call.
    let gave_up = "the surface's formats: timed out";
    assert_eq!(said.matches(gave_up).count(), 1, "{said}");
    assert!(said.contains("offering B8G8R8A8 alone"), "{said}");
}

#[test]
fn the_cube_through_vk_khr_swapchain_presents_through_the_layer() {
    let _one = common::one_at_a_time();
    // weston composes on the CPU (its main device is vgem): the layer's
    // FIFO swapchain takes zero-copy wl_shm by itself, as winsys's own.
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let layer = Layer::install();
    let (pid, json) = cube_on_weston(&weston, &layer, "shm", &[]);
    assert_eq!(field(&json, "wsi"), Some("mesa"), "{json}");
    for l in &layer.events_of(pid, "create") {
        assert_eq!(field(l, "drm_format"), Some("XRGB8888"), "{l}");
        assert_eq!(field(l, "path"), Some("ShmZeroCopy"), "{l}");
    }
}

#[test]
fn a_present_without_wait_semaphores_through_the_layer_shows_the_cube() {
    // A present with no wait semaphores (the app waited for its
    // rendering's fence first) goes through the layer, and weston shows
    // the cube.
    let _one = common::one_at_a_time();
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let extra = ["--fence-before-present"];
    cube_on_weston(&weston, &Layer::install(), "shm", &extra);
}

#[test]
fn the_cube_through_the_layer_with_implicit_sync_on_weston() {
    // The sync mode no other layer test takes: the app's work reaches the
    // compositor as a write fence in the dma-buf (or done already, on a
    // software device).
    let _one = common::one_at_a_time();
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    cube_on_weston(&weston, &Layer::forcing("implicit"), "implicit", &[]);
}

/// The cube (`--wsi mesa`, plus `extra`) through `layer` on `weston`: 20
/// frames presented in `sync` mode (the layer's report), then weston shows
/// a cube frame (the example's own pixel check: only the clear colour and
/// exact face colours, several faces). The first run's pid and JSON line.
fn cube_on_weston(weston: &Weston, layer: &Layer, sync: &str, extra: &[&str]) -> (u32, String) {
    let mut args = vec!["--frames", "20"];
    args.extend_from_slice(extra);
    let (pid, json, said) = mesa_cube(layer, &weston.socket, &args);
    assert_eq!(field(&json, "frames"), Some("20"), "{json}");
    assert_reported(layer, pid, sync, 20, &said);
    let (_, faces) = weston_shows_the_cube(layer, &weston.socket, extra, &|w, h, p| {
        common::cube_frame(w, h, p)
    });
    println!("weston shows the cube through the layer ({sync}, {extra:?}): face pixels {faces:?}");
    (pid, json)
}

/// A cube frame check of tests/common (`cube_frame`, `cube_frame_srgb`).
type FrameCheck<'a> = &'a dyn Fn(u32, u32, &dyn Fn(u32, u32) -> u32) -> Result<[u32; 6], String>;

/// Run the cube (`--wsi mesa --validation` plus `extra`) through the
/// layer until weston's output (its top-left 256x256, the kiosk window)
/// passes `check`: [`shows_the_cube`].
fn weston_shows_the_cube(
    layer: &Layer,
    socket: &str,
    extra: &[&str],
    check: FrameCheck<'_>,
) -> (u32, [u32; 6]) {
    let conn = winsys::wayland::connect(Some(socket)).unwrap();
    let grab = || {
        let shot = capture(&conn).ok()?;
        let (w, h) = (shot.width.min(256), shot.height.min(256));
        Some((w, h, shot))
    };
    shows_the_cube(layer, socket, extra, check, &grab)
}

/// Run the cube (`--wsi mesa --validation` plus `extra`) through the
/// layer until the compositor's output, read by `grab` (the size to
/// check and the shot), passes `check`; then it is stopped, and the
/// validation layer must have been silent. Its pid and the face pixel
/// counts.
fn shows_the_cube(
    layer: &Layer,
    socket: &str,
    extra: &[&str],
    check: FrameCheck<'_>,
    grab: &dyn Fn() -> Option<(u32, u32, Shot)>,
) -> (u32, [u32; 6]) {
    let mut all = vec![
        "--wsi",
        "mesa",
        "--validation",
        "--frames",
        "100000",
        "--timeout",
        "30",
    ];
    all.extend_from_slice(extra);
    let mut child = spawn(layer, socket, &common::built("examples", "cube"), &all, &[]);
    let pid = child.id();
    let shown = common::until_shown(&mut child, Duration::from_secs(120), || {
        let (w, h, shot) = grab().ok_or("no shot of the output")?;
        check(w, h, &|x, y| shot.pixel(x, y))
    });
    let faces = shown.unwrap_or_else(|last| {
        let _ = child.kill();
        panic!("the output never showed a cube frame ({extra:?}): {last}")
    });
    let _ = child.kill();
    assert_no_validation_errors(&text(&child.wait_with_output().unwrap()));
    (pid, faces)
}

#[test]
fn an_srgb_swapchain_through_the_layer_shows_encoded_colours() {
    let _one = common::one_at_a_time();
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let layer = Layer::forcing("explicit");
    let (pid, json, said) = mesa_cube(&layer, &weston.socket, &["--frames", "20", "--srgb"]);
    assert_eq!(
        field(&json, "path"),
        Some("VK_KHR_swapchain, B8G8R8A8_SRGB"),
        "{json}"
    );
    assert_reported(&layer, pid, "explicit", 20, &said);
    for l in &layer.events_of(pid, "create") {
        assert_eq!(field(l, "format"), Some("B8G8R8A8_SRGB"), "{l}");
    }
    // The clear colour on screen is CUBE_CLEAR encoded (0x102040 ->
    // about 0x476389): the GPU wrote sRGB into the compositor's buffer.
    let (_, faces) = weston_shows_the_cube(&layer, &weston.socket, &["--srgb"], &|w, h, p| {
        common::cube_frame_srgb(w, h, p)
    });
    println!(
        "weston shows the sRGB cube through the layer (clear {:06x}): face pixels {faces:?}",
        common::srgb_encoded(common::CUBE_CLEAR)
    );
}

/// The surface formats of the cube's `--wsi mesa` run on `socket` (with
/// the layer and `env` when `layer` is given, else the driver's WSI
/// alone).
fn surface_formats(layer: Option<&Layer>, socket: &str, env: &[(&str, &str)]) -> Vec<String> {
    let args = [
        "--wsi",
        "mesa",
        "--json",
        "--frames",
        "1",
        "--timeout",
        "30",
    ];
    let cube = common::built("examples", "cube");
    let child = match layer {
        Some(l) => spawn(l, socket, &cube, &args, env),
        None => {
            let mut c = Command::new(&cube);
            c.args(args).env("WAYLAND_DISPLAY", socket);
            c.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        }
    };
    let (out, in_time) = finish(child, Duration::from_secs(300));
    let said = text(&out);
    assert!(in_time && out.status.success(), "the cube failed: {said}");
    let json = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let formats = field(&json, "surface_formats").unwrap_or_else(|| panic!("{json}"));
    formats.split(' ').map(str::to_string).collect()
}

/// The cube's `--format` names (Mesa's Wayland WSI's formats the layer
/// knows), each with the DRM format the compositor gets (the opaque twin)
/// and how near an 8-bit output's clear colour must be (per channel).
const CUBE_FORMATS: [(&str, &str, u32); 10] = [
    ("B8G8R8A8_SRGB", "XRGB8888", 1),
    ("B8G8R8A8_UNORM", "XRGB8888", 0),
    ("R8G8B8A8_SRGB", "XBGR8888", 1),
    ("R8G8B8A8_UNORM", "XBGR8888", 0),
    ("A2R10G10B10_UNORM_PACK32", "XRGB2101010", 1),
    ("A2B10G10R10_UNORM_PACK32", "XBGR2101010", 1),
    ("R16G16B16A16_SFLOAT", "XBGR16161616F", 1),
    ("R16G16B16A16_UNORM", "XBGR16161616", 1),
    // 5 and 6 bits a channel: 0x10, 0x20, 0x40 come back within 2.
    ("R5G6B5_UNORM_PACK16", "RGB565", 2),
    // Not taken by weston here; sway takes it (shown there).
    ("R5G5B5A1_UNORM_PACK16", "RGBX5551", 2),
];

/// Process `pid` made at least one swapchain of the layer's, and each one
/// it made has Vulkan `format`, DRM format `drm` and sync mode `sync`
/// (its report).
fn assert_swapchains_of(layer: &Layer, pid: u32, format: &str, drm: &str, sync: &str) {
    let created = layer.events_of(pid, "create");
    assert!(
        !created.is_empty(),
        "no swapchain of the layer's for {format}"
    );
    for l in &created {
        assert_eq!(field(l, "format"), Some(format), "{l}");
        assert_eq!(field(l, "drm_format"), Some(drm), "{l}");
        assert_eq!(field(l, "sync"), Some(sync), "{l}");
    }
}

/// The layer's list starts with the B8G8R8A8 pair and holds every format
/// of [`CUBE_FORMATS`] the driver's WSI offers.
fn assert_offers_what_the_driver_does(ours: &[String], mesa: &[String]) {
    assert_eq!(ours[..2], ["B8G8R8A8_SRGB", "B8G8R8A8_UNORM"], "{ours:?}");
    for f in mesa {
        let known = CUBE_FORMATS.iter().any(|(name, _, _)| name == f);
        assert!(
            !known || ours.contains(f),
            "the driver's WSI offers {f}, the layer not: {ours:?}"
        );
    }
}

/// Each format the layer offers on weston gl (dma-bufs, explicit sync)
/// and pixman weston (wl_shm): at least every one of the cube's list that
/// the driver's WSI offers there (Mesa's formats), the swapchain's DRM
/// format its opaque twin, and weston shows the cube in its colours (a
/// swapped red and blue, or a wrong depth, changes the clear colour).
#[test]
fn every_format_the_layer_offers_shows_the_cube_in_its_colours() {
    let _one = common::one_at_a_time();
    for (renderer, sync) in [("gl", "explicit"), ("pixman", "shm")] {
        let weston = need!(Weston::start(renderer), "weston");
        let layer = match renderer {
            "gl" => Layer::forcing("explicit"),
            _ => Layer::install(),
        };
        let ours = surface_formats(Some(&layer), &weston.socket, &[]);
        let mesa = surface_formats(None, &weston.socket, &[]);
        println!("{renderer} weston: the layer offers {ours:?}, the driver's WSI {mesa:?}");
        assert_offers_what_the_driver_does(&ours, &mesa);
        // Beyond B8G8R8A8 (the tests above): R8G8B8A8 at least, everywhere.
        assert!(ours.iter().any(|f| f == "R8G8B8A8_UNORM"), "{ours:?}");
        // The lists' weston is done: each cube gets its own (below).
        drop(weston);
        for (format, drm, steps) in CUBE_FORMATS.iter().skip(2) {
            if !ours.iter().any(|f| f == format) {
                continue;
            }
            // Each cube on a weston of its own: weston 14's kiosk shell
            // segfaults now and then (dmesg: in kiosk-shell.so) when the
            // killed cube's window goes and the next one's maps.
            let weston = need!(Weston::start(renderer), "weston");
            let clear = match format.ends_with("_SRGB") {
                true => common::srgb_encoded(common::CUBE_CLEAR),
                false => common::CUBE_CLEAR,
            };
            let check =
                |w, h, p: &dyn Fn(u32, u32) -> u32| common::cube_frame_near(w, h, p, clear, *steps);
            let (pid, faces) =
                weston_shows_the_cube(&layer, &weston.socket, &["--format", format], &check);
            assert_swapchains_of(&layer, pid, format, drm, sync);
            println!("{renderer} weston shows the {format} cube ({drm}): face pixels {faces:?}");
        }
    }
}

#[test]
fn a_premultiplied_swapchain_through_the_layer_presents_argb8888_buffers() {
    let _one = common::one_at_a_time();
    // weston gl (dma-bufs, explicit sync), then pixman weston (wl_shm).
    for (renderer, sync) in [("gl", "explicit"), ("pixman", "shm")] {
        let weston = need!(Weston::start(renderer), "weston");
        let layer = match renderer {
            "gl" => Layer::forcing("explicit"),
            _ => Layer::install(),
        };
        let args = ["--frames", "20", "--premultiplied"];
        let (pid, json, said) = mesa_cube(&layer, &weston.socket, &args);
        assert_eq!(
            field(&json, "path"),
            Some("VK_KHR_swapchain, B8G8R8A8_UNORM, premultiplied alpha"),
            "{json}"
        );
        assert_reported(&layer, pid, sync, 20, &said);
        // The compositor got buffers with alpha (it blends by it), not
        // XRGB8888 (whose alpha it ignores).
        for l in &layer.events_of(pid, "create") {
            assert_eq!(field(l, "drm_format"), Some("ARGB8888"), "{l}");
        }
        // The cube's pixels are opaque: the picture is the opaque one.
        let faces =
            weston_shows_the_cube(&layer, &weston.socket, &["--premultiplied"], &|w, h, p| {
                common::cube_frame(w, h, p)
            })
            .1;
        println!("{renderer} weston shows the premultiplied cube: face pixels {faces:?}");
    }
}

#[test]
fn present_ids_are_waited_for_through_the_layer() {
    let _one = common::one_at_a_time();
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let layer = Layer::install();
    // FIFO: frame callbacks say when a frame is shown; MAILBOX: the
    // wp_presentation feedback (presented or discarded).
    for mode in ["fifo", "mailbox"] {
        let args = ["--frames", "30", "--present-wait", "--present-mode", mode];
        let (pid, _, said) = mesa_cube(&layer, &weston.socket, &args);
        // Each frame from the third waits for the present two back.
        assert!(
            said.contains("cube: present waits: 28 succeeded"),
            "{mode}: {said}"
        );
        // weston composes on the CPU: FIFO takes wl_shm by itself, MAILBOX
        // explicit sync, with six images though the cube asks four.
        let (sync, images) = if mode == "fifo" {
            ("shm", 4)
        } else {
            ("explicit", 6)
        };
        assert_reported(&layer, pid, sync, 30, &said);
        assert!(
            said.contains(&format!(", {images} images")),
            "{mode}: {said}"
        );
        for l in &layer.events_of(pid, "create") {
            assert_eq!(field(l, "images"), Some(images.to_string().as_str()), "{l}");
        }
    }
}

#[test]
fn present_fences_and_unpresented_releases_through_the_layer() {
    let _one = common::one_at_a_time();
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let layer = Layer::install();
    let args = ["--frames", "40", "--maintenance1"];
    let (pid, _, said) = mesa_cube(&layer, &weston.socket, &args);
    // A fence per present, waited for before its slot's next frame (the
    // first two slots start signalled); frames 10, 20, 30, 40 acquire one
    // more image and give it back.
    assert!(
        said.contains("cube: present fences: 38 signalled; images released unpresented: 4"),
        "{said}"
    );
    // FIFO on weston gl: the automatic wl_shm.
    assert_reported(&layer, pid, "shm", 40, &said);
}

/// One surface switched between FIFO and MAILBOX through `oldSwapchain`
/// (the cube's `--present-mode fifo,mailbox --recreate-every 10`) on
/// weston gl, which composes on the CPU: each FIFO swapchain takes
/// zero-copy wl_shm (4 images), each MAILBOX one explicit sync (6 images).
/// The surface goes from wl_shm buffers to dma-bufs with an explicit-sync
/// object and back: no protocol error (it would end the cube), each old
/// swapchain retired before it is destroyed, every frame presented, and
/// weston shows the cube after the switches.
#[test]
fn one_surface_switched_between_fifo_and_mailbox_changes_its_sync_mode() {
    let _one = common::one_at_a_time();
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let layer = Layer::install();
    let switching = ["--recreate-every", "10", "--present-mode", "fifo,mailbox"];
    let mut args = vec!["--frames", "60"];
    args.extend_from_slice(&switching);
    let (pid, json, said) = mesa_cube(&layer, &weston.socket, &args);
    assert_eq!(field(&json, "recreated"), Some("5"), "{json}");
    // The summary names the first swapchain's mode.
    assert_eq!(field(&json, "present_mode"), Some("Fifo"), "{json}");
    println!("layer report of {pid}:\n{}", layer.events(pid).join("\n"));
    let created = layer.events_of(pid, "create");
    let destroyed = layer.events_of(pid, "destroy");
    assert_eq!(created.len(), 6, "{said}");
    assert_eq!(destroyed.len(), 6, "{said}");
    for (i, (c, d)) in created.iter().zip(&destroyed).enumerate() {
        let (mode, sync, images) = match i % 2 {
            0 => ("FIFO", "shm", "4"),
            _ => ("MAILBOX", "explicit", "6"),
        };
        assert_eq!(field(c, "present_mode"), Some(mode), "{c}");
        assert_eq!(field(c, "sync"), Some(sync), "{c}");
        assert_eq!(field(c, "images"), Some(images), "{c}");
        assert_eq!(field(d, "swapchain"), field(c, "swapchain"), "{d}");
        assert_eq!(field(d, "frames"), Some("10"), "{d}");
        // The last one is destroyed at the end, never replaced.
        let retired = if i < 5 { "true" } else { "false" };
        assert_eq!(field(d, "retired"), Some(retired), "{d}");
    }
    // weston's output after at least two switches (the third swapchain
    // made: the second, MAILBOX, presented its ten frames): a cube frame.
    let creates = || {
        let text = std::fs::read_to_string(&layer.report).unwrap_or_default();
        text.lines()
            .filter(|l| field(l, "event") == Some("create"))
            .count()
    };
    let before = creates();
    let conn = winsys::wayland::connect(Some(&weston.socket)).unwrap();
    let grab = || {
        if creates() < before + 3 {
            return None;
        }
        let shot = capture(&conn).ok()?;
        Some((shot.width.min(256), shot.height.min(256), shot))
    };
    let (_, faces) = shows_the_cube(
        &layer,
        &weston.socket,
        &switching,
        &|w, h, p| common::cube_frame(w, h, p),
        &grab,
    );
    println!("weston shows the cube after the switches: face pixels {faces:?}");
}

#[test]
fn a_second_swapchain_on_a_surface_is_refused_as_in_use() {
    let _one = common::one_at_a_time();
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let layer = Layer::forcing("explicit");
    // Without the validation layer: it reports the (deliberate) second
    // swapchain as the app's error.
    let all = ["--wsi", "mesa", "--frames", "10", "--second-swapchain"];
    let child = spawn(
        &layer,
        &weston.socket,
        &common::built("examples", "cube"),
        &all,
        &[],
    );
    let pid = child.id();
    let (out, in_time) = finish(child, Duration::from_secs(300));
    let said = text(&out);
    println!("cube {all:?}:\n{said}");
    assert!(in_time && out.status.success(), "the cube failed: {said}");
    assert!(
        said.contains("a second swapchain on the surface: ERROR_NATIVE_WINDOW_IN_USE_KHR"),
        "{said}"
    );
    // The first swapchain went on presenting.
    assert_reported(&layer, pid, "explicit", 10, &said);
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
    // The layer is there — it offers what its swapchains implement
    // (present wait, swapchain maintenance 1) and hides what they do not
    // (display timing) — and still kept out of the headless swapchain (no
    // report).
    assert_eq!(field(&with, "present_wait"), Some("true"), "{with}");
    assert_eq!(
        field(&with, "swapchain_maintenance1"),
        Some("true"),
        "{with}"
    );
    assert_eq!(field(&with, "display_timing"), Some("false"), "{with}");
    assert!(
        std::fs::read_to_string(&layer.report)
            .unwrap_or_default()
            .is_empty(),
        "the layer made a swapchain for a headless surface"
    );
}

/// `winsys info` finds the layer's manifest (here through
/// `VK_ADD_LAYER_PATH`, as the loader would), says whether it is on, and
/// what it would present with on the compositor at hand.
#[test]
fn winsys_info_reports_the_layer_and_its_choice() {
    let _one = common::one_at_a_time();
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let layer = Layer::install();
    let out = Command::new(common::built("", "winsys"))
        .args(["info", "--json", "--timeout", "60"])
        .envs(layer.env())
        .env("WAYLAND_DISPLAY", &weston.socket)
        .output()
        .expect("run winsys info");
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("winsys info --json is JSON");
    let l = &report["vulkan_layer"];
    println!("vulkan_layer: {l:#}");
    assert_eq!(l["name"], LAYER);
    let installed = l["installed"].as_array().expect("installed");
    let manifest = layer.dir.join("VkLayer_winsys.json").display().to_string();
    assert!(
        installed.iter().any(|m| m["manifest"] == manifest.as_str()
            && m["library_exists"] == true
            && m["implicit"] == false),
        "{installed:?}"
    );
    assert!(l["enabled"].as_str().unwrap().starts_with("yes"), "{l}");
    let would = l["would_present_with"].as_str().unwrap();
    // FIFO on weston gl, which composes on the CPU: zero-copy wl_shm.
    assert!(would.starts_with("shm"), "{would}");
}
