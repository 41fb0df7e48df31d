//! `vkprobe`: Vulkan without a window system — what the Vulkan layer
//! (`VK_LAYER_WINSYS_wsi`) must leave exactly as the driver does it.
//!
//! Creates an instance and a device, copies a buffer on the GPU and checks
//! it, and presents 3 frames to a headless surface (`VK_EXT_headless_surface`,
//! the driver's WSI) with proper semaphores and layouts. Prints one JSON
//! line of what it saw; tests/layer.rs runs it with and without the layer
//! (and the validation layer above it) and compares.
//!
//! ```text
//! cargo run -p winsys --example vkprobe --features vulkan
//! ```

use std::error::Error;
use std::process::ExitCode;

use ash::{ext, khr, vk};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn main() -> ExitCode {
    match run() {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vkprobe: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<String> {
    // SAFETY: loads the system's Vulkan loader.
    let entry = unsafe { ash::Entry::load() }?;
    let ext_names = [
        khr::surface::NAME.as_ptr(),
        ext::headless_surface::NAME.as_ptr(),
    ];
    let app = vk::ApplicationInfo::default().api_version(vk::API_VERSION_1_1);
    let info = vk::InstanceCreateInfo::default()
        .application_info(&app)
        .enabled_extension_names(&ext_names);
    // SAFETY: valid create info.
    let instance = unsafe { entry.create_instance(&info, None) }?;
    let result = with_instance(&entry, &instance);
    // SAFETY: every child object was destroyed in with_instance.
    unsafe { instance.destroy_instance(None) };
    result
}

fn with_instance(entry: &ash::Entry, instance: &ash::Instance) -> Result<String> {
    // SAFETY: plain queries.
    let pd = *unsafe { instance.enumerate_physical_devices() }?
        .first()
        .ok_or("no physical device")?;
    let props = unsafe { instance.get_physical_device_properties(pd) };
    let name = props.device_name_as_c_str()?.to_string_lossy().into_owned();
    let extensions = unsafe { instance.enumerate_device_extension_properties(pd) }?;
    let has = |n: &std::ffi::CStr| {
        extensions
            .iter()
            .any(|e| e.extension_name_as_c_str() == Ok(n))
    };
    let maintenance1 = has(ext::swapchain_maintenance1::NAME);
    let present_wait = has(khr::present_wait::NAME);
    let display_timing = has(ash::google::display_timing::NAME);
    let families = unsafe { instance.get_physical_device_queue_family_properties(pd) };
    let family = families
        .iter()
        .position(|f| f.queue_flags.contains(vk::QueueFlags::GRAPHICS))
        .ok_or("no graphics queue")? as u32;
    let priorities = [1.0];
    let queues = [vk::DeviceQueueCreateInfo::default()
        .queue_family_index(family)
        .queue_priorities(&priorities)];
    let dev_ext = [khr::swapchain::NAME.as_ptr()];
    let info = vk::DeviceCreateInfo::default()
        .queue_create_infos(&queues)
        .enabled_extension_names(&dev_ext);
    // SAFETY: valid create info for this physical device.
    let device = unsafe { instance.create_device(pd, &info, None) }?;
    let result = with_device(entry, instance, pd, &device, family);
    // SAFETY: idle, every child destroyed.
    unsafe {
        let _ = device.device_wait_idle();
        device.destroy_device(None);
    }
    let (copy, frames, images, modes) = result?;
    Ok(format!(
        "{{\"device\":\"{name}\",\"extensions\":{},\"swapchain_maintenance1\":{maintenance1},\"present_wait\":{present_wait},\
\"display_timing\":{display_timing},\
\"copy\":\"{copy}\",\"headless_frames\":{frames},\"headless_images\":{images},\"present_modes\":\"{modes}\"}}",
        extensions.len()
    ))
}

/// The GPU copy, then the headless frames.
fn with_device(
    entry: &ash::Entry,
    instance: &ash::Instance,
    pd: vk::PhysicalDevice,
    device: &ash::Device,
    family: u32,
) -> Result<(String, u32, usize, String)> {
    // SAFETY: objects of this device, destroyed before return; every wait
    // is on a fence of this device.
    unsafe {
        let queue = device.get_device_queue(family, 0);
        let pool = device.create_command_pool(
            &vk::CommandPoolCreateInfo::default()
                .queue_family_index(family)
                .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER),
            None,
        )?;
        let cmd = device.allocate_command_buffers(
            &vk::CommandBufferAllocateInfo::default()
                .command_pool(pool)
                .command_buffer_count(1),
        )?[0];
        let fence = device.create_fence(&vk::FenceCreateInfo::default(), None)?;
        let copy = gpu_copy(instance, pd, device, queue, cmd, fence);
        let frames = headless(entry, instance, pd, device, queue, cmd, fence, family);
        device.destroy_fence(fence, None);
        device.destroy_command_pool(pool, None);
        let (frames, images, modes) = frames?;
        Ok((copy?, frames, images, modes))
    }
}

/// Copy a 64 KiB pattern from one host-visible buffer to another on the
/// GPU; "ok" when it arrived intact.
///
/// # Safety
/// `cmd` and `fence` are unused objects of `device`; `queue` is its own.
unsafe fn gpu_copy(
    instance: &ash::Instance,
    pd: vk::PhysicalDevice,
    device: &ash::Device,
    queue: vk::Queue,
    cmd: vk::CommandBuffer,
    fence: vk::Fence,
) -> Result<String> {
    const SIZE: u64 = 64 * 1024;
    let memory_props = unsafe { instance.get_physical_device_memory_properties(pd) };
    let mut made = Vec::new();
    for usage in [
        vk::BufferUsageFlags::TRANSFER_SRC,
        vk::BufferUsageFlags::TRANSFER_DST,
    ] {
        // SAFETY: valid create and allocate infos.
        unsafe {
            let buffer = device.create_buffer(
                &vk::BufferCreateInfo::default().size(SIZE).usage(usage),
                None,
            )?;
            let req = device.get_buffer_memory_requirements(buffer);
            let want =
                vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
            let index = (0..memory_props.memory_type_count)
                .find(|&i| {
                    req.memory_type_bits & (1 << i) != 0
                        && memory_props.memory_types[i as usize]
                            .property_flags
                            .contains(want)
                })
                .ok_or("no host-visible coherent memory")?;
            let memory = device.allocate_memory(
                &vk::MemoryAllocateInfo::default()
                    .allocation_size(req.size)
                    .memory_type_index(index),
                None,
            )?;
            device.bind_buffer_memory(buffer, memory, 0)?;
            let ptr = device.map_memory(memory, 0, SIZE, vk::MemoryMapFlags::empty())?;
            made.push((buffer, memory, ptr.cast::<u8>()));
        }
    }
    let pattern: Vec<u8> = (0..SIZE).map(|i| (i * 7 % 251) as u8).collect();
    // SAFETY: the mappings are SIZE bytes, written/read only here, the
    // copy is waited for with the fence before reading.
    let ok = unsafe {
        std::ptr::copy_nonoverlapping(pattern.as_ptr(), made[0].2, pattern.len());
        std::ptr::write_bytes(made[1].2, 0, pattern.len());
        device.begin_command_buffer(cmd, &vk::CommandBufferBeginInfo::default())?;
        device.cmd_copy_buffer(
            cmd,
            made[0].0,
            made[1].0,
            &[vk::BufferCopy {
                src_offset: 0,
                dst_offset: 0,
                size: SIZE,
            }],
        );
        device.end_command_buffer(cmd)?;
        let cmds = [cmd];
        device.queue_submit(
            queue,
            &[vk::SubmitInfo::default().command_buffers(&cmds)],
            fence,
        )?;
        device.wait_for_fences(&[fence], true, 30_000_000_000)?;
        device.reset_fences(&[fence])?;
        let got = std::slice::from_raw_parts(made[1].2, pattern.len());
        got == pattern.as_slice()
    };
    for (buffer, memory, _) in made {
        // SAFETY: the copy is done.
        unsafe {
            device.unmap_memory(memory);
            device.destroy_buffer(buffer, None);
            device.free_memory(memory, None);
        }
    }
    Ok(if ok { "ok" } else { "corrupted" }.into())
}

/// 3 frames (cleared, transitioned to PRESENT_SRC_KHR) presented to a
/// headless surface; the frames, the images and the present modes.
///
/// # Safety
/// As for [`gpu_copy`].
#[allow(clippy::too_many_arguments)]
unsafe fn headless(
    entry: &ash::Entry,
    instance: &ash::Instance,
    pd: vk::PhysicalDevice,
    device: &ash::Device,
    queue: vk::Queue,
    cmd: vk::CommandBuffer,
    fence: vk::Fence,
    family: u32,
) -> Result<(u32, usize, String)> {
    let headless_fn = ext::headless_surface::Instance::new(entry, instance);
    let surface_fn = khr::surface::Instance::new(entry, instance);
    let swapchain_fn = khr::swapchain::Device::new(instance, device);
    // SAFETY: objects made here and destroyed below, after the device idles.
    unsafe {
        let surface = headless_fn
            .create_headless_surface(&vk::HeadlessSurfaceCreateInfoEXT::default(), None)?;
        let supported = surface_fn.get_physical_device_surface_support(pd, family, surface)?;
        let caps = surface_fn.get_physical_device_surface_capabilities(pd, surface)?;
        let formats = surface_fn.get_physical_device_surface_formats(pd, surface)?;
        let modes = surface_fn.get_physical_device_surface_present_modes(pd, surface)?;
        if !supported || formats.is_empty() {
            surface_fn.destroy_surface(surface, None);
            return Err("the headless surface is not supported by the queue".into());
        }
        let extent = vk::Extent2D {
            width: 64,
            height: 64,
        };
        let swapchain = swapchain_fn.create_swapchain(
            &vk::SwapchainCreateInfoKHR::default()
                .surface(surface)
                .min_image_count(caps.min_image_count.max(2))
                .image_format(formats[0].format)
                .image_color_space(formats[0].color_space)
                .image_extent(extent)
                .image_array_layers(1)
                .image_usage(
                    vk::ImageUsageFlags::TRANSFER_DST | vk::ImageUsageFlags::COLOR_ATTACHMENT,
                )
                .pre_transform(caps.current_transform)
                .composite_alpha(vk::CompositeAlphaFlagsKHR::OPAQUE)
                .present_mode(vk::PresentModeKHR::FIFO)
                .clipped(true),
            None,
        )?;
        let images = swapchain_fn.get_swapchain_images(swapchain)?;
        let acquired = device.create_semaphore(&vk::SemaphoreCreateInfo::default(), None)?;
        let rendered = device.create_semaphore(&vk::SemaphoreCreateInfo::default(), None)?;
        let mut frames = 0;
        let mut outcome = Ok(());
        for frame in 0..3u32 {
            let step = (|| -> Result<()> {
                let (index, _) = swapchain_fn.acquire_next_image(
                    swapchain,
                    30_000_000_000,
                    acquired,
                    vk::Fence::null(),
                )?;
                let image = images[index as usize];
                let range = vk::ImageSubresourceRange {
                    aspect_mask: vk::ImageAspectFlags::COLOR,
                    base_mip_level: 0,
                    level_count: 1,
                    base_array_layer: 0,
                    layer_count: 1,
                };
                let to_dst = vk::ImageMemoryBarrier::default()
                    .old_layout(vk::ImageLayout::UNDEFINED)
                    .new_layout(vk::ImageLayout::TRANSFER_DST_OPTIMAL)
                    .dst_access_mask(vk::AccessFlags::TRANSFER_WRITE)
                    .src_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
                    .dst_queue_family_index(vk::QUEUE_FAMILY_IGNORED)
                    .image(image)
                    .subresource_range(range);
                let to_present = to_dst
                    .old_layout(vk::ImageLayout::TRANSFER_DST_OPTIMAL)
                    .new_layout(vk::ImageLayout::PRESENT_SRC_KHR)
                    .src_access_mask(vk::AccessFlags::TRANSFER_WRITE)
                    .dst_access_mask(vk::AccessFlags::empty());
                device.reset_command_buffer(cmd, vk::CommandBufferResetFlags::empty())?;
                device.begin_command_buffer(cmd, &vk::CommandBufferBeginInfo::default())?;
                device.cmd_pipeline_barrier(
                    cmd,
                    vk::PipelineStageFlags::TRANSFER,
                    vk::PipelineStageFlags::TRANSFER,
                    vk::DependencyFlags::empty(),
                    &[],
                    &[],
                    &[to_dst],
                );
                let shade = frame as f32 / 3.0;
                device.cmd_clear_color_image(
                    cmd,
                    image,
                    vk::ImageLayout::TRANSFER_DST_OPTIMAL,
                    &vk::ClearColorValue {
                        float32: [shade, 0.5, 1.0 - shade, 1.0],
                    },
                    &[range],
                );
                device.cmd_pipeline_barrier(
                    cmd,
                    vk::PipelineStageFlags::TRANSFER,
                    vk::PipelineStageFlags::BOTTOM_OF_PIPE,
                    vk::DependencyFlags::empty(),
                    &[],
                    &[],
                    &[to_present],
                );
                device.end_command_buffer(cmd)?;
                let waits = [acquired];
                let stages = [vk::PipelineStageFlags::TRANSFER];
                let signals = [rendered];
                let cmds = [cmd];
                device.queue_submit(
                    queue,
                    &[vk::SubmitInfo::default()
                        .wait_semaphores(&waits)
                        .wait_dst_stage_mask(&stages)
                        .command_buffers(&cmds)
                        .signal_semaphores(&signals)],
                    fence,
                )?;
                let chains = [swapchain];
                let indices = [index];
                swapchain_fn.queue_present(
                    queue,
                    &vk::PresentInfoKHR::default()
                        .wait_semaphores(&signals)
                        .swapchains(&chains)
                        .image_indices(&indices),
                )?;
                device.wait_for_fences(&[fence], true, 30_000_000_000)?;
                device.reset_fences(&[fence])?;
                Ok(())
            })();
            match step {
                Ok(()) => frames += 1,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        let _ = device.device_wait_idle();
        device.destroy_semaphore(acquired, None);
        device.destroy_semaphore(rendered, None);
        swapchain_fn.destroy_swapchain(swapchain, None);
        surface_fn.destroy_surface(surface, None);
        outcome?;
        let modes: Vec<String> = modes.iter().map(|m| format!("{m:?}")).collect();
        Ok((frames, images.len(), modes.join(" ")))
    }
}
