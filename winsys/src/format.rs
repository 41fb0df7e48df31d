//! DRM formats (fourcc codes) and format modifiers, and what the layout
//! checks need to know about each format: planes, bytes per pixel and
//! chroma subsampling. Codes as in `include/uapi/drm/drm_fourcc.h`.

use std::fmt;

/// A DRM fourcc format code, e.g. [`Fourcc::XRGB8888`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct Fourcc(pub u32);

/// A DRM format modifier (tiling/compression layout), e.g.
/// [`Modifier::LINEAR`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(transparent)]
pub struct Modifier(pub u64);

const fn fourcc(code: &[u8; 4]) -> Fourcc {
    Fourcc(code[0] as u32 | (code[1] as u32) << 8 | (code[2] as u32) << 16 | (code[3] as u32) << 24)
}

macro_rules! formats {
    ($( $name:ident = $code:literal, [$( ($cpp:literal, $hsub:literal, $vsub:literal) ),+] ; )+) => {
        impl Fourcc {
            $(
                #[doc = concat!("`DRM_FORMAT_", stringify!($name), "` (`", $code, "`)")]
                pub const $name: Fourcc = fourcc($code.as_bytes().first_chunk::<4>().unwrap());
            )+
        }

        const FORMAT_TABLE: &[(Fourcc, &str, &[PlaneInfo])] = &[
            $( (Fourcc::$name, stringify!($name), &[$( PlaneInfo { cpp: $cpp, hsub: $hsub, vsub: $vsub } ),+]), )+
        ];
    };
}

formats! {
    C8 = "C8  ", [(1, 1, 1)];
    R8 = "R8  ", [(1, 1, 1)];
    R16 = "R16 ", [(2, 1, 1)];
    RG88 = "RG88", [(2, 1, 1)];
    GR88 = "GR88", [(2, 1, 1)];
    GR1616 = "GR32", [(4, 1, 1)];
    RGB565 = "RG16", [(2, 1, 1)];
    BGR565 = "BG16", [(2, 1, 1)];
    XRGB1555 = "XR15", [(2, 1, 1)];
    ARGB1555 = "AR15", [(2, 1, 1)];
    RGBX5551 = "RX15", [(2, 1, 1)];
    RGBA5551 = "RA15", [(2, 1, 1)];
    XRGB4444 = "XR12", [(2, 1, 1)];
    ARGB4444 = "AR12", [(2, 1, 1)];
    RGB888 = "RG24", [(3, 1, 1)];
    BGR888 = "BG24", [(3, 1, 1)];
    XRGB8888 = "XR24", [(4, 1, 1)];
    ARGB8888 = "AR24", [(4, 1, 1)];
    XBGR8888 = "XB24", [(4, 1, 1)];
    ABGR8888 = "AB24", [(4, 1, 1)];
    RGBX8888 = "RX24", [(4, 1, 1)];
    RGBA8888 = "RA24", [(4, 1, 1)];
    BGRX8888 = "BX24", [(4, 1, 1)];
    BGRA8888 = "BA24", [(4, 1, 1)];
    XRGB2101010 = "XR30", [(4, 1, 1)];
    ARGB2101010 = "AR30", [(4, 1, 1)];
    XBGR2101010 = "XB30", [(4, 1, 1)];
    ABGR2101010 = "AB30", [(4, 1, 1)];
    XBGR16161616 = "XB48", [(8, 1, 1)];
    ABGR16161616 = "AB48", [(8, 1, 1)];
    XBGR16161616F = "XB4H", [(8, 1, 1)];
    ABGR16161616F = "AB4H", [(8, 1, 1)];
    YUYV = "YUYV", [(2, 1, 1)];
    UYVY = "UYVY", [(2, 1, 1)];
    NV12 = "NV12", [(1, 1, 1), (2, 2, 2)];
    NV21 = "NV21", [(1, 1, 1), (2, 2, 2)];
    NV16 = "NV16", [(1, 1, 1), (2, 2, 1)];
    P010 = "P010", [(2, 1, 1), (4, 2, 2)];
    YUV420 = "YU12", [(1, 1, 1), (1, 2, 2), (1, 2, 2)];
    YVU420 = "YV12", [(1, 1, 1), (1, 2, 2), (1, 2, 2)];
    YUV444 = "YU24", [(1, 1, 1), (1, 1, 1), (1, 1, 1)];
}

/// Layout facts about one plane of a format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaneInfo {
    /// Bytes per pixel (per block of one pixel) in this plane.
    pub cpp: u32,
    /// Horizontal subsampling (2 for 4:2:x chroma).
    pub hsub: u32,
    /// Vertical subsampling.
    pub vsub: u32,
}

impl PlaneInfo {
    /// Width of this plane in pixels for an image `width` wide.
    pub fn width(&self, width: u32) -> u32 {
        width.div_ceil(self.hsub)
    }

    /// Height of this plane in rows for an image `height` high.
    pub fn height(&self, height: u32) -> u32 {
        height.div_ceil(self.vsub)
    }

    /// Bytes of one row of pixels (no padding).
    pub fn row_bytes(&self, width: u32) -> u64 {
        self.width(width) as u64 * self.cpp as u64
    }
}

