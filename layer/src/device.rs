//! The device chain: which devices the layer serves, the extensions it
//! enables on them, and the queues it may present on.

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use ash::vk;
use ash::vk::Handle;

use crate::instance::{self, fill, slice, InstanceData};
use crate::swapchain::LayerSwapchain;
use crate::{debug, entry, guard, loader, LAYER_NAME};

/// Device commands the layer answers for every device (to follow its
/// queues and its end), served or not.
pub const ALWAYS: [&CStr; 4] = [
    c"vkGetDeviceProcAddr",
    c"vkDestroyDevice",
    c"vkGetDeviceQueue",
    c"vkGetDeviceQueue2",
];

/// Device extensions the driver may offer that act on swapchains in ways
/// the layer does not implement (commands taking a `VkSwapchainKHR`, or
/// present-time structs whose promise would be broken): hidden from the
/// app on devices the layer serves.
pub const HIDDEN: [&CStr; 12] = [
    c"VK_KHR_swapchain_maintenance1",
    c"VK_KHR_present_id2",
    c"VK_KHR_present_wait2",
    c"VK_GOOGLE_display_timing",
    c"VK_KHR_shared_presentable_image",
    c"VK_EXT_full_screen_exclusive",
    c"VK_KHR_swapchain_mutable_format",
    c"VK_EXT_image_compression_control_swapchain",
    c"VK_EXT_hdr_metadata",
    c"VK_EXT_display_control",
    c"VK_AMD_display_native_hdr",
    c"VK_NV_low_latency2",
];

/// Device extensions the layer's swapchains implement, offered on served
/// devices even where the driver lacks them (then they are taken out of
/// `vkCreateDevice` before it goes down), with their feature structs. (The
/// layer's swapchains also implement `VK_EXT_swapchain_maintenance1`, but
/// only where the driver offers it: its present fences and image releases
/// must work on the driver's swapchains too.)
/// Each feature struct is one `VkBool32` after `sType` and `pNext`.
pub const PROVIDED: [(&CStr, vk::StructureType); 2] = [
    (
        c"VK_KHR_present_id",
        vk::StructureType::PHYSICAL_DEVICE_PRESENT_ID_FEATURES_KHR,
    ),
    (
        c"VK_KHR_present_wait",
        vk::StructureType::PHYSICAL_DEVICE_PRESENT_WAIT_FEATURES_KHR,
    ),
];

/// The driver's own device extensions of `pd`.
fn driver_extensions(inst: &InstanceData, pd: vk::PhysicalDevice) -> Vec<vk::ExtensionProperties> {
    // SAFETY: a plain query on a physical device of this instance.
    unsafe { inst.raw.enumerate_device_extension_properties(pd) }.unwrap_or_default()
}

/// The extensions of [`PROVIDED`] that the driver of `pd` lacks.
fn provided_by_layer(
    inst: &InstanceData,
    pd: vk::PhysicalDevice,
) -> Vec<(&'static CStr, vk::StructureType)> {
    let theirs = driver_extensions(inst, pd);
    PROVIDED
        .into_iter()
        .filter(|(name, _)| {
            !theirs
                .iter()
                .any(|e| e.extension_name_as_c_str() == Ok(*name))
        })
        .collect()
}

/// Device commands that may carry a swapchain handle to the driver: on a
/// served device the layer wraps them (where the driver has them) so that
/// its own swapchains' handles never go down.
pub const WRAPPED: [&CStr; 7] = [
    c"vkSetDebugUtilsObjectNameEXT",
    c"vkSetDebugUtilsObjectTagEXT",
    c"vkDebugMarkerSetObjectNameEXT",
    c"vkDebugMarkerSetObjectTagEXT",
    c"vkCreateImage",
    c"vkBindImageMemory2",
    c"vkBindImageMemory2KHR",
];

/// One device of the chain.
pub struct DeviceData {
    /// The device.
    pub handle: vk::Device,
    /// The next layer's `vkGetDeviceProcAddr`.
    pub next_gdpa: vk::PFN_vkGetDeviceProcAddr,
    /// Its commands, loaded down the chain.
    pub raw: ash::Device,
    /// `VK_KHR_swapchain` down the chain (the driver's swapchains).
    pub swapchain_fn: ash::khr::swapchain::Device,
    /// Its instance.
    pub instance: Arc<InstanceData>,
    /// winsys over the device, where the layer serves it.
    pub winsys: Option<winsys::vulkan::Device>,
    /// The extensions of [`PROVIDED`] that the layer, not the driver,
    /// gives this device.
    pub provides: Vec<&'static CStr>,
    /// `VK_KHR_present_id` given by the layer: the latest id presented to
    /// each of the driver's swapchains (a wait for it ends once the
    /// driver's present returned).
    pub driver_present_ids: Mutex<HashMap<u64, u64>>,
    /// The layer's swapchains on it, by handle.
    pub swapchains: Mutex<HashMap<u64, Arc<LayerSwapchain>>>,
}

