//! The dma-buf core: [`Dmabuf`] (format, modifier, size and 1..=4 planes of
//! dma-buf fds), validated against the kernel's view of every fd.
//!
//! - [`map`]: CPU access through the dma-buf fd, bracketed by
//!   `DMA_BUF_IOCTL_SYNC` START/END in RAII guards.
//! - [`fences`]: the implicit <-> explicit bridge: export the fences in a
//!   dma-buf's reservation object as a [`SyncFile`](crate::sync::SyncFile),
//!   import a sync_file as a read or write fence.
//!
//! ```no_run
//! use winsys::alloc::{udmabuf::Udmabuf, Allocator};
//! use winsys::dmabuf::Access;
//! use winsys::format::Fourcc;
//!
//! let buf = Udmabuf::open()?.allocate(256, 256, Fourcc::XRGB8888)?;
//! let mut map = buf.map(Access::ReadWrite)?;
//! {
//!     let mut cpu = map.write(None)?;      // SYNC START (WRITE)
//!     cpu.fill(0, 0xff)?;
//! }                                        // SYNC END (WRITE)
//! let cpu = map.read(None)?;               // waits for writers, SYNC START (READ)
//! let mut row = vec![0u8; 256 * 4];
//! cpu.read_bytes(0, 0, &mut row)?;         // a copy: the pages are shared
//! assert!(row.iter().all(|&b| b == 0xff));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use rustix::fs::SeekFrom;
use rustix::io::Errno;

use crate::format::{Fourcc, Modifier};
use crate::uapi::dma_buf as sys;

pub mod fences;
pub mod map;

pub use fences::{Attached, ImplicitFence};
pub use map::{DmabufMap, ReadGuard, WriteGuard};

/// Most planes a dma-buf image has (`DRM_FORMAT_MAX_PLANES`).
pub const MAX_PLANES: usize = 4;

