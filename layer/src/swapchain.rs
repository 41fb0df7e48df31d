//! `VK_KHR_swapchain` on the app's Wayland surfaces, through winsys's own
//! swapchain.
//!
//! - `vkCreateSwapchainKHR`: a [`Swapchain`] on the app's `wl_surface`
//!   (its role, and its size, stay the app's); `oldSwapchain` is retired
//!   first, giving the new one the surface's sync objects.
//! - `vkAcquireNextImageKHR`: the first image the compositor releases
//!   (within `timeout`: 0 polls, `UINT64_MAX` still ends with
//!   `VK_ERROR_SURFACE_LOST_KHR` when the compositor dies); the fence its
//!   next writer must wait for (the compositor's release fence, or its
//!   reads in the dma-buf) is imported into the app's semaphore and fence,
//!   so the app's GPU work — not its thread — waits.
//! - `vkQueuePresentKHR`: a submission on the app's present queue waits
//!   for the app's semaphores and signals what the sync mode hands the
//!   compositor; then the commit. `VK_SUBOPTIMAL_KHR` when the
//!   compositor's dma-buf feedback changed; `VK_ERROR_OUT_OF_DATE_KHR` for
//!   a retired swapchain.
//!
//! The images are handed to the app in the layout it leaves them in
//! (`PRESENT_SRC_KHR`) and without a queue-family transfer, as a driver's
//! own WSI does for its images: `vkAcquireNextImageKHR` has no queue to
//! record an acquire from the FOREIGN family on, and the release and
//! acquire of an ownership transfer must come in pairs.

use std::collections::{HashMap, VecDeque};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ash::vk;
use ash::vk::Handle;
use raw_window_handle::{
    RawDisplayHandle, RawWindowHandle, WaylandDisplayHandle, WaylandWindowHandle,
};
use winsys::format::Fourcc;
use winsys::sync::SyncFile;
use winsys::vulkan::format::{from_vk, to_vk, Alpha, Encoding};
use winsys::wayland::swapchain::{ImageState, PresentMode, Swapchain, SwapchainConfig};

use crate::device::{self, DeviceData};
use crate::instance::{fill, slice, COMPOSITE_ALPHA, FORMATS, MAX_IMAGES, USAGE};
use crate::report::{self, Value};
use crate::{debug, guard, loader};

/// How long the layer waits, on the CPU, in the rare present that mixes
/// its swapchains with the driver's (the driver's need the app's
/// rendering done first), and bounds every wait for the compositor once
/// a swapchain is made.
const WAIT: Duration = Duration::from_secs(5);

/// How long a swapchain's creation waits for the compositor's answers.
/// Longer than [`WAIT`]: a compositor busy with a window's first
/// configure can take many seconds to answer (mutter at 1920x1080 on the
/// test bed: 5-40 s), and a slow answer is no reason to hand the surface
/// to the driver, whose WSI would wait for it as long.
const SETUP_WAIT: Duration = Duration::from_secs(60);

/// One of the layer's swapchains: what never changes, readable without
/// its lock, and the winsys swapchain behind the lock (acquire and present
/// on one swapchain are externally synchronized by the app, as the spec
/// requires, so the lock only orders them with destruction).
pub struct LayerSwapchain {
    /// Its images, as `vkGetSwapchainImagesKHR` gives them.
    pub images: Vec<vk::Image>,
    /// The handle the app got.
    pub handle: u64,
    /// The surface it presents to.
    pub surface: vk::SurfaceKHR,
    /// Whether a newer swapchain took the surface (`oldSwapchain`).
    pub retired: AtomicBool,
    state: Mutex<State>,
}

/// What acquire and present change.
struct State {
    chain: Swapchain,
    handle: u64,
    present_mode: vk::PresentModeKHR,
    acquires: u64,
    /// An image winsys gave but the app never got (importing its release
    /// into the app's semaphore or fence failed), with that release: the
    /// next acquire hands it out first, so no image is lost.
    unclaimed: Option<(usize, Option<SyncFile>)>,
    /// Whether the loss of the surface was reported.
    lost: bool,
    /// When it was created.
    created: std::time::Instant,
    /// `VK_KHR_present_id`: the ids of the latest presents, with their
    /// frame marks ([`Swapchain::frame_mark`]), ids increasing.
    present_ids: VecDeque<(u64, u64)>,
    /// The releases handed out with acquired images (dups went to the
    /// app's semaphore and fence), kept until the image is presented, or
    /// given back with it by `vkReleaseSwapchainImagesEXT`.
    held: HashMap<usize, SyncFile>,
}

/// The frame mark of the first present in `ids` ((id, mark), ids
/// increasing) with an id at least `id`; an id older than every one kept
/// is the oldest kept.
fn mark_of(ids: &VecDeque<(u64, u64)>, id: u64) -> Option<u64> {
    let front = ids.front()?;
    if id <= front.0 {
        return Some(front.1);
    }
    ids.iter().find(|(i, _)| *i >= id).map(|(_, m)| *m)
}

/// Present ids remembered per swapchain; an older one waited for counts
/// as the oldest remembered (long shown by then).
const PRESENT_IDS: usize = 64;

impl State {
    /// The frame mark a wait for `id` waits for: that of the first present
    /// with an id at least `id` (`None`: none presented yet).
    fn mark_of(&self, id: u64) -> Option<u64> {
        mark_of(&self.present_ids, id)
    }

    fn remember_present_id(&mut self, id: u64) {
        if id == 0 {
            return;
        }
        if self.present_ids.len() == PRESENT_IDS {
            self.present_ids.pop_front();
        }
        let mark = self.chain.frame_mark();
        self.present_ids.push_back((id, mark));
    }
}

