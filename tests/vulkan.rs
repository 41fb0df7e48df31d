//! GBM, vgem and lavapipe sharing images as dma-bufs, every hand-off
//! ordered through the sync bridge, with the Khronos validation layer on
//! (any validation error fails the test, see `common::vk::Gpu`).

mod common;

use std::thread;
use std::time::{Duration, Instant};

use ash::vk;
use common::vk::{
    assert_pixels_eq, gbm_buffer, gem_write_rows, gpu_pattern, packed_rows, pattern_image,
    read_pixels, Gpu, HostBuffer, PatternPipeline,
};
use common::{controllable_fence, need, open_fds, LONG, SHORT};
use winsys::alloc::gbm::{GbmAllocator, Usage};
use winsys::alloc::vgem::Vgem;
use winsys::alloc::vgem::VgemFence;
use winsys::device::{DrmDevice, NodeKind};
use winsys::dmabuf::{Access, Dmabuf};
use winsys::format::{Fourcc, Modifier};
use winsys::sync::{Syncobj, WaitFor};
use winsys::vulkan::{Error, Refusal};

const X_TILED: Modifier = Modifier(0x0100_0000_0000_0001); // I915_FORMAT_MOD_X_TILED

#[test]
fn device_reports_the_interop_extensions() {
    let gpu = need!(Gpu::new(), "Vulkan with validation");
    let ext = gpu.device.extensions();
    println!("{}: missing {:?}", gpu.device.info(), ext.missing());
    assert!(ext.dmabuf_images(), "{ext:?}");
    assert!(
        ext.external_semaphore_fd && ext.external_fence_fd,
        "{ext:?}"
    );
    let sync = gpu.device.sync_fd_support();
    assert!(sync.semaphore_import && sync.semaphore_export, "{sync:?}");
    let modifiers = gpu.device.modifiers(Fourcc::ABGR8888).unwrap();
    assert!(
        modifiers
            .iter()
            .any(|m| m.modifier == Modifier::LINEAR && m.planes == 1),
        "{modifiers:?}"
    );
}

#[test]
fn gpu_pattern_in_a_gbm_buffer_reaches_the_cpu_read_guard() {
    let (gpu, gbm) = need!(Gpu::with_gbm(), "GBM on virtio_gpu and Vulkan");
    // An odd width, so the GBM stride is wider than a row.
    let (w, h, seed) = (203, 61, 7);
    let dmabuf = gbm_buffer(&gbm, w, h);
    let _pending = gpu_pattern(&gpu, &dmabuf, seed);
    let got = read_pixels(&dmabuf);
    assert_pixels_eq(
        &got,
        &pattern_image(w, h, seed),
        "GBM buffer after the GPU pattern",
    );
}

#[test]
fn cpu_write_guard_reaches_a_gpu_copy() {
    let (gpu, gbm) = need!(Gpu::with_gbm(), "GBM on virtio_gpu and Vulkan");
    let (w, h) = (130, 40);
    let dmabuf = gbm_buffer(&gbm, w, h);
    let want = pattern_image(w, h, 99);
    let mut map = dmabuf.map(Access::Write).unwrap();
    let mut guard = map.write(Some(LONG)).unwrap();
    guard.write_rows(0, &want, (w * 4) as usize).unwrap();
    guard.end().unwrap();

    let device = &gpu.device;
    let mut image = device
        .import_dmabuf(&dmabuf, vk::ImageUsageFlags::TRANSFER_SRC)
        .unwrap();
    let host = HostBuffer::new(device, want.len());
    let mut job = device.submission().unwrap();
    job.wait_for_dmabuf(&dmabuf, Access::Read, vk::PipelineStageFlags::TRANSFER)
        .unwrap();
    host.copy_from(&mut job, &mut image);
    job.signal_dmabuf(&dmabuf, Access::Read);
    job.submit().unwrap().wait(Some(LONG)).unwrap();
    assert_pixels_eq(&host.read(), &want, "GPU copy of the CPU-written buffer");
}

