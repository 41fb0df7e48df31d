//! `cargo xtask`: the winsys test bed.
//!
//! The host has no dma-buf exporter, so the tests run inside a VM with a real
//! Debian kernel (vgem, virtio-gpu, udmabuf, system dma-heap) and Mesa 25
//! userspace: a debootstrapped trixie root booted with virtme-ng, everything
//! cached under `~/.cache/winsys`. See `docs/testbed.md`.

mod accel;
mod apt;
mod cargo;
mod guest;
mod host;
mod kernels;
mod libtest;
mod oldkernel;
mod plan;
mod setup;
mod util;
mod vm;

use std::process::ExitCode;
use std::time::Duration;

use accel::Accel;
use host::Opts;
use util::{err, Result};

/// The help text.
const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  test            install what is missing, run host unit tests, build the tests
                  and examples, run them all in one VM, print a summary
  demo            the main job: install the test bed if needed, boot the VM
                  and run every example there (devices required)
  bench [NAME]    build the benchmarks (release) and run them (or only NAME:
                  core, present, server, layer) in the VM; each row is appended to
                  target/bench/results.json as it is measured
  setup           only install / check the test bed (host packages, virtme-ng,
                  guest root, KVM probe)
  vm [-- CMD...]  boot the VM with the project mounted and run CMD (drivers
                  loaded), or an interactive shell without CMD

options (test, demo, bench, vm, setup):
  --accel kvm|tcg       force the accelerator (default: probe KVM once, cached;
                        also WINSYS_ACCEL)
  --test-timeout SECS   per-binary timeout in the VM (default 600, bench 3600;
                        also WINSYS_TEST_TIMEOUT)
  --vm-timeout SECS     timeout for the whole VM run, boot included (default
                        2400, bench 7200; also WINSYS_VM_TIMEOUT); a VM that
                        has not booted in 300 s is booted once more, and a
                        run that times out says at which stage it stood
  --memory SIZE         guest memory (default 4G)
  --cpus N              guest CPUs (default: host CPUs)
  --verbose             show guest kernel messages
  --old-kernel          (vm) boot the old 5.10 guest kernel instead of 6.12

environment:
  XDG_CACHE_HOME / HOME   cache directory: $XDG_CACHE_HOME/winsys or ~/.cache/winsys
  WINSYS_DEBIAN_MIRROR    Debian mirror for the guest root (default: the one
                          in the host's apt sources)
";

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            util::say(&format!("error: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// `bench`'s default per-binary timeout.
const BENCH_BINARY_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// `bench`'s default timeout for the whole VM run.
const BENCH_VM_TIMEOUT: Duration = Duration::from_secs(2 * 60 * 60);

/// Parses a number of seconds (for the error, `what` names the option).
fn parse_secs(what: &str, v: &str) -> Result<Duration> {
    v.trim()
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| err(format!("{what}: expected seconds, got {v:?}")))
}

/// Parses options into `opts`; returns the words after `--`.
fn parse_opts(args: &[String], opts: &mut Opts) -> Result<Vec<String>> {
    if let Ok(v) = std::env::var("WINSYS_ACCEL") {
        if !v.is_empty() {
            opts.accel = Some(Accel::parse(&v)?);
        }
    }
    if let Ok(v) = std::env::var("WINSYS_TEST_TIMEOUT") {
        opts.test_timeout = parse_secs("WINSYS_TEST_TIMEOUT", &v)?;
    }
    if let Ok(v) = std::env::var("WINSYS_VM_TIMEOUT") {
        opts.vm_timeout = parse_secs("WINSYS_VM_TIMEOUT", &v)?;
    }
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| err(format!("{name} needs a value")))
        };
        match a.as_str() {
            "--accel" => opts.accel = Some(Accel::parse(&value("--accel")?)?),
            "--test-timeout" => {
                opts.test_timeout = parse_secs("--test-timeout", &value("--test-timeout")?)?
            }
            "--vm-timeout" => {
                opts.vm_timeout = parse_secs("--vm-timeout", &value("--vm-timeout")?)?
            }
            "--memory" => opts.memory = value("--memory")?,
            "--cpus" => {
                let v = value("--cpus")?;
                opts.cpus = v
                    .parse()
                    .map_err(|_| err(format!("--cpus: bad number {v:?}")))?;
            }
            "--verbose" | "-v" => opts.verbose = true,
            "--old-kernel" => opts.old_kernel = true,
            "--" => return Ok(it.cloned().collect()),
            other => return Err(err(format!("unknown option {other:?}\n\n{USAGE}"))),
        }
    }
    Ok(Vec::new())
}

/// Dispatches the command line.
fn real_main() -> Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        print!("{USAGE}");
        return Ok(ExitCode::FAILURE);
    };
    let mut opts = Opts::default();
    match cmd.as_str() {
        "test" => {
            parse_opts(rest, &mut opts)?;
            host::cmd_test(&opts)
        }
        "bench" => {
            // `cargo xtask bench [NAME] [options]`: NAME picks one bench
            // (core, present).
            let (name, rest) = match rest.split_first() {
                Some((n, r)) if !n.starts_with('-') => (Some(n.as_str()), r),
                _ => (None, rest),
            };
            // A bench binary runs far longer than a test binary: the
            // presentation bench alone, about 25 minutes on a slow machine
            // of the CI kind (each row is a time budget, see
            // winsys/benches/present.rs). The options still override.
            opts.test_timeout = BENCH_BINARY_TIMEOUT;
            opts.vm_timeout = BENCH_VM_TIMEOUT;
            parse_opts(rest, &mut opts)?;
            host::cmd_bench(&opts, name)
        }
        "demo" => {
            parse_opts(rest, &mut opts)?;
            host::cmd_demo(&opts)
        }
        "setup" => {
            parse_opts(rest, &mut opts)?;
            host::cmd_setup(&opts)
        }
        "vm" => {
            let command = parse_opts(rest, &mut opts)?;
            host::cmd_vm(&opts, &command)
        }
        // Hidden: the runner inside the VM.
        "guest" => match rest {
            [flag, plan] if flag == "--plan" => guest::run(std::path::Path::new(plan)),
            _ => Err(err("usage: xtask guest --plan FILE")),
        },
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => Err(err(format!("unknown command {other:?}\n\n{USAGE}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options() {
        let mut o = Opts::default();
        let rest = parse_opts(
            &strings(&[
                "--accel",
                "tcg",
                "--test-timeout",
                "30",
                "--cpus",
                "3",
                "--",
                "ls",
                "-l",
            ]),
            &mut o,
        )
        .unwrap();
        assert_eq!(o.accel, Some(Accel::Tcg));
        assert_eq!(o.test_timeout, Duration::from_secs(30));
        assert_eq!(o.cpus, 3);
        assert_eq!(rest, strings(&["ls", "-l"]));
        assert!(parse_opts(&strings(&["--bogus"]), &mut Opts::default()).is_err());
        assert!(parse_opts(&strings(&["--accel"]), &mut Opts::default()).is_err());
    }
}
