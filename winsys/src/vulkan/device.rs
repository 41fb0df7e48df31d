//! [`Instance`] and [`Device`]: Vulkan opened for dma-buf interop.
//!
//! A [`Device`] is opened with every interop extension the driver has
//! (external memory fd, dma-buf, DRM format modifiers, external semaphore
//! and fence fds, the FOREIGN queue family, DRM node properties) and keeps
//! an [`Extensions`] report; an operation that needs a missing one fails
//! with [`Error::MissingExtensions`] naming it. Vulkan 1.2 is required.

use std::collections::HashMap;
use std::ffi::{c_void, CStr};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use ash::{ext, khr, vk};

use super::format::to_vk;
use super::image::ModifierInfo;
use super::{Error, Result};
use crate::format::Fourcc;

/// Name of the environment variable that, set to `1`, makes every
/// [`Device`] behave as if the driver had no SYNC_FD semaphores or fences,
/// so the CPU-wait fallback of the [`bridge`](super::bridge) can be tested
/// on drivers that have them.
pub const DISABLE_SYNC_FD_ENV: &str = "WINSYS_NO_VK_SYNC_FD";

const VALIDATION_LAYER: &CStr = c"VK_LAYER_KHRONOS_validation";

/// The interop extensions a device has (`true`) or lacks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extensions {
    /// `VK_KHR_external_memory_fd`.
    pub external_memory_fd: bool,
    /// `VK_EXT_external_memory_dma_buf`.
    pub external_memory_dma_buf: bool,
    /// `VK_EXT_image_drm_format_modifier`.
    pub image_drm_format_modifier: bool,
    /// `VK_KHR_external_semaphore_fd`.
    pub external_semaphore_fd: bool,
    /// `VK_KHR_external_fence_fd`.
    pub external_fence_fd: bool,
    /// `VK_EXT_queue_family_foreign`.
    pub queue_family_foreign: bool,
    /// `VK_EXT_physical_device_drm`.
    pub physical_device_drm: bool,
}

impl Extensions {
    fn table(&mut self) -> [(&'static CStr, &mut bool); 7] {
        [
            (khr::external_memory_fd::NAME, &mut self.external_memory_fd),
            (
                ext::external_memory_dma_buf::NAME,
                &mut self.external_memory_dma_buf,
            ),
            (
                ext::image_drm_format_modifier::NAME,
                &mut self.image_drm_format_modifier,
            ),
            (
                khr::external_semaphore_fd::NAME,
                &mut self.external_semaphore_fd,
            ),
            (khr::external_fence_fd::NAME, &mut self.external_fence_fd),
            (
                ext::queue_family_foreign::NAME,
                &mut self.queue_family_foreign,
            ),
            (
                ext::physical_device_drm::NAME,
                &mut self.physical_device_drm,
            ),
        ]
    }

    fn from_properties(props: &[vk::ExtensionProperties]) -> Self {
        let mut ext = Extensions::default();
        for (name, present) in ext.table() {
            *present = props
                .iter()
                .any(|p| p.extension_name_as_c_str() == Ok(name));
        }
        ext
    }

    /// Names of the present extensions.
    pub fn present(&self) -> Vec<&'static CStr> {
        let mut copy = *self;
        copy.table()
            .into_iter()
            .filter(|(_, p)| **p)
            .map(|(n, _)| n)
            .collect()
    }

    /// Names of the missing extensions.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut copy = *self;
        copy.table()
            .into_iter()
            .filter(|(_, p)| !**p)
            .map(|(n, _)| n.to_str().unwrap_or("?"))
            .collect()
    }

    /// Whether dma-bufs can be imported and exported as images.
    pub fn dmabuf_images(&self) -> bool {
        self.external_memory_fd && self.external_memory_dma_buf && self.image_drm_format_modifier
    }
}

/// What one physical device is.
///
/// Made only by [`Instance::physical_devices`]: the handle inside is
/// private, so no forged or foreign handle reaches `vkCreateDevice`
/// ([`Device::open_physical`] also checks it belongs to the instance).
#[derive(Debug, Clone)]
pub struct PhysicalDeviceInfo {
    handle: vk::PhysicalDevice,
    /// `deviceName`, e.g. `llvmpipe (LLVM 19.1.7, 256 bits)`.
    pub name: String,
    /// The driver (`VK_DRIVER_ID_*`).
    pub driver: vk::DriverId,
    /// The driver's `driverInfo`, e.g. `Mesa 25.0.7-2+deb13u1 (LLVM 19.1.7)`.
    pub driver_info: String,
    /// `deviceType`: [`vk::PhysicalDeviceType::CPU`] for a software
    /// rasterizer (lavapipe), whose work is CPU threads, not a GPU queue.
    pub device_type: vk::PhysicalDeviceType,
    /// Vulkan version the device supports.
    pub api_version: u32,
    /// The interop extensions it has.
    pub extensions: Extensions,
    /// `(major, minor)` of its DRM primary node, where the driver says.
    pub primary_node: Option<(i64, i64)>,
    /// `(major, minor)` of its DRM render node, where the driver says.
    pub render_node: Option<(i64, i64)>,
}

impl PhysicalDeviceInfo {
    /// The Vulkan handle (valid while its [`Instance`] lives), for the
    /// caller's own queries through `ash`.
    pub fn handle(&self) -> vk::PhysicalDevice {
        self.handle
    }
}

impl fmt::Display for PhysicalDeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:?}, Vulkan {}.{})",
            self.name,
            self.driver,
            vk::api_version_major(self.api_version),
            vk::api_version_minor(self.api_version)
        )
    }
}

/// What the validation messenger collected.
#[derive(Default)]
struct Collected {
    errors: Vec<String>,
    /// A device opened on this instance fills only
    /// `VkDrmFormatModifierPropertiesListEXT`, not the `List2EXT` the
    /// layer reads (lavapipe before Mesa 26.1), so the layer sees no format
    /// features at all for DRM-modifier images: its reports of exactly that
    /// are the driver's bug, excused (printed, not collected).
    empty_modifier_list2: bool,
}

type Messages = Mutex<Collected>;

