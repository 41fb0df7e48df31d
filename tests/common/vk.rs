//! Vulkan helpers for the interop tests: a validated device, the pattern
//! compute pipeline, a host-visible buffer, and pixel comparisons.

use std::sync::{Mutex, MutexGuard};
use std::thread;

use ash::vk;
use winsys::alloc::gbm::{GbmAllocator, Usage};
use winsys::alloc::vgem::GemMap;
use winsys::dmabuf::{Access, Dmabuf};
use winsys::format::{Fourcc, Modifier};
use winsys::vulkan::{Device, Image, ImageView, Instance, Submission};

use super::LONG;

/// Lavapipe with the Khronos validation layer. Dropping it fails the test
/// if the layer reported any error.
///
/// It also serializes the tests of a binary: lavapipe uses every core, and
/// the timing assertions need them.
pub struct Gpu {
    pub instance: Instance,
    pub device: Device,
    _turn: MutexGuard<'static, ()>,
}

impl Gpu {
    pub fn new() -> Result<Gpu, winsys::vulkan::Error> {
        Self::after(turn())
    }

    /// A `Gpu` and GBM on the virtio_gpu card node.
    pub fn with_gbm() -> Result<(Gpu, GbmAllocator), String> {
        let turn = turn();
        let gbm = gbm().map_err(|e| e.to_string())?;
        let gpu = Self::after(turn).map_err(|e| e.to_string())?;
        Ok((gpu, gbm))
    }

    fn after(turn: MutexGuard<'static, ()>) -> Result<Gpu, winsys::vulkan::Error> {
        let instance = Instance::with_validation()?;
        let device = Device::open(&instance)?;
        Ok(Gpu {
            instance,
            device,
            _turn: turn,
        })
    }
}

fn turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for Gpu {
    fn drop(&mut self) {
        let _ = self.device.wait_idle();
        // (Reports the driver's own bugs cause are excused by the
        // instance: see winsys::vulkan::Instance::with_validation.)
        let errors = self.instance.take_validation_errors();
        if !thread::panicking() {
            assert!(errors.is_empty(), "validation errors: {errors:#?}");
        }
    }
}

/// `pattern.comp` as a pipeline: fills a storage image with
/// `winsys_shaders::pattern_pixel`.
pub struct PatternPipeline {
    device: Device,
    set_layout: vk::DescriptorSetLayout,
    layout: vk::PipelineLayout,
    pipeline: vk::Pipeline,
    pool: vk::DescriptorPool,
    set: vk::DescriptorSet,
}

impl PatternPipeline {
    /// Record into `job`: take `image` (viewed by `view`) from its foreign
    /// users, run the pattern shader on it, hand it back. `job` keeps the
    /// image and view alive until the work is done.
    pub fn record_into(
        &self,
        job: &mut Submission<'_>,
        image: &mut Image,
        view: &ImageView,
        seed: u32,
    ) {
        image
            .cmd_acquire(
                job,
                vk::ImageLayout::GENERAL,
                vk::PipelineStageFlags::COMPUTE_SHADER,
                vk::AccessFlags::SHADER_WRITE,
            )
            .unwrap();
        job.uses(view).unwrap();
        self.record(job.cmd(), view.raw(), image.extent(), seed);
        image
            .cmd_release(
                job,
                vk::PipelineStageFlags::COMPUTE_SHADER,
                vk::AccessFlags::SHADER_WRITE,
            )
            .unwrap();
    }

