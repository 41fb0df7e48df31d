//! A reference headless Wayland compositor built on `winsys::server`.
//!
//! It is the proof of the compositor-side blocks and the example a
//! compositor author reads: every client buffer goes through
//! [`Params`](winsys::server::params::Params) and a Vulkan import, every
//! commit through an [`AcquireGate`] polled in the event loop (a client's
//! late fence holds only its own commit), every composited buffer through
//! a [`ReleaseTracker`] fed with the composition's fence.
//!
//! Globals: wl_compositor, wl_shm, xdg_wm_base, zwp_linux_dmabuf_v1 (v5,
//! feedback from what the Vulkan device imports), wp_linux_drm_syncobj_manager_v1
//! (where a DRM node has timelines and the syncobj eventfd),
//! zwp_linux_explicit_synchronization_v1, wp_presentation.
//!
//! The output is a headless `WxH` frame at a fixed refresh; toplevels sit
//! side by side. Composition: the CPU lays down the background and wl_shm
//! content, one Vulkan submission copies every dma-buf surface in (waiting
//! for the acquire fences as semaphores); `--png PATH` writes the output
//! after frames (at most 4 times a second).
//!
//! ```text
//! compositor [--socket NAME] [--size WxH] [--refresh HZ] [--png PATH] [--validation]
//!            [--exit-after SECS] [--feedback-change-after FRAMES] [--bad-release-fence]
//!            [--stall-on-syncobj-surface PATH] [--stall-on-default-feedback PATH]
//!            [--run PROGRAM ARGS...]
//! ```
//!
//! `--run` starts a client on the compositor's socket once it listens and
//! exits with the client's status when it is done (a program next to this
//! one, like `cube`, is found there first); `--exit-after` stops it after
//! that long. Without either it runs until killed.
//! `--feedback-change-after FRAMES` sends every surface new dma-buf
//! feedback after that many frames (a scanout tranche comes first), as a
//! compositor does when a surface can go to a display plane: clients should
//! find their swapchains suboptimal.
//! `--bad-release-fence` plays a broken compositor: each explicit-sync
//! release carries an eventfd where a sync_file belongs, so that clients'
//! tests can check they refuse it (and never reuse the buffer on its word).
//!
//! Every second it prints a stats line: frames, commits applied and held,
//! releases delivered, protocol errors sent, and the event loop's longest
//! stall (the longest time between two polls).

mod gpu;
mod protocols;

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::time::{ClockId, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags};
use wayland_protocols::wp::linux_dmabuf::zv1::server::zwp_linux_dmabuf_v1::ZwpLinuxDmabufV1;
use wayland_protocols::wp::linux_drm_syncobj::v1::server::wp_linux_drm_syncobj_manager_v1::WpLinuxDrmSyncobjManagerV1;
use wayland_protocols::wp::linux_drm_syncobj::v1::server::wp_linux_drm_syncobj_surface_v1::WpLinuxDrmSyncobjSurfaceV1;
use wayland_protocols::wp::linux_explicit_synchronization::zv1::server::zwp_linux_buffer_release_v1::ZwpLinuxBufferReleaseV1;
use wayland_protocols::wp::linux_explicit_synchronization::zv1::server::zwp_linux_explicit_synchronization_v1::ZwpLinuxExplicitSynchronizationV1;
use wayland_protocols::wp::linux_explicit_synchronization::zv1::server::zwp_linux_surface_synchronization_v1::ZwpLinuxSurfaceSynchronizationV1;
use wayland_protocols::wp::presentation_time::server::wp_presentation::WpPresentation;
use wayland_protocols::wp::presentation_time::server::wp_presentation_feedback::{
    Kind, WpPresentationFeedback,
};
use wayland_protocols::xdg::shell::server::xdg_surface::XdgSurface;
use wayland_protocols::xdg::shell::server::xdg_toplevel::XdgToplevel;
use wayland_protocols::xdg::shell::server::xdg_wm_base::XdgWmBase;
use wayland_server::backend::{ClientData, ClientId, DisconnectReason, ObjectId};
use wayland_server::protocol::wl_buffer::WlBuffer;
use wayland_server::protocol::wl_callback::WlCallback;
use wayland_server::protocol::wl_compositor::WlCompositor;
use wayland_server::protocol::wl_shm::WlShm;
use wayland_server::{Display, DisplayHandle, ListeningSocket, Resource};
use winsys::device::{DrmDevice, NodeKind};
use winsys::format::{Fourcc, Modifier};
use winsys::server::acquire::{Acquire, AcquireGate, ReadyWhen};
use winsys::server::feedback::{DmabufFeedback, FeedbackBuilder, TrancheFlags};
use winsys::server::params::{Create, Params, ParamsError};
use winsys::server::release::{Release, ReleaseTo, ReleaseTracker};
use winsys::sync::{SyncFile, Syncobj};
use winsys::vulkan::{Device, Instance, Pending};

