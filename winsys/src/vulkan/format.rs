//! DRM fourcc <-> `VkFormat`.
//!
//! DRM codes name packed little-endian words (`ARGB8888` = bytes B, G, R, A
//! in memory); Vulkan's `*_UNORM` names list components in memory order for
//! byte-per-component formats (`B8G8R8A8_UNORM`) and from the high bit for
//! `*_PACK16/32` formats. Formats with an `X` channel map to the same
//! `VkFormat` as their `A` twin, with [`VkFormatMapping::components`]
//! forcing alpha to one when sampling. Multi-planar YCbCr formats are
//! listed where Vulkan has an exact twin (NV21 and YVU420 have none: their
//! chroma planes are swapped).

use ash::vk;

use crate::format::Fourcc;

/// The Vulkan format of a DRM format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VkFormatMapping {
    /// The DRM format.
    pub fourcc: Fourcc,
    /// Its Vulkan format.
    pub format: vk::Format,
    /// The sRGB twin, where Vulkan has one.
    pub srgb: Option<vk::Format>,
    /// Whether the alpha channel means alpha (`false` for `X` formats).
    pub has_alpha: bool,
}

impl VkFormatMapping {
    /// The component mapping for views: identity, with alpha forced to one
    /// for formats whose fourth channel is padding.
    pub fn components(&self) -> vk::ComponentMapping {
        let a = if self.has_alpha {
            vk::ComponentSwizzle::IDENTITY
        } else {
            vk::ComponentSwizzle::ONE
        };
        vk::ComponentMapping {
            r: vk::ComponentSwizzle::IDENTITY,
            g: vk::ComponentSwizzle::IDENTITY,
            b: vk::ComponentSwizzle::IDENTITY,
            a,
        }
    }
}

macro_rules! table {
    ($( $fourcc:ident => $vk:ident, $srgb:expr, $alpha:literal; )+) => {
        const TABLE: &[VkFormatMapping] = &[
            $( VkFormatMapping {
                fourcc: Fourcc::$fourcc,
                format: vk::Format::$vk,
                srgb: $srgb,
                has_alpha: $alpha,
            }, )+
        ];
    };
}

table! {
    ARGB8888 => B8G8R8A8_UNORM, Some(vk::Format::B8G8R8A8_SRGB), true;
    XRGB8888 => B8G8R8A8_UNORM, Some(vk::Format::B8G8R8A8_SRGB), false;
    ABGR8888 => R8G8B8A8_UNORM, Some(vk::Format::R8G8B8A8_SRGB), true;
    XBGR8888 => R8G8B8A8_UNORM, Some(vk::Format::R8G8B8A8_SRGB), false;
    RGB888 => B8G8R8_UNORM, Some(vk::Format::B8G8R8_SRGB), false;
    BGR888 => R8G8B8_UNORM, Some(vk::Format::R8G8B8_SRGB), false;
    RGB565 => R5G6B5_UNORM_PACK16, None, false;
    BGR565 => B5G6R5_UNORM_PACK16, None, false;
    ARGB1555 => A1R5G5B5_UNORM_PACK16, None, true;
    XRGB1555 => A1R5G5B5_UNORM_PACK16, None, false;
    RGBA5551 => R5G5B5A1_UNORM_PACK16, None, true;
    RGBX5551 => R5G5B5A1_UNORM_PACK16, None, false;
    ARGB2101010 => A2R10G10B10_UNORM_PACK32, None, true;
    XRGB2101010 => A2R10G10B10_UNORM_PACK32, None, false;
    ABGR2101010 => A2B10G10R10_UNORM_PACK32, None, true;
    XBGR2101010 => A2B10G10R10_UNORM_PACK32, None, false;
    ABGR16161616 => R16G16B16A16_UNORM, None, true;
    XBGR16161616 => R16G16B16A16_UNORM, None, false;
    ABGR16161616F => R16G16B16A16_SFLOAT, None, true;
    XBGR16161616F => R16G16B16A16_SFLOAT, None, false;
    R8 => R8_UNORM, None, false;
    GR88 => R8G8_UNORM, None, false;
    R16 => R16_UNORM, None, false;
    GR1616 => R16G16_UNORM, None, false;
    YUYV => G8B8G8R8_422_UNORM, None, false;
    UYVY => B8G8R8G8_422_UNORM, None, false;
    NV12 => G8_B8R8_2PLANE_420_UNORM, None, false;
    NV16 => G8_B8R8_2PLANE_422_UNORM, None, false;
    P010 => G10X6_B10X6R10X6_2PLANE_420_UNORM_3PACK16, None, false;
    YUV420 => G8_B8_R8_3PLANE_420_UNORM, None, false;
    YUV444 => G8_B8_R8_3PLANE_444_UNORM, None, false;
}

