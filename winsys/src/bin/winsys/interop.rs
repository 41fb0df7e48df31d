//! `winsys interop`: every exporter x importer pair, tried for real.
//!
//! Exporters: udmabuf, each dma-heap, vgem, GBM on each DRM node that
//! allocates, dumb buffers on each card node, Vulkan on each device that exports dma-bufs. Importers: a
//! CPU mapping, vgem (PRIME import), GBM on each node, Vulkan on each device, and the
//! compositor behind `WAYLAND_DISPLAY` (linux-dmabuf `create_immed`).
//!
//! Each exporter's 64x64 XRGB8888 LINEAR buffer gets a byte pattern
//! through a CPU write guard. Each cell records: accepted or refused (with
//! the reason the importer gave), whether the pattern came back exact
//! (CPU and Vulkan read it back), whether implicit sync is honoured (a
//! write fence left pending on the buffer — a vgem fence, imported as a
//! WRITE fence where the exporter is not vgem — must hold the importer's
//! read until it signals, 200 ms later), and the time the import and read
//! took.

use std::time::{Duration, Instant};

use winsys::alloc::dumb::DumbAllocator;
use winsys::alloc::gbm::{GbmAllocator, Usage};
use winsys::alloc::heap::DmaHeap;
use winsys::alloc::udmabuf::Udmabuf;
use winsys::alloc::vgem::{Vgem, VgemBuffer, VgemFence};
use winsys::alloc::Allocator;
use winsys::device::{DrmDevice, NodeKind};
use winsys::dmabuf::{Access, Dmabuf};
use winsys::format::{Fourcc, Modifier};
use winsys::vulkan::ash::vk;

use crate::json::{esc, Obj, J};

const W: u32 = 64;
const H: u32 = 64;
const LATE: Duration = Duration::from_millis(200);
const BOUND: Duration = Duration::from_secs(5);

/// An exported buffer and what keeps it alive.
struct Made {
    dmabuf: Dmabuf,
    vgem: Option<VgemBuffer>,
    _keep: Option<Box<dyn std::any::Any>>,
}

impl Made {
    /// A buffer its dma-buf alone keeps.
    fn plain(dmabuf: Dmabuf) -> Self {
        Made {
            dmabuf,
            vgem: None,
            _keep: None,
        }
    }
}

struct Exporter {
    name: String,
    make: Box<dyn Fn() -> Result<Made, String>>,
}

enum Importer {
    Cpu,
    VgemPrime(Vgem),
    Gbm(GbmAllocator),
    Vulkan(winsys::vulkan::Device),
    Compositor(String),
}

impl Importer {
    fn name(&self) -> String {
        match self {
            Importer::Cpu => "cpu-map".into(),
            Importer::VgemPrime(_) => "vgem-prime".into(),
            Importer::Gbm(g) => format!(
                "gbm:{} ({})",
                g.device().path().display(),
                g.device().driver()
            ),
            Importer::Vulkan(d) => format!("vulkan:{}", d.info().name),
            Importer::Compositor(d) => format!("compositor:{d}"),
        }
    }
}

fn pattern() -> Vec<u8> {
    (0..(W * H * 4) as usize)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(7) as u8)
        .collect()
}

fn write_pattern(dmabuf: &Dmabuf) -> Result<(), String> {
    let mut map = dmabuf.map(Access::Write).map_err(|e| e.to_string())?;
    let mut guard = map.write(Some(BOUND)).map_err(|e| e.to_string())?;
    guard
        .write_rows(0, &pattern(), (W * 4) as usize)
        .map_err(|e| e.to_string())
}

