//! A Vulkan swapchain on a Wayland surface (features `wayland` + `vulkan`):
//! images the compositor imports as dma-bufs (zero-copy), frames handed
//! over with the best sync the compositor and the machine allow.
//!
//! One frame:
//!
//! ```no_run
//! # fn demo(device: &winsys::vulkan::Device, conn: &wayland_client::Connection) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use winsys::format::Fourcc;
//! use winsys::wayland::swapchain::{Swapchain, SwapchainConfig};
//!
//! let config = SwapchainConfig::new(256, 256, Fourcc::XRGB8888);
//! let mut chain = Swapchain::new(device, conn, &config)?;
//! let frame = chain.acquire(Duration::from_secs(1))?;   // a free image
//! let mut job = device.submission()?;
//! chain.begin(&mut job, frame)?;                        // waits for its release, takes it
//! // ... record rendering into chain.image(frame) (TRANSFER_DST_OPTIMAL) ...
//! chain.present(frame, job)?;                           // hands it back, signals, commits
//! # Ok(()) }
//! ```
//!
//! How the images reach the compositor ([`BufferPath`]): dma-bufs it
//! imports, allocated on its device (dumb buffers where no GPU renders
//! behind it, else GBM) or exported by Vulkan — the app
//! renders into them directly; when the compositor's device is another
//! GPU, the app renders into images of its own device and each frame is
//! copied on that GPU into a LINEAR buffer the compositor imports (on its
//! device, else exported by the app's)
//! ([`SwapchainConfig::copy_frames`]); without linux-dmabuf (and for FIFO
//! on a compositor that composes on the CPU: [`sync`]), wl_shm pools made
//! of the images' own memory (udmabuf), or one copy per frame.
//!
//! Each image is [`ImageState::Free`], [`ImageState::Acquired`] by the app
//! or [`ImageState::Queued`] at the compositor; the transitions are checked
//! ([`Error::ImageState`]), and an image is never written before the
//! compositor released it (and, with explicit sync, before its release
//! fence signalled: the rendering [`Swapchain::begin`] starts waits for it
//! on the GPU, so the app's thread does not block on the compositor's GPU
//! work). Every wait is bounded.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use ash::vk;
use wayland_client::protocol::wl_surface::WlSurface;
use wayland_client::Connection;

use super::presentation::PresentationStats;
use super::surface::{BufferId, Surface, TimelineId};
use super::sync::{self, Abilities, SyncMode};
use super::{probe, Error, Result};
use crate::device::{DrmDevice, NodeKind};
use crate::dmabuf::{Access, Dmabuf};
use crate::format::{Fourcc, Modifier};
use crate::sync::{SyncFile, Syncobj};
use crate::vulkan::format::Encoding;
use crate::vulkan::{Device, Image, Instance, Pending, PhysicalDeviceInfo, Submission};

/// How presented frames are paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresentMode {
    /// Every frame is shown. With `wp_fifo_v1` (when offered) the
    /// compositor holds each commit until the previous one is shown, and
    /// the app is paced by image releases alone (on a window the
    /// compositor neither shows nor lets go of, [`Swapchain::acquire`]
    /// returns [`Error::Timeout`] after its timeout: retry later, nothing
    /// is lost). Otherwise a present waits
    /// for the compositor's frame callback of the previous one (after
    /// submitting the new frame's GPU work, so rendering overlaps
    /// composition) — at most [`SwapchainConfig::fifo_patience`], after
    /// which it goes on (a hidden window gets no callbacks; its render
    /// thread must not hang).
    Fifo,
    /// Present at once; a newer frame replaces one the compositor has not
    /// shown yet (the compositor releases the replaced buffer).
    Mailbox,
    /// Like [`PresentMode::Mailbox`], and the compositor is asked to show
    /// each frame at once, tearing allowed (`wp_tearing_control_v1` hint
    /// `async`, where offered: [`Swapchain::tearing`]).
    Immediate,
}

/// The fewest images a MAILBOX or IMMEDIATE swapchain gets over
/// [`SyncMode::ExplicitSync`] (`zwp_linux_explicit_synchronization_v1`).
///
/// That protocol's compositor makes each commit's release fence when it
/// composes the commit; weston's gl renderer on a CPU (llvmpipe) finishes
/// its rendering to make one, so it composes synchronously and reads no
/// client message meanwhile. Every frame committed during a composition
/// then keeps its image until the composition ends, together with the one
/// being composed and the one being rendered: four images are all held,
/// and a MAILBOX app waits on the compositor. Measured on the test bed
/// (weston, 1920x1080 MAILBOX, steady frames a second): 1.32 with 4
/// images, 1.96 with 6, 2.17 with 8; Mesa's WSI (wl_shm, released at
/// once) 1.71 with 4 and 1.99-2.12 with 6, so six images are at parity
/// with it at equal counts, and ahead of its four. drm-syncobj on sway
/// gained 4% from 6 (4.01 -> 4.17), so other modes keep what the app
/// asks. The cost is two images of memory (twice that with
/// [`SwapchainConfig::copy_frames`]), paid on every compositor that takes
/// explicit sync: also on a GPU weston, which composes asynchronously and
/// would do with four. (A FIFO swapchain on a compositor that composes on
/// the CPU takes wl_shm instead: the [`sync`] module's docs.)
pub const MAILBOX_EXPLICIT_IMAGES: usize = 6;

/// How many images a swapchain of `asked` images presenting with
/// `present_mode` over `sync` makes ([`MAILBOX_EXPLICIT_IMAGES`]).
fn image_count(asked: usize, present_mode: PresentMode, sync: SyncMode) -> usize {
    match (present_mode, sync) {
        (PresentMode::Mailbox | PresentMode::Immediate, SyncMode::ExplicitSync) => {
            asked.max(MAILBOX_EXPLICIT_IMAGES)
        }
        _ => asked,
    }
}

/// What the app asks of a swapchain.
#[derive(Debug, Clone)]
pub struct SwapchainConfig {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The DRM format of the images.
    pub format: Fourcc,
    /// Their Vulkan format: the DRM format's own, or its sRGB twin (the
    /// GPU encodes what the app writes; the compositor gets the same
    /// bytes in `format`).
    pub encoding: Encoding,
    /// Number of images (at least 2). A MAILBOX or IMMEDIATE swapchain
    /// over explicit sync gets at least [`MAILBOX_EXPLICIT_IMAGES`];
    /// [`Swapchain::len`] says how many were made.
    pub image_count: usize,
    /// Force a sync mode (`None`: the best available).
    pub sync: Option<SyncMode>,
    /// How the app uses the images (transfer destination is always added:
    /// `begin` leaves images in `TRANSFER_DST_OPTIMAL`).
    pub usage: vk::ImageUsageFlags,
    /// Bound on every wait for the compositor or the GPU.
    pub timeout: Duration,
    /// Frame pacing.
    pub present_mode: PresentMode,
    /// FIFO: how long a present waits for the previous frame's callback
    /// before going on without it.
    pub fifo_patience: Duration,
    /// The window title.
    pub title: String,
    /// Render into images of the app's own device (in the tiling its
    /// driver prefers) and copy each frame, on that device, into a LINEAR
    /// buffer the compositor imports. Chosen by itself when the
    /// compositor's main device is another GPU than the app's (PRIME: a LINEAR
    /// buffer is what both can share, and rendering into one is slow);
    /// `true` forces it (e.g. to test that path on one GPU). Not for
    /// [`SyncMode::Shm`], which copies on the CPU anyway.
    pub copy_frames: bool,
    /// What [`probe`] found on this compositor a moment ago (e.g. for
    /// [`Swapchain::formats`]), taken as it is instead of probing again
    /// (a feedback changed since would not be noticed: pass one only from
    /// just before); `None` (the default): probed at creation.
    pub probed: Option<probe::Report>,
}

