//! Every kernel interface winsys speaks, defined once.
//!
//! Each submodule mirrors one uapi header: `#[repr(C)]` structs, flag
//! constants and ioctl definitions, nothing else. An ioctl is a typed constant
//! ([`Ioctl`]) that binds its opcode to the one argument type the kernel
//! expects, so call sites cannot pass the wrong struct.
//!
//! The structs and constants are public (plain data); issuing an ioctl from
//! outside the crate is `unsafe` ([`Ioctl::call_unchecked`]), because the
//! structs carry raw fds, GEM and syncobj handles and array counts that the
//! kernel trusts: closing a handle another owner still uses, or a count
//! larger than an array, is exactly what the safe API exists to prevent.
//!
//! The definitions follow Linux 6.12's headers:
//! `include/uapi/linux/{dma-buf,sync_file,udmabuf,dma-heap}.h` and
//! `include/uapi/drm/{drm,drm_mode,vgem_drm,virtgpu_drm}.h`.

#![allow(non_camel_case_types, missing_docs)]

use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::os::fd::AsFd;

use rustix::io::Errno;
use rustix::ioctl::{Ioctl as RustixIoctl, IoctlOutput, Opcode};

pub mod dma_buf;
pub mod dma_heap;
pub mod drm;
pub mod sync_file;
pub mod udmabuf;
pub mod vgem;
pub mod virtgpu;

pub use rustix::ioctl::opcode;

/// One ioctl: an opcode bound to the argument type the kernel reads (and
/// possibly writes back).
///
/// Built only in this module tree, with an `unsafe` constructor whose caller
/// vouches that `OP` takes a pointer to a `T`.
pub struct Ioctl<const OP: Opcode, T> {
    _arg: PhantomData<fn(&mut T)>,
}

impl<const OP: Opcode, T> Ioctl<OP, T> {
    /// # Safety
    /// `OP` must be an ioctl whose argument is a pointer to a `T` laid out as
    /// the kernel's struct, and which touches no memory beyond that struct
    /// (no embedded user pointers). Ioctls with embedded pointers use
    /// [`Ioctl::new_with_pointers`] and [`Ioctl::call_with_pointers`].
    pub(crate) const unsafe fn new() -> Self {
        Self { _arg: PhantomData }
    }

    /// Issue the ioctl on `fd`, retrying on `EINTR`. Returns the ioctl's
    /// non-negative return value (a new fd number for some ioctls).
    ///
    /// Crate-private: every caller inside winsys passes fds and handles it
    /// owns (the invariant of the type that issues the call).
    pub(crate) fn call(&self, fd: impl AsFd, arg: &mut T) -> Result<c_int, Errno> {
        // SAFETY: the constructor's contract says OP takes exactly a `*mut T`
        // and reads/writes only that struct, which `arg` provides; the
        // handles in it belong to the calling winsys object.
        unsafe { raw_call::<OP, T>(fd, arg) }
    }

    /// Issue the ioctl on `fd` from outside winsys (tests, benchmarks,
    /// tools comparing against the raw kernel interface), retrying `EINTR`.
    ///
    /// # Safety
    /// Every fd, GEM handle and syncobj handle inside `arg` must be one the
    /// caller owns, or whose owner expects this operation on it (e.g. no
    /// `GEM_CLOSE` of a handle a live winsys buffer holds), and any fd the
    /// kernel returns must be adopted exactly once. The kernel's own
    /// checks then keep the process's memory safe.
    pub unsafe fn call_unchecked(&self, fd: impl AsFd, arg: &mut T) -> Result<c_int, Errno> {
        // SAFETY: OP takes exactly a `*mut T` (constructor contract); the
        // handles are the caller's responsibility (this function's contract).
        unsafe { raw_call::<OP, T>(fd, arg) }
    }
}

/// An ioctl whose argument struct carries user pointers (arrays the kernel
/// reads or fills).
pub struct PointerIoctl<const OP: Opcode, T> {
    _arg: PhantomData<fn(&mut T)>,
}

impl<const OP: Opcode, T> PointerIoctl<OP, T> {
    /// # Safety
    /// `OP` must be an ioctl whose argument is a pointer to a `T` laid out as
    /// the kernel's struct.
    pub(crate) const unsafe fn new() -> Self {
        Self { _arg: PhantomData }
    }

