//! The `winsys` tool: `winsys info` (text and `--json`) reports what the
//! machine really has — checked against what the test bed's kernels are
//! declared to have (xtask/src/kernels.rs) and against a live weston.

mod common;

use std::process::Command;

use common::kernel_lacks as lacks;
use common::need;
use common::weston::Weston;
use serde_json::Value;

/// `winsys info --json` with `WAYLAND_DISPLAY` as given.
fn info_json(display: Option<&str>) -> Value {
    let mut cmd = Command::new(common::built("", "winsys"));
    cmd.args(["info", "--json"]);
    match display {
        Some(d) => cmd.env("WAYLAND_DISPLAY", d),
        None => cmd.env_remove("WAYLAND_DISPLAY"),
    };
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "winsys info failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("valid JSON")
}

#[test]
fn info_reports_the_kernel_devices_and_drivers_as_probed() {
    if !common::devices_required() && winsys::device::DrmDevice::list().is_empty() {
        println!("SKIP: no DRM device");
        return;
    }
    let r = info_json(None);
    println!("{}", serde_json::to_string_pretty(&r).unwrap());
    let k = &r["kernel"];
    let uname = rustix::system::uname();
    assert_eq!(k["release"], uname.release().to_string_lossy().as_ref());
    assert_eq!(
        k["dmabuf_sync_file_ioctls"],
        Value::Bool(!lacks("dmabuf_sync_file"))
    );
    // 5.10 has neither the ioctl nor a node with syncobjs to ask on.
    if lacks("syncobj_eventfd") {
        assert_ne!(k["syncobj_eventfd"], true, "{k}");
    } else {
        assert_eq!(k["syncobj_eventfd"], true, "{k}");
    }

    let nodes = r["drm_nodes"].as_array().unwrap();
    let render = |driver: &str| {
        nodes
            .iter()
            .find(|n| n["driver"] == driver && n["kind"] == "render")
            .unwrap_or_else(|| panic!("no {driver} render node in {nodes:?}"))
    };
    assert_eq!(render("vgem")["syncobj"], false);
    let virtio = render("virtio_gpu");
    assert_eq!(virtio["syncobj_timeline"], !lacks("virtio_gpu_syncobj"));
    assert_eq!(virtio["prime_export"], true);

    let e = &r["exporters"];
    assert_eq!(e["vgem"]["allocates"], true);
    assert_eq!(e["udmabuf"]["present"] == true, !lacks("udmabuf"), "{e}");
    let heaps = e["dma_heaps"].as_array().unwrap();
    assert_eq!(
        heaps
            .iter()
            .any(|h| h["name"] == "system" && h["allocates"] == true),
        !lacks("dma_heap"),
        "{e}"
    );

    // GBM: the vgem card node allocates and imports a foreign dma-buf.
    let gbm = r["gbm"].as_array().unwrap();
    let vgem_card = gbm
        .iter()
        .find(|g| g["driver"] == "vgem" && g["node"].as_str().unwrap().contains("card"))
        .expect("GBM on vgem's card node");
    assert_eq!(vgem_card["allocates_xrgb8888"], true, "{vgem_card}");
    assert!(
        vgem_card["imports_foreign"]
            .as_str()
            .unwrap()
            .starts_with("yes"),
        "{vgem_card}"
    );

    let vk = r["vulkan"].as_array().expect("Vulkan devices");
    let lvp = vk
        .iter()
        .find(|d| d["name"].as_str().unwrap().contains("llvmpipe"))
        .expect("lavapipe");
    assert_eq!(
        lvp["dmabuf_import_export"],
        !lacks("lavapipe_dmabuf"),
        "{lvp}"
    );
    // The core external-handle queries (measured: Mesa 25's lavapipe
    // exports dma-bufs and SYNC_FD payloads only where udmabuf exists).
    let h = &lvp["external_handle_types"];
    let (dma_buf, sync_fd) = if lacks("lavapipe_dmabuf") {
        ("import", "no")
    } else {
        ("import and export", "import and export")
    };
    assert_eq!(h["memory"]["dma_buf"], dma_buf, "{h}");
    assert_eq!(h["semaphores"]["sync_fd"], sync_fd, "{h}");
    assert_eq!(h["fences"]["sync_fd"], sync_fd, "{h}");
    assert_eq!(r["wayland"], "WAYLAND_DISPLAY is not set");
}