    pub fn new(device: &Device) -> PatternPipeline {
        let raw = device.raw();
        // SAFETY (whole block): valid create infos on a live device; every
        // object is destroyed in Drop.
        unsafe {
            let bindings = [vk::DescriptorSetLayoutBinding::default()
                .binding(0)
                .descriptor_type(vk::DescriptorType::STORAGE_IMAGE)
                .descriptor_count(1)
                .stage_flags(vk::ShaderStageFlags::COMPUTE)];
            let set_layout = raw
                .create_descriptor_set_layout(
                    &vk::DescriptorSetLayoutCreateInfo::default().bindings(&bindings),
                    None,
                )
                .unwrap();
            let ranges = [vk::PushConstantRange::default()
                .stage_flags(vk::ShaderStageFlags::COMPUTE)
                .size(4)];
            let set_layouts = [set_layout];
            let layout = raw
                .create_pipeline_layout(
                    &vk::PipelineLayoutCreateInfo::default()
                        .set_layouts(&set_layouts)
                        .push_constant_ranges(&ranges),
                    None,
                )
                .unwrap();
            let module = raw
                .create_shader_module(
                    &vk::ShaderModuleCreateInfo::default().code(winsys_shaders::PATTERN_COMP),
                    None,
                )
                .unwrap();
            let stage = vk::PipelineShaderStageCreateInfo::default()
                .stage(vk::ShaderStageFlags::COMPUTE)
                .module(module)
                .name(winsys_shaders::ENTRY_POINT);
            let pipeline = raw
                .create_compute_pipelines(
                    vk::PipelineCache::null(),
                    &[vk::ComputePipelineCreateInfo::default()
                        .stage(stage)
                        .layout(layout)],
                    None,
                )
                .unwrap()[0];
            raw.destroy_shader_module(module, None);
            let sizes = [vk::DescriptorPoolSize::default()
                .ty(vk::DescriptorType::STORAGE_IMAGE)
                .descriptor_count(1)];
            let pool = raw
                .create_descriptor_pool(
                    &vk::DescriptorPoolCreateInfo::default()
                        .max_sets(1)
                        .pool_sizes(&sizes),
                    None,
                )
                .unwrap();
            let set = raw
                .allocate_descriptor_sets(
                    &vk::DescriptorSetAllocateInfo::default()
                        .descriptor_pool(pool)
                        .set_layouts(&set_layouts),
                )
                .unwrap()[0];
            PatternPipeline {
                device: device.clone(),
                set_layout,
                layout,
                pipeline,
                pool,
                set,
            }
        }
    }

    /// Record the pattern into `view` (of an image in GENERAL layout).
    /// The descriptor set is rewritten: one use in flight at a time.
    pub fn record(
        &self,
        cmd: vk::CommandBuffer,
        view: vk::ImageView,
        extent: vk::Extent2D,
        seed: u32,
    ) {
        let raw = self.device.raw();
        let info = [vk::DescriptorImageInfo::default()
            .image_view(view)
            .image_layout(vk::ImageLayout::GENERAL)];
        let write = vk::WriteDescriptorSet::default()
            .dst_set(self.set)
            .dst_binding(0)
            .descriptor_type(vk::DescriptorType::STORAGE_IMAGE)
            .image_info(&info);
        let [lx, ly] = winsys_shaders::PATTERN_LOCAL_SIZE;
        // SAFETY: the set is not in use (one submission at a time); `cmd`
        // is recording.
        unsafe {
            raw.update_descriptor_sets(&[write], &[]);
            raw.cmd_bind_pipeline(cmd, vk::PipelineBindPoint::COMPUTE, self.pipeline);
            raw.cmd_bind_descriptor_sets(
                cmd,
                vk::PipelineBindPoint::COMPUTE,
                self.layout,
                0,
                &[self.set],
                &[],
            );
            raw.cmd_push_constants(
                cmd,
                self.layout,
                vk::ShaderStageFlags::COMPUTE,
                0,
                &seed.to_ne_bytes(),
            );
            raw.cmd_dispatch(
                cmd,
                extent.width.div_ceil(lx),
                extent.height.div_ceil(ly),
                1,
            );
        }
    }
}

impl Drop for PatternPipeline {
    fn drop(&mut self) {
        let raw = self.device.raw();
        // SAFETY: callers wait for their submissions before dropping.
        unsafe {
            raw.destroy_descriptor_pool(self.pool, None);
            raw.destroy_pipeline(self.pipeline, None);
            raw.destroy_pipeline_layout(self.layout, None);
            raw.destroy_descriptor_set_layout(self.set_layout, None);
        }
    }
}

/// A host-visible, coherent buffer, persistently mapped.
pub struct HostBuffer {
    device: Device,
    pub buffer: vk::Buffer,
    memory: vk::DeviceMemory,
    ptr: *mut u8,
    pub size: usize,
}

