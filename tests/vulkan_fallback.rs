//! The sync bridge's CPU-wait fallback, forced on a stack that has the real
//! thing: `WINSYS_NO_VK_SYNC_FD=1` (no SYNC_FD semaphores or fences) and
//! `WINSYS_NO_DMABUF_SYNC_FILE=1` (no dma-buf sync_file ioctls). The same
//! calls as in `tests/vulkan.rs` must still order every hand-off.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use ash::vk;
use common::vk::{
    assert_pixels_eq, gbm_buffer, gem_write_rows, gpu_pattern, packed_rows, pattern_image,
    read_pixels, Gpu, HostBuffer,
};
use common::{controllable_fence, need, LONG};
use winsys::alloc::vgem::Vgem;
use winsys::dmabuf::Access;
use winsys::format::Fourcc;
use winsys::sync::probe;
use winsys::vulkan::device::DISABLE_SYNC_FD_ENV;

const DELAY: Duration = Duration::from_millis(300);

fn force_fallback() {
    // Every test of this binary sets the same values before any probe.
    std::env::set_var(probe::DISABLE_DMABUF_SYNC_FILE_ENV, "1");
    std::env::set_var(DISABLE_SYNC_FD_ENV, "1");
}

#[test]
fn device_reports_no_sync_fd_and_exports_refuse() {
    force_fallback();
    let gpu = need!(Gpu::new(), "Vulkan with validation");
    assert_eq!(gpu.device.sync_fd_support(), Default::default());
    assert!(matches!(
        gpu.device.create_exportable_semaphore(),
        Err(winsys::vulkan::Error::NoSyncFd(_))
    ));
    assert!(matches!(
        gpu.device.create_exportable_fence(),
        Err(winsys::vulkan::Error::NoSyncFd(_))
    ));
    // A plain semaphore exists, but it is no way around the refusal.
    let mut semaphore = gpu.device.create_semaphore().unwrap();
    // SAFETY: the error comes before any Vulkan call (not exportable).
    assert!(matches!(
        unsafe { semaphore.export_sync_file() },
        Err(winsys::vulkan::Error::NotExportable("semaphore"))
    ));
}

#[test]
fn gpu_pattern_still_reaches_the_cpu_read_guard() {
    force_fallback();
    let (gpu, gbm) = need!(Gpu::with_gbm(), "GBM on virtio_gpu and Vulkan");
    let (w, h, seed) = (77, 33, 11);
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
fn waiting_for_a_vgem_write_fence_blocks_on_the_cpu_until_it_signals() {
    force_fallback();
    let vgem = need!(Vgem::open(), "vgem");
    let gpu = need!(Gpu::new(), "Vulkan with validation");
    let device = &gpu.device;
    let (w, h) = (40, 24);
    let buf = vgem.create(w, h, Fourcc::ABGR8888).unwrap();
    let dmabuf = buf.dmabuf();
    let stride = dmabuf.planes()[0].stride();
    let second = pattern_image(w, h, 2);
    let writer = buf.attach_fence(Access::Write).unwrap();
    let mut gem = buf.map_gem().unwrap();
    let mut image = device
        .import_dmabuf(dmabuf, vk::ImageUsageFlags::TRANSFER_SRC)
        .unwrap();
    let host = HostBuffer::new(device, second.len());

    let start = Instant::now();
    let finisher = {
        let second = second.clone();
        thread::spawn(move || {
            thread::sleep(DELAY);
            gem_write_rows(&mut gem, stride, &second, w);
            writer.signal().unwrap();
        })
    };
    let mut job = device.submission().unwrap();
    job.timeout(Some(LONG));
    job.wait_for_dmabuf(dmabuf, Access::Read, vk::PipelineStageFlags::TRANSFER)
        .unwrap();
    assert!(start.elapsed() >= DELAY, "did not wait for the write fence");
    host.copy_from(&mut job, &mut image);
    job.submit().unwrap().wait(Some(LONG)).unwrap();
    finisher.join().unwrap();
    assert_pixels_eq(&host.read(), &second, "GPU copy after the CPU-waited fence");
}

#[test]
fn a_gpu_write_is_complete_when_submit_returns() {
    force_fallback();
    let vgem = need!(Vgem::open(), "vgem");
    let gpu = need!(Gpu::new(), "Vulkan with validation");
    let device = &gpu.device;
    let (w, h) = (32, 32);
    let buf = vgem.create(w, h, Fourcc::ABGR8888).unwrap();
    let dmabuf = buf.dmabuf();
    let want = pattern_image(w, h, 8);
    let host = HostBuffer::new(device, want.len());
    host.write(&want);
    let (_gate_buf, gate, gate_sync) = controllable_fence(&vgem);
    let mut image = device
        .import_dmabuf(dmabuf, vk::ImageUsageFlags::TRANSFER_DST)
        .unwrap();
    let start = Instant::now();
    let signaler = thread::spawn(move || {
        thread::sleep(DELAY);
        gate.signal().unwrap();
    });
    let mut job = device.submission().unwrap();
    job.timeout(Some(LONG));
    job.wait_for_sync_file(gate_sync, vk::PipelineStageFlags::TRANSFER)
        .unwrap();
    assert!(start.elapsed() >= DELAY, "did not wait for the gate");
    job.wait_for_dmabuf(dmabuf, Access::Write, vk::PipelineStageFlags::TRANSFER)
        .unwrap();
    host.copy_to(&mut job, &mut image);
    job.signal_dmabuf(dmabuf, Access::Write);
    let pending = job.submit().unwrap();
    assert!(
        pending.is_done().unwrap(),
        "submit returned before the GPU finished"
    );
    signaler.join().unwrap();
    let map = dmabuf.map(Access::Read).unwrap();
    let guard = map.read(Some(Duration::ZERO)).unwrap();
    let got = packed_rows(&guard, w, h);
    assert_pixels_eq(&got, &want, "CPU read after the fallback signal");
}
