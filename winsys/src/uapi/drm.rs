//! `include/uapi/drm/drm.h` and `drm_mode.h`: the core ioctls winsys uses
//! (version, caps, GEM/PRIME, dumb buffers, syncobj).

use super::{opcode, Ioctl, PointerIoctl};
use rustix::ioctl::Opcode;

const BASE: u8 = b'd';

pub const DRM_CAP_DUMB_BUFFER: u64 = 0x1;
pub const DRM_CAP_PRIME: u64 = 0x5;
pub const DRM_CAP_SYNCOBJ: u64 = 0x13;
pub const DRM_CAP_SYNCOBJ_TIMELINE: u64 = 0x14;

pub const DRM_PRIME_CAP_IMPORT: u64 = 0x1;
pub const DRM_PRIME_CAP_EXPORT: u64 = 0x2;

/// `DRM_CLOEXEC` (= `O_CLOEXEC`) and `DRM_RDWR` (= `O_RDWR`).
pub const DRM_CLOEXEC: u32 = 0o2000000;
pub const DRM_RDWR: u32 = 0o2;

pub const DRM_SYNCOBJ_CREATE_SIGNALED: u32 = 1 << 0;
pub const DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE: u32 = 1 << 0;
pub const DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_EXPORT_SYNC_FILE: u32 = 1 << 0;
pub const DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL: u32 = 1 << 0;
pub const DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT: u32 = 1 << 1;
pub const DRM_SYNCOBJ_WAIT_FLAGS_WAIT_AVAILABLE: u32 = 1 << 2;
pub const DRM_SYNCOBJ_WAIT_FLAGS_WAIT_DEADLINE: u32 = 1 << 3;
pub const DRM_SYNCOBJ_QUERY_FLAGS_LAST_SUBMITTED: u32 = 1 << 0;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct drm_version {
    pub version_major: i32,
    pub version_minor: i32,
    pub version_patchlevel: i32,
    pub name_len: usize,
    pub name: *mut u8,
    pub date_len: usize,
    pub date: *mut u8,
    pub desc_len: usize,
    pub desc: *mut u8,
}

