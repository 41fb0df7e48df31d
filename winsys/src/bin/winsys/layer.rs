//! `winsys layer install | uninstall`: the loader manifest of
//! `VK_LAYER_WINSYS_wsi` (the `winsys-layer` crate's
//! `libVkLayer_winsys.so`), and what `winsys info` says about it.
//!
//! ```text
//! winsys layer install [--explicit] [--dir DIR] [--library PATH]
//! winsys layer uninstall [--explicit] [--dir DIR]
//! ```
//!
//! By default an *implicit* layer is installed for the user
//! (`$XDG_DATA_HOME/vulkan/implicit_layer.d`, `~/.local/share` without
//! it), off unless `WINSYS_LAYER=1` is set (and off with
//! `WINSYS_LAYER_DISABLE=1`): one variable puts any app on winsys.
//! `--explicit` writes an explicit layer instead, enabled by name
//! (`VK_INSTANCE_LAYERS=VK_LAYER_WINSYS_wsi`, or
//! `VK_LOADER_LAYERS_ENABLE`). The library defaults to the one built
//! beside this program (`cargo build -p winsys-layer`).

use std::path::{Path, PathBuf};

use crate::json::{Obj, J};

/// The layer's name.
pub const NAME: &str = "VK_LAYER_WINSYS_wsi";
/// The manifest's file name.
pub const MANIFEST: &str = "VkLayer_winsys.json";
/// The library's file name.
pub const LIBRARY: &str = "libVkLayer_winsys.so";
/// Set to 1: the implicit layer is on.
pub const ENABLE_ENV: &str = "WINSYS_LAYER";
/// Set to 1: the implicit layer is off whatever else says.
pub const DISABLE_ENV: &str = "WINSYS_LAYER_DISABLE";

/// The commands of `VK_KHR_swapchain` the layer provides.
const SWAPCHAIN_COMMANDS: [&str; 7] = [
    "vkCreateSwapchainKHR",
    "vkDestroySwapchainKHR",
    "vkGetSwapchainImagesKHR",
    "vkAcquireNextImageKHR",
    "vkQueuePresentKHR",
    "vkAcquireNextImage2KHR",
    "vkGetDeviceGroupSurfacePresentModesKHR",
];

/// The manifest text for `library` (an implicit layer with the enable and
/// disable variables, or an explicit one).
pub fn manifest(library: &Path, implicit: bool) -> String {
    let lib = library
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    let commands: Vec<String> = SWAPCHAIN_COMMANDS
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect();
    let env = if implicit {
        format!(
            ",\n    \"enable_environment\": {{ \"{ENABLE_ENV}\": \"1\" }},\n    \"disable_environment\": {{ \"{DISABLE_ENV}\": \"1\" }}"
        )
    } else {
        String::new()
    };
    format!(
        r#"{{
  "file_format_version": "1.2.0",
  "layer": {{
    "name": "{NAME}",
    "type": "GLOBAL",
    "library_path": "{lib}",
    "api_version": "1.3.0",
    "implementation_version": "1",
    "description": "winsys: VK_KHR_swapchain on Wayland through winsys (drm-syncobj, explicit, implicit or zero-copy wl_shm)",
    "functions": {{ "vkNegotiateLoaderLayerInterfaceVersion": "vkNegotiateLoaderLayerInterfaceVersion" }},
    "instance_extensions": [
      {{ "name": "VK_KHR_surface", "spec_version": "25" }},
      {{ "name": "VK_KHR_wayland_surface", "spec_version": "6" }}
    ],
    "device_extensions": [
      {{ "name": "VK_KHR_swapchain", "spec_version": "70", "entrypoints": [{}] }}
    ]{env}
  }}
}}
"#,
        commands.join(", ")
    )
}

/// Where the user's manifests go: `$XDG_DATA_HOME/vulkan/<kind>_layer.d`.
fn user_dir(implicit: bool) -> Option<PathBuf> {
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(data.join("vulkan").join(kind_dir(implicit)))
}

fn kind_dir(implicit: bool) -> &'static str {
    match implicit {
        true => "implicit_layer.d",
        false => "explicit_layer.d",
    }
}

/// The library built beside this program.
fn default_library() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let lib = exe.parent()?.join(LIBRARY);
    lib.exists().then_some(lib)
}

/// `winsys layer ...`; the exit code.
pub fn command(args: &[String]) -> i32 {
    let has = |flag: &str| crate::has_flag(args, flag);
    let value = |flag: &str| crate::flag_value(args, flag);
    let implicit = !has("--explicit");
    let dir = match value("--dir")
        .map(PathBuf::from)
        .or_else(|| user_dir(implicit))
    {
        Some(d) => d,
        None => {
            eprintln!("winsys layer: neither XDG_DATA_HOME nor HOME is set: give --dir");
            return 2;
        }
    };
    let path = dir.join(MANIFEST);
    match args.first().map(String::as_str) {
        Some("install") => {
            let library = match value("--library")
                .map(PathBuf::from)
                .or_else(default_library)
            {
                Some(l) => l,
                None => {
                    eprintln!(
                        "winsys layer: no {LIBRARY} beside this program: build it \
                         (cargo build -p winsys-layer) or give --library PATH"
                    );
                    return 1;
                }
            };
            let library = match library.canonicalize() {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("winsys layer: {}: {e}", library.display());
                    return 1;
                }
            };
            if let Err(e) = std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(&path, manifest(&library, implicit)))
            {
                eprintln!("winsys layer: cannot write {}: {e}", path.display());
                return 1;
            }
            println!(
                "installed {} (library {})",
                path.display(),
                library.display()
            );
            if implicit {
                println!("run any Vulkan app through winsys: {ENABLE_ENV}=1 APP");
            } else {
                println!(
                    "run any Vulkan app through winsys: VK_ADD_LAYER_PATH={} VK_INSTANCE_LAYERS={NAME} APP",
                    dir.display()
                );
            }
            0
        }
        Some("uninstall") => match std::fs::remove_file(&path) {
            Ok(()) => {
                println!("removed {}", path.display());
                0
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!("not installed ({} does not exist)", path.display());
                0
            }
            Err(e) => {
                eprintln!("winsys layer: cannot remove {}: {e}", path.display());
                1
            }
        },
        _ => {
            eprintln!("{}", crate::USAGE);
            2
        }
    }
}

