//! DRM device nodes: open one by path or find one by driver name, ask its
//! capabilities.
//!
//! Node numbers depend on probe order, so devices are found by driver name
//! (`DRM_IOCTL_VERSION`), never by minor number:
//!
//! ```no_run
//! use winsys::device::{DrmDevice, NodeKind};
//! let vgem = DrmDevice::find("vgem", NodeKind::Primary)?;
//! println!("{} at {}", vgem.driver(), vgem.path().display());
//! # Ok::<(), winsys::device::Error>(())
//! ```

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
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

/// An open DRM node and its driver's name.
pub struct DrmDevice {
    fd: OwnedFd,
    path: PathBuf,
    driver: String,
}

impl DrmDevice {
    /// Open the node at `path` (read-write, close-on-exec) and ask its driver.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let fd = rustix::fs::open(&path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).map_err(
            |errno| Error::Open {
                path: path.clone(),
                errno,
            },
        )?;
        let driver = driver_name(fd.as_fd()).map_err(|errno| Error::NotDrm {
            path: path.clone(),
            errno,
        })?;
        Ok(DrmDevice { fd, path, driver })
    }

    /// Every DRM node under `/dev/dri` with its kind and driver, sorted by
    /// path. Nodes that cannot be opened are left out.
    pub fn list() -> Vec<(PathBuf, NodeKind, String)> {
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir("/dev/dri") else {
            return out;
        };
        for entry in dir.flatten() {
            let path = entry.path();
            let Some(kind) = NodeKind::of(&path) else {
                continue;
            };
            if let Ok(dev) = DrmDevice::open(&path) {
                out.push((path, kind, dev.driver));
            }
        }
        out.sort();
        out
    }

    /// Open the first node of `kind` whose driver is `driver` (e.g. `"vgem"`,
    /// `"virtio_gpu"`).
    pub fn find(driver: &str, kind: NodeKind) -> Result<Self> {
        let all = DrmDevice::list();
        for (path, k, d) in &all {
            if *k == kind && d == driver {
                return DrmDevice::open(path);
            }
        }
        let found = if all.is_empty() {
            "no nodes under /dev/dri".to_string()
        } else {
            all.iter()
                .map(|(p, _, d)| format!("{}={d}", p.display()))
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
            .finish()
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
