//! Booting the guest root with virtme-ng (`vng`): the command line, the mount
//! points, and running it.

use std::ffi::OsString;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::accel::Accel;
use crate::setup::{GuestRoot, Venv};
use crate::util::{err, Result};

/// One VM boot.
#[derive(Debug, Clone)]
pub struct Vm<'a> {
    /// Where vng is.
    pub venv: &'a Venv,
    /// The guest root and its kernel.
    pub root: &'a GuestRoot,
    /// KVM or TCG.
    pub accel: Accel,
    /// qemu memory size (`4G`).
    pub memory: String,
    /// Number of vCPUs.
    pub cpus: usize,
    /// Host directories shared read-write, at the same absolute path.
    pub rwdirs: Vec<PathBuf>,
    /// Shell command to run (None: an interactive shell). Note: vng's
    /// `--cwd` only takes paths inside the guest root, so a command that
    /// needs a working directory must `cd` itself.
    pub exec: Option<String>,
    /// Show kernel messages (vng --verbose).
    pub verbose: bool,
}

impl Vm<'_> {
    /// The vng arguments.
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: OsString| a.push(s);
        push("--root".into());
        push(self.root.dir.clone().into());
        push("--run".into());
        push(self.root.kernel.clone().into());
        push("--busybox".into());
        push(self.root.busybox.clone().into());
        push("--memory".into());
        push(self.memory.clone().into());
        push("--cpus".into());
        push(self.cpus.to_string().into());
        push("--qemu-opts=-device virtio-gpu-pci".into());
        push("--name".into());
        push("winsys-vm".into());
        if self.accel == Accel::Tcg {
            push("--disable-kvm".into());
        }
        for d in &self.rwdirs {
            let mut s = OsString::from("--rwdir=");
            s.push(d);
            s.push("=");
            s.push(d);
            push(s);
        }
        if self.verbose {
            push("--verbose".into());
        }
        if let Some(cmd) = &self.exec {
            push("--exec".into());
            push(cmd.into());
        }
        a
    }

    /// Creates the guest-side mount points inside the guest root: vng mounts
    /// an `--rwdir` only where the directory already exists in the root, and
    /// silently skips it otherwise. Done on every boot, because the project
    /// may live at a different path on each machine.
    pub fn prepare(&self) -> Result<()> {
        for d in &self.rwdirs {
            let rel = d
                .strip_prefix("/")
                .map_err(|_| err(format!("{} is not absolute", d.display())))?;
            let inside = self.root.dir.join(rel);
            if inside.is_dir() {
                continue;
            }
            match fs::create_dir_all(&inside) {
                Ok(()) => {}
                // The guest root belongs to root (debootstrap ran as root).
                Err(e)
                    if e.kind() == std::io::ErrorKind::PermissionDenied
                        && !crate::setup::is_root() =>
                {
                    crate::util::run_checked(
                        crate::setup::privileged("mkdir").arg("-p").arg(&inside),
                    )?;
                }
                Err(e) => {
                    return Err(err(format!(
                        "creating mount point {}: {e}",
                        inside.display()
                    )))
                }
            }
        }
        Ok(())
    }

    /// The vng command, with the venv first in PATH.
    pub fn command(&self) -> Command {
        let mut c = Command::new(self.venv.vng());
        c.args(self.args()).env("PATH", self.venv.path_env());
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vng_command_line() {
        let venv = Venv {
            bin: "/c/venv/bin".into(),
        };
        let root = GuestRoot {
            dir: "/c/guest-root".into(),
            kernel: "/c/guest-root/boot/vmlinuz-6.12.1".into(),
            kernel_release: "6.12.1".into(),
            busybox: "/c/guest-root/usr/bin/busybox".into(),
        };
        let vm = Vm {
            venv: &venv,
            root: &root,
            accel: Accel::Tcg,
            memory: "4G".into(),
            cpus: 2,
            rwdirs: vec!["/ci/repo".into()],
            exec: Some("/ci/repo/target/winsys-vm/xtask guest --plan p.json".into()),
            verbose: false,
        };
        let args: Vec<String> = vm
            .args()
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        assert!(joined.starts_with("--root /c/guest-root --run /c/guest-root/boot/vmlinuz-6.12.1"));
        assert!(args.contains(&"--disable-kvm".to_string()));
        assert!(args.contains(&"--rwdir=/ci/repo=/ci/repo".to_string()));
        assert!(args.contains(&"--qemu-opts=-device virtio-gpu-pci".to_string()));
        assert_eq!(
            args.last().unwrap(),
            "/ci/repo/target/winsys-vm/xtask guest --plan p.json"
        );

        let kvm = Vm {
            accel: Accel::Kvm,
            exec: None,
            ..vm
        };
        let args: Vec<String> = kvm
            .args()
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        assert!(!args.contains(&"--disable-kvm".to_string()));
        assert!(!args.contains(&"--exec".to_string()));
    }

    #[test]
    fn mount_points_are_created_in_the_root() {
        let tmp = std::env::temp_dir().join(format!("xtask-vm-test-{}", std::process::id()));
        let venv = Venv {
            bin: tmp.join("venv"),
        };
        let root = GuestRoot {
            dir: tmp.join("root"),
            kernel: tmp.join("k"),
            kernel_release: "6.12".into(),
            busybox: tmp.join("bb"),
        };
        let vm = Vm {
            venv: &venv,
            root: &root,
            accel: Accel::Tcg,
            memory: "1G".into(),
            cpus: 1,
            rwdirs: vec!["/some/project".into()],
            exec: None,
            verbose: false,
        };
        vm.prepare().unwrap();
        assert!(tmp.join("root/some/project").is_dir());
        fs::remove_dir_all(&tmp).unwrap();
    }
}
