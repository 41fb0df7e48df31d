//! GLSL → SPIR-V compilation with naga, shared by `build.rs` (which includes
//! this file with `#[path = "src/compile.rs"] mod compile;`) and by the
//! crate's unit tests (which recompile the sources and compare the words with
//! the ones embedded at build time).
//!
//! Everything here is deterministic: the options are spelled out instead of
//! taken from `Default` (naga's SPIR-V writer defaults depend on
//! `debug_assertions`), and no debug info naming files or paths is emitted,
//! so the output is byte-identical on every machine and in every profile.

use naga::back::spv;
use naga::compact::{compact, KeepUnused};
use naga::front::glsl;
use naga::valid::{Capabilities, ValidationFlags, Validator};
use naga::ShaderStage;

/// The GLSL sources in the crate's directory, by file name.
pub const SOURCES: [&str; 3] = ["pattern.comp", "cube.vert", "cube.frag"];

/// The entry point name every shader uses.
pub const ENTRY_POINT: &str = "main";

/// Shader stage for a source file name, chosen from its extension.
pub fn stage_for(name: &str) -> Result<ShaderStage, String> {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("comp") => Ok(ShaderStage::Compute),
        Some("vert") => Ok(ShaderStage::Vertex),
        Some("frag") => Ok(ShaderStage::Fragment),
        _ => Err(format!(
            "{name}: unknown shader extension (want .comp, .vert or .frag)"
        )),
    }
}

/// Compiles one GLSL source (`name` is its file name, used for the stage and
/// in error messages only) to SPIR-V words for Vulkan 1.0 (SPIR-V 1.0).
pub fn compile(name: &str, source: &str) -> Result<Vec<u32>, String> {
    let stage = stage_for(name)?;

    let mut module = glsl::Frontend::default()
        .parse(&glsl::Options::from(stage), source)
        .map_err(|e| e.emit_to_string_with_path(source, name))?;

    // Push constants are "immediates" in naga's terms.
    let mut validator = Validator::new(ValidationFlags::all(), Capabilities::IMMEDIATES);
    validator
        .validate(&module)
        .map_err(|e| e.emit_to_string_with_path(source, name))?;

    // The GLSL frontend leaves the types of every built-in overload it
    // declared in the module (e.g. `image2D` with formats such as `r16f` for
    // `imageStore`), which the SPIR-V writer would declare too, with the
    // capabilities they need. Drop everything the entry point does not use,
    // then validate again for the writer's `ModuleInfo`. (`compact` needs a
    // valid module, hence the first validation.)
    compact(&mut module, KeepUnused::No);
    let info = validator
        .validate(&module)
        .map_err(|e| format!("{name}: invalid after compaction: {e:?}"))?;

    let options = spv::Options {
        lang_version: (1, 0),
        // OpName for variables, functions and varyings only: identifiers from
        // the source, nothing machine-specific. No `ADJUST_COORDINATE_SPACE`:
        // the sources are Vulkan GLSL, so `gl_Position` is passed through as
        // glslang would, without a Y flip.
        flags: spv::WriterFlags::DEBUG | spv::WriterFlags::LABEL_VARYINGS,
        // No binding remapping: with an empty `binding_map`, this makes every
        // resource keep the `set`/`binding` written in the GLSL source.
        fake_missing_bindings: true,
        binding_map: spv::BindingMap::default(),
        // Only the capabilities every Vulkan 1.0 implementation supports
        // without enabling a device feature.
        capabilities: Some(
            [
                spv::Capability::Matrix,
                spv::Capability::Shader,
                spv::Capability::InputAttachment,
                spv::Capability::Sampled1D,
                spv::Capability::Image1D,
                spv::Capability::SampledBuffer,
                spv::Capability::ImageBuffer,
                spv::Capability::ImageQuery,
                spv::Capability::DerivativeControl,
            ]
            .into_iter()
            .collect(),
        ),
        // No `OpSource`/`OpString` with a file name.
        debug_info: None,
        ..spv::Options::default()
    };
    let pipeline = spv::PipelineOptions {
        shader_stage: stage,
        entry_point: ENTRY_POINT.to_string(),
    };
    spv::write_vec(&module, &info, &options, Some(&pipeline))
        .map_err(|e| format!("{name}: SPIR-V generation failed: {e}"))
}