fn exporters(vgem: Option<&Vgem>) -> Vec<Exporter> {
    let f = Fourcc::XRGB8888;
    let mut out: Vec<Exporter> = vec![Exporter {
        name: "udmabuf".into(),
        make: Box::new(move || {
            let b = Udmabuf::open()
                .and_then(|u| u.allocate(W, H, f))
                .map_err(|e| e.to_string())?;
            Ok(Made::plain(b))
        }),
    }];
    for name in DmaHeap::names() {
        let heap = name.clone();
        out.push(Exporter {
            name: format!("dma-heap:{name}"),
            make: Box::new(move || {
                let b = DmaHeap::open(&heap)
                    .and_then(|h| h.allocate(W, H, f))
                    .map_err(|e| e.to_string())?;
                Ok(Made::plain(b))
            }),
        });
    }
    if vgem.is_some() {
        out.push(Exporter {
            name: "vgem".into(),
            make: Box::new(move || {
                let v = Vgem::open().map_err(|e| e.to_string())?;
                let b = v.create(W, H, f).map_err(|e| e.to_string())?;
                Ok(Made {
                    dmabuf: b.dmabuf().clone(),
                    vgem: Some(b),
                    _keep: Some(Box::new(v)),
                })
            }),
        });
    }
    for node in DrmDevice::list() {
        let path = node.path.clone();
        out.push(Exporter {
            name: format!("gbm:{} ({})", node.path.display(), node.driver),
            make: Box::new(move || {
                let g = GbmAllocator::open(&path).map_err(|e| e.to_string())?;
                let b = g
                    .allocate(
                        W,
                        H,
                        f,
                        &[Modifier::LINEAR, Modifier::INVALID],
                        Usage::RENDERING,
                    )
                    .map_err(|e| e.to_string())?;
                Ok(Made {
                    dmabuf: b,
                    vgem: None,
                    _keep: Some(Box::new(g)),
                })
            }),
        });
    }
    // Dumb buffers on each device's card node (what GBM's kms_swrast makes
    // where no GPU renders; the swapchain's own choice there).
    for node in DrmDevice::list() {
        if node.kind != NodeKind::Primary {
            continue;
        }
        let path = node.path.clone();
        out.push(Exporter {
            name: format!("dumb:{} ({})", node.path.display(), node.driver),
            make: Box::new(move || {
                let dev = DrmDevice::open(&path).map_err(|e| e.to_string())?;
                let b = DumbAllocator::new(dev)
                    .and_then(|d| d.create(W, H, f))
                    .map_err(|e| e.to_string())?;
                Ok(Made::plain(b))
            }),
        });
    }
    if let Ok(instance) = winsys::vulkan::Instance::new() {
        for info in instance.physical_devices().unwrap_or_default() {
            let name = info.name.clone();
            let inst = instance.clone();
            out.push(Exporter {
                name: format!("vulkan:{name}"),
                make: Box::new(move || {
                    let d = winsys::vulkan::Device::open_physical(&inst, info.clone())
                        .map_err(|e| e.to_string())?;
                    let usage =
                        vk::ImageUsageFlags::TRANSFER_SRC | vk::ImageUsageFlags::TRANSFER_DST;
                    let (image, dmabuf) = d
                        .export_image(W, H, f, &[Modifier::LINEAR], usage)
                        .map_err(|e| e.to_string())?;
                    Ok(Made {
                        dmabuf,
                        vgem: None,
                        _keep: Some(Box::new((image, d))),
                    })
                }),
            });
        }
    }
    out
}

fn importers() -> Vec<Importer> {
    let mut out = vec![Importer::Cpu];
    if let Ok(v) = Vgem::open() {
        out.push(Importer::VgemPrime(v));
    }
    for node in DrmDevice::list() {
        if let Ok(g) = GbmAllocator::open(&node.path) {
            out.push(Importer::Gbm(g));
        }
    }
    if let Ok(instance) = winsys::vulkan::Instance::new() {
        for info in instance.physical_devices().unwrap_or_default() {
            if let Ok(d) = winsys::vulkan::Device::open_physical(&instance, info) {
                out.push(Importer::Vulkan(d));
            }
        }
    }
    if let Some(d) = std::env::var_os("WAYLAND_DISPLAY") {
        out.push(Importer::Compositor(d.to_string_lossy().into_owned()));
    }
    out
}