impl DeviceData {
    /// Whether the layer presents for this device.
    pub fn serves(&self) -> bool {
        self.winsys.is_some()
    }

    /// The layer's swapchain `handle`, if it is one.
    pub fn swapchain(&self, handle: vk::SwapchainKHR) -> Option<Arc<LayerSwapchain>> {
        let map = self.swapchains.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&handle.as_raw()).cloned()
    }

    /// The layer's swapchains on `surface`.
    pub fn swapchains_of(&self, surface: vk::SurfaceKHR) -> Vec<Arc<LayerSwapchain>> {
        let map = self.swapchains.lock().unwrap_or_else(|p| p.into_inner());
        map.values()
            .filter(|s| s.surface == surface)
            .cloned()
            .collect()
    }
}

#[derive(Default)]
struct Registry {
    devices: RwLock<HashMap<u64, Arc<DeviceData>>>,
    queues: RwLock<HashMap<u64, Arc<DeviceData>>>,
}

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::default)
}

/// The device data of `device`.
pub fn data(device: vk::Device) -> Option<Arc<DeviceData>> {
    let map = registry().devices.read().unwrap_or_else(|p| p.into_inner());
    map.get(&device.as_raw()).cloned()
}

/// The device data of the device `queue` belongs to.
pub fn of_queue(queue: vk::Queue) -> Option<Arc<DeviceData>> {
    let map = registry().queues.read().unwrap_or_else(|p| p.into_inner());
    map.get(&queue.as_raw()).cloned()
}

/// The instance-level commands of this module (`vkCreateDevice`, the
/// device extension list).
pub fn instance_intercept(name: &CStr) -> Option<vk::PFN_vkVoidFunction> {
    Some(match name.to_bytes() {
        b"vkCreateDevice" => entry!(create_device),
        b"vkEnumerateDeviceExtensionProperties" => entry!(enumerate_device_extensions),
        b"vkGetPhysicalDeviceFeatures2" | b"vkGetPhysicalDeviceFeatures2KHR" => {
            entry!(physical_device_features2)
        }
        _ => return None,
    })
}

/// The device-level commands the layer provides.
pub fn intercept(name: &CStr) -> Option<vk::PFN_vkVoidFunction> {
    use crate::swapchain as sc;
    Some(match name.to_bytes() {
        b"vkGetDeviceProcAddr" => entry!(crate::get_device_proc_addr),
        b"vkDestroyDevice" => entry!(destroy_device),
        b"vkGetDeviceQueue" => entry!(get_device_queue),
        b"vkGetDeviceQueue2" => entry!(get_device_queue2),
        b"vkCreateSwapchainKHR" => entry!(sc::create_swapchain),
        b"vkDestroySwapchainKHR" => entry!(sc::destroy_swapchain),
        b"vkGetSwapchainImagesKHR" => entry!(sc::get_swapchain_images),
        b"vkAcquireNextImageKHR" => entry!(sc::acquire_next_image),
        b"vkAcquireNextImage2KHR" => entry!(sc::acquire_next_image2),
        b"vkQueuePresentKHR" => entry!(sc::queue_present),
        b"vkWaitForPresentKHR" => entry!(sc::wait_for_present),
        b"vkReleaseSwapchainImagesEXT" => entry!(sc::release_images),
        b"vkGetDeviceGroupSurfacePresentModesKHR" => entry!(sc::device_group_surface_present_modes),
        b"vkSetDebugUtilsObjectNameEXT" => entry!(set_object_name),
        b"vkSetDebugUtilsObjectTagEXT" => entry!(set_object_tag),
        b"vkDebugMarkerSetObjectNameEXT" => entry!(marker_object_name),
        b"vkDebugMarkerSetObjectTagEXT" => entry!(marker_object_tag),
        b"vkCreateImage" => entry!(create_image),
        b"vkBindImageMemory2" => entry!(bind_image_memory2),
        b"vkBindImageMemory2KHR" => entry!(bind_image_memory2_khr),
        _ => return None,
    })
}

