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