impl SwapchainConfig {
    /// Four images (what Mesa's Wayland WSI asks at least: one shown, one
    /// queued, one being rendered, one whose release is still pending —
    /// with three, MAILBOX ran at about two thirds of the rate on the test
    /// bed), the best sync mode, 5 s bounds.
    pub fn new(width: u32, height: u32, format: Fourcc) -> Self {
        SwapchainConfig {
            width,
            height,
            format,
            encoding: Encoding::Unorm,
            image_count: 4,
            sync: None,
            usage: vk::ImageUsageFlags::TRANSFER_DST,
            timeout: Duration::from_secs(5),
            present_mode: PresentMode::Fifo,
            fifo_patience: Duration::from_secs(1),
            title: "winsys".into(),
            copy_frames: false,
            probed: None,
        }
    }
}

/// Where an image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageState {
    /// Neither the app nor the compositor has it.
    Free,
    /// The app has it (after [`Swapchain::acquire`]).
    Acquired,
    /// Presented; the compositor may read it until it releases it.
    Queued,
}

/// How the images reach the compositor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BufferPath {
    /// The compositor takes no dma-bufs ([`SyncMode::Shm`]): each frame is
    /// copied once, on the CPU (by the kernel: `pwrite` from a mapping of
    /// the image's dma-buf), into a wl_shm buffer of its own.
    ShmCopy,
    /// [`SyncMode::Shm`] without a copy: the wl_shm pool is the images' own
    /// memory (a memfd that a udmabuf hands to the Vulkan driver), as with
    /// Mesa's WSI on lavapipe. Each frame still waits for its rendering on
    /// the CPU before the commit (wl_shm carries no fence). Where udmabuf
    /// or the driver's import is missing: [`BufferPath::ShmCopy`].
    ShmZeroCopy,
    /// Allocated on the device the compositor's feedback names (so it
    /// surely imports them) and imported into Vulkan: as dumb buffers where
    /// no GPU renders behind that device
    /// ([`DrmDevice::renders`](crate::device::DrmDevice::renders)), else
    /// through GBM (feature `gbm`).
    CompositorDevice {
        /// That device's driver.
        driver: String,
    },
    /// Vulkan allocates and exports the images as dma-bufs, which the
    /// compositor imports (when the compositor's device cannot allocate
    /// them, or it renders and the `gbm` feature is off).
    VulkanExport,
}

struct SwapImage {
    /// The image over the buffer the compositor reads.
    image: Image,
    dmabuf: Dmabuf,
    /// Where the app renders when frames are copied
    /// ([`SwapchainConfig::copy_frames`]): an image of its own device.
    render: Option<Image>,
    /// [`BufferPath::ShmCopy`]: the image's dma-buf, mapped once, read in
    /// each frame's copy.
    shm_map: Option<crate::dmabuf::DmabufMap>,
    buffer: BufferId,
    state: ImageState,
    /// The last submission that rendered it (its objects stay alive).
    pending: Option<Pending>,
    /// drm-syncobj: its timeline at the compositor, and the last point
    /// used on it.
    timeline: Option<TimelineId>,
    point: u64,
    /// Explicit sync: the compositor's release fence, which the next
    /// rendering waits for on the GPU ([`Swapchain::begin_with`]).
    release: Option<SyncFile>,
}

/// A swapchain: see the [module docs](self).
pub struct Swapchain {
    device: Device,
    surface: Surface,
    images: Vec<SwapImage>,
    mode: SyncMode,
    path: BufferPath,
    /// Presentation order of the queued images (oldest first).
    queue: Vec<usize>,
    timeout: Duration,
    frames: u64,
    present_mode: PresentMode,
    fifo_patience: Duration,
    missed_callbacks: u64,
    copies: bool,
    /// The GBM device the images came from (none for dumb buffers: their
    /// dma-bufs alone keep them), shared with the process's
    /// other swapchains on the same compositor device: one made while this
    /// one lives (a resize) opens none of its own.
    _allocator: SharedAllocator,
}

/// A GBM device shared by swapchains ([`GbmAllocator::shared`](crate::alloc::gbm::GbmAllocator::shared)).
#[cfg(feature = "gbm")]
type SharedAllocator = Option<std::sync::Arc<crate::alloc::gbm::GbmAllocator>>;
/// No GBM without the feature.
#[cfg(not(feature = "gbm"))]
type SharedAllocator = Option<std::convert::Infallible>;

/// Whether the compositor takes `format` on wl_shm and on no dma-buf (no
/// modifier of it, in any dma-buf mode): a swapchain in it whose mode is
/// chosen presents through wl_shm.
fn on_wl_shm_alone(report: &probe::Report, format: Fourcc) -> Result<bool> {
    Ok(report.modifiers(SyncMode::Implicit, format)?.is_empty()
        && !report.modifiers(SyncMode::Shm, format)?.is_empty())
}

/// Whether the compositor takes `format` on wl_shm, and a wl_shm buffer
/// can hold it (one plane).
fn takes_on_wl_shm(report: &probe::Report, format: Fourcc) -> Result<bool> {
    Ok(super::surface::shm_format(format).is_ok()
        && !report.modifiers(SyncMode::Shm, format)?.is_empty())
}

/// Whether the compositor whose dma-buf feedback names `main` as its main
/// device composes on the CPU: that device renders nothing
/// ([`DrmDevice::renders`]). A render node is opened to ask (virtio-gpu's
/// 3D); a primary node is not opened (the client would become its DRM
/// master), and only vgem's is known to render nothing. Unknown is no.
fn cpu_composition(main: u64) -> bool {
    let nodes = DrmDevice::list();
    let Some(node) = nodes.iter().find(|n| n.dev == main) else {
        return false;
    };
    match node.kind {
        NodeKind::Render => DrmDevice::open(&node.path).is_ok_and(|d| !d.renders()),
        NodeKind::Primary => node.driver == "vgem",
    }
}