/// The next layer's `name` for `device`, as type `F`.
///
/// # Safety
///
/// `F` must be the command's function pointer type.
pub(crate) unsafe fn next<F>(d: &DeviceData, name: &CStr) -> Option<F> {
    // SAFETY: the next layer's entry point with our device.
    let f = unsafe { (d.next_gdpa)(d.handle, name.as_ptr()) }?;
    // SAFETY: the caller names `F` as the command's type.
    Some(unsafe { std::mem::transmute_copy::<unsafe extern "system" fn(), F>(&f) })
}

/// Whether an object named in a debug call is one of the layer's
/// swapchains (never the driver's to name).
fn our_swapchain(d: &DeviceData, handle: u64) -> bool {
    d.swapchain(vk::SwapchainKHR::from_raw(handle)).is_some()
}

/// A debug-naming command: done (as a no-op) for the layer's own
/// swapchains, passed on for every other object.
///
/// # Safety
///
/// `F` must be the type of command `name`; `call` calls it with the app's
/// valid arguments.
unsafe fn debug_named<F>(
    device: vk::Device,
    name: &CStr,
    swapchain: impl FnOnce() -> Option<u64>,
    call: impl FnOnce(F) -> vk::Result,
) -> vk::Result {
    guard(vk::Result::ERROR_OUT_OF_HOST_MEMORY, || {
        let Some(d) = data(device) else {
            return vk::Result::ERROR_DEVICE_LOST;
        };
        if swapchain().is_some_and(|h| our_swapchain(&d, h)) {
            return vk::Result::SUCCESS;
        }
        // SAFETY: the caller names F as the command's type.
        match unsafe { next::<F>(&d, name) } {
            Some(f) => call(f),
            None => vk::Result::SUCCESS,
        }
    })
}

unsafe extern "system" fn set_object_name(
    device: vk::Device,
    info: *const vk::DebugUtilsObjectNameInfoEXT<'_>,
) -> vk::Result {
    // SAFETY: the command's type and the app's valid arguments.
    unsafe {
        debug_named(
            device,
            c"vkSetDebugUtilsObjectNameEXT",
            || {
                let i = &*info;
                (i.object_type == vk::ObjectType::SWAPCHAIN_KHR).then_some(i.object_handle)
            },
            |f: vk::PFN_vkSetDebugUtilsObjectNameEXT| f(device, info),
        )
    }
}

unsafe extern "system" fn set_object_tag(
    device: vk::Device,
    info: *const vk::DebugUtilsObjectTagInfoEXT<'_>,
) -> vk::Result {
    // SAFETY: the command's type and the app's valid arguments.
    unsafe {
        debug_named(
            device,
            c"vkSetDebugUtilsObjectTagEXT",
            || {
                let i = &*info;
                (i.object_type == vk::ObjectType::SWAPCHAIN_KHR).then_some(i.object_handle)
            },
            |f: vk::PFN_vkSetDebugUtilsObjectTagEXT| f(device, info),
        )
    }
}

unsafe extern "system" fn marker_object_name(
    device: vk::Device,
    info: *const vk::DebugMarkerObjectNameInfoEXT<'_>,
) -> vk::Result {
    // SAFETY: the command's type and the app's valid arguments.
    unsafe {
        debug_named(
            device,
            c"vkDebugMarkerSetObjectNameEXT",
            || {
                let i = &*info;
                let ty = vk::DebugReportObjectTypeEXT::SWAPCHAIN_KHR;
                (i.object_type == ty).then_some(i.object)
            },
            |f: vk::PFN_vkDebugMarkerSetObjectNameEXT| f(device, info),
        )
    }
}

unsafe extern "system" fn marker_object_tag(
    device: vk::Device,
    info: *const vk::DebugMarkerObjectTagInfoEXT<'_>,
) -> vk::Result {
    // SAFETY: the command's type and the app's valid arguments.
    unsafe {
        debug_named(
            device,
            c"vkDebugMarkerSetObjectTagEXT",
            || {
                let i = &*info;
                let ty = vk::DebugReportObjectTypeEXT::SWAPCHAIN_KHR;
                (i.object_type == ty).then_some(i.object)
            },
            |f: vk::PFN_vkDebugMarkerSetObjectTagEXT| f(device, info),
        )
    }
}