/// Import `dmabuf` and read it back: `Ok(Some(bytes))` for importers that
/// can read, `Ok(None)` for those that only accept.
fn import(importer: &Importer, dmabuf: &Dmabuf) -> Result<Option<Vec<u8>>, String> {
    match importer {
        Importer::Cpu => {
            let map = dmabuf.map(Access::Read).map_err(|e| e.to_string())?;
            let guard = map.read(Some(BOUND)).map_err(|e| e.to_string())?;
            let mut out = vec![0u8; (W * H * 4) as usize];
            guard
                .read_rows(0, &mut out, (W * 4) as usize)
                .map_err(|e| e.to_string())?;
            Ok(Some(out))
        }
        Importer::VgemPrime(v) => v.import(dmabuf).map(|_| None).map_err(|e| e.to_string()),
        Importer::Gbm(g) => g
            .import(dmabuf, Usage::RENDERING)
            .map(|_| None)
            .map_err(|e| e.to_string()),
        Importer::Vulkan(d) => {
            let mut image = d
                .import_dmabuf(dmabuf, vk::ImageUsageFlags::TRANSFER_SRC)
                .map_err(|e| e.to_string())?;
            d.read_pixels(&mut image, dmabuf, Some(BOUND))
                .map(Some)
                .map_err(|e| e.to_string())
        }
        Importer::Compositor(display) => {
            let conn = winsys::wayland::connect(Some(display)).map_err(|e| e.to_string())?;
            let mut surface = winsys::wayland::surface::Surface::new(
                &conn,
                "winsys interop",
                winsys::wayland::sync::SyncMode::Implicit,
                BOUND,
            )
            .map_err(|e| e.to_string())?;
            // create_immed, then a round trip: a refusal is a `failed`
            // event or a protocol error by then.
            surface.add_dmabuf(dmabuf).map_err(|e| e.to_string())?;
            Ok(None)
        }
    }
}

/// A write fence left pending on `made`'s buffer; `None` with the reason
/// where none can be made (a kernel without the sync_file import).
fn pending_write(vgem: &Vgem, made: &Made) -> Result<(VgemFence, Option<VgemBuffer>), String> {
    if let Some(b) = &made.vgem {
        return b
            .attach_fence(Access::Write)
            .map(|f| (f, None))
            .map_err(|e| e.to_string());
    }
    let other = vgem
        .create(16, 16, Fourcc::XRGB8888)
        .map_err(|e| e.to_string())?;
    let fence = other
        .attach_fence(Access::Write)
        .map_err(|e| e.to_string())?;
    let sync = other
        .dmabuf()
        .export_sync_file(Access::Read)
        .map_err(|e| format!("no sync_file export: {e}"))?;
    made.dmabuf
        .import_sync_file(&sync, Access::Write)
        .map_err(|e| format!("no sync_file import: {e}"))?;
    Ok((fence, Some(other)))
}

fn cell(
    exporter: &str,
    importer: &Importer,
    made: &Result<Made, String>,
    vgem: Option<&Vgem>,
) -> J {
    let base = Obj::default()
        .set("exporter", exporter)
        .set("importer", importer.name());
    let made = match made {
        Ok(m) => m,
        Err(e) => {
            return base
                .set("status", "no-buffer")
                .set("reason", format!("the exporter failed: {e}"))
                .j()
        }
    };
    let t = Instant::now();
    let first = import(importer, &made.dmabuf);
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let read = match first {
        Err(reason) => {
            return base
                .set("status", "refused")
                .set("reason", reason)
                .set("ms", J::Num(ms))
                .j()
        }
        Ok(read) => read,
    };
    let exact = read.as_ref().map(|bytes| *bytes == pattern());
    // Implicit sync: only importers that read can be seen waiting.
    let sync: J = match (read.is_some(), vgem) {
        (false, _) => J::from("n/a: the importer does not read"),
        (true, None) => J::from("n/a: no vgem for a controllable fence"),
        (true, Some(vgem)) => match pending_write(vgem, made) {
            Err(why) => J::from(format!("n/a: {why}")),
            Ok((fence, _other)) => {
                let signaler = std::thread::spawn(move || {
                    std::thread::sleep(LATE);
                    let _ = fence.signal();
                });
                let t = Instant::now();
                let r = import(importer, &made.dmabuf);
                let waited = t.elapsed();
                let _ = signaler.join();
                match r {
                    Ok(_) if waited >= LATE * 3 / 4 => {
                        J::from(format!("honoured (waited {} ms)", waited.as_millis()))
                    }
                    Ok(_) => J::from(format!(
                        "NOT honoured: read after {} ms, the writer signals at {}",
                        waited.as_millis(),
                        LATE.as_millis()
                    )),
                    Err(e) => J::from(format!("error while a write was pending: {e}")),
                }
            }
        },
    };
    base.set("status", "ok")
        .set("round_trip", exact)
        .set("implicit_sync", sync)
        .set("ms", J::Num((ms * 10.0).round() / 10.0))
        .j()
}

