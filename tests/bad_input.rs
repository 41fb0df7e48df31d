//! Bad input gets a typed error naming the problem, and leaks no fd.
//!
//! Every test holds one lock, so the process's fd count is stable while it
//! is compared before and after.

mod common;

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Mutex;

use common::{controllable_fence, need, open_fds};
use winsys::alloc::heap::DmaHeap;
use winsys::alloc::udmabuf::Udmabuf;
use winsys::alloc::vgem::Vgem;
use winsys::alloc::Allocator;
use winsys::dmabuf::{Access, Dmabuf, Error};
use winsys::format::{Fourcc, Modifier};
use winsys::sync::{self, SyncFile};

static SERIAL: Mutex<()> = Mutex::new(());

/// Serialize the tests of this binary: take it first thing in every test,
/// before any device is opened.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run `f` and check that it leaves the fd count as it found it (call with
/// [`serial`] held).
fn no_leak(f: impl FnOnce()) {
    let before = open_fds();
    f();
    assert_eq!(open_fds(), before, "fd leaked");
}

fn xrgb(
    fd: impl Into<std::sync::Arc<OwnedFd>>,
    w: u32,
    h: u32,
    offset: u32,
    stride: u32,
) -> Result<Dmabuf, Error> {
    Dmabuf::builder(w, h, Fourcc::XRGB8888, Modifier::LINEAR)
        .plane(fd, offset, stride)
        .build()
}

fn heap_fd(heap: &DmaHeap, len: u64) -> OwnedFd {
    heap.alloc(len).unwrap()
}

fn expect_not_dmabuf(r: Result<Dmabuf, Error>, needle: &str) {
    match r {
        Err(Error::NotDmabuf { plane: 0, what }) => {
            assert!(what.contains(needle), "{what:?} lacks {needle:?}")
        }
        other => panic!("expected NotDmabuf({needle}), got {other:?}"),
    }
}

#[test]
fn regular_file_pipe_and_memfd_are_not_dmabufs() {
    let _serial = serial();
    no_leak(|| {
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        expect_not_dmabuf(xrgb(OwnedFd::from(file), 1, 1, 0, 4), "regular file");
        let (r, w) = rustix::pipe::pipe().unwrap();
        expect_not_dmabuf(xrgb(r, 1, 1, 0, 4), "pipe");
        drop(w);
        let memfd =
            rustix::fs::memfd_create("not-a-dmabuf", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&memfd, 4096).unwrap();
        expect_not_dmabuf(xrgb(memfd, 1, 1, 0, 4), "memfd");
    });
}

