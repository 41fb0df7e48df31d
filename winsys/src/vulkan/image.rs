//! Dma-bufs as Vulkan images: [`Device::import_dmabuf`],
//! [`Device::export_image`], and the queue-family ownership transfers
//! around external use ([`Image::cmd_acquire`], [`Image::cmd_release`]).
//!
//! Both directions ask the driver first — the modifier list of the format
//! (`VkDrmFormatModifierPropertiesListEXT`), the format features the usage
//! needs, and `vkGetPhysicalDeviceImageFormatProperties2` with the modifier
//! and the dma-buf handle type — and refuse with [`Error::Unsupported`]
//! naming the failed check, so an image the driver cannot take never reaches
//! `vkCreateImage`.

use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd};
use std::sync::{Arc, Mutex};

use ash::vk;

use super::device::{DeviceShared, KeepAlive};
use super::format::{to_vk, Encoding, VkFormatMapping};
use super::Submission;
use super::{Device, Error, Refusal, Result};
use crate::dmabuf::Dmabuf;
use crate::format::{Fourcc, Modifier};

/// The layout the first acquire of an imported image starts from: the
/// foreign side's contents must survive it, which `UNDEFINED` does not
/// promise.
const FIRST_ACQUIRE_LAYOUT: vk::ImageLayout = vk::ImageLayout::GENERAL;

const DMA_BUF: vk::ExternalMemoryHandleTypeFlags = vk::ExternalMemoryHandleTypeFlags::DMA_BUF_EXT;

/// One modifier the driver offers for a format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModifierInfo {
    /// The modifier.
    pub modifier: Modifier,
    /// Memory planes an image with it has.
    pub planes: u32,
    /// What images with it can do.
    pub features: vk::FormatFeatureFlags,
}

/// The driver's modifiers for `format` on `physical`
/// (`VkDrmFormatModifierPropertiesListEXT`).
pub(crate) fn query_modifiers(
    instance: &ash::Instance,
    physical: vk::PhysicalDevice,
    format: vk::Format,
) -> Vec<ModifierInfo> {
    let mut list = vk::DrmFormatModifierPropertiesListEXT::default();
    let mut props = vk::FormatProperties2::default().push_next(&mut list);
    // SAFETY: the first call only counts (no array given).
    unsafe { instance.get_physical_device_format_properties2(physical, format, &mut props) };
    let count = list.drm_format_modifier_count as usize;
    let mut entries = vec![vk::DrmFormatModifierPropertiesEXT::default(); count];
    let mut list = vk::DrmFormatModifierPropertiesListEXT::default()
        .drm_format_modifier_properties(&mut entries);
    let mut props = vk::FormatProperties2::default().push_next(&mut list);
    // SAFETY: the array has room for `count` entries, as counted above.
    unsafe { instance.get_physical_device_format_properties2(physical, format, &mut props) };
    let filled = list.drm_format_modifier_count as usize;
    entries[..filled.min(count)]
        .iter()
        .map(|e| ModifierInfo {
            modifier: Modifier(e.drm_format_modifier),
            planes: e.drm_format_modifier_plane_count,
            features: e.drm_format_modifier_tiling_features,
        })
        .collect()
}

/// Who may touch the image next, as the barriers track it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Allocated here and never used: contents undefined.
    New,
    /// Imported and not yet acquired: contents belong to the foreign side.
    ForeignFirst,
    /// Released to the foreign family in `GENERAL`.
    Foreign,
    /// Owned by this device's queue family, in this layout.
    Ours(vk::ImageLayout),
}

/// The Vulkan objects of an [`Image`]: destroyed when the image *and*
/// every submission that used it are gone.
pub(crate) struct ImageResources {
    pub(crate) shared: Arc<DeviceShared>,
    raw: vk::Image,
    memory: Vec<vk::DeviceMemory>,
    /// Who may touch the image next, as recorded barriers leave it. Shared
    /// so a submission dropped unsubmitted can roll its transitions back.
    owner: Mutex<Owner>,
}

impl ImageResources {
    /// Put the ownership state back to `owner` (a submission that recorded
    /// a transition was never submitted).
    pub(crate) fn roll_back(&self, owner: Owner) {
        *super::device::lock(&self.owner) = owner;
    }
}

impl Drop for ImageResources {
    fn drop(&mut self) {
        // SAFETY: the image and its memory belong to this device; the last
        // reference is gone, and submissions that used the image hold a
        // reference until their fence signaled, so the GPU is done.
        unsafe {
            self.shared.raw.destroy_image(self.raw, None);
            for &m in &self.memory {
                self.shared.raw.free_memory(m, None);
            }
        }
    }
}

/// A Vulkan image over dma-buf memory. Imported from a [`Dmabuf`] or
/// allocated for export.
///
/// Dropping it never frees memory the GPU still uses: a [`Submission`]
/// that records it ([`Image::cmd_acquire`], [`Image::cmd_release`],
/// [`Submission::uses`]) keeps its Vulkan objects alive until the work's
/// fence has signaled.
///
/// [`Submission`]: super::Submission
/// [`Submission::uses`]: super::Submission::uses
pub struct Image {
    res: Arc<ImageResources>,
    mapping: VkFormatMapping,
    modifier: Modifier,
    width: u32,
    height: u32,
    usage: vk::ImageUsageFlags,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("raw", &self.res.raw)
            .field("format", &self.mapping.fourcc)
            .field("modifier", &self.modifier)
            .field("size", &(self.width, self.height))
            .field("owner", &*super::device::lock(&self.res.owner))
            .finish()
    }
}

/// An image view. Like an [`Image`], its Vulkan object lives until the
/// view and every submission that used it are gone.
pub struct ImageView {
    res: Arc<ViewResources>,
}

/// The Vulkan object of an [`ImageView`] (holding its image alive).
pub(crate) struct ViewResources {
    image: Arc<ImageResources>,
    raw: vk::ImageView,
}

