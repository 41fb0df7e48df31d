//! `winsys info`: what this machine has, probed.

use std::time::Duration;

use winsys::alloc::gbm::{GbmAllocator, Usage};
use winsys::alloc::heap::DmaHeap;
use winsys::alloc::udmabuf::Udmabuf;
use winsys::alloc::vgem::Vgem;
use winsys::alloc::Allocator;
use winsys::device::{DrmDevice, NodeKind};
use winsys::dmabuf::Dmabuf;
use winsys::format::{Fourcc, Modifier};
use winsys::sync::probe;

use crate::json::{json, text, tried, Obj, J};

/// A small dma-buf from the first exporter that works (udmabuf, the
/// system heap, vgem), to ask the kernel about dma-buf ioctls.
pub fn any_dmabuf() -> Option<(Dmabuf, &'static str)> {
    let f = Fourcc::XRGB8888;
    if let Ok(b) = Udmabuf::open().and_then(|u| u.allocate(16, 16, f)) {
        return Some((b, "udmabuf"));
    }
    if let Ok(b) = DmaHeap::open_system().and_then(|h| h.allocate(16, 16, f)) {
        return Some((b, "dma-heap system"));
    }
    let vgem = Vgem::open().ok()?;
    let buf = vgem.create(16, 16, f).ok()?;
    Some((buf.dmabuf().clone(), "vgem"))
}

fn kernel() -> J {
    let uts = rustix::system::uname();
    let release = uts.release().to_string_lossy().into_owned();
    let (sync_file, asked_on) = match any_dmabuf() {
        Some((b, from)) => (
            J::Bool(probe::dmabuf_sync_file(b.planes()[0].fd())),
            J::from(from),
        ),
        None => (J::from("unknown: no dma-buf exporter to ask on"), J::Null),
    };
    let eventfd = DrmDevice::list()
        .into_iter()
        .filter(|n| n.kind == NodeKind::Render)
        .filter_map(|n| DrmDevice::open(&n.path).ok())
        .find(|d| d.has_syncobj())
        .map(|d| probe::syncobj_eventfd(&d));
    Obj::default()
        .set("release", release)
        .set("dmabuf_sync_file_ioctls", sync_file)
        .set("dmabuf_sync_file_asked_on", asked_on)
        .set(
            "syncobj_eventfd",
            eventfd.map_or(J::from("unknown: no DRM node with syncobjs"), J::Bool),
        )
        .set(
            "implicit_sync_path",
            match probe::dmabuf_sync_file_cached() {
                Some(false) => "fallback: poll() on dma-bufs, CPU waits (kernel before 6.0)",
                Some(true) => "sync_file export/import",
                None => "unknown",
            },
        )
        .j()
}

fn drm_nodes() -> J {
    let nodes: Vec<J> = DrmDevice::list()
        .into_iter()
        .map(|n| {
            let kind = match n.kind {
                NodeKind::Primary => "primary",
                NodeKind::Render => "render",
            };
            let mut o = Obj::default()
                .set("path", n.path.display().to_string())
                .set("driver", n.driver.clone())
                .set("kind", kind)
                .set(
                    "dev_t",
                    format!(
                        "{:#x} ({}:{})",
                        n.dev,
                        rustix::fs::major(n.dev),
                        rustix::fs::minor(n.dev)
                    ),
                );
            // Primary nodes are not opened: that could make us DRM master.
            if n.kind == NodeKind::Render {
                match DrmDevice::open(&n.path) {
                    Ok(d) => {
                        let prime = d.cap(winsys::uapi::drm::DRM_CAP_PRIME).unwrap_or(0);
                        o = o
                            .set("syncobj", d.has_syncobj())
                            .set("syncobj_timeline", d.has_syncobj_timeline())
                            .set(
                                "syncobj_eventfd",
                                d.has_syncobj() && probe::syncobj_eventfd(&d),
                            )
                            .set("prime_import", prime & 1 != 0)
                            .set("prime_export", prime & 2 != 0);
                    }
                    Err(e) => o = o.set("error", e.to_string()),
                }
            }
            o.j()
        })
        .collect();
    J::Arr(nodes)
}