#[test]
fn vulkan_exported_image_is_cpu_mapped_and_imported_by_gbm_on_vgem() {
    let (gpu, gbm) = need!(Gpu::with_gbm(), "GBM on virtio_gpu and Vulkan");
    let device = &gpu.device;
    let (w, h, seed) = (96, 50, 3);
    let (mut image, dmabuf) = device
        .export_image(
            w,
            h,
            Fourcc::ABGR8888,
            &[Modifier::LINEAR],
            vk::ImageUsageFlags::STORAGE,
        )
        .unwrap();
    assert_eq!(
        (dmabuf.modifier(), dmabuf.planes().len()),
        (Modifier::LINEAR, 1)
    );
    let view = image.create_view().unwrap();
    let pipeline = PatternPipeline::new(device);
    let mut job = device.submission().unwrap();
    pipeline.record_into(&mut job, &mut image, &view, seed);
    job.signal_dmabuf(&dmabuf, Access::Write);
    let pending = job.submit().unwrap();

    let want = pattern_image(w, h, seed);
    let got = read_pixels(&dmabuf);
    assert_pixels_eq(&got, &want, "Vulkan-exported image through its dma-buf");
    pending.wait(Some(LONG)).unwrap();

    // GBM on the vgem card node imports the foreign dma-buf; the CPU sees
    // the same pixels through the buffer GBM hands back, which is the very
    // same dma-buf (same inode).
    let vgem_gbm = GbmAllocator::find(Some("vgem")).expect("GBM on the vgem card node");
    let bo = vgem_gbm
        .import(&dmabuf, Usage::RENDERING)
        .expect("GBM (vgem) imports a lavapipe-exported dma-buf");
    let via_gbm = vgem_gbm
        .dmabuf_of(&bo, Fourcc::ABGR8888, Modifier::LINEAR)
        .unwrap();
    assert_eq!(via_gbm.planes()[0].id(), dmabuf.planes()[0].id());
    let map = via_gbm.map(Access::Read).unwrap();
    let guard = map.read(Some(LONG)).unwrap();
    let got = packed_rows(&guard, w, h);
    assert_pixels_eq(&got, &want, "Vulkan-exported image through GBM (vgem)");
    drop(guard);
    drop(map);

    // GBM on virtio_gpu (kms_swrast over a 2D device) cannot: a typed
    // refusal carrying the errno.
    match gbm.import(&dmabuf, Usage::RENDERING) {
        Err(e @ winsys::alloc::Error::Allocation { .. }) => {
            println!("GBM (virtio_gpu) import refused: {e}")
        }
        Err(e) => panic!("GBM import failed untyped: {e:?}"),
        Ok(_) => println!("GBM (virtio_gpu) imported it too"),
    }
}

#[test]
fn gpu_copy_waits_for_a_pending_vgem_write_fence() {
    let vgem = need!(Vgem::open(), "vgem");
    let gpu = need!(Gpu::new(), "Vulkan with validation");
    let device = &gpu.device;
    let (w, h) = (64, 32);
    let buf = vgem.create(w, h, Fourcc::ABGR8888).unwrap();
    let dmabuf = buf.dmabuf();
    let stride = dmabuf.planes()[0].stride();
    let first = pattern_image(w, h, 1);
    let second = pattern_image(w, h, 2);
    let mut gem = buf.map_gem().unwrap();
    gem_write_rows(&mut gem, stride, &first, w);

    let writer = buf.attach_fence(Access::Write).unwrap(); // a "GPU" still writing
    let mut image = device
        .import_dmabuf(dmabuf, vk::ImageUsageFlags::TRANSFER_SRC)
        .unwrap();
    let host = HostBuffer::new(device, first.len());
    let mut job = device.submission().unwrap();
    job.wait_for_dmabuf(dmabuf, Access::Read, vk::PipelineStageFlags::TRANSFER)
        .unwrap();
    host.copy_from(&mut job, &mut image);
    let pending = job.submit().unwrap();

    thread::sleep(Duration::from_millis(300));
    assert!(
        !pending.is_done().unwrap(),
        "the copy ran before the write fence signaled"
    );
    // The writer finishes its pixels, then signals.
    gem_write_rows(&mut gem, stride, &second, w);
    writer.signal().unwrap();
    pending.wait(Some(LONG)).unwrap();
    assert_pixels_eq(&host.read(), &second, "GPU copy gated on the vgem fence");
}

/// How long a gate stays closed before a helper thread opens it.
const DELAY: Duration = Duration::from_millis(300);

/// A thread that signals `gate` after [`DELAY`].
fn open_later(gate: VgemFence) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        thread::sleep(DELAY);
        gate.signal().unwrap();
    })
}

