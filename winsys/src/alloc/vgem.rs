//! vgem: the kernel's virtual GEM driver, a dma-buf exporter whose fences
//! userspace controls (`DRM_IOCTL_VGEM_FENCE_ATTACH` / `_SIGNAL`).
//!
//! A [`VgemFence`] on a buffer stands in for a busy GPU: readers (or
//! writers) of the dma-buf wait until the test signals it. Unsignaled vgem
//! fences signal by themselves after 10 s, and all of them when the device
//! fd closes. vgem has no syncobjs. Kernel: `drivers/gpu/drm/vgem/`.
//!
//! ```no_run
//! use winsys::alloc::vgem::Vgem;
//! use winsys::dmabuf::Access;
//! use winsys::format::Fourcc;
//!
//! let vgem = Vgem::open()?;
//! let buf = vgem.create(64, 64, Fourcc::XRGB8888)?;
//! let gpu = buf.attach_fence(Access::Write)?;           // a "GPU" writes
//! let fence = buf.dmabuf().export_sync_file(Access::Read)?;
//! assert!(!fence.is_signaled()?);
//! gpu.signal()?;                               // the "GPU" is done
//! assert!(fence.is_signaled()?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::os::fd::{AsFd, AsRawFd};
use std::ptr::NonNull;
use std::sync::Arc;

use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

use super::dumb::{self, Gem};
use super::{Error, Result};
use crate::device::{DrmDevice, NodeKind};
use crate::dmabuf::{Access, Dmabuf};
use crate::format::Fourcc;
use crate::uapi::{drm, vgem as sys};

/// An open vgem device (its primary node, where dumb buffers can be made).
#[derive(Debug, Clone)]
pub struct Vgem {
    dev: Arc<DrmDevice>,
}

impl Vgem {
    /// Find and open the vgem device (by driver name).
    pub fn open() -> Result<Self> {
        Ok(Vgem {
            dev: Arc::new(DrmDevice::find("vgem", NodeKind::Primary)?),
        })
    }

    /// The DRM device.
    pub fn device(&self) -> &Arc<DrmDevice> {
        &self.dev
    }

    /// A dumb buffer for a single-plane `format` image, exported as a
    /// read-write LINEAR [`Dmabuf`] (`DRM_IOCTL_MODE_CREATE_DUMB`, then
    /// `PRIME_HANDLE_TO_FD` with `DRM_RDWR`).
    pub fn create(&self, width: u32, height: u32, format: Fourcc) -> Result<VgemBuffer> {
        let made = dumb::create(&self.dev, width, width, height, format)?;
        Ok(VgemBuffer {
            gem: made.gem,
            dmabuf: made.dmabuf,
            size: made.size,
        })
    }
}

impl Vgem {
    /// Import `dmabuf` (its plane 0's dma-buf) into vgem as a GEM object
    /// (`DRM_IOCTL_PRIME_FD_TO_HANDLE`), as a device taking a foreign
    /// buffer does; the handle is closed when the result drops.
    pub fn import(&self, dmabuf: &crate::dmabuf::Dmabuf) -> Result<VgemImport> {
        let mut arg = drm::drm_prime_handle {
            handle: 0,
            flags: 0,
            fd: dmabuf.planes()[0].fd().as_raw_fd(),
        };
        drm::DRM_IOCTL_PRIME_FD_TO_HANDLE
            .call(self.dev.as_fd(), &mut arg)
            .map_err(|e| self.dev.ioctl_error("DRM_IOCTL_PRIME_FD_TO_HANDLE", e))?;
        Ok(VgemImport {
            _gem: Gem {
                dev: self.dev.clone(),
                handle: arg.handle,
            },
        })
    }
}

/// A foreign dma-buf imported into vgem ([`Vgem::import`]).
pub struct VgemImport {
    _gem: Gem,
}

/// A vgem dumb buffer and its dma-buf.
pub struct VgemBuffer {
    gem: Gem,
    dmabuf: Dmabuf,
    size: u64,
}

impl VgemBuffer {
    /// The buffer as a dma-buf image.
    pub fn dmabuf(&self) -> &Dmabuf {
        &self.dmabuf
    }

    /// Attach an unsignaled fence to the buffer's reservation object, as a
    /// read fence ([`Access::Read`]) or a write fence (otherwise), the way
    /// a device starting that access would (`DRM_IOCTL_VGEM_FENCE_ATTACH`).
    /// [`Error::FenceBusy`] if it conflicts with a pending fence.
    pub fn attach_fence(&self, access: Access) -> Result<VgemFence> {
        let mut arg = sys::drm_vgem_fence_attach {
            handle: self.gem.handle,
            flags: if access.writes() {
                sys::VGEM_FENCE_WRITE
            } else {
                0
            },
            ..Default::default()
        };
        match sys::DRM_IOCTL_VGEM_FENCE_ATTACH.call(self.gem.dev.as_fd(), &mut arg) {
            Ok(_) => Ok(VgemFence {
                dev: self.gem.dev.clone(),
                id: arg.out_fence,
                signaled: false,
            }),
            Err(Errno::BUSY) => Err(Error::FenceBusy),
            Err(e) => Err(self
                .gem
                .dev
                .ioctl_error("DRM_IOCTL_VGEM_FENCE_ATTACH", e)
                .into()),
        }
    }

