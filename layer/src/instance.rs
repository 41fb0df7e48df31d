//! The instance chain and the surface commands: `VK_KHR_surface` and
//! `VK_KHR_wayland_surface` for Wayland surfaces on physical devices the
//! layer serves; everything else goes down the chain untouched.

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use ash::vk;
use ash::vk::Handle;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use raw_window_handle::{RawDisplayHandle, WaylandDisplayHandle};
use winsys::format::Fourcc;
use winsys::vulkan::format::{from_vk, Alpha};
use winsys::vulkan::{Instance, PhysicalDeviceInfo};
use winsys::wayland::swapchain::Swapchain;
use winsys::wayland::Report;

use crate::swapchain::forced_sync;

use crate::{debug, entry, guard, loader};

/// The Vulkan version the layer asks of the driver (what winsys needs);
/// the app's own view, and the loader's, stay what the app asked.
const DRIVER_API_VERSION: u32 = vk::API_VERSION_1_2;

/// Instance extensions the layer enables for itself (their commands are
/// core in 1.1, but the loader dispatches them by the app's version).
const INSTANCE_EXTENSIONS: [&CStr; 4] = [
    c"VK_KHR_get_physical_device_properties2",
    c"VK_KHR_external_memory_capabilities",
    c"VK_KHR_external_semaphore_capabilities",
    c"VK_KHR_external_fence_capabilities",
];

/// A Wayland surface the app made: libwayland's pointers.
#[derive(Debug, Clone, Copy)]
pub struct WaylandSurface {
    /// The `wl_display`.
    pub display: *mut c_void,
    /// The `wl_surface`.
    pub surface: *mut c_void,
}

// SAFETY: plain pointers the app gave; libwayland proxies may be used from
// any thread (the app keeps them alive while the surface lives).
unsafe impl Send for WaylandSurface {}
// SAFETY: as above; never written through here.
unsafe impl Sync for WaylandSurface {}

/// What the layer can do on a physical device.
#[derive(Debug, Clone)]
pub struct Served {
    /// What winsys says the device is.
    pub info: PhysicalDeviceInfo,
    /// The queue family winsys submits on (the first with graphics and
    /// compute): the one family that can present to the layer's surfaces.
    pub family: u32,
    /// `maxImageDimension2D`.
    pub max_extent: u32,
}

/// One instance of the chain.
pub struct InstanceData {
    /// The instance.
    pub handle: vk::Instance,
    /// The next layer's `vkGetInstanceProcAddr`.
    pub next_gipa: vk::PFN_vkGetInstanceProcAddr,
    /// Its commands, loaded down the chain.
    pub raw: ash::Instance,
    /// `VK_KHR_surface` down the chain.
    pub surface_fn: ash::khr::surface::Instance,
    /// `VK_KHR_wayland_surface` down the chain.
    pub wayland_fn: ash::khr::wayland_surface::Instance,
    /// Whether the driver got Vulkan 1.2 and the extensions winsys needs
    /// (else the layer serves nothing on this instance).
    pub usable: bool,
    /// The app's Wayland surfaces, by handle.
    pub surfaces: Mutex<HashMap<u64, WaylandSurface>>,
    /// Per physical device: `Some` where the layer serves it.
    served: Mutex<HashMap<u64, Option<Served>>>,
    /// Per surface and physical device: the formats the compositor's
    /// answer allowed, or those offered for want of an answer and since
    /// when ([`InstanceData::surface_formats`]).
    formats: Mutex<HashMap<(u64, u64), KnownFormats>>,
    /// Per surface: the compositor's answer to the last formats query and
    /// when it came, for the swapchain made next ([`InstanceData::fresh_report`]).
    reports: Mutex<HashMap<u64, (Instant, Report)>>,
}

/// A surface's formats on one device.
type SurfaceFormats = Arc<[vk::SurfaceFormatKHR]>;

/// A surface's formats on one device, and since when they stand for want
/// of the compositor's answer (`None`: they are its answer).
type KnownFormats = (SurfaceFormats, Option<Instant>);

impl InstanceData {
    /// winsys's view of the instance, with `vkGetDeviceProcAddr` taken from
    /// `next_gdpa` when given (a device link's).
    pub fn winsys(&self, next_gdpa: Option<vk::PFN_vkGetDeviceProcAddr>) -> Instance {
        let gipa = self.next_gipa;
        let handle = self.handle;
        let load = |name: &CStr| -> *const c_void {
            match (name == c"vkGetDeviceProcAddr", next_gdpa) {
                (true, Some(gdpa)) => gdpa as *const c_void,
                // SAFETY: the next layer's entry point with its instance.
                _ => match unsafe { gipa(handle, name.as_ptr()) } {
                    Some(f) => f as *const c_void,
                    None => std::ptr::null(),
                },
            }
        };
        // SAFETY: commands of this live instance, loaded down its chain;
        // the instance outlives every winsys object the layer makes from it
        // (devices and swapchains go before vkDestroyInstance goes down).
        unsafe { Instance::from_raw(ash::Instance::load_with(load, handle)) }
    }

    /// Whether (and how) the layer serves physical device `pd`.
    pub fn served(&self, pd: vk::PhysicalDevice) -> Option<Served> {
        if !self.usable {
            return None;
        }
        let mut cache = self.served.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .entry(pd.as_raw())
            .or_insert_with(|| self.judge(pd))
            .clone()
    }

