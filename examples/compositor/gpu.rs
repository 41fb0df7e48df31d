//! The compositor's Vulkan side: client dma-bufs imported as images, each
//! frame one submission that waits for the clients' acquire fences (as
//! semaphores) and copies every visible dma-buf surface into the output, a
//! host-visible buffer the CPU fills with the background and the wl_shm
//! surfaces first and reads back for the PNG afterwards.

use std::sync::Mutex;

use ash::vk;
use winsys::dmabuf::Dmabuf;
use winsys::format::{Fourcc, Modifier};
use winsys::sync::SyncFile;
use winsys::vulkan::{Device, Image, Pending};

/// Background colour of the output (0xRRGGBB).
pub const BACKGROUND: u32 = 0x203040;

/// A client's dma-buf buffer, imported into Vulkan, or else read through
/// a CPU mapping at composition (lavapipe cannot import a dma-buf whose fd
/// was exported read-only, as EGL on vgem's card node does).
pub struct DmaBuffer {
    pub dmabuf: Dmabuf,
    pub image: Option<Mutex<Image>>,
}

impl DmaBuffer {
    /// The pixels of plane 0, rows packed, read between DMA_BUF_IOCTL_SYNC
    /// START/END(READ); `None` if a writer came back (the gate already
    /// waited for the client's writes, so a wait here would be a new one).
    pub fn read_pixels(&self) -> Option<Vec<u8>> {
        let (w, h) = (self.dmabuf.width() as usize, self.dmabuf.height() as usize);
        let map = self.dmabuf.map(winsys::dmabuf::Access::Read).ok()?;
        let guard = map.read(Some(std::time::Duration::ZERO)).ok()?;
        let mut out = vec![0u8; w * h * 4];
        guard.read_rows(0, &mut out, w * 4).ok()?;
        Some(out)
    }
}

/// One surface to put into the frame.
pub enum Layer<'a> {
    /// Packed XRGB8888 rows (from wl_shm), `width` x `height`.
    Pixels {
        x: u32,
        clip_width: u32,
        width: u32,
        height: u32,
        pixels: &'a [u8],
    },
    /// A dma-buf image, after `acquire` (a signaled fence the GPU still
    /// formally waits for, or none).
    Dmabuf {
        x: u32,
        clip_width: u32,
        buffer: &'a DmaBuffer,
        acquire: Option<SyncFile>,
    },
}

/// The output: a host-visible buffer of `width * height` XRGB8888 pixels.
pub struct Output {
    device: Device,
    buffer: vk::Buffer,
    memory: vk::DeviceMemory,
    ptr: *mut u8,
    pub width: u32,
    pub height: u32,
}

impl Output {
    pub fn new(device: &Device, width: u32, height: u32) -> Result<Output, vk::Result> {
        let size = width as u64 * height as u64 * 4;
        let raw = device.raw();
        // SAFETY (whole block): valid create infos on this device; the memory
        // type is host-visible and coherent; mapped once for the buffer's
        // life and unmapped in Drop.
        unsafe {
            let buffer = raw.create_buffer(
                &vk::BufferCreateInfo::default()
                    .size(size)
                    .usage(vk::BufferUsageFlags::TRANSFER_DST),
                None,
            )?;
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
                .ok_or(vk::Result::ERROR_FEATURE_NOT_PRESENT)?;
            let memory = raw.allocate_memory(
                &vk::MemoryAllocateInfo::default()
                    .allocation_size(req.size)
                    .memory_type_index(index),
                None,
            )?;
            raw.bind_buffer_memory(buffer, memory, 0)?;
            let ptr = raw
                .map_memory(memory, 0, vk::WHOLE_SIZE, vk::MemoryMapFlags::empty())?
                .cast();
            Ok(Output {
                device: device.clone(),
                buffer,
                memory,
                ptr,
                width,
                height,
            })
        }
    }

    fn len(&self) -> usize {
        self.width as usize * self.height as usize * 4
    }