#[test]
fn closed_fd_is_not_a_dmabuf_nor_a_sync_file() {
    let _serial = serial();
    no_leak(|| {
        let fd = rustix::fs::memfd_create("soon-closed", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        drop(fd);
        // SAFETY: deliberately a closed fd number, the case under test; the
        // code under test only hands it to syscalls, which answer EBADF, and
        // no other thread of this binary opens fds while `serial` is held.
        let closed = unsafe { BorrowedFd::borrow_raw(raw) };
        let err = winsys::dmabuf::fences::export_sync_file(closed, winsys::dmabuf::Access::Read)
            .unwrap_err();
        assert!(
            matches!(&err, Error::NotDmabuf { what, .. } if what.contains("closed")),
            "{err}"
        );
        let err = winsys::dmabuf::ImplicitFence::poll_based(closed, winsys::dmabuf::Access::Read)
            .unwrap_err();
        assert!(
            matches!(&err, Error::NotDmabuf { what, .. } if what.contains("closed")),
            "{err}"
        );
    });
}

#[test]
fn sync_file_given_as_dmabuf_and_dmabuf_given_as_sync_file() {
    let _serial = serial();
    let vgem = need!(Vgem::open(), "vgem");
    let heap = need!(DmaHeap::open_system(), "/dev/dma_heap/system");
    no_leak(|| {
        let (_buf, _gpu, fence) = controllable_fence(&vgem);
        expect_not_dmabuf(xrgb(OwnedFd::from(fence), 1, 1, 0, 4), "sync_file");
        let err = SyncFile::from_fd(heap_fd(&heap, 4096)).unwrap_err();
        assert!(
            matches!(&err, sync::Error::NotSyncFile { what } if what.contains("dma-buf")),
            "{err}"
        );
        let (r, _w) = rustix::pipe::pipe().unwrap();
        let err = SyncFile::from_fd(r).unwrap_err();
        assert!(
            matches!(&err, sync::Error::NotSyncFile { what } if what.contains("pipe")),
            "{err}"
        );
        let memfd = rustix::fs::memfd_create("x", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        assert!(matches!(
            SyncFile::from_fd(memfd),
            Err(sync::Error::NotSyncFile { .. })
        ));
        // An eventfd is an anonymous inode too, but not a sync_file.
        let efd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        assert!(matches!(
            SyncFile::from_fd(efd),
            Err(sync::Error::NotSyncFile { .. })
        ));
    });
}

#[test]
fn planes_outside_the_buffer_are_refused() {
    let _serial = serial();
    let heap = need!(DmaHeap::open_system(), "/dev/dma_heap/system");
    no_leak(|| {
        // 4096 bytes: 16 rows of 256 bytes.
        let err = xrgb(heap_fd(&heap, 4096), 64, 17, 0, 256).unwrap_err();
        assert!(
            matches!(
                err,
                Error::PlaneOutOfBounds {
                    plane: 0,
                    end: 4352,
                    size: 4096,
                    ..
                }
            ),
            "{err}"
        );
        let err = xrgb(heap_fd(&heap, 4096), 64, 16, 256, 256).unwrap_err();
        assert!(
            matches!(err, Error::PlaneOutOfBounds { offset: 256, .. }),
            "{err}"
        );
        let err = xrgb(heap_fd(&heap, 4096), 64, 1, u32::MAX, 256).unwrap_err();
        assert!(matches!(err, Error::PlaneOutOfBounds { .. }), "{err}");
        let err = xrgb(heap_fd(&heap, 4096), 64, 16, 0, 255).unwrap_err();
        assert!(
            matches!(
                err,
                Error::StrideTooSmall {
                    stride: 255,
                    min: 256,
                    ..
                }
            ),
            "{err}"
        );
        // Exactly fitting is fine, including a last row without padding.
        xrgb(heap_fd(&heap, 4096), 64, 16, 0, 256).unwrap();
        xrgb(heap_fd(&heap, 4096), 32, 16, 128, 256).unwrap();
        // Non-linear layouts: only the offset can be checked.
        let tiled = Dmabuf::builder(64, 64, Fourcc::XRGB8888, Modifier(0x0100_0000_0000_0001))
            .plane(heap_fd(&heap, 4096), 4096, 256)
            .build()
            .unwrap_err();
        assert!(matches!(tiled, Error::PlaneOutOfBounds { .. }), "{tiled}");
    });
}

#[test]
fn zero_size_wrong_plane_counts_and_unknown_formats_are_refused() {
    let _serial = serial();
    let heap = need!(DmaHeap::open_system(), "/dev/dma_heap/system");
    no_leak(|| {
        assert!(matches!(
            xrgb(heap_fd(&heap, 4096), 0, 1, 0, 4),
            Err(Error::ZeroSize { .. })
        ));
        assert!(matches!(
            xrgb(heap_fd(&heap, 4096), 1, 0, 0, 4),
            Err(Error::ZeroSize { .. })
        ));
        let none = Dmabuf::builder(1, 1, Fourcc::XRGB8888, Modifier::LINEAR).build();
        assert!(matches!(none, Err(Error::PlaneCount { got: 0 })));
        let fd = std::sync::Arc::new(heap_fd(&heap, 4096));
        let mut five = Dmabuf::builder(1, 1, Fourcc::XRGB8888, Modifier::LINEAR);
        for _ in 0..5 {
            five = five.plane(fd.clone(), 0, 4);
        }
        assert!(matches!(five.build(), Err(Error::PlaneCount { got: 5 })));
        let nv12_one_plane = Dmabuf::builder(16, 16, Fourcc::NV12, Modifier::LINEAR)
            .plane(fd.clone(), 0, 16)
            .build();
        assert!(matches!(
            nv12_one_plane,
            Err(Error::PlaneCountMismatch {
                expected: 2,
                got: 1,
                ..
            })
        ));
        let two_for_xrgb = Dmabuf::builder(1, 1, Fourcc::XRGB8888, Modifier::LINEAR)
            .plane(fd.clone(), 0, 4)
            .plane(fd.clone(), 0, 4)
            .build();
        assert!(matches!(
            two_for_xrgb,
            Err(Error::PlaneCountMismatch {
                expected: 1,
                got: 2,
                ..
            })
        ));
        let unknown = Dmabuf::builder(1, 1, Fourcc(0x2020_2020), Modifier::LINEAR)
            .plane(fd, 0, 4)
            .build();
        assert!(matches!(unknown, Err(Error::UnknownFormat(_))));
        assert!(matches!(heap.alloc(0), Err(winsys::alloc::Error::ZeroSize)));
    });
}

#[test]
fn allocators_refuse_bad_requests_without_leaking() {
    let _serial = serial();
    let udmabuf = need!(Udmabuf::open(), "/dev/udmabuf");
    let vgem = need!(Vgem::open(), "vgem");
    no_leak(|| {
        assert!(matches!(
            udmabuf.allocate(0, 10, Fourcc::XRGB8888),
            Err(winsys::alloc::Error::ZeroSize)
        ));
        assert!(matches!(
            udmabuf.allocate(10, 10, Fourcc(0x1234_5678)),
            Err(winsys::alloc::Error::UnsupportedFormat { .. })
        ));
        // 65 MiB exceeds udmabuf's default 64 MiB limit.
        assert!(matches!(
            udmabuf.allocate(4096, 4160, Fourcc::XRGB8888),
            Err(winsys::alloc::Error::TooLarge { .. })
        ));
        assert!(matches!(
            vgem.create(16, 16, Fourcc::NV12),
            Err(winsys::alloc::Error::UnsupportedFormat { .. })
        ));
        let buf = vgem.create(16, 16, Fourcc::XRGB8888).unwrap();
        let _write = buf.attach_fence(Access::Write).unwrap();
        assert!(matches!(
            buf.attach_fence(Access::Write),
            Err(winsys::alloc::Error::FenceBusy)
        ));
    });
}

#[test]
fn failed_map_and_timeouts_leak_nothing() {
    let _serial = serial();
    let vgem = need!(Vgem::open(), "vgem");
    let heap = need!(DmaHeap::open_system(), "/dev/dma_heap/system");
    no_leak(|| {
        let buf = vgem.create(16, 16, Fourcc::XRGB8888).unwrap();
        let ro = xrgb(heap.alloc_read_only(4096).unwrap(), 16, 16, 0, 64).unwrap();
        assert!(matches!(
            ro.map(winsys::dmabuf::Access::Write),
            Err(Error::ReadOnlyFd { .. })
        ));
        let write = buf.attach_fence(Access::Write).unwrap();
        let map = buf.dmabuf().map(winsys::dmabuf::Access::Read).unwrap();
        assert!(matches!(
            map.read(Some(common::SHORT)),
            Err(Error::Timeout { .. })
        ));
        let implicit = buf
            .dmabuf()
            .implicit_fence(winsys::dmabuf::Access::Read)
            .unwrap();
        assert!(matches!(
            implicit.wait(Some(common::SHORT)),
            Err(Error::Timeout { .. })
        ));
        write.signal().unwrap();
        drop((map, implicit, ro));
    });
}
