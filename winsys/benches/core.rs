//! Core benchmarks, each against a baseline measured in the same run:
//!
//! - CPU read / write of a 3840x2160 XRGB8888 frame through a mapped udmabuf,
//!   `DMA_BUF_IOCTL_SYNC` START/END included, vs memcpy between anonymous
//!   buffers (goal: ratio >= 0.9);
//! - `export_sync_file` + `import_sync_file` through the API vs the raw
//!   ioctls (goal: <= 1.1x);
//! - timeline point -> sync_file -> next point through the API vs the raw
//!   ioctl sequence (virtio-gpu);
//! - (features `vulkan` + `gbm`) GBM allocate + export + Vulkan import per
//!   buffer, 256x256 and 3840x2160, vs GBM allocate + export alone;
//! - (same) a GPU-to-CPU hand-off through the bridge (semaphore ->
//!   sync_file -> dma-buf write fence, then a CPU read guard) vs waiting on
//!   the CPU (`vkWaitForFences`, then the read guard).
//!
//! Prints a table and writes `target/bench/results.json` (or
//! `$WINSYS_BENCH_OUT`). Run in the VM with `cargo xtask bench`.

#[path = "common/report.rs"]
mod report;
#[path = "common/timing.rs"]
mod timing;

use std::hint::black_box;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use report::{Row, Rows};
use timing::pair;

use winsys::alloc::udmabuf::Udmabuf;
use winsys::alloc::vgem::Vgem;
use winsys::alloc::Allocator;
use winsys::device::{DrmDevice, NodeKind};
use winsys::dmabuf::Access;
use winsys::format::Fourcc;
use winsys::sync::Syncobj;
use winsys::uapi::{dma_buf, drm};

/// A raw ioctl for a baseline, unwrapped.
macro_rules! raw {
    ($ioctl:expr, $fd:expr, $arg:expr) => {
        // SAFETY: every baseline passes fds and handles it created itself
        // (its own buffer, its own syncobjs) and adopts returned fds once.
        unsafe { $ioctl.call_unchecked($fd, $arg) }.unwrap()
    };
}

fn frame_copies(rows: &mut Rows) {
    let (w, h) = (3840u32, 2160u32);
    let udmabuf = Udmabuf::open().expect("/dev/udmabuf");
    let (buf, memfd) = udmabuf
        .allocate_with_memfd(w, h, Fourcc::XRGB8888)
        .expect("udmabuf frame");
    let len = buf.planes()[0].stride() as usize * h as usize;
    let shmem = ShmemMap::new(&memfd, len);
    let gb = len as f64 / 1e9;
    let mut map = buf.map(Access::ReadWrite).expect("map");
    let src = vec![0x5au8; len];
    let mut dst = vec![0u8; len];
    let mut anon = vec![0u8; len];

    let (read_s, memcpy_s) = pair(
        9,
        3,
        || {
            let guard = map.read(None).unwrap();
            guard.read_bytes(0, 0, black_box(&mut dst)).unwrap();
        },
        || anon.copy_from_slice(black_box(&src)),
    );
    rows.push(Row {
        spread: None,
        name: "frame 3840x2160 read from mapped udmabuf (SYNC START/END incl.)".into(),
        value: gb / read_s,
        unit: "GB/s",
        baseline: "memcpy between anonymous buffers".into(),
        baseline_value: gb / memcpy_s,
        ratio: memcpy_s / read_s,
        goal: "-",
    });
    // The same pages mapped through the memfd (4 KiB shmem pages, no dma-buf,
    // no SYNC): separates page-size effects from the cost of the dma-buf path.
    let (read_s, shmem_s) = pair(
        9,
        3,
        || {
            let guard = map.read(None).unwrap();
            guard.read_bytes(0, 0, black_box(&mut dst)).unwrap();
        },
        || anon.copy_from_slice(black_box(shmem.bytes())),
    );
    rows.push(Row {
        spread: None,
        name: "frame 3840x2160 read from mapped udmabuf, vs the same pages".into(),
        value: gb / read_s,
        unit: "GB/s",
        baseline: "memcpy from the same pages mapped via the memfd".into(),
        baseline_value: gb / shmem_s,
        ratio: shmem_s / read_s,
        goal: ">= 0.97",
    });

    let (write_s, memcpy_s) = pair(
        9,
        3,
        || {
            let mut guard = map.write(None).unwrap();
            guard.write_bytes(0, 0, black_box(&src)).unwrap();
        },
        || anon.copy_from_slice(black_box(&src)),
    );
    rows.push(Row {
        spread: None,
        name: "frame 3840x2160 write into mapped udmabuf (SYNC START/END incl.)".into(),
        value: gb / write_s,
        unit: "GB/s",
        baseline: "memcpy between anonymous buffers".into(),
        baseline_value: gb / memcpy_s,
        ratio: memcpy_s / write_s,
        goal: "-",
    });
    let (write_s, shmem_s) = pair(
        9,
        3,
        || {
            let mut guard = map.write(None).unwrap();
            guard.write_bytes(0, 0, black_box(&src)).unwrap();
        },
        || shmem.write(black_box(&src)),
    );
    rows.push(Row {
        spread: None,
        name: "frame 3840x2160 write into mapped udmabuf, vs the same pages".into(),
        value: gb / write_s,
        unit: "GB/s",
        baseline: "memcpy into the same pages mapped via the memfd".into(),
        baseline_value: gb / shmem_s,
        ratio: shmem_s / write_s,
        goal: ">= 0.97",
    });
    black_box((&dst, &anon));
}

