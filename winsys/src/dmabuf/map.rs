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
//! The bytes are shared memory: the kernel, a device or another process
//! holding the same dma-buf may write them while a guard is open (a guard
//! orders *cooperating* users, it cannot stop anyone else). So the everyday
//! API never hands out a Rust slice over them: guards copy in and out —
//! [`ReadGuard::read_bytes`], [`ReadGuard::read_rows`] (stride-aware),
//! [`ReadGuard::to_vec`], [`WriteGuard::write_bytes`],
//! [`WriteGuard::write_rows`], [`WriteGuard::fill`] — which is as fast as a
//! slice `memcpy` and sound whatever else writes the pages (the worst a
//! foreign writer can cause is torn pixels). Code that can promise nobody
//! else writes during the guard may borrow the bytes directly with the
//! `unsafe` [`ReadGuard::plane_slice`] / [`WriteGuard::plane_slice_mut`].
//!
//! A write guard needs `&mut` of its map, so one map has at most one writer;
//! across maps, the process keeps a table of open guards per dma-buf
//! ([`super::DmabufId`]): readers share, a writer is alone, and a guard that
//! would overlap a conflicting one of another map in this process is
//! refused at once with [`Error::GuardBusy`] (never blocks, never deadlocks)
//! — so two threads can never copy into and out of the same bytes at once.
//! `EINTR` is retried; `EAGAIN` is retried until the timeout. With a timeout,
//! the guard first polls the dma-bufs for the access (POLLIN: no writer
//! pending; POLLOUT: nothing pending) and returns [`Error::Timeout`] instead
//! of blocking. The kernel offers no bounded SYNC START: after the poll said
//! ready, START still waits for a fence attached in the instant between the
//! two calls — a wait the kernel's `dma_fence` contract bounds (every fence
//! signals in finite time), not this crate.

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use rustix::event::PollFlags;
use rustix::fs::OFlags;
use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

use super::{Access, Dmabuf, Error, Result};
use crate::sync::Deadline;
use crate::uapi::dma_buf as sys;