    fn judge(&self, pd: vk::PhysicalDevice) -> Option<Served> {
        let info = match self.winsys(None).physical_device(pd) {
            Ok(i) => i,
            Err(e) => {
                debug!("not serving a physical device: {e}");
                return None;
            }
        };
        let ext = info.extensions;
        let why_not = if info.api_version < vk::API_VERSION_1_2 {
            Some("Vulkan 1.2".to_string())
        } else if !(ext.dmabuf_images() && ext.external_semaphore_fd && ext.external_fence_fd) {
            Some(ext.missing().join(", "))
        } else {
            None
        };
        if let Some(missing) = why_not {
            debug!("not serving {}: it lacks {missing}", info.name);
            return None;
        }
        // The acquire imports the image's release into the app's
        // semaphore and fence: both must take a sync_file.
        let semaphore_info = vk::PhysicalDeviceExternalSemaphoreInfo::default()
            .handle_type(vk::ExternalSemaphoreHandleTypeFlags::SYNC_FD);
        let mut semaphore = vk::ExternalSemaphoreProperties::default();
        let fence_info = vk::PhysicalDeviceExternalFenceInfo::default()
            .handle_type(vk::ExternalFenceHandleTypeFlags::SYNC_FD);
        let mut fence = vk::ExternalFenceProperties::default();
        // SAFETY: plain queries (Vulkan 1.1 core, the driver has 1.2) with
        // valid in/out structs.
        unsafe {
            self.raw.get_physical_device_external_semaphore_properties(
                pd,
                &semaphore_info,
                &mut semaphore,
            );
            self.raw
                .get_physical_device_external_fence_properties(pd, &fence_info, &mut fence);
        }
        let importable = semaphore
            .external_semaphore_features
            .contains(vk::ExternalSemaphoreFeatureFlags::IMPORTABLE)
            && fence
                .external_fence_features
                .contains(vk::ExternalFenceFeatureFlags::IMPORTABLE);
        if !importable {
            debug!(
                "not serving {}: its semaphores and fences take no sync_file",
                info.name
            );
            return None;
        }
        // SAFETY: plain queries on a physical device of this instance.
        let (families, props) = unsafe {
            (
                self.raw.get_physical_device_queue_family_properties(pd),
                self.raw.get_physical_device_properties(pd),
            )
        };
        let want = vk::QueueFlags::GRAPHICS | vk::QueueFlags::COMPUTE;
        let Some(family) = families.iter().position(|f| f.queue_flags.contains(want)) else {
            debug!(
                "not serving {}: no graphics+compute queue family",
                info.name
            );
            return None;
        };
        debug!("serving {} (queue family {family})", info.name);
        Some(Served {
            info,
            family: family as u32,
            max_extent: props.limits.max_image_dimension2_d,
        })
    }

    /// Let the driver's WSI serve `surface` from now on (winsys could not
    /// make a swapchain for it): the layer no longer answers for it.
    pub fn leave_to_driver(&self, surface: vk::SurfaceKHR) {
        let mut map = self.surfaces.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&surface.as_raw());
    }

    /// The surface formats of `surface` (one of the app's Wayland
    /// surfaces, `ws`) on the served device `pd`: the [`FORMATS`] whose
    /// opaque and alpha DRM formats a winsys swapchain can both present in
    /// there (asked of the compositor once per surface and device, like
    /// Mesa's WSI offering what the compositor takes). Where the
    /// compositor does not answer within [`QUERY_WAIT`], the two every
    /// compositor takes (`B8G8R8A8`, over `XRGB8888` / `ARGB8888`) — asked
    /// again once [`FRESH`] has passed, not at the two-call idiom's second
    /// call — and the same where it takes none of them.
    pub fn surface_formats(
        &self,
        pd: vk::PhysicalDevice,
        surface: vk::SurfaceKHR,
        ws: WaylandSurface,
        served: &Served,
    ) -> SurfaceFormats {
        let key = (surface.as_raw(), pd.as_raw());
        let lock = || self.formats.lock().unwrap_or_else(|p| p.into_inner());
        match lock().get(&key) {
            Some((known, None)) => return known.clone(),
            Some((known, Some(since))) if since.elapsed() < FRESH => return known.clone(),
            _ => {}
        }
        let started = Instant::now();
        let drm = match self.presentable(surface, ws, served) {
            Ok(drm) => drm,
            Err(e) => {
                eprintln!("winsys layer: the surface's formats: {e}; offering B8G8R8A8 alone");
                let pair: SurfaceFormats = FORMATS[..2].into();
                lock().insert(key, (pair.clone(), Some(Instant::now())));
                return pair;
            }
        };
        let both = |format: vk::Format| {
            [Alpha::Ignored, Alpha::Used]
                .into_iter()
                .all(|a| from_vk(format, a).is_some_and(|f| drm.contains(&f)))
        };
        let offered: Vec<vk::SurfaceFormatKHR> =
            FORMATS.iter().copied().filter(|f| both(f.format)).collect();
        debug!(
            "surface formats: {:?} (presentable: {}), asked in {:.1?}",
            offered.iter().map(|f| f.format).collect::<Vec<_>>(),
            drm.iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            started.elapsed()
        );
        let offered: SurfaceFormats = match offered.is_empty() {
            true => FORMATS[..2].into(),
            false => offered.into(),
        };
        lock().insert(key, (offered.clone(), None));
        offered
    }

    /// The DRM formats a winsys swapchain of `served`'s device can present
    /// in to `ws`'s compositor (its report kept for the next swapchain of
    /// `surface`).
    fn presentable(
        &self,
        surface: vk::SurfaceKHR,
        ws: WaylandSurface,
        served: &Served,
    ) -> Result<Vec<Fourcc>, String> {
        let display = NonNull::new(ws.display).ok_or("a null wl_display")?;
        let display = RawDisplayHandle::Wayland(WaylandDisplayHandle::new(display));
        // SAFETY: the app's wl_display from VkWaylandSurfaceCreateInfoKHR,
        // valid while the VkSurfaceKHR lives (the connection is dropped
        // before this returns); the app's process loads the
        // libwayland-client that made it.
        let conn =
            unsafe { winsys::wayland::connection_from_raw(display) }.map_err(|e| e.to_string())?;
        let report = winsys::wayland::probe(&conn, QUERY_WAIT).map_err(|e| e.to_string())?;
        let formats = Swapchain::formats(&self.winsys(None), &served.info, &report, forced_sync())
            .map_err(|e| e.to_string())?;
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(surface.as_raw(), (Instant::now(), report));
        Ok(formats)
    }

    /// The compositor's answer to `surface`'s formats query, taken once
    /// and where it came within [`FRESH`]: an app asks for the formats,
    /// then makes its swapchain, which need not ask the compositor again.
    pub fn fresh_report(&self, surface: vk::SurfaceKHR) -> Option<Report> {
        let taken = self
            .reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&surface.as_raw());
        taken
            .filter(|(when, _)| when.elapsed() < FRESH)
            .map(|(_, r)| r)
    }

    /// The app's Wayland surface behind `surface`, if it is one.
    pub fn wayland_surface(&self, surface: vk::SurfaceKHR) -> Option<WaylandSurface> {
        let map = self.surfaces.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&surface.as_raw()).copied()
    }
}