fn exporters() -> J {
    let f = Fourcc::XRGB8888;
    let limit = std::fs::read_to_string("/sys/module/udmabuf/parameters/size_limit_mb")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let udmabuf = match Udmabuf::open() {
        Ok(u) => Obj::default()
            .set("present", true)
            .set("size_limit_mib", limit)
            .set("allocates", tried(u.allocate(64, 64, f))),
        Err(e) => Obj::default().set("present", J::from(format!("no: {e}"))),
    };
    let mut heaps = Vec::new();
    for name in DmaHeap::names() {
        let r = DmaHeap::open(&name).and_then(|h| h.allocate(64, 64, f));
        heaps.push(
            Obj::default()
                .set("name", name)
                .set("allocates", tried(r))
                .j(),
        );
    }
    let vgem = match Vgem::open() {
        Ok(v) => Obj::default()
            .set("present", true)
            .set("allocates", tried(v.create(64, 64, f))),
        Err(e) => Obj::default().set("present", J::from(format!("no: {e}"))),
    };
    Obj::default()
        .set("udmabuf", udmabuf.j())
        .set("dma_heaps", J::Arr(heaps))
        .set("vgem", vgem.j())
        .j()
}

const FORMATS: [Fourcc; 5] = [
    Fourcc::XRGB8888,
    Fourcc::ARGB8888,
    Fourcc::ABGR8888,
    Fourcc::RGB565,
    Fourcc::NV12,
];

fn gbm() -> J {
    // A foreign dma-buf to import: from an exporter other than GBM.
    let foreign = any_dmabuf();
    let nodes: Vec<J> = DrmDevice::list()
        .into_iter()
        .map(|n| {
            let o = Obj::default()
                .set("node", n.path.display().to_string())
                .set("driver", n.driver.clone());
            match GbmAllocator::open(&n.path) {
                Err(e) => o.set("opens", J::from(format!("no: {e}"))).j(),
                Ok(g) => {
                    let formats: Vec<J> = FORMATS
                        .iter()
                        .filter(|f| g.supports(**f, Usage::RENDERING))
                        .map(|f| J::from(f.to_string()))
                        .collect();
                    let import = match &foreign {
                        Some((b, from)) => match g.import(b, Usage::RENDERING) {
                            Ok(_) => J::from(format!("yes (a {from} dma-buf)")),
                            Err(e) => J::from(format!("no: {e}")),
                        },
                        None => J::from("unknown: no foreign dma-buf"),
                    };
                    o.set("opens", true)
                        .set("backend", g.backend_name().to_string())
                        .set("renders", J::Arr(formats))
                        .set(
                            "allocates_xrgb8888",
                            tried(g.allocate(
                                64,
                                64,
                                Fourcc::XRGB8888,
                                &[Modifier::LINEAR, Modifier::INVALID],
                                Usage::RENDERING,
                            )),
                        )
                        .set("imports_foreign", import)
                        .j()
                }
            }
        })
        .collect();
    J::Arr(nodes)
}

/// "import and export", "import", "export" or "no".
fn ways(import: bool, export: bool) -> &'static str {
    match (import, export) {
        (true, true) => "import and export",
        (true, false) => "import",
        (false, true) => "export",
        (false, false) => "no",
    }
}

