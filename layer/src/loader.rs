//! The loader–layer interface of `vk_layer.h`, which `ash` does not carry:
//! the negotiation struct and the instance and device chain links, defined
//! here once.
//!
//! See the loader's documentation, "Architecture of the Vulkan Loader
//! Interfaces", section "Layer Interface with the Loader".

use std::ffi::{c_char, c_void};

use ash::vk;

/// `VkNegotiateLayerStructType::LAYER_NEGOTIATE_INTERFACE_STRUCT`.
pub const LAYER_NEGOTIATE_INTERFACE_STRUCT: i32 = 1;

/// The layer interface version this layer speaks (2: negotiation, no
/// `vk_layerGetPhysicalDeviceProcAddr`).
pub const INTERFACE_VERSION: u32 = 2;

/// `VK_STRUCTURE_TYPE_LOADER_INSTANCE_CREATE_INFO`.
pub const LOADER_INSTANCE_CREATE_INFO: vk::StructureType = vk::StructureType::from_raw(47);
/// `VK_STRUCTURE_TYPE_LOADER_DEVICE_CREATE_INFO`.
pub const LOADER_DEVICE_CREATE_INFO: vk::StructureType = vk::StructureType::from_raw(48);

/// `VkLayerFunction`: what a loader create-info struct carries.
pub const LAYER_LINK_INFO: i32 = 0;
/// `VK_LOADER_DATA_CALLBACK`: the set-loader-data callback.
pub const LOADER_DATA_CALLBACK: i32 = 1;

/// `PFN_GetPhysicalDeviceProcAddr`.
pub type GetPhysicalDeviceProcAddr =
    Option<unsafe extern "system" fn(vk::Instance, *const c_char) -> vk::PFN_vkVoidFunction>;

/// `VkNegotiateLayerInterface`.
#[repr(C)]
pub struct NegotiateLayerInterface {
    /// `LAYER_NEGOTIATE_INTERFACE_STRUCT`.
    pub s_type: i32,
    /// Unused.
    pub p_next: *mut c_void,
    /// In: the loader's highest version; out: the layer's.
    pub loader_layer_interface_version: u32,
    /// Out: the layer's `vkGetInstanceProcAddr`.
    pub pfn_get_instance_proc_addr: Option<vk::PFN_vkGetInstanceProcAddr>,
    /// Out: the layer's `vkGetDeviceProcAddr`.
    pub pfn_get_device_proc_addr: Option<vk::PFN_vkGetDeviceProcAddr>,
    /// Out: the layer's `vk_layerGetPhysicalDeviceProcAddr` (none here).
    pub pfn_get_physical_device_proc_addr: GetPhysicalDeviceProcAddr,
}

/// `VkLayerInstanceLink`: one step down the instance chain.
#[repr(C)]
pub struct LayerInstanceLink {
    /// The link of the next layer down.
    pub p_next: *mut LayerInstanceLink,
    /// The next layer's `vkGetInstanceProcAddr`.
    pub pfn_next_get_instance_proc_addr: vk::PFN_vkGetInstanceProcAddr,
    /// The next layer's `vk_layerGetPhysicalDeviceProcAddr`.
    pub pfn_next_get_physical_device_proc_addr: GetPhysicalDeviceProcAddr,
}

/// `VkLayerDeviceLink`: one step down the device chain.
#[repr(C)]
pub struct LayerDeviceLink {
    /// The link of the next layer down.
    pub p_next: *mut LayerDeviceLink,
    /// The next layer's `vkGetInstanceProcAddr`.
    pub pfn_next_get_instance_proc_addr: vk::PFN_vkGetInstanceProcAddr,
    /// The next layer's `vkGetDeviceProcAddr`.
    pub pfn_next_get_device_proc_addr: vk::PFN_vkGetDeviceProcAddr,
}

/// The union of `VkLayerInstanceCreateInfo` (sized for its largest
/// member, two function pointers).
#[repr(C)]
#[derive(Clone, Copy)]
pub union InstanceCreateUnion {
    /// `LAYER_LINK_INFO`.
    pub p_layer_info: *mut LayerInstanceLink,
    /// `LOADER_DATA_CALLBACK`.
    pub pfn_set_instance_loader_data: *const c_void,
    /// `VK_LOADER_LAYER_CREATE_DEVICE_CALLBACK`.
    pub layer_device: [*const c_void; 2],
}

/// `VkLayerInstanceCreateInfo`.
#[repr(C)]
pub struct LayerInstanceCreateInfo {
    /// [`LOADER_INSTANCE_CREATE_INFO`].
    pub s_type: vk::StructureType,
    /// The chain.
    pub p_next: *const c_void,
    /// `VkLayerFunction`.
    pub function: i32,
    /// What `function` says.
    pub u: InstanceCreateUnion,
}

/// The union of `VkLayerDeviceCreateInfo`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union DeviceCreateUnion {
    /// `LAYER_LINK_INFO`.
    pub p_layer_info: *mut LayerDeviceLink,
    /// `LOADER_DATA_CALLBACK`: `PFN_vkSetDeviceLoaderData`.
    pub pfn_set_device_loader_data: Option<winsys::vulkan::SetLoaderData>,
}

/// `VkLayerDeviceCreateInfo`.
#[repr(C)]
pub struct LayerDeviceCreateInfo {
    /// [`LOADER_DEVICE_CREATE_INFO`].
    pub s_type: vk::StructureType,
    /// The chain.
    pub p_next: *const c_void,
    /// `VkLayerFunction`.
    pub function: i32,
    /// What `function` says.
    pub u: DeviceCreateUnion,
}

/// The loader's struct of `s_type` carrying `function` in the `p_next`
/// chain starting at `next`.
///
/// # Safety
///
/// `next` must be a valid Vulkan `pNext` chain.
pub unsafe fn find_in_chain<T>(
    mut next: *const c_void,
    s_type: vk::StructureType,
    function: i32,
) -> Option<*mut T> {
    while !next.is_null() {
        // SAFETY: every struct of a pNext chain starts with sType, pNext;
        // both loader structs also have `function` right after them.
        let header = unsafe { &*(next as *const vk::BaseInStructure<'_>) };
        if header.s_type == s_type {
            // SAFETY: as above (the loader's struct layout).
            let f = unsafe {
                *(next as *const u8)
                    .add(std::mem::size_of::<vk::BaseInStructure<'_>>())
                    .cast::<i32>()
            };
            if f == function {
                return Some(next as *mut T);
            }
        }
        next = header.p_next.cast();
    }
    None
}

/// The first struct of type `s_type` in the `pNext` chain starting at
/// `next`, read as `T`.
///
/// # Safety
///
/// `next` must be a valid Vulkan `pNext` chain that outlives `'a`, and `T`
/// the struct type `s_type` names (or a prefix of its layout).
pub unsafe fn chained<'a, T>(mut next: *const c_void, s_type: vk::StructureType) -> Option<&'a T> {
    while !next.is_null() {
        // SAFETY: every struct of a pNext chain starts with sType, pNext.
        let header = unsafe { &*next.cast::<vk::BaseInStructure<'_>>() };
        if header.s_type == s_type {
            // SAFETY: the caller names T as the struct of that type.
            return Some(unsafe { &*next.cast::<T>() });
        }
        next = header.p_next.cast();
    }
    None
}