/// Try every pair; progress on stderr.
pub fn matrix() -> J {
    let vgem = Vgem::open().ok();
    let exporters = exporters(vgem.as_ref());
    let importers = importers();
    let mut cells = Vec::new();
    let total = exporters.len() * importers.len();
    let mut n = 0;
    for e in &exporters {
        let made = (e.make)().and_then(|m| write_pattern(&m.dmabuf).map(|()| m));
        for i in &importers {
            n += 1;
            eprintln!("winsys interop: [{n}/{total}] {} -> {}", e.name, i.name());
            cells.push(cell(&e.name, i, &made, vgem.as_ref()));
        }
    }
    Obj::default()
        .set("buffer", format!("{W}x{H} XRGB8888 LINEAR"))
        .set(
            "exporters",
            exporters.iter().map(|e| e.name.clone()).collect::<Vec<_>>(),
        )
        .set(
            "importers",
            importers.iter().map(Importer::name).collect::<Vec<_>>(),
        )
        .set("cells", J::Arr(cells))
        .j()
}

fn field<'a>(cell: &'a J, key: &str) -> Option<&'a J> {
    match cell {
        J::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
        _ => None,
    }
}

fn str_of(v: Option<&J>) -> String {
    match v {
        Some(J::Str(s)) => s.clone(),
        Some(J::Bool(true)) => "yes".into(),
        Some(J::Bool(false)) => "no".into(),
        Some(J::Num(n)) => format!("{n}"),
        _ => "-".into(),
    }
}

/// A cell's short form: status, round trip, implicit sync.
fn short(cell: &J) -> String {
    let status = str_of(field(cell, "status"));
    if status != "ok" {
        return status;
    }
    let rt = match field(cell, "round_trip") {
        Some(J::Bool(true)) => "exact",
        Some(J::Bool(false)) => "DIFFERS",
        _ => "accepted",
    };
    let sync = match str_of(field(cell, "implicit_sync")) {
        s if s.starts_with("honoured") => ", sync",
        s if s.starts_with("NOT") => ", NO SYNC",
        _ => "",
    };
    format!("{rt}{sync}")
}

fn cells_of(report: &J) -> (&[J], Vec<String>, Vec<String>) {
    let names = |key| match field(report, key) {
        Some(J::Arr(v)) => v.iter().map(|n| str_of(Some(n))).collect(),
        _ => Vec::new(),
    };
    let cells = match field(report, "cells") {
        Some(J::Arr(c)) => c.as_slice(),
        _ => &[],
    };
    (cells, names("exporters"), names("importers"))
}

fn find<'a>(cells: &'a [J], e: &str, i: &str) -> Option<&'a J> {
    cells
        .iter()
        .find(|c| str_of(field(c, "exporter")) == e && str_of(field(c, "importer")) == i)
}

