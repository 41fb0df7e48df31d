//! A spinning cube presented to a Wayland compositor, through winsys
//! (`--wsi winsys`, the default) or through the driver's own
//! `VK_KHR_wayland_surface` (`--wsi mesa`), in one binary so the two can be
//! compared on the same compositor, size and present mode.
//!
//! The app opens its own toplevel window and hands it to either WSI as raw
//! handles, as winit or SDL apps do (winsys:
//! `Swapchain::from_raw_handles`; Mesa: `ash_window::create_surface`).
//! Rendering is identical: one render pass drawing the six faces back to
//! front (`render.rs`).
//!
//! The cube follows the compositor's configure, on both paths: where a
//! configure binds the window's size (fullscreen, as a kiosk shell makes
//! every window; maximized) it renders at that size, so it never commits
//! a buffer larger than the configure allows; elsewhere (a floating or
//! tiled window, whose configured size xdg-shell makes a suggestion) at
//! `--size`, so that runs on different compositors do the same work. When a later
//! configure changes that size, or the swapchain becomes suboptimal (a
//! linux-dmabuf feedback change) or out of date (Mesa), it waits for the
//! device, makes the swapchain anew at the new size, and goes on counting
//! frames.
//!
//! ```text
//! cargo run --example cube --features raw-window-handle,vulkan,gbm -- \
//!     --frames 300 --size 256x256 --present-mode fifo --sync auto --wsi winsys
//! ```
//!
//! Flags:
//! - `--frames N` (default 300);
//! - `--size WxH` (default 256x256): the size unless a fullscreen or
//!   maximized configure sets one;
//! - `--images N`: swapchain images (default 4, what Mesa's Wayland WSI
//!   asks at least; it may raise a lower count to that);
//! - `--present-mode fifo|mailbox|immediate` (default fifo; immediate asks
//!   the compositor for tearing updates where it offers tearing control),
//!   or a comma list (`fifo,mailbox`, with `--wsi mesa` and
//!   `--recreate-every`): the first swapchain takes the first mode, each
//!   one made anew the next in turn (one surface switched between modes);
//!   the summary line and the JSON name the first;
//! - `--sync auto|syncobj|explicit|implicit|shm` (winsys only; default auto);
//! - `--copy-frames` (winsys only): render into images of the app's device
//!   and copy each frame into the compositor's LINEAR buffer, as winsys does
//!   by itself when the compositor's device is another GPU;
//! - `--wsi winsys|mesa` (default winsys);
//! - `--srgb`: images in `B8G8R8A8_SRGB` (the GPU encodes the colours)
//!   instead of `B8G8R8A8_UNORM`;
//! - `--format FORMAT` (mesa only): the swapchain's `VkFormat`, by its
//!   name (one of [`FORMATS`], e.g. `R8G8B8A8_UNORM`); the run fails
//!   where the surface does not offer it. `--json` lists the surface's
//!   formats either way (`surface_formats`);
//! - `--premultiplied` (mesa only): the swapchain's composite alpha is
//!   `PRE_MULTIPLIED` instead of `OPAQUE` (the compositor blends by the
//!   images' alpha; the cube's pixels are opaque, so it looks the same);
//! - `--present-wait` (mesa only): every present carries an id
//!   (`VK_KHR_present_id`) and each frame first waits, with
//!   `vkWaitForPresentKHR`, until the one two frames back was shown;
//! - `--maintenance1` (mesa only): `VK_EXT_swapchain_maintenance1`:
//!   every present signals a fence (`VkSwapchainPresentFenceInfoEXT`),
//!   waited for before its slot is used again, and every tenth frame
//!   acquires one more image and gives it back unpresented
//!   (`vkReleaseSwapchainImagesEXT`);
//! - `--fence-before-present` (mesa only): the rendering signals no
//!   semaphore; the app waits for its fence, then presents with no wait
//!   semaphores (the fence's CPU wait is all that orders the present
//!   after the rendering);
//! - `--second-swapchain` (mesa only): after the first swapchain, ask for
//!   another on the same surface without `oldSwapchain`, which must be
//!   refused with `VK_ERROR_NATIVE_WINDOW_IN_USE_KHR` (said on stdout);
//! - `--recreate-every N`: make the swapchain anew (same size; Mesa:
//!   with `oldSwapchain`) after every N frames, as a window being resized
//!   does: the end-of-run fd and heap figures show whether replaced
//!   swapchains leave anything behind;
//! - `--validation`: the Khronos validation layer, its errors fail the run;
//! - `--json`: the figures as one JSON object on the last line;
//! - `--timeout SECS`: the bound on every wait (default 5);
//! - `--weston`: start a headless weston (gl renderer, kiosk shell, output
//!   of the cube's size) of its own and present there (the test bed and
//!   `cargo xtask demo` run it so).
//!
//! It prints the sync mode and buffer path used, the size rendered at (the
//! last swapchain's) and how often the swapchain was made anew, frames per
//! second, CPU time per frame (all threads, including the driver's) —
//! over the whole run and in the steady state (after a fifth of the
//! frames, at most 30, and after every image was presented once: start-up,
//! first compiles, recreations and the swapchain's fill left out, alike
//! for both WSIs) — and the latency from commit to presentation
//! that the compositor's `wp_presentation` feedback reports.