impl State {
    fn report(&mut self, event: &str) {
        let mut fields = vec![
            ("event", Value::Str(event.into())),
            ("pid", Value::Num(u64::from(std::process::id()))),
            ("swapchain", Value::Num(self.handle)),
            ("sync", Value::Str(self.chain.sync_mode().to_string())),
            (
                "path",
                Value::Str(format!("{:?}", self.chain.buffer_path())),
            ),
            ("images", Value::Num(self.chain.len() as u64)),
            (
                "present_mode",
                Value::Str(format!("{:?}", self.present_mode)),
            ),
            (
                "format",
                Value::Str(format!("{:?}", self.chain.image(0).vk_format().format)),
            ),
            (
                "drm_format",
                // XRGB8888 (opaque) or ARGB8888 (premultiplied alpha).
                Value::Str(self.chain.image(0).format().name().unwrap_or("?").into()),
            ),
            ("fifo_protocol", Value::Bool(self.chain.fifo_protocol())),
            ("frames", Value::Num(self.chain.frames_presented())),
            ("acquires", Value::Num(self.acquires)),
            ("retired", Value::Bool(self.chain.retired())),
        ];
        let extent = self.chain.image(0).extent();
        fields.push(("width", Value::Num(u64::from(extent.width))));
        fields.push(("height", Value::Num(u64::from(extent.height))));
        report::write(&fields);
    }

    /// Report (once) that `call` found the surface lost, with the
    /// `CLOCK_MONOTONIC` time it did.
    fn report_lost(&mut self, call: &str) {
        if std::mem::replace(&mut self.lost, true) {
            return;
        }
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let ns = t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64;
        report::write(&[
            ("event", Value::Str("lost".into())),
            ("pid", Value::Num(u64::from(std::process::id()))),
            ("swapchain", Value::Num(self.handle)),
            ("call", Value::Str(call.into())),
            ("monotonic_ns", Value::Num(ns)),
            ("frames", Value::Num(self.chain.frames_presented())),
            (
                "age_ns",
                Value::Num(self.created.elapsed().as_nanos() as u64),
            ),
        ]);
    }
}

impl LayerSwapchain {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Give the surface to a newer swapchain.
    fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.lock().chain.retire();
    }
}

/// `WINSYS_LAYER_SYNC=syncobj|explicit|implicit|shm`: the sync mode every
/// swapchain of the layer uses (refused where unavailable), instead of the
/// best the compositor offers.
pub const SYNC_ENV: &str = "WINSYS_LAYER_SYNC";

pub(crate) fn forced_sync() -> Option<winsys::wayland::sync::SyncMode> {
    let v = std::env::var(SYNC_ENV).ok()?;
    let mode = winsys::wayland::sync::SyncMode::ALL
        .into_iter()
        .find(|m| m.name() == v);
    if mode.is_none() {
        eprintln!("winsys layer: {SYNC_ENV}={v} is no sync mode; the best one is chosen");
    }
    mode
}

impl Drop for State {
    fn drop(&mut self) {
        self.report("destroy");
    }
}

/// Handles of the layer's swapchains: unique in the process, never 0.
static NEXT_HANDLE: AtomicU64 = AtomicU64::new(0x5753_0000_0000_0001);

/// What an error of winsys's swapchain is to the app: a compositor gone
/// or broken is a lost surface, a retired swapchain is out of date, a
/// wait that ran out is `TIMEOUT` (`NOT_READY` for a zero timeout).
fn result_of(e: &winsys::wayland::Error, zero_timeout: bool) -> vk::Result {
    use winsys::wayland::Error as E;
    let waited = || match zero_timeout {
        true => vk::Result::NOT_READY,
        false => vk::Result::TIMEOUT,
    };
    match e {
        E::Retired => vk::Result::ERROR_OUT_OF_DATE_KHR,
        E::Timeout { .. } | E::ImageState { .. } => waited(),
        E::Connect { .. }
        | E::Wayland(_)
        | E::Io { .. }
        | E::MissingGlobal(_)
        | E::BadReleaseFence { .. } => vk::Result::ERROR_SURFACE_LOST_KHR,
        E::Vulkan(v) => match **v {
            winsys::vulkan::Error::Vk { result, .. } if result.as_raw() < 0 => result,
            winsys::vulkan::Error::Timeout { .. } => waited(),
            _ => vk::Result::ERROR_DEVICE_LOST,
        },
        _ => vk::Result::ERROR_OUT_OF_DATE_KHR,
    }
}

pub(crate) unsafe extern "system" fn create_swapchain(
    device: vk::Device,
    info: *const vk::SwapchainCreateInfoKHR<'_>,
    allocator: *const vk::AllocationCallbacks<'_>,
    out: *mut vk::SwapchainKHR,
) -> vk::Result {
    guard(vk::Result::ERROR_INITIALIZATION_FAILED, || {
        // SAFETY: the app's valid arguments.
        unsafe { create_inner(device, info, allocator, out) }
    })
}

