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

/// Recreations in a row without a frame presented before the run gives up
/// (a swapchain that stays out of date: the connection is gone).
const FRUITLESS_RECREATIONS: u32 = 4;

/// What every swapchain of the run is made with.
struct Wsi<'a> {
    instance: &'a ash::Instance,
    physical: vk::PhysicalDevice,
    device: &'a ash::Device,
    surface_fn: &'a khr::surface::Instance,
    swapchain_fn: &'a khr::swapchain::Device,
    surface: vk::SurfaceKHR,
    format: vk::SurfaceFormatKHR,
    /// `--present-mode`: the first swapchain's, then the next in turn.
    present_modes: Vec<vk::PresentModeKHR>,
    /// Swapchains made anew so far: the current one's mode is
    /// `present_modes[turn % len]`.
    turn: std::cell::Cell<usize>,
    /// `OPAQUE`, or `PRE_MULTIPLIED` (`--premultiplied`).
    alpha: vk::CompositeAlphaFlagsKHR,
    /// Images asked for (`--images`).
    images: u32,
}

/// A swapchain and what depends on its images: a view and a "rendered"
/// semaphore per image, the renderer's framebuffers.
struct Chain {
    swapchain: vk::SwapchainKHR,
    extent: vk::Extent2D,
    views: Vec<vk::ImageView>,
    /// One "rendered" semaphore per swapchain image: reused only when
    /// that image comes back from the presentation engine.
    rendered: Vec<vk::Semaphore>,
    renderer: Renderer,
}

/// The extent of a swapchain for a window of `size` on a surface of
/// `caps`: the surface's own where it has one, else the window's (on
/// Wayland the swapchain sets the surface's size: Mesa says 0xFFFFFFFF),
/// within the surface's limits.
fn extent_for(caps: &vk::SurfaceCapabilitiesKHR, size: (u32, u32)) -> vk::Extent2D {
    if caps.current_extent.width != u32::MAX {
        return caps.current_extent;
    }
    let (min, max) = (caps.min_image_extent, caps.max_image_extent);
    vk::Extent2D {
        width: size.0.max(min.width).min(max.width),
        height: size.1.max(min.height).min(max.height),
    }
}

