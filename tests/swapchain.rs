//! The Vulkan swapchain on Wayland against weston 14 (headless, gl
//! renderer): lavapipe-exported images the compositor imports (zero
//! copy), cleared on the GPU, presented with the sync winsys chooses there
//! and with the lower one forced; the Khronos validation layer is on and
//! weston's output is read back.

mod common;

use std::time::Duration;

use ash::vk;
use common::mutter::Mutter;
use common::sway::Sway;
use common::vk::Gpu;
use common::weston::{capture, Weston};
use common::{need, LONG};
use winsys::format::Fourcc;
use winsys::vulkan::image::color_range;
use winsys::vulkan::Submission;
use winsys::wayland::swapchain::{
    self, BufferPath, ImageState, PresentMode, Swapchain, SwapchainConfig,
};
use winsys::wayland::{self, sync::SyncMode};

/// `frames` frames, each cleared to a grey of its own, through a
/// swapchain in `sync` (None: the best); returns the last grey's byte.
/// Checks that weston shows the last one at the centre of its output.
/// The wl_shm path this machine allows: the images' own memory where
/// `/dev/udmabuf` opens (the test bed), else one copy.
fn shm_path() -> BufferPath {
    match winsys::alloc::udmabuf::Udmabuf::open() {
        Ok(_) => BufferPath::ShmZeroCopy,
        Err(_) => BufferPath::ShmCopy,
    }
}

fn clear_frames(gpu: &Gpu, weston: &Weston, sync: Option<SyncMode>, frames: u32) -> (SyncMode, u8) {
    let mut config = SwapchainConfig::new(64, 64, Fourcc::XRGB8888);
    config.sync = sync;
    run_frames(gpu, weston, &config, frames, true).0
}

/// The frame loop: with `wait_each`, the test waits for every frame to be
/// shown; without, the swapchain's own pacing is all there is. Returns the
/// sync mode, the last grey, and the swapchain's counters (presented,
/// shown, missed callbacks).
fn run_frames(
    gpu: &Gpu,
    weston: &Weston,
    config: &SwapchainConfig,
    frames: u32,
    wait_each: bool,
) -> ((SyncMode, u8), (u64, u64, u64)) {
    let conn = wayland::connect(Some(&weston.socket)).unwrap();
    let mut config = config.clone();
    config.timeout = Duration::from_secs(20);
    let mut chain = Swapchain::new(&gpu.device, &conn, &config).unwrap();
    // On weston's own device (vgem), as dumb buffers, imported into lavapipe:
    // weston 14's llvmpipe crashes on lavapipe's udmabuf exports. Without
    // linux-dmabuf: wl_shm over the images' own memfds (udmabuf).
    let expect = match chain.sync_mode() {
        SyncMode::Shm => shm_path(),
        _ => BufferPath::CompositorDevice {
            driver: "vgem".into(),
        },
    };
    assert_eq!(chain.buffer_path(), &expect);
    let mut last = 0;
    for frame in 0..frames {
        let i = chain.acquire(LONG * 4).unwrap();
        assert_eq!(chain.state(i), ImageState::Acquired);
        let mut job = gpu.device.submission().unwrap();
        job.timeout(Some(LONG * 4));
        chain.begin(&mut job, i).unwrap();
        last = 0x30 + frame as u8 * 8;
        record_clear(gpu, &chain, &job, i, last);
        chain.present(i, job).unwrap();
        assert_eq!(chain.state(i), ImageState::Queued);
        // Out of turn: a queued image cannot be begun or presented again.
        let mut again = gpu.device.submission().unwrap();
        assert!(matches!(
            chain.begin(&mut again, i),
            Err(wayland::Error::ImageState { .. })
        ));
        drop(again);
        if wait_each {
            chain.wait_shown().unwrap();
        }
    }
    let counters = (
        chain.frames_presented(),
        chain.frames_shown(),
        chain.missed_callbacks(),
    );
    chain.wait_shown().unwrap();
    assert!(chain.frames_shown() >= 1);
    // Read back while the window is still up (dropping the swapchain
    // destroys the surface).
    assert_centre_shows(weston, last);
    ((chain.sync_mode(), last), counters)
}