unsafe fn create_inner(
    device: vk::Device,
    info: *const vk::SwapchainCreateInfoKHR<'_>,
    allocator: *const vk::AllocationCallbacks<'_>,
    out: *mut vk::SwapchainKHR,
) -> vk::Result {
    let Some(d) = device::data(device) else {
        return vk::Result::ERROR_DEVICE_LOST;
    };
    // SAFETY: a valid create info.
    let ci = unsafe { &*info };
    let surface = d
        .instance
        .wayland_surface(ci.surface)
        .filter(|_| d.serves());
    let (Some(surface), Some(ws)) = (surface, d.winsys.as_ref()) else {
        // SAFETY: the app's valid arguments, passed on.
        return unsafe { to_driver(&d, device, ci, allocator, out) };
    };
    let old = d.swapchain(ci.old_swapchain);
    if let Some(old) = &old {
        old.retire();
    }
    // One live swapchain per surface: another that is not `oldSwapchain`
    // still holds it.
    let in_use = d
        .swapchains_of(ci.surface)
        .iter()
        .any(|s| s.handle != ci.old_swapchain.as_raw() && !s.retired.load(Ordering::Acquire));
    if in_use {
        eprintln!(
            "winsys layer: vkCreateSwapchainKHR: the surface has a live swapchain that is not oldSwapchain"
        );
        return vk::Result::ERROR_NATIVE_WINDOW_IN_USE_KHR;
    }
    let refuse = |why: String| {
        eprintln!("winsys layer: vkCreateSwapchainKHR: {why}");
        vk::Result::ERROR_INITIALIZATION_FAILED
    };
    // The compositor blends by the alpha of `A` DRM formats (ARGB8888:
    // premultiplied, wl_surface's rule) and ignores `X` formats'.
    let alpha = match ci.composite_alpha {
        vk::CompositeAlphaFlagsKHR::PRE_MULTIPLIED => Alpha::Used,
        vk::CompositeAlphaFlagsKHR::OPAQUE => Alpha::Ignored,
        other => {
            // Not among the surface's (invalid usage: the validation
            // layer says so); opaque, as Mesa's Wayland WSI takes it,
            // so that apps written for X11's INHERIT still run.
            eprintln!(
                "winsys layer: vkCreateSwapchainKHR: composite alpha {other:?} is not the surface's ({COMPOSITE_ALPHA:?}): opaque"
            );
            Alpha::Ignored
        }
    };
    let Some((drm_format, encoding)) = format_of(ci.image_format, ci.image_color_space, alpha)
    else {
        return refuse(format!(
            "format {:?} in {:?} is not among the surface's",
            ci.image_format, ci.image_color_space
        ));
    };
    if !USAGE.contains(ci.image_usage) || ci.image_array_layers != 1 {
        return refuse(format!(
            "usage {:?} / {} layers: the surface allows {USAGE:?}, 1 layer",
            ci.image_usage, ci.image_array_layers
        ));
    }
    let (w, h) = (ci.image_extent.width, ci.image_extent.height);
    if w == 0 || h == 0 {
        return refuse(format!("an empty extent {w}x{h}"));
    }
    let mut config = SwapchainConfig::new(w, h, drm_format);
    config.encoding = encoding;
    config.image_count = ci.min_image_count.clamp(2, MAX_IMAGES) as usize;
    config.usage = ci.image_usage;
    config.timeout = SETUP_WAIT;
    config.sync = forced_sync();
    config.probed = d.instance.fresh_report(ci.surface);
    let reused = config.probed.is_some();
    config.present_mode = match ci.present_mode {
        vk::PresentModeKHR::MAILBOX => PresentMode::Mailbox,
        vk::PresentModeKHR::IMMEDIATE => PresentMode::Immediate,
        _ => PresentMode::Fifo,
    };
    let (Some(display), Some(window)) =
        (NonNull::new(surface.display), NonNull::new(surface.surface))
    else {
        return vk::Result::ERROR_SURFACE_LOST_KHR;
    };
    let display = RawDisplayHandle::Wayland(WaylandDisplayHandle::new(display));
    let window = RawWindowHandle::Wayland(WaylandWindowHandle::new(window));
    let started = std::time::Instant::now();
    // SAFETY: the app's wl_display and wl_surface from
    // VkWaylandSurfaceCreateInfoKHR, which must stay valid while the
    // VkSurfaceKHR (and so this swapchain) lives; the app's process loads
    // the libwayland-client that made them.
    let mut chain = match unsafe { Swapchain::from_raw_handles(ws, display, window, &config) } {
        Ok(c) => c,
        Err(e) => {
            eprintln!("winsys layer: vkCreateSwapchainKHR ({w}x{h}): {e}");
            match result_of(&e, false) {
                vk::Result::ERROR_SURFACE_LOST_KHR => return vk::Result::ERROR_SURFACE_LOST_KHR,
                // The compositor did not answer: the driver's WSI would
                // not get an answer either.
                vk::Result::TIMEOUT => return vk::Result::ERROR_INITIALIZATION_FAILED,
                _ => {}
            }
            // What winsys cannot do here, the driver's WSI may: the
            // surface is the driver's from now on (its swapchains and
            // ours must not both hold the wl_surface's protocol objects).
            eprintln!("winsys layer: the driver's own WSI presents to this surface");
            d.instance.leave_to_driver(ci.surface);
            // SAFETY: the app's valid arguments, passed on.
            return unsafe { to_driver(&d, device, ci, allocator, out) };
        }
    };
    // The frames' waits are bounded by WAIT (a present that runs out is
    // OUT_OF_DATE, and the app's next swapchain waits SETUP_WAIT again).
    chain.set_timeout(WAIT);
    let images: Vec<vk::Image> = (0..chain.len()).map(|i| chain.image(i).raw()).collect();
    let handle = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed);
    let mut state = State {
        chain,
        handle,
        present_mode: ci.present_mode,
        acquires: 0,
        unclaimed: None,
        lost: false,
        created: std::time::Instant::now(),
        present_ids: VecDeque::new(),
        held: HashMap::new(),
    };
    debug!(
        "swapchain {handle:#x}: {w}x{h}, {} images, {:?} ({}) {:?}, sync {}, {:?}, made in {:.1?}{}",
        images.len(),
        ci.image_format,
        drm_format,
        ci.present_mode,
        state.chain.sync_mode(),
        state.chain.buffer_path(),
        started.elapsed(),
        match reused {
            true => " (with the formats query's probe)",
            false => "",
        }
    );
    state.report("create");
    d.swapchains
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            handle,
            Arc::new(LayerSwapchain {
                images,
                handle,
                surface: ci.surface,
                retired: AtomicBool::new(false),
                state: Mutex::new(state),
            }),
        );
    // SAFETY: a valid output pointer.
    unsafe { *out = vk::SwapchainKHR::from_raw(handle) };
    vk::Result::SUCCESS
}

