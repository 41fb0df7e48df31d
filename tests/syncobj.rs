//! DRM syncobj timelines on virtio-gpu (the guest's driver with
//! DRIVER_SYNCOBJ_TIMELINE), mirroring IGT syncobj_timeline/syncobj_basic:
//! signal/query/wait, sync_file <-> point via transfer, eventfd, fd sharing.

mod common;

use std::os::fd::AsFd;
use std::sync::Arc;

use common::{controllable_fence, need, LONG, SHORT};
use rustix::event::PollFlags;
use winsys::alloc::vgem::Vgem;
use winsys::device::{DrmDevice, NodeKind};
use winsys::sync::{Error, Syncobj, WaitFor};

fn virtio() -> Result<Arc<DrmDevice>, winsys::device::Error> {
    DrmDevice::find("virtio_gpu", NodeKind::Render).map(Arc::new)
}

fn readable(fd: impl AsFd, timeout: std::time::Duration) -> bool {
    let mut fds = [rustix::event::PollFd::new(&fd, PollFlags::IN)];
    let ts = rustix::time::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    rustix::event::poll(&mut fds, Some(&ts)).unwrap() == 1
}

#[test]
fn virtio_gpu_reports_timeline_syncobjs() {
    let dev = need!(virtio(), "virtio_gpu render node");
    assert!(dev.has_syncobj());
    assert!(dev.has_syncobj_timeline());
}

#[test]
fn signal_query_and_wait_on_a_timeline() {
    let dev = need!(virtio(), "virtio_gpu render node");
    let tl = Syncobj::new(&dev).unwrap();
    assert_eq!(tl.query().unwrap(), 0);
    tl.signal(3).unwrap();
    assert_eq!(tl.query().unwrap(), 3);
    assert_eq!(tl.query_last_submitted().unwrap(), 3);
    tl.wait(3, WaitFor::Signaled, Some(SHORT)).unwrap();
    tl.wait(2, WaitFor::Signaled, Some(SHORT)).unwrap();
    // An unsubmitted point: refused, or timed out when waiting for submit.
    assert!(matches!(
        tl.wait(7, WaitFor::Signaled, Some(SHORT)),
        Err(Error::PointNotSubmitted { point: 7 })
    ));
    assert!(matches!(
        tl.wait(7, WaitFor::SubmittedThenSignaled, Some(SHORT)),
        Err(Error::Timeout { .. })
    ));
    tl.signal(7).unwrap();
    tl.wait(7, WaitFor::SubmittedThenSignaled, Some(LONG))
        .unwrap();
}

#[test]
fn sync_file_to_point_and_back_follows_the_fence() {
    let dev = need!(virtio(), "virtio_gpu render node");
    let vgem = need!(Vgem::open(), "vgem");
    let (_buf, gpu, fence) = controllable_fence(&vgem);
    let tl = Syncobj::new(&dev).unwrap();
    tl.import_sync_file(5, &fence).unwrap();
    assert_eq!(tl.query_last_submitted().unwrap(), 5);
    assert!(tl.query().unwrap() < 5);
    tl.wait(5, WaitFor::Available, Some(LONG)).unwrap();
    assert!(matches!(
        tl.wait(5, WaitFor::Signaled, Some(SHORT)),
        Err(Error::Timeout { .. })
    ));
    let back = tl.export_sync_file(5).unwrap();
    assert!(!back.is_signaled().unwrap());
    assert!(matches!(
        tl.export_sync_file(9),
        Err(Error::PointNotSubmitted { point: 9 })
    ));
    gpu.signal().unwrap();
    tl.wait(5, WaitFor::Signaled, Some(LONG)).unwrap();
    assert_eq!(tl.query().unwrap(), 5);
    back.wait(Some(LONG)).unwrap();
}

#[test]
fn binary_syncobj_import_export_sync_file() {
    let dev = need!(virtio(), "virtio_gpu render node");
    let vgem = need!(Vgem::open(), "vgem");
    let bin = Syncobj::new(&dev).unwrap();
    assert!(matches!(
        bin.export_sync_file(0),
        Err(Error::PointNotSubmitted { point: 0 })
    ));
    let (_buf, gpu, fence) = controllable_fence(&vgem);
    bin.import_sync_file(0, &fence).unwrap();
    let out = bin.export_sync_file(0).unwrap();
    assert!(!out.is_signaled().unwrap());
    gpu.signal().unwrap();
    out.wait(Some(LONG)).unwrap();
    let signaled = Syncobj::new_signaled(&dev).unwrap();
    assert!(signaled.export_sync_file(0).unwrap().is_signaled().unwrap());
}

