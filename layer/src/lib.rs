//! `VK_LAYER_WINSYS_wsi`: a Vulkan layer that presents every app's
//! `VK_KHR_swapchain` on Wayland through winsys's own swapchain
//! ([`winsys::wayland::swapchain::Swapchain`]) — drm-syncobj timelines,
//! explicit sync, implicit sync or zero-copy wl_shm, whichever the
//! compositor offers best — with no change to the app.
//!
//! The layer sits between the app and the driver:
//!
//! - **instance** ([`instance`]): it provides `VK_KHR_surface` and
//!   `VK_KHR_wayland_surface` for Wayland surfaces (support, capabilities,
//!   formats, present modes, their `2` forms); a Wayland surface is still
//!   created in the driver too, so that a device the layer cannot serve
//!   falls back to the driver's WSI. Other surfaces and every other call
//!   go to the driver untouched.
//! - **device** ([`device`]): it enables what winsys needs from the driver
//!   (external memory and dma-buf, DRM format modifiers, SYNC_FD
//!   semaphores and fences) where the app did not, and refuses to serve —
//!   getting out of the way of the driver's WSI — where the driver lacks
//!   them.
//! - **swapchain** ([`swapchain`]): `vkCreateSwapchainKHR` (with
//!   `oldSwapchain` retirement), images, `vkAcquireNextImageKHR` (the
//!   compositor's release imported into the app's semaphore and fence),
//!   `vkQueuePresentKHR` (the app's semaphores waited for on the GPU, in
//!   a submission on the present queue, then the commit); sRGB and UNORM
//!   images; at least `minImageCount` images (a MAILBOX or IMMEDIATE
//!   swapchain over explicit sync gets at least six:
//!   [`winsys::wayland::swapchain::MAILBOX_EXPLICIT_IMAGES`]);
//!   `VK_KHR_present_id` / `VK_KHR_present_wait` and
//!   `VK_EXT_swapchain_maintenance1` (present fences, images released
//!   unpresented), provided by the layer where the driver lacks them.
//!
//! # Use
//!
//! ```text
//! winsys layer install                 # writes the implicit-layer manifest
//! WINSYS_LAYER=1 vkcube --wsi wayland  # any Vulkan app
//! ```
//!
//! or, without installing, with the explicit manifest beside the library:
//! `VK_ADD_LAYER_PATH=DIR VK_INSTANCE_LAYERS=VK_LAYER_WINSYS_wsi app`.
//!
//! Environment: `WINSYS_LAYER_REPORT=FILE` appends one JSON line per
//! swapchain created and destroyed (sync mode, buffer path, size, frames);
//! `WINSYS_LAYER_DEBUG=1` prints the layer's decisions to stderr.

#![warn(missing_docs)]
// The library is named as the loader expects (libVkLayer_*.so).
#![allow(non_snake_case)]

use std::ffi::{c_char, CStr};

use ash::vk;

pub mod device;
pub mod instance;
pub mod loader;
pub mod report;
pub mod swapchain;

/// The layer's name, as the manifest and `VK_INSTANCE_LAYERS` give it.
pub const LAYER_NAME: &CStr = c"VK_LAYER_WINSYS_wsi";

/// Print a decision of the layer to stderr when `WINSYS_LAYER_DEBUG=1`.
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::debug_enabled() {
            eprintln!("winsys layer: {}", format_args!($($arg)*));
        }
    };
}
pub(crate) use debug;

pub(crate) fn debug_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("WINSYS_LAYER_DEBUG").is_some_and(|v| v == "1"))
}

/// Run `f`, turning a panic into `fallback`: no unwind crosses into C.
pub(crate) fn guard<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => {
            eprintln!("winsys layer: internal error (panic); the call fails");
            fallback
        }
    }
}

/// Cast one of our entry points to the loader's void-function type.
macro_rules! entry {
    ($f:expr) => {
        // SAFETY: the loader casts it back to the command's own type,
        // which is `$f`'s.
        Some(unsafe {
            std::mem::transmute::<*const (), unsafe extern "system" fn()>($f as *const ())
        })
    };
}
pub(crate) use entry;

/// The loader's entry into the layer (interface version 2).
///
/// # Safety
///
/// Called by the Vulkan loader with a valid `VkNegotiateLayerInterface`.
#[no_mangle]
pub unsafe extern "system" fn vkNegotiateLoaderLayerInterfaceVersion(
    info: *mut loader::NegotiateLayerInterface,
) -> vk::Result {
    // SAFETY: the loader passes a valid struct (null is refused).
    let Some(info) = (unsafe { info.as_mut() }) else {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    };
    if info.s_type != loader::LAYER_NEGOTIATE_INTERFACE_STRUCT
        || info.loader_layer_interface_version < loader::INTERFACE_VERSION
    {
        return vk::Result::ERROR_INITIALIZATION_FAILED;
    }
    info.loader_layer_interface_version = loader::INTERFACE_VERSION;
    info.pfn_get_instance_proc_addr = Some(get_instance_proc_addr);
    info.pfn_get_device_proc_addr = Some(get_device_proc_addr);
    info.pfn_get_physical_device_proc_addr = None;
    vk::Result::SUCCESS
}

/// The layer's `vkGetInstanceProcAddr`: its own instance-level commands
/// and the device-level ones it provides; the next layer's otherwise.
///
/// # Safety
///
/// Called by the loader (or a layer above) with a valid name and an
/// instance of this chain or null.
pub unsafe extern "system" fn get_instance_proc_addr(
    instance: vk::Instance,
    name: *const c_char,
) -> vk::PFN_vkVoidFunction {
    if name.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated command name (the loader's contract).
    let name = unsafe { CStr::from_ptr(name) };
    if let Some(f) = instance::intercept(name).or_else(|| device::instance_intercept(name)) {
        return f;
    }
    if let Some(f) = device::intercept(name) {
        return f;
    }
    let data = instance::data(instance)?;
    // SAFETY: the next layer's entry point with our instance.
    unsafe { (data.next_gipa)(instance, name.as_ptr()) }
}

/// The layer's `vkGetDeviceProcAddr`: the swapchain commands where the
/// layer serves the device, the next layer's otherwise.
///
/// # Safety
///
/// Called by the loader (or a layer above) with a valid name and a device
/// of this chain.
pub unsafe extern "system" fn get_device_proc_addr(
    device: vk::Device,
    name: *const c_char,
) -> vk::PFN_vkVoidFunction {
    if name.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated command name (the loader's contract).
    let name = unsafe { CStr::from_ptr(name) };
    let data = device::data(device)?;
    if device::WRAPPED.contains(&name) {
        // SAFETY: the next layer's entry point with our device.
        let theirs = unsafe { (data.next_gdpa)(device, name.as_ptr()) };
        return match data.serves() && theirs.is_some() {
            true => device::intercept(name).flatten(),
            false => theirs,
        };
    }
    if data.serves() || device::ALWAYS.contains(&name) {
        if let Some(f) = device::intercept(name) {
            return f;
        }
    }
    // SAFETY: the next layer's entry point with our device.
    unsafe { (data.next_gdpa)(device, name.as_ptr()) }
}
