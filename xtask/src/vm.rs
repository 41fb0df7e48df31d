//! Booting the guest root with virtme-ng (`vng`): the command line, the mount
//! points, and running it.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::accel::Accel;
use crate::setup::{GuestRoot, Venv};
use crate::step;
use crate::util::{err, fmt_duration, run_streaming, Finished, Result, StreamOpts};

/// The line a guest command prints first: the VM booted and runs it.
pub const BOOTED: &str = "[winsys-vm] stage: booted";
/// The line a guest command prints once the drivers are loaded.
pub const DRIVERS: &str = "[winsys-vm] stage: drivers loaded";
/// What the guest runner (`xtask guest`) prints once its devices are up.
const GUEST_DEVICES: &str = "devices (after";
/// How long a boot may take, up to the command's first line. Measured
/// under TCG: 15-30 s on the CI kind, up to 5x that on a slow machine of
/// the same kind; a boot that hangs (seen once in eight runs, 2026-12-04)
/// is cut off here instead of at the whole run's timeout, and retried.
pub const BOOT_LIMIT: Duration = Duration::from_secs(300);

/// A guest shell command with stage markers: [`BOOTED`], then `prep`
/// (loading drivers, setting up directories), [`DRIVERS`], then `cmd`.
pub fn staged(prep: &str, cmd: &str) -> String {
    format!("echo '{BOOTED}'; {prep}; echo '{DRIVERS}'; {cmd}")
}

/// Where a VM run whose console printed `console` stood: boot, driver
/// load, or the command (with its last line).
pub fn stage_of(console: &str) -> String {
    let last = console
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if !console.contains(BOOTED) {
        return "boot: the kernel or virtme-ng's init never reached the command".into();
    }
    let drivers_done = console.contains(DRIVERS) || console.contains(GUEST_DEVICES);
    if !drivers_done {
        return "driver load: modprobe vgem virtio-gpu / waiting for the device nodes".into();
    }
    // The guest runner names each binary as it starts and ends it.
    let last_mark = console
        .lines()
        .rev()
        .find(|l| l.contains("[xtask guest] START ") || l.contains("[xtask guest] END "));
    if let Some(started) = last_mark.and_then(|l| l.split("[xtask guest] START ").nth(1)) {
        return format!("the command: running {started}; its last line: {last}");
    }
    format!("the command; its last line: {last}")
}

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

    /// Boots the VM and runs its command (which must come from
    /// [`staged`], or print [`BOOTED`] first), echoing the console and
    /// logging it to `log`; killed after `timeout`, or after
    /// [`BOOT_LIMIT`] when it has not booted by then, in which case it is
    /// booted once more. A run that timed out says at which stage it
    /// stood, with the console's last lines.
    pub fn run(&self, timeout: Duration, log: &Path) -> Result<Finished> {
        let t = Instant::now();
        let mut attempt = 1;
        loop {
            let left = timeout.saturating_sub(t.elapsed());
            let done = run_streaming(
                &mut self.command(),
                StreamOpts {
                    timeout: Some(left),
                    echo: true,
                    log: Some(log),
                    own_group: false,
                    marker: Some((BOOTED, BOOT_LIMIT.min(left))),
                },
            )?;
            if done.marker_missed && attempt == 1 && t.elapsed() + BOOT_LIMIT < timeout {
                // The hung boot's console is kept beside the new one.
                let first = log.with_extension("hung-boot.log");
                let _ = std::fs::rename(log, &first);
                step!(
                    "the VM did not boot within {} (console: {}); booting it once more",
                    fmt_duration(BOOT_LIMIT),
                    first.display()
                );
                attempt += 1;
                continue;
            }
            if done.timed_out {
                report_timeout(&done, timeout, log);
            }
            return Ok(done);
        }
    }
}

/// Says where a timed-out VM run stood, with the console's tail.
fn report_timeout(done: &Finished, timeout: Duration, log: &Path) {
    let stage = stage_of(&done.output);
    if done.marker_missed {
        step!(
            "VM TIMED OUT: no boot within {} (stage: {stage})",
            fmt_duration(BOOT_LIMIT)
        );
    } else {
        step!(
            "VM TIMED OUT after {} (--vm-timeout / WINSYS_VM_TIMEOUT) at stage: {stage}",
            fmt_duration(timeout)
        );
    }
    print_console_tail(&done.output, log);
}

/// Prints the last 40 lines of a VM console (`text`, logged in `log`).
pub fn print_console_tail(text: &str, log: &Path) {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(40);
    step!(
        "---- last {} lines of the VM console ({}) ----",
        lines.len() - from,
        log.display()
    );
    for l in &lines[from..] {
        step!("| {l}");
    }
    step!("---- end of VM console ----");
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
    fn stages_of_a_console() {
        assert!(stage_of("SeaBIOS\nBooting from ROM..\n").starts_with("boot"));
        let booted = format!("x\n{BOOTED}\nmodprobe: ...\n");
        assert!(stage_of(&booted).starts_with("driver load"));
        let cmd = format!("{BOOTED}\n{DRIVERS}\nweston up\n");
        assert_eq!(stage_of(&cmd), "the command; its last line: weston up");
        let guest = format!(
            "{BOOTED}\n[xtask guest] devices (after 1 s):\n[xtask guest] START test a (x)\n\
             [xtask guest] END   test a: ok\n[xtask guest] START test b (y; timeout 10 min)\n\
             running 3 tests\n"
        );
        assert_eq!(
            stage_of(&guest),
            "the command: running test b (y; timeout 10 min); its last line: running 3 tests"
        );
        assert_eq!(
            staged("modprobe vgem", "ls"),
            format!("echo '{BOOTED}'; modprobe vgem; echo '{DRIVERS}'; ls")
        );
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
