//! `examples/cube` against real compositors (weston, mutter, sway),
//! through winsys and through Mesa's own WSI, in every sync mode each
//! compositor offers and every lower one forced: frames
//! presented and called back by `wp_presentation`, and (weston) the
//! output read back: the clear colour at the corner, only the clear colour
//! and exact face colours anywhere, several faces visible.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::mutter::Mutter;
use common::need;
use common::sway::Sway;
use common::weston::{capture, Weston};

/// Start the cube with `args`; leading `NAME=value` arguments are
/// environment variables for it instead (e.g. `WINSYS_NO_UDMABUF=1`).
fn spawn(socket: &str, args: &[&str]) -> Child {
    let is_env = |a: &str| {
        a.split_once('=')
            .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
    };
    let (env, args): (Vec<&str>, Vec<&str>) = args.iter().partition(|a| is_env(a));
    Command::new(common::built("examples", "cube"))
        .args(args)
        .envs(env.iter().filter_map(|a| a.split_once('=')))
        .env("WAYLAND_DISPLAY", socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the cube example")
}

/// The JSON figures a `--json` run printed last, as `(key, raw value)`.
struct Figures(Vec<(String, String)>);

impl Figures {
    fn get(&self, key: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim_matches('"'))
            .unwrap_or_else(|| panic!("no {key} in the cube's figures"))
    }

    fn num(&self, key: &str) -> f64 {
        self.get(key)
            .parse()
            .unwrap_or_else(|_| panic!("{key} is {}", self.get(key)))
    }
}

/// Run the cube for `frames` frames with `args`; its figures.
fn run(socket: &str, frames: u32, args: &[&str]) -> Figures {
    let n = frames.to_string();
    // Every wait bounded generously: a compositor on an emulated CPU
    // (the suite must pass with the VM given one) answers in seconds.
    let mut all = vec!["--frames", &n, "--json", "--validation", "--timeout", "30"];
    all.extend_from_slice(args);
    let out = spawn(socket, &all).wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("cube {all:?}:\n{stdout}{stderr}");
    assert!(out.status.success(), "the cube failed: {stderr}");
    let json = stdout.lines().last().expect("figures");
    // Flat object of scalars: split on commas outside strings.
    let body = json.trim().trim_start_matches('{').trim_end_matches('}');
    let mut fields = Vec::new();
    let (mut cur, mut quoted) = (String::new(), false);
    for c in body.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c)
            }
            ',' if !quoted => fields.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    fields.push(cur);
    let figures = Figures(
        fields
            .iter()
            .map(|f| {
                let (k, v) = f.split_once(':').expect("key:value");
                (k.trim_matches('"').to_string(), v.to_string())
            })
            .collect(),
    );
    assert_eq!(figures.num("frames") as u32, frames, "frames presented");
    assert!(
        figures.num("presented") >= 1.0,
        "wp_presentation reported no presented frame"
    );
    let answered = figures.num("presented") + figures.num("discarded");
    if figures.get("wsi") == "winsys" {
        assert_eq!(
            answered, frames as f64,
            "every frame is presented or discarded"
        );
    } else {
        // Mesa's WSI on mutter 48 (wp_fifo_v1): in 2 of 11 runs measured
        // here the feedback of its last 3-4 commits never came (not within
        // 10 s), while winsys's own runs on the same mutter got every
        // answer in 11 of 11. That is Mesa's and mutter's interplay, not
        // ours: the comparison path is only held to what it did answer.
        assert!(
            answered <= frames as f64,
            "{answered} answers for {frames} frames"
        );
    }
    figures
}

/// Start a long cube run and capture weston's output until it shows a
/// cube frame: only the clear colour and exact face colours, the clear
/// colour at the corners, at least two faces.
fn assert_weston_shows_the_cube(weston: &Weston, args: &[&str]) {
    let conn = winsys::wayland::connect(Some(&weston.socket)).unwrap();
    assert_shows_the_cube(&weston.socket, args, || capture(&conn).unwrap());
}

/// The same on sway, its output read back with wlr-screencopy: the cube's
/// 256x256 window sits at the top left of its tile (no borders; a tile's
/// configured size is a suggestion, which the cube declines).
fn assert_sway_shows_the_cube(sway: &Sway, args: &[&str]) {
    assert_shows_the_cube(&sway.socket, args, || {
        common::sway::screencopy(&sway.socket).unwrap()
    });
}

