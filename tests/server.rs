//! The compositor-side building blocks (`winsys::server`) on real dma-bufs
//! and fences: params checked against real dma-buf sizes, the acquire gate
//! in each sync mode (vgem fences make a client's pending work), the
//! release tracker delivering into timelines, fences and dma-bufs.

mod common;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{controllable_fence, need, LONG, SHORT};
use rustix::event::PollFlags;
use winsys::alloc::vgem::Vgem;
use winsys::device::{DrmDevice, NodeKind};
use winsys::dmabuf::{Access, Dmabuf};
use winsys::format::{Fourcc, Modifier};
use winsys::server::acquire::{Acquire, AcquireGate, ReadyWhen};
use winsys::server::params::{code, Create, Params, ParamsError};
use winsys::server::release::{Delivered, Release, ReleaseTo, ReleaseTracker};
use winsys::sync::{probe, Syncobj, WaitFor};

fn readable(fd: impl AsFd, timeout: Duration) -> bool {
    winsys_poll(fd.as_fd(), timeout)
}

fn winsys_poll(fd: std::os::fd::BorrowedFd<'_>, timeout: Duration) -> bool {
    let mut fds = [rustix::event::PollFd::new(&fd, PollFlags::IN)];
    let ts = rustix::time::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    rustix::event::poll(&mut fds, Some(&ts)).unwrap() == 1
}

fn dup(dmabuf: &Dmabuf) -> OwnedFd {
    dmabuf.planes()[0].fd().try_clone_to_owned().unwrap()
}

fn virtio() -> Result<Arc<DrmDevice>, winsys::device::Error> {
    DrmDevice::find("virtio_gpu", NodeKind::Render).map(Arc::new)
}

fn any(_: Fourcc, _: Modifier) -> bool {
    true
}

#[test]
fn params_take_real_dma_bufs_and_refuse_other_fds() {
    // One at a time: the fd count below is process-wide.
    let _one = common::one_at_a_time();
    let vgem = need!(Vgem::open(), "vgem");
    let buf = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let stride = buf.dmabuf().planes()[0].stride();
    let create = Create {
        width: 64,
        height: 64,
        format: Fourcc::XRGB8888,
        flags: 0,
    };

    let mut params = Params::new(5);
    params
        .add(0, dup(buf.dmabuf()), 0, stride, Modifier::LINEAR)
        .unwrap();
    let dmabuf = params.create(create, any).unwrap().into_dmabuf().unwrap();
    assert_eq!(dmabuf.planes()[0].id(), buf.dmabuf().planes()[0].id());

    // One row further in, the last row passes the end of the dma-buf:
    // the size came from the kernel (lseek), not from the client.
    let mut params = Params::new(5);
    params
        .add(0, dup(buf.dmabuf()), stride, stride, Modifier::LINEAR)
        .unwrap();
    let e = params.create(create, any).unwrap_err();
    assert_eq!(e.code(), Some(code::OUT_OF_BOUNDS), "{e}");

    // A memfd is no dma-buf: a failed import (no protocol error), and the
    // error names what the fd is.
    let memfd = rustix::fs::memfd_create("not-a-dmabuf", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&memfd, 1 << 16).unwrap();
    let mut params = Params::new(5);
    params.add(0, memfd, 0, stride, Modifier::LINEAR).unwrap();
    let e = params.create(create, any).unwrap_err();
    assert!(matches!(e, ParamsError::NotDmabuf { plane: 0, .. }), "{e}");
    assert_eq!(e.create_immed_code(), code::INVALID_WL_BUFFER);
    assert!(e.to_string().contains("memfd"), "{e}");
}

/// NV12 whose two planes live in two vgem buffers (a disjoint image).
fn two_plane_image(
    vgem: &Vgem,
) -> (
    winsys::alloc::vgem::VgemBuffer,
    winsys::alloc::vgem::VgemBuffer,
    Dmabuf,
) {
    let luma = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let chroma = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let image = Dmabuf::builder(64, 64, Fourcc::NV12, Modifier::LINEAR)
        .plane(dup(luma.dmabuf()), 0, 64)
        .plane(dup(chroma.dmabuf()), 0, 64)
        .build()
        .unwrap();
    assert!(image.is_disjoint());
    (luma, chroma, image)
}

