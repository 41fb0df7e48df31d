//! `include/uapi/linux/dma-heap.h`

use super::{opcode, Ioctl};
use rustix::ioctl::Opcode;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct dma_heap_allocation_data {
    pub len: u64,
    pub fd: u32,
    pub fd_flags: u32,
    pub heap_flags: u64,
}

pub const ALLOC_OPCODE: Opcode = opcode::read_write::<dma_heap_allocation_data>(b'H', 0);

// SAFETY: opcode and struct as in dma-heap.h; no user pointers.
pub const DMA_HEAP_IOCTL_ALLOC: Ioctl<ALLOC_OPCODE, dma_heap_allocation_data> =
    unsafe { Ioctl::new() };
