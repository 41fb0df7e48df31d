//! The Vulkan side (feature `vulkan`, crate [`ash`]): dma-bufs in and out of
//! Vulkan images, and Vulkan semaphores and fences in and out of sync_files.
//!
//! - [`device`]: an [`Instance`] (optionally with the Khronos validation
//!   layer, whose errors are collected) and a [`Device`] opened with every
//!   interop extension the driver has; [`Extensions`] says which are
//!   missing.
//! - [`format`](mod@format): DRM fourcc <-> `VkFormat`.
//! - [`image`]: [`Device::import_dmabuf`] (explicit per-plane layouts and
//!   modifier, refused with [`Error::Unsupported`] after asking the driver),
//!   [`Device::export_image`] (a Vulkan-allocated image as a
//!   [`Dmabuf`](crate::dmabuf::Dmabuf)), and queue-family ownership
//!   transfers to and from the FOREIGN family.
//! - [`bridge`]: semaphores/fences <-> [`SyncFile`](crate::sync::SyncFile),
//!   and [`Submission`], which orders GPU work against a dma-buf's implicit
//!   fences and timeline points, with a CPU-wait fallback where the driver
//!   or kernel lacks SYNC_FD or the dma-buf sync_file ioctls.
//!
//! # Example: the GPU writes a GBM buffer, the CPU reads it
//!
//! ```no_run
//! # #[cfg(feature = "gbm")] {
//! use ash::vk;
//! use winsys::alloc::gbm::{GbmAllocator, Usage};
//! use winsys::dmabuf::Access;
//! use winsys::format::{Fourcc, Modifier};
//! use winsys::vulkan::{Device, Instance};
//!
//! let gbm = GbmAllocator::find(Some("virtio_gpu"))?;
//! let dmabuf = gbm.allocate(256, 256, Fourcc::ABGR8888, &[Modifier::LINEAR], Usage::RENDERING)?;
//! let device = Device::open(&Instance::new()?)?;
//! let mut image = device.import_dmabuf(&dmabuf, vk::ImageUsageFlags::TRANSFER_DST)?;
//!
//! let mut job = device.submission()?;
//! job.wait_for_dmabuf(&dmabuf, Access::Write, vk::PipelineStageFlags::TRANSFER)?;
//! image.cmd_acquire(&mut job, vk::ImageLayout::TRANSFER_DST_OPTIMAL,
//!                   vk::PipelineStageFlags::TRANSFER, vk::AccessFlags::TRANSFER_WRITE)?;
//! // ... vkCmdClearColorImage, vkCmdCopyBufferToImage, ...
//! image.cmd_release(&mut job, vk::PipelineStageFlags::TRANSFER, vk::AccessFlags::TRANSFER_WRITE)?;
//! job.signal_dmabuf(&dmabuf, Access::Write);
//! let pending = job.submit()?;   // the GPU's completion is now a write fence on the dma-buf
//!
//! let map = dmabuf.map(Access::Read)?;
//! let pixels = map.read(None)?;  // waits for the GPU through the implicit fence
//! # drop(pixels); pending.wait(None)?;
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

pub use ash;
use ash::vk;

use crate::format::{Fourcc, Modifier};

pub mod bridge;
pub mod device;
pub mod format;
pub mod image;

pub use bridge::{Fence, Pending, Resource, Semaphore, Submission, DEFAULT_TIMEOUT};
pub use device::{Device, Extensions, Instance, PhysicalDeviceInfo, PoolStats, SetLoaderData};
pub use image::{Image, ImageView};

