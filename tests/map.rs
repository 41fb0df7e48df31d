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
    map.write(None).unwrap().write_bytes(0, 0, &a).unwrap();
    assert_eq!(pread_all(&memfd, len, 0), a);
    let b = pattern(len, 2);
    pwrite_all(&memfd, &b, 0);
    assert_eq!(&map.read(None).unwrap().to_vec(0).unwrap()[..len], &b[..]);
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
        cpu.fill(0, 0x10).unwrap();
        cpu.fill(1, 0x80).unwrap();
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
    writer.write(None).unwrap().write_bytes(0, 0, &a).unwrap();
    let second = Dmabuf::builder(128, 128, Fourcc::ARGB8888, Modifier::LINEAR)
        .plane(
            buf.planes()[0].fd().try_clone_to_owned().unwrap(),
            0,
            buf.planes()[0].stride(),
        )
        .build()
        .unwrap();
    let reader = second.map(Access::Read).unwrap();
    assert_eq!(reader.read(None).unwrap().to_vec(0).unwrap(), &a[..]);
    let b = pattern(len, 4);
    let mut rw = second.map(Access::ReadWrite).unwrap();
    rw.read_write(None).unwrap().write_bytes(0, 0, &b).unwrap();
    assert_eq!(writer.read(None).unwrap().to_vec(0).unwrap(), &b[..]);
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
    map.write(None).unwrap().write_bytes(0, 0, &a).unwrap();
    let mut seen = vec![0u8; len];
    gem.read_bytes(0, &mut seen).unwrap();
    assert_eq!(seen, a);
    let b = pattern(len, 6);
    gem.write_bytes(0, &b).unwrap();
    assert_eq!(map.read(None).unwrap().to_vec(0).unwrap(), &b[..]);
}

#[test]
fn read_guard_blocks_while_a_write_fence_is_pending() {
    let vgem = need!(Vgem::open(), "vgem");
    let buf = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let write = buf.attach_fence(Access::Write).unwrap();
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
    let write = buf.attach_fence(Access::Write).unwrap();
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
    let reader = buf.attach_fence(Access::Read).unwrap();
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
        // SAFETY: `fd` is this test's own udmabuf; SYNC carries no handles.
        unsafe { sys::DMA_BUF_IOCTL_SYNC.call_unchecked(fd, &mut arg) }.unwrap_err()
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
        map.write(None).unwrap().write_bytes(0, 0, &data).unwrap();
        let again = buf.map(Access::Read).unwrap();
        assert_eq!(
            again.read(None).unwrap().to_vec(0).unwrap(),
            &data[..],
            "{name}"
        );
    }
}

#[test]
fn row_copies_follow_the_stride_and_leave_padding_alone() {
    let udmabuf = need!(Udmabuf::open(), "/dev/udmabuf");
    let (w, h) = (203u32, 7u32);
    let (buf, memfd) = udmabuf.allocate_with_memfd(w, h, Fourcc::XRGB8888).unwrap();
    let stride = buf.planes()[0].stride() as usize;
    let row = w as usize * 4;
    assert!(stride > row, "the layout pads rows ({stride} vs {row})");
    let tight = pattern(row * h as usize, 9);
    let mut map = buf.map(Access::ReadWrite).unwrap();
    {
        let mut cpu = map.write(None).unwrap();
        cpu.write_rows(0, &tight, row).unwrap();
    }
    for y in 0..h as usize {
        let got = pread_all(&memfd, row, (y * stride) as u64);
        assert_eq!(got, tight[y * row..][..row], "row {y}");
        let pad = pread_all(&memfd, stride - row, (y * stride + row) as u64);
        assert!(pad.iter().all(|&b| b == 0), "padding of row {y} written");
    }
    let cpu = map.read(None).unwrap();
    let mut back = vec![0u8; tight.len()];
    cpu.read_rows(0, &mut back, row).unwrap();
    assert_eq!(back, tight);
    // A wider destination stride is fine too.
    let mut wide = vec![0u8; (row + 8) * h as usize];
    cpu.read_rows(0, &mut wide, row + 8).unwrap();
    assert_eq!(wide[(row + 8)..][..row], tight[row..][..row]);
    assert_eq!(cpu.plane_len(0).unwrap(), stride * h as usize);
}