mod mesa;
mod render;
mod window;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ash::vk;
use winsys::format::Fourcc;
use winsys::vulkan::{Device, ImageView, Instance};
use winsys::wayland::presentation::PresentationStats;
use winsys::wayland::swapchain::{PresentMode, Swapchain, SwapchainConfig};
use winsys::wayland::sync::SyncMode;

use render::Renderer;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Frame pacing (the modes both WSIs share).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Fifo,
    Mailbox,
    Immediate,
}

/// The command line.
#[derive(Debug, Clone)]
pub struct Args {
    pub frames: u64,
    pub images: u32,
    pub width: u32,
    pub height: u32,
    /// `--present-mode`: the first swapchain's, then each one made anew
    /// takes the next in turn (a list switches one surface between modes).
    pub present_modes: Vec<Mode>,
    pub sync: Option<SyncMode>,
    pub mesa: bool,
    pub validation: bool,
    pub json: bool,
    pub own_weston: bool,
    pub copy_frames: bool,
    pub srgb: bool,
    /// `--format`.
    pub format: Option<vk::Format>,
    pub premultiplied: bool,
    pub second_swapchain: bool,
    pub present_wait: bool,
    pub maintenance1: bool,
    pub fence_before_present: bool,
    /// Make the swapchain anew after every this many frames (0: only
    /// when the compositor asks).
    pub recreate_every: u64,
    pub timeout: Duration,
}

impl Args {
    /// The first swapchain's present mode.
    pub fn present_mode(&self) -> Mode {
        self.present_modes[0]
    }
}