    /// The pixels (call only while no frame is in flight).
    pub fn pixels(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` bytes of coherent memory that no GPU work
        // writes while no frame is in flight (the caller's contract, kept by
        // main's frame cycle).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len()) }
    }

    fn pixels_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in pixels(); `&mut self` keeps other views away.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len()) }
    }

    /// Compose one frame. CPU layers are written now; dma-buf layers are
    /// copied by one submission, returned (with its completion fence for
    /// the release trackers) when there was any.
    pub fn compose(&mut self, layers: Vec<Layer<'_>>) -> Result<Option<Pending>, String> {
        let (width, height) = (self.width, self.height);
        let bg = BACKGROUND.to_le_bytes();
        for px in self.pixels_mut().chunks_exact_mut(4) {
            px.copy_from_slice(&[bg[0], bg[1], bg[2], 0xff]);
        }
        let mut gpu_layers = Vec::new();
        for layer in layers {
            match layer {
                Layer::Pixels {
                    x,
                    clip_width,
                    width: w,
                    height: h,
                    pixels,
                } => {
                    let cols = w.min(clip_width).min(width.saturating_sub(x)) as usize;
                    let out = self.pixels_mut();
                    for row in 0..h.min(height) as usize {
                        let src = &pixels[row * w as usize * 4..][..cols * 4];
                        let at = (row * width as usize + x as usize) * 4;
                        out[at..at + cols * 4].copy_from_slice(src);
                    }
                }
                Layer::Dmabuf {
                    x,
                    clip_width,
                    buffer,
                    acquire,
                } => gpu_layers.push((x, clip_width, buffer, acquire)),
            }
        }
        if gpu_layers.is_empty() {
            return Ok(None);
        }
        let mut job = self.device.submission().map_err(|e| e.to_string())?;
        for (x, clip_width, buffer, acquire) in gpu_layers {
            if let Some(fence) = acquire {
                job.wait_for_sync_file(fence, vk::PipelineStageFlags::TRANSFER)
                    .map_err(|e| e.to_string())?;
            }
            let Some(image) = &buffer.image else { continue };
            let mut image = image.lock().unwrap();
            let extent = image.extent();
            let cols = extent.width.min(clip_width).min(width.saturating_sub(x));
            let rows = extent.height.min(height);
            image
                .cmd_acquire(
                    &mut job,
                    vk::ImageLayout::TRANSFER_SRC_OPTIMAL,
                    vk::PipelineStageFlags::TRANSFER,
                    vk::AccessFlags::TRANSFER_READ,
                )
                .map_err(|e| e.to_string())?;
            let region = vk::BufferImageCopy::default()
                .buffer_offset(x as u64 * 4)
                .buffer_row_length(width)
                .buffer_image_height(height)
                .image_subresource(
                    vk::ImageSubresourceLayers::default()
                        .aspect_mask(vk::ImageAspectFlags::COLOR)
                        .layer_count(1),
                )
                .image_extent(vk::Extent3D {
                    width: cols,
                    height: rows,
                    depth: 1,
                });
            // SAFETY: the job's command buffer is recording on this device;
            // the image was just acquired into TRANSFER_SRC_OPTIMAL; the
            // region lies inside both the image and the output buffer.
            unsafe {
                self.device.raw().cmd_copy_image_to_buffer(
                    job.cmd(),
                    image.raw(),
                    vk::ImageLayout::TRANSFER_SRC_OPTIMAL,
                    self.buffer,
                    &[region],
                )
            };
            image
                .cmd_release(
                    &mut job,
                    vk::PipelineStageFlags::TRANSFER,
                    vk::AccessFlags::TRANSFER_READ,
                )
                .map_err(|e| e.to_string())?;
        }
        let barrier = vk::MemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::TRANSFER_WRITE)
            .dst_access_mask(vk::AccessFlags::HOST_READ);
        // SAFETY: recording command buffer of this device.
        unsafe {
            self.device.raw().cmd_pipeline_barrier(
                job.cmd(),
                vk::PipelineStageFlags::TRANSFER,
                vk::PipelineStageFlags::HOST,
                vk::DependencyFlags::empty(),
                &[barrier],
                &[],
                &[],
            )
        };
        job.signal_sync_file();
        job.submit().map(Some).map_err(|e| e.to_string())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        let _ = self.device.wait_idle();
        // SAFETY: no work uses the buffer after wait_idle; both were made
        // on this device and are destroyed once.
        unsafe {
            self.device.raw().unmap_memory(self.memory);
            self.device.raw().destroy_buffer(self.buffer, None);
            self.device.raw().free_memory(self.memory, None);
        }
    }
}

/// The format + modifier pairs the device imports for copying out
/// (what the feedback's tranche offers): one-plane XRGB8888 / ARGB8888.
pub fn importable(device: &Device) -> Vec<(Fourcc, Modifier)> {
    let formats = [Fourcc::XRGB8888, Fourcc::ARGB8888];
    let copyable = vk::FormatFeatureFlags::TRANSFER_SRC;
    winsys::server::feedback::vulkan_importable(device, &formats, copyable)
        .into_iter()
        .filter(|&(f, m)| {
            device
                .modifiers(f)
                .unwrap_or_default()
                .iter()
                .any(|i| i.modifier == m && i.planes == 1)
        })
        .collect()
}

/// Packed XRGB8888 (little-endian B, G, R, X) -> RGB8 for the PNG.
pub fn to_rgb(pixels: &[u8]) -> Vec<u8> {
    pixels
        .chunks_exact(4)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect()
}
