//! `include/uapi/drm/vgem_drm.h`

use super::{opcode, Ioctl};
use rustix::ioctl::Opcode;

pub const VGEM_FENCE_WRITE: u32 = 0x1;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct drm_vgem_fence_attach {
    pub handle: u32,
    pub flags: u32,
    pub out_fence: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct drm_vgem_fence_signal {
    pub fence: u32,
    pub flags: u32,
}

/// `DRM_COMMAND_BASE + DRM_VGEM_FENCE_ATTACH`
pub const FENCE_ATTACH_OPCODE: Opcode = opcode::read_write::<drm_vgem_fence_attach>(b'd', 0x41);
/// `DRM_COMMAND_BASE + DRM_VGEM_FENCE_SIGNAL`
pub const FENCE_SIGNAL_OPCODE: Opcode = opcode::write::<drm_vgem_fence_signal>(b'd', 0x42);

// SAFETY: opcodes and structs as in vgem_drm.h; no user pointers.
pub const DRM_IOCTL_VGEM_FENCE_ATTACH: Ioctl<FENCE_ATTACH_OPCODE, drm_vgem_fence_attach> =
    unsafe { Ioctl::new() };
pub const DRM_IOCTL_VGEM_FENCE_SIGNAL: Ioctl<FENCE_SIGNAL_OPCODE, drm_vgem_fence_signal> =
    unsafe { Ioctl::new() };