#[test]
fn cpu_read_guard_never_starts_before_the_gpu_write() {
    let vgem = need!(Vgem::open(), "vgem");
    let gpu = need!(Gpu::new(), "Vulkan with validation");
    let device = &gpu.device;
    let (w, h) = (48, 48);
    let buf = vgem.create(w, h, Fourcc::ABGR8888).unwrap();
    let dmabuf = buf.dmabuf();
    let want = pattern_image(w, h, 5);
    let host = HostBuffer::new(device, want.len());
    host.write(&want);
    // The GPU is held back by an unrelated fence, opened after DELAY.
    let (_gate_buf, gate, gate_sync) = controllable_fence(&vgem);

    let mut image = device
        .import_dmabuf(dmabuf, vk::ImageUsageFlags::TRANSFER_DST)
        .unwrap();
    let start = Instant::now();
    let opener = open_later(gate);
    let mut job = device.submission().unwrap();
    job.timeout(Some(LONG));
    job.wait_for_sync_file(gate_sync, vk::PipelineStageFlags::TRANSFER)
        .unwrap();
    job.wait_for_dmabuf(dmabuf, Access::Write, vk::PipelineStageFlags::TRANSFER)
        .unwrap();
    host.copy_to(&mut job, &mut image);
    job.signal_dmabuf(dmabuf, Access::Write);
    let pending = job.submit().unwrap();

    // A driver with real fences left a pending write fence: the guard
    // blocks on it. Lavapipe's are not (see the bridge docs): submit waited.
    let map = dmabuf.map(Access::Read).unwrap();
    let guard = map.read(Some(LONG)).unwrap();
    assert!(
        start.elapsed() >= DELAY,
        "the guard began before the gate opened"
    );
    assert!(
        pending.is_done().unwrap(),
        "the guard began before the GPU finished"
    );
    let got = packed_rows(&guard, w, h);
    assert_pixels_eq(&got, &want, "CPU read after the GPU write");
    opener.join().unwrap();
}

#[test]
fn timeline_points_order_gpu_work() {
    let vgem = need!(Vgem::open(), "vgem");
    let drm = need!(
        DrmDevice::find("virtio_gpu", NodeKind::Render),
        "virtio_gpu syncobj timelines"
    );
    let gpu = need!(Gpu::new(), "Vulkan with validation");
    let syncobj = Syncobj::new(&std::sync::Arc::new(drm)).unwrap();
    let (_gate_buf, gate, gate_sync) = controllable_fence(&vgem);
    syncobj.import_sync_file(1, &gate_sync).unwrap();

    let start = Instant::now();
    let opener = open_later(gate);
    let mut job = gpu.device.submission().unwrap();
    job.timeout(Some(LONG));
    job.wait_for_point(&syncobj, 1, vk::PipelineStageFlags::TOP_OF_PIPE)
        .unwrap();
    job.signal_point(&syncobj, 2);
    let pending = job.submit().unwrap();
    syncobj.wait(2, WaitFor::Signaled, Some(LONG)).unwrap();
    assert!(start.elapsed() >= DELAY, "point 2 signaled before point 1");
    pending.wait(Some(LONG)).unwrap();
    assert_eq!(syncobj.query().unwrap(), 2);
    opener.join().unwrap();
}

#[test]
fn semaphore_and_fence_take_sync_files() {
    let vgem = need!(Vgem::open(), "vgem");
    let gpu = need!(Gpu::new(), "Vulkan with validation");
    let device = &gpu.device;

    // A fence with an imported pending sync_file waits for it.
    let (_b1, gate1, sync1) = controllable_fence(&vgem);
    let mut fence = device.create_fence().unwrap();
    fence.import_sync_file(sync1).unwrap();
    assert!(matches!(
        fence.wait(Some(SHORT)),
        Err(Error::Timeout { .. })
    ));
    gate1.signal().unwrap();
    fence.wait(Some(LONG)).unwrap();

    // A batch waiting on a semaphore with an imported sync_file waits too.
    let (_b2, gate2, sync2) = controllable_fence(&vgem);
    let mut wait = device.create_semaphore().unwrap();
    wait.import_sync_file(sync2).unwrap();
    let mut done = device.create_exportable_fence().unwrap();
    let stage = [vk::PipelineStageFlags::ALL_COMMANDS];
    let waits = [wait.raw()];
    let submit = vk::SubmitInfo::default()
        .wait_semaphores(&waits)
        .wait_dst_stage_mask(&stage);
    // SAFETY: the semaphore and fence outlive the batch (waited below).
    unsafe { device.submit(&[submit], done.raw()) }.unwrap();
    thread::sleep(DELAY);
    assert!(
        !done.is_signaled().unwrap(),
        "the batch ran before its wait signaled"
    );
    gate2.signal().unwrap();
    done.wait(Some(LONG)).unwrap();
    // Exported after completion: a signaled sync_file, or none at all.
    // SAFETY: the fence was submitted (and has signaled).
    if let Some(exported) = unsafe { done.export_sync_file() }.unwrap() {
        exported.wait(Some(SHORT)).unwrap();
    }
}