/// The DRM format (its `A` or `X` twin, by `alpha`) and the encoding of a
/// surface format the layer may offer ([`FORMATS`]).
fn format_of(
    format: vk::Format,
    space: vk::ColorSpaceKHR,
    alpha: Alpha,
) -> Option<(Fourcc, Encoding)> {
    FORMATS
        .iter()
        .find(|f| f.format == format && f.color_space == space)?;
    let drm = from_vk(format, alpha)?;
    let encoding = match to_vk(drm)?.srgb == Some(format) {
        true => Encoding::Srgb,
        false => Encoding::Unorm,
    };
    Some((drm, encoding))
}

/// `vkCreateSwapchainKHR` in the driver, for a surface the layer does not
/// present to; an `oldSwapchain` of the layer's (already retired) is not
/// the driver's to know.
///
/// # Safety
///
/// The app's valid arguments.
unsafe fn to_driver(
    d: &DeviceData,
    device: vk::Device,
    ci: &vk::SwapchainCreateInfoKHR<'_>,
    allocator: *const vk::AllocationCallbacks<'_>,
    out: *mut vk::SwapchainKHR,
) -> vk::Result {
    let mut info = *ci;
    if d.swapchain(ci.old_swapchain).is_some() {
        info.old_swapchain = vk::SwapchainKHR::null();
    }
    // SAFETY: the app's create info (its pNext chain included).
    unsafe { (d.swapchain_fn.fp().create_swapchain_khr)(device, &info, allocator, out) }
}

pub(crate) unsafe extern "system" fn destroy_swapchain(
    device: vk::Device,
    swapchain: vk::SwapchainKHR,
    allocator: *const vk::AllocationCallbacks<'_>,
) {
    guard((), || {
        let Some(d) = device::data(device) else {
            return;
        };
        let ours = d
            .swapchains
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&swapchain.as_raw());
        match ours {
            // Dropped here: the destroy report, then the images (the app
            // has finished with them, as vkDestroySwapchainKHR requires).
            Some(sc) => drop(sc),
            None if swapchain != vk::SwapchainKHR::null() => {
                // SAFETY: the app's valid arguments, passed on.
                unsafe { (d.swapchain_fn.fp().destroy_swapchain_khr)(device, swapchain, allocator) }
            }
            None => {}
        }
    })
}

pub(crate) unsafe extern "system" fn get_swapchain_images(
    device: vk::Device,
    swapchain: vk::SwapchainKHR,
    count: *mut u32,
    out: *mut vk::Image,
) -> vk::Result {
    guard(vk::Result::ERROR_DEVICE_LOST, || {
        let Some(d) = device::data(device) else {
            return vk::Result::ERROR_DEVICE_LOST;
        };
        match d.swapchain(swapchain) {
            // SAFETY: the app's valid count and array.
            Some(sc) => unsafe { fill(&sc.images, count, out) },
            // SAFETY: the app's valid arguments, passed on.
            None => unsafe {
                (d.swapchain_fn.fp().get_swapchain_images_khr)(device, swapchain, count, out)
            },
        }
    })
}

/// Acquire from one of the layer's swapchains.
///
/// # Safety
///
/// `semaphore` and `fence` must be null or the app's unsignalled objects
/// of `d`'s device (vkAcquireNextImageKHR's rules); `out` must be valid.
unsafe fn acquire_on(
    d: &DeviceData,
    sc: &LayerSwapchain,
    timeout: u64,
    semaphore: vk::Semaphore,
    fence: vk::Fence,
    out: *mut u32,
) -> vk::Result {
    let Some(ws) = d.winsys.as_ref() else {
        return vk::Result::ERROR_DEVICE_LOST;
    };
    let mut st = sc.lock();
    if st.chain.retired() {
        return vk::Result::ERROR_OUT_OF_DATE_KHR;
    }
    let claimed = match st.unclaimed.take() {
        Some(v) => Ok(v),
        None => st.chain.acquire_with_fence(Duration::from_nanos(timeout)),
    };
    let (index, free) = match claimed {
        Ok(v) => v,
        Err(e) => {
            let r = result_of(&e, timeout == 0);
            if r == vk::Result::ERROR_SURFACE_LOST_KHR {
                st.report_lost("vkAcquireNextImageKHR");
            }
            if r.as_raw() < 0 {
                eprintln!("winsys layer: vkAcquireNextImageKHR: {e}");
            }
            return r;
        }
    };
    // Each import takes a dup of the release (both made first); the
    // original stays here until both took, so that a failed import loses
    // no image. The fence goes first: a failed semaphore import after it
    // is undone by resetting the fence (back to its own payload).
    let imported = (|| -> winsys::vulkan::Result<()> {
        let dup = || {
            free.as_ref()
                .map(SyncFile::try_clone)
                .transpose()
                .map_err(winsys::vulkan::Error::Sync)
        };
        let for_fence = (fence != vk::Fence::null()).then(dup).transpose()?;
        let for_semaphore = (semaphore != vk::Semaphore::null()).then(dup).transpose()?;
        if let Some(f) = for_fence {
            // SAFETY: the app's unsignalled fence of this device
            // (vkAcquireNextImageKHR's valid usage), used by no other
            // thread during the call.
            unsafe { ws.import_into_fence(fence, f) }?;
        }
        if let Some(f) = for_semaphore {
            // SAFETY: the app's unsignalled binary semaphore of this
            // device, as above.
            if let Err(e) = unsafe { ws.import_into_semaphore(semaphore, f) } {
                if fence != vk::Fence::null() {
                    // SAFETY: the app's fence, imported into just above.
                    let _ = unsafe { d.raw.reset_fences(&[fence]) };
                }
                return Err(e);
            }
        }
        Ok(())
    })();
    if let Err(e) = imported {
        eprintln!("winsys layer: vkAcquireNextImageKHR: {e}");
        st.unclaimed = Some((index, free));
        return vk::Result::ERROR_OUT_OF_HOST_MEMORY;
    }
    st.acquires += 1;
    if let Some(f) = free {
        st.held.insert(index, f);
    }
    // SAFETY: a valid output pointer.
    unsafe { *out = index as u32 };
    // The image is the app's now: a broken connection is for the present
    // to report.
    match st.chain.suboptimal() {
        Ok(true) => vk::Result::SUBOPTIMAL_KHR,
        _ => vk::Result::SUCCESS,
    }
}

