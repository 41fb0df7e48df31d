//! `zwp_linux_buffer_params_v1`: a client's planes checked before anything
//! imports them.
//!
//! [`Params`] mirrors the protocol object: [`Params::add`] per plane, then
//! [`Params::create`] once. Every refusal is a [`ParamsError`] naming the
//! problem; [`ParamsError::code`] gives the protocol error to post, or `None`
//! where the protocol wants the non-fatal `failed` event for `create` (and
//! `invalid_wl_buffer` for `create_immed`, see
//! [`ParamsError::create_immed_code`]).
//!
//! The checks are pure functions of the requests and the dma-bufs' sizes,
//! so [`Params`] is generic over what a plane holds: an [`OwnedFd`] in a
//! compositor (sizes from `lseek(SEEK_END)`, after checking that the fd
//! is a dma-buf at all), anything else in tests ([`Params::create_with`]).
//!
//! What is checked, in u64 arithmetic (no sum or product can wrap):
//! - `add`: the object not used yet (`already_used`), `plane_idx` < 4
//!   (`plane_idx`), each plane once (`plane_set`);
//! - `create`: width and height positive (`invalid_dimensions`); a known
//!   format (`invalid_format`); from version 4 the format + modifier pair
//!   advertised, from version 5 one modifier on every plane
//!   (`invalid_format`); planes 0..n without a gap, n = the format's
//!   planes for LINEAR or implicit layouts, at least that for others (their
//!   auxiliary planes), at most 4 (`incomplete`); for every plane the
//!   offset inside its dma-buf and `offset + stride` within it, for the
//!   format's planes `offset + stride * rows` within it with `rows` the
//!   plane's own (subsampled) height, and for LINEAR a stride that holds a
//!   row (`out_of_bounds`); flags only those the protocol defines (`failed`).
//!
//! # Example
//!
//! ```
//! use winsys::format::{Fourcc, Modifier};
//! use winsys::server::params::{Create, Params, ParamsError};
//!
//! // Sizes stand in for the dma-bufs here; a compositor holds OwnedFds.
//! let mut params = Params::new(5);
//! params.add(0, 4096u64, 0, 64, Modifier::LINEAR)?;
//! let create = Create { width: 16, height: 16, format: Fourcc::XRGB8888, flags: 0 };
//! let advertised = |f: Fourcc, m: Modifier| f == Fourcc::XRGB8888 && m == Modifier::LINEAR;
//! let buffer = params.create_with(create, advertised, |size| Ok(*size))?;
//! assert_eq!(buffer.planes.len(), 1);
//! // The object is used now: anything else is `already_used` (code 0).
//! let again = params.add(1, 4096u64, 0, 64, Modifier::LINEAR).unwrap_err();
//! assert_eq!(again.code(), Some(0));
//! # Ok::<(), ParamsError>(())
//! ```

use std::os::fd::{AsFd, OwnedFd};

use crate::dmabuf::{Dmabuf, MAX_PLANES};
use crate::format::{Fourcc, Modifier};

/// `zwp_linux_buffer_params_v1.error` values.
pub mod code {
    /// The params object was already used to create a wl_buffer.
    pub const ALREADY_USED: u32 = 0;
    /// Plane index out of bounds.
    pub const PLANE_IDX: u32 = 1;
    /// The plane index was already set.
    pub const PLANE_SET: u32 = 2;
    /// Missing or too many planes to create a buffer.
    pub const INCOMPLETE: u32 = 3;
    /// Format not supported.
    pub const INVALID_FORMAT: u32 = 4;
    /// Invalid width or height.
    pub const INVALID_DIMENSIONS: u32 = 5;
    /// `offset + stride * height` goes out of dma-buf bounds.
    pub const OUT_OF_BOUNDS: u32 = 6;
    /// An invalid wl_buffer resulted from `create_immed`.
    pub const INVALID_WL_BUFFER: u32 = 7;
}

/// `zwp_linux_buffer_params_v1.flags` bits the protocol defines
/// (`y_invert`, `interlaced`, `bottom_first`).
pub const KNOWN_FLAGS: u32 = 1 | 2 | 4;