/// The external handle types `pd` imports and exports (the core Vulkan 1.1
/// queries): memory (for a transfer buffer), binary semaphores, fences.
fn handle_types(instance: &winsys::vulkan::Instance, pd: ash::vk::PhysicalDevice) -> J {
    use ash::vk;
    let raw = instance.raw();
    let mut memory = Obj::default();
    for (name, t) in [
        ("opaque_fd", vk::ExternalMemoryHandleTypeFlags::OPAQUE_FD),
        ("dma_buf", vk::ExternalMemoryHandleTypeFlags::DMA_BUF_EXT),
        (
            "host_allocation",
            vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT,
        ),
    ] {
        let info = vk::PhysicalDeviceExternalBufferInfo::default()
            .usage(vk::BufferUsageFlags::TRANSFER_SRC | vk::BufferUsageFlags::TRANSFER_DST)
            .handle_type(t);
        let mut props = vk::ExternalBufferProperties::default();
        // SAFETY: `pd` is a physical device of this live instance; the
        // structs are valid for the call.
        unsafe { raw.get_physical_device_external_buffer_properties(pd, &info, &mut props) };
        let f = props.external_memory_properties.external_memory_features;
        memory = memory.set(
            name,
            ways(
                f.contains(vk::ExternalMemoryFeatureFlags::IMPORTABLE),
                f.contains(vk::ExternalMemoryFeatureFlags::EXPORTABLE),
            ),
        );
    }
    let mut semaphores = Obj::default();
    let mut fences = Obj::default();
    for (name, s, f) in [
        (
            "opaque_fd",
            vk::ExternalSemaphoreHandleTypeFlags::OPAQUE_FD,
            vk::ExternalFenceHandleTypeFlags::OPAQUE_FD,
        ),
        (
            "sync_fd",
            vk::ExternalSemaphoreHandleTypeFlags::SYNC_FD,
            vk::ExternalFenceHandleTypeFlags::SYNC_FD,
        ),
    ] {
        let info = vk::PhysicalDeviceExternalSemaphoreInfo::default().handle_type(s);
        let mut props = vk::ExternalSemaphoreProperties::default();
        // SAFETY: as above.
        unsafe { raw.get_physical_device_external_semaphore_properties(pd, &info, &mut props) };
        let g = props.external_semaphore_features;
        semaphores = semaphores.set(
            name,
            ways(
                g.contains(vk::ExternalSemaphoreFeatureFlags::IMPORTABLE),
                g.contains(vk::ExternalSemaphoreFeatureFlags::EXPORTABLE),
            ),
        );
        let info = vk::PhysicalDeviceExternalFenceInfo::default().handle_type(f);
        let mut props = vk::ExternalFenceProperties::default();
        // SAFETY: as above.
        unsafe { raw.get_physical_device_external_fence_properties(pd, &info, &mut props) };
        let g = props.external_fence_features;
        fences = fences.set(
            name,
            ways(
                g.contains(vk::ExternalFenceFeatureFlags::IMPORTABLE),
                g.contains(vk::ExternalFenceFeatureFlags::EXPORTABLE),
            ),
        );
    }
    Obj::default()
        .set("memory", memory.j())
        .set("semaphores", semaphores.j())
        .set("fences", fences.j())
        .j()
}

fn vulkan() -> J {
    use winsys::vulkan::{Device, Instance};
    let instance = match Instance::new() {
        Ok(i) => i,
        Err(e) => return J::from(format!("no Vulkan: {e}")),
    };
    let infos = match instance.physical_devices() {
        Ok(i) => i,
        Err(e) => return J::from(format!("cannot list devices: {e}")),
    };
    let devices: Vec<J> = infos
        .into_iter()
        .map(|info| {
            let v = info.api_version;
            let mut o = Obj::default()
                .set("name", info.name.clone())
                .set("driver", info.driver_info.clone())
                .set(
                    "api",
                    format!(
                        "{}.{}.{}",
                        ash::vk::api_version_major(v),
                        ash::vk::api_version_minor(v),
                        ash::vk::api_version_patch(v)
                    ),
                )
                .set(
                    "render_node",
                    info.render_node.map(|(a, b)| format!("{a}:{b}")),
                )
                .set(
                    "interop_extensions",
                    info.extensions
                        .present()
                        .iter()
                        .map(|c| c.to_string_lossy().into_owned())
                        .collect::<Vec<_>>(),
                )
                .set("missing", info.extensions.missing())
                .set("dmabuf_import_export", info.extensions.dmabuf_images())
                .set(
                    "external_handle_types",
                    handle_types(&instance, info.handle()),
                );
            match Device::open_physical(&instance, info) {
                Err(e) => o = o.set("opens", J::from(format!("no: {e}"))),
                Ok(device) => {
                    let s = device.sync_fd_support();
                    o = o
                        .set("semaphore_sync_fd_import", s.semaphore_import)
                        .set("semaphore_sync_fd_export", s.semaphore_export)
                        .set("fence_sync_fd_import", s.fence_import)
                        .set("fence_sync_fd_export", s.fence_export);
                    let mods: Vec<J> = FORMATS
                        .iter()
                        .map(|f| {
                            let list = device
                                .modifiers(*f)
                                .map(|m| {
                                    m.iter()
                                        .map(|i| format!("{} ({} plane)", i.modifier, i.planes))
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                })
                                .unwrap_or_else(|e| format!("- ({e})"));
                            Obj::default()
                                .set("format", f.to_string())
                                .set("modifiers", if list.is_empty() { "-".into() } else { list })
                                .j()
                        })
                        .collect();
                    o = o.set("modifiers", J::Arr(mods));
                }
            }
            o.j()
        })
        .collect();
    J::Arr(devices)
}