use gpu::{DmaBuffer, Layer, Output};

type Error = Box<dyn std::error::Error>;

struct Args {
    socket: String,
    width: u32,
    height: u32,
    refresh: u32,
    png: Option<PathBuf>,
    validation: bool,
    exit_after: Option<Duration>,
    feedback_change_after: Option<u64>,
    bad_release_fence: bool,
    stall: Option<(StallPoint, PathBuf)>,
    run: Vec<String>,
}

const USAGE: &str = "usage: compositor [--socket NAME] [--size WxH] [--refresh HZ] [--png PATH] [--validation] [--exit-after SECS] [--feedback-change-after FRAMES] [--bad-release-fence] [--stall-on-syncobj-surface PATH] [--stall-on-default-feedback PATH] [--run PROGRAM ARGS...]";

fn parse_args() -> Result<Args, Error> {
    let mut args = Args {
        socket: "winsys-compositor".into(),
        width: 256,
        height: 256,
        refresh: 60,
        png: None,
        validation: false,
        exit_after: None,
        feedback_change_after: None,
        bad_release_fence: false,
        stall: None,
        run: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value\n{USAGE}"));
        match a.as_str() {
            "--socket" => args.socket = value()?,
            "--size" => {
                let v = value()?;
                let (w, h) = v.split_once('x').ok_or(format!("--size {v}: not WxH"))?;
                (args.width, args.height) = (w.parse()?, h.parse()?);
                if args.width == 0 || args.height == 0 {
                    return Err("--size must not be empty".into());
                }
            }
            "--refresh" => args.refresh = value()?.parse::<u32>()?.max(1),
            "--png" => args.png = Some(value()?.into()),
            "--validation" => args.validation = true,
            "--exit-after" => args.exit_after = Some(Duration::from_secs_f64(value()?.parse()?)),
            "--feedback-change-after" => args.feedback_change_after = Some(value()?.parse()?),
            // A broken compositor, for clients' tests: every explicit-sync
            // release is "fenced" with an eventfd, which is no sync_file.
            "--bad-release-fence" => args.bad_release_fence = true,
            // A compositor that stops answering at a chosen point, for
            // clients' tests: the first drm-syncobj surface object made,
            // or the first linux-dmabuf default feedback asked for by a
            // client with a surface, stalls the whole event loop until
            // PATH exists.
            "--stall-on-syncobj-surface" => {
                args.stall = Some((StallPoint::SyncobjSurface, value()?.into()))
            }
            "--stall-on-default-feedback" => {
                args.stall = Some((StallPoint::DefaultFeedback, value()?.into()))
            }
            "--run" => {
                args.run = it.by_ref().collect();
                if args.run.is_empty() {
                    return Err(format!("--run needs a program\n{USAGE}").into());
                }
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    Ok(args)
}

/// A wl_shm pool: the client's fd, read with pread (never mapped, so a
/// client that shrinks the file cannot SIGBUS us).
pub struct ShmPool {
    pub fd: OwnedFd,
    pub size: Mutex<i32>,
}

/// A wl_shm buffer's place in its pool.
pub struct ShmBuffer {
    pub pool: Arc<ShmPool>,
    pub offset: u64,
    pub width: u32,
    pub height: u32,
    pub stride: u32,
}

/// A wl_buffer's user data.
pub enum Buffer {
    Shm(ShmBuffer),
    Dmabuf(Arc<DmaBuffer>),
    /// A create_immed that failed (the client got a protocol error).
    Invalid,
}

/// Double-buffered surface state, applied on commit.
#[derive(Default)]
pub struct PendingState {
    pub attach: Option<Option<WlBuffer>>,
    pub frames: Vec<WlCallback>,
    pub feedbacks: Vec<WpPresentationFeedback>,
    pub acquire_point: Option<(ObjectId, Arc<Syncobj>, u64)>,
    pub release_point: Option<(ObjectId, Arc<Syncobj>, u64)>,
    pub acquire_fence: Option<SyncFile>,
    pub buffer_release: Option<ZwpLinuxBufferReleaseV1>,
}

/// A commit's pending state after the protocol checks.
pub struct NewContent {
    pub pending: PendingState,
}

/// What a held commit does to the surface's buffer.
enum HeldBuffer {
    Keep,
    Remove,
    Shm(WlBuffer),
    Dmabuf {
        dma: Arc<DmaBuffer>,
        gate: Option<AcquireGate>,
        tracker: ReleaseTracker,
    },
}

/// A commit waiting for its acquire gate (commits apply in order).
pub struct Held {
    buffer: HeldBuffer,
    frames: Vec<WlCallback>,
    feedbacks: Vec<WpPresentationFeedback>,
}

/// What a surface shows.
enum Content {
    Pixels {
        width: u32,
        height: u32,
        pixels: Vec<u8>,
    },
    Dmabuf {
        dma: Arc<DmaBuffer>,
        acquire: Option<SyncFile>,
        tracker: ReleaseTracker,
    },
}

/// A wl_surface and its state.
#[derive(Default)]
pub struct Surf {
    pub pending: PendingState,
    queue: VecDeque<Held>,
    current: Option<Content>,
    frames: Vec<WlCallback>,
    feedbacks: Vec<WpPresentationFeedback>,
    pub xdg: Option<(XdgSurface, XdgToplevel)>,
    configured: bool,
    pub syncobj: Option<WpLinuxDrmSyncobjSurfaceV1>,
    pub explicit: Option<ZwpLinuxSurfaceSynchronizationV1>,
}

/// A frame the GPU is working on.
struct Frame {
    pending: Option<Pending>,
    frames: Vec<WlCallback>,
    feedbacks: Vec<WpPresentationFeedback>,
    /// Surfaces it shows.
    shown: usize,
}

#[derive(Default)]
struct Stats {
    frames: u64,
    applied: u64,
    held_now: usize,
    releases: u64,
    protocol_errors: u64,
    longest_stall: Duration,
    /// The longest of each part of a loop turn.
    longest_dispatch: Duration,
    longest_tick: Duration,
}

/// Everything the compositor knows.
pub struct State {
    pub surfaces: HashMap<ObjectId, Surf>,
    pub toplevels: Vec<ObjectId>,
    pub feedback: DmabufFeedback,
    /// Every surface feedback object, for a feedback change.
    pub surface_feedbacks: Vec<wayland_protocols::wp::linux_dmabuf::zv1::server::zwp_linux_dmabuf_feedback_v1::ZwpLinuxDmabufFeedbackV1>,
    /// The feedback to switch to after `change_after` frames.
    next_feedback: Option<(u64, DmabufFeedback)>,
    pub syncobj_device: Option<Arc<DrmDevice>>,
    device: Device,
    output: Output,
    in_flight: Option<Frame>,
    dirty: bool,
    serial: u32,
    /// Implicit releases to send once a fence signals (kernels without
    /// the dma-buf import ioctl).
    late_releases: Arc<Mutex<Vec<(SyncFile, WlBuffer)>>>,
    stats: Stats,
    png: Option<PathBuf>,
    last_png: Option<Instant>,
    png_writer: Option<std::thread::JoinHandle<()>>,
    last_shown: Option<Vec<u8>>,
    refresh: Duration,
    /// `--bad-release-fence`.
    bad_release_fence: bool,
    /// `--stall-on-*` (taken by the first stall).
    pub stall: Option<(StallPoint, PathBuf)>,
}

/// Where `--stall-on-*` stops the event loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StallPoint {
    /// At the first `wp_linux_drm_syncobj_manager_v1.get_surface`.
    SyncobjSurface,
    /// At the first `zwp_linux_dmabuf_v1.get_default_feedback` of a client
    /// that has a `wl_surface` (a WSI asking what it may present in; a
    /// probe of the compositor's globals is let through).
    DefaultFeedback,
}

impl State {
    /// The event loop stops here until the `--stall-on-*` path exists (at
    /// most two minutes), as a compositor that hangs would, where `point`
    /// is the one asked for and no stall came yet.
    pub fn stall_at(&mut self, point: StallPoint) {
        let Some((_, path)) = self.stall.take_if(|(p, _)| *p == point) else {
            return;
        };
        eprintln!("compositor: stalled until {} exists", path.display());
        let t = Instant::now();
        while !path.exists() && t.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("compositor: stall over after {:?}", t.elapsed());
    }
}

impl State {
    /// Post a protocol error on `resource` (the client is disconnected)
    /// and count it.
    pub fn post_error(
        &mut self,
        resource: &impl Resource,
        code: impl Into<u32>,
        msg: impl Into<String>,
    ) {
        self.stats.protocol_errors += 1;
        resource.post_error(code, msg);
    }

    /// Validate `params` and import the buffer into Vulkan.
    pub fn import(
        &mut self,
        params: &mut Params<OwnedFd>,
        create: Create,
    ) -> Result<DmaBuffer, ParamsError> {
        let feedback = &self.feedback;
        let mut valid = params.create(create, |f, m| feedback.advertises(f, m))?;
        if valid.modifier == Modifier::INVALID {
            // Advertised only for vgem's dumb buffers, which are LINEAR.
            valid.modifier = Modifier::LINEAR;
        }
        let failed = |what: String| ParamsError::NotDmabuf { plane: 0, what };
        let dmabuf = valid.into_dmabuf().map_err(|e| failed(e.to_string()))?;
        let image = match self
            .device
            .import_dmabuf(&dmabuf, ash::vk::ImageUsageFlags::TRANSFER_SRC)
        {
            Ok(image) => Some(Mutex::new(image)),
            // The CPU path: the buffer is read through a mapping.
            Err(vk) => match dmabuf.map(winsys::dmabuf::Access::Read) {
                Ok(_) => {
                    println!("compositor: Vulkan refused a buffer ({vk}); reading it on the CPU");
                    None
                }
                Err(cpu) => {
                    return Err(failed(format!(
                        "Vulkan refused the import ({vk}) and the CPU cannot map it ({cpu})"
                    )))
                }
            },
        };
        Ok(DmaBuffer { dmabuf, image })
    }

    /// `wl_surface.commit`.
    pub fn commit(&mut self, id: &ObjectId) {
        let Some(content) = protocols::checked_commit(self, id) else {
            return;
        };
        let late = self.late_releases.clone();
        let Some(surf) = self.surfaces.get_mut(id) else {
            return;
        };
        let mut p = content.pending;
        if let (Some((xdg, toplevel)), false) = (&surf.xdg, surf.configured) {
            let n = self.toplevels.len().max(1) as u32;
            self.serial += 1;
            toplevel.configure(
                (self.output.width / n) as i32,
                self.output.height as i32,
                Vec::new(),
            );
            xdg.configure(self.serial);
            surf.configured = true;
        }
        let buffer = match p.attach.take() {
            None => HeldBuffer::Keep,
            Some(None) => HeldBuffer::Remove,
            Some(Some(buffer)) => match buffer.data::<Buffer>() {
                Some(Buffer::Shm(_)) => HeldBuffer::Shm(buffer.clone()),
                Some(Buffer::Dmabuf(dma)) => {
                    let acquire = match (&p.acquire_point, p.acquire_fence.take()) {
                        (Some((_, timeline, point)), _) => Acquire::Timeline {
                            timeline: timeline.clone(),
                            point: *point,
                        },
                        (None, Some(fence)) => Acquire::Fence(fence),
                        (None, None) => Acquire::Implicit,
                    };
                    // Hold the commit until the client's work is done: a
                    // fence that never signals then holds only this surface
                    // (with Materialized the GPU queue would wait on it).
                    let gate = match AcquireGate::new(&dma.dmabuf, acquire, ReadyWhen::Signaled) {
                        Ok(g) => Some(g),
                        Err(e) => {
                            println!("compositor: no acquire gate ({e}); applying at once");
                            None
                        }
                    };
                    let to = release_target(&p, &buffer, dma, late, self.bad_release_fence);
                    HeldBuffer::Dmabuf {
                        dma: dma.clone(),
                        gate,
                        tracker: ReleaseTracker::new(to),
                    }
                }
                _ => HeldBuffer::Keep,
            },
        };
        surf.queue.push_back(Held {
            buffer,
            frames: std::mem::take(&mut p.frames),
            feedbacks: std::mem::take(&mut p.feedbacks),
        });
        self.apply_ready();
    }

    /// Apply every commit whose gate is open, in order per surface.
    fn apply_ready(&mut self) {
        let mut held_now = 0;
        let mut applied = 0;
        let mut releases = 0;
        for surf in self.surfaces.values_mut() {
            while let Some(front) = surf.queue.front_mut() {
                let ready = match &mut front.buffer {
                    HeldBuffer::Dmabuf {
                        gate: Some(gate), ..
                    } => gate.is_ready().unwrap_or(true),
                    _ => true,
                };
                if !ready {
                    break;
                }
                let held = surf.queue.pop_front().expect("front");
                releases += apply(surf, held);
                applied += 1;
            }
            held_now += surf.queue.len();
        }
        self.stats.held_now = held_now;
        self.stats.applied += applied;
        self.stats.releases += releases;
        if applied > 0 {
            self.dirty = true;
        }
    }

    /// Send the implicit releases whose fences have signaled.
    fn send_late_releases(&mut self) {
        let mut late = self.late_releases.lock().unwrap();
        late.retain(|(fence, buffer)| {
            if fence.is_signaled().unwrap_or(true) {
                buffer.release();
                false
            } else {
                true
            }
        });
    }

    pub fn remove_surface(&mut self, id: &ObjectId) {
        self.toplevels.retain(|t| t != id);
        if let Some(mut surf) = self.surfaces.remove(id) {
            // Held commits and the shown buffer: each tracker delivers.
            self.stats.releases += surf
                .queue
                .drain(..)
                .filter(|h| matches!(h.buffer, HeldBuffer::Dmabuf { .. }))
                .count() as u64;
            if let Some(Content::Dmabuf { .. }) = surf.current.take() {
                self.stats.releases += 1;
            }
            self.dirty = true;
        }
    }

    /// One refresh: finish the frame in flight, then compose a new one if
    /// anything changed.
    fn tick(&mut self) {
        if let Some(frame) = &self.in_flight {
            let done = frame
                .pending
                .as_ref()
                .is_none_or(|p| p.is_done().unwrap_or(true));
            if !done {
                return;
            }
            let frame = self.in_flight.take().expect("frame");
            self.finish(frame);
        }
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let shown: Vec<ObjectId> = self
            .toplevels
            .iter()
            .filter(|id| self.surfaces.get(*id).is_some_and(|s| s.current.is_some()))
            .cloned()
            .collect();
        let cell = self.output.width / shown.len().max(1) as u32;
        let mut layers = Vec::new();
        let mut frame = Frame {
            pending: None,
            frames: Vec::new(),
            feedbacks: Vec::new(),
            shown: shown.len(),
        };
        for surf in self.surfaces.values_mut() {
            frame.frames.append(&mut surf.frames);
            frame.feedbacks.append(&mut surf.feedbacks);
        }
        // The acquire fences go to the GPU on a content's first frame
        // (signaled already: the gate held the commit until they were).
        let mut acquires: HashMap<ObjectId, SyncFile> = HashMap::new();
        for id in &shown {
            if let Some(Content::Dmabuf { acquire, .. }) =
                self.surfaces.get_mut(id).and_then(|s| s.current.as_mut())
            {
                if let Some(fence) = acquire.take() {
                    acquires.insert(id.clone(), fence);
                }
            }
        }
        // Buffers Vulkan could not import: read on the CPU now.
        let mut cpu: HashMap<ObjectId, Vec<u8>> = HashMap::new();
        for id in &shown {
            if let Some(Content::Dmabuf { dma, .. }) = &self.surfaces[id].current {
                if dma.image.is_none() {
                    if let Some(pixels) = dma.read_pixels() {
                        cpu.insert(id.clone(), pixels);
                    }
                }
            }
        }
        let mut users = Vec::new();
        for (i, id) in shown.iter().enumerate() {
            let surf = &self.surfaces[id];
            let x = i as u32 * cell;
            match &surf.current {
                Some(Content::Pixels {
                    width,
                    height,
                    pixels,
                }) => layers.push(Layer::Pixels {
                    x,
                    clip_width: cell,
                    width: *width,
                    height: *height,
                    pixels,
                }),
                Some(Content::Dmabuf { dma, .. }) if dma.image.is_none() => {
                    if let Some(pixels) = cpu.get(id) {
                        layers.push(Layer::Pixels {
                            x,
                            clip_width: cell,
                            width: dma.dmabuf.width(),
                            height: dma.dmabuf.height(),
                            pixels,
                        });
                    }
                }
                Some(Content::Dmabuf { dma, .. }) => {
                    users.push(id.clone());
                    layers.push(Layer::Dmabuf {
                        x,
                        clip_width: cell,
                        buffer: dma,
                        acquire: acquires.remove(id),
                    });
                }
                None => {}
            }
        }
        let pending = self.output.compose(layers);
        match pending {
            Ok(mut pending) => {
                let fence = pending.as_mut().and_then(|p| p.take_sync_file());
                if let Some(fence) = fence {
                    for id in &users {
                        if let Some(Content::Dmabuf { tracker, .. }) =
                            self.surfaces.get_mut(id).and_then(|s| s.current.as_mut())
                        {
                            if let Ok(f) = fence.try_clone() {
                                let _ = tracker.add_use(f);
                            }
                        }
                    }
                }
                frame.pending = pending;
            }
            Err(e) => println!("compositor: composition failed: {e}"),
        }
        self.in_flight = Some(frame);
    }

    fn finish(&mut self, frame: Frame) {
        self.stats.frames += 1;
        if self
            .next_feedback
            .as_ref()
            .is_some_and(|(after, _)| self.stats.frames >= *after)
        {
            let (_, next) = self.next_feedback.take().expect("checked");
            self.feedback = next;
            self.surface_feedbacks.retain(|f| f.is_alive());
            for fb in self.surface_feedbacks.clone() {
                protocols::send_feedback(self, &fb);
            }
            println!(
                "compositor: feedback changed (a scanout tranche) for {} surface(s)",
                self.surface_feedbacks.len()
            );
        }
        if self.png.is_some() && frame.shown > 0 {
            // What the PNG at exit shows: the last frame with a client in
            // it (clients leave before the compositor notices they exited).
            self.last_shown = Some(self.output.pixels().to_vec());
        }
        let now = rustix::time::clock_gettime(ClockId::Monotonic);
        let refresh = self.refresh.as_nanos() as u32;
        for fb in frame.feedbacks {
            fb.presented(
                (now.tv_sec as u64 >> 32) as u32,
                now.tv_sec as u32,
                now.tv_nsec as u32,
                refresh,
                (self.stats.frames >> 32) as u32,
                self.stats.frames as u32,
                Kind::empty(),
            );
        }
        let ms = (now.tv_sec as u64 * 1000 + now.tv_nsec as u64 / 1_000_000) as u32;
        for cb in frame.frames {
            cb.done(ms);
        }
        if let Some(path) = &self.png {
            let due = self
                .last_png
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(250));
            if due {
                self.last_png = Some(Instant::now());
                let (w, h) = (self.output.width, self.output.height);
                self.png_writer = Some(write_png(path, w, h, self.output.pixels()));
            }
        }
    }
}

/// Apply `held` to `surf`; the number of releases delivered.
fn apply(surf: &mut Surf, held: Held) -> u64 {
    let mut releases = 0;
    let mut replace = |surf: &mut Surf, new: Option<Content>| {
        if let Some(Content::Dmabuf { .. }) = std::mem::replace(&mut surf.current, new) {
            releases += 1; // its tracker delivers as it drops
        }
    };
    match held.buffer {
        HeldBuffer::Keep => {}
        HeldBuffer::Remove => replace(surf, None),
        HeldBuffer::Shm(buffer) => {
            let content = match buffer.data::<Buffer>() {
                Some(Buffer::Shm(shm)) => read_shm(shm),
                _ => None,
            };
            if let Some(c) = content {
                replace(surf, Some(c));
            }
            // Copied: the client may reuse it at once.
            buffer.release();
        }
        HeldBuffer::Dmabuf { dma, gate, tracker } => {
            let acquire = gate.and_then(|g| g.into_sync_file().ok().flatten());
            replace(
                surf,
                Some(Content::Dmabuf {
                    dma,
                    acquire,
                    tracker,
                }),
            );
        }
    }
    // Feedback of content replaced before it was shown: discarded.
    for fb in surf.feedbacks.drain(..) {
        fb.discarded();
    }
    surf.feedbacks = held.feedbacks;
    surf.frames.extend(held.frames);
    releases
}

/// Where a dma-buf commit's release goes.
fn release_target(
    p: &PendingState,
    buffer: &WlBuffer,
    dma: &Arc<DmaBuffer>,
    late: Arc<Mutex<Vec<(SyncFile, WlBuffer)>>>,
    bad_fence: bool,
) -> ReleaseTo {
    if let Some((_, timeline, point)) = &p.release_point {
        return ReleaseTo::Timeline {
            timeline: timeline.clone(),
            point: *point,
        };
    }
    let buffer = buffer.clone();
    if let Some(release) = p.buffer_release.clone() {
        return ReleaseTo::Fence(Box::new(move |r| {
            let eventfd = bad_fence
                .then(|| rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).ok())
                .flatten();
            match (r, eventfd) {
                (_, Some(not_a_fence)) => release.fenced_release(not_a_fence.as_fd()),
                (Release::Now, None) => release.immediate_release(),
                (Release::AfterFence(fence), None) => release.fenced_release(fence.as_fd()),
            }
            buffer.release();
        }));
    }
    ReleaseTo::Implicit {
        dmabuf: dma.dmabuf.clone(),
        then: Box::new(move |r| match r {
            Release::Now => buffer.release(),
            Release::AfterFence(fence) => late.lock().unwrap().push((fence, buffer)),
        }),
    }
}