/// Record a clear of swapchain image `i` (begun in `job`) to the grey
/// `byte` on every channel.
fn record_clear(gpu: &Gpu, chain: &Swapchain, job: &Submission<'_>, i: usize, byte: u8) {
    let v = byte as f32 / 255.0;
    let color = vk::ClearColorValue {
        float32: [v, v, v, 1.0],
    };
    // SAFETY: the submission's command buffer is recording; the image is
    // the swapchain's, kept alive by the submission (begin).
    unsafe {
        gpu.device.raw().cmd_clear_color_image(
            job.cmd(),
            chain.image(i).raw(),
            vk::ImageLayout::TRANSFER_DST_OPTIMAL,
            &color,
            &[color_range()],
        )
    };
}

fn assert_centre_shows(weston: &Weston, byte: u8) {
    let conn = wayland::connect(Some(&weston.socket)).unwrap();
    let shot = capture(&conn).unwrap();
    let got = shot.pixel(shot.width / 2, shot.height / 2) & 0x00ff_ffff;
    let want = u32::from_le_bytes([byte, byte, byte, 0]);
    println!("weston shows {got:#08x} at the centre (want {want:#08x})");
    assert_eq!(got, want);
}

#[test]
fn gpu_cleared_frames_reach_weston_with_the_best_sync_and_zero_copy() {
    let gpu = need!(Gpu::new(), "Vulkan with validation");
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let (mode, _) = clear_frames(&gpu, &weston, None, 10);
    println!("swapchain presented with {mode}");
    // weston's main device is vgem, which renders nothing: weston composes
    // on the CPU, and a FIFO swapchain there takes zero-copy wl_shm before
    // explicit sync (whose release fence would make each composition
    // synchronous); `run_frames` checked the zero-copy path.
    assert_eq!(mode, SyncMode::Shm);
    // MAILBOX keeps the best fence weston takes: lavapipe exports SYNC_FD.
    let mut config = SwapchainConfig::new(64, 64, Fourcc::XRGB8888);
    config.present_mode = PresentMode::Mailbox;
    let ((mode, _), _) = run_frames(&gpu, &weston, &config, 4, true);
    let expect = if gpu.device.sync_fd_support().semaphore_export {
        SyncMode::ExplicitSync
    } else {
        SyncMode::Implicit
    };
    assert_eq!(mode, expect);
}

#[test]
fn forced_implicit_sync_presents_too() {
    let gpu = need!(Gpu::new(), "Vulkan with validation");
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let (mode, _) = clear_frames(&gpu, &weston, Some(SyncMode::Implicit), 8);
    assert_eq!(mode, SyncMode::Implicit);
}

#[test]
fn a_mode_the_compositor_lacks_is_refused_with_the_reason() {
    let gpu = need!(Gpu::new(), "Vulkan with validation");
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let conn = wayland::connect(Some(&weston.socket)).unwrap();
    let mut config = SwapchainConfig::new(64, 64, Fourcc::XRGB8888);
    config.sync = Some(SyncMode::DrmSyncobj);
    let err = Swapchain::new(&gpu.device, &conn, &config).err().unwrap();
    assert!(
        matches!(err, wayland::Error::Unavailable(ref u) if u.mode == SyncMode::DrmSyncobj),
        "{err}"
    );
}

#[test]
fn fifo_waits_for_each_frame_to_be_shown_and_mailbox_presents_them_all() {
    let gpu = need!(Gpu::new(), "Vulkan with validation");
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let mut config = SwapchainConfig::new(64, 64, Fourcc::XRGB8888);
    config.present_mode = PresentMode::Fifo;
    config.fifo_patience = Duration::from_secs(10);
    let (_, (presented, shown, missed)) = run_frames(&gpu, &weston, &config, 8, false);
    println!("FIFO: {presented} presented, {shown} shown before the last, {missed} missed");
    assert_eq!(presented, 8);
    // Each present waited for the previous frame's callback.
    assert!(shown >= 7, "{shown} shown");
    assert_eq!(missed, 0);

    config.present_mode = PresentMode::Mailbox;
    let (_, (presented, shown, missed)) = run_frames(&gpu, &weston, &config, 8, false);
    println!("MAILBOX: {presented} presented, {shown} shown before the last, {missed} missed");
    assert_eq!(presented, 8);
    assert_eq!(missed, 0);
}