/// A plain shared mapping of a memfd (the udmabuf's pages without the
/// dma-buf).
struct ShmemMap {
    ptr: *mut u8,
    len: usize,
}

impl ShmemMap {
    fn new(memfd: &OwnedFd, len: usize) -> Self {
        // SAFETY: a fresh shared read-write mapping at a kernel-chosen
        // address of `len` bytes the memfd has; unmapped in Drop.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                memfd,
                0,
            )
        }
        .expect("mmap memfd");
        ShmemMap {
            ptr: ptr.cast(),
            len,
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes while `self` lives; in the
        // bench nothing else writes them while the slice is used.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn write(&self, src: &[u8]) {
        assert!(src.len() <= self.len);
        // SAFETY: `ptr` maps `len` writable bytes; `src` is separate memory.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr, src.len()) };
    }
}

impl Drop for ShmemMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.len) };
    }
}

fn export_import(rows: &mut Rows) {
    let udmabuf = Udmabuf::open().expect("/dev/udmabuf");
    let buf = udmabuf.allocate(64, 64, Fourcc::XRGB8888).expect("udmabuf");
    let fd = buf.planes()[0].fd();
    let (api_s, raw_s) = pair(
        15,
        2000,
        || {
            let fence = buf.export_sync_file(Access::ReadWrite).unwrap();
            buf.import_sync_file(&fence, Access::Write).unwrap();
        },
        || {
            let mut export = dma_buf::dma_buf_export_sync_file {
                flags: dma_buf::DMA_BUF_SYNC_RW as u32,
                fd: -1,
            };
            raw!(dma_buf::DMA_BUF_IOCTL_EXPORT_SYNC_FILE, fd, &mut export);
            // SAFETY: the ioctl just returned this new fd to us.
            let fence = unsafe { OwnedFd::from_raw_fd(export.fd) };
            let mut import = dma_buf::dma_buf_import_sync_file {
                flags: dma_buf::DMA_BUF_SYNC_WRITE as u32,
                fd: fence.as_raw_fd(),
            };
            raw!(dma_buf::DMA_BUF_IOCTL_IMPORT_SYNC_FILE, fd, &mut import);
        },
    );
    rows.push(Row {
        spread: None,
        name: "export_sync_file(RW) + import_sync_file(WRITE) + close, API".into(),
        value: api_s * 1e6,
        unit: "us",
        baseline: "the same raw ioctls".into(),
        baseline_value: raw_s * 1e6,
        ratio: api_s / raw_s,
        goal: "<= 1.1",
    });
}

