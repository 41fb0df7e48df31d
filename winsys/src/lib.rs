//! # winsys: buffers and fences across devices and processes
//!
//! winsys is a userspace window-system layer for Linux graphics, in the
//! tradition of Mesa's Vulkan WSI: it moves images between the CPU, GPUs and
//! compositors as **dma-bufs**, and orders every hand-off with **fences**.
//!
//! ## The three hand-offs
//!
//! **CPU.** A [`Dmabuf`](dmabuf::Dmabuf) is mapped through its dma-buf fd,
//! never assumed coherent: every access is a guard that brackets the bytes
//! with `DMA_BUF_IOCTL_SYNC` START/END and the right READ/WRITE flags
//! ([`dmabuf::map`]). Starting a read waits for pending writers.
//!
//! **GPU / other processes.** Fences cross over as explicit
//! [`SyncFile`](sync::SyncFile)s and DRM [`Syncobj`](sync::Syncobj)
//! timelines. [`dmabuf::fences`] bridges them with the implicit fences in a
//! dma-buf's reservation object (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE` /
//! `IMPORT_SYNC_FILE`), with one uniform fallback on kernels without them.
//!
//! **Compositor.** (Feature `wayland`) a compositor's globals and
//! linux-dmabuf feedback, and the sync mode a client uses with it
//! (drm-syncobj, explicit sync, implicit, wl_shm); presentation builds on
//! them.
//!
//! ## Layout
//!
//! | module | what |
//! |---|---|
//! | [`uapi`] | every kernel interface, defined once (structs, opcodes) |
//! | [`dmabuf`] | `Dmabuf`, validation, CPU map guards, the implicit/explicit bridge |
//! | [`sync`] | `SyncFile`, `Syncobj`, the capability probe |
//! | [`alloc`] | exporters: udmabuf, the system dma-heap, vgem |
//! | [`device`] | DRM nodes found by driver name |
//! | [`format`](mod@format) | fourcc codes, modifiers and plane layouts |
//! | `vulkan` | (feature `vulkan`) images over dma-bufs, semaphores <-> sync_files |
//! | `wayland` | (feature `wayland`) what a compositor offers: globals, dma-buf feedback, the sync mode |
//! | `server` | (feature `server`) a compositor's blocks: params checks, acquire gate, release tracker, feedback table |
//!
//! ## Example: a reader waits for a writer's fence
//!
//! ```no_run
//! use std::time::Duration;
//! use winsys::alloc::vgem::Vgem;
//! use winsys::dmabuf::Access;
//! use winsys::format::Fourcc;
//!
//! let vgem = Vgem::open()?;
//! let buf = vgem.create(256, 256, Fourcc::XRGB8888)?;
//! let gpu_write = buf.attach_fence(Access::Write)?;      // pretend a GPU is writing
//! let map = buf.dmabuf().map(Access::Read)?;
//! // A bounded wait gives a typed timeout instead of blocking:
//! assert!(map.read(Some(Duration::from_millis(10))).is_err());
//! gpu_write.signal()?;
//! let pixels = map.read(None)?;                 // SYNC START(READ) succeeds now
//! let mut first = [0u8; 4];
//! pixels.read_bytes(0, 0, &mut first)?;         // copy out of shared memory
//! println!("first pixel: {first:?}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod alloc;
pub mod device;
pub mod dmabuf;
mod fd;
pub mod format;
#[cfg(feature = "server")]
pub mod server;
pub mod sync;
pub mod uapi;
#[cfg(feature = "vulkan")]
pub mod vulkan;
#[cfg(feature = "wayland")]
pub mod wayland;