#[test]
fn immediate_asks_weston_for_tearing_updates_and_presents() {
    let gpu = need!(Gpu::new(), "Vulkan with validation");
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let conn = wayland::connect(Some(&weston.socket)).unwrap();
    let mut config = SwapchainConfig::new(64, 64, Fourcc::XRGB8888);
    config.present_mode = PresentMode::Immediate;
    config.timeout = Duration::from_secs(20);
    let mut chain = Swapchain::new(&gpu.device, &conn, &config).unwrap();
    // weston 14 offers wp_tearing_control_manager_v1.
    assert!(chain.tearing());
    assert!(!chain.fifo_protocol());
    // Explicit sync without FIFO: two images more than the four asked.
    assert_eq!(chain.sync_mode(), SyncMode::ExplicitSync);
    assert_eq!(chain.len(), swapchain::MAILBOX_EXPLICIT_IMAGES);
    present_frames(&gpu, &mut chain, 8);
    chain.wait_shown().unwrap();
    assert_eq!(chain.frames_presented(), 8);
    assert_eq!(chain.missed_callbacks(), 0);
}

#[test]
fn without_linux_dmabuf_the_swapchain_presents_its_memory_as_wl_shm() {
    let gpu = need!(Gpu::new(), "Vulkan with validation");
    let weston = need!(Weston::start("pixman"), "weston (pixman renderer)");
    let mut config = SwapchainConfig::new(64, 64, Fourcc::XRGB8888);
    config.timeout = Duration::from_secs(20);
    let conn = wayland::connect(Some(&weston.socket)).unwrap();
    let chain = Swapchain::new(&gpu.device, &conn, &config).unwrap();
    assert_eq!(chain.sync_mode(), SyncMode::Shm);
    assert_eq!(chain.buffer_path(), &shm_path());
    drop(chain);
    let ((mode, _), (presented, _, _)) = run_frames(&gpu, &weston, &config, 6, true);
    assert_eq!(mode, SyncMode::Shm);
    assert_eq!(presented, 6);
    // The formats: pixman weston's wl_shm list, where lavapipe renders
    // LINEAR images; a swapchain in another of them presents too.
    let report = wayland::probe(&conn, Duration::from_secs(20)).unwrap();
    let info = gpu.device.info();
    let formats = Swapchain::formats(gpu.device.instance(), info, &report, None).unwrap();
    println!(
        "pixman weston: wl_shm {:?}, presentable {formats:?}",
        report.shm_formats
    );
    for f in [
        Fourcc::XRGB8888,
        Fourcc::ARGB8888,
        Fourcc::XBGR8888,
        Fourcc::RGB565,
    ] {
        assert!(formats.contains(&f), "{f} not in {formats:?}");
    }
    assert!(formats.iter().all(|f| report.shm_formats.contains(f)));
    config.format = Fourcc::XBGR8888;
    let ((mode, _), (presented, _, _)) = run_frames(&gpu, &weston, &config, 3, true);
    assert_eq!((mode, presented), (SyncMode::Shm, 3));
    // One its wl_shm does not take is refused before anything is made.
    assert!(!report.shm_formats.contains(&Fourcc::XBGR16161616F));
    config.format = Fourcc::XBGR16161616F;
    match Swapchain::new(&gpu.device, &conn, &config) {
        Err(wayland::Error::Wayland(m)) => {
            assert!(m.contains("wl_shm takes no XBGR16161616F"), "{m}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("an XBGR16161616F swapchain on pixman weston's wl_shm"),
    }
    // On weston gl (linux-dmabuf) the half floats are presentable.
    let gl = need!(Weston::start("gl"), "weston (gl renderer)");
    let conn = wayland::connect(Some(&gl.socket)).unwrap();
    let report = wayland::probe(&conn, Duration::from_secs(20)).unwrap();
    let formats = Swapchain::formats(gpu.device.instance(), info, &report, None).unwrap();
    println!("weston gl: presentable {formats:?}");
    assert!(formats.contains(&Fourcc::XBGR16161616F), "{formats:?}");
    let shm =
        Swapchain::formats(gpu.device.instance(), info, &report, Some(SyncMode::Shm)).unwrap();
    assert!(
        shm.iter().all(|f| report.shm_formats.contains(f)),
        "{shm:?}"
    );
}

#[test]
fn mutter_shows_swapchain_frames_through_forced_wl_shm() {
    let gpu = need!(Gpu::new(), "Vulkan with validation");
    let mutter = need!(Mutter::start(), "mutter (headless)");
    let conn = wayland::connect(Some(&mutter.socket)).unwrap();
    let mut config = SwapchainConfig::new(64, 64, Fourcc::XRGB8888);
    // Its dma-buf path is implicit sync, but mutter 48.7's llvmpipe crashes
    // on a second imported dma-buf: the wl_shm path instead.
    config.sync = Some(SyncMode::Shm);
    config.timeout = Duration::from_secs(30);
    let mut chain = Swapchain::new(&gpu.device, &conn, &config).unwrap();
    for frame in 0..5u32 {
        let i = chain.acquire(LONG * 6).unwrap();
        let mut job = gpu.device.submission().unwrap();
        chain.begin(&mut job, i).unwrap();
        record_clear(&gpu, &chain, &job, i, 0x40 + frame as u8 * 8);
        chain.present(i, job).unwrap();
    }
    chain.wait_shown().unwrap();
    println!("mutter: {} frames shown", chain.frames_shown());
    assert!(chain.frames_shown() >= 4);
}

#[test]
fn images_of_the_configured_size_are_not_suboptimal() {
    let gpu = need!(Gpu::new(), "Vulkan with validation");
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let conn = wayland::connect(Some(&weston.socket)).unwrap();
    let mut config = SwapchainConfig::new(256, 256, Fourcc::XRGB8888);
    config.timeout = Duration::from_secs(20);
    config.image_count = 3;
    let mut chain = Swapchain::new(&gpu.device, &conn, &config).unwrap();
    assert_eq!(chain.configured_size().unwrap(), Some((256, 256)));
    assert!(!chain.suboptimal().unwrap());
    // Two images out of three with the app: the third, on screen, cannot
    // be acquired before another is presented — an error at once, not a
    // wait.
    let a = chain.acquire(LONG).unwrap();
    let mut job = gpu.device.submission().unwrap();
    chain.begin(&mut job, a).unwrap();
    chain.present(a, job).unwrap();
    let b = chain.acquire(LONG).unwrap();
    let c = chain.acquire(LONG).unwrap();
    assert_ne!(b, c);
    let t = std::time::Instant::now();
    assert!(matches!(
        chain.acquire(LONG),
        Err(wayland::Error::ImageState { .. })
    ));
    // A wait would last the whole timeout (LONG).
    assert!(t.elapsed() < LONG / 2);
}

/// `frames` cleared frames through a swapchain on `sway` in `sync`; the
/// sync mode, buffer path and counters.
fn sway_frames(
    gpu: &Gpu,
    sway: &Sway,
    format: Fourcc,
    sync: Option<SyncMode>,
    frames: u32,
) -> Swapchain {
    let conn = wayland::connect(Some(&sway.socket)).unwrap();
    let mut config = SwapchainConfig::new(64, 64, format);
    config.sync = sync;
    config.timeout = Duration::from_secs(20);
    let mut chain = Swapchain::new(&gpu.device, &conn, &config).unwrap();
    // From the fifth frame on (4 images), each acquire waits for the release (point)
    // of an image shown before.
    present_frames(gpu, &mut chain, frames);
    chain.wait_shown().unwrap();
    chain
}

/// Present `frames` frames on `chain`, each cleared to a grey of its own.
fn present_frames(gpu: &Gpu, chain: &mut Swapchain, frames: u32) {
    for frame in 0..frames {
        let i = chain.acquire(LONG * 4).unwrap();
        let mut job = gpu.device.submission().unwrap();
        job.timeout(Some(LONG * 4));
        chain.begin(&mut job, i).unwrap();
        record_clear(gpu, chain, &job, i, 0x30 + (frame % 16) as u8 * 8);
        chain.present(i, job).unwrap();
    }
}

/// Resident set size of this process, in bytes (/proc/self/statm).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * rustix::param::page_size() as u64
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

/// Bytes the process has allocated and not freed (all malloc arenas plus
/// mmapped chunks; glibc's `mallinfo2`): what a leak grows, unlike RSS,
/// which also holds what the allocator keeps after frees.
fn heap_in_use() -> u64 {
    // SAFETY: mallinfo2 takes nothing and returns a plain struct.
    let m = unsafe { mallinfo2() };
    (m.uordblks + m.hblkhd) as u64
}

#[test]
fn a_soak_of_2000_frames_keeps_fds_and_memory_flat() {
    let gpu = need!(Gpu::new(), "Vulkan with validation");
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let conn = wayland::connect(Some(&weston.socket)).unwrap();
    let mut config = SwapchainConfig::new(64, 64, Fourcc::XRGB8888);
    config.present_mode = PresentMode::Mailbox;
    config.timeout = Duration::from_secs(20);
    let mut chain = Swapchain::new(&gpu.device, &conn, &config).unwrap();
    let fds = common::open_fds();
    let t = std::time::Instant::now();
    // (frames, fds, RSS KiB, heap in use KiB) every 200 frames.
    let mut curve = Vec::new();
    for n in 1..=10 {
        present_frames(&gpu, &mut chain, 200);
        curve.push((
            n * 200,
            common::open_fds(),
            rss() / 1024,
            heap_in_use() / 1024,
        ));
    }
    chain.wait_shown().unwrap();
    println!(
        "soak: 2000 frames in {:.1?}, {} shown, {:?}",
        t.elapsed(),
        chain.frames_shown(),
        chain.presentation().unwrap()
    );
    println!("soak: (frames, fds, RSS KiB, heap in use KiB): {curve:?}");
    assert_eq!(chain.frames_presented(), 2000);
    for &(n, f, _, _) in &curve {
        assert_eq!(f, fds, "fds after {n} frames");
    }
    // The second half, after warm-up (pools, driver caches): a leak of
    // even 64 bytes a frame would be 62 KiB here. (This caught presentation
    // feedback piling up unread: ~600 bytes a frame.)
    let (_, _, rss_mid, heap_mid) = curve[4];
    let (_, _, rss_end, heap_end) = curve[9];
    assert!(
        heap_end < heap_mid + 62,
        "heap in use grew {} KiB over frames 1000..2000",
        heap_end.saturating_sub(heap_mid)
    );
    // RSS also holds what the allocator and the driver keep after frees,
    // which grows in steps of 6-12 MiB early on (measured here while the
    // heap in use stayed flat); a per-frame leak shows in the heap above.
    assert!(
        rss_end < rss_mid + 16 * 1024,
        "RSS grew {} KiB over frames 1000..2000",
        rss_end.saturating_sub(rss_mid)
    );
}

/// Present frames until the compositor configures another size (at most
/// 30 s).
fn present_until_suboptimal(gpu: &Gpu, chain: &mut Swapchain) {
    let t = std::time::Instant::now();
    while !chain.suboptimal().unwrap() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no other size configured (configured: {:?})",
            chain.configured_size().unwrap()
        );
        present_frames(gpu, chain, 1);
    }
}

