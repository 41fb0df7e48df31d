//! DRM device nodes: open one by path or find one by driver name, ask its
//! capabilities.
//!
//! Node numbers depend on probe order, so devices are found by driver name
//! (`DRM_IOCTL_VERSION`) or by `dev_t` (what linux-dmabuf feedback names),
//! never by minor number. A caller that already has a DRM fd wraps it with
//! [`DrmDevice::from_fd`].
//!
//! Listing ([`DrmDevice::list`]) never opens a primary (`card`) node: the
//! first opener of a primary node with no master becomes DRM master, which
//! would make a compositor starting at that moment fail. A card node's
//! driver is asked through its render node sibling (sysfs), or read from
//! sysfs. Opening a card node is left to an explicit
//! [`DrmDevice::open`] / [`DrmDevice::find`] with [`NodeKind::Primary`].
//!
//! ```no_run
//! use winsys::device::{DrmDevice, NodeKind};
//! let vgem = DrmDevice::find("vgem", NodeKind::Primary)?;
//! println!("{} at {}", vgem.driver(), vgem.path().display());
//! # Ok::<(), winsys::device::Error>(())
//! ```

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::uapi::drm as sys;

/// Errors opening or querying a DRM device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No node of that driver and kind exists.
    #[error("no DRM {kind:?} node with driver {driver:?} (found: {found})")]
    NotFound {
        /// The driver asked for.
        driver: String,
        /// The node kind asked for.
        kind: NodeKind,
        /// What was found instead, for the message.
        found: String,
    },
    /// Opening the node failed.
    #[error("cannot open {path}: {errno}")]
    Open {
        /// The node's path.
        path: PathBuf,
        /// open(2)'s errno.
        errno: Errno,
    },
    /// The fd is not a DRM device.
    #[error("{path} is not a DRM device ({errno})")]
    NotDrm {
        /// The path.
        path: PathBuf,
        /// DRM_IOCTL_VERSION's errno.
        errno: Errno,
    },
    /// The fd is not a DRM device node (or `fstat` failed).
    #[error("fd is not a DRM device node: {0}")]
    NotDrmFd(String),
    /// No node under `/dev/dri` has this device number.
    #[error("no DRM node with dev_t {major}:{minor}")]
    NoSuchDevT {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A DRM ioctl failed.
    #[error("{op} on {path} failed: {errno}")]
    Ioctl {
        /// The ioctl.
        op: &'static str,
        /// The node.
        path: PathBuf,
        /// The kernel's errno.
        errno: Errno,
    },
}

/// Result of the device module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which node of a DRM device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeKind {
    /// `/dev/dri/cardN`: modesetting and dumb buffers (as root or master).
    Primary,
    /// `/dev/dri/renderDN`: rendering, PRIME and syncobjs, open to anyone.
    Render,
}

impl NodeKind {
    fn of(path: &Path) -> Option<NodeKind> {
        let name = path.file_name()?.to_str()?;
        if name.starts_with("renderD") {
            Some(NodeKind::Render)
        } else if name.starts_with("card") {
            Some(NodeKind::Primary)
        } else {
            None
        }
    }
}

/// The major number of DRM character devices.
pub const DRM_MAJOR: u32 = 226;

/// An open DRM node, its device number and its driver's name.
pub struct DrmDevice {
    fd: OwnedFd,
    path: PathBuf,
    driver: String,
    dev: u64,
}

/// One node found by [`DrmDevice::list`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeInfo {
    /// `/dev/dri/...`.
    pub path: PathBuf,
    /// Primary or render.
    pub kind: NodeKind,
    /// The driver name (`?` when it could not be told without opening a
    /// primary node).
    pub driver: String,
    /// Its device number (`st_rdev`).
    pub dev: u64,
}

/// The `st_rdev` of a DRM character device fd or path.
fn drm_rdev(st: &rustix::fs::Stat) -> Option<u64> {
    let is_char =
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::CharacterDevice;
    let rdev = st.st_rdev;
    (is_char && rustix::fs::major(rdev) == DRM_MAJOR).then_some(rdev)
}