    /// Map the GEM object directly through the DRM fd
    /// (`DRM_IOCTL_MODE_MAP_DUMB`): the exporter's own view of the pages,
    /// bypassing the dma-buf, for checking what dma-buf users wrote.
    pub fn map_gem(&self) -> Result<GemMap> {
        let mut arg = drm::drm_mode_map_dumb {
            handle: self.gem.handle,
            ..Default::default()
        };
        drm::DRM_IOCTL_MODE_MAP_DUMB
            .call(self.gem.dev.as_fd(), &mut arg)
            .map_err(|e| self.gem.dev.ioctl_error("DRM_IOCTL_MODE_MAP_DUMB", e))?;
        let len = self.size as usize;
        // SAFETY: a new shared mapping at a kernel-chosen address (null hint)
        // of the object's `size` bytes at the fake offset MAP_DUMB returned;
        // unmapped once in GemMap's Drop.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                self.gem.dev.as_fd(),
                arg.offset,
            )
        }
        .map_err(Error::os("mmap(vgem GEM)"))?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(Error::Os {
            op: "mmap(vgem GEM)",
            errno: Errno::FAULT,
        })?;
        Ok(GemMap {
            ptr,
            len,
            id: self.dmabuf.planes()[0].id(),
        })
    }
}

impl fmt::Debug for VgemBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VgemBuffer")
            .field("handle", &self.gem.handle)
            .field("dmabuf", &self.dmabuf)
            .finish()
    }
}

/// A direct CPU mapping of a vgem object (no dma-buf sync involved).
pub struct GemMap {
    ptr: NonNull<u8>,
    len: usize,
    /// The dma-buf of the object: every copy registers with the CPU guards
    /// of [`DmabufMap`](crate::dmabuf::DmabufMap)s, so no two threads touch
    /// the same bytes at once.
    id: crate::dmabuf::DmabufId,
}

impl GemMap {
    /// Size of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never, for a created buffer).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn at(&self, offset: usize, len: usize) -> Result<*mut u8> {
        match offset.checked_add(len) {
            // SAFETY: `offset + len <= self.len`: inside the mapping.
            Some(end) if end <= self.len => Ok(unsafe { self.ptr.as_ptr().add(offset) }),
            _ => Err(Error::OutOfBounds {
                offset: offset as u64,
                len: len as u64,
                size: self.len as u64,
            }),
        }
    }

    /// Copy `dst.len()` bytes from `offset` into `dst` (no dma-buf sync:
    /// this is the exporter's own view). Refused with
    /// [`crate::dmabuf::Error::GuardBusy`] while a CPU write guard of this
    /// process holds the buffer.
    pub fn read_bytes(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        let src = self.at(offset, dst.len())?;
        crate::dmabuf::map::claim(&[self.id], Access::Read)?;
        // SAFETY: in bounds (`at`); `dst` is the caller's own memory; the
        // claim keeps writers of this process out meanwhile. Devices and
        // other processes can tear bytes through a raw pointer, not break
        // a reference.
        unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
        crate::dmabuf::map::release(&[self.id], Access::Read);
        Ok(())
    }

    /// Copy `src` into the mapping at `offset`. Refused with
    /// [`crate::dmabuf::Error::GuardBusy`] while any CPU guard of this
    /// process holds the buffer.
    pub fn write_bytes(&mut self, offset: usize, src: &[u8]) -> Result<()> {
        let dst = self.at(offset, src.len())?;
        crate::dmabuf::map::claim(&[self.id], Access::Write)?;
        // SAFETY: in bounds of a writable mapping (`at`, PROT_WRITE); the
        // claim keeps every other guard of this process out; memmove
        // semantics, so `src` may be any memory, even this mapping.
        unsafe { std::ptr::copy(src.as_ptr(), dst, src.len()) };
        crate::dmabuf::map::release(&[self.id], Access::Write);
        Ok(())
    }

    /// The bytes, borrowed without a copy.
    ///
    /// # Safety
    /// Nothing may write the buffer while the slice lives: no dma-buf
    /// mapping or device using the same vgem object, no other process.
    pub unsafe fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` bytes for as long as `self` lives; the
        // absence of writers is the caller's promise.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, borrowed for writing without a copy.
    ///
    /// # Safety
    /// Nothing else may read or write the buffer while the slice lives.
    pub unsafe fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; writable mapping; `&mut self` excludes
        // other slices of this map; the rest is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

// SAFETY: GemMap owns its mapping like a Vec owns its heap block: shared
// access only reads, writes need `&mut self`, so it may move between threads.
unsafe impl Send for GemMap {}
// SAFETY: see `Send`; `&GemMap` hands out only shared slices.
unsafe impl Sync for GemMap {}

impl Drop for GemMap {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `map_gem`, unmapped only here.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A pending vgem fence. Signal it with [`VgemFence::signal`]; dropping an
/// unsignaled one signals it, so no test leaves a fence for the 10 s
/// timeout.
pub struct VgemFence {
    dev: Arc<DrmDevice>,
    id: u32,
    signaled: bool,
}

impl VgemFence {
    /// Signal the fence now (`DRM_IOCTL_VGEM_FENCE_SIGNAL`).
    pub fn signal(mut self) -> Result<()> {
        self.signaled = true;
        self.signal_raw()
    }

    fn signal_raw(&self) -> Result<()> {
        let mut arg = sys::drm_vgem_fence_signal {
            fence: self.id,
            flags: 0,
        };
        sys::DRM_IOCTL_VGEM_FENCE_SIGNAL
            .call(self.dev.as_fd(), &mut arg)
            .map_err(|e| self.dev.ioctl_error("DRM_IOCTL_VGEM_FENCE_SIGNAL", e))?;
        Ok(())
    }
}

impl Drop for VgemFence {
    fn drop(&mut self) {
        if !self.signaled {
            let _ = self.signal_raw();
        }
    }
}

impl fmt::Debug for VgemFence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VgemFence")
            .field("id", &self.id)
            .field("signaled", &self.signaled)
            .finish()
    }
}