#[test]
fn a_resize_makes_the_swapchain_suboptimal_and_a_new_one_goes_on() {
    let gpu = need!(Gpu::new(), "Vulkan with validation");
    let sway = need!(Sway::start(), "sway 1.12 on virtio-gpu");
    let conn = wayland::connect(Some(&sway.socket)).unwrap();
    let mut config = SwapchainConfig::new(64, 64, Fourcc::XRGB8888);
    config.timeout = Duration::from_secs(20);
    // sway tiles the window over the whole output (once it is mapped):
    // 64x64 images do not fit.
    let mut chain = Swapchain::new(&gpu.device, &conn, &config).unwrap();
    present_until_suboptimal(&gpu, &mut chain);
    let (w, h) = chain.configured_size().unwrap().expect("sway names a size");
    drop(chain);
    config.width = w;
    config.height = h;
    let mut chain = Swapchain::new(&gpu.device, &conn, &config).unwrap();
    present_frames(&gpu, &mut chain, 3);
    assert!(!chain.suboptimal().unwrap(), "{w}x{h} images fit");
    // A second window: sway splits the output, our window shrinks.
    let mut other =
        wayland::surface::Surface::new(&conn, "other", SyncMode::Shm, LONG * 4).unwrap();
    let b = other.add_shm(32, 32).unwrap();
    other.write_shm(b, &[0x80; 32 * 32 * 4]).unwrap();
    other.present(b, None).unwrap();
    present_until_suboptimal(&gpu, &mut chain);
    let (w2, h2) = chain.configured_size().unwrap().unwrap();
    println!("resized {w}x{h} -> {w2}x{h2} while presenting");
    assert_ne!((w2, h2), (w, h));
    drop(chain);
    config.width = w2;
    config.height = h2;
    let mut chain = Swapchain::new(&gpu.device, &conn, &config).unwrap();
    present_frames(&gpu, &mut chain, 3);
    chain.wait_shown().unwrap();
    assert!(!chain.suboptimal().unwrap());
}

