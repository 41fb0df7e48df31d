//! CPU access through the dma-buf fd: data reaches the other side on every
//! exporter, guards wait for the right fences, SYNC flags are validated.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use common::{need, pattern, pread_all, pwrite_all, LONG, SHORT};
use winsys::alloc::heap::DmaHeap;
use winsys::alloc::udmabuf::Udmabuf;
use winsys::alloc::vgem::Vgem;
use winsys::alloc::Allocator;
use winsys::dmabuf::{map::dma_buf_sync, Access, Dmabuf, Error};
use winsys::format::{Fourcc, Modifier};
use winsys::uapi::dma_buf as sys;

#[test]
fn udmabuf_writes_through_the_map_are_seen_through_the_memfd_and_back() {
    let udmabuf = need!(Udmabuf::open(), "/dev/udmabuf");
    let (buf, memfd) = udmabuf
        .allocate_with_memfd(256, 64, Fourcc::XRGB8888)
        .unwrap();
    let len = 256 * 4 * 64;
    let mut map = buf.map(Access::ReadWrite).unwrap();
    let a = pattern(len, 1);
    map.write(None).unwrap().plane_mut(0)[..len].copy_from_slice(&a);
    assert_eq!(pread_all(&memfd, len, 0), a);
    let b = pattern(len, 2);
    pwrite_all(&memfd, &b, 0);
    assert_eq!(&map.read(None).unwrap().plane(0)[..len], &b[..]);
}

#[test]
fn udmabuf_multi_plane_nv12_planes_land_at_their_offsets() {
    let udmabuf = need!(Udmabuf::open(), "/dev/udmabuf");
    let (buf, memfd) = udmabuf.allocate_with_memfd(64, 32, Fourcc::NV12).unwrap();
    assert_eq!(buf.planes().len(), 2);
    assert_eq!(
        buf.distinct_fds().count(),
        1,
        "both planes share one dma-buf"
    );
    let mut map = buf.map(Access::Write).unwrap();
    {
        let mut cpu = map.write(None).unwrap();
        cpu.plane_mut(0).fill(0x10);
        cpu.plane_mut(1).fill(0x80);
    }
    let y = &buf.planes()[0];
    let uv = &buf.planes()[1];
    assert_eq!(pread_all(&memfd, 1, y.offset() as u64), vec![0x10]);
    assert_eq!(pread_all(&memfd, 1, uv.offset() as u64), vec![0x80]);
    assert_eq!(pread_all(&memfd, 1, uv.offset() as u64 - 1), vec![0x10]);
}

#[test]
fn heap_writes_are_seen_by_an_independent_second_mapping() {
    let heap = need!(DmaHeap::open_system(), "/dev/dma_heap/system");
    let buf = heap.allocate(128, 128, Fourcc::ARGB8888).unwrap();
    let len = buf.planes()[0].stride() as usize * 128;
    let a = pattern(len, 3);
    let mut writer = buf.map(Access::Write).unwrap();
    writer.write(None).unwrap().plane_mut(0).copy_from_slice(&a);
    let second = Dmabuf::builder(128, 128, Fourcc::ARGB8888, Modifier::LINEAR)
        .plane(
            buf.planes()[0].fd().try_clone_to_owned().unwrap(),
            0,
            buf.planes()[0].stride(),
        )
        .build()
        .unwrap();
    let reader = second.map(Access::Read).unwrap();
    assert_eq!(reader.read(None).unwrap().plane(0), &a[..]);
    let b = pattern(len, 4);
    let mut rw = second.map(Access::ReadWrite).unwrap();
    rw.read_write(None)
        .unwrap()
        .plane_mut(0)
        .copy_from_slice(&b);
    assert_eq!(writer.read(None).unwrap().plane(0), &b[..]);
}

#[test]
fn vgem_writes_through_the_dmabuf_are_seen_through_the_gem_map_and_back() {
    let vgem = need!(Vgem::open(), "vgem");
    let buf = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let stride = buf.dmabuf().planes()[0].stride() as usize;
    let len = stride * 64;
    let mut gem = buf.map_gem().unwrap();
    let mut map = buf.dmabuf().map(Access::ReadWrite).unwrap();
    let a = pattern(len, 5);
    map.write(None).unwrap().plane_mut(0).copy_from_slice(&a);
    assert_eq!(&gem.bytes()[..len], &a[..]);
    let b = pattern(len, 6);
    gem.bytes_mut()[..len].copy_from_slice(&b);
    assert_eq!(map.read(None).unwrap().plane(0), &b[..]);
}

#[test]
fn read_guard_blocks_while_a_write_fence_is_pending() {
    let vgem = need!(Vgem::open(), "vgem");
    let buf = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let write = buf.attach_fence(true).unwrap();
    let map = buf.dmabuf().map(Access::Read).unwrap();
    let signaled = Arc::new(AtomicBool::new(false));
    let flag = signaled.clone();
    let signaler = thread::spawn(move || {
        thread::sleep(SHORT * 4);
        flag.store(true, Ordering::SeqCst);
        write.signal().unwrap();
    });
    let guard = map.read(None).unwrap();
    assert!(
        signaled.load(Ordering::SeqCst),
        "SYNC START(READ) returned before the write fence signaled"
    );
    drop(guard);
    signaler.join().unwrap();
}