/// The Vulkan format for `fourcc`, if it has one.
pub fn to_vk(fourcc: Fourcc) -> Option<VkFormatMapping> {
    TABLE.iter().find(|m| m.fourcc == fourcc).copied()
}

/// How an image's colour values are stored: the same bytes, two Vulkan
/// formats. With [`Encoding::Srgb`] the image has the format's sRGB twin
/// (`B8G8R8A8_SRGB` for `XRGB8888`): the GPU encodes what shaders, clears
/// and blits write, and a compositor that reads the buffer as the DRM
/// format shows it as sRGB content, which is what a Wayland surface
/// without a colour-management description holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// The format as it is (`*_UNORM`).
    #[default]
    Unorm,
    /// Its sRGB twin (`*_SRGB`), where Vulkan has one.
    Srgb,
}

impl VkFormatMapping {
    /// This mapping with `encoding`'s Vulkan format (`None`: the format
    /// has no sRGB twin).
    pub fn encoded(self, encoding: Encoding) -> Option<VkFormatMapping> {
        match encoding {
            Encoding::Unorm => Some(self),
            Encoding::Srgb => self.srgb.map(|format| VkFormatMapping { format, ..self }),
        }
    }
}

/// Whether an image's alpha channel carries meaning, which picks the `A`
/// or the `X` DRM format for one Vulkan format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpha {
    /// Alpha is meaningful: `ARGB8888`, `ABGR8888`, ...
    Used,
    /// Alpha is padding: `XRGB8888`, `XBGR8888`, ...
    Ignored,
}

/// The DRM format for a Vulkan format (UNORM or sRGB): the `A` variant for
/// [`Alpha::Used`], else the `X` one where it exists.
pub fn from_vk(format: vk::Format, alpha: Alpha) -> Option<Fourcc> {
    let alpha = alpha == Alpha::Used;
    let matches = |m: &&VkFormatMapping| m.format == format || m.srgb == Some(format);
    let mut candidates = TABLE.iter().filter(matches);
    let first = candidates.next()?;
    Some(
        std::iter::once(first)
            .chain(candidates)
            .find(|m| m.has_alpha == alpha)
            .unwrap_or(first)
            .fourcc,
    )
}

/// Every DRM format that has a Vulkan format.
pub fn all() -> impl Iterator<Item = VkFormatMapping> {
    TABLE.iter().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alpha_of(m: &VkFormatMapping) -> Alpha {
        if m.has_alpha {
            Alpha::Used
        } else {
            Alpha::Ignored
        }
    }

    #[test]
    fn every_mapping_round_trips_to_itself_or_its_alpha_twin() {
        for m in all() {
            assert_eq!(
                from_vk(m.format, alpha_of(&m)),
                Some(m.fourcc),
                "{}",
                m.fourcc
            );
            if let Some(srgb) = m.srgb {
                assert_eq!(from_vk(srgb, alpha_of(&m)), Some(m.fourcc));
            }
        }
    }

    #[test]
    fn byte_order_matches_drm_little_endian_words() {
        assert_eq!(
            to_vk(Fourcc::XRGB8888).unwrap().format,
            vk::Format::B8G8R8A8_UNORM
        );
        assert_eq!(
            to_vk(Fourcc::ABGR8888).unwrap().format,
            vk::Format::R8G8B8A8_UNORM
        );
        assert_eq!(
            from_vk(vk::Format::B8G8R8A8_SRGB, Alpha::Ignored),
            Some(Fourcc::XRGB8888)
        );
        assert_eq!(from_vk(vk::Format::R8_UNORM, Alpha::Used), Some(Fourcc::R8));
        assert!(to_vk(Fourcc::NV21).is_none());
        let x = to_vk(Fourcc::XRGB8888).unwrap().components();
        assert_eq!(x.a, vk::ComponentSwizzle::ONE);
    }
}