const USAGE: &str =
    "usage: cube [--frames N] [--images N] [--size WxH] [--present-mode fifo|mailbox|immediate[,...]] \
[--sync auto|syncobj|explicit|implicit|shm] [--copy-frames] [--wsi winsys|mesa] [--srgb] [--format VKFORMAT] [--premultiplied] [--present-wait] [--maintenance1] [--fence-before-present] [--second-swapchain] [--recreate-every N] [--validation] [--json] [--weston] [--timeout SECS]";

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args> {
    let mut args = Args {
        frames: 300,
        images: 4,
        width: 256,
        height: 256,
        present_modes: vec![Mode::Fifo],
        sync: None,
        mesa: false,
        validation: false,
        json: false,
        own_weston: false,
        copy_frames: false,
        srgb: false,
        format: None,
        premultiplied: false,
        second_swapchain: false,
        present_wait: false,
        maintenance1: false,
        fence_before_present: false,
        recreate_every: 0,
        timeout: Duration::from_secs(5),
    };
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--frames" => args.frames = value()?.parse()?,
            "--images" => {
                args.images = value()?.parse()?;
                if args.images < 2 {
                    return Err("--images must be at least 2".into());
                }
            }
            "--size" => {
                let v = value()?;
                let (w, h) = v.split_once('x').ok_or("--size takes WxH, e.g. 256x256")?;
                args.width = w.parse()?;
                args.height = h.parse()?;
                if args.width == 0 || args.height == 0 {
                    return Err("--size must not be empty".into());
                }
            }
            "--present-mode" => {
                args.present_modes = value()?
                    .split(',')
                    .map(|m| match m {
                        "fifo" => Ok(Mode::Fifo),
                        "mailbox" => Ok(Mode::Mailbox),
                        "immediate" => Ok(Mode::Immediate),
                        other => Err(format!("unknown present mode {other}\n{USAGE}")),
                    })
                    .collect::<std::result::Result<_, _>>()?;
            }
            "--sync" => {
                let v = value()?;
                args.sync = match v.as_str() {
                    "auto" => None,
                    name => Some(
                        SyncMode::from_name(name)
                            .ok_or_else(|| format!("unknown sync mode {name}\n{USAGE}"))?,
                    ),
                }
            }
            "--wsi" => {
                args.mesa = match value()?.as_str() {
                    "winsys" => false,
                    "mesa" => true,
                    other => return Err(format!("unknown WSI {other}\n{USAGE}").into()),
                }
            }
            "--validation" => args.validation = true,
            "--json" => args.json = true,
            "--timeout" => args.timeout = Duration::from_secs_f64(value()?.parse()?),
            "--weston" => args.own_weston = true,
            "--copy-frames" => args.copy_frames = true,
            "--srgb" => args.srgb = true,
            "--format" => {
                let v = value()?;
                let found = FORMATS.into_iter().find(|f| format!("{f:?}") == v);
                args.format = Some(found.ok_or_else(|| {
                    format!("--format takes one of {FORMATS:?}, not {v}\n{USAGE}")
                })?);
            }
            "--premultiplied" => args.premultiplied = true,
            "--second-swapchain" => args.second_swapchain = true,
            "--present-wait" => args.present_wait = true,
            "--maintenance1" => args.maintenance1 = true,
            "--fence-before-present" => args.fence_before_present = true,
            "--recreate-every" => args.recreate_every = value()?.parse()?,
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown flag {other}\n{USAGE}").into()),
        }
    }
    if args.mesa && args.copy_frames {
        return Err("--copy-frames is winsys's; Mesa's WSI decides that itself".into());
    }
    if (args.second_swapchain
        || args.present_wait
        || args.premultiplied
        || args.format.is_some()
        || args.fence_before_present)
        && !args.mesa
    {
        return Err(
            "--second-swapchain, --present-wait, --premultiplied, --format and --fence-before-present are for --wsi mesa (VK_KHR_swapchain)"
                .into(),
        );
    }
    if args.present_modes.len() > 1 && !(args.mesa && args.recreate_every > 0) {
        return Err(
            "several present modes are for --wsi mesa with --recreate-every (each swapchain made anew takes the next)"
                .into(),
        );
    }
    if args.srgb && args.format.is_some() {
        return Err("--srgb is --format B8G8R8A8_SRGB: one or the other".into());
    }
    if args.mesa && args.sync.is_some() {
        return Err("--sync chooses winsys's sync mode; Mesa's WSI chooses its own".into());
    }
    Ok(args)
}

/// The formats `--format` names: what Mesa's Wayland WSI may offer.
pub const FORMATS: [vk::Format; 10] = [
    vk::Format::B8G8R8A8_SRGB,
    vk::Format::B8G8R8A8_UNORM,
    vk::Format::R8G8B8A8_SRGB,
    vk::Format::R8G8B8A8_UNORM,
    vk::Format::A2R10G10B10_UNORM_PACK32,
    vk::Format::A2B10G10R10_UNORM_PACK32,
    vk::Format::R16G16B16A16_SFLOAT,
    vk::Format::R16G16B16A16_UNORM,
    vk::Format::R5G6B5_UNORM_PACK16,
    vk::Format::R5G5B5A1_UNORM_PACK16,
];