#[test]
fn info_names_what_the_compositor_offers_and_what_a_swapchain_gets() {
    let _one = common::one_at_a_time();
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let r = info_json(Some(&weston.socket));
    let w = &r["wayland"];
    println!("{}", serde_json::to_string_pretty(w).unwrap());
    let globals: Vec<&str> = w["globals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert!(globals.contains(&"zwp_linux_dmabuf_v1 v5"), "{globals:?}");
    let offered: Vec<&str> = w["sync_offered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(offered, ["explicit-sync", "implicit", "wl_shm"]);
    let main = w["dmabuf_feedback"]["main_device"].as_str().unwrap();
    assert!(main.contains("vgem"), "{main}");
    // vgem renders nothing: weston composes on the CPU, and a FIFO
    // swapchain there takes zero-copy wl_shm.
    assert_eq!(w["winsys_swapchain"]["sync_mode"], "shm", "{w}");
    // The formats a swapchain could have: weston's over linux-dmabuf, the
    // two every compositor takes first among them here.
    let names = |v: &serde_json::Value| -> Vec<String> {
        let list = v.as_array().unwrap_or_else(|| panic!("{v}"));
        list.iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect()
    };
    let formats = names(&w["winsys_swapchain"]["formats"]);
    for f in ["XRGB8888", "ARGB8888", "XBGR8888", "XBGR16161616F"] {
        assert!(formats.iter().any(|g| g.starts_with(f)), "{f}: {formats:?}");
    }
    let shm = names(&w["shm_formats"]);
    assert!(shm.iter().any(|g| g.starts_with("XRGB8888")), "{shm:?}");
    // weston headless presents on CLOCK_MONOTONIC_RAW (measured here).
    assert_eq!(
        w["winsys_swapchain"]["presentation_clock"], "MonotonicRaw",
        "{w}"
    );
    assert!(w["presentation"].is_number());

    // The text form says the same in an outline.
    let out = Command::new(common::built("", "winsys"))
        .arg("info")
        .env("WAYLAND_DISPLAY", &weston.socket)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(text.contains("kernel:"), "{text}");
    assert!(text.contains("sync_mode"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("sync_mode") && l.trim_end().ends_with(" shm")),
        "{text}"
    );
}

#[test]
fn info_waits_for_a_compositor_still_starting_within_its_timeout() {
    let _one = common::one_at_a_time();
    let runtime = std::path::PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR").unwrap());
    // A socket that exists but never answers: the probe gives up after
    // --timeout, and says so.
    let name = format!("winsys-silent-{}", std::process::id());
    let path = runtime.join(&name);
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let t = std::time::Instant::now();
    let out = Command::new(common::built("", "winsys"))
        .args(["info", "--json", "--timeout", "1"])
        .env("WAYLAND_DISPLAY", &name)
        .output()
        .unwrap();
    let took = t.elapsed();
    drop(listener);
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success());
    let r: Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let said = r["wayland"].as_str().unwrap_or_default();
    assert!(
        said.contains("did not answer within 1s"),
        "{}",
        r["wayland"]
    );
    assert!(took >= std::time::Duration::from_secs(1), "{took:?}");

    // A bad --timeout is a usage error.
    let out = Command::new(common::built("", "winsys"))
        .args(["info", "--timeout", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // weston, asked the moment its socket appears (under emulation its
    // shell loads seconds later): info waits and reports it whole.
    let weston = need!(Weston::spawn("gl", 256, 256), "weston (gl renderer)");
    let socket = runtime.join(&weston.socket);
    let t = std::time::Instant::now();
    while !socket.exists() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(90),
            "no socket"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let r = info_json(Some(&weston.socket));
    let globals = r["wayland"]["globals"].as_array().unwrap_or_else(|| {
        panic!("no globals: {}", r["wayland"]);
    });
    assert!(
        globals.iter().any(|g| g == "zwp_linux_dmabuf_v1 v5"),
        "{globals:?}"
    );
    // What a swapchain gets there is reported too (which mode depends on
    // the kernel: see the test above).
    assert!(
        !r["wayland"]["winsys_swapchain"].is_null(),
        "{}",
        r["wayland"]
    );
}

/// The cells of an interop report, by (exporter, importer).
fn cell<'a>(r: &'a Value, exporter: &str, importer: &str) -> &'a Value {
    r["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["exporter"] == exporter && c["importer"] == importer)
        .unwrap_or_else(|| panic!("no cell {exporter} -> {importer}"))
}

/// The importer or exporter whose name contains every one of `parts`.
fn named(r: &Value, key: &str, parts: &[&str]) -> String {
    r[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .find(|n| parts.iter().all(|p| n.contains(p)))
        .unwrap_or_else(|| panic!("no {key} named like {parts:?}: {}", r[key]))
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[test]
fn interop_proves_what_is_shared_and_its_html_matches_its_json() {
    let _one = common::one_at_a_time();
    let weston = need!(Weston::start("gl"), "weston (gl renderer)");
    let html = std::path::PathBuf::from(std::env::var("XDG_RUNTIME_DIR").unwrap())
        .join("winsys-interop-test.html");
    let out = Command::new(common::built("", "winsys"))
        .args(["interop", "--json", "--html"])
        .arg(&html)
        .env("WAYLAND_DISPLAY", &weston.socket)
        .output()
        .unwrap();
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "winsys interop failed: {progress}");
    assert!(
        progress.contains("winsys interop: [1/"),
        "no progress: {progress}"
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    println!("{}", serde_json::to_string_pretty(&r).unwrap());

    for c in r["cells"].as_array().unwrap() {
        let status = c["status"].as_str().unwrap();
        assert!(["ok", "refused", "no-buffer"].contains(&status), "{c}");
        if status != "ok" {
            assert!(!c["reason"].as_str().unwrap().is_empty(), "{c}");
        }
    }
    // vgem's buffers: read back exact through a second mapping, and the
    // read waits for a pending vgem write fence (poll fallback on 5.10).
    let cpu = cell(&r, "vgem", "cpu-map");
    assert_eq!(cpu["status"], "ok", "{cpu}");
    assert_eq!(cpu["round_trip"], true, "{cpu}");
    assert!(
        cpu["implicit_sync"]
            .as_str()
            .unwrap()
            .starts_with("honoured"),
        "{cpu}"
    );
    // vgem takes a foreign dma-buf (PRIME import).
    let dma_heap_or_vgem = if lacks("dma_heap") {
        "vgem"
    } else {
        "dma-heap:system"
    };
    assert_eq!(cell(&r, dma_heap_or_vgem, "vgem-prime")["status"], "ok");
    // GBM imports on vgem's card node, not on virtio_gpu's (ENOSYS).
    let vgem_card = named(&r, "importers", &["gbm:", "card", "(vgem)"]);
    let virtio_card = named(&r, "importers", &["gbm:", "card", "(virtio_gpu)"]);
    assert_eq!(cell(&r, "vgem", &vgem_card)["status"], "ok");
    let refused = cell(&r, "vgem", &virtio_card);
    assert_eq!(refused["status"], "refused", "{refused}");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("Function not implemented"),
        "{refused}"
    );
    // GBM on vgem's card node exports what the CPU reads back.
    let gbm_vgem = named(&r, "exporters", &["gbm:", "card", "(vgem)"]);
    assert_eq!(cell(&r, &gbm_vgem, "cpu-map")["round_trip"], true);
    // Dumb buffers on virtio_gpu's card node (the swapchain's images for
    // sway) read back exact, and weston (on vgem) takes them.
    let dumb_virtio = named(&r, "exporters", &["dumb:", "card", "(virtio_gpu)"]);
    let c = cell(&r, &dumb_virtio, "cpu-map");
    assert_eq!(c["round_trip"], true, "{c}");
    let compositor = named(&r, "importers", &["compositor:"]);
    assert_eq!(cell(&r, &dumb_virtio, &compositor)["status"], "ok");
    // weston takes vgem's dma-bufs.
    assert_eq!(cell(&r, "vgem", &compositor)["status"], "ok");
    // lavapipe: imports and reads back exact, waiting for the pending write
    // (where Mesa has its dma-buf support at all).
    let lvp = named(&r, "importers", &["llvmpipe"]);
    let v = cell(&r, "udmabuf", &lvp);
    if lacks("lavapipe_dmabuf") {
        assert_ne!(v["status"], "ok", "{v}");
    } else {
        assert_eq!(v["status"], "ok", "{v}");
        assert_eq!(v["round_trip"], true, "{v}");
        assert!(
            v["implicit_sync"].as_str().unwrap().starts_with("honoured"),
            "{v}"
        );
    }

    // The HTML report: self-contained, one cell per JSON cell, same status.
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("<script"));
    let mut from_html: Vec<(String, String, String)> = Vec::new();
    for td in page.split("<td ").skip(1) {
        let attr = |name: &str| {
            let key = format!("{name}=\"");
            let start = td.find(&key).map(|i| i + key.len())?;
            let end = td[start..].find('"')? + start;
            Some(unescape(&td[start..end]))
        };
        if let (Some(e), Some(i), Some(s)) = (
            attr("data-exporter"),
            attr("data-importer"),
            attr("data-status"),
        ) {
            from_html.push((e, i, s));
        }
    }
    let mut from_json: Vec<(String, String, String)> = r["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap().to_string();
            (s("exporter"), s("importer"), s("status"))
        })
        .collect();
    from_html.sort();
    from_json.sort();
    assert_eq!(from_html, from_json, "the HTML cells differ from the JSON");
}
