//! Exporters: where dma-bufs come from when no GPU driver hands them out.
//!
//! Each allocator returns a validated [`Dmabuf`] in a LINEAR layout:
//!
//! | module | device | use |
//! |---|---|---|
//! | [`udmabuf`] | `/dev/udmabuf` | wraps a sealed memfd: CPU-made buffers shareable as dma-bufs (lavapipe's way to dma-bufs) |
//! | [`heap`] | `/dev/dma_heap/system` | plain system-memory dma-bufs |
//! | [`dumb`] | a KMS device's primary node | dumb buffers, all a device with no renderer (vgem, virtio-gpu without 3D) makes, without loading Mesa |
//! | [`vgem`] | the `vgem` DRM driver | dumb buffers plus userspace-controlled fences, the test utility peers' kernel suites use to fake a busy GPU |
//! | `gbm` (feature `gbm`) | a DRM node through Mesa's GBM | driver-allocated images with format modifiers, several planes |
//!
//! ```no_run
//! use winsys::alloc::{Allocator, heap::DmaHeap};
//! use winsys::format::Fourcc;
//! let heap = DmaHeap::open_system()?;
//! let buf = heap.allocate(640, 480, Fourcc::ARGB8888)?;
//! assert_eq!(buf.planes()[0].stride(), 640 * 4);
//! # Ok::<(), winsys::alloc::Error>(())
//! ```

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use rustix::io::Errno;

use crate::dmabuf::Dmabuf;
use crate::format::{Fourcc, Modifier};

pub mod dumb;
#[cfg(feature = "gbm")]
pub mod gbm;
pub mod heap;
pub mod udmabuf;
pub mod vgem;

