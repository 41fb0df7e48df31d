//! `include/uapi/linux/udmabuf.h`

use super::{opcode, Ioctl};
use rustix::ioctl::Opcode;

pub const UDMABUF_FLAGS_CLOEXEC: u32 = 0x01;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct udmabuf_create {
    pub memfd: u32,
    pub flags: u32,
    pub offset: u64,
    pub size: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct udmabuf_create_item {
    pub memfd: u32,
    pub pad: u32,
    pub offset: u64,
    pub size: u64,
}

/// `struct udmabuf_create_list` with its flexible array sized `N`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct udmabuf_create_list<const N: usize> {
    pub flags: u32,
    pub count: u32,
    pub list: [udmabuf_create_item; N],
}

/// The header the kernel's opcode is computed from.
#[repr(C)]
pub struct udmabuf_create_list_header {
    pub flags: u32,
    pub count: u32,
}

/// Most items [`UDMABUF_CREATE_LIST`] accepts per call here (the kernel's
/// default `list_limit` is 1024).
pub const UDMABUF_LIST_MAX: usize = 16;

pub const CREATE_OPCODE: Opcode = opcode::write::<udmabuf_create>(b'u', 0x42);
pub const CREATE_LIST_OPCODE: Opcode = opcode::write::<udmabuf_create_list_header>(b'u', 0x43);

// SAFETY: opcodes and structs as in udmabuf.h. The list ioctl reads the header
// and then `count` items that follow it; the array type holds
// `UDMABUF_LIST_MAX` of them and callers never set `count` above that.
pub const UDMABUF_CREATE: Ioctl<CREATE_OPCODE, udmabuf_create> = unsafe { Ioctl::new() };
pub const UDMABUF_CREATE_LIST: Ioctl<CREATE_LIST_OPCODE, udmabuf_create_list<UDMABUF_LIST_MAX>> =
    unsafe { Ioctl::new() };