impl Swapchain {
    /// Probe the compositor behind `conn`, choose the sync mode, allocate
    /// the images (exported by `device`, with a modifier both sides take)
    /// and offer them to the compositor, in a toplevel window of the
    /// swapchain's own (titled [`SwapchainConfig::title`]).
    pub fn new(device: &Device, conn: &Connection, config: &SwapchainConfig) -> Result<Self> {
        Self::create(device, conn, None, config)
    }

    /// Like [`Swapchain::new`], but presenting into the app's own
    /// `surface` of `conn` (its role and configure events stay the app's,
    /// which resizes by recreating the swapchain). The surface must
    /// outlive the swapchain.
    pub fn for_surface(
        device: &Device,
        conn: &Connection,
        surface: &WlSurface,
        config: &SwapchainConfig,
    ) -> Result<Self> {
        Self::create(device, conn, Some(surface), config)
    }

    /// Like [`Swapchain::for_surface`], from the raw handles that windowing
    /// libraries (winit, SDL) give and `ash-window` takes: libwayland's
    /// `wl_display` and `wl_surface` pointers (feature
    /// `raw-window-handle`). The swapchain talks on its own event queue of
    /// that display.
    ///
    /// # Safety
    ///
    /// `display` and `window` must be Wayland handles whose `wl_display`
    /// and `wl_surface` stay valid until the swapchain is dropped; the
    /// `wl_display` must come from the libwayland-client this process
    /// loads (the one winsys dlopens), and the surface must belong to that
    /// display (which cannot be checked here).
    #[cfg(feature = "raw-window-handle")]
    pub unsafe fn from_raw_handles(
        device: &Device,
        display: raw_window_handle::RawDisplayHandle,
        window: raw_window_handle::RawWindowHandle,
        config: &SwapchainConfig,
    ) -> Result<Self> {
        use raw_window_handle::{RawDisplayHandle, RawWindowHandle};
        use wayland_client::backend::ObjectId;
        use wayland_client::Proxy;
        let (RawDisplayHandle::Wayland(_), RawWindowHandle::Wayland(w)) = (display, window) else {
            return Err(Error::Wayland(
                "the raw handles are not a Wayland display and surface".into(),
            ));
        };
        // SAFETY: the caller guarantees the wl_display lives as long as
        // the swapchain (which holds the connection).
        let conn = unsafe { super::connection_from_raw(display) }?;
        // SAFETY: the caller guarantees a live wl_surface of that display;
        // from_ptr checks the proxy's interface.
        let id = unsafe { ObjectId::from_ptr(WlSurface::interface(), w.surface.as_ptr().cast()) }
            .map_err(|_| Error::Wayland("the raw window handle is not a wl_surface".into()))?;
        let surface = WlSurface::from_id(&conn, id)
            .map_err(|_| Error::Wayland("the raw window handle is not a wl_surface".into()))?;
        Self::create(device, &conn, Some(&surface), config)
    }

