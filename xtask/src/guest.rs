//! The guest-side runner (`xtask guest --plan FILE`), run inside the VM: loads
//! vgem and virtio-gpu, checks the device nodes, runs every binary of the plan
//! with a timeout, judges its output and writes the results file.

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use crate::kernels::Feature;
use crate::libtest::{evaluate, Verdict};
use crate::plan::{BinaryResult, Device, Plan, Results};
use crate::step;
use crate::util::{err, fmt_duration, run_streaming, write_atomic, Result, StreamOpts};

/// The kernel modules the tests need, loaded with modprobe.
const MODULES: &[&str] = &["vgem", "virtio-gpu"];

/// How long to wait for the device nodes after loading the modules.
const DEVICE_WAIT: Duration = Duration::from_secs(30);

/// Runs the plan; the exit code is 0 only when every device was there and
/// every binary passed.
pub fn run(plan_path: &Path) -> Result<ExitCode> {
    crate::util::set_prefix("[xtask guest]");
    let plan: Plan = serde_json::from_str(
        &fs::read_to_string(plan_path)
            .map_err(|e| err(format!("reading {}: {e}", plan_path.display())))?,
    )?;
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    step!("guest up: kernel {}, {cpus} CPU(s)", kernel.trim());
    let mut results = Results {
        kernel: kernel.trim().to_string(),
        ..Results::default()
    };
    fs::create_dir_all(&plan.log_dir)?;

    let dirs = prepare_dirs()?;
    let mut setup_problems = Vec::new();
    for m in MODULES {
        let out = Command::new(find_tool("modprobe")).arg(m).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => setup_problems.push(format!(
                "modprobe {m} failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => setup_problems.push(format!("cannot run modprobe {m}: {e}")),
        }
    }
    let t = Instant::now();
    let (devices, missing) = loop {
        let devices = scan_devices();
        let missing = missing_required(&devices, &plan.lacks);
        if missing.is_empty() || t.elapsed() > DEVICE_WAIT {
            break (devices, missing);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    step!("devices (after {}):", fmt_duration(t.elapsed()));
    for d in &devices {
        step!("  {:<24} {:<12} {}", d.node, d.driver, d.detail);
    }
    if plan.require_devices {
        for m in &missing {
            step!("  MISSING: {m}");
            setup_problems.push(format!("missing device: {m}"));
        }
    }
    for p in present_but_declared_lacking(&devices, &plan.lacks) {
        step!("  DECLARED ABSENT BUT PRESENT: {p}");
        setup_problems.push(format!("declared absent on this kernel, but present: {p}"));
    }
    results.devices = devices;
    results.device_problems = setup_problems;
    save(&plan, &results)?;

    let path_env = guest_path();
    for bin in &plan.binaries {
        let log = plan.log_dir.join(format!("{}.log", sanitize(&bin.name)));
        let timeout = Duration::from_secs(plan.timeout_s);
        step!(
            "START {} ({}{}; timeout {})",
            bin.name,
            bin.path.display(),
            if bin.args.is_empty() {
                String::new()
            } else {
                format!(" {}", bin.args.join(" "))
            },
            fmt_duration(timeout)
        );
        let mut cmd = Command::new(&bin.path);
        cmd.args(&bin.args)
            .current_dir(&plan.crate_dir)
            .env("PATH", &path_env)
            .env("HOME", &dirs.home)
            .env("XDG_CACHE_HOME", &dirs.cache)
            .env("XDG_CONFIG_HOME", &dirs.config)
            .env("XDG_RUNTIME_DIR", &dirs.runtime)
            .env("CARGO_MANIFEST_DIR", &plan.crate_dir)
            .envs(plan.env.iter().map(|(k, v)| (k, v)));
        let done = run_streaming(
            &mut cmd,
            StreamOpts {
                timeout: Some(timeout),
                echo: true,
                log: Some(&log),
                own_group: true,
                marker: None,
            },
        );
        let (end, verdict, duration) = match done {
            Ok(done) => {
                let end = done.describe_end(Some(timeout));
                let mut v = evaluate(
                    bin.kind,
                    &done.output,
                    done.success(),
                    done.timed_out,
                    &end,
                    true,
                );
                check_filtered(&mut v, bin.expect_filtered);
                (end, v, done.duration)
            }
            Err(e) => {
                let end = format!("could not run: {e}");
                let v = evaluate(bin.kind, "", false, false, &end, true);
                (end, v, Duration::ZERO)
            }
        };
        step!(
            "END   {}: {} ({} passed, {} failed; {}, {})",
            bin.name,
            if verdict.ok { "ok" } else { "FAILED" },
            verdict.passed,
            verdict.failed,
            end,
            fmt_duration(duration)
        );
        results.binaries.push(BinaryResult {
            name: bin.name.clone(),
            kind: bin.kind,
            end,
            duration_s: duration.as_secs_f64(),
            log,
            verdict,
        });
        save(&plan, &results)?;
    }
    results.complete = true;
    save(&plan, &results)?;
    let ok = results.device_problems.is_empty() && results.binaries.iter().all(|b| b.verdict.ok);
    step!(
        "guest runner done: {}",
        if ok { "all ok" } else { "FAILURES" }
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Writes the results file (atomically, so the host never reads half a file).
fn save(plan: &Plan, results: &Results) -> Result<()> {
    write_atomic(
        &plan.results,
        (serde_json::to_string_pretty(results)? + "\n").as_bytes(),
    )
}

/// A file-name-safe version of a binary's display name.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Writable per-run directories on a tmpfs (the guest's $HOME is read-only).
struct Dirs {
    /// `HOME`.
    home: PathBuf,
    /// `XDG_CACHE_HOME` (Mesa's shader cache).
    cache: PathBuf,
    /// `XDG_CONFIG_HOME`.
    config: PathBuf,
    /// `XDG_RUNTIME_DIR` (mode 0700; Wayland sockets).
    runtime: PathBuf,
}

/// Creates the [`Dirs`] under /run/winsys (a tmpfs in the guest), else /tmp/winsys.
fn prepare_dirs() -> Result<Dirs> {
    let base = ["/run", "/tmp"]
        .iter()
        .map(|b| Path::new(b).join("winsys"))
        .find(|b| fs::create_dir_all(b).is_ok())
        .ok_or_else(|| err("no writable /run or /tmp in the guest"))?;
    let dirs = Dirs {
        home: base.join("home"),
        cache: base.join("cache"),
        config: base.join("config"),
        runtime: base.join("runtime"),
    };
    for d in [&dirs.home, &dirs.cache, &dirs.config, &dirs.runtime] {
        fs::create_dir_all(d)?;
    }
    fs::set_permissions(&dirs.runtime, fs::Permissions::from_mode(0o700))?;
    Ok(dirs)
}

/// PATH for the binaries: the guest's, plus the usual bin and sbin directories.
fn guest_path() -> String {
    let cur = std::env::var("PATH").unwrap_or_default();
    let mut parts: Vec<&str> = cur.split(':').filter(|s| !s.is_empty()).collect();
    for p in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        if !parts.contains(&p) {
            parts.push(p);
        }
    }
    parts.join(":")
}

/// A tool from PATH or an sbin directory (else the bare name).
fn find_tool(name: &str) -> PathBuf {
    crate::util::find_in_path(name).unwrap_or_else(|| PathBuf::from(name))
}

/// The kernel's `struct drm_version`.
#[repr(C)]
struct DrmVersion {
    /// Driver major version.
    version_major: std::ffi::c_int,
    /// Driver minor version.
    version_minor: std::ffi::c_int,
    /// Driver patch level.
    version_patchlevel: std::ffi::c_int,
    /// In: size of `name`; out: length of the name.
    name_len: usize,
    /// Buffer for the driver name.
    name: *mut std::ffi::c_char,
    /// In: size of `date`; out: length of the date.
    date_len: usize,
    /// Buffer for the driver date (unused: null).
    date: *mut std::ffi::c_char,
    /// In: size of `desc`; out: length of the description.
    desc_len: usize,
    /// Buffer for the description (unused: null).
    desc: *mut std::ffi::c_char,
}

/// `DRM_IOCTL_VERSION`: `DRM_IOWR(0x00, struct drm_version)`.
const DRM_IOCTL_VERSION: rustix::ioctl::Opcode =
    rustix::ioctl::opcode::read_write::<DrmVersion>(b'd', 0x00);

/// The DRM driver name of a DRM node, as the kernel reports it
/// (`DRM_IOCTL_VERSION`): `vgem`, `virtio_gpu`.
pub fn drm_driver_name(node: &Path) -> Result<String> {
    let file = fs::File::open(node).map_err(|e| err(format!("open {}: {e}", node.display())))?;
    let mut name = [0u8; 64];
    let mut v = DrmVersion {
        version_major: 0,
        version_minor: 0,
        version_patchlevel: 0,
        name_len: name.len(),
        name: name.as_mut_ptr().cast(),
        date_len: 0,
        date: std::ptr::null_mut(),
        desc_len: 0,
        desc: std::ptr::null_mut(),
    };
    // SAFETY: DRM_IOCTL_VERSION takes a `struct drm_version`, which
    // `DrmVersion` mirrors; the kernel writes at most `name_len` bytes to
    // `name` (a live 64-byte buffer) and nothing to the null date/desc
    // buffers of length 0.
    unsafe {
        rustix::ioctl::ioctl(
            &file,
            rustix::ioctl::Updater::<DRM_IOCTL_VERSION, DrmVersion>::new(&mut v),
        )
    }
    .map_err(|e| err(format!("DRM_IOCTL_VERSION on {}: {e}", node.display())))?;
    let len = v.name_len.min(name.len());
    Ok(String::from_utf8_lossy(&name[..len]).into_owned())
}

/// The driver of a DRM node's device according to sysfs (for display: a
/// PCI virtio-gpu shows `virtio-pci` there, vgem is an unbound platform device).
fn sysfs_detail(name: &str) -> String {
    let dev = Path::new("/sys/class/drm").join(name).join("device");
    let real = fs::canonicalize(&dev)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let driver = fs::read_link(dev.join("driver"))
        .ok()
        .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()));
    match driver {
        Some(d) => format!("sysfs {real} (driver {d})"),
        None => {
            let uevent = fs::read_to_string(dev.join("uevent")).unwrap_or_default();
            let modalias = uevent
                .lines()
                .find_map(|l| l.strip_prefix("MODALIAS="))
                .unwrap_or("");
            format!("sysfs {real} ({modalias})")
        }
    }
}

/// Whether `p` is a character device node.
fn is_char_device(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.file_type().is_char_device())
        .unwrap_or(false)
}

/// Lists the DRM nodes, /dev/udmabuf and the dma-heaps.
fn scan_devices() -> Vec<Device> {
    let mut out = Vec::new();
    let mut names: Vec<String> = fs::read_dir("/dev/dri")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with("card") || n.starts_with("renderD"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    for n in names {
        let node = Path::new("/dev/dri").join(&n);
        let (driver, how) = match drm_driver_name(&node) {
            Ok(d) => (d, "DRM_IOCTL_VERSION".to_string()),
            Err(e) => ("?".to_string(), e.to_string()),
        };
        out.push(Device {
            node: node.display().to_string(),
            driver,
            detail: format!("{how}; {}", sysfs_detail(&n)),
        });
    }
    if is_char_device(Path::new("/dev/udmabuf")) {
        out.push(Device {
            node: "/dev/udmabuf".into(),
            driver: "udmabuf".into(),
            detail: String::new(),
        });
    }
    let mut heaps: Vec<String> = fs::read_dir("/dev/dma_heap")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    heaps.sort();
    for h in heaps {
        out.push(Device {
            node: format!("/dev/dma_heap/{h}"),
            driver: "dma-heap".into(),
            detail: String::new(),
        });
    }
    out
}

/// Each declared test left out must have existed: libtest's "filtered
/// out" count equals the number of `--skip`s.
pub fn check_filtered(v: &mut Verdict, expect: Option<u64>) {
    if let Some(n) = expect {
        if v.filtered_out != n {
            v.problems.push(format!(
                "{n} declared test(s) to leave out, but libtest filtered out {}: \
                 a name in xtask/src/kernels.rs is stale",
                v.filtered_out
            ));
            v.failed += 1;
            v.ok = false;
        }
    }
}

/// The device node each lackable feature shows as.
const FEATURE_NODES: &[(Feature, &str)] = &[
    (Feature::Udmabuf, "/dev/udmabuf"),
    (Feature::DmaHeap, "/dev/dma_heap/system"),
];

/// Device nodes present although the kernel is declared to lack them.
pub fn present_but_declared_lacking(devices: &[Device], lacks: &[Feature]) -> Vec<String> {
    FEATURE_NODES
        .iter()
        .filter(|(f, node)| lacks.contains(f) && devices.iter().any(|d| d.node == *node))
        .map(|(_, node)| node.to_string())
        .collect()
}

/// The required devices missing from `devices`: a vgem card node, a
/// virtio_gpu card node, /dev/udmabuf, /dev/dma_heap/system (the last two
/// unless the kernel is declared to lack them).
pub fn missing_required(devices: &[Device], lacks: &[Feature]) -> Vec<String> {
    let mut missing = Vec::new();
    for drv in ["vgem", "virtio_gpu"] {
        if !devices
            .iter()
            .any(|d| d.driver == drv && d.node.starts_with("/dev/dri/card"))
        {
            missing.push(format!("a {drv} DRM card node (/dev/dri/card*)"));
        }
    }
    for (feature, node) in FEATURE_NODES {
        if !lacks.contains(feature) && !devices.iter().any(|d| d.node == *node) {
            missing.push(node.to_string());
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(node: &str, driver: &str) -> Device {
        Device {
            node: node.into(),
            driver: driver.into(),
            detail: String::new(),
        }
    }

    #[test]
    fn required_devices() {
        let all = vec![
            dev("/dev/dri/card0", "virtio_gpu"),
            dev("/dev/dri/card1", "vgem"),
            dev("/dev/dri/renderD128", "virtio_gpu"),
            dev("/dev/udmabuf", "udmabuf"),
            dev("/dev/dma_heap/system", "dma-heap"),
        ];
        assert!(missing_required(&all, &[]).is_empty());
        let only_render = vec![dev("/dev/dri/renderD129", "vgem")];
        let m = missing_required(&only_render, &[]);
        assert_eq!(m.len(), 4, "{m:?}");
        assert!(m[0].contains("vgem"));
    }

    #[test]
    fn declared_lacks_drop_requirements_and_are_checked() {
        let lacks = [Feature::Udmabuf, Feature::DmaHeap];
        let old = vec![
            dev("/dev/dri/card0", "virtio_gpu"),
            dev("/dev/dri/card1", "vgem"),
        ];
        assert!(missing_required(&old, &lacks).is_empty());
        assert_eq!(missing_required(&old, &[]).len(), 2);
        assert!(present_but_declared_lacking(&old, &lacks).is_empty());
        let mut new = old.clone();
        new.push(dev("/dev/udmabuf", "udmabuf"));
        assert_eq!(
            present_but_declared_lacking(&new, &lacks),
            vec!["/dev/udmabuf".to_string()]
        );
    }

    #[test]
    fn stale_skip_declarations_fail() {
        let out = "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out; finished in 0.01s\n";
        let mut v = crate::libtest::evaluate(
            crate::libtest::Kind::Test,
            out,
            true,
            false,
            "exit status 0",
            true,
        );
        check_filtered(&mut v, Some(1));
        assert!(v.ok);
        check_filtered(&mut v, Some(2));
        assert!(!v.ok);
        assert_eq!(v.failed, 1);
    }

    #[test]
    fn names_for_logs() {
        assert_eq!(sanitize("test dmabuf_sync_file"), "test-dmabuf_sync_file");
        assert_eq!(sanitize("lib winsys (unit)"), "lib-winsys--unit-");
    }

    #[test]
    fn drm_version_opcode() {
        // DRM_IOCTL_VERSION is 0xc0406400 on 64-bit Linux.
        assert_eq!(DRM_IOCTL_VERSION as u64, 0xc040_6400);
    }
}