/// The matrix as a text table, then every refusal with its reason.
pub fn table(report: &J) -> String {
    let (cells, exporters, importers) = cells_of(report);
    let width = exporters.iter().map(String::len).max().unwrap_or(8);
    let cols: Vec<usize> = importers.iter().map(|i| i.len().max(16)).collect();
    let mut out = format!("{:width$}", "exporter \\ importer");
    for (i, c) in importers.iter().zip(&cols) {
        out.push_str(&format!("  {i:c$}"));
    }
    out.push('\n');
    for e in &exporters {
        out.push_str(&format!("{e:width$}"));
        for (i, c) in importers.iter().zip(&cols) {
            let s = find(cells, e, i).map(short).unwrap_or_default();
            out.push_str(&format!("  {s:c$}"));
        }
        out.push('\n');
    }
    out.push_str("\nwhy:\n");
    let mut said_no_buffer = Vec::new();
    for c in cells {
        let exporter = str_of(field(c, "exporter"));
        if str_of(field(c, "status")) == "no-buffer" {
            if said_no_buffer.contains(&exporter) {
                continue;
            }
            said_no_buffer.push(exporter.clone());
            out.push_str(&format!("  {exporter}: {}\n", str_of(field(c, "reason"))));
            continue;
        }
        if let Some(reason) = field(c, "reason") {
            out.push_str(&format!(
                "  {} -> {}: {}\n",
                str_of(field(c, "exporter")),
                str_of(field(c, "importer")),
                str_of(Some(reason))
            ));
        }
    }
    out
}

/// A self-contained HTML page (no scripts, no network): the matrix, each
/// cell carrying its exporter, importer and status as data attributes and
/// its details as a tooltip and in the list below.
pub fn html(report: &J, title: &str) -> String {
    let (cells, exporters, importers) = cells_of(report);
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\n");
    out.push_str(&format!("<title>{}</title>\n", esc(title)));
    out.push_str(
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
td,th{border:1px solid #999;padding:4px 8px;font-size:90%}\
td.ok{background:#c8ecc8}td.refused{background:#f4c8c8}td.no-buffer{background:#ddd}\
td.bad{background:#f8e08a}</style></head><body>\n",
    );
    out.push_str(&format!(
        "<h1>{}</h1>\n<p>Buffer: {}. Rows export, columns import.</p>\n<table>\n<tr><th>exporter \\ importer</th>",
        esc(title),
        esc(&str_of(field(report, "buffer")))
    ));
    for i in &importers {
        out.push_str(&format!("<th>{}</th>", esc(i)));
    }
    out.push_str("</tr>\n");
    for e in &exporters {
        out.push_str(&format!("<tr><th>{}</th>", esc(e)));
        for i in &importers {
            let Some(c) = find(cells, e, i) else {
                out.push_str("<td></td>");
                continue;
            };
            let status = str_of(field(c, "status"));
            let s = short(c);
            let class = if s.contains("DIFFERS") || s.contains("NO SYNC") {
                "bad".to_string()
            } else {
                status.clone()
            };
            let detail = format!(
                "{}{}",
                str_of(field(c, "reason")),
                field(c, "implicit_sync").map_or(String::new(), |v| format!(
                    " implicit sync: {}",
                    str_of(Some(v))
                ))
            );
            out.push_str(&format!(
                "<td class=\"{class}\" data-exporter=\"{}\" data-importer=\"{}\" data-status=\"{}\" title=\"{}\">{}</td>",
                esc(e),
                esc(i),
                esc(&status),
                esc(&detail),
                esc(&s)
            ));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n<h2>Details</h2>\n<ul>\n");
    for c in cells {
        out.push_str(&format!(
            "<li><b>{} &rarr; {}</b>: {}; round trip {}; implicit sync {}; {} ms{}</li>\n",
            esc(&str_of(field(c, "exporter"))),
            esc(&str_of(field(c, "importer"))),
            esc(&str_of(field(c, "status"))),
            esc(&str_of(field(c, "round_trip"))),
            esc(&str_of(field(c, "implicit_sync"))),
            esc(&str_of(field(c, "ms"))),
            field(c, "reason").map_or(String::new(), |r| format!(": {}", esc(&str_of(Some(r)))))
        ));
    }
    out.push_str("</ul>\n</body></html>\n");
    out
}