    /// The DRM formats a swapchain of a device on `device` can present
    /// in to the compositor `report` describes ([`probe`]), with `sync`:
    /// those the compositor takes on that mode's way of sharing buffers
    /// (every dma-buf mode takes the same; wl_shm: LINEAR) with a modifier
    /// the driver renders into (`COLOR_ATTACHMENT`), in the compositor's
    /// order. `None`: the modes [`Swapchain::new`] may choose — the
    /// dma-buf formats, then those the compositor takes on wl_shm alone
    /// (a swapchain in one of those presents through wl_shm). Sizes, and
    /// usages beyond rendering, are the swapchain's to check.
    ///
    /// ```no_run
    /// # fn demo(instance: &winsys::vulkan::Instance) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use winsys::wayland::{self, swapchain::Swapchain};
    /// let conn = wayland::connect(None)?;
    /// let report = wayland::probe(&conn, Duration::from_secs(5))?;
    /// for device in instance.physical_devices()? {
    ///     let formats = Swapchain::formats(instance, &device, &report, None)?;
    ///     println!("{}: {formats:?}", device.name);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn formats(
        instance: &Instance,
        device: &PhysicalDeviceInfo,
        report: &probe::Report,
        sync: Option<SyncMode>,
    ) -> Result<Vec<Fourcc>> {
        let offer = report.offer();
        let can = Abilities {
            dmabuf: device.extensions.dmabuf_images(),
            ..Abilities::default()
        };
        // Implicit stands for every dma-buf mode (what they all need, the
        // best one's protocol aside).
        let modes: Vec<SyncMode> = match sync {
            Some(SyncMode::Shm) => vec![SyncMode::Shm],
            Some(_) => vec![SyncMode::Implicit],
            None => [SyncMode::Implicit, SyncMode::Shm]
                .into_iter()
                .filter(|&m| sync::check(m, &offer, &can).is_ok())
                .collect(),
        };
        let dmabuf = modes.contains(&SyncMode::Implicit);
        let mut out = Vec::new();
        for &mode in &modes {
            for format in report.formats(mode)? {
                let skip = match mode {
                    SyncMode::Shm => {
                        // A wl_shm format of several planes (or unknown
                        // here), or one that goes over dma-bufs when the
                        // mode is chosen (the same rule as `create`).
                        super::surface::shm_format(format).is_err()
                            || (sync.is_none() && dmabuf && !on_wl_shm_alone(report, format)?)
                    }
                    _ => false,
                };
                if skip || out.contains(&format) {
                    continue;
                }
                let theirs = report.modifiers(mode, format)?;
                let renders = instance.modifiers(device, format).into_iter().any(|m| {
                    theirs.contains(&m.modifier)
                        && m.features
                            .contains(vk::FormatFeatureFlags::COLOR_ATTACHMENT)
                });
                if renders {
                    out.push(format);
                }
            }
        }
        Ok(out)
    }

    fn create(
        device: &Device,
        conn: &Connection,
        window: Option<&WlSurface>,
        config: &SwapchainConfig,
    ) -> Result<Self> {
        if config.image_count < 2 {
            return Err(Error::Wayland("a swapchain needs at least 2 images".into()));
        }
        let probed;
        let report = match &config.probed {
            Some(r) => r,
            None => {
                probed = probe(conn, config.timeout)?;
                &probed
            }
        };
        let offer = report.offer();
        let sync_fd = device.sync_fd_support();
        // Only looked for when the compositor takes timelines.
        let timelines = offer
            .drm_syncobj
            .and_then(|_| timeline_device(report.feedback.as_ref().and_then(|f| f.as_ref().ok())));
        let can = Abilities {
            timeline_syncobj: timelines.is_some(),
            sync_file: sync_fd.semaphore_export,
            dmabuf: device.extensions().dmabuf_images(),
        };
        let mut mode = sync::choose(&offer, &can, config.sync)?;
        // FIFO on a compositor that composes on the CPU: zero-copy wl_shm
        // in place of its fences (the sync module's docs say why), for a
        // format it takes there, rendered by its own device, unless frames
        // are to be copied into dma-bufs. drm-syncobj stays.
        let main = match &report.feedback {
            Some(Ok(fb)) => Some(fb.main_device),
            _ => None,
        };
        if config.sync.is_none()
            && sync::shm_in_place_of(mode, &offer, &can)
            && config.present_mode == PresentMode::Fifo
            && !config.copy_frames
            && takes_on_wl_shm(report, config.format)?
            && main.is_some_and(|m| !another_gpu(device, m) && cpu_composition(m))
            && crate::alloc::udmabuf::Udmabuf::open().is_ok()
        {
            mode = SyncMode::Shm;
        }
        // A format the compositor takes on wl_shm alone (sway's RGBX5551
        // here) is presented through wl_shm: the best mode for that format.
        if config.sync.is_none()
            && mode != SyncMode::Shm
            && sync::check(SyncMode::Shm, &offer, &can).is_ok()
            && on_wl_shm_alone(report, config.format)?
        {
            mode = SyncMode::Shm;
        }
        if mode == SyncMode::Shm {
            // Refused before anything is allocated.
            super::surface::shm_format(config.format)?;
        }
        let grown;
        let count = image_count(config.image_count, config.present_mode, mode);
        let config = match count == config.image_count {
            true => config,
            false => {
                grown = SwapchainConfig {
                    image_count: count,
                    ..config.clone()
                };
                &grown
            }
        };
        // The modifiers the compositor takes for the format, in its order
        // of preference (v3: its format list); wl_shm: LINEAR.
        let modifiers = report.modifiers(mode, config.format)?;
        if modifiers.is_empty() {
            return Err(Error::Wayland(match mode {
                SyncMode::Shm => format!("the compositor's wl_shm takes no {}", config.format),
                _ => format!(
                    "the compositor takes no explicit modifier for {}",
                    config.format
                ),
            }));
        }
        let usage = config.usage | vk::ImageUsageFlags::TRANSFER_DST;
        let target = match &report.feedback {
            _ if mode == SyncMode::Shm => None,
            Some(Ok(fb)) => fb
                .pick(|f, m| f == config.format && m == Modifier::LINEAR)
                .map(|(t, _, _)| t.target_device)
                .or(Some(fb.main_device)),
            _ => None,
        };
        // Another GPU than the compositor's main device (the one it
        // composes with; a scanout tranche's device may be a display
        // controller that renders nothing).
        let main_device = match &report.feedback {
            Some(Ok(fb)) if mode != SyncMode::Shm => Some(fb.main_device),
            _ => None,
        };
        let linear = modifiers.contains(&Modifier::LINEAR);
        let copies = mode != SyncMode::Shm
            && (config.copy_frames
                || (linear && main_device.is_some_and(|d| another_gpu(device, d))));
        let (allocated, path, allocator) = if mode == SyncMode::Shm {
            allocate_shm(device, config, usage)?
        } else if copies {
            // The shared buffers are only copied into, and LINEAR.
            if !linear {
                return Err(Error::Wayland(format!(
                    "the compositor takes no LINEAR {} to copy frames into",
                    config.format
                )));
            }
            let shared = vk::ImageUsageFlags::TRANSFER_DST;
            // Copied into bit for bit: UNORM whatever the app renders in.
            let unorm = SwapchainConfig {
                encoding: Encoding::Unorm,
                ..config.clone()
            };
            with_no_memfd(allocate(
                device,
                &unorm,
                target,
                &[Modifier::LINEAR],
                shared,
            )?)
        } else {
            with_no_memfd(allocate(device, config, target, &modifiers, usage)?)
        };
        let render_usage = usage | vk::ImageUsageFlags::TRANSFER_SRC;
        let mut surface = match window {
            Some(w) => Surface::for_surface(conn, w, mode, config.timeout)?,
            None => Surface::new(conn, &config.title, mode, config.timeout)?,
        };
        if mode == SyncMode::Shm {
            surface.set_shm_format(config.format)?;
        }
        if let (Some(dev), SyncMode::DrmSyncobj) = (&timelines, mode) {
            // drm-syncobj: a timeline whose signalled point is the acquire
            // point of frames complete when presented (no signal each).
            let done = Syncobj::new(dev).map_err(|e| Error::Wayland(e.to_string()))?;
            surface.add_done_timeline(done)?;
        }
        match config.present_mode {
            PresentMode::Fifo => {
                surface.use_fifo()?;
            }
            PresentMode::Immediate => {
                surface.allow_tearing()?;
            }
            PresentMode::Mailbox => {}
        }
        // Only FIFO paces with frame callbacks (and asks for them with
        // wp_fifo_v1 too, for `wait_shown`); MAILBOX and IMMEDIATE learn
        // what was shown from the presentation feedback.
        surface.request_frame_callbacks(config.present_mode == PresentMode::Fifo);
        let mut images = Vec::with_capacity(config.image_count);
        for (image, dmabuf, memfd) in allocated {
            // The app's device's own choice of tiling (allocated exportable:
            // its dma-buf fd is dropped, never handed out).
            let render = match copies {
                true => Some(
                    device
                        .export_image_as(
                            config.width,
                            config.height,
                            config.format,
                            &[],
                            render_usage,
                            config.encoding,
                        )
                        .map_err(vk_err)?
                        .0,
                ),
                false => None,
            };
            let (buffer, shm_map) = match (mode, memfd) {
                (SyncMode::Shm, Some(memfd)) => {
                    let plane = &dmabuf.planes()[0];
                    let size = (dmabuf.width(), dmabuf.height());
                    let offset = u64::from(plane.offset());
                    let id = surface.add_shm_memory(memfd.as_fd(), offset, size, plane.stride())?;
                    (id, None)
                }
                (SyncMode::Shm, None) => (
                    surface.add_shm(config.width, config.height)?,
                    Some(dmabuf.map(Access::Read)?),
                ),
                _ => (surface.add_dmabuf(&dmabuf)?, None),
            };
            // drm-syncobj: a timeline per image (release points of one
            // timeline must not be shared between buffers).
            let timeline = match (&timelines, mode) {
                (Some(dev), SyncMode::DrmSyncobj) => {
                    let t = Syncobj::new(dev).map_err(|e| Error::Wayland(e.to_string()))?;
                    Some(surface.add_timeline(t)?)
                }
                _ => None,
            };
            images.push(SwapImage {
                image,
                dmabuf,
                render,
                shm_map,
                buffer,
                state: ImageState::Free,
                pending: None,
                timeline,
                point: 0,
                release: None,
            });
        }
        Ok(Swapchain {
            device: device.clone(),
            surface,
            images,
            mode,
            path,
            queue: Vec::new(),
            timeout: config.timeout,
            frames: 0,
            present_mode: config.present_mode,
            fifo_patience: config.fifo_patience,
            missed_callbacks: 0,
            copies,
            _allocator: allocator,
        })
    }

    /// Bound the waits from now on by `timeout` instead of
    /// [`SwapchainConfig::timeout`] (e.g. a long bound for the set-up, a
    /// shorter one for the frames).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.surface.set_timeout(timeout);
    }

    /// The sync mode in use.
    pub fn sync_mode(&self) -> SyncMode {
        self.mode
    }

    /// How the images reach the compositor.
    pub fn buffer_path(&self) -> &BufferPath {
        &self.path
    }

    /// Whether each frame is rendered into an image of the app's device
    /// and copied into the compositor's buffer
    /// ([`SwapchainConfig::copy_frames`]).
    pub fn copies_frames(&self) -> bool {
        self.copies
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether there are no images (never).
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Image `index`: where the app renders.
    ///
    /// # Panics
    ///
    /// If `index` is not below [`Swapchain::len`].
    pub fn image(&self, index: usize) -> &Image {
        let img = &self.images[index];
        img.render.as_ref().unwrap_or(&img.image)
    }

    /// The dma-buf the compositor reads for image `index` (when frames are
    /// copied, the copy's destination; panics like [`Swapchain::image`]).
    pub fn dmabuf(&self, index: usize) -> &Dmabuf {
        &self.images[index].dmabuf
    }

    /// Where image `index` is (panics like [`Swapchain::image`]).
    pub fn state(&self, index: usize) -> ImageState {
        self.images[index].state
    }

    /// Frames presented and called back by the compositor (MAILBOX and
    /// IMMEDIATE, where commits ask for no frame callbacks when the
    /// compositor offers `wp_presentation`: whose presentation feedback
    /// arrived, shown or replaced).
    pub fn frames_shown(&self) -> u64 {
        self.surface.frames_done()
    }

    /// Whether the images no longer fit the window: the compositor
    /// configured a size other than theirs (a resize, or a fullscreen or
    /// maximized state), or its linux-dmabuf feedback for the surface
    /// changed (the device or format + modifier it prefers). Frames still
    /// present; an app recreates the swapchain (at the size
    /// [`Swapchain::configured_size`] gives).
    pub fn suboptimal(&mut self) -> Result<bool> {
        let (w, h) = (
            self.images[0].dmabuf.width(),
            self.images[0].dmabuf.height(),
        );
        let resized = self.surface.configured_size()?.is_some_and(|s| s != (w, h));
        Ok(resized || self.surface.feedback_changed()?)
    }

    /// The size the compositor last configured the window to, if any.
    pub fn configured_size(&mut self) -> Result<Option<(u32, u32)>> {
        self.surface.configured_size()
    }

    /// What the compositor's `wp_presentation` feedback said about the
    /// frames presented so far: counts and latency from commit to
    /// presentation (`None`: no `wp_presentation`).
    pub fn presentation(&mut self) -> Result<Option<PresentationStats>> {
        self.surface.presentation()
    }

    /// The compositor's presentation clock (`None`: no `wp_presentation`,
    /// or a clock this process cannot read).
    pub fn presentation_clock(&self) -> Option<rustix::time::ClockId> {
        self.surface.presentation_clock()
    }

    /// Frames presented so far.
    pub fn frames_presented(&self) -> u64 {
        self.frames
    }

    /// FIFO presents that went on without the previous frame's callback
    /// (the window was hidden or the compositor slow past the patience).
    pub fn missed_callbacks(&self) -> u64 {
        self.missed_callbacks
    }

    /// The pacing.
    pub fn present_mode(&self) -> PresentMode {
        self.present_mode
    }

    /// Whether the compositor was asked to show frames at once, tearing
    /// allowed ([`PresentMode::Immediate`] on a compositor with
    /// `wp_tearing_control_manager_v1`).
    pub fn tearing(&self) -> bool {
        self.surface.tearing()
    }

    /// Whether FIFO pacing is the compositor's (`wp_fifo_v1`) rather than
    /// frame callbacks.
    pub fn fifo_protocol(&self) -> bool {
        self.surface.fifo()
    }

    /// A free image for the app: one never queued, or else the first
    /// queued one the compositor releases (the oldest of those already
    /// released; at most `timeout`, [`Error::Timeout`] otherwise, never a
    /// hang).
    pub fn acquire(&mut self, timeout: Duration) -> Result<usize> {
        let index = match self.images.iter().position(|i| i.state == ImageState::Free) {
            Some(i) => i,
            None => {
                let shown = *self.queue.last().ok_or(Error::ImageState {
                    index: 0,
                    state: ImageState::Acquired,
                    wanted: "an image to acquire (all are with the app)",
                })?;
                if self.queue.len() == 1 {
                    // The only queued image is on screen: the compositor
                    // releases it only when another is presented.
                    return Err(Error::ImageState {
                        index: shown,
                        state: ImageState::Queued,
                        wanted: "an acquire (the others are with the app: present one first)",
                    });
                }
                // Whichever queued image the compositor releases first
                // (oldest first among those already released). Explicit
                // sync: the release fence is waited for by the next
                // rendering (on the GPU), not here.
                let buffers: Vec<BufferId> =
                    self.queue.iter().map(|&i| self.images[i].buffer).collect();
                let (buffer, fence) = self.surface.take_any_release_within(&buffers, timeout)?;
                let at = buffers
                    .iter()
                    .position(|b| *b == buffer)
                    .expect("one of the buffers asked for");
                let index = self.queue.remove(at);
                self.images[index].release = fence;
                self.images[index].state = ImageState::Free;
                index
            }
        };
        self.images[index].state = ImageState::Acquired;
        Ok(index)
    }

    /// [`Swapchain::acquire`] for a caller that orders its GPU work after
    /// the image is free itself — a Vulkan layer's `vkAcquireNextImageKHR`,
    /// which imports the fence into the app's semaphore and fence
    /// ([`Device::import_into_semaphore`](crate::vulkan::Device::import_into_semaphore)):
    /// the image and the fence its next writer must wait for, the
    /// compositor's release fence (explicit sync) or the compositor's reads
    /// in its dma-buf (implicit sync; waited for here, within `timeout`,
    /// on kernels that cannot export them). `None`: nothing is left to wait
    /// for (the other modes' releases said so, or the compositor's fence
    /// has signalled already). The fence is the caller's:
    /// [`Swapchain::begin`] and [`Swapchain::present`] no longer wait for
    /// it. When frames are copied ([`Swapchain::copies_frames`]) the
    /// app's image is free at once and the copy in `present` waits.
    pub fn acquire_with_fence(&mut self, timeout: Duration) -> Result<(usize, Option<SyncFile>)> {
        let index = self.acquire(timeout)?;
        let mode = self.mode;
        let img = &mut self.images[index];
        if img.render.is_some() {
            return Ok((index, None));
        }
        let mut fence = img.release.take();
        if mode == SyncMode::Implicit && fence.is_none() {
            let implicit = img.dmabuf.implicit_fence(Access::Write);
            let waited = implicit.and_then(|f| match f {
                crate::dmabuf::ImplicitFence::SyncFile(f) => Ok(Some(f)),
                poll => poll.wait(Some(timeout)).map(|()| None),
            });
            match waited {
                Ok(f) => fence = f,
                Err(e) => {
                    // Still the compositor's as far as anyone knows.
                    img.state = ImageState::Free;
                    return Err(e.into());
                }
            }
        }
        Ok((index, fence))
    }

    /// Give acquired image `index` back unpresented (Vulkan's
    /// `vkReleaseSwapchainImagesEXT`): it is free again, and its next
    /// writer waits for `release` — the fence
    /// [`Swapchain::acquire_with_fence`] gave with it, which the app may
    /// never have waited for.
    pub fn release_unpresented(&mut self, index: usize, release: Option<SyncFile>) -> Result<()> {
        self.expect(index, ImageState::Acquired, "a release unpresented")?;
        let img = &mut self.images[index];
        if release.is_some() {
            img.release = release;
        }
        img.state = ImageState::Free;
        Ok(())
    }

    /// Give the `wl_surface` over to a newer swapchain (Vulkan's
    /// `oldSwapchain`): the per-surface protocol objects go
    /// ([`Surface::retire`]), presents fail with [`Error::Retired`], and
    /// the images stay valid until the swapchain is dropped.
    pub fn retire(&mut self) {
        self.surface.retire();
    }

    /// Whether [`Swapchain::retire`] was called.
    pub fn retired(&self) -> bool {
        self.surface.retired()
    }

    /// Start using image `index` in `job`: its previous release is waited
    /// for on the GPU (explicit: the release fence; implicit: the dma-buf's
    /// fences), and it is taken from the compositor into
    /// `TRANSFER_DST_OPTIMAL`.
    pub fn begin(&mut self, job: &mut Submission<'_>, index: usize) -> Result<()> {
        self.begin_with(
            job,
            index,
            vk::ImageLayout::TRANSFER_DST_OPTIMAL,
            vk::PipelineStageFlags::TRANSFER,
            vk::AccessFlags::TRANSFER_WRITE,
        )
    }

    /// [`Swapchain::begin`] for another first use: the image arrives in
    /// `layout`, ready for `access` at `stage` (e.g. a render pass:
    /// `COLOR_ATTACHMENT_OPTIMAL`, `COLOR_ATTACHMENT_OUTPUT`,
    /// `COLOR_ATTACHMENT_WRITE`). Whatever layout the image is in when it
    /// is presented, the hand-over to the compositor follows it.
    pub fn begin_with(
        &mut self,
        job: &mut Submission<'_>,
        index: usize,
        layout: vk::ImageLayout,
        stage: vk::PipelineStageFlags,
        access: vk::AccessFlags,
    ) -> Result<()> {
        self.expect(index, ImageState::Acquired, "begin")?;
        let mode = self.mode;
        let img = &mut self.images[index];
        match &mut img.render {
            // The app's own image, after the last copy out of it (an
            // earlier submission); what the compositor still reads holds
            // only the copy in `present`.
            Some(render) => render.cmd_transition(
                job,
                (vk::PipelineStageFlags::TRANSFER, vk::AccessFlags::empty()),
                layout,
                stage,
                access,
            ),
            None => {
                wait_for_compositor(job, img, mode, stage)?;
                img.image.cmd_acquire(job, layout, stage, access)
            }
        }
        .map_err(vk_err)
    }

    /// Hand image `index` back to the compositor: release it in `job`,
    /// submit `job` with the signal the sync mode needs, and commit.
    pub fn present(&mut self, index: usize, mut job: Submission<'_>) -> Result<()> {
        self.expect(index, ImageState::Acquired, "present")?;
        let mode = self.mode;
        let img = &mut self.images[index];
        if img.render.is_some() {
            // The copy writes the compositor's buffer: in this job, after
            // the compositor is done with it.
            wait_for_compositor(&mut job, img, mode, vk::PipelineStageFlags::TRANSFER)?;
            if let Some(render) = &mut img.render {
                copy_frame(&self.device, &mut job, render, &mut img.image).map_err(vk_err)?;
            }
        } else if let Some(fence) = img.release.take() {
            // A release fence `begin` did not take (no begin, or another
            // submission): this job waits for it, so the image is never
            // written while the compositor may read it.
            job.wait_for_sync_file(fence, vk::PipelineStageFlags::ALL_COMMANDS)
                .map_err(vk_err)?;
        }
        img.image
            .cmd_release(
                &mut job,
                vk::PipelineStageFlags::ALL_COMMANDS,
                vk::AccessFlags::TRANSFER_WRITE | vk::AccessFlags::COLOR_ATTACHMENT_WRITE,
            )
            .map_err(vk_err)?;
        let mut points = None;
        let acquire = match mode {
            SyncMode::DrmSyncobj => {
                // The acquire point carries the rendering's completion
                // (or, complete already, is the done timeline's); the
                // compositor signals the release point after it.
                job.signal_sync_file();
                let mut pending = job.submit().map_err(vk_err)?;
                let fence = pending.take_sync_file();
                img.pending = Some(pending);
                let t = img
                    .timeline
                    .expect("a timeline per image in drm-syncobj mode");
                points = Some(match fence {
                    Some(f) => {
                        let (a, r) = (img.point + 1, img.point + 2);
                        img.point = r;
                        self.surface
                            .timeline(t)
                            .expect("the surface's own timeline")
                            .import_sync_file(a, &f)
                            .map_err(|e| Error::Wayland(e.to_string()))?;
                        (t, Some(a), r)
                    }
                    // Already complete (the submission waited for it: a
                    // software device, a driver that cannot export, or a
                    // fence signalled at once): the done timeline's point,
                    // no signal of its own.
                    None => {
                        img.point += 1;
                        (t, None, img.point)
                    }
                });
                None
            }
            SyncMode::Shm => {
                // Wait (bounded) for the rendering: wl_shm carries no fence.
                let pending = job.submit().map_err(vk_err)?;
                pending.wait(Some(self.timeout)).map_err(vk_err)?;
                img.pending = Some(pending);
                match &img.shm_map {
                    // The wl_shm pool is the image's memory: its writes made
                    // visible to the compositor's reads of the memfd.
                    None => img.dmabuf.sync_for_cpu_read()?,
                    // The one copy, by the kernel, from the image's mapping
                    // (within a read guard) into its wl_shm buffer.
                    Some(map) => {
                        let guard = map.read(Some(self.timeout))?;
                        let stride = img.dmabuf.planes()[0].stride() as usize;
                        // SAFETY: the image is the app's (acquired), its
                        // rendering is done, and its dma-buf went to no one
                        // else (the compositor has the wl_shm copy): nothing
                        // writes these bytes while the slice lives.
                        let src = unsafe { guard.plane_slice(0) }?;
                        self.surface.write_shm_rows(img.buffer, src, stride)?;
                    }
                }
                None
            }
            SyncMode::ExplicitSync => {
                job.signal_sync_file();
                let mut pending = job.submit().map_err(vk_err)?;
                let fence = pending.take_sync_file();
                img.pending = Some(pending);
                fence
            }
            _ => {
                // Implicit: the work's completion becomes a write fence in
                // the dma-buf, which the compositor's reads wait for.
                job.signal_dmabuf(&img.dmabuf, Access::Write);
                img.pending = Some(job.submit().map_err(vk_err)?);
                None
            }
        };
        if self.present_mode == PresentMode::Fifo && !self.surface.fifo() && self.frames > 0 {
            // The new frame's GPU work is submitted; now wait (bounded) until
            // the previous one has been shown.
            if !self.surface.wait_frame_within(self.fifo_patience)? {
                self.missed_callbacks += 1;
            }
        }
        let img = &mut self.images[index];
        match points {
            Some((t, Some(a), r)) => self.surface.present_with_points(img.buffer, t, a, r)?,
            Some((t, None, r)) => self.surface.present_complete(img.buffer, t, r)?,
            None => self.surface.present(img.buffer, acquire)?,
        }
        img.state = ImageState::Queued;
        self.queue.push(index);
        self.frames += 1;
        Ok(())
    }

    /// The mark of the frame presented last, for
    /// [`Swapchain::wait_shown_until`]: its place among the surface's
    /// commits.
    pub fn frame_mark(&self) -> u64 {
        self.surface.frames_asked()
    }

    /// Wait, at most `timeout` ([`Error::Timeout`] after it), until the
    /// compositor has shown (or, MAILBOX, replaced) the frame whose
    /// [`Swapchain::frame_mark`] is `mark`, and every frame before it
    /// (Vulkan's `vkWaitForPresentKHR`). A frame of a window the
    /// compositor does not show (hidden, occluded) may never be.
    pub fn wait_shown_until(&mut self, mark: u64, timeout: Duration) -> Result<()> {
        self.surface.wait_frames_done(mark, timeout)
    }

    /// Wait (bounded) until the compositor has shown (or, MAILBOX,
    /// replaced) every frame presented.
    pub fn wait_shown(&mut self) -> Result<()> {
        self.surface.wait_frame()
    }

    fn expect(&self, index: usize, state: ImageState, wanted: &'static str) -> Result<()> {
        let img = self.images.get(index).ok_or(Error::ImageState {
            index,
            state: ImageState::Free,
            wanted: "an image index of this swapchain",
        })?;
        if img.state != state {
            return Err(Error::ImageState {
                index,
                state: img.state,
                wanted,
            });
        }
        Ok(())
    }
}

