//! SPIR-V for winsys's Vulkan side, compiled at build time from the GLSL
//! sources in this crate's directory with the pure-Rust [naga] compiler.
//!
//! Each module is a `&[u32]` of SPIR-V 1.0 words (Vulkan 1.0), ready for
//! `vk::ShaderModuleCreateInfo::code`, with a single entry point named
//! [`ENTRY_POINT`]. The build is reproducible: the same sources give the
//! same words on every machine and in every profile.
//!
//! - [`PATTERN_COMP`]: compute shader filling an `rgba8` storage image with
//!   the test pattern of [`pattern_pixel`] (workgroup [`PATTERN_LOCAL_SIZE`]).
//! - [`CUBE_VERT`], [`CUBE_FRAG`]: the spinning-cube demo's shaders.
//!
//! [naga]: https://crates.io/crates/naga

#![warn(missing_docs)]

use core::ffi::CStr;

/// Name of the entry point of every shader in this crate, for
/// `vk::PipelineShaderStageCreateInfo::name`.
pub const ENTRY_POINT: &CStr = c"main";

/// `pattern.comp`: writes [`pattern_pixel`]`(x, y, seed)` to each pixel of
/// the storage image at set 0, binding 0 (`rgba8`, i.e. an
/// `R8G8B8A8_UNORM` image in `GENERAL` layout).
///
/// Its push-constant block is a single `u32` seed at offset 0 (4 bytes,
/// compute stage). Dispatch
/// `(width.div_ceil(8), height.div_ceil(8), 1)` workgroups (see
/// [`PATTERN_LOCAL_SIZE`]); invocations outside the image do nothing.
pub static PATTERN_COMP: &[u32] = include!(concat!(env!("OUT_DIR"), "/pattern.comp.rs"));

/// Workgroup size `[x, y]` of [`PATTERN_COMP`] (its `local_size_z` is 1).
pub const PATTERN_LOCAL_SIZE: [u32; 2] = [8, 8];

/// `cube.vert`: vertex shader of the spinning cube.
///
/// Vertex inputs: location 0 `vec3` position, location 1 `vec3` colour
/// (e.g. one binding of 6 × `f32`, `R32G32B32_SFLOAT` at offsets 0 and 12).
/// Push constants: a column-major `mat4` MVP at offset 0 (64 bytes, vertex
/// stage), applied as `mvp * vec4(position, 1)` into Vulkan clip space. The
/// colour goes to [`CUBE_FRAG`] at location 0.
pub static CUBE_VERT: &[u32] = include!(concat!(env!("OUT_DIR"), "/cube.vert.rs"));

/// `cube.frag`: fragment shader of the spinning cube; writes the
/// interpolated vertex colour with alpha 1.0 to colour attachment 0.
pub static CUBE_FRAG: &[u32] = include!(concat!(env!("OUT_DIR"), "/cube.frag.rs"));

/// The pixel [`PATTERN_COMP`] writes at `(x, y)` for `seed`, as the bytes of
/// an `R8G8B8A8` image in memory order `[r, g, b, a]`:
///
/// ```text
/// r = (x * 7 + s)            & 255
/// g = (y * 13 + s * 3)       & 255
/// b = ((x ^ y) + s * 5)      & 255
/// a = (x + 2 * y + s * 11)   & 255
/// ```
///
/// with wrapping 32-bit unsigned arithmetic, as in the shader.
///
/// ```
/// assert_eq!(winsys_shaders::pattern_pixel(1, 2, 3), [10, 35, 18, 38]);
/// ```
pub fn pattern_pixel(x: u32, y: u32, seed: u32) -> [u8; 4] {
    let s = seed;
    let r = x.wrapping_mul(7).wrapping_add(s);
    let g = y.wrapping_mul(13).wrapping_add(s.wrapping_mul(3));
    let b = (x ^ y).wrapping_add(s.wrapping_mul(5));
    let a = x
        .wrapping_add(y.wrapping_mul(2))
        .wrapping_add(s.wrapping_mul(11));
    [r as u8, g as u8, b as u8, a as u8]
}

#[cfg(test)]
#[path = "compile.rs"]
mod compile;

#[cfg(test)]
mod tests {
    use super::*;

    const SPIRV_MAGIC: u32 = 0x0723_0203;

    fn embedded(name: &str) -> &'static [u32] {
        match name {
            "pattern.comp" => PATTERN_COMP,
            "cube.vert" => CUBE_VERT,
            "cube.frag" => CUBE_FRAG,
            _ => panic!("no embedded module for {name}"),
        }
    }

    fn source(name: &str) -> &'static str {
        match name {
            "pattern.comp" => include_str!("../pattern.comp"),
            "cube.vert" => include_str!("../cube.vert"),
            "cube.frag" => include_str!("../cube.frag"),
            _ => panic!("no source for {name}"),
        }
    }

    #[test]
    fn pattern_known_values() {
        assert_eq!(pattern_pixel(0, 0, 0), [0, 0, 0, 0]);
        assert_eq!(pattern_pixel(1, 2, 3), [10, 35, 18, 38]);
        assert_eq!(pattern_pixel(100, 50, 7), [195, 159, 121, 21]);
        assert_eq!(pattern_pixel(3, 0, 1), [22, 3, 8, 14]);
        // Wrapping arithmetic, as in GLSL.
        assert_eq!(pattern_pixel(u32::MAX, 0, 0), [249, 0, 255, 255]);
    }

    #[test]
    fn header_is_spirv_1_0() {
        for name in compile::SOURCES {
            let words = embedded(name);
            assert!(words.len() > 5, "{name}: too short");
            assert_eq!(words[0], SPIRV_MAGIC, "{name}: magic");
            assert_eq!(words[1], 0x0001_0000, "{name}: SPIR-V version");
        }
    }

    #[test]
    fn recompiling_gives_identical_words() {
        for name in compile::SOURCES {
            let words = compile::compile(name, source(name)).unwrap();
            assert!(words == embedded(name), "{name}: recompiled words differ");
        }
    }

    #[test]
    fn entry_point_names_agree() {
        assert_eq!(ENTRY_POINT.to_str().unwrap(), compile::ENTRY_POINT);
    }

    #[test]
    fn spirv_parses_back_and_validates() {
        use naga::valid::{Capabilities, ValidationFlags, Validator};

        for name in compile::SOURCES {
            let bytes: Vec<u8> = embedded(name)
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect();
            let options = naga::front::spv::Options {
                adjust_coordinate_space: false,
                strict_capabilities: true,
                block_ctx_dump_prefix: None,
            };
            let module = naga::front::spv::parse_u8_slice(&bytes, &options)
                .unwrap_or_else(|e| panic!("{name}: naga cannot parse its SPIR-V back: {e}"));
            Validator::new(ValidationFlags::all(), Capabilities::IMMEDIATES)
                .validate(&module)
                .unwrap_or_else(|e| panic!("{name}: parsed-back module invalid: {e}"));

            assert_eq!(module.entry_points.len(), 1, "{name}");
            let ep = &module.entry_points[0];
            assert_eq!(ep.name, compile::ENTRY_POINT, "{name}");
            assert_eq!(ep.stage, compile::stage_for(name).unwrap(), "{name}");
            if name == "pattern.comp" {
                let [x, y] = PATTERN_LOCAL_SIZE;
                assert_eq!(ep.workgroup_size, [x, y, 1]);
            }
        }
    }
}