/// The swapchain a pNext chain names in a struct of type `ty` whose
/// `VkSwapchainKHR` field follows `sType` and `pNext` (both
/// `VkImageSwapchainCreateInfoKHR` and `VkBindImageMemorySwapchainInfoKHR`
/// start so).
///
/// # Safety
///
/// `next` must be a valid pNext chain.
unsafe fn swapchain_in_chain(next: *const c_void, ty: vk::StructureType) -> Option<u64> {
    // SAFETY: a valid chain (the caller's contract); both struct types put
    // the swapchain right after the header, as VkImageSwapchainCreateInfoKHR.
    let named = unsafe { loader::chained::<vk::ImageSwapchainCreateInfoKHR<'_>>(next, ty) };
    named.map(|s| s.swapchain.as_raw())
}

/// Images bound to a swapchain's memory (device groups) are not done for
/// the layer's swapchains: refused with an error, never handed down.
const NO_SWAPCHAIN_ALIAS: &str = "images aliasing a swapchain image (VkImageSwapchainCreateInfoKHR, VkBindImageMemorySwapchainInfoKHR) are not supported by the layer";

unsafe extern "system" fn create_image(
    device: vk::Device,
    info: *const vk::ImageCreateInfo<'_>,
    allocator: *const vk::AllocationCallbacks<'_>,
    out: *mut vk::Image,
) -> vk::Result {
    guard(vk::Result::ERROR_OUT_OF_HOST_MEMORY, || {
        let Some(d) = data(device) else {
            return vk::Result::ERROR_DEVICE_LOST;
        };
        // SAFETY: a valid create info.
        let named = unsafe {
            swapchain_in_chain(
                (*info).p_next,
                vk::StructureType::IMAGE_SWAPCHAIN_CREATE_INFO_KHR,
            )
        };
        if named.is_some_and(|h| our_swapchain(&d, h)) {
            eprintln!("winsys layer: vkCreateImage: {NO_SWAPCHAIN_ALIAS}");
            return vk::Result::ERROR_OUT_OF_HOST_MEMORY;
        }
        // SAFETY: the app's valid arguments, passed on.
        unsafe { (d.raw.fp_v1_0().create_image)(device, info, allocator, out) }
    })
}

unsafe extern "system" fn bind_image_memory2(
    device: vk::Device,
    count: u32,
    infos: *const vk::BindImageMemoryInfo<'_>,
) -> vk::Result {
    // SAFETY: the app's valid arguments.
    unsafe { bind_image_memory2_as(device, count, infos, c"vkBindImageMemory2") }
}

/// `vkBindImageMemory2` (or its KHR alias `name`), refusing images bound
/// to the layer's swapchains.
///
/// # Safety
///
/// The app's valid arguments.
unsafe fn bind_image_memory2_as(
    device: vk::Device,
    count: u32,
    infos: *const vk::BindImageMemoryInfo<'_>,
    name: &CStr,
) -> vk::Result {
    guard(vk::Result::ERROR_OUT_OF_HOST_MEMORY, || {
        let Some(d) = data(device) else {
            return vk::Result::ERROR_DEVICE_LOST;
        };
        // SAFETY: the app's valid array.
        let all = unsafe { slice(infos, count) };
        let aliased = all.iter().any(|i| {
            // SAFETY: a valid pNext chain.
            let named = unsafe {
                swapchain_in_chain(
                    i.p_next,
                    vk::StructureType::BIND_IMAGE_MEMORY_SWAPCHAIN_INFO_KHR,
                )
            };
            named.is_some_and(|h| our_swapchain(&d, h))
        });
        if aliased {
            eprintln!("winsys layer: vkBindImageMemory2: {NO_SWAPCHAIN_ALIAS}");
            return vk::Result::ERROR_OUT_OF_HOST_MEMORY;
        }
        // SAFETY: the command's type; the app's valid arguments, passed on.
        match unsafe { next::<vk::PFN_vkBindImageMemory2>(&d, name) } {
            Some(f) => unsafe { f(device, count, infos) },
            None => vk::Result::ERROR_OUT_OF_HOST_MEMORY,
        }
    })
}

unsafe extern "system" fn bind_image_memory2_khr(
    device: vk::Device,
    count: u32,
    infos: *const vk::BindImageMemoryInfo<'_>,
) -> vk::Result {
    // SAFETY: the app's valid arguments.
    unsafe { bind_image_memory2_as(device, count, infos, c"vkBindImageMemory2KHR") }
}

unsafe extern "system" fn create_device(
    pd: vk::PhysicalDevice,
    info: *const vk::DeviceCreateInfo<'_>,
    allocator: *const vk::AllocationCallbacks<'_>,
    out: *mut vk::Device,
) -> vk::Result {
    guard(vk::Result::ERROR_INITIALIZATION_FAILED, || {
        // SAFETY: the loader's valid arguments.
        unsafe { create_device_inner(pd, info, allocator, out) }
    })
}

unsafe fn create_device_inner(
    pd: vk::PhysicalDevice,
    info: *const vk::DeviceCreateInfo<'_>,
    allocator: *const vk::AllocationCallbacks<'_>,
    out: *mut vk::Device,
) -> vk::Result {
    let Some(inst) = instance::of_physical(pd) else {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    };
    // SAFETY: a valid create info (the loader's contract).
    let app_info = unsafe { &*info };
    // SAFETY: a valid pNext chain.
    let (link_info, loader_data) = unsafe {
        (
            loader::find_in_chain::<loader::LayerDeviceCreateInfo>(
                app_info.p_next,
                loader::LOADER_DEVICE_CREATE_INFO,
                loader::LAYER_LINK_INFO,
            ),
            loader::find_in_chain::<loader::LayerDeviceCreateInfo>(
                app_info.p_next,
                loader::LOADER_DEVICE_CREATE_INFO,
                loader::LOADER_DATA_CALLBACK,
            ),
        )
    };
    let Some(link_info) = link_info else {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    };
    // SAFETY: the loader's link info for this layer, advanced for the next
    // layer as the interface prescribes.
    let (next_gipa, next_gdpa, next_link) = unsafe {
        let link = (*link_info).u.p_layer_info;
        if link.is_null() {
            return vk::Result::ERROR_INITIALIZATION_FAILED;
        }
        (*link_info).u.p_layer_info = (*link).p_next;
        (
            (*link).pfn_next_get_instance_proc_addr,
            (*link).pfn_next_get_device_proc_addr,
            (*link).p_next,
        )
    };
    // SAFETY: the loader's callback struct, if present.
    let set_loader_data = loader_data.and_then(|l| unsafe { (*l).u.pfn_set_device_loader_data });
    // SAFETY: the next layer's command with our instance.
    let Some(create) = (unsafe { next_gipa(inst.handle, c"vkCreateDevice".as_ptr()) }) else {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    };
    // SAFETY: vkCreateDevice's type.
    let create: vk::PFN_vkCreateDevice = unsafe { std::mem::transmute(create) };

    // Serve only where winsys has what it needs and the app has a queue in
    // the family winsys submits on.
    let served = inst.served(pd).filter(|s| {
        // SAFETY: the app's valid array.
        let queues = unsafe {
            slice(
                app_info.p_queue_create_infos,
                app_info.queue_create_info_count,
            )
        };
        let has = queues.iter().any(|q| q.queue_family_index == s.family);
        if !has {
            debug!(
                "not serving this device: the app made no queue in family {}",
                s.family
            );
        }
        has
    });
    // SAFETY: the app's valid array of C strings.
    let app_names = unsafe {
        slice(
            app_info.pp_enabled_extension_names,
            app_info.enabled_extension_count,
        )
    };
    // What the layer provides and the driver lacks never goes down: the
    // names, and the feature structs (unlinked for the calls, then put
    // back: the chain is the app's).
    let provided = match inst.served(pd) {
        Some(_) => provided_by_layer(&inst, pd),
        None => Vec::new(),
    };
    // SAFETY: valid C strings.
    let is_provided = |n: *const c_char| {
        provided
            .iter()
            .any(|(p, _)| unsafe { CStr::from_ptr(n) } == *p)
    };
    let app_wants_provided = app_names.iter().any(|&n| is_provided(n));
    let mut names: Vec<*const c_char> = app_names
        .iter()
        .copied()
        .filter(|&n| !is_provided(n))
        .collect();
    let app_count = names.len();
    if let Some(s) = &served {
        for want in s.info.extensions.present() {
            // SAFETY: valid C strings.
            if !names.iter().any(|&n| unsafe { CStr::from_ptr(n) } == want) {
                names.push(want.as_ptr());
            }
        }
    }
    let mut unlinked = Vec::new();
    let mut ours = *app_info;
    // SAFETY: the app's valid pNext chain, restored below.
    unsafe {
        for (_, ty) in &provided {
            unlink(&mut ours.p_next, *ty, &mut unlinked);
        }
    }
    ours.enabled_extension_count = names.len() as u32;
    ours.pp_enabled_extension_names = names.as_ptr();
    // SAFETY: a valid create info; the chain's link was advanced.
    let mut result = unsafe { create(pd, &ours, allocator, out) };
    let mut served = served;
    if result != vk::Result::SUCCESS && served.is_some() {
        debug!("vkCreateDevice with winsys's extensions failed ({result}); not serving it");
        served = None;
        ours.enabled_extension_count = app_count as u32;
        // SAFETY: the app's own extensions (less the layer's), the chain's
        // link put back where the next layer found it (it advanced it for
        // the layer below on the first call).
        result = unsafe {
            (*link_info).u.p_layer_info = next_link;
            create(pd, &ours, allocator, out)
        };
    }
    // SAFETY: the links unlinked above, in reverse order.
    unsafe { relink(unlinked) };
    if result != vk::Result::SUCCESS {
        return result;
    }
    // SAFETY: the output of a successful create.
    let handle = unsafe { *out };
    let load = |name: &CStr| -> *const c_void {
        // SAFETY: the next layer's entry point with the new device.
        match unsafe { next_gdpa(handle, name.as_ptr()) } {
            Some(f) => f as *const c_void,
            None => std::ptr::null(),
        }
    };
    // SAFETY: commands of the live device, loaded down the chain.
    let raw = unsafe { ash::Device::load_with(load, handle) };
    let ws_instance = inst.winsys(Some(next_gdpa));
    let swapchain_fn = ash::khr::swapchain::Device::new(ws_instance.raw(), &raw);
    let winsys = served.and_then(|s| {
        // SAFETY: a queue the app created (checked above).
        let queue = unsafe { raw.get_device_queue(s.family, 0) };
        if let Some(set) = set_loader_data {
            // SAFETY: the loader's callback for a dispatchable object made
            // below it.
            let _ = unsafe { set(handle, queue.as_raw() as *mut c_void) };
        }
        // SAFETY: the device was created from `pd` with every extension
        // winsys's report of `pd` lists; it outlives the winsys device
        // (dropped in vkDestroyDevice before the device goes down); winsys
        // submits only with `on_queue` (the app's present queue, held
        // during vkQueuePresentKHR); the callback is the loader's.
        match unsafe {
            winsys::vulkan::Device::from_raw(
                &ws_instance,
                pd,
                raw.clone(),
                s.family,
                queue,
                set_loader_data,
            )
        } {
            Ok(d) => Some(d),
            Err(e) => {
                debug!("not serving {}: {e}", s.info.name);
                None
            }
        }
    });
    if winsys.is_none() && app_wants_provided {
        // The app enabled what only the layer's swapchains give, on a
        // device the layer cannot serve after all.
        eprintln!(
            "winsys layer: vkCreateDevice: the layer cannot serve this device, and the app enabled an extension only the layer provides"
        );
        drop(winsys);
        // SAFETY: the device just made, used by no one yet.
        unsafe { (raw.fp_v1_0().destroy_device)(handle, allocator) };
        return vk::Result::ERROR_EXTENSION_NOT_PRESENT;
    }
    let provides = match &winsys {
        Some(_) => provided.iter().map(|(n, _)| *n).collect(),
        None => Vec::new(),
    };
    let data = Arc::new(DeviceData {
        handle,
        provides,
        next_gdpa,
        raw,
        swapchain_fn,
        instance: inst,
        winsys,
        driver_present_ids: Mutex::new(HashMap::new()),
        swapchains: Mutex::new(HashMap::new()),
    });
    registry()
        .devices
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(handle.as_raw(), data);
    vk::Result::SUCCESS
}

unsafe extern "system" fn destroy_device(
    device: vk::Device,
    allocator: *const vk::AllocationCallbacks<'_>,
) {
    guard((), || {
        let r = registry();
        let data = r
            .devices
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&device.as_raw());
        let Some(data) = data else { return };
        r.queues
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, d| !Arc::ptr_eq(d, &data));
        let left: Vec<_> = {
            let mut map = data.swapchains.lock().unwrap_or_else(|p| p.into_inner());
            map.drain().map(|(_, s)| s).collect()
        };
        if !left.is_empty() {
            eprintln!(
                "winsys layer: vkDestroyDevice with {} swapchain(s) not destroyed; destroying them",
                left.len()
            );
        }
        drop(left);
        let raw = data.raw.clone();
        // winsys's objects of the device go before it does.
        drop(data);
        // SAFETY: the app destroys its device; everything of it is gone.
        unsafe { (raw.fp_v1_0().destroy_device)(device, allocator) };
    })
}