#[derive(Default)]
struct Registry {
    instances: RwLock<HashMap<u64, Arc<InstanceData>>>,
    physical: RwLock<HashMap<u64, Arc<InstanceData>>>,
}

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::default)
}

/// The instance data of `instance`.
pub fn data(instance: vk::Instance) -> Option<Arc<InstanceData>> {
    let map = registry()
        .instances
        .read()
        .unwrap_or_else(|p| p.into_inner());
    map.get(&instance.as_raw()).cloned()
}

/// The instance data of physical device `pd`.
pub fn of_physical(pd: vk::PhysicalDevice) -> Option<Arc<InstanceData>> {
    let map = registry()
        .physical
        .read()
        .unwrap_or_else(|p| p.into_inner());
    map.get(&pd.as_raw()).cloned()
}

/// The instance-level commands the layer provides.
pub fn intercept(name: &CStr) -> Option<vk::PFN_vkVoidFunction> {
    Some(match name.to_bytes() {
        b"vkGetInstanceProcAddr" => entry!(crate::get_instance_proc_addr),
        b"vkCreateInstance" => entry!(create_instance),
        b"vkDestroyInstance" => entry!(destroy_instance),
        b"vkEnumeratePhysicalDevices" => entry!(enumerate_physical_devices),
        b"vkCreateWaylandSurfaceKHR" => entry!(create_wayland_surface),
        b"vkDestroySurfaceKHR" => entry!(destroy_surface),
        b"vkGetPhysicalDeviceWaylandPresentationSupportKHR" => entry!(wayland_presentation_support),
        b"vkGetPhysicalDeviceSurfaceSupportKHR" => entry!(surface_support),
        b"vkGetPhysicalDeviceSurfaceCapabilitiesKHR" => entry!(surface_capabilities),
        b"vkGetPhysicalDeviceSurfaceCapabilities2KHR" => entry!(surface_capabilities2),
        b"vkGetPhysicalDeviceSurfaceFormatsKHR" => entry!(surface_formats),
        b"vkGetPhysicalDeviceSurfaceFormats2KHR" => entry!(surface_formats2),
        b"vkGetPhysicalDeviceSurfacePresentModesKHR" => entry!(surface_present_modes),
        b"vkGetPhysicalDevicePresentRectanglesKHR" => entry!(present_rectangles),
        _ => return None,
    })
}

/// Fetch a command of the next layer.
///
/// # Safety
///
/// `T` must be the command's function-pointer type.
unsafe fn next<T>(data: &InstanceData, name: &CStr) -> Option<T> {
    // SAFETY: the next layer's entry point with its instance.
    let f = unsafe { (data.next_gipa)(data.handle, name.as_ptr()) }?;
    // SAFETY: the caller names the command's type.
    Some(unsafe { std::mem::transmute_copy::<unsafe extern "system" fn(), T>(&f) })
}

unsafe extern "system" fn create_instance(
    info: *const vk::InstanceCreateInfo<'_>,
    allocator: *const vk::AllocationCallbacks<'_>,
    out: *mut vk::Instance,
) -> vk::Result {
    guard(vk::Result::ERROR_INITIALIZATION_FAILED, || {
        // SAFETY: the loader's valid create info and output pointer.
        unsafe { create_instance_inner(info, allocator, out) }
    })
}