pub(crate) unsafe extern "system" fn acquire_next_image(
    device: vk::Device,
    swapchain: vk::SwapchainKHR,
    timeout: u64,
    semaphore: vk::Semaphore,
    fence: vk::Fence,
    out: *mut u32,
) -> vk::Result {
    guard(vk::Result::ERROR_DEVICE_LOST, || {
        let Some(d) = device::data(device) else {
            return vk::Result::ERROR_DEVICE_LOST;
        };
        match d.swapchain(swapchain) {
            // SAFETY: the app's valid arguments.
            Some(sc) => unsafe { acquire_on(&d, &sc, timeout, semaphore, fence, out) },
            // SAFETY: the app's valid arguments, passed on.
            None => unsafe {
                (d.swapchain_fn.fp().acquire_next_image_khr)(
                    device, swapchain, timeout, semaphore, fence, out,
                )
            },
        }
    })
}

pub(crate) unsafe extern "system" fn acquire_next_image2(
    device: vk::Device,
    info: *const vk::AcquireNextImageInfoKHR<'_>,
    out: *mut u32,
) -> vk::Result {
    guard(vk::Result::ERROR_DEVICE_LOST, || {
        let Some(d) = device::data(device) else {
            return vk::Result::ERROR_DEVICE_LOST;
        };
        // SAFETY: a valid acquire info.
        let a = unsafe { &*info };
        match d.swapchain(a.swapchain) {
            // SAFETY: the app's valid arguments.
            Some(sc) => unsafe { acquire_on(&d, &sc, a.timeout, a.semaphore, a.fence, out) },
            // SAFETY: the app's valid arguments, passed on.
            None => unsafe { (d.swapchain_fn.fp().acquire_next_image2_khr)(device, info, out) },
        }
    })
}

pub(crate) unsafe extern "system" fn queue_present(
    queue: vk::Queue,
    info: *const vk::PresentInfoKHR<'_>,
) -> vk::Result {
    guard(vk::Result::ERROR_DEVICE_LOST, || {
        // SAFETY: the app's valid arguments.
        unsafe { present_inner(queue, info) }
    })
}

/// The worst of several present results: an error, else SUBOPTIMAL.
fn worst(results: &[vk::Result]) -> vk::Result {
    results
        .iter()
        .copied()
        .find(|r| r.as_raw() < 0)
        .or_else(|| {
            results
                .iter()
                .copied()
                .find(|&r| r == vk::Result::SUBOPTIMAL_KHR)
        })
        .unwrap_or(vk::Result::SUCCESS)
}