/// Errors of the dma-buf core.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Width or height is zero.
    #[error("image size {width}x{height} is empty")]
    ZeroSize {
        /// Width asked for.
        width: u32,
        /// Height asked for.
        height: u32,
    },
    /// No planes, or more than [`MAX_PLANES`].
    #[error("{got} planes given; a dma-buf image has 1 to 4")]
    PlaneCount {
        /// Planes given.
        got: usize,
    },
    /// The format is not one winsys knows the layout of.
    #[error("unknown or unsupported format {0}")]
    UnknownFormat(Fourcc),
    /// The plane count does not match the format (and modifier).
    #[error("format {format} with modifier {modifier} needs {expected} plane(s), {got} given")]
    PlaneCountMismatch {
        /// The format.
        format: Fourcc,
        /// The modifier.
        modifier: Modifier,
        /// Planes the format has.
        expected: usize,
        /// Planes given.
        got: usize,
    },
    /// A plane's fd is not a dma-buf.
    #[error("plane {plane}: fd is not a dma-buf but {what}")]
    NotDmabuf {
        /// The plane index.
        plane: usize,
        /// What the fd is instead (closed fd, pipe, regular file, memfd,
        /// sync_file, ...).
        what: String,
    },
    /// The dma-buf behind a plane has no bytes.
    #[error("plane {plane}: dma-buf has size 0")]
    EmptyBuffer {
        /// The plane index.
        plane: usize,
    },
    /// A stride shorter than a row of pixels.
    #[error("plane {plane}: stride {stride} is smaller than a row ({min} bytes)")]
    StrideTooSmall {
        /// The plane index.
        plane: usize,
        /// The stride given.
        stride: u32,
        /// One row's bytes.
        min: u64,
    },
    /// A plane reaches past the end of its dma-buf.
    #[error("plane {plane}: bytes {offset}..{end} lie outside the dma-buf of {size} bytes")]
    PlaneOutOfBounds {
        /// The plane index.
        plane: usize,
        /// Its first byte.
        offset: u64,
        /// One past its last byte.
        end: u64,
        /// The dma-buf's size.
        size: u64,
    },
    /// Write access asked through a fd opened read-only.
    #[error("plane {plane}: write access through a read-only dma-buf fd")]
    ReadOnlyFd {
        /// The plane index.
        plane: usize,
    },
    /// A plane index past the image's planes.
    #[error("plane {index} does not exist: the image has {count} plane(s)")]
    PlaneIndex {
        /// The index asked for.
        index: usize,
        /// Planes the image has.
        count: usize,
    },
    /// A CPU copy reaching outside its plane.
    #[error(
        "plane {plane}: {len} bytes at offset {offset} reach past the plane's {plane_len} bytes"
    )]
    CopyOutOfBounds {
        /// The plane index.
        plane: usize,
        /// The offset in the plane.
        offset: usize,
        /// Bytes to copy.
        len: usize,
        /// The plane's bytes.
        plane_len: usize,
    },
    /// Row-wise copy of a plane whose layout is not linear.
    #[error("plane {plane}: rows are not addressable in a tiled layout; copy bytes instead")]
    RowsUnknown {
        /// The plane index.
        plane: usize,
    },
    /// A row buffer too small for the plane's rows (or a stride shorter
    /// than a row).
    #[error("plane {plane}: a buffer of {len} bytes at stride {stride} cannot hold the rows ({need} bytes needed, {row} per row)")]
    RowBuffer {
        /// The plane index.
        plane: usize,
        /// The buffer's bytes.
        len: usize,
        /// Its stride.
        stride: usize,
        /// Bytes it needs.
        need: usize,
        /// Bytes of one row.
        row: usize,
    },
    /// Another CPU guard of this process (through another map of the same
    /// dma-buf, or a GEM map) conflicts with the one asked for: a writer
    /// excludes everyone, readers exclude writers.
    #[error("another CPU guard of this process holds the dma-buf; {access:?} refused")]
    GuardBusy {
        /// The access asked for.
        access: Access,
    },
    /// Write access asked of a map made with [`Access::Read`].
    #[error("write access through a mapping made for Access::Read")]
    MapNotWritable,
    /// A wait did not finish within its timeout.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// The timeout.
        timeout: Duration,
    },
    /// The kernel lacks an ioctl (e.g. the dma-buf sync_file ioctls before
    /// Linux 6.0).
    #[error("{what} is not supported by this kernel ({errno})")]
    Unsupported {
        /// The missing ioctl.
        what: &'static str,
        /// The errno that said so.
        errno: Errno,
    },
    /// An error from a sync_file operation.
    #[error(transparent)]
    Sync(#[from] crate::sync::Error),
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

    /// The errno behind this error, where there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Os { errno, .. } | Error::Unsupported { errno, .. } => Some(*errno),
            Error::Timeout { .. } => Some(Errno::TIME),
            Error::Sync(e) => e.errno(),
            _ => None,
        }
    }
}

/// Result of the dma-buf core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A CPU or device access to a dma-buf: what a map guard begins, what an
/// exported fence is waited for, what an imported fence does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Reading: waits for writers only; a fence imported for it is a read
    /// fence.
    Read,
    /// Writing: waits for every reader and writer; a fence imported for it
    /// is a write fence.
    Write,
    /// Both.
    ReadWrite,
}

impl Access {
    /// The `DMA_BUF_SYNC_*` access bits.
    pub fn sync_flags(self) -> u64 {
        match self {
            Access::Read => sys::DMA_BUF_SYNC_READ,
            Access::Write => sys::DMA_BUF_SYNC_WRITE,
            Access::ReadWrite => sys::DMA_BUF_SYNC_RW,
        }
    }

    /// Whether this access writes.
    pub fn writes(self) -> bool {
        self != Access::Read
    }
}