#[test]
fn unsupported_modifier_and_format_are_refused_before_vulkan_sees_them() {
    let (gpu, gbm) = need!(Gpu::with_gbm(), "GBM on virtio_gpu and Vulkan");
    let vgem = need!(Vgem::open(), "vgem");
    let device = &gpu.device;
    let linear = gbm_buffer(&gbm, 64, 64);
    let plane = &linear.planes()[0];
    let tiled = Dmabuf::builder(64, 64, Fourcc::ABGR8888, X_TILED)
        .plane(plane.shared_fd().clone(), plane.offset(), plane.stride())
        .build()
        .unwrap();
    let c8 = vgem.create(64, 64, Fourcc::C8).unwrap();
    let before = open_fds();
    let start = Instant::now();
    match device.import_dmabuf(&tiled, vk::ImageUsageFlags::SAMPLED) {
        Err(Error::Unsupported {
            op: "import",
            modifier,
            refusal: Refusal::Modifier { supported },
            ..
        }) => {
            assert_eq!(modifier, X_TILED);
            assert!(supported.contains(&Modifier::LINEAR), "{supported:?}");
        }
        other => panic!("X-tiled import: {other:?}"),
    }
    let err = device
        .import_dmabuf(c8.dmabuf(), vk::ImageUsageFlags::SAMPLED)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unsupported {
                refusal: Refusal::Format,
                ..
            }
        ),
        "{err}"
    );
    println!("refused: {err}");
    let err = device
        .export_image(
            64,
            64,
            Fourcc::ABGR8888,
            &[X_TILED],
            vk::ImageUsageFlags::SAMPLED,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unsupported {
                op: "export",
                refusal: Refusal::Modifier { .. },
                ..
            }
        ),
        "{err}"
    );
    let usage = vk::ImageUsageFlags::SAMPLED;
    let err = device
        .export_image(0, 64, Fourcc::ABGR8888, &[Modifier::LINEAR], usage)
        .unwrap_err();
    assert!(
        matches!(err, Error::Dmabuf(winsys::dmabuf::Error::ZeroSize { .. })),
        "{err}"
    );
    let err = device
        .export_image(1 << 20, 64, Fourcc::ABGR8888, &[Modifier::LINEAR], usage)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unsupported {
                refusal: Refusal::Extent { .. },
                ..
            }
        ),
        "{err}"
    );
    // sRGB of a format without an sRGB Vulkan twin: refused as such.
    let err = device
        .export_image_as(
            64,
            64,
            Fourcc::RGB565,
            &[Modifier::LINEAR],
            usage,
            winsys::vulkan::format::Encoding::Srgb,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unsupported {
                refusal: Refusal::NoSrgb,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("sRGB"), "{err}");
    assert_eq!(open_fds(), before, "an fd leaked on refusal");
    assert!(start.elapsed() < LONG);
}