unsafe fn present_inner(queue: vk::Queue, info: *const vk::PresentInfoKHR<'_>) -> vk::Result {
    let Some(d) = device::of_queue(queue) else {
        return vk::Result::ERROR_DEVICE_LOST;
    };
    // SAFETY: a valid present info and its arrays.
    let (pi, chains, indices, waits) = unsafe {
        let pi = &*info;
        (
            pi,
            slice(pi.p_swapchains, pi.swapchain_count),
            slice(pi.p_image_indices, pi.swapchain_count),
            slice(pi.p_wait_semaphores, pi.wait_semaphore_count),
        )
    };
    let ours: Vec<_> = chains.iter().map(|&c| d.swapchain(c)).collect();
    // SAFETY: a valid pNext chain; VkPresentIdKHR's array has one id per
    // swapchain.
    let ids = unsafe { present_ids(pi) };
    let (Some(ws), true) = (d.winsys.as_ref(), ours.iter().any(Option::is_some)) else {
        if ids.is_empty() || !d.provides.contains(&c"VK_KHR_present_id") {
            // SAFETY: the app's valid arguments, passed on.
            return unsafe { (d.swapchain_fn.fp().queue_present_khr)(queue, info) };
        }
        // The ids are the layer's: a driver without VK_KHR_present_id
        // must not see them.
        let mut narrowed = *pi;
        let mut unlinked = Vec::new();
        // SAFETY: the app's valid pNext chain, put back after the call; the
        // app's valid arguments, passed on.
        let r = unsafe {
            device::unlink(
                std::ptr::addr_of_mut!(narrowed.p_next),
                vk::StructureType::PRESENT_ID_KHR,
                &mut unlinked,
            );
            let r = (d.swapchain_fn.fp().queue_present_khr)(queue, &narrowed);
            device::relink(unlinked);
            r
        };
        remember_driver_ids(&d, chains, ids);
        return r;
    };
    let mine = ours.iter().flatten().count();
    let theirs = ours.len() - mine;
    let mut results = vec![vk::Result::SUCCESS; ours.len()];
    // A submission on the app's present queue that waits for the app's
    // semaphores (then `more`): each present consumes the waits it was
    // given, even one that fails (the spec's rule).
    let on_queue = |with_waits: bool| -> winsys::vulkan::Result<winsys::vulkan::Submission<'_>> {
        let mut job = ws.submission()?;
        // SAFETY: the app's present queue, of the family winsys uses (the
        // only one its surfaces support), held by the app for this call;
        // the app's semaphores have pending signals and live until the
        // present's work is done.
        unsafe {
            job.on_queue(queue);
            if with_waits {
                for &s in waits {
                    job.wait_semaphore(s, vk::PipelineStageFlags::ALL_COMMANDS);
                }
            }
        }
        Ok(job)
    };
    // With one of the layer's swapchains alone, its submission waits for
    // the app's semaphores; with several (or the driver's too), a first
    // submission does, and the others wait for its completion, a sync_file
    // (`None`: already complete).
    let first: Option<Option<SyncFile>> = if mine == 1 && theirs == 0 {
        None
    } else {
        let batch = on_queue(true).and_then(|mut job| {
            job.signal_sync_file();
            Ok(job.submit()?.take_sync_file())
        });
        match batch {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("winsys layer: vkQueuePresentKHR: {e}");
                return vk::Result::ERROR_DEVICE_LOST;
            }
        }
    };
    for (i, sc) in ours.iter().enumerate() {
        let Some(sc) = sc else { continue };
        let index = indices[i] as usize;
        let mut st = sc.lock();
        let r = (|| -> Result<(), winsys::wayland::Error> {
            let vk_err = |e| winsys::wayland::Error::Vulkan(Box::new(e));
            let mut job = on_queue(first.is_none()).map_err(vk_err)?;
            let acquired = index < st.chain.len()
                && st.chain.state(index) == ImageState::Acquired
                && st.unclaimed.as_ref().map(|u| u.0) != Some(index);
            if !acquired {
                // Not the app's to present: its waits still happen.
                job.submit().map_err(vk_err)?;
                return Err(winsys::wayland::Error::ImageState {
                    index,
                    state: ImageState::Free,
                    wanted: "an image the app acquired (vkQueuePresentKHR)",
                });
            }
            if let Some(Some(f)) = &first {
                let f = f
                    .try_clone()
                    .map_err(|e| vk_err(winsys::vulkan::Error::Sync(e)))?;
                job.wait_for_sync_file(f, vk::PipelineStageFlags::ALL_COMMANDS)
                    .map_err(vk_err)?;
            }
            // The app's rendering waited for it (the acquire semaphore).
            st.held.remove(&index);
            st.chain.present(index, job)
        })();
        if r.is_ok() {
            st.remember_present_id(ids.get(i).copied().unwrap_or(0));
        }
        results[i] = match r {
            Ok(()) => match st.chain.suboptimal() {
                Ok(true) => vk::Result::SUBOPTIMAL_KHR,
                Ok(false) => vk::Result::SUCCESS,
                Err(e) => result_of(&e, false),
            },
            Err(e) => {
                if !matches!(e, winsys::wayland::Error::Retired) {
                    eprintln!("winsys layer: vkQueuePresentKHR: {e}");
                }
                match result_of(&e, false) {
                    vk::Result::TIMEOUT | vk::Result::NOT_READY => {
                        vk::Result::ERROR_OUT_OF_DATE_KHR
                    }
                    r => r,
                }
            }
        };
        if results[i] == vk::Result::ERROR_SURFACE_LOST_KHR {
            st.report_lost("vkQueuePresentKHR");
        }
    }
    if theirs > 0 {
        // The driver's swapchains need the app's rendering done: waited
        // for here (a present mixing both kinds is rare).
        if let Some(Some(f)) = &first {
            if let Err(e) = f.wait(Some(WAIT)) {
                eprintln!("winsys layer: vkQueuePresentKHR: {e}");
            }
        }
        let picks: Vec<usize> = (0..ours.len()).filter(|&i| ours[i].is_none()).collect();
        let their_chains: Vec<_> = picks.iter().map(|&i| chains[i]).collect();
        let their_indices: Vec<_> = picks.iter().map(|&i| indices[i]).collect();
        let mut their_results = vec![vk::Result::SUCCESS; picks.len()];
        let mut sub = *pi;
        // The pNext structs (present regions, ids, fences...) have one
        // entry per swapchain of the app's list, which no longer matches:
        // the ids go down narrowed (where the driver has them), the
        // fences are signalled below, the rest is dropped.
        sub.p_next = std::ptr::null();
        let their_ids: Vec<u64> = picks
            .iter()
            .map(|&i| ids.get(i).copied().unwrap_or(0))
            .collect();
        let mut id_info = vk::PresentIdKHR::default().present_ids(&their_ids);
        let driver_ids = !ids.is_empty() && !d.provides.contains(&c"VK_KHR_present_id");
        if driver_ids {
            sub = sub.push_next(&mut id_info);
        }
        sub.wait_semaphore_count = 0;
        sub.p_wait_semaphores = std::ptr::null();
        sub.swapchain_count = picks.len() as u32;
        sub.p_swapchains = their_chains.as_ptr();
        sub.p_image_indices = their_indices.as_ptr();
        sub.p_results = their_results.as_mut_ptr();
        // SAFETY: the app's present, narrowed to the driver's swapchains.
        let r = unsafe { (d.swapchain_fn.fp().queue_present_khr)(queue, &sub) };
        remember_driver_ids(&d, &their_chains, &their_ids);
        for (k, &i) in picks.iter().enumerate() {
            results[i] = if r.as_raw() < 0 && their_results[k] == vk::Result::SUCCESS {
                r
            } else {
                their_results[k]
            };
        }
    }
    // SAFETY: a valid pNext chain.
    let fences = unsafe { present_fences(pi) };
    for &fence in fences.iter().filter(|&&f| f != vk::Fence::null()) {
        // VK_EXT_swapchain_maintenance1: each fence signals once the
        // present's work is done (its wait semaphores reusable): an empty
        // batch after it on the same queue, whose fence signals when all
        // the queue's earlier work has completed — no command buffer, no
        // sync_file, no wait here.
        // SAFETY: the app's present queue, held by the app for this call;
        // the app's unsignalled fence of this device, given to this
        // present (its valid usage).
        if let Err(e) = unsafe { d.raw.queue_submit(queue, &[], fence) } {
            eprintln!("winsys layer: vkQueuePresentKHR (present fences): {e}");
            return e;
        }
    }
    if !pi.p_results.is_null() {
        // SAFETY: the app's array of swapchain_count results.
        unsafe { std::ptr::copy_nonoverlapping(results.as_ptr(), pi.p_results, results.len()) };
    }
    worst(&results)
}

