//! Small fd helpers shared by every module: naming what an fd is (for error
//! messages) and adopting fds the kernel returns from ioctls.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Adopt an fd number an ioctl just returned.
pub(crate) fn owned_from_kernel(fd: RawFd) -> OwnedFd {
    // SAFETY: the kernel just installed `fd` in this process's table as the
    // ioctl's output; nothing else owns it, so this is its only owner.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A short human description of what `fd` is, e.g. `pipe`, `regular file`,
/// `anon_inode:sync_file`, `memfd:name`, `dma-buf`. `fs_magic` is the fd's
/// `fstatfs` type.
pub(crate) fn describe(fd: BorrowedFd<'_>, fs_magic: u32) -> String {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kind = match rustix::fs::fstat(fd) {
        Ok(st) => match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::RegularFile if link.starts_with("/memfd:") => "memfd",
            rustix::fs::FileType::RegularFile => "regular file",
            rustix::fs::FileType::Fifo => "pipe",
            rustix::fs::FileType::Socket => "socket",
            rustix::fs::FileType::CharacterDevice => "character device",
            rustix::fs::FileType::Directory => "directory",
            _ => "file",
        },
        Err(_) => "fd",
    };
    match fs_magic {
        crate::uapi::dma_buf::DMA_BUF_MAGIC => "dma-buf".to_string(),
        crate::uapi::sync_file::ANON_INODE_FS_MAGIC => link.clone(),
        _ if link.is_empty() => kind.to_string(),
        _ => format!("{kind} ({link})"),
    }
}