/// Whether `message` is the validation layer finding no format features
/// for a DRM-modifier image (what an empty `List2EXT` makes it say).
fn is_empty_list2_report(message: &str) -> bool {
    message.contains("VK_IMAGE_TILING_DRM_FORMAT_MODIFIER_EXT")
        && (message.contains("VkFormatFeatureFlags2(0)")
            || message.contains("has no supported format features"))
}

/// Whether the device lists DRM modifiers for RGBA8 in
/// `VkDrmFormatModifierPropertiesListEXT` but none in `List2EXT`
/// (probed: a counting query of each).
fn modifier_list2_is_empty(instance: &ash::Instance, handle: vk::PhysicalDevice) -> bool {
    let format = vk::Format::R8G8B8A8_UNORM;
    let mut list1 = vk::DrmFormatModifierPropertiesListEXT::default();
    let mut props1 = vk::FormatProperties2::default().push_next(&mut list1);
    // SAFETY: counting queries (no arrays) with valid output structs.
    unsafe { instance.get_physical_device_format_properties2(handle, format, &mut props1) };
    let mut list2 = vk::DrmFormatModifierPropertiesList2EXT::default();
    let mut props2 = vk::FormatProperties2::default().push_next(&mut list2);
    // SAFETY: as above.
    unsafe { instance.get_physical_device_format_properties2(handle, format, &mut props2) };
    list1.drm_format_modifier_count > 0 && list2.drm_format_modifier_count == 0
}

struct Debug {
    loader: ext::debug_utils::Instance,
    messenger: vk::DebugUtilsMessengerEXT,
    errors: Box<Messages>,
}

pub(crate) struct InstanceShared {
    // Keeps the loader library loaded while the instance lives (`None`:
    // an instance of someone else's, [`Instance::from_raw`]).
    _entry: Option<ash::Entry>,
    pub(crate) raw: ash::Instance,
    debug: Option<Debug>,
    /// Whether winsys created the instance (and so destroys it).
    owned: bool,
}

impl Drop for InstanceShared {
    fn drop(&mut self) {
        // SAFETY: every child object (devices, messenger) is gone: devices
        // hold an Arc of this struct, and the messenger is destroyed first.
        // An instance winsys did not create is its creator's to destroy.
        unsafe {
            if let Some(d) = &self.debug {
                d.loader.destroy_debug_utils_messenger(d.messenger, None);
            }
            if self.owned {
                self.raw.destroy_instance(None);
            }
        }
    }
}

/// A Vulkan instance, optionally with the Khronos validation layer.
///
/// With validation on, every error message of the layer is printed to
/// stderr and collected; [`Instance::take_validation_errors`] hands them
/// out (tests fail on any).
#[derive(Clone)]
pub struct Instance {
    pub(crate) shared: Arc<InstanceShared>,
}

unsafe extern "system" fn on_debug_message(
    severity: vk::DebugUtilsMessageSeverityFlagsEXT,
    _types: vk::DebugUtilsMessageTypeFlagsEXT,
    data: *const vk::DebugUtilsMessengerCallbackDataEXT<'_>,
    user: *mut c_void,
) -> vk::Bool32 {
    // SAFETY: the layer passes valid callback data for this call, and
    // `user` is the Box<Messages> that lives as long as the messenger.
    let (message, errors) = unsafe {
        let message = (*data)
            .message_as_c_str()
            .map(|m| m.to_string_lossy().into_owned())
            .unwrap_or_default();
        (message, &*(user as *const Messages))
    };
    if severity.contains(vk::DebugUtilsMessageSeverityFlagsEXT::ERROR) {
        if let Ok(mut e) = errors.lock() {
            if e.empty_modifier_list2 && is_empty_list2_report(&message) {
                eprintln!(
                    "vulkan validation: excused (the driver leaves \
                     VkDrmFormatModifierPropertiesList2EXT empty): {message}"
                );
            } else {
                eprintln!("vulkan validation error: {message}");
                e.errors.push(message);
            }
        }
    } else if severity.contains(vk::DebugUtilsMessageSeverityFlagsEXT::WARNING) {
        eprintln!("vulkan validation warning: {message}");
    }
    vk::FALSE
}

impl Instance {
    /// Create an instance asking for Vulkan 1.2, what winsys uses (a
    /// higher version would also switch the validation layer to
    /// `VkDrmFormatModifierPropertiesList2EXT`, which lavapipe 25.0 leaves
    /// empty, so every modifier image would look featureless). With
    /// `validation`, `VK_LAYER_KHRONOS_validation` and `VK_EXT_debug_utils`
    /// are required ([`Error::NoValidationLayer`] otherwise).
    pub fn new() -> Result<Self> {
        Self::create(false)
    }

    /// [`Instance::new`] with the Khronos validation layer, whose error
    /// messages are collected ([`Instance::take_validation_errors`]).
    ///
    /// One driver bug is excused, where it is probed to be present on a
    /// device opened here: a driver that fills only
    /// `VkDrmFormatModifierPropertiesListEXT`, not the `List2EXT` the layer
    /// reads (lavapipe before Mesa 26.1), makes the layer report "no format
    /// features" for every DRM-modifier image. Exactly those reports are
    /// printed as excused instead of collected.
    pub fn with_validation() -> Result<Self> {
        Self::create(true)
    }