/// Run the cube on `socket` until `grab`'s picture shows a cube frame in
/// its top-left 256x256 (with `--srgb`, its clear colour sRGB-encoded).
fn assert_shows_the_cube(socket: &str, args: &[&str], grab: impl Fn() -> common::weston::Shot) {
    let srgb = args.contains(&"--srgb");
    let mut all = vec!["--frames", "100000", "--timeout", "30"];
    all.extend_from_slice(args);
    let mut child = spawn(socket, &all);
    let seen = common::until_shown(&mut child, Duration::from_secs(60), || {
        let shot = grab();
        let (w, h) = (shot.width.min(256), shot.height.min(256));
        let pixel = |x, y| shot.pixel(x, y);
        match srgb {
            true => common::cube_frame_srgb(w, h, pixel),
            false => common::cube_frame(w, h, pixel),
        }
    });
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    println!(
        "cube {all:?} until captured:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let faces = seen
        .unwrap_or_else(|last| panic!("the compositor never showed a cube frame; last: {last}"));
    println!("captured a cube frame: face pixels {faces:?}");
}

#[test]
fn cube_on_weston_gl_through_winsys_and_mesa() {
    let _one = common::one_at_a_time();
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    // weston composes on the CPU (its main device is vgem): FIFO takes
    // zero-copy wl_shm by itself, explicit sync when asked.
    let f = run(&weston.socket, 30, &[]);
    assert_eq!(f.get("sync"), "shm");
    assert!(f.get("path").contains("ShmZeroCopy"), "{}", f.get("path"));
    let f = run(&weston.socket, 30, &["--sync", "explicit"]);
    assert_eq!(f.get("sync"), "explicit");
    assert!(f.get("path").contains("vgem"), "{}", f.get("path"));
    let f = run(&weston.socket, 30, &["--sync", "implicit"]);
    assert_eq!(f.get("sync"), "implicit");
    let f = run(&weston.socket, 30, &["--present-mode", "mailbox"]);
    assert_eq!(f.get("present_mode"), "Mailbox");
    // MAILBOX over explicit sync: six images, though the cube asks four.
    assert_eq!(f.get("images"), "6");
    // The same where frames are copied (six render images, six shared).
    let f = run(
        &weston.socket,
        30,
        &["--present-mode", "mailbox", "--copy-frames"],
    );
    assert!(f.get("path").contains("copied"), "{}", f.get("path"));
    assert_eq!(f.get("images"), "6");
    let f = run(&weston.socket, 30, &["--wsi", "mesa"]);
    assert_eq!(f.get("wsi"), "mesa");
    // Rendered into lavapipe's own images, copied into the vgem buffers.
    let f = run(&weston.socket, 30, &["--copy-frames"]);
    assert!(f.get("path").contains("copied"), "{}", f.get("path"));
    assert_weston_shows_the_cube(&weston, &[]);
    assert_weston_shows_the_cube(&weston, &["--copy-frames"]);
    assert_weston_shows_the_cube(&weston, &["--wsi", "mesa"]);
    // B8G8R8A8_SRGB images: winsys's (GBM buffers imported as sRGB) and
    // Mesa's show the same encoded clear colour.
    assert_weston_shows_the_cube(&weston, &["--srgb"]);
    assert_weston_shows_the_cube(&weston, &["--copy-frames", "--srgb"]);
    assert_weston_shows_the_cube(&weston, &["--wsi", "mesa", "--srgb"]);
}

#[test]
fn cube_on_weston_pixman_through_wl_shm() {
    let _one = common::one_at_a_time();
    let weston = need!(Weston::start("pixman"), "weston (pixman renderer)");
    let f = run(&weston.socket, 30, &[]);
    assert_eq!(f.get("sync"), "shm");
    // The images' own memory as wl_shm where /dev/udmabuf opens.
    let zero_copy = winsys::alloc::udmabuf::Udmabuf::open().is_ok();
    let expect = if zero_copy { "ShmZeroCopy" } else { "ShmCopy" };
    assert_eq!(f.get("path"), expect);
    // Without udmabuf: the one copy, from Vulkan's own export.
    let no_udmabuf = "WINSYS_NO_UDMABUF=1";
    let f = run(&weston.socket, 30, &[no_udmabuf]);
    assert_eq!(f.get("path"), "ShmCopy");
    run(&weston.socket, 30, &["--wsi", "mesa"]);
    assert_weston_shows_the_cube(&weston, &[]);
    assert_weston_shows_the_cube(&weston, &[no_udmabuf]);
    assert_weston_shows_the_cube(&weston, &["--srgb"]);
}

#[test]
fn cube_on_mutter_through_winsys_shm_and_mesa() {
    let _one = common::one_at_a_time();
    let mutter = need!(Mutter::start(), "mutter");
    // mutter 48's llvmpipe crashes on a second imported dma-buf here (see
    // tests/swapchain.rs): winsys presents through wl_shm.
    let f = run(&mutter.socket, 30, &["--sync", "shm"]);
    assert_eq!(f.get("sync"), "shm");
    // Mesa 25's own FIFO on mutter 48 (wp_fifo_v1, headless) now and then
    // waits in vkAcquireNextImageKHR past any timeout (seen with the VM
    // given one CPU at 30 s, and in 3 of 4 bench runs at 60 s): the driver's
    // path is checked in MAILBOX here, which that barrier does not hold.
    let f = run(
        &mutter.socket,
        30,
        &["--wsi", "mesa", "--present-mode", "mailbox"],
    );
    assert_eq!(f.get("wsi"), "mesa");
}

#[test]
fn cube_on_sway_through_drm_syncobj_implicit_shm_and_mesa() {
    let _one = common::one_at_a_time();
    let sway = need!(Sway::start(), "sway 1.12 on virtio-gpu");
    let f = run(&sway.socket, 30, &[]);
    assert_eq!(f.get("sync"), "syncobj");
    assert!(f.get("path").contains("virtio_gpu"), "{}", f.get("path"));
    // As before Linux 6.6 (no syncobj eventfd): acquire takes bounded
    // turns on the release points; every frame still presented.
    let f = run(&sway.socket, 30, &["WINSYS_NO_SYNCOBJ_EVENTFD=1"]);
    assert_eq!(f.get("sync"), "syncobj");
    let f = run(&sway.socket, 30, &["--sync", "implicit"]);
    assert_eq!(f.get("sync"), "implicit");
    let f = run(&sway.socket, 30, &["--sync", "shm"]);
    assert_eq!(f.get("sync"), "shm");
    let f = run(&sway.socket, 30, &["--wsi", "mesa"]);
    assert_eq!(f.get("wsi"), "mesa");
    // What sway shows, read back: drm-syncobj, then Mesa's WSI.
    assert_sway_shows_the_cube(&sway, &[]);
    // drm-syncobj with the copy: the acquire point after the copy.
    assert_sway_shows_the_cube(&sway, &["--copy-frames"]);
    assert_sway_shows_the_cube(&sway, &["--wsi", "mesa"]);
}

/// The cube follows the compositor's configure: asked for 512x512 on a
/// kiosk-shell weston whose output is 256x256 (the window configured
/// fullscreen at 256x256, which weston enforces by killing a client that
/// commits a larger buffer), both WSIs render at 256x256 from the first
/// frame, present every frame and exit cleanly; what weston shows is the
/// cube.
#[test]
fn cube_follows_a_fullscreen_configure_smaller_than_its_size() {
    let _one = common::one_at_a_time();
    let mut weston = need!(
        Weston::start_sized("gl", 256, 256),
        "weston (gl renderer, kiosk shell)"
    );
    for wsi in ["winsys", "mesa"] {
        let f = run(&weston.socket, 20, &["--wsi", wsi, "--size", "512x512"]);
        assert_eq!(f.get("wsi"), wsi);
        assert_eq!(f.num("frames"), 20.0, "{wsi}: frames presented");
        assert_eq!(
            (f.num("width"), f.num("height")),
            (256.0, 256.0),
            "{wsi}: the size rendered at is the configured one, not --size"
        );
        println!("{wsi}: swapchain recreated {} times", f.num("recreated"));
        assert!(weston.alive(), "weston died under the {wsi} run");
    }
    assert_weston_shows_the_cube(&weston, &["--size", "512x512"]);
}

/// Swapchains made anew every 5 frames (`--recreate-every 5`, as a window
/// being resized does), on the app's own surface with explicit sync on
/// weston: between frame 100 and the end (40 of them) no fd and no memory
/// is left behind — in particular not the release fences of the images a
/// dropped swapchain still had queued.
#[test]
fn swapchains_made_anew_every_few_frames_leave_nothing_behind() {
    let _one = common::one_at_a_time();
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let f = run(
        &weston.socket,
        300,
        &[
            "--size",
            "64x64",
            "--sync",
            "explicit",
            "--recreate-every",
            "5",
        ],
    );
    assert_eq!(f.get("sync"), "explicit");
    assert_eq!(f.num("recreated"), 59.0, "swapchains made anew");
    let fds = f.num("end_fds") - f.num("warm_fds");
    let heap = f.num("end_heap_kib") - f.num("warm_heap_kib");
    println!("frames 100 -> 300, 40 swapchains made anew: fds {fds:+}, heap {heap:+} KiB");
    // A dropped swapchain no longer waits for the releases of the images
    // it had queued: those come later, to a surface that is gone, and must
    // be closed, not kept (before wayland::owner, one fd a recreation).
    assert!(fds.abs() <= 4.0, "fds changed by {fds}");
    assert!(heap <= 256.0, "heap grew {heap} KiB");
}