/// Why a client's params were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamsError {
    /// A request on params that already created a buffer.
    #[error("the params object was already used to create a wl_buffer")]
    AlreadyUsed,
    /// `add` with a plane index of 4 or more.
    #[error("plane index {index} is out of bounds (at most {MAX_PLANES} planes)")]
    PlaneIdx {
        /// The index asked for.
        index: u32,
    },
    /// `add` for a plane already added.
    #[error("plane {index} was already set")]
    PlaneSet {
        /// The index asked for.
        index: u32,
    },
    /// Width or height not positive.
    #[error("invalid dimensions {width}x{height}")]
    InvalidDimensions {
        /// Width asked for.
        width: i32,
        /// Height asked for.
        height: i32,
    },
    /// A format this library has no layout for.
    #[error("unknown format {0}")]
    UnknownFormat(Fourcc),
    /// A format + modifier pair the compositor did not advertise. A
    /// protocol error from version 4, a `failed` import before.
    #[error("{format} with modifier {modifier} was not advertised")]
    NotAdvertised {
        /// The format.
        format: Fourcc,
        /// The modifier of plane 0.
        modifier: Modifier,
        /// The params object's version.
        version: u32,
    },
    /// Planes with different modifiers (a protocol error from version 5).
    #[error("plane {plane} has modifier {modifier}, plane 0 has {first}")]
    MixedModifiers {
        /// The first plane that differs.
        plane: usize,
        /// Its modifier.
        modifier: Modifier,
        /// Plane 0's modifier.
        first: Modifier,
        /// The params object's version.
        version: u32,
    },
    /// Planes missing (a gap, or fewer than the format has) or too many.
    #[error("{format} with modifier {modifier} needs {needs} plane(s); {got}")]
    Incomplete {
        /// The format.
        format: Fourcc,
        /// The modifier.
        modifier: Modifier,
        /// What the layout needs ("exactly 2", "at least 1").
        needs: String,
        /// What was given ("plane 1 is missing", "3 given").
        got: String,
    },
    /// A plane's bytes reach past its dma-buf, or a LINEAR stride is
    /// smaller than a row.
    #[error("plane {plane}: {what} (offset {offset}, stride {stride}, dma-buf of {size} bytes)")]
    OutOfBounds {
        /// The plane.
        plane: usize,
        /// Which bound failed.
        what: String,
        /// Its offset.
        offset: u32,
        /// Its stride.
        stride: u32,
        /// Its dma-buf's size.
        size: u64,
    },
    /// Flag bits the protocol does not define (a `failed` import).
    #[error("unknown flags {0:#x}")]
    UnknownFlags(u32),
    /// A plane's fd is not a dma-buf (a `failed` import).
    #[error("plane {plane}: {what}")]
    NotDmabuf {
        /// The plane.
        plane: usize,
        /// What the fd is, or the failed check.
        what: String,
    },
}

impl ParamsError {
    /// The `zwp_linux_buffer_params_v1.error` to post ([`code`]), or `None`
    /// where the protocol wants the non-fatal `failed` event instead.
    pub fn code(&self) -> Option<u32> {
        Some(match self {
            ParamsError::AlreadyUsed => code::ALREADY_USED,
            ParamsError::PlaneIdx { .. } => code::PLANE_IDX,
            ParamsError::PlaneSet { .. } => code::PLANE_SET,
            ParamsError::InvalidDimensions { .. } => code::INVALID_DIMENSIONS,
            ParamsError::UnknownFormat(_) => code::INVALID_FORMAT,
            ParamsError::NotAdvertised { version, .. } if *version >= 4 => code::INVALID_FORMAT,
            ParamsError::MixedModifiers { version, .. } if *version >= 5 => code::INVALID_FORMAT,
            ParamsError::Incomplete { .. } => code::INCOMPLETE,
            ParamsError::OutOfBounds { .. } => code::OUT_OF_BOUNDS,
            _ => return None,
        })
    }

    /// The error to post for a refused `create_immed`: [`ParamsError::code`],
    /// or `invalid_wl_buffer` where `create` would send `failed`.
    pub fn create_immed_code(&self) -> u32 {
        self.code().unwrap_or(code::INVALID_WL_BUFFER)
    }
}