/// The present ids of `VkPresentIdKHR` in the present's chain (empty:
/// none).
///
/// # Safety
///
/// `pi` must be a valid present info with a valid pNext chain.
unsafe fn present_ids<'a>(pi: &'a vk::PresentInfoKHR<'_>) -> &'a [u64] {
    // SAFETY: a valid chain (the caller's contract); the struct's array of
    // swapchain_count ids (or null).
    unsafe {
        match loader::chained::<vk::PresentIdKHR<'_>>(pi.p_next, vk::StructureType::PRESENT_ID_KHR)
        {
            Some(ids) => slice(ids.p_present_ids, ids.swapchain_count),
            None => &[],
        }
    }
}

/// Where the layer gives `VK_KHR_present_id` (the driver has none): the
/// ids presented to the driver's swapchains, for `vkWaitForPresentKHR`.
fn remember_driver_ids(d: &DeviceData, chains: &[vk::SwapchainKHR], ids: &[u64]) {
    if ids.is_empty() || !d.provides.contains(&c"VK_KHR_present_id") {
        return;
    }
    let mut map = d
        .driver_present_ids
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    for (c, &id) in chains.iter().zip(ids) {
        if id != 0 && d.swapchain(*c).is_none() {
            let last = map.entry(c.as_raw()).or_insert(0);
            *last = (*last).max(id);
        }
    }
}

/// `vkWaitForPresentKHR` on a driver's swapchain where the layer gives
/// the extension: until a present with an id at least `id` was handed to
/// the driver's WSI (its `vkQueuePresentKHR` returned), within `limit`.
fn wait_driver_present(
    d: &DeviceData,
    swapchain: vk::SwapchainKHR,
    id: u64,
    limit: Duration,
) -> vk::Result {
    let start = std::time::Instant::now();
    loop {
        let last = {
            let map = d
                .driver_present_ids
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            map.get(&swapchain.as_raw()).copied().unwrap_or(0)
        };
        if last >= id {
            return vk::Result::SUCCESS;
        }
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            return vk::Result::TIMEOUT;
        }
        std::thread::sleep(left.min(Duration::from_millis(2)));
    }
}

/// The fences of `VkSwapchainPresentFenceInfoEXT` in the present's chain
/// (empty: none).
///
/// # Safety
///
/// `pi` must be a valid present info with a valid pNext chain.
unsafe fn present_fences<'a>(pi: &'a vk::PresentInfoKHR<'_>) -> &'a [vk::Fence] {
    let ty = vk::StructureType::SWAPCHAIN_PRESENT_FENCE_INFO_EXT;
    // SAFETY: a valid chain (the caller's contract); the struct's array of
    // swapchain_count fences.
    unsafe {
        match loader::chained::<vk::SwapchainPresentFenceInfoEXT<'_>>(pi.p_next, ty) {
            Some(f) => slice(f.p_fences, f.swapchain_count),
            None => &[],
        }
    }
}

/// `vkReleaseSwapchainImagesEXT`: acquired images given back unpresented,
/// free again (their next writer waits for what their acquire would have).
pub(crate) unsafe extern "system" fn release_images(
    device: vk::Device,
    info: *const vk::ReleaseSwapchainImagesInfoEXT<'_>,
) -> vk::Result {
    guard(vk::Result::ERROR_DEVICE_LOST, || {
        let Some(d) = device::data(device) else {
            return vk::Result::ERROR_DEVICE_LOST;
        };
        // SAFETY: a valid info struct and its array.
        let (swapchain, indices) = unsafe {
            let i = &*info;
            (i.swapchain, slice(i.p_image_indices, i.image_index_count))
        };
        let Some(sc) = d.swapchain(swapchain) else {
            // SAFETY: the command's type; the app's valid arguments, passed on.
            return match unsafe {
                device::next::<vk::PFN_vkReleaseSwapchainImagesEXT>(
                    &d,
                    c"vkReleaseSwapchainImagesEXT",
                )
            } {
                Some(f) => unsafe { f(device, info) },
                None => vk::Result::ERROR_SURFACE_LOST_KHR,
            };
        };
        let mut st = sc.lock();
        for &i in indices {
            let index = i as usize;
            let held = st.held.remove(&index);
            if let Err(e) = st.chain.release_unpresented(index, held) {
                eprintln!("winsys layer: vkReleaseSwapchainImagesEXT: {e}");
            }
        }
        vk::Result::SUCCESS
    })
}

/// `vkWaitForPresentKHR`: until the compositor has shown (or replaced) the
/// present with an id at least `id`. The swapchain is locked only in
/// slices of the wait, so that another thread's presents go on.
pub(crate) unsafe extern "system" fn wait_for_present(
    device: vk::Device,
    swapchain: vk::SwapchainKHR,
    id: u64,
    timeout: u64,
) -> vk::Result {
    guard(vk::Result::ERROR_DEVICE_LOST, || {
        let Some(d) = device::data(device) else {
            return vk::Result::ERROR_DEVICE_LOST;
        };
        let limit = Duration::from_nanos(timeout);
        let Some(sc) = d.swapchain(swapchain) else {
            if d.provides.contains(&c"VK_KHR_present_wait") {
                return wait_driver_present(&d, swapchain, id, limit);
            }
            // SAFETY: the command's type; the app's valid arguments, passed on.
            return match unsafe {
                device::next::<vk::PFN_vkWaitForPresentKHR>(&d, c"vkWaitForPresentKHR")
            } {
                Some(f) => unsafe { f(device, swapchain, id, timeout) },
                None => vk::Result::ERROR_SURFACE_LOST_KHR,
            };
        };
        const SLICE: Duration = Duration::from_millis(10);
        let start = std::time::Instant::now();
        loop {
            let mut st = sc.lock();
            let left = limit.saturating_sub(start.elapsed());
            if st.chain.retired() {
                return vk::Result::ERROR_OUT_OF_DATE_KHR;
            }
            match st.mark_of(id) {
                Some(mark) => match st.chain.wait_shown_until(mark, left.min(SLICE)) {
                    Ok(()) => return vk::Result::SUCCESS,
                    Err(winsys::wayland::Error::Timeout { .. }) => {
                        // Let a presenting thread have the swapchain.
                        drop(st);
                        std::thread::yield_now();
                    }
                    Err(e) => {
                        let r = result_of(&e, false);
                        if r == vk::Result::ERROR_SURFACE_LOST_KHR {
                            st.report_lost("vkWaitForPresentKHR");
                        }
                        eprintln!("winsys layer: vkWaitForPresentKHR: {e}");
                        return r;
                    }
                },
                None => {
                    // Not presented yet (another thread may): wait
                    // unlocked.
                    drop(st);
                    std::thread::sleep(left.min(Duration::from_millis(2)));
                }
            }
            if left.is_zero() {
                return vk::Result::TIMEOUT;
            }
        }
    })
}