impl HostBuffer {
    pub fn new(device: &Device, size: usize) -> HostBuffer {
        let raw = device.raw();
        // SAFETY (whole block): valid create infos; the memory type is
        // host-visible and coherent; mapped once for the buffer's life.
        unsafe {
            let buffer = raw
                .create_buffer(
                    &vk::BufferCreateInfo::default().size(size as u64).usage(
                        vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST,
                    ),
                    None,
                )
                .unwrap();
            let req = raw.get_buffer_memory_requirements(buffer);
            let props = device
                .instance()
                .raw()
                .get_physical_device_memory_properties(device.info().handle());
            let want =
                vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
            let index = (0..props.memory_type_count)
                .find(|&i| {
                    req.memory_type_bits & (1 << i) != 0
                        && props.memory_types[i as usize].property_flags.contains(want)
                })
                .expect("host-visible coherent memory");
            let memory = raw
                .allocate_memory(
                    &vk::MemoryAllocateInfo::default()
                        .allocation_size(req.size)
                        .memory_type_index(index),
                    None,
                )
                .unwrap();
            raw.bind_buffer_memory(buffer, memory, 0).unwrap();
            let ptr = raw
                .map_memory(memory, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty())
                .unwrap()
                .cast();
            HostBuffer {
                device: device.clone(),
                buffer,
                memory,
                ptr,
                size,
            }
        }
    }

    /// The contents (call after the GPU work that wrote it is done).
    pub fn read(&self) -> Vec<u8> {
        // SAFETY: `ptr` maps `size` bytes of coherent memory; no GPU work
        // writes it now (caller's contract).
        unsafe { std::slice::from_raw_parts(self.ptr, self.size) }.to_vec()
    }

    /// Fill the buffer (no GPU work may use it now).
    pub fn write(&self, data: &[u8]) {
        assert_eq!(data.len(), self.size);
        // SAFETY: as in read().
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr, self.size) };
    }

    /// Record: take `image` from its foreign users, copy all of it into this
    /// buffer (tightly packed, made visible to the host), hand it back.
    pub fn copy_from(&self, job: &mut Submission<'_>, image: &mut Image) {
        let cmd = job.cmd();
        image
            .cmd_acquire(
                job,
                vk::ImageLayout::TRANSFER_SRC_OPTIMAL,
                vk::PipelineStageFlags::TRANSFER,
                vk::AccessFlags::TRANSFER_READ,
            )
            .unwrap();
        let raw = self.device.raw();
        let extent = image.extent();
        let region = vk::BufferImageCopy::default()
            .image_subresource(color_layers())
            .image_extent(vk::Extent3D {
                width: extent.width,
                height: extent.height,
                depth: 1,
            });
        let barrier = vk::BufferMemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::TRANSFER_WRITE)
            .dst_access_mask(vk::AccessFlags::HOST_READ)
            .src_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
            .dst_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
            .buffer(self.buffer)
            .size(vk::WHOLE_SIZE);
        // SAFETY: `cmd` is recording; image and buffer outlive the work.
        unsafe {
            raw.cmd_copy_image_to_buffer(
                cmd,
                image.raw(),
                vk::ImageLayout::TRANSFER_SRC_OPTIMAL,
                self.buffer,
                &[region],
            );
            raw.cmd_pipeline_barrier(
                cmd,
                vk::PipelineStageFlags::TRANSFER,
                vk::PipelineStageFlags::HOST,
                vk::DependencyFlags::empty(),
                &[],
                &[barrier],
                &[],
            );
        }
        image
            .cmd_release(
                job,
                vk::PipelineStageFlags::TRANSFER,
                vk::AccessFlags::TRANSFER_READ,
            )
            .unwrap();
    }

    /// Record: take `image` from its foreign users, overwrite all of it with
    /// this buffer (tightly packed), hand it back.
    pub fn copy_to(&self, job: &mut Submission<'_>, image: &mut Image) {
        let cmd = job.cmd();
        image
            .cmd_acquire(
                job,
                vk::ImageLayout::TRANSFER_DST_OPTIMAL,
                vk::PipelineStageFlags::TRANSFER,
                vk::AccessFlags::TRANSFER_WRITE,
            )
            .unwrap();
        let extent = image.extent();
        let region = vk::BufferImageCopy::default()
            .image_subresource(color_layers())
            .image_extent(vk::Extent3D {
                width: extent.width,
                height: extent.height,
                depth: 1,
            });
        // SAFETY: `cmd` is recording; image and buffer outlive the work.
        unsafe {
            self.device.raw().cmd_copy_buffer_to_image(
                cmd,
                self.buffer,
                image.raw(),
                vk::ImageLayout::TRANSFER_DST_OPTIMAL,
                &[region],
            )
        };
        image
            .cmd_release(
                job,
                vk::PipelineStageFlags::TRANSFER,
                vk::AccessFlags::TRANSFER_WRITE,
            )
            .unwrap();
    }
}