#[test]
fn implicit_gate_waits_for_the_writers_of_every_plane_not_for_readers() {
    let _one = common::one_at_a_time();
    let vgem = need!(Vgem::open(), "vgem");
    let (luma, chroma, image) = two_plane_image(&vgem);
    // A writer on the SECOND plane's dma-buf holds the gate (checking
    // plane 0 alone would let the compositor read a half-written image).
    let writer = chroma.attach_fence(Access::Write).unwrap();
    // A reader does not: the compositor only reads too.
    let reader = luma.attach_fence(Access::Read).unwrap();
    let mut gate = AcquireGate::new(&image, Acquire::Implicit, ReadyWhen::Signaled).unwrap();
    assert!(!gate.is_ready().unwrap());
    assert!(
        !readable(gate.fd(), SHORT),
        "gate fd readable while a plane is written"
    );
    assert!(matches!(
        gate.wait(SHORT),
        Err(winsys::server::Error::Timeout { .. })
    ));
    writer.signal().unwrap();
    assert!(
        readable(gate.fd(), LONG),
        "gate fd after the writer signaled"
    );
    assert!(gate.is_ready().unwrap());
    // It stays readable (level-triggered event loops see it again).
    assert!(readable(gate.fd(), SHORT));
    assert!(gate.is_ready().unwrap());
    reader.signal().unwrap();
    let fence = gate.into_sync_file().unwrap();
    match probe::dmabuf_sync_file_cached() {
        Some(true) => assert!(fence.expect("a snapshot").is_signaled().unwrap()),
        _ => assert!(fence.is_none(), "the poll fallback has no fence to hand on"),
    }
}

#[test]
fn implicit_gate_snapshot_ignores_writes_attached_after_the_commit() {
    let _one = common::one_at_a_time();
    let vgem = need!(Vgem::open(), "vgem");
    let buf = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let mut gate = AcquireGate::new(buf.dmabuf(), Acquire::Implicit, ReadyWhen::Signaled).unwrap();
    let late = buf.attach_fence(Access::Write).unwrap();
    assert!(gate.is_ready().unwrap(), "a later write held the commit");
    assert!(readable(gate.fd(), SHORT));
    late.signal().unwrap();
}

#[test]
fn materialized_implicit_gate_opens_at_once_and_hands_the_fence_on() {
    let _one = common::one_at_a_time();
    let vgem = need!(Vgem::open(), "vgem");
    let buf = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let writer = buf.attach_fence(Access::Write).unwrap();
    let mut gate =
        AcquireGate::new(buf.dmabuf(), Acquire::Implicit, ReadyWhen::Materialized).unwrap();
    assert!(gate.is_ready().unwrap());
    assert!(readable(gate.fd(), SHORT));
    let fence = gate.into_sync_file().unwrap().expect("the writers' fence");
    assert!(!fence.is_signaled().unwrap(), "the GPU must still wait");
    writer.signal().unwrap();
    fence.wait(Some(LONG)).unwrap();
}

#[test]
fn fence_gate_follows_the_clients_acquire_fence() {
    let _one = common::one_at_a_time();
    let vgem = need!(Vgem::open(), "vgem");
    let image = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let (_buf, gpu, fence) = controllable_fence(&vgem);
    let mut gate =
        AcquireGate::new(image.dmabuf(), Acquire::Fence(fence), ReadyWhen::Signaled).unwrap();
    assert!(!gate.is_ready().unwrap());
    assert!(!readable(gate.fd(), SHORT));
    gpu.signal().unwrap();
    gate.wait(LONG).unwrap();
    assert!(gate
        .into_sync_file()
        .unwrap()
        .unwrap()
        .is_signaled()
        .unwrap());
}

#[test]
fn timeline_gate_opens_when_the_point_materializes_or_signals() {
    let _one = common::one_at_a_time();
    let dev = need!(virtio(), "virtio_gpu render node");
    let vgem = need!(Vgem::open(), "vgem");
    let image = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let timeline = Arc::new(Syncobj::new(&dev).unwrap());
    let acquire = |when| {
        AcquireGate::new(
            image.dmabuf(),
            Acquire::Timeline {
                timeline: timeline.clone(),
                point: 3,
            },
            when,
        )
        .unwrap()
    };
    let mut signaled = acquire(ReadyWhen::Signaled);
    let mut materialized = acquire(ReadyWhen::Materialized);
    assert!(!signaled.is_ready().unwrap());
    assert!(!materialized.is_ready().unwrap(), "no fence at point 3 yet");
    let too_early = acquire(ReadyWhen::Materialized).into_sync_file();
    assert!(matches!(too_early, Err(winsys::server::Error::Invalid(_))));

    let (_buf, gpu, fence) = controllable_fence(&vgem);
    timeline.import_sync_file(3, &fence).unwrap();
    assert!(
        readable(materialized.fd(), LONG),
        "the point has a fence now"
    );
    assert!(materialized.is_ready().unwrap());
    assert!(!signaled.is_ready().unwrap());
    let handed_on = materialized.into_sync_file().unwrap().unwrap();
    assert!(!handed_on.is_signaled().unwrap());

    gpu.signal().unwrap();
    signaled.wait(LONG).unwrap();
    assert!(handed_on.is_signaled().unwrap());
}