impl DrmDevice {
    /// Open the node at `path` (read-write, close-on-exec) and ask its
    /// driver. A primary node gives up DRM master right away if opening it
    /// made this process master (a compositor that needs master opens the
    /// node itself and uses [`DrmDevice::from_fd`], which leaves it alone).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let fd = rustix::fs::open(&path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).map_err(
            |errno| Error::Open {
                path: path.clone(),
                errno,
            },
        )?;
        let dev = Self::wrap(fd, path)?;
        if dev.kind() == Some(NodeKind::Primary) {
            // The first opener of a primary node with no master becomes
            // master: winsys needs buffers and sync, never modesetting, so
            // it gives master up at once (EINVAL: it had none).
            let _ = sys::drop_master(dev.fd.as_fd());
        }
        Ok(dev)
    }

    /// Wrap a DRM fd the caller already has (a compositor's or an app's),
    /// checking it is a DRM device node ([`Error::NotDrmFd`] otherwise).
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        let path = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap_or_else(|_| PathBuf::from("(fd)"));
        Self::wrap(fd, path)
    }

    fn wrap(fd: OwnedFd, path: PathBuf) -> Result<Self> {
        let st = rustix::fs::fstat(&fd).map_err(|e| Error::NotDrmFd(format!("fstat: {e}")))?;
        let dev = drm_rdev(&st).ok_or_else(|| {
            Error::NotDrmFd(format!("{} is not a DRM character device", path.display()))
        })?;
        let driver = driver_name(fd.as_fd()).map_err(|errno| Error::NotDrm {
            path: path.clone(),
            errno,
        })?;
        Ok(DrmDevice {
            fd,
            path,
            driver,
            dev,
        })
    }

    /// Open the node whose device number is `dev` (as linux-dmabuf
    /// feedback's `main_device` and tranche `target_device` give it).
    pub fn open_dev_t(dev: u64) -> Result<Self> {
        // Only stat(2) each node: the one wanted is the only one opened.
        let node = std::fs::read_dir("/dev/dri").ok().and_then(|dir| {
            dir.flatten().map(|e| e.path()).find(|path| {
                NodeKind::of(path).is_some()
                    && rustix::fs::stat(path).ok().as_ref().and_then(drm_rdev) == Some(dev)
            })
        });
        match node {
            Some(path) => DrmDevice::open(path),
            None => Err(Error::NoSuchDevT {
                major: rustix::fs::major(dev),
                minor: rustix::fs::minor(dev),
            }),
        }
    }

    /// Every DRM node under `/dev/dri`, sorted by path, without opening
    /// any primary node (see the [module docs](self)). Render nodes are
    /// opened to ask their driver; one that cannot be opened is left out.
    pub fn list() -> Vec<NodeInfo> {
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir("/dev/dri") else {
            return out;
        };
        let mut cards = Vec::new();
        for entry in dir.flatten() {
            let path = entry.path();
            let Some(kind) = NodeKind::of(&path) else {
                continue;
            };
            let Some(dev) = rustix::fs::stat(&path).ok().as_ref().and_then(drm_rdev) else {
                continue;
            };
            match kind {
                NodeKind::Render => {
                    if let Ok(d) = DrmDevice::open(&path) {
                        out.push(NodeInfo {
                            path,
                            kind,
                            driver: d.driver,
                            dev,
                        });
                    }
                }
                NodeKind::Primary => cards.push((path, dev)),
            }
        }
        for (path, dev) in cards {
            let driver = card_driver(dev, &out).unwrap_or_else(|| "?".into());
            out.push(NodeInfo {
                path,
                kind: NodeKind::Primary,
                driver,
                dev,
            });
        }
        out.sort();
        out
    }

    /// Open the first node of `kind` whose driver is `driver` (e.g. `"vgem"`,
    /// `"virtio_gpu"`).
    pub fn find(driver: &str, kind: NodeKind) -> Result<Self> {
        let all = DrmDevice::list();
        for n in &all {
            if n.kind == kind && n.driver == driver {
                return DrmDevice::open(&n.path);
            }
        }
        let found = if all.is_empty() {
            "no nodes under /dev/dri".to_string()
        } else {
            all.iter()
                .map(|n| format!("{}={}", n.path.display(), n.driver))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(Error::NotFound {
            driver: driver.to_string(),
            kind,
            found,
        })
    }

    /// The kernel driver's name (`DRM_IOCTL_VERSION`).
    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// The node's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The node's device number (`st_rdev`), as linux-dmabuf feedback
    /// names devices.
    pub fn dev_t(&self) -> u64 {
        self.dev
    }

    /// The node's kind, from its name.
    pub fn kind(&self) -> Option<NodeKind> {
        NodeKind::of(&self.path)
    }

    /// A capability value (`DRM_IOCTL_GET_CAP`, `DRM_CAP_*`).
    pub fn cap(&self, capability: u64) -> Result<u64> {
        let mut arg = sys::drm_get_cap {
            capability,
            value: 0,
        };
        sys::DRM_IOCTL_GET_CAP
            .call(&self.fd, &mut arg)
            .map_err(|errno| self.ioctl_error("DRM_IOCTL_GET_CAP", errno))?;
        Ok(arg.value)
    }

    /// Whether the driver has syncobjs (`DRM_CAP_SYNCOBJ`).
    pub fn has_syncobj(&self) -> bool {
        self.cap(sys::DRM_CAP_SYNCOBJ).unwrap_or(0) != 0
    }

    /// Whether the driver has timeline syncobjs (`DRM_CAP_SYNCOBJ_TIMELINE`).
    pub fn has_syncobj_timeline(&self) -> bool {
        self.cap(sys::DRM_CAP_SYNCOBJ_TIMELINE).unwrap_or(0) != 0
    }

    /// Whether a GPU renders behind this device. False for vgem (no
    /// renderer at all) and for virtio-gpu whose host gives no 3D
    /// (`VIRTGPU_PARAM_3D_FEATURES` is 0): Mesa serves those with
    /// kms_swrast alone, whose only buffers are dumb buffers on the primary
    /// node ([`crate::alloc::dumb`]). Every other driver is taken to render.
    pub fn renders(&self) -> bool {
        let virgl_3d = || {
            let mut value: std::ffi::c_int = 0;
            let mut arg = crate::uapi::virtgpu::drm_virtgpu_getparam {
                param: crate::uapi::virtgpu::VIRTGPU_PARAM_3D_FEATURES,
                value: std::ptr::addr_of_mut!(value) as u64,
            };
            // SAFETY: `value` points to a live `int`, the one the kernel
            // writes for this parameter.
            unsafe { crate::uapi::virtgpu::DRM_IOCTL_VIRTGPU_GETPARAM.call(&self.fd, &mut arg) }
                .map(|_| value)
        };
        renders(&self.driver, virgl_3d)
    }

    /// Open this device's node of `kind`: its primary node from a render
    /// node or the other way round (of the same kind: that node opened
    /// again). Found through sysfs (`/sys/dev/char/MAJOR:MINOR/device/drm/`)
    /// by device number, so renamed nodes (a container's) are found too.
    pub fn open_sibling(&self, kind: NodeKind) -> Result<Self> {
        let nodes = sysfs_nodes(self.dev).map_err(|e| Error::NotFound {
            driver: self.driver.clone(),
            kind,
            found: format!("{}/drm: {e}", sysfs_device(self.dev)),
        })?;
        let dev = nodes
            .into_iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, dev)| dev)
            .ok_or_else(|| Error::NotFound {
                driver: self.driver.clone(),
                kind,
                found: format!("no such node under {}/drm", sysfs_device(self.dev)),
            })?;
        DrmDevice::open_dev_t(dev)
    }

    pub(crate) fn ioctl_error(&self, op: &'static str, errno: Errno) -> Error {
        Error::Ioctl {
            op,
            path: self.path.clone(),
            errno,
        }
    }
}