    fn create(validation: bool) -> Result<Self> {
        // SAFETY: loading libvulkan runs its initializers; the loader is a
        // well-behaved system library.
        let entry = unsafe { ash::Entry::load() }.map_err(|e| Error::Loader(e.to_string()))?;
        let mut layers = Vec::new();
        let mut extensions = Vec::new();
        if validation {
            // SAFETY: plain queries with valid output storage.
            let (avail_layers, avail_ext) = unsafe {
                (
                    entry
                        .enumerate_instance_layer_properties()
                        .map_err(Error::vk("vkEnumerateInstanceLayerProperties"))?,
                    entry
                        .enumerate_instance_extension_properties(None)
                        .map_err(Error::vk("vkEnumerateInstanceExtensionProperties"))?,
                )
            };
            if !avail_layers
                .iter()
                .any(|l| l.layer_name_as_c_str() == Ok(VALIDATION_LAYER))
            {
                return Err(Error::NoValidationLayer("VK_LAYER_KHRONOS_validation"));
            }
            // The layer itself provides debug_utils when the loader lacks it.
            let layer_ext = unsafe {
                // SAFETY: as above.
                entry
                    .enumerate_instance_extension_properties(Some(VALIDATION_LAYER))
                    .unwrap_or_default()
            };
            if !avail_ext
                .iter()
                .chain(&layer_ext)
                .any(|e| e.extension_name_as_c_str() == Ok(ext::debug_utils::NAME))
            {
                return Err(Error::NoValidationLayer("VK_EXT_debug_utils"));
            }
            layers.push(VALIDATION_LAYER.as_ptr());
            extensions.push(ext::debug_utils::NAME.as_ptr());
        }
        let app = vk::ApplicationInfo::default()
            .application_name(c"winsys")
            .engine_name(c"winsys")
            .api_version(vk::API_VERSION_1_2);
        let info = vk::InstanceCreateInfo::default()
            .application_info(&app)
            .enabled_layer_names(&layers)
            .enabled_extension_names(&extensions);
        // SAFETY: `info` and everything it points to outlive the call.
        let raw =
            unsafe { entry.create_instance(&info, None) }.map_err(Error::vk("vkCreateInstance"))?;
        let debug = if validation {
            let loader = ext::debug_utils::Instance::new(&entry, &raw);
            let errors: Box<Messages> = Box::default();
            let info = vk::DebugUtilsMessengerCreateInfoEXT::default()
                .message_severity(
                    vk::DebugUtilsMessageSeverityFlagsEXT::ERROR
                        | vk::DebugUtilsMessageSeverityFlagsEXT::WARNING,
                )
                .message_type(
                    vk::DebugUtilsMessageTypeFlagsEXT::GENERAL
                        | vk::DebugUtilsMessageTypeFlagsEXT::VALIDATION
                        | vk::DebugUtilsMessageTypeFlagsEXT::PERFORMANCE,
                )
                .pfn_user_callback(Some(on_debug_message))
                .user_data(&*errors as *const Messages as *mut c_void);
            // SAFETY: the callback's user data (the boxed Mutex) lives in
            // the same Debug struct, destroyed after the messenger.
            match unsafe { loader.create_debug_utils_messenger(&info, None) } {
                Ok(messenger) => Some(Debug {
                    loader,
                    messenger,
                    errors,
                }),
                Err(result) => {
                    // SAFETY: nothing was created from the instance yet.
                    unsafe { raw.destroy_instance(None) };
                    return Err(Error::Vk {
                        call: "vkCreateDebugUtilsMessengerEXT",
                        result,
                    });
                }
            }
        } else {
            None
        };
        Ok(Instance {
            shared: Arc::new(InstanceShared {
                _entry: Some(entry),
                raw,
                debug,
                owned: true,
            }),
        })
    }

    /// Use an instance someone else created — a Vulkan layer's, whose
    /// function pointers lead down its chain — without destroying it when
    /// the last clone goes. No validation messenger is made.
    ///
    /// # Safety
    ///
    /// `raw` must be a live instance (of Vulkan 1.2 or later, or with the
    /// extensions whose commands winsys calls) with its commands loaded for
    /// it, and it must outlive the returned [`Instance`] and everything made
    /// from it (devices, images, swapchains).
    pub unsafe fn from_raw(raw: ash::Instance) -> Instance {
        Instance {
            shared: Arc::new(InstanceShared {
                _entry: None,
                raw,
                debug: None,
                owned: false,
            }),
        }
    }

    /// Whether the validation layer is on.
    pub fn validation(&self) -> bool {
        self.shared.debug.is_some()
    }

    /// Take the validation errors collected so far (empty without
    /// validation).
    pub fn take_validation_errors(&self) -> Vec<String> {
        match &self.shared.debug {
            Some(d) => std::mem::take(&mut lock(&d.errors).errors),
            None => Vec::new(),
        }
    }

    /// [`Error::Validation`] if the layer reported errors since the last
    /// take; `Ok` otherwise.
    pub fn check_validation(&self) -> Result<()> {
        let errors = self.take_validation_errors();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Validation(errors))
        }
    }

    /// The raw `ash` instance.
    pub fn raw(&self) -> &ash::Instance {
        &self.shared.raw
    }

    /// What the physical device `handle` of this instance is
    /// ([`Error::NoDevice`] for a handle the instance does not enumerate).
    pub fn physical_device(&self, handle: vk::PhysicalDevice) -> Result<PhysicalDeviceInfo> {
        // SAFETY: a plain query on a live instance.
        let ours = unsafe { self.shared.raw.enumerate_physical_devices() }
            .map_err(Error::vk("vkEnumeratePhysicalDevices"))?;
        if !ours.contains(&handle) {
            return Err(Error::NoDevice(format!(
                "{handle:?}: not a physical device of this instance"
            )));
        }
        self.describe(handle)
    }

    /// The modifiers `device`'s driver offers for dma-buf images of the
    /// DRM format `format` (`VkDrmFormatModifierPropertiesListEXT`), with
    /// their plane counts and features — what
    /// [`Device::modifiers`](super::Device::modifiers) says, before a
    /// device is opened. Empty for a format without a Vulkan twin, and on a
    /// device without `VK_EXT_image_drm_format_modifier`.
    pub fn modifiers(&self, device: &PhysicalDeviceInfo, format: Fourcc) -> Vec<ModifierInfo> {
        match to_vk(format) {
            Some(m) if device.extensions.image_drm_format_modifier => {
                super::image::query_modifiers(&self.shared.raw, device.handle, m.format)
            }
            _ => Vec::new(),
        }
    }

    /// Every physical device and what it can share.
    pub fn physical_devices(&self) -> Result<Vec<PhysicalDeviceInfo>> {
        let raw = &self.shared.raw;
        // SAFETY: a plain query on a live instance.
        let handles = unsafe { raw.enumerate_physical_devices() }
            .map_err(Error::vk("vkEnumeratePhysicalDevices"))?;
        handles.into_iter().map(|h| self.describe(h)).collect()
    }

    fn describe(&self, handle: vk::PhysicalDevice) -> Result<PhysicalDeviceInfo> {
        let raw = &self.shared.raw;
        // SAFETY: `handle` came from this instance; outputs are valid.
        let ext_props = unsafe { raw.enumerate_device_extension_properties(handle) }
            .map_err(Error::vk("vkEnumerateDeviceExtensionProperties"))?;
        let extensions = Extensions::from_properties(&ext_props);
        let mut driver = vk::PhysicalDeviceDriverProperties::default();
        let mut drm = vk::PhysicalDeviceDrmPropertiesEXT::default();
        let mut props2 = vk::PhysicalDeviceProperties2::default().push_next(&mut driver);
        if extensions.physical_device_drm {
            props2 = props2.push_next(&mut drm);
        }
        // SAFETY: the chain holds structs the device knows (DRM only when
        // the extension is present); all outlive the call.
        unsafe { raw.get_physical_device_properties2(handle, &mut props2) };
        let props = props2.properties;
        let name = props
            .device_name_as_c_str()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let driver_id = driver.driver_id;
        let driver_info = driver
            .driver_info_as_c_str()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (primary_node, render_node) = if extensions.physical_device_drm {
            (
                (drm.has_primary != 0).then_some((drm.primary_major, drm.primary_minor)),
                (drm.has_render != 0).then_some((drm.render_major, drm.render_minor)),
            )
        } else {
            (None, None)
        };
        Ok(PhysicalDeviceInfo {
            handle,
            name,
            driver: driver_id,
            driver_info,
            device_type: props.device_type,
            api_version: props.api_version,
            extensions,
            primary_node,
            render_node,
        })
    }
}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instance")
            .field("validation", &self.validation())
            .finish()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the device can import and export SYNC_FD payloads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncFdSupport {
    /// Binary semaphores can take a sync_file (temporary import).
    pub semaphore_import: bool,
    /// Binary semaphores can give a sync_file.
    pub semaphore_export: bool,
    /// Fences can take a sync_file (temporary import).
    pub fence_import: bool,
    /// Fences can give a sync_file.
    pub fence_export: bool,
}