impl Drop for Swapchain {
    fn drop(&mut self) {
        // Nothing waits here for the compositor's releases: a queued image
        // is never used again, and its memory lives on in the compositor's
        // own import (the dma-buf, or the wl_shm pool's mapping) for as
        // long as the compositor reads it; destroying a wl_buffer before
        // its release is allowed as long as its storage is not reused
        // (wl_surface.attach). Releases that arrive later are dropped
        // with their fences (the surface's `Owner`). The GPU work still
        // using the images keeps them alive until it is done (`collect`
        // frees what finished). A window of the swapchain's own is taken
        // off the screen first; the app's own surface is not detached:
        // that would unmap its toplevel, and the app's next swapchain
        // would have to configure it again.
        if self.surface.owns_window() {
            let _ = self.surface.detach();
        }
        self.device.collect();
    }
}

/// Make `job` wait, at `stage`, until the compositor is done with `img`'s
/// buffer: its release fence (explicit sync; taken), or (implicit sync)
/// the fences in the dma-buf. The other modes' releases already said so (a
/// release point, or wl_buffer.release for memory read on the CPU).
fn wait_for_compositor(
    job: &mut Submission<'_>,
    img: &mut SwapImage,
    mode: SyncMode,
    stage: vk::PipelineStageFlags,
) -> Result<()> {
    if let Some(fence) = img.release.take() {
        job.wait_for_sync_file(fence, stage).map_err(vk_err)?;
    }
    if mode == SyncMode::Implicit {
        job.wait_for_dmabuf(&img.dmabuf, Access::Write, stage)
            .map_err(vk_err)?;
    }
    Ok(())
}

