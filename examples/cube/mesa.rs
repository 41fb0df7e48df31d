//! `--wsi mesa`: the same cube through the driver's own
//! `VK_KHR_wayland_surface` + `VK_KHR_swapchain` (ash-window), the way an
//! app without winsys presents: the baseline winsys is measured against.

use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ash::{ext, khr, vk};

use crate::render::Renderer;
use crate::{Args, Frames, Mode, Result};

/// Validation errors seen by the debug messenger.
static VALIDATION_ERRORS: AtomicU64 = AtomicU64::new(0);

unsafe extern "system" fn on_message(
    severity: vk::DebugUtilsMessageSeverityFlagsEXT,
    _: vk::DebugUtilsMessageTypeFlagsEXT,
    data: *const vk::DebugUtilsMessengerCallbackDataEXT<'_>,
    _: *mut c_void,
) -> vk::Bool32 {
    if severity.contains(vk::DebugUtilsMessageSeverityFlagsEXT::ERROR) {
        VALIDATION_ERRORS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the layer passes a valid callback-data struct whose
        // message is a NUL-terminated string, for the call's duration.
        let msg = unsafe { (*data).message_as_c_str() }
            .map(|m| m.to_string_lossy().into_owned())
            .unwrap_or_default();
        eprintln!("validation: {msg}");
    }
    vk::FALSE
}

const FRAMES_IN_FLIGHT: usize = 2;

