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
//! let dumb = DumbAllocator::for_device(&vgem)?;
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

/// Dumb buffers on one device's primary node, rows aligned to
/// [`STRIDE_ALIGN`] bytes as every allocator here lays them out.
#[derive(Debug, Clone)]
pub struct DumbAllocator {
    dev: Arc<DrmDevice>,
}

impl DumbAllocator {
    /// On `dev`'s device: its primary node (opened here when `dev` is the
    /// render node). Whether the driver makes dumb buffers shows at the
    /// first [`DumbAllocator::create`] (`DRM_CAP_DUMB_BUFFER` cannot tell:
    /// vgem, which makes them, has no modesetting and so answers no
    /// capability query about them).
    pub fn for_device(dev: &DrmDevice) -> Result<Self> {
        let primary = dev.open_sibling(NodeKind::Primary)?;
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
        // Ask for a width whose rows fill whole STRIDE_ALIGN units (when
        // the pixel size divides it), so the pitch is aligned whatever the
        // driver's own rule.
        let padded = if cpp != 0 && STRIDE_ALIGN.is_multiple_of(cpp) {
            width.checked_next_multiple_of(STRIDE_ALIGN / cpp)
        } else {
            Some(width)
        };
        let padded = padded.ok_or(Error::TooLarge {
            what: "dumb buffer width",
            size: u64::from(width),
            limit: u64::from(u32::MAX),
        })?;
        let made = create(&self.dev, padded, height, format)?;
        linear_dmabuf(made.fd, width, height, format, &[(0, made.pitch)])
    }
}

impl Allocator for DumbAllocator {
    fn allocate(&self, width: u32, height: u32, format: Fourcc) -> Result<Dmabuf> {
        self.create(width, height, format)
    }
}

/// The bytes per pixel of a one-plane format.
fn single_plane_cpp(format: Fourcc) -> Result<u32> {
    match format.planes() {
        Some([info]) => Ok(info.cpp),
        Some(_) => Err(Error::UnsupportedFormat {
            format,
            why: "dumb buffers have one plane",
        }),
        None => Err(Error::UnsupportedFormat {
            format,
            why: "unknown layout",
        }),
    }
}

/// What [`create`] made.
pub(crate) struct Made {
    pub(crate) gem: Gem,
    pub(crate) fd: OwnedFd,
    pub(crate) pitch: u32,
    pub(crate) size: u64,
}

/// `DRM_IOCTL_MODE_CREATE_DUMB` of `width` x `height` pixels of `format`
/// (one plane) on the primary node `dev`, exported read-write
/// (`PRIME_HANDLE_TO_FD` with `DRM_RDWR`).
pub(crate) fn create(
    dev: &Arc<DrmDevice>,
    width: u32,
    height: u32,
    format: Fourcc,
) -> Result<Made> {
    let cpp = single_plane_cpp(format)?;
    if width == 0 || height == 0 {
        return Err(Error::ZeroSize);
    }
    let mut arg = drm::drm_mode_create_dumb {
        width,
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
    Ok(Made {
        gem,
        fd,
        pitch: arg.pitch,
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