/// Record the copy of a rendered frame into the compositor's buffer:
/// `render` from whatever layout the app left it in (after all its
/// writes) to `TRANSFER_SRC_OPTIMAL`, `shared` taken into
/// `TRANSFER_DST_OPTIMAL` (after the submission's waits for the
/// compositor, at the transfer stage), the whole image copied.
fn copy_frame(
    device: &Device,
    job: &mut Submission<'_>,
    render: &mut Image,
    shared: &mut Image,
) -> crate::vulkan::Result<()> {
    render.cmd_transition(
        job,
        (
            vk::PipelineStageFlags::ALL_COMMANDS,
            vk::AccessFlags::COLOR_ATTACHMENT_WRITE
                | vk::AccessFlags::TRANSFER_WRITE
                | vk::AccessFlags::SHADER_WRITE,
        ),
        vk::ImageLayout::TRANSFER_SRC_OPTIMAL,
        vk::PipelineStageFlags::TRANSFER,
        vk::AccessFlags::TRANSFER_READ,
    )?;
    shared.cmd_transition(
        job,
        (vk::PipelineStageFlags::TRANSFER, vk::AccessFlags::empty()),
        vk::ImageLayout::TRANSFER_DST_OPTIMAL,
        vk::PipelineStageFlags::TRANSFER,
        vk::AccessFlags::TRANSFER_WRITE,
    )?;
    let layers = vk::ImageSubresourceLayers {
        aspect_mask: vk::ImageAspectFlags::COLOR,
        mip_level: 0,
        base_array_layer: 0,
        layer_count: 1,
    };
    let extent = render.extent();
    let region = vk::ImageCopy {
        src_subresource: layers,
        src_offset: vk::Offset3D::default(),
        dst_subresource: layers,
        dst_offset: vk::Offset3D::default(),
        extent: vk::Extent3D {
            width: extent.width,
            height: extent.height,
            depth: 1,
        },
    };
    // SAFETY: the job's command buffer is recording on the device of both
    // images (checked by the transitions, which also registered them with
    // the job, keeping them alive until its work is done); both are in
    // the layouts just recorded, of the same extent and size-compatible
    // formats (one DRM format; the render image may be its sRGB twin).
    unsafe {
        device.raw().cmd_copy_image(
            job.cmd(),
            render.raw(),
            vk::ImageLayout::TRANSFER_SRC_OPTIMAL,
            shared.raw(),
            vk::ImageLayout::TRANSFER_DST_OPTIMAL,
            &[region],
        )
    };
    Ok(())
}

