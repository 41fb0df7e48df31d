//! Getting the test bed ready, idempotently: host packages (qemu, debootstrap,
//! kmod, python3-venv, libgbm-dev), virtme-ng in a venv, and a debootstrapped
//! Debian trixie guest root, all kept in the cache directory and reused.
//! Nothing is installed into the host's /boot.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::apt;
use crate::util::{err, find_in_path, fmt_duration, have_command, run_checked, Result};
use crate::{bail, step};

/// The virtme-ng release the test bed was verified with.
pub const VIRTME_NG: &str = "virtme-ng==1.42";

/// Debian suite of the guest root.
pub const GUEST_SUITE: &str = "trixie";

/// Packages debootstrapped into the guest root (besides `minbase`).
/// Changing this list changes the stamp, so the cached root is rebuilt.
pub const GUEST_PACKAGES: &[&str] = &[
    "linux-image-amd64",
    "libgbm1",
    "mesa-vulkan-drivers",
    "libvulkan1",
    "vulkan-tools",
    "weston",
    // mutter 48 headless (linux-dmabuf v3, implicit sync, wp_fifo_v1) and
    // the session bus it needs (dbus-run-session); debootstrap does not
    // resolve dconf's `default-dbus-session-bus` by itself.
    "mutter",
    "dbus",
    "dbus-user-session",
    "wayland-utils",
    "kmod",
    // The presentation bench counts system calls per frame.
    "strace",
    "libegl-mesa0",
    "vulkan-validationlayers",
    "udev",
    // virtme-ng needs a static busybox for the initramfs that mounts the
    // root; taken from the guest root so the host needs none.
    "busybox-static",
];

/// Packages installed afterwards from Debian forky (testing), only these
/// and what they need that trixie's versions cannot satisfy (apt pins
/// forky below trixie): sway 1.12 (wlroots 0.20), the one compositor on
/// this bed with `wp_linux_drm_syncobj_manager_v1`. The mirror's forky
/// Release file may be past its Valid-Until date; that is accepted for
/// this one source (`check-valid-until=no`).
pub const GUEST_FORKY_PACKAGES: &[&str] = &["sway"];

/// Minimum versions the guest root must provide: (what, package, major, minor).
const GUEST_MINIMUMS: &[(&str, &str, u64, u64)] = &[
    ("Mesa GBM", "libgbm1", 25, 0),
    ("Mesa lavapipe", "mesa-vulkan-drivers", 25, 0),
    ("weston", "weston", 14, 0),
    ("sway (drm-syncobj)", "sway", 1, 12),
];

/// Minimum guest kernel (vgem, udmabuf, system heap, dma-buf sync_file ioctls).
const GUEST_KERNEL_MIN: (u64, u64) = (6, 12);

/// The cache directory: `$XDG_CACHE_HOME/winsys` or `~/.cache/winsys`
/// (a relative `XDG_CACHE_HOME` is ignored, as the spec says).
pub fn cache_dir_from(xdg_cache_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    if let Some(x) = xdg_cache_home.map(PathBuf::from) {
        if x.is_absolute() {
            return Some(x.join("winsys"));
        }
    }
    home.map(|h| PathBuf::from(h).join(".cache").join("winsys"))
}

/// The cache directory of this process's environment.
pub fn cache_dir() -> Result<PathBuf> {
    cache_dir_from(std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME"))
        .ok_or_else(|| err("neither XDG_CACHE_HOME nor HOME is set: no cache directory"))
}

/// An exclusive lock on the cache directory (`CACHE/.lock`), held while the
/// test bed is checked or built, so that two concurrent runs do not build
/// the same guest root at once. Released when dropped.
pub struct CacheLock {
    /// The open lock file (the lock lives as long as it).
    _file: fs::File,
}

impl CacheLock {
    /// Takes the lock, waiting (with a message) if another run holds it.
    pub fn acquire(cache: &Path) -> Result<CacheLock> {
        use rustix::fs::{flock, FlockOperation};
        let path = cache.join(".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| err(format!("opening {}: {e}", path.display())))?;
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            step!(
                "waiting for another xtask run to finish its setup ({})",
                path.display()
            );
            flock(&file, FlockOperation::LockExclusive)
                .map_err(|e| err(format!("locking {}: {e}", path.display())))?;
        }
        Ok(CacheLock { _file: file })
    }
}

/// Whether we run as root (else privileged steps go through sudo).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A command run as root: as is when we are root, else through `sudo`.
pub fn privileged(program: &str) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg(program);
        c
    }
}

