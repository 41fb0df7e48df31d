//! The implicit <-> explicit bridge on real dma-bufs, mirroring IGT's
//! `dmabuf_sync_file` (vgem fences stand in for sw_sync, which the guest
//! kernel lacks), plus sync_file behaviour (info, merge, deadline, waits).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use common::{controllable_fence, need, LONG, SHORT};
use winsys::alloc::vgem::Vgem;
use winsys::dmabuf::{fences, Access, ImplicitFence};
use winsys::format::Fourcc;
use winsys::sync::{self, FenceStatus};

fn vgem() -> Result<Vgem, winsys::alloc::Error> {
    Vgem::open()
}

#[test]
fn export_basic() {
    let vgem = need!(vgem(), "vgem");
    let buf = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    // No fence: an already signaled stub, for either access.
    for access in [Access::Read, Access::Write, Access::ReadWrite] {
        assert!(buf
            .dmabuf()
            .export_sync_file(access)
            .unwrap()
            .is_signaled()
            .unwrap());
    }
    let write = buf.attach_fence(Access::Write).unwrap();
    let for_read = buf.dmabuf().export_sync_file(Access::Read).unwrap();
    let for_write = buf.dmabuf().export_sync_file(Access::Write).unwrap();
    assert!(!for_read.is_signaled().unwrap());
    assert!(!for_write.is_signaled().unwrap());
    write.signal().unwrap();
    assert!(for_read.is_signaled().unwrap());
    assert!(for_write.is_signaled().unwrap());
}

#[test]
fn export_read_ignores_read_fences_write_waits_for_them() {
    let vgem = need!(vgem(), "vgem");
    let buf = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let reader = buf.attach_fence(Access::Read).unwrap();
    assert!(buf
        .dmabuf()
        .export_sync_file(Access::Read)
        .unwrap()
        .is_signaled()
        .unwrap());
    let for_write = buf.dmabuf().export_sync_file(Access::Write).unwrap();
    assert!(!for_write.is_signaled().unwrap());
    reader.signal().unwrap();
    assert!(for_write.is_signaled().unwrap());
}

#[test]
fn export_before_signal_wakes_a_blocked_waiter() {
    let vgem = need!(vgem(), "vgem");
    let buf = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let write = buf.attach_fence(Access::Write).unwrap();
    let sync = buf.dmabuf().export_sync_file(Access::Read).unwrap();
    let signaled = Arc::new(AtomicBool::new(false));
    let flag = signaled.clone();
    let waiter = thread::spawn(move || {
        sync.wait(Some(LONG)).unwrap();
        flag.load(Ordering::SeqCst)
    });
    thread::sleep(SHORT);
    signaled.store(true, Ordering::SeqCst);
    write.signal().unwrap();
    assert!(
        waiter.join().unwrap(),
        "waiter returned before the fence was signaled"
    );
}

#[test]
fn export_multiwait_ignores_fences_attached_after_export() {
    let vgem = need!(vgem(), "vgem");
    let buf = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let first = buf.attach_fence(Access::Read).unwrap();
    let snapshot = buf.dmabuf().export_sync_file(Access::Write).unwrap();
    let second = buf.attach_fence(Access::Read).unwrap();
    assert!(!snapshot.is_signaled().unwrap());
    first.signal().unwrap();
    assert!(
        snapshot.is_signaled().unwrap(),
        "snapshot must not wait for a later fence"
    );
    assert!(!buf
        .dmabuf()
        .export_sync_file(Access::Write)
        .unwrap()
        .is_signaled()
        .unwrap());
    second.signal().unwrap();
}

#[test]
fn export_wait_after_attach() {
    let vgem = need!(vgem(), "vgem");
    let buf = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let before = buf.dmabuf().export_sync_file(Access::Read).unwrap();
    let write = buf.attach_fence(Access::Write).unwrap();
    assert!(
        before.is_signaled().unwrap(),
        "an export before the attach stays signaled"
    );
    let after = buf.dmabuf().export_sync_file(Access::Read).unwrap();
    assert!(matches!(
        after.wait(Some(SHORT)),
        Err(sync::Error::Timeout { .. })
    ));
    write.signal().unwrap();
    after.wait(Some(LONG)).unwrap();
}

#[test]
fn import_basic_write_fence_blocks_readers() {
    let vgem = need!(vgem(), "vgem");
    let target = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let (_src, gpu, fence) = controllable_fence(&vgem);
    target
        .dmabuf()
        .import_sync_file(&fence, Access::Write)
        .unwrap();
    let for_read = target.dmabuf().export_sync_file(Access::Read).unwrap();
    assert!(!for_read.is_signaled().unwrap());
    let poll = ImplicitFence::poll_based(target.dmabuf().planes()[0].fd(), Access::Read).unwrap();
    assert!(
        !poll.is_signaled().unwrap(),
        "poll(POLLIN) must see the imported write fence"
    );
    gpu.signal().unwrap();
    assert!(for_read.is_signaled().unwrap());
    assert!(poll.is_signaled().unwrap());
}

