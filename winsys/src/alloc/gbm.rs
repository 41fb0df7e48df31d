//! GBM: images allocated by a DRM driver through Mesa's libgbm, with
//! format-modifier negotiation, exported as [`Dmabuf`]s; and dma-bufs
//! imported back into GBM.
//!
//! A device must be able to allocate: with kms_swrast (virtio-gpu without
//! 3D, vgem) the render node cannot create dumb buffers but the card node
//! can. [`GbmAllocator::find`] therefore tries every node, by driver, and
//! keeps the first that allocates a test buffer.
//!
//! ```no_run
//! use winsys::alloc::gbm::{GbmAllocator, Usage};
//! use winsys::format::{Fourcc, Modifier};
//! let gbm = GbmAllocator::find(None)?;
//! let buf = gbm.allocate(256, 256, Fourcc::XRGB8888, &[Modifier::LINEAR], Usage::RENDERING)?;
//! assert_eq!(buf.modifier(), Modifier::LINEAR);
//! # Ok::<(), winsys::alloc::Error>(())
//! ```

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use rustix::io::Errno;

use super::{Error, Result};
use crate::device::DrmDevice;
use crate::dmabuf::{Dmabuf, MAX_PLANES};
use crate::fd::owned_from_kernel;
use crate::format::{Fourcc, Modifier};
use crate::uapi::drm;

pub use gbm::BufferObjectFlags as Usage;

/// A GBM device on one DRM node.
///
/// It may be shared between threads ([`GbmAllocator::shared`]); Mesa does
/// not promise that one GBM device takes calls from several threads at
/// once, so allocations and imports are made one at a time.
pub struct GbmAllocator {
    gbm: gbm::Device<DrmDevice>,
    /// Held across each allocation and import.
    calls: Mutex<()>,
}