/// What a run measured.
pub struct Frames {
    start: Instant,
    cpu_start: Duration,
    pub presented: u64,
    pub wall: Duration,
    pub cpu: Duration,
    pub presentation: Option<PresentationStats>,
    /// Resident set size (KiB) when the frames began and ended.
    pub rss_kib: (u64, u64),
    /// Heap in use (KiB) when the frames began and ended.
    pub heap_kib: (u64, u64),
    /// (RSS KiB, heap KiB, open fds) after the first [`WARM_FRAMES`]
    /// frames (pools filled, caches warm) and at the end: a steady state
    /// leaks nothing between the two.
    pub warm: Option<(u64, u64, u64)>,
    /// The same at the end.
    pub end: (u64, u64, u64),
    pub sync: String,
    pub path: String,
    /// The surface's formats, space-separated (`--wsi mesa`).
    pub surface_formats: String,
    pub images: usize,
    /// The size rendered at: the last swapchain's.
    pub width: u32,
    pub height: u32,
    /// Swapchains made anew after the first (configure, suboptimal, out
    /// of date).
    pub recreated: u32,
    /// The frame count at the last `--recreate-every` recreation.
    recreated_at: Option<u64>,
    /// `vkWaitForPresentKHR` calls that returned success (`--present-wait`).
    pub present_waits: u64,
    /// Present fences waited for, and images given back unpresented
    /// (`--maintenance1`).
    pub present_fences: u64,
    pub released: u64,
    /// The frame after which the steady state is timed
    /// ([`steady_from`]), and the wall clock and CPU time then.
    steady_from: u64,
    steady_start: Option<(Instant, Duration)>,
    /// Frames per second and CPU ms per frame from `steady_from` to the
    /// end: start-up (device, swapchain, first compiles, the
    /// compositor's first frames) left out, for both WSIs alike.
    pub steady: Option<(f64, f64)>,
}

/// The frame after which a run of `frames` on a swapchain of `images`
/// images (the first swapchain's: at least `--images`, more where the WSI
/// asks for more) is in its steady state: a fifth of the run, at most 30,
/// and not before every image has been presented once. Until then a WSI that lets the app run ahead of the
/// compositor (several presents queued before one waits) hands frames
/// over faster than they are shown; a window that starts in that fill
/// measures the queue, not the rate. Measured (weston, 1920x1080 FIFO, 4
/// images, `--wsi mesa`, 2 rounds): from frame 1 of 6 the driver's WSI
/// read 0.873 / 0.888 fps and the layer 0.756 / 0.707; from frame 4 of
/// 20, 0.769 / 0.745 and 0.752 / 0.738.
pub fn steady_from(frames: u64, images: u32) -> u64 {
    (frames / 5).clamp(1, 30).max(u64::from(images))
}

/// glibc's `struct mallinfo2`.
#[repr(C)]
struct Mallinfo2 {
    arena: usize,
    ordblks: usize,
    smblks: usize,
    hblks: usize,
    hblkhd: usize,
    usmblks: usize,
    fsmblks: usize,
    uordblks: usize,
    fordblks: usize,
    keepcost: usize,
}

extern "C" {
    fn mallinfo2() -> Mallinfo2;
}

/// Heap bytes allocated and not freed, in KiB (glibc `mallinfo2`: every
/// arena plus mmapped chunks).
fn heap_kib() -> u64 {
    // SAFETY: mallinfo2 takes nothing and returns a plain struct.
    let m = unsafe { mallinfo2() };
    ((m.uordblks + m.hblkhd) / 1024) as u64
}

/// This process's resident set size in KiB (/proc/self/statm).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * rustix::param::page_size() as u64 / 1024)
}

/// The JSON fields of RSS, heap and fds after [`WARM_FRAMES`] frames
/// (`null` for a shorter run) and at the end.
fn steady_state(f: &Frames) -> String {
    let (r, h, n) = f.end;
    let warm = |v: Option<u64>| v.map_or("null".into(), |v| v.to_string());
    format!(
        "\"warm_rss_kib\":{},\"warm_heap_kib\":{},\"warm_fds\":{},\
         \"end_rss_kib\":{r},\"end_heap_kib\":{h},\"end_fds\":{n}",
        warm(f.warm.map(|w| w.0)),
        warm(f.warm.map(|w| w.1)),
        warm(f.warm.map(|w| w.2)),
    )
}

/// Frames after which the steady state is sampled ([`Frames::warm`]).
pub const WARM_FRAMES: u64 = 100;

/// This process's open fds (/proc/self/fd).
fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

fn sample() -> (u64, u64, u64) {
    (rss_kib(), heap_kib(), open_fds())
}

fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