#[test]
fn bad_planes_ranges_and_row_buffers_are_typed_errors() {
    let udmabuf = need!(Udmabuf::open(), "/dev/udmabuf");
    let buf = udmabuf.allocate(16, 4, Fourcc::XRGB8888).unwrap();
    let mut map = buf.map(Access::ReadWrite).unwrap();
    let plane_len = buf.planes()[0].stride() as usize * 4;
    {
        let cpu = map.read(None).unwrap();
        let mut one = [0u8; 1];
        assert!(matches!(
            cpu.read_bytes(1, 0, &mut one),
            Err(Error::PlaneIndex { index: 1, count: 1 })
        ));
        assert!(matches!(cpu.to_vec(7), Err(Error::PlaneIndex { .. })));
        let err = cpu.read_bytes(0, plane_len, &mut one).unwrap_err();
        assert!(
            matches!(err, Error::CopyOutOfBounds { offset, len: 1, .. } if offset == plane_len),
            "{err}"
        );
        // offset + len overflowing usize is out of bounds, not a wrap.
        assert!(matches!(
            cpu.read_bytes(0, usize::MAX, &mut one),
            Err(Error::CopyOutOfBounds { .. })
        ));
        let mut small = vec![0u8; 16 * 4 * 4 - 1];
        assert!(matches!(
            cpu.read_rows(0, &mut small, 16 * 4),
            Err(Error::RowBuffer { .. })
        ));
        let mut enough = vec![0u8; 16 * 4 * 4];
        assert!(matches!(
            cpu.read_rows(0, &mut enough, 16 * 4 - 1),
            Err(Error::RowBuffer { .. })
        ));
    }
    let mut cpu = map.write(None).unwrap();
    assert!(matches!(
        cpu.write_bytes(0, plane_len - 1, &[1, 2]),
        Err(Error::CopyOutOfBounds { .. })
    ));
    assert!(matches!(cpu.fill(2, 0), Err(Error::PlaneIndex { .. })));
    cpu.write_bytes(0, plane_len - 2, &[1, 2]).unwrap();
}

#[test]
fn tiled_layouts_have_no_rows_but_their_bytes_copy() {
    let heap = need!(DmaHeap::open_system(), "/dev/dma_heap/system");
    // I915_FORMAT_MOD_X_TILED: a layout winsys cannot address by rows.
    let x_tiled = Modifier((1 << 56) | 1);
    let buf = Dmabuf::builder(32, 8, Fourcc::XRGB8888, x_tiled)
        .plane(heap.alloc(4096).unwrap(), 0, 512)
        .build()
        .unwrap();
    let mut map = buf.map(Access::ReadWrite).unwrap();
    let mut cpu = map.read_write(None).unwrap();
    let mut rows = vec![0u8; 32 * 4 * 8];
    assert!(matches!(
        cpu.read_rows(0, &mut rows, 32 * 4),
        Err(Error::RowsUnknown { plane: 0 })
    ));
    assert!(matches!(
        cpu.write_rows(0, &rows, 32 * 4),
        Err(Error::RowsUnknown { plane: 0 })
    ));
    cpu.write_bytes(0, 100, &[7, 8, 9]).unwrap();
    let mut back = [0u8; 3];
    cpu.read_bytes(0, 100, &mut back).unwrap();
    assert_eq!(back, [7, 8, 9]);
    assert_eq!(cpu.plane_len(0).unwrap(), 4096);
    drop(cpu);
    drop(map);

    // With an auxiliary plane behind it in the same dma-buf, the main
    // plane ends where the auxiliary one starts: no copy reaches it.
    let p = &buf.planes()[0];
    let with_aux = Dmabuf::builder(32, 8, Fourcc::XRGB8888, x_tiled)
        .plane(p.shared_fd().clone(), 0, 512)
        .plane(p.shared_fd().clone(), 3072, 64)
        .build()
        .unwrap();
    let mut map = with_aux.map(Access::ReadWrite).unwrap();
    let mut cpu = map.write(None).unwrap();
    assert_eq!(cpu.plane_len(0).unwrap(), 3072);
    assert_eq!(cpu.plane_len(1).unwrap(), 1024);
    assert!(matches!(
        cpu.write_bytes(0, 3071, &[1, 2]),
        Err(Error::CopyOutOfBounds { .. })
    ));
    cpu.fill(0, 0xee).unwrap();
    let mut aux = [0u8; 1];
    cpu.read_bytes(1, 0, &mut aux).unwrap();
    assert_ne!(aux[0], 0xee, "filling plane 0 reached the auxiliary plane");
}

