//! Dumb buffers: the LINEAR, CPU-written buffers every KMS driver makes on
//! its primary node (`DRM_IOCTL_MODE_CREATE_DUMB`), exported as dma-bufs.
//!
//! On a device with no renderer behind it ([`DrmDevice::renders`]: vgem,
//! virtio-gpu without 3D) they are all Mesa's GBM can make there too: its
//! kms_swrast driver asks for exactly these. [`DumbAllocator`] makes them
//! without loading Mesa, which on kms_swrast devices builds a screen twice
//! (the render node's attempt fails first) before its first buffer.
//!
//! ```no_run
//! use winsys::alloc::dumb::DumbAllocator;
//! use winsys::device::{DrmDevice, NodeKind};
//! use winsys::format::Fourcc;
//! let vgem = DrmDevice::find("vgem", NodeKind::Render)?;
//! let dumb = DumbAllocator::new(vgem)?;
//! let buf = dumb.create(300, 200, Fourcc::XRGB8888)?;
//! assert_eq!(buf.planes()[0].stride() % 256, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use super::{linear_dmabuf, Allocator, Error, Result, STRIDE_ALIGN};
use crate::device::{DrmDevice, NodeKind};
use crate::dmabuf::Dmabuf;
use crate::fd::owned_from_kernel;
use crate::format::Fourcc;
use crate::uapi::drm;

/// Dumb buffers on one device's primary node, each row padded to a
/// multiple of [`STRIDE_ALIGN`] bytes as every allocator here lays them out
/// (the driver may pad further).
#[derive(Debug, Clone)]
pub struct DumbAllocator {
    dev: Arc<DrmDevice>,
}

impl DumbAllocator {
    /// On `dev`'s device: `dev` itself if it is the primary node, else the
    /// primary node of the same device, opened here. Whether the driver
    /// makes dumb buffers shows at the first [`DumbAllocator::create`]
    /// (`DRM_CAP_DUMB_BUFFER` cannot tell: vgem, which makes them, has no
    /// modesetting and so answers no capability query about them).
    pub fn new(dev: DrmDevice) -> Result<Self> {
        let primary = if dev.kind() == Some(NodeKind::Primary) {
            dev
        } else {
            dev.open_sibling(NodeKind::Primary)?
        };
        Ok(DumbAllocator {
            dev: Arc::new(primary),
        })
    }

    /// The primary node the buffers are made on.
    pub fn device(&self) -> &DrmDevice {
        &self.dev
    }

    /// A `width` x `height` single-plane `format` image, exported read-write.
    /// The GEM handle is closed before this returns: the dma-buf alone
    /// keeps the buffer.
    pub fn create(&self, width: u32, height: u32, format: Fourcc) -> Result<Dmabuf> {
        let cpp = single_plane_cpp(format)?;
        // Ask for whole rows of STRIDE_ALIGN bytes: the smallest pixel count
        // whose bytes are a multiple of it.
        let unit = STRIDE_ALIGN / gcd(STRIDE_ALIGN, cpp);
        let padded = width
            .checked_next_multiple_of(unit)
            .filter(|w| w.checked_mul(cpp).is_some())
            .ok_or(Error::TooLarge {
                what: "dumb buffer row",
                size: u64::from(width) * u64::from(cpp),
                limit: u64::from(u32::MAX),
            })?;
        Ok(create(&self.dev, padded, width, height, format)?.dmabuf)
    }
}

impl Allocator for DumbAllocator {
    fn allocate(&self, width: u32, height: u32, format: Fourcc) -> Result<Dmabuf> {
        self.create(width, height, format)
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The bytes per pixel of a one-plane format.
fn single_plane_cpp(format: Fourcc) -> Result<u32> {
    match format.planes() {
        Some([info]) if info.cpp > 0 => Ok(info.cpp),
        Some([_]) | None => Err(Error::UnsupportedFormat {
            format,
            why: "unknown layout",
        }),
        Some(_) => Err(Error::UnsupportedFormat {
            format,
            why: "dumb buffers have one plane",
        }),
    }
}

/// What [`create`] made.
pub(crate) struct Made {
    pub(crate) gem: Gem,
    pub(crate) dmabuf: Dmabuf,
    pub(crate) size: u64,
}

/// `DRM_IOCTL_MODE_CREATE_DUMB` of `alloc_width` x `height` pixels of
/// `format` (one plane) on the primary node `dev`, exported read-write
/// (`PRIME_HANDLE_TO_FD` with `DRM_RDWR`) as a `width` x `height` image
/// (`width <= alloc_width`: the rest of each row is padding).
pub(crate) fn create(
    dev: &Arc<DrmDevice>,
    alloc_width: u32,
    width: u32,
    height: u32,
    format: Fourcc,
) -> Result<Made> {
    let cpp = single_plane_cpp(format)?;
    if width == 0 || height == 0 {
        return Err(Error::ZeroSize);
    }
    let mut arg = drm::drm_mode_create_dumb {
        width: alloc_width.max(width),
        height,
        bpp: cpp * 8,
        ..Default::default()
    };
    drm::DRM_IOCTL_MODE_CREATE_DUMB
        .call(dev.as_fd(), &mut arg)
        .map_err(|e| dev.ioctl_error("DRM_IOCTL_MODE_CREATE_DUMB", e))?;
    let gem = Gem {
        dev: dev.clone(),
        handle: arg.handle,
    };
    let fd = gem.export(drm::DRM_RDWR | drm::DRM_CLOEXEC)?;
    let dmabuf = linear_dmabuf(fd, width, height, format, &[(0, arg.pitch)])?;
    Ok(Made {
        gem,
        dmabuf,
        size: arg.size,
    })
}

/// A GEM handle, closed on drop.
pub(crate) struct Gem {
    pub(crate) dev: Arc<DrmDevice>,
    pub(crate) handle: u32,
}

impl Gem {
    fn export(&self, flags: u32) -> Result<OwnedFd> {
        let mut arg = drm::drm_prime_handle {
            handle: self.handle,
            flags,
            fd: -1,
        };
        drm::DRM_IOCTL_PRIME_HANDLE_TO_FD
            .call(self.dev.as_fd(), &mut arg)
            .map_err(|e| self.dev.ioctl_error("DRM_IOCTL_PRIME_HANDLE_TO_FD", e))?;
        Ok(owned_from_kernel(arg.fd))
    }
}

impl Drop for Gem {
    fn drop(&mut self) {
        let mut arg = drm::drm_gem_close {
            handle: self.handle,
            pad: 0,
        };
        // The handle goes away with the device fd anyway; nothing to report.
        let _ = drm::DRM_IOCTL_GEM_CLOSE.call(self.dev.as_fd(), &mut arg);
    }
}