/// Whether `target` (a `dev_t` from the compositor's feedback) is a GPU
/// other than `device`'s: the device names its DRM nodes and `target` is
/// neither. A device without DRM nodes (lavapipe: the CPU) renders into
/// any memory it can map as fast as into its own, and copies nothing.
fn another_gpu(device: &Device, target: u64) -> bool {
    let info = device.info();
    let nodes: Vec<u64> = [info.primary_node, info.render_node]
        .into_iter()
        .flatten()
        .filter_map(|(major, minor)| {
            Some(rustix::fs::makedev(
                u32::try_from(major).ok()?,
                u32::try_from(minor).ok()?,
            ))
        })
        .collect();
    !nodes.is_empty() && !nodes.contains(&target)
}

/// A render node with timeline syncobjs for the drm-syncobj timelines:
/// the compositor's main device's driver first, then any.
fn timeline_device(
    feedback: Option<&super::feedback::Feedback>,
) -> Option<std::sync::Arc<DrmDevice>> {
    let nodes = DrmDevice::list();
    let main_driver = feedback.and_then(|f| {
        nodes
            .iter()
            .find(|n| n.dev == f.main_device)
            .map(|n| n.driver.clone())
    });
    let mut render: Vec<_> = nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Render)
        .collect();
    render.sort_by_key(|n| Some(&n.driver) != main_driver.as_ref());
    render.iter().find_map(|n| {
        DrmDevice::open(&n.path)
            .ok()
            .filter(|d| d.has_syncobj_timeline())
            .map(std::sync::Arc::new)
    })
}