    /// Issue the ioctl on `fd`, retrying on `EINTR`.
    ///
    /// # Safety
    /// Every user pointer inside `arg` must be valid for the reads and writes
    /// the kernel does through it (its documented element type and count).
    pub unsafe fn call(&self, fd: impl AsFd, arg: &mut T) -> Result<c_int, Errno> {
        // SAFETY: OP matches T (constructor contract); embedded pointers are
        // the caller's responsibility (this function's contract).
        unsafe { raw_call::<OP, T>(fd, arg) }
    }
}

/// # Safety
/// `OP` must take a `*mut T`, and any pointer inside `*arg` must be valid.
unsafe fn raw_call<const OP: Opcode, T>(fd: impl AsFd, arg: &mut T) -> Result<c_int, Errno> {
    let fd = fd.as_fd();
    loop {
        // SAFETY: forwarded from this function's contract.
        match unsafe { rustix::ioctl::ioctl(fd, ArgPtr::<OP, T>(arg)) } {
            Err(Errno::INTR) => continue,
            other => return other,
        }
    }
}

/// rustix ioctl pattern: pass `&mut T`, return the ioctl's integer result.
struct ArgPtr<'a, const OP: Opcode, T>(&'a mut T);

// SAFETY: `as_ptr` hands the kernel a pointer to a live, exclusively borrowed
// `T`; the output is the plain return value and reads no memory.
unsafe impl<const OP: Opcode, T> RustixIoctl for ArgPtr<'_, OP, T> {
    type Output = c_int;
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        OP
    }

    fn as_ptr(&mut self) -> *mut c_void {
        (self.0 as *mut T).cast()
    }

    unsafe fn output_from_ptr(out: IoctlOutput, _: *mut c_void) -> rustix::io::Result<c_int> {
        Ok(out)
    }
}

/// Copy a NUL-padded C `char[N]` into a Rust string (lossy on bad UTF-8).
pub(crate) fn c_chars_to_string(chars: &[u8]) -> String {
    let end = chars.iter().position(|&b| b == 0).unwrap_or(chars.len());
    String::from_utf8_lossy(&chars[..end]).into_owned()
}

/// Copy `s` into a NUL-terminated `char[N]`, truncated to `N - 1` bytes.
pub(crate) fn string_to_c_chars<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let len = s.len().min(N - 1);
    out[..len].copy_from_slice(&s.as_bytes()[..len]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_match_the_kernel_headers() {
        // Values from a 6.12 x86-64 build of the uapi headers.
        assert_eq!(dma_buf::SYNC_OPCODE, 0x4008_6200);
        assert_eq!(dma_buf::EXPORT_SYNC_FILE_OPCODE, 0xc008_6202);
        assert_eq!(dma_buf::IMPORT_SYNC_FILE_OPCODE, 0x4008_6203);
        assert_eq!(sync_file::MERGE_OPCODE, 0xc030_3e03);
        assert_eq!(sync_file::FILE_INFO_OPCODE, 0xc038_3e04);
        assert_eq!(udmabuf::CREATE_OPCODE, 0x4018_7542);
        assert_eq!(dma_heap::ALLOC_OPCODE, 0xc018_4800);
        assert_eq!(drm::SYNCOBJ_TIMELINE_WAIT_OPCODE, 0xc030_64ca);
        assert_eq!(drm::SYNCOBJ_EVENTFD_OPCODE, 0xc018_64cf);
        assert_eq!(drm::SYNCOBJ_TRANSFER_OPCODE, 0xc020_64cc);
        assert_eq!(drm::SYNCOBJ_HANDLE_TO_FD_OPCODE, 0xc010_64c1);
        assert_eq!(drm::MODE_CREATE_DUMB_OPCODE, 0xc020_64b2);
        assert_eq!(vgem::FENCE_ATTACH_OPCODE, 0xc010_6441);
        assert_eq!(vgem::FENCE_SIGNAL_OPCODE, 0x4008_6442);
        assert_eq!(virtgpu::GETPARAM_OPCODE, 0xc010_6443);
    }

    #[test]
    fn c_strings_round_trip_and_truncate() {
        let chars: [u8; 8] = string_to_c_chars("winsys-long-name");
        assert_eq!(chars[7], 0);
        assert_eq!(c_chars_to_string(&chars), "winsys-");
        assert_eq!(c_chars_to_string(b"ab\0cd"), "ab");
    }
}
