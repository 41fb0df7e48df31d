//! `include/uapi/linux/sync_file.h`

use super::{opcode, Ioctl, PointerIoctl};
use rustix::ioctl::Opcode;

/// `ANON_INODE_FS_MAGIC`: sync_files are anonymous inodes.
pub const ANON_INODE_FS_MAGIC: u32 = 0x0904_1934;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct sync_merge_data {
    pub name: [u8; 32],
    pub fd2: i32,
    pub fence: i32,
    pub flags: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct sync_fence_info {
    pub obj_name: [u8; 32],
    pub driver_name: [u8; 32],
    pub status: i32,
    pub flags: u32,
    pub timestamp_ns: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct sync_file_info {
    pub name: [u8; 32],
    pub status: i32,
    pub flags: u32,
    pub num_fences: u32,
    pub pad: u32,
    /// User pointer to `num_fences` [`sync_fence_info`]s.
    pub sync_fence_info: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct sync_set_deadline {
    pub deadline_ns: u64,
    pub pad: u64,
}

pub const MERGE_OPCODE: Opcode = opcode::read_write::<sync_merge_data>(b'>', 3);
pub const FILE_INFO_OPCODE: Opcode = opcode::read_write::<sync_file_info>(b'>', 4);
pub const SET_DEADLINE_OPCODE: Opcode = opcode::write::<sync_set_deadline>(b'>', 5);

// SAFETY: opcodes and structs as declared in sync_file.h. MERGE and
// SET_DEADLINE carry no pointers; FILE_INFO carries `sync_fence_info`.
pub const SYNC_IOC_MERGE: Ioctl<MERGE_OPCODE, sync_merge_data> = unsafe { Ioctl::new() };
pub const SYNC_IOC_FILE_INFO: PointerIoctl<FILE_INFO_OPCODE, sync_file_info> =
    unsafe { PointerIoctl::new() };
pub const SYNC_IOC_SET_DEADLINE: Ioctl<SET_DEADLINE_OPCODE, sync_set_deadline> =
    unsafe { Ioctl::new() };