impl Drop for ViewResources {
    fn drop(&mut self) {
        // SAFETY: the view belongs to this device; the last reference
        // (including those of submissions that used it) is gone.
        unsafe { self.image.shared.raw.destroy_image_view(self.raw, None) };
    }
}

impl ImageView {
    /// The raw handle. Register the view with [`Submission::uses`] when
    /// recording commands that use it.
    ///
    /// [`Submission::uses`]: super::Submission::uses
    pub fn raw(&self) -> vk::ImageView {
        self.res.raw
    }
}

impl std::fmt::Debug for ImageView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageView")
            .field("raw", &self.res.raw)
            .field("image", &self.res.image.raw)
            .finish()
    }
}

impl super::bridge::Resource for ImageView {}

impl super::bridge::sealed::Resource for ImageView {
    fn keep_alive(&self) -> KeepAlive {
        self.res.clone()
    }

    fn device_id(&self) -> *const () {
        Arc::as_ptr(&self.res.image.shared).cast()
    }
}

impl super::bridge::Resource for Image {}

impl super::bridge::sealed::Resource for Image {
    fn keep_alive(&self) -> KeepAlive {
        self.res.clone()
    }

    fn device_id(&self) -> *const () {
        Arc::as_ptr(&self.res.shared).cast()
    }
}

fn memory_plane_aspect(plane: usize) -> vk::ImageAspectFlags {
    [
        vk::ImageAspectFlags::MEMORY_PLANE_0_EXT,
        vk::ImageAspectFlags::MEMORY_PLANE_1_EXT,
        vk::ImageAspectFlags::MEMORY_PLANE_2_EXT,
        vk::ImageAspectFlags::MEMORY_PLANE_3_EXT,
    ][plane]
}

/// The format features `usage` needs.
fn features_for(usage: vk::ImageUsageFlags) -> vk::FormatFeatureFlags {
    use vk::{FormatFeatureFlags as F, ImageUsageFlags as U};
    [
        (U::TRANSFER_SRC, F::TRANSFER_SRC),
        (U::TRANSFER_DST, F::TRANSFER_DST),
        (U::SAMPLED, F::SAMPLED_IMAGE),
        (U::STORAGE, F::STORAGE_IMAGE),
        (U::COLOR_ATTACHMENT, F::COLOR_ATTACHMENT),
        (U::DEPTH_STENCIL_ATTACHMENT, F::DEPTH_STENCIL_ATTACHMENT),
    ]
    .into_iter()
    .filter(|(u, _)| usage.contains(*u))
    .fold(F::empty(), |acc, (_, f)| acc | f)
}

/// One `vkGetPhysicalDeviceImageFormatProperties2` question (dma-buf
/// handle type, DRM modifier tiling), the key of the per-device cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FormatQuestion {
    format: vk::Format,
    modifier: Modifier,
    usage: vk::ImageUsageFlags,
    flags: vk::ImageCreateFlags,
}

/// The driver's answer: `None` (format not supported), or the largest
/// extent and the external memory features.
pub(crate) type FormatAnswer = Option<(vk::Extent3D, vk::ExternalMemoryFeatureFlags)>;

/// What is being asked of the driver, for checks and error reports.
struct Ask {
    op: &'static str,
    mapping: VkFormatMapping,
    modifier: Modifier,
    width: u32,
    height: u32,
    usage: vk::ImageUsageFlags,
}