impl Frames {
    /// Frames of a run whose first swapchain has `images` images.
    pub fn start(args: &Args, images: usize) -> Frames {
        Frames {
            start: Instant::now(),
            cpu_start: cpu_time(),
            presented: 0,
            wall: Duration::ZERO,
            cpu: Duration::ZERO,
            presentation: None,
            rss_kib: (rss_kib(), 0),
            heap_kib: (heap_kib(), 0),
            warm: None,
            end: (0, 0, 0),
            sync: String::new(),
            path: String::new(),
            surface_formats: String::new(),
            images: 0,
            width: 0,
            height: 0,
            recreated: 0,
            recreated_at: None,
            present_waits: 0,
            present_fences: 0,
            released: 0,
            steady_from: steady_from(args.frames, images as u32),
            steady_start: None,
            steady: None,
        }
    }

    /// The animation time of the next frame: a fixed step per frame, so
    /// every run shows the same sequence of frames.
    pub fn t(&self) -> f32 {
        self.presented as f32 / 60.0
    }

    /// `--recreate-every`: whether the swapchain is to be made anew
    /// before the next frame (once per multiple of N frames presented).
    pub fn recreation_due(&mut self, args: &Args) -> bool {
        let n = args.recreate_every;
        let due = n > 0
            && self.presented > 0
            && self.presented.is_multiple_of(n)
            && self.recreated_at != Some(self.presented);
        if due {
            self.recreated_at = Some(self.presented);
        }
        due
    }

    /// One more frame presented.
    pub fn presented_one(&mut self) {
        self.presented += 1;
        if self.presented == WARM_FRAMES {
            self.warm = Some(sample());
        }
        if self.presented == self.steady_from {
            self.steady_start = Some((Instant::now(), cpu_time()));
        }
    }

    pub fn finish(&mut self) {
        self.wall = self.start.elapsed();
        self.cpu = cpu_time() - self.cpu_start;
        if let Some((t, cpu)) = self.steady_start {
            let n = self.presented - self.steady_from;
            let secs = t.elapsed().as_secs_f64();
            if n > 0 && secs > 0.0 {
                let cpu_ms = (cpu_time() - cpu).as_secs_f64() * 1e3 / n as f64;
                self.steady = Some((n as f64 / secs, cpu_ms));
            }
        }
        self.rss_kib.1 = rss_kib();
        self.heap_kib.1 = heap_kib();
        self.end = sample();
    }
}

/// What the compositor last configured the window to, in words (the log
/// of a recreation).
pub fn configured(window: &window::Window) -> String {
    match window.configured_size() {
        Some((w, h)) if window.constrained() => format!("{w}x{h}, fullscreen or maximized"),
        Some((w, h)) => format!("{w}x{h}"),
        None => "no size".into(),
    }
}

/// The answers about two swapchains' frames, one after the other, as one.
fn merge(a: Option<PresentationStats>, b: Option<PresentationStats>) -> Option<PresentationStats> {
    match (a, b) {
        (Some(a), Some(b)) => Some(PresentationStats {
            requested: a.requested + b.requested,
            presented: a.presented + b.presented,
            discarded: a.discarded + b.discarded,
            zero_copy: a.zero_copy + b.zero_copy,
            latency_total: a.latency_total + b.latency_total,
            latency_max: a.latency_max.max(b.latency_max),
            timed: a.timed + b.timed,
            refresh: b.refresh.or(a.refresh),
        }),
        (a, b) => a.or(b),
    }
}