/// One mmap of one dma-buf, unmapped on drop (so a failure part-way
/// through [`Dmabuf::map`] unmaps what was already mapped).
struct Mapped {
    fd: Arc<OwnedFd>,
    id: super::DmabufId,
    ptr: NonNull<u8>,
    len: usize,
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly one mmap made in `Dmabuf::map`,
        // unmapped only here; no slice outlives the DmabufMap owning this.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A plane's bytes inside a [`Mapped`], and its rows where the layout is
/// known (LINEAR).
#[derive(Debug, Clone, Copy)]
struct PlaneRange {
    mapping: usize,
    start: usize,
    len: usize,
    stride: usize,
    /// `(bytes of pixels per row, rows)` for a known (linear) layout.
    rows: Option<(usize, usize)>,
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
    /// Make what devices wrote visible to CPU readers that reach the same
    /// pages another way than a mapping of this dma-buf (the memfd behind a
    /// udmabuf, a wl_shm pool over that memfd): `DMA_BUF_IOCTL_SYNC` START
    /// then END for READ on each distinct dma-buf, the bracket a read
    /// mapping would make, without mapping. Call it once the writes are
    /// done (their fence signalled).
    pub fn sync_for_cpu_read(&self) -> Result<()> {
        let mut done: Vec<&Arc<OwnedFd>> = Vec::new();
        for p in self.planes() {
            let fd = p.shared_fd();
            if done.iter().any(|d| Arc::ptr_eq(d, fd)) {
                continue;
            }
            done.push(fd);
            let read = Access::Read.sync_flags();
            dma_buf_sync(fd.as_fd(), read | sys::DMA_BUF_SYNC_START)?;
            dma_buf_sync(fd.as_fd(), read | sys::DMA_BUF_SYNC_END)?;
        }
        Ok(())
    }

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
            let mapping = match maps.iter().position(|m| m.id == p.id()) {
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
                        id: p.id(),
                        ptr,
                        len,
                    });
                    maps.len() - 1
                }
            };
            // Clamped to the mapping actually used, whatever the plane says:
            // no copy can reach past it.
            let start = (p.offset() as usize).min(maps[mapping].len);
            let len = self.plane_len(index).min(maps[mapping].len - start);
            planes.push(PlaneRange {
                mapping,
                start,
                len,
                stride: p.stride() as usize,
                rows: self.plane_rows(index),
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
    /// For tiled layouts (no rows known) a plane reaches to the next plane
    /// that starts after it in the same dma-buf (an auxiliary or CCS plane
    /// is not part of it), or else to the end of the dma-buf.
    fn plane_len(&self, index: usize) -> usize {
        let p = &self.planes()[index];
        let rest = p.buffer_size().saturating_sub(p.offset() as u64);
        let len = match self.plane_rows(index) {
            Some((_, rows)) => (p.stride() as u64 * rows as u64).min(rest),
            None => self
                .planes()
                .iter()
                .filter(|q| q.id() == p.id() && q.offset() > p.offset())
                .map(|q| (q.offset() - p.offset()) as u64)
                .min()
                .unwrap_or(rest)
                .min(rest),
        };
        usize::try_from(len).unwrap_or(usize::MAX)
    }

    /// `(pixel bytes per row, rows)` of plane `index` where the layout is
    /// explicit (LINEAR, or INVALID = the driver's implicit linear-like
    /// layout with the given strides); `None` for tiled layouts.
    fn plane_rows(&self, index: usize) -> Option<(usize, usize)> {
        let explicit =
            self.modifier().is_linear() || self.modifier() == crate::format::Modifier::INVALID;
        let info = self.format().planes()?.get(index).copied()?;
        explicit.then(|| {
            (
                info.row_bytes(self.width()) as usize,
                info.height(self.height()) as usize,
            )
        })
    }
}

/// Open CPU guards of this process per dma-buf: `n > 0` readers, or `-1`
/// for one writer.
static GUARDS: std::sync::Mutex<Vec<(super::DmabufId, isize)>> = std::sync::Mutex::new(Vec::new());

/// Register a guard for `access` on every dma-buf of `ids`, or none of them.
pub(crate) fn claim(ids: &[super::DmabufId], access: Access) -> Result<()> {
    let mut table = GUARDS.lock().unwrap_or_else(|e| e.into_inner());
    let held = |id: &super::DmabufId| table.iter().find(|(i, _)| i == id).map(|(_, n)| *n);
    for id in ids {
        match (held(id), access.writes()) {
            (None, _) => {}
            (Some(n), false) if n > 0 => {}
            (Some(_), _) => return Err(Error::GuardBusy { access }),
        }
    }
    for id in ids {
        match table.iter_mut().find(|(i, _)| i == id) {
            Some((_, n)) => *n += 1,
            None => table.push((*id, if access.writes() { -1 } else { 1 })),
        }
    }
    Ok(())
}

/// Undo [`claim`].
pub(crate) fn release(ids: &[super::DmabufId], access: Access) {
    let mut table = GUARDS.lock().unwrap_or_else(|e| e.into_inner());
    for id in ids {
        if let Some(pos) = table.iter().position(|(i, _)| i == id) {
            let n = &mut table[pos].1;
            if access.writes() || *n <= 1 {
                table.swap_remove(pos);
            } else {
                *n -= 1;
            }
        }
    }
}

impl DmabufMap {
    fn ids(&self) -> Vec<super::DmabufId> {
        self.maps.iter().map(|m| m.id).collect()
    }

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
        let ids = self.ids();
        claim(&ids, access)?;
        let started = self.sync_start(access, timeout);
        if started.is_err() {
            release(&ids, access);
        }
        started
    }

    fn sync_start(&self, access: Access, timeout: Option<Duration>) -> Result<()> {
        let deadline = Deadline::after(timeout);
        let timed_out = || Error::Timeout {
            what: "dma-buf fences before CPU access",
            timeout: timeout.unwrap_or(Duration::MAX),
        };
        if timeout.is_some() {
            let events = if access.writes() {
                PollFlags::OUT
            } else {
                PollFlags::IN
            };
            for m in &self.maps {
                let ready = crate::sync::poll_ready(m.fd.as_fd(), events, deadline.remaining())
                    .map_err(Error::os("poll(dma-buf)"))?;
                if !ready {
                    return Err(timed_out());
                }
            }
        }
        for (i, m) in self.maps.iter().enumerate() {
            let start = access.sync_flags() | sys::DMA_BUF_SYNC_START;
            if let Err(e) = dma_buf_sync_until(&m.fd, start, &deadline).map_err(|e| match e {
                None => timed_out(),
                Some(e) => e,
            }) {
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
        release(&self.ids(), access);
        result
    }

    /// Number of planes.
    pub fn plane_count(&self) -> usize {
        self.planes.len()
    }

    /// Number of mmaps: one per distinct dma-buf ([`super::DmabufId`]),
    /// however many planes or fds share it.
    pub fn mapping_count(&self) -> usize {
        self.maps.len()
    }

    fn range(&self, plane: usize) -> Result<PlaneRange> {
        self.planes.get(plane).copied().ok_or(Error::PlaneIndex {
            index: plane,
            count: self.planes.len(),
        })
    }

    /// Pointer to byte `offset` of `plane`, after checking that `len` bytes
    /// from there lie inside the plane.
    fn at(&self, plane: usize, offset: usize, len: usize) -> Result<*mut u8> {
        let r = self.range(plane)?;
        match offset.checked_add(len) {
            Some(end) if end <= r.len => {}
            _ => {
                return Err(Error::CopyOutOfBounds {
                    plane,
                    offset,
                    len,
                    plane_len: r.len,
                })
            }
        }
        let m = &self.maps[r.mapping];
        // SAFETY: `r.start + r.len <= m.len` (clamped in `map`) and
        // `offset + len <= r.len`: the result stays inside the mapping.
        Ok(unsafe { m.ptr.as_ptr().add(r.start + offset) })
    }

    /// `(pixel bytes per row, rows, stride)` of a plane with a known layout.
    fn rows(&self, plane: usize) -> Result<(usize, usize, usize)> {
        let r = self.range(plane)?;
        let (row, rows) = r.rows.ok_or(Error::RowsUnknown { plane })?;
        Ok((row, rows, r.stride))
    }

    fn copy_out(&self, plane: usize, offset: usize, dst: &mut [u8]) -> Result<()> {
        let src = self.at(plane, offset, dst.len())?;
        // SAFETY: `src..src + dst.len()` lies in the live mapping (`at`);
        // `dst` is our own exclusive memory, so the two cannot overlap. No
        // thread of this process writes these bytes meanwhile: this guard is
        // registered (`claim`), which excludes writers through any other map
        // or GemMap. Devices and other processes are outside Rust's memory
        // model: through a raw pointer they can tear pixels, not break a
        // reference.
        unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn copy_rows_out(&self, plane: usize, dst: &mut [u8], dst_stride: usize) -> Result<()> {
        let (row, rows, stride) = self.rows(plane)?;
        check_packed(plane, row, rows, dst.len(), dst_stride)?;
        if stride == row && dst_stride == row {
            return self.copy_out(plane, 0, &mut dst[..row * rows]);
        }
        for y in 0..rows {
            self.copy_out(plane, y * stride, &mut dst[y * dst_stride..][..row])?;
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<()> {
        match self.writable {
            true => Ok(()),
            false => Err(Error::MapNotWritable),
        }
    }

    fn copy_in(&mut self, plane: usize, offset: usize, src: &[u8]) -> Result<()> {
        self.check_writable()?;
        let dst = self.at(plane, offset, src.len())?;
        // SAFETY: `dst..dst + src.len()` lies in the live, writable mapping
        // (`at`, `check_writable`), and this write guard is registered alone
        // for the dma-buf in this process (`claim`), so no other thread
        // reads or writes these bytes. `src` may be any readable memory,
        // even a slice the caller borrowed (unsafely) from this mapping, so
        // `copy` (memmove semantics) is used, which allows overlap.
        unsafe { std::ptr::copy(src.as_ptr(), dst, src.len()) };
        Ok(())
    }

    fn copy_rows_in(&mut self, plane: usize, src: &[u8], src_stride: usize) -> Result<()> {
        let (row, rows, stride) = self.rows(plane)?;
        check_packed(plane, row, rows, src.len(), src_stride)?;
        if stride == row && src_stride == row {
            return self.copy_in(plane, 0, &src[..row * rows]);
        }
        for y in 0..rows {
            self.copy_in(plane, y * stride, &src[y * src_stride..][..row])?;
        }
        Ok(())
    }

    fn fill_plane(&mut self, plane: usize, value: u8) -> Result<()> {
        self.check_writable()?;
        let len = self.range(plane)?.len;
        let dst = self.at(plane, 0, len)?;
        // SAFETY: the whole plane lies in the live, writable mapping.
        unsafe { std::ptr::write_bytes(dst, value, len) };
        Ok(())
    }

    /// # Safety
    /// See [`ReadGuard::plane_slice`].
    unsafe fn slice(&self, plane: usize) -> Result<&[u8]> {
        let len = self.range(plane)?.len;
        let ptr = self.at(plane, 0, len)?;
        // SAFETY: in bounds of the live mapping (`at`); that nothing writes
        // the bytes while the slice lives is the caller's promise.
        Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
    }

    /// # Safety
    /// See [`WriteGuard::plane_slice_mut`].
    unsafe fn slice_mut(&mut self, plane: usize) -> Result<&mut [u8]> {
        self.check_writable()?;
        let len = self.range(plane)?.len;
        let ptr = self.at(plane, 0, len)?;
        // SAFETY: in bounds of the live, writable mapping; `&mut self` keeps
        // other slices of this map away; everything else is the caller's
        // promise.
        Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
    }
}

/// Checks a packed-rows buffer: `len` bytes at `stride` must hold `rows`
/// rows of `row` bytes.
fn check_packed(plane: usize, row: usize, rows: usize, len: usize, stride: usize) -> Result<()> {
    let need = if rows == 0 {
        0
    } else {
        stride.saturating_mul(rows - 1).saturating_add(row)
    };
    if stride < row || len < need {
        return Err(Error::RowBuffer {
            plane,
            len,
            stride,
            need,
            row,
        });
    }
    Ok(())
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

/// The copy-out operations both guards offer.
macro_rules! reads {
    () => {
        /// Number of planes.
        pub fn plane_count(&self) -> usize {
            self.map.planes.len()
        }

        /// Bytes of plane `plane` the CPU sees (stride x rows for a linear
        /// layout, up to the end of the dma-buf otherwise).
        pub fn plane_len(&self, plane: usize) -> Result<usize> {
            Ok(self.map.range(plane)?.len)
        }

        /// Copy `dst.len()` bytes of plane `plane`, from byte `offset` of
        /// the plane, into `dst` ([`Error::CopyOutOfBounds`] past its end).
        pub fn read_bytes(&self, plane: usize, offset: usize, dst: &mut [u8]) -> Result<()> {
            self.map.copy_out(plane, offset, dst)
        }

        /// The whole of plane `plane`, as laid out (with its stride).
        pub fn to_vec(&self, plane: usize) -> Result<Vec<u8>> {
            let mut out = vec![0u8; self.plane_len(plane)?];
            self.map.copy_out(plane, 0, &mut out)?;
            Ok(out)
        }

        /// Copy the pixel rows of a linear plane into `dst`, row `y` at
        /// `y * dst_stride` (`dst_stride` = the row's bytes for a packed
        /// image), leaving the plane's padding behind.
        /// [`Error::RowsUnknown`] for a tiled layout, [`Error::RowBuffer`]
        /// when `dst` cannot hold the rows.
        pub fn read_rows(&self, plane: usize, dst: &mut [u8], dst_stride: usize) -> Result<()> {
            self.map.copy_rows_out(plane, dst, dst_stride)
        }
    };
}

impl ReadGuard<'_> {
    reads!();

    /// Borrow plane `plane`'s bytes directly, without a copy.
    ///
    /// # Safety
    /// For as long as the slice lives, nothing may write these bytes: no
    /// other mapping in this process (a second [`DmabufMap`] of the same
    /// dma-buf), no device, no other process. The guard's SYNC START only
    /// orders the users who attach fences; it does not stop anyone.
    pub unsafe fn plane_slice(&self, plane: usize) -> Result<&[u8]> {
        // SAFETY: forwarded to the caller.
        unsafe { self.map.slice(plane) }
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
    reads!();

    /// Copy `src` into plane `plane` from byte `offset` of the plane
    /// ([`Error::CopyOutOfBounds`] past its end).
    pub fn write_bytes(&mut self, plane: usize, offset: usize, src: &[u8]) -> Result<()> {
        self.map.copy_in(plane, offset, src)
    }

    /// Copy packed rows (row `y` at `y * src_stride` of `src`) into the
    /// pixel rows of a linear plane, leaving its padding alone.
    pub fn write_rows(&mut self, plane: usize, src: &[u8], src_stride: usize) -> Result<()> {
        self.map.copy_rows_in(plane, src, src_stride)
    }

    /// Set every byte of plane `plane` (padding included) to `value`.
    pub fn fill(&mut self, plane: usize, value: u8) -> Result<()> {
        self.map.fill_plane(plane, value)
    }

    /// Borrow plane `plane`'s bytes for writing, without a copy.
    ///
    /// # Safety
    /// For as long as the slice lives, nothing else may read or write these
    /// bytes: no other mapping in this process (a second [`DmabufMap`] of
    /// the same dma-buf), no device, no other process.
    pub unsafe fn plane_slice_mut(&mut self, plane: usize) -> Result<&mut [u8]> {
        // SAFETY: forwarded to the caller.
        unsafe { self.map.slice_mut(plane) }
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

/// `DMA_BUF_IOCTL_SYNC` with `flags` (`EINTR` retried). `EAGAIN`, which
/// some exporters give while busy, is retried for at most a second; use the
/// guards of [`DmabufMap`] for a caller-chosen bound.
pub fn dma_buf_sync(fd: impl AsFd, flags: u64) -> Result<()> {
    dma_buf_sync_until(fd, flags, &Deadline::after(Some(Duration::from_secs(1)))).map_err(|e| {
        e.unwrap_or(Error::Os {
            op: "DMA_BUF_IOCTL_SYNC",
            errno: Errno::AGAIN,
        })
    })
}

/// `DMA_BUF_IOCTL_SYNC` with `flags`, retrying `EAGAIN` (with a short sleep)
/// until `deadline`; `Err(None)` when it passed.
fn dma_buf_sync_until(fd: impl AsFd, flags: u64, deadline: &Deadline) -> Result<(), Option<Error>> {
    let mut arg = sys::dma_buf_sync { flags };
    loop {
        match sys::DMA_BUF_IOCTL_SYNC.call(fd.as_fd(), &mut arg) {
            Ok(_) => return Ok(()),
            Err(Errno::AGAIN) if deadline.passed() => return Err(None),
            Err(Errno::AGAIN) => std::thread::sleep(Duration::from_micros(100)),
            Err(errno) => {
                return Err(Some(Error::Os {
                    op: "DMA_BUF_IOCTL_SYNC",
                    errno,
                }))
            }
        }
    }
}