/// The socket file a `WAYLAND_DISPLAY` value names.
fn socket_path(display: &str) -> Option<std::path::PathBuf> {
    if display.starts_with('/') {
        return Some(display.into());
    }
    std::env::var_os("XDG_RUNTIME_DIR").map(|d| std::path::Path::new(&d).join(display))
}

/// Connects to `display` and probes it, within `timeout`: a compositor
/// whose socket exists but that is still starting (under emulation,
/// seconds pass between the socket and the first answer) is given until
/// then; one without a socket is reported at once.
fn connect_and_probe(
    display: &str,
    timeout: Duration,
) -> Result<(wayland_client::Connection, winsys::wayland::Report), String> {
    let start = std::time::Instant::now();
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        match winsys::wayland::connect(Some(display)) {
            Ok(conn) => {
                return match winsys::wayland::probe(&conn, left.max(Duration::from_millis(100))) {
                    Ok(r) => Ok((conn, r)),
                    Err(e) => Err(format!(
                        "{display} did not answer within {timeout:?} (--timeout): {e}"
                    )),
                };
            }
            Err(e) => {
                let exists = socket_path(display).is_some_and(|p| p.exists());
                if !exists || left.is_zero() {
                    return Err(format!("cannot connect to {display}: {e}"));
                }
                std::thread::sleep(Duration::from_millis(200).min(left));
            }
        }
    }
}

fn wayland(timeout: Duration) -> J {
    use winsys::wayland::swapchain::{Swapchain, SwapchainConfig};
    let Some(display) = std::env::var_os("WAYLAND_DISPLAY") else {
        return J::from("WAYLAND_DISPLAY is not set");
    };
    let display = display.to_string_lossy().into_owned();
    let (conn, report) = match connect_and_probe(&display, timeout) {
        Ok(c) => c,
        Err(e) => return J::from(e),
    };
    let globals: Vec<J> = report
        .globals
        .iter()
        .map(|g| J::from(format!("{} v{}", g.interface, g.version)))
        .collect();
    let feedback = match &report.feedback {
        None => J::from("none (linux-dmabuf below version 4)"),
        Some(Err(e)) => J::from(format!("malformed: {e}")),
        Some(Ok(fb)) => {
            let tranches: Vec<J> = fb
                .tranches
                .iter()
                .map(|t| {
                    let node = DrmDevice::open_dev_t(t.target_device)
                        .map(|d| format!("{} ({})", d.path().display(), d.driver()))
                        .unwrap_or_else(|_| format!("{:#x}", t.target_device));
                    let mut formats: Vec<String> = Vec::new();
                    for (f, m) in &t.formats {
                        formats.push(format!("{f}:{m}"));
                    }
                    Obj::default()
                        .set("target_device", node)
                        .set("scanout", t.scanout)
                        .set("pairs", t.formats.len() as u64)
                        .set("formats", formats)
                        .j()
                })
                .collect();
            let main = DrmDevice::open_dev_t(fb.main_device)
                .map(|d| format!("{} ({})", d.path().display(), d.driver()))
                .unwrap_or_else(|_| format!("{:#x}", fb.main_device));
            Obj::default()
                .set("main_device", main)
                .set("tranches", J::Arr(tranches))
                .j()
        }
    };
    let offer = report.offer();
    let mut sync = Vec::new();
    if offer.drm_syncobj.is_some() {
        sync.push("drm-syncobj");
    }
    if offer.explicit_sync.is_some() {
        sync.push("explicit-sync");
    }
    if offer.linux_dmabuf.is_some() {
        sync.push("implicit");
    }
    if offer.shm.is_some() {
        sync.push("wl_shm");
    }
    // What a winsys swapchain really gets here.
    let swapchain =
        match winsys::vulkan::Instance::new().and_then(|i| winsys::vulkan::Device::open(&i)) {
            Err(e) => J::from(format!("no Vulkan device: {e}")),
            Ok(device) => {
                let mut config = SwapchainConfig::new(64, 64, Fourcc::XRGB8888);
                config.timeout = timeout;
                // The DRM formats it could have (what the layer offers
                // Vulkan formats of); one the compositor takes on wl_shm
                // alone would be presented through wl_shm, whatever
                // `sync_mode` (XRGB8888's) says.
                let formats =
                    match Swapchain::formats(device.instance(), device.info(), &report, None) {
                        Ok(f) => J::from(f.iter().map(|f| f.to_string()).collect::<Vec<_>>()),
                        Err(e) => J::from(format!("unknown: {e}")),
                    };
                match Swapchain::new(&device, &conn, &config) {
                    Ok(chain) => Obj::default()
                        .set("sync_mode", chain.sync_mode().to_string())
                        .set("formats", formats)
                        .set("buffer_path", format!("{:?}", chain.buffer_path()))
                        .set("images", chain.len() as u64)
                        .set("fifo_protocol", chain.fifo_protocol())
                        .set(
                            "presentation_clock",
                            chain.presentation_clock().map(|c| format!("{c:?}")),
                        )
                        .j(),
                    Err(e) => J::from(format!("cannot create one: {e}")),
                }
            }
        };
    Obj::default()
        .set("display", display)
        .set("globals", globals)
        .set("dmabuf_feedback", feedback)
        .set("sync_offered", sync)
        .set(
            "shm_formats",
            report
                .shm_formats
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>(),
        )
        .set("fifo_v1", report.version("wp_fifo_manager_v1"))
        .set(
            "commit_timing_v1",
            report.version("wp_commit_timing_manager_v1"),
        )
        .set("presentation", report.version("wp_presentation"))
        .set(
            "tearing_control",
            report.version("wp_tearing_control_manager_v1"),
        )
        .set("winsys_swapchain", swapchain)
        .j()
}