/// Every directory the loader reads layer manifests from (Linux), with
/// whether its layers are implicit.
fn search_dirs() -> Vec<(PathBuf, bool)> {
    let mut out = Vec::new();
    for var in ["VK_ADD_LAYER_PATH", "VK_LAYER_PATH"] {
        if let Some(v) = std::env::var_os(var) {
            out.extend(std::env::split_paths(&v).map(|p| (p, false)));
        }
    }
    let data_dirs = std::env::var("XDG_DATA_DIRS")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "/usr/local/share:/usr/share".into());
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(home) = user_dir(true).and_then(|d| d.parent().map(Path::to_path_buf)) {
        roots.push(home);
    }
    roots.extend(["/etc/vulkan".into()]);
    roots.extend(data_dirs.split(':').map(|d| Path::new(d).join("vulkan")));
    for root in roots {
        for implicit in [true, false] {
            out.push((root.join(kind_dir(implicit)), implicit));
        }
    }
    out
}

/// `winsys info`'s section: where the layer is installed, whether it is on
/// now, and what it would present with (`swapchain`: what a winsys
/// swapchain gets on the current compositor, the same choice the layer
/// makes for an app there).
pub fn info(swapchain: Option<&J>) -> J {
    let mut found = Vec::new();
    for (dir, implicit) in search_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json")
                && std::fs::read_to_string(&p).is_ok_and(|t| t.contains(NAME))
            {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let library = text
                    .split("\"library_path\"")
                    .nth(1)
                    .and_then(|r| r.split('"').nth(1))
                    .unwrap_or("")
                    .to_string();
                found.push(
                    Obj::default()
                        .set("manifest", p.display().to_string())
                        .set("implicit", implicit)
                        .set("library", library.clone())
                        .set("library_exists", Path::new(&library).exists())
                        .j(),
                );
            }
        }
    }
    let var_has = |var: &str| std::env::var(var).is_ok_and(|v| v.contains(NAME));
    let on_env = std::env::var(ENABLE_ENV).is_ok_and(|v| v == "1")
        && std::env::var(DISABLE_ENV).map_or(true, |v| v != "1");
    let enabled = if found.is_empty() {
        "no (not installed: winsys layer install)".to_string()
    } else if var_has("VK_INSTANCE_LAYERS") || var_has("VK_LOADER_LAYERS_ENABLE") {
        "yes (by name in the environment)".to_string()
    } else if on_env {
        format!("yes ({ENABLE_ENV}=1, where installed as an implicit layer)")
    } else {
        format!("no (set {ENABLE_ENV}=1, or VK_INSTANCE_LAYERS={NAME})")
    };
    let would = match swapchain {
        Some(J::Obj(fields)) => fields
            .iter()
            .find(|(k, _)| k == "sync_mode")
            .map(|(_, v)| match v {
                J::Str(s) => J::from(format!("{s} (what a FIFO swapchain of winsys's gets here)")),
                other => other.clone(),
            })
            .unwrap_or(J::Null),
        Some(J::Str(why)) => J::from(format!("the driver's WSI: {why}")),
        _ => J::from("no compositor (WAYLAND_DISPLAY is not set)"),
    };
    Obj::default()
        .set("name", NAME)
        .set("installed", J::Arr(found))
        .set("enabled", enabled)
        .set("would_present_with", would)
        .j()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifests_name_the_layer_library_and_switches() {
        let m = manifest(Path::new("/opt/a \"b\"/libVkLayer_winsys.so"), true);
        assert!(m.contains("\"name\": \"VK_LAYER_WINSYS_wsi\""));
        assert!(m.contains(r#""library_path": "/opt/a \"b\"/libVkLayer_winsys.so""#));
        assert!(m.contains("\"enable_environment\": { \"WINSYS_LAYER\": \"1\" }"));
        assert!(m.contains("\"disable_environment\": { \"WINSYS_LAYER_DISABLE\": \"1\" }"));
        assert!(m.contains("\"vkQueuePresentKHR\""));
        let e = manifest(Path::new("/l.so"), false);
        assert!(!e.contains("enable_environment"));
        // Balanced braces and brackets: one JSON object.
        for (open, close) in [('{', '}'), ('[', ']')] {
            assert_eq!(e.matches(open).count(), e.matches(close).count());
        }
    }
}
