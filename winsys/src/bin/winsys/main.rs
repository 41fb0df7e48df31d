//! `winsys`: what this machine can share, and how.
//!
//! ```text
//! winsys info [--json] [--html PATH] [--timeout SECS]
//! winsys interop [--json] [--html PATH]
//! winsys layer install [--explicit] [--dir DIR] [--library PATH]
//! winsys layer uninstall [--explicit] [--dir DIR]
//! ```
//!
//! `layer` installs the loader manifest of the Vulkan layer
//! `VK_LAYER_WINSYS_wsi` (crate `winsys-layer`), which puts any Vulkan
//! app's `VK_KHR_swapchain` on winsys: see [`layer`].
//!
//! `interop` tries every exporter x importer pair: see [`interop`].
//!
//! `info` probes, never guesses from version numbers: the kernel's dma-buf
//! sync_file ioctls (asked on a real dma-buf) and syncobj eventfd; every
//! DRM node (driver, kind, `dev_t`, syncobj / timeline / PRIME caps); the
//! exporters (udmabuf and its size limit, each dma-heap, each tried); GBM
//! per node (backend, which common formats it allocates, a real
//! allocation, a real import of a foreign dma-buf); Vulkan per physical
//! device (interop extensions present and missing, SYNC_FD import and
//! export, modifiers per format); and, when `WAYLAND_DISPLAY` is set, the
//! compositor (globals, dma-buf feedback tranches, the sync protocols, FIFO,
//! presentation) and the sync mode and buffer path a winsys swapchain
//! actually gets there (a 64x64 swapchain is created to find out).
//!
//! A readable outline by default; `--json` for machines (the same data).
//! `--timeout SECS` (default 30) bounds the wait for the compositor: one
//! whose socket exists but that is still starting is given that long to
//! answer.

mod info;
mod interop;
mod json;
mod layer;

const USAGE: &str = "usage: winsys info [--json] [--html PATH] [--timeout SECS]
       winsys interop [--json] [--html PATH]
       winsys layer install [--explicit] [--dir DIR] [--library PATH]
       winsys layer uninstall [--explicit] [--dir DIR]";

/// How long `info` waits for a compositor by default.
const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether `flag` is among `args`.
fn has_flag(args: &[String], flag: &str) -> bool {
    args.iter().any(|a| a == flag)
}

/// The argument after `flag`, if any.
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let has = |flag: &str| has_flag(&args, flag);
    let value = |flag: &str| flag_value(&args, flag);
    match args.first().map(String::as_str) {
        Some("info") => {
            let timeout = match value("--timeout").map(|v| v.parse::<f64>()) {
                None => DEFAULT_TIMEOUT,
                Some(Ok(secs)) if secs.is_finite() && secs > 0.0 => {
                    std::time::Duration::from_secs_f64(secs)
                }
                Some(_) => {
                    eprintln!("winsys: --timeout takes a positive number of seconds\n{USAGE}");
                    std::process::exit(2);
                }
            };
            if let Err(e) = info::info(has("--json"), value("--html").as_deref(), timeout) {
                eprintln!("winsys: cannot write the report: {e}");
                std::process::exit(1);
            }
        }
        Some("interop") => {
            let report = interop::matrix();
            if let Some(path) = value("--html") {
                let page = interop::html(&report, "winsys interop");
                if let Err(e) = std::fs::write(&path, page) {
                    eprintln!("winsys: cannot write {path}: {e}");
                    std::process::exit(1);
                }
                eprintln!("winsys interop: HTML report in {path}");
            }
            if has("--json") {
                let mut out = String::new();
                json::json(&report, &mut out, 0);
                println!("{out}");
            } else {
                print!("{}", interop::table(&report));
            }
            info::say_if_no_device();
        }
        Some("layer") => std::process::exit(layer::command(&args[1..])),
        Some("--help" | "-h" | "help") => println!("{USAGE}"),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}