#[test]
fn read_guard_with_timeout_returns_a_timeout_error_then_succeeds() {
    let vgem = need!(Vgem::open(), "vgem");
    let buf = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let write = buf.attach_fence(true).unwrap();
    let map = buf.dmabuf().map(Access::Read).unwrap();
    let err = map.read(Some(SHORT)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    write.signal().unwrap();
    map.read(Some(LONG)).unwrap();
}

#[test]
fn readers_do_not_wait_for_readers_but_writers_do() {
    let vgem = need!(Vgem::open(), "vgem");
    let buf = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let reader = buf.attach_fence(false).unwrap();
    let mut map = buf.dmabuf().map(Access::ReadWrite).unwrap();
    drop(
        map.read(Some(SHORT))
            .expect("a read fence must not block CPU reads"),
    );
    let err = map.write(Some(SHORT)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    let err = map.read_write(Some(SHORT)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    reader.signal().unwrap();
    map.write(Some(LONG)).unwrap();
}

#[test]
fn write_through_a_read_only_fd_is_a_typed_error() {
    let heap = need!(DmaHeap::open_system(), "/dev/dma_heap/system");
    let ro = Dmabuf::builder(32, 32, Fourcc::XRGB8888, Modifier::LINEAR)
        .plane(heap.alloc_read_only(4096).unwrap(), 0, 128)
        .build()
        .unwrap();
    assert!(matches!(
        ro.map(Access::Write),
        Err(Error::ReadOnlyFd { plane: 0 })
    ));
    assert!(matches!(
        ro.map(Access::ReadWrite),
        Err(Error::ReadOnlyFd { plane: 0 })
    ));
    let mut map = ro.map(Access::Read).unwrap();
    drop(map.read(None).unwrap());
    assert!(matches!(map.write(None), Err(Error::MapNotWritable)));
}

#[test]
fn sync_ioctl_rejects_invalid_flags() {
    let udmabuf = need!(Udmabuf::open(), "/dev/udmabuf");
    let buf = udmabuf.allocate(16, 16, Fourcc::XRGB8888).unwrap();
    let fd = buf.planes()[0].fd();
    let einval = |flags: u64| {
        let mut arg = sys::dma_buf_sync { flags };
        sys::DMA_BUF_IOCTL_SYNC.call(fd, &mut arg).unwrap_err()
    };
    use rustix::io::Errno;
    // No READ/WRITE bit.
    assert_eq!(einval(sys::DMA_BUF_SYNC_START), Errno::INVAL);
    assert_eq!(einval(sys::DMA_BUF_SYNC_END), Errno::INVAL);
    // Unknown bits.
    assert_eq!(einval(sys::DMA_BUF_SYNC_READ | 1 << 3), Errno::INVAL);
    assert_eq!(einval(sys::DMA_BUF_SYNC_RW | 1 << 40), Errno::INVAL);
    // udmabuf refuses END before any START.
    assert_eq!(
        einval(sys::DMA_BUF_SYNC_READ | sys::DMA_BUF_SYNC_END),
        Errno::INVAL
    );
    // Valid pairs work.
    for access in [Access::Read, Access::Write, Access::ReadWrite] {
        dma_buf_sync(fd, access.sync_flags() | sys::DMA_BUF_SYNC_START).unwrap();
        dma_buf_sync(fd, access.sync_flags() | sys::DMA_BUF_SYNC_END).unwrap();
    }
}

#[test]
fn every_exporter_round_trips_a_frame_through_guards() {
    type Make = Box<dyn Fn() -> Dmabuf>;
    let mut exporters: Vec<(&str, Make)> = Vec::new();
    let udmabuf = need!(Udmabuf::open(), "/dev/udmabuf");
    exporters.push((
        "udmabuf",
        Box::new(move || udmabuf.allocate(320, 200, Fourcc::XRGB8888).unwrap()),
    ));
    let heap = need!(DmaHeap::open_system(), "/dev/dma_heap/system");
    exporters.push((
        "heap",
        Box::new(move || heap.allocate(320, 200, Fourcc::XRGB8888).unwrap()),
    ));
    let vgem = need!(Vgem::open(), "vgem");
    exporters.push((
        "vgem",
        Box::new(move || {
            vgem.create(320, 200, Fourcc::XRGB8888)
                .unwrap()
                .dmabuf()
                .clone()
        }),
    ));
    for (name, make) in exporters {
        let buf = make();
        let len = buf.planes()[0].stride() as usize * 200;
        let data = pattern(len, 7);
        let mut map = buf.map(Access::ReadWrite).unwrap();
        map.write(None).unwrap().plane_mut(0).copy_from_slice(&data);
        let again = buf.map(Access::Read).unwrap();
        assert_eq!(again.read(None).unwrap().plane(0), &data[..], "{name}");
    }
}