#[test]
fn image_and_view_dropped_right_after_submit_live_until_the_work_is_done() {
    let (gpu, gbm) = need!(Gpu::with_gbm(), "GBM on virtio_gpu and Vulkan");
    let vgem = need!(Vgem::open(), "vgem");
    let device = &gpu.device;
    let pipeline = PatternPipeline::new(device);
    let (w, h, seed) = (48, 24, 5);
    let dmabuf = gbm_buffer(&gbm, w, h);
    // A gate the GPU work waits for, so the work is still pending when
    // everything it uses is dropped.
    let (_gate_buf, gate, gate_sync) = controllable_fence(&vgem);
    {
        let mut image = device
            .import_dmabuf(&dmabuf, vk::ImageUsageFlags::STORAGE)
            .unwrap();
        let view = image.create_view().unwrap();
        let mut job = device.submission().unwrap();
        job.timeout(Some(LONG));
        job.wait_for_sync_file(gate_sync, vk::PipelineStageFlags::COMPUTE_SHADER)
            .unwrap();
        pipeline.record_into(&mut job, &mut image, &view, seed);
        // No signal target: with one, `submit` would wait on the CPU for
        // the work (a software device always does; a driver that answers
        // an export with an already signaled fence while its queue waits
        // on the gate too), and so for the gate (see the module docs of
        // winsys::vulkan::bridge).
        let pending = job.submit().unwrap();
        assert!(!pending.is_done().unwrap(), "the gate holds the work");
        // Image, view and Pending dropped while the GPU still waits: none
        // of it may be destroyed yet (the validation layer would report
        // vkDestroyImage / vkDestroyImageView of an object in use), and
        // dropping must not block.
        let t = Instant::now();
        drop((view, image, pending));
        // A drop that waited would wait for the gate (10 s, when vgem gives
        // up on it); a bound well below that is not a bound on the machine's speed.
        assert!(t.elapsed() < LONG, "dropping waited for the GPU");
    }
    assert_eq!(
        device.pool_stats().in_flight,
        1,
        "the work is retired, not freed"
    );
    gate.signal().unwrap();
    device.wait_idle().unwrap();
    assert_eq!(device.pool_stats().in_flight, 0, "recycled once done");
    // The work ran on memory that stayed valid.
    let got = read_pixels(&dmabuf);
    assert_pixels_eq(&got, &pattern_image(w, h, seed), "pattern after the drop");
}

#[test]
fn steady_state_submissions_reuse_their_vulkan_objects() {
    let vgem = need!(Vgem::open(), "vgem");
    let gpu = need!(Gpu::new(), "Vulkan with validation");
    let device = &gpu.device;
    let buf = vgem.create(16, 16, Fourcc::XRGB8888).unwrap();
    let dmabuf = buf.dmabuf();
    let frame = |_: u32| {
        let mut job = device.submission().unwrap();
        job.timeout(Some(LONG));
        job.wait_for_dmabuf(dmabuf, Access::Write, vk::PipelineStageFlags::TRANSFER)
            .unwrap();
        job.signal_dmabuf(dmabuf, Access::Write);
        job.submit().unwrap().wait(Some(LONG)).unwrap();
    };
    for i in 0..3 {
        frame(i);
    }
    let warm = device.pool_stats();
    for i in 0..20 {
        frame(i);
    }
    let after = device.pool_stats();
    assert_eq!(
        (after.slots_created, after.semaphores_created),
        (warm.slots_created, warm.semaphores_created),
        "20 more frames created Vulkan objects: {warm:?} -> {after:?}"
    );
    assert!(warm.slots_created <= 2, "{warm:?}");
}

/// A software device (lavapipe) finishes the work on the CPU to export a
/// sync_file of it, so a submission that must signal something waits for
/// its own fence instead: no export semaphore is made (what tells the two
/// ways apart: the export made one), the work is done when `submit`
/// returns, and there is no fence to hand on (as with the export, whose
/// fence came back signalled). A device with GPU queues exports (a
/// semaphore more, the first time; not on this test bed).
#[test]
fn a_software_device_waits_for_its_work_instead_of_exporting_a_fence() {
    let vgem = need!(Vgem::open(), "vgem");
    let gpu = need!(Gpu::new(), "Vulkan with validation");
    let device = &gpu.device;
    let buf = vgem.create(16, 16, Fourcc::XRGB8888).unwrap();
    let dmabuf = buf.dmabuf();
    let before = device.pool_stats();
    let mut job = device.submission().unwrap();
    job.timeout(Some(LONG));
    job.signal_dmabuf(dmabuf, Access::Write).signal_sync_file();
    let mut pending = job.submit().unwrap();
    let made = device.pool_stats().semaphores_created - before.semaphores_created;
    let software = device.info().device_type == vk::PhysicalDeviceType::CPU;
    println!(
        "{}: {:?}, semaphores made: {made}",
        device.info(),
        device.info().device_type
    );
    if software {
        assert_eq!(made, 0, "a software device exported its completion");
        assert!(
            pending.is_done().unwrap(),
            "submit returned before the work"
        );
        assert!(
            pending.take_sync_file().is_none(),
            "a finished work's fence was handed on"
        );
    } else if device.sync_fd_support().semaphore_export {
        assert_eq!(made, 1, "one export semaphore for the completion");
    }
    pending.wait(Some(LONG)).unwrap();
}