fn timeline_round_trip(rows: &mut Rows) {
    let dev =
        Arc::new(DrmDevice::find("virtio_gpu", NodeKind::Render).expect("virtio_gpu render node"));
    let vgem = Vgem::open().expect("vgem");
    let src = vgem.create(16, 16, Fourcc::XRGB8888).expect("vgem buffer");
    let seed = src
        .dmabuf()
        .export_sync_file(Access::Read)
        .expect("seed fence");
    let api_tl = Syncobj::new(&dev).unwrap();
    api_tl.import_sync_file(1, &seed).unwrap();
    let raw_tl = Syncobj::new(&dev).unwrap();
    raw_tl.import_sync_file(1, &seed).unwrap();
    let mut api_point = 1u64;
    let mut raw_point = 1u64;
    let dfd = dev.as_fd();
    let raw = raw_tl.handle().raw();
    // The baseline reuses one temporary binary syncobj, as the API does.
    let mut create = drm::drm_syncobj_create::default();
    raw!(drm::DRM_IOCTL_SYNCOBJ_CREATE, dfd, &mut create);
    let tmp = create.handle;
    let (api_s, raw_s) = pair(
        15,
        500,
        || {
            let fence = api_tl.export_sync_file(api_point).unwrap();
            api_point += 1;
            api_tl.import_sync_file(api_point, &fence).unwrap();
        },
        || {
            // point -> the reused temporary binary syncobj -> sync_file
            let mut xfer = drm::drm_syncobj_transfer {
                src_handle: raw,
                dst_handle: tmp,
                src_point: raw_point,
                ..Default::default()
            };
            raw!(drm::DRM_IOCTL_SYNCOBJ_TRANSFER, dfd, &mut xfer);
            let mut out = drm::drm_syncobj_handle {
                handle: tmp,
                flags: drm::DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_EXPORT_SYNC_FILE,
                ..Default::default()
            };
            raw!(drm::DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD, dfd, &mut out);
            // SAFETY: the ioctl just returned this new fd to us.
            let fence = unsafe { OwnedFd::from_raw_fd(out.fd) };
            // sync_file -> temporary binary syncobj -> next point
            let mut back = drm::drm_syncobj_handle {
                handle: tmp,
                flags: drm::DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE,
                fd: fence.as_raw_fd(),
                pad: 0,
            };
            raw!(drm::DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE, dfd, &mut back);
            raw_point += 1;
            let mut xfer = drm::drm_syncobj_transfer {
                src_handle: tmp,
                dst_handle: raw,
                dst_point: raw_point,
                ..Default::default()
            };
            raw!(drm::DRM_IOCTL_SYNCOBJ_TRANSFER, dfd, &mut xfer);
        },
    );
    let mut destroy = drm::drm_syncobj_destroy {
        handle: tmp,
        pad: 0,
    };
    raw!(drm::DRM_IOCTL_SYNCOBJ_DESTROY, dfd, &mut destroy);
    rows.push(Row {
        spread: None,
        name: "timeline point -> sync_file -> next point, API".into(),
        value: api_s * 1e6,
        unit: "us",
        baseline: "the raw ioctl sequence, one reused temporary syncobj".into(),
        baseline_value: raw_s * 1e6,
        ratio: api_s / raw_s,
        goal: "<= 1.05",
    });
}

