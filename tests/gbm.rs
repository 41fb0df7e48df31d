//! The GBM allocator on the guest's virtio-gpu (Mesa kms_swrast): device
//! picking by driver, modifier negotiation and its fallback rules, export as
//! a validated Dmabuf, CPU access through the dma-buf, import back into GBM.

mod common;

use common::{need, pattern};
use winsys::alloc::gbm::{GbmAllocator, Usage};
use winsys::alloc::Error;
use winsys::device::NodeKind;
use winsys::dmabuf::Access;
use winsys::format::{Fourcc, Modifier};

const X_TILED: Modifier = Modifier(0x0100_0000_0000_0001); // I915_FORMAT_MOD_X_TILED

fn gbm() -> Result<GbmAllocator, Error> {
    GbmAllocator::find(Some("virtio_gpu"))
}

#[test]
fn find_picks_a_node_that_can_allocate() {
    let gbm = need!(gbm(), "GBM on virtio_gpu");
    assert_eq!(gbm.device().driver(), "virtio_gpu");
    // kms_swrast cannot make dumb buffers on the render node.
    assert_eq!(gbm.device().kind(), Some(NodeKind::Primary), "{gbm:?}");
    assert!(gbm.supports(Fourcc::XRGB8888, Usage::RENDERING));
}

#[test]
fn linear_allocation_exports_a_valid_dmabuf_with_cpu_access() {
    let gbm = need!(gbm(), "GBM on virtio_gpu");
    let buf = gbm
        .allocate(
            256,
            200,
            Fourcc::XRGB8888,
            &[Modifier::LINEAR],
            Usage::RENDERING,
        )
        .unwrap();
    assert_eq!(buf.modifier(), Modifier::LINEAR);
    assert_eq!(
        (buf.width(), buf.height(), buf.planes().len()),
        (256, 200, 1)
    );
    assert!(buf.planes()[0].stride() >= 1024);
    let len = buf.planes()[0].stride() as usize * 200;
    let data = pattern(len, 21);
    let mut map = buf.map(Access::ReadWrite).unwrap();
    map.write(None).unwrap().write_bytes(0, 0, &data).unwrap();
    assert_eq!(map.read(None).unwrap().to_vec(0).unwrap(), &data[..]);
}

#[test]
fn import_into_gbm_shares_the_pixels() {
    let gbm = need!(gbm(), "GBM on virtio_gpu");
    let buf = gbm
        .allocate(
            64,
            64,
            Fourcc::ARGB8888,
            &[Modifier::LINEAR],
            Usage::RENDERING,
        )
        .unwrap();
    let stride = buf.planes()[0].stride() as usize;
    let data = pattern(stride * 64, 22);
    buf.map(Access::Write)
        .unwrap()
        .write(None)
        .unwrap()
        .write_bytes(0, 0, &data)
        .unwrap();
    let bo = gbm.import(&buf, Usage::RENDERING).unwrap();
    assert_eq!((bo.width(), bo.height()), (64, 64));
    assert_eq!(bo.stride() as usize, stride);
    // Export the imported BO again and read it through our own guard.
    let again = winsys::dmabuf::Dmabuf::builder(64, 64, Fourcc::ARGB8888, Modifier::LINEAR)
        .plane(bo.fd().unwrap(), bo.offset(0), bo.stride())
        .build()
        .unwrap();
    assert_eq!(
        again
            .map(Access::Read)
            .unwrap()
            .read(None)
            .unwrap()
            .to_vec(0)
            .unwrap(),
        &data[..]
    );
}

#[test]
fn unsupported_modifier_is_refused_unless_implicit_is_allowed() {
    let gbm = need!(gbm(), "GBM on virtio_gpu");
    let err = gbm
        .allocate(64, 64, Fourcc::XRGB8888, &[X_TILED], Usage::RENDERING)
        .unwrap_err();
    assert!(matches!(err, Error::Allocation { .. }), "{err}");
    assert!(err.to_string().contains("XRGB8888"), "{err}");
    // With INVALID in the list, the implicit modifier is an accepted answer.
    let buf = gbm
        .allocate(
            64,
            64,
            Fourcc::XRGB8888,
            &[X_TILED, Modifier::INVALID],
            Usage::RENDERING,
        )
        .unwrap();
    assert_ne!(buf.modifier(), X_TILED);
    assert!(matches!(
        gbm.allocate(64, 64, Fourcc::XRGB8888, &[], Usage::RENDERING),
        Err(Error::UnsupportedFormat { .. })
    ));
}

#[test]
fn unsupported_format_is_a_typed_error() {
    let gbm = need!(gbm(), "GBM on virtio_gpu");
    // kms_swrast has no YUV.
    let err = gbm
        .allocate(
            64,
            64,
            Fourcc::NV12,
            &[Modifier::LINEAR, Modifier::INVALID],
            Usage::RENDERING,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Allocation { .. } | Error::UnsupportedFormat { .. }
        ),
        "{err}"
    );
    assert!(matches!(
        gbm.allocate(
            64,
            64,
            Fourcc(0x2020_2020),
            &[Modifier::LINEAR],
            Usage::RENDERING
        ),
        Err(Error::UnsupportedFormat { .. })
    ));
    assert!(matches!(
        gbm.allocate(
            0,
            64,
            Fourcc::XRGB8888,
            &[Modifier::LINEAR],
            Usage::RENDERING
        ),
        Err(Error::ZeroSize)
    ));
}

#[test]
fn a_shared_allocator_is_searched_once_while_it_is_held() {
    use std::sync::Arc;
    let a = need!(
        GbmAllocator::shared(Some("virtio_gpu")),
        "GBM on virtio_gpu"
    );
    let b = GbmAllocator::shared(Some("virtio_gpu")).unwrap();
    assert!(
        Arc::ptr_eq(&a, &b),
        "a second search while the first is held"
    );
    assert_eq!(a.device().kind(), Some(NodeKind::Primary));
    // Another driver, another device.
    let v = need!(GbmAllocator::shared(Some("vgem")), "GBM on vgem");
    assert!(!Arc::ptr_eq(&a, &v));
    assert_eq!(v.device().driver(), "vgem");
    // No device of a driver: the search's error, and nothing kept.
    assert!(matches!(
        GbmAllocator::shared(Some("no-such-driver")),
        Err(Error::NoDevice { .. })
    ));
    let kept = Arc::downgrade(&a);
    drop((a, b));
    // The cache does not keep it: with its last holder it is gone, and
    // the next search opens a new one.
    assert!(
        kept.upgrade().is_none(),
        "the allocator outlived its holders"
    );
    let c = GbmAllocator::shared(Some("virtio_gpu")).unwrap();
    assert_eq!(c.device().driver(), "virtio_gpu");
}
