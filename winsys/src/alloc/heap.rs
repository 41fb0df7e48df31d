//! `/dev/dma_heap/*`: dma-bufs from a DMA-BUF heap (`system`: plain pages).
//! Kernel: `drivers/dma-buf/dma-heap.c`, `heaps/system_heap.c`.

use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use super::{linear_dmabuf, linear_layout, Allocator, Error, Result};
use crate::dmabuf::Dmabuf;
use crate::fd::owned_from_kernel;
use crate::format::Fourcc;
use crate::uapi::dma_heap as sys;

/// An open DMA-BUF heap.
#[derive(Debug)]
pub struct DmaHeap {
    dev: OwnedFd,
}

impl DmaHeap {
    /// The heaps this machine has (the names under `/dev/dma_heap`,
    /// sorted; empty where there is no such folder).
    pub fn names() -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir("/dev/dma_heap")
            .map(|dir| {
                dir.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Open `/dev/dma_heap/system`.
    pub fn open_system() -> Result<Self> {
        Self::open("system")
    }

    /// Open the heap `/dev/dma_heap/NAME`.
    pub fn open(name: &str) -> Result<Self> {
        let path = Path::new("/dev/dma_heap").join(name);
        let dev = rustix::fs::open(&path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|errno| Error::Open {
                path: path.clone(),
                errno,
            })?;
        Ok(DmaHeap { dev })
    }

    /// A dma-buf of `len` bytes, opened read-write (`DMA_HEAP_IOCTL_ALLOC`).
    pub fn alloc(&self, len: u64) -> Result<OwnedFd> {
        self.alloc_with(len, OFlags::RDWR)
    }

    /// A dma-buf of `len` bytes whose fd is opened read-only: it can be
    /// mapped for reading only, e.g. to hand a consumer that must not write.
    pub fn alloc_read_only(&self, len: u64) -> Result<OwnedFd> {
        self.alloc_with(len, OFlags::RDONLY)
    }

    fn alloc_with(&self, len: u64, mode: OFlags) -> Result<OwnedFd> {
        if len == 0 {
            return Err(Error::ZeroSize);
        }
        let mut arg = sys::dma_heap_allocation_data {
            len,
            fd: 0,
            fd_flags: (mode | OFlags::CLOEXEC).bits(),
            heap_flags: 0,
        };
        sys::DMA_HEAP_IOCTL_ALLOC
            .call(&self.dev, &mut arg)
            .map_err(Error::os("DMA_HEAP_IOCTL_ALLOC"))?;
        Ok(owned_from_kernel(arg.fd as i32))
    }
}

impl Allocator for DmaHeap {
    fn allocate(&self, width: u32, height: u32, format: Fourcc) -> Result<Dmabuf> {
        let (planes, size) = linear_layout(width, height, format)?;
        let fd = self.alloc(size)?;
        let dmabuf = linear_dmabuf(fd, width, height, format, &planes)?;
        Ok(dmabuf)
    }
}