impl Device {
    fn need_dmabuf_images(&self) -> Result<()> {
        let ext = self.extensions();
        let missing: Vec<&'static str> = [
            (ext.external_memory_fd, ash::khr::external_memory_fd::NAME),
            (
                ext.external_memory_dma_buf,
                ash::ext::external_memory_dma_buf::NAME,
            ),
            (
                ext.image_drm_format_modifier,
                ash::ext::image_drm_format_modifier::NAME,
            ),
        ]
        .into_iter()
        .filter(|(present, _)| !present)
        .map(|(_, name)| name.to_str().unwrap_or("?"))
        .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(self.shared.missing(&missing))
        }
    }

    /// The Vulkan format of `ask`'s DRM format in `encoding`.
    fn mapping_for(&self, ask: &Ask, encoding: Encoding) -> Result<VkFormatMapping> {
        let mapping = to_vk(ask.mapping.fourcc).ok_or_else(|| self.refuse(ask, Refusal::Format))?;
        mapping
            .encoded(encoding)
            .ok_or_else(|| self.refuse(ask, Refusal::NoSrgb))
    }

    fn refuse(&self, ask: &Ask, refusal: Refusal) -> Error {
        Error::Unsupported {
            device: self.shared.info.name.clone(),
            op: ask.op,
            format: ask.mapping.fourcc,
            modifier: ask.modifier,
            width: ask.width,
            height: ask.height,
            usage: ask.usage,
            refusal,
        }
    }

    /// The modifiers the driver offers for `format`, with plane counts and
    /// features (`VkDrmFormatModifierPropertiesListEXT`). Empty for formats
    /// without a Vulkan twin.
    pub fn modifiers(&self, format: Fourcc) -> Result<Vec<ModifierInfo>> {
        self.need_dmabuf_images()?;
        Ok(match to_vk(format) {
            Some(m) => self.modifiers_of(m.format).to_vec(),
            None => Vec::new(),
        })
    }

    /// The driver's modifier list for `format`, asked once per device.
    fn modifiers_of(&self, format: vk::Format) -> Arc<[ModifierInfo]> {
        if let Some(list) = super::device::lock(&self.shared.answers)
            .modifiers
            .get(&format)
        {
            return list.clone();
        }
        let instance = &self.shared.instance.shared.raw;
        let list: Arc<[ModifierInfo]> =
            query_modifiers(instance, self.shared.info.handle(), format).into();
        super::device::lock(&self.shared.answers)
            .modifiers
            .insert(format, list.clone());
        list
    }

    /// Ask the driver whether `ask` can be made, imported or exported as a
    /// dma-buf image with `planes` memory planes (`disjoint`: in separate
    /// dma-bufs).
    fn check(
        &self,
        ask: &Ask,
        offered: &[ModifierInfo],
        planes: Option<usize>,
        disjoint: bool,
    ) -> Result<ModifierInfo> {
        if ask.usage.is_empty() {
            return Err(self.refuse(ask, Refusal::NoUsage));
        }
        if offered.is_empty() {
            return Err(self.refuse(ask, Refusal::Format));
        }
        let Some(info) = offered.iter().find(|m| m.modifier == ask.modifier).copied() else {
            let supported = offered.iter().map(|m| m.modifier).collect();
            return Err(self.refuse(ask, Refusal::Modifier { supported }));
        };
        if let Some(got) = planes {
            if got != info.planes as usize {
                let expected = info.planes;
                return Err(self.refuse(ask, Refusal::PlaneCount { expected, got }));
            }
        }
        let mut needed = features_for(ask.usage);
        if disjoint {
            if !info.features.contains(vk::FormatFeatureFlags::DISJOINT) {
                return Err(self.refuse(ask, Refusal::Disjoint));
            }
            needed |= vk::FormatFeatureFlags::DISJOINT;
        }
        let missing = needed & !info.features;
        if !missing.is_empty() {
            return Err(self.refuse(ask, Refusal::Usage { missing }));
        }
        let flags = if disjoint {
            vk::ImageCreateFlags::DISJOINT
        } else {
            vk::ImageCreateFlags::empty()
        };
        let question = FormatQuestion {
            format: ask.mapping.format,
            modifier: ask.modifier,
            usage: ask.usage,
            flags,
        };
        let (max, features) = match self.image_format(question)? {
            Some(answer) => answer,
            None => return Err(self.refuse(ask, Refusal::External)),
        };

        if ask.width > max.width || ask.height > max.height {
            let (max_width, max_height) = (max.width, max.height);
            return Err(self.refuse(
                ask,
                Refusal::Extent {
                    max_width,
                    max_height,
                },
            ));
        }
        let feature = if ask.op == "import" {
            vk::ExternalMemoryFeatureFlags::IMPORTABLE
        } else {
            vk::ExternalMemoryFeatureFlags::EXPORTABLE
        };
        if !features.contains(feature) {
            return Err(self.refuse(ask, Refusal::External));
        }
        Ok(info)
    }

    /// The driver's answer to `q` (`None`: not supported), asked once per
    /// device: the largest extent and the external memory features.
    fn image_format(&self, q: FormatQuestion) -> Result<FormatAnswer> {
        if let Some(a) = super::device::lock(&self.shared.answers)
            .image_formats
            .get(&q)
        {
            return Ok(*a);
        }
        let mut drm = vk::PhysicalDeviceImageDrmFormatModifierInfoEXT::default()
            .drm_format_modifier(q.modifier.0)
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        let mut external =
            vk::PhysicalDeviceExternalImageFormatInfo::default().handle_type(DMA_BUF);
        let query = vk::PhysicalDeviceImageFormatInfo2::default()
            .format(q.format)
            .ty(vk::ImageType::TYPE_2D)
            .tiling(vk::ImageTiling::DRM_FORMAT_MODIFIER_EXT)
            .usage(q.usage)
            .flags(q.flags)
            .push_next(&mut external)
            .push_next(&mut drm);
        let mut external_props = vk::ExternalImageFormatProperties::default();
        let mut props = vk::ImageFormatProperties2::default().push_next(&mut external_props);
        let instance = &self.shared.instance.shared.raw;
        // SAFETY: valid input and output chains that outlive the call.
        let r = unsafe {
            instance.get_physical_device_image_format_properties2(
                self.shared.info.handle(),
                &query,
                &mut props,
            )
        };
        let answer = match r {
            Ok(()) => Some((
                props.image_format_properties.max_extent,
                external_props
                    .external_memory_properties
                    .external_memory_features,
            )),
            Err(vk::Result::ERROR_FORMAT_NOT_SUPPORTED) => None,
            Err(result) => {
                return Err(Error::Vk {
                    call: "vkGetPhysicalDeviceImageFormatProperties2",
                    result,
                })
            }
        };
        super::device::lock(&self.shared.answers)
            .image_formats
            .insert(q, answer);
        Ok(answer)
    }

    /// Import `dmabuf` as an image for `usage`, with its modifier and
    /// explicit per-plane offsets and strides
    /// (`VkImageDrmFormatModifierExplicitCreateInfoEXT`). Planes in separate
    /// dma-bufs are bound as a disjoint image.
    ///
    /// The image starts owned by the FOREIGN queue family: record
    /// [`Image::cmd_acquire`] before using it, after waiting for the
    /// dma-buf's fences (see [`Submission::wait_for_dmabuf`](super::Submission::wait_for_dmabuf)).
    ///
    /// Refused with [`Error::Unsupported`] when the driver lacks the format,
    /// the modifier, the features `usage` needs, the size, the plane count,
    /// or when the dma-buf is too small for the image.
    pub fn import_dmabuf(&self, dmabuf: &Dmabuf, usage: vk::ImageUsageFlags) -> Result<Image> {
        self.import_dmabuf_as(dmabuf, usage, Encoding::Unorm)
    }

    /// [`Device::import_dmabuf`] with the Vulkan format of `encoding`
    /// (the format's sRGB twin for [`Encoding::Srgb`]; refused with
    /// [`Refusal::NoSrgb`] where there is none, [`Refusal::Format`] where
    /// the driver offers no modifier for it).
    pub fn import_dmabuf_as(
        &self,
        dmabuf: &Dmabuf,
        usage: vk::ImageUsageFlags,
        encoding: Encoding,
    ) -> Result<Image> {
        self.need_dmabuf_images()?;
        let mut ask = Ask {
            op: "import",
            mapping: VkFormatMapping {
                fourcc: dmabuf.format(),
                format: vk::Format::UNDEFINED,
                srgb: None,
                has_alpha: false,
            },
            modifier: dmabuf.modifier(),
            width: dmabuf.width(),
            height: dmabuf.height(),
            usage,
        };
        ask.mapping = self.mapping_for(&ask, encoding)?;
        let planes = dmabuf.planes();
        let disjoint = dmabuf.is_disjoint();
        let offered = self.modifiers_of(ask.mapping.format);
        self.check(&ask, &offered, Some(planes.len()), disjoint)?;

        let layouts: Vec<_> = planes
            .iter()
            .map(|p| vk::SubresourceLayout {
                offset: p.offset().into(),
                size: 0,
                row_pitch: p.stride().into(),
                array_pitch: 0,
                depth_pitch: 0,
            })
            .collect();
        let mut explicit = vk::ImageDrmFormatModifierExplicitCreateInfoEXT::default()
            .drm_format_modifier(ask.modifier.0)
            .plane_layouts(&layouts);
        let mut image = self.create_image(&ask, disjoint, &mut explicit)?;
        image.res.roll_back(Owner::ForeignFirst);

        let raw = &self.shared.raw;
        if disjoint {
            let mut binds = Vec::new();
            for (i, plane) in planes.iter().enumerate() {
                let aspect = memory_plane_aspect(i);
                let mut plane_req =
                    vk::ImagePlaneMemoryRequirementsInfo::default().plane_aspect(aspect);
                let req_info = vk::ImageMemoryRequirementsInfo2::default()
                    .image(image.raw())
                    .push_next(&mut plane_req);
                let mut req = vk::MemoryRequirements2::default();
                // SAFETY: the image is disjoint with this memory plane.
                unsafe { raw.get_image_memory_requirements2(&req_info, &mut req) };
                let mem = self.import_memory(
                    &ask,
                    plane.fd(),
                    plane.buffer_size(),
                    req.memory_requirements,
                    None,
                )?;
                image.res_mut().memory.push(mem);
                binds.push(aspect);
            }
            let mut plane_infos: Vec<_> = binds
                .iter()
                .map(|&a| vk::BindImagePlaneMemoryInfo::default().plane_aspect(a))
                .collect();
            let image_raw = image.raw();
            let infos: Vec<_> = plane_infos
                .iter_mut()
                .zip(&image.res.memory)
                .map(|(p, &m)| {
                    vk::BindImageMemoryInfo::default()
                        .image(image_raw)
                        .memory(m)
                        .push_next(p)
                })
                .collect();
            // SAFETY: each memory was imported for its plane's requirements.
            unsafe { raw.bind_image_memory2(&infos) }.map_err(Error::vk("vkBindImageMemory2"))?;
        } else {
            // SAFETY: a plain query on a live image.
            let req = unsafe { raw.get_image_memory_requirements(image.raw()) };
            let plane = &planes[0];
            let mem = self.import_memory(
                &ask,
                plane.fd(),
                plane.buffer_size(),
                req,
                Some(image.raw()),
            )?;
            image.res_mut().memory.push(mem);
            // SAFETY: the memory was imported for this image's requirements.
            unsafe { raw.bind_image_memory(image.raw(), mem, 0) }
                .map_err(Error::vk("vkBindImageMemory"))?;
        }
        Ok(image)
    }

    fn create_image(
        &self,
        ask: &Ask,
        disjoint: bool,
        modifier_info: &mut dyn vk::ExtendsImageCreateInfo,
    ) -> Result<Image> {
        let mut external = vk::ExternalMemoryImageCreateInfo::default().handle_types(DMA_BUF);
        let flags = if disjoint {
            vk::ImageCreateFlags::DISJOINT
        } else {
            vk::ImageCreateFlags::empty()
        };
        let info = vk::ImageCreateInfo::default()
            .flags(flags)
            .image_type(vk::ImageType::TYPE_2D)
            .format(ask.mapping.format)
            .extent(vk::Extent3D {
                width: ask.width,
                height: ask.height,
                depth: 1,
            })
            .mip_levels(1)
            .array_layers(1)
            .samples(vk::SampleCountFlags::TYPE_1)
            .tiling(vk::ImageTiling::DRM_FORMAT_MODIFIER_EXT)
            .usage(ask.usage)
            .sharing_mode(vk::SharingMode::EXCLUSIVE)
            .initial_layout(vk::ImageLayout::UNDEFINED)
            .push_next(&mut external)
            .push_next(modifier_info);
        // SAFETY: the driver said yes to this combination (check()); the
        // chain outlives the call.
        let raw = unsafe { self.shared.raw.create_image(&info, None) }
            .map_err(Error::vk("vkCreateImage"))?;
        Ok(Image {
            res: Arc::new(ImageResources {
                shared: self.shared.clone(),
                raw,
                memory: Vec::new(),
                owner: Mutex::new(Owner::New),
            }),
            mapping: ask.mapping,
            modifier: ask.modifier,
            width: ask.width,
            height: ask.height,
            usage: ask.usage,
        })
    }

    fn import_memory(
        &self,
        ask: &Ask,
        fd: BorrowedFd<'_>,
        fd_size: u64,
        req: vk::MemoryRequirements,
        dedicated: Option<vk::Image>,
    ) -> Result<vk::DeviceMemory> {
        if req.size > fd_size {
            let (needed, have) = (req.size, fd_size);
            return Err(self.refuse(ask, Refusal::TooSmall { needed, have }));
        }
        let memory_fd = self
            .shared
            .memory_fd
            .as_ref()
            .expect("checked by need_dmabuf_images");
        let dup = rustix::io::fcntl_dupfd_cloexec(fd, 0)
            .map_err(crate::dmabuf::Error::os("fcntl(F_DUPFD_CLOEXEC)"))?;
        let mut fd_props = vk::MemoryFdPropertiesKHR::default();
        // SAFETY: `dup` is an open dma-buf fd; the output struct is valid.
        unsafe { memory_fd.get_memory_fd_properties(DMA_BUF, dup.as_raw_fd(), &mut fd_props) }
            .map_err(Error::vk("vkGetMemoryFdPropertiesKHR"))?;
        let bits = req.memory_type_bits & fd_props.memory_type_bits;
        let Some(memory_type) = self
            .shared
            .memory_type(bits, vk::MemoryPropertyFlags::empty())
        else {
            return Err(self.refuse(ask, Refusal::MemoryType));
        };
        let mut import = vk::ImportMemoryFdInfoKHR::default()
            .handle_type(DMA_BUF)
            .fd(dup.as_raw_fd());
        let mut info = vk::MemoryAllocateInfo::default()
            .allocation_size(req.size)
            .memory_type_index(memory_type)
            .push_next(&mut import);
        let mut dedicated_info;
        if let Some(image) = dedicated {
            dedicated_info = vk::MemoryDedicatedAllocateInfo::default().image(image);
            info = info.push_next(&mut dedicated_info);
        }
        let identity = crate::dmabuf::DmabufId::of(&dup).ok();
        // SAFETY: the import takes a dma-buf fd of at least `req.size`
        // bytes; on success Vulkan owns the fd, so it is released below.
        let result = unsafe { self.shared.raw.allocate_memory(&info, None) };
        let raw = dup.into_raw_fd();
        match result {
            Ok(mem) => Ok(mem), // Vulkan owns `raw` now.
            Err(e) => {
                close_if_still_ours(raw, identity);
                Err(Error::vk("vkAllocateMemory(import dma-buf)")(e))
            }
        }
    }

    /// Allocate an image Vulkan can share: the driver picks one of
    /// `modifiers` (empty: any it offers) that suits `usage` and dma-buf
    /// export; the image comes back with its memory as a [`Dmabuf`]
    /// carrying the chosen modifier and every plane's offset and stride
    /// (`vkGetImageDrmFormatModifierPropertiesEXT`,
    /// `vkGetImageSubresourceLayout` on the memory planes).
    ///
    /// The image starts owned by this device (contents undefined); release
    /// it with [`Image::cmd_release`] before others use the dma-buf.
    pub fn export_image(
        &self,
        width: u32,
        height: u32,
        format: Fourcc,
        modifiers: &[Modifier],
        usage: vk::ImageUsageFlags,
    ) -> Result<(Image, Dmabuf)> {
        self.export_image_as(width, height, format, modifiers, usage, Encoding::Unorm)
    }

    /// [`Device::export_image`] with the Vulkan format of `encoding` (see
    /// [`Device::import_dmabuf_as`]); the dma-buf is `format` either way.
    pub fn export_image_as(
        &self,
        width: u32,
        height: u32,
        format: Fourcc,
        modifiers: &[Modifier],
        usage: vk::ImageUsageFlags,
        encoding: Encoding,
    ) -> Result<(Image, Dmabuf)> {
        self.need_dmabuf_images()?;
        if width == 0 || height == 0 {
            return Err(crate::dmabuf::Error::ZeroSize { width, height }.into());
        }
        let mut ask = Ask {
            op: "export",
            mapping: VkFormatMapping {
                fourcc: format,
                format: vk::Format::UNDEFINED,
                srgb: None,
                has_alpha: false,
            },
            modifier: modifiers.first().copied().unwrap_or(Modifier::INVALID),
            width,
            height,
            usage,
        };
        ask.mapping = self.mapping_for(&ask, encoding)?;
        let offered = self.modifiers_of(ask.mapping.format);
        let candidates: Vec<Modifier> = if modifiers.is_empty() {
            offered.iter().map(|m| m.modifier).collect()
        } else {
            modifiers.to_vec()
        };
        let mut usable = Vec::new();
        let mut first_refusal = None;
        for &m in &candidates {
            let one = Ask { modifier: m, ..ask };
            match self.check(&one, &offered, None, false) {
                Ok(_) => usable.push(m.0),
                Err(e @ Error::Unsupported { .. }) => {
                    first_refusal.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        if usable.is_empty() {
            return Err(first_refusal.unwrap_or_else(|| self.refuse(&ask, Refusal::Format)));
        }
        let mut list =
            vk::ImageDrmFormatModifierListCreateInfoEXT::default().drm_format_modifiers(&usable);
        let mut image = self.create_image(&ask, false, &mut list)?;

        let modifier_fns = self
            .shared
            .modifier
            .as_ref()
            .expect("checked by need_dmabuf_images");
        let mut chosen = vk::ImageDrmFormatModifierPropertiesEXT::default();
        // SAFETY: the image was created with DRM modifier tiling.
        unsafe { modifier_fns.get_image_drm_format_modifier_properties(image.raw(), &mut chosen) }
            .map_err(Error::vk("vkGetImageDrmFormatModifierPropertiesEXT"))?;
        image.modifier = Modifier(chosen.drm_format_modifier);
        let plane_count = offered
            .iter()
            .find(|m| m.modifier == image.modifier)
            .map_or(1, |m| m.planes as usize);

        let raw = &self.shared.raw;
        // SAFETY: a plain query on a live image.
        let req = unsafe { raw.get_image_memory_requirements(image.raw()) };
        let memory_type = self
            .shared
            .memory_type(req.memory_type_bits, vk::MemoryPropertyFlags::DEVICE_LOCAL)
            .ok_or_else(|| self.refuse(&ask, Refusal::MemoryType))?;
        let mut export = vk::ExportMemoryAllocateInfo::default().handle_types(DMA_BUF);
        let mut dedicated = vk::MemoryDedicatedAllocateInfo::default().image(image.raw());
        let info = vk::MemoryAllocateInfo::default()
            .allocation_size(req.size)
            .memory_type_index(memory_type)
            .push_next(&mut export)
            .push_next(&mut dedicated);
        // SAFETY: valid allocation info whose chain outlives the call.
        let mem = unsafe { raw.allocate_memory(&info, None) }
            .map_err(Error::vk("vkAllocateMemory(export dma-buf)"))?;
        image.res_mut().memory.push(mem);
        // SAFETY: the memory was allocated for this image's requirements.
        unsafe { raw.bind_image_memory(image.raw(), mem, 0) }
            .map_err(Error::vk("vkBindImageMemory"))?;

        let memory_fd = self
            .shared
            .memory_fd
            .as_ref()
            .expect("checked by need_dmabuf_images");
        let get = vk::MemoryGetFdInfoKHR::default()
            .memory(mem)
            .handle_type(DMA_BUF);
        // SAFETY: the memory was allocated exportable as a dma-buf.
        let fd = unsafe { memory_fd.get_memory_fd(&get) }.map_err(Error::vk("vkGetMemoryFdKHR"))?;
        let fd = Arc::new(crate::fd::owned_from_kernel(fd));
        let mut builder = Dmabuf::builder(width, height, format, image.modifier);
        for plane in 0..plane_count {
            let sub = vk::ImageSubresource {
                aspect_mask: memory_plane_aspect(plane),
                mip_level: 0,
                array_layer: 0,
            };
            // SAFETY: the image has DRM modifier tiling with this memory plane.
            let layout = unsafe { raw.get_image_subresource_layout(image.raw(), sub) };
            let (offset, stride) = (
                u32::try_from(layout.offset),
                u32::try_from(layout.row_pitch),
            );
            let (Ok(offset), Ok(stride)) = (offset, stride) else {
                return Err(self.refuse(&ask, Refusal::External));
            };
            builder = builder.plane(fd.clone(), offset, stride);
        }
        Ok((image, builder.build()?))
    }
}

impl Image {
    /// The raw handle. Register the image with [`Submission::uses`] when
    /// recording commands that use it (the `cmd_*` methods here do).
    pub fn raw(&self) -> vk::Image {
        self.res.raw
    }

    /// The resources while the image is being built (no submission can
    /// hold them yet).
    fn res_mut(&mut self) -> &mut ImageResources {
        Arc::get_mut(&mut self.res).expect("an image being built is not shared")
    }

    /// The DRM format.
    pub fn format(&self) -> Fourcc {
        self.mapping.fourcc
    }

    /// The Vulkan format and how views should swizzle it.
    pub fn vk_format(&self) -> VkFormatMapping {
        self.mapping
    }

    /// The modifier.
    pub fn modifier(&self) -> Modifier {
        self.modifier
    }

    /// Width and height in pixels.
    pub fn extent(&self) -> vk::Extent2D {
        vk::Extent2D {
            width: self.width,
            height: self.height,
        }
    }

    /// The usage it was made for.
    pub fn usage(&self) -> vk::ImageUsageFlags {
        self.usage
    }

    /// A 2D color view of the whole image (alpha forced to one for `X`
    /// formats, except for images usable as storage or attachments, whose
    /// views must not swizzle: their padding channel holds what is
    /// written).
    ///
    /// A multi-planar YCbCr image needs a sampler YCbCr conversion for its
    /// view, which winsys does not make: refused with
    /// [`Error::ViewNeedsConversion`].
    pub fn create_view(&self) -> Result<ImageView> {
        if self.mapping.fourcc.planes().is_some_and(|p| p.len() > 1) {
            return Err(Error::ViewNeedsConversion {
                format: self.mapping.fourcc,
            });
        }
        let unswizzled = vk::ImageUsageFlags::STORAGE
            | vk::ImageUsageFlags::COLOR_ATTACHMENT
            | vk::ImageUsageFlags::INPUT_ATTACHMENT;
        let components = if self.usage.intersects(unswizzled) {
            vk::ComponentMapping::default()
        } else {
            self.mapping.components()
        };
        let info = vk::ImageViewCreateInfo::default()
            .image(self.res.raw)
            .view_type(vk::ImageViewType::TYPE_2D)
            .format(self.mapping.format)
            .components(components)
            .subresource_range(color_range());
        // SAFETY: a valid view of a live image of this device.
        let raw = unsafe { self.res.shared.raw.create_image_view(&info, None) }
            .map_err(Error::vk("vkCreateImageView"))?;
        Ok(ImageView {
            res: Arc::new(ViewResources {
                image: self.res.clone(),
                raw,
            }),
        })
    }

    /// The barrier that makes the image usable here in `new_layout` for
    /// `dst_access`: an ownership transfer from the FOREIGN queue family
    /// (contents kept) for images others have used, a plain transition from
    /// `UNDEFINED` for a new exported image, a layout change otherwise.
    /// Use it in a barrier whose source stage is `TOP_OF_PIPE` after the
    /// submission waits for the dma-buf's fences.
    pub fn acquire_barrier(
        &mut self,
        new_layout: vk::ImageLayout,
        dst_access: vk::AccessFlags,
    ) -> vk::ImageMemoryBarrier<'static> {
        self.acquire_barrier_from(new_layout, dst_access).1
    }

    /// [`Image::acquire_barrier`], also giving the state before it.
    fn acquire_barrier_from(
        &mut self,
        new_layout: vk::ImageLayout,
        dst_access: vk::AccessFlags,
    ) -> (Owner, vk::ImageMemoryBarrier<'static>) {
        let ours = self.res.shared.queue_family;
        let mut owner = super::device::lock(&self.res.owner);
        let before = *owner;
        let (old_layout, src, dst) = match before {
            Owner::New => (
                vk::ImageLayout::UNDEFINED,
                vk::QUEUE_FAMILY_IGNORED,
                vk::QUEUE_FAMILY_IGNORED,
            ),
            Owner::ForeignFirst => (FIRST_ACQUIRE_LAYOUT, self.res.shared.foreign_family(), ours),
            Owner::Foreign => (
                vk::ImageLayout::GENERAL,
                self.res.shared.foreign_family(),
                ours,
            ),
            Owner::Ours(l) => (l, vk::QUEUE_FAMILY_IGNORED, vk::QUEUE_FAMILY_IGNORED),
        };
        *owner = Owner::Ours(new_layout);
        let barrier = vk::ImageMemoryBarrier::default()
            .src_access_mask(vk::AccessFlags::empty())
            .dst_access_mask(dst_access)
            .old_layout(old_layout)
            .new_layout(new_layout)
            .src_queue_family_index(src)
            .dst_queue_family_index(dst)
            .image(self.res.raw)
            .subresource_range(color_range());
        (before, barrier)
    }

    /// The barrier that hands the image to the FOREIGN queue family in
    /// `GENERAL` after writes (or reads) covered by `src_access`; `None` if
    /// the image is not owned here. Use it in a barrier whose destination
    /// stage is `BOTTOM_OF_PIPE`; the submission's signal then orders
    /// external users after it.
    pub fn release_barrier(
        &mut self,
        src_access: vk::AccessFlags,
    ) -> Option<vk::ImageMemoryBarrier<'static>> {
        let mut owner = super::device::lock(&self.res.owner);
        let Owner::Ours(old_layout) = *owner else {
            return None;
        };
        *owner = Owner::Foreign;
        Some(
            vk::ImageMemoryBarrier::default()
                .src_access_mask(src_access)
                .dst_access_mask(vk::AccessFlags::empty())
                .old_layout(old_layout)
                .new_layout(vk::ImageLayout::GENERAL)
                .src_queue_family_index(self.res.shared.queue_family)
                .dst_queue_family_index(self.res.shared.foreign_family())
                .image(self.res.raw)
                .subresource_range(color_range()),
        )
    }

    /// Record [`Image::acquire_barrier`] into `job`'s command buffer (from
    /// `TOP_OF_PIPE` to `dst_stage`); `job` keeps the image alive until
    /// its work is done.
    ///
    /// The ownership state changes with the recording; if `job` is dropped
    /// unsubmitted (or its submit fails) it is rolled back.
    /// [`Error::WrongDevice`] if `job` is another device's.
    pub fn cmd_acquire(
        &mut self,
        job: &mut Submission<'_>,
        new_layout: vk::ImageLayout,
        dst_stage: vk::PipelineStageFlags,
        dst_access: vk::AccessFlags,
    ) -> Result<()> {
        self.cmd_transition(
            job,
            (
                vk::PipelineStageFlags::TOP_OF_PIPE,
                vk::AccessFlags::empty(),
            ),
            new_layout,
            dst_stage,
            dst_access,
        )
    }

    /// [`Image::cmd_acquire`] ordered after earlier work on this queue:
    /// the barrier's source is `src` (stage, and the accesses to make
    /// visible: e.g. `(TRANSFER, TRANSFER_READ)` before overwriting what
    /// an earlier submission copied from, or `(COLOR_ATTACHMENT_OUTPUT,
    /// COLOR_ATTACHMENT_WRITE)` before copying what was rendered). For an
    /// image that never leaves this device it is a plain layout change.
    pub fn cmd_transition(
        &mut self,
        job: &mut Submission<'_>,
        src: (vk::PipelineStageFlags, vk::AccessFlags),
        new_layout: vk::ImageLayout,
        dst_stage: vk::PipelineStageFlags,
        dst_access: vk::AccessFlags,
    ) -> Result<()> {
        job.check_device(&self.res.shared)?;
        let (before, barrier) = self.acquire_barrier_from(new_layout, dst_access);
        let barrier = barrier.src_access_mask(src.1);
        job.transitioned(self.res.clone(), before);
        job.uses(self)?;
        // SAFETY: the submission's command buffer is recording (it is until
        // submit() consumes the submission) and belongs to this image's
        // device; the barrier names this live image.
        unsafe {
            self.res.shared.raw.cmd_pipeline_barrier(
                job.cmd(),
                src.0,
                dst_stage,
                vk::DependencyFlags::empty(),
                &[],
                &[],
                &[barrier],
            )
        };
        Ok(())
    }

    /// Record [`Image::release_barrier`] into `job`'s command buffer (from
    /// `src_stage` to `BOTTOM_OF_PIPE`; nothing if the image is not owned
    /// here); `job` keeps the image alive until its work is done.
    ///
    /// Rolled back like [`Image::cmd_acquire`] if `job` is not submitted.
    pub fn cmd_release(
        &mut self,
        job: &mut Submission<'_>,
        src_stage: vk::PipelineStageFlags,
        src_access: vk::AccessFlags,
    ) -> Result<()> {
        job.check_device(&self.res.shared)?;
        let before = *super::device::lock(&self.res.owner);
        let Some(barrier) = self.release_barrier(src_access) else {
            return Ok(());
        };
        job.transitioned(self.res.clone(), before);
        job.uses(self)?;
        // SAFETY: as in cmd_acquire.
        unsafe {
            self.res.shared.raw.cmd_pipeline_barrier(
                job.cmd(),
                src_stage,
                vk::PipelineStageFlags::BOTTOM_OF_PIPE,
                vk::DependencyFlags::empty(),
                &[],
                &[],
                &[barrier],
            )
        };
        Ok(())
    }
}