#[test]
fn import_multiple_read_only() {
    let vgem = need!(vgem(), "vgem");
    let target = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let (_a, gpu_a, fence_a) = controllable_fence(&vgem);
    let (_b, gpu_b, fence_b) = controllable_fence(&vgem);
    target
        .dmabuf()
        .import_sync_file(&fence_a, Access::Read)
        .unwrap();
    target
        .dmabuf()
        .import_sync_file(&fence_b, Access::Read)
        .unwrap();
    // Readers do not wait for readers; writers wait for both.
    assert!(target
        .dmabuf()
        .export_sync_file(Access::Read)
        .unwrap()
        .is_signaled()
        .unwrap());
    let for_write = target.dmabuf().export_sync_file(Access::Write).unwrap();
    assert!(!for_write.is_signaled().unwrap());
    gpu_a.signal().unwrap();
    assert!(
        !for_write.is_signaled().unwrap(),
        "still waiting for the second reader"
    );
    gpu_b.signal().unwrap();
    assert!(for_write.is_signaled().unwrap());
}

#[test]
fn import_multiple_read_write() {
    let vgem = need!(vgem(), "vgem");
    let target = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let (_a, gpu_a, fence_a) = controllable_fence(&vgem);
    let (_b, gpu_b, fence_b) = controllable_fence(&vgem);
    target
        .dmabuf()
        .import_sync_file(&fence_a, Access::ReadWrite)
        .unwrap();
    target
        .dmabuf()
        .import_sync_file(&fence_b, Access::ReadWrite)
        .unwrap();
    let for_read = target.dmabuf().export_sync_file(Access::Read).unwrap();
    let for_write = target.dmabuf().export_sync_file(Access::ReadWrite).unwrap();
    assert!(!for_read.is_signaled().unwrap());
    gpu_a.signal().unwrap();
    assert!(
        !for_read.is_signaled().unwrap(),
        "both write fences count for readers"
    );
    assert!(!for_write.is_signaled().unwrap());
    gpu_b.signal().unwrap();
    assert!(for_read.is_signaled().unwrap());
    assert!(for_write.is_signaled().unwrap());
}

#[test]
fn free_functions_refuse_non_dmabuf_fds() {
    let vgem = need!(vgem(), "vgem");
    let (_b, _gpu, fence) = controllable_fence(&vgem);
    let err = fences::export_sync_file(&fence, Access::Read).unwrap_err();
    assert!(
        matches!(err, winsys::dmabuf::Error::NotDmabuf { .. }),
        "{err}"
    );
    let (r, _w) = rustix::pipe::pipe().unwrap();
    let err = fences::import_sync_file(&r, &fence, Access::Write).unwrap_err();
    assert!(
        matches!(err, winsys::dmabuf::Error::NotDmabuf { .. }),
        "{err}"
    );
}

#[test]
fn sync_file_info_names_driver_timeline_status_and_timestamp() {
    let vgem = need!(vgem(), "vgem");
    let (_b, gpu, fence) = controllable_fence(&vgem);
    let info = fence.info().unwrap();
    assert_eq!(info.status, FenceStatus::Active);
    assert_eq!(info.fences.len(), 1);
    assert_eq!(info.fences[0].driver, "vgem");
    assert!(!info.fences[0].timeline.is_empty());
    assert_eq!(info.fences[0].timestamp, None);
    gpu.signal().unwrap();
    let info = fence.info().unwrap();
    assert_eq!(info.status, FenceStatus::Signaled);
    assert_eq!(info.fences[0].status, FenceStatus::Signaled);
    assert!(info.fences[0].timestamp.is_some());
}

#[test]
fn merged_sync_file_signals_when_both_have() {
    let vgem = need!(vgem(), "vgem");
    let (_a, gpu_a, a) = controllable_fence(&vgem);
    let (_b, gpu_b, b) = controllable_fence(&vgem);
    let merged = a.merge(&b, "both").unwrap();
    let info = merged.info().unwrap();
    assert_eq!(info.name, "both");
    assert_eq!(info.fences.len(), 2);
    gpu_a.signal().unwrap();
    assert!(!merged.is_signaled().unwrap());
    gpu_b.signal().unwrap();
    assert!(merged.is_signaled().unwrap());
}

#[test]
fn sync_file_wait_times_out_then_succeeds_and_deadline_is_accepted() {
    let vgem = need!(vgem(), "vgem");
    let (_b, gpu, fence) = controllable_fence(&vgem);
    fence
        .set_deadline(std::time::Duration::from_millis(1))
        .unwrap();
    let err = fence.wait(Some(SHORT)).unwrap_err();
    assert!(matches!(err, sync::Error::Timeout { .. }), "{err}");
    assert_eq!(err.errno(), Some(rustix::io::Errno::TIME));
    gpu.signal().unwrap();
    fence.wait(Some(LONG)).unwrap();
    fence.wait(None).unwrap();
}

#[test]
fn implicit_fence_and_attach_fence_use_the_ioctls_on_this_kernel() {
    let vgem = need!(vgem(), "vgem");
    let target = vgem.create(64, 64, Fourcc::XRGB8888).unwrap();
    let (_b, gpu, fence) = controllable_fence(&vgem);
    let attached = target
        .dmabuf()
        .attach_fence(&fence, Access::Write, Some(SHORT))
        .unwrap();
    assert_eq!(attached, winsys::dmabuf::Attached::Imported);
    let implicit = target.dmabuf().implicit_fence(Access::Read).unwrap();
    assert!(matches!(implicit, ImplicitFence::SyncFile(_)));
    assert!(!implicit.is_signaled().unwrap());
    gpu.signal().unwrap();
    implicit.wait(Some(LONG)).unwrap();
    assert_eq!(sync::probe::dmabuf_sync_file_cached(), Some(true));
}
