//! Helpers shared by the integration tests.
//!
//! Device-dependent tests go through [`need!`]: when a device is missing they
//! print `SKIP` and return on a workstation, but when `WINSYS_REQUIRE_DEVICES=1`
//! (set by `cargo xtask test` inside the VM) a missing device fails the test.

#![allow(dead_code, unused_macros, unused_imports)]

use std::os::fd::OwnedFd;
use std::time::Duration;

use winsys::alloc::vgem::{Vgem, VgemBuffer, VgemFence};
use winsys::dmabuf::Access;
use winsys::format::Fourcc;
use winsys::sync::SyncFile;

/// What the test bed declares the running kernel to lack (xtask's
/// `kernels::LACKS_ENV`): comma-separated feature names, empty on a kernel
/// that lacks nothing, unset outside the test bed.
pub const LACKS_ENV: &str = "WINSYS_KERNEL_LACKS";

/// Whether the running kernel is declared to lack `feature`
/// (`udmabuf`, `lavapipe_dmabuf`, ...; [`LACKS_ENV`]).
pub fn kernel_lacks(feature: &str) -> bool {
    std::env::var(LACKS_ENV)
        .unwrap_or_default()
        .split(',')
        .any(|f| f == feature)
}

/// Ask `look` every half second, while `child` runs, until it answers
/// `Ok` (returned), or `within` has passed: `Err` with its last complaint.
/// A child that exits first fails the test, with what it said (its piped
/// stdout and stderr).
pub fn until_shown<T>(
    child: &mut std::process::Child,
    within: Duration,
    mut look: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = std::time::Instant::now();
    let mut last = String::from("nothing looked at yet");
    while start.elapsed() <= within {
        if let Ok(Some(status)) = child.try_wait() {
            let mut said = String::new();
            if let Some(mut out) = child.stdout.take() {
                let _ = std::io::Read::read_to_string(&mut out, &mut said);
            }
            if let Some(mut err) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut err, &mut said);
            }
            panic!("it exited early: {status}\n{said}");
        }
        std::thread::sleep(Duration::from_millis(500));
        match look() {
            Ok(v) => return Ok(v),
            Err(what) => last = what,
        }
    }
    Err(last)
}

/// Whether missing devices fail tests instead of skipping them.
pub fn devices_required() -> bool {
    std::env::var_os("WINSYS_REQUIRE_DEVICES").is_some_and(|v| v == "1")
}

/// `Some(value)`, or `None` after reporting a skip (or panicking when devices
/// are required).
pub fn required<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) if devices_required() => panic!("required device missing: {what}: {e}"),
        Err(e) => {
            println!("SKIP: {what} unavailable: {e}");
            None
        }
    }
}

/// Unwrap a device-opening result or skip the test (see module docs).
macro_rules! need {
    ($e:expr, $what:expr) => {
        match common::required($what, $e) {
            Some(v) => v,
            None => return,
        }
    };
}
pub(crate) use need;

/// A generous bound for waits that must succeed (TCG is slow).
pub const LONG: Duration = Duration::from_secs(5);
/// A bound for waits that must time out.
pub const SHORT: Duration = Duration::from_millis(50);

/// A controllable sync_file: a second vgem buffer with a pending WRITE fence,
/// exported for READ (= that write fence). Signal the `VgemFence` to signal it.
pub fn controllable_fence(vgem: &Vgem) -> (VgemBuffer, VgemFence, SyncFile) {
    let buf = vgem.create(16, 16, Fourcc::XRGB8888).expect("vgem buffer");
    let fence = buf.attach_fence(Access::Write).expect("vgem fence");
    let sync = buf.dmabuf().export_sync_file(Access::Read).expect("export");
    (buf, fence, sync)
}

/// Number of open fds of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// A byte pattern that differs per position and per `seed`.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seed as u32) as u8)
        .collect()
}

/// Write `data` at `offset` of a file fd (memfd) with pwrite.
pub fn pwrite_all(fd: &OwnedFd, data: &[u8], offset: u64) {
    let n = rustix::io::pwrite(fd, data, offset).expect("pwrite");
    assert_eq!(n, data.len());
}

/// Read `len` bytes at `offset` of a file fd (memfd) with pread.
pub fn pread_all(fd: &OwnedFd, len: usize, offset: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let n = rustix::io::pread(fd, &mut out, offset).expect("pread");
    assert_eq!(n, len);
    out
}

#[cfg(all(feature = "vulkan", feature = "gbm"))]
pub mod vk;

#[cfg(all(feature = "server", feature = "wayland"))]
pub mod compositor;
#[cfg(feature = "wayland")]
pub mod mutter;
#[cfg(feature = "wayland")]
pub mod sway;
#[cfg(feature = "wayland")]
pub mod weston;