impl AsFd for DrmDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl fmt::Debug for DrmDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrmDevice")
            .field("path", &self.path)
            .field("driver", &self.driver)
            .field(
                "dev_t",
                &(rustix::fs::major(self.dev), rustix::fs::minor(self.dev)),
            )
            .finish()
    }
}

/// The driver of a primary node without opening it: the driver of the
/// render node of the same device (among the `known` render nodes, matched
/// by device number), else the sysfs driver link's name.
fn card_driver(card: u64, known: &[NodeInfo]) -> Option<String> {
    if let Ok(nodes) = sysfs_nodes(card) {
        for (kind, dev) in nodes {
            if kind == NodeKind::Render {
                if let Some(n) = known.iter().find(|n| n.dev == dev) {
                    return Some(n.driver.clone());
                }
            }
        }
    }
    let link = std::fs::read_link(format!("{}/driver", sysfs_device(card))).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// The sysfs directory of the device behind DRM node `dev`.
fn sysfs_device(dev: u64) -> String {
    format!(
        "/sys/dev/char/{}:{}/device",
        rustix::fs::major(dev),
        rustix::fs::minor(dev)
    )
}

/// Every DRM node of the device behind node `dev`, with its kind and
/// device number (sysfs `device/drm/*/dev`: names under `/dev/dri` may
/// differ, e.g. in a container).
fn sysfs_nodes(dev: u64) -> std::io::Result<Vec<(NodeKind, u64)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("{}/drm", sysfs_device(dev)))?.flatten() {
        let Some(kind) = NodeKind::of(Path::new(&e.file_name())) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(e.path().join("dev")) else {
            continue;
        };
        let Some((major, minor)) = text.trim().split_once(':') else {
            continue;
        };
        if let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) {
            out.push((kind, rustix::fs::makedev(major, minor)));
        }
    }
    out.sort();
    Ok(out)
}