pub(crate) unsafe extern "system" fn device_group_surface_present_modes(
    device: vk::Device,
    surface: vk::SurfaceKHR,
    out: *mut vk::DeviceGroupPresentModeFlagsKHR,
) -> vk::Result {
    guard(vk::Result::ERROR_SURFACE_LOST_KHR, || {
        let Some(d) = device::data(device) else {
            return vk::Result::ERROR_DEVICE_LOST;
        };
        if d.serves() && d.instance.wayland_surface(surface).is_some() {
            // SAFETY: a valid output pointer.
            unsafe { *out = vk::DeviceGroupPresentModeFlagsKHR::LOCAL };
            return vk::Result::SUCCESS;
        }
        // SAFETY: the app's valid arguments, passed on.
        unsafe {
            (d.swapchain_fn
                .fp()
                .get_device_group_surface_present_modes_khr)(device, surface, out)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_surface_format_has_its_drm_twins_and_encoding() {
        let srgb = vk::ColorSpaceKHR::SRGB_NONLINEAR;
        let of = |f, a| format_of(f, srgb, a);
        use vk::Format as F;
        assert_eq!(
            of(F::B8G8R8A8_SRGB, Alpha::Ignored),
            Some((Fourcc::XRGB8888, Encoding::Srgb))
        );
        assert_eq!(
            of(F::R8G8B8A8_SRGB, Alpha::Used),
            Some((Fourcc::ABGR8888, Encoding::Srgb))
        );
        assert_eq!(
            of(F::R8G8B8A8_UNORM, Alpha::Ignored),
            Some((Fourcc::XBGR8888, Encoding::Unorm))
        );
        assert_eq!(
            of(F::A2B10G10R10_UNORM_PACK32, Alpha::Used),
            Some((Fourcc::ABGR2101010, Encoding::Unorm))
        );
        // No alpha to blend: one DRM format either way.
        assert_eq!(
            of(F::R5G6B5_UNORM_PACK16, Alpha::Used),
            Some((Fourcc::RGB565, Encoding::Unorm))
        );
        assert_eq!(
            of(F::R5G5B5A1_UNORM_PACK16, Alpha::Ignored),
            Some((Fourcc::RGBX5551, Encoding::Unorm))
        );
        // Not the layer's: another format, another colour space.
        assert_eq!(of(F::R8_UNORM, Alpha::Ignored), None);
        let hdr = vk::ColorSpaceKHR::HDR10_ST2084_EXT;
        assert_eq!(format_of(F::B8G8R8A8_UNORM, hdr, Alpha::Ignored), None);
        // Every offered format has both twins (the surface needs both).
        for f in FORMATS {
            for a in [Alpha::Ignored, Alpha::Used] {
                assert!(format_of(f.format, f.color_space, a).is_some(), "{f:?}");
            }
        }
    }

    #[test]
    fn the_worst_result_is_an_error_then_suboptimal() {
        use vk::Result as R;
        assert_eq!(worst(&[R::SUCCESS, R::SUCCESS]), R::SUCCESS);
        assert_eq!(worst(&[R::SUCCESS, R::SUBOPTIMAL_KHR]), R::SUBOPTIMAL_KHR);
        assert_eq!(
            worst(&[R::SUBOPTIMAL_KHR, R::ERROR_OUT_OF_DATE_KHR]),
            R::ERROR_OUT_OF_DATE_KHR
        );
    }

    #[test]
    fn a_present_wait_waits_for_the_first_present_with_that_id_or_later() {
        let ids: VecDeque<(u64, u64)> = [(3, 10), (5, 11), (9, 12)].into();
        assert_eq!(mark_of(&ids, 1), Some(10));
        assert_eq!(mark_of(&ids, 3), Some(10));
        assert_eq!(mark_of(&ids, 4), Some(11));
        assert_eq!(mark_of(&ids, 9), Some(12));
        assert_eq!(mark_of(&ids, 10), None);
        assert_eq!(mark_of(&VecDeque::new(), 1), None);
    }

    #[test]
    fn errors_map_to_the_spec_codes() {
        use winsys::wayland::Error as E;
        assert_eq!(
            result_of(&E::Retired, false),
            vk::Result::ERROR_OUT_OF_DATE_KHR
        );
        let t = E::Timeout {
            what: "x",
            timeout: Duration::ZERO,
        };
        assert_eq!(result_of(&t, true), vk::Result::NOT_READY);
        assert_eq!(result_of(&t, false), vk::Result::TIMEOUT);
        assert_eq!(
            result_of(&E::Wayland("gone".into()), false),
            vk::Result::ERROR_SURFACE_LOST_KHR
        );
    }
}
