//! The second guest kernel: Debian 11's 5.10, older than 6.0, because many
//! users still run one (Ubuntu 22.04 has 5.15, RHEL 9 5.14, Debian 11 5.10)
//! and it lacks the dma-buf sync_file ioctls, udmabuf and the dma-heap as
//! Debian builds it.
//!
//! It boots the same guest root: the kernel image goes into the root's
//! `/boot` beside the 6.12 one, its modules into `/lib/modules/RELEASE`
//! (with `depmod -b`), taken from the newest `linux-image-5.10.*-amd64`
//! package of bullseye on the same mirror, checked against the SHA256 in
//! the mirror's package index. A stamp in the root records the release, so
//! it is done once per guest root (a rebuilt root gets it again).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::setup::{debian_mirror, privileged, GuestRoot};
use crate::util::{err, fmt_duration, run_checked, Result};
use crate::{bail, step};

/// Debian suite the old kernel comes from.
pub const OLD_SUITE: &str = "bullseye";
/// Kernel series taken from it.
pub const OLD_SERIES: &str = "5.10";
/// Stamp file (in the guest root) naming the installed old release.
const STAMP: &str = ".winsys-old-kernel";

/// The old kernel, installed in the guest root.
#[derive(Debug, Clone)]
pub struct OldKernel {
    /// `/boot/vmlinuz-RELEASE` inside the root.
    pub image: PathBuf,
    /// `5.10.0-32-amd64`.
    pub release: String,
}

impl OldKernel {
    /// The guest root booted with this kernel instead of its newest one.
    pub fn root(&self, root: &GuestRoot) -> GuestRoot {
        GuestRoot {
            kernel: self.image.clone(),
            kernel_release: self.release.clone(),
            ..root.clone()
        }
    }
}

/// One package of a Debian `Packages` index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Package name.
    pub package: String,
    /// Version.
    pub version: String,
    /// Path below the mirror.
    pub filename: String,
    /// SHA256 of the .deb.
    pub sha256: String,
}

/// The newest `linux-image-SERIES.N-M-amd64` (the signed image with its
/// modules; not `-unsigned`, `-dbg`, `-rt`, `-cloud`) in a `Packages` index.
pub fn pick_kernel(index: &str, series: &str) -> Option<IndexEntry> {
    let prefix = format!("linux-image-{series}.");
    index
        .split("\n\n")
        .filter_map(|para| {
            let field = |k: &str| {
                para.lines().find_map(|l| {
                    l.strip_prefix(k)
                        .and_then(|r| r.strip_prefix(": "))
                        .map(str::to_string)
                })
            };
            let package = field("Package")?;
            let middle = package.strip_prefix(&prefix)?.strip_suffix("-amd64")?;
            // `0-32`: digits and one dash only (no flavour like `-rt`).
            if !middle.chars().all(|c| c.is_ascii_digit() || c == '-') {
                return None;
            }
            Some(IndexEntry {
                package,
                version: field("Version")?,
                filename: field("Filename")?,
                sha256: field("SHA256")?,
            })
        })
        .max_by_key(|e| crate::setup::version_key(&e.version))
}