/// A wl_shm buffer's pixels, packed (pread from the pool).
fn read_shm(shm: &ShmBuffer) -> Option<Content> {
    let (w, h, stride) = (shm.width as usize, shm.height as usize, shm.stride as usize);
    let mut rows = vec![0u8; stride * h];
    let n = rustix::io::pread(&shm.pool.fd, &mut rows, shm.offset).ok()?;
    if n < stride * (h - 1) + w * 4 {
        return None;
    }
    let mut pixels = Vec::with_capacity(w * h * 4);
    for row in 0..h {
        pixels.extend_from_slice(&rows[row * stride..][..w * 4]);
    }
    Some(Content::Pixels {
        width: shm.width,
        height: shm.height,
        pixels,
    })
}

/// Write the output as a PNG on a thread of its own (encoding is slow under
/// TCG and must not stall the event loop); written to a temporary file and
/// renamed, so readers never see half a file.
fn write_png(
    path: &std::path::Path,
    width: u32,
    height: u32,
    pixels: &[u8],
) -> std::thread::JoinHandle<()> {
    let path = path.to_path_buf();
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let rgb = gpu::to_rgb(pixels);
    std::thread::spawn(move || {
        let write = || -> Result<(), Error> {
            let tmp = path.with_extension(format!("png.{n}.tmp"));
            let file = std::fs::File::create(&tmp)?;
            let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width, height);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            enc.set_compression(png::Compression::Fast);
            let mut writer = enc.write_header()?;
            writer.write_image_data(&rgb)?;
            writer.finish()?;
            std::fs::rename(tmp, &path)?;
            Ok(())
        };
        if let Err(e) = write() {
            println!("compositor: cannot write {}: {e}", path.display());
        }
    })
}