/// The dma-buf images: on the compositor's device `target` where the
/// device allows (LINEAR) — as dumb buffers where no GPU renders behind it
/// (what Mesa's GBM would make there, without loading Mesa), else through
/// GBM with the feature — else exported by Vulkan; with the GBM device
/// they came from.
fn allocate(
    device: &Device,
    config: &SwapchainConfig,
    target: Option<u64>,
    modifiers: &[Modifier],
    usage: vk::ImageUsageFlags,
) -> Result<Images<(Image, Dmabuf)>> {
    if let Some(dev) = target
        .filter(|_| modifiers.contains(&Modifier::LINEAR))
        .and_then(|t| crate::device::DrmDevice::open_dev_t(t).ok())
    {
        let driver = dev.driver().to_string();
        // Each image made by `make`, imported into Vulkan; None where
        // either fails (Vulkan's own export below then serves).
        let on_device = |make: &dyn Fn() -> Option<Dmabuf>| -> Option<Vec<(Image, Dmabuf)>> {
            let mut out = Vec::with_capacity(config.image_count);
            for _ in 0..config.image_count {
                let dmabuf = make()?;
                let image = device
                    .import_dmabuf_as(&dmabuf, usage, config.encoding)
                    .ok()?;
                out.push((image, dmabuf));
            }
            Some(out)
        };
        let path = || BufferPath::CompositorDevice {
            driver: driver.clone(),
        };
        // No GPU behind the device: dumb buffers, made here (what Mesa's
        // kms_swrast would make, without loading it).
        let dumb = if dev.renders() {
            drop(dev);
            None
        } else {
            crate::alloc::dumb::DumbAllocator::new(dev).ok()
        };
        if let Some(dumb) = dumb {
            let made = on_device(&|| dumb.create(config.width, config.height, config.format).ok());
            if let Some(out) = made {
                return Ok((out, path(), None));
            }
        }
        #[cfg(feature = "gbm")]
        if let Ok(gbm) = crate::alloc::gbm::GbmAllocator::shared(Some(&driver)) {
            let made = on_device(&|| {
                gbm.allocate(
                    config.width,
                    config.height,
                    config.format,
                    &[Modifier::LINEAR],
                    crate::alloc::gbm::Usage::RENDERING,
                )
                .ok()
            });
            if let Some(out) = made {
                return Ok((out, path(), Some(gbm)));
            }
        }
    }
    Ok((
        export_images(device, config, modifiers, usage)?,
        BufferPath::VulkanExport,
        None,
    ))
}

/// `config.image_count` images Vulkan allocates and exports.
fn export_images(
    device: &Device,
    config: &SwapchainConfig,
    modifiers: &[Modifier],
    usage: vk::ImageUsageFlags,
) -> Result<Vec<(Image, Dmabuf)>> {
    (0..config.image_count)
        .map(|_| {
            device
                .export_image_as(
                    config.width,
                    config.height,
                    config.format,
                    modifiers,
                    usage,
                    config.encoding,
                )
                .map_err(vk_err)
        })
        .collect()
}

/// A swapchain's images, how they reach the compositor, and the GBM
/// device they came from.
type Images<T> = (Vec<T>, BufferPath, SharedAllocator);

/// One image and what the swapchain made it from.
type Allocated = (Image, Dmabuf, Option<OwnedFd>);

fn with_no_memfd((images, path, allocator): Images<(Image, Dmabuf)>) -> Images<Allocated> {
    let images = images.into_iter().map(|(i, d)| (i, d, None)).collect();
    (images, path, allocator)
}

/// The wl_shm path's images: over memfds through udmabuf, the same memfds
/// the wl_shm pools are made of ([`BufferPath::ShmZeroCopy`]), where
/// `/dev/udmabuf` and the driver's import allow; else exported by Vulkan
/// and copied each frame ([`BufferPath::ShmCopy`]).
fn allocate_shm(
    device: &Device,
    config: &SwapchainConfig,
    usage: vk::ImageUsageFlags,
) -> Result<Images<Allocated>> {
    let shared = || -> Option<Vec<Allocated>> {
        let udmabuf = crate::alloc::udmabuf::Udmabuf::open().ok()?;
        (0..config.image_count)
            .map(|_| {
                let (dmabuf, memfd) = udmabuf
                    .allocate_with_memfd(config.width, config.height, config.format)
                    .ok()?;
                let image = device
                    .import_dmabuf_as(&dmabuf, usage, config.encoding)
                    .ok()?;
                Some((image, dmabuf, Some(memfd)))
            })
            .collect()
    };
    if let Some(out) = shared() {
        return Ok((out, BufferPath::ShmZeroCopy, None));
    }
    let out = export_images(device, config, &[Modifier::LINEAR], usage)?;
    Ok(with_no_memfd((out, BufferPath::ShmCopy, None)))
}

fn vk_err(e: crate::vulkan::Error) -> Error {
    Error::Vulkan(Box::new(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_and_immediate_over_explicit_sync_get_six_images_at_least() {
        for mode in [PresentMode::Mailbox, PresentMode::Immediate] {
            assert_eq!(image_count(4, mode, SyncMode::ExplicitSync), 6);
            assert_eq!(image_count(2, mode, SyncMode::ExplicitSync), 6);
            assert_eq!(image_count(7, mode, SyncMode::ExplicitSync), 7);
            for other in [SyncMode::DrmSyncobj, SyncMode::Implicit, SyncMode::Shm] {
                assert_eq!(image_count(4, mode, other), 4, "{mode:?} {other:?}");
            }
        }
        for sync in SyncMode::ALL {
            assert_eq!(image_count(4, PresentMode::Fifo, sync), 4, "{sync:?}");
        }
    }
}
