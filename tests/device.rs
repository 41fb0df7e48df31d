//! DRM nodes: listing without opening primary nodes, a caller's fd, and
//! device numbers (how linux-dmabuf feedback names devices).

mod common;

use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;

use rustix::fs::{inotify, Mode, OFlags};
use winsys::device::{DrmDevice, Error, NodeKind};

/// The number of `IN_OPEN` events queued on `inot` (non-blocking).
fn opens(inot: &OwnedFd) -> usize {
    let mut buf = [MaybeUninit::uninit(); 4096];
    let mut reader = inotify::Reader::new(inot, &mut buf);
    let mut n = 0;
    while let Ok(ev) = reader.next() {
        if ev.events().contains(inotify::ReadFlags::OPEN) {
            n += 1;
        }
    }
    n
}

#[test]
fn listing_names_card_drivers_without_opening_card_nodes() {
    let vgem_card = common::required("vgem card", DrmDevice::find("vgem", NodeKind::Primary));
    let Some(vgem_card) = vgem_card else { return };
    let card_path = vgem_card.path().to_path_buf();
    drop(vgem_card);
    let inot =
        inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK).unwrap();
    inotify::add_watch(&inot, &card_path, inotify::WatchFlags::OPEN).unwrap();
    let all = DrmDevice::list();
    assert_eq!(opens(&inot), 0, "list() opened {}", card_path.display());
    let card = all
        .iter()
        .find(|n| n.path == card_path)
        .expect("the card is listed");
    assert_eq!(card.driver, "vgem");
    assert_eq!(card.kind, NodeKind::Primary);
    for driver in ["vgem", "virtio_gpu"] {
        for kind in [NodeKind::Primary, NodeKind::Render] {
            assert!(
                all.iter().any(|n| n.driver == driver && n.kind == kind),
                "{driver} {kind:?} missing from {all:?}"
            );
        }
    }
    // The watch works: an explicit open of the card is seen.
    let opened = DrmDevice::open(&card_path).unwrap();
    assert_eq!(opens(&inot), 1);
    assert_eq!(opened.driver(), "vgem");
}

#[test]
fn a_callers_fd_and_dev_t_find_the_same_node() {
    let render = common::required(
        "virtio_gpu render node",
        DrmDevice::find("virtio_gpu", NodeKind::Render),
    );
    let Some(render) = render else { return };
    let fd =
        rustix::fs::open(render.path(), OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).unwrap();
    let wrapped = DrmDevice::from_fd(fd).unwrap();
    assert_eq!(wrapped.driver(), "virtio_gpu");
    assert_eq!(wrapped.dev_t(), render.dev_t());
    assert_eq!(wrapped.path(), render.path());
    assert_eq!(rustix::fs::major(render.dev_t()), winsys::device::DRM_MAJOR);
    let again = DrmDevice::open_dev_t(render.dev_t()).unwrap();
    assert_eq!(again.path(), render.path());
    assert_eq!(again.kind(), Some(NodeKind::Render));
    // Render and primary nodes of one device have different numbers.
    let card = DrmDevice::find("virtio_gpu", NodeKind::Primary).unwrap();
    assert_ne!(card.dev_t(), render.dev_t());

    let bogus = rustix::fs::makedev(winsys::device::DRM_MAJOR, 250);
    assert!(matches!(
        DrmDevice::open_dev_t(bogus),
        Err(Error::NoSuchDevT { minor: 250, .. })
    ));
    let null =
        rustix::fs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).unwrap();
    assert!(matches!(DrmDevice::from_fd(null), Err(Error::NotDrmFd(_))));
    let (r, _w) = rustix::pipe::pipe().unwrap();
    assert!(matches!(DrmDevice::from_fd(r), Err(Error::NotDrmFd(_))));
}

#[test]
fn neither_test_bed_device_renders_and_both_make_dumb_buffers_on_their_card_node() {
    use winsys::alloc::dumb::DumbAllocator;
    use winsys::alloc::Error as AllocError;
    use winsys::dmabuf::Access;
    use winsys::format::Fourcc;
    for driver in ["vgem", "virtio_gpu"] {
        let render = common::required(
            &format!("{driver} render node"),
            DrmDevice::find(driver, NodeKind::Render),
        );
        let Some(render) = render else { continue };
        // vgem has no renderer; the test bed's virtio-gpu has no virgl.
        assert!(!render.renders(), "{driver} renders");
        let card = render.open_sibling(NodeKind::Primary).unwrap();
        assert_eq!(card.kind(), Some(NodeKind::Primary));
        assert_eq!(card.driver(), driver);
        let back = card.open_sibling(NodeKind::Render).unwrap();
        assert_eq!(back.dev_t(), render.dev_t());
        assert_eq!(back.path(), render.path());

        let dumb = DumbAllocator::new(render).unwrap();
        assert_eq!(dumb.device().dev_t(), card.dev_t());
        // Given the card node, it is used as is.
        let again = DumbAllocator::new(card).unwrap();
        assert_eq!(again.device().dev_t(), dumb.device().dev_t());
        let buf = dumb.create(100, 64, Fourcc::XRGB8888).unwrap();
        let plane = &buf.planes()[0];
        assert_eq!(plane.stride(), 512, "{driver}: rows padded to 256 bytes");
        // Through the dma-buf, bracketed by DMA_BUF_IOCTL_SYNC.
        let len = 512 * 64;
        let pattern: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let mut map = buf.map(Access::ReadWrite).unwrap();
        map.write(None)
            .unwrap()
            .write_bytes(0, 0, &pattern)
            .unwrap();
        drop(map);
        let map = buf.map(Access::Read).unwrap();
        assert_eq!(
            &map.read(None).unwrap().to_vec(0).unwrap()[..len],
            &pattern[..]
        );

        assert!(matches!(
            dumb.create(0, 64, Fourcc::XRGB8888),
            Err(AllocError::ZeroSize)
        ));
        assert!(matches!(
            dumb.create(64, 64, Fourcc::NV12),
            Err(AllocError::UnsupportedFormat { .. })
        ));
        if driver == "vgem" {
            // 3-byte pixels too (virtio-gpu makes 32-bit ones only).
            let rgb = dumb.create(100, 8, Fourcc::RGB888).unwrap();
            assert_eq!(rgb.planes()[0].stride(), 768, "256 pixels of 3 bytes");
        }
        // Rows past what a pitch can hold: typed, before the kernel.
        assert!(matches!(
            dumb.create(u32::MAX - 10, 1, Fourcc::XRGB8888),
            Err(AllocError::TooLarge { .. })
        ));
    }
    // virtio-gpu makes 32-bit pixels only: the driver's refusal, typed.
    let virtio = DrmDevice::find("virtio_gpu", NodeKind::Render).unwrap();
    let err = DumbAllocator::new(virtio)
        .unwrap()
        .create(64, 64, Fourcc::RGB565)
        .unwrap_err();
    assert!(
        matches!(
            &err,
            AllocError::Device(winsys::device::Error::Ioctl { errno, .. })
                if *errno == rustix::io::Errno::INVAL
        ),
        "{err:?}"
    );
}