impl Fourcc {
    /// The planes of this format, or `None` for a format winsys does not
    /// know.
    pub fn planes(self) -> Option<&'static [PlaneInfo]> {
        FORMAT_TABLE
            .iter()
            .find(|(f, _, _)| *f == self)
            .map(|(_, _, p)| *p)
    }

    /// The `DRM_FORMAT_*` name without prefix, if known.
    pub fn name(self) -> Option<&'static str> {
        FORMAT_TABLE
            .iter()
            .find(|(f, _, _)| *f == self)
            .map(|(_, n, _)| *n)
    }

    /// Every format winsys knows the layout of.
    pub fn known() -> impl Iterator<Item = Fourcc> {
        FORMAT_TABLE.iter().map(|(f, _, _)| *f)
    }

    /// The four characters of the code.
    pub fn chars(self) -> [u8; 4] {
        self.0.to_le_bytes()
    }
}

/// The ecosystem's format type (`drm-fourcc`, used by `gbm`, `drm` and
/// Smithay): every code it names converts; one it does not know is its
/// `UnrecognizedFourcc` error.
impl TryFrom<Fourcc> for drm_fourcc::DrmFourcc {
    type Error = drm_fourcc::UnrecognizedFourcc;

    fn try_from(f: Fourcc) -> Result<Self, Self::Error> {
        drm_fourcc::DrmFourcc::try_from(f.0)
    }
}

impl From<drm_fourcc::DrmFourcc> for Fourcc {
    fn from(f: drm_fourcc::DrmFourcc) -> Self {
        Fourcc(f as u32)
    }
}

impl From<Fourcc> for u32 {
    fn from(f: Fourcc) -> u32 {
        f.0
    }
}

impl From<Modifier> for drm_fourcc::DrmModifier {
    fn from(m: Modifier) -> Self {
        drm_fourcc::DrmModifier::from(m.0)
    }
}

impl From<drm_fourcc::DrmModifier> for Modifier {
    fn from(m: drm_fourcc::DrmModifier) -> Self {
        Modifier(m.into())
    }
}

impl From<Modifier> for u64 {
    fn from(m: Modifier) -> u64 {
        m.0
    }
}

impl fmt::Debug for Fourcc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Fourcc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chars = self.chars();
        if chars.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
            let code = String::from_utf8_lossy(&chars);
            match self.name() {
                Some(name) => write!(f, "{name} ('{code}')"),
                None => write!(f, "'{code}'"),
            }
        } else {
            write!(f, "{:#010x}", self.0)
        }
    }
}

impl Modifier {
    /// `DRM_FORMAT_MOD_LINEAR`: rows one after another, `stride` apart.
    pub const LINEAR: Modifier = Modifier(0);
    /// `DRM_FORMAT_MOD_INVALID`: no explicit modifier; the layout is implied
    /// by the driver (the "implicit modifier").
    pub const INVALID: Modifier = Modifier((1 << 56) - 1);

    /// The vendor byte (`fourcc_mod_get_vendor`).
    pub fn vendor(self) -> u8 {
        (self.0 >> 56) as u8
    }

    /// Whether the layout is known to be linear (so offsets and strides say
    /// everything about it).
    pub fn is_linear(self) -> bool {
        self == Modifier::LINEAR
    }
}

impl fmt::Debug for Modifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Modifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Modifier::LINEAR => f.write_str("LINEAR"),
            Modifier::INVALID => f.write_str("INVALID (implicit)"),
            Modifier(m) => write!(f, "{m:#018x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drm_fourcc_conversions_round_trip() {
        use drm_fourcc::{DrmFourcc, DrmModifier};
        let mut unknown_to_them = Vec::new();
        for f in Fourcc::known() {
            match DrmFourcc::try_from(f) {
                Ok(theirs) => {
                    assert_eq!(Fourcc::from(theirs), f);
                    assert_eq!(theirs as u32, u32::from(f));
                }
                Err(e) => {
                    assert_eq!(e.0, f.0);
                    unknown_to_them.push(f);
                }
            }
        }
        // drm-fourcc 2.2 predates these two 16-bit-per-channel formats.
        assert_eq!(
            unknown_to_them,
            [Fourcc::XBGR16161616, Fourcc::ABGR16161616]
        );
        assert!(DrmFourcc::try_from(Fourcc(0x1234_5678)).is_err());
        assert_eq!(DrmModifier::from(Modifier::LINEAR), DrmModifier::Linear);
        assert_eq!(DrmModifier::from(Modifier::INVALID), DrmModifier::Invalid);
        let x_tiled = Modifier((1 << 56) | 1);
        assert_eq!(Modifier::from(DrmModifier::from(x_tiled)), x_tiled);
        assert_eq!(DrmModifier::from(x_tiled), DrmModifier::I915_x_tiled);
    }

    #[test]
    fn fourcc_codes_match_drm_fourcc_h() {
        assert_eq!(Fourcc::XRGB8888.0, 0x3432_5258);
        assert_eq!(Fourcc::ARGB8888.0, 0x3432_5241);
        assert_eq!(Fourcc::NV12.0, 0x3231_564e);
        assert_eq!(Fourcc::R8.0, 0x2020_3852);
        assert_eq!(Modifier::INVALID.0, 0x00ff_ffff_ffff_ffff);
    }

    #[test]
    fn plane_layouts_account_for_subsampling() {
        let nv12 = Fourcc::NV12.planes().unwrap();
        assert_eq!(nv12.len(), 2);
        assert_eq!(nv12[1].row_bytes(641), 642);
        assert_eq!(nv12[1].height(481), 241);
        assert_eq!(Fourcc::XRGB8888.planes().unwrap()[0].row_bytes(256), 1024);
        assert!(Fourcc(0x1234_5678).planes().is_none());
    }

    #[test]
    fn formats_print_name_and_code() {
        assert_eq!(Fourcc::XRGB8888.to_string(), "XRGB8888 ('XR24')");
        assert_eq!(Modifier::LINEAR.to_string(), "LINEAR");
    }
}