/// The whole color subresource of a single-level, single-layer image.
pub fn color_range() -> vk::ImageSubresourceRange {
    vk::ImageSubresourceRange {
        aspect_mask: vk::ImageAspectFlags::COLOR,
        base_mip_level: 0,
        level_count: 1,
        base_array_layer: 0,
        layer_count: 1,
    }
}

/// After a failed import, close `raw` if it is still the dma-buf it was.
///
/// The spec leaves the fd with the caller when an import fails, but
/// lavapipe 25 (`lvp_AllocateMemory`) closes it anyway. Closing it again
/// could close an fd another thread has opened since under the same
/// number, so it is closed only if it still refers to the same dma-buf
/// (`fstat` identity); otherwise it is left alone.
fn close_if_still_ours(raw: std::os::fd::RawFd, identity: Option<crate::dmabuf::DmabufId>) {
    // SAFETY: the borrow lives only for this `fstat` (DmabufId::of), which
    // answers EBADF for a closed number and touches no memory through it.
    let now = crate::dmabuf::DmabufId::of(unsafe { BorrowedFd::borrow_raw(raw) }).ok();
    if identity.is_some() && now == identity {
        // SAFETY: `raw` is open and is the dup made above, which nothing
        // else owns (the failed import did not take it).
        drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) });
    }
}

