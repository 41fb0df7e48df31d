//! `include/uapi/drm/virtgpu_drm.h` (only what winsys asks: whether the
//! host gives the guest 3D).

use super::{opcode, PointerIoctl};
use rustix::ioctl::Opcode;

/// Does the host render for the guest (virgl or venus)?
pub const VIRTGPU_PARAM_3D_FEATURES: u64 = 1;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct drm_virtgpu_getparam {
    pub param: u64,
    /// A user pointer to an `int` the kernel writes the value into.
    pub value: u64,
}

/// `DRM_COMMAND_BASE + DRM_VIRTGPU_GETPARAM`
pub const GETPARAM_OPCODE: Opcode = opcode::read_write::<drm_virtgpu_getparam>(b'd', 0x43);

// SAFETY: opcode and struct as in virtgpu_drm.h; `value` is a user pointer
// to one `int`, which callers vouch for (PointerIoctl::call).
pub const DRM_IOCTL_VIRTGPU_GETPARAM: PointerIoctl<GETPARAM_OPCODE, drm_virtgpu_getparam> =
    unsafe { PointerIoctl::new() };
