//! The uniform fallback for kernels without the dma-buf sync_file ioctls,
//! proven on a kernel that has them by forcing the probe's answer
//! (`WINSYS_NO_DMABUF_SYNC_FILE=1`): callers get poll-based fences and
//! CPU waits, never a silent no-op.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use common::{controllable_fence, need, LONG, SHORT};
use winsys::alloc::vgem::Vgem;
use winsys::dmabuf::{Access, Attached, ImplicitFence};
use winsys::format::Fourcc;
use winsys::sync::probe;

fn force_fallback() {
    // Every test of this binary sets the same value before any probe.
    std::env::set_var(probe::DISABLE_DMABUF_SYNC_FILE_ENV, "1");
}

#[test]
fn implicit_fence_falls_back_to_polling_the_dmabuf() {
    force_fallback();
    let vgem = need!(Vgem::open(), "vgem");
    let buf = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let write = buf.attach_fence(Access::Write).unwrap();
    let fence = buf.dmabuf().implicit_fence(Access::Read).unwrap();
    assert!(matches!(fence, ImplicitFence::Poll { .. }), "{fence:?}");
    assert_eq!(probe::dmabuf_sync_file_cached(), Some(false));
    assert!(matches!(
        fence.wait(Some(SHORT)),
        Err(winsys::dmabuf::Error::Timeout { .. })
    ));
    write.signal().unwrap();
    fence.wait(Some(LONG)).unwrap();
}

#[test]
fn attach_fence_waits_on_the_cpu_before_returning() {
    force_fallback();
    let vgem = need!(Vgem::open(), "vgem");
    let target = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let (_src, gpu, fence) = controllable_fence(&vgem);
    let signaled = Arc::new(AtomicBool::new(false));
    let flag = signaled.clone();
    let signaler = thread::spawn(move || {
        thread::sleep(SHORT);
        flag.store(true, Ordering::SeqCst);
        gpu.signal().unwrap();
    });
    let how = target
        .dmabuf()
        .attach_fence(&fence, Access::Write, Some(LONG))
        .unwrap();
    assert_eq!(how, Attached::WaitedOnCpu);
    assert!(
        signaled.load(Ordering::SeqCst),
        "returned before the fence signaled"
    );
    assert!(fence.is_signaled().unwrap());
    signaler.join().unwrap();
}

#[test]
fn attach_fence_fallback_times_out_with_a_typed_error() {
    force_fallback();
    let vgem = need!(Vgem::open(), "vgem");
    let target = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let (_src, _gpu, fence) = controllable_fence(&vgem);
    let err = target
        .dmabuf()
        .attach_fence(&fence, Access::Write, Some(SHORT))
        .unwrap_err();
    assert!(
        matches!(
            err,
            winsys::dmabuf::Error::Sync(winsys::sync::Error::Timeout { .. })
        ),
        "{err}"
    );
}

/// The acquire gate without the export ioctl: one epoll fd over every
/// dma-buf of the image, readable once all their writers are done.
#[cfg(feature = "server")]
#[test]
fn acquire_gate_falls_back_to_epoll_over_the_dmabufs() {
    use winsys::format::Modifier;
    use winsys::server::acquire::{Acquire, AcquireGate, ReadyWhen};
    force_fallback();
    let vgem = need!(Vgem::open(), "vgem");
    let luma = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let chroma = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let dup = |b: &winsys::alloc::vgem::VgemBuffer| {
        b.dmabuf().planes()[0].fd().try_clone_to_owned().unwrap()
    };
    let image = winsys::dmabuf::Dmabuf::builder(64, 64, Fourcc::NV12, Modifier::LINEAR)
        .plane(dup(&luma), 0, 64)
        .plane(dup(&chroma), 0, 64)
        .build()
        .unwrap();
    let first = luma.attach_fence(Access::Write).unwrap();
    let second = chroma.attach_fence(Access::Write).unwrap();
    // Materialized cannot be had without a fence: it waits for signaled.
    let mut gate = AcquireGate::new(&image, Acquire::Implicit, ReadyWhen::Materialized).unwrap();
    assert_eq!(probe::dmabuf_sync_file_cached(), Some(false));
    assert!(!gate.is_ready().unwrap());
    first.signal().unwrap();
    assert!(matches!(
        gate.wait(SHORT),
        Err(winsys::server::Error::Timeout { .. })
    ));
    second.signal().unwrap();
    gate.wait(LONG).unwrap();
    let fd = gate.fd();
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    assert_eq!(
        rustix::event::poll(&mut fds, None).unwrap(),
        1,
        "the gate fd stays readable"
    );
    assert!(gate.into_sync_file().unwrap().is_none());
}

/// An implicit release without the import ioctl: the compositor is handed
/// the fence to wait for before it sends wl_buffer.release.
#[cfg(feature = "server")]
#[test]
fn implicit_release_falls_back_to_a_fence_to_wait_for() {
    use std::sync::Mutex;
    use winsys::server::release::{Delivered, Release, ReleaseTo, ReleaseTracker};
    force_fallback();
    let vgem = need!(Vgem::open(), "vgem");
    let client = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let (_buf, sampling, sampling_done) = controllable_fence(&vgem);
    let sent = Arc::new(Mutex::new(None));
    let slot = sent.clone();
    let mut tracker = ReleaseTracker::new(ReleaseTo::Implicit {
        dmabuf: client.dmabuf().clone(),
        then: Box::new(move |r| *slot.lock().unwrap() = Some(r)),
    });
    tracker.add_use(sampling_done).unwrap();
    assert_eq!(tracker.release().unwrap(), Delivered::FenceSent);
    let Some(Release::AfterFence(fence)) = sent.lock().unwrap().take() else {
        panic!("no fence handed over");
    };
    assert!(!fence.is_signaled().unwrap());
    sampling.signal().unwrap();
    fence.wait(Some(LONG)).unwrap();
}