#[test]
fn empty_usage_and_foreign_physical_devices_are_refused() {
    let (gpu, gbm) = need!(Gpu::with_gbm(), "GBM on virtio_gpu and Vulkan");
    let dmabuf = gbm_buffer(&gbm, 16, 16);
    let err = gpu
        .device
        .import_dmabuf(&dmabuf, vk::ImageUsageFlags::empty())
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unsupported {
                refusal: Refusal::NoUsage,
                ..
            }
        ),
        "{err}"
    );
    let err = gpu
        .device
        .export_image(16, 16, Fourcc::ABGR8888, &[], vk::ImageUsageFlags::empty())
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unsupported {
                refusal: Refusal::NoUsage,
                ..
            }
        ),
        "{err}"
    );
    // A physical device of another instance is not one of this instance.
    let other = winsys::vulkan::Instance::new().unwrap();
    let foreign = other.physical_devices().unwrap().remove(0);
    let err = winsys::vulkan::Device::open_physical(&gpu.instance, foreign).unwrap_err();
    assert!(matches!(err, Error::NoDevice(_)), "{err}");
    // Its own devices open.
    let own = gpu.instance.physical_devices().unwrap().remove(0);
    let second = winsys::vulkan::Device::open_physical(&gpu.instance, own).unwrap();
    // An image of one device cannot be recorded into another's submission.
    let mut image = gpu
        .device
        .import_dmabuf(&dmabuf, vk::ImageUsageFlags::TRANSFER_DST)
        .unwrap();
    let mut job = second.submission().unwrap();
    let err = image
        .cmd_acquire(
            &mut job,
            vk::ImageLayout::TRANSFER_DST_OPTIMAL,
            vk::PipelineStageFlags::TRANSFER,
            vk::AccessFlags::TRANSFER_WRITE,
        )
        .unwrap_err();
    assert!(matches!(err, Error::WrongDevice(_)), "{err}");
    assert!(matches!(job.uses(&image), Err(Error::WrongDevice(_))));
}

#[test]
fn a_dropped_submission_rolls_its_ownership_transfers_back() {
    let (gpu, gbm) = need!(Gpu::with_gbm(), "GBM on virtio_gpu and Vulkan");
    let device = &gpu.device;
    let (w, h) = (32, 16);
    let dmabuf = gbm_buffer(&gbm, w, h);
    let mut image = device
        .import_dmabuf(&dmabuf, vk::ImageUsageFlags::TRANSFER_SRC)
        .unwrap();
    let before = format!("{image:?}");
    {
        let mut job = device.submission().unwrap();
        image
            .cmd_acquire(
                &mut job,
                vk::ImageLayout::TRANSFER_SRC_OPTIMAL,
                vk::PipelineStageFlags::TRANSFER,
                vk::AccessFlags::TRANSFER_READ,
            )
            .unwrap();
        assert_ne!(format!("{image:?}"), before);
        // dropped unsubmitted
    }
    assert_eq!(format!("{image:?}"), before, "the acquire was rolled back");
    // The real first acquire still starts from the foreign side's contents:
    // the layer would flag a wrong old layout or queue family.
    let host = HostBuffer::new(device, (w * h * 4) as usize);
    let mut job = device.submission().unwrap();
    job.timeout(Some(LONG));
    job.wait_for_dmabuf(&dmabuf, Access::Read, vk::PipelineStageFlags::TRANSFER)
        .unwrap();
    host.copy_from(&mut job, &mut image);
    job.submit().unwrap().wait(Some(LONG)).unwrap();
}

#[test]
fn a_view_of_a_multi_planar_image_is_refused_not_made_wrong() {
    let gpu = need!(Gpu::new(), "Vulkan with validation");
    let usage = vk::ImageUsageFlags::SAMPLED | vk::ImageUsageFlags::TRANSFER_DST;
    match gpu
        .device
        .export_image(64, 32, Fourcc::NV12, &[Modifier::LINEAR], usage)
    {
        Ok((image, dmabuf)) => {
            assert_eq!(dmabuf.planes().len(), 2);
            let err = image.create_view().unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::ViewNeedsConversion {
                        format: Fourcc::NV12
                    }
                ),
                "{err}"
            );
        }
        Err(e @ Error::Unsupported { .. }) => {
            // The driver has no LINEAR NV12 to share: then no such image
            // can exist to make a view of. Say so in the output.
            println!("note: {e}; the view refusal is not reachable on this driver");
        }
        Err(e) => panic!("untyped failure: {e:?}"),
    }
}
