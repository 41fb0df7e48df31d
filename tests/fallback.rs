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