#[test]
fn guards_of_two_maps_of_one_dmabuf_exclude_each_other_in_process() {
    let vgem = need!(Vgem::open(), "vgem");
    let buf = vgem.create(16, 16, Fourcc::XRGB8888).unwrap();
    let mut a = buf.dmabuf().map(Access::ReadWrite).unwrap();
    let mut b = buf.dmabuf().clone().map(Access::ReadWrite).unwrap();
    let mut gem = buf.map_gem().unwrap();
    {
        let _ra = a.read(Some(LONG)).unwrap();
        let _rb = b.read(Some(LONG)).expect("readers share");
        let mut one = [0u8; 1];
        gem.read_bytes(0, &mut one).expect("GEM readers share too");
    }
    {
        let _wa = a.write(Some(LONG)).unwrap();
        assert!(matches!(
            b.read(Some(LONG)),
            Err(Error::GuardBusy {
                access: Access::Read
            })
        ));
        assert!(matches!(b.write(Some(LONG)), Err(Error::GuardBusy { .. })));
        let err = gem.write_bytes(0, &[1]).unwrap_err();
        assert!(
            matches!(err, winsys::alloc::Error::Dmabuf(Error::GuardBusy { .. })),
            "{err}"
        );
    }
    // Released on drop: the other map writes now.
    b.write(Some(LONG))
        .unwrap()
        .write_bytes(0, 0, &[9])
        .unwrap();
    gem.write_bytes(1, &[8]).unwrap();
    let mut two = [0u8; 2];
    a.read(Some(LONG))
        .unwrap()
        .read_bytes(0, 0, &mut two)
        .unwrap();
    assert_eq!(two, [9, 8]);
}

/// Lines of /proc/self/maps that map a dma-buf.
fn dmabuf_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("dmabuf"))
        .count()
}

const MAP_FAILURE_CHILD: &str = "WINSYS_MAP_FAILURE_CHILD";

/// A mapping failure on a later plane unmaps the planes already mapped.
/// The failure is real: a child process (this test binary, running only
/// this test) lowers its address-space limit so the second dma-buf's mmap
/// gets ENOMEM.
#[test]
fn map_failure_on_a_later_plane_unmaps_the_earlier_ones() {
    if std::env::var_os(MAP_FAILURE_CHILD).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "map_failure_on_a_later_plane_unmaps_the_earlier_ones",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(MAP_FAILURE_CHILD, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        println!("{text}");
        assert!(out.status.success(), "child failed: {text}");
        if text.contains("SKIP") {
            println!("SKIP: see the child's output");
        }
        assert!(text.contains("child: mmap failed"), "{text}");
        return;
    }
    let udmabuf = need!(Udmabuf::open(), "/dev/udmabuf");
    let heap = need!(DmaHeap::open_system(), "/dev/dma_heap/system");
    let small = udmabuf.allocate(64, 64, Fourcc::XRGB8888).unwrap();
    let big = heap.alloc(128 << 20).unwrap();
    // NV12 with its luma in the small dma-buf and chroma in the big one.
    let buf = Dmabuf::builder(64, 64, Fourcc::NV12, Modifier::LINEAR)
        .plane(small.planes()[0].shared_fd().clone(), 0, 256)
        .plane(big, 0, 256)
        .build()
        .unwrap();
    assert_eq!(dmabuf_mappings(), 0);
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let vm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let limit = (vm_kb << 10) + (64 << 20);
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let old = getrlimit(Resource::As);
    setrlimit(
        Resource::As,
        Rlimit {
            current: Some(limit),
            maximum: old.maximum,
        },
    )
    .unwrap();
    let result = buf.map(Access::Read);
    let after = dmabuf_mappings();
    setrlimit(Resource::As, old).unwrap();
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Os {
                op: "mmap(dma-buf)",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(after, 0, "the first plane's mapping leaked");
    println!("child: mmap failed with {err}; no dma-buf mapping left");
    // And with the limit lifted, the same image maps (both planes).
    let map = buf.map(Access::Read).unwrap();
    assert_eq!(dmabuf_mappings(), 2);
    drop(map);
    assert_eq!(dmabuf_mappings(), 0);
}

#[test]
fn duration_max_means_no_limit_everywhere() {
    let vgem = need!(Vgem::open(), "vgem");
    let buf = vgem.create(16, 16, Fourcc::XRGB8888).unwrap();
    let write = buf.attach_fence(Access::Write).unwrap();
    let fence = buf.dmabuf().implicit_fence(Access::Read).unwrap();
    let signaler = thread::spawn(move || {
        thread::sleep(SHORT * 2);
        write.signal().unwrap();
    });
    // Each of these would panic (Instant + Duration::MAX) or hand the
    // kernel a negative timespec if a huge timeout were not "no limit".
    fence.wait(Some(std::time::Duration::MAX)).unwrap();
    let map = buf.dmabuf().map(Access::Read).unwrap();
    drop(map.read(Some(std::time::Duration::MAX)).unwrap());
    if let Some(sync) = fence.into_sync_file() {
        sync.wait(Some(std::time::Duration::MAX)).unwrap();
    }
    signaler.join().unwrap();
}