impl GbmAllocator {
    /// Open GBM on the DRM node at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let dev = DrmDevice::open(path)?;
        Self::on(dev)
    }

    /// Open GBM on an already open DRM device.
    pub fn on(dev: DrmDevice) -> Result<Self> {
        let gbm = gbm::Device::new(dev).map_err(|e| Error::Os {
            op: "gbm_create_device",
            errno: Errno::from_io_error(&e).unwrap_or(Errno::NODEV),
        })?;
        Ok(GbmAllocator {
            gbm,
            calls: Mutex::new(()),
        })
    }

    /// The first DRM node (of `driver`, if given) on which GBM can allocate
    /// a small XRGB8888 buffer: render nodes first, then card nodes.
    pub fn find(driver: Option<&str>) -> Result<Self> {
        let mut nodes = DrmDevice::list();
        // Render nodes first (no master needed), then primary nodes.
        nodes.sort_by_key(|n| (std::cmp::Reverse(n.kind), n.path.clone()));
        let mut tried = Vec::new();
        for n in nodes {
            let (path, drv) = (n.path, n.driver);
            if driver.is_some_and(|d| d != drv) {
                continue;
            }
            let attempt = Self::open(&path).and_then(|g| {
                g.allocate(
                    16,
                    16,
                    Fourcc::XRGB8888,
                    &[Modifier::LINEAR, Modifier::INVALID],
                    Usage::RENDERING,
                )
                .map(|_| g)
            });
            match attempt {
                Ok(g) => return Ok(g),
                Err(e) => tried.push(format!("{} ({drv}): {e}", path.display())),
            }
        }
        Err(Error::NoDevice {
            what: "GBM-capable DRM node",
            tried: if tried.is_empty() {
                "no DRM nodes".into()
            } else {
                tried.join("; ")
            },
        })
    }

    /// [`GbmAllocator::find`], shared: while anyone holds the returned
    /// allocator, asking again for the same `driver` gives it back instead
    /// of searching anew. Each GBM device has Mesa load a driver and build
    /// a screen (on devices served by kms_swrast, such as vgem, twice: the
    /// render node's attempt fails first), which a swapchain made while its
    /// predecessor lives (a resize) need not pay again. Once every holder
    /// has let go, the device closes.
    ///
    /// ```no_run
    /// use winsys::alloc::gbm::GbmAllocator;
    /// let a = GbmAllocator::shared(Some("vgem"))?;
    /// let b = GbmAllocator::shared(Some("vgem"))?;
    /// assert!(std::sync::Arc::ptr_eq(&a, &b));
    /// # Ok::<(), winsys::alloc::Error>(())
    /// ```
    pub fn shared(driver: Option<&str>) -> Result<Arc<Self>> {
        type Held = Vec<(Option<String>, Weak<GbmAllocator>)>;
        static SHARED: Mutex<Held> = Mutex::new(Vec::new());
        // Held across the search: two threads asking at once search once.
        let mut held = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        held.retain(|(_, g)| g.strong_count() > 0);
        let live = held
            .iter()
            .filter(|(d, _)| d.as_deref() == driver)
            .find_map(|(_, g)| g.upgrade());
        if let Some(g) = live {
            return Ok(g);
        }
        let g = Arc::new(Self::find(driver)?);
        held.push((driver.map(str::to_owned), Arc::downgrade(&g)));
        Ok(g)
    }

    /// The DRM device GBM runs on.
    pub fn device(&self) -> &DrmDevice {
        &self.gbm
    }

    /// GBM's backend name (e.g. `drm`).
    pub fn backend_name(&self) -> &str {
        self.gbm.backend_name()
    }

    /// Whether the device can allocate `format` for `usage`.
    pub fn supports(&self, format: Fourcc, usage: Usage) -> bool {
        to_gbm_format(format).is_ok_and(|f| self.gbm.is_format_supported(f, usage))
    }

    /// Planes `format` has with `modifier` on this device, if defined.
    pub fn plane_count(&self, format: Fourcc, modifier: Modifier) -> Option<u32> {
        let f = to_gbm_format(format).ok()?;
        self.gbm.format_modifier_plane_count(f, modifier.into())
    }

    /// Allocate a `width` x `height` image of `format` whose layout is one
    /// of `modifiers` (the driver picks; `gbm_bo_create_with_modifiers2`).
    ///
    /// [`Modifier::INVALID`] in the list allows the implicit modifier: if the
    /// driver cannot allocate with explicit modifiers, a plain `gbm_bo_create`
    /// is tried (with `LINEAR` usage when LINEAR is in the list too). Without
    /// INVALID in the list there is no such fallback, and an impossible
    /// request is [`Error::UnsupportedFormat`] / [`Error::Os`].
    pub fn allocate(
        &self,
        width: u32,
        height: u32,
        format: Fourcc,
        modifiers: &[Modifier],
        usage: Usage,
    ) -> Result<Dmabuf> {
        if width == 0 || height == 0 {
            return Err(Error::ZeroSize);
        }
        if modifiers.is_empty() {
            return Err(Error::UnsupportedFormat {
                format,
                why: "empty modifier list",
            });
        }
        let gbm_format = to_gbm_format(format)?;
        let explicit: Vec<Modifier> = modifiers
            .iter()
            .copied()
            .filter(|m| *m != Modifier::INVALID)
            .collect();
        let implicit_ok = modifiers.contains(&Modifier::INVALID);
        let linear_only = explicit == [Modifier::LINEAR];
        let mut last_err = None;
        let _one_at_a_time = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        if !explicit.is_empty() {
            match self.gbm.create_buffer_object_with_modifiers2::<()>(
                width,
                height,
                gbm_format,
                explicit.iter().map(|&m| m.into()),
                usage,
            ) {
                Ok(bo) => match Modifier::from(bo.modifier()) {
                    // A driver without modifier support (kms_swrast) serves a
                    // LINEAR-only list with GBM_BO_USE_LINEAR and reports the
                    // implicit modifier: the layout is LINEAR all the same.
                    Modifier::INVALID if linear_only => {
                        return self.dmabuf_of(&bo, format, Modifier::LINEAR)
                    }
                    // Any other implicit answer only where the list allows it.
                    Modifier::INVALID if !implicit_ok => {
                        last_err = Some(std::io::Error::from_raw_os_error(
                            Errno::NOTSUP.raw_os_error(),
                        ))
                    }
                    m => return self.dmabuf_of(&bo, format, m),
                },
                Err(e) => last_err = Some(e),
            }
        }
        if implicit_ok {
            let usage = if explicit.contains(&Modifier::LINEAR) {
                usage | Usage::LINEAR
            } else {
                usage
            };
            match self
                .gbm
                .create_buffer_object::<()>(width, height, gbm_format, usage)
            {
                Ok(bo) => {
                    let m = Modifier::from(bo.modifier());
                    return self.dmabuf_of(&bo, format, m);
                }
                Err(e) => last_err = Some(e),
            }
        }
        let errno = last_err
            .and_then(|e| Errno::from_io_error(&e))
            .unwrap_or(Errno::INVAL);
        Err(Error::Allocation {
            what: format!(
                "GBM {width}x{height} {format} with modifiers {modifiers:?}, usage {usage:?}"
            ),
            errno,
        })
    }

    /// Describe a buffer object of this device as a [`Dmabuf`] of `format`
    /// with layout `modifier`: per plane a dma-buf fd (shared by planes of
    /// one GEM object), offset and stride. For a buffer [`import`](Self::import)ed
    /// from a dma-buf this gives the same dma-buf back (the kernel's PRIME
    /// cache), read-write.
    ///
    /// The fds are exported here with `DRM_RDWR` (PRIME_HANDLE_TO_FD on the
    /// GEM handle) rather than by `gbm_bo_get_fd_for_plane`, which Mesa
    /// exports read-only: a read-only dma-buf cannot be mapped for writing,
    /// and once exported, the kernel hands out that same file again.
    pub fn dmabuf_of<U: 'static>(
        &self,
        bo: &gbm::BufferObject<U>,
        format: Fourcc,
        modifier: Modifier,
    ) -> Result<Dmabuf> {
        let planes = bo.plane_count() as usize;
        if planes == 0 || planes > MAX_PLANES {
            return Err(Error::Os {
                op: "gbm_bo_get_plane_count",
                errno: Errno::INVAL,
            });
        }
        let mut builder = Dmabuf::builder(bo.width(), bo.height(), format, modifier);
        let mut fds: Vec<(u32, Arc<OwnedFd>)> = Vec::new();
        for plane in 0..planes as i32 {
            // SAFETY: Mesa's DRI backend stores a GEM handle in the `u32_`
            // arm of `gbm_bo_handle` (`.u32 = ...`) and nothing else, so the
            // 32 bits read here are initialised; the other arms' upper bytes
            // may not be (gbm-rs reads `u32_` too).
            let handle = unsafe { bo.handle_for_plane(plane).u32_ };
            let fd = match fds.iter().find(|(h, _)| *h == handle) {
                Some((_, fd)) => fd.clone(),
                None => {
                    let fd = Arc::new(self.export_rdwr(handle).or_else(|_| {
                        bo.fd_for_plane(plane).map_err(|_| Error::Os {
                            op: "gbm_bo_get_fd_for_plane",
                            errno: Errno::BADF,
                        })
                    })?);
                    fds.push((handle, fd.clone()));
                    fd
                }
            };
            builder = builder.plane(fd, bo.offset(plane), bo.stride_for_plane(plane));
        }
        Ok(builder.build()?)
    }

    /// PRIME-export GEM `handle` of the GBM device read-write.
    fn export_rdwr(&self, handle: u32) -> Result<OwnedFd> {
        let mut arg = drm::drm_prime_handle {
            handle,
            flags: drm::DRM_RDWR | drm::DRM_CLOEXEC,
            fd: -1,
        };
        drm::DRM_IOCTL_PRIME_HANDLE_TO_FD
            .call(self.gbm.as_fd(), &mut arg)
            .map_err(|e| Error::Device(self.gbm.ioctl_error("DRM_IOCTL_PRIME_HANDLE_TO_FD", e)))?;
        Ok(owned_from_kernel(arg.fd))
    }

    /// Import `dmabuf` into GBM (`gbm_bo_import` with
    /// `GBM_BO_IMPORT_FD_MODIFIER`): the driver gets its own buffer object
    /// over the same memory, e.g. for scanout or to hand to EGL.
    pub fn import(&self, dmabuf: &Dmabuf, usage: Usage) -> Result<gbm::BufferObject<()>> {
        let format = to_gbm_format(dmabuf.format())?;
        let mut fds = [None; MAX_PLANES];
        let mut strides = [0i32; MAX_PLANES];
        let mut offsets = [0i32; MAX_PLANES];
        for (i, p) in dmabuf.planes().iter().enumerate() {
            fds[i] = Some(p.fd());
            strides[i] = p.stride() as i32;
            offsets[i] = p.offset() as i32;
        }
        let _one_at_a_time = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        self.gbm
            .import_buffer_object_from_dma_buf_with_modifiers(
                dmabuf.planes().len() as u32,
                fds,
                dmabuf.width(),
                dmabuf.height(),
                format,
                usage,
                strides,
                offsets,
                dmabuf.modifier().into(),
            )
            .map_err(|e| Error::Allocation {
                what: format!(
                    "GBM import of {}x{} {} modifier {}",
                    dmabuf.width(),
                    dmabuf.height(),
                    dmabuf.format(),
                    dmabuf.modifier()
                ),
                errno: Errno::from_io_error(&e).unwrap_or(Errno::INVAL),
            })
    }
}

impl fmt::Debug for GbmAllocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GbmAllocator")
            .field("device", &*self.gbm)
            .field("backend", &self.gbm.backend_name())
            .finish()
    }
}

impl super::Allocator for GbmAllocator {
    fn allocate(&self, width: u32, height: u32, format: Fourcc) -> Result<Dmabuf> {
        GbmAllocator::allocate(
            self,
            width,
            height,
            format,
            &[Modifier::LINEAR],
            Usage::RENDERING,
        )
    }
}

fn to_gbm_format(format: Fourcc) -> Result<gbm::Format> {
    gbm::Format::try_from(format).map_err(|_| Error::UnsupportedFormat {
        format,
        why: "unknown to GBM",
    })
}