unsafe fn create_instance_inner(
    info: *const vk::InstanceCreateInfo<'_>,
    allocator: *const vk::AllocationCallbacks<'_>,
    out: *mut vk::Instance,
) -> vk::Result {
    // SAFETY: a valid create info (the loader's contract).
    let app_info = unsafe { &*info };
    // SAFETY: a valid pNext chain.
    let Some(link_info) = (unsafe {
        loader::find_in_chain::<loader::LayerInstanceCreateInfo>(
            app_info.p_next,
            loader::LOADER_INSTANCE_CREATE_INFO,
            loader::LAYER_LINK_INFO,
        )
    }) else {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    };
    // SAFETY: the loader's link info for this layer; advancing it hands the
    // next link to the next layer, as the loader's interface prescribes.
    let (next_gipa, next_link) = unsafe {
        let link = (*link_info).u.p_layer_info;
        if link.is_null() {
            return vk::Result::ERROR_INITIALIZATION_FAILED;
        }
        (*link_info).u.p_layer_info = (*link).p_next;
        ((*link).pfn_next_get_instance_proc_addr, (*link).p_next)
    };
    // SAFETY: the global command, from the next layer.
    let Some(create) = (unsafe { next_gipa(vk::Instance::null(), c"vkCreateInstance".as_ptr()) })
    else {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    };
    // SAFETY: vkCreateInstance's type.
    let create: vk::PFN_vkCreateInstance = unsafe { std::mem::transmute(create) };

    // What winsys needs: Vulkan 1.2 at the driver, and the capability
    // extensions the loader's terminators dispatch by.
    // SAFETY: the app's arrays, valid for the call.
    let mut names: Vec<*const c_char> = unsafe {
        slice(
            app_info.pp_enabled_extension_names,
            app_info.enabled_extension_count,
        )
        .to_vec()
    };
    for want in INSTANCE_EXTENSIONS {
        // SAFETY: the app's valid C strings.
        if !names.iter().any(|&n| unsafe { CStr::from_ptr(n) } == want) {
            names.push(want.as_ptr());
        }
    }
    // SAFETY: the app's valid application info, if any.
    let mut app = match unsafe { app_info.p_application_info.as_ref() } {
        Some(a) => *a,
        None => vk::ApplicationInfo::default(),
    };
    app.api_version = app.api_version.max(DRIVER_API_VERSION);
    let mut ours = *app_info;
    ours.p_application_info = &app;
    ours.enabled_extension_count = names.len() as u32;
    ours.pp_enabled_extension_names = names.as_ptr();
    // SAFETY: valid create info; the chain's link was advanced.
    let mut result = unsafe { create(&ours, allocator, out) };
    let mut usable = result == vk::Result::SUCCESS;
    if !usable {
        debug!("vkCreateInstance with Vulkan 1.2 and {INSTANCE_EXTENSIONS:?} failed ({result}); serving nothing");
        // SAFETY: the app's own create info, the chain's link put back
        // where the next layer found it (it advanced it for the layer
        // below on the first call).
        result = unsafe {
            (*link_info).u.p_layer_info = next_link;
            create(info, allocator, out)
        };
        if result != vk::Result::SUCCESS {
            return result;
        }
    }
    // SAFETY: the output of a successful create.
    let handle = unsafe { *out };
    let load = |name: &CStr| -> *const c_void {
        // SAFETY: the next layer's entry point with the new instance.
        match unsafe { next_gipa(handle, name.as_ptr()) } {
            Some(f) => f as *const c_void,
            None => std::ptr::null(),
        }
    };
    // SAFETY: commands of the live instance, loaded down the chain.
    let raw = unsafe { ash::Instance::load_with(load, handle) };
    let static_fn = ash::StaticFn {
        get_instance_proc_addr: next_gipa,
    };
    // SAFETY: an entry whose get_instance_proc_addr is the next layer's.
    let entry = unsafe { ash::Entry::from_static_fn(static_fn) };
    let surface_fn = ash::khr::surface::Instance::new(&entry, &raw);
    let wayland_fn = ash::khr::wayland_surface::Instance::new(&entry, &raw);
    // SAFETY: a plain query on the live instance.
    let physical = unsafe { raw.enumerate_physical_devices() }.unwrap_or_default();
    if physical.is_empty() {
        usable = false;
    }
    let data = Arc::new(InstanceData {
        handle,
        next_gipa,
        raw,
        surface_fn,
        wayland_fn,
        usable,
        surfaces: Mutex::new(HashMap::new()),
        served: Mutex::new(HashMap::new()),
        formats: Mutex::new(HashMap::new()),
        reports: Mutex::new(HashMap::new()),
    });
    let r = registry();
    {
        let mut map = r.physical.write().unwrap_or_else(|p| p.into_inner());
        for pd in physical {
            map.insert(pd.as_raw(), data.clone());
        }
    }
    r.instances
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(handle.as_raw(), data);
    vk::Result::SUCCESS
}

unsafe extern "system" fn destroy_instance(
    instance: vk::Instance,
    allocator: *const vk::AllocationCallbacks<'_>,
) {
    guard((), || {
        let r = registry();
        let data = r
            .instances
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&instance.as_raw());
        let Some(data) = data else { return };
        r.physical
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, d| !Arc::ptr_eq(d, &data));
        // SAFETY: the app destroys its instance; everything of it is gone.
        unsafe { (data.raw.fp_v1_0().destroy_instance)(instance, allocator) };
    })
}