/// One host package the test bed needs, with a check whether it is there.
struct HostNeed {
    /// Debian package name.
    package: &'static str,
    /// What it is needed for (printed when it is missing).
    why: &'static str,
    /// Whether it is already there.
    present: bool,
    /// Whether Debian 12 must take it from bookworm-backports (qemu 10).
    /// Everything else comes from the host's own release, so the host's
    /// Mesa (libgbm1, libegl-mesa0, ...) is never upgraded as a side effect.
    backports: bool,
}

/// The system Python used for the venv.
fn system_python() -> Option<PathBuf> {
    let sys = Path::new("/usr/bin/python3");
    if sys.is_file() {
        Some(sys.to_path_buf())
    } else {
        find_in_path("python3")
    }
}

/// Whether `python` has the venv and ensurepip modules (Debian: python3-venv).
fn python_can_make_venvs(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import ensurepip, venv"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Whether libgbm's header and link library are installed.
fn gbm_dev_present() -> bool {
    let header = Path::new("/usr/include/gbm.h").is_file();
    let lib = [
        "/usr/lib/x86_64-linux-gnu/libgbm.so",
        "/usr/lib64/libgbm.so",
        "/usr/lib/libgbm.so",
    ]
    .iter()
    .any(|p| Path::new(p).exists());
    header && lib
}

/// The host packages the test bed needs, each checked by what it provides
/// (works on hosts without dpkg, too).
fn host_needs() -> Vec<HostNeed> {
    vec![
        HostNeed {
            package: "qemu-system-x86",
            why: "runs the test VM",
            present: have_command("qemu-system-x86_64"),
            backports: true,
        },
        HostNeed {
            package: "debootstrap",
            why: "builds the guest root",
            present: have_command("debootstrap"),
            backports: false,
        },
        HostNeed {
            package: "kmod",
            why: "virtme-ng resolves the guest's module dependencies with modprobe",
            present: have_command("modprobe"),
            backports: false,
        },
        HostNeed {
            package: "python3-venv",
            why: "virtme-ng is installed into a venv",
            present: system_python().is_some_and(|p| python_can_make_venvs(&p)),
            backports: false,
        },
        HostNeed {
            package: "curl",
            why: "downloads the old (5.10) guest kernel",
            present: have_command("curl"),
            backports: false,
        },
        HostNeed {
            package: "libgbm-dev",
            why: "the winsys crate's gbm feature links libgbm",
            present: gbm_dev_present(),
            backports: false,
        },
    ]
}

/// Makes sure the host packages are there; installs the missing ones with
/// apt (qemu from bookworm-backports on Debian 12, with the backports source added
/// from the host's own mirror when missing). Quick when all are present.
pub fn ensure_host_packages() -> Result<()> {
    let needs = host_needs();
    let missing: Vec<&HostNeed> = needs.iter().filter(|n| !n.present).collect();
    if missing.is_empty() {
        step!("host packages: all present (qemu, debootstrap, kmod, python3-venv, libgbm-dev)");
        return Ok(());
    }
    for n in &missing {
        step!("host package missing: {} ({})", n.package, n.why);
    }
    if !have_command("apt-get") {
        bail!(
            "no apt-get on this host: install these packages by hand: {}",
            missing
                .iter()
                .map(|n| n.package)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let os_release = fs::read_to_string("/etc/os-release").unwrap_or_default();
    let codename = apt::os_release_field(&os_release, "VERSION_CODENAME").unwrap_or_default();
    let mut target = None;
    if codename == "bookworm" {
        // Bookworm's own qemu is old; backports has qemu 10 (only qemu is taken from there).
        let suite = "bookworm-backports";
        let sources = apt::read_host_sources(Path::new("/etc/apt"));
        if !apt::has_suite(&sources, suite) {
            let mirror = debian_mirror()?;
            let path = "/etc/apt/sources.list.d/winsys-backports.sources";
            step!("adding apt source {path} ({suite} from {mirror})");
            let text = apt::backports_sources_file(&mirror, suite);
            if is_root() {
                fs::write(path, text).map_err(|e| err(format!("writing {path}: {e}")))?;
            } else {
                let tmp = std::env::temp_dir().join("winsys-backports.sources");
                fs::write(&tmp, text)?;
                run_checked(
                    privileged("install")
                        .args(["-m", "0644"])
                        .arg(&tmp)
                        .arg(path),
                )?;
            }
        }
        target = Some(suite);
    }
    let t = Instant::now();
    step!("apt-get update");
    run_checked(
        privileged("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    // Two transactions: first everything from the host's own release, then
    // qemu with `-t backports`. apt does not pull a `pkg/suite`'s dependencies
    // from that suite, and `-t` for all of them would upgrade the host's Mesa
    // (libgbm-dev 25 needs libgbm1 25); once libgbm1 is installed from the
    // host's release, qemu's dependency on it is already met and left alone.
    for (suite, pkgs) in apt_transactions(&missing, target) {
        step!(
            "installing host packages{}: {}",
            suite.map(|t| format!(" (from {t})")).unwrap_or_default(),
            pkgs.join(" ")
        );
        let mut cmd = privileged("apt-get");
        cmd.args(["install", "-y", "-q", "--no-install-recommends"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        if let Some(t) = suite {
            cmd.args(["-t", t]);
        }
        cmd.args(&pkgs);
        run_checked(&mut cmd)?;
    }
    step!("host packages installed in {}", fmt_duration(t.elapsed()));
    let still: Vec<_> = host_needs()
        .into_iter()
        .filter(|n| !n.present)
        .map(|n| n.package)
        .collect();
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(" "));
    }
    Ok(())
}

/// The `apt-get install` transactions, in order: the packages from the
/// host's own release first, then (when `backports` is given) those that
/// must come from it.
fn apt_transactions<'a>(
    missing: &[&HostNeed],
    backports: Option<&'a str>,
) -> Vec<(Option<&'a str>, Vec<&'static str>)> {
    let (from_bp, plain): (Vec<&HostNeed>, Vec<&HostNeed>) = missing
        .iter()
        .partition(|n| n.backports && backports.is_some());
    let mut out = Vec::new();
    if !plain.is_empty() {
        out.push((None, plain.iter().map(|n| n.package).collect()));
    }
    if !from_bp.is_empty() {
        out.push((backports, from_bp.iter().map(|n| n.package).collect()));
    }
    out
}

/// The Debian mirror for debootstrap: `WINSYS_DEBIAN_MIRROR` if set, else
/// the one the host's apt uses (only on a Debian host).
pub fn debian_mirror() -> Result<String> {
    if let Ok(m) = std::env::var("WINSYS_DEBIAN_MIRROR") {
        if !m.is_empty() {
            return Ok(m.trim_end_matches('/').to_string());
        }
    }
    let os_release = fs::read_to_string("/etc/os-release").unwrap_or_default();
    let id = apt::os_release_field(&os_release, "ID").unwrap_or_default();
    let codename = apt::os_release_field(&os_release, "VERSION_CODENAME").unwrap_or_default();
    if id != "debian" {
        bail!("this host is not Debian (ID={id}): set WINSYS_DEBIAN_MIRROR to a Debian mirror URL");
    }
    let sources = apt::read_host_sources(Path::new("/etc/apt"));
    apt::pick_mirror(&sources, &codename).ok_or_else(|| {
        err(format!(
            "found no http(s) Debian mirror for {codename} in /etc/apt: set WINSYS_DEBIAN_MIRROR"
        ))
    })
}

/// virtme-ng installed in a venv in the cache directory.
#[derive(Debug, Clone)]
pub struct Venv {
    /// The venv's bin directory (must be first in PATH when running vng:
    /// vng runs `virtme-run` from PATH).
    pub bin: PathBuf,
}

impl Venv {
    /// Path of the `vng` script.
    pub fn vng(&self) -> PathBuf {
        self.bin.join("vng")
    }

    /// PATH for running vng: the venv first, then ours, then sbin dirs
    /// (vng needs `modprobe`).
    pub fn path_env(&self) -> OsString {
        let mut parts = vec![self.bin.clone()];
        if let Some(p) = std::env::var_os("PATH") {
            parts.extend(std::env::split_paths(&p));
        }
        for extra in ["/usr/sbin", "/sbin"] {
            if !parts.iter().any(|p| p == Path::new(extra)) {
                parts.push(extra.into());
            }
        }
        std::env::join_paths(parts).unwrap_or_default()
    }
}

/// Makes sure `CACHE/venv` has virtme-ng ([`VIRTME_NG`]); (re)builds it when
/// its stamp does not match.
pub fn ensure_venv(cache: &Path) -> Result<Venv> {
    let dir = cache.join("venv");
    let stamp_path = dir.join("winsys-stamp");
    let python = system_python().ok_or_else(|| err("no python3 found"))?;
    let want = format!("{VIRTME_NG} python={}\n", python.display());
    let venv = Venv {
        bin: dir.join("bin"),
    };
    if fs::read_to_string(&stamp_path).ok().as_deref() == Some(want.as_str())
        && venv.vng().is_file()
    {
        step!("virtme-ng: cached ({})", dir.display());
        return Ok(venv);
    }
    let t = Instant::now();
    step!("creating venv {} with {VIRTME_NG}", dir.display());
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| err(format!("removing {}: {e}", dir.display())))?;
    }
    fs::create_dir_all(cache)?;
    run_checked(Command::new(&python).args(["-m", "venv"]).arg(&dir))?;
    run_checked(
        Command::new(dir.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check", VIRTME_NG])
            .env_remove("PIP_REQUIRE_VIRTUALENV"),
    )?;
    if !venv.vng().is_file() {
        bail!(
            "pip install {VIRTME_NG} did not produce {}",
            venv.vng().display()
        );
    }
    fs::write(&stamp_path, want)?;
    step!("virtme-ng installed in {}", fmt_duration(t.elapsed()));
    Ok(venv)
}

/// What went into a guest root; stored in it as `.winsys-stamp.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootStamp {
    /// Bump to force a rebuild after a change in how the root is made.
    pub format: u32,
    /// Debian suite.
    pub suite: String,
    /// debootstrap variant.
    pub variant: String,
    /// The `--include` list.
    pub packages: Vec<String>,
    /// Installed from forky afterwards.
    pub forky: Vec<String>,
}

impl RootStamp {
    /// The stamp of the root this version of xtask wants.
    pub fn wanted() -> Self {
        RootStamp {
            format: 1,
            suite: GUEST_SUITE.into(),
            variant: "minbase".into(),
            packages: GUEST_PACKAGES.iter().map(|s| s.to_string()).collect(),
            forky: GUEST_FORKY_PACKAGES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Name of the stamp file at the top of a guest root.
pub const STAMP_FILE: &str = ".winsys-stamp.json";

/// A ready guest root.
#[derive(Debug, Clone)]
pub struct GuestRoot {
    /// Its directory.
    pub dir: PathBuf,
    /// The newest kernel image in its /boot.
    pub kernel: PathBuf,
    /// That kernel's release (`6.12.107+deb13-amd64`).
    pub kernel_release: String,
    /// Static busybox inside it (for vng's initramfs).
    pub busybox: PathBuf,
}

/// Compares dotted/plus-separated version strings numerically, part by part
/// (`6.12.107+deb13-amd64` > `6.12.9-amd64`).
pub fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(u64::MAX))
        .collect()
}

/// Picks the newest `vmlinuz-RELEASE` among file names; returns the release.
pub fn newest_kernel<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<String> {
    names
        .into_iter()
        .filter_map(|n| n.strip_prefix("vmlinuz-"))
        .max_by_key(|r| version_key(r))
        .map(String::from)
}

/// (major, minor) of a Debian package version (`1:25.0.7-2~bpo12+1` -> (25, 0)).
pub fn debian_major_minor(version: &str) -> Option<(u64, u64)> {
    let upstream = version.split_once(':').map_or(version, |(_, v)| v);
    let mut parts = upstream
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// Versions of installed packages from a dpkg `status` file.
pub fn dpkg_versions(status: &str, wanted: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for para in status.split("\n\n") {
        let field = |k: &str| {
            para.lines().find_map(|l| {
                l.strip_prefix(k)
                    .and_then(|r| r.strip_prefix(':'))
                    .map(|v| v.trim())
            })
        };
        let (Some(pkg), Some(ver), Some(st)) =
            (field("Package"), field("Version"), field("Status"))
        else {
            continue;
        };
        if wanted.contains(&pkg) && st.ends_with(" installed") {
            out.push((pkg.to_string(), ver.to_string()));
        }
    }
    out
}

/// Finds the newest kernel, vgem and busybox in a guest root and checks the
/// kernel is new enough.
fn inspect_root(dir: &Path) -> Result<GuestRoot> {
    let boot = dir.join("boot");
    let names: Vec<String> = fs::read_dir(&boot)
        .map_err(|e| err(format!("reading {}: {e}", boot.display())))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    let release = newest_kernel(names.iter().map(String::as_str))
        .ok_or_else(|| err(format!("no vmlinuz-* in {}", boot.display())))?;
    let key = version_key(&release);
    if (
        key.first().copied().unwrap_or(0),
        key.get(1).copied().unwrap_or(0),
    ) < GUEST_KERNEL_MIN
    {
        bail!(
            "guest kernel {release} is older than {}.{}",
            GUEST_KERNEL_MIN.0,
            GUEST_KERNEL_MIN.1
        );
    }
    let moddir = dir.join("lib/modules").join(&release);
    if !moddir.join("kernel/drivers/gpu/drm/vgem").is_dir() {
        bail!(
            "guest kernel {release} has no vgem module in {}",
            moddir.display()
        );
    }
    let busybox = dir.join("usr/bin/busybox");
    if !busybox.is_file() {
        bail!("guest root has no {}", busybox.display());
    }
    Ok(GuestRoot {
        dir: dir.to_path_buf(),
        kernel: boot.join(format!("vmlinuz-{release}")),
        kernel_release: release,
        busybox,
    })
}

/// Checks package versions in the root and prints them.
fn report_versions(root: &GuestRoot) -> Result<()> {
    let status = fs::read_to_string(root.dir.join("var/lib/dpkg/status")).unwrap_or_default();
    let names: Vec<&str> = GUEST_MINIMUMS.iter().map(|m| m.1).collect();
    let versions = dpkg_versions(&status, &names);
    let mut shown = vec![format!("kernel {}", root.kernel_release)];
    for (what, pkg, major, minor) in GUEST_MINIMUMS {
        let Some((_, ver)) = versions.iter().find(|(p, _)| p == pkg) else {
            bail!("guest root lacks {pkg} ({what})");
        };
        if missing_or_below(debian_major_minor(ver), (*major, *minor)) {
            bail!("guest root has {pkg} {ver}; {what} >= {major}.{minor} is needed");
        }
        shown.push(format!("{pkg} {ver}"));
    }
    step!("guest root: {}", shown.join(", "));
    Ok(())
}

/// True when there is no version or it is below `min`.
fn missing_or_below(version: Option<(u64, u64)>, min: (u64, u64)) -> bool {
    match version {
        Some(v) => v < min,
        None => true,
    }
}

/// Unmounts whatever is mounted below `dir` (an interrupted debootstrap can
/// leave /proc or /sys mounted in its target) so it can be deleted safely.
fn unmount_below(dir: &Path) -> Result<()> {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        step!("unmounting leftover {p}");
        run_checked(privileged("umount").args(["-l", p]))?;
    }
    Ok(())
}

/// Deletes a directory tree without crossing into other file systems.
fn remove_tree(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    unmount_below(dir)?;
    run_checked(privileged("rm").args(["-rf", "--one-file-system"]).arg(dir))
}

/// Installs `packages` into the root at `root` from Debian forky, pinned
/// below trixie so that only what they need comes from forky; the forky
/// source stays in the root (disabled by the pin for everything else).
fn install_from_forky(root: &Path, mirror: &str, packages: &[String], log: &Path) -> Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    let t = Instant::now();
    step!(
        "guest root: {} from forky (accepting its Release file past Valid-Until; log: {})",
        packages.join(", "),
        log.display()
    );
    let etc = root.join("etc/apt");
    fs::write(
        etc.join("sources.list.d/forky.list"),
        format!("deb [check-valid-until=no] {mirror} forky main\n"),
    )?;
    fs::create_dir_all(etc.join("preferences.d"))?;
    fs::write(
        etc.join("preferences.d/forky"),
        "Package: *\nPin: release n=forky\nPin-Priority: 100\n",
    )?;
    let _ = fs::copy("/etc/resolv.conf", root.join("etc/resolv.conf"));
    let log_file = || -> Result<fs::File> { Ok(fs::OpenOptions::new().append(true).open(log)?) };
    let apt = |args: &[&str]| -> Result<()> {
        let status = privileged("chroot")
            .arg(root)
            .args([
                "env",
                "DEBIAN_FRONTEND=noninteractive",
                "apt-get",
                "-q",
                "-y",
            ])
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(log_file()?)
            .stderr(log_file()?)
            .status()
            .map_err(|e| err(format!("cannot run chroot apt-get: {e}")))?;
        if !status.success() {
            bail!(
                "apt-get {} in the guest root failed ({status}); see {}",
                args.join(" "),
                log.display()
            );
        }
        Ok(())
    };
    apt(&["update"])?;
    let mut install = vec!["install", "--no-install-recommends", "-t", "forky"];
    install.extend(packages.iter().map(String::as_str));
    apt(&install)?;
    apt(&["clean"])?;
    step!("forky packages installed in {}", fmt_duration(t.elapsed()));
    Ok(())
}

/// Makes sure `CACHE/guest-root` is a complete guest root with the wanted
/// stamp; otherwise debootstraps a new one into `guest-root.tmp` and renames
/// it into place (so an interrupted build is redone, never used).
pub fn ensure_guest_root(cache: &Path) -> Result<GuestRoot> {
    let dir = cache.join("guest-root");
    let want = RootStamp::wanted();
    let have: Option<RootStamp> = fs::read_to_string(dir.join(STAMP_FILE))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    if have.as_ref() == Some(&want) {
        let root = inspect_root(&dir)?;
        step!("guest root: cached ({})", dir.display());
        report_versions(&root)?;
        return Ok(root);
    }
    if dir.exists() {
        step!(
            "guest root {} is stale or incomplete: rebuilding",
            dir.display()
        );
    }
    let mirror = debian_mirror()?;
    let tmp = cache.join("guest-root.tmp");
    remove_tree(&tmp)?;
    fs::create_dir_all(cache)?;
    let log = cache.join("debootstrap.log");
    let t = Instant::now();
    step!(
        "debootstrap {GUEST_SUITE} ({} packages) from {mirror} into {} (log: {}; takes a few minutes)",
        want.packages.len(),
        tmp.display(),
        log.display()
    );
    let log_file = fs::File::create(&log)?;
    let status = privileged("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", want.packages.join(",")))
        .arg(GUEST_SUITE)
        .arg(&tmp)
        .arg(&mirror)
        .stdin(std::process::Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .status()
        .map_err(|e| err(format!("cannot run debootstrap: {e}")))?;
    if !status.success() {
        let text = fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        for l in tail.iter().rev() {
            println!("    {l}");
        }
        bail!("debootstrap failed ({status}); see {}", log.display());
    }
    step!("debootstrap done in {}", fmt_duration(t.elapsed()));
    install_from_forky(&tmp, &mirror, &want.forky, &log)?;
    // Downloaded .debs are not needed any more (~hundreds of MB).
    if let Ok(entries) = fs::read_dir(tmp.join("var/cache/apt/archives")) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "deb") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    let root = inspect_root(&tmp)?;
    // Debian installs the kernel image 0600; vng reads it as the invoking user.
    run_checked(privileged("chmod").arg("0644").arg(&root.kernel))?;
    let stamp = serde_json::to_string_pretty(&want)? + "\n";
    fs::write(tmp.join(STAMP_FILE), stamp)?;
    let old = cache.join("guest-root.old");
    remove_tree(&old)?;
    if dir.exists() {
        fs::rename(&dir, &old)?;
    }
    fs::rename(&tmp, &dir)?;
    remove_tree(&old)?;
    let root = inspect_root(&dir)?;
    report_versions(&root)?;
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dir_rules() {
        assert_eq!(
            cache_dir_from(Some("/x/cache".into()), Some("/home/u".into())),
            Some(PathBuf::from("/x/cache/winsys"))
        );
        assert_eq!(
            cache_dir_from(Some("relative".into()), Some("/home/u".into())),
            Some(PathBuf::from("/home/u/.cache/winsys"))
        );
        assert_eq!(
            cache_dir_from(None, Some("/root".into())),
            Some(PathBuf::from("/root/.cache/winsys"))
        );
        assert_eq!(cache_dir_from(None, None), None);
    }

    #[test]
    fn kernel_choice() {
        let names = [
            "config-6.12.107+deb13-amd64",
            "vmlinuz-6.12.9+deb13-amd64",
            "vmlinuz-6.12.107+deb13-amd64",
            "vmlinuz-6.1.0-30-amd64",
            "initrd.img-6.12.107+deb13-amd64",
        ];
        assert_eq!(
            newest_kernel(names).as_deref(),
            Some("6.12.107+deb13-amd64")
        );
        assert_eq!(newest_kernel(["System.map-1"]), None);
    }

    #[test]
    fn debian_versions() {
        assert_eq!(debian_major_minor("25.0.7-2"), Some((25, 0)));
        assert_eq!(
            debian_major_minor("1:10.0.2+ds-2+deb13u1~bpo12+1"),
            Some((10, 0))
        );
        assert_eq!(debian_major_minor("14.0.2-1"), Some((14, 0)));
        assert_eq!(debian_major_minor("weird"), None);
        assert!(missing_or_below(Some((22, 3)), (25, 0)));
        assert!(!missing_or_below(Some((25, 0)), (25, 0)));
        assert!(missing_or_below(None, (1, 0)));
    }

    #[test]
    fn dpkg_status() {
        let status = "Package: weston\nStatus: install ok installed\nVersion: 14.0.2-1\n\n\
Package: libgbm1\nStatus: deinstall ok config-files\nVersion: 22.3.6-1\n\n\
Package: libgbm1\nArchitecture: amd64\nStatus: install ok installed\nVersion: 25.0.7-2\n";
        let v = dpkg_versions(status, &["weston", "libgbm1"]);
        assert_eq!(
            v,
            vec![
                ("weston".to_string(), "14.0.2-1".to_string()),
                ("libgbm1".to_string(), "25.0.7-2".to_string())
            ]
        );
    }

    #[test]
    fn only_qemu_comes_from_backports_and_last() {
        let needs = host_needs();
        let all: Vec<&HostNeed> = needs.iter().collect();
        let tx = apt_transactions(&all, Some("bookworm-backports"));
        assert_eq!(tx.len(), 2, "{tx:?}");
        assert_eq!(tx[0].0, None);
        assert!(tx[0].1.contains(&"libgbm-dev"));
        assert_eq!(tx[1], (Some("bookworm-backports"), vec!["qemu-system-x86"]));
        let plain = apt_transactions(&all, None);
        assert_eq!(plain.len(), 1);
        assert_eq!(plain[0].1.len(), all.len());
    }

    #[test]
    fn stamp_changes_with_packages() {
        let a = RootStamp::wanted();
        let mut b = a.clone();
        b.packages.push("python3".into());
        assert_ne!(a, b);
        let text = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<RootStamp>(&text).unwrap(), a);
    }
}