/// Whether a GPU renders behind a device of `driver`; `virgl_3d` asks a
/// virtio-gpu device its `VIRTGPU_PARAM_3D_FEATURES`.
fn renders(driver: &str, virgl_3d: impl FnOnce() -> Result<std::ffi::c_int, Errno>) -> bool {
    match driver {
        "vgem" => false,
        // A kernel that cannot tell: leave the choice to Mesa.
        "virtio_gpu" => !virgl_3d().is_ok_and(|v| v == 0),
        _ => true,
    }
}

/// The driver name of a DRM fd (`DRM_IOCTL_VERSION`, two calls: lengths, then
/// strings).
fn driver_name(fd: BorrowedFd<'_>) -> Result<String, Errno> {
    let mut v = sys::drm_version::default();
    // SAFETY: all lengths are 0 and pointers null: the kernel copies nothing.
    unsafe { sys::DRM_IOCTL_VERSION.call(fd, &mut v) }?;
    let mut name = vec![0u8; v.name_len];
    let mut v2 = sys::drm_version {
        name_len: name.len(),
        name: name.as_mut_ptr(),
        ..Default::default()
    };
    // SAFETY: `name` has `name_len` writable bytes; the other buffers have
    // length 0 and are not written.
    unsafe { sys::DRM_IOCTL_VERSION.call(fd, &mut v2) }?;
    name.truncate(v2.name_len.min(name.len()));
    Ok(String::from_utf8_lossy(&name).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_vgem_and_virtio_gpu_without_3d_count_as_not_rendering() {
        let never = || -> Result<std::ffi::c_int, Errno> { panic!("asked a non-virtio device") };
        assert!(!renders("vgem", never));
        for gpu in ["i915", "xe", "amdgpu", "nouveau", "msm", "panfrost"] {
            assert!(renders(gpu, never), "{gpu}");
        }
        assert!(!renders("virtio_gpu", || Ok(0)));
        assert!(renders("virtio_gpu", || Ok(1)));
        // A kernel that cannot tell leaves the choice to Mesa.
        assert!(renders("virtio_gpu", || Err(Errno::INVAL)));
    }
}
