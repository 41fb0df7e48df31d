//! CPU access through the dma-buf fd.
//!
//! [`Dmabuf::map`] maps every distinct dma-buf of an image once (MAP_SHARED,
//! protection matching the access asked for). Pixels are reachable only
//! through a guard:
//!
//! - [`DmabufMap::read`] issues `DMA_BUF_IOCTL_SYNC` START with READ on every
//!   dma-buf (the kernel waits for pending write fences, then makes CPU
//!   caches coherent); dropping the [`ReadGuard`] issues END with READ.
//! - [`DmabufMap::write`] / [`DmabufMap::read_write`] do the same with WRITE
//!   or READ|WRITE (waiting for every fence) and give `&mut` slices.
//!
//! The borrow checker keeps every slice inside its guard, and a write guard
//! needs `&mut` of the map, so there is at most one writer. `EINTR` and
//! `EAGAIN` from the ioctl are retried. With a timeout, the guard first polls
//! the dma-bufs for the access (POLLIN: no writer pending; POLLOUT: nothing
//! pending) and returns [`Error::Timeout`] instead of blocking forever.

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::PollFlags;
use rustix::fs::OFlags;
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

use super::{Access, Dmabuf, Error, Result};
use crate::uapi::dma_buf as sys;

/// One mmap of one dma-buf.
struct Mapped {
    fd: Arc<OwnedFd>,
    ptr: NonNull<u8>,
    len: usize,
}

/// A plane's bytes inside a [`Mapped`].
#[derive(Debug, Clone, Copy)]
struct PlaneRange {
    mapping: usize,
    start: usize,
    len: usize,
}

/// Every dma-buf of a [`Dmabuf`] mapped into this process. Unmapped on drop.
pub struct DmabufMap {
    maps: Vec<Mapped>,
    planes: Vec<PlaneRange>,
    writable: bool,
}

// SAFETY: the mappings are plain shared memory owned by this value; shared
// access (`&self`) only reads through a ReadGuard, mutable slices need
// `&mut self`, so moving or sharing it between threads is as safe as a Vec.
unsafe impl Send for DmabufMap {}
// SAFETY: see `Send`; `&DmabufMap` hands out only shared slices.
unsafe impl Sync for DmabufMap {}

impl Dmabuf {
    /// Map every dma-buf of the image for `access` (MAP_SHARED; PROT_READ for
    /// [`Access::Read`], PROT_READ|PROT_WRITE otherwise).
    ///
    /// Writing needs fds opened read-write (PRIME export with `DRM_RDWR`,
    /// heap `O_RDWR`): a read-only fd gives [`Error::ReadOnlyFd`].
    pub fn map(&self, access: Access) -> Result<DmabufMap> {
        let writable = access.writes();
        if writable {
            for (plane, p) in self.planes().iter().enumerate() {
                let fl = rustix::fs::fcntl_getfl(p.fd()).map_err(Error::os("fcntl(F_GETFL)"))?;
                if fl & OFlags::RWMODE == OFlags::RDONLY {
                    return Err(Error::ReadOnlyFd { plane });
                }
            }
        }
        let prot = if writable {
            ProtFlags::READ | ProtFlags::WRITE
        } else {
            ProtFlags::READ
        };
        let mut maps: Vec<Mapped> = Vec::new();
        let mut planes = Vec::with_capacity(self.planes().len());
        for (index, p) in self.planes().iter().enumerate() {
            let mapping = match maps.iter().position(|m| Arc::ptr_eq(&m.fd, p.shared_fd())) {
                Some(i) => i,
                None => {
                    let len = usize::try_from(p.buffer_size()).map_err(|_| Error::Os {
                        op: "mmap(dma-buf)",
                        errno: Errno::OVERFLOW,
                    })?;
                    // SAFETY: a fresh mapping at an address the kernel picks
                    // (null hint), so no existing memory is replaced; `len` is
                    // the dma-buf's size; the pointer is only used through
                    // this map's guards and unmapped once in Drop.
                    let ptr = unsafe {
                        rustix::mm::mmap(
                            std::ptr::null_mut(),
                            len,
                            prot,
                            MapFlags::SHARED,
                            p.fd(),
                            0,
                        )
                    }
                    .map_err(|errno| match errno {
                        Errno::ACCESS if writable => Error::ReadOnlyFd { plane: index },
                        errno => Error::Os {
                            op: "mmap(dma-buf)",
                            errno,
                        },
                    })?;
                    let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(Error::Os {
                        op: "mmap(dma-buf)",
                        errno: Errno::FAULT,
                    })?;
                    maps.push(Mapped {
                        fd: p.shared_fd().clone(),
                        ptr,
                        len,
                    });
                    maps.len() - 1
                }
            };
            let start = p.offset() as usize;
            let len = self.plane_len(index).min(maps[mapping].len - start);
            planes.push(PlaneRange {
                mapping,
                start,
                len,
            });
        }
        Ok(DmabufMap {
            maps,
            planes,
            writable,
        })
    }