#[test]
fn transfer_copies_a_point_between_syncobjs() {
    let dev = need!(virtio(), "virtio_gpu render node");
    let vgem = need!(Vgem::open(), "vgem");
    let (_buf, gpu, fence) = controllable_fence(&vgem);
    let a = Syncobj::new(&dev).unwrap();
    let b = Syncobj::new(&dev).unwrap();
    a.import_sync_file(1, &fence).unwrap();
    a.transfer(1, &b, 10).unwrap();
    assert_eq!(b.query_last_submitted().unwrap(), 10);
    assert!(matches!(
        b.wait(10, WaitFor::Signaled, Some(SHORT)),
        Err(Error::Timeout { .. })
    ));
    gpu.signal().unwrap();
    b.wait(10, WaitFor::Signaled, Some(LONG)).unwrap();
}

#[test]
fn eventfd_fires_when_the_point_signals() {
    let dev = need!(virtio(), "virtio_gpu render node");
    let vgem = need!(Vgem::open(), "vgem");
    let tl = Syncobj::new(&dev).unwrap();
    let available = tl.eventfd(4, WaitFor::Available).unwrap();
    let signaled = tl.eventfd(4, WaitFor::Signaled).unwrap();
    assert!(!readable(&available, SHORT));
    let (_buf, gpu, fence) = controllable_fence(&vgem);
    tl.import_sync_file(4, &fence).unwrap();
    assert!(
        readable(&available, LONG),
        "AVAILABLE eventfd after the fence was attached"
    );
    assert!(
        !readable(&signaled, SHORT),
        "SIGNALED eventfd before the fence signaled"
    );
    gpu.signal().unwrap();
    assert!(readable(&signaled, LONG));
    let mut count = [0u8; 8];
    rustix::io::read(&signaled, &mut count).unwrap();
    assert_eq!(u64::from_ne_bytes(count), 1);
}

#[test]
fn one_eventfd_is_told_of_several_points_and_serves_again_after_a_drain() {
    let dev = need!(virtio(), "virtio_gpu render node");
    let (a, b) = (Syncobj::new(&dev).unwrap(), Syncobj::new(&dev).unwrap());
    let efd = rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )
    .unwrap();
    let drain = || {
        let mut count = [0u8; 8];
        rustix::io::read(&efd, &mut count).unwrap();
        u64::from_ne_bytes(count)
    };
    a.notify(2, WaitFor::Signaled, efd.as_fd()).unwrap();
    b.notify(5, WaitFor::Signaled, efd.as_fd()).unwrap();
    assert!(!readable(&efd, SHORT), "fired before any point was reached");
    b.signal(5).unwrap();
    assert!(readable(&efd, LONG), "b's point 5 reached");
    assert_eq!(drain(), 1);
    assert!(!readable(&efd, SHORT), "still readable after the drain");
    // Reached meanwhile (1 < 2): not yet a's point.
    a.signal(1).unwrap();
    assert!(
        !readable(&efd, SHORT),
        "fired for a point below the one told"
    );
    a.signal(2).unwrap();
    assert!(readable(&efd, LONG), "a's point 2 reached");
    assert_eq!(drain(), 1);
    // Told again after the drain, and of a point already reached: at once.
    a.notify(3, WaitFor::Signaled, efd.as_fd()).unwrap();
    a.notify(1, WaitFor::Signaled, efd.as_fd()).unwrap();
    assert!(readable(&efd, LONG), "a point already reached");
    assert_eq!(drain(), 1);
    a.signal(3).unwrap();
    assert!(readable(&efd, LONG), "a's point 3 reached");
    assert_eq!(drain(), 1);
    // Not an eventfd, and a wait an eventfd cannot express: typed errors.
    let not_eventfd = a.notify(4, WaitFor::Signaled, dev.as_fd());
    assert!(
        matches!(not_eventfd, Err(Error::Os { errno, .. }) if errno == rustix::io::Errno::INVAL),
        "{not_eventfd:?}"
    );
    assert!(matches!(
        a.notify(4, WaitFor::SubmittedThenSignaled, efd.as_fd()),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn syncobj_fd_shares_the_timeline_with_another_device_fd() {
    let dev = need!(virtio(), "virtio_gpu render node");
    let other = Arc::new(DrmDevice::open(dev.path()).unwrap());
    let tl = Syncobj::new(&dev).unwrap();
    let fd = tl.export().unwrap();
    let imported = Syncobj::import(&other, &fd).unwrap();
    imported.signal(2).unwrap();
    assert_eq!(tl.query().unwrap(), 2);
    assert!(matches!(
        tl.transfer(2, &imported, 3),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn vgem_has_no_syncobjs_and_says_so() {
    let vgem = need!(Vgem::open(), "vgem");
    assert!(!vgem.device().has_syncobj());
    let err = Syncobj::new(vgem.device()).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
}
