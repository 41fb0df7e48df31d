//! Compiles the GLSL sources next to this file to SPIR-V with naga.
//!
//! For each source `NAME` it writes, into `OUT_DIR`:
//! - `NAME.spv`: the SPIR-V module as little-endian bytes (for inspection,
//!   e.g. with `spirv-val` or `spirv-dis`);
//! - `NAME.rs`: the same module as a `&[u32]` array literal, which `lib.rs`
//!   `include!`s, so the words are aligned without any unsafe code.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

#[path = "src/compile.rs"]
mod compile;

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/compile.rs");

    for name in compile::SOURCES {
        println!("cargo:rerun-if-changed={name}");
        let path = manifest_dir.join(name);
        let source =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let words = compile::compile(name, &source).unwrap_or_else(|e| panic!("{e}"));
        write_outputs(&out_dir, name, &words);
    }
}

fn write_outputs(out_dir: &Path, name: &str, words: &[u32]) {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let spv = out_dir.join(format!("{name}.spv"));
    fs::write(&spv, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", spv.display()));

    let mut rs = String::with_capacity(words.len() * 12 + 16);
    rs.push_str("&[\n");
    for chunk in words.chunks(8) {
        rs.push_str("   ");
        for w in chunk {
            write!(rs, " {w:#010x},").unwrap();
        }
        rs.push('\n');
    }
    rs.push(']');
    let rs_path = out_dir.join(format!("{name}.rs"));
    fs::write(&rs_path, rs).unwrap_or_else(|e| panic!("writing {}: {e}", rs_path.display()));
}
