//! The Wayland client side against a real compositor (weston 14 headless,
//! started per test): globals, linux-dmabuf feedback, the sync mode.

mod common;

use std::time::Duration;

use common::weston::Weston;
use common::{need, LONG};
use winsys::alloc::vgem::Vgem;
use winsys::device::{DrmDevice, NodeKind};
use winsys::format::{Fourcc, Modifier};
use winsys::sync::probe as kernel;
use winsys::wayland::{self, sync, sync::Abilities, sync::SyncMode};

const PROBE: Duration = Duration::from_secs(20);

#[test]
fn weston_gl_offers_feedback_on_a_device_of_this_machine_and_explicit_sync() {
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let conn = wayland::connect(Some(&weston.socket)).unwrap();
    let report = wayland::probe(&conn, PROBE).unwrap();
    for g in &report.globals {
        println!("global {} v{}", g.interface, g.version);
    }
    let offer = report.offer();
    assert!(offer.linux_dmabuf >= Some(4), "{offer:?}");
    assert_eq!(offer.explicit_sync, Some(2));
    assert_eq!(offer.drm_syncobj, None, "weston 14 has no drm-syncobj");
    assert!(offer.shm.is_some());

    let feedback = report.feedback.expect("v4+ sends feedback").unwrap();
    let main = DrmDevice::open_dev_t(feedback.main_device).expect("main device is a node here");
    println!(
        "main device {} ({}), {} tranche(s)",
        main.path().display(),
        main.driver(),
        feedback.tranches.len()
    );
    assert!(!feedback.tranches.is_empty());
    for t in &feedback.tranches {
        DrmDevice::open_dev_t(t.target_device).expect("tranche target is a node here");
    }
    assert!(
        feedback
            .modifiers(Fourcc::XRGB8888)
            .contains(&Modifier::LINEAR),
        "XRGB8888 LINEAR offered"
    );
    // What a LINEAR-only client would allocate.
    let (_, f, m) = feedback
        .pick(|f, m| f == Fourcc::XRGB8888 && m == Modifier::LINEAR)
        .unwrap();
    assert_eq!((f, m), (Fourcc::XRGB8888, Modifier::LINEAR));

    // The sync mode this machine would use with weston: explicit sync where
    // the kernel gives render-done fences as sync_files, else implicit.
    let vgem = Vgem::open().unwrap();
    let probe_buf = vgem.create(8, 8, Fourcc::XRGB8888).unwrap();
    let sync_file = kernel::dmabuf_sync_file(probe_buf.dmabuf().planes()[0].fd());
    let can = Abilities {
        timeline_syncobj: DrmDevice::find("virtio_gpu", NodeKind::Render)
            .is_ok_and(|d| d.has_syncobj_timeline()),
        sync_file,
        dmabuf: true,
    };
    let mode = sync::choose(&offer, &can, None).unwrap();
    println!("sync mode with weston here: {mode}");
    let expect = if sync_file {
        SyncMode::ExplicitSync
    } else {
        SyncMode::Implicit
    };
    assert_eq!(mode, expect);
    let forced = sync::choose(&offer, &can, Some(SyncMode::DrmSyncobj)).unwrap_err();
    assert!(forced.why.contains("wp_linux_drm_syncobj_manager_v1"));
}

#[test]
fn weston_pixman_has_no_linux_dmabuf_so_shm_is_chosen() {
    let weston = need!(Weston::start("pixman"), "weston (pixman renderer)");
    let conn = wayland::connect(Some(&weston.socket)).unwrap();
    let report = wayland::probe(&conn, PROBE).unwrap();
    let offer = report.offer();
    assert_eq!(offer.linux_dmabuf, None, "{:?}", report.globals);
    assert!(report.feedback.is_none());
    let can = Abilities {
        timeline_syncobj: true,
        sync_file: true,
        dmabuf: true,
    };
    assert_eq!(sync::choose(&offer, &can, None), Ok(SyncMode::Shm));
    assert!(sync::choose(&offer, &can, Some(SyncMode::Implicit)).is_err());
}

#[test]
fn a_missing_compositor_is_a_typed_error_not_a_hang() {
    let t = std::time::Instant::now();
    let err = wayland::connect(Some("/nonexistent/winsys-no-compositor")).unwrap_err();
    assert!(matches!(err, wayland::Error::Connect { .. }), "{err}");
    assert!(t.elapsed() < LONG);
}