    /// Bytes the CPU sees of plane `index`: the rows (stride x plane height)
    /// for known layouts, up to the end of the dma-buf otherwise.
    fn plane_len(&self, index: usize) -> usize {
        let p = &self.planes()[index];
        let rest = (p.buffer_size() - p.offset() as u64) as usize;
        let explicit =
            self.modifier().is_linear() || self.modifier() == crate::format::Modifier::INVALID;
        match self.format().planes().and_then(|infos| infos.get(index)) {
            Some(info) if explicit => {
                let rows = info.height(self.height()) as u64;
                (p.stride() as u64 * rows).min(rest as u64) as usize
            }
            _ => rest,
        }
    }
}

impl DmabufMap {
    /// Begin reading: SYNC START(READ) on every dma-buf, waiting for pending
    /// writers. With `timeout`, gives [`Error::Timeout`] if they are not done
    /// in time (nothing started).
    pub fn read(&self, timeout: Option<Duration>) -> Result<ReadGuard<'_>> {
        self.begin(Access::Read, timeout)?;
        Ok(ReadGuard { map: self })
    }

    /// Begin writing: SYNC START(WRITE), waiting for every pending reader and
    /// writer. The CPU must not read through this guard (caches may not be
    /// made coherent for reading): use [`DmabufMap::read_write`] for that.
    pub fn write(&mut self, timeout: Option<Duration>) -> Result<WriteGuard<'_>> {
        self.begin_mut(Access::Write, timeout)
    }

    /// Begin reading and writing: SYNC START(READ|WRITE).
    pub fn read_write(&mut self, timeout: Option<Duration>) -> Result<WriteGuard<'_>> {
        self.begin_mut(Access::ReadWrite, timeout)
    }

    fn begin_mut(&mut self, access: Access, timeout: Option<Duration>) -> Result<WriteGuard<'_>> {
        if !self.writable {
            return Err(Error::MapNotWritable);
        }
        self.begin(access, timeout)?;
        Ok(WriteGuard { map: self, access })
    }

    fn begin(&self, access: Access, timeout: Option<Duration>) -> Result<()> {
        if let Some(timeout) = timeout {
            let events = if access.writes() {
                PollFlags::OUT
            } else {
                PollFlags::IN
            };
            let deadline = Instant::now() + timeout;
            for m in &self.maps {
                let left = deadline.saturating_duration_since(Instant::now());
                let ready = crate::sync::poll_ready(m.fd.as_fd(), events, Some(left))
                    .map_err(Error::os("poll(dma-buf)"))?;
                if !ready {
                    return Err(Error::Timeout {
                        what: "dma-buf fences before CPU access",
                        timeout,
                    });
                }
            }
        }
        for (i, m) in self.maps.iter().enumerate() {
            if let Err(e) = dma_buf_sync(&m.fd, access.sync_flags() | sys::DMA_BUF_SYNC_START) {
                // Undo the ones already started so START/END stay paired.
                for done in &self.maps[..i] {
                    let _ = dma_buf_sync(&done.fd, access.sync_flags() | sys::DMA_BUF_SYNC_END);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn end(&self, access: Access) -> Result<()> {
        let mut result = Ok(());
        for m in &self.maps {
            let r = dma_buf_sync(&m.fd, access.sync_flags() | sys::DMA_BUF_SYNC_END);
            if result.is_ok() {
                result = r;
            }
        }
        result
    }

    /// Number of planes.
    pub fn plane_count(&self) -> usize {
        self.planes.len()
    }

    fn slice(&self, plane: usize) -> &[u8] {
        let r = self.planes[plane];
        let m = &self.maps[r.mapping];
        // SAFETY: `start + len <= m.len` (clamped in `map`), the mapping lives
        // as long as `self`, and the only `&mut` slices come from a
        // WriteGuard, which holds `&mut self`.
        unsafe { std::slice::from_raw_parts(m.ptr.as_ptr().add(r.start), r.len) }
    }

    fn slice_mut(&mut self, plane: usize) -> &mut [u8] {
        let r = self.planes[plane];
        let m = &self.maps[r.mapping];
        // SAFETY: in bounds as in `slice`; the mapping is writable (checked in
        // `begin_mut`); `&mut self` makes this the only live slice. Planes
        // sharing a dma-buf never overlap in a valid layout.
        unsafe { std::slice::from_raw_parts_mut(m.ptr.as_ptr().add(r.start), r.len) }
    }
}

impl Drop for DmabufMap {
    fn drop(&mut self) {
        for m in &self.maps {
            // SAFETY: `ptr`/`len` are exactly one mmap made in `Dmabuf::map`,
            // unmapped only here; no slice outlives `self`.
            let _ = unsafe { rustix::mm::munmap(m.ptr.as_ptr().cast(), m.len) };
        }
    }
}

impl fmt::Debug for DmabufMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmabufMap")
            .field("mappings", &self.maps.len())
            .field("planes", &self.planes)
            .field("writable", &self.writable)
            .finish()
    }
}

/// CPU read access to every plane; SYNC END(READ) on drop.
#[derive(Debug)]
pub struct ReadGuard<'a> {
    map: &'a DmabufMap,
}