/// Which dma-buf an fd refers to: its inode on the dma-buf pseudo file
/// system (`fstat`). Two fds of one dma-buf — a `dup`, or the fds a
/// Wayland client sends once per plane — have the same id; two different
/// dma-bufs never do while both exist on Linux 5.15 and later (a 64-bit
/// counter). Before 5.15 the inode came from a 32-bit counter shared with
/// pipes and sockets, which could in principle wrap onto a live dma-buf's
/// number: winsys then at worst treats two buffers as one (wrong pixels),
/// never touches memory outside the buffer it actually maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DmabufId {
    dev: u64,
    ino: u64,
}

impl DmabufId {
    /// The id of the dma-buf behind `fd` ([`Error::NotDmabuf`] for any
    /// other kind of fd).
    pub fn of(fd: impl AsFd) -> Result<Self> {
        let fd = fd.as_fd();
        check_dmabuf(fd).map_err(|e| e.for_plane(0))?;
        inode_id(fd).map_err(|e| e.for_plane(0))
    }

    /// The inode number (as `/proc/<pid>/fdinfo` shows as `ino:`).
    pub fn inode(&self) -> u64 {
        self.ino
    }
}

fn inode_id(fd: BorrowedFd<'_>) -> Result<DmabufId, FdCheck> {
    let st = rustix::fs::fstat(fd).map_err(|e| FdCheck::Os("fstat(dma-buf)", e))?;
    Ok(DmabufId {
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
    })
}

/// One plane: where its pixels are inside which dma-buf.
#[derive(Clone)]
pub struct Plane {
    fd: Arc<OwnedFd>,
    id: DmabufId,
    offset: u32,
    stride: u32,
    buffer_size: u64,
}

impl Plane {
    /// The dma-buf fd holding the plane (may be shared with other planes).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The shared owner of the fd.
    pub fn shared_fd(&self) -> &Arc<OwnedFd> {
        &self.fd
    }

    /// Which dma-buf holds the plane, whatever fd names it.
    pub fn id(&self) -> DmabufId {
        self.id
    }

    /// Byte offset of the plane's first row in the dma-buf.
    pub fn offset(&self) -> u32 {
        self.offset
    }

    /// Bytes from one row to the next.
    pub fn stride(&self) -> u32 {
        self.stride
    }

    /// Size of the whole dma-buf behind [`Plane::fd`] (lseek(SEEK_END)).
    pub fn buffer_size(&self) -> u64 {
        self.buffer_size
    }
}

impl fmt::Debug for Plane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plane")
            .field("fd", &self.fd.as_raw_fd())
            .field("inode", &self.id.ino)
            .field("offset", &self.offset)
            .field("stride", &self.stride)
            .field("buffer_size", &self.buffer_size)
            .finish()
    }
}

/// An image in one or more dma-bufs: format, modifier, size, planes.
///
/// Built with [`Dmabuf::builder`], which checks every fd and plane against
/// the kernel. Cloning is cheap and shares the fds.
///
/// Identity is by dma-buf, not by fd: two `Dmabuf`s are equal (and hash
/// alike) when they describe the same format, modifier and size over the
/// same dma-bufs ([`DmabufId`]) at the same offsets and strides — even if
/// every plane arrived as a different fd. Planes that share a dma-buf are
/// one buffer for mapping, fences and imports, however many fds name it.
#[derive(Clone, Debug)]
pub struct Dmabuf {
    format: Fourcc,
    modifier: Modifier,
    width: u32,
    height: u32,
    planes: Vec<Plane>,
}

impl PartialEq for Dmabuf {
    fn eq(&self, other: &Self) -> bool {
        (self.format, self.modifier, self.width, self.height)
            == (other.format, other.modifier, other.width, other.height)
            && self.planes.len() == other.planes.len()
            && self.identity().eq(other.identity())
    }
}

impl Eq for Dmabuf {}

impl std::hash::Hash for Dmabuf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.format, self.modifier, self.width, self.height).hash(state);
        for plane in self.identity() {
            plane.hash(state);
        }
    }
}