/// One plane as `add` gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaneParams<F> {
    /// What holds the plane's memory (an [`OwnedFd`] in a compositor).
    pub fd: F,
    /// Byte offset of the plane's first row.
    pub offset: u32,
    /// Bytes from one row to the next.
    pub stride: u32,
    /// The layout modifier sent with it.
    pub modifier: Modifier,
}

/// The arguments of `create` / `create_immed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Create {
    /// Width in pixels (`int` in the protocol).
    pub width: i32,
    /// Height in pixels.
    pub height: i32,
    /// DRM fourcc.
    pub format: Fourcc,
    /// `zwp_linux_buffer_params_v1.flags` bits.
    pub flags: u32,
}

/// A buffer whose params passed every check.
#[derive(Debug, PartialEq, Eq)]
pub struct Validated<F> {
    /// Width (positive).
    pub width: u32,
    /// Height (positive).
    pub height: u32,
    /// Format.
    pub format: Fourcc,
    /// The one modifier of every plane.
    pub modifier: Modifier,
    /// Flags (known bits only).
    pub flags: u32,
    /// Planes 0..n in order.
    pub planes: Vec<PlaneParams<F>>,
}

impl Validated<OwnedFd> {
    /// The [`Dmabuf`] these planes describe (its builder checks the fds
    /// again; a failure there means the client changed nothing we checked,
    /// so it is a `failed` import).
    pub fn into_dmabuf(self) -> Result<Dmabuf, crate::dmabuf::Error> {
        let mut b = Dmabuf::builder(self.width, self.height, self.format, self.modifier);
        for p in self.planes {
            b = b.plane(p.fd, p.offset, p.stride);
        }
        b.build()
    }
}

/// A `zwp_linux_buffer_params_v1` object's state: planes added so far and
/// whether `create` was asked.
#[derive(Debug)]
pub struct Params<F> {
    version: u32,
    planes: [Option<PlaneParams<F>>; MAX_PLANES],
    used: bool,
}

impl<F> Params<F> {
    /// Params of a `zwp_linux_dmabuf_v1` bound at `version`.
    pub fn new(version: u32) -> Self {
        Params {
            version,
            planes: std::array::from_fn(|_| None),
            used: false,
        }
    }

    /// The `add` request. A refused plane's `fd` is dropped (closed).
    pub fn add(
        &mut self,
        plane_idx: u32,
        fd: F,
        offset: u32,
        stride: u32,
        modifier: Modifier,
    ) -> Result<(), ParamsError> {
        if self.used {
            return Err(ParamsError::AlreadyUsed);
        }
        let slot = usize::try_from(plane_idx)
            .ok()
            .and_then(|i| self.planes.get_mut(i))
            .ok_or(ParamsError::PlaneIdx { index: plane_idx })?;
        if slot.is_some() {
            return Err(ParamsError::PlaneSet { index: plane_idx });
        }
        *slot = Some(PlaneParams {
            fd,
            offset,
            stride,
            modifier,
        });
        Ok(())
    }

    /// The `create` / `create_immed` request, with `advertised` saying which
    /// format + modifier pairs the compositor offered and `size_of` giving
    /// a plane's dma-buf size (or why it has none). The planes are handed
    /// over on success and dropped on refusal; either way the object is used.
    pub fn create_with(
        &mut self,
        create: Create,
        advertised: impl Fn(Fourcc, Modifier) -> bool,
        size_of: impl Fn(&F) -> Result<u64, String>,
    ) -> Result<Validated<F>, ParamsError> {
        if self.used {
            return Err(ParamsError::AlreadyUsed);
        }
        self.used = true;
        let planes: Vec<Option<PlaneParams<F>>> =
            self.planes.iter_mut().map(Option::take).collect();
        validate(self.version, create, planes, advertised, size_of)
    }
}