impl Default for drm_version {
    fn default() -> Self {
        Self {
            version_major: 0,
            version_minor: 0,
            version_patchlevel: 0,
            name_len: 0,
            name: std::ptr::null_mut(),
            date_len: 0,
            date: std::ptr::null_mut(),
            desc_len: 0,
            desc: std::ptr::null_mut(),
        }
    }
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct drm_get_cap {
    pub capability: u64,
    pub value: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct drm_gem_close {
    pub handle: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct drm_prime_handle {
    pub handle: u32,
    pub flags: u32,
    pub fd: i32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct drm_mode_create_dumb {
    pub height: u32,
    pub width: u32,
    pub bpp: u32,
    pub flags: u32,
    pub handle: u32,
    pub pitch: u32,
    pub size: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct drm_mode_map_dumb {
    pub handle: u32,
    pub pad: u32,
    pub offset: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct drm_syncobj_create {
    pub handle: u32,
    pub flags: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct drm_syncobj_destroy {
    pub handle: u32,
    pub pad: u32,
}

/// The 6.12 layout (no `point` member).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct drm_syncobj_handle {
    pub handle: u32,
    pub flags: u32,
    pub fd: i32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct drm_syncobj_transfer {
    pub src_handle: u32,
    pub dst_handle: u32,
    pub src_point: u64,
    pub dst_point: u64,
    pub flags: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct drm_syncobj_timeline_wait {
    /// User pointer to `count_handles` u32 handles.
    pub handles: u64,
    /// User pointer to `count_handles` u64 points.
    pub points: u64,
    /// Absolute CLOCK_MONOTONIC timeout.
    pub timeout_nsec: i64,
    pub count_handles: u32,
    pub flags: u32,
    pub first_signaled: u32,
    pub pad: u32,
    pub deadline_nsec: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct drm_syncobj_timeline_array {
    /// User pointer to `count_handles` u32 handles.
    pub handles: u64,
    /// User pointer to `count_handles` u64 points (read or written).
    pub points: u64,
    pub count_handles: u32,
    pub flags: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct drm_syncobj_eventfd {
    pub handle: u32,
    pub flags: u32,
    pub point: u64,
    pub fd: i32,
    pub pad: u32,
}

pub const DROP_MASTER_OPCODE: Opcode = opcode::none(BASE, 0x1f);
pub const VERSION_OPCODE: Opcode = opcode::read_write::<drm_version>(BASE, 0x00);
pub const GEM_CLOSE_OPCODE: Opcode = opcode::write::<drm_gem_close>(BASE, 0x09);
pub const GET_CAP_OPCODE: Opcode = opcode::read_write::<drm_get_cap>(BASE, 0x0c);
pub const PRIME_HANDLE_TO_FD_OPCODE: Opcode = opcode::read_write::<drm_prime_handle>(BASE, 0x2d);
pub const PRIME_FD_TO_HANDLE_OPCODE: Opcode = opcode::read_write::<drm_prime_handle>(BASE, 0x2e);
pub const MODE_CREATE_DUMB_OPCODE: Opcode = opcode::read_write::<drm_mode_create_dumb>(BASE, 0xb2);
pub const MODE_MAP_DUMB_OPCODE: Opcode = opcode::read_write::<drm_mode_map_dumb>(BASE, 0xb3);
pub const SYNCOBJ_CREATE_OPCODE: Opcode = opcode::read_write::<drm_syncobj_create>(BASE, 0xbf);
pub const SYNCOBJ_DESTROY_OPCODE: Opcode = opcode::read_write::<drm_syncobj_destroy>(BASE, 0xc0);
pub const SYNCOBJ_HANDLE_TO_FD_OPCODE: Opcode =
    opcode::read_write::<drm_syncobj_handle>(BASE, 0xc1);
pub const SYNCOBJ_FD_TO_HANDLE_OPCODE: Opcode =
    opcode::read_write::<drm_syncobj_handle>(BASE, 0xc2);
pub const SYNCOBJ_TIMELINE_WAIT_OPCODE: Opcode =
    opcode::read_write::<drm_syncobj_timeline_wait>(BASE, 0xca);
pub const SYNCOBJ_QUERY_OPCODE: Opcode =
    opcode::read_write::<drm_syncobj_timeline_array>(BASE, 0xcb);
pub const SYNCOBJ_TRANSFER_OPCODE: Opcode = opcode::read_write::<drm_syncobj_transfer>(BASE, 0xcc);
pub const SYNCOBJ_TIMELINE_SIGNAL_OPCODE: Opcode =
    opcode::read_write::<drm_syncobj_timeline_array>(BASE, 0xcd);
pub const SYNCOBJ_EVENTFD_OPCODE: Opcode = opcode::read_write::<drm_syncobj_eventfd>(BASE, 0xcf);

// SAFETY (all `Ioctl::new` below): opcode and struct as declared in drm.h /
// drm_mode.h, and none of these structs carries a user pointer.
pub const DRM_IOCTL_GEM_CLOSE: Ioctl<GEM_CLOSE_OPCODE, drm_gem_close> = unsafe { Ioctl::new() };
pub const DRM_IOCTL_GET_CAP: Ioctl<GET_CAP_OPCODE, drm_get_cap> = unsafe { Ioctl::new() };
pub const DRM_IOCTL_PRIME_HANDLE_TO_FD: Ioctl<PRIME_HANDLE_TO_FD_OPCODE, drm_prime_handle> =
    unsafe { Ioctl::new() };
pub const DRM_IOCTL_PRIME_FD_TO_HANDLE: Ioctl<PRIME_FD_TO_HANDLE_OPCODE, drm_prime_handle> =
    unsafe { Ioctl::new() };
pub const DRM_IOCTL_MODE_CREATE_DUMB: Ioctl<MODE_CREATE_DUMB_OPCODE, drm_mode_create_dumb> =
    unsafe { Ioctl::new() };
pub const DRM_IOCTL_MODE_MAP_DUMB: Ioctl<MODE_MAP_DUMB_OPCODE, drm_mode_map_dumb> =
    unsafe { Ioctl::new() };
pub const DRM_IOCTL_SYNCOBJ_CREATE: Ioctl<SYNCOBJ_CREATE_OPCODE, drm_syncobj_create> =
    unsafe { Ioctl::new() };
pub const DRM_IOCTL_SYNCOBJ_DESTROY: Ioctl<SYNCOBJ_DESTROY_OPCODE, drm_syncobj_destroy> =
    unsafe { Ioctl::new() };
pub const DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD: Ioctl<SYNCOBJ_HANDLE_TO_FD_OPCODE, drm_syncobj_handle> =
    unsafe { Ioctl::new() };
pub const DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE: Ioctl<SYNCOBJ_FD_TO_HANDLE_OPCODE, drm_syncobj_handle> =
    unsafe { Ioctl::new() };
pub const DRM_IOCTL_SYNCOBJ_TRANSFER: Ioctl<SYNCOBJ_TRANSFER_OPCODE, drm_syncobj_transfer> =
    unsafe { Ioctl::new() };
pub const DRM_IOCTL_SYNCOBJ_EVENTFD: Ioctl<SYNCOBJ_EVENTFD_OPCODE, drm_syncobj_eventfd> =
    unsafe { Ioctl::new() };

// SAFETY (all `PointerIoctl::new` below): opcode and struct as declared in
// drm.h; these structs carry user pointers, so each call is `unsafe`.
pub const DRM_IOCTL_VERSION: PointerIoctl<VERSION_OPCODE, drm_version> =
    unsafe { PointerIoctl::new() };
pub const DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT: PointerIoctl<
    SYNCOBJ_TIMELINE_WAIT_OPCODE,
    drm_syncobj_timeline_wait,
> = unsafe { PointerIoctl::new() };
pub const DRM_IOCTL_SYNCOBJ_QUERY: PointerIoctl<SYNCOBJ_QUERY_OPCODE, drm_syncobj_timeline_array> =
    unsafe { PointerIoctl::new() };
pub const DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL: PointerIoctl<
    SYNCOBJ_TIMELINE_SIGNAL_OPCODE,
    drm_syncobj_timeline_array,
> = unsafe { PointerIoctl::new() };

/// `DRM_IOCTL_DROP_MASTER` (no argument): give up DRM master if this fd
/// holds it (`EINVAL` otherwise).
pub(crate) fn drop_master(fd: std::os::fd::BorrowedFd<'_>) -> Result<(), rustix::io::Errno> {
    // SAFETY: DROP_MASTER takes no argument and touches no user memory.
    unsafe { rustix::ioctl::ioctl(fd, rustix::ioctl::NoArg::<DROP_MASTER_OPCODE>::new()) }
}