/// Probe everything and print the report (and write it as a
/// self-contained HTML page to `html`, if given).
pub fn info(as_json: bool, html: Option<&str>, timeout: Duration) -> std::io::Result<()> {
    let step = |what: &str| {
        if !as_json {
            eprintln!("winsys info: probing {what}...");
        }
    };
    step("the kernel");
    let k = kernel();
    step("DRM nodes");
    let d = drm_nodes();
    step("exporters");
    let e = exporters();
    step("GBM");
    let g = gbm();
    step("Vulkan");
    let v = vulkan();
    step("Wayland");
    let w = wayland(timeout);
    let swapchain = match &w {
        J::Obj(fields) => fields
            .iter()
            .find(|(k, _)| k == "winsys_swapchain")
            .map(|(_, v)| v.clone()),
        _ => None,
    };
    let l = crate::layer::info(swapchain.as_ref());
    let report = Obj::default()
        .set("kernel", k)
        .set("drm_nodes", d)
        .set("exporters", e)
        .set("gbm", g)
        .set("vulkan", v)
        .set("wayland", w)
        .set("vulkan_layer", l)
        .j();
    let mut outline = String::new();
    text(&report, &mut outline, 0);
    if let Some(path) = html {
        std::fs::write(path, crate::json::html_page("winsys info", &outline))?;
        eprintln!("winsys info: HTML report in {path}");
    }
    if as_json {
        let mut out = String::new();
        json(&report, &mut out, 0);
        println!("{out}");
    } else {
        print!("{outline}");
    }
    say_if_no_device();
    Ok(())
}

/// Tell the user, on stderr, when this machine has no dma-buf device at
/// all, and how to see winsys work anyway.
pub fn say_if_no_device() {
    if DrmDevice::list().is_empty() && any_dmabuf().is_none() {
        eprintln!(
            "winsys: this machine has no dma-buf device at all: no /dev/dri node, no \
             /dev/udmabuf, no /dev/dma_heap (modules vgem, udmabuf, a GPU driver). \
             To see winsys work here anyway, run `cargo xtask demo` in its repository: \
             it boots a VM test bed with them."
        );
    }
}