struct ClientState;

impl ClientData for ClientState {
    fn initialized(&self, id: ClientId) {
        println!("compositor: client {id:?} connected");
    }
    fn disconnected(&self, id: ClientId, reason: DisconnectReason) {
        println!("compositor: client {id:?} gone ({reason:?})");
    }
}

/// The DRM node for drm-syncobj: a render node with timelines and the
/// syncobj eventfd (virtio_gpu on the test bed), if any.
fn syncobj_device() -> Option<Arc<DrmDevice>> {
    DrmDevice::list()
        .into_iter()
        .filter(|n| n.kind == NodeKind::Render)
        .filter_map(|n| DrmDevice::open(&n.path).ok())
        .find(|d| d.has_syncobj_timeline() && winsys::sync::probe::syncobj_eventfd(d))
        .map(Arc::new)
}

/// The feedback's main device: the render node clients should allocate on
/// (vgem's: every exporter here, Vulkan imports it), else any render node;
/// its `dev_t` and driver.
fn main_device() -> Result<(u64, String), Error> {
    let nodes = DrmDevice::list();
    let render = |driver: Option<&str>| {
        nodes
            .iter()
            .find(|n| n.kind == NodeKind::Render && driver.is_none_or(|d| n.driver == d))
    };
    let node = render(Some("vgem"))
        .or_else(|| render(None))
        .ok_or("no DRM render node: the compositor needs one for linux-dmabuf")?;
    Ok((DrmDevice::open(&node.path)?.dev_t(), node.driver.clone()))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("compositor: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Error> {
    let args = parse_args()?;
    let instance = if args.validation {
        Instance::with_validation()?
    } else {
        Instance::new()?
    };
    let device = Device::open(&instance)?;
    let pairs = gpu::importable(&device);
    if pairs.is_empty() {
        return Err(format!(
            "{} imports no XRGB8888/ARGB8888 dma-buf for copying",
            device.info().name
        )
        .into());
    }
    let (main_device, main_driver) = main_device()?;
    let mut builder = FeedbackBuilder::new(main_device);
    let mut offered = pairs.clone();
    if main_driver == "vgem" && pairs.iter().any(|(_, m)| *m == Modifier::LINEAR) {
        // Clients that allocate without modifiers (EGL on vgem) get the
        // implicit layout, which on vgem (dumb buffers) is LINEAR.
        let formats: Vec<Fourcc> = pairs
            .iter()
            .filter(|(_, m)| *m == Modifier::LINEAR)
            .map(|(f, _)| *f)
            .collect();
        offered.extend(formats.into_iter().map(|f| (f, Modifier::INVALID)));
    }
    let mut scanout = builder.clone();
    builder.tranche(main_device, TrancheFlags::empty(), offered.iter().copied());
    let feedback = builder.build()?;
    // The changed feedback: a scanout tranche of LINEAR XRGB8888 first.
    scanout.tranche(
        main_device,
        TrancheFlags::SCANOUT,
        [(Fourcc::XRGB8888, Modifier::LINEAR)],
    );
    scanout.tranche(main_device, TrancheFlags::empty(), offered.iter().copied());
    let next_feedback = args
        .feedback_change_after
        .map(|n| (n, scanout.build()))
        .map(|(n, f)| f.map(|f| (n, f)))
        .transpose()?;
    let syncobj_device = syncobj_device();
    let output = Output::new(&device, args.width, args.height)?;

    let mut display = Display::<State>::new()?;
    let dh: DisplayHandle = display.handle();
    dh.create_global::<State, WlCompositor, ()>(6, ());
    dh.create_global::<State, WlShm, ()>(1, ());
    dh.create_global::<State, XdgWmBase, ()>(5, ());
    dh.create_global::<State, ZwpLinuxDmabufV1, ()>(5, ());
    dh.create_global::<State, ZwpLinuxExplicitSynchronizationV1, ()>(2, ());
    dh.create_global::<State, WpPresentation, ()>(1, ());
    if syncobj_device.is_some() {
        dh.create_global::<State, WpLinuxDrmSyncobjManagerV1, ()>(1, ());
    }
    let socket = ListeningSocket::bind(&args.socket)?;
    let refresh = Duration::from_nanos(1_000_000_000 / args.refresh as u64);
    println!(
        "compositor: on {} ({}x{} @ {} Hz), renderer {}, dma-buf formats {:?}, main device {:#x}, drm-syncobj on {}",
        args.socket,
        args.width,
        args.height,
        args.refresh,
        device.info().name,
        offered,
        main_device,
        syncobj_device
            .as_ref()
            .map_or("nothing (no timeline node with eventfd)".to_string(), |d| d.path().display().to_string()),
    );
    let mut state = State {
        surfaces: HashMap::new(),
        toplevels: Vec::new(),
        feedback,
        surface_feedbacks: Vec::new(),
        next_feedback,
        syncobj_device,
        device,
        output,
        in_flight: None,
        dirty: false,
        serial: 0,
        late_releases: Arc::new(Mutex::new(Vec::new())),
        stats: Stats::default(),
        png: args.png.clone(),
        last_png: None,
        png_writer: None,
        last_shown: None,
        refresh,
        bad_release_fence: args.bad_release_fence,
        stall: args.stall.clone(),
    };

    let timer = rustix::time::timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK,
    )?;
    let period = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: refresh.as_nanos() as _,
    };
    rustix::time::timerfd_settime(
        &timer,
        TimerfdTimerFlags::empty(),
        &rustix::time::Itimerspec {
            it_interval: period,
            it_value: period,
        },
    )?;
    let started = Instant::now();
    let mut client = match args.run.split_first() {
        None => None,
        Some((program, rest)) => {
            let beside = std::env::current_exe()?.with_file_name(program);
            let path = if beside.exists() {
                beside
            } else {
                PathBuf::from(program)
            };
            println!("compositor: running {} {}", path.display(), rest.join(" "));
            Some(
                std::process::Command::new(&path)
                    .args(rest)
                    .env("WAYLAND_DISPLAY", &args.socket)
                    .spawn()
                    .map_err(|e| format!("cannot run {}: {e}", path.display()))?,
            )
        }
    };
    let mut last_stats = Instant::now();
    let mut last_line = String::new();
    let mut gate_fds_changed;
    // The clients' epoll fd, one for the display's life: duplicated once,
    // not on every turn (two system calls, and an fd that comes and goes).
    let poll_fd = display.backend().poll_fd().try_clone_to_owned()?;
    loop {
        // Poll: the socket, the clients, the refresh timer, and every held
        // commit's gate (so a signaled fence wakes us before the next tick).
        let (accept, clients, tick) = {
            let gates: Vec<_> = state
                .surfaces
                .values()
                .filter_map(|s| match s.queue.front() {
                    Some(Held {
                        buffer: HeldBuffer::Dmabuf { gate: Some(g), .. },
                        ..
                    }) => Some(g.fd()),
                    _ => None,
                })
                .collect();
            let mut fds = vec![
                PollFd::new(&socket, PollFlags::IN),
                PollFd::new(&poll_fd, PollFlags::IN),
                PollFd::new(&timer, PollFlags::IN),
            ];
            fds.extend(gates.iter().map(|g| PollFd::new(g, PollFlags::IN)));
            match rustix::event::poll(&mut fds, None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
            gate_fds_changed = fds[3..].iter().any(|f| !f.revents().is_empty());
            (
                !fds[0].revents().is_empty(),
                !fds[1].revents().is_empty(),
                !fds[2].revents().is_empty(),
            )
        };
        let woke = Instant::now();
        if accept {
            while let Some(stream) = socket.accept()? {
                display
                    .handle()
                    .insert_client(stream, Arc::new(ClientState))?;
            }
        }
        if clients {
            let t = Instant::now();
            display.dispatch_clients(&mut state)?;
            state.stats.longest_dispatch = state.stats.longest_dispatch.max(t.elapsed());
        }
        if gate_fds_changed || clients {
            state.apply_ready();
        }
        state.send_late_releases();
        if tick {
            let mut n = [0u8; 8];
            let _ = rustix::io::read(&timer, &mut n);
            let t = Instant::now();
            state.apply_ready();
            state.tick();
            state.stats.longest_tick = state.stats.longest_tick.max(t.elapsed());
        }
        display.flush_clients()?;
        let stall = woke.elapsed();
        state.stats.longest_stall = state.stats.longest_stall.max(stall);
        let client_done = match client.as_mut() {
            Some(c) => c.try_wait()?,
            None => None,
        };
        let time_up = args.exit_after.is_some_and(|t| started.elapsed() >= t);
        if client_done.is_some() || time_up {
            if let Some(w) = state.png_writer.take() {
                let _ = w.join();
            }
            if let (Some(path), Some(_)) = (&state.png, state.last_png) {
                let pixels = state
                    .last_shown
                    .take()
                    .unwrap_or_else(|| state.output.pixels().to_vec());
                let _ = write_png(path, state.output.width, state.output.height, &pixels).join();
                println!("compositor: output written to {}", path.display());
            }
            let s = &state.stats;
            println!(
                "compositor: done after {:.1?}: frames={} applied={} releases={} protocol_errors={} longest_stall_ms={:.1}",
                started.elapsed(),
                s.frames,
                s.applied,
                s.releases,
                s.protocol_errors,
                s.longest_stall.as_secs_f64() * 1000.0
            );
            return match client_done {
                Some(status) if !status.success() => {
                    Err(format!("the client failed: {status}").into())
                }
                _ => Ok(()),
            };
        }
        if last_stats.elapsed() >= Duration::from_secs(1) {
            last_stats = Instant::now();
            let s = &state.stats;
            let line = format!(
                "compositor: stats frames={} applied={} held={} releases={} protocol_errors={} longest_stall_ms={:.1} (dispatch {:.1}, frame {:.1}) surfaces={}",
                s.frames,
                s.applied,
                s.held_now,
                s.releases,
                s.protocol_errors,
                s.longest_stall.as_secs_f64() * 1000.0,
                s.longest_dispatch.as_secs_f64() * 1000.0,
                s.longest_tick.as_secs_f64() * 1000.0,
                state.surfaces.len(),
            );
            if line != last_line {
                println!("{line}");
                last_line = line;
            }
        }
    }
}