impl Device {
    /// Read `image` back to the CPU: its pixels, rows packed, copied on the
    /// GPU into host memory after `dmabuf`'s writers are done (the
    /// implicit fences become a wait, see
    /// [`Submission::wait_for_dmabuf`]), waiting at most `timeout` (`None`:
    /// no limit).
    ///
    /// For checking what an import sees (tests, `winsys interop`); one
    /// submission and one host buffer per call. Single-plane formats only
    /// ([`Error::ViewNeedsConversion`] names multi-plane ones). If the wait
    /// times out the host buffer is leaked, never freed while the GPU may
    /// still write it.
    pub fn read_pixels(
        &self,
        image: &mut Image,
        dmabuf: &Dmabuf,
        timeout: Option<std::time::Duration>,
    ) -> Result<Vec<u8>> {
        let format = image.format();
        let cpp = match format.planes() {
            Some([one]) => one.cpp as u64,
            _ => return Err(Error::ViewNeedsConversion { format }),
        };
        let extent = image.extent();
        let size = extent.width as u64 * extent.height as u64 * cpp;
        let raw = &self.shared.raw;
        let info = vk::BufferCreateInfo::default()
            .size(size)
            .usage(vk::BufferUsageFlags::TRANSFER_DST);
        // SAFETY: a valid create info on this device.
        let buffer =
            unsafe { raw.create_buffer(&info, None) }.map_err(Error::vk("vkCreateBuffer"))?;
        // SAFETY: `buffer` was just made on this device.
        let req = unsafe { raw.get_buffer_memory_requirements(buffer) };
        let want = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
        let types =
            &self.shared.memory.memory_types[..self.shared.memory.memory_type_count as usize];
        let Some(index) = (0..types.len()).find(|&i| {
            req.memory_type_bits & (1 << i) != 0 && types[i].property_flags.contains(want)
        }) else {
            // SAFETY: unused buffer of this device.
            unsafe { raw.destroy_buffer(buffer, None) };
            return Err(Error::NoDevice(
                "memory that is host-visible and coherent".into(),
            ));
        };
        let alloc = vk::MemoryAllocateInfo::default()
            .allocation_size(req.size)
            .memory_type_index(index as u32);
        // SAFETY: a valid allocate info; bound to the unused buffer once.
        let memory = match unsafe { raw.allocate_memory(&alloc, None) } {
            Ok(m) => m,
            Err(e) => {
                // SAFETY: unused buffer of this device.
                unsafe { raw.destroy_buffer(buffer, None) };
                return Err(Error::vk("vkAllocateMemory(host)")(e));
            }
        };
        let free = || {
            // SAFETY: no submission uses them (never submitted, or waited).
            unsafe {
                raw.destroy_buffer(buffer, None);
                raw.free_memory(memory, None);
            }
        };
        // SAFETY: fresh buffer and memory of this device, bound once.
        if let Err(e) = unsafe { raw.bind_buffer_memory(buffer, memory, 0) } {
            free();
            return Err(Error::vk("vkBindBufferMemory")(e));
        }
        let recorded = (|| -> Result<super::Pending> {
            let mut job = self.submission()?;
            job.timeout(timeout);
            job.wait_for_dmabuf(
                dmabuf,
                crate::dmabuf::Access::Read,
                vk::PipelineStageFlags::TRANSFER,
            )?;
            image.cmd_acquire(
                &mut job,
                vk::ImageLayout::TRANSFER_SRC_OPTIMAL,
                vk::PipelineStageFlags::TRANSFER,
                vk::AccessFlags::TRANSFER_READ,
            )?;
            let region = vk::BufferImageCopy::default()
                .image_subresource(
                    vk::ImageSubresourceLayers::default()
                        .aspect_mask(vk::ImageAspectFlags::COLOR)
                        .layer_count(1),
                )
                .image_extent(vk::Extent3D {
                    width: extent.width,
                    height: extent.height,
                    depth: 1,
                });
            let barrier = vk::MemoryBarrier::default()
                .src_access_mask(vk::AccessFlags::TRANSFER_WRITE)
                .dst_access_mask(vk::AccessFlags::HOST_READ);
            // SAFETY: the job records on this device; the image is in
            // TRANSFER_SRC_OPTIMAL (acquired above); the buffer holds the
            // whole packed image.
            unsafe {
                raw.cmd_copy_image_to_buffer(
                    job.cmd(),
                    image.raw(),
                    vk::ImageLayout::TRANSFER_SRC_OPTIMAL,
                    buffer,
                    &[region],
                );
                raw.cmd_pipeline_barrier(
                    job.cmd(),
                    vk::PipelineStageFlags::TRANSFER,
                    vk::PipelineStageFlags::HOST,
                    vk::DependencyFlags::empty(),
                    &[barrier],
                    &[],
                    &[],
                );
            }
            image.cmd_release(
                &mut job,
                vk::PipelineStageFlags::TRANSFER,
                vk::AccessFlags::TRANSFER_READ,
            )?;
            job.submit()
        })();
        let pending = match recorded {
            Ok(p) => p,
            Err(e) => {
                free();
                return Err(e);
            }
        };
        // On a timeout the GPU may still write the buffer: leak it.
        pending.wait(timeout)?;
        // SAFETY: the copy is done; the memory is host-visible, mapped
        // once here and unmapped before it is freed.
        let bytes = unsafe {
            let ptr = raw
                .map_memory(memory, 0, size, vk::MemoryMapFlags::empty())
                .map_err(Error::vk("vkMapMemory"));
            let out =
                ptr.map(|p| std::slice::from_raw_parts(p.cast::<u8>(), size as usize).to_vec());
            if out.is_ok() {
                raw.unmap_memory(memory);
            }
            out
        };
        free();
        bytes
    }
}
