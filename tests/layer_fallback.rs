//! The Vulkan layer on a driver that lacks what winsys needs. On the test
//! bed's 5.10 (no udmabuf, no dma-buf sync_file ioctls) lavapipe offers
//! no DRM format modifiers, no sync_file semaphores or fences and no
//! `VK_EXT_physical_device_drm` (xtask/src/kernels.rs declares it as
//! `lavapipe_dmabuf`), so the layer serves no device and gets out of the
//! way — the driver's own WSI presents, through the Wayland surface the
//! layer made in the driver too, the validation layer silent, and the
//! layer says what the driver lacks. On 6.12 the same run is winsys's.
//! The test bed declares which kernel lacks what (xtask/src/kernels.rs,
//! passed as `WINSYS_KERNEL_LACKS`); tests/kernel.rs checks the
//! declaration.
//!
//! This is the one layer test that runs on both guest kernels (the others
//! need lavapipe's dma-bufs).

mod common;

use common::layer::{
    assert_reported, finishes_cleanly, shot, spawn_vkcube, vkcube_is_shown, Layer,
};
use common::need;
use common::weston::{capture, Weston};

#[test]
fn vkcube_through_the_layer_gets_the_drivers_wsi_where_the_driver_lacks_what_winsys_needs() {
    let _one = common::one_at_a_time();
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let layer = Layer::install();
    let without = common::kernel_lacks("lavapipe_dmabuf");
    let debug = [("WINSYS_LAYER_DEBUG", "1")];
    let child = spawn_vkcube(&layer, &weston.socket, 30, &debug);
    let what = format!("vkcube --c 30 (lavapipe without dma-buf images: {without})");
    let (pid, _, said) = finishes_cleanly(child, &what);
    if without {
        // Not a swapchain of the layer's: the driver's, for every frame.
        let events = layer.events(pid);
        assert!(events.is_empty(), "the layer made swapchains: {events:?}");
        let why = said
            .lines()
            .find(|l| l.contains("winsys layer: not serving"))
            .unwrap_or_else(|| panic!("the layer did not say why it stepped aside:\n{said}"));
        // 5.10's lavapipe: no modifiers, no sync_file semaphores or fences.
        for lacking in [
            "VK_EXT_image_drm_format_modifier",
            "VK_KHR_external_semaphore_fd",
            "VK_KHR_external_fence_fd",
        ] {
            assert!(why.contains(lacking), "{why}");
        }
        println!("the layer stepped aside: {why}");
    } else {
        // weston gl composes on the CPU: FIFO takes zero-copy wl_shm.
        assert_reported(&layer, pid, "shm", 30, &said);
        assert!(!said.contains("winsys layer: not serving"), "{said}");
    }
    // The picture on a weston of its own: weston 14's kiosk shell
    // segfaults now and then when one client's window goes and the
    // next one's maps (as in tests/layer.rs's every-format test).
    drop(weston);
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let conn = winsys::wayland::connect(Some(&weston.socket)).unwrap();
    vkcube_is_shown(&layer, &weston.socket, &debug, || {
        capture(&conn).ok().and_then(shot)
    });
}