#[test]
fn release_into_a_timeline_point_waits_for_every_use() {
    let _one = common::one_at_a_time();
    let dev = need!(virtio(), "virtio_gpu render node");
    let vgem = need!(Vgem::open(), "vgem");
    let timeline = Arc::new(Syncobj::new(&dev).unwrap());
    let signaled_at_5 = timeline.eventfd(5, WaitFor::Signaled).unwrap();

    let mut tracker = ReleaseTracker::new(ReleaseTo::Timeline {
        timeline: timeline.clone(),
        point: 5,
    });
    let (_a, render, render_done) = controllable_fence(&vgem);
    let (_b, scanout, scanout_done) = controllable_fence(&vgem);
    tracker.add_use(render_done).unwrap();
    tracker.add_use(scanout_done).unwrap();
    assert_eq!(tracker.uses(), 2);
    assert_eq!(tracker.release().unwrap(), Delivered::FenceImported);

    timeline.wait(5, WaitFor::Available, Some(LONG)).unwrap();
    assert!(!readable(&signaled_at_5, SHORT));
    render.signal().unwrap();
    assert!(
        !readable(&signaled_at_5, SHORT),
        "released with the scanout still on"
    );
    scanout.signal().unwrap();
    assert!(readable(&signaled_at_5, LONG));
    assert_eq!(timeline.query().unwrap(), 5);
}

#[test]
fn release_without_uses_signals_the_point_at_once_and_drop_still_releases() {
    let _one = common::one_at_a_time();
    let dev = need!(virtio(), "virtio_gpu render node");
    let timeline = Arc::new(Syncobj::new(&dev).unwrap());
    let tracker = ReleaseTracker::new(ReleaseTo::Timeline {
        timeline: timeline.clone(),
        point: 2,
    });
    assert_eq!(tracker.release().unwrap(), Delivered::Immediately);
    assert_eq!(timeline.query().unwrap(), 2);
    // A tracker dropped on some error path still releases.
    drop(ReleaseTracker::new(ReleaseTo::Timeline {
        timeline: timeline.clone(),
        point: 4,
    }));
    assert_eq!(timeline.query().unwrap(), 4);
}

#[test]
fn implicit_release_makes_the_clients_next_write_wait_for_the_reads() {
    let _one = common::one_at_a_time();
    let vgem = need!(Vgem::open(), "vgem");
    let client = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let (_buf, sampling, sampling_done) = controllable_fence(&vgem);
    let sent = Arc::new(Mutex::new(Vec::new()));
    let log = sent.clone();
    let mut tracker = ReleaseTracker::new(ReleaseTo::Implicit {
        dmabuf: client.dmabuf().clone(),
        then: Box::new(move |r| log.lock().unwrap().push(r)),
    });
    tracker.add_use(sampling_done).unwrap();
    assert_eq!(tracker.release().unwrap(), Delivered::FenceImported);
    assert!(matches!(sent.lock().unwrap().as_slice(), [Release::Now]));
    // The client's next write waits for the compositor's read.
    let before_write = client.dmabuf().export_sync_file(Access::Write).unwrap();
    assert!(!before_write.is_signaled().unwrap());
    // A reader does not.
    let before_read = client.dmabuf().export_sync_file(Access::Read).unwrap();
    assert!(before_read.is_signaled().unwrap());
    sampling.signal().unwrap();
    before_write.wait(Some(LONG)).unwrap();
}

#[test]
fn explicit_release_sends_the_merged_fence_exactly_once() {
    let _one = common::one_at_a_time();
    let vgem = need!(Vgem::open(), "vgem");
    let calls = Arc::new(AtomicUsize::new(0));
    let fence_sent = Arc::new(Mutex::new(None));
    let tracker_for = |calls: Arc<AtomicUsize>, slot: Arc<Mutex<Option<_>>>| {
        ReleaseTracker::new(ReleaseTo::Fence(Box::new(move |r| {
            calls.fetch_add(1, Ordering::SeqCst);
            if let Release::AfterFence(f) = r {
                *slot.lock().unwrap() = Some(f);
            }
        })))
    };
    let mut tracker = tracker_for(calls.clone(), fence_sent.clone());
    let (_a, one, one_done) = controllable_fence(&vgem);
    let (_b, two, two_done) = controllable_fence(&vgem);
    tracker.add_use(one_done).unwrap();
    tracker.add_use(two_done).unwrap();
    // Dropped, not released: it still delivers, once.
    drop(tracker);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let fence = fence_sent.lock().unwrap().take().expect("fenced_release");
    one.signal().unwrap();
    assert!(!fence.is_signaled().unwrap());
    two.signal().unwrap();
    fence.wait(Some(LONG)).unwrap();

    // Nothing used it: immediate_release.
    let calls = Arc::new(AtomicUsize::new(0));
    let slot = Arc::new(Mutex::new(None));
    let tracker = tracker_for(calls.clone(), slot.clone());
    assert_eq!(tracker.release().unwrap(), Delivered::Immediately);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(slot.lock().unwrap().is_none());
}