/// Serializes the tests of a binary that start compositors: two at once
/// slow each other past their timeouts under TCG.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// The cube example's clear colour and face colours as `0xRRGGBB`
/// (examples/cube/render.rs).
pub const CUBE_CLEAR: u32 = 0x102040;
/// See [`CUBE_CLEAR`].
pub const CUBE_FACES: [u32; 6] = [0xff0000, 0x00ff00, 0x0000ff, 0xffff00, 0xff00ff, 0x00ffff];

/// Whether a `width` x `height` picture (`pixel(x, y)` as 0xRRGGBB) is a
/// cube frame: only the clear colour and exact face colours, the clear
/// colour at the corners, at least two faces. `Ok(face pixel counts)` or
/// what was wrong.
pub fn cube_frame(
    width: u32,
    height: u32,
    pixel: impl Fn(u32, u32) -> u32,
) -> Result<[u32; 6], String> {
    cube_frame_with(width, height, pixel, |p| p == CUBE_CLEAR)
}

/// [`cube_frame`] for a cube rendered into `*_SRGB` images (`--srgb`):
/// the faces' 0 and 255 components stay, the clear colour is the sRGB
/// encoding of [`CUBE_CLEAR`] (within one step per channel: the GPU's
/// rounding).
pub fn cube_frame_srgb(
    width: u32,
    height: u32,
    pixel: impl Fn(u32, u32) -> u32,
) -> Result<[u32; 6], String> {
    cube_frame_near(width, height, pixel, srgb_encoded(CUBE_CLEAR), 1)
}

/// [`cube_frame`] with the clear colour `clear` within `steps` per
/// channel (what a format of other depth or encoding makes of it on an
/// 8-bit output; the faces' 0 and 255 components stay exact).
pub fn cube_frame_near(
    width: u32,
    height: u32,
    pixel: impl Fn(u32, u32) -> u32,
    clear: u32,
    steps: u32,
) -> Result<[u32; 6], String> {
    cube_frame_with(width, height, pixel, |p| {
        (0..3).all(|i| {
            let (a, b) = ((p >> (8 * i)) & 0xff, (clear >> (8 * i)) & 0xff);
            a.abs_diff(b) <= steps
        })
    })
}

/// `0xRRGGBB` with each channel, read as UNORM, encoded as sRGB (the
/// transfer function of `VK_FORMAT_*_SRGB` writes).
pub fn srgb_encoded(rgb: u32) -> u32 {
    (0..3).fold(0, |acc, i| {
        let v = f64::from((rgb >> (8 * i)) & 0xff) / 255.0;
        let e = if v <= 0.003_130_8 {
            12.92 * v
        } else {
            1.055 * v.powf(1.0 / 2.4) - 0.055
        };
        acc | (((e * 255.0).round() as u32) << (8 * i))
    })
}

fn cube_frame_with(
    width: u32,
    height: u32,
    pixel: impl Fn(u32, u32) -> u32,
    is_clear: impl Fn(u32) -> bool,
) -> Result<[u32; 6], String> {
    let mut faces = [0u32; 6];
    let mut stray = None;
    for y in 0..height {
        for x in 0..width {
            let p = pixel(x, y) & 0xffffff;
            match CUBE_FACES.iter().position(|&f| f == p) {
                Some(i) => faces[i] += 1,
                None if is_clear(p) => {}
                None => stray = stray.or(Some((x, y, p))),
            }
        }
    }
    let corners = [
        (0, 0),
        (width - 1, 0),
        (0, height - 1),
        (width - 1, height - 1),
    ];
    let visible = faces.iter().filter(|&&n| n > 0).count();
    let corners_clear = corners
        .iter()
        .all(|&(x, y)| is_clear(pixel(x, y) & 0xffffff));
    if visible >= 2 && stray.is_none() && corners_clear {
        Ok(faces)
    } else {
        Err(format!(
            "faces {faces:?}, stray pixel {stray:?} (0xRRGGBB), corners clear: {corners_clear}"
        ))
    }
}

/// A program cargo built beside this test binary: `target/<profile>/NAME`
/// for `dir` "", `target/<profile>/examples/NAME` for "examples".
pub fn built(dir: &str, name: &str) -> std::path::PathBuf {
    // target/<profile>/deps/<test>-<hash> -> target/<profile>
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let path = profile.join(dir).join(name);
    assert!(
        path.exists(),
        "{} is missing: cargo test builds it",
        path.display()
    );
    path
}
#[cfg(feature = "wayland")]
pub mod layer;