/// Errors of the Vulkan side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Vulkan loader (`libvulkan.so.1`) could not be loaded.
    #[error("cannot load the Vulkan loader: {0}")]
    Loader(String),
    /// A Vulkan call failed.
    #[error("{call} failed: {result}")]
    Vk {
        /// The Vulkan command.
        call: &'static str,
        /// What it returned.
        result: vk::Result,
    },
    /// Validation was asked for, but `VK_LAYER_KHRONOS_validation` (or
    /// `VK_EXT_debug_utils`) is not installed.
    #[error("the Khronos validation layer is not installed ({0} missing)")]
    NoValidationLayer(&'static str),
    /// No physical device (matching the caller's choice).
    #[error("no Vulkan device {0}")]
    NoDevice(String),
    /// The device lacks extensions (or the Vulkan version) an operation
    /// needs.
    #[error("{device} lacks {}", .missing.join(", "))]
    MissingExtensions {
        /// The device's name.
        device: String,
        /// The missing extension names (or `Vulkan 1.2`).
        missing: Vec<&'static str>,
    },
    /// The driver cannot create, import or export this image; asked of the
    /// driver before trying.
    #[error("{device} cannot {op} a {width}x{height} {format} image with modifier {modifier} for {usage:?}: {refusal}")]
    Unsupported {
        /// The device's name.
        device: String,
        /// `"import"` or `"export"`.
        op: &'static str,
        /// The DRM format.
        format: Fourcc,
        /// The modifier asked for (for an export: the first of the list).
        modifier: Modifier,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// The Vulkan usage asked for.
        usage: vk::ImageUsageFlags,
        /// Which check failed.
        refusal: Refusal,
    },
    /// The validation layer reported errors.
    #[error("the validation layer reported {} error(s); first: {}", .0.len(), .0.first().map(String::as_str).unwrap_or(""))]
    Validation(Vec<String>),
    /// The driver cannot give or take SYNC_FD sync_files this way (or
    /// `WINSYS_NO_VK_SYNC_FD=1` says to act so).
    #[error("the device cannot {0} a SYNC_FD sync_file")]
    NoSyncFd(&'static str),
    /// A view of a multi-planar YCbCr image needs a sampler YCbCr
    /// conversion, which winsys does not create.
    #[error("a view of {format} needs a sampler YCbCr conversion (not made by winsys)")]
    ViewNeedsConversion {
        /// The image's format.
        format: Fourcc,
    },
    /// A semaphore or fence created without SYNC_FD export was asked for
    /// a sync_file.
    #[error("this {0} was created without SYNC_FD export")]
    NotExportable(&'static str),
    /// An object of one device given to another device's submission.
    #[error("{0} belongs to another Vulkan device than the submission")]
    WrongDevice(&'static str),
    /// A wait did not finish within its timeout.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// The timeout.
        timeout: std::time::Duration,
    },
    /// An error of the dma-buf core (validation, fences, mapping).
    #[error(transparent)]
    Dmabuf(#[from] crate::dmabuf::Error),
    /// An error of the sync module (sync_files, syncobjs).
    #[error(transparent)]
    Sync(#[from] crate::sync::Error),
}

impl Error {
    pub(crate) fn vk(call: &'static str) -> impl FnOnce(vk::Result) -> Error {
        move |result| Error::Vk { call, result }
    }
}

/// Which of the driver's answers refused an image.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The DRM format has no Vulkan format here (or the driver has no
    /// modifiers for it).
    Format,
    /// The modifier is not among those the driver lists for the format
    /// (those it lists are given). The implicit modifier never is.
    Modifier {
        /// The modifiers the driver lists for the format.
        supported: Vec<Modifier>,
    },
    /// The buffer has a different number of memory planes than the driver
    /// expects for the format and modifier.
    PlaneCount {
        /// Planes the driver expects.
        expected: u32,
        /// Planes the buffer has.
        got: usize,
    },
    /// The format/modifier lacks features the usage needs.
    Usage {
        /// Features the usage needs but the driver lacks.
        missing: vk::FormatFeatureFlags,
    },
    /// The image is larger than the driver allows for this combination.
    Extent {
        /// The largest width the driver allows.
        max_width: u32,
        /// The largest height the driver allows.
        max_height: u32,
    },
    /// An sRGB image was asked for ([`Encoding::Srgb`](format::Encoding::Srgb))
    /// of a DRM format with no sRGB Vulkan twin (only 8-bit RGB ones have
    /// one).
    NoSrgb,
    /// The driver says the combination cannot be imported (or exported)
    /// as a dma-buf.
    External,
    /// Planes in separate dma-bufs need the DISJOINT format feature.
    Disjoint,
    /// The dma-buf has fewer bytes than the image needs.
    TooSmall {
        /// Bytes the image needs.
        needed: u64,
        /// Bytes the dma-buf has.
        have: u64,
    },
    /// No memory type fits both the image and the dma-buf.
    MemoryType,
    /// Empty usage flags: an image must be made for something.
    NoUsage,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Format => f.write_str("no Vulkan format or no modifiers for this format"),
            Refusal::NoSrgb => {
                f.write_str("an sRGB image was asked for; this format has no sRGB Vulkan format")
            }
            Refusal::Modifier { supported } => {
                f.write_str("modifier not supported; the driver lists [")?;
                for (i, m) in supported.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{m}")?;
                }
                f.write_str("]")
            }
            Refusal::PlaneCount { expected, got } => {
                write!(
                    f,
                    "the driver expects {expected} memory plane(s), the buffer has {got}"
                )
            }
            Refusal::Usage { missing } => write!(f, "format features {missing:?} missing"),
            Refusal::Extent {
                max_width,
                max_height,
            } => write!(f, "larger than the driver's {max_width}x{max_height}"),
            Refusal::External => {
                f.write_str("the driver cannot share this combination as a dma-buf")
            }
            Refusal::Disjoint => {
                f.write_str("planes in separate dma-bufs need the DISJOINT format feature")
            }
            Refusal::TooSmall { needed, have } => {
                write!(f, "the image needs {needed} bytes, the dma-buf has {have}")
            }
            Refusal::MemoryType => {
                f.write_str("no memory type fits both the image and the dma-buf")
            }
            Refusal::NoUsage => f.write_str("no usage flags given"),
        }
    }
}

/// Result of the Vulkan side.
pub type Result<T, E = Error> = std::result::Result<T, E>;