/// One reusable unit of submission: a command pool with its one command
/// buffer, and the fence that says when the GPU is done with both.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pub(crate) pool: vk::CommandPool,
    pub(crate) cmd: vk::CommandBuffer,
    pub(crate) fence: vk::Fence,
}

/// A binary semaphore from the device's pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PooledSemaphore {
    pub(crate) raw: vk::Semaphore,
    pub(crate) exportable: bool,
}

/// What a dropped, unfinished submission still holds: freed or reused
/// only once its fence has signaled.
pub(crate) struct Retired {
    pub(crate) slot: Slot,
    pub(crate) semaphores: Vec<PooledSemaphore>,
    /// Semaphores to destroy rather than reuse once the work is done (a
    /// signal never consumed by an export would leave them signaled).
    pub(crate) discard: Vec<PooledSemaphore>,
    pub(crate) keep: Vec<KeepAlive>,
}

/// Anything GPU work uses that must outlive it (images, views).
pub(crate) type KeepAlive = Arc<dyn std::any::Any + Send + Sync>;

/// The device's pool of submission objects: created on first need,
/// reused once their fence has signaled, so a steady state of one
/// submission per frame creates nothing.
#[derive(Default)]
pub(crate) struct Recycler {
    stats: PoolStats,
    slots: Vec<Slot>,
    semaphores: Vec<vk::Semaphore>,
    export_semaphores: Vec<vk::Semaphore>,
    in_flight: Vec<Retired>,
}

/// How many submission objects a [`Device`] has made, and how much work
/// is retired but unfinished: in a steady state the counts stop growing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Command pools (each with its command buffer and fence) created.
    pub slots_created: u64,
    /// Binary semaphores created for submissions.
    pub semaphores_created: u64,
    /// Dropped [`Pending`](super::Pending)s whose work has not finished.
    pub in_flight: usize,
}

/// Driver answers that do not change while the device lives, asked once.
#[derive(Default)]
pub(crate) struct Answers {
    /// The modifier list per format.
    pub(crate) modifiers: HashMap<vk::Format, Arc<[super::image::ModifierInfo]>>,
    /// `vkGetPhysicalDeviceImageFormatProperties2` per question.
    pub(crate) image_formats: HashMap<super::image::FormatQuestion, super::image::FormatAnswer>,
}

pub(crate) struct DeviceShared {
    pub(crate) instance: Instance,
    pub(crate) info: PhysicalDeviceInfo,
    pub(crate) raw: ash::Device,
    pub(crate) queue_family: u32,
    pub(crate) queue: Mutex<vk::Queue>,
    pub(crate) sync_fd: SyncFdSupport,
    pub(crate) memory: vk::PhysicalDeviceMemoryProperties,
    pub(crate) memory_fd: Option<khr::external_memory_fd::Device>,
    pub(crate) modifier: Option<ext::image_drm_format_modifier::Device>,
    pub(crate) semaphore_fd: Option<khr::external_semaphore_fd::Device>,
    pub(crate) fence_fd: Option<khr::external_fence_fd::Device>,
    pub(crate) recycler: Mutex<Recycler>,
    pub(crate) answers: Mutex<Answers>,
    /// Whether winsys created the device (and so destroys it).
    owned: bool,
    /// A Vulkan layer's `pfnSetDeviceLoaderData`, called with each command
    /// buffer winsys allocates ([`Device::from_raw`]).
    loader_data: Option<SetLoaderData>,
}

/// The loader's `PFN_vkSetDeviceLoaderData` (`vk_layer.h`): a layer calls
/// it with each dispatchable object it creates below the loader, so that
/// layers beneath it can find their dispatch tables.
pub type SetLoaderData = unsafe extern "system" fn(vk::Device, *mut c_void) -> vk::Result;

impl Drop for DeviceShared {
    fn drop(&mut self) {
        drop(self.drain());
        let recycler = std::mem::take(self.recycler.get_mut().unwrap_or_else(|p| p.into_inner()));
        if !recycler.in_flight.is_empty() {
            // Work that never finished (a fence that never signals): its
            // objects, and so the device, cannot be destroyed safely.
            std::mem::forget(recycler);
            return;
        }
        // SAFETY: every object made from the device holds an Arc of this
        // struct, so none is left; all our work is done (drained above) and
        // work given to the unsafe `Device::submit` is done by its
        // contract; each pooled object is destroyed once.
        // A device winsys did not create is its creator's to destroy.
        unsafe {
            self.destroy_pooled(recycler);
            if self.owned {
                self.raw.destroy_device(None);
            }
        }
    }
}