fn main() {
    // `cargo test --benches` runs bench targets without `--bench`: nothing to
    // measure then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("core bench: run with --bench (cargo bench / cargo xtask bench)");
        return;
    }
    let started = Instant::now();
    let mut rows = Rows::default();
    eprintln!("[bench] frame copies through a mapped udmabuf ...");
    frame_copies(&mut rows);
    eprintln!("[bench] dma-buf sync_file export + import ...");
    export_import(&mut rows);
    eprintln!("[bench] timeline point <-> sync_file ...");
    timeline_round_trip(&mut rows);
    #[cfg(all(feature = "vulkan", feature = "gbm"))]
    {
        eprintln!("[bench] GBM allocate + export + Vulkan import ...");
        vulkan_benches::alloc_import(&mut rows);
        eprintln!("[bench] GPU -> CPU hand-off: bridge vs vkWaitForFences ...");
        vulkan_benches::hand_off(&mut rows);
        eprintln!("[bench] steady-state submission: API vs raw ash ...");
        vulkan_benches::submission(&mut rows);
    }

    report::print_table(&rows);
    let out = report::out_path();
    println!("\nwrote {} ({:.1?})", out.display(), started.elapsed());
}

#[cfg(all(feature = "vulkan", feature = "gbm"))]
mod vulkan_benches {
    use super::{pair, Row, Rows};
    use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
    use winsys::alloc::gbm::{GbmAllocator, Usage};
    use winsys::dmabuf::{Access, Dmabuf};
    use winsys::format::{Fourcc, Modifier};
    use winsys::vulkan::ash;
    use winsys::vulkan::ash::vk;
    use winsys::vulkan::{image::color_range, Device, Image, Instance};

    fn gbm_alloc(gbm: &GbmAllocator, w: u32, h: u32) -> Dmabuf {
        gbm.allocate(
            w,
            h,
            Fourcc::XRGB8888,
            &[Modifier::LINEAR],
            Usage::RENDERING,
        )
        .expect("GBM LINEAR XRGB8888")
    }

    pub fn alloc_import(rows: &mut Rows) {
        let gbm = GbmAllocator::find(Some("virtio_gpu")).expect("GBM on virtio_gpu");
        let device = Device::open(&Instance::new().unwrap()).unwrap();
        for (w, h, rounds, iters) in [(256, 256, 11, 20), (3840, 2160, 5, 3)] {
            let usage = vk::ImageUsageFlags::SAMPLED | vk::ImageUsageFlags::TRANSFER_SRC;
            let (with_import, alone) = pair(
                rounds,
                iters,
                || {
                    let d = gbm_alloc(&gbm, w, h);
                    let image = device.import_dmabuf(&d, usage).unwrap();
                    drop((image, d));
                },
                || drop(gbm_alloc(&gbm, w, h)),
            );
            rows.push(Row {
                spread: None,
                name: format!("GBM alloc + export + Vulkan import, {w}x{h}, per buffer"),
                value: with_import * 1e6,
                unit: "us",
                baseline: "GBM alloc + export alone".into(),
                baseline_value: alone * 1e6,
                ratio: with_import / alone,
                goal: "-",
            });
        }
    }

    /// Clear `image` on the GPU; with `bridge`, ordered through the
    /// dma-buf's implicit fences, else finished by vkWaitForFences. Then the
    /// CPU reads it through a guard.
    fn frame(device: &Device, image: &mut Image, dmabuf: &Dmabuf, bridge: bool, k: u32) {
        let mut job = device.submission().unwrap();
        if bridge {
            job.wait_for_dmabuf(dmabuf, Access::Write, vk::PipelineStageFlags::TRANSFER)
                .unwrap();
        }
        image
            .cmd_acquire(
                &mut job,
                vk::ImageLayout::TRANSFER_DST_OPTIMAL,
                vk::PipelineStageFlags::TRANSFER,
                vk::AccessFlags::TRANSFER_WRITE,
            )
            .unwrap();
        let color = vk::ClearColorValue {
            float32: [(k % 255) as f32 / 255.0, 0.5, 0.25, 1.0],
        };
        // SAFETY: the command buffer is recording; the image outlives the
        // submission (it is waited for below).
        unsafe {
            device.raw().cmd_clear_color_image(
                job.cmd(),
                image.raw(),
                vk::ImageLayout::TRANSFER_DST_OPTIMAL,
                &color,
                &[color_range()],
            )
        };
        image
            .cmd_release(
                &mut job,
                vk::PipelineStageFlags::TRANSFER,
                vk::AccessFlags::TRANSFER_WRITE,
            )
            .unwrap();
        if bridge {
            job.signal_dmabuf(dmabuf, Access::Write);
        }
        let pending = job.submit().unwrap();
        if !bridge {
            pending.wait(None).unwrap();
        }
        let map = dmabuf.map(Access::Read).unwrap();
        let guard = map.read(None).unwrap();
        let mut first = [0u8; 1];
        guard.read_bytes(0, 0, &mut first).unwrap();
        std::hint::black_box(first);
    }

