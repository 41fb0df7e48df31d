//! `include/uapi/linux/dma-buf.h`

use super::{opcode, Ioctl};
use rustix::ioctl::Opcode;

pub const DMA_BUF_SYNC_READ: u64 = 1;
pub const DMA_BUF_SYNC_WRITE: u64 = 2;
pub const DMA_BUF_SYNC_RW: u64 = DMA_BUF_SYNC_READ | DMA_BUF_SYNC_WRITE;
pub const DMA_BUF_SYNC_START: u64 = 0;
pub const DMA_BUF_SYNC_END: u64 = 1 << 2;
pub const DMA_BUF_SYNC_VALID_FLAGS_MASK: u64 = DMA_BUF_SYNC_RW | DMA_BUF_SYNC_END;

/// Longest name `DMA_BUF_SET_NAME` keeps, NUL included.
pub const DMA_BUF_NAME_LEN: usize = 32;

/// `DMA_BUF_MAGIC`: `f_type` of a dma-buf fd's file system (fstatfs).
pub const DMA_BUF_MAGIC: u32 = 0x444d_4142;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct dma_buf_sync {
    pub flags: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct dma_buf_export_sync_file {
    pub flags: u32,
    pub fd: i32,
}

pub type dma_buf_import_sync_file = dma_buf_export_sync_file;

pub const SYNC_OPCODE: Opcode = opcode::write::<dma_buf_sync>(b'b', 0);
/// `DMA_BUF_SET_NAME_B`: the argument pointer is the name string itself.
pub const SET_NAME_OPCODE: Opcode = opcode::write::<u64>(b'b', 1);
pub const EXPORT_SYNC_FILE_OPCODE: Opcode = opcode::read_write::<dma_buf_export_sync_file>(b'b', 2);
pub const IMPORT_SYNC_FILE_OPCODE: Opcode = opcode::write::<dma_buf_import_sync_file>(b'b', 3);

// SAFETY (all below): opcode and struct as declared in dma-buf.h; none of the
// structs carries a user pointer. SET_NAME reads a NUL-terminated string of at
// most DMA_BUF_NAME_LEN bytes at the argument pointer, which the array holds.
pub const DMA_BUF_IOCTL_SYNC: Ioctl<SYNC_OPCODE, dma_buf_sync> = unsafe { Ioctl::new() };
pub const DMA_BUF_SET_NAME: Ioctl<SET_NAME_OPCODE, [u8; DMA_BUF_NAME_LEN]> =
    unsafe { Ioctl::new() };
pub const DMA_BUF_IOCTL_EXPORT_SYNC_FILE: Ioctl<EXPORT_SYNC_FILE_OPCODE, dma_buf_export_sync_file> =
    unsafe { Ioctl::new() };
pub const DMA_BUF_IOCTL_IMPORT_SYNC_FILE: Ioctl<IMPORT_SYNC_FILE_OPCODE, dma_buf_import_sync_file> =
    unsafe { Ioctl::new() };
