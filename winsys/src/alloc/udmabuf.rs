//! `/dev/udmabuf`: dma-bufs over the pages of a sealed memfd.
//!
//! The memfd must be shmem, sealed against shrinking (`F_SEAL_SHRINK`) and
//! not sealed against writing; offsets and sizes are page aligned; the
//! kernel caps one buffer at `size_limit_mb` (64 MiB by default). Each rule
//! is checked here first so a mistake gets a typed error, not a bare EINVAL.
//! Kernel: `drivers/dma-buf/udmabuf.c`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{MemfdFlags, Mode, OFlags, SealFlags};

use super::{linear_dmabuf, linear_layout, page_size, Allocator, Error, Result};
use crate::dmabuf::Dmabuf;
use crate::fd::owned_from_kernel;
use crate::format::Fourcc;
use crate::uapi::udmabuf as sys;

const PATH: &str = "/dev/udmabuf";

/// Set to `1`, [`Udmabuf::open`] fails as on a kernel without udmabuf
/// (`ENOENT`): how tests reach the paths for such machines on one that has
/// it.
pub const DISABLE_UDMABUF_ENV: &str = "WINSYS_NO_UDMABUF";

/// The udmabuf device.
#[derive(Debug)]
pub struct Udmabuf {
    dev: OwnedFd,
}

/// Make a memfd of `size` bytes sealed as udmabuf needs (`F_SEAL_SHRINK`).
pub fn sealed_memfd(name: &str, size: u64) -> Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .map_err(Error::os("memfd_create"))?;
    rustix::fs::ftruncate(&fd, size).map_err(Error::os("ftruncate(memfd)"))?;
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK).map_err(Error::os("fcntl(F_ADD_SEALS)"))?;
    Ok(fd)
}