impl DeviceShared {
    pub(crate) fn missing(&self, names: &[&'static str]) -> Error {
        Error::MissingExtensions {
            device: self.info.name.clone(),
            missing: names.to_vec(),
        }
    }

    /// `vkQueueSubmit` on the device's queue, which is externally
    /// synchronized here.
    pub(crate) fn queue_submit(
        &self,
        submits: &[vk::SubmitInfo<'_>],
        fence: vk::Fence,
    ) -> Result<()> {
        self.queue_submit_on(None, submits, fence)
    }

    /// [`DeviceShared::queue_submit`] on `other` if given (a queue of the
    /// same family its caller holds exclusively), the device's queue
    /// otherwise.
    pub(crate) fn queue_submit_on(
        &self,
        other: Option<vk::Queue>,
        submits: &[vk::SubmitInfo<'_>],
        fence: vk::Fence,
    ) -> Result<()> {
        let queue = lock(&self.queue);
        let target = other.unwrap_or(*queue);
        // SAFETY: the device's queue is held exclusively (and `other` by
        // the caller's contract); handles in `submits` belong to this
        // device and are kept alive by the caller until `fence` (or a
        // later wait) says the batch is done.
        unsafe { self.raw.queue_submit(target, submits, fence) }.map_err(Error::vk("vkQueueSubmit"))
    }

    /// A slot ready for recording: a reused one whose work is done, or a
    /// new one. Reaps finished work first.
    pub(crate) fn take_slot(&self) -> Result<Slot> {
        let done = self.reap();
        let slot = lock(&self.recycler).slots.pop();
        drop(done);
        if let Some(slot) = slot {
            return Ok(slot);
        }
        let info = vk::CommandPoolCreateInfo::default()
            .flags(vk::CommandPoolCreateFlags::TRANSIENT)
            .queue_family_index(self.queue_family);
        // SAFETY: valid create info for this device's queue family.
        let pool = unsafe { self.raw.create_command_pool(&info, None) }
            .map_err(Error::vk("vkCreateCommandPool"))?;
        let alloc = vk::CommandBufferAllocateInfo::default()
            .command_pool(pool)
            .level(vk::CommandBufferLevel::PRIMARY)
            .command_buffer_count(1);
        // SAFETY: the pool is live and only this thread knows it.
        let allocated = unsafe { self.raw.allocate_command_buffers(&alloc) }.and_then(|c| {
            if let Some(set) = self.loader_data {
                use ash::vk::Handle;
                // SAFETY: the layer's callback for a dispatchable object
                // just made from this device (the loader's contract).
                unsafe { set(self.raw.handle(), c[0].as_raw() as *mut c_void) }.result()?;
            }
            Ok(c[0])
        });
        let cmd = match allocated {
            Ok(c) => c,
            Err(e) => {
                // SAFETY: the pool has no buffers in use.
                unsafe { self.raw.destroy_command_pool(pool, None) };
                return Err(Error::vk("vkAllocateCommandBuffers")(e));
            }
        };
        // SAFETY: valid create info.
        let fence = match unsafe { self.raw.create_fence(&vk::FenceCreateInfo::default(), None) } {
            Ok(f) => f,
            Err(e) => {
                // SAFETY: as above.
                unsafe { self.raw.destroy_command_pool(pool, None) };
                return Err(Error::vk("vkCreateFence")(e));
            }
        };
        lock(&self.recycler).stats.slots_created += 1;
        Ok(Slot { pool, cmd, fence })
    }

    /// A binary semaphore without a payload (`exportable`: created to give
    /// SYNC_FD sync_files).
    pub(crate) fn take_semaphore(&self, exportable: bool) -> Result<PooledSemaphore> {
        let reused = {
            let mut r = lock(&self.recycler);
            match exportable {
                true => r.export_semaphores.pop(),
                false => r.semaphores.pop(),
            }
        };
        if let Some(raw) = reused {
            return Ok(PooledSemaphore { raw, exportable });
        }
        let mut export = vk::ExportSemaphoreCreateInfo::default()
            .handle_types(vk::ExternalSemaphoreHandleTypeFlags::SYNC_FD);
        let mut info = vk::SemaphoreCreateInfo::default();
        if exportable {
            info = info.push_next(&mut export);
        }
        // SAFETY: valid create info.
        let raw = unsafe { self.raw.create_semaphore(&info, None) }
            .map_err(Error::vk("vkCreateSemaphore"))?;
        lock(&self.recycler).stats.semaphores_created += 1;
        Ok(PooledSemaphore { raw, exportable })
    }

    /// Give back a semaphore that has no pending payload.
    pub(crate) fn return_semaphore(&self, s: PooledSemaphore) {
        let mut r = lock(&self.recycler);
        match s.exportable {
            true => r.export_semaphores.push(s.raw),
            false => r.semaphores.push(s.raw),
        }
    }

    /// Destroy a semaphore that may hold an unconsumed temporary payload
    /// (never submitted), instead of reusing it.
    pub(crate) fn destroy_semaphore(&self, s: PooledSemaphore) {
        // SAFETY: never submitted, so no queue uses it.
        unsafe { self.raw.destroy_semaphore(s.raw, None) };
    }

    /// Give back a slot whose command buffer was never submitted.
    pub(crate) fn return_unsubmitted(&self, slot: Slot) {
        // SAFETY: never submitted: the pool's buffer is not in use.
        let reset = unsafe {
            self.raw
                .reset_command_pool(slot.pool, vk::CommandPoolResetFlags::empty())
        };
        match reset {
            Ok(()) => lock(&self.recycler).slots.push(slot),
            // SAFETY: not in use (see above); destroyed once.
            Err(_) => unsafe { self.destroy_slot(slot) },
        }
    }

    /// Recycle submitted work: now if it is done, else once it is.
    pub(crate) fn retire(&self, work: Retired) -> Vec<KeepAlive> {
        // SAFETY: a fence of this device.
        match unsafe { self.raw.get_fence_status(work.slot.fence) } {
            Ok(true) => self.recycle(work),
            _ => {
                lock(&self.recycler).in_flight.push(work);
                Vec::new()
            }
        }
    }

    /// Recycles every retired submission whose fence has signaled; returns
    /// what they kept alive, to be dropped by the caller outside the lock.
    pub(crate) fn reap(&self) -> Vec<KeepAlive> {
        let done: Vec<Retired> = {
            let mut r = lock(&self.recycler);
            let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut r.in_flight)
                .into_iter()
                // SAFETY: fences of this device.
                .partition(|w| {
                    matches!(unsafe { self.raw.get_fence_status(w.slot.fence) }, Ok(true))
                });
            r.in_flight = waiting;
            done
        };
        done.into_iter().flat_map(|w| self.recycle(w)).collect()
    }

    /// Resets and pools the objects of finished work.
    fn recycle(&self, work: Retired) -> Vec<KeepAlive> {
        let Retired {
            slot,
            semaphores,
            discard,
            keep,
        } = work;
        for s in discard {
            // SAFETY: the work's fence signaled: no queue uses it.
            unsafe { self.raw.destroy_semaphore(s.raw, None) };
        }
        // SAFETY: the fence signaled, so the GPU is done with the pool's
        // buffer, the fence and the semaphores (their waits and signals
        // completed; an exported semaphore was reset by the export).
        let reset = unsafe {
            self.raw
                .reset_command_pool(slot.pool, vk::CommandPoolResetFlags::empty())
                .and_then(|()| self.raw.reset_fences(&[slot.fence]))
        };
        match reset {
            Ok(()) => lock(&self.recycler).slots.push(slot),
            // SAFETY: done (see above); destroyed once.
            Err(_) => unsafe { self.destroy_slot(slot) },
        }
        for s in semaphores {
            self.return_semaphore(s);
        }
        keep
    }

    /// Waits (at most [`DEFAULT_TIMEOUT`](super::DEFAULT_TIMEOUT)) for all
    /// retired work and recycles it, breaking the keep-alive references it
    /// holds; what it kept is dropped by the caller. Work that does not
    /// finish in time stays retired: its objects are leaked with the device
    /// rather than destroyed in use.
    pub(crate) fn drain(&self) -> Vec<KeepAlive> {
        let fences: Vec<vk::Fence> = lock(&self.recycler)
            .in_flight
            .iter()
            .map(|w| w.slot.fence)
            .collect();
        if !fences.is_empty() {
            let ns = super::DEFAULT_TIMEOUT.as_nanos() as u64;
            // SAFETY: fences of this device; waiting needs no queue lock.
            if unsafe { self.raw.wait_for_fences(&fences, true, ns) }.is_err() {
                eprintln!(
                    "winsys: {} submission(s) did not finish within {:?}; their objects are leaked",
                    fences.len(),
                    super::DEFAULT_TIMEOUT
                );
            }
        }
        self.reap()
    }

    /// # Safety
    /// No object of `slot` may be in use by the GPU.
    unsafe fn destroy_slot(&self, slot: Slot) {
        // SAFETY: forwarded.
        unsafe {
            self.raw.destroy_command_pool(slot.pool, None);
            self.raw.destroy_fence(slot.fence, None);
        }
    }

    /// # Safety
    /// None of the pooled objects may be in use (retired work: none left).
    unsafe fn destroy_pooled(&self, r: Recycler) {
        for slot in r.slots {
            // SAFETY: as above.
            unsafe { self.destroy_slot(slot) };
        }
        for s in r.semaphores.into_iter().chain(r.export_semaphores) {
            // SAFETY: as above.
            unsafe { self.raw.destroy_semaphore(s, None) };
        }
    }

    pub(crate) fn foreign_family(&self) -> u32 {
        if self.info.extensions.queue_family_foreign {
            vk::QUEUE_FAMILY_FOREIGN_EXT
        } else {
            vk::QUEUE_FAMILY_EXTERNAL
        }
    }

    pub(crate) fn memory_type(&self, bits: u32, want: vk::MemoryPropertyFlags) -> Option<u32> {
        let types = &self.memory.memory_types[..self.memory.memory_type_count as usize];
        let fits = |i: usize| bits & (1 << i) != 0;
        (0..types.len())
            .find(|&i| fits(i) && types[i].property_flags.contains(want))
            .or_else(|| (0..types.len()).find(|&i| fits(i)))
            .map(|i| i as u32)
    }
}

/// A logical device with one queue that can do graphics, compute and
/// transfer, opened with every interop extension the driver has.
///
/// Cheap to clone; images, semaphores and submissions made from it keep it
/// alive. When the last clone (and the last [`Pending`](super::Pending))
/// is gone, it waits for the work still in flight, at most
/// [`DEFAULT_TIMEOUT`](super::DEFAULT_TIMEOUT), and frees what it kept
/// alive; work that never finishes is leaked, never freed in use.
#[derive(Clone)]
pub struct Device {
    pub(crate) shared: Arc<DeviceShared>,
    _last: Arc<LastHandle>,
}

/// Dropped with the last [`Device`] clone: drains retired work, whose
/// keep-alive references (images hold the device) would otherwise keep
/// the device alive.
struct LastHandle(Arc<DeviceShared>);

impl Drop for LastHandle {
    fn drop(&mut self) {
        drop(self.0.drain());
    }
}

impl Device {
    /// Open the first device that has every dma-buf image extension
    /// ([`Extensions::dmabuf_images`]), or else the first device.
    pub fn open(instance: &Instance) -> Result<Self> {
        let devices = instance.physical_devices()?;
        let pick = devices
            .iter()
            .find(|d| d.extensions.dmabuf_images())
            .or_else(|| devices.first())
            .cloned()
            .ok_or_else(|| Error::NoDevice("(none enumerated)".into()))?;
        Self::open_physical(instance, pick)
    }

    /// Open the first device `choose` accepts.
    pub fn open_matching(
        instance: &Instance,
        mut choose: impl FnMut(&PhysicalDeviceInfo) -> bool,
    ) -> Result<Self> {
        let devices = instance.physical_devices()?;
        let names: Vec<_> = devices.iter().map(|d| d.name.clone()).collect();
        let pick = devices
            .into_iter()
            .find(|d| choose(d))
            .ok_or_else(|| Error::NoDevice(format!("matching the choice among {names:?}")))?;
        Self::open_physical(instance, pick)
    }

    /// Open `info`'s device; it must come from `instance`
    /// ([`Error::NoDevice`] otherwise).
    pub fn open_physical(instance: &Instance, info: PhysicalDeviceInfo) -> Result<Self> {
        let raw_instance = &instance.shared.raw;
        // SAFETY: a plain query on a live instance.
        let ours = unsafe { raw_instance.enumerate_physical_devices() }
            .map_err(Error::vk("vkEnumeratePhysicalDevices"))?;
        if !ours.contains(&info.handle) {
            return Err(Error::NoDevice(format!(
                "{}: not a physical device of this instance",
                info.name
            )));
        }
        let info = require_vulkan_1_2(info)?;
        // VkDrmFormatModifierPropertiesList2EXT is core-adjacent to format
        // features 2 (Vulkan 1.3): only probed where the chain is valid.
        if let Some(d) = &instance.shared.debug {
            if info.extensions.image_drm_format_modifier
                && info.api_version >= vk::API_VERSION_1_3
                && modifier_list2_is_empty(raw_instance, info.handle)
            {
                lock(&d.errors).empty_modifier_list2 = true;
            }
        }
        // SAFETY: plain queries on a live physical device.
        let families =
            unsafe { raw_instance.get_physical_device_queue_family_properties(info.handle) };
        let want = vk::QueueFlags::GRAPHICS | vk::QueueFlags::COMPUTE;
        let queue_family = families
            .iter()
            .position(|f| f.queue_flags.contains(want) && f.queue_count > 0)
            .ok_or_else(|| Error::NoDevice(format!("{}: no graphics+compute queue", info.name)))?
            as u32;
        let names: Vec<_> = info
            .extensions
            .present()
            .iter()
            .map(|n| n.as_ptr())
            .collect();
        let priorities = [1.0f32];
        let queues = [vk::DeviceQueueCreateInfo::default()
            .queue_family_index(queue_family)
            .queue_priorities(&priorities)];
        let create = vk::DeviceCreateInfo::default()
            .queue_create_infos(&queues)
            .enabled_extension_names(&names);
        // SAFETY: `create` and what it points to outlive the call; the
        // extension names were enumerated from this device.
        let raw = unsafe { raw_instance.create_device(info.handle, &create, None) }
            .map_err(Error::vk("vkCreateDevice"))?;
        // SAFETY: the queue family and index were created above.
        let queue = unsafe { raw.get_device_queue(queue_family, 0) };
        Ok(Self::assemble(
            instance,
            info,
            raw,
            queue_family,
            queue,
            None,
        ))
    }

    /// Use a device someone else created — a Vulkan layer's, whose
    /// function pointers lead down its chain — with `queue` of
    /// `queue_family` for submissions not given a queue of their own
    /// ([`Submission::on_queue`](super::Submission::on_queue)). The device
    /// is not destroyed when the last clone goes; winsys's own objects
    /// (command pools, fences, semaphores) are.
    ///
    /// `physical` is checked to belong to `instance`, and to offer Vulkan
    /// 1.2 ([`Error::MissingExtensions`] otherwise).
    ///
    /// # Safety
    ///
    /// - `raw` must be a live device created from `physical` with every
    ///   extension of `PhysicalDeviceInfo::extensions.present()` (from
    ///   [`Instance::physical_device`]) enabled, with its commands loaded
    ///   for it, and it must outlive the returned [`Device`] and everything
    ///   made from it;
    /// - `queue` must be a queue of `raw` in `queue_family`, a family that
    ///   can do graphics and compute; whenever winsys submits to it (only
    ///   inside [`Submission::submit`](super::Submission::submit)), no
    ///   other thread may use it (`vkQueueSubmit`'s external
    ///   synchronization);
    /// - `loader_data`, if given, must be the loader's
    ///   `pfnSetDeviceLoaderData` for `raw` (a layer's
    ///   `VkLayerDeviceCreateInfo`); winsys calls it with each command
    ///   buffer it allocates.
    pub unsafe fn from_raw(
        instance: &Instance,
        physical: vk::PhysicalDevice,
        raw: ash::Device,
        queue_family: u32,
        queue: vk::Queue,
        loader_data: Option<SetLoaderData>,
    ) -> Result<Self> {
        let info = instance.physical_device(physical)?;
        let info = require_vulkan_1_2(info)?;
        Ok(Self::assemble(
            instance,
            info,
            raw,
            queue_family,
            queue,
            Some(loader_data),
        ))
    }

    /// The device's shared state around a created device (`borrowed`:
    /// `None`) or a borrowed one (`Some` of its layer's loader callback).
    fn assemble(
        instance: &Instance,
        info: PhysicalDeviceInfo,
        raw: ash::Device,
        queue_family: u32,
        queue: vk::Queue,
        borrowed: Option<Option<SetLoaderData>>,
    ) -> Self {
        let raw_instance = &instance.shared.raw;
        // SAFETY: plain query.
        let memory = unsafe { raw_instance.get_physical_device_memory_properties(info.handle) };
        let ext = info.extensions;
        let sync_fd = if std::env::var_os(DISABLE_SYNC_FD_ENV).is_some_and(|v| v == "1") {
            SyncFdSupport::default()
        } else {
            sync_fd_support(raw_instance, info.handle, &ext)
        };
        let shared = DeviceShared {
            memory_fd: ext
                .external_memory_fd
                .then(|| khr::external_memory_fd::Device::new(raw_instance, &raw)),
            modifier: ext
                .image_drm_format_modifier
                .then(|| ext::image_drm_format_modifier::Device::new(raw_instance, &raw)),
            semaphore_fd: ext
                .external_semaphore_fd
                .then(|| khr::external_semaphore_fd::Device::new(raw_instance, &raw)),
            fence_fd: ext
                .external_fence_fd
                .then(|| khr::external_fence_fd::Device::new(raw_instance, &raw)),
            instance: instance.clone(),
            info,
            raw,
            queue_family,
            queue: Mutex::new(queue),
            sync_fd,
            memory,
            recycler: Mutex::new(Recycler::default()),
            answers: Mutex::new(Answers::default()),
            owned: borrowed.is_none(),
            loader_data: borrowed.flatten(),
        };
        let shared = Arc::new(shared);
        Device {
            _last: Arc::new(LastHandle(shared.clone())),
            shared,
        }
    }

    /// What the physical device is.
    pub fn info(&self) -> &PhysicalDeviceInfo {
        &self.shared.info
    }

    /// The interop extensions it has.
    pub fn extensions(&self) -> Extensions {
        self.shared.info.extensions
    }

    /// Whether semaphores and fences take and give sync_files (all `false`
    /// with [`DISABLE_SYNC_FD_ENV`] set).
    pub fn sync_fd_support(&self) -> SyncFdSupport {
        self.shared.sync_fd
    }

    /// The instance it was opened from.
    pub fn instance(&self) -> &Instance {
        &self.shared.instance
    }

    /// The raw `ash` device.
    pub fn raw(&self) -> &ash::Device {
        &self.shared.raw
    }

    /// The queue family of [`Device::submit`]'s queue.
    pub fn queue_family(&self) -> u32 {
        self.shared.queue_family
    }

    /// The queue family that stands for every user outside Vulkan (other
    /// drivers, the CPU, the compositor): `VK_QUEUE_FAMILY_FOREIGN_EXT`
    /// where the extension is present, else `VK_QUEUE_FAMILY_EXTERNAL`.
    pub fn foreign_queue_family(&self) -> u32 {
        self.shared.foreign_family()
    }

    /// Submit batches to the device's queue (`vkQueueSubmit`); the queue
    /// is locked for the call.
    ///
    /// # Safety
    /// Every handle in `submits` and `fence` must belong to this device and
    /// stay alive until the batches complete, as `vkQueueSubmit` requires;
    /// no semaphore or fence in them may be imported into, reset or
    /// exported until then (except as the Vulkan spec allows, e.g. a
    /// SYNC_FD export of a pending signal).
    pub unsafe fn submit(&self, submits: &[vk::SubmitInfo<'_>], fence: vk::Fence) -> Result<()> {
        self.shared.queue_submit(submits, fence)
    }

    /// Wait until the device is idle (`vkDeviceWaitIdle`), then recycle
    /// what finished submissions held.
    pub fn wait_idle(&self) -> Result<()> {
        {
            let _queue = lock(&self.shared.queue);
            // SAFETY: the queue is locked, which vkDeviceWaitIdle requires
            // of every queue of the device.
            unsafe { self.shared.raw.device_wait_idle() }.map_err(Error::vk("vkDeviceWaitIdle"))?;
        }
        drop(self.shared.reap());
        Ok(())
    }

    /// What the submission pool has made so far.
    pub fn pool_stats(&self) -> PoolStats {
        let r = lock(&self.shared.recycler);
        PoolStats {
            in_flight: r.in_flight.len(),
            ..r.stats
        }
    }

    /// Recycle the objects of finished submissions now (each new
    /// submission does this too), freeing the images they kept alive.
    pub fn collect(&self) {
        drop(self.shared.reap());
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("info", &self.shared.info)
            .field("sync_fd", &self.shared.sync_fd)
            .finish()
    }
}

/// `info`, if its device offers Vulkan 1.2 (what winsys uses);
/// [`Error::MissingExtensions`] otherwise.
fn require_vulkan_1_2(info: PhysicalDeviceInfo) -> Result<PhysicalDeviceInfo> {
    if info.api_version < vk::API_VERSION_1_2 {
        return Err(Error::MissingExtensions {
            device: info.name,
            missing: vec!["Vulkan 1.2"],
        });
    }
    Ok(info)
}

fn sync_fd_support(
    instance: &ash::Instance,
    physical: vk::PhysicalDevice,
    ext: &Extensions,
) -> SyncFdSupport {
    let mut support = SyncFdSupport::default();
    if ext.external_semaphore_fd {
        let info = vk::PhysicalDeviceExternalSemaphoreInfo::default()
            .handle_type(vk::ExternalSemaphoreHandleTypeFlags::SYNC_FD);
        let mut out = vk::ExternalSemaphoreProperties::default();
        // SAFETY: plain query with valid in/out structs.
        unsafe {
            instance.get_physical_device_external_semaphore_properties(physical, &info, &mut out)
        };
        let f = out.external_semaphore_features;
        support.semaphore_import = f.contains(vk::ExternalSemaphoreFeatureFlags::IMPORTABLE);
        support.semaphore_export = f.contains(vk::ExternalSemaphoreFeatureFlags::EXPORTABLE);
    }
    if ext.external_fence_fd {
        let info = vk::PhysicalDeviceExternalFenceInfo::default()
            .handle_type(vk::ExternalFenceHandleTypeFlags::SYNC_FD);
        let mut out = vk::ExternalFenceProperties::default();
        // SAFETY: plain query with valid in/out structs.
        unsafe {
            instance.get_physical_device_external_fence_properties(physical, &info, &mut out)
        };
        let f = out.external_fence_features;
        support.fence_import = f.contains(vk::ExternalFenceFeatureFlags::IMPORTABLE);
        support.fence_export = f.contains(vk::ExternalFenceFeatureFlags::EXPORTABLE);
    }
    support
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_empty_list2_reports_are_excused() {
        assert!(is_empty_list2_report(
            "vkCreateImageView(): pCreateInfo->format VK_FORMAT_B8G8R8A8_UNORM with tiling \
             VK_IMAGE_TILING_DRM_FORMAT_MODIFIER_EXT has no supported format features"
        ));
        assert!(is_empty_list2_report(
            "vkCmdClearColorImage(): ... tiling VK_IMAGE_TILING_DRM_FORMAT_MODIFIER_EXT which \
             have VkFormatFeatureFlags2 (VkFormatFeatureFlags2(0)) which in turn is missing"
        ));
        assert!(!is_empty_list2_report(
            "vkCreateImageView(): VK_IMAGE_TILING_OPTIMAL has no supported format features"
        ));
        assert!(!is_empty_list2_report(
            "vkCmdDraw(): VK_IMAGE_TILING_DRM_FORMAT_MODIFIER_EXT image in the wrong layout"
        ));
    }

    #[test]
    fn missing_lists_exactly_the_absent_extensions() {
        let ext = Extensions {
            external_memory_fd: true,
            external_memory_dma_buf: true,
            image_drm_format_modifier: false,
            external_semaphore_fd: true,
            external_fence_fd: false,
            queue_family_foreign: true,
            physical_device_drm: true,
        };
        assert_eq!(
            ext.missing(),
            [
                "VK_EXT_image_drm_format_modifier",
                "VK_KHR_external_fence_fd"
            ]
        );
        assert!(!ext.dmabuf_images());
        assert_eq!(ext.present().len(), 5);
    }
}