    pub fn hand_off(rows: &mut Rows) {
        let gbm = GbmAllocator::find(Some("virtio_gpu")).expect("GBM on virtio_gpu");
        let device = Device::open(&Instance::new().unwrap()).unwrap();
        let usage = vk::ImageUsageFlags::TRANSFER_DST;
        let a = gbm_alloc(&gbm, 256, 256);
        let b = gbm_alloc(&gbm, 256, 256);
        let mut ia = device.import_dmabuf(&a, usage).unwrap();
        let mut ib = device.import_dmabuf(&b, usage).unwrap();
        let mut k = 0;
        let mut l = 0;
        let (bridged, cpu) = pair(
            11,
            20,
            || {
                k += 1;
                frame(&device, &mut ia, &a, true, k)
            },
            || {
                l += 1;
                frame(&device, &mut ib, &b, false, l)
            },
        );
        rows.push(Row {
            spread: None,
            name: "GPU clear -> CPU read guard, 256x256, bridged (sync_file)".into(),
            value: bridged * 1e6,
            unit: "us",
            baseline: "vkWaitForFences, then the read guard".into(),
            baseline_value: cpu * 1e6,
            ratio: bridged / cpu,
            goal: "-",
        });
    }

    /// The raw ash objects of the baseline, made once and reused, as a
    /// hand-written frame loop would.
    struct RawJob {
        pool: vk::CommandPool,
        cmd: vk::CommandBuffer,
        fence: vk::Fence,
        wait: vk::Semaphore,
        done: vk::Semaphore,
        semaphore_fd: ash::khr::external_semaphore_fd::Device,
    }

    impl RawJob {
        fn new(device: &Device) -> RawJob {
            let raw = device.raw();
            // SAFETY (whole block): valid create infos on a live device.
            unsafe {
                let pool = raw
                    .create_command_pool(
                        &vk::CommandPoolCreateInfo::default()
                            .flags(vk::CommandPoolCreateFlags::TRANSIENT)
                            .queue_family_index(device.queue_family()),
                        None,
                    )
                    .unwrap();
                let cmd = raw
                    .allocate_command_buffers(
                        &vk::CommandBufferAllocateInfo::default()
                            .command_pool(pool)
                            .level(vk::CommandBufferLevel::PRIMARY)
                            .command_buffer_count(1),
                    )
                    .unwrap()[0];
                let fence = raw
                    .create_fence(&vk::FenceCreateInfo::default(), None)
                    .unwrap();
                let wait = raw
                    .create_semaphore(&vk::SemaphoreCreateInfo::default(), None)
                    .unwrap();
                let mut export = vk::ExportSemaphoreCreateInfo::default()
                    .handle_types(vk::ExternalSemaphoreHandleTypeFlags::SYNC_FD);
                let done = raw
                    .create_semaphore(
                        &vk::SemaphoreCreateInfo::default().push_next(&mut export),
                        None,
                    )
                    .unwrap();
                let semaphore_fd =
                    ash::khr::external_semaphore_fd::Device::new(device.instance().raw(), raw);
                RawJob {
                    pool,
                    cmd,
                    fence,
                    wait,
                    done,
                    semaphore_fd,
                }
            }
        }