impl Wsi<'_> {
    /// The surface's capabilities now (its extent, image counts).
    fn caps(&self) -> Result<vk::SurfaceCapabilitiesKHR> {
        // SAFETY: the surface and physical device are live (the run's).
        Ok(unsafe {
            self.surface_fn
                .get_physical_device_surface_capabilities(self.physical, self.surface)
        }?)
    }

    /// The extent a swapchain for a window of `size` would have now.
    fn extent(&self, size: (u32, u32)) -> Result<vk::Extent2D> {
        Ok(extent_for(&self.caps()?, size))
    }

    /// A swapchain for a window of `size`, replacing `old` (null: none),
    /// which is retired by the call whether it succeeds or not (the
    /// caller destroys it either way).
    ///
    /// # Safety
    ///
    /// The device must be idle: nothing may still use what `old` holds.
    unsafe fn create(&self, size: (u32, u32), old: vk::SwapchainKHR) -> Result<Chain> {
        let caps = self.caps()?;
        let extent = extent_for(&caps, size);
        if extent.width == 0 || extent.height == 0 {
            return Err(format!("the surface has no area ({extent:?})").into());
        }
        let mut count = self.images.max(caps.min_image_count);
        if caps.max_image_count > 0 {
            count = count.min(caps.max_image_count);
        }
        // SAFETY (the Vulkan calls below): every create-info lives across
        // its call; the handles are the run's, live.
        let swapchain = unsafe {
            self.swapchain_fn.create_swapchain(
                &vk::SwapchainCreateInfoKHR::default()
                    .surface(self.surface)
                    .min_image_count(count)
                    .image_format(self.format.format)
                    .image_color_space(self.format.color_space)
                    .image_extent(extent)
                    .image_array_layers(1)
                    .image_usage(vk::ImageUsageFlags::COLOR_ATTACHMENT)
                    .image_sharing_mode(vk::SharingMode::EXCLUSIVE)
                    .pre_transform(vk::SurfaceTransformFlagsKHR::IDENTITY)
                    .composite_alpha(self.alpha)
                    .present_mode(self.present_modes[self.turn.get() % self.present_modes.len()])
                    .clipped(true)
                    .old_swapchain(old),
                None,
            )
        }?;
        let mut views = Vec::new();
        let mut rendered = Vec::new();
        let made = (|| -> Result<Renderer> {
            let images = unsafe { self.swapchain_fn.get_swapchain_images(swapchain) }?;
            for image in &images {
                views.push(unsafe {
                    self.device.create_image_view(
                        &vk::ImageViewCreateInfo::default()
                            .image(*image)
                            .view_type(vk::ImageViewType::TYPE_2D)
                            .format(self.format.format)
                            .subresource_range(winsys::vulkan::image::color_range()),
                        None,
                    )
                }?);
                rendered.push(unsafe { self.device.create_semaphore(&Default::default(), None) }?);
            }
            // SAFETY: the views outlive the renderer (Wsi::destroy drops
            // it first).
            unsafe {
                Renderer::new(
                    self.instance,
                    self.physical,
                    self.device,
                    self.format.format,
                    extent,
                    &views,
                    vk::ImageLayout::UNDEFINED,
                    vk::ImageLayout::PRESENT_SRC_KHR,
                )
            }
        })();
        match made {
            Ok(renderer) => Ok(Chain {
                swapchain,
                extent,
                views,
                rendered,
                renderer,
            }),
            Err(e) => {
                // SAFETY: made above, used by nothing yet.
                unsafe {
                    for s in rendered {
                        self.device.destroy_semaphore(s, None);
                    }
                    for v in views {
                        self.device.destroy_image_view(v, None);
                    }
                    self.swapchain_fn.destroy_swapchain(swapchain, None);
                }
                Err(e)
            }
        }
    }

    /// Destroy what `chain` made for its images: the renderer (its
    /// framebuffers), the semaphores, the views; its swapchain is left.
    ///
    /// # Safety
    ///
    /// The device must be idle.
    unsafe fn dismantle(&self, chain: Chain) -> vk::SwapchainKHR {
        drop(chain.renderer);
        // SAFETY: the caller waited for the device: no submission or
        // present still uses them.
        unsafe {
            for s in chain.rendered {
                self.device.destroy_semaphore(s, None);
            }
            for v in chain.views {
                self.device.destroy_image_view(v, None);
            }
        }
        chain.swapchain
    }

    /// Destroy `chain`, its swapchain last.
    ///
    /// # Safety
    ///
    /// The device must be idle.
    unsafe fn destroy(&self, chain: Chain) {
        // SAFETY: the caller waited for the device; the views of the
        // swapchain's images are gone first.
        unsafe {
            let swapchain = self.dismantle(chain);
            self.swapchain_fn.destroy_swapchain(swapchain, None);
        }
    }

    /// Wait for the device, then replace `chain` with a swapchain for a
    /// window of `size`: what the old one made for its images goes, the
    /// new one is made with the old as `old_swapchain`, then the old is
    /// destroyed (retired by that call, whether it succeeded or not).
    /// `chain` is `None` when it failed.
    fn recreate(&self, chain: &mut Option<Chain>, size: (u32, u32)) -> Result<()> {
        // SAFETY: a live device; afterwards nothing of the old swapchain
        // is in use (its last present's semaphore wait included).
        unsafe { self.device.device_wait_idle() }?;
        let old = chain.take().ok_or("no swapchain to replace")?;
        self.turn.set(self.turn.get() + 1);
        // SAFETY (all three): the device is idle.
        let old = unsafe { self.dismantle(old) };
        let new = unsafe { self.create(size, old) };
        unsafe { self.swapchain_fn.destroy_swapchain(old, None) };
        *chain = Some(new?);
        Ok(())
    }
}