/// Errors of the allocators.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The allocator's device node cannot be opened.
    #[error("cannot open {path}: {errno}")]
    Open {
        /// The node.
        path: PathBuf,
        /// open(2)'s errno (ENOENT: the kernel lacks the driver).
        errno: Errno,
    },
    /// A DRM device error.
    #[error(transparent)]
    Device(#[from] crate::device::Error),
    /// The result failed dma-buf validation.
    #[error(transparent)]
    Dmabuf(#[from] crate::dmabuf::Error),
    /// An offset or size that must be page aligned is not.
    #[error("{what} {value:#x} is not a multiple of the page size {page:#x}")]
    Unaligned {
        /// Which value.
        what: &'static str,
        /// The value.
        value: u64,
        /// The page size.
        page: u64,
    },
    /// A size of zero bytes.
    #[error("a buffer of 0 bytes was asked for")]
    ZeroSize,
    /// The memfd given to udmabuf is not usable.
    #[error("memfd unusable for udmabuf: {0}")]
    BadMemfd(String),
    /// More than the exporter allows at once.
    #[error("{size} bytes exceed the {what} limit of {limit} bytes")]
    TooLarge {
        /// Which limit.
        what: &'static str,
        /// Bytes asked for.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A format this allocator cannot lay out.
    #[error("format {format} unsupported here: {why}")]
    UnsupportedFormat {
        /// The format.
        format: Fourcc,
        /// Why.
        why: &'static str,
    },
    /// No device that can do the job was found.
    #[error("no {what} found (tried: {tried})")]
    NoDevice {
        /// What was looked for.
        what: &'static str,
        /// What was tried, and why each failed.
        tried: String,
    },
    /// The driver refused an allocation or import.
    #[error("{what} failed: {errno}")]
    Allocation {
        /// What was asked.
        what: String,
        /// The errno the driver left.
        errno: Errno,
    },
    /// An access reaching outside a buffer.
    #[error("{len} bytes at offset {offset} reach past the buffer's {size} bytes")]
    OutOfBounds {
        /// First byte.
        offset: u64,
        /// Bytes.
        len: u64,
        /// The buffer's size.
        size: u64,
    },
    /// A vgem fence would conflict with a pending one (`EBUSY`).
    #[error("vgem fence conflicts with a pending fence on the buffer (EBUSY)")]
    FenceBusy,
    /// A system call failed.
    #[error("{op} failed: {errno}")]
    Os {
        /// The call.
        op: &'static str,
        /// The kernel's errno.
        errno: Errno,
    },
}

impl Error {
    pub(crate) fn os(op: &'static str) -> impl FnOnce(Errno) -> Error {
        move |errno| Error::Os { op, errno }
    }

    pub(crate) fn open(path: &str) -> impl FnOnce(Errno) -> Error + '_ {
        move |errno| Error::Open {
            path: PathBuf::from(path),
            errno,
        }
    }
}

/// Result of the allocators.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Something that hands out LINEAR dma-buf images.
pub trait Allocator {
    /// Allocate a `width` x `height` image of `format`, LINEAR layout.
    fn allocate(&self, width: u32, height: u32, format: Fourcc) -> Result<Dmabuf>;
}

/// Row alignment of the layouts winsys makes (what GPUs commonly need for
/// linear images; 256 covers every Mesa driver's linear pitch rule).
pub const STRIDE_ALIGN: u32 = 256;

/// A LINEAR layout for a `width` x `height` `format` image in one buffer:
/// `(offset, stride)` per plane and the total size rounded up to pages.
pub fn linear_layout(width: u32, height: u32, format: Fourcc) -> Result<(Vec<(u32, u32)>, u64)> {
    if width == 0 || height == 0 {
        return Err(Error::ZeroSize);
    }
    let infos = format.planes().ok_or(Error::UnsupportedFormat {
        format,
        why: "unknown layout",
    })?;
    let mut planes = Vec::with_capacity(infos.len());
    let mut offset = 0u64;
    for info in infos {
        let stride = info.row_bytes(width).next_multiple_of(STRIDE_ALIGN as u64);
        let stride32 = u32::try_from(stride).map_err(|_| Error::TooLarge {
            what: "u32 stride",
            size: stride,
            limit: u32::MAX as u64,
        })?;
        let off32 = u32::try_from(offset).map_err(|_| Error::TooLarge {
            what: "u32 plane offset",
            size: offset,
            limit: u32::MAX as u64,
        })?;
        planes.push((off32, stride32));
        offset += stride * info.height(height) as u64;
    }
    let size = offset.next_multiple_of(page_size());
    Ok((planes, size))
}

/// A validated LINEAR [`Dmabuf`] with every plane in the one buffer `fd`.
pub(crate) fn linear_dmabuf(
    fd: OwnedFd,
    width: u32,
    height: u32,
    format: Fourcc,
    planes: &[(u32, u32)],
) -> Result<Dmabuf> {
    let fd = std::sync::Arc::new(fd);
    let mut builder = Dmabuf::builder(width, height, format, Modifier::LINEAR);
    for &(offset, stride) in planes {
        builder = builder.plane(fd.clone(), offset, stride);
    }
    Ok(builder.build()?)
}

pub(crate) fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_layout_aligns_rows_and_pages() {
        let (planes, size) = linear_layout(100, 10, Fourcc::XRGB8888).unwrap();
        assert_eq!(planes, vec![(0, 512)]);
        assert_eq!(size, (512 * 10u64).next_multiple_of(page_size()));
        let (planes, size) = linear_layout(3840, 2160, Fourcc::XRGB8888).unwrap();
        assert_eq!(planes, vec![(0, 15360)]);
        assert_eq!(size, 15360 * 2160);
    }

    #[test]
    fn linear_layout_places_chroma_after_luma() {
        let (planes, _) = linear_layout(64, 48, Fourcc::NV12).unwrap();
        assert_eq!(planes, vec![(0, 256), (256 * 48, 256)]);
    }

    #[test]
    fn linear_layout_refuses_empty_and_unknown() {
        assert!(matches!(
            linear_layout(0, 1, Fourcc::XRGB8888),
            Err(Error::ZeroSize)
        ));
        assert!(matches!(
            linear_layout(1, 1, Fourcc(0x1234)),
            Err(Error::UnsupportedFormat { .. })
        ));
    }
}