unsafe extern "system" fn enumerate_physical_devices(
    instance: vk::Instance,
    count: *mut u32,
    out: *mut vk::PhysicalDevice,
) -> vk::Result {
    guard(vk::Result::ERROR_INITIALIZATION_FAILED, || {
        let Some(data) = data(instance) else {
            return vk::Result::ERROR_INITIALIZATION_FAILED;
        };
        // SAFETY: the app's valid arguments, passed on.
        let result =
            unsafe { (data.raw.fp_v1_0().enumerate_physical_devices)(instance, count, out) };
        if !out.is_null() && matches!(result, vk::Result::SUCCESS | vk::Result::INCOMPLETE) {
            // SAFETY: the driver filled `*count` handles.
            let got = unsafe { slice(out, *count) };
            let mut map = registry()
                .physical
                .write()
                .unwrap_or_else(|p| p.into_inner());
            for pd in got {
                map.entry(pd.as_raw()).or_insert_with(|| data.clone());
            }
        }
        result
    })
}

/// `std::slice::from_raw_parts`, empty for null or zero.
///
/// # Safety
///
/// Non-null `ptr` must point at `len` valid elements.
pub(crate) unsafe fn slice<'a, T>(ptr: *const T, len: u32) -> &'a [T] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts(ptr, len as usize) }
    }
}

/// The two-call idiom: copy `items` into `out` (or give the count).
///
/// # Safety
///
/// `count` must be valid; `out`, if non-null, must have `*count` slots.
pub(crate) unsafe fn fill<T: Copy>(items: &[T], count: *mut u32, out: *mut T) -> vk::Result {
    // SAFETY: the caller's contract.
    unsafe {
        if out.is_null() {
            *count = items.len() as u32;
            return vk::Result::SUCCESS;
        }
        let n = (*count as usize).min(items.len());
        std::ptr::copy_nonoverlapping(items.as_ptr(), out, n);
        *count = n as u32;
        if n < items.len() {
            vk::Result::INCOMPLETE
        } else {
            vk::Result::SUCCESS
        }
    }
}

unsafe extern "system" fn create_wayland_surface(
    instance: vk::Instance,
    info: *const vk::WaylandSurfaceCreateInfoKHR<'_>,
    allocator: *const vk::AllocationCallbacks<'_>,
    out: *mut vk::SurfaceKHR,
) -> vk::Result {
    guard(vk::Result::ERROR_INITIALIZATION_FAILED, || {
        let Some(data) = data(instance) else {
            return vk::Result::ERROR_INITIALIZATION_FAILED;
        };
        // The driver's surface too, so that a device the layer does not
        // serve presents with the driver's WSI.
        // SAFETY: the app's valid arguments, passed on.
        let result = unsafe {
            (data.wayland_fn.fp().create_wayland_surface_khr)(instance, info, allocator, out)
        };
        if result != vk::Result::SUCCESS {
            return result;
        }
        // SAFETY: valid create info and the surface just made.
        let (surface, handle) = unsafe {
            (
                WaylandSurface {
                    display: (*info).display,
                    surface: (*info).surface,
                },
                *out,
            )
        };
        if data.usable {
            data.surfaces
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(handle.as_raw(), surface);
        }
        vk::Result::SUCCESS
    })
}

unsafe extern "system" fn destroy_surface(
    instance: vk::Instance,
    surface: vk::SurfaceKHR,
    allocator: *const vk::AllocationCallbacks<'_>,
) {
    guard((), || {
        let Some(data) = data(instance) else { return };
        data.surfaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&surface.as_raw());
        data.formats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(s, _), _| *s != surface.as_raw());
        data.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&surface.as_raw());
        // SAFETY: the app's valid arguments, passed on.
        unsafe { (data.surface_fn.fp().destroy_surface_khr)(instance, surface, allocator) };
    })
}

/// The instance of `pd` and, where the layer serves `pd` and `surface` is
/// one of the app's Wayland surfaces, what the layer serves it with.
fn ours(
    pd: vk::PhysicalDevice,
    surface: vk::SurfaceKHR,
) -> (Option<Arc<InstanceData>>, Option<Served>) {
    let Some(data) = of_physical(pd) else {
        return (None, None);
    };
    let served = match data.wayland_surface(surface) {
        Some(_) => data.served(pd),
        None => None,
    };
    (Some(data), served)
}

unsafe extern "system" fn wayland_presentation_support(
    pd: vk::PhysicalDevice,
    family: u32,
    display: *mut c_void,
) -> vk::Bool32 {
    guard(vk::FALSE, || {
        let Some(data) = of_physical(pd) else {
            return vk::FALSE;
        };
        match data.served(pd) {
            Some(s) => (family == s.family).into(),
            // SAFETY: the app's valid arguments, passed on.
            None => unsafe {
                (data
                    .wayland_fn
                    .fp()
                    .get_physical_device_wayland_presentation_support_khr)(
                    pd,
                    family,
                    display.cast(),
                )
            },
        }
    })
}

unsafe extern "system" fn surface_support(
    pd: vk::PhysicalDevice,
    family: u32,
    surface: vk::SurfaceKHR,
    out: *mut vk::Bool32,
) -> vk::Result {
    guard(vk::Result::ERROR_SURFACE_LOST_KHR, || {
        match ours(pd, surface) {
            (Some(_), Some(s)) => {
                // SAFETY: a valid output pointer.
                unsafe { *out = (family == s.family).into() };
                vk::Result::SUCCESS
            }
            // SAFETY: the app's valid arguments, passed on.
            (Some(d), None) => unsafe {
                (d.surface_fn.fp().get_physical_device_surface_support_khr)(
                    pd, family, surface, out,
                )
            },
            (None, _) => vk::Result::ERROR_SURFACE_LOST_KHR,
        }
    })
}