impl Params<OwnedFd> {
    /// [`Params::create_with`] for fds: each must be a dma-buf (its file
    /// system), and its size is `lseek(SEEK_END)`.
    pub fn create(
        &mut self,
        create: Create,
        advertised: impl Fn(Fourcc, Modifier) -> bool,
    ) -> Result<Validated<OwnedFd>, ParamsError> {
        self.create_with(create, advertised, |fd| {
            crate::dmabuf::dmabuf_size(fd.as_fd()).map_err(|e| match e.for_plane(0) {
                crate::dmabuf::Error::NotDmabuf { what, .. } => {
                    format!("the fd is not a dma-buf but {what}")
                }
                other => other.to_string(),
            })
        })
    }
}

fn validate<F>(
    version: u32,
    create: Create,
    slots: Vec<Option<PlaneParams<F>>>,
    advertised: impl Fn(Fourcc, Modifier) -> bool,
    size_of: impl Fn(&F) -> Result<u64, String>,
) -> Result<Validated<F>, ParamsError> {
    let Create {
        width,
        height,
        format,
        flags,
    } = create;
    if width <= 0 || height <= 0 {
        return Err(ParamsError::InvalidDimensions { width, height });
    }
    let (width, height) = (width as u32, height as u32);
    let infos = format.planes().ok_or(ParamsError::UnknownFormat(format))?;
    // Planes 0..n, no gap.
    let count = slots.iter().take_while(|s| s.is_some()).count();
    let modifier = match slots.first().and_then(Option::as_ref) {
        Some(p) => p.modifier,
        None => Modifier::INVALID,
    };
    let explicit_layout = modifier.is_linear() || modifier == Modifier::INVALID;
    let needs = || {
        if explicit_layout {
            format!("exactly {}", infos.len())
        } else {
            format!("at least {}", infos.len())
        }
    };
    if let Some(gap) = slots[count..].iter().position(Option::is_some) {
        return Err(ParamsError::Incomplete {
            format,
            modifier,
            needs: needs(),
            got: format!(
                "plane {count} is missing while plane {} is set",
                count + gap
            ),
        });
    }
    let count_ok = if explicit_layout {
        count == infos.len()
    } else {
        count >= infos.len()
    };
    if !count_ok {
        return Err(ParamsError::Incomplete {
            format,
            modifier,
            needs: needs(),
            got: format!("{count} given"),
        });
    }
    let planes: Vec<PlaneParams<F>> = slots.into_iter().take(count).flatten().collect();
    if let Some((plane, p)) = planes
        .iter()
        .enumerate()
        .find(|(_, p)| p.modifier != modifier)
    {
        return Err(ParamsError::MixedModifiers {
            plane,
            modifier: p.modifier,
            first: modifier,
            version,
        });
    }
    if !advertised(format, modifier) {
        return Err(ParamsError::NotAdvertised {
            format,
            modifier,
            version,
        });
    }
    for (index, p) in planes.iter().enumerate() {
        let size = size_of(&p.fd).map_err(|what| ParamsError::NotDmabuf { plane: index, what })?;
        let (offset, stride) = (p.offset as u64, p.stride as u64);
        let oob = |what: String| ParamsError::OutOfBounds {
            plane: index,
            what,
            offset: p.offset,
            stride: p.stride,
            size,
        };
        if offset >= size {
            return Err(oob("the offset is not inside the dma-buf".into()));
        }
        if offset + stride > size {
            return Err(oob("offset + stride passes the end".into()));
        }
        if let Some(info) = infos.get(index) {
            let rows = info.height(height) as u64;
            let end = offset + stride * rows;
            if end > size {
                return Err(oob(format!(
                    "offset + stride * {rows} rows = {end} passes the end"
                )));
            }
            let row = info.row_bytes(width);
            if modifier.is_linear() && stride < row {
                return Err(oob(format!("a LINEAR row needs {row} bytes")));
            }
        }
    }
    if flags & !KNOWN_FLAGS != 0 {
        return Err(ParamsError::UnknownFlags(flags));
    }
    Ok(Validated {
        width,
        height,
        format,
        modifier,
        flags,
        planes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const XR: Fourcc = Fourcc::XRGB8888;
    const LINEAR: Modifier = Modifier::LINEAR;

    fn any(_: Fourcc, _: Modifier) -> bool {
        true
    }

    fn size(s: &u64) -> Result<u64, String> {
        Ok(*s)
    }

    fn create(w: i32, h: i32, format: Fourcc) -> Create {
        Create {
            width: w,
            height: h,
            format,
            flags: 0,
        }
    }

    fn one_plane(version: u32, fd: u64, offset: u32, stride: u32) -> Params<u64> {
        let mut p = Params::new(version);
        p.add(0, fd, offset, stride, LINEAR).unwrap();
        p
    }

    #[test]
    fn add_refuses_bad_indices_repeats_and_use_after_create() {
        let mut p = Params::<u64>::new(5);
        assert_eq!(
            p.add(4, 0, 0, 0, LINEAR),
            Err(ParamsError::PlaneIdx { index: 4 })
        );
        assert_eq!(
            p.add(u32::MAX, 0, 0, 0, LINEAR).unwrap_err().code(),
            Some(code::PLANE_IDX)
        );
        p.add(0, 4096, 0, 64, LINEAR).unwrap();
        let e = p.add(0, 4096, 0, 64, LINEAR).unwrap_err();
        assert_eq!(
            (e.code(), e),
            (Some(code::PLANE_SET), ParamsError::PlaneSet { index: 0 })
        );
        p.create_with(create(16, 16, XR), any, size).unwrap();
        assert_eq!(p.add(1, 0, 0, 0, LINEAR), Err(ParamsError::AlreadyUsed));
        let again = p.create_with(create(16, 16, XR), any, size).unwrap_err();
        assert_eq!(again.code(), Some(code::ALREADY_USED));
    }

    #[test]
    fn create_posts_the_protocol_code_of_each_refusal() {
        let cases: Vec<(Params<u64>, Create, Option<u32>)> = vec![
            (
                one_plane(5, 4096, 0, 64),
                create(0, 16, XR),
                Some(code::INVALID_DIMENSIONS),
            ),
            (
                one_plane(5, 4096, 0, 64),
                create(16, -1, XR),
                Some(code::INVALID_DIMENSIONS),
            ),
            (
                one_plane(5, 4096, 0, 64),
                create(16, 16, Fourcc(0x2020_2020)),
                Some(code::INVALID_FORMAT),
            ),
            // NV12 needs two planes.
            (
                one_plane(5, 8192, 0, 64),
                create(16, 16, Fourcc::NV12),
                Some(code::INCOMPLETE),
            ),
            // 16 rows of 64 bytes do not fit in 1000 bytes.
            (
                one_plane(5, 1000, 0, 64),
                create(16, 16, XR),
                Some(code::OUT_OF_BOUNDS),
            ),
            (
                one_plane(5, 4096, 4096, 64),
                create(16, 16, XR),
                Some(code::OUT_OF_BOUNDS),
            ),
            // A 16-pixel XRGB row is 64 bytes.
            (
                one_plane(5, 4096, 0, 32),
                create(16, 16, XR),
                Some(code::OUT_OF_BOUNDS),
            ),
            (
                one_plane(5, 4096, 0, 64),
                Create {
                    flags: 8,
                    ..create(16, 16, XR)
                },
                None,
            ),
        ];
        for (mut params, c, want) in cases {
            let e = params.create_with(c, any, size).unwrap_err();
            assert_eq!(e.code(), want, "{c:?}: {e}");
            assert_eq!(
                e.create_immed_code(),
                want.unwrap_or(code::INVALID_WL_BUFFER)
            );
        }
    }

    #[test]
    fn a_gap_in_the_planes_is_incomplete() {
        let mut p = Params::<u64>::new(5);
        p.add(1, 8192, 0, 64, LINEAR).unwrap();
        let e = p.create_with(create(16, 16, XR), any, size).unwrap_err();
        assert_eq!(e.code(), Some(code::INCOMPLETE), "{e}");
        assert!(e.to_string().contains("plane 0 is missing"), "{e}");
    }

    #[test]
    fn format_and_modifier_rules_follow_the_version() {
        let y_tiled = Modifier((1 << 56) | 2);
        let only_linear = |f: Fourcc, m: Modifier| f == XR && m == LINEAR;
        for (version, want) in [(3, None), (4, Some(code::INVALID_FORMAT))] {
            let mut p = Params::<u64>::new(version);
            p.add(0, 4096, 0, 64, y_tiled).unwrap();
            let e = p
                .create_with(create(16, 16, XR), only_linear, size)
                .unwrap_err();
            assert_eq!(e.code(), want, "v{version}: {e}");
        }
        for (version, want) in [(4, None), (5, Some(code::INVALID_FORMAT))] {
            let mut p = Params::<u64>::new(version);
            p.add(0, 8192, 0, 64, y_tiled).unwrap();
            p.add(1, 8192, 4096, 64, LINEAR).unwrap();
            let e = p.create_with(create(16, 16, XR), any, size).unwrap_err();
            assert!(
                matches!(e, ParamsError::MixedModifiers { plane: 1, .. }),
                "{e}"
            );
            assert_eq!(e.code(), want, "v{version}");
        }
    }

    #[test]
    fn subsampled_planes_are_bounded_by_their_own_rows() {
        // NV12 16x16: 16 luma rows, 8 chroma rows, 64-byte strides.
        let mut p = Params::<u64>::new(5);
        p.add(0, 1536, 0, 64, LINEAR).unwrap();
        p.add(1, 1536, 1024, 64, LINEAR).unwrap();
        let ok = p
            .create_with(create(16, 16, Fourcc::NV12), any, size)
            .unwrap();
        assert_eq!(ok.planes.len(), 2);
        // One byte less and the chroma plane's last row passes the end.
        let mut p = Params::<u64>::new(5);
        p.add(0, 1535, 0, 64, LINEAR).unwrap();
        p.add(1, 1535, 1024, 64, LINEAR).unwrap();
        let e = p
            .create_with(create(16, 16, Fourcc::NV12), any, size)
            .unwrap_err();
        assert!(
            matches!(e, ParamsError::OutOfBounds { plane: 1, .. }),
            "{e}"
        );
    }

    #[test]
    fn tiled_layouts_may_carry_auxiliary_planes() {
        let ccs = Modifier((1 << 56) | 4);
        let mut p = Params::<u64>::new(5);
        p.add(0, 1 << 20, 0, 256, ccs).unwrap();
        p.add(1, 1 << 20, 1 << 19, 128, ccs).unwrap();
        let ok = p.create_with(create(64, 64, XR), any, size).unwrap();
        assert_eq!((ok.modifier, ok.planes.len()), (ccs, 2));
    }

    #[test]
    fn products_and_sums_do_not_wrap() {
        let mut p = Params::<u64>::new(5);
        p.add(0, u64::MAX, u32::MAX, u32::MAX, LINEAR).unwrap();
        // offset + u32::MAX * i32::MAX rows fits in u64, below u64::MAX.
        let r = p.create_with(create(1, i32::MAX, XR), any, size);
        assert!(r.is_ok(), "{r:?}");
        let mut p = Params::<u64>::new(5);
        p.add(0, u32::MAX as u64, u32::MAX - 1, u32::MAX, LINEAR)
            .unwrap();
        let e = p.create_with(create(1, 1, XR), any, size).unwrap_err();
        assert_eq!(e.code(), Some(code::OUT_OF_BOUNDS));
    }

    #[test]
    fn a_plane_that_is_no_dma_buf_fails_without_a_protocol_error() {
        let mut p = one_plane(5, 4096, 0, 64);
        let e = p
            .create_with(create(16, 16, XR), any, |_| Err("a pipe".into()))
            .unwrap_err();
        assert_eq!(e.code(), None);
        assert_eq!(e.create_immed_code(), code::INVALID_WL_BUFFER);
    }

    mod properties {
        use super::{code, Create, Fourcc, Modifier, Params, ParamsError, KNOWN_FLAGS, MAX_PLANES};
        use proptest::prelude::*;

        fn size(s: &u64) -> Result<u64, String> {
            Ok(*s)
        }

        fn modifier() -> impl Strategy<Value = Modifier> {
            prop_oneof![
                Just(Modifier::LINEAR),
                Just(Modifier::INVALID),
                Just(Modifier((1 << 56) | 2)),
                any::<u64>().prop_map(Modifier),
            ]
        }

        fn format() -> impl Strategy<Value = Fourcc> {
            let known: Vec<Fourcc> = Fourcc::known().collect();
            prop_oneof![
                4 => proptest::sample::select(known),
                1 => any::<u32>().prop_map(Fourcc),
            ]
        }

        /// `(plane_idx, size, offset, stride, modifier)` per `add`: half
        /// arbitrary, half planes 0..n with one modifier and sizes that
        /// often fit (so that acceptances are common too).
        fn adds() -> impl Strategy<Value = Vec<(u32, u64, u32, u32, Modifier)>> {
            let idx = prop_oneof![8 => 0u32..4, 1 => 4u32..8, 1 => any::<u32>()];
            let size = prop_oneof![1u64..1 << 16, any::<u64>()];
            let small = prop_oneof![0u32..1 << 12, any::<u32>()];
            let arbitrary =
                proptest::collection::vec((idx, size, small.clone(), small, modifier()), 0..6);
            let regular = (
                1usize..=4,
                modifier(),
                proptest::collection::vec((1u64 << 12..1 << 18, 0u32..1 << 12, 0u32..1 << 10), 4),
            )
                .prop_map(|(n, m, planes)| {
                    planes
                        .into_iter()
                        .take(n)
                        .enumerate()
                        .map(|(i, (size, offset, stride))| (i as u32, size, offset, stride, m))
                        .collect()
                });
            prop_oneof![arbitrary, regular]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            /// Arbitrary requests never panic; a refusal posts a defined
            /// code or `failed`; an acceptance satisfies every rule,
            /// recomputed here in u128.
            #[test]
            fn params_never_panic_and_accept_only_valid_buffers(
                version in 1u32..7,
                adds in adds(),
                width in prop_oneof![4 => 1i32..64, 1 => any::<i32>()],
                height in prop_oneof![4 => 1i32..64, 1 => any::<i32>()],
                format in format(),
                flags in prop_oneof![Just(0u32), 0u32..8, any::<u32>()],
                advertise_all in any::<bool>(),
            ) {
                let mut p = Params::<u64>::new(version);
                for (idx, size, offset, stride, m) in adds {
                    if let Err(e) = p.add(idx, size, offset, stride, m) {
                        prop_assert!(matches!(e.code(), Some(code::PLANE_IDX | code::PLANE_SET)), "{e}");
                    }
                }
                let advertised = |_: Fourcc, m: Modifier| advertise_all || m == Modifier::LINEAR;
                let c = Create { width, height, format, flags };
                match p.create_with(c, advertised, size) {
                    Err(e) => {
                        if let Some(c) = e.code() {
                            prop_assert!(c <= code::OUT_OF_BOUNDS, "{e}");
                        }
                    }
                    Ok(v) => {
                        prop_assert!(width > 0 && height > 0);
                        prop_assert_eq!(flags & !KNOWN_FLAGS, 0);
                        prop_assert!(advertised(v.format, v.modifier));
                        let infos = format.planes().unwrap();
                        let explicit = v.modifier.is_linear() || v.modifier == Modifier::INVALID;
                        prop_assert!(v.planes.len() <= MAX_PLANES);
                        if explicit {
                            prop_assert_eq!(v.planes.len(), infos.len());
                        } else {
                            prop_assert!(v.planes.len() >= infos.len());
                        }
                        for (i, pl) in v.planes.iter().enumerate() {
                            prop_assert_eq!(pl.modifier, v.modifier);
                            let (size, off, stride) = (pl.fd as u128, pl.offset as u128, pl.stride as u128);
                            prop_assert!(off < size && off + stride <= size);
                            if let Some(info) = infos.get(i) {
                                let rows = (v.height as u128).div_ceil(info.vsub as u128);
                                prop_assert!(off + stride * rows <= size);
                                if v.modifier.is_linear() {
                                    let row = (v.width as u128).div_ceil(info.hsub as u128) * info.cpp as u128;
                                    prop_assert!(stride >= row);
                                }
                            }
                        }
                    }
                }
                prop_assert_eq!(p.add(0, 1, 0, 0, Modifier::LINEAR), Err(ParamsError::AlreadyUsed));
            }
        }
    }
}
