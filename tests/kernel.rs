//! The test bed declares what each guest kernel lacks (xtask/src/kernels.rs)
//! and leaves out the tests that need it; this checks the declaration
//! against the running kernel, so it cannot go stale unnoticed.

mod common;

use std::sync::Arc;

use winsys::alloc::heap::DmaHeap;
use winsys::alloc::udmabuf::Udmabuf;
use winsys::alloc::vgem::Vgem;
use winsys::device::{DrmDevice, NodeKind};
use winsys::format::Fourcc;
use winsys::sync::probe;

use common::LACKS_ENV;

#[test]
fn declared_kernel_features_match_this_kernel() {
    let Some(lacks) = std::env::var_os(LACKS_ENV) else {
        assert!(
            !common::devices_required(),
            "{LACKS_ENV} must be set by the test bed"
        );
        println!("SKIP: {LACKS_ENV} unset: no declaration to check outside the test bed");
        return;
    };
    let lacks = lacks.to_string_lossy().into_owned();
    let lacks: Vec<&str> = lacks.split(',').filter(|s| !s.is_empty()).collect();
    let vgem = Vgem::open().expect("vgem is on every test-bed kernel");
    let buf = vgem.create(16, 16, Fourcc::XRGB8888).unwrap();
    let virtio = Arc::new(DrmDevice::find("virtio_gpu", NodeKind::Render).unwrap());
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let found = [
        (
            "dmabuf_sync_file",
            probe::dmabuf_sync_file(buf.dmabuf().planes()[0].fd()),
        ),
        ("udmabuf", Udmabuf::open().is_ok()),
        ("dma_heap", DmaHeap::open_system().is_ok()),
        ("syncobj_eventfd", probe::syncobj_eventfd(&virtio)),
        ("virtio_gpu_syncobj", virtio.has_syncobj()),
    ];
    for (feature, present) in found {
        println!(
            "kernel {}: {feature}: {} (declared {})",
            release.trim(),
            if present { "present" } else { "absent" },
            if lacks.contains(&feature) {
                "absent"
            } else {
                "present"
            }
        );
        assert_eq!(
            present,
            !lacks.contains(&feature),
            "{feature} on kernel {}: the declaration in xtask/src/kernels.rs is wrong",
            release.trim()
        );
    }
}
