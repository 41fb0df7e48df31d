//! Choosing KVM or TCG for the VM. KVM is tried once per host kernel release
//! with a short probe boot; the outcome is cached. `WINSYS_ACCEL=kvm|tcg` (or
//! `--accel`) overrides.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::setup::{GuestRoot, Venv};
use crate::util::{fmt_duration, run_streaming, Result, StreamOpts};
use crate::vm::Vm;
use crate::{bail, step};

/// How qemu executes the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization.
    Kvm,
    /// Pure emulation (slow, always works).
    Tcg,
}

impl Accel {
    /// Parses `kvm` / `tcg`.
    pub fn parse(s: &str) -> Result<Accel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => bail!("unknown accelerator {other:?} (want kvm or tcg)"),
        }
    }

    /// `kvm` / `tcg`.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The cached result of a KVM probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRecord {
    /// Host kernel release the probe ran on.
    pub host_kernel: String,
    /// Whether the KVM boot worked.
    pub kvm_works: bool,
    /// How it ended, for humans.
    pub detail: String,
}

/// The cached decision for this host kernel release, if any.
pub fn cached_decision(record_json: Option<&str>, host_kernel: &str) -> Option<Accel> {
    let rec: ProbeRecord = serde_json::from_str(record_json?).ok()?;
    (rec.host_kernel == host_kernel).then_some(if rec.kvm_works {
        Accel::Kvm
    } else {
        Accel::Tcg
    })
}

/// Whether /dev/kvm exists and we may open it read-write.
fn kvm_device_usable() -> bool {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// The host kernel release (`uname -r`).
pub fn host_kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Marker the probe guest prints.
const PROBE_MARKER: &str = "winsys-kvm-probe-ok";

/// Decides KVM or TCG: the override, else "no usable /dev/kvm" -> TCG, else the
/// cached probe for this host kernel, else a probe boot (cached afterwards).
pub fn decide(
    override_: Option<Accel>,
    cache: &Path,
    venv: &Venv,
    root: &GuestRoot,
) -> Result<Accel> {
    if let Some(a) = override_ {
        step!("accelerator: {} (override)", a.name());
        return Ok(a);
    }
    if !kvm_device_usable() {
        step!("accelerator: tcg (no usable /dev/kvm)");
        return Ok(Accel::Tcg);
    }
    let release = host_kernel_release();
    let file = cache.join("kvm-probe.json");
    let text = fs::read_to_string(&file).ok();
    if let Some(a) = cached_decision(text.as_deref(), &release) {
        step!(
            "accelerator: {} (cached KVM probe for host kernel {release}; delete {} to re-probe)",
            a.name(),
            file.display()
        );
        return Ok(a);
    }
    step!("probing KVM with a short boot (once per host kernel; timeout 90 s)");
    let t = Instant::now();
    let vm = Vm {
        venv,
        root,
        accel: Accel::Kvm,
        memory: "1G".into(),
        cpus: 1,
        rwdirs: Vec::new(),
        exec: Some(format!("echo {PROBE_MARKER}")),
        verbose: false,
    };
    vm.prepare()?;
    let log = cache.join("kvm-probe.log");
    let done = run_streaming(
        &mut vm.command(),
        StreamOpts {
            timeout: Some(Duration::from_secs(90)),
            echo: false,
            log: Some(&log),
            own_group: false,
            marker: None,
        },
    )?;
    let works = done.success() && done.output.contains(PROBE_MARKER);
    let last = done
        .output
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string();
    let detail = format!(
        "{}; last line: {last}",
        done.describe_end(Some(Duration::from_secs(90)))
    );
    step!(
        "KVM probe {} in {} ({detail}); using {}",
        if works { "booted" } else { "FAILED" },
        fmt_duration(t.elapsed()),
        if works { "kvm" } else { "tcg" }
    );
    let rec = ProbeRecord {
        host_kernel: release,
        kvm_works: works,
        detail,
    };
    fs::write(&file, serde_json::to_string_pretty(&rec)? + "\n")?;
    Ok(if works { Accel::Kvm } else { Accel::Tcg })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accel() {
        assert_eq!(Accel::parse("KVM").unwrap(), Accel::Kvm);
        assert_eq!(Accel::parse("tcg").unwrap(), Accel::Tcg);
        assert!(Accel::parse("hvf").is_err());
    }

    #[test]
    fn cached_probe_is_keyed_by_host_kernel() {
        let rec = ProbeRecord {
            host_kernel: "6.18.44-fc".into(),
            kvm_works: false,
            detail: "exit status 1".into(),
        };
        let json = serde_json::to_string(&rec).unwrap();
        assert_eq!(cached_decision(Some(&json), "6.18.44-fc"), Some(Accel::Tcg));
        assert_eq!(cached_decision(Some(&json), "6.19.0"), None);
        let ok = serde_json::to_string(&ProbeRecord {
            kvm_works: true,
            ..rec
        })
        .unwrap();
        assert_eq!(cached_decision(Some(&ok), "6.18.44-fc"), Some(Accel::Kvm));
        assert_eq!(cached_decision(None, "6.18.44-fc"), None);
        assert_eq!(cached_decision(Some("not json"), "6.18.44-fc"), None);
    }
}