/// A struct taken out of a pNext chain: the link that pointed at it and
/// what it pointed at.
pub(crate) type Unlinked = (*mut *const c_void, *const c_void);

/// Take the structs of type `ty` out of the chain starting at `*head`
/// (the app's structs' links are changed in place, recorded in `undo`).
///
/// # Safety
///
/// `*head` must start a valid chain whose structs stay alive and unused by
/// others until [`relink`] puts them back.
pub(crate) unsafe fn unlink(
    head: *mut *const c_void,
    ty: vk::StructureType,
    undo: &mut Vec<Unlinked>,
) {
    let mut link = head;
    // SAFETY: links of a valid chain; every struct starts with sType, pNext.
    unsafe {
        while !(*link).is_null() {
            let node = (*link).cast_mut().cast::<vk::BaseOutStructure<'_>>();
            if (*node).s_type == ty {
                undo.push((link, *link));
                *link = (*node).p_next.cast_const().cast();
            } else {
                link = std::ptr::addr_of_mut!((*node).p_next).cast();
            }
        }
    }
}

/// Put back what [`unlink`] took out.
///
/// # Safety
///
/// `undo` from [`unlink`], the chain unchanged since.
pub(crate) unsafe fn relink(undo: Vec<Unlinked>) {
    for (link, was) in undo.into_iter().rev() {
        // SAFETY: the link as unlink found it.
        unsafe { *link = was };
    }
}