/// The least number of images a swapchain gets: what winsys's own
/// swapchain found the least for full rate (one shown, one queued, one
/// being rendered, one whose release is pending).
pub const MIN_IMAGES: u32 = 4;
/// The most.
pub const MAX_IMAGES: u32 = 8;

/// The usages a swapchain image may have: what every dma-buf image winsys
/// makes for presentation supports.
pub const USAGE: vk::ImageUsageFlags = vk::ImageUsageFlags::from_raw(
    vk::ImageUsageFlags::COLOR_ATTACHMENT.as_raw()
        | vk::ImageUsageFlags::TRANSFER_SRC.as_raw()
        | vk::ImageUsageFlags::TRANSFER_DST.as_raw()
        | vk::ImageUsageFlags::SAMPLED.as_raw(),
);

/// The composite alpha modes of the layer's surfaces (Mesa's Wayland WSI
/// offers the same): opaque (`XRGB8888` buffers) and premultiplied
/// (`ARGB8888`, the alpha wl_surface blends by).
pub const COMPOSITE_ALPHA: vk::CompositeAlphaFlagsKHR = vk::CompositeAlphaFlagsKHR::from_raw(
    vk::CompositeAlphaFlagsKHR::OPAQUE.as_raw()
        | vk::CompositeAlphaFlagsKHR::PRE_MULTIPLIED.as_raw(),
);

fn capabilities(s: &Served) -> vk::SurfaceCapabilitiesKHR {
    vk::SurfaceCapabilitiesKHR {
        min_image_count: MIN_IMAGES,
        max_image_count: MAX_IMAGES,
        // Wayland: the swapchain's size is the window's.
        current_extent: vk::Extent2D {
            width: u32::MAX,
            height: u32::MAX,
        },
        min_image_extent: vk::Extent2D {
            width: 1,
            height: 1,
        },
        max_image_extent: vk::Extent2D {
            width: s.max_extent,
            height: s.max_extent,
        },
        max_image_array_layers: 1,
        supported_transforms: vk::SurfaceTransformFlagsKHR::IDENTITY,
        current_transform: vk::SurfaceTransformFlagsKHR::IDENTITY,
        supported_composite_alpha: COMPOSITE_ALPHA,
        supported_usage_flags: USAGE,
    }
}

unsafe extern "system" fn surface_capabilities(
    pd: vk::PhysicalDevice,
    surface: vk::SurfaceKHR,
    out: *mut vk::SurfaceCapabilitiesKHR,
) -> vk::Result {
    guard(vk::Result::ERROR_SURFACE_LOST_KHR, || {
        match ours(pd, surface) {
            (Some(_), Some(s)) => {
                // SAFETY: a valid output pointer.
                unsafe { *out = capabilities(&s) };
                vk::Result::SUCCESS
            }
            // SAFETY: the app's valid arguments, passed on.
            (Some(d), None) => unsafe {
                (d.surface_fn
                    .fp()
                    .get_physical_device_surface_capabilities_khr)(pd, surface, out)
            },
            (None, _) => vk::Result::ERROR_SURFACE_LOST_KHR,
        }
    })
}

unsafe extern "system" fn surface_capabilities2(
    pd: vk::PhysicalDevice,
    info: *const vk::PhysicalDeviceSurfaceInfo2KHR<'_>,
    out: *mut vk::SurfaceCapabilities2KHR<'_>,
) -> vk::Result {
    guard(vk::Result::ERROR_SURFACE_LOST_KHR, || {
        // SAFETY: valid input struct.
        let surface = unsafe { (*info).surface };
        match ours(pd, surface) {
            (Some(_), Some(s)) => {
                // SAFETY: valid input and output structs and pNext chains.
                unsafe {
                    (*out).surface_capabilities = capabilities(&s);
                    let mode = asked_present_mode((*info).p_next);
                    fill_capability_chain((*out).p_next, mode, &s);
                }
                vk::Result::SUCCESS
            }
            (Some(d), None) => {
                // SAFETY: the instance's command (VK_KHR_get_surface_capabilities2).
                let Some(f) = (unsafe {
                    next::<vk::PFN_vkGetPhysicalDeviceSurfaceCapabilities2KHR>(
                        &d,
                        c"vkGetPhysicalDeviceSurfaceCapabilities2KHR",
                    )
                }) else {
                    return vk::Result::ERROR_EXTENSION_NOT_PRESENT;
                };
                // SAFETY: the app's valid arguments, passed on.
                unsafe { f(pd, info, out) }
            }
            (None, _) => vk::Result::ERROR_SURFACE_LOST_KHR,
        }
    })
}

/// The present mode a `VkPhysicalDeviceSurfaceInfo2KHR` chain asks about
/// (`VkSurfacePresentModeEXT`, VK_EXT_surface_maintenance1), if any.
///
/// # Safety
///
/// `next` must be a valid input pNext chain.
unsafe fn asked_present_mode(next: *const c_void) -> Option<vk::PresentModeKHR> {
    // SAFETY: a valid chain (the caller's contract), the struct its sType
    // names.
    let mode = unsafe {
        loader::chained::<vk::SurfacePresentModeEXT<'_>>(
            next,
            vk::StructureType::SURFACE_PRESENT_MODE_EXT,
        )
    };
    mode.map(|m| m.present_mode)
}