/// Collects planes for a [`Dmabuf`]; [`DmabufBuilder::build`] validates.
#[derive(Debug)]
pub struct DmabufBuilder {
    format: Fourcc,
    modifier: Modifier,
    width: u32,
    height: u32,
    planes: Vec<(Arc<OwnedFd>, u32, u32)>,
}

impl DmabufBuilder {
    /// Add the next plane: `fd` (an [`OwnedFd`], or an `Arc` shared with
    /// other planes), byte `offset` of its first row and `stride`.
    pub fn plane(mut self, fd: impl Into<Arc<OwnedFd>>, offset: u32, stride: u32) -> Self {
        self.planes.push((fd.into(), offset, stride));
        self
    }

    /// Check everything and build the [`Dmabuf`]:
    /// size not empty; 1..=4 planes; a known format whose plane count
    /// matches (a non-linear modifier may add auxiliary planes); each fd a
    /// dma-buf (fstatfs magic) of non-zero size (lseek(SEEK_END)); for a
    /// LINEAR layout each stride holds a row and each plane's rows fit in its
    /// dma-buf; for other layouts each offset lies inside its dma-buf.
    pub fn build(self) -> Result<Dmabuf> {
        let DmabufBuilder {
            format,
            modifier,
            width,
            height,
            planes,
        } = self;
        if width == 0 || height == 0 {
            return Err(Error::ZeroSize { width, height });
        }
        if planes.is_empty() || planes.len() > MAX_PLANES {
            return Err(Error::PlaneCount { got: planes.len() });
        }
        let infos = format.planes().ok_or(Error::UnknownFormat(format))?;
        let explicit_layout = modifier.is_linear() || modifier == Modifier::INVALID;
        let count_ok = if explicit_layout {
            planes.len() == infos.len()
        } else {
            planes.len() >= infos.len()
        };
        if !count_ok {
            return Err(Error::PlaneCountMismatch {
                format,
                modifier,
                expected: infos.len(),
                got: planes.len(),
            });
        }
        let mut out: Vec<Plane> = Vec::with_capacity(planes.len());
        for (index, (fd, offset, stride)) in planes.into_iter().enumerate() {
            let buffer_size = dmabuf_size(fd.as_fd()).map_err(|e| e.for_plane(index))?;
            let id = inode_id(fd.as_fd()).map_err(|e| e.for_plane(index))?;
            // Another fd of a dma-buf an earlier plane has: share that fd,
            // so the image holds one fd per dma-buf (the caller's extra fd
            // is closed when the builder drops it). The size checked below
            // is the size of the fd kept.
            let (fd, buffer_size) = match out.iter().find(|p| p.id == id) {
                Some(p) => (p.fd.clone(), p.buffer_size),
                None => (fd, buffer_size),
            };
            if buffer_size == 0 {
                return Err(Error::EmptyBuffer { plane: index });
            }
            let start = offset as u64;
            let end = match infos.get(index) {
                Some(info) if explicit_layout => {
                    let row = info.row_bytes(width);
                    if (stride as u64) < row {
                        return Err(Error::StrideTooSmall {
                            plane: index,
                            stride,
                            min: row,
                        });
                    }
                    start + stride as u64 * (info.height(height) as u64 - 1) + row
                }
                _ => start + 1,
            };
            if end > buffer_size {
                return Err(Error::PlaneOutOfBounds {
                    plane: index,
                    offset: start,
                    end,
                    size: buffer_size,
                });
            }
            out.push(Plane {
                fd,
                id,
                offset,
                stride,
                buffer_size,
            });
        }
        Ok(Dmabuf {
            format,
            modifier,
            width,
            height,
            planes: out,
        })
    }
}