/// `vkGetPhysicalDeviceFeatures2`: the driver's answer, with the features
/// of what the layer provides ([`PROVIDED`]) on served devices.
unsafe extern "system" fn physical_device_features2(
    pd: vk::PhysicalDevice,
    out: *mut vk::PhysicalDeviceFeatures2<'_>,
) {
    guard((), || {
        let Some(inst) = instance::of_physical(pd) else {
            return;
        };
        // SAFETY: the app's valid arguments, passed on (Vulkan 1.1 core:
        // the driver has 1.2).
        unsafe { (inst.raw.fp_v1_1().get_physical_device_features2)(pd, out) };
        if inst.served(pd).is_none() {
            return;
        }
        // SAFETY: the app's valid output chain; the provided extensions'
        // feature structs are one VkBool32 after the header, as
        // VkPhysicalDevicePresentIdFeaturesKHR.
        unsafe {
            let mut next = (*out).p_next.cast::<vk::BaseOutStructure<'_>>();
            while !next.is_null() {
                if PROVIDED.iter().any(|(_, ty)| *ty == (*next).s_type) {
                    (*next.cast::<vk::PhysicalDevicePresentIdFeaturesKHR<'_>>()).present_id =
                        vk::TRUE;
                }
                next = (*next).p_next;
            }
        }
    })
}

fn remember_queue(device: vk::Device, queue: vk::Queue) {
    if queue == vk::Queue::null() {
        return;
    }
    if let Some(d) = data(device) {
        registry()
            .queues
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(queue.as_raw(), d);
    }
}

unsafe extern "system" fn get_device_queue(
    device: vk::Device,
    family: u32,
    index: u32,
    out: *mut vk::Queue,
) {
    guard((), || {
        let Some(d) = data(device) else { return };
        // SAFETY: the app's valid arguments, passed on.
        unsafe { (d.raw.fp_v1_0().get_device_queue)(device, family, index, out) };
        // SAFETY: filled above.
        remember_queue(device, unsafe { *out });
    })
}

unsafe extern "system" fn get_device_queue2(
    device: vk::Device,
    info: *const vk::DeviceQueueInfo2<'_>,
    out: *mut vk::Queue,
) {
    guard((), || {
        let Some(d) = data(device) else { return };
        // SAFETY: the app's valid arguments, passed on.
        unsafe { (d.raw.fp_v1_1().get_device_queue2)(device, info, out) };
        // SAFETY: filled above.
        remember_queue(device, unsafe { *out });
    })
}

/// An extension's properties.
fn extension(name: &CStr, spec_version: u32) -> vk::ExtensionProperties {
    let mut e = vk::ExtensionProperties {
        spec_version,
        ..Default::default()
    };
    for (d, s) in e.extension_name.iter_mut().zip(name.to_bytes()) {
        *d = *s as c_char;
    }
    e
}

unsafe extern "system" fn enumerate_device_extensions(
    pd: vk::PhysicalDevice,
    layer: *const c_char,
    count: *mut u32,
    out: *mut vk::ExtensionProperties,
) -> vk::Result {
    guard(vk::Result::ERROR_INITIALIZATION_FAILED, || {
        // SAFETY: a valid C string if non-null.
        let layer = (!layer.is_null()).then(|| unsafe { CStr::from_ptr(layer) });
        if layer == Some(LAYER_NAME) {
            let mut all = vec![extension(c"VK_KHR_swapchain", 70)];
            all.extend(PROVIDED.iter().map(|(name, _)| extension(name, 1)));
            // SAFETY: the app's valid count and array.
            return unsafe { fill(&all, count, out) };
        }
        let Some(inst) = instance::of_physical(pd) else {
            return vk::Result::ERROR_INITIALIZATION_FAILED;
        };
        let next = inst.raw.fp_v1_0().enumerate_device_extension_properties;
        let layer_ptr = layer.map_or(std::ptr::null(), CStr::as_ptr);
        if layer.is_some() || inst.served(pd).is_none() {
            // SAFETY: the app's valid arguments, passed on.
            return unsafe { next(pd, layer_ptr, count, out) };
        }
        // The driver's list, less what the layer's swapchains cannot do.
        let mut n = 0u32;
        // SAFETY: a counting query.
        let r = unsafe { next(pd, std::ptr::null(), &mut n, std::ptr::null_mut()) };
        if r != vk::Result::SUCCESS {
            return r;
        }
        let mut all = vec![vk::ExtensionProperties::default(); n as usize];
        // SAFETY: `n` slots.
        let r = unsafe { next(pd, std::ptr::null(), &mut n, all.as_mut_ptr()) };
        if r != vk::Result::SUCCESS && r != vk::Result::INCOMPLETE {
            return r;
        }
        all.truncate(n as usize);
        all.retain(|e| {
            e.extension_name_as_c_str()
                .map_or(true, |name| !HIDDEN.contains(&name))
        });
        for (name, _) in PROVIDED {
            if !all.iter().any(|e| e.extension_name_as_c_str() == Ok(name)) {
                all.push(extension(name, 1));
            }
        }
        // SAFETY: the app's valid count and array.
        unsafe { fill(&all, count, out) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlinked_structs_leave_the_chain_and_come_back() {
        let mut wait = vk::PhysicalDevicePresentWaitFeaturesKHR::default();
        let mut id = vk::PhysicalDevicePresentIdFeaturesKHR::default();
        let mut v11 = vk::PhysicalDeviceVulkan11Features::default();
        // v11 -> id -> wait
        id.p_next = std::ptr::addr_of_mut!(wait).cast();
        v11.p_next = std::ptr::addr_of_mut!(id).cast();
        let mut head: *const c_void = std::ptr::addr_of!(v11).cast();
        let types = |mut p: *const c_void| {
            let mut out = Vec::new();
            while !p.is_null() {
                // SAFETY: the test's own chain.
                let h = unsafe { &*p.cast::<vk::BaseInStructure<'_>>() };
                out.push(h.s_type);
                p = h.p_next.cast();
            }
            out
        };
        let mut undo = Vec::new();
        // SAFETY: the test's own chain, alive throughout.
        unsafe {
            for (_, ty) in PROVIDED {
                unlink(&mut head, ty, &mut undo);
            }
        }
        assert_eq!(
            types(head),
            [vk::StructureType::PHYSICAL_DEVICE_VULKAN_1_1_FEATURES]
        );
        // SAFETY: as above.
        unsafe { relink(undo) };
        assert_eq!(types(head).len(), 3);
        // The first struct itself can go too.
        let mut head: *const c_void = std::ptr::addr_of!(id).cast();
        let mut undo = Vec::new();
        // SAFETY: as above.
        unsafe { unlink(&mut head, PROVIDED[0].1, &mut undo) };
        assert_eq!(
            types(head),
            [vk::StructureType::PHYSICAL_DEVICE_PRESENT_WAIT_FEATURES_KHR]
        );
        // SAFETY: as above.
        unsafe { relink(undo) };
        assert_eq!(types(head).len(), 2);
    }
}