impl Udmabuf {
    /// Open `/dev/udmabuf`.
    pub fn open() -> Result<Self> {
        if std::env::var_os(DISABLE_UDMABUF_ENV).is_some_and(|v| v == "1") {
            return Err(Error::open(PATH)(rustix::io::Errno::NOENT));
        }
        let dev = rustix::fs::open(PATH, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .map_err(Error::open(PATH))?;
        Ok(Udmabuf { dev })
    }

    /// A dma-buf over `size` bytes of `memfd` from `offset`
    /// (`UDMABUF_CREATE`). The dma-buf keeps the pages; `memfd` may be
    /// closed afterwards, or kept to reach the same bytes.
    pub fn create(&self, memfd: impl AsFd, offset: u64, size: u64) -> Result<OwnedFd> {
        let memfd = memfd.as_fd();
        check_range(memfd, offset, size)?;
        let mut arg = sys::udmabuf_create {
            memfd: memfd.as_raw_fd() as u32,
            flags: sys::UDMABUF_FLAGS_CLOEXEC,
            offset,
            size,
        };
        let fd = sys::UDMABUF_CREATE
            .call(&self.dev, &mut arg)
            .map_err(Error::os("UDMABUF_CREATE"))?;
        Ok(owned_from_kernel(fd))
    }

    /// One dma-buf over several `(memfd, offset, size)` ranges, in order
    /// (`UDMABUF_CREATE_LIST`, at most 16 ranges here).
    pub fn create_list(&self, ranges: &[(BorrowedFd<'_>, u64, u64)]) -> Result<OwnedFd> {
        if ranges.is_empty() {
            return Err(Error::ZeroSize);
        }
        if ranges.len() > sys::UDMABUF_LIST_MAX {
            return Err(Error::TooLarge {
                what: "udmabuf list length",
                size: ranges.len() as u64,
                limit: sys::UDMABUF_LIST_MAX as u64,
            });
        }
        let mut arg = sys::udmabuf_create_list {
            flags: sys::UDMABUF_FLAGS_CLOEXEC,
            count: ranges.len() as u32,
            list: [sys::udmabuf_create_item::default(); sys::UDMABUF_LIST_MAX],
        };
        let mut total = 0;
        for (item, &(memfd, offset, size)) in arg.list.iter_mut().zip(ranges) {
            check_range(memfd, offset, size)?;
            total = u64::checked_add(total, size).ok_or(Error::TooLarge {
                what: "udmabuf list total (u64)",
                size: u64::MAX,
                limit: u64::MAX,
            })?;
            *item = sys::udmabuf_create_item {
                memfd: memfd.as_raw_fd() as u32,
                pad: 0,
                offset,
                size,
            };
        }
        check_limit(total)?;
        let fd = sys::UDMABUF_CREATE_LIST
            .call(&self.dev, &mut arg)
            .map_err(Error::os("UDMABUF_CREATE_LIST"))?;
        Ok(owned_from_kernel(fd))
    }

    /// A LINEAR image and the memfd whose pages it uses: writes through
    /// either side are seen through the other (after SYNC START on the
    /// dma-buf side).
    pub fn allocate_with_memfd(
        &self,
        width: u32,
        height: u32,
        format: Fourcc,
    ) -> Result<(Dmabuf, OwnedFd)> {
        let (planes, size) = linear_layout(width, height, format)?;
        let memfd = sealed_memfd("winsys-udmabuf", size)?;
        let fd = self.create(&memfd, 0, size)?;
        let dmabuf = linear_dmabuf(fd, width, height, format, &planes)?;
        Ok((dmabuf, memfd))
    }
}

impl Allocator for Udmabuf {
    fn allocate(&self, width: u32, height: u32, format: Fourcc) -> Result<Dmabuf> {
        Ok(self.allocate_with_memfd(width, height, format)?.0)
    }
}

/// The checks udmabuf.c makes, done first for typed errors.
fn check_range(memfd: BorrowedFd<'_>, offset: u64, size: u64) -> Result<()> {
    let page = page_size();
    if size == 0 {
        return Err(Error::ZeroSize);
    }
    if !offset.is_multiple_of(page) {
        return Err(Error::Unaligned {
            what: "offset",
            value: offset,
            page,
        });
    }
    if !size.is_multiple_of(page) {
        return Err(Error::Unaligned {
            what: "size",
            value: size,
            page,
        });
    }
    let seals = rustix::fs::fcntl_get_seals(memfd).map_err(|errno| {
        Error::BadMemfd(format!(
            "not a memfd with sealing ({}: {errno})",
            describe(memfd)
        ))
    })?;
    if !seals.contains(SealFlags::SHRINK) {
        return Err(Error::BadMemfd("memfd lacks F_SEAL_SHRINK".into()));
    }
    if seals.contains(SealFlags::WRITE) {
        return Err(Error::BadMemfd("memfd has F_SEAL_WRITE".into()));
    }
    let st = rustix::fs::fstat(memfd).map_err(Error::os("fstat(memfd)"))?;
    let end = offset.checked_add(size).ok_or(Error::ZeroSize)?;
    if end > st.st_size as u64 {
        return Err(Error::BadMemfd(format!(
            "range {offset:#x}..{end:#x} is past the memfd's {} bytes",
            st.st_size
        )));
    }
    check_limit(size)
}

fn describe(fd: BorrowedFd<'_>) -> String {
    let magic = rustix::fs::fstatfs(fd)
        .map(|s| s.f_type as u32)
        .unwrap_or(0);
    crate::fd::describe(fd, magic)
}

/// The module's `size_limit_mb`, where sysfs shows it (read once per
/// process: it is a module parameter, fixed at load).
fn size_limit_mb() -> Option<u64> {
    static LIMIT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::fs::read_to_string("/sys/module/udmabuf/parameters/size_limit_mb")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    })
}

fn check_limit(size: u64) -> Result<()> {
    match size_limit_mb() {
        Some(mb) if size > mb.saturating_mul(1 << 20) => Err(Error::TooLarge {
            what: "udmabuf size_limit_mb",
            size,
            limit: mb.saturating_mul(1 << 20),
        }),
        _ => Ok(()),
    }
}