/// Internal: a failure of a per-fd check, turned into a plane's error.
pub(crate) enum FdCheck {
    NotDmabuf(String),
    Os(&'static str, Errno),
}

impl FdCheck {
    /// The error for plane `plane` (0 for a lone fd).
    pub(crate) fn for_plane(self, plane: usize) -> Error {
        match self {
            FdCheck::NotDmabuf(what) => Error::NotDmabuf { plane, what },
            FdCheck::Os(op, errno) => Error::Os { op, errno },
        }
    }
}

/// Check that `fd` is a dma-buf (its file system is the dma-buf pseudo fs)
/// and return its size (lseek(SEEK_END); see dma-buf.c `dma_buf_llseek`).
pub(crate) fn dmabuf_size(fd: BorrowedFd<'_>) -> Result<u64, FdCheck> {
    check_dmabuf(fd)?;
    rustix::fs::seek(fd, SeekFrom::End(0)).map_err(|e| FdCheck::Os("lseek(dma-buf, SEEK_END)", e))
}

pub(crate) fn check_dmabuf(fd: BorrowedFd<'_>) -> Result<(), FdCheck> {
    let st = match rustix::fs::fstatfs(fd) {
        Ok(st) => st,
        Err(Errno::BADF) => {
            return Err(FdCheck::NotDmabuf("a closed or invalid fd (EBADF)".into()))
        }
        Err(e) => return Err(FdCheck::Os("fstatfs", e)),
    };
    if st.f_type as u32 != sys::DMA_BUF_MAGIC {
        return Err(FdCheck::NotDmabuf(crate::fd::describe(
            fd,
            st.f_type as u32,
        )));
    }
    Ok(())
}

impl Dmabuf {
    /// Start describing a `width` x `height` image of `format` laid out as
    /// `modifier`; add planes, then [`DmabufBuilder::build`].
    ///
    /// ```no_run
    /// # use std::os::fd::OwnedFd;
    /// # fn get_fd() -> OwnedFd { unimplemented!() }
    /// use winsys::dmabuf::Dmabuf;
    /// use winsys::format::{Fourcc, Modifier};
    /// let buf = Dmabuf::builder(1920, 1080, Fourcc::XRGB8888, Modifier::LINEAR)
    ///     .plane(get_fd(), 0, 1920 * 4)
    ///     .build()?;
    /// # Ok::<(), winsys::dmabuf::Error>(())
    /// ```
    pub fn builder(width: u32, height: u32, format: Fourcc, modifier: Modifier) -> DmabufBuilder {
        DmabufBuilder {
            format,
            modifier,
            width,
            height,
            planes: Vec::new(),
        }
    }

    /// The DRM format.
    pub fn format(&self) -> Fourcc {
        self.format
    }

    /// The format modifier.
    pub fn modifier(&self) -> Modifier {
        self.modifier
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The planes, in order.
    pub fn planes(&self) -> &[Plane] {
        &self.planes
    }

    /// The distinct dma-bufs behind the planes, each once (by
    /// [`DmabufId`], not fd number), in plane order.
    pub fn distinct_fds(&self) -> impl Iterator<Item = &Arc<OwnedFd>> {
        self.planes.iter().enumerate().filter_map(|(i, p)| {
            let first = self.planes[..i].iter().all(|q| q.id != p.id);
            first.then_some(&p.fd)
        })
    }

    /// Whether the planes live in more than one dma-buf (a "disjoint"
    /// image in Vulkan's terms).
    pub fn is_disjoint(&self) -> bool {
        self.planes.iter().any(|p| p.id != self.planes[0].id)
    }

    fn identity(&self) -> impl Iterator<Item = (DmabufId, u32, u32)> + '_ {
        self.planes.iter().map(|p| (p.id, p.offset, p.stride))
    }

    /// Name every dma-buf behind the image (`DMA_BUF_SET_NAME`; at most 31
    /// bytes are kept), shown in `/proc/*/fdinfo` and debugfs.
    pub fn set_name(&self, name: &str) -> Result<()> {
        for fd in self.distinct_fds() {
            let mut arg: [u8; sys::DMA_BUF_NAME_LEN] = crate::uapi::string_to_c_chars(name);
            sys::DMA_BUF_SET_NAME
                .call(fd, &mut arg)
                .map_err(Error::os("DMA_BUF_SET_NAME"))?;
        }
        Ok(())
    }
}