#[test]
fn gates_and_trackers_leave_no_fd_behind() {
    let _one = common::one_at_a_time();
    let vgem = need!(Vgem::open(), "vgem");
    let (luma, _chroma, image) = two_plane_image(&vgem);
    let warm = AcquireGate::new(&image, Acquire::Implicit, ReadyWhen::Signaled).unwrap();
    drop(warm);
    let before = common::open_fds();
    for round in 0..50 {
        let writer = luma.attach_fence(Access::Write).unwrap();
        let mut gate = AcquireGate::new(&image, Acquire::Implicit, ReadyWhen::Signaled).unwrap();
        assert!(!gate.is_ready().unwrap());
        if round % 2 == 0 {
            writer.signal().unwrap();
            gate.wait(LONG).unwrap();
            let _ = gate.into_sync_file().unwrap();
        } else {
            drop(gate);
            writer.signal().unwrap();
        }
        let released = Arc::new(AtomicUsize::new(0));
        let r = released.clone();
        let tracker = ReleaseTracker::new(ReleaseTo::Implicit {
            dmabuf: image.clone(),
            then: Box::new(move |_| {
                r.fetch_add(1, Ordering::SeqCst);
            }),
        });
        drop(tracker);
        assert_eq!(released.load(Ordering::SeqCst), 1);
    }
    assert_eq!(common::open_fds(), before);
}

#[test]
fn use_points_are_taken_in_once_they_materialize() {
    let _one = common::one_at_a_time();
    let dev = need!(virtio(), "virtio_gpu render node");
    let vgem = need!(Vgem::open(), "vgem");
    let release_tl = Arc::new(Syncobj::new(&dev).unwrap());
    let render_tl = Arc::new(Syncobj::new(&dev).unwrap());
    let mut tracker = ReleaseTracker::new(ReleaseTo::Timeline {
        timeline: release_tl.clone(),
        point: 5,
    });
    // The compositor's render timeline: point 1 is not submitted yet.
    tracker.add_use_point(render_tl.clone(), 1).unwrap();
    assert!(!tracker.is_materialized().unwrap());
    let fd = tracker.materialized_fd().expect("an fd to poll");
    assert!(!readable(fd, SHORT));
    let (_buf, gpu, render_done) = controllable_fence(&vgem);
    render_tl.import_sync_file(1, &render_done).unwrap();
    assert!(readable(tracker.materialized_fd().unwrap(), LONG));
    assert!(tracker.is_materialized().unwrap());
    assert!(tracker.materialized_fd().is_none());
    let t = std::time::Instant::now();
    assert_eq!(tracker.release().unwrap(), Delivered::FenceImported);
    // A release that waited would wait for the render fence (pending until
    // vgem gives up on it, 10 s): half that bound holds on any machine.
    assert!(t.elapsed() < LONG, "a materialized release waited");
    release_tl.wait(5, WaitFor::Available, Some(LONG)).unwrap();
    assert_ne!(release_tl.query().unwrap(), 5, "released before the render");
    gpu.signal().unwrap();
    release_tl.wait(5, WaitFor::Signaled, Some(LONG)).unwrap();

    // A point never submitted: the release waits a bounded time, then
    // goes out without it (nothing lost, nothing hung).
    let mut tracker = ReleaseTracker::new(ReleaseTo::Timeline {
        timeline: release_tl.clone(),
        point: 6,
    });
    tracker.add_use_point(render_tl.clone(), 10).unwrap();
    let t = std::time::Instant::now();
    assert_eq!(tracker.release().unwrap(), Delivered::Immediately);
    let waited = t.elapsed();
    assert!(
        waited >= winsys::server::release::FALLBACK_WAIT && waited < LONG,
        "{waited:?}"
    );
    assert_eq!(release_tl.query().unwrap(), 6);
}