        /// One frame: wait for the dma-buf's fences, an empty command
        /// buffer, its completion back into the dma-buf as a write fence,
        /// then wait for it; every object reset for the next frame.
        fn frame(&self, device: &Device, dmabuf: &Dmabuf) {
            let raw = device.raw();
            let acquire = dmabuf.export_sync_file(Access::Write).unwrap();
            let fd: OwnedFd = acquire.into();
            // SAFETY (whole block): objects of this device, reused only
            // after the previous frame's fence signaled; the imported fd is
            // released to Vulkan only on success.
            unsafe {
                self.semaphore_fd
                    .import_semaphore_fd(
                        &vk::ImportSemaphoreFdInfoKHR::default()
                            .semaphore(self.wait)
                            .flags(vk::SemaphoreImportFlags::TEMPORARY)
                            .handle_type(vk::ExternalSemaphoreHandleTypeFlags::SYNC_FD)
                            .fd(fd.as_raw_fd()),
                    )
                    .unwrap();
                let _owned_by_vulkan = fd.into_raw_fd();
                raw.reset_command_pool(self.pool, vk::CommandPoolResetFlags::empty())
                    .unwrap();
                raw.begin_command_buffer(
                    self.cmd,
                    &vk::CommandBufferBeginInfo::default()
                        .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT),
                )
                .unwrap();
                raw.end_command_buffer(self.cmd).unwrap();
                let waits = [self.wait];
                let stages = [vk::PipelineStageFlags::TRANSFER];
                let cmds = [self.cmd];
                let signals = [self.done];
                let submit = vk::SubmitInfo::default()
                    .wait_semaphores(&waits)
                    .wait_dst_stage_mask(&stages)
                    .command_buffers(&cmds)
                    .signal_semaphores(&signals);
                device.submit(&[submit], self.fence).unwrap();
                let out = self
                    .semaphore_fd
                    .get_semaphore_fd(
                        &vk::SemaphoreGetFdInfoKHR::default()
                            .semaphore(self.done)
                            .handle_type(vk::ExternalSemaphoreHandleTypeFlags::SYNC_FD),
                    )
                    .unwrap();
                if out >= 0 {
                    let fence = winsys::sync::SyncFile::from_fd(OwnedFd::from_raw_fd(out)).unwrap();
                    dmabuf.import_sync_file(&fence, Access::Write).unwrap();
                }
                raw.wait_for_fences(&[self.fence], true, u64::MAX).unwrap();
                raw.reset_fences(&[self.fence]).unwrap();
            }
        }

        fn destroy(self, device: &Device) {
            device.wait_idle().unwrap();
            let raw = device.raw();
            // SAFETY: idle device; each object destroyed once.
            unsafe {
                raw.destroy_semaphore(self.wait, None);
                raw.destroy_semaphore(self.done, None);
                raw.destroy_fence(self.fence, None);
                raw.destroy_command_pool(self.pool, None);
            }
        }
    }

    pub fn submission(rows: &mut Rows) {
        let gbm = GbmAllocator::find(Some("virtio_gpu")).expect("GBM on virtio_gpu");
        let device = Device::open(&Instance::new().unwrap()).unwrap();
        let a = gbm_alloc(&gbm, 64, 64);
        let b = gbm_alloc(&gbm, 64, 64);
        let baseline = RawJob::new(&device);
        let (api, raw) = pair(
            15,
            200,
            || {
                let mut job = device.submission().unwrap();
                job.wait_for_dmabuf(&a, Access::Write, vk::PipelineStageFlags::TRANSFER)
                    .unwrap();
                job.signal_dmabuf(&a, Access::Write);
                job.submit().unwrap().wait(None).unwrap();
            },
            || baseline.frame(&device, &b),
        );
        baseline.destroy(&device);
        let stats = device.pool_stats();
        rows.push(Row {
            spread: None,
            name: format!(
                "submission with one dma-buf wait + signal, API ({} pools, {} semaphores made)",
                stats.slots_created, stats.semaphores_created
            ),
            value: api * 1e6,
            unit: "us",
            baseline: "the raw ash sequence, objects made once".into(),
            baseline_value: raw * 1e6,
            ratio: api / raw,
            goal: "<= 1.1",
        });
    }
}