/// Answer the extension structs of a `VkSurfaceCapabilities2KHR` chain the
/// layer knows: not protected, no shared presentable image, each present
/// mode compatible with itself alone (`mode`: the one asked about), no
/// scaling.
///
/// # Safety
///
/// `next` must be a valid output pNext chain.
unsafe fn fill_capability_chain(
    mut next: *mut c_void,
    mode: Option<vk::PresentModeKHR>,
    served: &Served,
) {
    while !next.is_null() {
        // SAFETY: every chained struct starts with sType, pNext.
        let header = unsafe { &mut *(next as *mut vk::BaseOutStructure<'_>) };
        match header.s_type {
            vk::StructureType::SURFACE_PROTECTED_CAPABILITIES_KHR => {
                // SAFETY: the struct its sType names.
                let p = unsafe { &mut *(next as *mut vk::SurfaceProtectedCapabilitiesKHR<'_>) };
                p.supports_protected = vk::FALSE;
            }
            vk::StructureType::SHARED_PRESENT_SURFACE_CAPABILITIES_KHR => {
                // SAFETY: as above.
                let p = unsafe { &mut *(next as *mut vk::SharedPresentSurfaceCapabilitiesKHR<'_>) };
                p.shared_present_supported_usage_flags = vk::ImageUsageFlags::empty();
            }
            vk::StructureType::SURFACE_PRESENT_MODE_COMPATIBILITY_EXT => {
                // SAFETY: as above; the app's array holds present_mode_count.
                let p = unsafe { &mut *(next as *mut vk::SurfacePresentModeCompatibilityEXT<'_>) };
                let modes: &[vk::PresentModeKHR] = match mode {
                    Some(m) if PRESENT_MODES.contains(&m) => &[m][..],
                    _ => &[],
                };
                // SAFETY: the two-call idiom on the app's array.
                unsafe {
                    if p.p_present_modes.is_null() {
                        p.present_mode_count = modes.len() as u32;
                    } else {
                        let n = (p.present_mode_count as usize).min(modes.len());
                        std::ptr::copy_nonoverlapping(modes.as_ptr(), p.p_present_modes, n);
                        p.present_mode_count = n as u32;
                    }
                }
            }
            vk::StructureType::SURFACE_PRESENT_SCALING_CAPABILITIES_EXT => {
                // SAFETY: as above.
                let p =
                    unsafe { &mut *(next as *mut vk::SurfacePresentScalingCapabilitiesEXT<'_>) };
                p.supported_present_scaling = vk::PresentScalingFlagsEXT::empty();
                p.supported_present_gravity_x = vk::PresentGravityFlagsEXT::empty();
                p.supported_present_gravity_y = vk::PresentGravityFlagsEXT::empty();
                p.min_scaled_image_extent = vk::Extent2D {
                    width: 1,
                    height: 1,
                };
                p.max_scaled_image_extent = vk::Extent2D {
                    width: served.max_extent,
                    height: served.max_extent,
                };
            }
            _ => {}
        }
        next = header.p_next.cast();
    }
}

/// The formats the layer's swapchains may have, in the order offered:
/// those of Mesa's Wayland WSI that winsys maps to DRM formats with an
/// opaque (`X`) and an alpha (`A`) twin — `B8G8R8A8` (DRM `XRGB8888` /
/// `ARGB8888`, what every compositor takes) first, sRGB before UNORM as in
/// Mesa's WSI, then `R8G8B8A8` (`XBGR8888`), the 10-bit formats
/// (`XRGB2101010`, `XBGR2101010`), 16 bits a channel (`XBGR16161616F`,
/// `XBGR16161616`),
/// `R5G6B5` (`RGB565`, which has no alpha to blend: opaque either way) and
/// `R5G5B5A1` (`RGBX5551` / `RGBA5551`). A
/// surface offers those its compositor and the device allow
/// ([`InstanceData::surface_formats`]). With `*_SRGB` the GPU encodes the
/// app's linear colours; the others hold the app's values as they are. A
/// Wayland surface without a colour description holds sRGB content either
/// way.
pub const FORMATS: [vk::SurfaceFormatKHR; 10] = {
    const fn srgb(format: vk::Format) -> vk::SurfaceFormatKHR {
        vk::SurfaceFormatKHR {
            format,
            color_space: vk::ColorSpaceKHR::SRGB_NONLINEAR,
        }
    }
    [
        srgb(vk::Format::B8G8R8A8_SRGB),
        srgb(vk::Format::B8G8R8A8_UNORM),
        srgb(vk::Format::R8G8B8A8_SRGB),
        srgb(vk::Format::R8G8B8A8_UNORM),
        srgb(vk::Format::A2R10G10B10_UNORM_PACK32),
        srgb(vk::Format::A2B10G10R10_UNORM_PACK32),
        srgb(vk::Format::R16G16B16A16_SFLOAT),
        srgb(vk::Format::R16G16B16A16_UNORM),
        srgb(vk::Format::R5G6B5_UNORM_PACK16),
        srgb(vk::Format::R5G5B5A1_UNORM_PACK16),
    ]
};

/// How long a surface query waits for the compositor's formats.
pub const QUERY_WAIT: Duration = Duration::from_secs(5);

/// How long the compositor's answer to a formats query stands in for the
/// probe of the swapchain made next, and how long the formats offered for
/// want of an answer stand before the compositor is asked again.
pub const FRESH: Duration = Duration::from_secs(2);

unsafe extern "system" fn surface_formats(
    pd: vk::PhysicalDevice,
    surface: vk::SurfaceKHR,
    count: *mut u32,
    out: *mut vk::SurfaceFormatKHR,
) -> vk::Result {
    guard(vk::Result::ERROR_SURFACE_LOST_KHR, || {
        match ours(pd, surface) {
            (Some(d), Some(served)) => {
                let Some(ws) = d.wayland_surface(surface) else {
                    return vk::Result::ERROR_SURFACE_LOST_KHR;
                };
                let formats = d.surface_formats(pd, surface, ws, &served);
                // SAFETY: the app's valid count and array.
                unsafe { fill(&formats, count, out) }
            }
            // SAFETY: the app's valid arguments, passed on.
            (Some(d), None) => unsafe {
                (d.surface_fn.fp().get_physical_device_surface_formats_khr)(pd, surface, count, out)
            },
            (None, _) => vk::Result::ERROR_SURFACE_LOST_KHR,
        }
    })
}

unsafe extern "system" fn surface_formats2(
    pd: vk::PhysicalDevice,
    info: *const vk::PhysicalDeviceSurfaceInfo2KHR<'_>,
    count: *mut u32,
    out: *mut vk::SurfaceFormat2KHR<'_>,
) -> vk::Result {
    guard(vk::Result::ERROR_SURFACE_LOST_KHR, || {
        // SAFETY: valid input struct.
        let surface = unsafe { (*info).surface };
        match ours(pd, surface) {
            (Some(d), Some(served)) => {
                let Some(ws) = d.wayland_surface(surface) else {
                    return vk::Result::ERROR_SURFACE_LOST_KHR;
                };
                let formats = d.surface_formats(pd, surface, ws, &served);
                // SAFETY: the app's valid count and array of sTyped structs.
                unsafe {
                    if out.is_null() {
                        *count = formats.len() as u32;
                        return vk::Result::SUCCESS;
                    }
                    let n = (*count as usize).min(formats.len());
                    for (i, f) in formats.iter().take(n).enumerate() {
                        (*out.add(i)).surface_format = *f;
                    }
                    *count = n as u32;
                    if n < formats.len() {
                        vk::Result::INCOMPLETE
                    } else {
                        vk::Result::SUCCESS
                    }
                }
            }
            (Some(d), None) => {
                // SAFETY: the instance's command (VK_KHR_get_surface_capabilities2).
                let Some(f) = (unsafe {
                    next::<vk::PFN_vkGetPhysicalDeviceSurfaceFormats2KHR>(
                        &d,
                        c"vkGetPhysicalDeviceSurfaceFormats2KHR",
                    )
                }) else {
                    return vk::Result::ERROR_EXTENSION_NOT_PRESENT;
                };
                // SAFETY: the app's valid arguments, passed on.
                unsafe { f(pd, info, count, out) }
            }
            (None, _) => vk::Result::ERROR_SURFACE_LOST_KHR,
        }
    })
}

/// The present modes: winsys's FIFO (wp_fifo_v1 or frame callbacks),
/// MAILBOX, and IMMEDIATE (MAILBOX with the tearing hint where offered).
pub const PRESENT_MODES: [vk::PresentModeKHR; 3] = [
    vk::PresentModeKHR::FIFO,
    vk::PresentModeKHR::MAILBOX,
    vk::PresentModeKHR::IMMEDIATE,
];

unsafe extern "system" fn surface_present_modes(
    pd: vk::PhysicalDevice,
    surface: vk::SurfaceKHR,
    count: *mut u32,
    out: *mut vk::PresentModeKHR,
) -> vk::Result {
    guard(vk::Result::ERROR_SURFACE_LOST_KHR, || {
        match ours(pd, surface) {
            // SAFETY: the app's valid count and array.
            (Some(_), Some(_)) => unsafe { fill(&PRESENT_MODES, count, out) },
            // SAFETY: the app's valid arguments, passed on.
            (Some(d), None) => unsafe {
                (d.surface_fn
                    .fp()
                    .get_physical_device_surface_present_modes_khr)(
                    pd, surface, count, out
                )
            },
            (None, _) => vk::Result::ERROR_SURFACE_LOST_KHR,
        }
    })
}

unsafe extern "system" fn present_rectangles(
    pd: vk::PhysicalDevice,
    surface: vk::SurfaceKHR,
    count: *mut u32,
    out: *mut vk::Rect2D,
) -> vk::Result {
    guard(vk::Result::ERROR_SURFACE_LOST_KHR, || {
        match ours(pd, surface) {
            (Some(_), Some(s)) => {
                let whole = [vk::Rect2D {
                    offset: vk::Offset2D::default(),
                    extent: vk::Extent2D {
                        width: s.max_extent,
                        height: s.max_extent,
                    },
                }];
                // SAFETY: the app's valid count and array.
                unsafe { fill(&whole, count, out) }
            }
            (Some(d), None) => {
                // SAFETY: the instance's command (VK_KHR_swapchain, 1.1).
                let Some(f) = (unsafe {
                    next::<vk::PFN_vkGetPhysicalDevicePresentRectanglesKHR>(
                        &d,
                        c"vkGetPhysicalDevicePresentRectanglesKHR",
                    )
                }) else {
                    return vk::Result::ERROR_EXTENSION_NOT_PRESENT;
                };
                // SAFETY: the app's valid arguments, passed on.
                unsafe { f(pd, surface, count, out) }
            }
            (None, _) => vk::Result::ERROR_SURFACE_LOST_KHR,
        }
    })
}