/// Present `args.frames` frames to `window` through Mesa's WSI.
pub fn run(args: &Args, window: &mut crate::window::Window) -> Result<Frames> {
    let (display, surface_handle) = window.raw_handles()?;
    // SAFETY: loading the system Vulkan loader.
    let entry = unsafe { ash::Entry::load() }?;
    let mut extensions = ash_window::enumerate_required_extensions(display)?.to_vec();
    if args.maintenance1 {
        // VK_EXT_swapchain_maintenance1's instance side.
        extensions.push(khr::get_surface_capabilities2::NAME.as_ptr());
        extensions.push(ext::surface_maintenance1::NAME.as_ptr());
    }
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
    let mut device_ext = vec![khr::swapchain::NAME.as_ptr()];
    let mut present_id = vk::PhysicalDevicePresentIdFeaturesKHR::default().present_id(true);
    let mut present_wait = vk::PhysicalDevicePresentWaitFeaturesKHR::default().present_wait(true);
    let mut maintenance1 =
        vk::PhysicalDeviceSwapchainMaintenance1FeaturesEXT::default().swapchain_maintenance1(true);
    let mut device_info = vk::DeviceCreateInfo::default().queue_create_infos(&queues);
    let offered = unsafe { instance.enumerate_device_extension_properties(physical) }?;
    let has = |name: &std::ffi::CStr| {
        offered
            .iter()
            .any(|e| e.extension_name_as_c_str() == Ok(name))
    };
    if args.maintenance1 {
        let name = ext::swapchain_maintenance1::NAME;
        if !has(name) {
            return Err(format!("the device offers no {name:?}").into());
        }
        device_ext.push(name.as_ptr());
        device_info = device_info.push_next(&mut maintenance1);
    }
    if args.present_wait {
        for name in [khr::present_id::NAME, khr::present_wait::NAME] {
            if !has(name) {
                return Err(format!("the device offers no {name:?}").into());
            }
            device_ext.push(name.as_ptr());
        }
        device_info = device_info
            .push_next(&mut present_id)
            .push_next(&mut present_wait);
    }
    let device_info = device_info.enabled_extension_names(&device_ext);
    let device = unsafe { instance.create_device(physical, &device_info, None) }?;
    let waiter = khr::present_wait::Device::new(&instance, &device);
    let releaser = ext::swapchain_maintenance1::Device::new(&instance, &device);
    let queue = unsafe { device.get_device_queue(family, 0) };
    let swapchain_fn = khr::swapchain::Device::new(&instance, &device);

    let formats = unsafe { surface_fn.get_physical_device_surface_formats(physical, surface) }?;
    let want = match (args.format, args.srgb) {
        (Some(f), _) => f,
        (None, true) => vk::Format::B8G8R8A8_SRGB,
        (None, false) => vk::Format::B8G8R8A8_UNORM,
    };
    let chosen = args.srgb || args.format.is_some();
    let format = *formats
        .iter()
        .find(|f| f.format == want)
        .or(formats.first().filter(|_| !chosen))
        .ok_or(format!("the surface offers no {want:?} ({formats:?})"))?;
    let surface_formats: Vec<String> = formats.iter().map(|f| format!("{:?}", f.format)).collect();
    let modes = unsafe { surface_fn.get_physical_device_surface_present_modes(physical, surface) }?;
    let present_modes: Vec<_> = args
        .present_modes
        .iter()
        .map(|m| match m {
            Mode::Fifo => vk::PresentModeKHR::FIFO,
            Mode::Mailbox => vk::PresentModeKHR::MAILBOX,
            Mode::Immediate => vk::PresentModeKHR::IMMEDIATE,
        })
        .collect();
    if let Some(missing) = present_modes.iter().find(|m| !modes.contains(m)) {
        return Err(format!("Mesa's WSI offers no {missing:?} here ({modes:?})").into());
    }
    let alpha = match args.premultiplied {
        true => vk::CompositeAlphaFlagsKHR::PRE_MULTIPLIED,
        false => vk::CompositeAlphaFlagsKHR::OPAQUE,
    };
    // SAFETY: the run's live surface and physical device.
    let caps = unsafe { surface_fn.get_physical_device_surface_capabilities(physical, surface) }?;
    if !caps.supported_composite_alpha.contains(alpha) {
        return Err(format!(
            "the surface offers no {alpha:?} composite alpha ({:?})",
            caps.supported_composite_alpha
        )
        .into());
    }
    let wsi = Wsi {
        instance: &instance,
        physical,
        device: &device,
        surface_fn: &surface_fn,
        swapchain_fn: &swapchain_fn,
        surface,
        format,
        present_modes,
        turn: Default::default(),
        alpha,
        images: args.images,
    };
    // The window's size: the one the compositor configured (Window::open
    // waited for the first configure), else --size.
    let fallback = (args.width, args.height);
    let mut seen = window.generation();
    // SAFETY: no swapchain yet, nothing in use.
    let first = unsafe { wsi.create(window.size_or(fallback), vk::SwapchainKHR::null()) }?;
    let mut chain = Some(first);
    if args.second_swapchain {
        // SAFETY: nothing is in use yet; a swapchain made by mistake is
        // destroyed at once.
        let second = unsafe { wsi.create(window.size_or(fallback), vk::SwapchainKHR::null()) };
        match second {
            Err(e) if e.downcast_ref() == Some(&vk::Result::ERROR_NATIVE_WINDOW_IN_USE_KHR) => {
                println!("cube: a second swapchain on the surface: ERROR_NATIVE_WINDOW_IN_USE_KHR");
            }
            Err(e) => return Err(format!("a second swapchain on the surface: {e}").into()),
            Ok(c) => {
                unsafe { wsi.destroy(c) };
                return Err("a second swapchain on the surface was made (not refused)".into());
            }
        }
    }
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
    // --maintenance1: a present fence per slot (signalled: nothing to wait
    // for before the first present), and one for the extra acquires.
    let mut present_fences = Vec::new();
    let extra = unsafe { device.create_fence(&Default::default(), None) }?;
    for _ in 0..FRAMES_IN_FLIGHT {
        present_fences.push(unsafe {
            device.create_fence(
                &vk::FenceCreateInfo::default().flags(vk::FenceCreateFlags::SIGNALED),
                None,
            )
        }?);
        acquired.push(unsafe { device.create_semaphore(&Default::default(), None) }?);
        fences.push(unsafe {
            device.create_fence(
                &vk::FenceCreateInfo::default().flags(vk::FenceCreateFlags::SIGNALED),
                None,
            )
        }?);
    }

    let mut timer = winsys::wayland::presentation::Presentation::new(
        &window.conn,
        &window.surface,
        args.timeout,
    )?;
    let images = chain
        .as_ref()
        .map_or(args.images as usize, |c| c.views.len());
    let mut frames = Frames::start(args, images);
    let result = (|| -> Result<()> {
        let timeout = args.timeout.as_nanos() as u64;
        // Frames submitted: the slot of the next one.
        let mut submitted = 0usize;
        // Recreations since the last frame presented.
        let mut fruitless = 0u32;
        // Why the swapchain is to be made anew before the next frame.
        let mut stale: Option<String> = None;
        while frames.presented < args.frames {
            if !window.pump()? {
                break;
            }
            // pump() acknowledged any new configure: the next commit must
            // fit it, so a new size is taken before this frame is presented.
            if window.generation() != seen {
                seen = window.generation();
                let now = chain.as_ref().map(|c| c.extent);
                if Some(wsi.extent(window.size_or(fallback))?) != now {
                    let why = format!("the compositor configured {}", crate::configured(window));
                    stale.get_or_insert(why);
                }
            }
            if stale.is_none() && frames.recreation_due(args) {
                stale = Some(format!("--recreate-every {}", args.recreate_every));
            }
            if let Some(why) = stale.take() {
                fruitless += 1;
                if fruitless > FRUITLESS_RECREATIONS {
                    return Err(format!(
                        "{why}, still after {FRUITLESS_RECREATIONS} new swapchains without a frame"
                    )
                    .into());
                }
                let (width, height) = window.size_or(fallback);
                eprintln!("cube: {why}: making the swapchain anew for {width}x{height}");
                wsi.recreate(&mut chain, (width, height))?;
                frames.recreated += 1;
            }
            let c = chain.as_ref().ok_or("no swapchain")?;
            if args.present_wait && frames.presented >= 2 {
                // Until the present two frames back (ids are frame numbers
                // from 1) was shown.
                let id = frames.presented - 1;
                match unsafe { waiter.wait_for_present(c.swapchain, id, timeout) } {
                    Ok(()) => frames.present_waits += 1,
                    Err(vk::Result::ERROR_OUT_OF_DATE_KHR) => {
                        stale = Some("present wait: VK_ERROR_OUT_OF_DATE_KHR".into());
                        continue;
                    }
                    Err(e) => return Err(format!("vkWaitForPresentKHR({id}): {e}").into()),
                }
            }
            let slot = submitted % FRAMES_IN_FLIGHT;
            unsafe { device.wait_for_fences(&[fences[slot]], true, timeout) }?;
            if args.maintenance1 {
                // The slot's last present is done with its semaphores.
                let f = [present_fences[slot]];
                unsafe { device.wait_for_fences(&f, true, timeout) }?;
                if submitted >= FRAMES_IN_FLIGHT {
                    frames.present_fences += 1;
                }
                if frames.presented % 10 == 9 {
                    // One more image, given back unpresented once free.
                    let got = unsafe {
                        swapchain_fn.acquire_next_image(
                            c.swapchain,
                            timeout,
                            vk::Semaphore::null(),
                            extra,
                        )
                    };
                    if let Ok((index, _)) = got {
                        unsafe {
                            device.wait_for_fences(&[extra], true, timeout)?;
                            device.reset_fences(&[extra])?;
                            let indices = [index];
                            releaser.release_swapchain_images(
                                &vk::ReleaseSwapchainImagesInfoEXT::default()
                                    .swapchain(c.swapchain)
                                    .image_indices(&indices),
                            )?;
                        }
                        frames.released += 1;
                    }
                }
            }
            // Out of date: nothing was acquired, the semaphore is not to be
            // signalled and the fence was not reset; the slot is retried
            // on the new swapchain.
            let acquire = unsafe {
                swapchain_fn.acquire_next_image(
                    c.swapchain,
                    timeout,
                    acquired[slot],
                    vk::Fence::null(),
                )
            };
            let (index, acquired_suboptimal) = match acquire {
                Ok(next) => next,
                Err(vk::Result::ERROR_OUT_OF_DATE_KHR) => {
                    stale = Some("acquire: VK_ERROR_OUT_OF_DATE_KHR".into());
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            // Suboptimal: the image is acquired (its semaphore will be
            // signalled), so it is rendered and presented before the
            // swapchain is made anew.
            unsafe { device.reset_fences(&[fences[slot]]) }?;
            let cmd = cmds[slot];
            unsafe {
                device.reset_command_buffer(cmd, vk::CommandBufferResetFlags::empty())?;
                device.begin_command_buffer(
                    cmd,
                    &vk::CommandBufferBeginInfo::default()
                        .flags(vk::CommandBufferUsageFlags::ONE_TIME_SUBMIT),
                )?;
                c.renderer.record(cmd, index as usize, frames.t());
                device.end_command_buffer(cmd)?;
            }
            let wait = [acquired[slot]];
            let stages = [vk::PipelineStageFlags::COLOR_ATTACHMENT_OUTPUT];
            let rendered = [c.rendered[index as usize]];
            // --fence-before-present: no semaphore between the rendering
            // and the present; the fence, waited for below, orders them.
            let signal: &[vk::Semaphore] = match args.fence_before_present {
                true => &[],
                false => &rendered,
            };
            let cmd_list = [cmd];
            let submit = vk::SubmitInfo::default()
                .wait_semaphores(&wait)
                .wait_dst_stage_mask(&stages)
                .command_buffers(&cmd_list)
                .signal_semaphores(signal);
            unsafe { device.queue_submit(queue, &[submit], fences[slot]) }?;
            submitted += 1;
            if args.fence_before_present {
                unsafe { device.wait_for_fences(&[fences[slot]], true, timeout) }?;
            }
            if let Some(t) = &mut timer {
                t.request()?;
            }
            let swapchains = [c.swapchain];
            let indices = [index];
            let ids = [frames.presented + 1];
            let mut id_info = vk::PresentIdKHR::default().present_ids(&ids);
            let present_fence = [present_fences[slot]];
            let mut fence_info = vk::SwapchainPresentFenceInfoEXT::default().fences(&present_fence);
            let mut present_info = vk::PresentInfoKHR::default()
                .wait_semaphores(signal)
                .swapchains(&swapchains)
                .image_indices(&indices);
            if args.present_wait {
                present_info = present_info.push_next(&mut id_info);
            }
            if args.maintenance1 {
                unsafe { device.reset_fences(&present_fence) }?;
                present_info = present_info.push_next(&mut fence_info);
            }
            let present = unsafe { swapchain_fn.queue_present(queue, &present_info) };
            // Out of date: the image went back unshown (the semaphore wait
            // still happens); the semaphores are made anew with the
            // swapchain, after the device idles.
            match present {
                Ok(suboptimal) => {
                    frames.presented_one();
                    fruitless = 0;
                    if suboptimal || acquired_suboptimal {
                        stale = Some("VK_SUBOPTIMAL_KHR".into());
                    }
                }
                Err(vk::Result::ERROR_OUT_OF_DATE_KHR) => {
                    stale = Some("present: VK_ERROR_OUT_OF_DATE_KHR".into())
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    })();
    frames.finish();
    if let Some(t) = &mut timer {
        frames.presentation = t
            .wait_all(Duration::from_secs(2))
            .or_else(|_| t.stats())
            .ok();
    }
    frames.sync = "driver".into();
    frames.path = format!("VK_KHR_swapchain, {:?}", format.format);
    frames.surface_formats = surface_formats.join(" ");
    if args.premultiplied {
        frames.path.push_str(", premultiplied alpha");
    }
    if let Some(c) = &chain {
        frames.images = c.views.len();
        (frames.width, frames.height) = (c.extent.width, c.extent.height);
    }
    unsafe {
        let _ = device.device_wait_idle();
        if let Some(c) = chain {
            wsi.destroy(c);
        }
        for s in acquired {
            device.destroy_semaphore(s, None);
        }
        for f in fences.into_iter().chain(present_fences).chain([extra]) {
            device.destroy_fence(f, None);
        }
        device.destroy_command_pool(pool, None);
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
    Ok(frames)
}