/// The answers about `chain`'s frames, once every one came (the last
/// within a refresh or two) or `patience` passed.
fn settle(chain: &mut Swapchain, patience: Duration) -> Result<Option<PresentationStats>> {
    let deadline = Instant::now() + patience;
    let mut last = None;
    while let Some(stats) = chain.presentation()? {
        last = Some(stats);
        if stats.outstanding() == 0 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(last)
}

/// A winsys swapchain on the window's surface and what renders into it.
/// The fields drop in order: the renderer (its framebuffers) before the
/// views, the views before the swapchain's images; the device must be idle.
struct WinsysChain {
    renderer: Renderer,
    views: Vec<ImageView>,
    chain: Swapchain,
}

impl WinsysChain {
    /// A swapchain of `config` presenting into `window`, its views and the
    /// renderer.
    ///
    /// # Safety
    ///
    /// The window must outlive the returned chain, and no other swapchain
    /// may present into it meanwhile (the surface takes one set of sync,
    /// FIFO and tearing objects at a time).
    unsafe fn new(
        instance: &Instance,
        device: &Device,
        window: &window::Window,
        config: &SwapchainConfig,
    ) -> Result<Self> {
        let (display, handle) = window.raw_handles()?;
        // SAFETY: the caller keeps the window (its wl_display and
        // wl_surface) alive past the swapchain.
        let chain = unsafe { Swapchain::from_raw_handles(device, display, handle, config) }?;
        let views = (0..chain.len())
            .map(|i| chain.image(i).create_view())
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let raw_views: Vec<vk::ImageView> = views.iter().map(|v| v.raw()).collect();
        // SAFETY: the handles are the winsys device's own; the views
        // outlive the renderer (fields dropped in order).
        let renderer = unsafe {
            Renderer::new(
                instance.raw(),
                device.info().handle(),
                device.raw(),
                chain.image(0).vk_format().format,
                chain.image(0).extent(),
                &raw_views,
                vk::ImageLayout::COLOR_ATTACHMENT_OPTIMAL,
                vk::ImageLayout::COLOR_ATTACHMENT_OPTIMAL,
            )
        }?;
        Ok(WinsysChain {
            renderer,
            views,
            chain,
        })
    }

    /// The size of its images.
    fn size(&self) -> (u32, u32) {
        let extent = self.chain.image(0).extent();
        (extent.width, extent.height)
    }
}

fn run_winsys(args: &Args, window: &mut window::Window) -> Result<Frames> {
    let instance = if args.validation {
        Instance::with_validation()?
    } else {
        Instance::new()?
    };
    let device = Device::open(&instance)?;
    // The size the compositor configured (Window::open waited for the
    // first configure), else --size.
    let (width, height) = window.size_or((args.width, args.height));
    let mut config = SwapchainConfig::new(width, height, Fourcc::XRGB8888);
    config.usage = vk::ImageUsageFlags::COLOR_ATTACHMENT;
    config.image_count = args.images as usize;
    config.sync = args.sync;
    config.copy_frames = args.copy_frames;
    if args.srgb {
        config.encoding = winsys::vulkan::format::Encoding::Srgb;
    }
    config.timeout = args.timeout;
    config.present_mode = match args.present_mode() {
        Mode::Fifo => PresentMode::Fifo,
        Mode::Mailbox => PresentMode::Mailbox,
        Mode::Immediate => PresentMode::Immediate,
    };
    let mut seen = window.generation();
    // SAFETY: the window outlives the swapchain (every one is dropped in
    // this function, the window is the caller's), and there is no other.
    let mut current = unsafe { WinsysChain::new(&instance, &device, window, &config) }?;
    // The presentation answers about the swapchains replaced so far.
    let mut replaced: Option<PresentationStats> = None;
    let mut frames = Frames::start(args, current.chain.len());
    while frames.presented < args.frames {
        if !window.pump()? {
            break;
        }
        // pump() acknowledged any new configure: the next commit must fit
        // it, so a new size is taken before this frame is presented.
        let mut why = None;
        if window.generation() != seen {
            seen = window.generation();
            if window.size_or((args.width, args.height)) != current.size() {
                why = Some(format!("the compositor configured {}", configured(window)));
            }
        }
        if why.is_none() && current.chain.suboptimal()? {
            why = Some("the swapchain is suboptimal (linux-dmabuf feedback changed)".into());
        }
        if why.is_none() && frames.recreation_due(args) {
            why = Some(format!("--recreate-every {}", args.recreate_every));
        }
        if let Some(why) = why {
            let (width, height) = window.size_or((args.width, args.height));
            eprintln!("cube: {why}: making the swapchain anew at {width}x{height}");
            device.wait_idle()?;
            // The old swapchain's answers, before its wp_presentation goes.
            replaced = merge(
                replaced,
                settle(&mut current.chain, Duration::from_secs(2))?,
            );
            // The old one goes first: the surface takes one swapchain's
            // sync, FIFO and tearing objects at a time.
            drop(current);
            config.width = width;
            config.height = height;
            // SAFETY: as above; the old swapchain was dropped.
            current = unsafe { WinsysChain::new(&instance, &device, window, &config) }?;
            frames.recreated += 1;
        }
        let WinsysChain {
            renderer,
            views,
            chain,
        } = &mut current;
        let index = chain.acquire(args.timeout)?;
        let mut job = device.submission()?;
        chain.begin_with(
            &mut job,
            index,
            vk::ImageLayout::COLOR_ATTACHMENT_OPTIMAL,
            vk::PipelineStageFlags::COLOR_ATTACHMENT_OUTPUT,
            vk::AccessFlags::COLOR_ATTACHMENT_WRITE,
        )?;
        job.uses(&views[index])?;
        // SAFETY: the job's command buffer records on the renderer's
        // device; begin_with left the image in COLOR_ATTACHMENT_OPTIMAL.
        unsafe { renderer.record(job.cmd(), index, frames.t()) };
        chain.present(index, job)?;
        frames.presented_one();
    }
    frames.finish();
    // The last answers come within a refresh or two.
    let last = settle(&mut current.chain, Duration::from_secs(2))?;
    frames.presentation = merge(replaced, last);
    let chain = &current.chain;
    frames.sync = chain.sync_mode().to_string();
    frames.path = match chain.copies_frames() {
        true => format!("{:?}, frames copied into it", chain.buffer_path()),
        false => format!("{:?}", chain.buffer_path()),
    };
    frames.images = chain.len();
    (frames.width, frames.height) = current.size();
    device.wait_idle()?;
    // The renderer, the views, then the swapchain; the window after them.
    drop(current);
    instance.check_validation()?;
    Ok(frames)
}

/// A headless weston of the cube's own (`--weston`), stopped on drop.
struct OwnWeston {
    child: std::process::Child,
    socket: String,
}

impl OwnWeston {
    fn start(width: u32, height: u32) -> Result<OwnWeston> {
        let runtime =
            std::env::var_os("XDG_RUNTIME_DIR").ok_or("--weston needs XDG_RUNTIME_DIR")?;
        let socket = format!("winsys-cube-{}", std::process::id());
        let log = std::path::Path::new(&runtime).join(format!("{socket}.log"));
        eprintln!(
            "cube: starting weston (headless, gl renderer, {width}x{height}) on {socket}, log {}",
            log.display()
        );
        let out = std::fs::File::create(&log)?;
        let child = std::process::Command::new("weston")
            .args([
                "--backend=headless",
                "--renderer=gl",
                "--shell=kiosk",
                "--idle-time=0",
                &format!("--socket={socket}"),
                &format!("--width={width}"),
                &format!("--height={height}"),
            ])
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("cannot start weston: {e}"))?;
        let weston = OwnWeston { child, socket };
        let start = Instant::now();
        loop {
            if let Ok(conn) = winsys::wayland::connect(Some(&weston.socket)) {
                if winsys::wayland::probe(&conn, Duration::from_secs(10)).is_ok() {
                    eprintln!("cube: weston up after {:.1?}", start.elapsed());
                    return Ok(weston);
                }
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(
                    format!("weston did not come up in 60 s (log: {})", log.display()).into(),
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for OwnWeston {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn report(args: &Args, f: &Frames) {
    let wsi = if args.mesa { "mesa" } else { "winsys" };
    let secs = f.wall.as_secs_f64();
    let fps = if secs > 0.0 {
        f.presented as f64 / secs
    } else {
        0.0
    };
    let cpu_ms = if f.presented > 0 {
        f.cpu.as_secs_f64() * 1e3 / f.presented as f64
    } else {
        0.0
    };
    let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e3);
    let p = f.presentation;
    let asked = match (f.width, f.height) == (args.width, args.height) {
        true => String::new(),
        false => format!(" (--size {}x{})", args.width, args.height),
    };
    println!(
        "cube: wsi {wsi}, sync {}, path {}, {:?} {}x{}{asked}, {} images",
        f.sync,
        f.path,
        args.present_mode(),
        f.width,
        f.height,
        f.images
    );
    if args.present_wait {
        println!("cube: present waits: {} succeeded", f.present_waits);
    }
    if args.maintenance1 {
        println!(
            "cube: present fences: {} signalled; images released unpresented: {}",
            f.present_fences, f.released
        );
    }
    match f.recreated {
        0 => println!("cube: swapchain never recreated"),
        n => println!(
            "cube: swapchain recreated {n} times, last at {}x{}",
            f.width, f.height
        ),
    }
    println!(
        "cube: {} frames in {secs:.2} s: {fps:.1} fps, CPU {cpu_ms:.2} ms/frame, RSS {} -> {} KiB, heap in use {} -> {} KiB",
        f.presented, f.rss_kib.0, f.rss_kib.1, f.heap_kib.0, f.heap_kib.1
    );
    if let Some((fps, cpu_ms)) = f.steady {
        println!(
            "cube: steady state (after frame {}): {fps:.1} fps, CPU {cpu_ms:.2} ms/frame",
            f.steady_from
        );
    }
    match p {
        Some(p) => println!(
            "cube: presentation: {} presented ({} zero-copy), {} discarded, latency mean {} ms, max {:.1} ms",
            p.presented,
            p.zero_copy,
            p.discarded,
            ms(p.mean_latency()).map_or("?".into(), |m| format!("{m:.1}")),
            p.latency_max.as_secs_f64() * 1e3
        ),
        None => println!("cube: presentation: the compositor offers no wp_presentation"),
    }
    if args.json {
        let opt = |v: Option<f64>| v.map_or("null".into(), |v| format!("{v:.3}"));
        println!(
            "{{\"wsi\":\"{wsi}\",\"sync\":\"{}\",\"path\":\"{}\",\"present_mode\":\"{:?}\",\
\"images\":{},\"width\":{},\"height\":{},\"recreated\":{},\"frames\":{},\"seconds\":{secs:.3},\"fps\":{fps:.3},\
\"cpu_ms_per_frame\":{cpu_ms:.3},\"presented\":{},\"discarded\":{},\"zero_copy\":{},\
\"latency_mean_ms\":{},\"latency_max_ms\":{},\"steady_from\":{},\"steady_fps\":{},\"steady_cpu_ms_per_frame\":{},{},\
\"surface_formats\":\"{}\"}}",
            f.sync,
            f.path.replace('"', "'"),
            args.present_mode(),
            f.images,
            f.width,
            f.height,
            f.recreated,
            f.presented,
            p.map_or("null".into(), |p| p.presented.to_string()),
            p.map_or("null".into(), |p| p.discarded.to_string()),
            p.map_or("null".into(), |p| p.zero_copy.to_string()),
            opt(p.and_then(|p| ms(p.mean_latency()))),
            opt(p.map(|p| p.latency_max.as_secs_f64() * 1e3)),
            f.steady_from,
            opt(f.steady.map(|s| s.0)),
            opt(f.steady.map(|s| s.1)),
            steady_state(f),
            f.surface_formats,
        );
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cube: {e}");
            return ExitCode::from(2);
        }
    };
    let run = || -> Result<Frames> {
        let weston = if args.own_weston {
            Some(OwnWeston::start(args.width, args.height)?)
        } else {
            None
        };
        let mut window =
            window::Window::open(weston.as_ref().map(|w| w.socket.as_str()), "winsys cube")?;
        if args.mesa {
            mesa::run(&args, &mut window)
        } else {
            run_winsys(&args, &mut window)
        }
    };
    match run() {
        Ok(frames) => {
            report(&args, &frames);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cube: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::steady_from;

    /// The steady state starts after the swapchain's fill: never before
    /// every image was presented once, whatever the run's length.
    #[test]
    fn the_steady_state_starts_after_every_image_was_presented() {
        // A short 1080p run: a fifth of it would be frame 1, in the fill.
        assert_eq!(steady_from(6, 4), 4);
        assert_eq!(steady_from(10, 4), 4);
        assert_eq!(steady_from(20, 6), 6);
        // Long runs: a fifth of the run, at most 30 frames.
        assert_eq!(steady_from(100, 4), 20);
        assert_eq!(steady_from(600, 4), 30);
        // Never frame 0.
        assert_eq!(steady_from(2, 0), 1);
    }
}