/// Makes sure the root has the old kernel; returns it.
pub fn ensure_old_kernel(cache: &Path, root: &GuestRoot) -> Result<OldKernel> {
    if let Ok(release) = fs::read_to_string(root.dir.join(STAMP)) {
        let release = release.trim().to_string();
        let k = OldKernel {
            image: root.dir.join("boot").join(format!("vmlinuz-{release}")),
            release: release.clone(),
        };
        if k.image.is_file() && root.dir.join("lib/modules").join(&release).is_dir() {
            step!("old guest kernel: cached ({release})");
            return Ok(k);
        }
    }
    let t = Instant::now();
    let mirror = debian_mirror()?;
    let dir = cache.join("old-kernel");
    fs::create_dir_all(&dir)?;
    let index_gz = dir.join("Packages.gz");
    let url = format!("{mirror}/dists/{OLD_SUITE}/main/binary-amd64/Packages.gz");
    step!("old guest kernel: reading {url}");
    download(&url, &index_gz)?;
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(&index_gz)
        .output()
        .map_err(|e| err(format!("cannot run gzip: {e}")))?;
    if !out.status.success() {
        bail!("gzip -dc {} failed: {}", index_gz.display(), out.status);
    }
    let index = String::from_utf8_lossy(&out.stdout);
    let entry = pick_kernel(&index, OLD_SERIES)
        .ok_or_else(|| err(format!("no linux-image-{OLD_SERIES}.*-amd64 in {url}")))?;
    let release = entry
        .package
        .strip_prefix("linux-image-")
        .unwrap_or(&entry.package)
        .to_string();
    let deb = dir.join(format!("{}_{}.deb", entry.package, entry.version));
    step!(
        "old guest kernel: downloading {} {} ({})",
        entry.package,
        entry.version,
        entry.filename
    );
    download(&format!("{mirror}/{}", entry.filename), &deb)?;
    let sum = Command::new("sha256sum")
        .arg(&deb)
        .output()
        .map_err(|e| err(format!("cannot run sha256sum: {e}")))?;
    let got = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    if got != entry.sha256 {
        let _ = fs::remove_file(&deb);
        bail!(
            "{}: SHA256 {got} does not match the index's {}",
            deb.display(),
            entry.sha256
        );
    }
    let unpacked = dir.join("unpacked");
    if unpacked.exists() {
        fs::remove_dir_all(&unpacked)?;
    }
    run_checked(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let image = unpacked.join("boot").join(format!("vmlinuz-{release}"));
    let modules = unpacked.join("lib/modules").join(&release);
    if !image.is_file() || !modules.is_dir() {
        bail!(
            "{} has no {} or {}",
            deb.display(),
            image.display(),
            modules.display()
        );
    }
    // Into the root (owned by root): kernel image readable by vng's user,
    // modules with their dependency index built for the root.
    let boot_image = root.dir.join("boot").join(format!("vmlinuz-{release}"));
    run_checked(
        privileged("install")
            .args(["-m", "0644"])
            .arg(&image)
            .arg(&boot_image),
    )?;
    let target = root.dir.join("lib/modules");
    run_checked(privileged("cp").arg("-a").arg(&modules).arg(&target))?;
    run_checked(privileged("depmod").arg("-b").arg(&root.dir).arg(&release))?;
    fs::remove_dir_all(&unpacked)?;
    let _ = fs::remove_file(&deb);
    let stamp = root.dir.join(STAMP);
    let tmp = dir.join("stamp");
    fs::write(&tmp, format!("{release}\n"))?;
    run_checked(
        privileged("install")
            .args(["-m", "0644"])
            .arg(&tmp)
            .arg(&stamp),
    )?;
    step!(
        "old guest kernel {release} installed in {}",
        fmt_duration(t.elapsed())
    );
    Ok(OldKernel {
        image: boot_image,
        release,
    })
}

/// `curl` `url` into `to` (fails on HTTP errors).
fn download(url: &str, to: &Path) -> Result<()> {
    run_checked(
        Command::new("curl")
            .args(["-fsSL", "--retry", "3", "-o"])
            .arg(to)
            .arg(url),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = "\
Package: linux-image-5.10.0-30-amd64
Version: 5.10.218-1
Filename: pool/main/l/linux-signed-amd64/linux-image-5.10.0-30-amd64_5.10.218-1_amd64.deb
SHA256: aaa

Package: linux-image-5.10.0-32-amd64-unsigned
Version: 5.10.223-1
Filename: pool/main/l/linux/unsigned.deb
SHA256: bbb

Package: linux-image-5.10.0-32-rt-amd64
Version: 5.10.223-1
Filename: pool/main/l/linux-signed-amd64/rt.deb
SHA256: ccc

Package: linux-image-5.10.0-32-amd64
Version: 5.10.223-1
Filename: pool/main/l/linux-signed-amd64/linux-image-5.10.0-32-amd64_5.10.223-1_amd64.deb
SHA256: ddd

Package: linux-image-5.10.0-32-amd64-dbg
Version: 5.10.223-1
Filename: pool/main/l/linux/dbg.deb
SHA256: eee
";

    #[test]
    fn picks_the_newest_plain_image() {
        let e = pick_kernel(INDEX, "5.10").unwrap();
        assert_eq!(e.package, "linux-image-5.10.0-32-amd64");
        assert_eq!(e.version, "5.10.223-1");
        assert_eq!(e.sha256, "ddd");
        assert!(e.filename.ends_with("5.10.223-1_amd64.deb"));
        assert!(pick_kernel(INDEX, "6.1").is_none());
    }
}