#[test]
fn mutter_paces_fifo_with_wp_fifo_v1_and_shows_every_frame() {
    let gpu = need!(Gpu::new(), "Vulkan with validation");
    let mutter = need!(Mutter::start(), "mutter (headless)");
    let conn = wayland::connect(Some(&mutter.socket)).unwrap();
    let mut config = SwapchainConfig::new(64, 64, Fourcc::XRGB8888);
    config.sync = Some(SyncMode::Shm);
    config.present_mode = PresentMode::Fifo;
    config.timeout = Duration::from_secs(30);
    let mut chain = Swapchain::new(&gpu.device, &conn, &config).unwrap();
    assert!(chain.fifo_protocol(), "mutter offers wp_fifo_manager_v1");
    let settled = |chain: &mut Swapchain| {
        chain.wait_shown().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let s = chain.presentation().unwrap().expect("wp_presentation");
            if s.outstanding() == 0 || std::time::Instant::now() > deadline {
                break s;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // Until the window is on screen mutter may replace an update unseen
    // (1 of 10 discarded in one CI run of 20): FIFO holds from then on.
    present_frames(&gpu, &mut chain, 2);
    let before = settled(&mut chain);
    present_frames(&gpu, &mut chain, 10);
    let after = settled(&mut chain);
    println!("mutter FIFO (wp_fifo_v1): before {before:?}, after {after:?}");
    assert_eq!(chain.missed_callbacks(), 0);
    // FIFO: no content update is skipped.
    assert_eq!(after.discarded - before.discarded, 0);
    assert_eq!(after.presented - before.presented, 10);
}

#[test]
fn sway_takes_frames_on_drm_syncobj_timelines_and_implicitly() {
    let gpu = need!(Gpu::new(), "Vulkan with validation");
    let sway = need!(Sway::start(), "sway 1.12 on virtio-gpu");
    // Allocated where sway's feedback says (virtio_gpu without 3D: dumb
    // buffers on its card node): sway refuses vgem buffers.
    let on_virtio = BufferPath::CompositorDevice {
        driver: "virtio_gpu".into(),
    };
    let mut chain = sway_frames(&gpu, &sway, Fourcc::XRGB8888, None, 8);
    assert_eq!(chain.sync_mode(), SyncMode::DrmSyncobj);
    assert_eq!(chain.buffer_path(), &on_virtio);
    let p = chain
        .presentation()
        .unwrap()
        .expect("sway offers wp_presentation");
    println!(
        "drm-syncobj: {} presented, {} shown, presentation {p:?}",
        chain.frames_presented(),
        chain.frames_shown()
    );
    assert!(chain.frames_shown() >= 7, "{} shown", chain.frames_shown());
    drop(chain);

    let chain = sway_frames(&gpu, &sway, Fourcc::XRGB8888, Some(SyncMode::Implicit), 6);
    assert_eq!(chain.sync_mode(), SyncMode::Implicit);
    assert_eq!(chain.buffer_path(), &on_virtio);
    assert!(chain.frames_shown() >= 5, "{} shown", chain.frames_shown());
    drop(chain);

    // RGBX5551 sway takes on wl_shm alone: the automatic choice for that
    // format is wl_shm, and Swapchain::formats says it is presentable.
    let conn = wayland::connect(Some(&sway.socket)).unwrap();
    let report = wayland::probe(&conn, Duration::from_secs(20)).unwrap();
    assert!(report.shm_formats.contains(&Fourcc::RGBX5551));
    assert!(report
        .modifiers(SyncMode::DrmSyncobj, Fourcc::RGBX5551)
        .unwrap()
        .is_empty());
    let info = gpu.device.info();
    let formats = Swapchain::formats(gpu.device.instance(), info, &report, None).unwrap();
    assert!(formats.contains(&Fourcc::RGBX5551), "{formats:?}");
    let chain = sway_frames(&gpu, &sway, Fourcc::RGBX5551, None, 6);
    assert_eq!(chain.sync_mode(), SyncMode::Shm);
    assert!(chain.frames_shown() >= 5, "{} shown", chain.frames_shown());
}

/// Present until the swapchain fails; the error and how long after `t0`.
fn present_until_error(gpu: &Gpu, chain: &mut Swapchain) -> (wayland::Error, Duration) {
    let t = std::time::Instant::now();
    loop {
        let step = (|| -> Result<(), wayland::Error> {
            let i = chain.acquire(LONG)?;
            let mut job = gpu.device.submission().unwrap();
            chain.begin(&mut job, i)?;
            record_clear(gpu, chain, &job, i, 0x50);
            chain.present(i, job)?;
            chain.wait_shown()
        })();
        if let Err(e) = step {
            return (e, t.elapsed());
        }
        assert!(t.elapsed() < LONG * 2, "the swapchain never noticed");
    }
}

#[test]
fn a_killed_compositor_fails_the_swapchain_within_a_second_in_explicit_and_syncobj_modes() {
    let gpu = need!(Gpu::new(), "Vulkan with validation");
    // Explicit sync on weston, drm-syncobj on sway (the release wait polls
    // the socket together with the release point's eventfd).
    for (name, want) in [
        ("weston", SyncMode::ExplicitSync),
        ("sway", SyncMode::DrmSyncobj),
    ] {
        let fds_before = common::open_fds();
        {
            let (socket, compositor): (String, Box<dyn std::any::Any>) = if name == "weston" {
                let w = need!(Weston::start("gl"), "weston (gl renderer)");
                (w.socket.clone(), Box::new(w))
            } else {
                let s = need!(Sway::start(), "sway 1.12 on virtio-gpu");
                (s.socket.clone(), Box::new(s))
            };
            let conn = wayland::connect(Some(&socket)).unwrap();
            let mut config = SwapchainConfig::new(64, 64, Fourcc::XRGB8888);
            config.timeout = Duration::from_secs(20);
            // Forced: FIFO on weston (which composes on the CPU) would
            // take wl_shm by itself.
            config.sync = Some(want);
            let mut chain = Swapchain::new(&gpu.device, &conn, &config).unwrap();
            assert_eq!(chain.sync_mode(), want);
            present_frames(&gpu, &mut chain, 4);
            chain.wait_shown().unwrap();
            drop(compositor); // SIGKILL, reaped
            let (err, took) = present_until_error(&gpu, &mut chain);
            println!("{name} ({want}) killed: {err} after {took:?}");
            assert!(took < Duration::from_secs(1), "took {took:?}");
            drop(chain);
        }
        gpu.device.wait_idle().unwrap();
        assert_eq!(common::open_fds(), fds_before, "fds leaked ({name})");
    }
}