impl Drop for HostBuffer {
    fn drop(&mut self) {
        // SAFETY: callers wait for their submissions before dropping.
        unsafe {
            self.device.raw().destroy_buffer(self.buffer, None);
            self.device.raw().free_memory(self.memory, None);
        }
    }
}

fn color_layers() -> vk::ImageSubresourceLayers {
    vk::ImageSubresourceLayers {
        aspect_mask: vk::ImageAspectFlags::COLOR,
        mip_level: 0,
        base_array_layer: 0,
        layer_count: 1,
    }
}

/// The pattern image, 4 bytes per pixel, rows tightly packed.
pub fn pattern_image(width: u32, height: u32, seed: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity((width * height * 4) as usize);
    for y in 0..height {
        for x in 0..width {
            out.extend_from_slice(&winsys_shaders::pattern_pixel(x, y, seed));
        }
    }
    out
}

/// The first plane of a 4-byte-per-pixel `dmabuf`, read through a CPU read
/// guard (waiting at most LONG), rows tightly packed.
pub fn read_pixels(dmabuf: &Dmabuf) -> Vec<u8> {
    let map = dmabuf.map(Access::Read).unwrap();
    let guard = map.read(Some(LONG)).unwrap();
    packed_rows(&guard, dmabuf.width(), dmabuf.height())
}

/// Plane 0 of a 4-byte-per-pixel image through `guard`, rows packed.
pub fn packed_rows(guard: &winsys::dmabuf::ReadGuard<'_>, width: u32, height: u32) -> Vec<u8> {
    let mut out = vec![0u8; (width * height * 4) as usize];
    guard.read_rows(0, &mut out, (width * 4) as usize).unwrap();
    out
}

/// Write tightly packed rows into a vgem object's own mapping at `stride`.
pub fn gem_write_rows(gem: &mut GemMap, stride: u32, tight: &[u8], width: u32) {
    let row = (width * 4) as usize;
    for (y, src) in tight.chunks(row).enumerate() {
        gem.write_bytes(y * stride as usize, src).unwrap();
    }
}

/// Index of the first differing byte, for readable failures.
pub fn assert_pixels_eq(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at byte {i} (pixel {}): got {:?}, want {:?}",
            i / 4,
            &got[i / 4 * 4..][..4],
            &want[i / 4 * 4..][..4]
        );
    }
}

pub fn gbm() -> Result<GbmAllocator, winsys::alloc::Error> {
    GbmAllocator::find(Some("virtio_gpu"))
}

pub fn gbm_buffer(gbm: &GbmAllocator, width: u32, height: u32) -> Dmabuf {
    gbm.allocate(
        width,
        height,
        Fourcc::ABGR8888,
        &[Modifier::LINEAR],
        Usage::RENDERING,
    )
    .expect("GBM LINEAR ABGR8888")
}

/// Run the pattern shader on `dmabuf` (imported for storage), bridged both
/// ways: waits for its fences, leaves a write fence behind.
pub fn gpu_pattern(gpu: &Gpu, dmabuf: &Dmabuf, seed: u32) -> winsys::vulkan::Pending {
    let device = &gpu.device;
    let mut image = device
        .import_dmabuf(dmabuf, vk::ImageUsageFlags::STORAGE)
        .unwrap();
    let view = image.create_view().unwrap();
    let pipeline = PatternPipeline::new(device);
    let mut job = device.submission().unwrap();
    job.timeout(Some(LONG));
    job.wait_for_dmabuf(
        dmabuf,
        Access::Write,
        vk::PipelineStageFlags::COMPUTE_SHADER,
    )
    .unwrap();
    pipeline.record_into(&mut job, &mut image, &view, seed);
    job.signal_dmabuf(dmabuf, Access::Write);
    let pending = job.submit().unwrap();
    // The image, view and pipeline must outlive the work.
    pending.wait(Some(LONG)).unwrap();
    pending
}