impl ReadGuard<'_> {
    /// The bytes of plane `index`.
    pub fn plane(&self, index: usize) -> &[u8] {
        self.map.slice(index)
    }

    /// End the access now, reporting an END failure (drop ignores it).
    pub fn end(self) -> Result<()> {
        let map = self.map;
        std::mem::forget(self);
        map.end(Access::Read)
    }
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        let _ = self.map.end(Access::Read);
    }
}

/// CPU write (or read-write) access to every plane; SYNC END with the same
/// flags on drop.
#[derive(Debug)]
pub struct WriteGuard<'a> {
    map: &'a mut DmabufMap,
    access: Access,
}

impl WriteGuard<'_> {
    /// The bytes of plane `index`, for reading (meaningful with
    /// [`DmabufMap::read_write`]).
    pub fn plane(&self, index: usize) -> &[u8] {
        self.map.slice(index)
    }

    /// The bytes of plane `index`, for writing.
    pub fn plane_mut(&mut self, index: usize) -> &mut [u8] {
        self.map.slice_mut(index)
    }

    /// The access this guard began (Write or ReadWrite).
    pub fn access(&self) -> Access {
        self.access
    }

    /// End the access now, reporting an END failure (drop ignores it).
    pub fn end(self) -> Result<()> {
        let me = std::mem::ManuallyDrop::new(self);
        me.map.end(me.access)
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        let _ = self.map.end(self.access);
    }
}

/// `DMA_BUF_IOCTL_SYNC` with `flags`, retrying `EINTR` and `EAGAIN`.
pub fn dma_buf_sync(fd: impl AsFd, flags: u64) -> Result<()> {
    let mut arg = sys::dma_buf_sync { flags };
    loop {
        match sys::DMA_BUF_IOCTL_SYNC.call(fd.as_fd(), &mut arg) {
            Ok(_) => return Ok(()),
            Err(Errno::AGAIN) => continue,
            Err(errno) => {
                return Err(Error::Os {
                    op: "DMA_BUF_IOCTL_SYNC",
                    errno,
                })
            }
        }
    }
}