/// Present `args.frames` frames to `window` through Mesa's WSI.
pub fn run(args: &Args, window: &mut crate::window::Window) -> Result<Frames> {
    let (display, surface_handle) = window.raw_handles()?;
    // SAFETY: loading the system Vulkan loader.
    let entry = unsafe { ash::Entry::load() }?;
    let mut extensions = ash_window::enumerate_required_extensions(display)?.to_vec();
    let mut layers: Vec<*const i8> = Vec::new();
    let layer = c"VK_LAYER_KHRONOS_validation";
    if args.validation {
        extensions.push(ext::debug_utils::NAME.as_ptr());
        layers.push(layer.as_ptr());
    }
    let app = vk::ApplicationInfo::default()
        .application_name(c"winsys cube (mesa wsi)")
        .api_version(vk::API_VERSION_1_1);
    // SAFETY (the Vulkan calls of this function): every create-info and
    // its arrays live across the call; handles are used only while their
    // parents live, and destroyed in reverse order after the device idles.
    let instance = unsafe {
        entry.create_instance(
            &vk::InstanceCreateInfo::default()
                .application_info(&app)
                .enabled_extension_names(&extensions)
                .enabled_layer_names(&layers),
            None,
        )
    }?;
    let debug = ext::debug_utils::Instance::new(&entry, &instance);
    let messenger = if args.validation {
        Some(unsafe {
            debug.create_debug_utils_messenger(
                &vk::DebugUtilsMessengerCreateInfoEXT::default()
                    .message_severity(vk::DebugUtilsMessageSeverityFlagsEXT::ERROR)
                    .message_type(
                        vk::DebugUtilsMessageTypeFlagsEXT::VALIDATION
                            | vk::DebugUtilsMessageTypeFlagsEXT::GENERAL,
                    )
                    .pfn_user_callback(Some(on_message)),
                None,
            )
        }?)
    } else {
        None
    };
    // SAFETY: the caller's window outlives the surface (destroyed below).
    let surface =
        unsafe { ash_window::create_surface(&entry, &instance, display, surface_handle, None) }?;
    let surface_fn = khr::surface::Instance::new(&entry, &instance);
    let physical = unsafe { instance.enumerate_physical_devices() }?
        .into_iter()
        .next()
        .ok_or("no Vulkan device")?;
    let family = unsafe { instance.get_physical_device_queue_family_properties(physical) }
        .iter()
        .enumerate()
        .position(|(i, q)| {
            q.queue_flags.contains(vk::QueueFlags::GRAPHICS)
                && unsafe {
                    surface_fn.get_physical_device_surface_support(physical, i as u32, surface)
                }
                .unwrap_or(false)
        })
        .ok_or("no queue family can present to the surface")? as u32;
    let priorities = [1.0];
    let queues = [vk::DeviceQueueCreateInfo::default()
        .queue_family_index(family)
        .queue_priorities(&priorities)];
    let device_ext = [khr::swapchain::NAME.as_ptr()];
    let device = unsafe {
        instance.create_device(
            physical,
            &vk::DeviceCreateInfo::default()
                .queue_create_infos(&queues)
                .enabled_extension_names(&device_ext),
            None,
        )
    }?;
    let queue = unsafe { device.get_device_queue(family, 0) };
    let swapchain_fn = khr::swapchain::Device::new(&instance, &device);

    let caps = unsafe { surface_fn.get_physical_device_surface_capabilities(physical, surface) }?;
    let formats = unsafe { surface_fn.get_physical_device_surface_formats(physical, surface) }?;
    let format = formats
        .iter()
        .find(|f| f.format == vk::Format::B8G8R8A8_UNORM)
        .or(formats.first())
        .ok_or("the surface offers no format")?;
    let modes = unsafe { surface_fn.get_physical_device_surface_present_modes(physical, surface) }?;
    let present_mode = match args.present_mode {
        Mode::Fifo => vk::PresentModeKHR::FIFO,
        Mode::Mailbox => vk::PresentModeKHR::MAILBOX,
        Mode::Immediate => vk::PresentModeKHR::IMMEDIATE,
    };
    if !modes.contains(&present_mode) {
        return Err(format!("Mesa's WSI offers no {present_mode:?} here ({modes:?})").into());
    }
    let mut count = args.images.max(caps.min_image_count);
    if caps.max_image_count > 0 {
        count = count.min(caps.max_image_count);
    }
    let extent = vk::Extent2D {
        width: args.width,
        height: args.height,
    };
    let swapchain = unsafe {
        swapchain_fn.create_swapchain(
            &vk::SwapchainCreateInfoKHR::default()
                .surface(surface)
                .min_image_count(count)
                .image_format(format.format)
                .image_color_space(format.color_space)
                .image_extent(extent)
                .image_array_layers(1)
                .image_usage(vk::ImageUsageFlags::COLOR_ATTACHMENT)
                .image_sharing_mode(vk::SharingMode::EXCLUSIVE)
                .pre_transform(vk::SurfaceTransformFlagsKHR::IDENTITY)
                .composite_alpha(vk::CompositeAlphaFlagsKHR::OPAQUE)
                .present_mode(present_mode)
                .clipped(true),
            None,
        )
    }?;
    let images = unsafe { swapchain_fn.get_swapchain_images(swapchain) }?;
    let mut views = Vec::with_capacity(images.len());
    for image in &images {
        views.push(unsafe {
            device.create_image_view(
                &vk::ImageViewCreateInfo::default()
                    .image(*image)
                    .view_type(vk::ImageViewType::TYPE_2D)
                    .format(format.format)
                    .subresource_range(winsys::vulkan::image::color_range()),
                None,
            )
        }?);
    }
    let renderer = unsafe {
        Renderer::new(
            &instance,
            physical,
            &device,
            format.format,
            extent,
            &views,
            vk::ImageLayout::UNDEFINED,
            vk::ImageLayout::PRESENT_SRC_KHR,
        )
    }?;
    let pool = unsafe {
        device.create_command_pool(
            &vk::CommandPoolCreateInfo::default()
                .queue_family_index(family)
                .flags(vk::CommandPoolCreateFlags::RESET_COMMAND_BUFFER),
            None,
        )
    }?;
    let cmds = unsafe {
        device.allocate_command_buffers(
            &vk::CommandBufferAllocateInfo::default()
                .command_pool(pool)
                .command_buffer_count(FRAMES_IN_FLIGHT as u32),
        )
    }?;
    let mut acquired = Vec::new();
    let mut fences = Vec::new();
    for _ in 0..FRAMES_IN_FLIGHT {
        acquired.push(unsafe { device.create_semaphore(&Default::default(), None) }?);
        fences.push(unsafe {
            device.create_fence(
                &vk::FenceCreateInfo::default().flags(vk::FenceCreateFlags::SIGNALED),
                None,
            )
        }?);
    }
    // One "rendered" semaphore per swapchain image: reused only when that
    // image comes back from the presentation engine.
    let mut rendered = Vec::new();
    for _ in &images {
        rendered.push(unsafe { device.create_semaphore(&Default::default(), None) }?);
    }

    let mut timer = winsys::wayland::presentation::Presentation::new(
        &window.conn,
        &window.surface,
        args.timeout,
    )?;
    let mut frames = Frames::start(args);
    let mut result = Ok(());
    for n in 0..args.frames {
        if !window.pump()? {
            break;
        }
        let slot = n as usize % FRAMES_IN_FLIGHT;
        let step = (|| -> Result<()> {
            let timeout = args.timeout.as_nanos() as u64;
            unsafe { device.wait_for_fences(&[fences[slot]], true, timeout) }?;
            let (index, _) = unsafe {
                swapchain_fn.acquire_next_image(
                    swapchain,
                    timeout,
                    acquired[slot],
                    vk::Fence::null(),
                )
            }?;
            unsafe { device.reset_fences(&[fences[slot]]) }?;
            let cmd = cmds[slot];
            unsafe {
                device.reset_command_buffer(cmd, vk::CommandBufferResetFlags::empty())?;
                device.begin_command_buffer(
                    cmd,
                    &vk::CommandBufferBeginInfo::default()
                        .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT),
                )?;
                renderer.record(cmd, index as usize, frames.t());
                device.end_command_buffer(cmd)?;
            }
            let wait = [acquired[slot]];
            let stages = [vk::PipelineStageFlags::COLOR_ATTACHMENT_OUTPUT];
            let signal = [rendered[index as usize]];
            let cmd_list = [cmd];
            let submit = vk::SubmitInfo::default()
                .wait_semaphores(&wait)
                .wait_dst_stage_mask(&stages)
                .command_buffers(&cmd_list)
                .signal_semaphores(&signal);
            unsafe { device.queue_submit(queue, &[submit], fences[slot]) }?;
            if let Some(t) = &mut timer {
                t.request()?;
            }
            let swapchains = [swapchain];
            let indices = [index];
            unsafe {
                swapchain_fn.queue_present(
                    queue,
                    &vk::PresentInfoKHR::default()
                        .wait_semaphores(&signal)
                        .swapchains(&swapchains)
                        .image_indices(&indices),
                )
            }?;
            Ok(())
        })();
        if let Err(e) = step {
            result = Err(e);
            break;
        }
        frames.presented += 1;
    }
    frames.finish();
    if let Some(t) = &mut timer {
        frames.presentation = t
            .wait_all(Duration::from_secs(2))
            .or_else(|_| t.stats())
            .ok();
    }
    unsafe {
        let _ = device.device_wait_idle();
        drop(renderer);
        for s in acquired.into_iter().chain(rendered) {
            device.destroy_semaphore(s, None);
        }
        for f in fences {
            device.destroy_fence(f, None);
        }
        device.destroy_command_pool(pool, None);
        for v in views {
            device.destroy_image_view(v, None);
        }
        swapchain_fn.destroy_swapchain(swapchain, None);
        device.destroy_device(None);
        surface_fn.destroy_surface(surface, None);
        if let Some(m) = messenger {
            debug.destroy_debug_utils_messenger(m, None);
        }
        instance.destroy_instance(None);
    }
    result?;
    let errors = VALIDATION_ERRORS.load(Ordering::Relaxed);
    if errors > 0 {
        return Err(format!("{errors} validation errors").into());
    }
    frames.sync = "driver".into();
    frames.images = images.len();
    frames.path = format!("VK_KHR_swapchain, {:?}", format.format);
    Ok(frames)
}
